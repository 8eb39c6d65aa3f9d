//! Carrying out the app and lockfile actions of a plan. Every change happens under a probe lock
//! the janitor holds on the inode the lockfile path names; the plan's lock state is only a hint.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::plan::{Action, Candidate, LockState, long_held};
use super::report::{AppEntry, LockfileEntry, describe_holder};
use crate::adapters::{Abra, Docker};
use crate::app::reap;
use crate::lifetime;
use crate::lock::{self, HolderInfo, LockGuard, Look, TryLock};
use crate::names;

/// What the apply steps need.
pub struct Sweeper<'a> {
    pub abra: &'a Abra,
    pub docker: &'a Docker,
    pub lock_dir: &'a Path,
    /// When the sweep must stop (between candidates).
    pub deadline_at: Instant,
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
    pub fn stopped(&self) -> Option<&'static str> {
        if lifetime::cause().is_some() {
            Some("cancelled")
        } else if Instant::now() >= self.deadline_at {
            Some("deadline")
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
        let mut e = app_entry(c, "unprobed", "skipped");
        match lock::try_lock(&self.lock_path(&c.app.domain), true) {
            TryLock::Unsafe(why) => self.unsafe_lock(&mut e, why),
            TryLock::Gone => {
                tracing::info!(
                    "janitor: {}: its lockfile was unlinked meanwhile (reaped by another janitor); skipping",
                    c.app.domain
                );
                e.lock = "gone";
                e.reason = Some("the lockfile was unlinked meanwhile: another janitor reaped it".into());
            }
            TryLock::Held { age, info } => left(&mut e, &self.lock_path(&c.app.domain), age, info.as_ref()),
            TryLock::Acquired(lock) => {
                e.lock = if lock.created() { "absent" } else { "free" };
                self.reap_held(c, &lock, &mut e);
            }
        }
        e.ms = t.elapsed().as_millis() as u64;
        e
    }

    /// The reap proper, while holding the probe lock: a run of this domain that starts now waits
    /// on the lock until the reap is done (and the lockfile unlinked).
    fn reap_held(&self, c: &Candidate, lock: &LockGuard, e: &mut AppEntry) {
        let left = self.deadline_at.saturating_duration_since(Instant::now());
        let _ = lock.write_holder(&HolderInfo {
            pid: std::process::id(),
            run_id: "janitor".into(),
            recipe: String::new(),
            started: crate::clock::rfc3339(SystemTime::now()),
            deadline_secs: left.as_secs().max(1),
            budget_secs: 0,
            build_link: None,
        });
        let why = if lock.created() { "no lockfile (the lock dir was emptied, e.g. by a reboot)" } else { "lock free" };
        let items = match reap::leftovers(self.docker, &c.app) {
            Ok(items) => items,
            Err(err) => {
                tracing::error!("janitor: {}: cannot list what is left of it: {err}", c.app.domain);
                e.action = "failed";
                e.reason = Some(format!("cannot list its objects: {err}"));
                let _ = lock.unlink_if_created();
                return;
            }
        };
        if items.is_empty() {
            tracing::info!("janitor: {}: {why}, and nothing of it is left; removing its lockfile", c.app.domain);
            e.action = "already-gone";
            self.unlink(lock, e);
            return;
        }
        tracing::info!(
            "janitor: {}: {why} — orphan of a dead run; reaping {} under the probe lock",
            c.app.domain,
            items.join(", ")
        );
        match reap::reap(self.abra, self.docker, &c.app) {
            Ok(()) => {
                e.action = "reaped";
                self.unlink(lock, e);
                tracing::info!("janitor: {}: reaped", c.app.domain);
            }
            Err(err) => {
                tracing::error!("janitor: {}: reap failed: {err}; the next sweep tries again", c.app.domain);
                e.action = "failed";
                e.reason = Some(err);
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
        e.lock = "unsafe";
        e.reason = Some(why);
    }

    /// The entry of a candidate whose quick look is final (held, or unsafe); `None` when it
    /// needs the full probe (free: it may be an orphan; gone: it may be absent now).
    pub fn from_peek(&self, c: &Candidate, peek: Look) -> Option<AppEntry> {
        let mut e = app_entry(c, "unprobed", "skipped");
        match peek {
            Look::Held { age, info } => left(&mut e, &self.lock_path(&c.app.domain), age, info.as_ref()),
            Look::Unsafe(why) | Look::Failed(why) => self.unsafe_lock(&mut e, why),
            Look::Free | Look::Gone | Look::Unlinked => return None,
        }
        Some(e)
    }

    /// The entry of a lockfile with no app behind it, after [`lock::LockDir::unlink_if_free`].
    pub fn stale_entry(&self, domain: &str, outcome: Look) -> LockfileEntry {
        let mut e = lockfile_entry(domain, "skipped");
        match outcome {
            Look::Unlinked => {
                tracing::trace!("janitor: unlinked stale lockfile of {domain}");
                e.action = "unlinked";
            }
            Look::Gone | Look::Free => e.action = "gone",
            Look::Held { age, info } => {
                e.action = "left";
                fill_holder(&mut e.age_secs, &mut e.holder_pid, &mut e.holder_run_id, age, info.as_ref());
                e.reason = Some(format!("held ({}): a live run that has no app yet", describe_holder(info.as_ref())));
                if let Some(threshold) = long_held(age, info.as_ref()) {
                    flag_long_held(domain, &self.lock_path(domain), threshold);
                    e.long_held = true;
                }
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
                e.action = "failed";
                e.reason = Some(why);
            }
        }
        e
    }
}

/// A live run holds the lock: leave it, and flag it when it is held for too long.
fn left(e: &mut AppEntry, path: &Path, age: Option<Duration>, info: Option<&HolderInfo>) {
    e.lock = "held";
    e.action = "left";
    fill_holder(&mut e.age_secs, &mut e.holder_pid, &mut e.holder_run_id, age, info);
    tracing::info!("janitor: {}: lock held ({}) — a live run; leaving it", e.domain, describe_holder(info));
    if let Some(threshold) = long_held(age, info) {
        flag_long_held(&e.domain, path, threshold);
        e.long_held = true;
    }
}

fn fill_holder(
    age_secs: &mut Option<u64>,
    pid: &mut Option<u32>,
    run_id: &mut Option<String>,
    age: Option<Duration>,
    info: Option<&HolderInfo>,
) {
    *age_secs = age.map(|a| a.as_secs());
    *pid = info.map(|i| i.pid);
    *run_id = info.map(|i| i.run_id.clone()).filter(|r| !r.is_empty());
}

pub fn app_entry(c: &Candidate, lock: &'static str, action: &'static str) -> AppEntry {
    AppEntry {
        domain: c.app.domain.clone(),
        stack: c.app.stack.clone(),
        sources: c.sources.iter().copied().collect(),
        lock,
        action,
        reason: None,
        long_held: false,
        age_secs: None,
        holder_pid: None,
        holder_run_id: None,
        ms: 0,
    }
}

pub fn lockfile_entry(domain: &str, action: &'static str) -> LockfileEntry {
    LockfileEntry {
        domain: domain.to_string(),
        action,
        reason: None,
        long_held: false,
        age_secs: None,
        holder_pid: None,
        holder_run_id: None,
    }
}

/// The report entry of a planned app or lockfile action without carrying it out (a dry run, or
/// a sweep stopped before reaching it: `not-reached`).
pub fn entry_without_applying(a: &Action, dry_run: bool) -> Option<Result<AppEntry, LockfileEntry>> {
    let planned = |would: &'static str| if dry_run { would } else { "not-reached" };
    Some(match a {
        Action::Reap { candidate, lock } => {
            let mut e = app_entry(candidate, lock.name(), planned("would-reap"));
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
            let mut age_secs = None;
            let mut pid = None;
            let mut run_id = None;
            fill_holder(&mut age_secs, &mut pid, &mut run_id, age, info.as_ref());
            let pid = pid.or_else(|| pids.first().map(|p| *p as u32));
            let action = if dry_run { "left" } else { "not-reached" };
            if let Some(c) = candidate {
                let mut e = app_entry(c, "held", action);
                (e.age_secs, e.holder_pid, e.holder_run_id, e.long_held) = (age_secs, pid, run_id, flag.is_some());
                e.reason = Some("held by a live run".into());
                Ok(e)
            } else {
                let mut e = lockfile_entry(domain, action);
                (e.age_secs, e.holder_pid, e.holder_run_id, e.long_held) = (age_secs, pid, run_id, flag.is_some());
                e.reason = Some("held: a live run that has no app yet".into());
                Err(e)
            }
        }
        Action::Skip { domain, candidate, reason } => {
            if let Some(c) = candidate {
                let mut e = app_entry(c, "unsafe", "skipped");
                e.reason = Some(reason.clone());
                Ok(e)
            } else {
                let mut e = lockfile_entry(domain, "skipped");
                e.reason = Some(reason.clone());
                Err(e)
            }
        }
        Action::UnlinkStale { domain } => Err(lockfile_entry(domain, planned("would-unlink"))),
        _ => return None,
    })
}
