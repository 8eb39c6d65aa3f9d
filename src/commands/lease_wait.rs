//! `ccci lease-wait DOMAIN` (hidden): take a domain's app lease with the run's own acquire and
//! obey stdin, so tests and ci/bench_lease.py can drive the lease protocol without a swarm.
//!
//! stdout, one line each: `held <ns since the epoch> <token>` once held; `fence ok` or `fence
//! refused <why>` / `fence unproven <why>` per `fence STEP` line read; `released <ns>` right
//! before the release that a `release` line or the end of stdin asks for. A lost lease ends it
//! like a run: exit 69. Exit 75 when `--timeout` ran out with the lease held elsewhere, 69 when
//! etcd could not be asked, the signal's code when cancelled.

use std::io::{BufRead, Write};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::{Cli, LeaseWaitArgs};
use crate::exit::{self, Cause};
use crate::lease::{AcquireError, FenceError, Holder, Lease};
use crate::lifetime::{self, Deadline};
use crate::{config, logging};

/// Between two lines of the driving test, how often the helper looks whether it was stopped
/// (its lease lost, a signal): a test waits on the `lost` line, so soon.
const LOOK_AT_STOP: Duration = Duration::from_millis(50);
/// One fence asked for by the test: as long as a deploy step's would wait for etcd.
const FENCE_BOUND: Duration = Duration::from_secs(10);

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn main(cli: &Cli, args: &LeaseWaitArgs) -> u8 {
    if let Err(e) = lifetime::start_signal_thread() {
        eprintln!("ccci: cannot start the signal thread: {e}");
        return exit::INTERNAL;
    }
    let env = config::process_env();
    let host = match config::host_only(env.clone()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ccci: {e}");
            return exit::USAGE;
        }
    };
    let Some(settings) = host.lease.clone() else {
        eprintln!("ccci: lease-wait needs CCCI_LEASE_ENDPOINTS (the etcd cluster of the app lease)");
        return exit::USAGE;
    };
    logging::init(
        logging::stderr_filter(env.get(crate::env_vars::CCCI_LOG).map(String::as_str), cli.verbose, cli.quiet),
        false,
    );
    let holder = Holder {
        host: host.machine.clone(),
        run_id: env.get(crate::env_vars::CCCI_RUN_ID).cloned().unwrap_or_else(|| "lease-wait".into()),
        pid: std::process::id(),
        started: crate::clock::rfc3339(SystemTime::now()),
        build_link: None,
        step: None,
    };
    let lease = Lease::new(&settings);
    let on_lost = || -> crate::lease::OnLost {
        Box::new(|why: &str| lifetime::cancel(Cause::LeaseLost, &format!("the app lease was lost: {why}")))
    };
    let held = match lease.acquire(&args.domain, &holder, args.timeout.map(Duration::from_secs), on_lost) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            return match e {
                AcquireError::Timeout { .. } => exit::LOCK_TIMEOUT,
                AcquireError::Unavailable { .. } | AcquireError::Failed { .. } => exit::INFRA,
                AcquireError::Cancelled { cause, .. } => cause.map_or(exit::TERMINATED, Cause::exit_code),
            };
        }
    };
    say(&format!("held {} {}", now_ns(), held.token()));
    tracing::info!("app lease of {} held (token {})", args.domain, held.token());
    let (tx, rx) = channel();
    // stdin is read on a thread of its own: the main thread stays responsive to signals.
    let _ = std::thread::Builder::new().name("stdin".into()).spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    loop {
        if let Some(c) = lifetime::cause() {
            say("lost");
            drop(held);
            return c.exit_code();
        }
        let line = match rx.recv_timeout(LOOK_AT_STOP) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => "release".to_string(),
        };
        let line = line.trim();
        if let Some(step) = line.strip_prefix("fence ") {
            let w = lifetime::watch();
            match held.fence(step, Deadline::after(FENCE_BOUND).watching(&w)) {
                Ok(()) => say("fence ok"),
                Err(e @ FenceError::Lost { .. }) => say(&format!("fence refused {e}")),
                Err(e) => say(&format!("fence unproven {e}")),
            }
        } else if line == "release" {
            say(&format!("released {}", now_ns()));
            return match held.release() {
                Ok(()) => exit::OK,
                Err(e) => {
                    tracing::error!("{e}");
                    exit::INFRA
                }
            };
        }
    }
}
