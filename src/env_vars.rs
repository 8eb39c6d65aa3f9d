//! Every environment variable ccci reads, passes on or sets, declared once.
//!
//! The config resolver decides by each variable's [`Role`] where it may come from (run
//! parameters from anyone who triggers a build, host settings from the host), and
//! `docs/env.md` is generated from this table by a test. (clap's help text names each flag's
//! variable by hand; a test checks those names exist here.)

/// Where a variable matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A run parameter: read by `ccci run` when the matching flag is absent (whoever triggers a
    /// build controls it; also accepted in the host config file as a host-wide default).
    Flag,
    /// A host setting: the host config file wins; in `ccci run` a different value from the
    /// environment is refused unless the host file sets `CCCI_TRUST_ENV=1`.
    Host,
    /// Read from the host config file only, never from the environment.
    HostFile,
    /// Written by ccci into what it creates (a run app's `.env`), never read as a setting.
    Stamp,
    /// Read from the environment only (set by a wrapper, systemd or Drone).
    Runtime,
    /// Set by ccci for the children it starts.
    Child,
    /// Passed through unchanged from ccci's own environment to its children.
    Passthrough,
    /// Read when ccci is built, not when it runs.
    Build,
}

/// One declared variable.
#[derive(Clone, Copy, Debug)]
pub struct EnvVar {
    pub name: &'static str,
    pub role: Role,
    /// The default as shown to people (`None`: unset).
    pub default: Option<&'static str>,
    /// The ceiling of a number, as shown to people (`None`: not a number, or no ceiling).
    pub max: Option<&'static str>,
    pub doc: &'static str,
}

macro_rules! registry {
    ($($ident:ident = $name:literal, $role:ident, $default:expr, $max:expr, $doc:literal;)*) => {
        $(
            #[doc = $doc]
            pub const $ident: &str = $name;
        )*
        /// The whole registry, in documentation order.
        pub const REGISTRY: &[EnvVar] = &[
            $(EnvVar { name: $name, role: Role::$role, default: $default, max: $max, doc: $doc },)*
        ];
    };
}

registry! {
    RECIPE = "RECIPE", Flag, None, None, "recipe name (`--recipe`, required)";
    REF = "REF", Flag, None, None, "commit, branch or tag under test (`--ref`); default: the default branch head";
    PR = "PR", Flag, Some("0"), None, "pull-request number (`--pr`)";
    SRC = "SRC", Flag, None, None, "where to clone from: `owner/repo`, an https/ssh/file URL or an absolute path (`--src`); default: `abra recipe fetch`";
    STAGES = "STAGES", Flag, Some("install,upgrade,backup,restore,custom"), None, "comma list of stages to run (`--stages`)";
    CCCI_QUICK = "CCCI_QUICK", Flag, Some("0"), None, "quick lane: run exactly `upgrade,custom` (`--quick`)";
    CCCI_LOCK_TIMEOUT = "CCCI_LOCK_TIMEOUT", Flag, None, Some("the run's deadline"), "seconds to wait for the app lock before giving up with exit 75 (`--lock-timeout`); default: wait, bounded by the deadline";
    CCCI_DEADLINE = "CCCI_DEADLINE", Flag, Some("3600"), Some("`CCCI_MAX_DEADLINE`"), "hard deadline in seconds for everything before teardown (`--deadline`)";
    CCCI_TEARDOWN_BUDGET = "CCCI_TEARDOWN_BUDGET", Flag, Some("600"), Some("`CCCI_MAX_TEARDOWN_BUDGET`"), "hard bound in seconds on teardown (`--teardown-budget`)";
    CCCI_ALLOW_ORPHAN = "CCCI_ALLOW_ORPHAN", Flag, Some("0"), None, "run even when started with parent pid 1 outside systemd (`--allow-orphan`)";
    CCCI_CONFIG = "CCCI_CONFIG", Runtime, Some("/etc/ccci/env"), None, "host config file of `KEY=value` lines (absolute); a missing default file is fine, a missing `$CCCI_CONFIG` is an error; ignored under Drone (`DRONE=true`)";
    CCCI_TRUST_ENV = "CCCI_TRUST_ENV", HostFile, Some("0"), None, "in the host file only: let the environment override host settings in `ccci run` (otherwise a host setting from the environment that disagrees with the host is refused)";
    CCCI_ABRA = "CCCI_ABRA", Host, Some("abra"), None, "abra program (a name on PATH or an absolute path)";
    CCCI_DOCKER = "CCCI_DOCKER", Host, Some("docker"), None, "docker program (a name on PATH or an absolute path); it must have `docker stack config`";
    CCCI_DOCKER_READS = "CCCI_DOCKER_READS", Host, Some("api"), None, "where ccci reads dockerd's state: `api` (the Engine API over `DOCKER_HOST`, unix socket or plain tcp; event-driven waits, every call bounded) or `cli` (the docker CLI, one process per listing, readiness polled every second: the path before the Engine API, kept for comparison); writes (`stack rm`, `<kind> rm`) always use the CLI";
    CCCI_ABRA_HOME = "CCCI_ABRA_HOME", Host, Some("~/.abra of the passwd home"), None, "canonical abra dir, absolute (not `$HOME`: CI runners point HOME at a throwaway dir)";
    CCCI_SERVER = "CCCI_SERVER", Host, Some("default"), None, "abra server name; `<abra home>/servers/<server>/` must exist";
    CCCI_GIT_BASE = "CCCI_GIT_BASE", Host, Some("https://git.autonomic.zone"), None, "base URL for `owner/repo` sources; the git token goes to its origin (https only)";
    CCCI_GIT_TOKEN = "CCCI_GIT_TOKEN", Host, None, None, "bearer token for private clones; only git's own invocations see it, and only for `CCCI_GIT_BASE`'s origin or `CCCI_GIT_TOKEN_ORIGINS`, over https";
    GITEA_TOKEN = "GITEA_TOKEN", Host, None, None, "fallback for `CCCI_GIT_TOKEN`";
    CCCI_GIT_TOKEN_ORIGINS = "CCCI_GIT_TOKEN_ORIGINS", Host, None, None, "comma list of `https://host[:port]` origins that may receive the git token (default: the origin of `CCCI_GIT_BASE`)";
    CCCI_DOMAIN_SUFFIX = "CCCI_DOMAIN_SUFFIX", Host, Some("ci.commoninternet.net"), None, "suffix of run app domains";
    CCCI_APP_LOCK_DIR = "CCCI_APP_LOCK_DIR", Host, Some("/run/lock"), None, "app-domain lockfile dir (absolute; owned by ccci's user, not writable by others unless sticky)";
    CCCI_RUNS_DIR = "CCCI_RUNS_DIR", Host, Some("/var/lib/cc-ci-runs"), None, "per-run directories (absolute)";
    CCCI_JUNIT = "CCCI_JUNIT", Host, None, None, "also write a JUnit XML report to this absolute path (`--junit` on the command line)";
    CCCI_RUN_ID = "CCCI_RUN_ID", Runtime, None, None, "run id (first set of `CCCI_RUN_ID`, `<DRONE_REPO>-<DRONE_BUILD_NUMBER>`; default `manual-<pid>`); also set for children";
    DRONE = "DRONE", Runtime, None, None, "set by Drone; then `CCCI_CONFIG` is not taken from the environment";
    DRONE_REPO = "DRONE_REPO", Runtime, None, None, "Drone's `owner/name`, part of the run id (build numbers are per repository)";
    DRONE_BUILD_NUMBER = "DRONE_BUILD_NUMBER", Runtime, None, None, "Drone's build number, used in the run id when `CCCI_RUN_ID` is unset";
    DRONE_BUILD_LINK = "DRONE_BUILD_LINK", Runtime, None, None, "Drone's build URL, recorded in the app lock's holder info";
    DRONE_STAGE_MACHINE = "DRONE_STAGE_MACHINE", Runtime, None, None, "Drone's runner name, recorded as the host in the app lease's holder (default: the host name)";
    CCCI_SKIP_FETCH = "CCCI_SKIP_FETCH", Host, Some("0"), None, "copy the staged `<abra home>/recipes/<recipe>` instead of fetching (conflicts with `--src`)";
    CCCI_TESTS_DIR = "CCCI_TESTS_DIR", Host, None, None, "trusted per-recipe customisation `<dir>/<recipe>/` plus `<dir>/repo-local-approved.txt` (absolute)";
    CCCI_HEALTH_URL = "CCCI_HEALTH_URL", Host, Some("https://{domain}/"), None, "default URL of the HTTP readiness floor (http or https, `{domain}` templated); `off` disables it host-wide";
    CCCI_SECRETS_DIR = "CCCI_SECRETS_DIR", Host, Some("/run/secrets"), None, "values of the files here are masked in everything ccci logs or writes (absolute)";
    CCCI_KILL_GRACE = "CCCI_KILL_GRACE", Host, Some("10"), Some("3600"), "seconds between SIGTERM and SIGKILL when stopping a child's process group";
    CCCI_LEAK_TIMEOUT_MS = "CCCI_LEAK_TIMEOUT_MS", Host, Some("200"), Some("60000"), "milliseconds a finished child's process group may take to empty before the step is reported leaky";
    CCCI_MIN_FREE_MB = "CCCI_MIN_FREE_MB", Host, Some("2048"), Some("1048576"), "MiB that must be free in the runs dir and in docker's data root for a run to start (below it: exit 69, nothing created); 0 disables the check";
    CCCI_MAX_DEADLINE = "CCCI_MAX_DEADLINE", Host, Some("86400"), Some("604800"), "the largest `--deadline` a run may ask for, in seconds";
    CCCI_MAX_TEARDOWN_BUDGET = "CCCI_MAX_TEARDOWN_BUDGET", Host, Some("3600"), Some("86400"), "the largest `--teardown-budget` a run may ask for, in seconds";
    CCCI_LEASE_ENDPOINTS = "CCCI_LEASE_ENDPOINTS", Host, None, None, "comma list of etcd client URLs (`http://host:port`, etcd 3.4 or later) holding the cross-host app lease: required when hosts share one multi-node swarm; unset: no lease, one swarm per host (docs/operations.md)";
    CCCI_LEASE_TTL = "CCCI_LEASE_TTL", Host, Some("10"), Some("300"), "seconds an app lease outlives its holder's last keepalive (at least 2): how long a crashed host's run blocks its domain";
    CCCI_LEASE_PREFIX = "CCCI_LEASE_PREFIX", Host, Some("/ccci"), None, "etcd key prefix of the app leases (`<prefix>/apps/<domain>`); hosts that share a swarm must share it";
    CCCI_EXPECT_PPID = "CCCI_EXPECT_PPID", Runtime, None, None, "set by the wrapper to its own pid; ccci refuses to start when its parent differs";
    CCCI_WATCH_PID = "CCCI_WATCH_PID", Runtime, None, None, "a pid whose death ccci treats like its parent's death; already dead: exit 3";
    CCCI_LOG = "CCCI_LOG", Runtime, None, None, "tracing filter for stderr (wins over `-v`/`-q`), e.g. `debug` or `ccci=trace`";
    INVOCATION_ID = "INVOCATION_ID", Runtime, None, None, "set by systemd; a parent pid of 1 is legitimate when it is present";
    CCCI_RECIPE = "CCCI_RECIPE", Child, None, None, "for hooks and tests: the recipe name";
    CCCI_APP_DOMAIN = "CCCI_APP_DOMAIN", Child, None, None, "for hooks and tests: the run app's domain";
    CCCI_STACK = "CCCI_STACK", Child, None, None, "for hooks and tests: the run app's stack name";
    CCCI_RUN_DIR = "CCCI_RUN_DIR", Child, None, None, "for hooks and tests: the run dir";
    CCCI_STAGE = "CCCI_STAGE", Child, None, None, "for hooks, tests and install_steps.sh: the stage (or deploy) being run";
    ABRA_DIR = "ABRA_DIR", Child, None, None, "the per-run abra dir, exported before the first abra call";
    CCCI_APP_ENV = "CCCI_APP_ENV", Child, None, None, "for hooks and tests: the app's `.env` path";
    CCCI_DEPLOY_COUNT_FILE = "CCCI_DEPLOY_COUNT_FILE", Child, None, None, "run-scoped deploy counter file";
    CCCI_OP_STATE_FILE = "CCCI_OP_STATE_FILE", Child, None, None, "run-scoped JSON state file shared by hooks and stages";
    CCCI_DEPS_FILE = "CCCI_DEPS_FILE", Child, None, None, "run-scoped JSON of the run's dependency apps: {<dep>: {domain, …what its provision hook printed}} (mode 0600; `{}` without deps)";
    CCCI_DEP_NAME = "CCCI_DEP_NAME", Child, None, None, "for a dependency's provision hook: the dependency's name (its recipe)";
    CCCI_DEP_DOMAIN = "CCCI_DEP_DOMAIN", Child, None, None, "for a dependency's provision hook: the dependency app's domain";
    CCCI_DEP_STACK = "CCCI_DEP_STACK", Child, None, None, "for a dependency's provision hook: the dependency app's stack name";
    CCCI_DEP_ENV = "CCCI_DEP_ENV", Child, None, None, "for a dependency's provision hook: the dependency app's `.env` path";
    CCCI_RUN_TOKEN = "CCCI_RUN_TOKEN", Child, None, None, "`<run id>:<ccci pid>:<ccci start time>` marking every descendant of a run; minted by ccci, never trusted from outside";
    CCCI_LEASE_TOKEN_STAMP = "CCCI_LEASE_TOKEN", Stamp, None, None, "written into every run app's `.env` (and as the `ccci.lease-token` label) when the app lease is on: the run's fencing token, the `create_revision` of its lease key";
    CCCI_LOCK_DIR_STAMP = "CCCI_LOCK_DIR", Stamp, None, None, "written into every run app's `.env` (and as the `ccci.lock-dir` label): the lock dir the app was locked in; the janitor reaps an app without a lockfile only when this names its own lock dir";
    HOME = "HOME", Child, None, None, "children get the passwd home of the effective user (docker's credentials live there)";
    GIT_TERMINAL_PROMPT = "GIT_TERMINAL_PROMPT", Child, Some("0"), None, "git never prompts";
    GIT_CONFIG_NOSYSTEM = "GIT_CONFIG_NOSYSTEM", Child, Some("1"), None, "git ignores the system config";
    GIT_CONFIG_COUNT = "GIT_CONFIG_COUNT", Child, None, None, "git only, when a token is set: carries the origin-scoped auth header";
    CCCI_GIT_COMMIT = "CCCI_GIT_COMMIT", Build, None, None, "the commit `ccci --version` shows, for builds without a git checkout (the Nix flake sets it)";
    PATH = "PATH", Passthrough, None, None, "passed to children";
    LANG = "LANG", Passthrough, None, None, "passed to children (as is every `LC_*`)";
    TZ = "TZ", Passthrough, None, None, "passed to children";
    DOCKER_HOST = "DOCKER_HOST", Passthrough, None, None, "passed to children";
    DOCKER_CONFIG = "DOCKER_CONFIG", Passthrough, None, None, "passed to children";
    HTTP_PROXY = "HTTP_PROXY", Passthrough, None, None, "passed to children (as are `HTTPS_PROXY`, `NO_PROXY`, `ALL_PROXY` and their lowercase forms)";
}

/// Proxy variables passed through to children, besides `HTTP_PROXY`.
pub const PROXY_VARS: &[&str] =
    &["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy"];

/// Looks a variable up in the registry.
pub fn lookup(name: &str) -> Option<&'static EnvVar> {
    REGISTRY.iter().find(|v| v.name == name)
}

/// Variables accepted in the host config file: run flags and host settings.
pub fn allowed_in_config_file(name: &str) -> bool {
    lookup(name).is_some_and(|v| matches!(v.role, Role::Flag | Role::Host | Role::HostFile))
}

/// Whether a variable is a host setting (whose value must come from the host).
pub fn is_host_setting(name: &str) -> bool {
    lookup(name).is_some_and(|v| v.role == Role::Host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = REGISTRY.iter().map(|v| v.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    /// The registry's strings (shown in `--help`, docs/env.md and the NixOS module) say what
    /// the code does: each is the constant the code uses.
    #[test]
    fn the_registry_defaults_are_the_ones_the_code_uses() {
        use crate::config::limits as l;
        for (var, default, max) in [
            (CCCI_DEADLINE, l::DEFAULT_DEADLINE_SECS, None),
            (CCCI_TEARDOWN_BUDGET, l::DEFAULT_BUDGET_SECS, None),
            (CCCI_KILL_GRACE, l::DEFAULT_KILL_GRACE_SECS, Some(l::MAX_KILL_GRACE_SECS)),
            (CCCI_LEAK_TIMEOUT_MS, l::DEFAULT_LEAK_TIMEOUT_MS, Some(l::MAX_LEAK_TIMEOUT_MS)),
            (CCCI_MIN_FREE_MB, l::DEFAULT_MIN_FREE_MB, Some(l::MAX_MIN_FREE_MB)),
            (CCCI_MAX_DEADLINE, l::DEFAULT_MAX_DEADLINE_SECS, Some(l::MAX_DEADLINE_SECS)),
            (CCCI_MAX_TEARDOWN_BUDGET, l::DEFAULT_MAX_BUDGET_SECS, Some(l::MAX_BUDGET_SECS)),
        ] {
            let v = lookup(var).unwrap();
            assert_eq!(v.default, Some(default.to_string().as_str()), "{var}");
            if let Some(max) = max {
                assert_eq!(v.max, Some(max.to_string().as_str()), "{var}");
            }
        }
    }
}
