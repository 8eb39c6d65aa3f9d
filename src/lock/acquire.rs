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
use crate::progress::Heartbeat;

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

/// The release and a stop arrive as events; a look at least this often anyway, should one be
/// missed (and to notice the timeout).
const BACKSTOP: Duration = Duration::from_millis(500);

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

/// How a blocking wait on a lock ended.
#[derive(Debug)]
pub enum Waited {
    /// The flock was granted: the file holds it (the caller checks the inode's identity).
    Acquired(std::fs::File),
    /// `timeout` (counted from `started`) passed first.
    TimedOut,
    /// A signal or the deadline (`Some`), or a stop during teardown (`None`), came first.
    Cancelled(Option<Cause>),
    Failed(std::io::Error),
}

/// Blocks on a flock of `file` (shared or exclusive) until it is granted, a stop arrives, or
/// `timeout` counted from `started` passes. `tick` runs at least every half second meanwhile
/// (a heartbeat).
///
/// The flock blocks on a dedicated thread, because a flock restarted by SA_RESTART never
/// returns on a signal: the caller waits on a channel instead and stays cancellable. The
/// hand-off is event-driven (the kernel wakes the blocked flock the moment the holder releases
/// it). The state moves once from waiting to acquired or cancelled; a grant that lands after a
/// cancel is dropped at once, unused, so a cancelled waiter never keeps a lock.
pub fn wait_flock(
    f: std::fs::File,
    shared: bool,
    timeout: Option<Duration>,
    started: Instant,
    tick: &mut dyn FnMut(),
) -> Waited {
    let watch = lifetime::watch();
    let state = Arc::new(AtomicU8::new(WAITING));
    let slot: Arc<Mutex<Option<std::fs::File>>> = Arc::new(Mutex::new(None));
    let error: Arc<Mutex<Option<std::io::Error>>> = Arc::new(Mutex::new(None));
    {
        let (state, slot, error, tx) = (state.clone(), slot.clone(), error.clone(), watch.sender());
        let spawned = std::thread::Builder::new().name("lock-wait".into()).spawn(move || {
            match if shared { f.lock_shared() } else { f.lock() } {
                Ok(()) => {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                    if state.compare_exchange(WAITING, ACQUIRED, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                        // Cancelled meanwhile: release at once.
                        drop(slot.lock().unwrap_or_else(|e| e.into_inner()).take());
                        return;
                    }
                }
                Err(e) => *error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e),
            }
            let _ = tx.send(Event::LockDone);
        });
        if let Err(e) = spawned {
            return Waited::Failed(e);
        }
    }
    let give_up = |why: Waited| -> Waited {
        if state.compare_exchange(WAITING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            drop(slot.lock().unwrap_or_else(|e| e.into_inner()).take());
        }
        why
    };
    loop {
        match watch.stop() {
            Some(Stop::Cancelled(c)) => return give_up(Waited::Cancelled(Some(c))),
            Some(_) => return give_up(Waited::Cancelled(None)),
            None => {}
        }
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        if left == Some(Duration::ZERO) {
            return give_up(Waited::TimedOut);
        }
        let wait = left.map_or(BACKSTOP, |l| l.min(BACKSTOP));
        if let Some(Event::LockDone) = watch.recv_timeout(wait) {
            break;
        }
        tick();
    }
    if let Some(source) = error.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Waited::Failed(source);
    }
    match slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(f) => Waited::Acquired(f),
        None => Waited::Failed(std::io::Error::other("the lock thread ended without the lock")),
    }
}

/// Takes the lock, waiting as long as allowed: a non-blocking try, then [`wait_flock`], then the
/// identity check (a lockfile unlinked while we waited on it means: start over on the live path).
pub fn acquire(path: &Path, domain: &str, timeout: Option<Duration>) -> Result<LockGuard, LockError> {
    if let Some(lock) = try_acquire(path)? {
        return Ok(lock);
    }
    let holder = holder_of(path);
    tracing::info!("app lock: another run of {domain} is in flight ({holder}) — waiting");
    let started = Instant::now();
    let mut beat = Heartbeat::new(format!("the app lock of {domain}"), timeout);
    let mut tick = || {
        beat.tick(|| format!("held by {}", holder_of(path)));
    };
    loop {
        let (f, created) = file::open(path, true).map_err(|e| open_error(path, e))?;
        let f = match wait_flock(f, false, timeout, started, &mut tick) {
            Waited::Acquired(f) => f,
            Waited::TimedOut => {
                return Err(LockError::Timeout {
                    domain: domain.to_string(),
                    waited: started.elapsed(),
                    holder: format!(" ({holder})"),
                });
            }
            Waited::Cancelled(cause) => return Err(LockError::Cancelled { domain: domain.to_string(), cause }),
            Waited::Failed(e) => return Err(LockError::Flock { path: path.to_path_buf(), why: e.to_string() }),
        };
        if file::same_inode(&f, path) {
            return Ok(file::guard(f, path, created));
        }
        tracing::debug!("app lock {}: the inode we waited on was unlinked; retrying on the live path", path.display());
    }
}
