//! The straggler sweep: TERM, then KILL, processes of dead runs. A pid is signalled only while
//! its start time still matches what the inventory saw (pids are reused).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::vocab::ProcAct;
use crate::process::kill::{self, Fate, Target};
use crate::process::procfs;

/// What happened to one straggler.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StragglerEntry {
    pub pid: i32,
    pub run_id: String,
    /// `terminated` (gone after SIGTERM), `killed` (needed SIGKILL), `gone` (exited before the
    /// janitor got to it), `would-kill` (dry run), or `failed` (still running, or not ours to
    /// signal).
    pub action: ProcAct,
    pub reason: Option<String>,
}

/// TERMs every target, gives them `grace`, KILLs the rest, and reports each. A target is
/// signalled only while its pid still has the start time the inventory saw; a signal to the
/// janitor meanwhile does not cut the grace short, so the KILL that follows is never skipped.
pub fn stop(targets: &[(i32, u64, String)], grace: Duration) -> Vec<StragglerEntry> {
    for (pid, start_time, run_id) in targets {
        if procfs::same_process(*pid, *start_time) {
            tracing::warn!("janitor: stopping pid {pid}, a straggler of dead run {run_id} (SIGTERM)");
        }
    }
    let kill_targets: Vec<Target> =
        targets.iter().map(|(pid, start_time, _)| Target::Process { pid: *pid, start_time: *start_time }).collect();
    let fates = kill::stop(&kill_targets, grace, &|| false);
    targets
        .iter()
        .zip(fates)
        .map(|((pid, _, run_id), fate)| {
            let (action, reason) = match fate {
                Fate::Gone => (ProcAct::Gone, None),
                Fate::Terminated => (ProcAct::Terminated, None),
                Fate::Killed => {
                    tracing::warn!("janitor: pid {pid} of dead run {run_id} ignored SIGTERM; it needed SIGKILL");
                    (ProcAct::Killed, None)
                }
                Fate::Failed(why) => (ProcAct::Failed, Some(why)),
            };
            StragglerEntry { pid: *pid, run_id: run_id.clone(), action, reason }
        })
        .collect()
}
