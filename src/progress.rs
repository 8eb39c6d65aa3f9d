//! Heartbeats for long waits (the lock, readiness, teardown verification, backup retries): a
//! maintainer watching a Drone log must be able to tell a slow image pull from a hung CI. A
//! wait that lasts past [`FIRST`] logs one line, then one every [`EVERY`]: what it waits for,
//! elapsed / limit, and what it sees now (for readiness, the task states). Each beat is also
//! handed to a hook, which the run uses to refresh `status.json` for the dashboard.
//!
//! A low layer: it knows nothing of runs or reports; the hook is how they listen.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first beat: waits shorter than this stay quiet.
pub const FIRST: Duration = Duration::from_secs(10);
/// Between two beats.
pub const EVERY: Duration = Duration::from_secs(30);

/// One beat, as the hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    pub what: String,
    pub elapsed: Duration,
    pub limit: Option<Duration>,
    pub detail: String,
}

impl std::fmt::Display for Beat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "still waiting for {}: {}", self.what, crate::clock::human(self.elapsed))?;
        if let Some(limit) = self.limit {
            write!(f, " of {}", crate::clock::human(limit))?;
        }
        if !self.detail.is_empty() {
            write!(f, "; {}", self.detail)?;
        }
        Ok(())
    }
}

static HOOK: Mutex<Option<fn(&Beat)>> = Mutex::new(None);

/// Every beat from now on is also handed to `hook` (the run's `status.json`).
pub fn on_beat(hook: fn(&Beat)) {
    *HOOK.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
}

/// The heartbeat of one wait.
#[derive(Debug)]
pub struct Heartbeat {
    what: String,
    started: Instant,
    limit: Option<Duration>,
    next: Instant,
}

impl Heartbeat {
    /// A wait for `what` (e.g. "the app lock of x.example"), bounded by `limit` when it is.
    pub fn new(what: impl Into<String>, limit: Option<Duration>) -> Heartbeat {
        let started = Instant::now();
        Heartbeat { what: what.into(), started, limit, next: crate::lifetime::instant_after(FIRST) }
    }

    /// How long until the next beat is due (for a wait that blocks: wake up by then).
    pub fn due_in(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    /// Logs a beat with `detail` (computed only when one is due) if one is due. Returns
    /// whether it did.
    pub fn tick(&mut self, detail: impl FnOnce() -> String) -> bool {
        let now = Instant::now();
        if now < self.next {
            return false;
        }
        self.next = now + EVERY;
        let beat =
            Beat { what: self.what.clone(), elapsed: self.started.elapsed(), limit: self.limit, detail: detail() };
        // The hook first: whoever sees the log line can count on `status.json` having it.
        if let Some(hook) = *HOOK.lock().unwrap_or_else(|e| e.into_inner()) {
            hook(&beat);
        }
        tracing::info!("{beat}");
        true
    }

    #[cfg(test)]
    fn rewind(&mut self, by: Duration) {
        self.next = self.next.checked_sub(by).unwrap_or(self.next);
        self.started = self.started.checked_sub(by).unwrap_or(self.started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record(b: &Beat) {
        SEEN.lock().unwrap().push(b.to_string());
    }

    #[test]
    fn beats_start_after_the_first_interval_and_repeat() {
        on_beat(record);
        let mut hb = Heartbeat::new("the app lock of a.test", Some(Duration::from_secs(300)));
        assert!(!hb.tick(|| unreachable!("no detail is computed before a beat is due")));
        assert!(hb.due_in() > Duration::from_secs(9));
        hb.rewind(FIRST);
        assert!(hb.tick(|| "held by run r1 (pid 42)".into()));
        assert!(!hb.tick(String::new), "the next beat is EVERY away");
        assert!(hb.due_in() > Duration::from_secs(29));
        hb.rewind(EVERY);
        assert!(hb.tick(String::new));
        let seen = SEEN.lock().unwrap().clone();
        let ours: Vec<&String> = seen.iter().filter(|l| l.contains("a.test")).collect();
        assert_eq!(ours.len(), 2, "{seen:?}");
        assert!(
            ours[0].starts_with("still waiting for the app lock of a.test: 10")
                && ours[0].ends_with("of 5m0s; held by run r1 (pid 42)"),
            "{}",
            ours[0]
        );
        assert!(!ours[1].contains("; "), "no detail, no separator: {}", ours[1]);
    }
}
