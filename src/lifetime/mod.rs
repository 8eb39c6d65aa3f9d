//! Lifetime (§4): the signal funnel, the deadline and the teardown budget, and the wake-ups
//! that keep every wait cancellable.
//!
//! One thread owns the signals (signal-hook's iterator, registered before any other thread
//! exists). It never touches children or files itself: it records the first cause, bumps the
//! "stop epoch" and wakes every registered waiter. Whatever the main thread is waiting on — a
//! child, the app lock, a readiness poll, a sleep — sees the wake-up within one channel receive
//! and acts on it. Signal handlers run with SA_RESTART, so a flag alone would not interrupt a
//! blocking syscall; waking a channel does not depend on that.

mod deadline;
mod guard;
mod state;

pub use deadline::{CANCEL_TICK, Deadline, instant_after};

pub use guard::{OrphanError, WatchError, arm_deadline, become_subreaper, orphan_guard, watch_pid};
pub use state::{
    Event, Phase, Stop, Stream, Watch, abandoned, arm_outer_bound, begin_teardown, cancel, cause, configure_deadline,
    exit_now_hook, interrupts, phase, sleep, start_signal_thread, watch,
};
