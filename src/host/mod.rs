//! The host's operating state, shared by every run: the drain marker and the host lock
//! (maintenance), and the disk headroom a run needs before it starts.
//!
//! - [`drain`]: `<lock dir>/cc-ci-drain` says "no new runs"; `<lock dir>/cc-ci-host.lock` is held
//!   *shared* by every `ccci run` for its whole life, so `ccci drain --wait` taking it
//!   *exclusively* returns exactly when the last live run has ended.
//! - [`disk`]: the free space of the runs dir and of docker's data root against
//!   `CCCI_MIN_FREE_MB`.
//! - [`topology`]: whether the swarm is shared by several nodes, which needs the cross-host
//!   app lease (a refusal is bad settings, exit 2, like any other preflight refusal).
//!
//! A run refuses on either *before it creates anything* (no run dir, no results.json: there is
//! no run to report on), with one line on stderr and the infra verdict (exit 69): the host, not
//! the recipe, could not test.

pub mod disk;
pub mod drain;
pub mod topology;

/// A preflight's one look at dockerd (`GET /info`): a dockerd that does not answer within it is
/// not a refusal here; the run's own docker calls report it as the infra trouble it is.
pub(crate) const INFO_BOUND: std::time::Duration = std::time::Duration::from_secs(5);
