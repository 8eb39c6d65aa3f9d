//! The swarm's topology (issue 20): one node, or several shared by runner hosts.
//!
//! On a single-node swarm every run of a domain goes through this host's app lock, so the flock
//! is enough. When hosts join one multi-node swarm, a stack name is global: host A's lock does
//! not stop host B from deploying or reaping the same domain, and B's janitor cannot see that
//! A's run is alive. ccci then refuses to run or reap unless the cross-host app lease is
//! configured — the two safe topologies are named in the refusal and drawn in
//! docs/operations.md.
//!
//! [`classify`] and [`check`] are pure (tested on captured `docker info` output); [`probe`]
//! asks dockerd.

use thiserror::Error;

use crate::adapters::engine::models::{LocalNodeState, SystemInfo};
use crate::adapters::engine::{Deadline, Engine};

/// What this host's swarm looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swarm {
    /// Not a swarm member (ccci's deploys will say so on their own).
    Inactive,
    /// A swarm of this one node.
    Single,
    /// A manager of a swarm of `nodes` nodes.
    Shared { nodes: u64 },
    /// A worker: there is a manager elsewhere, so the swarm is shared.
    Worker,
}

/// The swarm as `docker info` (`GET /info`) describes it.
pub fn classify(info: &SystemInfo) -> Swarm {
    let Some(s) = &info.swarm else { return Swarm::Inactive };
    if s.local_node_state != Some(LocalNodeState::ACTIVE) {
        return Swarm::Inactive;
    }
    if s.control_available != Some(true) {
        return Swarm::Worker;
    }
    match s.nodes.and_then(|n| u64::try_from(n).ok()) {
        Some(n) if n > 1 => Swarm::Shared { nodes: n },
        _ => Swarm::Single,
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error(
        "{what}: runner hosts sharing one swarm cannot see each other's app locks, so a run or a janitor here could deploy over or reap another host's live run. Choose one of the two safe setups: one swarm per host, with a per-host CCCI_DOMAIN_SUFFIX (e.g. ci-1.example.net); or set CCCI_LEASE_ENDPOINTS to an etcd cluster all hosts share (docs/operations.md, \"Topologies\")"
    )]
    SharedWithoutLease { what: String },
}

/// Refuses a shared swarm without the app lease.
pub fn check(swarm: Swarm, lease: bool) -> Result<(), TopologyError> {
    if lease {
        return Ok(());
    }
    match swarm {
        Swarm::Shared { nodes } => {
            Err(TopologyError::SharedWithoutLease { what: format!("this host's swarm has {nodes} nodes") })
        }
        Swarm::Worker => Err(TopologyError::SharedWithoutLease {
            what: "this host is a worker of a swarm managed elsewhere".to_string(),
        }),
        Swarm::Inactive | Swarm::Single => Ok(()),
    }
}

/// Asks dockerd (`GET /info`, bounded) and checks. dockerd that does not answer is not a
/// refusal here: the run's own docker calls report it as the infra trouble it is.
pub fn probe(lease: bool) -> Result<Option<Swarm>, TopologyError> {
    let info = Engine::from_env().ok().and_then(|e| match e.info(Deadline::after(super::INFO_BOUND)) {
        Ok(i) => Some(i),
        Err(err) => {
            tracing::debug!("cannot tell the swarm's size ({err})");
            None
        }
    });
    let Some(info) = info else { return Ok(None) };
    let swarm = classify(&info);
    check(swarm, lease)?;
    Ok(Some(swarm))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docker info --format '{{json .}}'` of this test host (dockerd 20.10, a one-node swarm),
    /// cut to a few fields.
    const SINGLE: &str = include_str!("../../tests/data/topology/docker-info-single.json");

    fn info(edit: impl FnOnce(&mut serde_json::Value)) -> SystemInfo {
        let mut v: serde_json::Value = serde_json::from_str(SINGLE).unwrap();
        edit(&mut v);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_node_count_comes_from_docker_info() {
        assert_eq!(classify(&info(|_| {})), Swarm::Single);
        let three = info(|v| {
            v["Swarm"]["Nodes"] = 3.into();
            v["Swarm"]["Managers"] = 3.into();
        });
        assert_eq!(classify(&three), Swarm::Shared { nodes: 3 });
        // A worker knows no cluster: no node count, no control, a manager elsewhere.
        let worker = info(|v| {
            v["Swarm"]["ControlAvailable"] = false.into();
            v["Swarm"]["Nodes"] = 0.into();
            v["Swarm"]["Managers"] = 0.into();
            v["Swarm"].as_object_mut().unwrap().remove("Cluster");
        });
        assert_eq!(classify(&worker), Swarm::Worker);
        let inactive = info(|v| v["Swarm"] = serde_json::json!({"LocalNodeState": "inactive"}));
        assert_eq!(classify(&inactive), Swarm::Inactive);
    }

    #[test]
    fn a_shared_swarm_needs_the_lease_and_the_refusal_names_both_choices() {
        for swarm in [Swarm::Inactive, Swarm::Single] {
            assert_eq!(check(swarm, false), Ok(()));
        }
        for swarm in [Swarm::Shared { nodes: 3 }, Swarm::Worker] {
            assert_eq!(check(swarm, true), Ok(()));
            let e = check(swarm, false).unwrap_err().to_string();
            assert!(e.contains("CCCI_DOMAIN_SUFFIX") && e.contains("CCCI_LEASE_ENDPOINTS"), "{e}");
        }
        assert!(
            check(Swarm::Shared { nodes: 3 }, false)
                .unwrap_err()
                .to_string()
                .starts_with("this host's swarm has 3 nodes")
        );
    }
}
