//! `ccci exec-step -- PROGRAM ARGS…` (hidden): one command through the spawn path, with the
//! lifetime of a run (signal funnel, subreaper, adopted-descendant sweep), reported as JSON.
//! The process tests and the cancel bench drive the real spawn path through it.

use std::time::Duration;

use serde_json::json;

use crate::cli::{Cli, ExecStepArgs};
use crate::process::{Cmd, env as child_env, group};
use crate::{exit, lifetime, logging};

pub fn main(cli: &Cli, args: &ExecStepArgs) -> u8 {
    use super::session;
    if let Err(c) = session::signals() {
        return c;
    }
    let (env, host) = match session::host() {
        Ok(h) => h,
        Err(c) => return c,
    };
    let token = Some(child_env::mint_run_token("exec-step"));
    session::start(cli, &env, &host, session::Start { mask: true, token, run_clock: false });
    if let Err(e) = lifetime::become_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    lifetime::exit_now_hook(group::kill_active_groups);
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let mut cmd = Cmd::new(program.clone()).args(rest.iter().cloned());
    if let Some(t) = args.timeout {
        cmd = cmd.timeout(Duration::from_secs(t));
    }
    if args.pty {
        cmd = cmd.pty();
    }
    tracing::info!("exec-step: starting {}", cmd.cmdline());
    let result = cmd.run();
    let adopted = group::sweep_adopted(host.kill_grace);
    let code = match &result {
        Ok(out) => {
            let report = json!({
                "code": out.code(),
                "signal": out.signal(),
                "stopped": out.stopped().map(|s| s.to_string()),
                "leaky": out.leaky,
                "tail": out.tail,
                "duration_ms": out.duration.as_millis() as u64,
                "adopted_killed": adopted,
            });
            println!("{report}");
            match (lifetime::cause(), out.code()) {
                (Some(c), _) => c.exit_code(),
                (None, Some(c)) => u8::try_from(c).unwrap_or(exit::FAILED),
                (None, None) => exit::FAILED,
            }
        }
        Err(e) => {
            tracing::error!("{e}");
            exit::INTERNAL
        }
    };
    logging::flush(crate::logging::EXIT_FLUSH);
    code
}
