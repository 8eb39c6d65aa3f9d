//! Waking a wait loop on a stack's events: the subscription, the drain of a burst, the
//! resubscription after a lost stream (with a backoff, so a dead dockerd is not hammered), and
//! the plain sleep of a wait without events (the CLI read path, or no engine). The wait keeps
//! its own backstop: it passes the instant of its next look to [`StackWake::wait`].

use std::time::{Duration, Instant, SystemTime};

use super::{Engine, EngineError, EngineEvent, EventFilter, Notice, Subscription};
use crate::lifetime::{Event, Watch};

/// The first delay before subscribing again after a lost stream; doubled per loss in a row.
const RESUBSCRIBE_FIRST: Duration = Duration::from_millis(250);
/// The longest delay between resubscriptions.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);
/// Events replayed on resubscription from before the loss (dockerd keeps its recent events).
const REPLAY: Duration = Duration::from_secs(1);

/// Why [`StackWake::wait`] returned.
#[derive(Debug)]
pub enum Wake {
    /// One or more events of the stack (a burst is drained): look now.
    Events(usize),
    /// The stream was lost: events may have been missed, so look now (a resubscription follows).
    Lost(EngineError),
    /// The instant passed.
    Due,
    /// Something else woke the watch (a signal, a lifetime change): check the stop condition.
    Nudge,
}

/// The event side of one wait on one stack.
pub struct StackWake<'a> {
    engine: Option<&'a Engine>,
    filter: EventFilter,
    until: Instant,
    watch: &'a Watch,
    sub: Option<Subscription>,
    resubscribe_at: Option<Instant>,
    backoff: Duration,
    /// The newest event delivered (its daemon timestamp dates what the wait reacted to).
    pub last_event: Option<EngineEvent>,
    /// Events delivered so far.
    pub events: u32,
    /// Streams lost so far.
    pub losses: u32,
}

impl<'a> StackWake<'a> {
    /// Subscribes at once when there is an engine; without one, waits are plain sleeps.
    pub fn new(engine: Option<&'a Engine>, filter: EventFilter, until: Instant, watch: &'a Watch) -> StackWake<'a> {
        let mut w = StackWake {
            engine,
            filter,
            until,
            watch,
            sub: None,
            resubscribe_at: None,
            backoff: RESUBSCRIBE_FIRST,
            last_event: None,
            events: 0,
            losses: 0,
        };
        w.subscribe(None);
        w
    }

    /// Whether events wake this wait at all (there is an engine; a lost stream is resubscribed).
    pub fn has_events(&self) -> bool {
        self.engine.is_some()
    }

    fn subscribe(&mut self, since: Option<SystemTime>) {
        let Some(engine) = self.engine else { return };
        let filter = match since {
            Some(t) => self.filter.clone().since(t),
            None => self.filter.clone(),
        };
        match engine.subscribe(&filter, self.until, self.watch.sender()) {
            Ok(s) => self.sub = Some(s),
            Err(e) => {
                tracing::warn!("cannot follow dockerd's events: {e}; looking on the backstop only");
                self.resubscribe_at = Some(crate::lifetime::instant_after(RESUBSCRIBE_MAX));
            }
        }
    }

    /// Blocks until an event of the stack (then drains what is queued), a lost stream, `at`, or
    /// any other wake-up of the watch. Resubscribes first when a lost stream's backoff is over.
    pub fn wait(&mut self, at: Instant) -> Wake {
        if let Some(t) = self.resubscribe_at
            && Instant::now() >= t
            && Instant::now() < self.until
        {
            self.resubscribe_at = None;
            let since = self.last_event.as_ref().map_or_else(SystemTime::now, |e| e.time).checked_sub(REPLAY);
            self.subscribe(since);
        }
        let at = match self.resubscribe_at {
            Some(t) => at.min(t),
            None => at,
        };
        let first = match self.watch.recv_timeout(at.saturating_duration_since(Instant::now())) {
            None => return Wake::Due,
            Some(Event::Engine(n)) => n,
            Some(_) => return Wake::Nudge,
        };
        let mut events = 0;
        let mut lost = None;
        let mut take = |n: Notice, events: &mut usize, lost: &mut Option<EngineError>| match n {
            Notice::Event(e) => {
                *events += 1;
                self.last_event = Some(e);
            }
            Notice::Lost(e) => *lost = Some(e),
        };
        take(first, &mut events, &mut lost);
        // A burst (a deploy's create, start, update…) is judged once.
        while let Some(ev) = self.watch.recv_timeout(Duration::ZERO) {
            match ev {
                Event::Engine(n) => take(n, &mut events, &mut lost),
                // Another producer's wake-up: the caller checks its stop condition next round.
                _ => break,
            }
        }
        if let Some(e) = lost {
            self.sub = None;
            self.losses += 1;
            self.resubscribe_at = Some(crate::lifetime::instant_after(self.backoff));
            self.backoff = (self.backoff * 2).min(RESUBSCRIBE_MAX);
            return Wake::Lost(e);
        }
        self.backoff = RESUBSCRIBE_FIRST;
        self.events += events as u32;
        Wake::Events(events)
    }
}

impl Drop for StackWake<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.sub.take() {
            s.close();
        }
    }
}
