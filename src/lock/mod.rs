//! Locks (§5): one flock(2) per app domain, held from before `abra app new` until the process
//! exits, plus the run dir's `run.lock`. The kernel releases a lock however the process dies,
//! which makes it the only liveness oracle ccci needs: held means a live run, free over an
//! existing app means an orphan.
//!
//! One layer for every lockfile: [`file`] holds the open rules, the holder info and the guard;
//! [`acquire`] the event-driven wait; [`dir`] the lock dir's safety, its listing and the sweep
//! over many lockfiles; [`proc_locks`] who holds what (informational); [`fs_check`] the
//! network-filesystem refusal.

pub mod acquire;
pub mod dir;
pub mod file;
pub mod fs_check;
pub mod proc_locks;

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use acquire::{acquire, try_acquire};
pub use dir::{LockDir, LockFileInfo, LockState, Look};
pub use file::{HolderInfo, LockGuard, TryLock, try_lock};

use crate::exit::Cause;

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "app lock {path}: {what}; remove it (ccci only locks regular files it owns) or use a private CCCI_APP_LOCK_DIR"
    )]
    Unsafe { path: PathBuf, what: String },
    #[error("app lock {path}: {why}")]
    Open { path: PathBuf, why: String },
    #[error("cannot lock {path}: {why}")]
    Flock { path: PathBuf, why: String },
    #[error("lock dir {path}: {why}; use a private dir (mode 0700, owned by the user ccci runs as)")]
    UnsafeDir { path: PathBuf, why: String },
    #[error("gave up waiting {} for the app lock of {domain}{holder} (--lock-timeout)", crate::clock::human(*.waited))]
    Timeout { domain: String, waited: Duration, holder: String },
    #[error("cancelled while waiting for the app lock of {domain}")]
    Cancelled { domain: String, cause: Option<Cause> },
}
