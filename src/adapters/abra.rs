//! abra, exactly as §8 calls it: flags before positionals, `-n` always, `ABRA_DIR` exported.

use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

use crate::env_vars as ev;
use crate::process::{Cmd, Output, ProcessError, Stopped};

#[derive(Debug, Error)]
pub enum AbraError {
    #[error(transparent)]
    Spawn(#[from] ProcessError),
    #[error("{0}")]
    Failed(String),
    #[error("abra {what}: {stopped}")]
    Stopped { what: String, stopped: Stopped },
    #[error("cannot parse `abra app ls -m` output: {0}")]
    Parse(String),
}

impl AbraError {
    pub fn stopped(&self) -> Option<Stopped> {
        match self {
            AbraError::Stopped { stopped, .. } => Some(*stopped),
            _ => None,
        }
    }
}

/// One app listed by `abra app ls -m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedApp {
    pub server: String,
    pub domain: String,
    pub recipe: String,
}

#[derive(Debug, Clone)]
pub struct Abra {
    program: String,
    abra_dir: PathBuf,
    server: String,
    extra_env: Vec<(String, String)>,
}

impl Abra {
    pub fn new(program: &str, abra_dir: &Path, server: &str) -> Abra {
        Abra {
            program: program.to_string(),
            abra_dir: abra_dir.to_path_buf(),
            server: server.to_string(),
            extra_env: Vec::new(),
        }
    }

    /// Stage variables for abra's children (hooks in `abra.sh` may read them).
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Abra {
        self.extra_env = env;
        self
    }

    pub fn abra_dir(&self) -> &Path {
        &self.abra_dir
    }

    fn cmd(&self, args: &[&str]) -> Cmd {
        Cmd::new(&self.program)
            .name("abra")
            .args(args.iter().copied())
            .envs(&self.extra_env)
            .env(ev::ABRA_DIR, self.abra_dir.display().to_string())
            .hint(" (set CCCI_ABRA to the abra program)")
    }

    fn run(&self, what: &str, cmd: Cmd) -> Result<Output, AbraError> {
        let out = cmd.run()?;
        if let Some(stopped) = out.stopped {
            return Err(AbraError::Stopped { what: what.to_string(), stopped });
        }
        if !out.success() {
            return Err(AbraError::Failed(out.describe()));
        }
        Ok(out)
    }

    pub fn version(&self) -> Result<String, AbraError> {
        let out = self.run("--version", self.cmd(&["--version"]).capture().level(tracing::Level::DEBUG))?;
        Ok(out.stdout.lines().next().unwrap_or("").trim().to_string())
    }

    pub fn app_new(&self, recipe: &str, domain: &str) -> Result<Output, AbraError> {
        let server = format!("--server={}", self.server);
        let dom = format!("--domain={domain}");
        self.run("app new", self.cmd(&["app", "new", "-n", "-o", "-C", "-S", &server, &dom, recipe]))
    }

    /// `force`: a redeploy of a deployed app (the upgrade).
    pub fn app_deploy(&self, domain: &str, force: bool) -> Result<Output, AbraError> {
        let args: &[&str] = if force {
            &["app", "deploy", "-n", "-o", "-C", "-f", domain]
        } else {
            &["app", "deploy", "-n", "-o", "-C", domain]
        };
        self.run("app deploy", self.cmd(args))
    }

    pub fn app_undeploy(&self, domain: &str) -> Result<Output, AbraError> {
        self.run("app undeploy", self.cmd(&["app", "undeploy", "-n", domain]))
    }

    pub fn app_remove(&self, domain: &str) -> Result<Output, AbraError> {
        self.run("app remove", self.cmd(&["app", "remove", "-n", "-f", domain]))
    }

    pub fn app_ls(&self) -> Result<Vec<ListedApp>, AbraError> {
        let out = self.run("app ls", self.cmd(&["app", "ls", "-m"]).capture().level(tracing::Level::DEBUG))?;
        parse_app_ls(&out.stdout)
    }

    /// Returns the snapshot id: the last non-empty stdout line.
    pub fn backup_create(&self, domain: &str) -> Result<String, AbraError> {
        let out = self.run("app backup create", self.cmd(&["app", "backup", "create", "-n", domain]).capture())?;
        for line in out.stdout.lines() {
            tracing::info!("abra| {}", crate::mask::mask(line));
        }
        out.stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
            .ok_or_else(|| AbraError::Failed("`abra app backup create` printed no snapshot id".into()))
    }

    pub fn restore(&self, domain: &str, snapshot: &str) -> Result<Output, AbraError> {
        self.run("app restore", self.cmd(&["app", "restore", "-n", domain, snapshot]))
    }

    pub fn recipe_fetch(&self, recipe: &str) -> Result<Output, AbraError> {
        self.run("recipe fetch", self.cmd(&["recipe", "fetch", "-n", recipe]))
    }
}

/// `{server: {apps: [{appName, domain, recipe, …}]}}`; every field is read as a string.
pub fn parse_app_ls(text: &str) -> Result<Vec<ListedApp>, AbraError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text).map_err(|e| AbraError::Parse(e.to_string()))?;
    let mut apps = Vec::new();
    let Some(servers) = v.as_object() else { return Err(AbraError::Parse("not a JSON object".into())) };
    for (server, entry) in servers {
        for app in entry.get("apps").and_then(Value::as_array).into_iter().flatten() {
            let field = |k: &str| app.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let domain = if field("domain").is_empty() { field("appName") } else { field("domain") };
            if !domain.is_empty() {
                apps.push(ListedApp { server: server.clone(), domain, recipe: field("recipe") });
            }
        }
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_machine_listing() {
        let text = r#"{"default":{"apps":[{"appName":"a-000000.x","domain":"a-000000.x","recipe":"hello","server":"default","status":"unknown"}],"appCount":1},"other":{"apps":[]}}"#;
        let apps = parse_app_ls(text).unwrap();
        assert_eq!(
            apps,
            vec![ListedApp { server: "default".into(), domain: "a-000000.x".into(), recipe: "hello".into() }]
        );
        assert!(parse_app_ls("").unwrap().is_empty());
        assert!(parse_app_ls("[1]").is_err());
    }
}
