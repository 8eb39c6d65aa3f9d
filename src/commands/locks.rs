//! `ccci locks` (§1.3): the app-domain lockfiles and who holds them.
//!
//! Strictly read-only: it never takes a lock, not even briefly (a probe would make a starting
//! run see a phantom holder). Held/free comes from `/proc/locks`, matched by device and inode;
//! the holder's run id, start and build link from the file's content when ccci wrote it.
//!
//! `--json` prints (schema 1):
//!
//! ```text
//! { "schema": 1, "lock_dir": str, "lock_dir_exists": bool,
//!   "docker": { "ok": bool, "error": str|null },     // used for stack_exists
//!   "locks": [ { "domain": str, "path": str,
//!                "run_app": bool,                    // matches this host's run-app pattern
//!                "state": "held"|"free"|"unknown"|"unsafe",  // unknown: /proc/locks unmatched
//!                "holder_pids": [i32],               // from /proc/locks
//!                "holder": { "pid", "run_id", "recipe", "started", "deadline_secs",
//!                            "budget_secs", "build_link"? } | null,   // file content
//!                "age_secs": u64|null,               // since the lockfile's mtime
//!                "stack_exists": bool|null,          // null when docker could not be asked
//!                "problem": str|null } ] }           // why unsafe/unknown, or "held by a foreign process (pid N, comm)"
//! ```
//!
//! Also the hidden `lock-wait` helper of `ci/bench_locks.py`: takes a lock with ccci's own
//! acquire and prints the wall-clock time at which it held it.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::adapters::Docker;
use crate::cli::{Cli, LockWaitArgs, LocksArgs};
use crate::commands::output;
use crate::lock::proc_locks::{self, HeldLocks};

use crate::lock::{self, HolderInfo, LockError, LockState};
use crate::names::{self, RunAppPattern};
use crate::{exit, logging};

/// The `--json` document (read back by tests and tools).
#[derive(Debug, Serialize, Deserialize)]
pub struct LocksOut {
    pub schema: u32,
    pub lock_dir: String,
    pub lock_dir_exists: bool,
    pub docker: DockerOut,
    pub locks: Vec<LockOut>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DockerOut {
    pub ok: bool,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LockOut {
    pub domain: String,
    pub path: String,
    pub run_app: bool,
    pub state: Seen,
    pub holder_pids: Vec<i32>,
    pub holder: Option<HolderInfo>,
    pub age_secs: Option<u64>,
    pub stack_exists: Option<bool>,
    pub problem: Option<String>,
}

/// A lockfile as `/proc/locks` and the safe open see it (`locks[].state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Seen {
    Held,
    Free,
    /// `/proc/locks` could not be matched to the file's device.
    Unknown,
    /// Not a lockfile ccci may open (a link, a FIFO, a hard link, the wrong owner).
    Unsafe,
}

impl Seen {
    pub fn as_str(self) -> &'static str {
        match self {
            Seen::Held => "held",
            Seen::Free => "free",
            Seen::Unknown => "unknown",
            Seen::Unsafe => "unsafe",
        }
    }
}

pub fn main(cli: &Cli, args: &LocksArgs) -> u8 {
    let host = match super::session::operator(cli, false) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let pattern = RunAppPattern::new(&host.domain_suffix);
    let held = HeldLocks::read();
    let list = match lock::dir::list(&host.lock_dir, &|d| pattern.is_run_domain(d), true, Some(&held)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ccci: cannot list the app lock dir {}: {e}", host.lock_dir.display());
            return exit::FAILED;
        }
    };
    let (stacks, docker) = if list.is_empty() {
        (None, DockerOut { ok: true, error: None })
    } else {
        match Docker::for_host(&host).namespaces(|name| pattern.stack_of_object(name), crate::app::reap::read_until()) {
            Ok(s) => (Some(s), DockerOut { ok: true, error: None }),
            Err(e) => {
                tracing::warn!("cannot ask docker which stacks exist: {e}");
                (None, DockerOut { ok: false, error: Some(e.to_string()) })
            }
        }
    };
    let locks: Vec<LockOut> = list
        .into_iter()
        .map(|l| {
            let (state, pids, problem) = match l.state {
                LockState::Held { pids, .. } => {
                    // Any local user who can open a lockfile can flock it: call that out.
                    let foreign = pids.iter().find(|p| !proc_locks::is_ccci(**p));
                    let problem = foreign.map(|p| format!("held by {}", proc_locks::describe_pid(*p)));
                    (Seen::Held, pids, problem)
                }
                LockState::Unsafe(why) => (Seen::Unsafe, Vec::new(), Some(why)),
                LockState::Unknown => (
                    Seen::Unknown,
                    Vec::new(),
                    Some("/proc/locks could not be matched to this file's device".to_string()),
                ),
                _ => (Seen::Free, Vec::new(), None),
            };
            LockOut {
                stack_exists: stacks.as_ref().map(|s| s.contains(&names::stack_name(&l.domain))),
                path: l.path.display().to_string(),
                domain: l.domain,
                run_app: l.run_app,
                state,
                holder_pids: pids,
                holder: l.info,
                age_secs: l.age.map(|a| a.as_secs()),
                problem,
            }
        })
        .collect();
    if args.json {
        let out = LocksOut {
            schema: 1,
            lock_dir: host.lock_dir.display().to_string(),
            lock_dir_exists: host.lock_dir.is_dir(),
            docker,
            locks,
        };
        output::stdout(&serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print_table(&host.lock_dir, &locks);
    }
    logging::flush(crate::logging::EXIT_FLUSH);
    exit::OK
}

fn print_table(lock_dir: &std::path::Path, locks: &[LockOut]) {
    if locks.is_empty() {
        if lock_dir.is_dir() {
            output::stdout(&format!("no app lockfiles in {}", lock_dir.display()));
        } else {
            // A typo in CCCI_APP_LOCK_DIR must not read as "nothing is locked".
            output::stdout(&format!(
                "the lock dir {} does not exist (check CCCI_APP_LOCK_DIR; ccci run creates it)",
                lock_dir.display()
            ));
        }
        return;
    }
    let rows: Vec<Vec<String>> = locks
        .iter()
        .map(|l| {
            let h = l.holder.as_ref();
            let pid = l.holder_pids.first().map_or_else(|| "-".to_string(), |p| p.to_string());
            let yes_no = |b: Option<bool>| match b {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            vec![
                l.domain.clone(),
                l.state.as_str().to_string(),
                pid,
                h.map(|h| h.run_id.clone()).filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into()),
                h.map(|h| h.started.clone()).filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into()),
                l.age_secs.map_or_else(|| "-".into(), |s| crate::clock::human(Duration::from_secs(s))),
                yes_no(l.stack_exists).to_string(),
                l.problem.clone().or_else(|| h.and_then(|h| h.build_link.clone())).unwrap_or_default(),
            ]
        })
        .collect();
    let head = ["DOMAIN", "STATE", "PID", "RUN", "STARTED", "AGE", "STACK", "BUILD/PROBLEM"];
    output::stdout(&output::table(&head, &rows));
}

/// Takes the lock at `path` with ccci's own acquire (non-blocking try, then the event-driven
/// wait on its own thread), prints the wall-clock time in nanoseconds since the epoch at which
/// it held it, and exits (releasing it).
pub fn lock_wait(_cli: &Cli, args: &LockWaitArgs) -> u8 {
    if let Err(c) = super::session::signals() {
        return c;
    }
    match lock::acquire(&args.path, "lock-wait", args.timeout.map(Duration::from_secs)) {
        Ok(_held) => {
            let ns = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{ns}");
            let _ = out.flush();
            exit::OK
        }
        Err(LockError::Timeout { .. }) => exit::LOCK_TIMEOUT,
        Err(LockError::Cancelled { cause, .. }) => cause.map_or(exit::TERMINATED, |c| c.exit_code()),
        Err(e) => {
            eprintln!("ccci: {e}");
            exit::FAILED
        }
    }
}
