//! Taking a domain's lease: one transaction that creates the key only if it does not exist, and
//! when it does, an event-driven wait on it (an etcd watch) that stays cancellable.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::gateway::{Gateway, GatewayError};
use super::held::Held;
use super::holder::{Holder, KeyState};
use super::keepalive::{KeepAlive, OnLost};
use super::watch::KeyWatch;
use super::wire::{
    B64, Compare, GrantReq, GrantResp, I64, LeaseIdReq, PutReq, RangeReq, RangeResp, RequestOp, TxnReq, TxnResp,
};
use super::{AcquireError, LeaseError, Settings};
use crate::lifetime::{self, Deadline, Event, Stop};

/// The most one call of the acquire may take (a grant or the transaction), so a wait notices a
/// signal, its timeout and a dead member promptly.
const CALL: Duration = Duration::from_secs(5);
/// A waiter looks at the key again at least this often, even when its watch says nothing: a
/// backstop for a watch that went quiet without ending. Short against any TTL worth using.
const BACKSTOP: Duration = Duration::from_secs(10);
/// Retries while no member answers: 250 ms, doubling to 2 s.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// One try at the key.
pub enum Tried {
    Held(Box<Held>),
    /// Someone holds it (`state`; `None` if it vanished between the transaction's compare and
    /// its read, which a transaction rules out, so never in practice); `revision` is the
    /// cluster's revision at the try, from which a watch replays what follows.
    Taken {
        state: Option<KeyState>,
        revision: i64,
    },
}

/// The lease client of one host: its settings and the members it talks to.
pub struct Lease {
    settings: Settings,
    gw: Gateway,
}

impl Lease {
    pub fn new(settings: &Settings) -> Lease {
        Lease { settings: settings.clone(), gw: Gateway::new(&settings.endpoints) }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `<prefix>/apps/<domain>`.
    pub fn key(&self, domain: &str) -> String {
        format!("{}/apps/{domain}", self.settings.prefix)
    }

    fn apps_prefix(&self) -> String {
        format!("{}/apps/", self.settings.prefix)
    }

    /// The domain's key, when it exists (a linearizable read).
    pub fn read(&self, domain: &str, until: Deadline<'_>) -> Result<Option<KeyState>, LeaseError> {
        let r: RangeResp = self.gw.call("/v3/kv/range", &RangeReq::key(&self.key(domain)), until)?;
        Ok(r.kvs.first().map(KeyState::of))
    }

    /// Every held domain under the prefix, in one linearizable read.
    pub fn read_all(&self, until: Deadline<'_>) -> Result<BTreeMap<String, KeyState>, LeaseError> {
        let prefix = self.apps_prefix();
        let r: RangeResp = self.gw.call("/v3/kv/range", &RangeReq::prefix(&prefix), until)?;
        Ok(r.kvs
            .iter()
            .filter_map(|kv| Some((kv.key.text().strip_prefix(&prefix)?.to_string(), KeyState::of(kv))))
            .collect())
    }

    /// One try: grant a lease, then create the key on it only if the key does not exist
    /// (`create_revision == 0`), reading it back either way. The token is the created key's
    /// `create_revision` — not the transaction's header revision, and not the lease id (lease
    /// ids are not ordered); `etcdctl lock`'s `ETCD_LOCK_REV` is the header revision, which is
    /// why ccci does not use it.
    pub fn try_acquire(
        &self,
        domain: &str,
        holder: &Holder,
        on_lost: OnLost,
        until: Deadline<'_>,
    ) -> Result<Tried, LeaseError> {
        let ttl_secs = self.settings.ttl.as_secs().max(1) as i64;
        let granted_at = Instant::now();
        let grant: GrantResp = self.gw.call("/v3/lease/grant", &GrantReq { ttl: I64(ttl_secs), id: I64(0) }, until)?;
        if let Some(e) = grant.error.filter(|e| !e.is_empty()) {
            return Err(LeaseError::Grant(e));
        }
        if grant.id.0 == 0 {
            return Err(LeaseError::Grant("no lease id in the answer".into()));
        }
        let key = self.key(domain);
        let txn = TxnReq {
            compare: vec![Compare::created_at(&key, 0)],
            success: vec![
                RequestOp::RequestPut(PutReq { key: B64::of(&key), value: B64(holder.to_json()), lease: grant.id }),
                RequestOp::RequestRange(RangeReq::key(&key)),
            ],
            failure: vec![RequestOp::RequestRange(RangeReq::key(&key))],
        };
        let r: TxnResp = match self.gw.call("/v3/kv/txn", &txn, until) {
            Ok(r) => r,
            Err(e) => {
                // The answer may be lost after the commit: without our lease the key goes too.
                self.revoke(grant.id.0);
                return Err(e.into());
            }
        };
        if !r.succeeded {
            self.revoke(grant.id.0);
            return Ok(Tried::Taken { state: r.range(0).first().map(KeyState::of), revision: r.header.revision.0 });
        }
        let token = r.range(1).first().map_or(r.header.revision.0, |kv| kv.create_revision.0);
        let ttl = Duration::from_secs(u64::try_from(grant.ttl.0).unwrap_or(ttl_secs as u64).max(1));
        let what = format!("app lease of {domain} (token {token})");
        let keep = KeepAlive::start(self.gw.fork(), grant.id.0, ttl, granted_at, what, on_lost);
        Ok(Tried::Held(Box::new(Held {
            gw: self.gw.fork(),
            key,
            domain: domain.to_string(),
            lease_id: grant.id.0,
            token: u64::try_from(token).unwrap_or(0),
            holder: holder.clone(),
            keep,
            released: false,
        })))
    }

    fn revoke(&self, id: i64) {
        let r: Result<serde_json::Value, GatewayError> =
            self.gw.call("/v3/lease/revoke", &LeaseIdReq { id: I64(id) }, Deadline::after(CALL));
        if let Err(e) = r {
            tracing::debug!("cannot revoke an unused lease ({e}); it lapses after its TTL");
        }
    }

    /// Takes the domain's lease, waiting while another holds it — event-driven (a watch on the
    /// key), bounded by `timeout` (`None`: until a signal or the deadline), cancellable within
    /// one channel receive. While no member answers (no quorum, etcd down) it keeps trying,
    /// and a timeout then is [`AcquireError::Unavailable`] (the infra verdict), not a lock
    /// timeout.
    pub fn acquire(
        &self,
        domain: &str,
        holder: &Holder,
        timeout: Option<Duration>,
        on_lost: impl Fn() -> OnLost,
    ) -> Result<Held, AcquireError> {
        let started = Instant::now();
        let wait_end = timeout.map_or_else(|| lifetime::instant_after(Duration::MAX), lifetime::instant_after);
        let watch = lifetime::watch();
        let key = self.key(domain);
        let mut told: Option<String> = None;
        let mut seen: Option<String> = None;
        let mut unavailable: Option<String> = None;
        let mut key_watch: Option<KeyWatch> = None;
        let mut next_try = Instant::now();
        let mut retry = RETRY_FIRST;
        // At least one try, whatever is left of the timeout: a free domain is taken at once.
        let mut tried = false;
        loop {
            if let Some(stop) = watch.stop() {
                let cause = match stop {
                    Stop::Cancelled(c) => Some(c),
                    _ => None,
                };
                return Err(AcquireError::Cancelled { domain: domain.to_string(), cause });
            }
            let now = Instant::now();
            if now >= wait_end && tried {
                let waited = started.elapsed();
                return Err(match (unavailable, seen) {
                    (Some(why), _) => AcquireError::Unavailable { domain: domain.to_string(), waited, why },
                    (None, holder) => AcquireError::Timeout {
                        domain: domain.to_string(),
                        waited,
                        holder: holder.unwrap_or_else(|| "holder unknown".into()),
                    },
                });
            }
            if now >= next_try || !tried {
                tried = true;
                let until = Deadline::after(CALL).watching(&watch);
                match self.try_acquire(domain, holder, on_lost(), until) {
                    Ok(Tried::Held(h)) => return Ok(*h),
                    Ok(Tried::Taken { state, revision }) => {
                        if unavailable.take().is_some() {
                            tracing::info!("app lease: etcd answers again");
                        }
                        retry = RETRY_FIRST;
                        let desc = state.as_ref().map_or_else(|| "holder unknown".to_string(), KeyState::describe);
                        if told.as_deref() != Some(desc.as_str()) {
                            tracing::info!("app lease: another run of {domain} holds it ({desc}) — waiting");
                            told = Some(desc.clone());
                        }
                        seen = Some(desc);
                        if !key_watch.as_ref().is_some_and(KeyWatch::is_live) {
                            key_watch = None;
                            match KeyWatch::start(self.gw.fork(), &key, revision + 1, watch.sender()) {
                                Ok(w) => key_watch = Some(w),
                                Err(e) => tracing::warn!(
                                    "app lease: cannot watch {key} ({e}); looking again every {}s",
                                    BACKSTOP.as_secs()
                                ),
                            }
                        }
                        next_try = Instant::now() + BACKSTOP;
                    }
                    Err(LeaseError::Cancelled(_)) => continue,
                    Err(LeaseError::Unavailable(e)) => {
                        if unavailable.is_none() {
                            tracing::warn!(
                                "app lease of {domain}: {e}; waiting for etcd{}",
                                timeout.map_or_else(String::new, |t| format!(
                                    " (up to --lock-timeout, {})",
                                    crate::clock::human(t)
                                ))
                            );
                        }
                        unavailable = Some(e.to_string());
                        key_watch = None;
                        next_try = Instant::now() + retry;
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                    Err(e) => return Err(AcquireError::Failed { domain: domain.to_string(), source: e }),
                }
            }
            let wake = next_try.min(wait_end).saturating_duration_since(Instant::now());
            if let Some(Event::LeaseKey) = watch.recv_timeout(wake) {
                // Released, expired, or the watch ended: look at the key again now.
                next_try = Instant::now();
            }
        }
    }
}
