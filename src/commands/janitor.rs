//! `ccci janitor` (§1.2, §6): one sweep, then exit.
//!
//! The janitor has no run dir, so abra runs with the canonical abra home as `ABRA_DIR`: `app
//! ls` lists every server's apps there, and `undeploy`/`remove` find the app's `.env` where runs
//! write it (a run's per-run ABRA_DIR links `servers/` to the same place). It never fetches or
//! checks out recipes, so it leaves the canonical `recipes/` alone.
//!
//! Output: logs on stderr; `--json` prints the report (schema in [`crate::janitor::report::Report`])
//! on stdout; `--dry-run` without `--json` prints the plan on stdout as a table (`ACTION KIND NAME
//! DETAIL`, one row per action, or `nothing to do`), so `-q` and a pipe keep it. A closed stdout
//! does not change the exit code.
//!
//! Exit codes: 0 the sweep completed (whatever it reaped), 1 something failed (a reap, a prune,
//! discovery; every other candidate was still tried), 2 bad usage or settings, 69 dockerd could
//! not be read for discovery (the infra verdict), 142 stopped at `--deadline` (between
//! candidates), 143/130 stopped by SIGTERM/SIGHUP or SIGINT/SIGQUIT.

use crate::adapters::{Abra, Docker};
use crate::cli::{Cli, JanitorArgs};
use crate::commands::output;
use crate::config;
use crate::janitor::report::Report;
use crate::janitor::{self, Settings};
use crate::lock::{self, fs_check};
use crate::mask::{self};
use crate::{exit, logging};

pub fn main(cli: &Cli, args: &JanitorArgs) -> u8 {
    // The signal thread first: SIGTERM stops the sweep between candidates.
    if let Err(c) = super::session::signals() {
        return c;
    }
    let env = config::process_env();
    let cfg = match config::Janitor::resolve(args, env.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ccci: {e}");
            return exit::USAGE;
        }
    };
    for (dir, what) in [
        (&cfg.host.lock_dir, "the app lock dir (CCCI_APP_LOCK_DIR)"),
        (&cfg.host.runs_dir, "the runs dir (CCCI_RUNS_DIR)"),
    ] {
        if let Err(e) = fs_check::check(dir, what) {
            eprintln!("ccci: {e}");
            return exit::USAGE;
        }
    }
    if let Err(e) = lock::dir::check_dir(&cfg.host.lock_dir, "the app lock dir (CCCI_APP_LOCK_DIR)") {
        eprintln!("ccci: {e}");
        return exit::USAGE;
    }
    // Reaping on a swarm other hosts share, without the app lease, could reap their live runs.
    if let Err(e) = crate::host::topology::probe(cfg.host.lease.is_some()) {
        eprintln!("ccci: {e}");
        return exit::USAGE;
    }
    // The janitor's children carry no run token: they belong to no run.
    let how = super::session::Start { mask: true, token: None, run_clock: false };
    super::session::start(cli, &env, &cfg.host, how);
    let abra = Abra::new(&cfg.host.abra, &cfg.host.abra_home, &cfg.host.server);
    let docker = Docker::for_host(&cfg.host);
    if cfg.watch {
        return super::watch::main(&cfg, &abra, &docker);
    }
    let settings = Settings {
        kind: crate::janitor::vocab::Kind::Janitor,
        dry_run: cfg.dry_run,
        prune_after: cfg.prune_after,
        deadline: cfg.deadline,
        kill_grace: cfg.host.kill_grace,
    };
    tracing::info!(
        "ccci janitor: lock dir {}, runs dir {}, suffix {}{}",
        cfg.host.lock_dir.display(),
        cfg.host.runs_dir.display(),
        cfg.host.domain_suffix,
        if cfg.dry_run { " (dry run: nothing is changed)" } else { "" }
    );
    let report = janitor::sweep(&cfg.host, &abra, &docker, &settings);
    for e in &report.errors {
        tracing::error!("janitor: {e}");
    }
    tracing::info!("{}", report.summary());
    if cfg.json {
        output::stdout(&mask::mask(&serde_json::to_string_pretty(&report).unwrap_or_default()));
    } else if cfg.dry_run {
        // The plan is the dry run's primary output: a table on stdout (logs stay on stderr).
        let rows = report.plan_rows();
        let text =
            if rows.is_empty() { "nothing to do\n".to_string() } else { output::table(&Report::PLAN_COLUMNS, &rows) };
        output::stdout(&mask::mask(&text));
    }
    logging::flush(crate::logging::EXIT_FLUSH);
    report.exit_code
}
