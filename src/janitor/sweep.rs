//! One sweep: the runs phase first (stragglers of dead runs stopped, run dirs pruned: a
//! straggler could otherwise still be deploying or writing to an app the sweep is about to
//! reap), then discovery, then the app and lockfile phase.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::apply::{self, Sweeper};
use super::inventory;
use super::plan::{self, Action, Candidate, Inventory, Leases};
use super::prune;
use super::report::{DiscoveryOut, Report, SettingsOut};
use super::stragglers;
use super::vocab::{Act, DirAct, Kind, LockSeen, Part, ProcAct};
use crate::adapters::{Abra, Docker};
use crate::config::Host;
use crate::lease::Lease;
use crate::lock::proc_locks::HeldLocks;
use crate::lock::{LockDir, LockState, Look};
use crate::names::RunAppPattern;

/// The run-start janitor's own budget (§6); what it leaves is the timer's job.
pub const RUN_START_BUDGET: Duration = Duration::from_secs(300);

/// How one sweep behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `janitor` or `run-start` (in reports and log lines).
    pub kind: Kind,
    pub dry_run: bool,
    pub prune_after: Duration,
    /// Stop between candidates once this has passed.
    pub deadline: Duration,
    /// Between SIGTERM and SIGKILL for stragglers.
    pub kill_grace: Duration,
}

/// The janitor inside `ccci run`: a full sweep with a budget of its own, never failing the run.
/// Call it after the run dir exists and before the fetch, with the run's abra (its per-run
/// ABRA_DIR lists the canonical servers through the `servers` symlink).
pub fn run_start(host: &Host, abra: &Abra, docker: &Docker, budget: Duration) -> Report {
    let settings = Settings {
        kind: Kind::RunStart,
        dry_run: false,
        prune_after: Duration::from_secs(crate::config::limits::DEFAULT_PRUNE_DAYS * 86_400),
        deadline: budget,
        kill_grace: host.kill_grace,
    };
    let report = sweep(host, abra, docker, &settings);
    for e in &report.errors {
        tracing::warn!("run-start janitor: {e}");
    }
    tracing::info!("{}", report.summary());
    report
}

/// One sweep: the runs phase (stragglers, then prune), discovery, the app and lockfile phase.
pub fn sweep(host: &Host, abra: &Abra, docker: &Docker, s: &Settings) -> Report {
    let t0 = Instant::now();
    let started = SystemTime::now();
    let pattern = RunAppPattern::new(&host.domain_suffix);
    let mut report = Report::new(
        s.kind,
        s.dry_run,
        crate::clock::rfc3339(started),
        SettingsOut {
            lock_dir: host.lock_dir.display().to_string(),
            runs_dir: host.runs_dir.display().to_string(),
            domain_suffix: host.domain_suffix.clone(),
            prune_after_days: s.prune_after.as_secs() / 86_400,
            deadline_secs: s.deadline.as_secs(),
        },
    );
    // Every child of this sweep (abra, docker) ends by the sweep's deadline: a wedged dockerd
    // must not stretch a janitor past its --deadline, nor the run-start janitor past its budget.
    let deadline_at = t0.checked_add(s.deadline).unwrap_or_else(|| crate::lifetime::instant_after(s.deadline));
    let _bound = crate::process::bound_children(deadline_at);
    let lease = host.lease.as_ref().map(Lease::new);
    let sweeper =
        Sweeper { abra, docker, lock_dir: &host.lock_dir, deadline_at, lease: lease.as_ref(), machine: &host.machine };

    // Stragglers of dead runs first, prune with them: a surviving grandchild of a SIGKILLed run
    // (a hook's backgrounded deploy, a test looping on the app's domain) could recreate objects
    // behind the reap, or act on the next run of the same domain as soon as the probe lock
    // drops.
    let held = if s.dry_run { Some(HeldLocks::read()) } else { None };
    runs_phase(host, s, &sweeper, held.as_ref(), &mut report);
    let t_runs = t0.elapsed();

    // Discovery, then the app and lockfile phase.
    let disc = inventory::discover(host, abra, docker, &pattern);
    let t_discovery = t0.elapsed();
    for (name, st) in [("abra app ls -m", &disc.abra), ("docker", &disc.docker)] {
        if let Some(e) = &st.error {
            report.errors.push(format!("discovery through {name} failed: {e}"));
        }
    }
    report.discovery = DiscoveryOut {
        abra: disc.abra.clone(),
        docker: disc.docker.clone(),
        candidates: disc.candidates.len(),
        ignored: disc.ignored.iter().cloned().collect(),
    };
    let mut inv =
        Inventory { candidates: disc.candidates, leases: read_leases(lease.as_ref()), ..Inventory::default() };
    if let Leases::Unknown(why) = &inv.leases
        && !inv.candidates.is_empty()
    {
        report.errors.push(format!("cannot read the app leases: {why}; no leased app is reaped this sweep"));
        report.leases_unread = true;
    }
    if host.lock_dir.is_dir() {
        match crate::lock::dir::list(&host.lock_dir, &|d| pattern.is_run_domain(d), false, held.as_ref()) {
            Ok(list) => inv.lockfiles = list.into_iter().map(|l| (l.domain, l.state)).collect(),
            Err(e) => report.errors.push(format!("cannot list the lock dir {}: {e}", host.lock_dir.display())),
        }
    } else if !inv.candidates.is_empty() {
        // Without the lock dir nothing can be probed: a janitor must not guess (a wrong lock dir
        // would make every live run look like an orphan).
        let why = format!(
            "the app lock dir {} does not exist: nothing can be probed (check CCCI_APP_LOCK_DIR; ccci run creates it)",
            host.lock_dir.display()
        );
        report.errors.push(why.clone());
        let unsafe_state = LockState::Unsafe(why);
        inv.lockfiles = inv.candidates.keys().map(|d| (d.clone(), unsafe_state.clone())).collect();
    }
    let actions = plan::plan(&inv, s.prune_after);
    if s.dry_run {
        for a in &actions {
            match apply::entry_without_applying(a, true) {
                Some(Ok(app)) => report.apps.push(app),
                Some(Err(lf)) => report.lockfiles.push(lf),
                None => {}
            }
        }
    } else {
        apply_apps_and_lockfiles(&sweeper, &host.lock_dir, &actions, &mut report);
    }
    tracing::debug!(
        "{}: run dirs and stragglers {:?}, discovery {:?}, apps and lockfiles {:?}",
        s.kind,
        t_runs,
        t_discovery.saturating_sub(t_runs),
        t0.elapsed().saturating_sub(t_discovery)
    );
    report.completed = report.stopped.is_none();
    if let Some(why) = report.stopped {
        tracing::warn!(
            "{}: stopped early ({why}) after {}; what is left is the next sweep's job",
            s.kind,
            crate::clock::human(t0.elapsed())
        );
    }
    report.duration_ms = t0.elapsed().as_millis() as u64;
    report.exit_code = report.compute_exit_code(crate::lifetime::cause().map(|c| c.exit_code()));
    report
}

/// The bound of the one read of every lease key: an etcd without a quorum answers nothing, and
/// the sweep must go on without the leases rather than wait for it (as long as a docker read with
/// no wait around it, [`crate::adapters::docker::READ_BOUND`]).
const LEASE_READ: Duration = crate::adapters::docker::READ_BOUND;

/// Every held lease key under the prefix, in one linearizable read (`Off` without the lease).
fn read_leases(lease: Option<&Lease>) -> Leases {
    let Some(lease) = lease else { return Leases::Off };
    match lease.read_all(crate::lifetime::Deadline::after(LEASE_READ)) {
        Ok(all) => Leases::Read(all.into_iter().map(|(d, k)| (d, (k.token, k.describe()))).collect()),
        Err(e) => {
            tracing::warn!("janitor: {e}: no app of the shared swarm can be proved orphaned now");
            Leases::Unknown(e.to_string())
        }
    }
}

/// The straggler sweep and prune.
fn runs_phase(host: &Host, s: &Settings, sweeper: &Sweeper, held: Option<&HeldLocks>, report: &mut Report) {
    // `/proc/locks` is slow to read with many locks held (about 15 µs a line here): a real
    // sweep reads it only when some process carries the token of a ccci run dir.
    let mut run_dirs = inventory::run_dirs(&host.runs_dir, held);
    let ours: HashSet<String> = run_dirs.iter().filter(|d| d.has_run_lock).map(|d| d.run_id.clone()).collect();
    let (processes, live) = inventory::token_processes(&ours.iter().map(String::as_str).collect());
    if held.is_none() && !processes.is_empty() {
        inventory::read_run_lock_states(&mut run_dirs, &HeldLocks::read());
    }
    let inv = Inventory {
        candidates: BTreeMap::new(),
        leases: Leases::Off,
        lockfiles: BTreeMap::new(),
        processes,
        live,
        protected: inventory::protected_pids(),
        run_dirs,
    };
    let actions = plan::plan(&inv, s.prune_after);
    let mut kills = Vec::new();
    for a in &actions {
        match a {
            Action::Prune { run_id, path, parts } => {
                if !s.dry_run && report.stopped.is_none() {
                    report.stopped = sweeper.stopped();
                }
                let entry = if s.dry_run || report.stopped.is_some() {
                    prune::PruneEntry {
                        run_id: run_id.clone(),
                        path: path.display().to_string(),
                        action: if s.dry_run { DirAct::WouldPrune } else { DirAct::NotReached },
                        removed: parts.clone(),
                        reason: None,
                    }
                } else {
                    let e = prune::prune(run_id, path, parts);
                    match e.action {
                        DirAct::Pruned => {
                            tracing::info!("janitor: pruned {} ({})", path.display(), Part::list(&e.removed))
                        }
                        DirAct::Failed => tracing::warn!(
                            "janitor: pruning {} failed: {}",
                            path.display(),
                            e.reason.as_deref().unwrap_or("")
                        ),
                        _ => {}
                    }
                    e
                };
                report.run_dirs.push(entry);
            }
            Action::KeepForeignDir { path } => report.run_dirs.push(prune::PruneEntry {
                run_id: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                path: path.display().to_string(),
                action: DirAct::Kept,
                removed: Vec::new(),
                reason: Some("no run.lock: not a ccci run dir, never touched".into()),
            }),
            Action::Kill { pid, start_time, run_id } => kills.push((*pid, *start_time, run_id.clone())),
            _ => {}
        }
    }
    if !s.dry_run && report.stopped.is_none() {
        report.stopped = sweeper.stopped();
    }
    if s.dry_run {
        report.stragglers = kills
            .iter()
            .map(|(pid, _, run_id)| stragglers::StragglerEntry {
                pid: *pid,
                run_id: run_id.clone(),
                action: ProcAct::WouldKill,
                reason: None,
            })
            .collect();
    } else if report.stopped.is_none() && !kills.is_empty() {
        report.stragglers = stragglers::stop(&kills, s.kill_grace);
    }
}

/// The app and lockfile actions of a real sweep. Locks held by live runs are found first, in
/// parallel (a quick look that is final: a held lock is left alone); orphans are then reaped
/// one by one in domain order, with the stop checks between them; lockfiles with no app behind
/// them are unlinked in parallel (each under its own probe lock).
fn apply_apps_and_lockfiles(sweeper: &Sweeper, lock_dir: &Path, actions: &[Action], report: &mut Report) {
    let dir = match LockDir::open(lock_dir) {
        Ok(d) => Some(d),
        Err(e) => {
            report.errors.push(format!("cannot open the lock dir {}: {e}", lock_dir.display()));
            None
        }
    };
    let name_of = |domain: &str| OsString::from(crate::names::lock_file_name(domain));
    let to_peek: Vec<&Candidate> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Reap { candidate, lock: LockState::Unprobed } => Some(candidate),
            _ => None,
        })
        .collect();
    let mut peeked: HashMap<String, Look> = HashMap::new();
    if let Some(dir) = &dir {
        let peeks = par_map(&to_peek, |c| dir.peek(&name_of(&c.app.domain)));
        peeked = to_peek.iter().map(|c| c.app.domain.clone()).zip(peeks).collect();
    }
    let mut stale = Vec::new();
    for a in actions {
        let entry = match a {
            Action::Reap { candidate, .. } => {
                match peeked.remove(&candidate.app.domain).and_then(|p| sweeper.from_peek(candidate, p)) {
                    Some(e) => Ok(e),
                    None => {
                        if report.stopped.is_none() {
                            report.stopped = sweeper.stopped();
                        }
                        if report.stopped.is_none() {
                            Ok(sweeper.reap(candidate))
                        } else {
                            Ok(apply::app_entry(candidate, LockSeen::Unprobed, Act::NotReached))
                        }
                    }
                }
            }
            Action::UnlinkStale { domain } => {
                stale.push(domain.as_str());
                continue;
            }
            Action::Unproven { candidate, reason } => {
                tracing::warn!("janitor: {}: {reason}", candidate.app.domain);
                match apply::entry_without_applying(a, false) {
                    Some(e) => e,
                    None => continue,
                }
            }
            Action::LeaseHeld { candidate, token, holder } => {
                tracing::info!(
                    "janitor: {}: {}; leaving it",
                    candidate.app.domain,
                    apply::lease_held_reason(candidate, *token, holder)
                );
                match apply::entry_without_applying(a, false) {
                    Some(e) => e,
                    None => continue,
                }
            }
            Action::Unprovable { candidate, reason } => {
                tracing::warn!("janitor: {}: {reason}; leaving it", candidate.app.domain);
                match apply::entry_without_applying(a, false) {
                    Some(e) => e,
                    None => continue,
                }
            }
            Action::Skip { domain, reason, .. } => {
                tracing::warn!(
                    "janitor: app lock {}: {reason}; skipping {domain} (never followed, opened or stolen)",
                    lock_dir.join(crate::names::lock_file_name(domain)).display()
                );
                match apply::entry_without_applying(a, false) {
                    Some(e) => e,
                    None => continue,
                }
            }
            other => match apply::entry_without_applying(other, false) {
                Some(e) => e,
                None => continue,
            },
        };
        match entry {
            Ok(app) => report.apps.push(app),
            Err(lf) => report.lockfiles.push(lf),
        }
    }
    if report.stopped.is_none() {
        report.stopped = sweeper.stopped();
    }
    let entries = match (&dir, report.stopped) {
        (Some(dir), None) => par_map(&stale, |domain| {
            if sweeper.stopped().is_some() {
                return apply::lockfile_entry(domain, Act::NotReached);
            }
            sweeper.stale_entry(domain, dir.unlink_if_free(&name_of(domain)))
        }),
        (None, None) => stale.iter().map(|d| apply::lockfile_entry(d, Act::Failed)).collect(),
        (_, Some(_)) => stale.iter().map(|d| apply::lockfile_entry(d, Act::NotReached)).collect(),
    };
    let unlinked = entries.iter().filter(|e| e.action == Act::Unlinked).count();
    if unlinked > 0 {
        tracing::info!("janitor: unlinked {unlinked} stale lockfile(s) with no app behind them");
    }
    if report.stopped.is_none() && entries.iter().any(|e| e.action == Act::NotReached) {
        report.stopped = sweeper.stopped();
    }
    report.lockfiles.extend(entries);
}

/// Maps `f` over `items` on a few threads (keeping the order); small inputs stay on this one.
/// The workers only probe and unlink files: they never start a child process.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if items.len() < 256 || threads < 2 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> =
            items.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>())).collect();
        workers
            .into_iter()
            .flat_map(|w| match w.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}
