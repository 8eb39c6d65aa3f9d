//! The one spawn path (§4). Every child — abra, docker, git, curl, hooks, tests — starts here:
//! its own process group, stdin from /dev/null, an explicit environment, a SIGKILL parent-death
//! signal, output drained line by line, a cancellable wait, and a leak check after it exits.
//! A child that needs a terminal gets a pseudo-terminal instead of the pipes ([`Cmd::pty`]),
//! with the same guarantees.

pub mod env;
pub mod group;
pub mod kill;
pub mod procfs;
mod pty;
pub mod shim;
pub mod text;

use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use nix::sys::wait::WaitStatus;
use thiserror::Error;
use tracing::Level;

use crate::exit::Cause;
use crate::lifetime::{self, Event, Stop, Stream};

const TAIL_LINES: usize = 40;
/// The child's exit, its lines and a stop arrive as events; the wait looks at the stop and the
/// timeout at least this often anyway, should one be missed.
const WAIT_BACKSTOP: Duration = Duration::from_millis(500);
/// A logged line is cut here; captured output never is.
const MAX_LINE: usize = 64 * 1024;

/// A child that did not do its job: it could not start, it failed by itself, or ccci stopped
/// it. The adapters (abra, docker, git) return this one type: a failed child's whole output
/// is kept, so a caller can classify it (git's network trouble, abra's "already exists") from
/// every line it left rather than from a message made of one.
#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("cannot start `{cmdline}`: {source}{hint}")]
    Spawn { cmdline: String, source: std::io::Error, hint: String },
    /// It ran to its own end and failed: a non-zero exit, or a signal ccci did not send.
    #[error("{}", .output.describe())]
    Failed { output: Box<Output> },
    /// ccci stopped it (a cancel, its timeout, the teardown budget) or never started it.
    #[error("`{cmdline}` {why}")]
    Stopped { cmdline: String, why: Stopped },
}

impl ProcessError {
    /// Why ccci stopped the child, when it did.
    pub fn stopped(&self) -> Option<Stopped> {
        match self {
            ProcessError::Stopped { why, .. } => Some(*why),
            _ => None,
        }
    }

    /// What a child that failed by itself left behind.
    pub fn output(&self) -> Option<&Output> {
        match self {
            ProcessError::Failed { output } => Some(output),
            _ => None,
        }
    }

    /// The line that says why a child failed by itself ([`error_line`]).
    pub fn error_line(&self) -> Option<&str> {
        self.output().and_then(Output::last_error_line)
    }
}

/// Timing knobs of the spawn path (`CCCI_KILL_GRACE`, `CCCI_LEAK_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub kill_grace: Duration,
    pub leak_timeout: Duration,
}

// A lock, not a OnceLock: a child spawned before the host config was read (a preflight
// probe) must not freeze the defaults for the rest of the process.
static TIMING: Mutex<Timing> = Mutex::new(Timing {
    kill_grace: Duration::from_secs(crate::config::limits::DEFAULT_KILL_GRACE_SECS),
    leak_timeout: Duration::from_millis(crate::config::limits::DEFAULT_LEAK_TIMEOUT_MS),
});

/// The instant every child must have ended by, while a [`ChildBound`] is alive.
static CHILD_BOUND: Mutex<Option<Instant>> = Mutex::new(None);

/// The bound [`bound_children`] set, if any: reads of dockerd that spawn nothing honour it too.
pub fn child_bound() -> Option<Instant> {
    *CHILD_BOUND.lock().unwrap_or_else(|e| e.into_inner())
}

/// While alive, no child started through the spawn path may run past `until` (it is stopped
/// as timed out). A sweep with a deadline of its own (`ccci janitor --deadline`, the run-start
/// janitor's budget) holds one, so a wedged dockerd or abra cannot stretch it; dropping it
/// restores the previous bound.
#[must_use = "the bound ends when the guard is dropped"]
pub struct ChildBound {
    previous: Option<Instant>,
}

pub fn bound_children(until: Instant) -> ChildBound {
    let mut b = CHILD_BOUND.lock().unwrap_or_else(|e| e.into_inner());
    let previous = *b;
    *b = Some(previous.map_or(until, |p| p.min(until)));
    ChildBound { previous }
}

impl Drop for ChildBound {
    fn drop(&mut self) {
        *CHILD_BOUND.lock().unwrap_or_else(|e| e.into_inner()) = self.previous;
    }
}

pub fn configure_timing(t: Timing) {
    *TIMING.lock().unwrap_or_else(|e| e.into_inner()) = t;
}

fn timing() -> Timing {
    *TIMING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a child did not run to its own end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The run was cancelled (signal or deadline) while it ran.
    Cancelled(Cause),
    /// It ran past its own timeout.
    TimedOut(Duration),
    /// A second interrupt during teardown skipped it.
    Skipped,
    /// The teardown budget ran out.
    Abandoned,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopped::Cancelled(c) => write!(f, "stopped: run cancelled ({c:?})"),
            Stopped::TimedOut(d) => write!(f, "timed out after {}", crate::clock::human(*d)),
            Stopped::Skipped => f.write_str("skipped by a second interrupt"),
            Stopped::Abandoned => f.write_str("killed: teardown budget spent"),
        }
    }
}

/// How a child ended. A child ccci stopped is `Stopped` whatever its wait status says (the
/// SIGKILL was ccci's, not the child's failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself with this code.
    Exited(i32),
    /// A signal ccci did not send ended it (an OOM kill, a crash).
    Signaled(i32),
    /// ccci stopped it, or never started it (see [`Stopped`]); `signal` is the one that ended
    /// it (SIGTERM sufficed, or the SIGKILL after the grace), `None` when it never ran or exited
    /// by itself meanwhile.
    Stopped { why: Stopped, signal: Option<i32> },
    /// Its wait status was lost (reaped elsewhere).
    Unknown,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Exited(c) => write!(f, "exited {c}"),
            Ended::Signaled(s) => write!(f, "killed by signal {s}"),
            Ended::Stopped { why, .. } => why.fmt(f),
            Ended::Unknown => f.write_str("ended"),
        }
    }
}

/// What a finished child left behind.
#[derive(Debug, Clone)]
pub struct Output {
    pub name: String,
    pub cmdline: String,
    /// How it ended: the one answer to "exit code, signal, or stopped by ccci?".
    pub ended: Ended,
    /// Captured stdout (only when asked for; unmasked and byte-exact, for parsing). Under a
    /// pseudo-terminal: everything the child wrote.
    pub stdout: String,
    /// The last lines of both streams, masked.
    pub tail: Vec<String>,
    /// Pids still alive in the group after the child exited (they were stopped).
    pub leaky: Vec<i32>,
    pub duration: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.ended == Ended::Exited(0)
    }

    /// Its exit code, when it exited by itself.
    pub fn code(&self) -> Option<i32> {
        match self.ended {
            Ended::Exited(c) => Some(c),
            _ => None,
        }
    }

    /// The signal that ended it, whoever sent it.
    pub fn signal(&self) -> Option<i32> {
        match self.ended {
            Ended::Signaled(s) | Ended::Stopped { signal: Some(s), .. } => Some(s),
            _ => None,
        }
    }

    /// Why ccci stopped it, when it did.
    pub fn stopped(&self) -> Option<Stopped> {
        match self.ended {
            Ended::Stopped { why, .. } => Some(why),
            _ => None,
        }
    }

    /// The output of a child that did its job; otherwise the error that says how it did not
    /// (stopped by ccci, or failed by itself with its output kept).
    pub fn checked(self) -> Result<Output, ProcessError> {
        if let Some(why) = self.stopped() {
            return Err(ProcessError::Stopped { cmdline: self.cmdline, why });
        }
        if !self.success() {
            return Err(ProcessError::Failed { output: Box::new(self) });
        }
        Ok(self)
    }

    /// The line that says why the child failed (see [`error_line`]).
    pub fn last_error_line(&self) -> Option<&str> {
        error_line(&self.tail)
    }

    /// One line for reports: what ran, how it ended, and its last error line.
    pub fn describe(&self) -> String {
        let how = self.ended;
        match self.last_error_line() {
            Some(line) if !self.success() => format!("`{}` {how}: {line}", self.cmdline),
            _ => format!("`{}` {how}", self.cmdline),
        }
    }
}

/// The line that says why a child failed: the last `FATA …` line (abra's failure line), else
/// the last `Error…` line (cobra's usage errors, docker's daemon errors, each followed by a
/// hint), else the last non-empty line.
pub fn error_line(lines: &[String]) -> Option<&str> {
    let last = |p: &dyn Fn(&str) -> bool| lines.iter().rev().map(|l| l.trim()).find(|l| p(l));
    last(&|l| l.starts_with("FATA")).or_else(|| last(&|l| l.starts_with("Error"))).or_else(|| last(&|l| !l.is_empty()))
}

/// A child to run. Build it, then [`Cmd::run`].
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    name: String,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
    /// Variables whose values never appear in logs (git's auth header).
    secret_env: Vec<(String, String)>,
    level: Level,
    capture: bool,
    /// Captured stdout is logged too.
    tee: bool,
    pty: bool,
    timeout: Option<Duration>,
    hint: String,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        let program = program.into();
        let name =
            Path::new(&program).file_name().map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
        Cmd {
            program,
            args: Vec::new(),
            name,
            cwd: None,
            env: Vec::new(),
            secret_env: Vec::new(),
            level: Level::INFO,
            capture: false,
            tee: false,
            pty: false,
            timeout: None,
            hint: String::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Cmd {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// The short name that prefixes the child's output lines.
    pub fn name(mut self, n: impl Into<String>) -> Cmd {
        self.name = n.into();
        self
    }

    pub fn cwd(mut self, d: impl Into<PathBuf>) -> Cmd {
        self.cwd = Some(d.into());
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Cmd {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn envs(mut self, vars: &[(String, String)]) -> Cmd {
        self.env.extend_from_slice(vars);
        self
    }

    pub fn secret_env(mut self, k: impl Into<String>, v: impl Into<String>) -> Cmd {
        self.secret_env.push((k.into(), v.into()));
        self
    }

    /// The log level of the child's output lines (default info).
    pub fn level(mut self, l: Level) -> Cmd {
        self.level = l;
        self
    }

    /// Keep stdout for the caller instead of logging it.
    pub fn capture(mut self) -> Cmd {
        self.capture = true;
        self
    }

    /// Keep stdout for the caller and log it as well (masked, like any output).
    pub fn tee(mut self) -> Cmd {
        self.capture = true;
        self.tee = true;
        self
    }

    /// Run under a pseudo-terminal: the child's stdin, stdout and stderr are the terminal, which
    /// is also its controlling terminal. Its output arrives as one stream (stdout).
    pub fn pty(mut self) -> Cmd {
        self.pty = true;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = Some(t);
        self
    }

    /// Appended to a spawn error (e.g. which env var names the program).
    pub fn hint(mut self, h: impl Into<String>) -> Cmd {
        self.hint = h.into();
        self
    }

    /// The command line, shell-quoted. Never carries a secret: secrets travel in the environment.
    pub fn cmdline(&self) -> String {
        std::iter::once(&self.program).chain(self.args.iter()).map(|a| quote(a)).collect::<Vec<_>>().join(" ")
    }

    /// The std command, and for a pseudo-terminal child the master side ccci reads.
    #[expect(clippy::disallowed_methods, reason = "the spawn path itself builds the std command")]
    fn command(&self) -> std::io::Result<(Command, Option<OwnedFd>)> {
        let parent = nix::unistd::getpid().as_raw();
        if self.pty {
            return self.pty_command(parent);
        }
        let mut c = if shim::enabled() {
            // Through the shim (see `shim`): ccci re-executes itself to arm the parent-death
            // signal, then becomes the program. An absolute program path and no pre-exec hook
            // let std use posix_spawn (vfork) instead of fork.
            let mut c = Command::new("/proc/self/exe");
            c.arg(shim::ARG).arg(parent.to_string()).arg(&self.program);
            c
        } else {
            let mut c = Command::new(&self.program);
            // SAFETY: the hook runs in the forked child before exec and makes only
            // async-signal-safe calls ([`die_with_parent`]), no allocation.
            unsafe {
                c.pre_exec(move || die_with_parent(parent));
            }
            c
        };
        self.common(&mut c);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        Ok((c, None))
    }

    /// A child on a pseudo-terminal. It needs a session of its own to have a controlling
    /// terminal, and `setsid()` fails in a process that already leads a group, so such a child
    /// cannot use `process_group(0)`: it calls `setsid()` itself, which makes it the leader of a
    /// new session *and* of a new process group with its own pid — the same group every other
    /// child gets, so stopping, reaping and the leak check work unchanged. This goes through a
    /// pre-exec hook rather than the exec shim: the hook runs before `spawn()` returns, so the
    /// group exists the moment ccci knows the pid (in the shim a stop arriving before its
    /// `setsid()` would signal a group that does not exist yet and miss the child). The fork
    /// this costs is paid only by the few terminal children of a run (backup, restore, lint,
    /// deploys).
    #[expect(clippy::disallowed_methods, reason = "the spawn path itself builds the std command")]
    fn pty_command(&self, parent: i32) -> std::io::Result<(Command, Option<OwnedFd>)> {
        let (master, slave) = pty::open()?;
        let mut c = Command::new(&self.program);
        // SAFETY: runs in the forked child before exec; only async-signal-safe calls (setsid,
        // ioctl, prctl, getppid, _exit), no allocation.
        unsafe {
            c.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // stdin is the slave by now: make it the controlling terminal.
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                die_with_parent(parent)
            });
        }
        self.common(&mut c);
        c.stdin(Stdio::from(slave.try_clone()?)).stdout(Stdio::from(slave.try_clone()?)).stderr(Stdio::from(slave));
        Ok((c, Some(master)))
    }

    /// Arguments, the explicit environment and the working directory.
    fn common(&self, c: &mut Command) {
        c.args(&self.args)
            .env_clear()
            .envs(env::base())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(self.secret_env.iter().map(|(k, v)| (k, v)));
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
    }

    /// The shim reports a missing program only after the spawn; find it here first, with the
    /// child's PATH, so the error and its hint name it like any spawn error.
    fn check_program(&self) -> Result<(), std::io::Error> {
        let executable = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        let found = if self.program.contains('/') {
            let p = match &self.cwd {
                Some(d) if !self.program.starts_with('/') => d.join(&self.program),
                _ => PathBuf::from(&self.program),
            };
            executable(&p)
        } else {
            let path = env::base().into_iter().find(|(k, _)| k == "PATH").map(|(_, v)| v).unwrap_or_default();
            path.split(':').filter(|d| !d.is_empty()).any(|d| executable(&Path::new(d).join(&self.program)))
        };
        if found { Ok(()) } else { Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such executable")) }
    }

    /// Runs the child and wants it to succeed: its output, or how it failed or was stopped.
    pub fn run_checked(&self) -> Result<Output, ProcessError> {
        self.run()?.checked()
    }

    /// Runs the child to its end, or until a stop (signal, deadline, timeout, budget).
    /// A non-zero exit is not an error here: look at [`Output::success`].
    pub fn run(&self) -> Result<Output, ProcessError> {
        let started = Instant::now();
        let cmdline = self.cmdline();
        let mut watch = lifetime::watch();
        let mut out = Output {
            name: self.name.clone(),
            cmdline: cmdline.clone(),
            ended: Ended::Unknown,
            stdout: String::new(),
            tail: Vec::new(),
            leaky: Vec::new(),
            duration: Duration::ZERO,
        };
        if let Some(stop) = watch.stop() {
            out.ended = Ended::Stopped { why: stopped_of(stop), signal: None };
            return Ok(out);
        }
        if let Some(bound) = child_bound()
            && Instant::now() >= bound
        {
            // The caller's bound has passed: do not start what would be stopped at once.
            out.ended = Ended::Stopped { why: Stopped::TimedOut(Duration::ZERO), signal: None };
            return Ok(out);
        }
        tracing::event!(target: "ccci::process", Level::DEBUG, "$ {cmdline}");
        let (pid, streams) = self.spawn_child(&watch, &cmdline)?;
        let mut sink = ChildLines { cmd: self, tail: VecDeque::new(), stdout: Vec::new(), eofs: 0 };
        let stop = self.wait_exit(&watch, &mut sink, started);
        let status = match stop {
            Some(why) => self.stop_group(pid, why, &mut watch),
            None => {
                let status = group::reap_leader(pid, true);
                out.leaky = self.leak_check(pid, streams, &watch, &mut sink);
                status
            }
        };
        while let Some(ev) = watch.recv_timeout(Duration::ZERO) {
            sink.handle(ev);
        }
        group::unregister(pid);
        out.ended = ended_of(stop, status);
        out.stdout =
            String::from_utf8(sink.stdout).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        out.tail = sink.tail.into_iter().collect();
        out.duration = started.elapsed();
        // A failure is logged at the child's own level (a debug-level probe's stays quiet).
        if !out.success() && self.level <= Level::INFO {
            tracing::info!("{} finished in {}: {}", self.name, crate::clock::human(out.duration), out.describe())
        } else {
            tracing::debug!("{} finished in {}: {}", self.name, crate::clock::human(out.duration), out.describe())
        }
        Ok(out)
    }

    /// Starts the child in its own group, with a reader per output stream and a watcher of its
    /// exit feeding `watch`. Returns its pid (= its group) and how many streams it has.
    fn spawn_child(&self, watch: &lifetime::Watch, cmdline: &str) -> Result<(i32, u8), ProcessError> {
        let spawn_error =
            |source| ProcessError::Spawn { cmdline: cmdline.to_string(), source, hint: self.hint.clone() };
        self.check_program().map_err(spawn_error)?;
        let (mut command, master) = self.command().map_err(spawn_error)?;
        let spawned = command.spawn();
        // The command holds the terminal's slave side: drop it, or the master never sees the
        // end of the child's output.
        drop(command);
        let mut child = spawned.map_err(spawn_error)?;
        let pid = child.id() as i32;
        group::register(pid);
        let tx = watch.sender();
        let streams = if let Some(master) = master {
            spawn_reader(std::fs::File::from(master), Stream::Stdout, tx.clone());
            1
        } else {
            if let Some(s) = child.stdout.take() {
                spawn_reader(s, Stream::Stdout, tx.clone());
            }
            if let Some(s) = child.stderr.take() {
                spawn_reader(s, Stream::Stderr, tx.clone());
            }
            2
        };
        spawn_exit_watcher(pid, tx);
        Ok((pid, streams))
    }

    /// Drains the child's output until it exits (`None`), or until ccci must stop it: a stop of
    /// the run, its own timeout, or the caller's bound.
    fn wait_exit(&self, watch: &lifetime::Watch, sink: &mut ChildLines<'_>, started: Instant) -> Option<Stopped> {
        let own = self.timeout.map(|t| started.checked_add(t).unwrap_or_else(|| crate::lifetime::instant_after(t)));
        // A bound set by the caller's caller (the janitor's --deadline, the run-start janitor's
        // budget) caps every child started meanwhile, whatever the child's own timeout.
        let deadline = match (own, child_bound()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        loop {
            if let Some(s) = watch.stop() {
                return Some(stopped_of(s));
            }
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                return Some(Stopped::TimedOut(d.saturating_duration_since(started)));
            }
            let wait =
                deadline.map_or(WAIT_BACKSTOP, |d| d.saturating_duration_since(Instant::now()).min(WAIT_BACKSTOP));
            match watch.recv_timeout(wait) {
                Some(Event::Exited) => return None,
                Some(ev) => sink.handle(ev),
                None => {}
            }
        }
    }

    /// Stops the child's group for `why` (TERM, grace, KILL; at once when `why` says so) and
    /// reaps the leader. A further stop during the grace (a second interrupt) escalates.
    fn stop_group(&self, pid: i32, why: Stopped, watch: &mut lifetime::Watch) -> Option<WaitStatus> {
        // Abandon and skip mean "now": the budget is spent or a person asked twice; so does a
        // cause that says so (`Cause::kills_at_once`).
        let grace = match why {
            Stopped::Abandoned | Stopped::Skipped => Duration::ZERO,
            Stopped::Cancelled(c) if c.kills_at_once() => Duration::ZERO,
            _ => timing().kill_grace,
        };
        if grace.is_zero() {
            tracing::warn!("{}: {why}; killing its process group", self.name);
        } else {
            tracing::warn!(
                "{}: {why}; stopping its process group (SIGTERM, {} grace, SIGKILL)",
                self.name,
                crate::clock::human(grace)
            );
        }
        watch.rearm();
        let escalate = || watch.epoch_moved();
        group::terminate_group(pid, grace, &escalate);
        group::reap_leader(pid, true)
    }

    /// After the child exited by itself: its pipes should close and its group empty within the
    /// leak timeout. Returns the members still running (stopped now: a leaky step).
    fn leak_check(&self, pid: i32, streams: u8, watch: &lifetime::Watch, sink: &mut ChildLines<'_>) -> Vec<i32> {
        let t = timing();
        let end = crate::lifetime::instant_after(t.leak_timeout);
        while sink.eofs < streams {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(ev) = watch.recv_timeout(left) {
                sink.handle(ev);
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        // Even with the leak timeout spent on the pipes, the group is looked at once.
        if !group::wait_group_empty(pid, left.max(kill::POLL)) {
            let members = group::live_members(pid);
            tracing::warn!(
                "{}: leaky step: processes {members:?} were still running in its group after it exited; stopping them",
                self.name
            );
            group::terminate_group(pid, t.kill_grace, &|| false);
            return members;
        }
        if sink.eofs < streams {
            tracing::warn!(
                "{}: leaky step: its output pipe is still held open by a process outside its group after it exited",
                self.name
            );
        }
        Vec::new()
    }
}

/// How a child ended, from why ccci stopped it (if it did) and its wait status. A child ccci
/// stopped is `Stopped` whatever its status says (the SIGKILL was ccci's, not the child's
/// failure); the status only tells which signal ended it.
fn ended_of(stop: Option<Stopped>, status: Option<WaitStatus>) -> Ended {
    match (stop, status) {
        (Some(why), Some(WaitStatus::Signaled(_, sig, _))) => Ended::Stopped { why, signal: Some(sig as i32) },
        (Some(why), _) => Ended::Stopped { why, signal: None },
        (None, Some(WaitStatus::Exited(_, code))) => Ended::Exited(code),
        (None, Some(WaitStatus::Signaled(_, sig, _))) => Ended::Signaled(sig as i32),
        (None, _) => Ended::Unknown,
    }
}

/// In a forked child before exec: SIGKILL when ccci's spawning thread ends (the parent-death
/// signal follows the thread, which is why ccci spawns only from its main thread), and no exec
/// at all when ccci already died between the fork and the prctl (the signal would never come).
/// Async-signal-safe: prctl, getppid and _exit, no allocation.
fn die_with_parent(parent: i32) -> std::io::Result<()> {
    // SAFETY: plain system calls on the calling process.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(127);
        }
    }
    Ok(())
}

/// A lifetime stop, as the reason a child was stopped (its own timeout is the caller's).
fn stopped_of(s: Stop) -> Stopped {
    match s {
        Stop::Cancelled(c) => Stopped::Cancelled(c),
        Stop::SkipStep => Stopped::Skipped,
        Stop::Abandon => Stopped::Abandoned,
    }
}

/// Where a child's output goes while it runs: the log, the masked tail, captured stdout.
struct ChildLines<'a> {
    cmd: &'a Cmd,
    tail: VecDeque<String>,
    /// Captured stdout, byte for byte as the child wrote it.
    stdout: Vec<u8>,
    eofs: u8,
}

impl ChildLines<'_> {
    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Lines(stream, lines) => {
                for bytes in lines {
                    self.line(stream, &bytes);
                }
            }
            Event::Eof(_) => self.eofs += 1,
            Event::Wake | Event::Exited | Event::LockDone | Event::Engine(_) | Event::LeaseKey => {}
        }
    }

    /// `bytes` is a line with its newline, or a piece of a line longer than the logging cap
    /// (pieces arrive in order, so captured output is their concatenation).
    fn line(&mut self, stream: Stream, bytes: &[u8]) {
        if self.cmd.capture && stream == Stream::Stdout {
            self.stdout.extend_from_slice(bytes);
            if !self.cmd.tee {
                return;
            }
        }
        let text = String::from_utf8_lossy(bytes);
        let text = text::for_log(text.trim_end_matches(['\n', '\r']));
        let masked = crate::mask::mask(&text);
        match self.cmd.level {
            Level::TRACE => tracing::trace!("{}| {masked}", self.cmd.name),
            Level::DEBUG => tracing::debug!("{}| {masked}", self.cmd.name),
            _ => tracing::info!("{}| {masked}", self.cmd.name),
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(masked);
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R, stream: Stream, tx: Sender<Event>) {
    // Lines are sent in batches, one per read(2): a child printing a few hundred lines of JSON
    // then costs one wake-up of the main thread instead of hundreds.
    let spawned = std::thread::Builder::new().name("child-output".into()).spawn(move || {
        // A small stack buffer: a fresh heap buffer per child would be page-faulted in (and
        // zeroed) for every spawn, which showed up as most of ccci's own CPU.
        let mut buf = [0u8; 8 * 1024];
        let mut partial: Vec<u8> = Vec::new();
        let mut listening = true;
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if !listening {
                // Nobody listens any more; keep draining so the child never blocks.
                continue;
            }
            partial.extend_from_slice(&buf[..n]);
            let mut lines = Vec::new();
            let mut start = 0;
            for (i, b) in partial.iter().enumerate() {
                if *b == b'\n' {
                    lines.push(partial[start..=i].to_vec());
                    start = i + 1;
                }
            }
            partial.drain(..start);
            if partial.len() > MAX_LINE {
                lines.push(std::mem::take(&mut partial));
            }
            if !lines.is_empty() && tx.send(Event::Lines(stream, lines)).is_err() {
                listening = false;
            }
        }
        if listening && !partial.is_empty() {
            let _ = tx.send(Event::Lines(stream, vec![partial]));
        }
        let _ = tx.send(Event::Eof(stream));
    });
    if spawned.is_err() {
        tracing::error!("cannot start an output reader thread");
    }
}

/// Tells the wait loop that the child exited, without reaping it (`WNOWAIT`): the reap stays
/// with the main thread, which owns the exit status.
fn spawn_exit_watcher(pid: i32, tx: Sender<Event>) {
    let _ = std::thread::Builder::new().name("child-exit".into()).spawn(move || {
        loop {
            // SAFETY: waitid fills the zeroed siginfo it is given; no other memory is touched.
            let rc = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
            };
            if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        let _ = tx.send(Event::Exited);
    });
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Exit status helper for places that only have a std status.
pub fn code_of(status: std::process::ExitStatus) -> Option<i32> {
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Cmd {
        Cmd::new("sh").arg("-c").arg(script).level(Level::DEBUG)
    }

    #[test]
    fn how_a_child_ended_is_ccci_s_stop_first_then_its_status() {
        use nix::sys::signal::Signal::{SIGKILL, SIGSEGV, SIGTERM};
        let p = nix::unistd::Pid::from_raw(7);
        let cancelled = Stopped::Cancelled(Cause::Term);
        for (stop, status, want) in [
            (None, Some(WaitStatus::Exited(p, 0)), Ended::Exited(0)),
            (None, Some(WaitStatus::Exited(p, 3)), Ended::Exited(3)),
            (None, Some(WaitStatus::Signaled(p, SIGSEGV, true)), Ended::Signaled(11)),
            (None, None, Ended::Unknown),
            // ccci's stop wins over whatever the status says; the status names the signal.
            (
                Some(cancelled),
                Some(WaitStatus::Signaled(p, SIGTERM, false)),
                Ended::Stopped { why: cancelled, signal: Some(15) },
            ),
            (
                Some(Stopped::Abandoned),
                Some(WaitStatus::Signaled(p, SIGKILL, false)),
                Ended::Stopped { why: Stopped::Abandoned, signal: Some(9) },
            ),
            // It exited by itself during the grace: still ccci's stop, no signal.
            (Some(cancelled), Some(WaitStatus::Exited(p, 1)), Ended::Stopped { why: cancelled, signal: None }),
            (
                Some(Stopped::TimedOut(Duration::from_secs(1))),
                None,
                Ended::Stopped { why: Stopped::TimedOut(Duration::from_secs(1)), signal: None },
            ),
        ] {
            assert_eq!(ended_of(stop, status), want, "{stop:?} {status:?}");
        }
    }

    #[test]
    fn captured_output_is_byte_exact_past_the_logging_cap() {
        // One 200 KB line (a compact `abra app ls -m` of a big host), then a line without a
        // newline: nothing is cut, nothing is added.
        let out = sh("head -c 200000 /dev/zero | tr '\\0' a; echo; printf tail").capture().run().unwrap();
        assert!(out.success(), "{}", out.describe());
        assert_eq!(out.stdout.len(), 200_000 + 1 + 4);
        assert_eq!(out.stdout, format!("{}\ntail", "a".repeat(200_000)));
    }

    #[test]
    fn a_pty_child_has_a_terminal_and_a_session_and_group_of_its_own() {
        let script = "test -t 0 && test -t 1 && test -t 2 && echo tty=yes; \
                      echo pid=$$; echo ids=$(cut -d' ' -f5,6 /proc/$$/stat); echo to-stderr >&2";
        let out = sh(script).pty().tee().run().unwrap();
        assert!(out.success(), "{}", out.describe());
        let text = &out.stdout;
        assert!(text.contains("tty=yes\n"), "{text:?}");
        assert!(!text.contains('\r'), "no output processing: {text:?}");
        assert!(text.contains("to-stderr\n"), "both streams arrive merged: {text:?}");
        let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).unwrap().to_string();
        let pid = field("pid=");
        assert_eq!(field("ids="), format!("{pid} {pid}"), "process group and session are the child's own");
        assert!(out.leaky.is_empty());
    }

    #[test]
    fn a_pty_child_is_stopped_by_its_timeout() {
        let out = sh("sleep 100").pty().timeout(Duration::from_millis(300)).run().unwrap();
        assert!(matches!(out.stopped(), Some(Stopped::TimedOut(_))), "{}", out.describe());
    }

    #[test]
    fn terminal_escapes_are_stripped_for_logs_and_the_error_line() {
        let out = sh("printf 'starting\\n\\033[1;91mFATA\\033[0m deploy failed\\n'; exit 1").pty().run().unwrap();
        assert!(!out.success());
        assert_eq!(out.last_error_line(), Some("FATA deploy failed"));
    }
}
