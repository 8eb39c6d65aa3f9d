//! `ccci janitor --watch` (the long-running janitor of `ci/systemd/ccci-janitor-watch.service`):
//! the event-driven reaper of [`crate::janitor::watch`].
//!
//! Output: logs on stderr; with `--json`, one JSON object per line on stdout: `{"event":
//! "started"|"sweep"|"released"|"decided"|"stopped", "at", "domain"?, "holder_pid"?,
//! "run_id"?, "action"? (the sweep's app actions: reaped, already-gone, left, failed, …),
//! "stragglers"?, "summary"?, "ms"?}`.
//!
//! Exit codes: 0 stopped by SIGTERM or SIGINT; 2 bad usage or settings; 70 the watch could not
//! start (the lock dir cannot be created or inotify cannot watch it).

use crate::adapters::{Abra, Docker};
use crate::config;
use crate::janitor::watch::{self, WatchSettings};

pub fn main(cfg: &config::Janitor, abra: &Abra, docker: &Docker) -> u8 {
    let s = WatchSettings {
        sweep_every: cfg.sweep_every,
        deadline: cfg.deadline,
        prune_after: cfg.prune_after,
        kill_grace: cfg.host.kill_grace,
        json: cfg.json,
    };
    watch::run(&cfg.host, abra, docker, &s)
}
