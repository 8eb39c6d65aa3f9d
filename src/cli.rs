//! The command line. Values stay raw strings here; `config` validates them so every bad input
//! gets the same one-line error and exit 2.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CCCI_GIT_COMMIT"), ")");

const EXAMPLES: &str = "\
Examples:
  ccci run --recipe hello                      # default branch head, all five stages
  ccci run --recipe hello --src owner/hello --ref 1a2b3c4 --pr 7
  ccci run --recipe hello --quick              # upgrade and custom only
  RECIPE=hello STAGES=install,custom ccci run  # Drone passes its params as env vars
  ccci janitor --dry-run                       # show what would be reaped
  ccci locks --json                            # who holds which app lock
  ccci policy ./hello                          # what the policy gate says of a recipe checkout

Settings are read from /etc/ccci/env (or $CCCI_CONFIG), then the environment, then flags.
Logs go to stderr; stdout carries only what --json asks for. See docs/env.md and docs/exit-codes.md.";

#[derive(Debug, Parser)]
#[command(name = "ccci", version = VERSION, about = "Runs the CI pipeline of one Co-op Cloud recipe on a Docker Swarm host, and always tears it down.", after_help = EXAMPLES)]
pub struct Cli {
    /// More log output on stderr (repeat for more); CCCI_LOG wins.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output on stderr (repeat for less); CCCI_LOG wins.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one pipeline: fetch, deploy once, run the stages, tear down, report.
    #[command(
        after_help = "Exit codes: 0 pass, 1 fail, 2 bad input, 3 orphaned, 4 teardown residue, 70 internal error, 75 lock timeout, 130 SIGINT, 142 deadline, 143 SIGTERM."
    )]
    Run(RunArgs),
    /// Reap orphaned run apps, stale lockfiles, old run dirs' bulk and stragglers of dead runs.
    Janitor(JanitorArgs),
    /// List the app-domain lockfiles and their holders (read-only: never takes a lock).
    Locks(LocksArgs),
    /// Check a recipe checkout against the policy gate a run applies before every deploy.
    ///
    /// No swarm, lock, run dir or abra is needed, and nothing is created.
    #[command(after_help = POLICY_HELP)]
    Policy(PolicyArgs),
    /// Run one command through ccci's spawn path and print what happened as JSON (for tests
    /// and benchmarks of process handling).
    #[command(hide = true)]
    ExecStep(ExecStepArgs),
    /// Take an app lock with ccci's own acquire and print the wall-clock time (ns since the
    /// epoch) at which it held it (for ci/bench-locks.sh).
    #[command(hide = true)]
    LockWait(LockWaitArgs),
}

#[derive(Debug, Args, Default)]
pub struct ExecStepArgs {
    /// Stop the command after SECS
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Run the command under a pseudo-terminal
    #[arg(long)]
    pub pty: bool,
    /// The program and its arguments
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Recipe name (required) [env: RECIPE]
    #[arg(long, value_name = "NAME")]
    pub recipe: Option<String>,
    /// Commit, branch or tag under test [env: REF] [default: the default branch head]
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Pull-request number [env: PR] [default: 0]
    #[arg(long, value_name = "N")]
    pub pr: Option<String>,
    /// Where to clone from: owner/repo, an https/ssh/file URL, or an absolute path [env: SRC] [default: abra recipe fetch]
    #[arg(long, value_name = "OWNER/REPO|URL|PATH")]
    pub src: Option<String>,
    /// Comma list of install,upgrade,backup,restore,custom [env: STAGES] [default: all five]
    #[arg(long, value_name = "LIST")]
    pub stages: Option<String>,
    /// Quick lane: exactly upgrade,custom [env: CCCI_QUICK]
    #[arg(long)]
    pub quick: bool,
    /// Give up waiting for the app lock after SECS (exit 75) [env: CCCI_LOCK_TIMEOUT] [default: wait, bounded by the deadline]
    #[arg(long, value_name = "SECS")]
    pub lock_timeout: Option<String>,
    /// Hard deadline for everything before teardown [env: CCCI_DEADLINE] [default: 3600]
    #[arg(long, value_name = "SECS")]
    pub deadline: Option<String>,
    /// Hard bound on teardown [env: CCCI_TEARDOWN_BUDGET] [default: 600]
    #[arg(long, value_name = "SECS")]
    pub teardown_budget: Option<String>,
    /// Run even when started with parent pid 1 outside systemd [env: CCCI_ALLOW_ORPHAN]
    #[arg(long)]
    pub allow_orphan: bool,
    /// Also write a JUnit XML report [env: CCCI_JUNIT]
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Print the final results.json on stdout (logs stay on stderr)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Default)]
pub struct JanitorArgs {
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Prune the bulk of finished run dirs older than DAYS [default: 14]
    #[arg(long, value_name = "DAYS")]
    pub prune_after: Option<String>,
    /// Stop cleanly between candidates after SECS [default: 1800]
    #[arg(long, value_name = "SECS")]
    pub deadline: Option<String>,
}

const POLICY_HELP: &str = "\
Examples:
  ccci policy ~/src/hello                         # its .env.sample, a test domain, the host's allow-list
  ccci policy . --recipe hello --env .env.custom  # another dotenv file; NAME when DIR is not named after it
  ccci policy ./hello --json                      # {checked, violations, ...} on stdout

DIR is rendered with `docker stack config` (the docker CLI of CCCI_DOCKER, 23.0 or newer) the way a
run renders it before every deploy: the dotenv file is read as text, never sourced, with the
overrides a run writes (LETS_ENCRYPT_ENV empty, a test DOMAIN and STACK_NAME from
CCCI_DOMAIN_SUFFIX, the trusted extra_env); abra.sh's exports are merged as abra merges them; the
allow-list is `policy:` in the trusted <CCCI_TESTS_DIR>/<NAME>/ccci.yml. Links in DIR are checked
first. Each violation is printed as SERVICE KEY VALUE RULE.

Exit codes: 0 allowed, 1 refused, 2 cannot render or bad input (the loader's message on stderr).
See docs/security.md.";

#[derive(Debug, Args, Default)]
pub struct PolicyArgs {
    /// The recipe checkout to check
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The dotenv file to render with [default: DIR/.env.sample]
    #[arg(long, value_name = "FILE")]
    pub env: Option<PathBuf>,
    /// Recipe name: picks the trusted ccci.yml and the test domain; when given, the .env's RECIPE/TYPE must name it [default: DIR's basename]
    #[arg(long, value_name = "NAME")]
    pub recipe: Option<String>,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Default)]
pub struct LocksArgs {
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of the hidden `ccci lock-wait PATH` (benchmarks only).
#[derive(Debug, Args, Default)]
pub struct LockWaitArgs {
    /// The lockfile to take (created when absent)
    pub path: PathBuf,
    /// Give up after SECS (exit 75)
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}
