//! Drain for maintenance: the marker that stops new runs, and the host lock every run holds
//! shared.
//!
//! The order of a run's start makes `drain --wait` exact: a run checks the marker, takes the
//! host lock shared, then checks the marker again. `ccci drain` creates the marker *before* it
//! takes the host lock exclusively. So a run either saw the marker (and refused) or held its
//! shared lock before the marker existed — and then `drain --wait` waits for it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::lock::{self, LockGuard, TryLock};
use crate::names;

/// What the marker records: who drained the host, when and why.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    pub by: String,
    pub uid: u32,
    pub pid: u32,
    pub since: String,
    pub reason: String,
}

pub fn marker_path(lock_dir: &Path) -> PathBuf {
    lock_dir.join(names::DRAIN_MARKER)
}

pub fn host_lock_path(lock_dir: &Path) -> PathBuf {
    lock_dir.join(names::HOST_LOCK)
}

/// The drain state read from the marker.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    NotDraining,
    Draining(Marker),
    /// Something other than ccci's marker sits at the path (a symlink, another user's file): it
    /// does not drain the host — in a shared `/run/lock` any user could create it — and it
    /// blocks `ccci drain`.
    Foreign(String),
}

/// Reads the marker without following a link.
pub fn state(lock_dir: &Path) -> State {
    let path = marker_path(lock_dir);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(_) => return State::NotDraining,
    };
    if let Some(why) = lock::file::unsafe_meta(&meta) {
        return State::Foreign(format!("{} {why}", path.display()));
    }
    let text = std::fs::read(&path).unwrap_or_default();
    let marker = serde_json::from_slice(&text[..text.len().min(64 * 1024)]).unwrap_or_else(|_| Marker {
        since: meta.modified().map(crate::clock::rfc3339).unwrap_or_default(),
        uid: meta.uid(),
        ..Marker::default()
    });
    State::Draining(marker)
}

/// One line for a refused run.
pub fn refusal(lock_dir: &Path, m: &Marker) -> String {
    let reason = if m.reason.is_empty() { String::new() } else { format!(": {}", m.reason) };
    format!(
        "the host is draining for maintenance (since {}, by {}{reason}): no new runs start until `ccci undrain` removes {}",
        if m.since.is_empty() { "?" } else { &m.since },
        if m.by.is_empty() { "?" } else { &m.by },
        marker_path(lock_dir).display()
    )
}

/// `Err(line)` when the host is draining. A foreign file at the marker's path is logged and
/// ignored.
pub fn refuse_if_draining(lock_dir: &Path) -> Result<(), String> {
    match state(lock_dir) {
        State::NotDraining => Ok(()),
        State::Draining(m) => Err(refusal(lock_dir, &m)),
        State::Foreign(why) => {
            tracing::warn!("ignoring the drain marker: {why} (not ccci's; remove it)");
            Ok(())
        }
    }
}

/// Takes the host lock shared for the life of the run. `Err(line)` when `ccci drain --wait`
/// holds it exclusively (the host is draining) or it cannot be taken.
pub fn hold_shared(lock_dir: &Path) -> Result<LockGuard, String> {
    let path = host_lock_path(lock_dir);
    match lock::try_lock_shared(&path, true) {
        TryLock::Acquired(g) => Ok(g),
        TryLock::Held { .. } => Err(format!(
            "the host is draining for maintenance: {} is held exclusively (by `ccci drain --wait`)",
            path.display()
        )),
        TryLock::Gone => Err(format!("{}: unlinked while it was taken; try again", path.display())),
        TryLock::Unsafe(why) => Err(format!("the host lock {}: {why}", path.display())),
    }
}

/// Creates the marker (0600, `O_EXCL|O_NOFOLLOW`). `Ok(false)` when ccci's marker already
/// existed (it is kept as it was).
pub fn create_marker(lock_dir: &Path, reason: &str) -> Result<bool, String> {
    let path = marker_path(lock_dir);
    match state(lock_dir) {
        State::Draining(_) => return Ok(false),
        State::Foreign(why) => return Err(format!("cannot drain: {why}; remove it first")),
        State::NotDraining => {}
    }
    let uid = nix::unistd::geteuid();
    let by = nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| uid.to_string(), |u| u.name);
    let m = Marker {
        by,
        uid: uid.as_raw(),
        pid: std::process::id(),
        since: crate::clock::rfc3339(SystemTime::now()),
        reason: reason.to_string(),
    };
    let mut f: File = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let text = serde_json::to_string(&m).unwrap_or_default() + "\n";
    f.write_all(text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(true)
}

/// Removes ccci's marker. `Ok(false)` when the host was not draining.
pub fn remove_marker(lock_dir: &Path) -> Result<bool, String> {
    match state(lock_dir) {
        State::NotDraining => Ok(false),
        State::Foreign(why) => Err(format!("not removing {why}: it is not ccci's marker")),
        State::Draining(_) => match std::fs::remove_file(marker_path(lock_dir)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("cannot remove {}: {e}", marker_path(lock_dir).display())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip_and_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(state(d.path()), State::NotDraining);
        assert!(refuse_if_draining(d.path()).is_ok());
        assert_eq!(create_marker(d.path(), "docker upgrade"), Ok(true));
        assert_eq!(create_marker(d.path(), "again"), Ok(false));
        let State::Draining(m) = state(d.path()) else { panic!() };
        assert_eq!(m.reason, "docker upgrade");
        assert!(refuse_if_draining(d.path()).unwrap_err().contains("docker upgrade"));
        let g = hold_shared(d.path()).unwrap();
        let g2 = hold_shared(d.path()).expect("shared locks coexist");
        drop((g, g2));
        assert_eq!(remove_marker(d.path()), Ok(true));
        assert_eq!(remove_marker(d.path()), Ok(false));
        std::os::unix::fs::symlink("/etc/hostname", marker_path(d.path())).unwrap();
        assert!(matches!(state(d.path()), State::Foreign(_)));
        assert!(refuse_if_draining(d.path()).is_ok(), "a planted link does not drain the host");
        assert!(create_marker(d.path(), "").is_err());
        assert!(remove_marker(d.path()).is_err());
    }
}
