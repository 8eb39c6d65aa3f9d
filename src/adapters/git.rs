//! The one pre-configured way to run git: never prompts, ignores system and global config, and
//! gets the token only when talking over https to an origin the operator named
//! (`CCCI_GIT_BASE`'s, or `CCCI_GIT_TOKEN_ORIGINS`) — never to whatever host a build parameter
//! names, never to the catalogue's forge, never in clear text.

use std::path::Path;

use thiserror::Error;

use crate::env_vars as ev;
use crate::process::{Cmd, Output, ProcessError, Stopped};

#[derive(Debug, Error)]
pub enum GitError {
    #[error(transparent)]
    Spawn(#[from] ProcessError),
    #[error("{0}")]
    Failed(String),
    #[error("git stopped: {0}")]
    Stopped(Stopped),
}

#[derive(Debug, Clone, Default)]
pub struct Git {
    token: Option<String>,
    /// `https://host[:port]`, lowercase.
    token_origins: Vec<String>,
}

impl Git {
    pub fn new(token: Option<String>, token_origins: Vec<String>) -> Git {
        Git { token, token_origins }
    }

    /// Whether a git process talking to `url` may carry the token.
    pub fn token_for(&self, url: &str) -> bool {
        self.token.is_some()
            && origin_of(url).is_some_and(|o| o.starts_with("https://") && self.token_origins.contains(&o))
    }

    /// `git -C <dir> …` with the safe environment.
    pub fn at(&self, dir: &Path) -> Cmd {
        Cmd::new("git")
            .arg("-C")
            .arg(dir.display().to_string())
            .env(ev::GIT_TERMINAL_PROMPT, "0")
            .env(ev::GIT_CONFIG_NOSYSTEM, "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .hint(" (is git installed and on PATH?)")
    }

    /// Adds the bearer header for `url`'s origin to this one git process, when the token may go
    /// there ([`Git::token_for`]). The token is never in argv (`/proc/*/cmdline` is
    /// world-readable) and never in `.git/config`.
    pub fn authed(&self, cmd: Cmd, url: &str) -> Cmd {
        match (&self.token, origin_of(url).filter(|_| self.token_for(url))) {
            (Some(token), Some(origin)) => cmd
                .secret_env(ev::GIT_CONFIG_COUNT, "1")
                .secret_env("GIT_CONFIG_KEY_0", format!("http.{origin}/.extraHeader"))
                .secret_env("GIT_CONFIG_VALUE_0", format!("Authorization: Bearer {token}")),
            _ => cmd,
        }
    }

    /// Runs and returns trimmed stdout, or an error naming the command and its last line.
    pub fn output(cmd: Cmd) -> Result<String, GitError> {
        let out = cmd.capture().run()?;
        check(&out)?;
        Ok(out.stdout.trim().to_string())
    }

    /// Runs for its effect.
    pub fn run(cmd: Cmd) -> Result<Output, GitError> {
        let out = cmd.run()?;
        check(&out)?;
        Ok(out)
    }
}

fn check(out: &Output) -> Result<(), GitError> {
    if let Some(s) = out.stopped {
        return Err(GitError::Stopped(s));
    }
    if !out.success() {
        return Err(GitError::Failed(out.describe()));
    }
    Ok(())
}

/// `scheme://host[:port]` of an http(s) URL, lowercase (hosts are case-insensitive).
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next().filter(|h| !h.is_empty() && !h.contains('@'))?;
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_only_to_named_https_origins() {
        let g = Git::new(Some("t".into()), vec!["https://git.example.org".into()]);
        assert!(g.token_for("https://git.example.org/o/r.git"));
        assert!(g.token_for("https://GIT.example.org/o/r.git"));
        assert!(!g.token_for("https://evil.example/o/r.git"));
        assert!(!g.token_for("http://git.example.org/o/r.git"), "never in clear text");
        assert!(!g.token_for("https://git.example.org.evil.example/o/r.git"));
        assert!(!Git::new(None, vec!["https://git.example.org".into()]).token_for("https://git.example.org/x"));
        assert!(!Git::new(Some("t".into()), vec![]).token_for("https://git.example.org/x"));
    }

    #[test]
    fn origins() {
        assert_eq!(origin_of("https://git.example.org/o/r.git").as_deref(), Some("https://git.example.org"));
        assert_eq!(origin_of("http://127.0.0.1:8080/r.git").as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(origin_of("ssh://host/o/r"), None);
        assert_eq!(origin_of("/srv/r"), None);
    }
}
