//! `ccci doctor`: is this host set up to run ccci? Each check prints pass, warn or fail with the
//! fix. Nothing is changed. Exit 0 when nothing fails (warnings allowed), 1 otherwise.
//!
//! `--json` prints (schema 1):
//!
//! ```text
//! { "schema": 1, "ok": bool,
//!   "checks": [ { "name": str, "status": "pass"|"warn"|"fail", "detail": str, "fix": str|null } ] }
//! ```
//!
//! Check names: `abra`, `abra-server`, `abra-catalogue`, `docker`, `swarm`, `stack-config`,
//! `proxy-network`, `lock-dir`, `runs-dir`, `host-file`, `disk`, `drain`, `janitor-timer`,
//! `janitor-watch`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde::Serialize;

use crate::adapters::Abra;
use crate::adapters::engine::{Deadline, Engine, models::LocalNodeState};
use crate::cli::{Cli, DoctorArgs};
use crate::config::Host;
use crate::host::{disk, drain};
use crate::lock::{self, fs_check};
use crate::process::Cmd;
use crate::{exit, logging};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Level,
    pub detail: String,
    pub fix: Option<String>,
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    Check { name, status: Level::Pass, detail: detail.into(), fix: None }
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, status: Level::Warn, detail: detail.into(), fix: Some(fix.into()) }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, status: Level::Fail, detail: detail.into(), fix: Some(fix.into()) }
}

/// How long one docker question may take.
const DOCKER_WAIT: Duration = Duration::from_secs(10);

fn abra_checks(host: &Host, out: &mut Vec<Check>) {
    let abra = Abra::new(&host.abra, &host.abra_home, &host.server);
    out.push(match abra.version() {
        Ok(v) => pass("abra", format!("{} answers --version: {v}", host.abra)),
        Err(e) => {
            fail("abra", format!("{}: {e}", host.abra), "install abra, or point CCCI_ABRA at it in the host file")
        }
    });
    let server = host.server_dir();
    out.push(if server.is_dir() {
        pass("abra-server", format!("{} exists", server.display()))
    } else {
        fail(
            "abra-server",
            format!("{} does not exist", server.display()),
            format!(
                "run `abra server add --local` as the CI user (or set CCCI_SERVER / CCCI_ABRA_HOME); the abra home is {}",
                host.abra_home.display()
            ),
        )
    });
    let catalogue = host.abra_home.join("catalogue");
    out.push(if catalogue.join(".git").exists() {
        pass("abra-catalogue", format!("{} is a git clone", catalogue.display()))
    } else {
        fail(
            "abra-catalogue",
            format!("{} is not a catalogue clone (no .git)", catalogue.display()),
            "run `abra catalogue sync` (or `abra recipe ls`) once as the CI user",
        )
    });
}

fn docker_checks(host: &Host, out: &mut Vec<Check>) {
    let engine = match Engine::from_env() {
        Ok(e) => e,
        Err(e) => {
            out.push(fail("docker", format!("DOCKER_HOST: {e}"), "fix DOCKER_HOST, or unset it for the local socket"));
            return;
        }
    };
    match engine.version(Deadline::after(DOCKER_WAIT)) {
        Ok(v) => out.push(pass(
            "docker",
            format!(
                "dockerd {} (API {}) at {}",
                v.version.unwrap_or_default(),
                v.api_version.unwrap_or_default(),
                engine.host()
            ),
        )),
        Err(e) => {
            out.push(fail("docker", format!("{e}"), "start dockerd (systemctl start docker) and check the socket"));
            return;
        }
    }
    match engine.info(Deadline::after(DOCKER_WAIT)) {
        Ok(info) => {
            let state = info.swarm.and_then(|s| s.local_node_state);
            out.push(if state == Some(LocalNodeState::ACTIVE) {
                pass("swarm", "this node is an active swarm node")
            } else {
                fail(
                    "swarm",
                    format!("swarm state {:?}", state.map_or_else(|| "unknown".to_string(), |s| s.to_string())),
                    "docker swarm init --advertise-addr 127.0.0.1",
                )
            });
        }
        Err(e) => out.push(fail("swarm", format!("GET /info: {e}"), "check dockerd")),
    }
    out.push(match crate::policy::render::check_stack_config(&host.docker) {
        Ok(()) => pass("stack-config", format!("{} has `docker stack config`", host.docker)),
        Err(e) => fail(
            "stack-config",
            e.to_string(),
            "install a Docker CLI 23.0 or newer and point CCCI_DOCKER at it in the host file",
        ),
    });
    out.push(match engine.network_exists("proxy", Deadline::after(DOCKER_WAIT)) {
        Ok(Some(driver)) => pass("proxy-network", format!("the proxy network exists ({driver})")),
        Ok(None) => fail(
            "proxy-network",
            "no network named proxy: run apps cannot join the Co-op Cloud proxy",
            "deploy the proxy (abra app new traefik; abra app deploy <its domain>), which creates it",
        ),
        Err(e) => fail("proxy-network", format!("GET /networks/proxy: {e}"), "check dockerd"),
    });
}

fn dir_checks(host: &Host, out: &mut Vec<Check>) {
    let lock_what = "the app lock dir (CCCI_APP_LOCK_DIR)";
    out.push(if !host.lock_dir.exists() {
        warn(
            "lock-dir",
            format!("{} does not exist", host.lock_dir.display()),
            "ccci run creates it (0700); or create it now with install -d -m 0700",
        )
    } else if let Err(e) = lock::dir::check_dir(&host.lock_dir, lock_what) {
        fail("lock-dir", e.to_string(), "chown it to the CI user and chmod 0700 (or 1777 for a shared /run/lock)")
    } else if let Err(e) = fs_check::check(&host.lock_dir, lock_what) {
        fail("lock-dir", e, "use a local filesystem (tmpfs: /run/lock or /run/ccci/lock)")
    } else {
        pass("lock-dir", format!("{} is a local dir of the CI user", host.lock_dir.display()))
    });
    let runs = &host.runs_dir;
    let euid = nix::unistd::geteuid().as_raw();
    out.push(match std::fs::metadata(runs) {
        Err(_) => warn(
            "runs-dir",
            format!("{} does not exist", runs.display()),
            "ccci run creates it; or install -d -m 0755 it now",
        ),
        Ok(m) if !m.is_dir() => {
            fail("runs-dir", format!("{} is not a directory", runs.display()), "remove it or set CCCI_RUNS_DIR")
        }
        Ok(m) if m.uid() != euid => fail(
            "runs-dir",
            format!("{} is owned by uid {} (ccci runs as uid {euid})", runs.display(), m.uid()),
            "chown it to the CI user",
        ),
        Ok(m) if m.mode() & 0o022 != 0 => fail(
            "runs-dir",
            format!("{} is writable by other users (mode {:o})", runs.display(), m.mode() & 0o7777),
            "chmod 0755 it: other users could plant run dirs the janitor prunes",
        ),
        Ok(_) => match fs_check::check(runs, "the runs dir (CCCI_RUNS_DIR)") {
            Err(e) => fail("runs-dir", e, "use a local filesystem"),
            Ok(()) => pass("runs-dir", format!("{} is a local dir of the CI user", runs.display())),
        },
    });
}

fn host_file_check(host: &Host) -> Check {
    let path = host.config_file.clone().unwrap_or_else(|| crate::config::host_file::DEFAULT_PATH.into());
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(_) => {
            return warn(
                "host-file",
                format!("{} does not exist: every setting has its default", path.display()),
                "install -m 0600 ci/ccci.env.example /etc/ccci/env and edit it",
            );
        }
    };
    let euid = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    let token = host.git_token.is_some();
    if meta.uid() != 0 && meta.uid() != euid {
        fail(
            "host-file",
            format!("{} is owned by uid {}", path.display(), meta.uid()),
            format!("chown root {}", path.display()),
        )
    } else if mode & 0o022 != 0 {
        fail(
            "host-file",
            format!("{} is writable by other users (mode {mode:o}): they could change where runs lock", path.display()),
            format!("chmod 0600 {}", path.display()),
        )
    } else if mode & 0o077 != 0 && token {
        fail(
            "host-file",
            format!("{} holds a git token and is readable by other users (mode {mode:o})", path.display()),
            format!("chmod 0600 {}", path.display()),
        )
    } else if mode & 0o077 != 0 {
        warn(
            "host-file",
            format!("{} is readable by other users (mode {mode:o}; it holds no token)", path.display()),
            format!("chmod 0600 {} before adding a token", path.display()),
        )
    } else {
        pass("host-file", format!("{} is readable only by its owner (mode {mode:o})", path.display()))
    }
}

fn disk_check(host: &Host) -> Check {
    let engine = Engine::from_env().ok();
    let places = disk::headroom(&host.runs_dir, disk::docker_root(engine.as_ref()).as_deref());
    let text: Vec<String> = places
        .iter()
        .map(|h| {
            format!(
                "{} {}: {}",
                h.what,
                h.path.display(),
                h.free_mb.map_or_else(|| "?".into(), |f| format!("{f} MiB free"))
            )
        })
        .collect();
    match disk::check(host.min_free_mb, &places) {
        Ok(()) => pass("disk", format!("{} (CCCI_MIN_FREE_MB={})", text.join("; "), host.min_free_mb)),
        Err(e) => fail("disk", e, "free space (docker system prune; old run dirs), or lower CCCI_MIN_FREE_MB"),
    }
}

fn drain_check(host: &Host) -> Check {
    match drain::state(&host.lock_dir) {
        drain::State::NotDraining => pass("drain", "not draining: runs may start"),
        drain::State::Draining(m) => {
            warn("drain", drain::refusal(&host.lock_dir, &m), "ccci undrain (after the maintenance)")
        }
        drain::State::Foreign(why) => {
            warn("drain", format!("{why}: not ccci's marker (ignored by runs, blocks ccci drain)"), "remove it")
        }
    }
}

/// A systemd that does not answer within this is as good as absent for `doctor`.
const SYSTEMCTL_BOUND: Duration = Duration::from_secs(10);

/// `systemctl is-enabled UNIT`: `Some(answer)`, or `None` when systemd does not answer.
fn is_enabled(unit: &str) -> Option<String> {
    let out = Cmd::new("systemctl")
        .args(["is-enabled", unit])
        .name("systemctl")
        .capture()
        .level(tracing::Level::DEBUG)
        .timeout(SYSTEMCTL_BOUND)
        .run()
        .ok()?;
    let answer = out.stdout.trim().to_string();
    (!answer.is_empty()).then_some(answer)
}

fn unit_checks(out: &mut Vec<Check>) {
    let have =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("systemctl").is_file()));
    if !have {
        return;
    }
    for (name, unit, fix) in [
        (
            "janitor-timer",
            "ccci-janitor.timer",
            "install ci/systemd/ccci-janitor.{service,timer} into /etc/systemd/system, then systemctl enable --now ccci-janitor.timer",
        ),
        (
            "janitor-watch",
            "ccci-janitor-watch.service",
            "install ci/systemd/ccci-janitor-watch.service into /etc/systemd/system, then systemctl enable --now ccci-janitor-watch.service",
        ),
    ] {
        out.push(match is_enabled(unit).as_deref() {
            Some("enabled") | Some("enabled-runtime") | Some("static") => pass(name, format!("{unit} is enabled")),
            Some(other) if other.contains("not been booted") || other.contains("Failed to connect") => {
                warn(name, format!("systemd is not running here ({other})"), "run ccci doctor on the host itself")
            }
            Some(other) => warn(name, format!("{unit}: {other}"), fix),
            None => warn(name, format!("{unit}: systemctl did not answer"), fix),
        });
    }
}

/// Every check, in order.
pub fn checks(host: &Host) -> Vec<Check> {
    let mut out = Vec::new();
    abra_checks(host, &mut out);
    docker_checks(host, &mut out);
    dir_checks(host, &mut out);
    out.push(host_file_check(host));
    out.push(disk_check(host));
    out.push(drain_check(host));
    unit_checks(&mut out);
    out
}

#[derive(Debug, Serialize)]
struct DoctorOut {
    schema: u32,
    ok: bool,
    checks: Vec<Check>,
}

pub fn main(cli: &Cli, args: &DoctorArgs) -> u8 {
    let host = match super::session::operator(cli, false) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let checks = checks(&host);
    let ok = checks.iter().all(|c| c.status != Level::Fail);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&DoctorOut { schema: 1, ok, checks }).unwrap_or_default());
    } else {
        print(&checks);
    }
    logging::flush(crate::logging::EXIT_FLUSH);
    if ok { exit::OK } else { exit::FAILED }
}

fn print(checks: &[Check]) {
    let mut o = std::io::stdout().lock();
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let tag = match c.status {
            Level::Pass => "pass",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let _ = writeln!(o, "{tag}  {:<width$}  {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = writeln!(o, "      {:<width$}  fix: {fix}", "");
        }
    }
    let fails = checks.iter().filter(|c| c.status == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Level::Warn).count();
    let _ = writeln!(o, "{} checks: {fails} failed, {warns} warnings", checks.len());
}
