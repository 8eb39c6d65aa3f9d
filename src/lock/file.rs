//! A lockfile: the one set of open rules (§5), the holder info, and the guard that holds the
//! lock. Every lockfile ccci opens — app locks for runs and the janitor, `run.lock`, the drain
//! lock — is opened here, so the rules cannot drift apart.
//!
//! The rules, and the threat each answers (`/run/lock` is writable by every local user):
//! - `O_NOFOLLOW`: a symlink planted at the path is never followed (a root `O_CREAT` through it
//!   would create or truncate the file it names);
//! - `O_NONBLOCK`: a FIFO planted at the path cannot block the open;
//! - a regular file owned by the effective user: anything else is garbage or hostile;
//! - exactly one link: a hard link to another root-owned file (possible where
//!   `fs.protected_hardlinks=0`) would otherwise be truncated by the holder-info write;
//! - mode 0600, created so and fixed with `fchmod` when found looser: flock(2) needs only an
//!   open fd, and a read-only one will do, so any user who can open a lockfile can hold it and
//!   keep a run waiting or an orphan unreaped.
//!
//! Nothing is written to a file before all of that held; nothing a bad path names is touched.

use std::ffi::OsStr;
use std::fs::{File, TryLockError};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fchmod, fstatat};
use serde::{Deserialize, Serialize};

/// Lockfiles are private to the effective user (see the module doc).
pub const LOCK_MODE: u32 = 0o600;
/// Holder info is a few hundred bytes; anything past this is not ours.
const MAX_HOLDER_INFO: usize = 64 * 1024;
/// A recorded deadline or budget above this is clamped when read: the content of a lockfile is
/// hostile input (a planted `u64::MAX` must not overflow the janitor's arithmetic).
pub const MAX_RECORDED_SECS: u64 = 7 * 86_400;

/// Why a lock path is refused. Nothing it names is opened (or, once opened, written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsafe {
    Symlink,
    Directory,
    Fifo,
    Socket,
    Device,
    NotRegular,
    ForeignOwner { uid: u32, euid: u32 },
    HardLinked { links: u64 },
}

impl std::fmt::Display for Unsafe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsafe::Symlink => f.write_str("is a symlink (never followed)"),
            Unsafe::Directory => f.write_str("is a directory"),
            Unsafe::Fifo => f.write_str("is a FIFO"),
            Unsafe::Socket => f.write_str("is a socket"),
            Unsafe::Device => f.write_str("is a device"),
            Unsafe::NotRegular => f.write_str("is not a regular file"),
            Unsafe::ForeignOwner { uid, euid } => write!(f, "is owned by uid {uid} (ccci runs as uid {euid})"),
            Unsafe::HardLinked { links } => {
                write!(f, "has {links} hard links (a lockfile has one; another file may be linked here)")
            }
        }
    }
}

/// Why an open failed.
#[derive(Debug)]
pub enum OpenError {
    /// The path names something ccci must not lock.
    Unsafe(Unsafe),
    /// The name does not exist (and was not to be created).
    NotFound,
    Io(std::io::Error),
}

impl OpenError {
    /// One phrase for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            OpenError::Unsafe(u) => u.to_string(),
            OpenError::NotFound => "does not exist".to_string(),
            OpenError::Io(e) if e.raw_os_error() == Some(libc::EACCES) => format!(
                "cannot open: {e} (with fs.protected_regular, a file another user pre-created in a sticky dir cannot be opened for writing: remove it or use a private CCCI_APP_LOCK_DIR)"
            ),
            OpenError::Io(e) => format!("cannot open: {e}"),
        }
    }
}

/// Opens the lockfile `name` in the directory `dir` under the rules above. With `create`, an
/// absent lockfile is created (mode 0600, `O_EXCL`, so the caller learns whether it made it).
/// Returns the file and whether this call created it.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, create: bool) -> Result<(File, bool), OpenError> {
    let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    loop {
        match openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => return checked(File::from(fd), false),
            Err(Errno::ENOENT) if create => {}
            Err(e) => return Err(open_errno(e)),
        }
        let mode = Mode::from_bits_truncate(LOCK_MODE);
        match openat(dir, name, flags | OFlag::O_CREAT | OFlag::O_EXCL, mode) {
            Ok(fd) => return checked(File::from(fd), true),
            // Someone created it between the two opens: open what is there, under the rules.
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(open_errno(e)),
        }
    }
}

/// [`open_at`] for a path: its parent directory is opened first, so every rule applies to the
/// last component relative to that directory.
pub fn open(path: &Path, create: bool) -> Result<(File, bool), OpenError> {
    let (dir, name) = parent_and_name(path).map_err(OpenError::Io)?;
    open_at(dir.as_fd(), name, create)
}

fn parent_and_name(path: &Path) -> std::io::Result<(OwnedFd, &OsStr)> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("a lock path must name a file"))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = nix::fcntl::open(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(std::io::Error::from)?;
    Ok((dir, name))
}

fn open_errno(e: Errno) -> OpenError {
    match e {
        Errno::ENOENT => OpenError::NotFound,
        Errno::ELOOP => OpenError::Unsafe(Unsafe::Symlink),
        Errno::EISDIR => OpenError::Unsafe(Unsafe::Directory),
        // O_NONBLOCK|O_RDWR on a FIFO without a reader, or a socket.
        Errno::ENXIO => OpenError::Unsafe(Unsafe::Fifo),
        other => OpenError::Io(std::io::Error::from(other)),
    }
}

/// The checks that need the open file: type, owner, link count, mode.
fn checked(file: File, created: bool) -> Result<(File, bool), OpenError> {
    let meta = file.metadata().map_err(OpenError::Io)?;
    if let Some(u) = unsafe_meta(&meta) {
        return Err(OpenError::Unsafe(u));
    }
    if meta.mode() & 0o7777 != LOCK_MODE {
        // A lockfile made by an older ccci (or the predecessor) with 0644: close the hole.
        fchmod(file.as_fd(), Mode::from_bits_truncate(LOCK_MODE)).map_err(|e| OpenError::Io(e.into()))?;
    }
    Ok((file, created))
}

/// Why metadata describes something ccci must not lock (`None`: a regular file of ours with one
/// link). Works on `lstat` results too, so listings never open what they refuse.
pub fn unsafe_meta(meta: &std::fs::Metadata) -> Option<Unsafe> {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        Unsafe::Symlink
    } else if ft.is_dir() {
        Unsafe::Directory
    } else if ft.is_fifo() {
        Unsafe::Fifo
    } else if ft.is_socket() {
        Unsafe::Socket
    } else if ft.is_char_device() || ft.is_block_device() {
        Unsafe::Device
    } else if !ft.is_file() {
        Unsafe::NotRegular
    } else {
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            Unsafe::ForeignOwner { uid: meta.uid(), euid }
        } else if meta.nlink() != 1 {
            Unsafe::HardLinked { links: meta.nlink() }
        } else {
            return None;
        }
    };
    Some(kind)
}

/// Whether the open file is still the inode that `name` in `dir` names (a lockfile may be
/// unlinked — and recreated — by a clean teardown or a janitor while we wait on it).
pub fn same_inode_at(file: &File, dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    match (file.metadata(), fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)) {
        (Ok(a), Ok(b)) => a.dev() == b.st_dev && a.ino() == b.st_ino,
        _ => false,
    }
}

/// [`same_inode_at`] for a path.
pub fn same_inode(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// What a holder writes into its lockfile. Informational: a lock taken by another program may
/// carry nothing, and readers never trust it for decisions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HolderInfo {
    pub pid: u32,
    pub run_id: String,
    pub recipe: String,
    pub started: String,
    pub deadline_secs: u64,
    pub budget_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_link: Option<String>,
}

impl HolderInfo {
    /// Reads the holder info of an open lockfile (without locking it). The content is hostile
    /// input: bounded in size, and the recorded durations clamped.
    pub fn read_from(file: &File) -> Option<HolderInfo> {
        let mut buf = vec![0u8; MAX_HOLDER_INFO];
        let n = file.read_at(&mut buf, 0).ok()?;
        let mut info: HolderInfo = serde_json::from_slice(buf[..n].trim_ascii()).ok()?;
        info.deadline_secs = info.deadline_secs.min(MAX_RECORDED_SECS);
        info.budget_secs = info.budget_secs.min(MAX_RECORDED_SECS);
        Some(info)
    }

    /// `pid N, run R, since T` for log lines.
    pub fn describe(&self) -> String {
        let mut s = format!("pid {}", self.pid);
        if !self.run_id.is_empty() {
            s.push_str(&format!(", run {}", self.run_id));
        }
        if !self.started.is_empty() {
            s.push_str(&format!(", since {}", self.started));
        }
        s
    }

    /// The recorded deadline, when there is one.
    pub fn deadline(&self) -> Option<Duration> {
        Some(Duration::from_secs(self.deadline_secs.min(MAX_RECORDED_SECS))).filter(|d| !d.is_zero())
    }
}

/// A held lock. Dropping it (or exiting, however ccci dies) releases it.
#[must_use = "dropping the guard releases the lock at once"]
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
    created: bool,
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lockfile did not exist before this acquisition (it was created under the lock).
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Records who holds it and touches the mtime (the lock's age for the janitor).
    pub fn write_holder(&self, info: &HolderInfo) -> std::io::Result<()> {
        let mut text = serde_json::to_string(info).map_err(std::io::Error::other)?;
        text.push('\n');
        self.file.set_len(0)?;
        self.file.write_all_at(text.as_bytes(), 0)?;
        self.file.set_modified(SystemTime::now())
    }

    /// Forgets the holder info (after a failed reap, the lockfile stays, free).
    pub fn clear_holder(&self) {
        let _ = self.file.set_len(0);
    }

    /// Unlinks the lockfile while still holding it, when the path still names our inode.
    /// Waiters blocked on the old inode notice the identity change and move to the live path.
    pub fn unlink(&self) -> std::io::Result<()> {
        if !same_inode(&self.file, &self.path) {
            return Ok(());
        }
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// A lockfile this acquisition created goes again (a failure before anything was done).
    pub fn unlink_if_created(&self) -> std::io::Result<()> {
        if self.created { self.unlink() } else { Ok(()) }
    }
}

/// What a non-blocking try found.
#[derive(Debug)]
pub enum TryLock {
    /// We hold the lock on the inode the path names: nobody else does.
    Acquired(LockGuard),
    /// Another process holds it.
    Held { age: Option<Duration>, info: Option<HolderInfo> },
    /// We acquired an inode the path no longer names, or the path is absent (without create):
    /// it was unlinked meanwhile.
    Gone,
    /// Garbage or hostile; never followed, and not written.
    Unsafe(String),
}

/// Opens `path` under the rules and tries the lock without blocking.
pub fn try_lock(path: &Path, create: bool) -> TryLock {
    let (file, created) = match open(path, create) {
        Ok(x) => x,
        Err(OpenError::NotFound) => return TryLock::Gone,
        Err(e) => return TryLock::Unsafe(e.describe()),
    };
    try_lock_file(file, path, created)
}

/// The non-blocking try on a file opened under the rules.
pub fn try_lock_file(file: File, path: &Path, created: bool) -> TryLock {
    match file.try_lock() {
        Ok(()) if same_inode(&file, path) => TryLock::Acquired(LockGuard { file, path: path.to_path_buf(), created }),
        Ok(()) => TryLock::Gone,
        Err(TryLockError::WouldBlock) => {
            let age = file.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            TryLock::Held { age, info: HolderInfo::read_from(&file) }
        }
        Err(TryLockError::Error(e)) => TryLock::Unsafe(format!("cannot lock: {e}")),
    }
}

/// Wraps a file that a blocking `flock` just acquired (the event-driven wait of `acquire`).
pub(crate) fn guard(file: File, path: &Path, created: bool) -> LockGuard {
    LockGuard { file, path: path.to_path_buf(), created }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_private_and_fixes_loose_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.lock");
        let (f, created) = open(&p, true).unwrap();
        assert!(created);
        assert_eq!(f.metadata().unwrap().mode() & 0o777, 0o600);
        drop(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_f, created) = open(&p, true).unwrap();
        assert!(!created);
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600, "an existing 0644 lockfile is fchmod'ed");
    }

    #[test]
    fn refuses_links_fifos_dirs_and_hard_links_without_touching_them() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let mtime = std::fs::metadata(&victim).unwrap().modified().unwrap();
        let sym = dir.path().join("sym.lock");
        std::os::unix::fs::symlink(&victim, &sym).unwrap();
        assert!(matches!(open(&sym, true), Err(OpenError::Unsafe(Unsafe::Symlink))));
        let hard = dir.path().join("hard.lock");
        std::fs::hard_link(&victim, &hard).unwrap();
        assert!(matches!(open(&hard, true), Err(OpenError::Unsafe(Unsafe::HardLinked { links: 2 }))));
        assert!(matches!(try_lock(&hard, true), TryLock::Unsafe(w) if w.contains("hard links")));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::metadata(&victim).unwrap().modified().unwrap(), mtime);
        let sub = dir.path().join("d.lock");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(open(&sub, true), Err(OpenError::Unsafe(Unsafe::Directory))));
        let fifo = dir.path().join("f.lock");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(open(&fifo, true), Err(OpenError::Unsafe(Unsafe::Fifo))));
        assert!(matches!(open(&dir.path().join("absent.lock"), false), Err(OpenError::NotFound)));
    }

    #[test]
    fn try_lock_held_gone_and_holder_info() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.lock");
        assert!(matches!(try_lock(&p, false), TryLock::Gone));
        let TryLock::Acquired(g) = try_lock(&p, true) else { panic!("not acquired") };
        assert!(g.created());
        g.write_holder(&HolderInfo { pid: 1, run_id: "r1".into(), deadline_secs: u64::MAX, ..HolderInfo::default() })
            .unwrap();
        let TryLock::Held { info: Some(info), age: Some(_) } = try_lock(&p, true) else { panic!("not held") };
        assert_eq!(info.run_id, "r1");
        assert_eq!(info.deadline_secs, MAX_RECORDED_SECS, "a hostile deadline is clamped when read");
        g.unlink().unwrap();
        assert!(!p.exists());
    }
}
