//! The straggler sweep: TERM, then KILL, processes of dead runs. A pid is signalled only while
//! its start time still matches what the inventory saw (pids are reused).

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::process::group;

/// What happened to one straggler.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StragglerEntry {
    pub pid: i32,
    pub run_id: String,
    /// `terminated` (gone after SIGTERM), `killed` (needed SIGKILL), `gone` (exited before the
    /// janitor got to it), `would-kill` (dry run), or `failed` (still running, or not ours to
    /// signal).
    pub action: &'static str,
    pub reason: Option<String>,
}

/// The same process as the inventory saw: same pid, same start time, not a zombie.
fn same_process(pid: i32, start_time: u64) -> bool {
    group::read_stat(pid).is_some_and(|st| st.start_time == start_time && !matches!(st.state, 'Z' | 'X'))
}

/// TERMs every target, gives them `grace`, KILLs the rest, and reports each.
pub fn stop(targets: &[(i32, u64, String)], grace: Duration) -> Vec<StragglerEntry> {
    let mut entries: Vec<StragglerEntry> = targets
        .iter()
        .map(|(pid, _, run_id)| StragglerEntry { pid: *pid, run_id: run_id.clone(), action: "gone", reason: None })
        .collect();
    let mut pending = Vec::new();
    for (i, (pid, start, run_id)) in targets.iter().enumerate() {
        if !same_process(*pid, *start) {
            continue;
        }
        tracing::warn!("janitor: stopping pid {pid}, a straggler of dead run {run_id} (SIGTERM)");
        match kill(Pid::from_raw(*pid), Signal::SIGTERM) {
            Ok(()) => pending.push(i),
            Err(e) => {
                entries[i].action = "failed";
                entries[i].reason = Some(format!("SIGTERM: {e}"));
            }
        }
    }
    let end = crate::lifetime::instant_after(grace);
    while !pending.is_empty() {
        pending.retain(|&i| {
            let (pid, start, _) = &targets[i];
            let alive = same_process(*pid, *start);
            if !alive {
                entries[i].action = "terminated";
            }
            alive
        });
        if pending.is_empty() || Instant::now() >= end {
            break;
        }
        // Bounded by the grace; a signal to the janitor meanwhile does not cut it short, so
        // the KILL that follows is never skipped.
        std::thread::sleep(Duration::from_millis(20));
    }
    for &i in &pending {
        let (pid, start, run_id) = &targets[i];
        if !same_process(*pid, *start) {
            entries[i].action = "terminated";
            continue;
        }
        tracing::warn!("janitor: pid {pid} of dead run {run_id} ignored SIGTERM; sending SIGKILL");
        match kill(Pid::from_raw(*pid), Signal::SIGKILL) {
            Ok(()) => entries[i].action = "killed",
            Err(e) => {
                entries[i].action = "failed";
                entries[i].reason = Some(format!("SIGKILL: {e}"));
            }
        }
    }
    // SIGKILL is not instant: confirm, briefly.
    let end = crate::lifetime::instant_after(Duration::from_secs(2));
    for &i in &pending {
        let (pid, start, _) = &targets[i];
        while entries[i].action == "killed" && same_process(*pid, *start) {
            if Instant::now() >= end {
                entries[i].action = "failed";
                entries[i].reason = Some("still running after SIGKILL".into());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    entries
}
