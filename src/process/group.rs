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
        for pid in token_carriers(&token) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Live processes whose environment carries exactly `CCCI_RUN_TOKEN=<token>`: descendants of
/// this run, wherever they escaped to (another session, a parent that is still alive).
pub fn token_carriers(token: &str) -> Vec<i32> {
    let needle = format!("{}={token}", crate::env_vars::CCCI_RUN_TOKEN);
    let me = std::process::id() as i32;
    all_processes()
        .into_iter()
        .filter(|p| p.pid != me && p.state != 'Z')
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .map(|p| p.pid)
        .collect()
}

/// At the end of a run: TERM, then KILL, every process still carrying the run's token.
pub fn stop_token_carriers(grace: Duration) -> Vec<i32> {
    let Some(token) = super::env::run_token() else { return Vec::new() };
    let found = token_carriers(&token);
    if found.is_empty() {
        return found;
    }
    for pid in &found {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let end = crate::lifetime::instant_after(grace.min(Duration::from_secs(5)));
    while Instant::now() < end && !token_carriers(&token).is_empty() {
        reap_adopted();
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in token_carriers(&token) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    reap_adopted();
    found
}

/// `(pid, ppid, pgrp, state)` of one /proc entry.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub state: char,
    /// Start time in clock ticks since boot (field 22).
    pub start_time: u64,
}

pub fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let pid = text.split(' ').next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// Every process on the host.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).filter_map(read_stat).collect()
}

/// Live (non-zombie) members of a process group.
pub fn live_members(pgid: i32) -> Vec<i32> {
    // Cheap first: signal 0 says whether anything (zombies included) is left in the group.
    if killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH) {
        return Vec::new();
    }
    all_processes().into_iter().filter(|p| p.pgrp == pgid && p.state != 'Z' && p.state != 'X').map(|p| p.pid).collect()
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
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// TERM the group, give it `grace` (ended early by `escalate`), KILL, then sweep until it is gone.
/// Returns false when members still linger after the sweep (e.g. stuck in the kernel).
pub fn terminate_group(pgid: i32, grace: Duration, escalate: &dyn Fn() -> bool) -> bool {
    let pg = Pid::from_raw(pgid);
    if live_members(pgid).is_empty() {
        reap_group_zombies(pgid);
        return true;
    }
    if !grace.is_zero() {
        let _ = killpg(pg, Signal::SIGTERM);
        let end = crate::lifetime::instant_after(grace);
        while Instant::now() < end {
            reap_group_zombies(pgid);
            if live_members(pgid).is_empty() {
                return true;
            }
            if escalate() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let end = crate::lifetime::instant_after(Duration::from_secs(5));
    loop {
        if live_members(pgid).is_empty() {
            reap_group_zombies(pgid);
            return true;
        }
        if let Err(Errno::ESRCH) = killpg(pg, Signal::SIGKILL) {
            return true;
        }
        reap_group_zombies(pgid);
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
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
        Err(_) => all_processes().into_iter().filter(|p| p.ppid == me).map(|p| p.pid).collect(),
    };
    pids.retain(|p| !is_active_leader(*p));
    pids.sort_unstable();
    pids
}

/// Reaps adopted children that already exited, by pid.
pub fn reap_adopted() {
    for pid in adopted_children() {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    }
}

/// At exit: TERM→KILL every adopted descendant and reap them, until two passes find none.
/// Returns the pids that were found alive.
pub fn sweep_adopted(grace: Duration) -> Vec<i32> {
    let mut seen = Vec::new();
    let mut quiet_passes = 0;
    let deadline = crate::lifetime::instant_after(grace.saturating_add(Duration::from_secs(5)));
    while quiet_passes < 2 && Instant::now() < deadline {
        reap_adopted();
        let alive: Vec<i32> =
            adopted_children().into_iter().filter(|p| read_stat(*p).is_some_and(|s| s.state != 'Z')).collect();
        if alive.is_empty() {
            quiet_passes += 1;
            continue;
        }
        quiet_passes = 0;
        for pid in &alive {
            if !seen.contains(pid) {
                seen.push(*pid);
                let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
            }
        }
        let end = crate::lifetime::instant_after(grace.min(Duration::from_secs(2)));
        while Instant::now() < end {
            reap_adopted();
            if alive.iter().all(|p| read_stat(*p).is_none_or(|s| s.state == 'Z')) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for pid in &alive {
            if read_stat(*pid).is_some_and(|s| s.state != 'Z') {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    reap_adopted();
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.pid, s.state, s.ppid, s.pgrp, s.start_time), (4242, 'S', 1, 4242, 98765));
    }

    #[test]
    fn reads_self() {
        let me = read_stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
    }
}
