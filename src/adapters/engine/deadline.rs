//! The bound every Engine API call takes: an instant, and optionally what cancels it earlier.
//!
//! Callers derive the instant from the time left of their enclosing wait or budget
//! (`Deadline::at(wait_end).cap(PER_CALL)`), so no call can outlive what it serves. A call also
//! watches the run's lifetime when given a [`Watch`]: a signal, the deadline alarm or a skipped
//! teardown step abandons it within [`CANCEL_TICK`], without waiting for the instant.

use std::time::{Duration, Instant};

use crate::lifetime::{Stop, Watch};

/// How often an in-flight call re-checks its cancel source. Calls answer in about a millisecond,
/// so this only ever runs while dockerd is slow; 20 ms keeps a cancel well under the 50 ms a
/// person notices, for a mutex lock per tick.
pub const CANCEL_TICK: Duration = Duration::from_millis(20);

#[derive(Clone, Copy)]
enum Cancel<'a> {
    Never,
    Watch(&'a Watch),
    When(&'a dyn Fn() -> bool),
}

/// When a call must have answered, and what may abandon it before then.
#[derive(Clone, Copy)]
pub struct Deadline<'a> {
    at: Instant,
    cancel: Cancel<'a>,
}

impl Deadline<'static> {
    pub fn after(d: Duration) -> Deadline<'static> {
        Deadline::at(Instant::now() + d)
    }

    pub fn at(at: Instant) -> Deadline<'static> {
        Deadline { at, cancel: Cancel::Never }
    }
}

impl<'a> Deadline<'a> {
    /// Also abandons the call as soon as `watch.stop()` says so.
    pub fn watching<'b>(self, watch: &'b Watch) -> Deadline<'b> {
        Deadline { at: self.at, cancel: Cancel::Watch(watch) }
    }

    /// Also abandons the call as soon as `stop()` returns true (tests, or a caller's own flag).
    pub fn or_when<'b>(self, stop: &'b dyn Fn() -> bool) -> Deadline<'b> {
        Deadline { at: self.at, cancel: Cancel::When(stop) }
    }

    /// The same deadline, but no later than `d` from now (a per-call cap inside a long wait).
    pub fn cap(self, d: Duration) -> Deadline<'a> {
        Deadline { at: self.at.min(Instant::now() + d), cancel: self.cancel }
    }

    pub fn instant(&self) -> Instant {
        self.at
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Whether the call must be abandoned now, and why (`None` inside the `Option` when the
    /// cancel source is a plain flag).
    pub(crate) fn stopped(&self) -> Option<Option<Stop>> {
        match self.cancel {
            Cancel::Never => None,
            Cancel::Watch(w) => w.stop().map(Some),
            Cancel::When(f) => f().then_some(None),
        }
    }

    /// How long the call may block before it must look at its cancel source again.
    pub(crate) fn next_check(&self) -> Instant {
        match self.cancel {
            Cancel::Never => self.at,
            _ => self.at.min(Instant::now() + CANCEL_TICK),
        }
    }
}

impl std::fmt::Debug for Deadline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cancel = match self.cancel {
            Cancel::Never => "never",
            Cancel::Watch(_) => "watch",
            Cancel::When(_) => "when",
        };
        f.debug_struct("Deadline").field("remaining", &self.remaining()).field("cancel", &cancel).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_only_shortens() {
        let d = Deadline::after(Duration::from_secs(60));
        assert!(d.cap(Duration::from_secs(1)).remaining() <= Duration::from_secs(1));
        assert!(d.cap(Duration::from_secs(600)).remaining() > Duration::from_secs(59));
        assert!(!d.expired());
        assert!(Deadline::at(Instant::now()).expired());
        assert_eq!(Deadline::at(Instant::now()).remaining(), Duration::ZERO);
    }

    #[test]
    fn a_plain_deadline_never_ticks_and_a_cancellable_one_does() {
        let d = Deadline::after(Duration::from_secs(60));
        assert_eq!(d.next_check(), d.instant());
        assert_eq!(d.stopped(), None);
        let flag = std::cell::Cell::new(false);
        let f = || flag.get();
        let c = d.or_when(&f);
        assert!(c.next_check() < d.instant());
        assert_eq!(c.stopped(), None);
        flag.set(true);
        assert_eq!(c.stopped(), Some(None));
    }
}
