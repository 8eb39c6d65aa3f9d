//! Teardown (§7.7): always, bounded by the budget, and only while holding the app lock — and,
//! on a shared swarm, only while the app lease's fence says the domain is still this run's:
//! each of `undeploy`, `remove` and the docker routine is fenced right before it runs.

use std::time::{Duration, Instant};

use super::Ctx;
use super::fence::{RunLease, TeardownFence};
use crate::app::{App, reap};
use crate::lifetime;
use crate::lock::LockGuard;
use crate::report::{Teardown, TeardownResult};

/// `stack rm` is asynchronous: how long its objects get to disappear before they are residue.
const VERIFY_FOR: Duration = Duration::from_secs(30);
/// After the docker routine, which waited for the objects itself: one short look.
const VERIFY_AFTER_DOCKER: Duration = Duration::from_secs(5);

fn abandoned(app: &App, started: Instant) -> Option<Teardown> {
    if !lifetime::abandoned() {
        return None;
    }
    tracing::error!(
        "teardown abandoned: {} may remain; the janitor will reap it once this run's lock is released",
        app.domain
    );
    Some(Teardown {
        result: TeardownResult::Abandoned,
        residue: Vec::new(),
        reason: Some("teardown budget spent".into()),
        ms: started.elapsed().as_millis() as u64,
    })
}

/// Starts the teardown phase: the budget's alarm, once for the whole run (the app under test
/// and its dependencies share it).
pub(super) fn begin() {
    lifetime::begin_teardown();
    crate::process::env::set_stage("teardown");
}

/// `abra app undeploy` → `abra app remove` → verify nothing of the stack and no `.env` remains;
/// residue is reported and the janitor's docker routine tried once on it. The same for the app
/// under test and for each dependency app (`app`), each under its own lock; the run's lease
/// (when there is one) covers the dependencies too, whose domains derive from the app's.
pub(super) fn teardown(ctx: &Ctx, app: &App, lock: &LockGuard, lease: &RunLease) -> Teardown {
    let started = Instant::now();
    if let Some(t) = abandoned(app, started) {
        return t;
    }
    let (domain, stack, env_path) = (&app.domain, &app.stack, &app.env_path);

    let deployed = ctx.docker.residue(stack, reap::read_until()).map(|r| !r.services.is_empty()).unwrap_or(true);
    if deployed {
        if let Err(why) = lease.check_teardown("abra app undeploy") {
            return fenced(app, started, &why);
        }
        if let Err(e) = ctx.abra.app_undeploy(domain) {
            tracing::warn!("teardown: abra app undeploy: {e}");
        }
    }
    if let Some(t) = abandoned(app, started) {
        return t;
    }
    if env_path.exists() {
        if let Err(why) = lease.check_teardown("abra app remove") {
            return fenced(app, started, &why);
        }
        if let Err(e) = ctx.abra.app_remove(domain) {
            tracing::warn!("teardown: abra app remove: {e}");
        }
    }
    if let Some(t) = abandoned(app, started) {
        return t;
    }
    // `stack rm` is asynchronous: give the objects a short while to disappear.
    let mut left = verify(ctx, app, VERIFY_FOR);
    if let Some(t) = abandoned(app, started) {
        return t;
    }
    if !left.is_empty() {
        tracing::warn!("teardown: residue of {domain}: {}; trying the janitor's docker routine", left.join(", "));
        if let Err(e) = reap::docker_reap(&ctx.docker, app, &TeardownFence(lease)) {
            tracing::warn!("teardown: docker removal: {e}");
        }
        if let Some(t) = abandoned(app, started) {
            return t;
        }
        left = verify(ctx, app, VERIFY_AFTER_DOCKER);
    }
    let ms = started.elapsed().as_millis() as u64;
    if let Some(t) = abandoned(app, started) {
        return t;
    }
    if left.is_empty() {
        if let Err(e) = lock.unlink() {
            tracing::warn!("cannot unlink the app lock {}: {e}", lock.path().display());
        }
        tracing::info!("teardown of {domain} clean in {}", crate::clock::human(started.elapsed()));
        Teardown { result: TeardownResult::Clean, residue: Vec::new(), reason: None, ms }
    } else {
        tracing::error!("teardown left residue of {domain}: {}", left.join(", "));
        Teardown {
            result: TeardownResult::Residue,
            residue: left,
            reason: Some("objects remained after teardown".into()),
            ms,
        }
    }
}

/// The fence refused a teardown step (or could not prove it safe): the app is not touched —
/// it may already be another run's — and is left to the janitor, which reaps it under a lease
/// of its own once nobody holds the domain.
fn fenced(app: &App, started: Instant, why: &str) -> Teardown {
    tracing::error!(
        "teardown abandoned: {why}; nothing of {} was touched — the janitor reaps it once no run holds its lease",
        app.domain
    );
    Teardown {
        result: TeardownResult::Abandoned,
        residue: Vec::new(),
        reason: Some(format!("the app lease fence refused teardown: {why}")),
        ms: started.elapsed().as_millis() as u64,
    }
}

/// What is left of the app, looked at again on each of the stack's removal events (and every
/// couple of seconds) until nothing is, `within` passes, or the teardown is abandoned. A failed
/// read is residue of an unknown kind (dockerd could not say), retried until the end.
fn verify(ctx: &Ctx, app: &App, within: Duration) -> Vec<String> {
    let abandoned = |_: &lifetime::Watch| lifetime::abandoned();
    let describe = |left: &Vec<String>| left.join(", ");
    let end = reap::until_gone(&ctx.docker, &app.stack, within, &abandoned, &describe, |until| {
        let left = match reap::leftovers_within(&ctx.docker, app, until) {
            Ok(l) => l,
            Err(e) => vec![format!("unknown (docker failed: {e})")],
        };
        (left.is_empty(), left)
    });
    match end {
        reap::GoneEnd::Done(left) | reap::GoneEnd::TimedOut(left) => left,
        reap::GoneEnd::Stopped(left) => {
            left.unwrap_or_else(|| vec!["unknown (teardown abandoned before a look)".into()])
        }
    }
}
