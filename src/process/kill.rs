//! The one TERM → grace → KILL escalation, over process groups and single processes.
//!
//! Why one: the rules are subtle and the same everywhere. A group is signalled only while it
//! still has a live member (an empty group's id may already name an unrelated group); a single
//! process only while its pid still has the start time it had when it was chosen (pids are
//! reused). Exited children are reaped while waiting, so a zombie never looks alive. SIGKILL is
//! not instant (a process in the kernel finishes its syscall first), so it is confirmed, for a
//! bounded time, before a target is called failed.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::group;
use super::procfs;

/// Something to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every member of a process group (ccci's steps run as group leaders).
    Group(i32),
    /// One process, as identified when it was chosen.
    Process { pid: i32, start_time: u64 },
}

/// What happened to one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Already gone before anything was sent.
    Gone,
    /// Gone within the grace after SIGTERM.
    Terminated,
    /// Needed SIGKILL.
    Killed,
    /// Still there after SIGKILL's confirmation, or the kernel refused the signal.
    Failed(String),
}

/// How long a SIGKILLed target may take to disappear before it is reported as failed.
pub(crate) const KILL_CONFIRM: Duration = Duration::from_secs(5);
/// Between two looks while waiting: short, because a step's end is on the run's critical path.
pub(crate) const POLL: Duration = Duration::from_millis(5);

impl Target {
    fn alive(&self) -> bool {
        match *self {
            Target::Group(pgid) => !group::live_members(pgid).is_empty(),
            Target::Process { pid, start_time } => procfs::same_process(pid, start_time),
        }
    }

    /// Reaps what of the target already exited and is ccci's child (never `waitpid(-1)`).
    fn reap(&self) {
        match *self {
            Target::Group(pgid) => group::reap_group_zombies(pgid),
            Target::Process { pid, .. } => group::reap_pid(pid),
        }
    }

    fn signal(&self, sig: Signal) -> Result<(), Errno> {
        match *self {
            Target::Group(pgid) => killpg(Pid::from_raw(pgid), sig),
            Target::Process { pid, .. } => kill(Pid::from_raw(pid), sig),
        }
    }

    fn gone(&self) -> bool {
        self.reap();
        !self.alive()
    }
}

/// TERMs every live target, waits up to `grace` for them to go (cut short when `escalate`
/// says so: a second interrupt), KILLs what is left and confirms. A zero grace goes straight
/// to KILL. One fate per target, in order.
pub fn stop(targets: &[Target], grace: Duration, escalate: &dyn Fn() -> bool) -> Vec<Fate> {
    let mut fates: Vec<Option<Fate>> = targets.iter().map(|t| t.gone().then_some(Fate::Gone)).collect();
    if !grace.is_zero() {
        for (t, fate) in targets.iter().zip(fates.iter_mut()) {
            if fate.is_none()
                && let Err(e) = t.signal(Signal::SIGTERM)
            {
                *fate = Some(if e == Errno::ESRCH { Fate::Gone } else { Fate::Failed(format!("SIGTERM: {e}")) });
            }
        }
        let end = crate::lifetime::instant_after(grace);
        loop {
            for (t, fate) in targets.iter().zip(fates.iter_mut()) {
                if fate.is_none() && t.gone() {
                    *fate = Some(Fate::Terminated);
                }
            }
            if fates.iter().all(Option::is_some) || Instant::now() >= end || escalate() {
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    let end = crate::lifetime::instant_after(KILL_CONFIRM);
    let mut killed = vec![false; targets.len()];
    loop {
        let mut pending = false;
        for ((t, fate), killed) in targets.iter().zip(fates.iter_mut()).zip(killed.iter_mut()) {
            if fate.is_some() {
                continue;
            }
            if t.gone() {
                *fate = Some(if *killed { Fate::Killed } else { Fate::Terminated });
                continue;
            }
            // Signalled again on every look: a group may gain members (a fork racing the first
            // KILL), and a KILL to a live target is idempotent.
            match t.signal(Signal::SIGKILL) {
                Ok(()) => *killed = true,
                Err(Errno::ESRCH) => {
                    *fate = Some(if *killed { Fate::Killed } else { Fate::Terminated });
                    continue;
                }
                Err(e) => {
                    *fate = Some(Fate::Failed(format!("SIGKILL: {e}")));
                    continue;
                }
            }
            pending = true;
        }
        if !pending {
            break;
        }
        if Instant::now() >= end {
            for fate in fates.iter_mut().filter(|f| f.is_none()) {
                *fate = Some(Fate::Failed("still running after SIGKILL".into()));
            }
            break;
        }
        std::thread::sleep(POLL);
    }
    fates.into_iter().map(|f| f.unwrap_or(Fate::Gone)).collect()
}

#[cfg(test)]
#[expect(clippy::disallowed_methods, reason = "tests build fixture repositories and victims with plain processes")]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    fn start(script: &str) -> (std::process::Child, Target) {
        // Its own group, so a group target never includes the test runner. Real processes:
        // this is kernel behaviour, not something to mock.
        let child = Command::new("sh").args(["-c", script]).process_group(0).spawn().unwrap();
        let pid = child.id() as i32;
        // Wait for the exec of the script's last command (comm changes), so a TERM cannot
        // land before the script's trap.
        let want = if script.contains("exec sleep") { "sleep" } else { "sh" };
        let end = Instant::now() + Duration::from_secs(10);
        while procfs::comm(pid).as_deref() != Some(want) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let start_time = procfs::read_stat(pid).unwrap().start_time;
        (child, Target::Process { pid, start_time })
    }

    #[test]
    fn term_then_kill_each_by_its_own_fate() {
        let (mut polite, p) = start("exec sleep 300");
        let (mut stubborn, s) = start("trap '' TERM; exec sleep 300");
        let (mut done, d) = start("exit 0");
        let _ = done.wait();
        let fates = stop(&[p, s, d], Duration::from_millis(300), &|| false);
        assert_eq!(fates, vec![Fate::Terminated, Fate::Killed, Fate::Gone]);
        for c in [&mut polite, &mut stubborn] {
            let _ = c.wait();
        }
    }

    #[test]
    fn a_reused_pid_is_not_signalled() {
        let (mut c, t) = start("exec sleep 300");
        let Target::Process { pid, start_time } = t else { unreachable!() };
        let other = Target::Process { pid, start_time: start_time + 1 };
        assert_eq!(stop(&[other], Duration::from_millis(100), &|| false), vec![Fate::Gone]);
        assert!(procfs::same_process(pid, start_time), "the live process with another start time was signalled");
        assert_eq!(stop(&[t], Duration::ZERO, &|| false), vec![Fate::Killed], "zero grace goes straight to KILL");
        let _ = c.wait();
    }

    #[test]
    fn a_group_is_stopped_whole_and_escalation_cuts_the_grace() {
        let (mut c, t) = start("trap '' TERM; sleep 300 & sleep 300 & wait");
        let Target::Process { pid, .. } = t else { unreachable!() };
        let end = Instant::now() + Duration::from_secs(10);
        while group::live_members(pid).len() < 3 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A long grace, escalated at once: KILL follows without waiting it out.
        let asked = std::cell::Cell::new(0);
        let escalate = || {
            asked.set(asked.get() + 1);
            true
        };
        let fates = stop(&[Target::Group(pid)], Duration::from_secs(120), &escalate);
        assert_eq!(fates, vec![Fate::Killed], "the shell and its children ignore TERM");
        assert!(asked.get() > 0, "the escalation was never consulted");
        assert!(group::live_members(pid).is_empty());
        let _ = c.wait();
    }
}
