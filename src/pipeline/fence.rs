//! The run's side of the cross-host app lease (issue 20): taking it right after the local app
//! lock and before anything is created, the fence before every mutating step, and what a
//! refusal means for the run.
//!
//! While the stages run, a fence that fails — the lease provably someone else's, or etcd
//! unable to prove it ours — cancels the run (`Cause::LeaseLost`, the infra verdict) exactly as
//! the keepalive thread does when it loses the lease: stop, skip what is left, tear down. In
//! teardown a refusal is final (the app may already be the next holder's: abandon it to the
//! janitor, touch nothing), while "cannot prove" is retried until etcd answers or the budget is
//! spent — without quorum no lease expires, so an answer may still re-prove this run's lease.

use std::time::{Duration, Instant};

use super::Ctx;
use super::step::StepError;
use crate::app::reap::Fence;
use crate::exit::Cause;
use crate::lease::{AcquireError, FenceError, Held, Holder, OnLost};
use crate::lifetime::{self, Deadline, Stop};

/// The most one fence may take (a keepalive and a transaction; each member gets
/// `lease::gateway::ATTEMPT`).
const FENCE_BOUND: Duration = Duration::from_secs(10);
/// Between two tries of a teardown fence that etcd could not answer.
const TEARDOWN_RETRY: Duration = Duration::from_secs(1);

/// The run's lease, when the host uses one.
#[derive(Default)]
pub(crate) struct RunLease {
    held: Option<Held>,
}

/// What cancels the run when the keepalive thread loses the lease.
fn on_lost() -> OnLost {
    Box::new(|why: &str| lifetime::cancel(Cause::LeaseLost, &format!("the app lease was lost: {why}")))
}

/// Takes the domain's lease (when `CCCI_LEASE_ENDPOINTS` is set), waiting what is left of
/// `--lock-timeout` after the local lock's wait.
pub(super) fn acquire(ctx: &Ctx, waited: Duration) -> Result<RunLease, AcquireError> {
    let Some(lease) = &ctx.lease else { return Ok(RunLease::default()) };
    let cfg = &ctx.cfg;
    let holder = Holder {
        host: cfg.host.machine.clone(),
        run_id: cfg.run_id.clone(),
        pid: std::process::id(),
        started: crate::clock::rfc3339(ctx.started),
        build_link: cfg.build_link.clone(),
        step: None,
    };
    let t = Instant::now();
    let timeout = cfg.lock_timeout.map(|l| l.saturating_sub(waited));
    let held = lease.acquire(&cfg.domain, &holder, timeout, on_lost)?;
    tracing::info!(
        "app lease held: {} (token {}, after {})",
        held.key(),
        held.token(),
        crate::clock::human(t.elapsed())
    );
    Ok(RunLease { held: Some(held) })
}

impl RunLease {
    /// The fencing token, when a lease is held.
    pub(super) fn token(&self) -> Option<u64> {
        self.held.as_ref().map(Held::token)
    }

    fn fence(&self, step: &str) -> Result<(), FenceError> {
        let Some(held) = &self.held else { return Ok(()) };
        let w = lifetime::watch();
        held.fence(step, Deadline::after(FENCE_BOUND).watching(&w))
    }

    /// Immediately before a mutating step of the stages: a failed fence cancels the run.
    pub(super) fn check_running(&self, step: &str) -> Result<(), StepError> {
        match self.fence(step) {
            Ok(()) => Ok(()),
            Err(FenceError::Cancelled(_)) => Err(StepError::Stopped),
            Err(e) => {
                lifetime::cancel(Cause::LeaseLost, &format!("before {step}: {e}"));
                Err(StepError::Stopped)
            }
        }
    }

    /// Immediately before a teardown step: `Err` means do not touch the app (refused, or not
    /// provable within the budget); the reason is in words for the report.
    pub(super) fn check_teardown(&self, step: &str) -> Result<(), String> {
        let mut waiting = false;
        loop {
            match self.fence(step) {
                Ok(()) => {
                    if waiting {
                        tracing::info!("teardown: the app lease is re-proved; going on with {step}");
                    }
                    return Ok(());
                }
                Err(e @ FenceError::Lost { .. }) => return Err(e.to_string()),
                Err(FenceError::Cancelled(stop)) => return Err(format!("{step} skipped ({stop:?})")),
                Err(e @ FenceError::Unproven { .. }) => {
                    if !waiting {
                        tracing::warn!(
                            "teardown: {e}; waiting for etcd to answer before {step} (up to the teardown budget; the janitor reaps the app if this run gives up)"
                        );
                        waiting = true;
                    }
                    if lifetime::abandoned() {
                        return Err(e.to_string());
                    }
                    if let Some(stop @ (Stop::SkipStep | Stop::Abandon)) = lifetime::sleep(TEARDOWN_RETRY) {
                        return Err(format!("{e} ({stop:?})"));
                    }
                }
            }
        }
    }

    /// Ends the lease (the key goes, a waiter on any host wakes). A lease already lost has
    /// nothing to release.
    pub(super) fn release(self) {
        if let Some(h) = self.held
            && let Err(e) = h.release()
        {
            tracing::warn!("cannot release the app lease: {e}; it lapses after its TTL");
        }
    }
}

/// The fence of the reaps the stages run (the pre-deploy clear).
impl Fence for RunLease {
    fn check(&self, step: &str) -> Result<(), String> {
        self.check_running(step).map_err(|_| format!("{step} not done: the app lease fence stopped the run"))
    }
}

/// The fence of teardown's own reap.
pub(super) struct TeardownFence<'a>(pub &'a RunLease);

impl Fence for TeardownFence<'_> {
    fn check(&self, step: &str) -> Result<(), String> {
        self.0.check_teardown(step)
    }
}
