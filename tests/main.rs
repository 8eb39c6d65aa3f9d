//! End-to-end tests: the real ccci binary against fixtures (and, for the swarm tier, a real
//! Docker Swarm through the fixture abra).

#![expect(
    clippy::disallowed_methods,
    reason = "tests drive the real binary and build their fixtures with plain processes; the spawn-path rule is for ccci itself"
)]
#![expect(
    unreachable_pub,
    reason = "a test crate is its own root: its shared helpers are pub for the test modules, never for anyone else"
)]

mod common;

mod contract;
mod deps_swarm;
mod engine;
mod engine_reads;
mod fetch;
mod infra;
mod input;
mod janitor_swarm;
mod junit;
mod layering;
mod lease_swarm;
mod operate;
mod ops;
mod output;
mod policy;
mod policy_swarm;
mod real_abra;
mod report;
mod run_dir;
mod soak_check;
mod stages;
mod swarm;
