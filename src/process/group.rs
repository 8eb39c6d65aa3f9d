//! Process groups and adopted descendants, read from /proc.
//!
//! Rules that keep this safe: never `waitpid(-1)` (it would steal exit statuses); reap group
//! members with `waitpid(-pgid)` only after the leader was reaped by its own pid; never signal a
//! group after it was seen empty (its id may be reused by an unrelated group).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::kill::{self, Fate, Target};
use super::procfs::{self, ProcStat};

/// Leaders of the groups currently running (pid == pgid), for an immediate exit to kill.
static ACTIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// Exit statuses of active leaders that a group-wide reap collected before the leader's own wait.
static LEADER_STATUS: Mutex<Vec<(i32, WaitStatus)>> = Mutex::new(Vec::new());

fn note_reaped(status: WaitStatus) {
    if let Some(pid) = status.pid()
        && is_active_leader(pid.as_raw())
    {
        LEADER_STATUS.lock().unwrap_or_else(|e| e.into_inner()).push((pid.as_raw(), status));
    }
}

/// Reaps the leader by pid (or returns the status a group-wide reap already collected).
pub(crate) fn reap_leader(pid: i32, block: bool) -> Option<WaitStatus> {
    {
        let mut st = LEADER_STATUS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = st.iter().position(|(p, _)| *p == pid) {
            return Some(st.remove(i).1);
        }
    }
    let flags = if block { None } else { Some(WaitPidFlag::WNOHANG) };
    loop {
        match waitpid(Pid::from_raw(pid), flags) {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(status) => return Some(status),
            Err(Errno::EINTR) => continue,
            Err(_) => {
                let mut st = LEADER_STATUS.lock().unwrap_or_else(|e| e.into_inner());
                return st.iter().position(|(p, _)| *p == pid).map(|i| st.remove(i).1);
            }
        }
    }
}

pub(crate) fn register(pgid: i32) {
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).push(pgid);
}

pub(crate) fn unregister(pgid: i32) {
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != pgid);
}

pub(crate) fn is_active_leader(pid: i32) -> bool {
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).contains(&pid)
}

/// SIGKILLs every running child group and every process carrying this run's token; for an
/// exit that cannot wait.
pub fn kill_active_groups() {
    let groups = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    for pid in adopted_children() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if let Some(token) = super::env::run_token() {
        for p in token_carriers(&token) {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
    }
}

/// Live processes whose environment carries exactly `CCCI_RUN_TOKEN=<token>`: descendants of
/// this run, wherever they escaped to (another session, a parent that is still alive).
pub fn token_carriers(token: &str) -> Vec<ProcStat> {
    let me = std::process::id() as i32;
    procfs::all_processes()
        .into_iter()
        .filter(|p| p.pid != me && !p.is_dead())
        .filter(|p| {
            procfs::environ(p.pid)
                .is_some_and(|env| procfs::env_value(&env, crate::env_vars::CCCI_RUN_TOKEN) == Some(token))
        })
        .collect()
}

/// At the end of a run: TERM, then KILL, every process still carrying the run's token.
pub fn stop_token_carriers(grace: Duration) -> Vec<i32> {
    let Some(token) = super::env::run_token() else { return Vec::new() };
    let found = token_carriers(&token);
    let targets: Vec<Target> = found.iter().map(|p| Target::Process { pid: p.pid, start_time: p.start_time }).collect();
    kill::stop(&targets, grace.min(CARRIER_GRACE), &|| false);
    found.iter().map(|p| p.pid).collect()
}

/// A run's end waits for its escaped processes at most this long per round: they were
/// already told by their step's end, and the run's own exit should not wait out a long grace.
const CARRIER_GRACE: Duration = Duration::from_secs(5);
/// The same for descendants adopted through the subreaper.
const ADOPTED_GRACE: Duration = Duration::from_secs(2);

/// Live (non-zombie) members of a process group.
pub fn live_members(pgid: i32) -> Vec<i32> {
    // Cheap first: signal 0 says whether anything (zombies included) is left in the group.
    if killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH) {
        return Vec::new();
    }
    procfs::all_processes().into_iter().filter(|p| p.pgrp == pgid && !p.is_dead()).map(|p| p.pid).collect()
}

/// Reaps every exited member of the group that is our child (the leader, or members adopted
/// through the subreaper). A leader's status is kept for [`reap_leader`].
pub fn reap_group_zombies(pgid: i32) {
    loop {
        match waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => note_reaped(status),
        }
    }
}

/// Waits until the group has no live member, reaping as it goes. True when it emptied in time.
pub fn wait_group_empty(pgid: i32, within: Duration) -> bool {
    let end = crate::lifetime::instant_after(within);
    loop {
        reap_group_zombies(pgid);
        if live_members(pgid).is_empty() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(kill::POLL);
    }
}

/// TERM the group, give it `grace` (ended early by `escalate`), KILL, then sweep until it is gone.
/// Returns false when members still linger after the sweep (e.g. stuck in the kernel).
pub fn terminate_group(pgid: i32, grace: Duration, escalate: &dyn Fn() -> bool) -> bool {
    !matches!(kill::stop(&[Target::Group(pgid)], grace, escalate)[..], [Fate::Failed(_)])
}

/// Reaps `pid` if it is an exited child of ccci (`ECHILD` otherwise, which is fine).
pub fn reap_pid(pid: i32) {
    if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))
        && status != WaitStatus::StillAlive
    {
        note_reaped(status);
    }
}

/// Our children that are not leaders of a running step: descendants adopted through the
/// subreaper. Orphans are re-parented to the subreaper's main thread, and ccci spawns only from
/// its main thread, so `/proc/self/task/<pid>/children` lists them all; without
/// CONFIG_PROC_CHILDREN, fall back to a ppid scan.
pub fn adopted_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids: Vec<i32> = match std::fs::read_to_string(format!("/proc/self/task/{me}/children")) {
        Ok(text) => text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()).collect(),
        Err(_) => procfs::all_processes().into_iter().filter(|p| p.ppid == me).map(|p| p.pid).collect(),
    };
    pids.retain(|p| !is_active_leader(*p));
    pids.sort_unstable();
    pids
}

/// Reaps adopted children that already exited, by pid.
pub fn reap_adopted() {
    for pid in adopted_children() {
        reap_pid(pid);
    }
}

/// At exit: TERM→KILL every adopted descendant and reap them, until two passes find none (a
/// dying descendant's own orphans are adopted after it goes). Returns the pids found alive.
pub fn sweep_adopted(grace: Duration) -> Vec<i32> {
    let mut seen = Vec::new();
    let mut quiet_passes = 0;
    let deadline = crate::lifetime::instant_after(grace.saturating_add(kill::KILL_CONFIRM));
    while quiet_passes < 2 && Instant::now() < deadline {
        reap_adopted();
        let alive: Vec<ProcStat> =
            adopted_children().into_iter().filter_map(procfs::read_stat).filter(|s| !s.is_dead()).collect();
        if alive.is_empty() {
            quiet_passes += 1;
            continue;
        }
        quiet_passes = 0;
        seen.extend(alive.iter().map(|s| s.pid).filter(|p| !seen.contains(p)).collect::<Vec<_>>());
        let targets: Vec<Target> =
            alive.iter().map(|s| Target::Process { pid: s.pid, start_time: s.start_time }).collect();
        kill::stop(&targets, grace.min(ADOPTED_GRACE), &|| false);
    }
    reap_adopted();
    seen
}
