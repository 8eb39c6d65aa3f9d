//! `ccci cancel <run id | domain> [--wait] [--timeout D]`: SIGTERM to one live run, which then
//! tears its app down as on a Drone cancel (outcome `cancelled`, exit 143).
//!
//! Finding the run: by run id, the live attempt of that run id (the holder of its `run.lock`);
//! by domain, the run holding the domain's app lock, else the one live run of that domain
//! (waiting for the lock or fetching). The holder must pass [`crate::runs::verify`] — its
//! recorded token's start time equals the pid's, it is ccci, `/proc/locks` shows it holding
//! `run.lock` — and the signal goes through a pidfd opened *before* the start time is checked
//! once more, so it can only reach that process. `--wait` then blocks (a shared flock of
//! `run.lock` on a side thread: event-driven, cancellable, `--timeout`) until the run released
//! it, which it does when it exits, after its teardown and its results.json.
//!
//! `--json` prints (schema 1):
//!
//! ```text
//! { "schema": 1, "target": str, "matched_by": "run-id"|"domain"|null,
//!   "run": { "run_id", "attempt", "dir", "domain", "recipe", "pid" } | null,
//!   "signalled": "SIGTERM"|null, "waited": bool, "released": bool|null, "waited_ms": u64,
//!   "outcome": str|null, "exit_code": u64|null, "teardown": str|null, "error": str|null }
//! ```

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::{CancelArgs, Cli};
use crate::lock::proc_locks::HeldLocks;
use crate::lock::{self, Waited};
use crate::runs::{self, RunDirView, Verified};
use crate::{exit, logging, names};

#[derive(Debug, Serialize, Default)]
struct CancelOut {
    schema: u32,
    target: String,
    matched_by: Option<&'static str>,
    run: Option<RunOut>,
    signalled: Option<&'static str>,
    waited: bool,
    released: Option<bool>,
    waited_ms: u64,
    outcome: Option<String>,
    exit_code: Option<u64>,
    teardown: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize, Clone)]
struct RunOut {
    run_id: String,
    attempt: u32,
    dir: String,
    domain: String,
    recipe: String,
    pid: i32,
}

/// The run dir of the live run `target` names, and how it matched.
fn find<'a>(
    target: &str,
    dirs: &'a [RunDirView],
    lock_dir: &std::path::Path,
) -> Result<(&'a RunDirView, &'static str), String> {
    let live: Vec<&RunDirView> = dirs.iter().filter(|r| r.held()).collect();
    if names::valid_run_id(target) {
        let by_id: Vec<&&RunDirView> = live.iter().filter(|r| r.run_id() == target).collect();
        if let Some(r) = by_id.iter().max_by_key(|r| r.attempt()) {
            return Ok((r, "run-id"));
        }
    }
    let by_domain: Vec<&&RunDirView> = live.iter().filter(|r| r.domain().as_deref() == Some(target)).collect();
    // The holder of the domain's app lock is "the run of that domain"; others only wait.
    let app_lock = lock_dir.join(names::lock_file_name(target));
    let holder = std::fs::File::open(&app_lock).ok().and_then(|f| lock::HolderInfo::read_from(&f));
    if let Some(h) = holder.filter(|h| !h.run_id.is_empty())
        && let Some(r) = by_domain.iter().find(|r| r.holder.as_ref().is_some_and(|rh| rh.pid == h.pid))
    {
        return Ok((r, "domain"));
    }
    match by_domain.as_slice() {
        [one] => Ok((one, "domain")),
        [] => {
            let finished = dirs
                .iter()
                .filter(|r| r.run_id() == target)
                .max_by_key(|r| r.attempt())
                .and_then(|r| {
                    r.results.as_ref()?["outcome"].as_str().map(|o| format!(" (its last attempt ended: {o})"))
                })
                .unwrap_or_default();
            Err(format!("no live run has the run id or domain {target:?}{finished}"))
        }
        many => Err(format!(
            "{} live runs have the domain {target}: {}; cancel one by run id",
            many.len(),
            many.iter().map(|r| r.run_id()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// SIGTERM through a pidfd: opened first, then the start time checked again, so a pid reused
/// between the check and the signal is never reached (the pidfd names the old process, which is
/// gone: ESRCH).
fn signal_verified(v: &Verified) -> Result<(), String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, v.pid, 0) };
    if fd < 0 {
        return Err(format!("pid {}: {}", v.pid, std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    match crate::process::procfs::read_stat(v.pid) {
        Some(st) if st.start_time == v.start_time => {}
        _ => return Err(format!("pid {} changed between the check and the signal; not signalled", v.pid)),
    }
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo and no flags.
    let rc =
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), libc::SIGTERM, std::ptr::null::<u8>(), 0) };
    if rc != 0 {
        return Err(format!("SIGTERM to pid {}: {}", v.pid, std::io::Error::last_os_error()));
    }
    Ok(())
}

pub fn main(cli: &Cli, args: &CancelArgs) -> u8 {
    let (host, timeout) = match super::session::waiting_operator(cli, args.wait, args.timeout.as_deref()) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let mut out = CancelOut { schema: 1, target: args.target.clone(), waited: args.wait, ..CancelOut::default() };
    let code = cancel(&host, args, timeout, &mut out);
    if let Some(e) = &out.error {
        eprintln!("ccci: {e}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else if let Some(run) = &out.run
        && out.signalled.is_some()
    {
        println!("sent SIGTERM to run {} (attempt {}, pid {}, {})", run.run_id, run.attempt, run.pid, run.domain);
        if let Some(o) = &out.outcome {
            println!(
                "run {} ended: outcome {o} (exit {}), teardown {}, after {}",
                run.run_id,
                out.exit_code.map_or_else(|| "?".into(), |c| c.to_string()),
                out.teardown.as_deref().unwrap_or("?"),
                crate::clock::human(Duration::from_millis(out.waited_ms))
            );
        }
    }
    logging::flush(crate::logging::EXIT_FLUSH);
    code
}

fn cancel(host: &crate::config::Host, args: &CancelArgs, timeout: Option<Duration>, out: &mut CancelOut) -> u8 {
    let held = HeldLocks::read();
    let dirs = runs::scan(&host.runs_dir, &held);
    let (run, how) = match find(&args.target, &dirs, &host.lock_dir) {
        Ok(x) => x,
        Err(e) => {
            out.error = Some(e);
            return exit::FAILED;
        }
    };
    out.matched_by = Some(how);
    let Some(info) = run.holder.as_ref() else {
        out.error = Some(format!("{}: run.lock records no holder; not signalling anything", run.path.display()));
        return exit::FAILED;
    };
    let verified = match runs::verify(info, &run.lock_path(), &held) {
        Ok(v) => v,
        Err(e) => {
            out.error = Some(format!("run {} ({}): {e}", run.run_id(), run.path.display()));
            return exit::FAILED;
        }
    };
    out.run = Some(RunOut {
        run_id: run.run_id(),
        attempt: run.attempt(),
        dir: run.path.display().to_string(),
        domain: run.domain().unwrap_or_default(),
        recipe: info.recipe.clone(),
        pid: verified.pid,
    });
    // Opened before the signal, so the wait cannot miss a release that follows it at once.
    let lock_file = if args.wait { lock::file::open(&run.lock_path(), false).ok().map(|(f, _)| f) } else { None };
    if let Err(e) = signal_verified(&verified) {
        out.error = Some(e);
        return exit::FAILED;
    }
    out.signalled = Some("SIGTERM");
    tracing::info!("cancel: SIGTERM to run {} (pid {}); it tears its app down", run.run_id(), verified.pid);
    if !args.wait {
        return exit::OK;
    }
    let t0 = Instant::now();
    let Some(f) = lock_file else {
        out.released = Some(true);
        return exit::OK;
    };
    let mut beat = crate::progress::Heartbeat::new(format!("run {} to tear down", run.run_id()), timeout);
    let code = match lock::wait_flock(f, true, timeout, t0, &mut || {
        beat.tick(String::new);
    }) {
        Waited::Acquired(f) => {
            drop(f);
            out.released = Some(true);
            exit::OK
        }
        Waited::TimedOut => {
            out.released = Some(false);
            out.error = Some(format!(
                "run {} is still tearing down after {} (--timeout)",
                run.run_id(),
                crate::clock::human(t0.elapsed())
            ));
            exit::LOCK_TIMEOUT
        }
        Waited::Cancelled(cause) => {
            out.released = Some(false);
            cause.map_or(exit::TERMINATED, |c| c.exit_code())
        }
        Waited::Failed(e) => {
            out.error = Some(format!("waiting for {}: {e}", run.lock_path().display()));
            exit::FAILED
        }
    };
    out.waited_ms = t0.elapsed().as_millis() as u64;
    if out.released == Some(true) {
        let results = std::fs::read(run.path.join("results.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if let Some(r) = results {
            out.outcome = r["outcome"].as_str().map(str::to_string);
            out.exit_code = r["exit_code"].as_u64();
            out.teardown = r["teardown"]["result"].as_str().map(str::to_string);
        } else {
            out.outcome = Some("unknown (no results.json)".into());
        }
    }
    code
}
