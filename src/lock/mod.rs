//! The app lock (§5): one flock(2) per app domain, held from before `abra app new` until the
//! process exits. The kernel releases it however the process dies, which makes it the only
//! liveness oracle ccci needs: held means a live run, free over an existing app means an orphan.

pub mod fs_check;
pub mod proc_locks;

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::exit::Cause;
use crate::lifetime::{self, Event, Stop};

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "app lock {path}: {what}; remove it (ccci only locks regular files it owns) or use a root-owned CCCI_APP_LOCK_DIR"
    )]
    Unsafe { path: PathBuf, what: String },
    #[error("cannot open app lock {path}: {source}{hint}")]
    Open { path: PathBuf, source: std::io::Error, hint: &'static str },
    #[error("cannot lock {path}: {source}")]
    Flock { path: PathBuf, source: std::io::Error },
    #[error("gave up waiting {} for the app lock of {domain}{holder} (--lock-timeout)", crate::clock::human(*.waited))]
    Timeout { domain: String, waited: Duration, holder: String },
    #[error("cancelled while waiting for the app lock of {domain}")]
    Cancelled { domain: String, cause: Option<Cause> },
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
    /// Reads the holder info from a lockfile's content without locking it.
    pub fn read(path: &Path) -> Option<HolderInfo> {
        let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        Read::by_ref(&mut f).take(64 * 1024).read_to_string(&mut text).ok()?;
        serde_json::from_str(text.trim()).ok()
    }

    fn describe(&self) -> String {
        let mut s = format!("pid {}, run {}", self.pid, self.run_id);
        if !self.started.is_empty() {
            s.push_str(&format!(", since {}", self.started));
        }
        s
    }
}

/// Opens a lockfile under the rules of §5: never follows a symlink, never blocks on a FIFO,
/// requires a regular file owned by the effective user. Nothing a bad path points to is touched.
pub fn open_checked(path: &Path, create: bool) -> Result<File, LockError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).mode(0o644);
    if create {
        opts.create(true);
    }
    let file = opts.open(path).map_err(|source| {
        let what = match source.raw_os_error() {
            Some(libc::ELOOP) => Some("is a symlink"),
            Some(libc::EISDIR) => Some("is a directory"),
            Some(libc::ENXIO) => Some("is a FIFO or socket"),
            _ => None,
        };
        match what {
            Some(w) => LockError::Unsafe { path: path.to_path_buf(), what: w.to_string() },
            None => LockError::Open {
                path: path.to_path_buf(),
                hint: if source.raw_os_error() == Some(libc::EACCES) {
                    " (with fs.protected_regular, a file another user pre-created in a sticky dir cannot be opened for writing: remove it or use a root-owned CCCI_APP_LOCK_DIR)"
                } else {
                    ""
                },
                source,
            },
        }
    })?;
    let meta = file.metadata().map_err(|source| LockError::Open { path: path.to_path_buf(), source, hint: "" })?;
    let ft = meta.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if ft.is_fifo() {
            "is a FIFO"
        } else if ft.is_socket() {
            "is a socket"
        } else if ft.is_char_device() || ft.is_block_device() {
            "is a device"
        } else {
            "is not a regular file"
        };
        return Err(LockError::Unsafe { path: path.to_path_buf(), what: what.into() });
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(LockError::Unsafe {
            path: path.to_path_buf(),
            what: format!("is owned by uid {} (ccci runs as uid {euid})", meta.uid()),
        });
    }
    Ok(file)
}

/// Whether the open file is still the inode the path names (the janitor unlinks lockfiles).
pub fn identity_matches(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A held app lock. Dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct AppLock {
    file: File,
    pub path: PathBuf,
}

impl AppLock {
    /// Records who holds it and touches the mtime (the lock's age for the janitor).
    pub fn write_holder(&mut self, info: &HolderInfo) -> std::io::Result<()> {
        self.file.set_len(0)?;
        let mut text = serde_json::to_string(info).map_err(std::io::Error::other)?;
        text.push('\n');
        self.file.write_all_at_start(text.as_bytes())?;
        self.file.set_modified(SystemTime::now())?;
        Ok(())
    }

    /// Unlinks the lockfile while still holding it (after a clean teardown). Waiters on the old
    /// inode notice the identity change and move to the live path.
    pub fn unlink(&self) -> std::io::Result<()> {
        if identity_matches(&self.file, &self.path) { std::fs::remove_file(&self.path) } else { Ok(()) }
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

trait WriteAtStart {
    fn write_all_at_start(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

impl WriteAtStart for File {
    fn write_all_at_start(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.write_all_at(bytes, 0)
    }
}

/// A non-blocking try. `Ok(None)`: another process holds it.
pub fn try_acquire(path: &Path) -> Result<Option<AppLock>, LockError> {
    loop {
        let file = open_checked(path, true)?;
        match file.try_lock() {
            Ok(()) => {
                if identity_matches(&file, path) {
                    return Ok(Some(AppLock { file, path: path.to_path_buf() }));
                }
                // The path was unlinked (and maybe recreated) while we opened it: retry live.
            }
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(source)) => return Err(LockError::Flock { path: path.to_path_buf(), source }),
        }
    }
}

const WAITING: u8 = 0;
const ACQUIRED: u8 = 1;
const CANCELLED: u8 = 2;

/// Takes the app lock, waiting as long as allowed.
///
/// The wait is a blocking flock(2) on a dedicated thread, because a flock restarted by
/// SA_RESTART never returns on a signal: the main thread waits on a channel instead and stays
/// cancellable. The hand-off is event-driven (the kernel wakes the blocked flock the moment the
/// holder exits). The state moves once from waiting to acquired or cancelled; an acquisition
/// that lands after a cancel is dropped unused.
pub fn acquire(path: &Path, domain: &str, timeout: Option<Duration>) -> Result<AppLock, LockError> {
    if let Some(lock) = try_acquire(path)? {
        return Ok(lock);
    }
    let holder = HolderInfo::read(path).map(|h| h.describe()).unwrap_or_else(|| {
        open_checked(path, false)
            .ok()
            .and_then(|f| proc_locks::holders_of_file(&f).first().copied())
            .map_or_else(|| "holder unknown".to_string(), |p| format!("pid {p}"))
    });
    tracing::info!("app lock: another run of {domain} is in flight ({holder}) — waiting");
    let started = Instant::now();
    loop {
        let watch = lifetime::watch();
        let file = open_checked(path, true)?;
        let state = Arc::new(AtomicU8::new(WAITING));
        let slot: Arc<Mutex<Option<File>>> = Arc::new(Mutex::new(None));
        let error: Arc<Mutex<Option<std::io::Error>>> = Arc::new(Mutex::new(None));
        {
            let (state, slot, error, tx) = (state.clone(), slot.clone(), error.clone(), watch.sender());
            std::thread::Builder::new()
                .name("app-lock".into())
                .spawn(move || {
                    match file.lock() {
                        Ok(()) => {
                            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
                            if state.compare_exchange(WAITING, ACQUIRED, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                                // Cancelled meanwhile: release at once, write nothing.
                                drop(slot.lock().unwrap_or_else(|e| e.into_inner()).take());
                                return;
                            }
                        }
                        Err(e) => *error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e),
                    }
                    let _ = tx.send(Event::LockDone);
                })
                .map_err(|source| LockError::Flock { path: path.to_path_buf(), source })?;
        }
        let give_up = |cancel: Option<Cause>| -> LockError {
            if state.compare_exchange(WAITING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                drop(slot.lock().unwrap_or_else(|e| e.into_inner()).take());
            }
            match cancel {
                Some(cause) => LockError::Cancelled { domain: domain.to_string(), cause: Some(cause) },
                None => LockError::Timeout {
                    domain: domain.to_string(),
                    waited: started.elapsed(),
                    holder: format!(" ({holder})"),
                },
            }
        };
        loop {
            match watch.stop() {
                Some(Stop::Cancelled(c)) => return Err(give_up(Some(c))),
                Some(_) => return Err(give_up(None).into_cancelled(domain)),
                None => {}
            }
            let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
            if left == Some(Duration::ZERO) {
                return Err(give_up(None));
            }
            let wait = left.map_or(Duration::from_millis(500), |l| l.min(Duration::from_millis(500)));
            if let Some(Event::LockDone) = watch.recv_timeout(wait) {
                break;
            }
        }
        if let Some(source) = error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(LockError::Flock { path: path.to_path_buf(), source });
        }
        let Some(file) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() else { continue };
        if identity_matches(&file, path) {
            return Ok(AppLock { file, path: path.to_path_buf() });
        }
        tracing::debug!("app lock {}: the inode we waited on was unlinked; retrying on the live path", path.display());
    }
}

impl LockError {
    fn into_cancelled(self, domain: &str) -> LockError {
        LockError::Cancelled { domain: domain.to_string(), cause: None }
    }
}
