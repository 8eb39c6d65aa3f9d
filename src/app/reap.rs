//! Taking a run app apart: the routine shared by teardown, the pre-deploy clean-up and the
//! janitor. Tolerates half-gone stacks (a SIGKILL between `undeploy` and `remove` leaves volumes
//! and secrets with no service).
//!
//! Every mutation (`abra app undeploy`, `abra app remove`, `docker stack rm`, each `docker rm`
//! batch) is preceded by the caller's [`Fence`]: on a shared swarm the caller must prove, right
//! then, that the domain's app lease is still its own, or the reap stops before touching what
//! may already be another run's app.

use std::time::{Duration, Instant};

use super::App;
use crate::adapters::docker::REMOVABLE;
use crate::adapters::{Abra, Docker, Residue};
use crate::lifetime;

/// The proof, asked immediately before every mutation of a reap, that the caller still owns
/// the app's domain (the cross-host app lease's fence). `Err` says why not, and stops the reap.
pub trait Fence {
    fn check(&self, step: &str) -> Result<(), String>;
}

/// No lease (one swarm per host): the local app lock alone guards the app.
pub struct Unfenced;

impl Fence for Unfenced {
    fn check(&self, _step: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Everything of the stack that still exists, plus the `.env` when it remains.
pub fn leftovers(docker: &Docker, app: &App) -> Result<Vec<String>, String> {
    let mut items = docker.residue(&app.stack).map_err(|e| e.to_string())?.items();
    if app.env_path.exists() {
        items.push(format!("env:{}", app.env_path.display()));
    }
    Ok(items)
}

/// Removes the app with docker directly: `stack rm`, wait for its containers to go, then its
/// volumes, secrets, configs and networks, then the `.env`.
pub fn docker_reap(docker: &Docker, app: &App, fence: &dyn Fence) -> Result<(), String> {
    let (stack, env_path) = (app.stack.as_str(), &app.env_path);
    let residue = docker.residue(stack).map_err(|e| e.to_string())?;
    if !residue.services.is_empty() {
        fence.check("docker stack rm")?;
        docker.stack_rm(stack).map_err(|e| e.to_string())?;
    }
    wait_gone(docker, stack, Duration::from_secs(60), |r| r.services.is_empty() && r.containers.is_empty())?;
    // Volumes can stay busy for a moment after their containers exit.
    let end = crate::lifetime::instant_after(Duration::from_secs(30));
    loop {
        let r = docker.residue(stack).map_err(|e| e.to_string())?;
        let mut failed = Vec::new();
        if !r.is_empty() {
            fence.check("docker rm")?;
        }
        if !r.containers.is_empty() {
            let _ = docker.rm("container", &r.containers);
        }
        for kind in REMOVABLE {
            let names = match kind {
                "volume" => &r.volumes,
                "secret" => &r.secrets,
                "config" => &r.configs,
                _ => &r.networks,
            };
            if let Err(e) = docker.rm(kind, names) {
                failed.push(format!("{kind}: {e}"));
            }
        }
        let left = docker.residue(stack).map_err(|e| e.to_string())?;
        if left.is_empty() {
            break;
        }
        if Instant::now() >= end {
            return Err(format!(
                "still present after docker removal: {} ({})",
                left.items().join(", "),
                failed.join("; ")
            ));
        }
        if let Some(stop) = lifetime::sleep(Duration::from_millis(500)) {
            return Err(format!("stopped: {stop:?}"));
        }
    }
    match std::fs::remove_file(env_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", env_path.display())),
    }
}

/// Polls until `done` holds for the stack's residue, or `within` passes.
pub fn wait_gone(
    docker: &Docker,
    stack: &str,
    within: Duration,
    done: impl Fn(&Residue) -> bool,
) -> Result<(), String> {
    let end = crate::lifetime::instant_after(within);
    loop {
        let r = docker.residue(stack).map_err(|e| e.to_string())?;
        if done(&r) {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(format!("still present after {}: {}", crate::clock::human(within), r.items().join(", ")));
        }
        if let Some(stop) = lifetime::sleep(Duration::from_millis(500)) {
            return Err(format!("stopped: {stop:?}"));
        }
    }
}

/// The janitor's reap routine: abra when the `.env` is there, docker when it is not or abra
/// fails. Verification is the caller's business.
pub fn reap(abra: &Abra, docker: &Docker, app: &App, fence: &dyn Fence) -> Result<(), String> {
    let (domain, stack, env_path) = (app.domain.as_str(), app.stack.as_str(), &app.env_path);
    if env_path.exists() {
        let deployed = docker.residue(stack).map(|r| !r.services.is_empty()).unwrap_or(true);
        // A refused fence ends the reap; only abra's own failure falls back to docker.
        let via_abra = || -> Result<Result<(), String>, String> {
            if deployed {
                fence.check("abra app undeploy")?;
                if let Err(e) = abra.app_undeploy(domain) {
                    return Ok(Err(e.to_string()));
                }
            }
            fence.check("abra app remove")?;
            Ok(abra.app_remove(domain).map(|_| ()).map_err(|e| e.to_string()))
        };
        match via_abra()? {
            Ok(()) if docker.residue(stack).map(|r| r.is_empty()).unwrap_or(false) && !env_path.exists() => {
                return Ok(());
            }
            Ok(()) => tracing::info!("reap {domain}: abra left objects behind; removing them with docker"),
            Err(e) => tracing::warn!("reap {domain}: abra failed ({e}); removing the app with docker"),
        }
    }
    docker_reap(docker, app, fence)
}
