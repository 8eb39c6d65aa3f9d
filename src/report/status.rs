//! `status.json`: a live run's state for `ccci ps` and the dashboard, written atomically into the
//! run dir at start, whenever the stage changes, and once more with the final outcome.
//!
//! The dashboard must not probe `run.lock` (a probe would make a starting run see a phantom
//! holder), so the run writes what it is doing. `outcome: "running"` alone does not prove the
//! run is alive — a SIGKILLed run leaves it behind: readers decide liveness from `run.lock`
//! (`ccci ps` reads `/proc/locks`) and use this file for what the lock cannot say.
//!
//! ```text
//! { "schema": 1, "run_id": str, "attempt": u32, "recipe": str, "domain": str,
//!   "outcome": "running" | <results.json outcome>, "exit_code": u8|null,
//!   "stage": str,              // fetch, deploy, stage <name>, teardown, done
//!   "since": rfc3339,          // when this stage began
//!   "pid": u32, "token": str,  // CCCI_RUN_TOKEN <run id>:<pid>:<start time>
//!   "started": rfc3339, "deadline_at": rfc3339, "updated": rfc3339,
//!   "waiting": null | { "for": str, "elapsed_secs": u64, "limit_secs": u64|null, "detail": str } }
//! ```
//!
//! `waiting` is refreshed by every heartbeat of a long wait (the lock, readiness, teardown) and
//! cleared when the stage changes; `updated` moves with it, so a dashboard sees a live run's
//! pulse at least every 30 s while it waits.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub schema: u32,
    pub run_id: String,
    pub attempt: u32,
    pub recipe: String,
    pub domain: String,
    pub outcome: String,
    #[serde(default)]
    pub exit_code: Option<u8>,
    pub stage: String,
    pub since: String,
    pub pid: u32,
    #[serde(default)]
    pub token: String,
    pub started: String,
    pub deadline_at: String,
    pub updated: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

/// The long wait a run is in, from its last heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Waiting {
    #[serde(rename = "for")]
    pub what: String,
    pub elapsed_secs: u64,
    pub limit_secs: Option<u64>,
    pub detail: String,
}

/// The file being kept, and its last content (one per process: the run).
static CURRENT: Mutex<Option<(PathBuf, Status)>> = Mutex::new(None);

/// What a run states at start.
pub struct Start<'a> {
    pub path: PathBuf,
    pub run_id: &'a str,
    pub attempt: u32,
    pub recipe: &'a str,
    pub domain: &'a str,
    pub token: &'a str,
    pub started: SystemTime,
    pub deadline: Duration,
}

fn write(path: &std::path::Path, s: &Status) {
    let text = serde_json::to_string_pretty(s).unwrap_or_default() + "\n";
    if let Err(e) = crate::workspace::Workspace::write_atomic(path, text.as_bytes()) {
        tracing::debug!("cannot write {}: {e}", path.display());
    }
}

/// Writes the first `status.json` (`outcome: running`, stage `start`) and keeps it for
/// [`set_stage`] and [`finish`].
pub fn start(st: Start<'_>) {
    let now = crate::clock::rfc3339(SystemTime::now());
    let status = Status {
        schema: 1,
        run_id: st.run_id.to_string(),
        attempt: st.attempt,
        recipe: st.recipe.to_string(),
        domain: st.domain.to_string(),
        outcome: "running".into(),
        exit_code: None,
        stage: "start".into(),
        since: now.clone(),
        pid: std::process::id(),
        token: st.token.to_string(),
        started: crate::clock::rfc3339(st.started),
        deadline_at: crate::clock::rfc3339(st.started + st.deadline),
        updated: now,
        waiting: None,
    };
    write(&st.path, &status);
    crate::progress::on_beat(heartbeat);
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((st.path, status));
}

fn update(f: impl FnOnce(&mut Status)) {
    let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((path, status)) = cur.as_mut() {
        f(status);
        status.updated = crate::clock::rfc3339(SystemTime::now());
        write(path, status);
    }
}

/// A heartbeat of a long wait (see [`crate::progress`]).
fn heartbeat(b: &crate::progress::Beat) {
    update(|s| {
        s.waiting = Some(Waiting {
            what: b.what.clone(),
            elapsed_secs: b.elapsed.as_secs(),
            limit_secs: b.limit.map(|l| l.as_secs()),
            detail: b.detail.clone(),
        });
    });
}

/// Records the stage the run entered (a no-op outside a run).
pub fn set_stage(stage: &str) {
    update(|s| {
        s.waiting = None;
        s.stage = stage.to_string();
        s.since = crate::clock::rfc3339(SystemTime::now());
    });
}

/// Records the final outcome.
pub fn finish(outcome: &str, exit_code: u8) {
    update(|s| {
        s.outcome = outcome.to_string();
        s.exit_code = Some(exit_code);
        s.stage = "done".into();
        s.since = crate::clock::rfc3339(SystemTime::now());
    });
}

/// Reads a `status.json` (hostile-size-bounded: it is ours, but a run dir is readable by the
/// dashboard's user and may be damaged).
pub fn read(path: &std::path::Path) -> Option<Status> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 64 * 1024 {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_stage_finish_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        start(Start {
            path: path.clone(),
            run_id: "r1",
            attempt: 2,
            recipe: "hello",
            domain: "d.x",
            token: "r1:1:2",
            started: SystemTime::now(),
            deadline: Duration::from_secs(60),
        });
        assert_eq!(read(&path).unwrap().stage, "start");
        heartbeat(&crate::progress::Beat {
            what: "the app lock of d.x".into(),
            elapsed: Duration::from_secs(40),
            limit: None,
            detail: "held by run r0".into(),
        });
        let w = read(&path).unwrap().waiting.expect("the heartbeat is recorded");
        assert_eq!((w.what.as_str(), w.elapsed_secs, w.detail.as_str()), ("the app lock of d.x", 40, "held by run r0"));
        set_stage("deploy");
        let s = read(&path).unwrap();
        assert_eq!((s.stage.as_str(), s.outcome.as_str(), s.attempt), ("deploy", "running", 2));
        assert!(s.waiting.is_none(), "a new stage is not the old wait");
        finish("pass", 0);
        let s = read(&path).unwrap();
        assert_eq!((s.outcome.as_str(), s.exit_code, s.stage.as_str()), ("pass", Some(0), "done"));
        *CURRENT.lock().unwrap() = None;
    }
}
