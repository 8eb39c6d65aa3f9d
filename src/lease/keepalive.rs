//! Keeping a held lease alive: a thread of its own that sends a keepalive every TTL/3 (etcd's
//! own client does the same) and decides when the lease is lost.
//!
//! **Local validity.** etcd counts the TTL from when it *receives* a keepalive; the client only
//! knows when it *sent* one. So after a keepalive sent at `s` is answered with `ttl`, the server
//! cannot expire the lease before `s + ttl` (clock rates assumed equal; no clock value crosses
//! hosts). The thread calls the lease lost at `s + ttl − ttl/5`: a little before the server
//! could, so the run stops its step while the lease is still its own. That margin is a courtesy
//! to the next holder, not the safety argument — the fence is (docs/concurrency.md).
//!
//! **Lost is not the same as gone.** A keepalive answered with no TTL (or `lease not found`)
//! means the lease is gone: the thread says so and stops. No answer at all (no quorum, a
//! partition) means *unknown*: past local validity the thread reports the lease lost, but keeps
//! trying, because without quorum no lease expires and a new leader refreshes every lease to a
//! full TTL (measured in scale-out notes E4) — once etcd answers again the lease may be
//! re-proved, and the run's teardown may then go ahead under its fence.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::gateway::{Gateway, GatewayError};
use super::wire::{I64, KeepAliveResp, LeaseIdReq, code};
use crate::lifetime::{Deadline, instant_after};

/// Called once, from the keepalive thread, when the lease is lost (with the reason in words).
pub type OnLost = Box<dyn Fn(&str) + Send>;

/// How soon a keepalive that got no answer is tried again.
const RETRY: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub(super) struct Keep {
    /// Until when this process may still count on the lease.
    pub valid_until: Instant,
    /// Why the lease is lost, once it is.
    pub lost: Option<String>,
    /// The cluster said the lease no longer exists: it can never be re-proved.
    pub gone: bool,
}

/// The thread, and what it found out.
pub(super) struct KeepAlive {
    state: Arc<Mutex<Keep>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// `sent + ttl − ttl/5`: until when a keepalive sent at `sent` and answered with `ttl` lets
/// this process count on the lease.
pub(super) fn valid_until(sent: Instant, ttl: Duration) -> Instant {
    sent.checked_add(ttl - ttl / 5).unwrap_or_else(|| instant_after(ttl))
}

impl KeepAlive {
    pub(super) fn start(
        gw: Gateway,
        lease_id: i64,
        ttl: Duration,
        granted_at: Instant,
        what: String,
        on_lost: OnLost,
    ) -> KeepAlive {
        let state = Arc::new(Mutex::new(Keep { valid_until: valid_until(granted_at, ttl), lost: None, gone: false }));
        let (tx, rx) = channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("lease-keepalive".into())
            .spawn(move || run(gw, lease_id, ttl, granted_at, what, on_lost, st, rx))
            .map_err(|e| {
                tracing::error!("cannot start the lease keepalive thread: {e}; the lease lapses after its TTL")
            })
            .ok();
        KeepAlive { state, stop: Some(tx), thread }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keep> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lost(&self) -> Option<String> {
        let k = self.lock();
        k.lost
            .clone()
            .or_else(|| (Instant::now() >= k.valid_until).then(|| "no keepalive was answered in time".to_string()))
    }

    pub(super) fn gone(&self) -> bool {
        self.lock().gone
    }

    /// A keepalive sent at `sent` by someone else (the fence) was answered with `ttl`.
    pub(super) fn refreshed(&self, sent: Instant, ttl: Duration) {
        let mut k = self.lock();
        k.valid_until = k.valid_until.max(valid_until(sent, ttl));
    }

    pub(super) fn mark_gone(&self, why: &str) {
        let mut k = self.lock();
        k.gone = true;
        k.lost.get_or_insert_with(|| why.to_string());
    }

    /// Stops the thread and waits for it (at most one keepalive call, bounded by its deadline).
    pub(super) fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.stop();
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the keepalive thread's whole state, moved in once; a struct would only be unpacked again"
)]
fn run(
    gw: Gateway,
    id: i64,
    ttl: Duration,
    granted_at: Instant,
    what: String,
    on_lost: OnLost,
    state: Arc<Mutex<Keep>>,
    stop: Receiver<()>,
) {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let mut due = granted_at.checked_add(ttl / 3).unwrap_or_else(|| instant_after(ttl / 3));
    // `on_lost` is called once per loss: a lease lost for want of answers and then found gone
    // is one loss.
    let mut told = false;
    let lose = |why: &str, told: &mut bool| {
        if !*told {
            *told = true;
            tracing::error!("{what}: lost: {why}");
            on_lost(why);
        }
    };
    loop {
        match stop.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            // Released or dropped: nothing more to keep, and nothing to report.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let sent = Instant::now();
        // Never longer than a third of the TTL: the next one is due by then anyway.
        let until = Deadline::after(ttl / 3);
        let r: Result<KeepAliveResp, GatewayError> =
            gw.call_stream("/v3/lease/keepalive", &LeaseIdReq { id: I64(id) }, until);
        let gone_why = match r {
            Ok(resp) if resp.ttl.0 > 0 => {
                let granted = Duration::from_secs(u64::try_from(resp.ttl.0).unwrap_or(0));
                let mut k = lock();
                k.valid_until = k.valid_until.max(valid_until(sent, granted));
                if k.lost.take().is_some() {
                    tracing::warn!("{what}: etcd answers again and the lease is still this process's (re-proved)");
                    told = false;
                }
                due = sent.checked_add(granted / 3).unwrap_or_else(|| instant_after(granted / 3));
                continue;
            }
            Ok(_) => "etcd says the lease expired (it was not kept alive in time)",
            Err(e) if e.refused().is_some_and(|g| g.code == code::NOT_FOUND) => "etcd says the lease no longer exists",
            Err(e) => {
                let mut k = lock();
                if Instant::now() >= k.valid_until && k.lost.is_none() {
                    let why = format!("no keepalive was answered before the lease could lapse ({e})");
                    k.lost = Some(why.clone());
                    drop(k);
                    lose(&why, &mut told);
                } else {
                    tracing::debug!("{what}: keepalive failed: {e}; retrying");
                }
                due = Instant::now() + RETRY;
                continue;
            }
        };
        {
            let mut k = lock();
            k.gone = true;
            k.lost = Some(gone_why.to_string());
        }
        // A release racing this answer is not a loss: the stop is checked once more.
        if let Err(TryRecvError::Empty) = stop.try_recv() {
            lose(gone_why, &mut told);
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_validity_ends_a_fifth_of_the_ttl_before_the_server_could_expire() {
        let t = Instant::now();
        assert_eq!(valid_until(t, Duration::from_secs(10)), t + Duration::from_secs(8));
        assert_eq!(valid_until(t, Duration::from_secs(3)), t + Duration::from_millis(2400));
    }
}
