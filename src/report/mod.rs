//! The report (§7.8): `results.json` (a superset of the predecessor's schema 2), the summary
//! table on stderr and JUnit XML. Writing a report never changes the verdict.
//!
//! Every type here is both `Serialize` and `Deserialize`, so tests and tools read
//! `results.json` back into the real types, and `JsonSchema`, so `docs/results.schema.json`
//! is generated from them ([`json_schema`]).

mod assemble;
mod badge;
mod evidence;
mod junit;
mod markdown;
mod rungs;
mod schema;
pub mod status;
mod summary;
mod write;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exit::Outcome;
use crate::stage::Stage;
pub use badge::{badge_svg, badge_text};
pub use evidence::Evidence;
pub use junit::junit_xml;
pub use markdown::{reproduce_command, summary_md};
pub use rungs::{Rungs, rungs_and_level};
pub use schema::json_schema;
pub use summary::summary_table;
pub use write::write_reports;

/// A stage's, a test's or a rung's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// One custom test (`test_*` executable) of the `custom` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TestResult {
    pub name: String,
    /// `pass`, `fail`, or `skip` (it exited 77: it could not run; the stage is then an
    /// unintentional skip).
    pub status: Status,
    pub ms: u64,
    /// Why it failed or skipped; absent when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One of the five stages. All five always appear, in order; an unrequested one is `unver`
/// with the reason `not requested`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StageResult {
    #[serde(rename = "name")]
    pub stage: Stage,
    pub status: Status,
    pub ms: u64,
    pub reason: Option<String>,
    /// For skips: structural or declared in `expected_na` (does not block the verdict).
    /// Written only when true.
    #[serde(default, skip_serializing_if = "is_false")]
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

/// What ran the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
pub struct Provenance {
    pub ccci: String,
    pub abra: String,
    pub docker: String,
    pub host: String,
}

/// How teardown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TeardownResult {
    /// Nothing of the app remains.
    Clean,
    /// Objects remained after teardown (listed in `residue`).
    Residue,
    /// The teardown budget was spent; the janitor reaps what is left.
    Abandoned,
    /// This run never held the app lock: the app, if any, belongs to its holder.
    Skipped,
    /// Nothing was deployed.
    #[default]
    None,
}

impl TeardownResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TeardownResult::Clean => "clean",
            TeardownResult::Residue => "residue",
            TeardownResult::Abandoned => "abandoned",
            TeardownResult::Skipped => "skipped",
            TeardownResult::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Teardown {
    pub result: TeardownResult,
    pub residue: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ms: u64,
}

impl Teardown {
    /// Residue or abandoned: the verdict's exit 4 when every stage passed.
    pub fn unclean(&self) -> bool {
        matches!(self.result, TeardownResult::Residue | TeardownResult::Abandoned)
    }
}

/// A dependency app of the run (`results.json` `deps`), in the order it was deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DepOut {
    /// Its recipe, which is its name in `$CCCI_DEPS_FILE`.
    pub name: String,
    pub domain: String,
    /// The release deployed (`""` when the run stopped before choosing it).
    pub version: String,
    /// How long it took from `abra app deploy` to ready (and provisioned); null when it never
    /// became ready.
    pub ready_ms: Option<u64>,
    /// How its teardown ended (`none` when it was never deployed).
    pub teardown: TeardownResult,
    /// Why it did not come up, or what its teardown left; absent when all went well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Skipped rungs: intentional ones with their reason, and unintentional ones (which block the
/// verdict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Skips {
    pub intentional: BTreeMap<String, String>,
    pub unintentional: Vec<String>,
}

/// The lint rung's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LintStatus {
    Pass,
    Fail,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Flags {
    pub clean_teardown: bool,
    pub no_secret_leak: bool,
}

/// What the policy gate checked and refused in a run (results.json `policy`): `checked` counts
/// the deploys it judged (the base, the head of an upgrade), `violations` are the refusals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyOut {
    pub checked: u32,
    pub violations: Vec<crate::policy::Violation>,
}

/// `cold` (a fresh deploy, every requested stage) or `quick` (`--quick`/`CCCI_QUICK=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Cold,
    Quick,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Quick => "quick",
        }
    }
}

/// The form of `started` and `finished`: RFC 3339, UTC, whole seconds, `Z`.
const RFC3339_UTC: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$";

/// `results.json`: a superset of the predecessor's schema 2 (same keys, same value
/// spellings), documented in `docs/results.md` and `docs/results.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Results {
    /// Always 2: the predecessor's schema, extended only by new keys.
    pub schema: u32,
    pub recipe: String,
    /// The `coop-cloud.<stack>.version` label after the last deploy, else the head's tag, else
    /// its short commit.
    pub version: String,
    /// The PR number, `"0"` when none.
    pub pr: String,
    /// The ref under test, `""` when none.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub run_id: String,
    /// 1 for `<runs dir>/<run id>`, n for `<run id>.<n>` (a retried build with the same run id).
    pub attempt: u32,
    /// When the report was written: RFC 3339 in UTC with `Z` (`2026-11-30T01:35:25Z`). Sorts
    /// the dashboard's history (docs/results.md says why it is not `+00:00`).
    #[schemars(pattern(RFC3339_UTC))]
    pub finished: String,
    pub mode: Mode,
    /// The five stages in order: install, upgrade, backup, restore, custom.
    pub stages: Vec<StageResult>,
    /// Rungs climbed in order (install, upgrade, backup_restore, functional, lint): passed or
    /// intentionally skipped, stopping at the first fail, unver or unintentional skip.
    pub level: u32,
    pub rungs: Rungs,
    pub skips: Skips,
    pub lint: Lint,
    /// What the policy gate checked and refused.
    pub policy: PolicyOut,
    /// Not produced by ccci: always null.
    pub screenshot: Option<String>,
    /// Not produced by ccci: always null (`summary.md` is its text counterpart).
    pub summary_card: Option<String>,
    pub flags: Flags,
    /// The customisation manifest: `{files, recipe_local_tests, ccci_yml}` (extra_env values
    /// hidden), `{}` when the run stopped before reading it.
    pub customization: Value,
    /// The run app's domain.
    pub domain: String,
    /// Where the recipe was cloned from, `""` for `abra recipe fetch`.
    pub src: String,
    /// The commit under test, `""` when the fetch failed.
    pub head: String,
    /// The upgrade base (tag or commit), `""` when none.
    pub base: String,
    /// When the run started: RFC 3339 in UTC with `Z`.
    #[schemars(pattern(RFC3339_UTC))]
    pub started: String,
    pub duration_ms: u64,
    /// ccci's own CPU time (RUSAGE_SELF: children excluded).
    pub self_cpu_ms: u64,
    pub provenance: Provenance,
    pub teardown: Teardown,
    /// The verdict (docs/exit-codes.md).
    pub outcome: Outcome,
    /// What `ccci run` exits with.
    pub exit_code: u8,
    /// Why the verdict is not a clean pass, in one line (the cause that decided it: the signal
    /// or deadline, the lock wait, the infrastructure, ccci's own error, the first failing or
    /// unintentionally skipped stage, or the teardown residue); null on a clean pass.
    #[serde(default)]
    pub reason: Option<String>,
    /// Lines dropped from stderr because its reader stalled (run.log has them).
    pub stderr_dropped_lines: u64,
    /// The build that ran this (`DRONE_BUILD_LINK`), null when unknown.
    #[serde(default)]
    pub build_link: Option<String>,
    /// Files the run saved under `diagnostics/` before teardown (service tasks, logs, health),
    /// relative to the run dir; empty when nothing was saved.
    #[serde(default)]
    pub diagnostics: Vec<String>,
    /// The report files written next to `results.json`, relative to the run dir.
    #[serde(default)]
    pub reports: Reports,
    /// The dependency apps of the run (`ccci.yml` `deps:`), in deploy order; empty when none.
    #[serde(default)]
    pub deps: Vec<DepOut>,
}

/// The report files of a run, relative to its run dir; null when not written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Reports {
    /// `summary.md`: the verdict, rungs, stages, failing reason, diagnostics excerpt and links,
    /// for a PR comment.
    pub summary: Option<String>,
    /// `badge.svg`: the level and the verdict.
    pub badge: Option<String>,
    /// `junit.xml`: JUnit XML (also written to `--junit`/`CCCI_JUNIT` when set).
    pub junit: Option<String>,
}

impl Results {
    /// A report of a run that did nothing yet: every stage `unver` (not requested), no
    /// teardown, outcome `pass`. The starting point for tools and tests that build one by hand.
    pub fn blank(recipe: &str, run_id: &str) -> Results {
        let stages: Vec<StageResult> = Stage::ALL.into_iter().map(|s| StageResult::unver(s, "not requested")).collect();
        let lint = Lint { status: LintStatus::Unver, detail: None, rules_failed: Vec::new() };
        let (rungs, level, skips) = rungs_and_level(&stages, &lint);
        Results {
            schema: 2,
            recipe: recipe.to_string(),
            version: String::new(),
            pr: "0".to_string(),
            git_ref: String::new(),
            run_id: run_id.to_string(),
            attempt: 1,
            finished: crate::clock::rfc3339(std::time::SystemTime::now()),
            mode: Mode::Cold,
            stages,
            level,
            rungs,
            skips,
            lint,
            policy: PolicyOut::default(),
            screenshot: None,
            summary_card: None,
            flags: Flags { clean_teardown: false, no_secret_leak: true },
            customization: serde_json::json!({}),
            domain: String::new(),
            src: String::new(),
            head: String::new(),
            base: String::new(),
            started: crate::clock::rfc3339(std::time::SystemTime::now()),
            duration_ms: 0,
            self_cpu_ms: 0,
            provenance: Provenance::default(),
            teardown: Teardown::default(),
            outcome: Outcome::Pass,
            exit_code: 0,
            reason: None,
            stderr_dropped_lines: 0,
            build_link: None,
            diagnostics: Vec::new(),
            reports: Reports::default(),
            deps: Vec::new(),
        }
    }

    /// Replaces the stages and recomputes the rungs, the level and the skips from them.
    pub fn set_stages(&mut self, stages: Vec<StageResult>) {
        let (rungs, level, skips) = rungs_and_level(&stages, &self.lint);
        (self.stages, self.rungs, self.level, self.skips) = (stages, rungs, level, skips);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_report_round_trips_with_the_predecessors_spellings() {
        let mut r = Results::blank("hello", "279");
        r.set_stages(vec![
            StageResult::new(Stage::Install, Status::Pass, 10, None),
            StageResult::skip(Stage::Upgrade, true, "no earlier release"),
            StageResult::skip(Stage::Backup, false, "no snapshot"),
            StageResult::unver(Stage::Restore, "not requested"),
            StageResult {
                tests: vec![TestResult {
                    name: "test_a".into(),
                    status: Status::Fail,
                    ms: 3,
                    reason: Some("x".into()),
                }],
                ..StageResult::new(Stage::Custom, Status::Fail, 5, Some("failed: test_a".into()))
            },
        ]);
        r.mode = Mode::Quick;
        r.outcome = Outcome::LockTimeout;
        r.teardown.result = TeardownResult::Abandoned;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["outcome"], "lock-timeout");
        assert_eq!(v["mode"], "quick");
        assert_eq!(v["teardown"]["result"], "abandoned");
        assert_eq!(v["lint"]["status"], "unver");
        assert_eq!(v["rungs"]["lint"], "unver");
        assert_eq!(v["stages"][0]["name"], "install");
        assert_eq!(v["stages"][1]["intentional"], true);
        assert!(v["stages"][2].get("intentional").is_none(), "written only when true");
        assert!(v["stages"][0]["tests"][0].is_null());
        assert_eq!(v["stages"][4]["tests"][0]["status"], "fail");
        assert!(v["reason"].is_null());
        // Every key of the predecessor's schema 2 is there.
        for k in [
            "recipe",
            "version",
            "pr",
            "ref",
            "run_id",
            "finished",
            "stages",
            "level",
            "rungs",
            "lint",
            "skips",
            "flags",
            "screenshot",
            "summary_card",
            "customization",
            "schema",
            "mode",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        let back: Results = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert_eq!(serde_json::to_value(TeardownResult::default()).unwrap(), "none");
    }
}
