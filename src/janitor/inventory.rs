//! The janitor's view of the host, read without changing anything: run apps from abra and
//! docker, app lockfiles, run dirs, and processes carrying a run token. Reading never takes a
//! lock: lock states come from `/proc/locks` (matched by device and inode).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::plan::{BULKY, Candidate, RunDir, Stamp, TokenProcess};
use super::vocab::Source;
use crate::adapters::{Abra, Docker};
use crate::app::{App, reap};
use crate::config::Host;
use crate::env_vars as ev;
use crate::lock::proc_locks::HeldLocks;
use crate::names::{self, RunAppPattern};
use crate::process::{env as child_env, procfs};

/// How one discovery source answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceStatus {
    pub ok: bool,
    /// Names it listed (run apps or not).
    pub listed: usize,
    pub error: Option<String>,
    /// The source could not be read at all (dockerd unreachable, erroring, too slow): the
    /// janitor's infra verdict (exit 69). Not in the report: the exit code says it.
    #[serde(skip)]
    pub infra: bool,
}

/// Run apps found by abra and docker.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    pub candidates: BTreeMap<String, Candidate>,
    pub abra: SourceStatus,
    pub docker: SourceStatus,
    /// Names that are not run apps (warm/canonical apps): never probed.
    pub ignored: BTreeSet<String>,
}

impl Discovery {
    /// Records that `source` found `app` (abra and docker often both do).
    fn add(&mut self, app: App, source: Source) {
        self.candidates
            .entry(app.domain.clone())
            .or_insert_with(|| Candidate { app, stamp: Stamp::None, sources: BTreeSet::new(), lease_token: None })
            .sources
            .insert(source);
    }
}

/// A stamp ccci wrote into an app's `.env` (`CCCI_LOCK_DIR`, `CCCI_LEASE_TOKEN`). The file was
/// made by abra from a PR's `.env.sample`: it is read without following links or blocking, as
/// a dotenv text, never sourced.
fn env_stamp(env_path: &Path, key: &str) -> Option<String> {
    let (dir, name) = (env_path.parent()?, env_path.file_name()?);
    let text = crate::untrusted::read_to_string(dir, Path::new(name)).ok()?;
    let assignments = crate::dotenv::parse(&text).ok()?;
    crate::dotenv::effective(&assignments).remove(key).filter(|v| !v.is_empty())
}

/// The fencing tokens leased runs stamped on the stacks of the swarm (`ccci.lease-token` on
/// services and volumes), the largest per stack. Read from the Engine API: two requests.
pub fn lease_tokens() -> Result<BTreeMap<String, u64>, String> {
    use crate::adapters::engine::{Deadline, Engine, NS_LABEL, Scope};
    let engine = Engine::from_env().map_err(|e| e.to_string())?;
    let until = || Deadline::after(crate::adapters::docker::READ_BOUND);
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |labels: Option<&std::collections::HashMap<String, String>>| {
        let Some(l) = labels else { return };
        let (Some(ns), Some(token)) = (l.get(NS_LABEL), l.get(crate::lease::TOKEN_LABEL)) else { return };
        if let Ok(t) = token.trim().parse::<u64>() {
            let e = out.entry(ns.clone()).or_default();
            *e = (*e).max(t);
        }
    };
    for s in engine.services(Scope::AnyStack, until()).map_err(|e| e.to_string())? {
        add(s.spec.as_ref().and_then(|s| s.labels.as_ref()));
    }
    for v in engine.volumes(Scope::AnyStack, until()).map_err(|e| e.to_string())? {
        add(Some(&v.labels));
    }
    Ok(out)
}

/// Candidates: `abra app ls -m` plus every stack namespace docker knows (six Engine API
/// requests, one per object kind, or the CLI's listings on `CCCI_DOCKER_READS=cli`), filtered by
/// the run-app pattern. A source that fails is reported, and the other one still counts. The
/// docker read is bounded by [`reap::read_until`]: at most 30 s, and never past the sweep's own
/// deadline.
pub fn discover(host: &Host, abra: &Abra, docker: &Docker, pattern: &RunAppPattern) -> Discovery {
    let mut d = Discovery::default();
    match abra.app_ls() {
        Ok(apps) => {
            d.abra = SourceStatus { ok: true, listed: apps.len(), ..SourceStatus::default() };
            for app in apps {
                if !pattern.is_run_domain(&app.domain) {
                    d.ignored.insert(app.domain);
                    continue;
                }
                let plain = !app.server.is_empty() && !app.server.contains('/') && app.server != "..";
                let server_dir =
                    if plain { host.abra_home.join("servers").join(&app.server) } else { host.server_dir() };
                d.add(App::new(&app.domain, &server_dir), Source::Abra);
            }
        }
        Err(e) => {
            tracing::warn!("janitor: `abra app ls -m` failed: {e}; using docker's view alone");
            d.abra = SourceStatus { error: Some(e.to_string()), ..SourceStatus::default() };
        }
    }
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    match docker.namespaces_with_stamps(|name| pattern.stack_of_object(name), reap::read_until()) {
        Ok(stacks) => {
            d.docker = SourceStatus { ok: true, listed: stacks.len(), ..SourceStatus::default() };
            for (stack, stamps) in stacks {
                let Some(domain) = pattern.domain_for_stack(&stack) else {
                    d.ignored.insert(stack);
                    continue;
                };
                labels.entry(domain.clone()).or_default().extend(stamps);
                d.add(App::new(&domain, &host.server_dir()), Source::Docker);
            }
        }
        Err(e) => {
            tracing::warn!("janitor: listing docker stack objects failed: {e}; using abra's view alone");
            d.docker = SourceStatus { error: Some(e.to_string()), infra: e.is_infra(), ..SourceStatus::default() };
        }
    }
    // The lease tokens only matter (and are only read) with the app lease.
    let tokens = match host.lease.as_ref().map(|_| lease_tokens()) {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            tracing::warn!("janitor: cannot read the lease tokens stamped on stacks: {e}; only .env stamps count");
            BTreeMap::new()
        }
        None => BTreeMap::new(),
    };
    for (domain, c) in d.candidates.iter_mut() {
        let found = labels
            .remove(domain)
            .unwrap_or_default()
            .into_iter()
            .chain(env_stamp(&c.app.env_path, ev::CCCI_LOCK_DIR_STAMP));
        c.stamp = Stamp::of(found, &host.lock_dir);
        if host.lease.is_some() {
            let from_env =
                env_stamp(&c.app.env_path, ev::CCCI_LEASE_TOKEN_STAMP).and_then(|t| t.trim().parse::<u64>().ok());
            c.lease_token = tokens.get(&c.app.stack).copied().into_iter().chain(from_env).max();
        }
    }
    d
}

fn newest_mtime(paths: &[std::path::PathBuf]) -> Option<SystemTime> {
    paths.iter().filter_map(|p| std::fs::symlink_metadata(p).ok()?.modified().ok()).max()
}

/// The run dirs under the runs dir; with `held`, their `run.lock` state from `/proc/locks`.
pub fn run_dirs(runs_dir: &Path, held: Option<&HeldLocks>) -> Vec<RunDir> {
    let Ok(rd) = std::fs::read_dir(runs_dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        let Some(run_id) = entry.file_name().to_str().map(str::to_string) else { continue };
        if !ft.is_dir() || !names::valid_run_dir(&run_id) {
            continue;
        }
        let path = entry.path();
        let lock_path = path.join("run.lock");
        let (has_run_lock, run_lock_held) = match std::fs::symlink_metadata(&lock_path) {
            Ok(m) if m.file_type().is_file() => (true, held.map(|h| !h.holders(&lock_path, &m).is_empty())),
            _ => (false, None),
        };
        let newest = newest_mtime(&[path.clone(), lock_path, path.join("run.log"), path.join("results.json")]);
        let age = newest.and_then(|t| t.elapsed().ok()).unwrap_or_default();
        let bulky = BULKY.into_iter().filter(|b| std::fs::symlink_metadata(path.join(b.dir_name())).is_ok()).collect();
        out.push(RunDir { run_id, path, has_run_lock, run_lock_held, age, bulky });
    }
    out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    out
}

/// Fills in the `run.lock` state of every run dir that has one.
pub fn read_run_lock_states(dirs: &mut [RunDir], held: &HeldLocks) {
    for d in dirs.iter_mut().filter(|d| d.has_run_lock) {
        let p = d.path.join("run.lock");
        d.run_lock_held = std::fs::symlink_metadata(&p).ok().map(|m| !held.holders(&p, &m).is_empty());
    }
}

/// Processes carrying a run token of one of `runs` (run ids with a ccci run dir here), and the
/// pid → start time of every live process. Skips the scan when `runs` is empty.
pub fn token_processes(runs: &HashSet<&str>) -> (Vec<TokenProcess>, HashMap<i32, u64>) {
    let mut procs = Vec::new();
    let mut live = HashMap::new();
    if runs.is_empty() {
        return (procs, live);
    }
    for p in procfs::all_processes() {
        if p.is_dead() {
            continue;
        }
        live.insert(p.pid, p.start_time);
        let Some(environ) = procfs::environ(p.pid) else { continue };
        let Some((run_id, token_pid, token_start)) =
            procfs::env_value(&environ, ev::CCCI_RUN_TOKEN).and_then(child_env::parse_run_token)
        else {
            continue;
        };
        if runs.contains(run_id.as_str()) {
            procs.push(TokenProcess { pid: p.pid, start_time: p.start_time, run_id, token_pid, token_start });
        }
    }
    (procs, live)
}

/// The janitor and its ancestors: never signalled, whatever their environment says.
pub fn protected_pids() -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let mut pid = std::process::id() as i32;
    while pid > 1 && out.insert(pid) {
        match procfs::read_stat(pid) {
            Some(st) => pid = st.ppid,
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protects_itself_and_its_ancestors() {
        let p = protected_pids();
        // Its own pid goes in before anything is read; the parent only if /proc was walked.
        let parent = nix::unistd::getppid().as_raw();
        assert!(p.contains(&(std::process::id() as i32)) && p.contains(&parent), "{p:?} lacks parent {parent}");
        assert!(!p.contains(&1), "init is never an ancestor worth protecting: {p:?}");
    }
}
