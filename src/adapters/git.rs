//! The one pre-configured way to run git: never prompts, ignores system and global config, and
//! gets the token only when talking over https to an origin the operator named
//! (`CCCI_GIT_BASE`'s, or `CCCI_GIT_TOKEN_ORIGINS`) — never to whatever host a build parameter
//! names, never to the catalogue's forge, never in clear text.

use std::path::Path;

use crate::env_vars as ev;
use crate::process::{Cmd, Output, ProcessError};

/// What a failed git call says about the host rather than the repository: a child that could
/// not start is the host's; a stop is nobody's; a failure is what its last lines show.
pub fn trouble(e: &ProcessError) -> Trouble {
    match e {
        ProcessError::Spawn { .. } => Trouble::Host,
        ProcessError::Failed { output } => classify(&output.tail),
        ProcessError::Stopped { .. } => Trouble::None,
    }
}

/// Why a git call failed, read from its output: the network (worth a retry, then CI could not
/// test), the host (a full disk, git missing: CI could not test), or neither (a wrong URL or
/// ref, a bad repository: the code under test's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    None,
    Network,
    Host,
}

// git and curl's messages (C locale: ccci's children get LANG=C.UTF-8, and git is not
// translated under it). A refused connection to the forge, a name that does not resolve, a
// dropped transfer and a forge's 5xx are the network; "not found", "could not read Username"
// (an auth prompt refused) and "Repository not found" are not.
const NETWORK: &[&str] = &[
    "could not resolve host",
    "temporary failure in name resolution",
    "failed to connect to",
    "couldn't connect to server",
    "connection refused",
    "connection timed out",
    "connection reset",
    "operation timed out",
    "network is unreachable",
    "no route to host",
    "the remote end hung up unexpectedly",
    "early eof",
    "rpc failed",
    "gnutls recv error",
    "ssl_read",
    "tls connection was non-properly terminated",
    "the requested url returned error: 502",
    "the requested url returned error: 503",
    "the requested url returned error: 504",
    "http/2 stream",
];
const HOST: &[&str] =
    &["no space left on device", "disk quota exceeded", "read-only file system", "cannot allocate memory"];

/// The trouble a failed git call's last lines show ([`Trouble`]).
pub fn classify(lines: &[String]) -> Trouble {
    let has = |needles: &[&str]| {
        lines.iter().any(|l| {
            let l = l.to_ascii_lowercase();
            needles.iter().any(|n| l.contains(n))
        })
    };
    if has(HOST) {
        Trouble::Host
    } else if has(NETWORK) {
        Trouble::Network
    } else {
        Trouble::None
    }
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

    /// Runs and returns trimmed stdout, or how it failed (its output kept).
    pub fn output(cmd: Cmd) -> Result<String, ProcessError> {
        Ok(cmd.capture().run_checked()?.stdout.trim().to_string())
    }

    /// Runs for its effect.
    pub fn run(cmd: Cmd) -> Result<Output, ProcessError> {
        cmd.run_checked()
    }
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
    fn failures_are_told_apart_by_what_git_printed() {
        let t = |lines: &[&str]| classify(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
        for (lines, want) in [
            (
                &[
                    "fatal: unable to access 'https://127.0.0.1:1/r.git/': Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server",
                ][..],
                Trouble::Network,
            ),
            (
                &["fatal: unable to access 'https://nope.invalid/r/': Could not resolve host: nope.invalid"],
                Trouble::Network,
            ),
            (&["error: RPC failed; curl 56 GnuTLS recv error (-9)", "fatal: early EOF"], Trouble::Network),
            (
                &["fatal: unable to access 'https://git.example.org/r/': The requested URL returned error: 503"],
                Trouble::Network,
            ),
            (
                &["error: unable to write file compose.yml", "fatal: write error: No space left on device"],
                Trouble::Host,
            ),
            (&["fatal: could not create work tree dir 'r': Read-only file system"], Trouble::Host),
            (
                &["remote: Repository not found.", "fatal: repository 'https://git.example.org/x/' not found"],
                Trouble::None,
            ),
            (&["fatal: 'refs/pull/7/head' is not a commit"], Trouble::None),
            (
                &["fatal: could not read Username for 'https://git.example.org': terminal prompts disabled"],
                Trouble::None,
            ),
            (&["fatal: The requested URL returned error: 404"], Trouble::None),
            (&[], Trouble::None),
        ] {
            assert_eq!(t(lines), want, "{lines:?}");
        }
    }

    #[test]
    fn the_trouble_of_a_failed_call_is_read_from_all_it_printed() {
        use crate::process::{Ended, Stopped};
        let failed = |tail: &[&str]| {
            crate::process::Output {
                name: "git".into(),
                cmdline: "git clone https://git.example.org/r.git".into(),
                ended: Ended::Exited(128),
                stdout: String::new(),
                tail: tail.iter().map(|l| l.to_string()).collect(),
                leaky: Vec::new(),
                duration: std::time::Duration::ZERO,
            }
            .checked()
            .unwrap_err()
        };
        // The network line is not the last one: a message made of the failure line alone
        // would have called this the repository's fault.
        let e = failed(&[
            "error: RPC failed; curl 56 GnuTLS recv error (-9)",
            "fatal: early EOF",
            "fatal: index-pack failed",
        ]);
        assert_eq!(trouble(&e), Trouble::Network);
        assert_eq!(e.to_string(), "`git clone https://git.example.org/r.git` exited 128: fatal: index-pack failed");
        assert_eq!(trouble(&failed(&["fatal: repository 'https://git.example.org/r/' not found"])), Trouble::None);
        let spawn = ProcessError::Spawn {
            cmdline: "git".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
            hint: String::new(),
        };
        assert_eq!(trouble(&spawn), Trouble::Host);
        let stopped =
            ProcessError::Stopped { cmdline: "git".into(), why: Stopped::TimedOut(std::time::Duration::ZERO) };
        assert_eq!(trouble(&stopped), Trouble::None);
    }

    #[test]
    fn origins() {
        assert_eq!(origin_of("https://git.example.org/o/r.git").as_deref(), Some("https://git.example.org"));
        assert_eq!(origin_of("http://127.0.0.1:8080/r.git").as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(origin_of("ssh://host/o/r"), None);
        assert_eq!(origin_of("/srv/r"), None);
    }
}
