//! What a sweep did (or, in a dry run, would do): the `--json` document and the summary line.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::inventory::SourceStatus;
use super::prune::PruneEntry;
use super::stragglers::StragglerEntry;
use super::vocab::{Act, DirAct, Halt, Kind, LockSeen, Part, ProcAct, Source};
use crate::lock::HolderInfo;

/// The `ccci janitor --json` document (schema 1). Every field is always present; optional
/// values are `null`.
///
/// ```text
/// {
///   "schema": 1,
///   "kind": "janitor" | "run-start",
///   "dry_run": bool,
///   "started": "RFC3339", "duration_ms": u64,
///   "completed": bool,                       // false: stopped before the end
///   "stopped": null | "deadline" | "cancelled",
///   "settings": { "lock_dir", "runs_dir", "domain_suffix": str,
///                 "prune_after_days": u64, "deadline_secs": u64 },
///   "discovery": { "abra":   { "ok": bool, "listed": usize, "error": str|null },
///                  "docker": { "ok": bool, "listed": usize, "error": str|null },
///                  "candidates": usize,      // run apps found (union of both sources)
///                  "ignored": [str] },       // names that are not run apps: never probed
///   "apps": [ { "domain", "stack": str, "sources": ["abra"|"docker"|"watch"],
///               "lock": "free"|"absent"|"held"|"unsafe"|"gone"|"unprobed"|"unknown",
///               "action": "reaped"|"already-gone"|"would-reap"|"left"|"skipped"|"failed"|"not-reached",
///               "reason": str|null, "long_held": bool, "age_secs": u64|null,
///               "holder_pid": u32|null, "holder_run_id": str|null,
///               "lease": null|"held"|"taken"|"unknown", "lease_token": u64|null, "ms": u64 } ],
///   "lockfiles": [ { "domain": str,           // app lockfiles with no app behind them
///                    "action": "unlinked"|"would-unlink"|"left"|"skipped"|"gone"|"failed"|"not-reached",
///                    "reason": str|null, "long_held": bool, "age_secs": u64|null,
///                    "holder_pid": u32|null, "holder_run_id": str|null } ],
///   "run_dirs": [ { "run_id", "path": str,
///                   "action": "pruned"|"would-prune"|"live"|"kept"|"failed",
///                   "removed": ["abra"|"tests"|"state"], "reason": str|null } ],
///   "stragglers": [ { "pid": i32, "run_id": str,
///                     "action": "terminated"|"killed"|"gone"|"would-kill"|"failed",
///                     "reason": str|null } ],
///   "errors": [str],                         // discovery or reap failures, in words
///   "exit_code": u8                          // what `ccci janitor` exits with
/// }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub kind: Kind,
    pub dry_run: bool,
    pub started: String,
    pub duration_ms: u64,
    pub completed: bool,
    pub stopped: Option<Halt>,
    pub settings: SettingsOut,
    pub discovery: DiscoveryOut,
    pub apps: Vec<AppEntry>,
    pub lockfiles: Vec<LockfileEntry>,
    pub run_dirs: Vec<PruneEntry>,
    pub stragglers: Vec<StragglerEntry>,
    pub errors: Vec<String>,
    pub exit_code: u8,
    /// The app leases could not be read (etcd unreachable or without a quorum): no leased app
    /// was reaped, and the verdict is infra. Not in the report: `errors` says why, the exit
    /// code what it means.
    #[serde(skip)]
    pub leases_unread: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettingsOut {
    pub lock_dir: String,
    pub runs_dir: String,
    pub domain_suffix: String,
    pub prune_after_days: u64,
    pub deadline_secs: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DiscoveryOut {
    pub abra: SourceStatus,
    pub docker: SourceStatus,
    pub candidates: usize,
    pub ignored: Vec<String>,
}

/// One candidate run app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppEntry {
    pub domain: String,
    pub stack: String,
    pub sources: Vec<Source>,
    pub lock: LockSeen,
    pub action: Act,
    pub reason: Option<String>,
    #[serde(flatten)]
    pub holder: HolderSummary,
    /// With the app lease: `held` (a run on some host owns the domain), `taken` (the janitor
    /// reaped under a fresh lease), `unknown` (etcd could not be asked); `null` without it.
    pub lease: Option<LeaseSeen>,
    /// The token of the lease held or taken.
    pub lease_token: Option<u64>,
    pub ms: u64,
}

/// What the janitor learned of an app's lease (`apps[].lease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseSeen {
    /// A run on some host owns the domain: the app is left.
    Held,
    /// Nobody held it: the janitor reaped under a fresh lease of its own.
    Taken,
    /// etcd could not be asked: the app is left.
    Unknown,
}

impl LeaseSeen {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseSeen::Held => "held",
            LeaseSeen::Taken => "taken",
            LeaseSeen::Unknown => "unknown",
        }
    }
}

/// One lockfile with no app behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockfileEntry {
    pub domain: String,
    pub action: Act,
    pub reason: Option<String>,
    #[serde(flatten)]
    pub holder: HolderSummary,
}

/// Who holds a lock the janitor left, as the lockfile and `/proc/locks` tell it: the same
/// fields in `apps[]` and `lockfiles[]` (flattened into each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderSummary {
    /// Held past twice its recorded deadline (or an hour): flagged for an operator, never stolen.
    pub long_held: bool,
    pub age_secs: Option<u64>,
    pub holder_pid: Option<u32>,
    pub holder_run_id: Option<String>,
}

impl HolderSummary {
    /// The lock's age and its holder's record (`long_held` is the caller's judgement).
    pub fn of(age: Option<Duration>, info: Option<&HolderInfo>) -> HolderSummary {
        HolderSummary {
            long_held: false,
            age_secs: age.map(|a| a.as_secs()),
            holder_pid: info.map(|i| i.pid),
            holder_run_id: info.map(|i| i.run_id.clone()).filter(|r| !r.is_empty()),
        }
    }
}

/// `pid N, run R` of a holder, from its lockfile content (when ccci wrote it).
pub fn describe_holder(info: Option<&HolderInfo>) -> String {
    match info {
        Some(i) if !i.run_id.is_empty() => format!("pid {}, run {}", i.pid, i.run_id),
        Some(i) => format!("pid {}", i.pid),
        None => "holder not recorded".to_string(),
    }
}

impl Report {
    /// The report of a sweep that starts now: nothing found, nothing done, not completed.
    pub fn new(kind: Kind, dry_run: bool, started: String, settings: SettingsOut) -> Report {
        Report {
            schema: 1,
            kind,
            dry_run,
            started,
            duration_ms: 0,
            completed: false,
            stopped: None,
            settings,
            discovery: DiscoveryOut::default(),
            apps: Vec::new(),
            lockfiles: Vec::new(),
            run_dirs: Vec::new(),
            stragglers: Vec::new(),
            errors: Vec::new(),
            exit_code: 0,
            leases_unread: false,
        }
    }

    /// The exit code of `ccci janitor`: 0 when the sweep completed, 1 when something failed
    /// (it still went on), 69 when dockerd could not be read for discovery or etcd for the app
    /// leases (the infra verdict: unreachable, erroring or too slow; as a run's), the signal's
    /// code when cancelled, 142 at its deadline.
    pub fn compute_exit_code(&self, cancel_code: Option<u8>) -> u8 {
        match self.stopped {
            Some(Halt::Deadline) => crate::exit::DEADLINE,
            Some(_) => cancel_code.unwrap_or(crate::exit::TERMINATED),
            None if self.discovery.docker.infra || self.leases_unread => crate::exit::INFRA,
            None if self.failed() => crate::exit::FAILED,
            None => crate::exit::OK,
        }
    }

    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
            || self.apps.iter().any(|a| a.action == Act::Failed)
            || self.lockfiles.iter().any(|l| l.action == Act::Failed)
            || self.run_dirs.iter().any(|d| d.action == DirAct::Failed)
            || self.stragglers.iter().any(|s| s.action == ProcAct::Failed)
    }

    fn count<'a>(actions: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for a in actions {
            *counts.entry(a).or_default() += 1;
        }
        counts.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// One line: how many of each outcome, per phase.
    pub fn summary(&self) -> String {
        let fmt = |v: Vec<(String, usize)>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
            }
        };
        let long = self.apps.iter().filter(|a| a.holder.long_held).count()
            + self.lockfiles.iter().filter(|l| l.holder.long_held).count();
        format!(
            "{}{} in {} ms: apps: {}; stale lockfiles: {}; run dirs: {}; stragglers: {}{}{}",
            self.kind,
            if self.dry_run { " (dry run)" } else { "" },
            self.duration_ms,
            fmt(Self::count(self.apps.iter().map(|a| a.action.as_str()))),
            fmt(Self::count(self.lockfiles.iter().map(|l| l.action.as_str()))),
            fmt(Self::count(self.run_dirs.iter().map(|d| d.action.as_str()))),
            fmt(Self::count(self.stragglers.iter().map(|s| s.action.as_str()))),
            if long > 0 { format!("; {long} long-held lock(s) flagged") } else { String::new() },
            match self.stopped {
                Some(s) => format!("; stopped early ({s}): the next sweep continues"),
                None => String::new(),
            }
        )
    }

    /// The plan of a dry run for people: one row per action, `[ACTION, KIND, NAME, DETAIL]`
    /// ([`Report::PLAN_COLUMNS`]); `ccci janitor --dry-run` prints it as a table on stdout.
    pub fn plan_rows(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut row = |verb: &str, kind: &str, name: &str, detail: String| {
            out.push(vec![verb.to_string(), kind.to_string(), name.to_string(), detail]);
        };
        for a in &self.apps {
            let verb = match a.action {
                Act::WouldReap => "reap",
                Act::Left => "leave",
                other => other.as_str(),
            };
            let mut why = format!("lock {}", a.lock);
            if let Some(l) = a.lease {
                why.push_str(&format!(", lease {}", l.as_str()));
            }
            if let Some(pid) = a.holder.holder_pid {
                why.push_str(&format!(", pid {pid}"));
            }
            if let Some(r) = &a.holder.holder_run_id {
                why.push_str(&format!(", run {r}"));
            }
            if let Some(r) = &a.reason {
                why.push_str(&format!("; {r}"));
            }
            if a.holder.long_held {
                why.push_str("; LONG-HELD: possible leaked run");
            }
            row(
                verb,
                "app",
                &a.domain,
                format!("{why}; found by {}", a.sources.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("+")),
            );
        }
        for l in &self.lockfiles {
            let verb = match l.action {
                Act::WouldUnlink => "unlink",
                Act::Left => "leave",
                other => other.as_str(),
            };
            let mut why = l.reason.clone().unwrap_or_else(|| "free, no app behind it".into());
            if l.holder.long_held {
                why.push_str("; LONG-HELD: possible leaked run");
            }
            row(verb, "lockfile", &l.domain, why);
        }
        for d in &self.run_dirs {
            let verb = if d.action == DirAct::WouldPrune { "prune" } else { d.action.as_str() };
            let what = if d.removed.is_empty() { d.reason.clone().unwrap_or_default() } else { Part::list(&d.removed) };
            row(verb, "run-dir", &d.path, what);
        }
        for s in &self.stragglers {
            let verb = if s.action == ProcAct::WouldKill { "kill" } else { s.action.as_str() };
            row(verb, "process", &s.pid.to_string(), format!("run {} is dead", s.run_id));
        }
        out
    }

    /// The header of [`Report::plan_rows`].
    pub const PLAN_COLUMNS: [&'static str; 4] = ["ACTION", "KIND", "NAME", "DETAIL"];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let settings = SettingsOut {
            lock_dir: String::new(),
            runs_dir: String::new(),
            domain_suffix: String::new(),
            prune_after_days: 14,
            deadline_secs: 600,
        };
        Report { completed: true, ..Report::new(Kind::Janitor, false, String::new(), settings) }
    }

    #[test]
    fn exit_codes_stop_then_infra_then_failure() {
        let mut r = report();
        assert_eq!(r.compute_exit_code(None), 0);
        r.errors.push("discovery through docker failed: dockerd did not answer".into());
        assert_eq!(r.compute_exit_code(None), 1);
        r.discovery.docker = SourceStatus { error: Some("timed out".into()), infra: true, ..SourceStatus::default() };
        assert_eq!(r.compute_exit_code(None), 69);
        r.discovery.docker = SourceStatus::default();
        r.leases_unread = true;
        assert_eq!(r.compute_exit_code(None), 69, "etcd unreadable is the infra verdict too");
        r.stopped = Some(Halt::Deadline);
        assert_eq!(r.compute_exit_code(None), 142);
        r.stopped = Some(Halt::Cancelled);
        assert_eq!(r.compute_exit_code(Some(130)), 130);
        // The infra flag stays out of the JSON document (its schema is fixed).
        let v = serde_json::to_value(&r.discovery.docker).unwrap();
        assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["error", "listed", "ok"]);
    }
}
