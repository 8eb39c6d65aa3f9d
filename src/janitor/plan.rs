//! The janitor's plan: a pure function from what the inventory saw to a list of actions.
//!
//! Nothing here touches the system. The plan says what *may* be done; the kernel has the last
//! word at apply time (a `Reap` is only carried out when the probe lock is acquired on the inode
//! the path names). A dry run prints the plan made from a read-only inventory (lock states read
//! from `/proc/locks`); a real sweep makes the plan from a cheaper inventory (lock states left
//! to the probe) and applies it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use super::vocab::Part;
use crate::app::App;
use crate::lock::HolderInfo;
pub use crate::lock::LockState;

/// When a holder recorded no deadline, a lock older than twice this is flagged.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3600);

/// The bulky parts of a finished run dir that prune removes (results and logs stay).
pub const BULKY: [Part; 3] = [Part::Abra, Part::Tests, Part::State];

/// ccci's proof that it made an app, and in which lock dir: the `CCCI_LOCK_DIR` key it writes
/// into the app's `.env`, and the `ccci.lock-dir` label on the app's objects. A name matching
/// the run-app pattern is no proof at all (anyone can name an app so).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stamp {
    /// No stamp anywhere (an app from before stamps, or not ccci's).
    #[default]
    None,
    /// Stamped with this janitor's lock dir.
    Ours,
    /// Stamped with another lock dir: another host's (or another setup's) run app.
    Foreign(String),
}

impl Stamp {
    /// Combines stamps read from several places: ours wins (a reap is then provably right).
    pub fn of(found: impl IntoIterator<Item = String>, lock_dir: &std::path::Path) -> Stamp {
        let ours = lock_dir.display().to_string();
        let mut out = Stamp::None;
        for s in found {
            if s.trim_end_matches('/') == ours.trim_end_matches('/') {
                return Stamp::Ours;
            }
            out = Stamp::Foreign(s);
        }
        out
    }
}

/// A run app found by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub app: App,
    pub stamp: Stamp,
    /// `abra` and/or `docker`.
    pub sources: BTreeSet<super::vocab::Source>,
    /// The fencing token a leased run stamped on it (`ccci.lease-token` labels, the `.env`'s
    /// `CCCI_LEASE_TOKEN`; the largest when several): proof that a ccci of the shared swarm
    /// made it under the app lease, whichever host that was.
    pub lease_token: Option<u64>,
}

/// What etcd says of a domain's lease key (the cross-host app lease).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LeaseState {
    /// No lease backend: the lockfile and the stamp decide alone.
    #[default]
    Off,
    /// The key exists: a run on some host (or a janitor) holds the domain.
    Held { token: u64, holder: String },
    /// No key: nobody anywhere holds the domain.
    Free,
    /// etcd could not be asked: nothing can be proved orphaned across hosts.
    Unknown(String),
}

/// The lease keys one linearizable read of etcd saw, for the whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Leases {
    #[default]
    Off,
    /// Held domains: `(token, holder in words)`.
    Read(BTreeMap<String, (u64, String)>),
    Unknown(String),
}

impl Leases {
    pub fn of(&self, domain: &str) -> LeaseState {
        match self {
            Leases::Off => LeaseState::Off,
            Leases::Read(held) => match held.get(domain) {
                Some((token, holder)) => LeaseState::Held { token: *token, holder: holder.clone() },
                None => LeaseState::Free,
            },
            Leases::Unknown(why) => LeaseState::Unknown(why.clone()),
        }
    }

    pub fn on(&self) -> bool {
        !matches!(self, Leases::Off)
    }
}

/// A run dir under the runs dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    pub run_id: String,
    pub path: PathBuf,
    /// `run.lock` exists as a regular file (ccci created the dir).
    pub has_run_lock: bool,
    /// `Some(true)` when `/proc/locks` shows `run.lock` held; `None` when not read.
    pub run_lock_held: Option<bool>,
    /// Since the newest of the dir, `run.lock`, `run.log` and `results.json` changed.
    pub age: Duration,
    /// Which of [`BULKY`] exist.
    pub bulky: Vec<Part>,
}

/// A process carrying a `CCCI_RUN_TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenProcess {
    pub pid: i32,
    pub start_time: u64,
    pub run_id: String,
    pub token_pid: i32,
    pub token_start: u64,
}

/// Everything the plan is made from.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    pub candidates: BTreeMap<String, Candidate>,
    /// The app lease keys (`Off` without `CCCI_LEASE_ENDPOINTS`).
    pub leases: Leases,
    /// App lockfiles of run domains, by domain.
    pub lockfiles: BTreeMap<String, LockState>,
    pub run_dirs: Vec<RunDir>,
    pub processes: Vec<TokenProcess>,
    /// Live processes: pid → start time (for the token check).
    pub live: HashMap<i32, u64>,
    /// Pids never to signal: the janitor itself and its ancestors.
    pub protected: BTreeSet<i32>,
}

/// One step of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Probe the candidate's lock; reap it under the probe lock when acquired.
    Reap { candidate: Candidate, lock: LockState },
    /// A live run holds the lock: leave it. `flag` is the long-held threshold when exceeded.
    Leave { domain: String, candidate: Option<Candidate>, lock: LockState, flag: Option<Duration> },
    /// The lock path is garbage or hostile: log and skip.
    Skip { domain: String, candidate: Option<Candidate>, reason: String },
    /// No lockfile, and nothing proves ccci made the app with this lock dir: leave it, report it.
    Unproven { candidate: Candidate, reason: String },
    /// The domain's lease key exists: a live run on some host owns the app (or, when the app's
    /// stamped token is older, a newer run owns the domain and clears it itself). Leave it.
    LeaseHeld { candidate: Candidate, token: u64, holder: String },
    /// A leased app, and etcd cannot say whether its run is alive: nothing is proved, leave it.
    Unprovable { candidate: Candidate, reason: String },
    /// A lockfile with no app behind it: unlink it when the probe acquires it.
    UnlinkStale { domain: String },
    /// Delete the bulky parts of a finished run dir (under its `run.lock`).
    Prune { run_id: String, path: PathBuf, parts: Vec<Part> },
    /// An old dir without `run.lock`: ccci did not create it, so it is never touched.
    KeepForeignDir { path: PathBuf },
    /// TERM→KILL a process of a dead run.
    Kill { pid: i32, start_time: u64, run_id: String },
}

/// The long-held threshold of a held lock: twice the holder's recorded deadline, or twice an
/// hour when unknown. `Some(threshold)` when the lock is older than that.
pub fn long_held(age: Option<Duration>, info: Option<&HolderInfo>) -> Option<Duration> {
    let deadline = info.and_then(HolderInfo::deadline);
    let threshold = deadline.unwrap_or(DEFAULT_DEADLINE).saturating_mul(2);
    age.filter(|a| *a > threshold).map(|_| threshold)
}

/// The lease's word on a candidate, before the local lock's: `Some` when it decides.
///
/// | lease key | app | action |
/// |---|---|---|
/// | held (token T) | any | leave: a live run on some host owns the domain; if the app's stamped token is older than T, a newer run owns it and clears it under its own lease |
/// | unknown (no quorum, unreachable) | stamped with a token | leave: nothing can be proved orphaned |
/// | unknown | no token | the local rules (their reap still takes a fresh lease, which fails) |
/// | free | any | the local rules; a token stamp then proves ownership without a lockfile |
fn for_lease(lease: &LeaseState, c: &Candidate) -> Option<Action> {
    match lease {
        LeaseState::Held { token, holder } => {
            Some(Action::LeaseHeld { candidate: c.clone(), token: *token, holder: holder.clone() })
        }
        LeaseState::Unknown(why) if c.lease_token.is_some() => {
            Some(Action::Unprovable { candidate: c.clone(), reason: format!("cannot prove it orphaned: {why}") })
        }
        _ => None,
    }
}

fn for_lock(domain: &str, lock: &LockState, candidate: Option<&Candidate>, lease: &LeaseState) -> Option<Action> {
    // A hostile or broken lock path is skipped whatever etcd says; then the lease decides the
    // cross-host question; then the local lock the local one.
    if !matches!(lock, LockState::Unsafe(_))
        && let Some(a) = candidate.and_then(|c| for_lease(lease, c))
    {
        return Some(a);
    }
    let lease_free = *lease == LeaseState::Free;
    Some(match lock {
        LockState::Unsafe(reason) => {
            Action::Skip { domain: domain.to_string(), candidate: candidate.cloned(), reason: reason.clone() }
        }
        LockState::Held { age, info, .. } => Action::Leave {
            domain: domain.to_string(),
            candidate: candidate.cloned(),
            lock: lock.clone(),
            flag: long_held(*age, info.as_ref()),
        },
        // What the listing could not tell (unknown, unprobed) the probe decides at apply time.
        LockState::Absent => match candidate {
            Some(c) => match unproven(c, lease_free) {
                None => Action::Reap { candidate: c.clone(), lock: lock.clone() },
                Some(reason) => Action::Unproven { candidate: c.clone(), reason },
            },
            // No app and no lockfile: nothing to do.
            None => return None,
        },
        LockState::Free | LockState::Unprobed | LockState::Unknown => match candidate {
            Some(c) => Action::Reap { candidate: c.clone(), lock: lock.clone() },
            None => Action::UnlinkStale { domain: domain.to_string() },
        },
    })
}

/// A dependency app (issue 19) is its owning run's as much as its own: while the owner's lease
/// or app lock is held — a run between deploying its dependencies and its app, or using them —
/// it is left, whatever its own lock says. (Apply probes the owner's lock again before a reap:
/// this plan's lock states may be hints.)
fn for_owner(domain: &str, c: &Candidate, lock: &LockState, inv: &Inventory) -> Option<Action> {
    let owner = crate::names::owner_of_dep(domain)?;
    if matches!(lock, LockState::Unsafe(_)) {
        return None;
    }
    if let LeaseState::Held { token, holder } = inv.leases.of(&owner) {
        return Some(Action::LeaseHeld { candidate: c.clone(), token, holder: format!("its owner {owner}: {holder}") });
    }
    match inv.lockfiles.get(&owner) {
        Some(owner_lock @ LockState::Held { .. }) => Some(Action::Leave {
            domain: domain.to_string(),
            candidate: Some(c.clone()),
            lock: owner_lock.clone(),
            flag: None,
        }),
        _ => None,
    }
}

/// Why an app without a lockfile may not be reaped (`None`: it is stamped with this lock dir,
/// or — with `lease_free`, etcd saying nobody holds its domain — with a lease token). A
/// lockfile that exists is ccci's own evidence (only ccci, or its predecessor during a
/// migration, creates them there, under the same name); without one, only a stamp is. A token
/// is the shared swarm's stamp: some host's leased run made the app, and its lease is gone.
pub fn unproven(c: &Candidate, lease_free: bool) -> Option<String> {
    if lease_free && c.lease_token.is_some() {
        return None;
    }
    match &c.stamp {
        Stamp::Ours => None,
        Stamp::None => Some(
            "no lockfile and no ccci stamp: nothing proves ccci made it here (left alone; docs/operations.md says how to adopt apps from before stamps)"
                .to_string(),
        ),
        Stamp::Foreign(dir) => Some(format!(
            "no lockfile here and stamped with another lock dir ({dir}): that setup's janitor reaps it"
        )),
    }
}

/// Makes the plan: candidates first (sorted by domain), then lockfiles with no app, then prunes,
/// then stragglers.
pub fn plan(inv: &Inventory, prune_after: Duration) -> Vec<Action> {
    let mut actions = Vec::new();
    for (domain, c) in &inv.candidates {
        let lock = inv.lockfiles.get(domain).cloned().unwrap_or(LockState::Absent);
        if let Some(a) = for_owner(domain, c, &lock, inv) {
            actions.push(a);
            continue;
        }
        actions.extend(for_lock(domain, &lock, Some(c), &inv.leases.of(domain)));
    }
    for (domain, lock) in &inv.lockfiles {
        if !inv.candidates.contains_key(domain) {
            actions.extend(for_lock(domain, lock, None, &LeaseState::Off));
        }
    }
    for d in &inv.run_dirs {
        if d.age < prune_after {
            continue;
        }
        if !d.has_run_lock {
            actions.push(Action::KeepForeignDir { path: d.path.clone() });
            continue;
        }
        if d.run_lock_held == Some(true) || d.bulky.is_empty() {
            continue;
        }
        actions.push(Action::Prune { run_id: d.run_id.clone(), path: d.path.clone(), parts: d.bulky.clone() });
    }
    let dirs: HashMap<&str, &RunDir> = inv.run_dirs.iter().map(|d| (d.run_id.as_str(), d)).collect();
    for p in &inv.processes {
        if straggler_of_dead_run(p, &dirs, &inv.live, &inv.protected) {
            actions.push(Action::Kill { pid: p.pid, start_time: p.start_time, run_id: p.run_id.clone() });
        }
    }
    actions
}

/// A token-carrying process belongs to a dead run when its run dir exists under this runs dir,
/// that dir's `run.lock` exists and is free, and the token's pid/start time is no live process.
/// Anything less certain is left alone.
fn straggler_of_dead_run(
    p: &TokenProcess,
    dirs: &HashMap<&str, &RunDir>,
    live: &HashMap<i32, u64>,
    protected: &BTreeSet<i32>,
) -> bool {
    if protected.contains(&p.pid) {
        return false;
    }
    let Some(dir) = dirs.get(p.run_id.as_str()) else { return false };
    if !dir.has_run_lock || dir.run_lock_held != Some(false) {
        return false;
    }
    live.get(&p.token_pid) != Some(&p.token_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(domain: &str) -> Candidate {
        Candidate {
            app: App::new(domain, std::path::Path::new("/abra/servers/default")),
            stamp: Stamp::Ours,
            sources: BTreeSet::from([crate::janitor::vocab::Source::Docker]),
            lease_token: None,
        }
    }

    fn info(deadline: u64) -> HolderInfo {
        HolderInfo { pid: 7, run_id: "r7".into(), deadline_secs: deadline, ..HolderInfo::default() }
    }

    fn held(age_secs: u64, info: Option<HolderInfo>) -> LockState {
        LockState::Held { pids: vec![7], age: Some(Duration::from_secs(age_secs)), info }
    }

    fn inv_with(cands: &[&str], locks: &[(&str, LockState)]) -> Inventory {
        Inventory {
            candidates: cands.iter().map(|d| (d.to_string(), cand(d))).collect(),
            lockfiles: locks.iter().map(|(d, s)| (d.to_string(), s.clone())).collect(),
            ..Inventory::default()
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn decision_table_rows() {
        let inv = inv_with(
            &["a-000001.x", "a-000002.x", "a-000003.x", "a-000004.x", "a-000005.x"],
            &[
                ("a-000001.x", LockState::Free),
                ("a-000002.x", held(60, Some(info(3600)))),
                ("a-000004.x", LockState::Unsafe("is a symlink".into())),
                ("a-000005.x", LockState::Unprobed),
            ],
        );
        let p = plan(&inv, 14 * DAY);
        assert_eq!(p.len(), 5);
        assert!(
            matches!(&p[0], Action::Reap { candidate, lock: LockState::Free } if candidate.app.domain == "a-000001.x")
        );
        assert!(
            matches!(&p[1], Action::Leave { domain, candidate: Some(_), flag: None, .. } if domain == "a-000002.x")
        );
        // No lockfile at all (a reboot emptied the lock dir): reap at once.
        assert!(matches!(&p[2], Action::Reap { lock: LockState::Absent, .. }));
        assert!(matches!(&p[3], Action::Skip { reason, .. } if reason == "is a symlink"));
        assert!(matches!(&p[4], Action::Reap { lock: LockState::Unprobed, .. }));
    }

    #[test]
    fn without_a_lockfile_only_a_stamp_of_this_lock_dir_proves_ownership() {
        let mut unstamped = cand("a-000002.x");
        unstamped.stamp = Stamp::None;
        let mut foreign = cand("a-000003.x");
        foreign.stamp = Stamp::Foreign("/other/lock".into());
        let inv = Inventory {
            candidates: [cand("a-000001.x"), unstamped, foreign.clone()]
                .into_iter()
                .map(|c| (c.app.domain.clone(), c))
                .collect(),
            // A lockfile that exists is evidence enough, stamp or not.
            lockfiles: BTreeMap::from([("a-000003.x".to_string(), LockState::Free)]),
            ..Inventory::default()
        };
        let p = plan(&inv, 14 * DAY);
        assert!(matches!(&p[0], Action::Reap { lock: LockState::Absent, .. }));
        assert!(matches!(&p[1], Action::Unproven { reason, .. } if reason.contains("no ccci stamp")));
        assert!(matches!(&p[2], Action::Reap { lock: LockState::Free, .. }));
        let gone = Inventory { lockfiles: BTreeMap::new(), ..inv };
        assert!(matches!(&plan(&gone, 14 * DAY)[2], Action::Unproven { reason, .. } if reason.contains("/other/lock")));
        let lock = std::path::Path::new("/run/lock");
        assert_eq!(Stamp::of(["/run/lock/".to_string()], lock), Stamp::Ours);
        assert_eq!(Stamp::of(["/x".to_string(), "/run/lock".to_string()], lock), Stamp::Ours);
        assert_eq!(Stamp::of(["/x".to_string()], lock), Stamp::Foreign("/x".into()));
        assert_eq!(Stamp::of([], lock), Stamp::None);
    }

    /// The shared swarm's table: the lease key decides the cross-host question, the local lock
    /// the local one.
    #[test]
    fn the_lease_key_decides_across_hosts() {
        let leased = |d: &str, token: Option<u64>, stamp: Stamp| Candidate { lease_token: token, stamp, ..cand(d) };
        let foreign = || Stamp::Foreign("/other-host/lock".into());
        let inv = Inventory {
            candidates: [
                // Another host's live run (its key exists): left, whatever this host's lock says.
                leased("a-000001.x", Some(7), foreign()),
                // An older run's app under a domain a newer run holds now: left to that run.
                leased("a-000002.x", Some(5), foreign()),
                // Another host's dead run (no key): reaped here, with no lockfile, on its token.
                leased("a-000003.x", Some(9), foreign()),
                // Unstamped with no key and no lockfile: nothing proves it is ccci's.
                leased("a-000004.x", None, Stamp::None),
                // This host's run waiting for the lease (its flock held, no key yet): left.
                leased("a-000005.x", Some(3), Stamp::Ours),
                // A hostile lock path is skipped even with the key gone.
                leased("a-000006.x", Some(4), Stamp::Ours),
            ]
            .into_iter()
            .map(|c| (c.app.domain.clone(), c))
            .collect(),
            lockfiles: BTreeMap::from([
                ("a-000001.x".to_string(), LockState::Free),
                ("a-000005.x".to_string(), held(5, None)),
                ("a-000006.x".to_string(), LockState::Unsafe("is a symlink".into())),
            ]),
            leases: Leases::Read(BTreeMap::from([
                ("a-000001.x".to_string(), (7, "host b, run r7, pid 1".to_string())),
                ("a-000002.x".to_string(), (11, "host b, run r11, pid 2".to_string())),
            ])),
            ..Inventory::default()
        };
        let p = plan(&inv, 14 * DAY);
        assert!(matches!(&p[0], Action::LeaseHeld { token: 7, holder, .. } if holder.contains("run r7")), "{:?}", p[0]);
        assert!(
            matches!(&p[1], Action::LeaseHeld { token: 11, candidate, .. } if candidate.lease_token == Some(5)),
            "{:?}",
            p[1]
        );
        assert!(matches!(&p[2], Action::Reap { lock: LockState::Absent, .. }), "{:?}", p[2]);
        assert!(matches!(&p[3], Action::Unproven { .. }), "{:?}", p[3]);
        assert!(matches!(&p[4], Action::Leave { .. }), "{:?}", p[4]);
        assert!(matches!(&p[5], Action::Skip { .. }), "{:?}", p[5]);
        // etcd without quorum: a leased app is never proved orphaned; an unleased one falls to
        // the local rules (whose reap takes a fresh lease, which then fails).
        let unknown = Inventory { leases: Leases::Unknown("no leader".into()), ..inv.clone() };
        let p = plan(&unknown, 14 * DAY);
        assert!(matches!(&p[2], Action::Unprovable { reason, .. } if reason.contains("no leader")), "{:?}", p[2]);
        assert!(matches!(&p[3], Action::Unproven { .. }), "{:?}", p[3]);
        // Without the lease the token proves nothing: another host's app stays Unproven.
        let off = Inventory { leases: Leases::Off, ..inv };
        assert!(matches!(&plan(&off, 14 * DAY)[2], Action::Unproven { .. }));
    }

    #[test]
    fn a_dependency_app_is_left_while_its_owner_is_held() {
        // ssoa-0000aa owns -d1; its run holds its lock (deploying its app, or using it).
        let dep = "ssoa-0000aa-d1.x";
        let inv = inv_with(
            &[dep, "ssoa-0000bb-d1.x"],
            &[
                (dep, LockState::Free),
                ("ssoa-0000aa.x", held(60, Some(info(3600)))),
                ("ssoa-0000bb-d1.x", LockState::Free),
                ("ssoa-0000bb.x", LockState::Free),
            ],
        );
        let p = plan(&inv, 14 * DAY);
        assert!(matches!(&p[0], Action::Leave { domain, candidate: Some(_), .. } if domain == dep), "{:?}", p[0]);
        assert!(matches!(&p[1], Action::Reap { candidate, .. } if candidate.app.domain == "ssoa-0000bb-d1.x"));
        // Its owner's lease held on some host: left, naming the owner.
        let leased = Inventory {
            leases: Leases::Read(BTreeMap::from([("ssoa-0000bb.x".to_string(), (9, "run r9".to_string()))])),
            ..inv
        };
        let p = plan(&leased, 14 * DAY);
        assert!(
            matches!(&p[1], Action::LeaseHeld { token: 9, holder, .. } if holder.contains("its owner ssoa-0000bb.x")),
            "{:?}",
            p[1]
        );
    }

    #[test]
    fn lockfiles_without_an_app() {
        let inv = inv_with(
            &[],
            &[
                ("a-000001.x", LockState::Free),
                ("a-000002.x", LockState::Unprobed),
                ("a-000003.x", held(10, None)),
                ("a-000004.x", LockState::Unsafe("is a directory".into())),
            ],
        );
        let p = plan(&inv, 14 * DAY);
        assert_eq!(p[0], Action::UnlinkStale { domain: "a-000001.x".into() });
        assert_eq!(p[1], Action::UnlinkStale { domain: "a-000002.x".into() });
        // A run holds its lock before `abra app new`: a held lockfile with no app is live.
        assert!(matches!(&p[2], Action::Leave { candidate: None, .. }));
        assert!(matches!(&p[3], Action::Skip { candidate: None, .. }));
    }

    #[test]
    fn long_held_uses_the_recorded_deadline_or_an_hour() {
        let min = |m: u64| Some(Duration::from_secs(m * 60));
        assert_eq!(long_held(min(3), Some(&info(60))), Some(Duration::from_secs(120)));
        assert_eq!(long_held(min(1), Some(&info(60))), None);
        assert_eq!(long_held(min(119), None), None);
        assert_eq!(long_held(min(121), None), Some(Duration::from_secs(7200)));
        // A zero deadline counts as unknown.
        assert_eq!(long_held(min(121), Some(&info(0))), Some(Duration::from_secs(7200)));
        assert_eq!(long_held(None, None), None);
        let inv = inv_with(&["a-000001.x"], &[("a-000001.x", held(3 * 3600, None))]);
        assert!(matches!(&plan(&inv, DAY)[0], Action::Leave { flag: Some(t), .. } if *t == Duration::from_secs(7200)));
    }

    fn run_dir(id: &str, lock: bool, held: Option<bool>, age_days: u64, bulky: &[Part]) -> RunDir {
        RunDir {
            run_id: id.into(),
            path: PathBuf::from(format!("/runs/{id}")),
            has_run_lock: lock,
            run_lock_held: held,
            age: DAY * age_days as u32,
            bulky: bulky.to_vec(),
        }
    }

    #[test]
    fn prune_only_finished_old_dirs_ccci_made() {
        let inv = Inventory {
            run_dirs: vec![
                run_dir("old", true, Some(false), 20, &[Part::Abra, Part::State]),
                run_dir("unknown-lock-state", true, None, 20, &[Part::Tests]),
                run_dir("live", true, Some(true), 20, &[Part::Abra]),
                run_dir("young", true, Some(false), 3, &[Part::Abra]),
                run_dir("done-already", true, Some(false), 20, &[]),
                run_dir("foreign", false, None, 20, &[Part::Abra]),
                run_dir("young-foreign", false, None, 1, &[Part::Abra]),
            ],
            ..Inventory::default()
        };
        let p = plan(&inv, 14 * DAY);
        let ids: Vec<String> = p
            .iter()
            .map(|a| match a {
                Action::Prune { run_id, .. } => format!("prune {run_id}"),
                Action::KeepForeignDir { path } => format!("keep {}", path.display()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, ["prune old", "prune unknown-lock-state", "keep /runs/foreign"]);
    }

    #[test]
    fn stragglers_only_of_dead_runs() {
        let tp = |pid: i32, run: &str, tpid: i32, tstart: u64| TokenProcess {
            pid,
            start_time: 1,
            run_id: run.into(),
            token_pid: tpid,
            token_start: tstart,
        };
        let inv = Inventory {
            run_dirs: vec![
                run_dir("dead", true, Some(false), 0, &[]),
                run_dir("live", true, Some(true), 0, &[]),
                run_dir("nolock", false, None, 0, &[]),
                run_dir("unread", true, None, 0, &[]),
            ],
            processes: vec![
                tp(100, "dead", 50, 500),      // ccci 50 is gone: kill
                tp(101, "dead", 51, 501),      // ccci 51 still runs with that start time: keep
                tp(102, "dead", 52, 999),      // pid 52 reused by another process: kill
                tp(103, "live", 53, 503),      // run.lock held: keep
                tp(104, "nolock", 54, 504),    // not a ccci run dir: keep
                tp(105, "elsewhere", 55, 505), // no run dir under this runs dir: keep
                tp(106, "unread", 56, 506),    // run.lock state unknown: keep
                tp(107, "dead", 57, 507),      // protected (the janitor or an ancestor): keep
            ],
            live: HashMap::from([(51, 501), (52, 1)]),
            protected: BTreeSet::from([107]),
            ..Inventory::default()
        };
        let kills: Vec<i32> = plan(&inv, DAY)
            .iter()
            .filter_map(|a| match a {
                Action::Kill { pid, .. } => Some(*pid),
                _ => None,
            })
            .collect();
        assert_eq!(kills, [100, 102]);
    }
}
