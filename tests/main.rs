//! End-to-end tests: the real ccci binary against fixtures (and, for the swarm tier, a real
//! Docker Swarm through the fixture abra).

mod common;

mod contract;
mod engine;
mod engine_reads;
mod fetch;
mod input;
mod janitor_swarm;
mod layering;
mod operate;
mod ops;
mod policy;
mod real_abra;
mod run_dir;
mod stages;
mod swarm;
