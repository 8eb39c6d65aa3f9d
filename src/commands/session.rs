//! What every subcommand does before its own work, written once: the signal thread (so a
//! SIGTERM during start-up is a cancellation, not a default death), the host settings (bad ones
//! are exit 2 with one line), then masking, logging and the child environment — in that order,
//! because a log line before the masker is installed could carry a secret, and a child spawned
//! before the timing is configured would stop with the default grace.

use std::time::Duration;

use crate::cli::Cli;
use crate::config::{self, Host};
use crate::mask::{self, Masker};
use crate::process::{self, env as child_env};
use crate::{env_vars as ev, exit, lifetime, logging};

use config::Env;

/// Starts the signal thread; `Err(exit code)` when it cannot.
pub(crate) fn signals() -> Result<(), u8> {
    lifetime::start_signal_thread().map_err(|e| {
        eprintln!("ccci: cannot start the signal thread: {e}");
        exit::INTERNAL
    })
}

/// The process environment and the host settings alone (the operator commands).
pub(crate) fn host() -> Result<(Env, Host), u8> {
    let env = config::process_env();
    let host = config::host_only(env.clone()).map_err(|e| {
        eprintln!("ccci: {e}");
        exit::USAGE
    })?;
    Ok((env, host))
}

/// How a command's children and logs are set up.
pub(crate) struct Start {
    /// Mask the host's secrets in every line (commands that print children's output).
    pub mask: bool,
    /// The run token the children carry (`None`: they belong to no run).
    pub token: Option<String>,
    /// The log lines carry the elapsed time of a run.
    pub run_clock: bool,
}

/// Masking, logging, the host's warnings, child timing and the child environment.
pub(crate) fn start(cli: &Cli, env: &Env, host: &Host, how: Start) {
    if how.mask {
        mask::install(Masker::from_dir_and_token(&host.secrets_dir, host.git_token.as_deref()));
    }
    logging::init(
        logging::stderr_filter(env.get(ev::CCCI_LOG).map(String::as_str), cli.verbose, cli.quiet),
        how.run_clock,
    );
    for w in &host.warnings {
        tracing::warn!("{w}");
    }
    process::configure_timing(process::Timing { kill_grace: host.kill_grace, leak_timeout: host.leak_timeout });
    child_env::configure(&host.passwd_home, how.token);
}

/// The operator commands' prologue: host settings, then [`start`] without a run token.
pub(crate) fn operator(cli: &Cli, mask: bool) -> Result<Host, u8> {
    let (env, host) = host()?;
    start(cli, &env, &host, Start { mask, token: None, run_clock: false });
    Ok(host)
}

/// The prologue of an operator command that may wait (`cancel --wait`, `drain --wait`): the
/// signal thread only when it waits (a signal must end the wait, not ccci mid-write), then
/// [`operator`], then its `--timeout`.
pub(crate) fn waiting_operator(cli: &Cli, wait: bool, timeout: Option<&str>) -> Result<(Host, Option<Duration>), u8> {
    if wait {
        signals()?;
    }
    let host = operator(cli, false)?;
    Ok((host, timeout_arg(timeout)?))
}

/// A `--timeout` value.
fn timeout_arg(v: Option<&str>) -> Result<Option<Duration>, u8> {
    match v {
        None => Ok(None),
        Some(t) => {
            match crate::clock::parse_span(t).filter(|d| d.as_secs() <= crate::config::limits::MAX_DEADLINE_SECS) {
                Some(d) => Ok(Some(d)),
                None => {
                    eprintln!(
                        "ccci: invalid timeout (from --timeout) {t:?}: a span such as 90, 90s, 15m or 2h, at most 7 days"
                    );
                    Err(crate::exit::USAGE)
                }
            }
        }
    }
}
