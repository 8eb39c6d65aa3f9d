//! Taking a lock: a non-blocking try, then an event-driven wait that stays cancellable.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::LockError;
use super::file::{self, LockGuard, OpenError, TryLock};
use super::proc_locks;
use crate::exit::Cause;
use crate::lifetime::{self, Event, Stop};

fn open_error(path: &Path, e: OpenError) -> LockError {
    match e {
        OpenError::Unsafe(u) => LockError::Unsafe { path: path.to_path_buf(), what: u.to_string() },
        other => LockError::Open { path: path.to_path_buf(), why: other.describe() },
    }
}

/// A non-blocking try. `Ok(None)`: another process holds it.
pub fn try_acquire(path: &Path) -> Result<Option<LockGuard>, LockError> {
    loop {
        let (f, created) = file::open(path, true).map_err(|e| open_error(path, e))?;
        match file::try_lock_file(f, path, created) {
            TryLock::Acquired(g) => return Ok(Some(g)),
            TryLock::Held { .. } => return Ok(None),
            // The path was unlinked (and maybe recreated) while we opened it: retry live.
            TryLock::Gone => continue,
            TryLock::Unsafe(what) => return Err(LockError::Flock { path: path.to_path_buf(), why: what }),
        }
    }
}

const WAITING: u8 = 0;
const ACQUIRED: u8 = 1;
const CANCELLED: u8 = 2;

/// Who holds the lock at `path`, in words, for the one "waiting" log line.
fn holder_of(path: &Path) -> String {
    let Ok((f, _)) = file::open(path, false) else { return "holder unknown".to_string() };
    if let Some(info) = file::HolderInfo::read_from(&f) {
        return info.describe();
    }
    match proc_locks::holders_of_file(&f).first() {
        Some(pid) => proc_locks::describe_pid(*pid),
        None => "holder unknown".to_string(),
    }
}

/// Takes the lock, waiting as long as allowed.
///
/// The wait is a blocking flock(2) on a dedicated thread, because a flock restarted by
/// SA_RESTART never returns on a signal: the main thread waits on a channel instead and stays
/// cancellable. The hand-off is event-driven (the kernel wakes the blocked flock the moment the
/// holder exits). The state moves once from waiting to acquired or cancelled; an acquisition
/// that lands after a cancel is dropped unused.
pub fn acquire(path: &Path, domain: &str, timeout: Option<Duration>) -> Result<LockGuard, LockError> {
    if let Some(lock) = try_acquire(path)? {
        return Ok(lock);
    }
    let holder = holder_of(path);
    tracing::info!("app lock: another run of {domain} is in flight ({holder}) — waiting");
    let started = Instant::now();
    loop {
        let watch = lifetime::watch();
        let (f, created) = file::open(path, true).map_err(|e| open_error(path, e))?;
        let state = Arc::new(AtomicU8::new(WAITING));
        let slot: Arc<Mutex<Option<std::fs::File>>> = Arc::new(Mutex::new(None));
        let error: Arc<Mutex<Option<std::io::Error>>> = Arc::new(Mutex::new(None));
        {
            let (state, slot, error, tx) = (state.clone(), slot.clone(), error.clone(), watch.sender());
            std::thread::Builder::new()
                .name("app-lock".into())
                .spawn(move || {
                    match f.lock() {
                        Ok(()) => {
                            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
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
                .map_err(|e| LockError::Flock { path: path.to_path_buf(), why: e.to_string() })?;
        }
        let give_up = |cause: Option<Cause>| -> LockError {
            if state.compare_exchange(WAITING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                drop(slot.lock().unwrap_or_else(|e| e.into_inner()).take());
            }
            match cause {
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
                Some(_) => {
                    let _ = give_up(None);
                    return Err(LockError::Cancelled { domain: domain.to_string(), cause: None });
                }
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
            return Err(LockError::Flock { path: path.to_path_buf(), why: source.to_string() });
        }
        let Some(f) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() else { continue };
        if file::same_inode(&f, path) {
            return Ok(file::guard(f, path, created));
        }
        tracing::debug!("app lock {}: the inode we waited on was unlinked; retrying on the live path", path.display());
    }
}
