//! The report (§7.8): `results.json` (a superset of the predecessor's schema 2), the summary
//! table on stderr and JUnit XML. Writing a report never changes the verdict.

mod junit;
mod rungs;
pub mod status;
mod summary;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::stage::Stage;
pub use junit::junit_xml;
pub use rungs::{Rungs, rungs_and_level};
pub use summary::summary_table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
    Unver,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Unver => "unver",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub name: String,
    pub status: Status,
    pub ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    #[serde(rename = "name")]
    pub stage: Stage,
    pub status: Status,
    pub ms: u64,
    pub reason: Option<String>,
    /// For skips: structural or declared in `expected_na` (does not block the verdict).
    #[serde(skip)]
    pub intentional: bool,
    pub tests: Vec<TestResult>,
}

impl StageResult {
    pub fn new(stage: Stage, status: Status, ms: u64, reason: Option<String>) -> StageResult {
        StageResult { stage, status, ms, reason, intentional: false, tests: Vec::new() }
    }

    pub fn unver(stage: Stage, reason: &str) -> StageResult {
        StageResult::new(stage, Status::Unver, 0, Some(reason.to_string()))
    }

    pub fn skip(stage: Stage, intentional: bool, reason: &str) -> StageResult {
        StageResult { intentional, ..StageResult::new(stage, Status::Skip, 0, Some(reason.to_string())) }
    }

    /// Counts against the verdict: a failure, or a skip nobody intended.
    pub fn is_bad(&self, requested: bool) -> bool {
        match self.status {
            Status::Fail => true,
            Status::Skip => !self.intentional,
            Status::Unver => requested,
            Status::Pass => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Provenance {
    pub ccci: String,
    pub abra: String,
    pub docker: String,
    pub host: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Teardown {
    /// `clean`, `residue`, `abandoned`, `skipped` (the lock was never held) or `none` (nothing
    /// was deployed).
    pub result: String,
    pub residue: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ms: u64,
}

impl Default for Teardown {
    fn default() -> Self {
        Teardown { result: "none".into(), residue: Vec::new(), reason: None, ms: 0 }
    }
}

impl Teardown {
    pub fn unclean(&self) -> bool {
        matches!(self.result.as_str(), "residue" | "abandoned")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Skips {
    pub intentional: BTreeMap<String, String>,
    pub unintentional: Vec<String>,
}

/// The lint rung's verdict (verdict-neutral: it never changes the exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LintStatus {
    /// abra's lint exited 0 (rules of level `warn` may still be listed as failed).
    Pass,
    /// abra's lint failed on its rules (a critical rule was not satisfied).
    Fail,
    /// Nothing could be said: lint did not run, timed out, or failed before linting.
    Unver,
}

impl LintStatus {
    pub fn rung_status(self) -> Status {
        match self {
            LintStatus::Pass => Status::Pass,
            LintStatus::Fail => Status::Fail,
            LintStatus::Unver => Status::Unver,
        }
    }
}

/// `results.json` `lint`: `{status, detail, rules_failed}` (e.g. `rules_failed: ["R014"]`).
#[derive(Debug, Clone, Serialize)]
pub struct Lint {
    pub status: LintStatus,
    pub detail: Option<String>,
    pub rules_failed: Vec<String>,
}

impl Lint {
    pub fn unver(detail: &str) -> Lint {
        Lint { status: LintStatus::Unver, detail: Some(detail.to_string()), rules_failed: Vec::new() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Flags {
    pub clean_teardown: bool,
    pub no_secret_leak: bool,
}

/// What the policy gate checked and refused in a run (results.json `policy`): `checked` counts
/// the deploys it judged (the base, the head of an upgrade), `violations` are the refusals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyOut {
    pub checked: u32,
    pub violations: Vec<crate::policy::Violation>,
}

/// `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub schema: u32,
    pub recipe: String,
    pub version: String,
    pub pr: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub run_id: String,
    /// 1 for `<runs dir>/<run id>`, n for `<run id>.<n>` (a retried build with the same run id).
    pub attempt: u32,
    pub finished: String,
    pub mode: &'static str,
    pub stages: Vec<StageResult>,
    pub level: u32,
    pub rungs: Rungs,
    pub skips: Skips,
    pub lint: Lint,
    /// What the policy gate checked and refused.
    pub policy: PolicyOut,
    pub screenshot: Option<String>,
    pub summary_card: Option<String>,
    pub flags: Flags,
    pub customization: Value,
    pub domain: String,
    pub src: String,
    pub head: String,
    pub base: String,
    pub started: String,
    pub duration_ms: u64,
    pub self_cpu_ms: u64,
    pub provenance: Provenance,
    pub teardown: Teardown,
    pub outcome: &'static str,
    pub exit_code: u8,
    /// Lines dropped from stderr because its reader stalled (run.log has them).
    pub stderr_dropped_lines: u64,
}

/// CPU time of ccci itself in microseconds (RUSAGE_SELF: children excluded).
pub fn self_cpu_us() -> u64 {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
            us(u.user_time()) + us(u.system_time())
        }
        Err(_) => 0,
    }
}

/// CPU time of ccci itself (RUSAGE_SELF: children excluded).
pub fn self_cpu_ms() -> u64 {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1000 + t.tv_usec() as u64 / 1000;
            ms(u.user_time()) + ms(u.system_time())
        }
        Err(_) => 0,
    }
}
