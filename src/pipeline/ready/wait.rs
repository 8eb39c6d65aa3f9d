//! Waiting for ready: looks at the stack when dockerd says something of it changed (its event
//! stream: service, container and health events), with a slow backstop look in case an event is
//! missed and a resubscription when the stream is lost; runs the TCP probes and the HTTP floor
//! once the swarm passes; stays cancellable. The rules between looks are [`ReadyState`]'s.
//!
//! On the CLI read path (`CCCI_DOCKER_READS=cli`) there are no events: it looks once a second,
//! as ccci did before the Engine API.
//!
//! Every read is bounded by the time left of the wait (at most [`PER_CALL`]) and watches the
//! lifetime, so a cancel abandons it within a few tens of milliseconds. dockerd unreachable,
//! erroring or too slow ends the wait with [`NotReady::Infra`], not a recipe failure.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::adapters::Docker;
use crate::adapters::engine::{Deadline, EventFilter, Kind, StackWake, Wake};
use crate::config::ccci_yml::ReadyProbe;
use crate::lifetime::{self, Stop};
use crate::process::Cmd;

use super::judge::{Baseline, Judge, Poll};
use super::state::{HttpFloor, Probes, ReadError, ReadyState, Step};

/// The backstop: with events flowing, a look at least this often anyway (an event missed, a
/// task rejected without a container — swarm tasks emit no events of their own).
pub const BACKSTOP: Duration = Duration::from_secs(5);
/// The CLI path's poll interval.
pub const CLI_POLL: Duration = Duration::from_secs(1);
/// No single read of a wait takes longer than this (or than the time left of the wait).
pub const PER_CALL: Duration = Duration::from_secs(10);
/// A read may overrun the wait's end by this much, so the look that decides a timeout is not
/// itself cut short into a false "dockerd did not answer".
const LAST_LOOK: Duration = Duration::from_secs(2);
/// A TCP probe's connect: short, so the wait stays cancellable within it; a slow connect counts
/// as a failed attempt and the next round tries again.
const TCP_CONNECT: Duration = Duration::from_millis(100);
/// One GET of the HTTP floor: an app that needs longer to answer its front page is not ready.
const HTTP_GET: Duration = Duration::from_secs(10);
/// curl's own bound on that GET (`--max-time`, whole seconds), and the child's, a little longer,
/// should curl not honour it (a wedged resolver).
const CURL_MAX_TIME_SECS: u64 = 10;
const CURL_CHILD: Duration = Duration::from_secs(CURL_MAX_TIME_SECS + 5);

/// What readiness listens to: services (create, update with `updatestate.new`, remove) and
/// containers (create, start, die, destroy, `health_status: …`). Networks, volumes, secrets and
/// configs change nothing the judge reads.
fn ready_events(stack: &str) -> EventFilter {
    EventFilter::stack(stack).kinds(&[Kind::Service, Kind::Container])
}

#[derive(Debug)]
pub enum NotReady {
    /// The recipe's fault (a crash loop, a rollback, the timeout, the HTTP floor).
    Failed(String),
    /// dockerd could not be read: CI could not judge the recipe (the infra verdict).
    Infra(String),
    Stopped(Stop),
}

/// How a wait that ended ready went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub took: Duration,
    /// Looks at the stack (reads of dockerd).
    pub looks: u32,
    /// Events of the stack that woke the wait.
    pub events: u32,
    /// Event streams lost (and followed again).
    pub losses: u32,
}

pub struct Readiness<'a> {
    pub docker: &'a Docker,
    pub stack: &'a str,
    pub probes: &'a [ReadyProbe],
    pub http: Option<&'a HttpFloor>,
    pub timeout: Duration,
}

/// Service versions right now (before a deploy). A failed read gives an empty baseline: every
/// service is then judged as it is (the wait itself reports a dockerd that stays unreadable).
pub fn baseline(docker: &Docker, stack: &str) -> Baseline {
    match docker.services_of(stack, Deadline::after(PER_CALL)) {
        Ok(s) => Baseline::of(&s),
        Err(e) => {
            tracing::warn!("cannot read the service versions before the deploy: {e}");
            Baseline::default()
        }
    }
}

/// The probes of a real wait: TCP connects and curl.
struct LiveProbes;

impl Probes for LiveProbes {
    fn tcp(&mut self, addr: &str) -> bool {
        let Ok(mut addrs) = addr.to_socket_addrs() else { return false };
        addrs.next().is_some_and(|a| TcpStream::connect_timeout(&a, TCP_CONNECT).is_ok())
    }

    /// GETs the floor URL: a plain `http://` URL in-process (no process per look), anything
    /// else with curl; `Ok(status)` or an explanation.
    fn http(&mut self, floor: &HttpFloor) -> Result<u16, String> {
        if let Some(url) = super::http::plain(&floor.url)
            && !super::http::proxy_configured()
        {
            let stop = || lifetime::cause().is_some();
            let r = super::http::get_status(&url, HTTP_GET, &stop);
            tracing::debug!("HTTP floor: GET {}: {}", floor.url, r.as_ref().map_or_else(|e| e.clone(), u16::to_string));
            return r;
        }
        let mut cmd = Cmd::new("curl")
            .name("curl")
            .level(tracing::Level::DEBUG)
            .capture()
            .timeout(CURL_CHILD)
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time"])
            .arg(CURL_MAX_TIME_SECS.to_string());
        if let Some(rest) = floor.url.strip_prefix("https://") {
            // The app is not in DNS: send the request to the local proxy, with SNI and Host
            // naming the domain so the certificate is still verified against it.
            let host = rest.split(['/', ':']).next().unwrap_or("");
            cmd = cmd.arg("--resolve").arg(format!("{host}:443:127.0.0.1"));
        }
        let out = cmd.arg(floor.url.clone()).run().map_err(|e| e.to_string())?;
        let code: u16 = out.stdout.trim().parse().unwrap_or(0);
        if code == 0 {
            return Err(out.last_error_line().unwrap_or("no answer").to_string());
        }
        Ok(code)
    }
}

/// A read error as the state sees it; `Err` when the read was abandoned for a stop.
fn read_error(e: crate::adapters::DockerError, watch: &lifetime::Watch) -> Result<ReadError, Stop> {
    if !e.is_infra()
        && let Some(stop) = watch.stop()
    {
        return Err(stop);
    }
    Ok(ReadError { message: e.to_string(), infra: e.is_infra() })
}

impl Readiness<'_> {
    /// Waits until two looks in a row pass everything, or fails with the reason.
    pub fn wait(&self, baseline: Baseline, after_upgrade: bool) -> Result<Duration, NotReady> {
        self.wait_with(baseline, after_upgrade, &mut LiveProbes).map(|r| r.took)
    }

    /// [`Readiness::wait`] with the given probes, saying how it went.
    pub fn wait_with(
        &self,
        baseline: Baseline,
        after_upgrade: bool,
        probes: &mut dyn Probes,
    ) -> Result<Ready, NotReady> {
        let started = Instant::now();
        let watch = lifetime::watch();
        let engine = self.docker.engine();
        let idle = if engine.is_some() { BACKSTOP } else { CLI_POLL };
        let mut state =
            ReadyState::new(Judge::new(baseline, after_upgrade), self.probes, self.http, started, self.timeout, idle);
        let end = state.end();
        // Subscribed before the first look: whatever changes after it wakes the wait.
        let mut wake = StackWake::new(engine, ready_events(self.stack), end, &watch);
        tracing::info!(
            "waiting until {} is ready (at most {}; {})",
            self.stack,
            crate::clock::human(self.timeout),
            if engine.is_some() { "on dockerd's events, looking every 5s at least" } else { "looking every second" }
        );
        let mut nodes: Option<usize> = None;
        let mut next = started;
        let mut rounds = 0u32;
        let mut beat = crate::progress::Heartbeat::new(format!("{} to be ready", self.stack), Some(self.timeout));
        loop {
            // A slow pull and a hung CI look alike in a quiet log: say what the swarm shows.
            beat.tick(|| state.last_problem().to_string());
            if let Some(stop) = watch.stop() {
                return Err(NotReady::Stopped(stop));
            }
            let now = Instant::now();
            if now >= end {
                return Err(self.outcome(state.expired()));
            }
            if now >= next {
                rounds += 1;
                let until = Deadline::at(end.max(now + LAST_LOOK)).cap(PER_CALL).watching(&watch);
                let look = self.look(&mut nodes, state.at(now), until);
                let look = match look {
                    Ok(p) => Ok(p),
                    Err(e) => match read_error(e, &watch) {
                        Ok(r) => Err(r),
                        Err(stop) => return Err(NotReady::Stopped(stop)),
                    },
                };
                let now = Instant::now();
                match state.round(now, look.as_ref().map_err(Clone::clone), probes) {
                    Step::Ready => {
                        self.log_lag(&wake, rounds, started);
                        return Ok(Ready {
                            took: started.elapsed(),
                            looks: rounds,
                            events: wake.events,
                            losses: wake.losses,
                        });
                    }
                    step @ (Step::Failed(_) | Step::Infra(_)) => return Err(self.outcome(step)),
                    Step::Again { after, news } => {
                        if let Some(n) = news {
                            tracing::info!("not ready yet: {n}");
                        }
                        // Without events, the CLI path keeps its fixed once-a-second look.
                        let after = if engine.is_some() { after } else { CLI_POLL };
                        next = now + after;
                    }
                }
            }
            match wake.wait(next.min(end).min(Instant::now() + beat.due_in())) {
                Wake::Events(_) => {
                    state.woke_by_event();
                    next = Instant::now();
                }
                Wake::Lost(e) => {
                    tracing::warn!("{e}: looking now, following the events again shortly");
                    next = Instant::now();
                }
                Wake::Due | Wake::Nudge => {}
            }
        }
    }

    /// One look at the stack; the node count is read once, and only for a global service.
    fn look(
        &self,
        nodes: &mut Option<usize>,
        at: Duration,
        until: Deadline<'_>,
    ) -> Result<Poll, crate::adapters::DockerError> {
        let l = self.docker.look(self.stack, until)?;
        let global = l.services.iter().any(|s| {
            s.spec.as_ref().and_then(|s| s.mode.as_ref()).is_some_and(|m| m.global.is_some() || m.global_job.is_some())
        });
        let n = match *nodes {
            Some(n) => n,
            None if global => {
                let n = self.docker.eligible_nodes(until)?;
                *nodes = Some(n);
                n
            }
            None => 1,
        };
        Ok(Poll { services: l.services, tasks: l.tasks, containers: l.containers, nodes: n, at })
    }

    fn outcome(&self, step: Step) -> NotReady {
        match step {
            Step::Infra(r) => NotReady::Infra(r),
            Step::Failed(r) => NotReady::Failed(r),
            other => NotReady::Failed(format!("unexpected end of the readiness wait: {other:?}")),
        }
    }

    /// How long after the last event of the stack ccci said ready (dockerd's timestamp of that
    /// event to now): the detection lag the bench reports.
    fn log_lag(&self, wake: &StackWake<'_>, rounds: u32, started: Instant) {
        let Some(ev) = &wake.last_event else {
            tracing::debug!("ready after {rounds} looks (no event of the stack during the wait)");
            return;
        };
        let since = std::time::SystemTime::now().duration_since(ev.time).unwrap_or_default();
        tracing::debug!(
            "ready after {rounds} looks in {}: {} ms after the stack's last event ({} {} {}, read {} ms after dockerd's timestamp); {} stream(s) lost",
            crate::clock::human(started.elapsed()),
            since.as_millis(),
            ev.kind.as_str(),
            ev.action,
            ev.name().unwrap_or(""),
            ev.lag().as_millis(),
            wake.losses
        );
    }
}
