//! The janitor's view of the host, read without changing anything: run apps from abra and
//! docker, app lockfiles, run dirs, and processes carrying a run token. Reading never takes a
//! lock: lock states come from `/proc/locks` (matched by device and inode).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::plan::{BULKY, Candidate, LockState, RunDir, TokenProcess};
use super::probe::unsafe_kind;
use crate::adapters::{Abra, Docker};
use crate::app::App;
use crate::config::Host;
use crate::env_vars as ev;
use crate::lock::{HolderInfo, proc_locks};
use crate::names::{self, RunAppPattern};
use crate::process::{env as child_env, group};

/// How one discovery source answered.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SourceStatus {
    pub ok: bool,
    /// Names it listed (run apps or not).
    pub listed: usize,
    pub error: Option<String>,
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
    fn add(&mut self, app: App, source: &'static str) {
        self.candidates
            .entry(app.domain.clone())
            .or_insert_with(|| Candidate { app, sources: BTreeSet::new() })
            .sources
            .insert(source);
    }
}

/// Candidates: `abra app ls -m` plus every stack namespace docker knows, filtered by the
/// run-app pattern. A source that fails is reported, and the other one still counts.
pub fn discover(host: &Host, abra: &Abra, docker: &Docker, pattern: &RunAppPattern) -> Discovery {
    let mut d = Discovery::default();
    match abra.app_ls() {
        Ok(apps) => {
            d.abra = SourceStatus { ok: true, listed: apps.len(), error: None };
            for app in apps {
                if !pattern.is_run_domain(&app.domain) {
                    d.ignored.insert(app.domain);
                    continue;
                }
                let plain = !app.server.is_empty() && !app.server.contains('/') && app.server != "..";
                let server_dir =
                    if plain { host.abra_home.join("servers").join(&app.server) } else { host.server_dir() };
                d.add(App::new(&app.domain, &server_dir), "abra");
            }
        }
        Err(e) => {
            tracing::warn!("janitor: `abra app ls -m` failed: {e}; using docker's view alone");
            d.abra = SourceStatus { ok: false, listed: 0, error: Some(e.to_string()) };
        }
    }
    match docker.namespaces(|name| pattern.stack_of_object(name)) {
        Ok(stacks) => {
            d.docker = SourceStatus { ok: true, listed: stacks.len(), error: None };
            for stack in stacks {
                let Some(domain) = pattern.domain_for_stack(&stack) else {
                    d.ignored.insert(stack);
                    continue;
                };
                d.add(App::new(&domain, &host.server_dir()), "docker");
            }
        }
        Err(e) => {
            tracing::warn!("janitor: listing docker stack objects failed: {e}; using abra's view alone");
            d.docker = SourceStatus { ok: false, listed: 0, error: Some(e.to_string()) };
        }
    }
    d
}

/// `(major, minor, inode)` → holder pids, from one read of `/proc/locks`.
#[derive(Debug, Default)]
pub struct HeldLocks(HashMap<(u32, u32, u64), Vec<i32>>);

impl HeldLocks {
    pub fn read() -> HeldLocks {
        let mut map: HashMap<(u32, u32, u64), Vec<i32>> = HashMap::new();
        for e in proc_locks::read() {
            map.entry((e.major, e.minor, e.inode)).or_default().push(e.pid);
        }
        // A racing reader can see an entry twice (see `proc_locks::holders`).
        for pids in map.values_mut() {
            pids.sort_unstable();
            pids.dedup();
        }
        HeldLocks(map)
    }

    pub fn holders(&self, meta: &std::fs::Metadata) -> Vec<i32> {
        let dev = meta.dev();
        self.0.get(&(libc::major(dev), libc::minor(dev), meta.ino())).cloned().unwrap_or_default()
    }
}

/// An app lockfile as `ccci locks` and a dry run see it.
#[derive(Debug, Clone)]
pub struct LockFileInfo {
    pub domain: String,
    pub path: std::path::PathBuf,
    pub state: LockState,
    /// Whether the domain matches the run-app pattern of this host.
    pub run_app: bool,
    pub age: Option<Duration>,
    pub info: Option<HolderInfo>,
}

/// Lists app lockfiles. `held`: read lock states from `/proc/locks` (dry runs and `ccci
/// locks`); without it, regular files are left to the probe. `all`: include lockfiles of
/// domains outside the run-app pattern (`ccci locks` shows everything). Entries that are not
/// regular files, or not ours, are reported as unsafe and never opened.
pub fn lockfiles(
    lock_dir: &Path,
    pattern: &RunAppPattern,
    held: Option<&HeldLocks>,
    all: bool,
) -> std::io::Result<Vec<LockFileInfo>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(lock_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let Some(domain) = name.to_str().and_then(names::domain_of_lock_file) else { continue };
        let run_app = pattern.is_run_domain(domain);
        if !run_app && !all {
            continue;
        }
        let path = entry.path();
        let mut item = LockFileInfo {
            domain: domain.to_string(),
            path,
            state: LockState::Unprobed,
            run_app,
            age: None,
            info: None,
        };
        let Ok(ft) = entry.file_type() else { continue };
        if held.is_none() && ft.is_file() {
            out.push(item);
            continue;
        }
        let meta = match std::fs::symlink_metadata(&item.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                item.state = LockState::Unsafe(format!("cannot inspect: {e}"));
                out.push(item);
                continue;
            }
        };
        item.age = meta.modified().ok().and_then(|t| t.elapsed().ok());
        if let Some(why) = unsafe_kind(&meta) {
            item.state = LockState::Unsafe(why);
        } else if let Some(held) = held {
            let pids = held.holders(&meta);
            item.info = HolderInfo::read(&item.path);
            item.state = if pids.is_empty() {
                LockState::Free
            } else {
                LockState::Held { pids, age: item.age, info: item.info.clone() }
            };
        }
        out.push(item);
    }
    out.sort_by(|a, b| a.domain.cmp(&b.domain));
    Ok(out)
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
        if !ft.is_dir() || !names::valid_run_id(&run_id) {
            continue;
        }
        let path = entry.path();
        let lock_path = path.join("run.lock");
        let (has_run_lock, run_lock_held) = match std::fs::symlink_metadata(&lock_path) {
            Ok(m) if m.file_type().is_file() => (true, held.map(|h| !h.holders(&m).is_empty())),
            _ => (false, None),
        };
        let newest = newest_mtime(&[path.clone(), lock_path, path.join("run.log"), path.join("results.json")]);
        let age = newest.and_then(|t| t.elapsed().ok()).unwrap_or_default();
        let bulky = BULKY.into_iter().filter(|b| std::fs::symlink_metadata(path.join(b)).is_ok()).collect();
        out.push(RunDir { run_id, path, has_run_lock, run_lock_held, age, bulky });
    }
    out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    out
}

/// Fills in the `run.lock` state of every run dir that has one.
pub fn read_run_lock_states(dirs: &mut [RunDir], held: &HeldLocks) {
    for d in dirs.iter_mut().filter(|d| d.has_run_lock) {
        d.run_lock_held = std::fs::symlink_metadata(d.path.join("run.lock")).ok().map(|m| !held.holders(&m).is_empty());
    }
}

/// The token in a `/proc/<pid>/environ` blob.
fn token_in(environ: &[u8]) -> Option<&str> {
    let key = format!("{}=", ev::CCCI_RUN_TOKEN);
    environ.split(|b| *b == 0).find_map(|kv| kv.strip_prefix(key.as_bytes())).and_then(|v| std::str::from_utf8(v).ok())
}

/// Processes carrying a run token of one of `runs` (run ids with a ccci run dir here), and the
/// pid → start time of every live process. Skips the scan when `runs` is empty.
pub fn token_processes(runs: &HashSet<&str>) -> (Vec<TokenProcess>, HashMap<i32, u64>) {
    let mut procs = Vec::new();
    let mut live = HashMap::new();
    if runs.is_empty() {
        return (procs, live);
    }
    for p in group::all_processes() {
        if matches!(p.state, 'Z' | 'X') {
            continue;
        }
        live.insert(p.pid, p.start_time);
        let Ok(environ) = std::fs::read(format!("/proc/{}/environ", p.pid)) else { continue };
        let Some((run_id, token_pid, token_start)) = token_in(&environ).and_then(child_env::parse_run_token) else {
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
        match group::read_stat(pid) {
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
    fn finds_the_token_in_an_environ_blob() {
        assert_eq!(token_in(b"A=1\0CCCI_RUN_TOKEN=r1:2:3\0B=2\0"), Some("r1:2:3"));
        assert_eq!(token_in(b"XCCCI_RUN_TOKEN=r1:2:3\0"), None);
        assert_eq!(token_in(b""), None);
    }

    #[test]
    fn lists_lockfiles_without_opening_unsafe_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = RunAppPattern::new("x.test");
        let lf = |d: &str| dir.path().join(names::lock_file_name(d));
        std::fs::write(lf("a-000001.x.test"), "").unwrap();
        std::fs::create_dir(lf("a-000002.x.test")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", lf("a-000003.x.test")).unwrap();
        std::fs::write(lf("warm-app.x.test"), "").unwrap();
        std::fs::write(dir.path().join("unrelated.lock"), "").unwrap();
        let fast = lockfiles(dir.path(), &p, None, false).unwrap();
        let states: Vec<(&str, &str)> = fast.iter().map(|l| (l.domain.as_str(), l.state.name())).collect();
        assert_eq!(
            states,
            [("a-000001.x.test", "unprobed"), ("a-000002.x.test", "unsafe"), ("a-000003.x.test", "unsafe")]
        );
        let held = HeldLocks::default();
        let deep = lockfiles(dir.path(), &p, Some(&held), true).unwrap();
        let states: Vec<(&str, &str, bool)> =
            deep.iter().map(|l| (l.domain.as_str(), l.state.name(), l.run_app)).collect();
        assert_eq!(
            states,
            [
                ("a-000001.x.test", "free", true),
                ("a-000002.x.test", "unsafe", true),
                ("a-000003.x.test", "unsafe", true),
                ("warm-app.x.test", "free", false)
            ]
        );
        assert!(lockfiles(&dir.path().join("missing"), &p, None, false).unwrap().is_empty());
    }

    #[test]
    fn protects_itself() {
        let p = protected_pids();
        assert!(p.contains(&(std::process::id() as i32)));
    }
}
