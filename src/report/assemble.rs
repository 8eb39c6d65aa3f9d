//! Making `results.json` of what a finished run found out.

use std::time::{Duration, SystemTime};

use super::{Flags, Lint, Mode, Provenance, Reports, Results, StageResult, Status, TeardownResult, rungs_and_level};
use crate::config;
use crate::exit::{self, Cause, Facts, Outcome};
use crate::pipeline::RunState;
use crate::{clock, logging};

impl Results {
    /// `results.json` of a finished run: the settings it ran with, what the pipeline found out
    /// (`st`) and the facts that decided its verdict.
    pub fn from_run(
        cfg: &config::Run,
        st: &RunState,
        facts: Facts,
        attempt: u32,
        started: SystemTime,
        duration: Duration,
        provenance: Provenance,
    ) -> Results {
        let (outcome, exit_code) = exit::verdict(facts);
        let stages = st.stage_list(&cfg.stages);
        let reason = verdict_reason(facts, outcome, st, &stages, &cfg.stages);
        let lint = st.lint.clone().unwrap_or_else(|| Lint::unver("lint did not run (the run ended before it)"));
        let (rungs, level, skips) = rungs_and_level(&stages, &lint);
        let head = st.fetched.as_ref().map(|f| f.head.clone()).unwrap_or_default();
        Results {
            schema: 2,
            recipe: cfg.recipe.clone(),
            version: st.version.clone().unwrap_or_else(|| head.chars().take(8).collect()),
            pr: cfg.pr.clone(),
            git_ref: cfg.git_ref.clone().unwrap_or_default(),
            run_id: cfg.run_id.clone(),
            attempt,
            finished: clock::rfc3339(SystemTime::now()),
            mode: if cfg.quick { Mode::Quick } else { Mode::Cold },
            stages,
            level,
            rungs,
            skips,
            lint,
            policy: st.policy.clone(),
            screenshot: None,
            summary_card: None,
            flags: Flags { clean_teardown: st.teardown.result == TeardownResult::Clean, no_secret_leak: true },
            customization: if st.customization.is_null() { serde_json::json!({}) } else { st.customization.clone() },
            domain: cfg.domain.clone(),
            src: cfg.src.as_ref().map(|s| s.clone_location(&cfg.host.git_base)).unwrap_or_default(),
            head,
            base: st.base.clone().unwrap_or_default(),
            started: clock::rfc3339(started),
            duration_ms: duration.as_millis() as u64,
            self_cpu_ms: super::self_cpu_ms(),
            provenance,
            teardown: st.teardown.clone(),
            outcome,
            exit_code,
            reason,
            stderr_dropped_lines: logging::dropped_lines(),
            build_link: cfg.build_link.clone(),
            diagnostics: st.diagnostics.clone(),
            reports: Reports::default(),
            deps: st.deps.clone(),
        }
    }
}

fn cause_text(cause: Cause) -> String {
    match cause {
        Cause::Deadline => "the run's deadline passed".to_string(),
        Cause::LeaseLost => {
            "CI lost the app lease (etcd) mid-run: the run stopped so another host's run is never disturbed".to_string()
        }
        other => format!("cancelled by SIG{}", format!("{other:?}").to_uppercase()),
    }
}

/// The one cause that decided the verdict, in the precedence of [`exit::verdict`]; `None` on a
/// clean pass.
fn verdict_reason(
    facts: Facts,
    outcome: Outcome,
    st: &RunState,
    stages: &[StageResult],
    requested: &[crate::stage::Stage],
) -> Option<String> {
    if let Some(c) = facts.cause {
        return Some(cause_text(c));
    }
    match outcome {
        Outcome::LockTimeout => Some("gave up waiting for the app lock (--lock-timeout)".to_string()),
        Outcome::Infra => Some(st.infra.clone().unwrap_or_else(|| "CI could not test the recipe".to_string())),
        Outcome::Error => Some(st.internal_error.clone().unwrap_or_else(|| "ccci failed".to_string())),
        Outcome::Fail => {
            let first_bad = stages.iter().find(|s| s.is_bad(requested.contains(&s.stage)));
            let stage_reason = first_bad.map(|s| {
                let what = match s.status {
                    Status::Skip => "skipped unintentionally",
                    Status::Unver => "not verified",
                    _ => "failed",
                };
                match &s.reason {
                    Some(r) => format!("{} {what}: {r}", s.stage),
                    None => format!("{} {what}", s.stage),
                }
            });
            // A stage that failed explains the verdict better than the rest being unverified.
            match (first_bad, &st.failed) {
                (Some(s), _) if s.status != Status::Unver => stage_reason,
                (_, Some(f)) => Some(f.clone()),
                _ => stage_reason.or_else(|| Some("failed".to_string())),
            }
        }
        Outcome::Pass if st.teardown.unclean() => {
            let t = &st.teardown;
            let mut r = format!("teardown {}", t.result.as_str());
            if let Some(why) = &t.reason {
                r.push_str(&format!(": {why}"));
            }
            if !t.residue.is_empty() {
                r.push_str(&format!(" ({})", t.residue.join(", ")));
            }
            Some(r)
        }
        Outcome::Pass => None,
        Outcome::Cancelled | Outcome::Deadline => Some(outcome.as_str().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Teardown;
    use crate::stage::Stage;

    fn reason(facts: Facts, st: &RunState, stages: &[StageResult]) -> Option<String> {
        verdict_reason(facts, exit::verdict(facts).0, st, stages, &Stage::ALL)
    }

    #[test]
    fn the_reason_names_the_cause_that_decided_the_verdict() {
        let st = RunState::default();
        let failing = vec![
            StageResult::new(Stage::Install, Status::Pass, 1, None),
            StageResult::new(Stage::Upgrade, Status::Fail, 1, Some("did not deploy the head".into())),
            StageResult::unver(Stage::Backup, "upgrade failed"),
        ];
        let failed = Facts { failed: true, ..Facts::default() };
        assert_eq!(reason(failed, &st, &failing).unwrap(), "upgrade failed: did not deploy the head");
        let cancelled = Facts { cause: Some(Cause::Term), ..failed };
        assert_eq!(reason(cancelled, &st, &failing).unwrap(), "cancelled by SIGTERM");
        let deadline = Facts { cause: Some(Cause::Deadline), ..failed };
        assert_eq!(reason(deadline, &st, &failing).unwrap(), "the run's deadline passed");
        // A failed fetch leaves every stage unverified: the fetch is the cause.
        let st = RunState { failed: Some("fetch failed: no such ref".into()), ..RunState::default() };
        let unver: Vec<_> =
            Stage::ALL.into_iter().map(|s| StageResult::unver(s, "fetch failed: no such ref")).collect();
        assert_eq!(reason(failed, &st, &unver).unwrap(), "fetch failed: no such ref");
        let st = RunState { infra: Some("docker is unreachable".into()), ..RunState::default() };
        assert_eq!(reason(Facts { infra: true, ..failed }, &st, &unver).unwrap(), "docker is unreachable");
        let st = RunState {
            teardown: Teardown {
                result: TeardownResult::Residue,
                residue: vec!["volume:x_data".into()],
                reason: Some("objects remained after teardown".into()),
                ms: 1,
            },
            ..RunState::default()
        };
        let passed = vec![StageResult::new(Stage::Install, Status::Pass, 1, None)];
        assert_eq!(
            reason(Facts { teardown_unclean: true, ..Facts::default() }, &st, &passed).unwrap(),
            "teardown residue: objects remained after teardown (volume:x_data)"
        );
        assert_eq!(reason(Facts::default(), &RunState::default(), &passed), None);
    }
}
