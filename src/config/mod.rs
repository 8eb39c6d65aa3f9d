//! Settings: host config file, then environment, then flags (later wins). An empty value counts
//! as unset at every layer (Drone passes empty params).

pub mod ccci_yml;
pub mod host_file;
pub mod input;

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
}

/// The process environment as seen by the resolver (a map, so tests can supply their own).
pub type Env = BTreeMap<String, String>;

pub fn process_env() -> Env {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// The layers below the flags: environment over host file.
pub struct Layers {
    env: Env,
    file: HostFile,
}

impl Layers {
    pub fn load(env: Env) -> Result<Layers, ConfigError> {
        let explicit = env.get(ev::CCCI_CONFIG).filter(|v| !v.is_empty()).cloned();
        let file = HostFile::load(explicit.as_deref())?;
        Ok(Layers { env, file })
    }

    /// A value and where it came from, or `None` when unset (empty counts as unset).
    fn get(&self, var: &str) -> Option<(String, String)> {
        if let Some(v) = self.env.get(var).filter(|v| !v.is_empty()) {
            return Some((v.clone(), var.to_string()));
        }
        if ev::allowed_in_config_file(var)
            && let Some(v) = self.file.values.get(var).filter(|v| !v.is_empty())
        {
            let path = self.file.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            return Some((v.clone(), format!("{var} in {path}")));
        }
        None
    }

    /// Only the environment (for variables set by wrappers and systemd).
    fn env_only(&self, var: &str) -> Option<(String, String)> {
        self.env.get(var).filter(|v| !v.is_empty()).map(|v| (v.clone(), var.to_string()))
    }

    /// Flag, else env, else file.
    fn pick(&self, flag: Option<&str>, flag_name: &str, var: &str) -> Option<(String, String)> {
        match flag.filter(|v| !v.is_empty()) {
            Some(v) => Some((v.to_string(), flag_name.to_string())),
            None => self.get(var),
        }
    }

    fn warnings(&self) -> Vec<String> {
        let path = self.file.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        self.file.unknown_keys.iter().map(|k| format!("{path}: ignoring unknown setting {k}")).collect()
    }
}

fn labelled(name: &str, origin: &str) -> String {
    format!("{name} (from {origin})")
}

/// Settings every command shares.
#[derive(Debug, Clone)]
pub struct Host {
    pub abra: String,
    pub docker: String,
    pub passwd_home: PathBuf,
    pub abra_home: PathBuf,
    pub server: String,
    pub git_base: String,
    pub git_token: Option<String>,
    pub domain_suffix: String,
    pub lock_dir: PathBuf,
    pub runs_dir: PathBuf,
    pub tests_dir: Option<PathBuf>,
    pub health_url: String,
    pub secrets_dir: PathBuf,
    pub kill_grace: Duration,
    pub leak_timeout: Duration,
    pub config_file: Option<PathBuf>,
    pub warnings: Vec<String>,
}

impl Host {
    pub fn resolve(layers: &Layers) -> Result<Host, ConfigError> {
        let s = |var: &str, default: &str| layers.get(var).map(|(v, _)| v).unwrap_or_else(|| default.to_string());
        let passwd_home = passwd_home()?;
        let abra_home =
            layers.get(ev::CCCI_ABRA_HOME).map(|(v, _)| PathBuf::from(v)).unwrap_or_else(|| passwd_home.join(".abra"));
        let kill_grace = match layers.get(ev::CCCI_KILL_GRACE) {
            Some((v, o)) => input::non_negative(&labelled("kill grace", &o), &v)?,
            None => 10,
        };
        let leak_ms = match layers.get(ev::CCCI_LEAK_TIMEOUT_MS) {
            Some((v, o)) => input::positive(&labelled("leak timeout", &o), &v)?,
            None => 200,
        };
        let git_token = layers.get(ev::CCCI_GIT_TOKEN).or_else(|| layers.get(ev::GITEA_TOKEN)).map(|(v, _)| v);
        let server = s(ev::CCCI_SERVER, "default");
        if server.contains('/') || server == "." || server == ".." {
            return Err(InputError {
                what: "server (CCCI_SERVER)".into(),
                value: server,
                rule: "must be a plain directory name".into(),
            }
            .into());
        }
        let suffix = s(ev::CCCI_DOMAIN_SUFFIX, "ci.commoninternet.net");
        let suffix_ok = !suffix.is_empty()
            && suffix
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        if !suffix_ok {
            return Err(InputError {
                what: "domain suffix (CCCI_DOMAIN_SUFFIX)".into(),
                value: suffix,
                rule: "must be dot-separated lowercase DNS labels".into(),
            }
            .into());
        }
        // abra cuts longer stack names; ccci's must be the same as abra's.
        if suffix.len() > crate::names::MAX_SUFFIX {
            return Err(InputError {
                what: "domain suffix (CCCI_DOMAIN_SUFFIX)".into(),
                rule: format!(
                    "must be at most {} characters, so that run-app stack names fit abra's {}",
                    crate::names::MAX_SUFFIX,
                    crate::names::MAX_STACK_NAME
                ),
                value: suffix,
            }
            .into());
        }
        Ok(Host {
            abra: s(ev::CCCI_ABRA, "abra"),
            docker: s(ev::CCCI_DOCKER, "docker"),
            passwd_home,
            abra_home,
            server,
            git_base: s(ev::CCCI_GIT_BASE, "https://git.autonomic.zone"),
            git_token,
            domain_suffix: suffix,
            lock_dir: PathBuf::from(s(ev::CCCI_APP_LOCK_DIR, "/run/lock")),
            runs_dir: PathBuf::from(s(ev::CCCI_RUNS_DIR, "/var/lib/cc-ci-runs")),
            tests_dir: layers.get(ev::CCCI_TESTS_DIR).map(|(v, _)| PathBuf::from(v)),
            health_url: s(ev::CCCI_HEALTH_URL, "https://{domain}/"),
            secrets_dir: PathBuf::from(s(ev::CCCI_SECRETS_DIR, "/run/secrets")),
            kill_grace: Duration::from_secs(kill_grace),
            leak_timeout: Duration::from_millis(leak_ms),
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

impl Run {
    pub fn resolve(args: &RunArgs, env: Env) -> Result<Run, ConfigError> {
        let layers = Layers::load(env)?;
        let mut host = Host::resolve(&layers)?;

        let recipe = match layers.pick(args.recipe.as_deref(), "--recipe", ev::RECIPE) {
            Some((v, o)) => input::recipe(&labelled("recipe", &o), &v)?,
            None => return Err(ConfigError::MissingRecipe),
        };
        let git_ref = match layers.pick(args.git_ref.as_deref(), "--ref", ev::REF) {
            Some((v, o)) => Some(input::git_ref(&labelled("ref", &o), &v)?),
            None => None,
        };
        let pr = match layers.pick(args.pr.as_deref(), "--pr", ev::PR) {
            Some((v, o)) => input::pr(&labelled("pr", &o), &v)?,
            None => "0".to_string(),
        };
        let src = match layers.pick(args.src.as_deref(), "--src", ev::SRC) {
            Some((v, o)) => Some(input::source(&labelled("src", &o), &v)?),
            None => None,
        };
        let quick = if args.quick {
            true
        } else {
            match layers.get(ev::CCCI_QUICK) {
                Some((v, o)) => input::boolean(&labelled("quick", &o), &v)?,
                None => false,
            }
        };
        let picked_stages = match layers.pick(args.stages.as_deref(), "--stages", ev::STAGES) {
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
                    default: Option<u64>|
         -> Result<Option<Duration>, ConfigError> {
            match layers.pick(flag, name, var) {
                Some((v, o)) => {
                    Ok(Some(Duration::from_secs(input::positive(&labelled(name.trim_start_matches('-'), &o), &v)?)))
                }
                None => Ok(default.map(Duration::from_secs)),
            }
        };
        let lock_timeout = secs(args.lock_timeout.as_deref(), "--lock-timeout", ev::CCCI_LOCK_TIMEOUT, None)?;
        let deadline = secs(args.deadline.as_deref(), "--deadline", ev::CCCI_DEADLINE, Some(3600))?.unwrap_or_default();
        let teardown_budget =
            secs(args.teardown_budget.as_deref(), "--teardown-budget", ev::CCCI_TEARDOWN_BUDGET, Some(600))?
                .unwrap_or_default();
        let allow_orphan = if args.allow_orphan {
            true
        } else {
            match layers.get(ev::CCCI_ALLOW_ORPHAN) {
                Some((v, o)) => input::boolean(&labelled("allow-orphan", &o), &v)?,
                None => false,
            }
        };
        let junit = match &args.junit {
            Some(p) if !p.as_os_str().is_empty() => Some(p.clone()),
            _ => layers.get(ev::CCCI_JUNIT).map(|(v, _)| PathBuf::from(v)),
        };
        let run_id = match layers.get(ev::CCCI_RUN_ID).or_else(|| layers.env_only(ev::DRONE_BUILD_NUMBER)) {
            Some((v, o)) => input::run_id(&labelled("run id", &o), &v)?,
            None => format!("manual-{}", std::process::id()),
        };
        let skip_fetch = match layers.get(ev::CCCI_SKIP_FETCH) {
            Some((v, o)) => input::boolean(&labelled("skip fetch", &o), &v)?,
            None => false,
        };
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
                if path.is_file() {
                    Some((path.clone(), CcciYml::load(&path).map_err(ConfigError::TrustedYml)?))
                } else {
                    None
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
}

impl Janitor {
    pub fn resolve(args: &JanitorArgs, env: Env) -> Result<Janitor, ConfigError> {
        let layers = Layers::load(env)?;
        let host = Host::resolve(&layers)?;
        let prune_days = match args.prune_after.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => input::positive("prune-after (from --prune-after)", v)?,
            None => 14,
        };
        let deadline = match args.deadline.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => input::positive("deadline (from --deadline)", v)?,
            None => 1800,
        };
        Ok(Janitor {
            host,
            dry_run: args.dry_run,
            json: args.json,
            prune_after: Duration::from_secs(prune_days * 86_400),
            deadline: Duration::from_secs(deadline),
        })
    }
}

/// Host settings alone (for `ccci locks`).
pub fn host_only(env: Env) -> Result<Host, ConfigError> {
    Host::resolve(&Layers::load(env)?)
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
        assert!(e.to_string().contains("--deadline") && e.to_string().contains("positive"), "{e}");
    }

    #[test]
    fn the_domain_suffix_fits_abras_stack_names() {
        let args = RunArgs { recipe: Some("a".into()), ..RunArgs::default() };
        let ok = "x".repeat(crate::names::MAX_SUFFIX);
        assert!(Run::resolve(&args, env(&[("CCCI_DOMAIN_SUFFIX", &ok)])).is_ok());
        let long = format!("{ok}x");
        let e = Run::resolve(&args, env(&[("CCCI_DOMAIN_SUFFIX", &long)])).unwrap_err();
        assert!(e.to_string().contains("at most 33"), "{e}");
    }

    #[test]
    fn skip_fetch_conflicts_with_src() {
        let args = RunArgs { recipe: Some("a".into()), src: Some("o/r".into()), ..RunArgs::default() };
        assert!(matches!(Run::resolve(&args, env(&[("CCCI_SKIP_FETCH", "1")])), Err(ConfigError::Conflict(_))));
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
}
