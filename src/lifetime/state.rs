//! The shared lifetime state and the signal thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::clock;
use crate::exit::Cause;

/// What a wait can be told by the rest of the program.
#[derive(Debug)]
pub enum Event {
    /// The lifetime changed (a signal, the deadline, the budget): re-check [`Watch::stop`].
    Wake,
    /// Lines of child output (each with its newline, when it had one).
    Lines(Stream, Vec<Vec<u8>>),
    /// A child's pipe closed.
    Eof(Stream),
    /// The watched child exited (not yet reaped).
    Exited,
    /// The app-lock thread finished its blocking acquire.
    LockDone,
    /// dockerd's event stream: an event of the watched stack, or the stream lost.
    Engine(crate::adapters::engine::Notice),
    /// The etcd watch of an awaited app lease key saw it deleted, or its stream ended: look at
    /// the key again.
    LeaseKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    Teardown,
}

/// Why a wait must stop what it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A signal or the deadline while running: stop and go to teardown.
    Cancelled(Cause),
    /// A second SIGINT/SIGQUIT during teardown: stop this teardown step, move on.
    SkipStep,
    /// The teardown budget is spent: stop everything and leave.
    Abandon,
}

struct State {
    cause: Option<Cause>,
    phase: Phase,
    interrupts: u32,
    epoch: u64,
    abandoned: bool,
    deadline: Duration,
    budget: Duration,
    parent: Option<i32>,
    teardown_started: Option<Instant>,
    next_id: u64,
    wakers: Vec<(u64, Sender<Event>)>,
}

/// A SIGALRM this much earlier than the budget's end is the deadline's stale alarm (it raced
/// the normal end of the stages), not the budget's.
const STALE_ALARM_MARGIN: Duration = Duration::from_secs(1);
/// After the budget is spent, how long the main thread gets to write its report and exit
/// before the process ends at once (a wedged main thread must not outlive the budget by much).
const WEDGED_EXIT_AFTER: Duration = Duration::from_secs(15);

static STATE: Mutex<State> = Mutex::new(State {
    cause: None,
    phase: Phase::Running,
    interrupts: 0,
    epoch: 0,
    abandoned: false,
    // Until `configure_deadline`: the defaults a run gets without flags.
    deadline: Duration::from_secs(crate::config::limits::DEFAULT_DEADLINE_SECS),
    budget: Duration::from_secs(crate::config::limits::DEFAULT_BUDGET_SECS),
    parent: None,
    teardown_started: None,
    next_id: 0,
    wakers: Vec::new(),
});

static STARTED: AtomicBool = AtomicBool::new(false);
/// Called (from the signal thread) right before an immediate exit: kills child groups.
static EXIT_NOW_HOOK: OnceLock<fn()> = OnceLock::new();

fn lock() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records the durations used in log lines, and the parent pid seen at start.
pub fn configure_deadline(deadline: Duration, budget: Duration, parent: Option<i32>) {
    let mut s = lock();
    s.deadline = deadline;
    s.budget = budget;
    s.parent = parent;
}

/// Installs what an immediate exit (third interrupt, wedged abandon) must do first.
pub fn exit_now_hook(hook: fn()) {
    let _ = EXIT_NOW_HOOK.set(hook);
}

pub fn cause() -> Option<Cause> {
    lock().cause
}

pub fn phase() -> Phase {
    lock().phase
}

pub fn abandoned() -> bool {
    lock().abandoned
}

pub fn interrupts() -> u32 {
    lock().interrupts
}

/// Starts the one signal thread. Must run before any other thread exists: signal-hook chains
/// handlers, and a thread started earlier could race the registration.
pub fn start_signal_thread() -> std::io::Result<()> {
    if STARTED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGALRM])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            on_signal(sig);
        }
    })?;
    Ok(())
}

fn cause_of(sig: i32) -> Cause {
    match sig {
        SIGTERM => Cause::Term,
        SIGHUP => Cause::Hup,
        SIGINT => Cause::Int,
        SIGQUIT => Cause::Quit,
        _ => Cause::Deadline,
    }
}

fn name_of(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        SIGINT => "SIGINT",
        SIGQUIT => "SIGQUIT",
        _ => "SIGALRM",
    }
}

fn notify(s: &mut State) {
    s.epoch += 1;
    s.wakers.retain(|(_, tx)| tx.send(Event::Wake).is_ok());
}

/// What the lifetime holds when a signal arrives: the input of [`react`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Now {
    phase: Phase,
    cause: Option<Cause>,
    /// SIGINT/SIGQUIT received so far, this one included (a person pressing Ctrl-C).
    interrupts: u32,
    abandoned: bool,
    /// During teardown: the budget cannot have run out yet (a SIGALRM now is the deadline's
    /// stale alarm, which raced the normal end of the stages).
    alarm_is_early: bool,
}

/// What to do about a signal (§4.1's table). Pure: [`on_signal`] carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaction {
    /// The first signal while running: record the cause, stop, go to teardown.
    Cancel(Cause),
    /// A second interrupt while stopping: stop the current step at once.
    StopStep,
    /// Another SIGTERM/SIGHUP/SIGALRM while stopping: already on the way out.
    Noted,
    /// The third interrupt: exit now; the janitor reaps what remains.
    ExitNow,
    /// The deadline's alarm, arriving as teardown began: teardown goes on.
    StaleAlarm,
    /// The teardown budget is spent: abandon teardown.
    Abandon,
    /// A second interrupt during teardown: skip the current teardown step.
    SkipTeardownStep,
    /// During teardown SIGTERM/SIGHUP (and a first interrupt, and an alarm after the abandon)
    /// change nothing: teardown must run to its end for nothing to leak.
    TeardownContinues,
}

fn react(now: Now, sig: i32) -> Reaction {
    let interactive = matches!(sig, SIGINT | SIGQUIT);
    match now.phase {
        Phase::Running if now.cause.is_none() => Reaction::Cancel(cause_of(sig)),
        Phase::Running if interactive && now.interrupts >= 3 => Reaction::ExitNow,
        Phase::Running if interactive => Reaction::StopStep,
        Phase::Running => Reaction::Noted,
        Phase::Teardown => match sig {
            SIGALRM if now.alarm_is_early => Reaction::StaleAlarm,
            SIGALRM if !now.abandoned => Reaction::Abandon,
            SIGINT | SIGQUIT if now.interrupts >= 3 => Reaction::ExitNow,
            SIGINT | SIGQUIT if now.interrupts == 2 => Reaction::SkipTeardownStep,
            _ => Reaction::TeardownContinues,
        },
    }
}

fn on_signal(sig: i32) {
    let mut s = lock();
    if matches!(sig, SIGINT | SIGQUIT) {
        s.interrupts += 1;
    }
    let now = Now {
        phase: s.phase,
        cause: s.cause,
        interrupts: s.interrupts,
        abandoned: s.abandoned,
        alarm_is_early: s.teardown_started.is_some_and(|t| t.elapsed() + STALE_ALARM_MARGIN < s.budget),
    };
    let name = name_of(sig);
    match react(now, sig) {
        Reaction::Cancel(cause) => {
            s.cause = Some(cause);
            match cause {
                Cause::Deadline => tracing::error!(
                    "run exceeded its {} deadline: stopping and tearing down",
                    clock::minutes_seconds(s.deadline)
                ),
                Cause::Term | Cause::Hup => {
                    let parent_gone = s.parent.is_some_and(|p| nix::unistd::getppid().as_raw() != p);
                    if parent_gone && sig == SIGTERM {
                        tracing::warn!(
                            "parent process exited (parent-death signal SIGTERM): cancelling the run and tearing down"
                        )
                    } else {
                        tracing::warn!("received {name}: cancelling the run and tearing down")
                    }
                }
                Cause::Int | Cause::Quit => tracing::warn!(
                    "received {name}: cancelling the run and tearing down (press again to stop the current step at once)"
                ),
                // Never from a signal: a lost lease comes through `cancel`.
                Cause::LeaseLost => {}
            }
            notify(&mut s);
        }
        Reaction::StopStep => {
            tracing::warn!("received {name} again: stopping the current step at once");
            notify(&mut s);
        }
        Reaction::Noted => tracing::info!("received {name} while already stopping: noted"),
        Reaction::ExitNow => {
            drop(s);
            exit_now("third interrupt: exiting at once; the janitor will reap what remains");
        }
        Reaction::StaleAlarm => {
            tracing::info!("deadline alarm arrived as teardown began: ignored, teardown continues")
        }
        Reaction::Abandon => {
            s.abandoned = true;
            tracing::error!("teardown budget of {} is spent: abandoning teardown", clock::minutes_seconds(s.budget));
            notify(&mut s);
            drop(s);
            // The main thread writes the report and exits at once; should it be wedged
            // somewhere, this makes sure the process still ends.
            std::thread::spawn(|| {
                std::thread::sleep(WEDGED_EXIT_AFTER);
                exit_now("teardown abandoned and the process did not exit: exiting at once");
            });
        }
        Reaction::SkipTeardownStep => {
            tracing::warn!("received {name} again during teardown: stopping the current teardown step and moving on");
            notify(&mut s);
        }
        Reaction::TeardownContinues => match sig {
            SIGINT | SIGQUIT => tracing::warn!(
                "received {name} during teardown: teardown continues (press again to skip the current step)"
            ),
            SIGALRM => {}
            _ => tracing::warn!("received {name} during teardown: ignored, teardown continues"),
        },
    }
}

/// Cancels the run from inside the program, exactly as the first signal would: records
/// `cause` (when none is recorded yet), logs `why`, and wakes every waiter, which stops its
/// child and goes to teardown. During teardown it only logs: teardown steps are guarded on
/// their own (a lost app lease refuses them at its fence).
pub fn cancel(cause: Cause, why: &str) {
    let mut s = lock();
    match s.phase {
        Phase::Running if s.cause.is_none() => {
            s.cause = Some(cause);
            tracing::error!("{why}: stopping and tearing down");
            notify(&mut s);
        }
        Phase::Running => tracing::warn!("{why} (already stopping)"),
        Phase::Teardown => tracing::warn!("{why} (during teardown: its steps are fenced)"),
    }
}

/// The last line of the lifetime chain: however the main thread is stuck (a syscall that never
/// returns, a wedged teardown step), the process ends by `after` from now. Every lock it holds
/// is released by the exit, and the janitor reaps what is left. A thread, not an alarm: the one
/// alarm belongs to the deadline and the teardown budget.
pub fn arm_outer_bound(after: Duration) {
    let spawned = std::thread::Builder::new().name("outer-bound".into()).spawn(move || {
        let end = super::instant_after(after);
        // A plain sleep loop: nothing else to wait for, and a spurious early wake-up re-sleeps.
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left);
        }
        exit_now("the run did not end by its deadline plus its teardown budget: exiting at once; the janitor will reap what remains once this run's locks are released");
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the outer-bound thread: {e}");
    }
}

fn exit_now(why: &str) -> ! {
    tracing::error!("{why}");
    if let Some(hook) = EXIT_NOW_HOOK.get() {
        hook();
    }
    crate::logging::flush(crate::logging::EXIT_FLUSH);
    let code = cause().map_or(crate::exit::INTERRUPTED, Cause::exit_code);
    std::process::exit(i32::from(code));
}

/// Enters teardown: from now on SIGTERM/SIGHUP are ignored and SIGALRM means the budget is spent.
pub fn begin_teardown() {
    let budget = {
        let mut s = lock();
        s.phase = Phase::Teardown;
        s.teardown_started = Some(Instant::now());
        s.budget
    };
    let secs = u32::try_from(budget.as_secs().max(1)).unwrap_or(u32::MAX);
    // SAFETY: alarm(2) only replaces the process's one timer; it has no memory effects.
    unsafe {
        libc::alarm(secs);
    }
}

/// A registration for wake-ups, with the channel every producer of one wait sends to.
pub struct Watch {
    id: u64,
    epoch: u64,
    tx: Sender<Event>,
    rx: Receiver<Event>,
}

/// Registers a new waiter. Register before checking [`Watch::stop`] so no wake-up is missed.
pub fn watch() -> Watch {
    let (tx, rx) = channel();
    let mut s = lock();
    s.next_id += 1;
    let id = s.next_id;
    s.wakers.push((id, tx.clone()));
    Watch { id, epoch: s.epoch, tx, rx }
}

impl Watch {
    /// A sender for other producers (child output readers, the lock thread).
    pub fn sender(&self) -> Sender<Event> {
        self.tx.clone()
    }

    /// Whether the current wait must stop, and why.
    pub fn stop(&self) -> Option<Stop> {
        let s = lock();
        match s.phase {
            Phase::Running => s.cause.map(Stop::Cancelled),
            Phase::Teardown if s.abandoned => Some(Stop::Abandon),
            Phase::Teardown if s.epoch != self.epoch => Some(Stop::SkipStep),
            Phase::Teardown => None,
        }
    }

    /// Whether a stop arrived after this watch began (used to escalate during a grace period).
    pub fn epoch_moved(&self) -> bool {
        lock().epoch != self.epoch
    }

    /// Re-arms the epoch (after handling one stop request, a further one escalates).
    pub fn rearm(&mut self) {
        self.epoch = lock().epoch;
    }

    pub fn recv_timeout(&self, d: Duration) -> Option<Event> {
        self.rx.recv_timeout(d).ok()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        lock().wakers.retain(|(id, _)| *id != self.id);
    }
}

/// Sleeps for `d` unless a stop arrives first; returns the stop.
pub fn sleep(d: Duration) -> Option<Stop> {
    let w = watch();
    let end = crate::lifetime::instant_after(d);
    loop {
        if let Some(stop) = w.stop() {
            return Some(stop);
        }
        let now = Instant::now();
        if now >= end {
            return None;
        }
        let _ = w.recv_timeout(end - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(phase: Phase, cause: Option<Cause>, interrupts: u32) -> Now {
        Now { phase, cause, interrupts, abandoned: false, alarm_is_early: false }
    }

    /// §4.1's table: every signal in every phase, with the interrupts counted so far.
    #[test]
    fn each_signal_in_each_phase_gets_its_reaction() {
        use Phase::{Running, Teardown};
        use Reaction as R;
        let cancelled = Some(Cause::Term);
        let interrupted = Some(Cause::Int);
        let rows: &[(Now, i32, Reaction)] = &[
            // Running: the first signal of any kind cancels with its own cause.
            (now(Running, None, 0), SIGTERM, R::Cancel(Cause::Term)),
            (now(Running, None, 0), SIGHUP, R::Cancel(Cause::Hup)),
            (now(Running, None, 1), SIGINT, R::Cancel(Cause::Int)),
            (now(Running, None, 1), SIGQUIT, R::Cancel(Cause::Quit)),
            (now(Running, None, 0), SIGALRM, R::Cancel(Cause::Deadline)),
            // ... whatever came first decides the cause; later ones only escalate.
            (now(Running, cancelled, 1), SIGINT, R::StopStep),
            (now(Running, interrupted, 2), SIGINT, R::StopStep),
            (now(Running, interrupted, 2), SIGQUIT, R::StopStep),
            (now(Running, interrupted, 3), SIGINT, R::ExitNow),
            (now(Running, interrupted, 1), SIGTERM, R::Noted),
            (now(Running, cancelled, 0), SIGALRM, R::Noted),
            (now(Running, cancelled, 0), SIGHUP, R::Noted),
            // Teardown: a supervisor's SIGTERM must not cut it short; a person may.
            (now(Teardown, cancelled, 0), SIGTERM, R::TeardownContinues),
            (now(Teardown, None, 0), SIGHUP, R::TeardownContinues),
            (now(Teardown, None, 1), SIGINT, R::TeardownContinues),
            (now(Teardown, interrupted, 2), SIGINT, R::SkipTeardownStep),
            (now(Teardown, interrupted, 2), SIGQUIT, R::SkipTeardownStep),
            (now(Teardown, interrupted, 3), SIGQUIT, R::ExitNow),
            (now(Teardown, interrupted, 4), SIGINT, R::ExitNow),
            // The alarm: the budget's, unless teardown has only just begun (the deadline's
            // stale alarm); once abandoned, nothing more.
            (now(Teardown, None, 0), SIGALRM, R::Abandon),
            (Now { alarm_is_early: true, ..now(Teardown, None, 0) }, SIGALRM, R::StaleAlarm),
            (Now { abandoned: true, ..now(Teardown, cancelled, 0) }, SIGALRM, R::TeardownContinues),
            (Now { abandoned: true, ..now(Teardown, interrupted, 3) }, SIGINT, R::ExitNow),
        ];
        for (n, sig, want) in rows {
            assert_eq!(react(*n, *sig), *want, "{} in {n:?}", name_of(*sig));
        }
    }
}
