//! ccci runs the CI pipeline of one Co-op Cloud recipe on a single-node Docker Swarm host:
//! fetch the recipe at the code under test, deploy it once with abra, run the requested stages
//! against that deployment, and always tear it down — without ever leaking an app stack or a
//! process, and without ever disturbing a concurrent live run.
//!
//! The folder tree follows the program. Low layers know nothing of the pipeline, the janitor or
//! the command line: `lifetime` owns signals, the deadline and the teardown budget; `process` is
//! the one spawn path; `lock` the app lock; `adapters` wrap abra, docker and git. Above them,
//! `cli` and `config` turn flags, environment and the host config file into settings; `stage`
//! names the stages and rungs; `app` is a run app and how to take one apart; `workspace` is the
//! run dir; `pipeline` fetches, deploys, checks readiness, runs stages and tears down;
//! `deps` are the apps a recipe needs next to it;
//! `janitor` reaps what dead runs left; `report` writes results; `commands` holds one entry
//! point per subcommand. `policy` decides what a PR's recipe may deploy, reading its tree only
//! through `untrusted` and its `.env` through `dotenv`.

pub mod adapters;
pub mod app;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod deps;
pub mod dotenv;
pub mod env_vars;
pub mod exit;
pub mod host;
pub mod janitor;
pub mod lease;
pub mod lifetime;
pub mod lock;
pub mod logging;
pub mod mask;
pub mod names;
pub mod pipeline;
pub mod policy;
pub mod process;
pub mod progress;
pub mod report;
pub mod runs;
pub mod stage;
pub mod untrusted;
pub mod workspace;

use std::process::ExitCode;

use clap::Parser;

/// The binary's entry point.
pub fn main() -> ExitCode {
    if let Some(code) = process::shim::run_if_shim() {
        return ExitCode::from(code);
    }
    process::shim::enable();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    let code = match &cli.command {
        cli::Command::Run(args) => commands::run::main(&cli, args),
        cli::Command::Janitor(args) => commands::janitor::main(&cli, args),
        cli::Command::Locks(args) => commands::locks::main(&cli, args),
        cli::Command::Ps(args) => commands::ps::main(&cli, args),
        cli::Command::Cancel(args) => commands::cancel::main(&cli, args),
        cli::Command::Drain(args) => commands::drain::drain(&cli, args),
        cli::Command::Undrain(args) => commands::drain::undrain(&cli, args),
        cli::Command::Doctor(args) => commands::doctor::main(&cli, args),
        cli::Command::Policy(args) => commands::policy::main(&cli, args),
        cli::Command::ExecStep(args) => commands::exec_step::main(&cli, args),
        cli::Command::LockWait(args) => commands::locks::lock_wait(&cli, args),
        cli::Command::LeaseWait(args) => commands::lease_wait::main(&cli, args),
    };
    logging::flush(crate::logging::EXIT_FLUSH);
    ExitCode::from(code)
}
