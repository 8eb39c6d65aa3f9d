//! dockerd's event stream (`GET /events`), scoped to one stack, delivered to a waiter's channel.
//!
//! What dockerd 20.10 (API 1.41) emits for a stack, seen on this swarm with `docker stack deploy`,
//! `docker service update` and `docker stack rm` of a service with a healthcheck, a volume and a
//! secret (the engine integration tests deploy the same shape):
//!
//! | type | actions | scope | carries |
//! |---|---|---|---|
//! | service | create, update (a deploy: one; `service update`: one, one with `updatestate.new=updating`, one with `updatestate.new=completed` when it settles), remove | swarm | `name` (and `updatestate.new` when the update state changes): **no labels** |
//! | container | create, start, `health_status: healthy` / `: unhealthy`, kill, die (`exitCode`), stop, destroy; **exec_create/exec_start/exec_die for every healthcheck run** | local | every container label (the namespace too), `name`, `image` |
//! | network | create, update, remove (swarm); create, connect, disconnect, destroy (local) | both | `name`, `type` |
//! | volume | create, mount, unmount, destroy | local | id = the name; `driver`: **no labels** |
//! | secret, config | create, remove | swarm | `name` only |
//! | node | update | swarm | `name` |
//!
//! Swarm tasks emit no events of their own: a task's progress shows as its container's events,
//! and a task that never gets a container (rejected, pending) shows only on the backstop poll.
//! A task's state also trails its container's events: a task whose container has a healthcheck
//! stays `starting` until the container is healthy, and swarm records it `running` a few
//! milliseconds *after* the `health_status: healthy` event — so the look that event triggers
//! can come too early, and a waiter looks again shortly after (the readiness wait's follow-ups).
//!
//! Filters, as dockerd 20.10 applies them: keys are AND-ed, values of a key OR-ed. `label=` is
//! matched against every event's attributes, so it would drop service, volume, secret and config
//! events (they carry no labels). The per-type keys (`service=`, `container=`, `network=`,
//! `volume=`, `secret=`, `config=`) constrain only events of their own type and match the id or
//! the name **by prefix**, so `<kind>=<stack>_` for each kind scopes the stream to the stack on
//! the daemon's side; `event=` with `health_status` in it switches dockerd to prefix matching of
//! actions, so `health_status` matches `health_status: healthy` while `start` does not match
//! `exec_start` (the exec noise of healthchecks stays out). The client checks again exactly (the
//! namespace label for containers, the `<stack>_` prefix for the rest), see
//! [`EventFilter::matches`].
//!
//! A wait plugs in like this (readiness; a wait-gone is the same with `residue` as the poll):
//!
//! ```ignore
//! let watch = lifetime::watch();
//! let mut sub = engine.subscribe(&EventFilter::stack(stack), wait_end, watch.sender())?;
//! let mut next = Instant::now(); // judge at once: covers everything before the stream
//! loop {
//!     if let Some(stop) = watch.stop() { return Stopped(stop) }
//!     if Instant::now() >= next {
//!         let until = Deadline::at(wait_end).cap(PER_CALL).watching(&watch);
//!         // services, tasks, inspect_containers with `until`; an EngineError => infra
//!         if judge(poll) == Ready { return Ready }
//!         next = Instant::now() + BACKSTOP; // e.g. 5 s: a missed event costs at most this
//!     }
//!     match watch.recv_timeout(next.saturating_duration_since(Instant::now())) {
//!         // Events come in bursts (two service updates, then create, start): drain what is
//!         // queued (`recv_timeout(Duration::ZERO)`), then judge once.
//!         Some(Event::Engine(Notice::Event(_))) => next = Instant::now(),
//!         Some(Event::Engine(Notice::Lost(e))) => {
//!             warn!("{e}: polling, resubscribing");
//!             sub = engine.subscribe(&filter, wait_end, watch.sender())?;
//!             next = Instant::now(); // the poll covers the gap
//!         }
//!         _ => {} // Wake: re-check stop; None: the backstop is due
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;
use futures_util::future::{Either, select};

use super::{Engine, EngineError, Filters, NS_LABEL, connect, endpoint, new_runtime};

/// The object kinds a stack has.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    Container,
    Network,
    Volume,
    Secret,
    Config,
    Node,
    Other(String),
}

impl Kind {
    pub fn as_str(&self) -> &str {
        match self {
            Kind::Service => "service",
            Kind::Container => "container",
            Kind::Network => "network",
            Kind::Volume => "volume",
            Kind::Secret => "secret",
            Kind::Config => "config",
            Kind::Node => "node",
            Kind::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "service" => Kind::Service,
            "container" => Kind::Container,
            "network" => Kind::Network,
            "volume" => Kind::Volume,
            "secret" => Kind::Secret,
            "config" => Kind::Config,
            "node" => Kind::Node,
            other => Kind::Other(other.to_string()),
        }
    }
}

/// What a readiness wait or a wait-gone needs to hear about: things appearing, changing, going.
/// Leaves out the healthcheck's exec events, mounts, connects, kills and stops (each followed
/// by one of these anyway).
pub const DEFAULT_ACTIONS: [&str; 7] = ["create", "update", "remove", "destroy", "start", "die", "health_status"];

/// Events replayed from before the subscription, so none is lost between `subscribe` and the
/// stream being up: dockerd keeps its last events in memory and honours `since`. Duplicates are
/// harmless to a waiter that only re-judges.
const SINCE_MARGIN: Duration = Duration::from_secs(1);

/// Which events of which stack to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    stack: String,
    kinds: Vec<Kind>,
    actions: Vec<String>,
    since: Option<SystemTime>,
}

impl EventFilter {
    /// Services, containers, networks, volumes, secrets and configs of `stack`, with
    /// [`DEFAULT_ACTIONS`].
    pub fn stack(stack: &str) -> EventFilter {
        EventFilter {
            stack: stack.to_string(),
            kinds: vec![Kind::Service, Kind::Container, Kind::Network, Kind::Volume, Kind::Secret, Kind::Config],
            actions: DEFAULT_ACTIONS.iter().map(|a| a.to_string()).collect(),
            since: None,
        }
    }

    pub fn kinds(mut self, kinds: &[Kind]) -> EventFilter {
        self.kinds = kinds.to_vec();
        self
    }

    /// Actions to deliver (`health_status` matches `health_status: healthy`); empty: all.
    pub fn actions(mut self, actions: &[&str]) -> EventFilter {
        self.actions = actions.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Replay from `t` instead of one second before the call (e.g. after a lost stream, from
    /// the last event seen).
    pub fn since(mut self, t: SystemTime) -> EventFilter {
        self.since = Some(t);
        self
    }

    /// The daemon-side filters (see the module doc for why no `label=`).
    pub fn filters(&self) -> Filters {
        let prefix = format!("{}_", self.stack);
        let mut f = Filters::new();
        for k in &self.kinds {
            f = f.with("type", k.as_str());
            if matches!(k, Kind::Service | Kind::Container | Kind::Network | Kind::Volume | Kind::Secret | Kind::Config)
            {
                f = f.with(k.as_str(), &prefix);
            }
        }
        for a in &self.actions {
            f = f.with("event", a);
        }
        f
    }

    /// The exact check on the client: containers by their namespace label, everything else by
    /// the `<stack>_` name prefix (services, networks, volumes, secrets and configs carry no
    /// labels in their events).
    pub fn matches(&self, ev: &EngineEvent) -> bool {
        if !self.kinds.contains(&ev.kind) {
            return false;
        }
        if !self.actions.is_empty() && !self.actions.iter().any(|a| a == ev.verb()) {
            return false;
        }
        match ev.kind {
            Kind::Container => ev.namespace() == Some(self.stack.as_str()),
            _ => ev.name().is_some_and(|n| n.strip_prefix(self.stack.as_str()).is_some_and(|r| r.starts_with('_'))),
        }
    }

    fn since_param(&self) -> String {
        let t = self.since.unwrap_or_else(|| SystemTime::now() - SINCE_MARGIN);
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
    }
}

/// One event, typed, with the daemon's timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    pub kind: Kind,
    /// As dockerd sent it: `update`, `health_status: healthy`.
    pub action: String,
    /// The actor's id (a volume's id is its name).
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    /// `local` or `swarm`.
    pub scope: String,
    /// When dockerd says it happened (`timeNano`).
    pub time: SystemTime,
    /// When this client read it off the stream.
    pub received: SystemTime,
}

impl EngineEvent {
    /// The action without its detail: `health_status` of `health_status: healthy`.
    pub fn verb(&self) -> &str {
        self.action.split_once(':').map_or(self.action.as_str(), |(v, _)| v.trim())
    }

    /// `healthy`, `unhealthy` or `starting` for a `health_status` event.
    pub fn health(&self) -> Option<&str> {
        self.action.strip_prefix("health_status:").map(str::trim)
    }

    /// The object's name (`name` attribute; a volume's id).
    pub fn name(&self) -> Option<&str> {
        match self.kind {
            Kind::Volume => Some(self.id.as_str()),
            _ => self.attributes.get("name").map(String::as_str),
        }
    }

    /// The container's stack namespace label.
    pub fn namespace(&self) -> Option<&str> {
        self.attributes.get(NS_LABEL).map(String::as_str)
    }

    /// How long after the daemon's timestamp this client read the event (both wall clocks of
    /// one host: the detection lag a readiness bench reports).
    pub fn lag(&self) -> Duration {
        self.received.duration_since(self.time).unwrap_or_default()
    }

    pub fn from_message(m: EventMessage, received: SystemTime) -> EngineEvent {
        let kind = match m.typ {
            Some(t) => Kind::parse(t.as_ref()),
            None => Kind::Other(String::new()),
        };
        let time = match (m.time_nano, m.time) {
            (Some(ns), _) if ns > 0 => UNIX_EPOCH + Duration::from_nanos(ns as u64),
            (_, Some(s)) if s > 0 => UNIX_EPOCH + Duration::from_secs(s as u64),
            _ => received,
        };
        let actor = m.actor.unwrap_or_default();
        EngineEvent {
            kind,
            action: m.action.unwrap_or_default(),
            id: actor.id.unwrap_or_default(),
            attributes: actor.attributes.unwrap_or_default().into_iter().collect(),
            scope: m.scope.map(|s| s.to_string()).unwrap_or_default(),
            time,
            received,
        }
    }
}

/// What a subscription tells its waiter.
#[derive(Debug)]
pub enum Notice {
    /// An event of the stack.
    Event(EngineEvent),
    /// The stream ended before its `until` (dockerd restarted, the connection broke, it never
    /// came up): events may be missed from here on. Poll once (that covers the gap), then
    /// subscribe again, or keep polling on the slow backstop.
    Lost(EngineError),
}

impl From<Notice> for crate::lifetime::Event {
    fn from(n: Notice) -> crate::lifetime::Event {
        crate::lifetime::Event::Engine(n)
    }
}

/// A live event stream on its own thread. Dropping it ends the stream and joins the thread
/// (promptly: the thread waits on the stream, its end and this stop at once).
#[derive(Debug)]
pub struct Subscription {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Subscription {
    /// Whether the stream is still being read (false once lost, past `until`, or the receiver
    /// of the notices is gone).
    pub fn is_live(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Ends the stream and waits for its thread.
    pub fn close(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shut();
    }
}

impl Engine {
    /// Streams the events `filter` selects to `notify` until `until`, from a thread of its own
    /// (named `docker-events`, with its own current-thread runtime and connection; it spawns no
    /// process). Returns at once: the request carries `since` (one second back by default), so
    /// an event that happens while the stream is still connecting is replayed, not lost.
    ///
    /// A stream that ends before `until` sends one [`Notice::Lost`]; reaching `until`, dropping
    /// the [`Subscription`] or dropping the receiver ends it quietly. A `Watch::sender()` is a
    /// fine `notify`: the waiter wakes on each event as on any other.
    pub fn subscribe<T>(
        &self,
        filter: &EventFilter,
        until: Instant,
        notify: Sender<T>,
    ) -> Result<Subscription, EngineError>
    where
        T: From<Notice> + Send + 'static,
    {
        let negotiated = self.client.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|d| d.client_version());
        let filters = filter.filters();
        let since = filter.since_param();
        let ep = endpoint("/events", &[("since", since.clone())], &filters);
        let opts = EventsOptions { since: Some(since), until: None, filters: filters.to_map() };
        let host = self.host.clone();
        let host_text = self.host_text.clone();
        let filter = filter.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("docker-events".into())
            .spawn(move || {
                let run = AssertUnwindSafe(|| {
                    stream_events(&host, negotiated, opts, &filter, until, stop_rx, &notify)
                        .map_err(|e| EngineError::from_bollard(e, &host_text, &ep))
                });
                let loss = match std::panic::catch_unwind(run) {
                    Ok(Ok(End::Closed)) => Some(EngineError::Broken {
                        host: host_text.clone(),
                        endpoint: ep.clone(),
                        why: "dockerd closed the event stream".into(),
                    }),
                    Ok(Ok(End::Quiet)) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(EngineError::Broken {
                        host: host_text.clone(),
                        endpoint: ep.clone(),
                        why: "the event thread panicked".into(),
                    }),
                };
                if let Some(e) = loss {
                    let _ = notify.send(T::from(Notice::Lost(e)));
                }
            })
            .map_err(|e| EngineError::Connect {
                host: self.host_text.clone(),
                endpoint: "GET /events".into(),
                why: format!("cannot start the event thread: {e}"),
            })?;
        Ok(Subscription { stop: Some(stop_tx), thread: Some(thread) })
    }
}

/// How a stream ended without an error.
enum End {
    /// dockerd closed it (it restarted, or something in between ended it): a loss.
    Closed,
    /// Stopped, `until` passed, or the receiver is gone: nobody to tell.
    Quiet,
}

/// The event thread's body: its own runtime and connection, until the stream ends, `until`
/// passes, or `stop` fires.
fn stream_events<T: From<Notice>>(
    host: &super::Host,
    negotiated: Option<bollard::ClientVersion>,
    opts: EventsOptions,
    filter: &EventFilter,
    until: Instant,
    stop: tokio::sync::oneshot::Receiver<()>,
    notify: &Sender<T>,
) -> Result<End, bollard::errors::Error> {
    let rt = new_runtime()?;
    let end = rt.block_on(async {
        let stream = pin!(async {
            let mut d = connect(host, negotiated.as_ref().unwrap_or(bollard::API_DEFAULT_VERSION))?;
            if negotiated.is_none() {
                d = d.negotiate_version().await?;
            }
            let mut events = d.events(Some(opts));
            while let Some(item) = events.next().await {
                let ev = EngineEvent::from_message(item?, SystemTime::now());
                if filter.matches(&ev) && notify.send(T::from(Notice::Event(ev))).is_err() {
                    return Ok(End::Quiet);
                }
            }
            Ok(End::Closed)
        });
        let end = pin!(tokio::time::sleep_until(tokio::time::Instant::from_std(until)));
        match select(stream, select(stop, end)).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => Ok(End::Quiet),
        }
    });
    // Do not wait for a `tcp://` name lookup still running on the blocking pool.
    rt.shutdown_background();
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: serde_json::Value) -> EngineEvent {
        let m: EventMessage = serde_json::from_value(json).unwrap();
        EngineEvent::from_message(m, UNIX_EPOCH + Duration::from_secs(1_796_009_642))
    }

    /// Events as dockerd 20.10 sent them on this swarm (trimmed attributes).
    fn samples() -> Vec<EngineEvent> {
        vec![
            event(
                serde_json::json!({"Type":"service","Action":"update","Actor":{"ID":"vxs8","Attributes":{"name":"evx1_app","updatestate.new":"updating"}},"scope":"swarm","time":1796009646,"timeNano":1796009646379498481u64}),
            ),
            event(
                serde_json::json!({"Type":"container","Action":"health_status: healthy","Actor":{"ID":"6c44","Attributes":{"com.docker.stack.namespace":"evx1","name":"evx1_app.1.lt2a"}},"scope":"local","time":1796009641,"timeNano":1796009641385454520u64}),
            ),
            event(
                serde_json::json!({"Type":"container","Action":"exec_start: true","Actor":{"ID":"6c44","Attributes":{"com.docker.stack.namespace":"evx1","name":"evx1_app.1.lt2a"}},"scope":"local","time":1796009641,"timeNano":1796009641385454520u64}),
            ),
            event(
                serde_json::json!({"Type":"volume","Action":"destroy","Actor":{"ID":"evx1_data","Attributes":{"driver":"local"}},"scope":"local","time":1796009662,"timeNano":1796009662390207193u64}),
            ),
            event(
                serde_json::json!({"Type":"secret","Action":"remove","Actor":{"ID":"r62r","Attributes":{"name":"evx1_x_v1"}},"scope":"swarm","time":1796009658,"timeNano":1796009658454933836u64}),
            ),
            // Another stack whose name starts with this one's.
            event(
                serde_json::json!({"Type":"service","Action":"create","Actor":{"ID":"aaaa","Attributes":{"name":"evx10_app"}},"scope":"swarm","time":1796009646,"timeNano":1796009646379498481u64}),
            ),
            event(
                serde_json::json!({"Type":"container","Action":"start","Actor":{"ID":"bbbb","Attributes":{"com.docker.stack.namespace":"evx1_x","name":"evx1_x_app.1.q"}},"scope":"local","time":1796009646,"timeNano":1796009646379498481u64}),
            ),
            event(
                serde_json::json!({"Type":"node","Action":"update","Actor":{"ID":"tc0l","Attributes":{"name":"vm"}},"scope":"swarm","time":1796009646}),
            ),
        ]
    }

    #[test]
    fn events_are_typed_with_the_daemons_timestamp() {
        let s = samples();
        assert_eq!(s[0].kind, Kind::Service);
        assert_eq!(s[0].verb(), "update");
        assert_eq!(s[0].name(), Some("evx1_app"));
        assert_eq!(s[0].attributes["updatestate.new"], "updating");
        assert_eq!(s[0].time, UNIX_EPOCH + Duration::from_nanos(1_796_009_646_379_498_481));
        assert_eq!(s[0].scope, "swarm");
        assert_eq!(s[1].verb(), "health_status");
        assert_eq!(s[1].health(), Some("healthy"));
        assert_eq!(s[1].namespace(), Some("evx1"));
        assert_eq!(s[1].lag(), Duration::from_nanos(614_545_480));
        assert_eq!(s[0].lag(), Duration::ZERO, "a timestamp after receipt (clock skew) is no lag");
        assert_eq!(s[3].name(), Some("evx1_data"));
        assert_eq!(s[7].time, UNIX_EPOCH + Duration::from_secs(1_796_009_646), "seconds when no timeNano");
        assert_eq!(s[7].kind, Kind::Node);
    }

    #[test]
    fn the_client_side_check_is_exact() {
        let f = EventFilter::stack("evx1");
        let kept: Vec<bool> = samples().iter().map(|e| f.matches(e)).collect();
        // service update, health, exec (no), volume, secret, other stack's service (no), other
        // stack's container (no: label, not prefix), node (not a stack kind).
        assert_eq!(kept, [true, true, false, true, true, false, false, false]);
        let all = EventFilter::stack("evx1").actions(&[]);
        assert!(all.matches(&samples()[2]), "no action filter lets exec events through");
        let services = EventFilter::stack("evx1").kinds(&[Kind::Service]);
        assert_eq!(samples().iter().filter(|e| services.matches(e)).count(), 1);
    }

    #[test]
    fn daemon_side_filters_scope_each_kind_by_name_prefix() {
        let f = EventFilter::stack("s")
            .kinds(&[Kind::Service, Kind::Container, Kind::Node])
            .actions(&["update", "health_status"]);
        assert_eq!(
            f.filters().to_json(),
            r#"{"container":["s_"],"event":["update","health_status"],"service":["s_"],"type":["service","container","node"]}"#
        );
        let full = EventFilter::stack("s").filters().to_json();
        assert!(!full.contains("label"), "a label filter would drop service events: {full}");
        for k in ["service", "container", "network", "volume", "secret", "config"] {
            assert!(full.contains(&format!(r#""{k}":["s_"]"#)), "{full}");
        }
    }

    #[test]
    fn since_is_seconds_dot_nanoseconds() {
        let f = EventFilter::stack("s").since(UNIX_EPOCH + Duration::new(1_796_009_646, 5));
        assert_eq!(f.since_param(), "1796009646.000000005");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let dflt: f64 = EventFilter::stack("s").since_param().parse().unwrap();
        assert!(now - dflt >= 0.9 && now - dflt < 5.0, "{now} {dflt}");
    }

    #[test]
    fn an_unknown_type_is_kept_as_text() {
        assert_eq!(Kind::parse("plugin"), Kind::Other("plugin".into()));
        assert_eq!(Kind::Other("plugin".into()).as_str(), "plugin");
    }
}
