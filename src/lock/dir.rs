//! The lock dir: its own safety, listing its app lockfiles, and the sweep over many of them.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::LockError;
use super::file::{self, HolderInfo, OpenError};
use super::proc_locks::{HeldLocks, Seen};
use crate::names;

/// Refuses a lock dir other users could tamper with: it must be a directory owned by the
/// effective user, and not writable by group or others unless it is sticky (`/run/lock` is
/// 1777; a private `0700` dir is better, see docs/operations.md). In a non-sticky shared dir
/// anyone could rename or unlink a live run's lockfile and take the domain.
pub fn check_dir(path: &Path, what: &str) -> Result<(), LockError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // Created by `ccci run` (mode 0700) when missing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(LockError::UnsafeDir { path: path.to_path_buf(), why: format!("cannot inspect {what}: {e}") });
        }
    };
    let euid = nix::unistd::geteuid().as_raw();
    let why = if !meta.is_dir() {
        Some(format!("{what} is not a directory"))
    } else if meta.uid() != euid {
        Some(format!("{what} is owned by uid {} (ccci runs as uid {euid})", meta.uid()))
    } else if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        Some(format!(
            "{what} is writable by other users (mode {:o}) and not sticky: anyone could replace a live run's lockfile",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(LockError::UnsafeDir { path: path.to_path_buf(), why }),
        None => Ok(()),
    }
}

/// What is known about an app lockfile before the probe (a listing's view).
#[derive(Debug, Clone, PartialEq)]
pub enum LockState {
    /// A regular file whose lock state was not read: the probe decides.
    Unprobed,
    /// No lockfile (after a reboot `/run/lock` is empty).
    Absent,
    /// Nobody holds it (read from `/proc/locks`).
    Free,
    /// Someone holds it.
    Held { pids: Vec<i32>, age: Option<Duration>, info: Option<HolderInfo> },
    /// `/proc/locks` could not be matched to this file's device: ccci cannot tell.
    Unknown,
    /// Not a regular file, not ours, or not openable: never followed, opened or touched.
    Unsafe(String),
}

impl LockState {
    pub fn name(&self) -> &'static str {
        match self {
            LockState::Unprobed => "unprobed",
            LockState::Absent => "absent",
            LockState::Free => "free",
            LockState::Held { .. } => "held",
            LockState::Unknown => "unknown",
            LockState::Unsafe(_) => "unsafe",
        }
    }
}

/// An app lockfile as `ccci locks` and a dry run see it.
#[derive(Debug, Clone)]
pub struct LockFileInfo {
    pub domain: String,
    pub path: PathBuf,
    pub state: LockState,
    /// Whether the domain matches the run-app pattern of this host.
    pub run_app: bool,
    pub age: Option<Duration>,
    pub info: Option<HolderInfo>,
}

/// Lists the app lockfiles in `lock_dir` whose domain `keep` accepts (`run_app` says whether
/// `is_run_app` matched). With `held`, lock states come from `/proc/locks` (dry runs and
/// `ccci locks`, which must never take a lock); without it regular files are left to the probe.
/// Entries that are not regular files of ours are reported unsafe and never opened.
pub fn list(
    lock_dir: &Path,
    is_run_app: &dyn Fn(&str) -> bool,
    all: bool,
    held: Option<&HeldLocks>,
) -> std::io::Result<Vec<LockFileInfo>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(lock_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let Some(domain) = name.to_str().and_then(names::domain_of_lock_file) else { continue };
        let run_app = is_run_app(domain);
        if !run_app && !all {
            continue;
        }
        let mut item = LockFileInfo {
            domain: domain.to_string(),
            path: entry.path(),
            state: LockState::Unprobed,
            run_app,
            age: None,
            info: None,
        };
        let Ok(ft) = entry.file_type() else { continue };
        if held.is_none() && ft.is_file() {
            out.push(item);
            continue;
        }
        let meta = match std::fs::symlink_metadata(&item.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                item.state = LockState::Unsafe(format!("cannot inspect: {e}"));
                out.push(item);
                continue;
            }
        };
        item.age = meta.modified().ok().and_then(|t| t.elapsed().ok());
        if let Some(why) = file::unsafe_meta(&meta) {
            item.state = LockState::Unsafe(why.to_string());
        } else if let Some(held) = held {
            // Read-only: a plain open for reading, never a lock (`ccci locks` must not make a
            // starting run see a phantom holder).
            item.info = std::fs::File::open(&item.path).ok().and_then(|f| HolderInfo::read_from(&f));
            item.state = match held.state(&item.path, &meta) {
                Seen::Held(pids) => LockState::Held { pids, age: item.age, info: item.info.clone() },
                Seen::Free => LockState::Free,
                Seen::Unknown => LockState::Unknown,
            };
        }
        out.push(item);
    }
    out.sort_by(|a, b| a.domain.cmp(&b.domain));
    Ok(out)
}

/// What a quick look or the stale-lockfile probe found.
#[derive(Debug)]
pub enum Look {
    /// Held by another process: a live run. Final: the janitor leaves it.
    Held {
        age: Option<Duration>,
        info: Option<HolderInfo>,
    },
    /// Free at that moment (the lock was released again at once).
    Free,
    /// Unlinked by [`LockDir::unlink_if_free`] while holding it.
    Unlinked,
    /// The name is gone.
    Gone,
    Unsafe(String),
    Failed(String),
}

/// The lock dir, opened once, for the sweep over many lockfiles: every call is relative to it,
/// which saves a path walk per call. The open rules are `lock::file`'s; lockfiles are never
/// created here.
pub struct LockDir {
    fd: OwnedFd,
}

impl LockDir {
    pub fn open(path: &Path) -> std::io::Result<LockDir> {
        let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(std::io::Error::from)?;
        Ok(LockDir { fd })
    }

    /// Opens `name` and tries its lock once: `(Free, Some(file))` with the lock held by `file`,
    /// otherwise what was found.
    fn try_at(&self, name: &OsStr) -> (Look, Option<std::fs::File>) {
        let (f, _) = match file::open_at(self.fd.as_fd(), name, false) {
            Ok(x) => x,
            Err(OpenError::NotFound) => return (Look::Gone, None),
            Err(e) => return (Look::Unsafe(e.describe()), None),
        };
        match f.try_lock() {
            Ok(()) => (Look::Free, Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => {
                let age = f.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
                (Look::Held { age, info: HolderInfo::read_from(&f) }, None)
            }
            Err(std::fs::TryLockError::Error(e)) => (Look::Unsafe(format!("cannot lock: {e}")), None),
        }
    }

    /// Held or free, without keeping the lock.
    pub fn peek(&self, name: &OsStr) -> Look {
        self.try_at(name).0
    }

    /// Unlinks the lockfile `name` when the probe acquires it on the inode the name still
    /// names (unlinking while holding it, so a waiter on it moves to the live path).
    pub fn unlink_if_free(&self, name: &OsStr) -> Look {
        let f = match self.try_at(name) {
            (Look::Free, Some(f)) => f,
            (other, _) => return other,
        };
        if !file::same_inode_at(&f, self.fd.as_fd(), name) {
            return Look::Gone;
        }
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Look::Unlinked,
            Err(e) => Look::Failed(format!("cannot unlink: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::file::{TryLock, try_lock};
    use crate::names::RunAppPattern;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_lock_dir_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let ld = LockDir::open(dir.path()).unwrap();
        let name = OsStr::new("cc-ci-app-a-000001.x.lock");
        let path = dir.path().join(name);
        assert!(matches!(ld.unlink_if_free(name), Look::Gone));
        std::fs::write(&path, "").unwrap();
        let TryLock::Acquired(held) = try_lock(&path, false) else { panic!() };
        assert!(matches!(ld.peek(name), Look::Held { .. }));
        assert!(matches!(ld.unlink_if_free(name), Look::Held { .. }));
        drop(held);
        assert!(matches!(ld.peek(name), Look::Free));
        assert!(matches!(ld.unlink_if_free(name), Look::Unlinked));
        assert!(!path.exists());
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        assert!(matches!(ld.unlink_if_free(name), Look::Unsafe(w) if w.contains("symlink")));
        assert!(path.symlink_metadata().is_ok());
    }

    #[test]
    fn lists_lockfiles_without_opening_unsafe_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = RunAppPattern::new("x.test");
        let is_run = |d: &str| p.is_run_domain(d);
        let lf = |d: &str| dir.path().join(names::lock_file_name(d));
        std::fs::write(lf("a-000001.x.test"), "").unwrap();
        std::fs::create_dir(lf("a-000002.x.test")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", lf("a-000003.x.test")).unwrap();
        std::fs::write(lf("warm-app.x.test"), "").unwrap();
        std::fs::write(dir.path().join("unrelated.lock"), "").unwrap();
        let fast = list(dir.path(), &is_run, false, None).unwrap();
        let states: Vec<(&str, &str)> = fast.iter().map(|l| (l.domain.as_str(), l.state.name())).collect();
        assert_eq!(
            states,
            [("a-000001.x.test", "unprobed"), ("a-000002.x.test", "unsafe"), ("a-000003.x.test", "unsafe")]
        );
        let held = HeldLocks::default();
        let deep = list(dir.path(), &is_run, true, Some(&held)).unwrap();
        let states: Vec<(&str, &str, bool)> =
            deep.iter().map(|l| (l.domain.as_str(), l.state.name(), l.run_app)).collect();
        assert_eq!(
            states,
            [
                ("a-000001.x.test", "free", true),
                ("a-000002.x.test", "unsafe", true),
                ("a-000003.x.test", "unsafe", true),
                ("warm-app.x.test", "free", false)
            ]
        );
        assert!(list(&dir.path().join("missing"), &is_run, false, None).unwrap().is_empty());
    }

    #[test]
    fn lock_dir_safety() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("locks");
        assert!(check_dir(&d, "lock dir").is_ok(), "absent: ccci run creates it");
        std::fs::create_dir(&d).unwrap();
        for (mode, ok) in [(0o700, true), (0o755, true), (0o1777, true), (0o777, false), (0o775, false)] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(check_dir(&d, "lock dir").is_ok(), ok, "mode {mode:o}");
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(root.path().join("f"), "").unwrap();
        assert!(check_dir(&root.path().join("f"), "lock dir").is_err());
    }
}
