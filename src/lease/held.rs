//! A held lease: its token, the fence every mutating step passes first, and the release.

use std::time::{Duration, Instant};

use super::gateway::{Gateway, GatewayError};
use super::holder::{Holder, KeyState};
use super::keepalive::KeepAlive;
use super::wire::{B64, Compare, I64, KeepAliveResp, LeaseIdReq, PutReq, RangeReq, RequestOp, TxnReq, TxnResp, code};
use super::{FenceError, LeaseError};
use crate::lifetime::Deadline;

/// How long a release may take before it is left to the TTL.
const RELEASE_BOUND: Duration = Duration::from_secs(3);

/// The lease on one domain, held by this process until [`Held::release`] (or drop).
pub struct Held {
    pub(super) gw: Gateway,
    pub(super) key: String,
    pub(super) domain: String,
    pub(super) lease_id: i64,
    pub(super) token: u64,
    pub(super) holder: Holder,
    pub(super) keep: KeepAlive,
    pub(super) released: bool,
}

impl Held {
    /// The fencing token: the lease key's `create_revision`. It grows with every new holder of
    /// the domain, so a stale holder's token is always smaller than the current one's.
    pub fn token(&self) -> u64 {
        self.token
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Why the keepalive thread thinks the lease is lost, if it does.
    pub fn lost(&self) -> Option<String> {
        self.keep.lost()
    }

    /// The proof, asked immediately before a mutating step, that this process still holds the
    /// domain: (1) a keepalive, answered with a TTL — the lease exists, and the server cannot
    /// expire it before the TTL counted from the moment it was sent; (2) a transaction that
    /// compares the key's `create_revision` with the token and, only when equal, records the
    /// step in the holder value. Linearizable: if it succeeds, no other holder of the domain
    /// existed at its commit, and none can exist before the refreshed lease runs out.
    pub fn fence(&self, step: &str, until: Deadline<'_>) -> Result<(), FenceError> {
        let lost = |now: String| FenceError::Lost { domain: self.domain.clone(), token: self.token, now };
        let unproven = |e: &GatewayError| FenceError::Unproven {
            domain: self.domain.clone(),
            token: self.token,
            why: e.to_string(),
        };
        if self.keep.gone() {
            return Err(lost(self.describe_now(until)));
        }
        let sent = Instant::now();
        let ka: Result<KeepAliveResp, GatewayError> =
            self.gw.call_stream("/v3/lease/keepalive", &LeaseIdReq { id: I64(self.lease_id) }, until);
        match ka {
            Ok(r) if r.ttl.0 > 0 => self.keep.refreshed(sent, Duration::from_secs(r.ttl.0 as u64)),
            Ok(_) => {
                self.keep.mark_gone("etcd says the lease expired");
                return Err(lost(self.describe_now(until)));
            }
            Err(e) if e.refused().is_some_and(|g| g.code == code::NOT_FOUND) => {
                self.keep.mark_gone("etcd says the lease no longer exists");
                return Err(lost(self.describe_now(until)));
            }
            Err(GatewayError::Cancelled { stop, .. }) => return Err(FenceError::Cancelled(stop)),
            Err(e) => return Err(unproven(&e)),
        }
        let txn = TxnReq {
            compare: vec![Compare::created_at(&self.key, self.token as i64)],
            success: vec![RequestOp::RequestPut(PutReq {
                key: B64::of(&self.key),
                value: B64(self.holder.with_step(step).to_json()),
                lease: I64(self.lease_id),
            })],
            failure: vec![RequestOp::RequestRange(RangeReq::key(&self.key))],
        };
        match self.gw.call::<_, TxnResp>("/v3/kv/txn", &txn, until) {
            Ok(r) if r.succeeded => {
                tracing::debug!("app lease of {}: fence passed before {step} (token {})", self.domain, self.token);
                Ok(())
            }
            Ok(r) => {
                self.keep.mark_gone("the lease key is no longer this process's");
                Err(lost(now_of(r.range(0).first().map(KeyState::of))))
            }
            // The put names our lease: etcd refuses it when the lease is gone.
            Err(e) if e.refused().is_some_and(|g| g.code == code::NOT_FOUND) => {
                self.keep.mark_gone("etcd says the lease no longer exists");
                Err(lost(self.describe_now(until)))
            }
            Err(GatewayError::Cancelled { stop, .. }) => Err(FenceError::Cancelled(stop)),
            Err(e) => Err(unproven(&e)),
        }
    }

    /// Who holds the domain now, in words, for a refusal (best effort).
    fn describe_now(&self, until: Deadline<'_>) -> String {
        match self.gw.call::<_, super::wire::RangeResp>("/v3/kv/range", &RangeReq::key(&self.key), until) {
            Ok(r) => now_of(r.kvs.first().map(KeyState::of)),
            Err(e) => format!("who holds it now is unknown ({e})"),
        }
    }

    /// Ends the lease at once (revoking it deletes the key: a waiter on any host wakes). The
    /// keepalive thread is stopped first, so it cannot mistake the revoke for a loss.
    pub fn release(mut self) -> Result<(), LeaseError> {
        self.release_now()
    }

    fn release_now(&mut self) -> Result<(), LeaseError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        self.keep.stop();
        if self.keep.gone() {
            return Ok(());
        }
        let r: Result<serde_json::Value, GatewayError> =
            self.gw.call("/v3/lease/revoke", &LeaseIdReq { id: I64(self.lease_id) }, Deadline::after(RELEASE_BOUND));
        match r {
            Ok(_) => {
                tracing::debug!("app lease of {}: released (token {})", self.domain, self.token);
                Ok(())
            }
            Err(e) if e.refused().is_some_and(|g| g.code == code::NOT_FOUND) => Ok(()),
            Err(e) => Err(LeaseError::from(e)),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Err(e) = self.release_now() {
            tracing::warn!("app lease of {}: cannot release it ({e}); it lapses after its TTL", self.domain);
        }
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("key", &self.key).field("token", &self.token).finish()
    }
}

fn now_of(k: Option<KeyState>) -> String {
    match k {
        Some(k) => format!("it is now held by {}", k.describe()),
        None => "the lease expired and nobody holds the domain now".to_string(),
    }
}
