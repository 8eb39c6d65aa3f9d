//! Settings come from three places, and who controls each decides what it may set:
//! - *host settings* (lock dir, runs dir, abra home, programs, the token, the suffix, ceilings…)
//!   belong to the operator: the host config file (`/etc/ccci/env`, or `$CCCI_CONFIG` outside
//!   Drone) wins, and in `ccci run` a host setting from the environment that disagrees with the
//!   host is refused — Drone hands every build parameter to the step as an environment
//!   variable, so whoever can trigger a build would otherwise steer where runs lock, what they
//!   run as root and where the janitor looks — unless the host file sets `CCCI_TRUST_ENV=1`;
//! - *run parameters* (recipe, ref, pr, src, stages, quick lane, deadline…) come from flags,
//!   then the environment, then the host file as a host-wide default;
//! - runtime variables (`CCCI_EXPECT_PPID`, `INVOCATION_ID`, Drone's build variables) from the
//!   environment only.
//!
//! An empty value counts as unset at every layer (Drone passes empty params). Every path is
//! absolute and used canonicalised; every number has a documented ceiling (`limits`).

pub mod ccci_yml;
pub mod host_file;
pub mod input;
pub mod limits;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::cli::{JanitorArgs, RunArgs};
use crate::env_vars as ev;
use crate::stage::Stage;
pub use ccci_yml::CcciYml;
use host_file::HostFile;
pub use input::{InputError, Source};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{0}")]
    Input(#[from] InputError),
    #[error("cannot read the host config file {path}: {source} (set CCCI_CONFIG to an existing file or unset it)")]
    HostFileRead { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {reason}")]
    HostFileLine { path: PathBuf, line: usize, reason: String },
    #[error("missing recipe: pass --recipe NAME or set RECIPE")]
    MissingRecipe,
    #[error("{0}")]
    Conflict(String),
    #[error("invalid trusted ccci.yml: {0}")]
    TrustedYml(String),
    #[error("cannot find the passwd home of uid {0}; set CCCI_ABRA_HOME")]
    NoPasswdHome(u32),
    #[error(
        "{var}={value:?} from the environment disagrees with the host setting {host}: host settings come from the host config file {file} (put it there, or set CCCI_TRUST_ENV=1 in that file to let the environment override)"
    )]
    HostSettingFromEnv { var: String, value: String, host: String, file: String },
}

/// The process environment as seen by the resolver (a map, so tests can supply their own).
pub type Env = BTreeMap<String, String>;

pub fn process_env() -> Env {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// How strictly host settings are guarded against the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// `ccci run`: the host file wins; a disagreeing value from the environment is refused.
    HostWins,
    /// `ccci janitor`, `ccci locks` (run by the operator, or by systemd with the host file):
    /// the environment overrides the file, as an operator at a shell expects.
    EnvWins,
}

/// The layers below the flags.
pub struct Layers {
    env: Env,
    file: HostFile,
    guard: Guard,
}

impl Layers {
    pub fn load(env: Env, guard: Guard) -> Result<Layers, ConfigError> {
        // Under Drone every build parameter is an environment variable: the host file cannot be
        // chosen from there.
        let drone = env.get(ev::DRONE).is_some_and(|v| v == "true");
        let explicit = env.get(ev::CCCI_CONFIG).filter(|v| !v.is_empty() && !drone).cloned();
        if let Some(p) = &explicit
            && !p.starts_with('/')
        {
            return Err(InputError {
                what: "host config file (CCCI_CONFIG)".into(),
                value: p.clone(),
                rule: "must be an absolute path".into(),
            }
            .into());
        }
        let file = HostFile::load(explicit.as_deref())?;
        let trusted = file.values.get(ev::CCCI_TRUST_ENV).is_some_and(|v| input::boolean("", v).unwrap_or(false));
        let guard = if trusted { Guard::EnvWins } else { guard };
        Ok(Layers { env, file, guard })
    }

    fn file_label(&self) -> String {
        self.file.path.as_ref().map_or_else(|| host_file::DEFAULT_PATH.to_string(), |p| p.display().to_string())
    }

    fn env_value(&self, var: &str) -> Option<String> {
        self.env.get(var).filter(|v| !v.is_empty()).cloned()
    }

    fn file_value(&self, var: &str) -> Option<String> {
        if !ev::allowed_in_config_file(var) {
            return None;
        }
        self.file.values.get(var).filter(|v| !v.is_empty()).cloned()
    }

    /// A value and where it came from, or `None` when unset (empty counts as unset).
    fn get(&self, var: &str) -> Result<Option<(String, String)>, ConfigError> {
        let in_file = || self.file_value(var).map(|v| (v, format!("{var} in {}", self.file_label())));
        if ev::lookup(var).is_some_and(|v| v.role == ev::Role::HostFile) {
            return Ok(in_file());
        }
        let Some(env_value) = self.env_value(var) else { return Ok(in_file()) };
        if !ev::is_host_setting(var) || self.guard == Guard::EnvWins {
            return Ok(Some((env_value, var.to_string())));
        }
        // A host setting from the environment: accepted only when it agrees with the host.
        let host = self
            .file_value(var)
            .or_else(|| ev::lookup(var).and_then(|v| v.default).filter(|d| !d.contains(' ')).map(str::to_string));
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        match host {
            Some(h) if same(&h, &env_value) => Ok(in_file().or(Some((env_value, var.to_string())))),
            host => Err(ConfigError::HostSettingFromEnv {
                var: var.to_string(),
                value: env_value,
                host: host.map_or_else(|| "(unset)".to_string(), |h| format!("{h:?}")),
                file: self.file_label(),
            }),
        }
    }

    /// Only the environment (for variables set by wrappers and systemd).
    fn env_only(&self, var: &str) -> Option<(String, String)> {
        self.env_value(var).map(|v| (v, var.to_string()))
    }

    /// Flag, else env, else file.
    fn pick(&self, flag: Option<&str>, flag_name: &str, var: &str) -> Result<Option<(String, String)>, ConfigError> {
        match flag.filter(|v| !v.is_empty()) {
            Some(v) => Ok(Some((v.to_string(), flag_name.to_string()))),
            None => self.get(var),
        }
    }

    fn warnings(&self) -> Vec<String> {
        let path = self.file_label();
        self.file.unknown_keys.iter().map(|k| format!("{path}: ignoring unknown setting {k}")).collect()
    }
}

fn labelled(name: &str, origin: &str) -> String {
    format!("{name} (from {origin})")
}

/// Settings every command shares (the host's).
#[derive(Debug, Clone)]
pub struct Host {
    pub abra: String,
    pub docker: String,
    /// Where reads of dockerd go (`CCCI_DOCKER_READS`); writes always use `docker`.
    pub docker_reads: crate::adapters::docker::ReadPath,
    pub passwd_home: PathBuf,
    pub abra_home: PathBuf,
    pub server: String,
    pub git_base: String,
    pub git_token: Option<String>,
    /// Origins (`https://host[:port]`) that may receive the git token.
    pub token_origins: Vec<String>,
    pub domain_suffix: String,
    pub lock_dir: PathBuf,
    pub runs_dir: PathBuf,
    pub tests_dir: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub health_url: String,
    pub secrets_dir: PathBuf,
    pub skip_fetch: bool,
    pub kill_grace: Duration,
    pub leak_timeout: Duration,
    pub max_deadline: Duration,
    pub max_teardown_budget: Duration,
    /// MiB a run needs free in the runs dir and docker's data root (0: not checked).
    pub min_free_mb: u64,
    /// The cross-host app lease (`CCCI_LEASE_ENDPOINTS`); `None`: one swarm per host.
    pub lease: Option<crate::lease::Settings>,
    /// This host in a lease holder's words: `DRONE_STAGE_MACHINE`, else the host name.
    pub machine: String,
    pub config_file: Option<PathBuf>,
    pub warnings: Vec<String>,
}

impl Host {
    pub fn resolve(layers: &Layers) -> Result<Host, ConfigError> {
        let s = |var: &str, default: &str| -> Result<(String, String), ConfigError> {
            Ok(layers.get(var)?.unwrap_or_else(|| (default.to_string(), format!("the default of {var}"))))
        };
        let dir = |var: &str, what: &str, default: Option<&str>| -> Result<Option<PathBuf>, ConfigError> {
            match layers.get(var)?.or_else(|| default.map(|d| (d.to_string(), format!("the default of {var}")))) {
                Some((v, o)) => Ok(Some(input::abs_path(&labelled(what, &o), &v)?)),
                None => Ok(None),
            }
        };
        let number = |var: &str, what: &str, default: u64, max: u64, zero_ok: bool| -> Result<u64, ConfigError> {
            match layers.get(var)? {
                Some((v, o)) => Ok(input::bounded(&labelled(what, &o), &v, max, zero_ok)?),
                None => Ok(default),
            }
        };
        let passwd_home = passwd_home()?;
        let abra_home = match layers.get(ev::CCCI_ABRA_HOME)? {
            Some((v, o)) => input::abs_path(&labelled("abra home", &o), &v)?,
            None => passwd_home.join(".abra"),
        };
        let kill_grace = number(
            ev::CCCI_KILL_GRACE,
            "kill grace",
            limits::DEFAULT_KILL_GRACE_SECS,
            limits::MAX_KILL_GRACE_SECS,
            true,
        )?;
        let leak_ms = number(
            ev::CCCI_LEAK_TIMEOUT_MS,
            "leak timeout",
            limits::DEFAULT_LEAK_TIMEOUT_MS,
            limits::MAX_LEAK_TIMEOUT_MS,
            false,
        )?;
        let max_deadline = number(
            ev::CCCI_MAX_DEADLINE,
            "max deadline",
            limits::DEFAULT_MAX_DEADLINE_SECS,
            limits::MAX_DEADLINE_SECS,
            false,
        )?;
        let max_budget = number(
            ev::CCCI_MAX_TEARDOWN_BUDGET,
            "max teardown budget",
            limits::DEFAULT_MAX_BUDGET_SECS,
            limits::MAX_BUDGET_SECS,
            false,
        )?;
        let min_free_mb = number(
            ev::CCCI_MIN_FREE_MB,
            "minimum free disk space",
            limits::DEFAULT_MIN_FREE_MB,
            limits::MAX_MIN_FREE_MB,
            true,
        )?;
        let git_token = match layers.get(ev::CCCI_GIT_TOKEN)? {
            Some(t) => Some(t.0),
            None => layers.get(ev::GITEA_TOKEN)?.map(|(v, _)| v),
        };
        let (server, server_origin) = s(ev::CCCI_SERVER, "default")?;
        if server.contains('/') || server == "." || server == ".." || server.contains('\0') {
            return Err(InputError {
                what: labelled("server", &server_origin),
                value: server,
                rule: "must be a plain directory name".into(),
            }
            .into());
        }
        let (suffix, suffix_origin) = s(ev::CCCI_DOMAIN_SUFFIX, "ci.commoninternet.net")?;
        let suffix = input::domain_suffix(&labelled("domain suffix", &suffix_origin), &suffix)?;
        let (git_base, base_origin) = s(ev::CCCI_GIT_BASE, "https://git.autonomic.zone")?;
        let git_base = input::http_url(&labelled("git base", &base_origin), &git_base)?;
        let token_origins = match layers.get(ev::CCCI_GIT_TOKEN_ORIGINS)? {
            Some((v, o)) => input::token_origins(&labelled("token origins", &o), &v)?,
            None => {
                crate::adapters::git::origin_of(&git_base).into_iter().filter(|o| o.starts_with("https://")).collect()
            }
        };
        let (health_url, health_origin) = s(ev::CCCI_HEALTH_URL, "https://{domain}/")?;
        let health_url = if health_url == "off" {
            health_url
        } else {
            input::http_url(&labelled("health URL", &health_origin), &health_url)?
        };
        let program = |var: &str, default: &str, what: &str| -> Result<String, ConfigError> {
            let (v, o) = s(var, default)?;
            Ok(input::program(&labelled(what, &o), &v)?)
        };
        let docker_reads = match layers.get(ev::CCCI_DOCKER_READS)? {
            Some((v, o)) => crate::adapters::docker::ReadPath::parse(&v).ok_or_else(|| InputError {
                what: labelled("docker reads", &o),
                value: v.clone(),
                rule: "must be `api` (the Engine API) or `cli` (the docker CLI)".into(),
            })?,
            None => crate::adapters::docker::ReadPath::Api,
        };
        if docker_reads == crate::adapters::docker::ReadPath::Api {
            // The API path reads `DOCKER_HOST` itself: refuse at start what it cannot use
            // (ssh, TLS) rather than fail every read of the run.
            let host = layers.env.get(ev::DOCKER_HOST).map(String::as_str);
            let tls = layers.env.get("DOCKER_TLS_VERIFY").map(String::as_str);
            if let Err(e) = crate::adapters::engine::Host::from_vars(host, tls) {
                return Err(InputError {
                    what: "DOCKER_HOST (read by the Engine API: CCCI_DOCKER_READS=api)".into(),
                    value: host.unwrap_or("").to_string(),
                    rule: format!("{e}; set CCCI_DOCKER_READS=cli to read through the docker CLI instead"),
                }
                .into());
            }
        }
        let lease = match layers.get(ev::CCCI_LEASE_ENDPOINTS)? {
            Some((v, o)) => {
                let endpoints = input::lease_endpoints(&labelled("lease endpoints", &o), &v)?;
                let ttl = number(
                    ev::CCCI_LEASE_TTL,
                    "lease TTL",
                    crate::lease::DEFAULT_TTL_SECS,
                    crate::lease::MAX_TTL_SECS,
                    false,
                )?;
                if ttl < crate::lease::MIN_TTL_SECS {
                    return Err(InputError {
                        what: "lease TTL (CCCI_LEASE_TTL)".into(),
                        value: ttl.to_string(),
                        rule: format!(
                            "must be at least {} (etcd's smallest TTL with its default election timeout)",
                            crate::lease::MIN_TTL_SECS
                        ),
                    }
                    .into());
                }
                let (prefix, po) = s(ev::CCCI_LEASE_PREFIX, crate::lease::DEFAULT_PREFIX)?;
                let prefix = input::lease_prefix(&labelled("lease prefix", &po), &prefix)?;
                Some(crate::lease::Settings { endpoints, ttl: Duration::from_secs(ttl), prefix })
            }
            None => None,
        };
        let skip_fetch = match layers.get(ev::CCCI_SKIP_FETCH)? {
            Some((v, o)) => input::boolean(&labelled("skip fetch", &o), &v)?,
            None => false,
        };
        Ok(Host {
            abra: program(ev::CCCI_ABRA, "abra", "abra program")?,
            docker: program(ev::CCCI_DOCKER, "docker", "docker program")?,
            docker_reads,
            passwd_home,
            abra_home,
            server,
            git_base,
            git_token,
            token_origins,
            domain_suffix: suffix,
            lock_dir: dir(ev::CCCI_APP_LOCK_DIR, "app lock dir", Some("/run/lock"))?.unwrap_or_default(),
            runs_dir: dir(ev::CCCI_RUNS_DIR, "runs dir", Some("/var/lib/cc-ci-runs"))?.unwrap_or_default(),
            tests_dir: dir(ev::CCCI_TESTS_DIR, "tests dir", None)?,
            junit: match layers.get(ev::CCCI_JUNIT)? {
                Some((v, o)) => Some(input::abs_output_path(&labelled("JUnit report path", &o), &v)?),
                None => None,
            },
            health_url,
            secrets_dir: dir(ev::CCCI_SECRETS_DIR, "secrets dir", Some("/run/secrets"))?.unwrap_or_default(),
            skip_fetch,
            kill_grace: Duration::from_secs(kill_grace),
            leak_timeout: Duration::from_millis(leak_ms),
            max_deadline: Duration::from_secs(max_deadline),
            max_teardown_budget: Duration::from_secs(max_budget),
            min_free_mb,
            lease,
            machine: layers.env_only(ev::DRONE_STAGE_MACHINE).map(|(m, _)| m).unwrap_or_else(|| {
                nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
            }),
            config_file: layers.file.path.clone(),
            warnings: layers.warnings(),
        })
    }

    pub fn server_dir(&self) -> PathBuf {
        self.abra_home.join("servers").join(&self.server)
    }
}

/// The passwd home of the effective user (not `$HOME`: a CI runner points HOME at a throwaway dir).
pub fn passwd_home() -> Result<PathBuf, ConfigError> {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Ok(user.dir),
        _ => Err(ConfigError::NoPasswdHome(uid.as_raw())),
    }
}

/// Everything `ccci run` needs, validated.
#[derive(Debug, Clone)]
pub struct Run {
    pub host: Host,
    pub recipe: String,
    pub git_ref: Option<String>,
    pub pr: String,
    pub src: Option<Source>,
    pub stages: Vec<Stage>,
    pub quick: bool,
    pub lock_timeout: Option<Duration>,
    pub deadline: Duration,
    pub teardown_budget: Duration,
    pub allow_orphan: bool,
    pub junit: Option<PathBuf>,
    pub json: bool,
    pub run_id: String,
    pub skip_fetch: bool,
    pub expect_ppid: Option<i32>,
    pub watch_pid: Option<i32>,
    pub build_link: Option<String>,
    pub under_systemd: bool,
    pub trusted_yml: Option<(PathBuf, CcciYml)>,
    pub domain: String,
}

/// `<owner>-<name>-<build>` from Drone's variables: build numbers are per repository, so one
/// runner serving several repositories must not reuse a run id. Characters outside the run-id
/// alphabet become `-`; a long repository name is cut from the left so the build number stays.
fn drone_run_id(repo: Option<&str>, build: &str) -> String {
    let Some(repo) = repo.filter(|r| !r.is_empty()) else { return build.to_string() };
    let clean: String =
        repo.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    let room = 64usize.saturating_sub(build.len() + 1);
    let cut = &clean[clean.len().saturating_sub(room)..];
    format!("{}-{build}", cut.trim_start_matches(['-', '.']))
}

impl Run {
    pub fn resolve(args: &RunArgs, env: Env) -> Result<Run, ConfigError> {
        let layers = Layers::load(env, Guard::HostWins)?;
        let mut host = Host::resolve(&layers)?;

        let recipe = match layers.pick(args.recipe.as_deref(), "--recipe", ev::RECIPE)? {
            Some((v, o)) => input::recipe(&labelled("recipe", &o), &v)?,
            None => return Err(ConfigError::MissingRecipe),
        };
        let git_ref = match layers.pick(args.git_ref.as_deref(), "--ref", ev::REF)? {
            Some((v, o)) => Some(input::git_ref(&labelled("ref", &o), &v)?),
            None => None,
        };
        let pr = match layers.pick(args.pr.as_deref(), "--pr", ev::PR)? {
            Some((v, o)) => input::pr(&labelled("pr", &o), &v)?,
            None => "0".to_string(),
        };
        let src = match layers.pick(args.src.as_deref(), "--src", ev::SRC)? {
            Some((v, o)) => Some(input::source(&labelled("src", &o), &v)?),
            None => None,
        };
        let quick = if args.quick {
            true
        } else {
            match layers.get(ev::CCCI_QUICK)? {
                Some((v, o)) => input::boolean(&labelled("quick", &o), &v)?,
                None => false,
            }
        };
        let picked_stages = match layers.pick(args.stages.as_deref(), "--stages", ev::STAGES)? {
            Some((v, o)) => Some(input::stages(&labelled("stages", &o), &v)?),
            None => None,
        };
        let stages = if quick {
            if picked_stages.is_some() {
                host.warnings.push("quick lane: the stages given are ignored; running exactly upgrade,custom".into());
            }
            vec![Stage::Upgrade, Stage::Custom]
        } else {
            picked_stages.unwrap_or_else(|| Stage::ALL.to_vec())
        };
        let secs = |flag: Option<&str>,
                    name: &str,
                    var: &str,
                    max: Duration,
                    default: Option<u64>|
         -> Result<Option<Duration>, ConfigError> {
            match layers.pick(flag, name, var)? {
                Some((v, o)) => {
                    let what = labelled(name.trim_start_matches('-'), &o);
                    Ok(Some(Duration::from_secs(input::bounded(&what, &v, max.as_secs(), false)?)))
                }
                None => Ok(default.map(Duration::from_secs)),
            }
        };
        let deadline = secs(
            args.deadline.as_deref(),
            "--deadline",
            ev::CCCI_DEADLINE,
            host.max_deadline,
            Some(limits::DEFAULT_DEADLINE_SECS),
        )?
        .unwrap_or_default();
        let teardown_budget = secs(
            args.teardown_budget.as_deref(),
            "--teardown-budget",
            ev::CCCI_TEARDOWN_BUDGET,
            host.max_teardown_budget,
            Some(limits::DEFAULT_BUDGET_SECS),
        )?
        .unwrap_or_default();
        // Waiting longer than the deadline is pointless: the deadline ends the wait anyway.
        let lock_timeout =
            secs(args.lock_timeout.as_deref(), "--lock-timeout", ev::CCCI_LOCK_TIMEOUT, host.max_deadline, None)?;
        let allow_orphan = if args.allow_orphan {
            true
        } else {
            match layers.get(ev::CCCI_ALLOW_ORPHAN)? {
                Some((v, o)) => input::boolean(&labelled("allow-orphan", &o), &v)?,
                None => false,
            }
        };
        let junit = match &args.junit {
            Some(p) if !p.as_os_str().is_empty() => {
                Some(input::abs_output_path("JUnit report path (from --junit)", &p.to_string_lossy())?)
            }
            _ => host.junit.clone(),
        };
        let run_id = match layers.env_only(ev::CCCI_RUN_ID) {
            Some((v, o)) => input::run_id(&labelled("run id", &o), &v)?,
            None => match layers.env_only(ev::DRONE_BUILD_NUMBER) {
                Some((build, o)) => {
                    let build = input::run_id(&labelled("build number", &o), &build)?;
                    drone_run_id(layers.env_only(ev::DRONE_REPO).map(|(r, _)| r).as_deref(), &build)
                }
                None => format!("manual-{}", std::process::id()),
            },
        };
        let skip_fetch = host.skip_fetch;
        if skip_fetch && src.is_some() {
            return Err(ConfigError::Conflict(
                "CCCI_SKIP_FETCH=1 conflicts with --src/SRC: a staged copy has no source to clone; unset one of them"
                    .into(),
            ));
        }
        let expect_ppid = match layers.env_only(ev::CCCI_EXPECT_PPID) {
            Some((v, o)) => Some(input::pid(&labelled("expected parent pid", &o), &v)?),
            None => None,
        };
        let watch_pid = match layers.env_only(ev::CCCI_WATCH_PID) {
            Some((v, o)) => Some(input::pid(&labelled("watched pid", &o), &v)?),
            None => None,
        };
        let trusted_yml = match &host.tests_dir {
            Some(dir) => {
                let path = dir.join(&recipe).join("ccci.yml");
                match CcciYml::load_trusted(&path) {
                    Ok(Some(y)) => {
                        y.validate_for(&recipe)
                            .map_err(|e| ConfigError::TrustedYml(format!("{}: {e}", path.display())))?;
                        Some((path, y))
                    }
                    Ok(None) => None,
                    Err(e) => return Err(ConfigError::TrustedYml(e)),
                }
            }
            None => None,
        };
        let domain = crate::names::app_domain(&recipe, &pr, git_ref.as_deref().unwrap_or(""), &host.domain_suffix);
        Ok(Run {
            recipe,
            git_ref,
            pr,
            src,
            stages,
            quick,
            lock_timeout,
            deadline,
            teardown_budget,
            allow_orphan,
            junit,
            json: args.json,
            run_id,
            skip_fetch,
            expect_ppid,
            watch_pid,
            build_link: layers.env_only(ev::DRONE_BUILD_LINK).map(|(v, _)| v),
            under_systemd: layers.env_only(ev::INVOCATION_ID).is_some(),
            trusted_yml,
            domain,
            host,
        })
    }
}

/// Settings of `ccci janitor`.
#[derive(Debug, Clone)]
pub struct Janitor {
    pub host: Host,
    pub dry_run: bool,
    pub json: bool,
    pub prune_after: Duration,
    pub deadline: Duration,
    /// `--watch`: keep running, reaping on the owner's death.
    pub watch: bool,
    /// `--sweep-every`: between the watch's backstop sweeps.
    pub sweep_every: Duration,
}

impl Janitor {
    pub fn resolve(args: &JanitorArgs, env: Env) -> Result<Janitor, ConfigError> {
        let layers = Layers::load(env, Guard::EnvWins)?;
        let host = Host::resolve(&layers)?;
        let prune_days = match args.prune_after.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => input::bounded("prune-after (from --prune-after)", v, limits::MAX_PRUNE_DAYS, false)?,
            None => limits::DEFAULT_PRUNE_DAYS,
        };
        let deadline = match args.deadline.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => input::bounded("deadline (from --deadline)", v, limits::MAX_JANITOR_DEADLINE_SECS, false)?,
            None => limits::DEFAULT_JANITOR_DEADLINE_SECS,
        };
        let sweep_every = match args.sweep_every.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => input::bounded("sweep-every (from --sweep-every)", v, limits::MAX_JANITOR_DEADLINE_SECS, false)?,
            None => limits::DEFAULT_SWEEP_EVERY_SECS,
        };
        Ok(Janitor {
            host,
            dry_run: args.dry_run,
            watch: args.watch,
            sweep_every: Duration::from_secs(sweep_every),
            json: args.json,
            prune_after: Duration::from_secs(prune_days.saturating_mul(86_400)),
            deadline: Duration::from_secs(deadline),
        })
    }
}

/// Host settings alone (for `ccci locks` and other operator commands).
pub fn host_only(env: Env) -> Result<Host, ConfigError> {
    Host::resolve(&Layers::load(env, Guard::EnvWins)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut e: Env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        e.entry("CCCI_CONFIG".into()).or_insert_with(|| "/dev/null".into());
        e
    }

    #[test]
    fn empty_env_counts_as_unset() {
        let args = RunArgs { recipe: Some("hello".into()), ..RunArgs::default() };
        let r = Run::resolve(&args, env(&[("REF", ""), ("PR", ""), ("STAGES", ""), ("CCCI_QUICK", ""), ("SRC", "")]))
            .unwrap();
        assert_eq!(r.git_ref, None);
        assert_eq!(r.pr, "0");
        assert_eq!(r.stages.len(), 5);
        assert!(!r.quick);
        assert!(r.src.is_none());
    }

    #[test]
    fn quick_zero_is_false_and_quick_ignores_stages() {
        let args = RunArgs { recipe: Some("hello".into()), ..RunArgs::default() };
        assert!(!Run::resolve(&args, env(&[("CCCI_QUICK", "0")])).unwrap().quick);
        let r = Run::resolve(&args, env(&[("CCCI_QUICK", "yes"), ("STAGES", "install")])).unwrap();
        assert_eq!(r.stages, vec![Stage::Upgrade, Stage::Custom]);
        assert!(r.host.warnings.iter().any(|w| w.contains("quick lane")));
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, "RECIPE=fromfile\nCCCI_DEADLINE=100\nCCCI_SERVER=filesrv\nPR=5\n").unwrap();
        let f = file.to_str().unwrap();
        let r = Run::resolve(&RunArgs::default(), env(&[("CCCI_CONFIG", f)])).unwrap();
        assert_eq!(
            (r.recipe.as_str(), r.deadline.as_secs(), r.host.server.as_str(), r.pr.as_str()),
            ("fromfile", 100, "filesrv", "5")
        );
        let r = Run::resolve(
            &RunArgs::default(),
            env(&[("CCCI_CONFIG", f), ("RECIPE", "fromenv"), ("CCCI_DEADLINE", "200")]),
        )
        .unwrap();
        assert_eq!((r.recipe.as_str(), r.deadline.as_secs()), ("fromenv", 200));
        let args = RunArgs { recipe: Some("fromflag".into()), deadline: Some("300".into()), ..RunArgs::default() };
        let r =
            Run::resolve(&args, env(&[("CCCI_CONFIG", f), ("RECIPE", "fromenv"), ("CCCI_DEADLINE", "200")])).unwrap();
        assert_eq!((r.recipe.as_str(), r.deadline.as_secs()), ("fromflag", 300));
    }

    #[test]
    fn errors_name_their_origin() {
        let e = Run::resolve(&RunArgs::default(), env(&[("RECIPE", "A")])).unwrap_err();
        assert!(e.to_string().contains("from RECIPE"), "{e}");
        let args = RunArgs { recipe: Some("a".into()), deadline: Some("0".into()), ..RunArgs::default() };
        let e = Run::resolve(&args, env(&[])).unwrap_err();
        assert!(e.to_string().contains("--deadline") && e.to_string().contains("from 1 to"), "{e}");
    }

    #[test]
    fn skip_fetch_conflicts_with_src() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, "CCCI_SKIP_FETCH=1\n").unwrap();
        let args = RunArgs { recipe: Some("a".into()), src: Some("o/r".into()), ..RunArgs::default() };
        let r = Run::resolve(&args, env(&[("CCCI_CONFIG", file.to_str().unwrap())]));
        assert!(matches!(r, Err(ConfigError::Conflict(_))), "{r:?}");
    }

    #[test]
    fn run_id_order() {
        let args = RunArgs { recipe: Some("a".into()), ..RunArgs::default() };
        assert_eq!(Run::resolve(&args, env(&[("DRONE_BUILD_NUMBER", "279")])).unwrap().run_id, "279");
        assert_eq!(
            Run::resolve(&args, env(&[("DRONE_BUILD_NUMBER", "279"), ("CCCI_RUN_ID", "x1")])).unwrap().run_id,
            "x1"
        );
        assert!(Run::resolve(&args, env(&[("CCCI_RUN_ID", "../x")])).is_err());
        assert!(Run::resolve(&args, env(&[])).unwrap().run_id.starts_with("manual-"));
    }

    fn host_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, text).unwrap();
        let f = file.to_str().unwrap().to_string();
        (dir, f)
    }

    #[test]
    fn host_settings_come_from_the_host() {
        let args = RunArgs { recipe: Some("a".into()), ..RunArgs::default() };
        let (_d, f) = host_file("CCCI_APP_LOCK_DIR=/run/lock\n");
        // Agreeing with the host file (or the default) is fine; disagreeing is refused.
        let ok = Run::resolve(&args, env(&[("CCCI_CONFIG", &f), ("CCCI_APP_LOCK_DIR", "/run/lock/")])).unwrap();
        assert_eq!(ok.host.lock_dir, std::path::PathBuf::from("/run/lock"));
        assert!(Run::resolve(&args, env(&[("CCCI_CONFIG", &f), ("CCCI_SERVER", "default")])).is_ok());
        for (k, v) in [("CCCI_APP_LOCK_DIR", "/tmp/elsewhere"), ("CCCI_ABRA", "/tmp/evil"), ("CCCI_GIT_TOKEN", "t0k3n")]
        {
            let e = Run::resolve(&args, env(&[("CCCI_CONFIG", &f), (k, v)])).unwrap_err();
            assert!(matches!(e, ConfigError::HostSettingFromEnv { .. }), "{k}: {e}");
            assert!(e.to_string().contains("CCCI_TRUST_ENV=1"), "{e}");
        }
        // The operator may opt in, in the host file only.
        let (_d2, trusted) = host_file("CCCI_TRUST_ENV=1\n");
        let r = Run::resolve(&args, env(&[("CCCI_CONFIG", &trusted), ("CCCI_ABRA", "/opt/abra")])).unwrap();
        assert_eq!(r.host.abra, "/opt/abra");
        assert!(
            Run::resolve(&args, env(&[("CCCI_CONFIG", &f), ("CCCI_TRUST_ENV", "1"), ("CCCI_ABRA", "/x")])).is_err()
        );
        // Run parameters still come from the environment; the janitor lets the env override.
        let r =
            Run::resolve(&RunArgs::default(), env(&[("CCCI_CONFIG", &f), ("RECIPE", "b"), ("CCCI_DEADLINE", "60")]));
        assert_eq!(r.unwrap().deadline.as_secs(), 60);
        let j = Janitor::resolve(&JanitorArgs::default(), env(&[("CCCI_CONFIG", &f), ("CCCI_APP_LOCK_DIR", "/tmp/x")]));
        assert_eq!(j.unwrap().host.lock_dir, std::fs::canonicalize("/tmp").unwrap().join("x"));
    }

    #[test]
    fn under_drone_the_host_file_is_not_chosen_by_the_environment() {
        let args = RunArgs { recipe: Some("a".into()), ..RunArgs::default() };
        let (_d, f) = host_file("CCCI_TRUST_ENV=1\n");
        let mut e = env(&[("DRONE", "true"), ("CCCI_ABRA", "/tmp/evil")]);
        e.insert("CCCI_CONFIG".into(), f);
        // CCCI_CONFIG is ignored: the default host file (absent here) trusts nothing.
        assert!(Run::resolve(&args, e).is_err());
    }

    #[test]
    fn numbers_have_ceilings_and_paths_are_absolute() {
        let base = RunArgs { recipe: Some("a".into()), ..RunArgs::default() };
        for (deadline, ok) in [("86400", true), ("86401", false), ("18446744073709551615", false)] {
            let args = RunArgs { deadline: Some(deadline.into()), recipe: Some("a".into()), ..RunArgs::default() };
            assert_eq!(Run::resolve(&args, env(&[])).is_ok(), ok, "{deadline}");
        }
        let (_d, f) = host_file("CCCI_MAX_DEADLINE=604800\nCCCI_KILL_GRACE=18446744073709551615\n");
        assert!(Run::resolve(&base, env(&[("CCCI_CONFIG", &f)])).is_err(), "grace above its ceiling");
        let (_d, f) = host_file("CCCI_APP_LOCK_DIR=run/lock\n");
        let e = Run::resolve(&base, env(&[("CCCI_CONFIG", &f)])).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let j = JanitorArgs { prune_after: Some("18446744073709551615".into()), ..JanitorArgs::default() };
        assert!(Janitor::resolve(&j, env(&[])).is_err());
    }

    #[test]
    fn docker_reads_are_api_or_cli_and_the_api_needs_a_usable_docker_host() {
        let base = RunArgs { recipe: Some("a".into()), ..RunArgs::default() };
        let reads = |file: &str, extra: &[(&str, &str)]| {
            let (_d, f) = host_file(file);
            let mut pairs = vec![("CCCI_CONFIG", f.as_str())];
            pairs.extend_from_slice(extra);
            Run::resolve(&base, env(&pairs)).map(|r| r.host.docker_reads)
        };
        use crate::adapters::docker::ReadPath;
        assert_eq!(reads("", &[]).unwrap(), ReadPath::Api);
        assert_eq!(reads("CCCI_DOCKER_READS=cli\n", &[]).unwrap(), ReadPath::Cli);
        assert_eq!(
            reads("CCCI_DOCKER_READS=api\n", &[("DOCKER_HOST", "tcp://127.0.0.1:2375")]).unwrap(),
            ReadPath::Api
        );
        let e = reads("CCCI_DOCKER_READS=both\n", &[]).unwrap_err().to_string();
        assert!(e.contains("docker reads") && e.contains("`api`"), "{e}");
        let e = reads("", &[("DOCKER_HOST", "ssh://me@host")]).unwrap_err().to_string();
        assert!(e.contains("DOCKER_HOST") && e.contains("CCCI_DOCKER_READS=cli"), "{e}");
        let e = reads("", &[("DOCKER_TLS_VERIFY", "1")]).unwrap_err().to_string();
        assert!(e.contains("DOCKER_TLS_VERIFY"), "{e}");
        // The CLI reads DOCKER_HOST itself, whatever it says.
        assert_eq!(reads("CCCI_DOCKER_READS=cli\n", &[("DOCKER_HOST", "ssh://me@host")]).unwrap(), ReadPath::Cli);
        // A host setting: the environment may not change it behind the host's back.
        let e = reads("CCCI_DOCKER_READS=api\n", &[("CCCI_DOCKER_READS", "cli")]).unwrap_err();
        assert!(matches!(e, ConfigError::HostSettingFromEnv { .. }), "{e}");
    }

    #[test]
    fn lease_settings_from_the_host() {
        let args = RunArgs { recipe: Some("a".into()), ..RunArgs::default() };
        assert!(Run::resolve(&args, env(&[])).unwrap().host.lease.is_none(), "off unless endpoints are set");
        let (_d, f) = host_file("CCCI_LEASE_ENDPOINTS=http://10.0.0.1:2379, 10.0.0.2:2379,http://10.0.0.1:2379\n");
        let l = Run::resolve(&args, env(&[("CCCI_CONFIG", &f)])).unwrap().host.lease.unwrap();
        assert_eq!(l.endpoints.len(), 2, "duplicates dropped: {l:?}");
        assert_eq!((l.ttl.as_secs(), l.prefix.as_str()), (10, "/ccci"));
        for (text, why) in [
            ("CCCI_LEASE_ENDPOINTS=https://e:2379\n", "https"),
            ("CCCI_LEASE_ENDPOINTS=e:2379\nCCCI_LEASE_TTL=1\n", "at least 2"),
            ("CCCI_LEASE_ENDPOINTS=e:2379\nCCCI_LEASE_TTL=301\n", "from 1 to 300"),
            ("CCCI_LEASE_ENDPOINTS=e:2379\nCCCI_LEASE_PREFIX=ccci/\n", "must start with"),
            ("CCCI_LEASE_ENDPOINTS=,\n", "at least one"),
        ] {
            let (_d, f) = host_file(text);
            let e = Run::resolve(&args, env(&[("CCCI_CONFIG", &f)])).unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
        // A host setting: a build parameter cannot point a run at another cluster.
        let e = Run::resolve(&args, env(&[("CCCI_LEASE_ENDPOINTS", "http://evil:2379")])).unwrap_err();
        assert!(matches!(e, ConfigError::HostSettingFromEnv { .. }), "{e}");
    }

    #[test]
    fn drone_run_ids_name_the_repository() {
        assert_eq!(drone_run_id(Some("coop-cloud/hello"), "279"), "coop-cloud-hello-279");
        assert_eq!(drone_run_id(None, "279"), "279");
        let long = drone_run_id(Some(&"x".repeat(100)), "12345");
        assert!(long.len() <= 64 && long.ends_with("-12345") && crate::names::valid_run_id(&long), "{long}");
        let args = RunArgs { recipe: Some("a".into()), ..RunArgs::default() };
        let r = Run::resolve(&args, env(&[("DRONE_BUILD_NUMBER", "7"), ("DRONE_REPO", "o/r")])).unwrap();
        assert_eq!(r.run_id, "o-r-7");
    }
}
