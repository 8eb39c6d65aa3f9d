//! The runs dir as an operator sees it: which runs are live, what each is doing, how the
//! finished ones ended. Read-only: lock states come from `/proc/locks`, never from a probe (a
//! probe would make a starting run see a phantom holder), what a run is doing from its
//! `status.json`, how it ended from its `results.json`.
//!
//! A live run is identified by the holder of its `run.lock`, and believed only when every check
//! agrees (see [`verify`]): ccci never signals a pid on the word of a file alone.

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::lock::HolderInfo;
use crate::lock::proc_locks::{HeldLocks, Seen};
use crate::names;
use crate::process::{env as child_env, procfs};
use crate::report::status::{self, Status};

/// A run dir under the runs dir.
#[derive(Debug, Clone)]
pub struct RunDirView {
    /// Its name: `<run id>` or `<run id>.<n>`.
    pub name: String,
    pub path: PathBuf,
    /// `run.lock` as `/proc/locks` shows it (`None`: no `run.lock`, not a ccci run dir).
    pub lock: Option<Seen>,
    pub holder: Option<HolderInfo>,
    pub status: Option<Status>,
    pub results: Option<serde_json::Value>,
    /// The newest of the dir's, `status.json`'s and `results.json`'s mtimes.
    pub modified: Option<SystemTime>,
}

impl RunDirView {
    pub fn lock_path(&self) -> PathBuf {
        self.path.join("run.lock")
    }

    /// The run id: from the holder info, `status.json`, `results.json`, else the dir name.
    pub fn run_id(&self) -> String {
        self.holder
            .as_ref()
            .map(|h| h.run_id.clone())
            .filter(|r| !r.is_empty())
            .or_else(|| self.status.as_ref().map(|s| s.run_id.clone()))
            .or_else(|| self.results.as_ref().and_then(|r| r["run_id"].as_str().map(str::to_string)))
            .unwrap_or_else(|| self.name.clone())
    }

    pub fn attempt(&self) -> u32 {
        self.status
            .as_ref()
            .map(|s| s.attempt)
            .or_else(|| self.results.as_ref().and_then(|r| r["attempt"].as_u64().map(|a| a as u32)))
            .or_else(|| names::attempt_of(&self.run_id(), &self.name))
            .unwrap_or(1)
    }

    pub fn held(&self) -> bool {
        matches!(self.lock, Some(Seen::Held(_)))
    }

    pub fn domain(&self) -> Option<String> {
        self.status
            .as_ref()
            .map(|s| s.domain.clone())
            .or_else(|| self.results.as_ref().and_then(|r| r["domain"].as_str().map(str::to_string)))
            .filter(|d| !d.is_empty())
    }
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 16 * 1024 * 1024 {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn holder_of(path: &Path) -> Option<HolderInfo> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    std::fs::File::open(path).ok().and_then(|f| HolderInfo::read_from(&f))
}

/// Every run dir under `runs_dir`, sorted by name, with `run.lock` states from `held`.
pub fn scan(runs_dir: &Path, held: &HeldLocks) -> Vec<RunDirView> {
    let Ok(rd) = std::fs::read_dir(runs_dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
        if !names::valid_run_dir(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let lock_path = path.join("run.lock");
        let lock_meta: Option<Metadata> = std::fs::symlink_metadata(&lock_path).ok().filter(|m| m.is_file());
        let lock = lock_meta.as_ref().map(|m| held.state(&lock_path, m));
        let holder = if matches!(lock, Some(Seen::Held(_))) { holder_of(&lock_path) } else { None };
        let modified = [path.clone(), path.join("status.json"), path.join("results.json")]
            .iter()
            .filter_map(|p| std::fs::symlink_metadata(p).ok()?.modified().ok())
            .max();
        out.push(RunDirView {
            status: status::read(&path.join("status.json")),
            results: read_json(&path.join("results.json")),
            name,
            path,
            lock,
            holder,
            modified,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A run whose holder passed every check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verified {
    pub pid: i32,
    /// Clock ticks since boot (`/proc/<pid>/stat` field 22), as the token recorded it.
    pub start_time: u64,
    pub token: String,
}

/// Checks that `info` names the live ccci process holding the lock at `lock_path`:
/// - it records a run token `<run id>:<pid>:<start time>` whose pid is the recorded pid;
/// - `/proc/<pid>/stat` shows that process with exactly that start time (a pid reused by another
///   process after the run died has another start time: refused, never signalled);
/// - its `comm` is `ccci`;
/// - `/proc/locks` shows that pid holding the lock.
pub fn verify(info: &HolderInfo, lock_path: &Path, held: &HeldLocks) -> Result<Verified, String> {
    let token = info.token.clone().ok_or("its lockfile records no run token (a ccci older than cancel?)")?;
    let (_, pid, start) = child_env::parse_run_token(&token).ok_or_else(|| format!("bad run token {token:?}"))?;
    if i64::from(pid) != i64::from(info.pid) {
        return Err(format!("the run token names pid {pid}, the lockfile pid {}", info.pid));
    }
    let stat = procfs::read_stat(pid).ok_or_else(|| format!("pid {pid} is gone"))?;
    if stat.start_time != start || matches!(stat.state, 'Z' | 'X') {
        return Err(format!(
            "pid {pid} started at tick {}, not at tick {start} as the run's token says: the pid now belongs to another process; refusing to signal it",
            stat.start_time
        ));
    }
    if !crate::lock::proc_locks::is_ccci(pid) {
        return Err(format!("pid {pid} is {}, not ccci", crate::lock::proc_locks::describe_pid(pid)));
    }
    let meta = std::fs::symlink_metadata(lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if !held.holders(lock_path, &meta).contains(&pid) {
        return Err(format!("/proc/locks does not show pid {pid} holding {}", lock_path.display()));
    }
    Ok(Verified { pid, start_time: start, token })
}

/// Where a live run is with the app lock of its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppLock {
    /// The run holds it (deploying, testing or tearing down).
    Holding,
    /// The run waits for it; the holder's pid and run id when known.
    Waiting { holder_pid: Option<i32>, holder_run: Option<String> },
    /// Neither (before the deploy: fetching; or after releasing it).
    None,
}

/// What the app lock of `domain` says about `pid`.
pub fn app_lock(lock_dir: &Path, domain: &str, pid: i32, held: &HeldLocks) -> AppLock {
    let path = lock_dir.join(names::lock_file_name(domain));
    let Ok(meta) = std::fs::symlink_metadata(&path) else { return AppLock::None };
    let holders = held.holders(&path, &meta);
    if holders.contains(&pid) {
        return AppLock::Holding;
    }
    if held.waiters(&path, &meta).contains(&pid) {
        let info = holder_of(&path);
        return AppLock::Waiting {
            holder_pid: holders.first().copied().or(info.as_ref().map(|i| i.pid as i32)),
            holder_run: info.map(|i| i.run_id).filter(|r| !r.is_empty()),
        };
    }
    AppLock::None
}

/// Seconds until an RFC 3339 instant (negative: past).
pub fn secs_until(at: &str) -> Option<i64> {
    let t = crate::clock::parse_rfc3339(at)?;
    let now = SystemTime::now();
    Some(match t.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

/// Seconds since an RFC 3339 instant.
pub fn secs_since(at: &str) -> Option<u64> {
    crate::clock::parse_rfc3339(at)?.elapsed().ok().map(|d| d.as_secs())
}

/// A finished run is "recent" for `ccci ps --all` within this.
pub const RECENT: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_pid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.lock");
        let crate::lock::TryLock::Acquired(g) = crate::lock::try_lock(&p, true) else { panic!() };
        let me = std::process::id();
        let start = procfs::read_stat(me as i32).unwrap().start_time;
        let info = |start: u64| HolderInfo {
            pid: me,
            run_id: "r".into(),
            token: Some(format!("r:{me}:{start}")),
            ..HolderInfo::default()
        };
        let held = HeldLocks::read();
        let e = verify(&info(start + 1), &p, &held).unwrap_err();
        assert!(e.contains("another process"), "{e}");
        // The right start time gets as far as the comm check (the test binary is not ccci).
        let e = verify(&info(start), &p, &held).unwrap_err();
        assert!(e.contains("not ccci"), "{e}");
        assert!(verify(&HolderInfo { token: None, ..info(start) }, &p, &held).is_err());
        drop(g);
    }
}
