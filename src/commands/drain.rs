//! `ccci drain [--wait] [--timeout D] [--reason TEXT]` and `ccci undrain`: maintenance.
//!
//! `drain` creates `<lock dir>/cc-ci-drain` (0600, who/when/why); from then on `ccci run`
//! refuses at start with the infra verdict (exit 69) and creates nothing. With `--wait` it then
//! takes `<lock dir>/cc-ci-host.lock` exclusively — every run holds it shared for its whole life
//! — on a side thread (cancellable, bounded by `--timeout`), so it returns exactly when the last
//! live run has released it. `undrain` removes the marker.
//!
//! `--json` prints (schema 1):
//!
//! ```text
//! { "schema": 1, "draining": bool, "created": bool,       // created: this call made the marker
//!   "marker": { "by", "uid", "pid", "since", "reason" } | null, "marker_path": str,
//!   "waited": bool, "drained": bool|null,                  // drained: no run live any more
//!   "waited_ms": u64, "live": [ { "run_id", "attempt", "pid" } ] }   // live when it gave up
//! { "schema": 1, "was_draining": bool, "draining": false }            // undrain
//! ```

use std::time::Instant;

use serde::Serialize;

use crate::cli::{Cli, DrainArgs, UndrainArgs};
use crate::host::drain::{self, Marker, State};
use crate::lock::proc_locks::HeldLocks;
use crate::lock::{self, Waited};
use crate::{exit, logging};

#[derive(Debug, Serialize)]
struct DrainOut {
    schema: u32,
    draining: bool,
    created: bool,
    marker: Option<Marker>,
    marker_path: String,
    waited: bool,
    drained: Option<bool>,
    waited_ms: u64,
    live: Vec<LiveOut>,
}

#[derive(Debug, Serialize)]
struct LiveOut {
    run_id: String,
    attempt: u32,
    pid: Option<i32>,
}

fn live_runs(runs_dir: &std::path::Path) -> Vec<LiveOut> {
    let held = HeldLocks::read();
    crate::runs::scan(runs_dir, &held)
        .into_iter()
        .filter(|r| r.held())
        .map(|r| LiveOut {
            run_id: r.run_id(),
            attempt: r.attempt(),
            pid: match &r.lock {
                Some(lock::proc_locks::Seen::Held(p)) => p.first().copied(),
                _ => None,
            },
        })
        .collect()
}

pub fn drain(cli: &Cli, args: &DrainArgs) -> u8 {
    let (host, timeout) = match super::session::waiting_operator(cli, args.wait, args.timeout.as_deref()) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let lock_dir = &host.lock_dir;
    if let Err(e) = std::fs::DirBuilder::new().recursive(true).create(lock_dir) {
        eprintln!("ccci: cannot create the lock dir {}: {e}", lock_dir.display());
        return exit::FAILED;
    }
    if let Err(e) = lock::dir::check_dir(lock_dir, "the app lock dir (CCCI_APP_LOCK_DIR)") {
        eprintln!("ccci: {e}");
        return exit::USAGE;
    }
    let created = match drain::create_marker(lock_dir, args.reason.as_deref().unwrap_or("")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ccci: {e}");
            return exit::FAILED;
        }
    };
    let marker = match drain::state(lock_dir) {
        State::Draining(m) => Some(m),
        _ => None,
    };
    let mut out = DrainOut {
        schema: 1,
        draining: true,
        created,
        marker,
        marker_path: drain::marker_path(lock_dir).display().to_string(),
        waited: args.wait,
        drained: None,
        waited_ms: 0,
        live: Vec::new(),
    };
    if created {
        tracing::info!("draining: new runs refuse to start (exit 69) until `ccci undrain`");
    } else {
        tracing::info!("the host was already draining; the marker is kept as it was");
    }
    let mut code = exit::OK;
    if args.wait {
        let t0 = Instant::now();
        let live = live_runs(&host.runs_dir);
        if !live.is_empty() {
            let ids: Vec<String> = live.iter().map(|l| l.run_id.clone()).collect();
            tracing::info!("waiting for {} live run(s) to end: {}", live.len(), ids.join(", "));
        }
        let path = drain::host_lock_path(lock_dir);
        let mut beat = crate::progress::Heartbeat::new("the live runs to end", timeout);
        code = match lock::file::open(&path, true) {
            Err(e) => {
                eprintln!("ccci: the host lock {}: {}", path.display(), e.describe());
                exit::FAILED
            }
            Ok((f, _)) => match lock::wait_flock(f, false, timeout, t0, &mut || {
                beat.tick(|| {
                    let ids: Vec<String> = live_runs(&host.runs_dir).into_iter().map(|l| l.run_id).collect();
                    format!("live: {}", ids.join(", "))
                });
            }) {
                Waited::Acquired(held) => {
                    // Released at once: holding it would only refuse runs the marker refuses.
                    drop(held);
                    out.drained = Some(true);
                    tracing::info!("drained: no run is live (waited {})", crate::clock::human(t0.elapsed()));
                    exit::OK
                }
                Waited::TimedOut => {
                    out.drained = Some(false);
                    out.live = live_runs(&host.runs_dir);
                    tracing::error!(
                        "gave up after {} (--timeout): {} run(s) still live; the host stays draining",
                        crate::clock::human(t0.elapsed()),
                        out.live.len()
                    );
                    exit::LOCK_TIMEOUT
                }
                Waited::Cancelled(cause) => {
                    out.drained = Some(false);
                    out.live = live_runs(&host.runs_dir);
                    tracing::warn!("interrupted while waiting; the host stays draining");
                    cause.map_or(exit::TERMINATED, |c| c.exit_code())
                }
                Waited::Failed(e) => {
                    eprintln!("ccci: cannot lock {}: {e}", path.display());
                    exit::FAILED
                }
            },
        };
        out.waited_ms = t0.elapsed().as_millis() as u64;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else if out.drained == Some(true) {
        println!("drained: no run is live; run `ccci undrain` after the maintenance");
    } else if out.drained.is_none() {
        println!("draining: new runs refuse to start; `ccci drain --wait` waits for the live ones");
    }
    logging::flush(crate::logging::EXIT_FLUSH);
    code
}

#[derive(Debug, Serialize)]
struct UndrainOut {
    schema: u32,
    was_draining: bool,
    draining: bool,
}

pub fn undrain(cli: &Cli, args: &UndrainArgs) -> u8 {
    let host = match super::session::operator(cli, false) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let was = match drain::remove_marker(&host.lock_dir) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("ccci: {e}");
            return exit::FAILED;
        }
    };
    if args.json {
        let out = UndrainOut { schema: 1, was_draining: was, draining: false };
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else if was {
        println!("undrained: runs start again");
    } else {
        println!("the host was not draining");
    }
    logging::flush(crate::logging::EXIT_FLUSH);
    exit::OK
}
