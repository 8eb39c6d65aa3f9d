//! Every environment variable ccci reads, passes on or sets, declared once.
//!
//! clap's help, the config resolver, the child environment of the one spawn path and
//! `docs/env.md` all read this table, so a variable cannot be honoured in one place and
//! forgotten in another.

/// Where a variable matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read by `ccci run` when the matching flag is absent (also accepted in the host config file).
    Flag,
    /// A host setting, read from the host config file or the environment by every command.
    Host,
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
    pub doc: &'static str,
}

macro_rules! registry {
    ($($ident:ident = $name:literal, $role:ident, $default:expr, $doc:literal;)*) => {
        $(
            #[doc = $doc]
            pub const $ident: &str = $name;
        )*
        /// The whole registry, in documentation order.
        pub const REGISTRY: &[EnvVar] = &[
            $(EnvVar { name: $name, role: Role::$role, default: $default, doc: $doc },)*
        ];
    };
}

registry! {
    RECIPE = "RECIPE", Flag, None, "recipe name (`--recipe`, required)";
    REF = "REF", Flag, None, "commit, branch or tag under test (`--ref`); default: the default branch head";
    PR = "PR", Flag, Some("0"), "pull-request number (`--pr`)";
    SRC = "SRC", Flag, None, "where to clone from: `owner/repo`, an https/ssh/file URL or an absolute path (`--src`); default: `abra recipe fetch`";
    STAGES = "STAGES", Flag, Some("install,upgrade,backup,restore,custom"), "comma list of stages to run (`--stages`)";
    CCCI_QUICK = "CCCI_QUICK", Flag, Some("0"), "quick lane: run exactly `upgrade,custom` (`--quick`)";
    CCCI_LOCK_TIMEOUT = "CCCI_LOCK_TIMEOUT", Flag, None, "seconds to wait for the app lock before giving up with exit 75 (`--lock-timeout`); default: wait, bounded by the deadline";
    CCCI_DEADLINE = "CCCI_DEADLINE", Flag, Some("3600"), "hard deadline in seconds for everything before teardown (`--deadline`)";
    CCCI_TEARDOWN_BUDGET = "CCCI_TEARDOWN_BUDGET", Flag, Some("600"), "hard bound in seconds on teardown (`--teardown-budget`)";
    CCCI_ALLOW_ORPHAN = "CCCI_ALLOW_ORPHAN", Flag, Some("0"), "run even when started with parent pid 1 outside systemd (`--allow-orphan`)";
    CCCI_JUNIT = "CCCI_JUNIT", Flag, None, "also write a JUnit XML report to this path (`--junit`)";
    CCCI_CONFIG = "CCCI_CONFIG", Runtime, Some("/etc/ccci/env"), "host config file of `KEY=value` lines; a missing default file is fine, a missing `$CCCI_CONFIG` is an error";
    CCCI_ABRA = "CCCI_ABRA", Host, Some("abra"), "abra program (name on PATH or path)";
    CCCI_DOCKER = "CCCI_DOCKER", Host, Some("docker"), "docker program (name on PATH or path)";
    CCCI_ABRA_HOME = "CCCI_ABRA_HOME", Host, Some("~/.abra of the passwd home"), "canonical abra dir (not `$HOME`: CI runners point HOME at a throwaway dir)";
    CCCI_SERVER = "CCCI_SERVER", Host, Some("default"), "abra server name; `<abra home>/servers/<server>/` must exist";
    CCCI_GIT_BASE = "CCCI_GIT_BASE", Host, Some("https://git.autonomic.zone"), "base URL for `owner/repo` sources";
    CCCI_GIT_TOKEN = "CCCI_GIT_TOKEN", Host, None, "bearer token for private clones; only git's own invocations see it";
    GITEA_TOKEN = "GITEA_TOKEN", Host, None, "fallback for `CCCI_GIT_TOKEN`";
    CCCI_DOMAIN_SUFFIX = "CCCI_DOMAIN_SUFFIX", Host, Some("ci.commoninternet.net"), "suffix of run app domains";
    CCCI_APP_LOCK_DIR = "CCCI_APP_LOCK_DIR", Host, Some("/run/lock"), "app-domain lockfile dir";
    CCCI_RUNS_DIR = "CCCI_RUNS_DIR", Host, Some("/var/lib/cc-ci-runs"), "per-run directories";
    CCCI_RUN_ID = "CCCI_RUN_ID", Runtime, None, "run id (first set of `CCCI_RUN_ID`, `DRONE_BUILD_NUMBER`; default `manual-<pid>`); also set for children";
    DRONE_BUILD_NUMBER = "DRONE_BUILD_NUMBER", Runtime, None, "Drone's build number, used as the run id when `CCCI_RUN_ID` is unset";
    DRONE_BUILD_LINK = "DRONE_BUILD_LINK", Runtime, None, "Drone's build URL, recorded in the app lock's holder info";
    CCCI_SKIP_FETCH = "CCCI_SKIP_FETCH", Host, Some("0"), "copy the staged `<abra home>/recipes/<recipe>` instead of fetching (conflicts with `--src`)";
    CCCI_TESTS_DIR = "CCCI_TESTS_DIR", Host, None, "trusted per-recipe customisation `<dir>/<recipe>/` plus `<dir>/repo-local-approved.txt`";
    CCCI_HEALTH_URL = "CCCI_HEALTH_URL", Host, Some("https://{domain}/"), "default URL of the HTTP readiness floor; `off` disables it host-wide";
    CCCI_SECRETS_DIR = "CCCI_SECRETS_DIR", Host, Some("/run/secrets"), "values of the files here are masked in everything ccci logs or writes";
    CCCI_KILL_GRACE = "CCCI_KILL_GRACE", Host, Some("10"), "seconds between SIGTERM and SIGKILL when stopping a child's process group";
    CCCI_LEAK_TIMEOUT_MS = "CCCI_LEAK_TIMEOUT_MS", Host, Some("200"), "milliseconds a finished child's process group may take to empty before the step is reported leaky";
    CCCI_EXPECT_PPID = "CCCI_EXPECT_PPID", Runtime, None, "set by the wrapper to its own pid; ccci refuses to start when its parent differs";
    CCCI_WATCH_PID = "CCCI_WATCH_PID", Runtime, None, "a pid whose death ccci treats like its parent's death";
    CCCI_LOG = "CCCI_LOG", Runtime, None, "tracing filter for stderr (wins over `-v`/`-q`), e.g. `debug` or `ccci=trace`";
    INVOCATION_ID = "INVOCATION_ID", Runtime, None, "set by systemd; a parent pid of 1 is legitimate when it is present";
    CCCI_RECIPE = "CCCI_RECIPE", Child, None, "for hooks and tests: the recipe name";
    CCCI_APP_DOMAIN = "CCCI_APP_DOMAIN", Child, None, "for hooks and tests: the run app's domain";
    CCCI_STACK = "CCCI_STACK", Child, None, "for hooks and tests: the run app's stack name";
    CCCI_RUN_DIR = "CCCI_RUN_DIR", Child, None, "for hooks and tests: the run dir";
    CCCI_STAGE = "CCCI_STAGE", Child, None, "for hooks, tests and install_steps.sh: the stage (or deploy) being run";
    ABRA_DIR = "ABRA_DIR", Child, None, "the per-run abra dir, exported before the first abra call";
    CCCI_APP_ENV = "CCCI_APP_ENV", Child, None, "for hooks and tests: the app's `.env` path";
    CCCI_DEPLOY_COUNT_FILE = "CCCI_DEPLOY_COUNT_FILE", Child, None, "run-scoped deploy counter file";
    CCCI_OP_STATE_FILE = "CCCI_OP_STATE_FILE", Child, None, "run-scoped JSON state file shared by hooks and stages";
    CCCI_RUN_TOKEN = "CCCI_RUN_TOKEN", Child, None, "`<run id>:<ccci pid>:<ccci start time>` marking every descendant of a run; minted by ccci, never trusted from outside";
    HOME = "HOME", Child, None, "children get the passwd home of the effective user (docker's credentials live there)";
    GIT_TERMINAL_PROMPT = "GIT_TERMINAL_PROMPT", Child, Some("0"), "git never prompts";
    GIT_CONFIG_NOSYSTEM = "GIT_CONFIG_NOSYSTEM", Child, Some("1"), "git ignores the system config";
    GIT_CONFIG_COUNT = "GIT_CONFIG_COUNT", Child, None, "git only, when a token is set: carries the origin-scoped auth header";
    CCCI_GIT_COMMIT = "CCCI_GIT_COMMIT", Build, None, "the commit `ccci --version` shows, for builds without a git checkout (the Nix flake sets it)";
    PATH = "PATH", Passthrough, None, "passed to children";
    LANG = "LANG", Passthrough, None, "passed to children (as is every `LC_*`)";
    TZ = "TZ", Passthrough, None, "passed to children";
    DOCKER_HOST = "DOCKER_HOST", Passthrough, None, "passed to children";
    DOCKER_CONFIG = "DOCKER_CONFIG", Passthrough, None, "passed to children";
    HTTP_PROXY = "HTTP_PROXY", Passthrough, None, "passed to children (as are `HTTPS_PROXY`, `NO_PROXY`, `ALL_PROXY` and their lowercase forms)";
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
    lookup(name).is_some_and(|v| matches!(v.role, Role::Flag | Role::Host))
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
}
