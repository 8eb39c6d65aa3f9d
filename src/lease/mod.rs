//! The cross-host app lease (SPEC §5 across hosts, issue 20): runner hosts that share one
//! swarm agree, through an etcd cluster, on which run owns an app domain — and every mutating
//! step proves it still does.
//!
//! The local flock stays what it was: "a run on this host is alive". On top of it, with
//! `CCCI_LEASE_ENDPOINTS` set, a run takes the domain's **lease key** `<prefix>/apps/<domain>`:
//! created only if absent, attached to an etcd lease of `CCCI_LEASE_TTL` seconds that a
//! keepalive thread renews while ccci lives. The key's `create_revision` is the run's
//! **fencing token**: it grows with every new holder, and every mutating step first passes
//! [`Held::fence`] — a keepalive plus a transaction that compares the key's `create_revision`
//! with the token — so a holder that paused or was cut off past its TTL is refused before it
//! can touch the next holder's app. Swarm itself cannot check a foreign token, so the fence is
//! a check immediately before the step, not a condition inside it; docs/concurrency.md gives
//! the argument and its residual window.
//!
//! Layout: [`gateway`] is the blocking client of etcd's JSON gateway, [`wire`] its JSON;
//! [`client`] takes a lease (one transaction, and an event-driven wait on a [`watch`]);
//! [`held`] is a held lease with its [`keepalive`] thread, the fence and the release;
//! [`holder`] is who holds a key, in words. Nothing here knows about runs or the janitor: a
//! lost lease is reported through the caller's callback.

pub mod client;
pub mod gateway;
pub mod held;
pub mod holder;
mod keepalive;
mod watch;
pub mod wire;

use std::time::Duration;

use thiserror::Error;

pub use client::{Lease, Tried};
pub use gateway::{Endpoint, GatewayError};
pub use held::Held;
pub use holder::{Holder, KeyState};
pub use keepalive::OnLost;

use crate::exit::Cause;
use crate::lifetime::Stop;

/// Where the lease lives and how long it outlives its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub endpoints: Vec<Endpoint>,
    /// The etcd lease's TTL: how long after its last keepalive a dead holder's key lasts.
    pub ttl: Duration,
    /// The key prefix (`/ccci`): the lease of a domain is `<prefix>/apps/<domain>`.
    pub prefix: String,
}

/// The smallest TTL etcd grants with its default election timeout (`ceil(1.5 × 1 s)`); a
/// smaller request is silently raised to it.
pub const MIN_TTL_SECS: u64 = 2;
/// `CCCI_LEASE_TTL`'s ceiling: a dead holder blocks its domain this long at most.
pub const MAX_TTL_SECS: u64 = 300;
pub const DEFAULT_TTL_SECS: u64 = 10;
pub const DEFAULT_PREFIX: &str = "/ccci";
/// The label a leased run stamps on its app's services and volumes: its fencing token.
pub const TOKEN_LABEL: &str = "ccci.lease-token";

#[derive(Debug, Error)]
pub enum LeaseError {
    #[error("the app lease backend is unavailable: {0}")]
    Unavailable(GatewayError),
    #[error("the app lease backend: {0}")]
    Etcd(GatewayError),
    #[error("etcd granted no lease: {0}")]
    Grant(String),
    #[error("the etcd call was abandoned ({0:?})")]
    Cancelled(Option<Stop>),
}

impl From<GatewayError> for LeaseError {
    fn from(e: GatewayError) -> LeaseError {
        match e {
            GatewayError::Unavailable { .. } => LeaseError::Unavailable(e),
            GatewayError::Cancelled { stop, .. } => LeaseError::Cancelled(stop),
            other => LeaseError::Etcd(other),
        }
    }
}

#[derive(Debug, Error)]
pub enum AcquireError {
    #[error("gave up waiting {} for the app lease of {domain}, held by {holder} (--lock-timeout)", crate::clock::human(*.waited))]
    Timeout { domain: String, waited: Duration, holder: String },
    #[error(
        "gave up waiting {} for the app lease of {domain}: etcd could not be reached or has no quorum ({why}); nothing was created — check the cluster (`etcdctl endpoint health`) and retry the build",
        crate::clock::human(*.waited)
    )]
    Unavailable { domain: String, waited: Duration, why: String },
    #[error("cancelled while waiting for the app lease of {domain}")]
    Cancelled { domain: String, cause: Option<Cause> },
    #[error("cannot take the app lease of {domain}: {source}")]
    Failed { domain: String, source: LeaseError },
}

#[derive(Debug, Error)]
pub enum FenceError {
    /// The lease is provably not this process's any more: refuse the step.
    #[error("refused by the fence: the app lease of {domain} is no longer this run's (token {token}); {now}")]
    Lost { domain: String, token: u64, now: String },
    /// etcd could not be asked: the step cannot be proved safe.
    #[error("cannot prove this run still holds the app lease of {domain} (token {token}): {why}")]
    Unproven { domain: String, token: u64, why: String },
    #[error("the fence check was abandoned ({0:?})")]
    Cancelled(Option<Stop>),
}
