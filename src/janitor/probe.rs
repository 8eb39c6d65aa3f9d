//! The probe: open the lockfile under the rules of §5 and try the lock without blocking. The
//! kernel's answer decides, never the inventory.

use std::ffi::OsStr;
use std::fs::{File, Metadata, TryLockError};
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::lock::{self, HolderInfo, LockError};

/// What the probe found.
#[derive(Debug)]
pub enum Probe {
    /// We hold the lock on the inode the path names: nobody else does.
    Acquired(ProbeLock),
    /// Acquired an inode the path no longer names, or the path vanished: another janitor (or a
    /// clean teardown) got there first.
    Gone,
    /// Another process holds it: a live run.
    Held { age: Option<Duration>, info: Option<HolderInfo> },
    /// Garbage or hostile; never followed, and not opened when the type or owner is wrong.
    Unsafe(String),
}

/// A probe lock the janitor holds. Dropping it releases the lock.
#[derive(Debug)]
pub struct ProbeLock {
    file: File,
    pub path: PathBuf,
    /// The lockfile did not exist before the probe (it was created under the probe lock).
    pub created: bool,
}

impl ProbeLock {
    /// Records the janitor as the holder, so a run waiting for this domain names it.
    pub fn write_holder(&self, info: &HolderInfo) {
        let mut text = serde_json::to_string(info).unwrap_or_default();
        text.push('\n');
        let _ = self.file.set_len(0);
        let _ = self.file.write_all_at(text.as_bytes(), 0);
        let _ = self.file.set_modified(SystemTime::now());
    }

    /// Forgets the janitor's holder info after a failed reap (the lockfile stays, free).
    pub fn clear_holder(&self) {
        let _ = self.file.set_len(0);
    }

    /// After a failure before anything was done: a lockfile the probe created goes again.
    pub fn unlink_if_created(&self) -> std::io::Result<()> {
        if self.created { self.unlink() } else { Ok(()) }
    }

    /// Unlinks the lockfile while still holding it, when the path still names our inode.
    /// Waiters blocked on the old inode notice the identity change and move to the live path.
    pub fn unlink(&self) -> std::io::Result<()> {
        if lock::identity_matches(&self.file, &self.path) {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Why a path is unsafe to open, from its `lstat` alone (nothing it points to is looked at).
pub fn unsafe_kind(meta: &std::fs::Metadata) -> Option<String> {
    let ft = meta.file_type();
    let what = if ft.is_symlink() {
        "is a symlink (never followed)"
    } else if ft.is_dir() {
        "is a directory"
    } else if ft.is_fifo() {
        "is a FIFO"
    } else if ft.is_socket() {
        "is a socket"
    } else if !ft.is_file() {
        "is not a regular file"
    } else {
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Some(format!("is owned by uid {} (ccci runs as uid {euid})", meta.uid()));
        }
        return None;
    };
    Some(what.to_string())
}

/// Probes the lock at `path`. The `lstat` comes first, so a path that is not a regular file of
/// ours is never opened. With `create`, an absent lockfile is created (under the probe lock);
/// without it, an absent lockfile means [`Probe::Gone`].
pub fn probe(path: &Path, create: bool) -> Probe {
    let exists = match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if let Some(why) = unsafe_kind(&meta) {
                return Probe::Unsafe(why);
            }
            true
        }
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Probe::Unsafe(format!("cannot inspect: {e}")),
    };
    if !exists && !create {
        return Probe::Gone;
    }
    let file = match lock::open_checked(path, !exists) {
        Ok(f) => f,
        Err(LockError::Unsafe { what, .. }) => return Probe::Unsafe(what),
        Err(LockError::Open { source, .. }) if source.kind() == ErrorKind::NotFound => return Probe::Gone,
        Err(e) => return Probe::Unsafe(format!("cannot open: {}", open_reason(&e))),
    };
    match file.try_lock() {
        Ok(()) => {
            if lock::identity_matches(&file, path) {
                Probe::Acquired(ProbeLock { file, path: path.to_path_buf(), created: !exists })
            } else {
                Probe::Gone
            }
        }
        Err(TryLockError::WouldBlock) => {
            let age = file.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            Probe::Held { age, info: read_info(&file) }
        }
        Err(TryLockError::Error(e)) => Probe::Unsafe(format!("cannot lock: {e}")),
    }
}

fn open_reason(e: &LockError) -> String {
    match e {
        LockError::Open { source, hint, .. } => format!("{source}{hint}"),
        other => other.to_string(),
    }
}

/// The holder info from an open lockfile (informational: other programs write nothing).
pub fn read_info(file: &File) -> Option<HolderInfo> {
    let mut buf = vec![0u8; 4096];
    let n = file.read_at(&mut buf, 0).ok()?;
    serde_json::from_slice(buf[..n].trim_ascii()).ok()
}

/// The lock dir, opened once, for the sweep over many lockfiles: every call is relative to it
/// (`openat`, `fstatat`, `unlinkat`), which saves a path walk per call. The open rules are those
/// of `lock::open_checked` (§5): `O_RDWR|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC`, then a regular file
/// owned by the effective user; lockfiles are never created here.
pub struct LockDir {
    fd: OwnedFd,
    euid: u32,
}

/// What a quick look at an existing lockfile found.
#[derive(Debug)]
pub enum Peek {
    /// Held by another process: a live run. Final: the janitor leaves it.
    Held {
        age: Option<Duration>,
        info: Option<HolderInfo>,
    },
    /// Free at that moment (the lock was released again at once).
    Free,
    /// The name is gone.
    Gone,
    Unsafe(String),
}

/// What the stale-lockfile probe did.
#[derive(Debug)]
pub enum Stale {
    Unlinked,
    Gone,
    Held { age: Option<Duration>, info: Option<HolderInfo> },
    Unsafe(String),
    Failed(String),
}

impl LockDir {
    pub fn open(path: &Path) -> std::io::Result<LockDir> {
        let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(std::io::Error::from)?;
        Ok(LockDir { fd, euid: nix::unistd::geteuid().as_raw() })
    }

    /// Opens an existing lockfile; `Err(None)`: the name is gone, `Err(Some(why))`: unsafe.
    fn open_at(&self, name: &OsStr) -> Result<(File, Metadata), Option<String>> {
        let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(None),
            Err(Errno::ELOOP) => return Err(Some("is a symlink (never followed)".into())),
            Err(Errno::EISDIR) => return Err(Some("is a directory".into())),
            Err(Errno::ENXIO) => return Err(Some("is a FIFO or socket".into())),
            Err(e) => return Err(Some(format!("cannot open: {e}"))),
        };
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| Some(format!("cannot inspect: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(Some("is not a regular file".into()));
        }
        if meta.uid() != self.euid {
            return Err(Some(format!("is owned by uid {} (ccci runs as uid {})", meta.uid(), self.euid)));
        }
        Ok((file, meta))
    }

    fn held(file: &File, meta: &Metadata) -> (Option<Duration>, Option<HolderInfo>) {
        (meta.modified().ok().and_then(|t| t.elapsed().ok()), read_info(file))
    }

    /// Held or free, without keeping the lock.
    pub fn peek(&self, name: &OsStr) -> Peek {
        let (file, meta) = match self.open_at(name) {
            Ok(x) => x,
            Err(None) => return Peek::Gone,
            Err(Some(why)) => return Peek::Unsafe(why),
        };
        match file.try_lock() {
            Ok(()) => Peek::Free,
            Err(TryLockError::WouldBlock) => {
                let (age, info) = Self::held(&file, &meta);
                Peek::Held { age, info }
            }
            Err(TryLockError::Error(e)) => Peek::Unsafe(format!("cannot lock: {e}")),
        }
    }

    /// Unlinks the lockfile `name` when the probe acquires it on the inode the name still
    /// names (unlinking while holding it, so a waiter on it moves to the live path).
    pub fn unlink_if_free(&self, name: &OsStr) -> Stale {
        let (file, meta) = match self.open_at(name) {
            Ok(x) => x,
            Err(None) => return Stale::Gone,
            Err(Some(why)) => return Stale::Unsafe(why),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let (age, info) = Self::held(&file, &meta);
                return Stale::Held { age, info };
            }
            Err(TryLockError::Error(e)) => return Stale::Unsafe(format!("cannot lock: {e}")),
        }
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_dev == meta.dev() && st.st_ino == meta.ino() => {}
            _ => return Stale::Gone,
        }
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Stale::Unlinked,
            Err(e) => Stale::Failed(format!("cannot unlink: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_held_gone_and_unsafe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cc-ci-app-a-000001.x.lock");
        // Absent without create: gone; with create: acquired and created.
        assert!(matches!(probe(&path, false), Probe::Gone));
        let Probe::Acquired(p) = probe(&path, true) else { panic!("not acquired") };
        assert!(p.created);
        // Held by our own probe (another open file description): would block.
        assert!(matches!(probe(&path, true), Probe::Held { info: None, .. }));
        p.write_holder(&HolderInfo { pid: 1, run_id: "janitor".into(), ..HolderInfo::default() });
        let Probe::Held { info: Some(info), age: Some(_) } = probe(&path, true) else { panic!("not held") };
        assert_eq!(info.run_id, "janitor");
        p.unlink().unwrap();
        assert!(!path.exists());
        drop(p);

        let link = dir.path().join("link.lock");
        let target = dir.path().join("target");
        std::fs::write(&target, "mine").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(probe(&link, true), Probe::Unsafe(w) if w.contains("symlink")));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
        let sub = dir.path().join("dir.lock");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(probe(&sub, true), Probe::Unsafe(w) if w.contains("directory")));
    }

    #[test]
    fn the_lock_dir_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let ld = LockDir::open(dir.path()).unwrap();
        let name = OsStr::new("cc-ci-app-a-000001.x.lock");
        let path = dir.path().join(name);
        assert!(matches!(ld.unlink_if_free(name), Stale::Gone));
        std::fs::write(&path, "").unwrap();
        let Probe::Acquired(held) = probe(&path, false) else { panic!() };
        assert!(matches!(ld.peek(name), Peek::Held { .. }));
        assert!(matches!(ld.unlink_if_free(name), Stale::Held { .. }));
        drop(held);
        assert!(matches!(ld.peek(name), Peek::Free));
        assert!(matches!(ld.unlink_if_free(name), Stale::Unlinked));
        assert!(!path.exists());
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        assert!(matches!(ld.unlink_if_free(name), Stale::Unsafe(w) if w.contains("symlink")));
        assert!(path.symlink_metadata().is_ok());
    }

    #[test]
    fn an_unlinked_inode_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        std::fs::write(&path, "").unwrap();
        let f = lock::open_checked(&path, false).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "").unwrap();
        // The probe opens the live path, so it wins the new inode; the old fd no longer matches.
        assert!(!lock::identity_matches(&f, &path));
        assert!(matches!(probe(&path, false), Probe::Acquired(_)));
    }
}
