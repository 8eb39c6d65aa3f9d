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
  ccci ps                                      # live runs: stage, elapsed, deadline left, lock
  ccci cancel 279 --wait                       # SIGTERM a run, wait for its teardown
  ccci drain --wait --timeout 2h               # maintenance: no new runs, wait for the live ones
  ccci doctor                                  # is this host set up right?

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
    #[command(after_help = JANITOR_HELP)]
    Janitor(JanitorArgs),
    /// List live runs (and with --all the runs finished in the last hour).
    #[command(after_help = PS_HELP)]
    Ps(PsArgs),
    /// Cancel a live run: SIGTERM to its verified ccci process, which tears its app down.
    #[command(after_help = CANCEL_HELP)]
    Cancel(CancelArgs),
    /// Stop new runs from starting (maintenance); with --wait, wait for the live ones to end.
    #[command(after_help = DRAIN_HELP)]
    Drain(DrainArgs),
    /// Let runs start again after `ccci drain`.
    #[command(after_help = UNDRAIN_HELP)]
    Undrain(UndrainArgs),
    /// Check the host: abra, docker and the swarm, the dirs, the host file, disk, the units.
    #[command(after_help = DOCTOR_HELP)]
    Doctor(DoctorArgs),
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
    /// epoch) at which it held it (for ci/bench_locks.py).
    #[command(hide = true)]
    LockWait(LockWaitArgs),
    /// Take a domain's app lease (CCCI_LEASE_ENDPOINTS) with ccci's own acquire, print when
    /// it held it and its token, then obey `fence STEP` / `release` lines on stdin (for the
    /// lease tests and ci/bench_lease.py).
    #[command(hide = true)]
    LeaseWait(LeaseWaitArgs),
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
    /// Keep running: reap an orphan the moment its run dies (event-driven), with a full sweep
    /// every --sweep-every as a backstop; stops on SIGTERM
    #[arg(long, conflicts_with = "dry_run")]
    pub watch: bool,
    /// With --watch: seconds between backstop sweeps [default: 300]
    #[arg(long, value_name = "SECS", requires = "watch")]
    pub sweep_every: Option<String>,
}

const JANITOR_HELP: &str = "\
Examples:
  ccci janitor                      # one sweep (the systemd timer runs this every 15 min)
  ccci janitor --dry-run            # print the plan, change nothing
  ccci janitor --json               # the report as JSON on stdout
  ccci janitor --watch              # long-running: reap an orphan within a second of its run's death

Exit codes: 0 the sweep completed (whatever it reaped), 1 something failed (every other candidate
was still tried), 2 bad usage or settings, 69 dockerd could not be read (unreachable, erroring or
too slow: the sweep went on with abra's view), 142 stopped at --deadline, 130/143 stopped by
SIGINT/SIGTERM. With --watch: 0 stopped by SIGTERM/SIGINT (a sweep in progress finishes its current
candidate first), 2 bad usage or settings, 70 the watch could not start (inotify). See
docs/operations.md.";

const PS_HELP: &str = "\
Examples:
  ccci ps                 # live runs
  ccci ps --all           # and the runs finished in the last hour, with their outcome
  ccci ps --json          # {schema, draining, live: [...], finished: [...]}

Read-only: lock states come from /proc/locks (never a probe), stages from each run's status.json.
A run is `holding` the app lock of its domain, `waiting` for it (with the holder), or neither
(`-`: fetching before the deploy). Exit codes: 0 listed, 2 bad settings.";

const CANCEL_HELP: &str = "\
Examples:
  ccci cancel 279                          # by run id (the latest live attempt)
  ccci cancel hello-1a2b3c.ci.example.org  # by app domain: the run holding (or alone waiting for) its lock
  ccci cancel 279 --wait --timeout 15m     # wait until its teardown is done; print its outcome

The run is found from its run.lock: the holder must be a live ccci process whose start time is
the one in the run's token and that /proc/locks shows holding the lock; a pid that does not
match is refused, never signalled. The SIGTERM goes through a pidfd, so it cannot reach a process
that reused the pid. The run tears its app down and exits 143 (outcome cancelled).

Exit codes: 0 signalled (with --wait: and its lock released; its outcome is printed), 1 no live
run matches or its holder failed a check (nothing signalled), 2 bad usage, 75 --timeout passed
before the run ended, 130/143 interrupted while waiting.";

const DRAIN_HELP: &str = "\
Examples:
  ccci drain --reason 'docker upgrade'     # no new runs from now on (they exit 69, outcome infra)
  ccci drain --wait --timeout 2h           # ... and wait until the last live run has ended
  ccci undrain                             # runs start again

Maintenance: `ccci drain --wait`, then upgrade or reboot, then `ccci undrain` (a reboot keeps the
marker only when the lock dir survives it; /run/lock does not). A run that starts while the host
drains refuses at once with exit 69 and creates nothing. --wait takes the host lock exclusively,
which every run holds shared for its whole life: it returns exactly when the last one ended.

Exit codes: 0 draining (with --wait: and no run is live), 1 the marker could not be created, 2 bad
usage, 75 --timeout passed with runs still live (the host stays draining), 130/143 interrupted
while waiting (the host stays draining).";

const UNDRAIN_HELP: &str = "\
Examples:
  ccci undrain          # remove the drain marker
  ccci undrain --json   # {schema, was_draining, draining}

Exit codes: 0 not draining any more (or was not), 1 the marker could not be removed, 2 bad usage.";

const DOCTOR_HELP: &str = "\
Examples:
  ccci doctor           # each check with pass, warn or fail, and the fix
  ccci doctor --json    # {schema, ok, checks: [{name, status, detail, fix}]}

Checks abra (found, its version), the abra home (servers/<server>, a catalogue clone), docker
(reachable, swarm active, `docker stack config`, the proxy network), the lock dir and runs dir
(owner, mode, local filesystem), the host file (readable only by its owner when it holds a token),
free disk space (CCCI_MIN_FREE_MB), drain state, and the janitor timer and watch units (when
systemctl exists). Exit codes: 0 nothing failed (warnings allowed), 1 something failed, 2 bad
settings.";

#[derive(Debug, Args, Default)]
pub struct PsArgs {
    /// Also list the runs finished in the last hour
    #[arg(long)]
    pub all: bool,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Default)]
pub struct CancelArgs {
    /// A run id, or an app domain
    #[arg(value_name = "RUN_ID|DOMAIN")]
    pub target: String,
    /// Wait until the run has released its lock (teardown done), then print its outcome
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after D (90, 90s, 15m, 1h) with exit 75 [default: wait]
    #[arg(long, value_name = "D", requires = "wait")]
    pub timeout: Option<String>,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Default)]
pub struct DrainArgs {
    /// Wait until no run is live (the host lock taken exclusively)
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after D (90, 90s, 15m, 1h) with exit 75 [default: wait]
    #[arg(long, value_name = "D", requires = "wait")]
    pub timeout: Option<String>,
    /// Why, recorded in the marker and shown to refused runs
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Default)]
pub struct UndrainArgs {
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Default)]
pub struct DoctorArgs {
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
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
pub struct LeaseWaitArgs {
    /// The app domain whose lease to take
    pub domain: String,
    /// Give up after SECS (exit 75, or 69 when etcd could not be asked)
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Args, Default)]
pub struct LockWaitArgs {
    /// The lockfile to take (created when absent)
    pub path: PathBuf,
    /// Give up after SECS (exit 75)
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}
