//! Rendering the exact configuration abra will deploy, with docker's own compose loader
//! (`docker stack config`, the loader of `docker stack deploy` and abra): it merges the files,
//! interpolates them and prints every mount in long syntax with an absolute source, so the gate
//! judges what will run rather than what a second compose interpreter thinks will run.
//!
//! Three things keep the render faithful to abra's deploy and safe to run as root:
//!
//! - the interpolation environment is exactly the app's `.env` (plus abra.sh's exports, which abra
//!   merges in): the child runs under `env -i`, because abra interpolates from the app's
//!   environment alone, and an ambient `PATH` or `HOME` in the render would let
//!   `${HOME:-./data}` render one way here and another way in abra;
//! - keys that would steer the docker CLI itself (`DOCKER_CONFIG` naming a config with plugin
//!   hooks, `LD_PRELOAD`, `HOME`) are refused rather than passed or dropped;
//! - every listed compose file passes [`crate::untrusted::read`] first (docker would follow a
//!   link or block on a FIFO), and the render runs with a timeout through the spawn path: an
//!   `env_file:` naming a FIFO blocks the docker CLI forever, deaf to SIGTERM, and only the
//!   spawn path's TERM→grace→KILL ends it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tracing::Level;

use crate::process::{Cmd, ProcessError, Stopped};
use crate::untrusted::{self, UntrustedError};

/// The rendered config of a recipe is a few KiB; a loader output past this is an alias bomb.
const MAX_RENDERED: usize = 16 * 1024 * 1024;
/// `docker stack --help` answers at once; it only needs a bound so a broken CLI cannot hang ccci.
const HELP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum RenderError {
    #[error("COMPOSE_FILE entry {entry:?} {why}; list compose files relative to the recipe root, separated by `:`")]
    BadComposeFile { entry: String, why: &'static str },
    #[error("cannot read a recipe file: {0}")]
    Unreadable(#[from] UntrustedError),
    #[error("the app's environment sets {key:?}, which {why}; remove it from the .env (and abra.sh)")]
    BadEnvKey { key: String, why: &'static str },
    #[error(
        "abra.sh line {line}: {why}; write `export KEY=value` with a plain value (letters, digits and `_.,:/+@%-`), which abra and a shell read the same way"
    )]
    AbraSh { line: usize, why: &'static str },
    #[error(
        "{docker} has no `docker stack config`, which ccci needs to render a recipe before it deploys it; point CCCI_DOCKER at a Docker CLI 23.0 or newer (Debian's docker.io 20.10 lacks it; docker.com's static build or Docker CE has it)"
    )]
    NoStackConfig { docker: String },
    #[error("cannot use {docker:?} as the docker CLI: {why} (set CCCI_DOCKER)")]
    BadDocker { docker: String, why: &'static str },
    #[error(transparent)]
    Spawn(#[from] ProcessError),
    #[error("docker stack config failed: {line}")]
    Failed { line: String },
    #[error("docker stack config {0}")]
    Stopped(Stopped),
    #[error(
        "docker stack config printed {size} bytes, over the cap of {MAX_RENDERED}; the compose files expand too much"
    )]
    TooLarge { size: usize },
}

/// The compose files of a `COMPOSE_FILE` value, in order (`compose.yml` when empty). Each entry
/// must be a plain relative path inside the tree: it becomes `--compose-file=ENTRY` for docker
/// and a name for [`crate::untrusted::read`].
pub fn compose_files(value: &str) -> Result<Vec<String>, RenderError> {
    if value.trim().is_empty() {
        return Ok(vec!["compose.yml".to_string()]);
    }
    value
        .split(':')
        .map(|entry| {
            let bad = |why| RenderError::BadComposeFile { entry: entry.to_string(), why };
            if entry.is_empty() {
                return Err(bad("is empty (a stray `:`)"));
            }
            if entry.starts_with('/') {
                return Err(bad("is an absolute path"));
            }
            if entry.starts_with('-') {
                return Err(bad("starts with `-`"));
            }
            for c in entry.split('/') {
                if c == ".." || c == "." {
                    return Err(bad("has a `.` or `..` component"));
                }
                if c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                    return Err(bad("has a component outside [A-Za-z0-9._-]"));
                }
            }
            Ok(entry.to_string())
        })
        .collect()
}

/// abra merges the recipe's `abra.sh` exports over the app's `.env` before it interpolates the
/// compose files (its reader matches `^export\s+(\w+=\w+)` and takes the rest of the line as the
/// value). Lines abra would not take are skipped; a line it would take but read differently from
/// a shell is refused, so the render never guesses.
pub fn abra_sh_exports(text: &str) -> Result<Vec<(String, String)>, RenderError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix("export") else { continue };
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        let body = rest.trim_start_matches([' ', '\t']);
        let key_len = body.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
        let (key, after) = body.split_at(key_len);
        let Some(value) = after.strip_prefix('=') else { continue };
        if key.is_empty() || !value.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            // abra's regexp needs a word character on both sides of `=`: it skips this line.
            continue;
        }
        let fail = |why| RenderError::AbraSh { line: i + 1, why };
        if !rest.starts_with(' ') || rest.starts_with("  ") {
            return Err(fail("separate `export` from the key with exactly one space"));
        }
        if key.as_bytes()[0].is_ascii_digit() {
            return Err(fail("the key starts with a digit"));
        }
        if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.,:/+@%-".contains(&b)) {
            return Err(fail(
                "the value has quotes, spaces, a comment, `$`, `=` or another character abra keeps verbatim",
            ));
        }
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Whether a key may go into the render's environment; `Err` says why not.
fn env_key_ok(key: &str, value: &str) -> Result<(), &'static str> {
    let name_ok = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !name_ok {
        return Err("is not a variable name (^[A-Za-z_][A-Za-z0-9_]*$)");
    }
    if value.contains('\0') {
        return Err("has a NUL byte in its value");
    }
    if key.starts_with("DOCKER_") {
        return Err("would steer the docker CLI that renders the config (its config dir, host or context)");
    }
    if key.starts_with("LD_") {
        return Err("would change how the docker CLI is loaded");
    }
    if matches!(key, "HOME" | "PATH") {
        return Err("would change where the docker CLI finds its config and plugins");
    }
    if matches!(key, "GODEBUG" | "GOGC" | "GOMAXPROCS" | "GOMEMLIMIT" | "GOTRACEBACK" | "GORACE") {
        return Err("would tune the Go runtime of the docker CLI");
    }
    if key.starts_with("OTEL_EXPORTER_") {
        return Err("would make the docker CLI send telemetry to an address of the recipe's choosing");
    }
    Ok(())
}

/// `docker` as an absolute path: the render runs under `env -i`, with no PATH of its own.
fn resolve_docker(docker: &str) -> Result<PathBuf, RenderError> {
    let bad = |why| RenderError::BadDocker { docker: docker.to_string(), why };
    // `env` would read `NAME=VALUE` as an assignment, not the program.
    if docker.contains('=') {
        return Err(bad("the path contains `=`"));
    }
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if docker.contains('/') {
        let p = std::path::absolute(docker).map_err(|_| bad("cannot make the path absolute"))?;
        return if executable(&p) { Ok(p) } else { Err(bad("no executable file there")) };
    }
    let path = crate::process::env::base().into_iter().find(|(k, _)| k == "PATH").map(|(_, v)| v).unwrap_or_default();
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(docker))
        .find(|p| executable(p))
        .ok_or_else(|| bad("not found on PATH"))
}

/// A clear start-up error when `docker` has no `stack config`. Decided from the Commands list
/// of `docker stack --help`, never from an exit code: Debian's 20.10 CLI answers
/// `docker stack config --help` with the `docker stack` help and exit 0.
pub fn check_stack_config(docker: &str) -> Result<(), RenderError> {
    // The answer cannot change within one ccci process: ask once per program (the preflight),
    // not before every render (a run renders up to five times).
    static CONFIRMED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let confirmed = || CONFIRMED.lock().unwrap_or_else(|e| e.into_inner());
    if confirmed().iter().any(|d| d == docker) {
        return Ok(());
    }
    ask_stack_config(docker)?;
    confirmed().push(docker.to_string());
    Ok(())
}

fn ask_stack_config(docker: &str) -> Result<(), RenderError> {
    let out = Cmd::new(docker)
        .args(["stack", "--help"])
        .name("docker")
        .capture()
        .level(Level::DEBUG)
        .timeout(HELP_TIMEOUT)
        .hint(" (set CCCI_DOCKER to a Docker CLI 23.0 or newer)")
        .run()?;
    if let Some(s) = out.stopped() {
        return Err(RenderError::Stopped(s));
    }
    // Help goes to stdout; look at stderr's tail as well in case a build prints it there.
    let text = format!("{}\n{}", out.stdout, out.tail.join("\n"));
    if help_lists_config(&text) { Ok(()) } else { Err(RenderError::NoStackConfig { docker: docker.to_string() }) }
}

/// Whether a `docker stack --help` text lists `config` under `Commands:`.
fn help_lists_config(help: &str) -> bool {
    let mut in_commands = false;
    for line in help.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            if line.trim().is_empty() || !line.starts_with(' ') {
                in_commands = false;
                continue;
            }
            if line.split_whitespace().next() == Some("config") {
                return true;
            }
        }
    }
    false
}

/// Renders `files` (relative to `tree`, the render's working directory) with `env` as the
/// whole environment of `docker stack config`. Returns the rendered YAML.
pub fn render(
    docker: &str,
    tree: &Path,
    files: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<String, RenderError> {
    for f in files {
        untrusted::read(tree, Path::new(f))?;
    }
    for (k, v) in env {
        env_key_ok(k, v).map_err(|why| RenderError::BadEnvKey { key: k.clone(), why })?;
    }
    let docker_path = resolve_docker(docker)?;
    let mut cmd = Cmd::new("env")
        .arg("-i")
        .args(env.iter().map(|(k, v)| format!("{k}={v}")))
        .arg(docker_path.display().to_string())
        .args(["stack", "config"])
        .args(files.iter().map(|f| format!("--compose-file={f}")))
        .name("docker")
        .cwd(tree)
        .capture()
        .level(Level::DEBUG)
        .timeout(timeout);
    cmd = cmd.hint(" (is coreutils' env on PATH?)");
    let out = cmd.run()?;
    if let Some(s) = out.stopped() {
        return Err(RenderError::Stopped(s));
    }
    if !out.success() {
        let line = out.last_error_line().unwrap_or("(no message)");
        return Err(RenderError::Failed { line: withhold_file_content(line, tree) });
    }
    if out.stdout.len() > MAX_RENDERED {
        return Err(RenderError::TooLarge { size: out.stdout.len() });
    }
    Ok(out.stdout)
}

/// docker's loader quotes the offending line of an env file it cannot parse
/// (`invalid env file (/etc/shadow): variable 'root:…' contains whitespaces`), and it reads
/// `env_file:` paths outside the tree while rendering — before the gate can refuse them. A
/// refusal must not carry a line of a host file into a PR's build log: the detail is kept only
/// for env files inside the tree (the PR's own content).
fn withhold_file_content(line: &str, tree: &Path) -> String {
    const MARK: &str = "invalid env file (";
    let Some(start) = line.find(MARK) else { return line.to_string() };
    let rest = &line[start + MARK.len()..];
    let Some(end) = rest.find("):") else { return line.to_string() };
    let path = &rest[..end];
    let tree = super::gate::normalize(&tree.to_string_lossy(), "/");
    let norm = super::gate::normalize(path, &tree);
    if norm == tree || norm.starts_with(&format!("{tree}/")) {
        return line.to_string();
    }
    format!("{}{MARK}{path}): the loader's detail is withheld because it can quote that file's content", &line[..start])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_file_lists() {
        assert_eq!(compose_files("").unwrap(), vec!["compose.yml"]);
        assert_eq!(compose_files("  ").unwrap(), vec!["compose.yml"]);
        assert_eq!(
            compose_files("compose.yml:compose.postgres.yml:postgres/compose.tune.yml").unwrap(),
            vec!["compose.yml", "compose.postgres.yml", "postgres/compose.tune.yml"]
        );
        for bad in [
            "compose.yml:",
            ":compose.yml",
            "/etc/compose.yml",
            "../compose.yml",
            "a/../compose.yml",
            "./compose.yml",
            "-c",
            "--help",
            "a b.yml",
            "a//b.yml",
            "compose.yml:$(id)",
        ] {
            let e = compose_files(bad).unwrap_err();
            assert!(matches!(e, RenderError::BadComposeFile { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("COMPOSE_FILE entry"), "{e}");
        }
    }

    #[test]
    fn abra_sh_exports_as_abra_reads_them() {
        let text = "export INDEX_VERSION=v1\nexport A_B=x.y-z/1\n  export INDENTED=1\nexport NOVALUE=\nexport QUOTED=\"v1\"\nfunction f() {\n  export IN_FN=$(cat /x)\n}\n# export C=1\nexport";
        assert_eq!(
            abra_sh_exports(text).unwrap(),
            vec![("INDEX_VERSION".to_string(), "v1".to_string()), ("A_B".to_string(), "x.y-z/1".to_string())]
        );
        for bad in
            ["export A=v1 # comment", "export A=v1$B", "export A=a=b", "export  A=v1", "export\tA=v1", "export A=v1 "]
        {
            let e = abra_sh_exports(bad).unwrap_err();
            assert!(matches!(e, RenderError::AbraSh { line: 1, .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn env_keys_that_steer_the_cli_are_refused() {
        for (k, v) in [("DOMAIN", "x"), ("COMPOSE_FILE", "a:b"), ("TZ", "UTC"), ("DB_DOCKER_VERSION", "1"), ("_X", "")]
        {
            assert!(env_key_ok(k, v).is_ok(), "{k}");
        }
        for (k, v) in [
            ("DOCKER_CONFIG", "/tmp"),
            ("DOCKER_HOST", "tcp://x"),
            ("LD_PRELOAD", "/x.so"),
            ("HOME", "/tmp"),
            ("PATH", "/tmp"),
            ("GODEBUG", "x"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
            ("1A", "x"),
            ("A-B", "x"),
            ("A", "x\0y"),
        ] {
            assert!(env_key_ok(k, v).is_err(), "{k}");
        }
    }

    #[test]
    fn stack_config_support_is_read_from_the_commands_list() {
        let new = "\nUsage:  docker stack COMMAND\n\nManage Swarm stacks\n\nCommands:\n  config      Outputs the final config file, after doing merges and interpolations\n  deploy      Deploy a new stack or update an existing stack\n\nRun 'docker stack COMMAND --help' for more information on a command.\n";
        let old = "\nUsage:  docker stack [OPTIONS] COMMAND\n\nManage Docker stacks\n\nOptions:\n      --orchestrator string   Orchestrator to use (swarm|kubernetes|all)\n\nCommands:\n  deploy      Deploy a new stack or update an existing stack\n  ls          List stacks\n\nRun 'docker stack COMMAND --help' for more information: config.\n";
        assert!(help_lists_config(new));
        assert!(!help_lists_config(old));
        assert!(!help_lists_config("config\n"));
    }

    #[test]
    fn env_file_content_is_withheld_outside_the_tree() {
        let tree = Path::new("/srv/run/tree");
        let outside = "invalid env file (/etc/shadow): variable 'root:x y' contains whitespaces";
        let w = withhold_file_content(outside, tree);
        assert!(w.starts_with("invalid env file (/etc/shadow): the loader's detail is withheld"), "{w}");
        assert!(!w.contains("root:x"), "{w}");
        let up = withhold_file_content("invalid env file (/srv/run/tree/../x): variable 'A B' …", tree);
        assert!(!up.contains("A B"), "{up}");
        let inside = "invalid env file (/srv/run/tree/app.env): variable 'A B' contains whitespaces";
        assert_eq!(withhold_file_content(inside, tree), inside);
        assert_eq!(
            withhold_file_content("services.app Additional property x", tree),
            "services.app Additional property x"
        );
    }
}
