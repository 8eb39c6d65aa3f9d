//! Ready (§7.5): [`judge`] is the pure policy — one poll of the swarm in, a verdict out — and
//! [`wait`] is the effectful loop that polls docker, runs the probes and the HTTP floor, and
//! stays cancellable.

pub mod judge;
pub mod wait;

pub use judge::{Baseline, Judge, Poll, Verdict};
pub use wait::{HttpFloor, NotReady, Readiness, baseline};
