//! Carrying out the app and lockfile actions of a plan. Every change happens under a probe lock
//! the janitor holds on the inode the lockfile path names; the plan's lock state is only a hint.
//! With the cross-host app lease, a reap also runs under a lease the janitor takes afresh for
//! the domain (it fails when any run on any host holds it), and every mutation of the reap
//! passes that lease's fence — so two hosts' janitors never reap twice and never reap a run
//! that took the domain meanwhile.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::plan::{Action, Candidate, LockState, long_held};
use super::report::{AppEntry, HolderSummary, LeaseSeen, LockfileEntry, describe_holder};
use super::vocab::{Act, Halt, LockSeen};
use crate::adapters::{Abra, Docker};
use crate::app::reap::{self, Fence, Unfenced};
use crate::lease::{Held, Holder, Lease, Tried};
use crate::lifetime::{self, Deadline};
use crate::lock::{self, HolderInfo, LockGuard, Look, TryLock};
use crate::names;

/// The most one lease call of a reap may take.
const LEASE_CALL: Duration = Duration::from_secs(10);

/// What the apply steps need.
pub struct Sweeper<'a> {
    pub abra: &'a Abra,
    pub docker: &'a Docker,
    pub lock_dir: &'a Path,
    /// When the sweep must stop (between candidates).
    pub deadline_at: Instant,
    /// The cross-host app lease (`None`: one swarm per host, the flock alone).
    pub lease: Option<&'a Lease>,
    /// This host, as a lease holder names it.
    pub machine: &'a str,
}

/// The fence of a janitor's reap: its fresh lease must still be its own before each step.
struct JanitorFence<'a>(&'a Held);

impl Fence for JanitorFence<'_> {
    fn check(&self, step: &str) -> Result<(), String> {
        self.0.fence(step, Deadline::after(LEASE_CALL)).map_err(|e| e.to_string())
    }
}

fn mins(d: Duration) -> u64 {
    d.as_secs().div_ceil(60)
}

/// Logs the long-held flag of a held lock, naming a holder that is not ccci. Never steals it.
fn flag_long_held(domain: &str, path: &Path, threshold: Duration) {
    let foreign = lock::proc_locks::foreign_holder(path).map(|f| format!(" ({f})")).unwrap_or_default();
    tracing::warn!(
        "lock for {domain} held >{}m{foreign} — possible leaked run; inspect with ccci locks",
        mins(threshold)
    );
}

impl Sweeper<'_> {
    /// Why the sweep must stop now: a signal (or the run's own deadline, for the run-start
    /// janitor), or this sweep's deadline.
    pub fn stopped(&self) -> Option<Halt> {
        if lifetime::cause().is_some() {
            Some(Halt::Cancelled)
        } else if Instant::now() >= self.deadline_at {
            Some(Halt::Deadline)
        } else {
            None
        }
    }

    fn lock_path(&self, domain: &str) -> std::path::PathBuf {
        self.lock_dir.join(names::lock_file_name(domain))
    }

    /// Probes the candidate's lock and reaps it when nobody holds it.
    pub fn reap(&self, c: &Candidate) -> AppEntry {
        let t = Instant::now();
        let mut e = app_entry(c, LockSeen::Unprobed, Act::Skipped);
        match lock::try_lock(&self.lock_path(&c.app.domain), true) {
            TryLock::Unsafe(why) => self.unsafe_lock(&mut e, why),
            TryLock::Gone => {
                tracing::info!(
                    "janitor: {}: its lockfile was unlinked meanwhile (reaped by another janitor); skipping",
                    c.app.domain
                );
                e.lock = LockSeen::Gone;
                e.reason = Some("the lockfile was unlinked meanwhile: another janitor reaped it".into());
            }
            TryLock::Held { age, info } => left(&mut e, &self.lock_path(&c.app.domain), age, info.as_ref()),
            TryLock::Acquired(lock) => {
                e.lock = if lock.created() { LockSeen::Absent } else { LockSeen::Free };
                // A dependency app: its owning run's lock decides too. Probed while holding the
                // dependency's, never blocking (a run takes its own lock first, then its
                // dependencies', so no wait can close a cycle).
                if let Some(why) = crate::names::owner_of_dep(&c.app.domain).and_then(|o| self.owner_live(&o)) {
                    tracing::info!("janitor: {}: {why}; leaving it", c.app.domain);
                    e.action = Act::Left;
                    e.reason = Some(why);
                    let _ = lock.unlink_if_created();
                    e.ms = t.elapsed().as_millis() as u64;
                    return e;
                }
                // The lockfile vanished since the inventory (a reboot, a clean teardown): with
                // none, only a stamp of this lock dir proves the app is ccci's to reap (or, with
                // the lease, its token — once the fresh lease below proves the domain free).
                match super::plan::unproven(c, self.lease.is_some()).filter(|_| lock.created()) {
                    Some(reason) => {
                        let _ = lock.unlink_if_created();
                        tracing::warn!("janitor: {}: {reason}", c.app.domain);
                        e.reason = Some(reason);
                    }
                    None => self.reap_leased(c, &lock, &mut e),
                }
            }
        }
        e.ms = t.elapsed().as_millis() as u64;
        e
    }

    /// Why a dependency app's owner is alive: its app lock held (or not provably free). `None`
    /// when the lock is free or gone: the owning run is dead.
    fn owner_live(&self, owner: &str) -> Option<String> {
        match lock::try_lock(&self.lock_path(owner), false) {
            TryLock::Acquired(probe) => {
                drop(probe);
                None
            }
            TryLock::Gone => None,
            TryLock::Held { info, .. } => Some(format!(
                "its owning run's app lock ({owner}) is held ({}): a live run deploying or using its dependencies",
                describe_holder(info.as_ref())
            )),
            TryLock::Unsafe(why) => Some(format!("the app lock of its owner {owner} cannot be probed: {why}")),
        }
    }

    /// With the app lease: take it afresh for the domain (never waiting), reap under it, release
    /// it. A held key means a live run somewhere (or another janitor reaping): leave the app.
    /// A dependency app is leased through its owner (runs lease only their app's domain): the
    /// janitor takes the owner's lease, so no run of the owner can start on any host meanwhile.
    fn reap_leased(&self, c: &Candidate, lock: &LockGuard, e: &mut AppEntry) {
        let Some(lease) = self.lease else { return self.reap_held(c, lock, e, &Unfenced) };
        let owner = crate::names::owner_of_dep(&c.app.domain);
        let domain = owner.as_ref().unwrap_or(&c.app.domain);
        let holder = Holder {
            host: self.machine.to_string(),
            run_id: "janitor".into(),
            pid: std::process::id(),
            started: crate::clock::rfc3339(SystemTime::now()),
            build_link: None,
            step: Some("reap".into()),
        };
        let quiet = Box::new(|_: &str| {});
        match lease.try_acquire(domain, &holder, quiet, Deadline::after(LEASE_CALL)) {
            Ok(Tried::Held(held)) => {
                e.lease = Some(LeaseSeen::Taken);
                e.lease_token = Some(held.token());
                tracing::info!(
                    "janitor: {domain}: nobody holds its app lease; reaping under a fresh one (token {})",
                    held.token()
                );
                self.reap_held(c, lock, e, &JanitorFence(&held));
                if let Err(err) = held.release() {
                    tracing::warn!("janitor: {domain}: cannot release its app lease ({err}); it lapses after its TTL");
                }
            }
            Ok(Tried::Taken { state, .. }) => {
                let desc = state.as_ref().map_or_else(|| "holder unknown".to_string(), |k| k.describe());
                tracing::info!(
                    "janitor: {domain}: its app lease is held ({desc}) — a live run on some host; leaving it"
                );
                e.action = Act::Left;
                e.lease = Some(LeaseSeen::Held);
                e.lease_token = state.map(|k| k.token);
                e.reason = Some(format!("app lease held ({desc})"));
                let _ = lock.unlink_if_created();
            }
            Err(err) => {
                tracing::warn!("janitor: {domain}: cannot prove it orphaned: {err}; leaving it");
                e.action = Act::Skipped;
                e.lease = Some(LeaseSeen::Unknown);
                e.reason = Some(format!("cannot prove it orphaned: {err}"));
                let _ = lock.unlink_if_created();
            }
        }
    }

    /// The reap proper, while holding the probe lock: a run of this domain that starts now waits
    /// on the lock until the reap is done (and the lockfile unlinked).
    fn reap_held(&self, c: &Candidate, lock: &LockGuard, e: &mut AppEntry, fence: &dyn Fence) {
        let left = self.deadline_at.saturating_duration_since(Instant::now());
        let _ = lock.write_holder(&HolderInfo {
            pid: std::process::id(),
            run_id: "janitor".into(),
            recipe: String::new(),
            started: crate::clock::rfc3339(SystemTime::now()),
            deadline_secs: left.as_secs().max(1),
            budget_secs: 0,
            build_link: None,
            token: None,
        });
        let why = if lock.created() { "no lockfile (the lock dir was emptied, e.g. by a reboot)" } else { "lock free" };
        let items = match reap::leftovers(self.docker, &c.app) {
            Ok(items) => items,
            Err(err) => {
                tracing::error!("janitor: {}: cannot list what is left of it: {err}", c.app.domain);
                e.action = Act::Failed;
                e.reason = Some(format!("cannot list its objects: {err}"));
                let _ = lock.unlink_if_created();
                return;
            }
        };
        if items.is_empty() {
            tracing::info!("janitor: {}: {why}, and nothing of it is left; removing its lockfile", c.app.domain);
            e.action = Act::AlreadyGone;
            self.unlink(lock, e);
            return;
        }
        tracing::info!(
            "janitor: {}: {why} — orphan of a dead run; reaping {} under the probe lock",
            c.app.domain,
            items.join(", ")
        );
        match reap::reap(self.abra, self.docker, &c.app, fence) {
            Ok(()) => {
                e.action = Act::Reaped;
                self.unlink(lock, e);
                tracing::info!("janitor: {}: reaped", c.app.domain);
            }
            Err(err) => {
                tracing::error!("janitor: {}: reap failed: {err}; the next sweep tries again", c.app.domain);
                e.action = Act::Failed;
                e.reason = Some(err.to_string());
                lock.clear_holder();
            }
        }
    }

    fn unlink(&self, lock: &LockGuard, e: &mut AppEntry) {
        if let Err(err) = lock.unlink() {
            tracing::warn!("janitor: cannot unlink {}: {err}", lock.path().display());
            e.reason = Some(format!("cannot unlink the lockfile: {err}"));
        }
    }

    fn unsafe_lock(&self, e: &mut AppEntry, why: String) {
        tracing::warn!(
            "janitor: app lock {}: {why}; skipping {} (never followed, opened or stolen)",
            self.lock_path(&e.domain).display(),
            e.domain
        );
        e.lock = LockSeen::Unsafe;
        e.reason = Some(why);
    }

    /// The entry of a candidate whose quick look is final (held, or unsafe); `None` when it
    /// needs the full probe (free: it may be an orphan; gone: it may be absent now).
    pub fn from_peek(&self, c: &Candidate, peek: Look) -> Option<AppEntry> {
        let mut e = app_entry(c, LockSeen::Unprobed, Act::Skipped);
        match peek {
            Look::Held { age, info } => left(&mut e, &self.lock_path(&c.app.domain), age, info.as_ref()),
            Look::Unsafe(why) | Look::Failed(why) => self.unsafe_lock(&mut e, why),
            Look::Free | Look::Gone | Look::Unlinked => return None,
        }
        Some(e)
    }

    /// The entry of a lockfile with no app behind it, after [`lock::LockDir::unlink_if_free`].
    pub fn stale_entry(&self, domain: &str, outcome: Look) -> LockfileEntry {
        let mut e = lockfile_entry(domain, Act::Skipped);
        match outcome {
            Look::Unlinked => {
                tracing::trace!("janitor: unlinked stale lockfile of {domain}");
                e.action = Act::Unlinked;
            }
            Look::Gone | Look::Free => e.action = Act::Gone,
            Look::Held { age, info } => {
                e.action = Act::Left;
                e.holder = holder_of(domain, &self.lock_path(domain), age, info.as_ref());
                e.reason = Some(format!("held ({}): a live run that has no app yet", describe_holder(info.as_ref())));
            }
            Look::Unsafe(why) => {
                tracing::warn!(
                    "janitor: app lock {}: {why}; skipping {domain} (never followed, opened or stolen)",
                    self.lock_path(domain).display()
                );
                e.reason = Some(why);
            }
            Look::Failed(why) => {
                tracing::warn!("janitor: stale lockfile {}: {why}", self.lock_path(domain).display());
                e.action = Act::Failed;
                e.reason = Some(why);
            }
        }
        e
    }
}

/// A live run holds the lock: leave it, and flag it when it is held for too long.
fn left(e: &mut AppEntry, path: &Path, age: Option<Duration>, info: Option<&HolderInfo>) {
    e.lock = LockSeen::Held;
    e.action = Act::Left;
    tracing::info!("janitor: {}: lock held ({}) — a live run; leaving it", e.domain, describe_holder(info));
    e.holder = holder_of(&e.domain, path, age, info);
}

/// The holder of a lock the janitor leaves, flagged (and logged) when it is held too long.
fn holder_of(domain: &str, path: &Path, age: Option<Duration>, info: Option<&HolderInfo>) -> HolderSummary {
    let mut h = HolderSummary::of(age, info);
    if let Some(threshold) = long_held(age, info) {
        flag_long_held(domain, path, threshold);
        h.long_held = true;
    }
    h
}

pub fn app_entry(c: &Candidate, lock: LockSeen, action: Act) -> AppEntry {
    AppEntry {
        domain: c.app.domain.clone(),
        stack: c.app.stack.clone(),
        sources: c.sources.iter().copied().collect(),
        lock,
        action,
        reason: None,
        holder: HolderSummary::default(),
        lease: None,
        lease_token: None,
        ms: 0,
    }
}

pub fn lockfile_entry(domain: &str, action: Act) -> LockfileEntry {
    LockfileEntry { domain: domain.to_string(), action, reason: None, holder: HolderSummary::default() }
}

/// The report entry of a planned app or lockfile action without carrying it out (a dry run, or
/// a sweep stopped before reaching it: `not-reached`).
pub fn entry_without_applying(a: &Action, dry_run: bool) -> Option<Result<AppEntry, LockfileEntry>> {
    let planned = |would: Act| if dry_run { would } else { Act::NotReached };
    Some(match a {
        Action::Reap { candidate, lock } => {
            let mut e = app_entry(candidate, LockSeen::of(lock), planned(Act::WouldReap));
            if *lock == LockState::Absent {
                e.reason = Some("no lockfile: reaped at once".into());
            }
            Ok(e)
        }
        Action::Leave { domain, candidate, lock, flag } => {
            let (age, info, pids) = match lock {
                LockState::Held { age, info, pids } => (*age, info.clone(), pids.clone()),
                _ => (None, None, Vec::new()),
            };
            let mut holder = HolderSummary::of(age, info.as_ref());
            holder.holder_pid = holder.holder_pid.or_else(|| pids.first().map(|p| *p as u32));
            holder.long_held = flag.is_some();
            let action = if dry_run { Act::Left } else { Act::NotReached };
            if let Some(c) = candidate {
                let mut e = app_entry(c, LockSeen::Held, action);
                e.holder = holder;
                e.reason = Some("held by a live run".into());
                Ok(e)
            } else {
                let mut e = lockfile_entry(domain, action);
                e.holder = holder;
                e.reason = Some("held: a live run that has no app yet".into());
                Err(e)
            }
        }
        Action::Skip { domain, candidate, reason } => {
            if let Some(c) = candidate {
                let mut e = app_entry(c, LockSeen::Unsafe, Act::Skipped);
                e.reason = Some(reason.clone());
                Ok(e)
            } else {
                let mut e = lockfile_entry(domain, Act::Skipped);
                e.reason = Some(reason.clone());
                Err(e)
            }
        }
        Action::UnlinkStale { domain } => Err(lockfile_entry(domain, planned(Act::WouldUnlink))),
        Action::Unproven { candidate, reason } => {
            let mut e = app_entry(candidate, LockSeen::Absent, Act::Skipped);
            e.reason = Some(reason.clone());
            Ok(e)
        }
        Action::LeaseHeld { candidate, token, holder } => {
            // Final, not a hint: the key existed at the plan's linearizable read, and a reap would
            // have to take it afresh anyway.
            let mut e = app_entry(candidate, LockSeen::Unprobed, Act::Left);
            (e.lease, e.lease_token) = (Some(LeaseSeen::Held), Some(*token));
            e.reason = Some(lease_held_reason(candidate, *token, holder));
            Ok(e)
        }
        Action::Unprovable { candidate, reason } => {
            let mut e = app_entry(candidate, LockSeen::Unprobed, Act::Skipped);
            e.lease = Some(LeaseSeen::Unknown);
            e.reason = Some(reason.clone());
            Ok(e)
        }
        _ => return None,
    })
}

/// Why an app whose domain's lease is held is left, in words.
pub fn lease_held_reason(c: &Candidate, token: u64, holder: &str) -> String {
    match c.lease_token {
        Some(stamped) if stamped < token => format!(
            "its stamped token {stamped} is older than the app lease's {token} ({holder}): a newer run owns the domain and clears it"
        ),
        _ => format!("app lease held ({holder}): a live run on some host"),
    }
}
