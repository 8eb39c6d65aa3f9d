//! `ccci ps [--all]`: the live runs, and with `--all` the runs that finished in the last hour.
//!
//! Read-only: `run.lock` and app-lock states come from `/proc/locks` (never a probe), what a run
//! is doing from its `status.json`, how a finished run ended from its `results.json`. A run dir
//! whose `status.json` still says `running` while its `run.lock` is free is a run that died
//! without reporting (SIGKILL, OOM, reboot): listed under `--all` as `died`.
//!
//! `--json` prints (schema 1):
//!
//! ```text
//! { "schema": 1, "runs_dir": str, "draining": bool,
//!   "live": [ { "run_id", "attempt", "dir", "recipe", "domain", "stage", "stage_secs",
//!               "elapsed_secs", "deadline_left_secs", "pid",
//!               "lock": "holding"|"waiting"|"none",          // the app lock of its domain
//!               "lock_holder_pid": i32|null, "lock_holder_run": str|null,
//!               "verified": bool, "problem": str|null } ],   // problem: why not verified
//!   "finished": [ { "run_id", "attempt", "dir", "recipe", "domain", "outcome", "exit_code",
//!                   "finished", "duration_ms" } ] }           // --all only
//! ```

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{Cli, PsArgs};
use crate::host::drain;
use crate::lock::proc_locks::{HeldLocks, Seen};
use crate::runs::{self, AppLock, RunDirView};
use crate::{exit, logging};

#[derive(Debug, Serialize)]
pub struct PsOut {
    pub schema: u32,
    pub runs_dir: String,
    pub draining: bool,
    pub live: Vec<LiveRun>,
    pub finished: Vec<FinishedRun>,
}

#[derive(Debug, Serialize)]
pub struct LiveRun {
    pub run_id: String,
    pub attempt: u32,
    pub dir: String,
    pub recipe: String,
    pub domain: String,
    pub stage: String,
    pub stage_secs: Option<u64>,
    pub elapsed_secs: Option<u64>,
    pub deadline_left_secs: Option<i64>,
    pub pid: Option<i32>,
    pub lock: &'static str,
    pub lock_holder_pid: Option<i32>,
    pub lock_holder_run: Option<String>,
    pub verified: bool,
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FinishedRun {
    pub run_id: String,
    pub attempt: u32,
    pub dir: String,
    pub recipe: String,
    pub domain: String,
    pub outcome: String,
    pub exit_code: Option<u64>,
    pub finished: String,
    pub duration_ms: Option<u64>,
}

/// The live view of one run dir whose `run.lock` is held.
pub fn live_run(r: &RunDirView, lock_dir: &std::path::Path, held: &HeldLocks) -> LiveRun {
    let pid = match &r.lock {
        Some(Seen::Held(p)) => p.first().copied(),
        _ => None,
    };
    let (verified, problem) = match &r.holder {
        Some(info) => match runs::verify(info, &r.lock_path(), held) {
            Ok(_) => (true, None),
            Err(e) => (false, Some(e)),
        },
        None => (false, Some("run.lock records no holder".to_string())),
    };
    let s = r.status.as_ref();
    let domain = r.domain().unwrap_or_default();
    let (lock, lock_holder_pid, lock_holder_run) = match pid.filter(|_| !domain.is_empty()) {
        Some(p) => match runs::app_lock(lock_dir, &domain, p, held) {
            AppLock::Holding => ("holding", None, None),
            AppLock::Waiting { holder_pid, holder_run } => ("waiting", holder_pid, holder_run),
            AppLock::None => ("none", None, None),
        },
        None => ("none", None, None),
    };
    let started = s.map(|s| s.started.clone()).or_else(|| r.holder.as_ref().map(|h| h.started.clone()));
    LiveRun {
        run_id: r.run_id(),
        attempt: r.attempt(),
        dir: r.path.display().to_string(),
        recipe: s.map(|s| s.recipe.clone()).or_else(|| r.holder.as_ref().map(|h| h.recipe.clone())).unwrap_or_default(),
        domain,
        stage: s.map_or_else(|| "?".to_string(), |s| s.stage.clone()),
        stage_secs: s.and_then(|s| runs::secs_since(&s.since)),
        elapsed_secs: started.as_deref().and_then(runs::secs_since),
        deadline_left_secs: s.and_then(|s| runs::secs_until(&s.deadline_at)),
        pid,
        lock,
        lock_holder_pid,
        lock_holder_run,
        verified,
        problem,
    }
}

fn finished_run(r: &RunDirView) -> Option<FinishedRun> {
    let recent = r.modified.and_then(|m| m.elapsed().ok()).is_some_and(|a| a <= runs::RECENT);
    if !recent || r.held() || r.lock.is_none() {
        return None;
    }
    let res = r.results.as_ref();
    let str_of = |k: &str| res.and_then(|v| v[k].as_str().map(str::to_string));
    let status = r.status.as_ref();
    let outcome = match (str_of("outcome"), status) {
        (Some(o), _) => o,
        (None, Some(s)) if s.outcome == "running" => "died".to_string(),
        (None, Some(s)) => s.outcome.clone(),
        (None, None) => return None,
    };
    Some(FinishedRun {
        run_id: r.run_id(),
        attempt: r.attempt(),
        dir: r.path.display().to_string(),
        recipe: str_of("recipe").or_else(|| status.map(|s| s.recipe.clone())).unwrap_or_default(),
        domain: r.domain().unwrap_or_default(),
        outcome,
        exit_code: res.and_then(|v| v["exit_code"].as_u64()).or_else(|| status?.exit_code.map(u64::from)),
        finished: str_of("finished").unwrap_or_else(|| r.modified.map(crate::clock::rfc3339).unwrap_or_default()),
        duration_ms: res.and_then(|v| v["duration_ms"].as_u64()),
    })
}

pub fn main(cli: &Cli, args: &PsArgs) -> u8 {
    let host = match super::session::operator(cli, false) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let held = HeldLocks::read();
    let dirs = runs::scan(&host.runs_dir, &held);
    let live: Vec<LiveRun> = dirs.iter().filter(|r| r.held()).map(|r| live_run(r, &host.lock_dir, &held)).collect();
    let mut finished: Vec<FinishedRun> =
        if args.all { dirs.iter().filter_map(finished_run).collect() } else { Vec::new() };
    finished.sort_by(|a, b| b.finished.cmp(&a.finished));
    let out = PsOut {
        schema: 1,
        runs_dir: host.runs_dir.display().to_string(),
        draining: matches!(drain::state(&host.lock_dir), drain::State::Draining(_)),
        live,
        finished,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print_tables(&out, args.all);
    }
    logging::flush(crate::logging::EXIT_FLUSH);
    exit::OK
}

fn span(s: Option<u64>) -> String {
    s.map_or_else(|| "-".into(), |s| crate::clock::human(Duration::from_secs(s)))
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(&format!("{c:<w$}  ", w = width[i]));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

fn print_tables(out: &PsOut, all: bool) {
    let mut o = std::io::stdout().lock();
    if out.draining {
        let _ = writeln!(o, "the host is draining: new runs refuse to start (ccci undrain)");
    }
    if out.live.is_empty() {
        let _ = writeln!(o, "no live runs in {}", out.runs_dir);
    } else {
        let rows: Vec<Vec<String>> = out
            .live
            .iter()
            .map(|l| {
                let lock = match l.lock {
                    "waiting" => format!(
                        "waiting for {}",
                        match (&l.lock_holder_run, l.lock_holder_pid) {
                            (Some(r), Some(p)) => format!("run {r} (pid {p})"),
                            (None, Some(p)) => format!("pid {p}"),
                            (Some(r), None) => format!("run {r}"),
                            (None, None) => "its holder".into(),
                        }
                    ),
                    "none" => "-".to_string(),
                    other => other.to_string(),
                };
                let left = l.deadline_left_secs.map_or_else(
                    || "-".into(),
                    |s| if s < 0 { "passed".into() } else { crate::clock::human(Duration::from_secs(s as u64)) },
                );
                vec![
                    l.run_id.clone() + &if l.attempt > 1 { format!(" (#{})", l.attempt) } else { String::new() },
                    l.recipe.clone(),
                    l.domain.clone(),
                    format!("{} ({})", l.stage, span(l.stage_secs)),
                    span(l.elapsed_secs),
                    left,
                    l.pid.map_or_else(|| "-".into(), |p| p.to_string()) + if l.verified { "" } else { " (unverified)" },
                    lock,
                ]
            })
            .collect();
        let head = ["RUN", "RECIPE", "DOMAIN", "STAGE", "ELAPSED", "DEADLINE IN", "PID", "APP LOCK"];
        let _ = write!(o, "{}", table(&head, &rows));
    }
    if all {
        let _ = writeln!(o);
        if out.finished.is_empty() {
            let _ = writeln!(o, "no runs finished in the last hour");
        } else {
            let rows: Vec<Vec<String>> = out
                .finished
                .iter()
                .map(|f| {
                    vec![
                        f.run_id.clone() + &if f.attempt > 1 { format!(" (#{})", f.attempt) } else { String::new() },
                        f.recipe.clone(),
                        f.outcome.clone(),
                        f.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                        f.finished.clone(),
                        f.duration_ms.map_or_else(|| "-".into(), |ms| crate::clock::human(Duration::from_millis(ms))),
                    ]
                })
                .collect();
            let head = ["RUN", "RECIPE", "OUTCOME", "EXIT", "FINISHED", "TOOK"];
            let _ = write!(o, "{}", table(&head, &rows));
        }
    }
}
