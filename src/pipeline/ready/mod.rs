//! Ready (§7.5): [`judge`] is the pure policy — one look at the swarm in, a verdict out —
//! [`state`] the pure rules between looks (two passes, `stable`, the HTTP floor's timeout, when
//! dockerd's silence is infra), and [`wait`] the effectful loop that reads dockerd on its events,
//! runs the probes and the HTTP floor, and stays cancellable.

mod http;
pub mod judge;
pub mod state;
pub mod wait;

pub use judge::{Baseline, Judge, Poll, Verdict};
pub use state::{HttpFloor, Probes, ReadError, ReadyState, Step};
pub use wait::{NotReady, Readiness, Ready, baseline};
