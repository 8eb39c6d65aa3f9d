//! Taking a run app apart: the routine shared by teardown, the pre-deploy clean-up and the
//! janitor. Tolerates half-gone stacks (a SIGKILL between `undeploy` and `remove` leaves volumes
//! and secrets with no service).
//!
//! Reads go through [`Docker`]'s read path (the Engine API by default: one request per object
//! kind); waits for objects to go wake on the stack's removal events, with a backstop look. The
//! removals themselves (`stack rm`, `<kind> rm`) are docker CLI calls through the spawn path.
//! Every mutation (`abra app undeploy`, `abra app remove`, `docker stack rm`, each `docker rm`
//! batch) is preceded by the caller's [`Fence`]: on a shared swarm the caller must prove, right
//! then, that the domain's app lease is still its own, or the reap stops before touching what
//! may already be another run's app.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::App;
use crate::adapters::docker::{READ_BOUND, REMOVABLE};
use crate::adapters::engine::{Deadline, EventFilter, StackWake, Wake};
use crate::adapters::{Abra, Docker, DockerError, Residue};
use crate::lifetime::{self, Stop, Watch};

/// Why a reap did not finish. Each caller only reports it (the janitor tries again next sweep,
/// teardown records the residue), but a fence's refusal and a stop are not failures of docker:
/// they say that the reap must not go on.
#[derive(Debug, Error)]
pub enum ReapError {
    /// The caller's fence refused the next mutation: the domain may be another run's now.
    #[error("{0}")]
    Fenced(String),
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// Objects still there when the wait for them to go ran out.
    #[error("still present after {after}: {}{}", .items.join(", "), failures(.failed))]
    Remains { after: String, items: Vec<String>, failed: Vec<String> },
    /// The run or the sweep is stopping.
    #[error("stopped: {0:?}")]
    Stopped(Option<Stop>),
    #[error("cannot remove {}: {source}", .path.display())]
    Env { path: PathBuf, source: std::io::Error },
}

fn failures(failed: &[String]) -> String {
    if failed.is_empty() { String::new() } else { format!(" ({})", failed.join("; ")) }
}

/// With the event stream, a look at least this often anyway while waiting for objects to go.
pub const GONE_BACKSTOP: Duration = Duration::from_secs(2);
/// Without events (the CLI read path), how often to look.
const GONE_POLL: Duration = Duration::from_millis(500);
/// No single read of a wait for objects to go takes longer than this.
const PER_CALL: Duration = Duration::from_secs(10);
/// How long `stack rm`'s containers get to stop: their stop grace (10 s by default) and
/// swarm's task shutdown, with room for a slow image's entrypoint.
const CONTAINERS_GONE: Duration = Duration::from_secs(60);
/// How long the removal of volumes, secrets, configs and networks is retried: a volume stays
/// busy for a moment after its container exits, a network while its endpoints detach.
const REMOVALS_RETRIED: Duration = Duration::from_secs(30);
/// Between two rounds of those removals.
const REMOVAL_ROUND: Duration = Duration::from_millis(500);
/// A look started near the end of a wait may still take this long: the last one decides.
const LAST_LOOK: Duration = Duration::from_secs(2);

/// The bound of a read no wait passes in: [`READ_BOUND`], and no later than the bound a sweep
/// set for everything it starts (the janitor's `--deadline`, the run-start janitor's budget).
pub fn read_until() -> Deadline<'static> {
    let d = Deadline::after(READ_BOUND);
    match crate::process::child_bound() {
        Some(b) => Deadline::at(d.instant().min(b)),
        None => d,
    }
}

/// What removals look like in the event stream.
fn gone_events(stack: &str) -> EventFilter {
    EventFilter::stack(stack).actions(&["remove", "destroy", "die"])
}

/// The proof, asked immediately before every mutation of a reap, that the caller still owns
/// the app's domain (the cross-host app lease's fence). `Err` says why not, and stops the reap.
pub trait Fence {
    fn check(&self, step: &str) -> Result<(), String>;
}

/// A fence's refusal, as the reap's error.
fn fenced(fence: &dyn Fence, step: &str) -> Result<(), ReapError> {
    fence.check(step).map_err(ReapError::Fenced)
}

/// No lease (one swarm per host): the local app lock alone guards the app.
pub struct Unfenced;

impl Fence for Unfenced {
    fn check(&self, _step: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Everything of the stack that still exists, plus the `.env` when it remains.
pub fn leftovers(docker: &Docker, app: &App) -> Result<Vec<String>, DockerError> {
    leftovers_within(docker, app, read_until())
}

/// [`leftovers`] within `until`.
pub fn leftovers_within(docker: &Docker, app: &App, until: Deadline<'_>) -> Result<Vec<String>, DockerError> {
    let mut items = docker.residue(&app.stack, until)?.items();
    if app.env_path.exists() {
        items.push(format!("env:{}", app.env_path.display()));
    }
    Ok(items)
}

/// Removes the app with docker directly: `stack rm`, wait for its containers to go, then its
/// volumes, secrets, configs and networks, then the `.env`.
pub fn docker_reap(docker: &Docker, app: &App, fence: &dyn Fence) -> Result<(), ReapError> {
    let (stack, env_path) = (app.stack.as_str(), &app.env_path);
    let residue = docker.residue(stack, read_until())?;
    if !residue.services.is_empty() {
        fenced(fence, "docker stack rm")?;
        docker.stack_rm(stack)?;
    }
    wait_gone(docker, stack, CONTAINERS_GONE, |r| r.services.is_empty() && r.containers.is_empty())?;
    let end = crate::lifetime::instant_after(REMOVALS_RETRIED);
    loop {
        let r = docker.residue(stack, read_until())?;
        let mut failed = Vec::new();
        if !r.is_empty() {
            fenced(fence, "docker rm")?;
        }
        if !r.containers.is_empty() {
            let _ = docker.rm("container", &r.containers);
        }
        for kind in REMOVABLE {
            let names = match kind {
                "volume" => &r.volumes,
                "secret" => &r.secrets,
                "config" => &r.configs,
                _ => &r.networks,
            };
            if let Err(e) = docker.rm(kind, names) {
                failed.push(format!("{kind}: {e}"));
            }
        }
        let left = docker.residue(stack, read_until())?;
        if left.is_empty() {
            break;
        }
        if Instant::now() >= end {
            return Err(ReapError::Remains { after: "docker removal".into(), items: left.items(), failed });
        }
        if let Some(stop) = lifetime::sleep(REMOVAL_ROUND) {
            return Err(ReapError::Stopped(Some(stop)));
        }
    }
    match std::fs::remove_file(env_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ReapError::Env { path: env_path.clone(), source }),
    }
}

/// How a wait for objects to go ended.
#[derive(Debug)]
pub enum GoneEnd<T> {
    /// `check` said done; its last answer.
    Done(T),
    /// `within` passed; the last answer.
    TimedOut(T),
    /// The stop condition held (and the last answer, if a look finished).
    Stopped(Option<T>),
}

/// Looks at the stack when its objects go (its removal events), at least every
/// [`GONE_BACKSTOP`] (every [`GONE_POLL`] without events), until `check` says done, `within`
/// passes, or `stopped` holds. `check` gets the deadline of one look: the time left, at most
/// [`PER_CALL`], abandoned when `stopped` holds. A long wait beats ([`crate::progress`]) with
/// what the last look still found, as `describe` puts it.
pub fn until_gone<T>(
    docker: &Docker,
    stack: &str,
    within: Duration,
    stopped: &dyn Fn(&Watch) -> bool,
    describe: &dyn Fn(&T) -> String,
    mut check: impl FnMut(Deadline<'_>) -> (bool, T),
) -> GoneEnd<T> {
    let end = crate::lifetime::instant_after(within);
    let end = crate::process::child_bound().map_or(end, |b| end.min(b));
    let watch = lifetime::watch();
    let engine = docker.engine();
    let idle = if engine.is_some() { GONE_BACKSTOP } else { GONE_POLL };
    let mut wake = StackWake::new(engine, gone_events(stack), end, &watch);
    let mut last = None;
    let mut next = Instant::now();
    let mut beat = crate::progress::Heartbeat::new(format!("{stack} to be gone"), Some(within));
    loop {
        if stopped(&watch) {
            return GoneEnd::Stopped(last);
        }
        beat.tick(|| {
            last.as_ref().map_or_else(|| "no look finished yet".to_string(), |l| format!("left: {}", describe(l)))
        });
        let now = Instant::now();
        if now >= next {
            let cancel = || stopped(&watch);
            let until = Deadline::at(end.max(now + LAST_LOOK)).cap(PER_CALL).or_when(&cancel);
            let (done, answer) = check(until);
            if done {
                return GoneEnd::Done(answer);
            }
            if Instant::now() >= end {
                return GoneEnd::TimedOut(answer);
            }
            last = Some(answer);
            next = Instant::now() + idle;
        }
        match wake.wait(next.min(end).min(Instant::now() + beat.due_in())) {
            Wake::Events(_) | Wake::Lost(_) => next = Instant::now(),
            Wake::Due | Wake::Nudge => {
                if Instant::now() >= end {
                    next = Instant::now();
                }
            }
        }
    }
}

/// Waits until `done` holds for the stack's residue, or `within` passes.
pub fn wait_gone(
    docker: &Docker,
    stack: &str,
    within: Duration,
    done: impl Fn(&Residue) -> bool,
) -> Result<(), ReapError> {
    let stop_seen = std::cell::Cell::new(None);
    let stopped = |w: &Watch| match w.stop() {
        Some(s) => {
            stop_seen.set(Some(s));
            true
        }
        None => false,
    };
    // A failed read ends the wait at once (the caller reports it; the janitor retries later).
    let describe = |r: &Result<Residue, DockerError>| match r {
        Ok(r) => r.items().join(", "),
        Err(e) => e.to_string(),
    };
    let end = until_gone(docker, stack, within, &stopped, &describe, |until| match docker.residue(stack, until) {
        Ok(r) => (done(&r), Ok(r)),
        Err(e) => (true, Err(e)),
    });
    match end {
        GoneEnd::Done(Ok(_)) => Ok(()),
        GoneEnd::Done(Err(e)) | GoneEnd::TimedOut(Err(e)) => Err(e.into()),
        GoneEnd::TimedOut(Ok(r)) => {
            Err(ReapError::Remains { after: crate::clock::human(within), items: r.items(), failed: Vec::new() })
        }
        GoneEnd::Stopped(_) => Err(ReapError::Stopped(stop_seen.get())),
    }
}

/// The janitor's reap routine: abra when the `.env` is there, docker when it is not or abra
/// fails. Verification is the caller's business.
pub fn reap(abra: &Abra, docker: &Docker, app: &App, fence: &dyn Fence) -> Result<(), ReapError> {
    let (domain, stack, env_path) = (app.domain.as_str(), app.stack.as_str(), &app.env_path);
    if env_path.exists() {
        let deployed = docker.residue(stack, read_until()).map(|r| !r.services.is_empty()).unwrap_or(true);
        // A refused fence ends the reap; only abra's own failure falls back to docker.
        let via_abra = || -> Result<Result<(), crate::adapters::AbraError>, ReapError> {
            if deployed {
                fenced(fence, "abra app undeploy")?;
                if let Err(e) = abra.app_undeploy(domain) {
                    return Ok(Err(e));
                }
            }
            fenced(fence, "abra app remove")?;
            Ok(abra.app_remove(domain).map(|_| ()))
        };
        match via_abra()? {
            Ok(())
                if docker.residue(stack, read_until()).map(|r| r.is_empty()).unwrap_or(false) && !env_path.exists() =>
            {
                return Ok(());
            }
            Ok(()) => tracing::info!("reap {domain}: abra left objects behind; removing them with docker"),
            Err(e) => tracing::warn!("reap {domain}: abra failed ({e}); removing the app with docker"),
        }
    }
    docker_reap(docker, app, fence)
}
