//! Rungs and the level (§7.8): install → `install`; upgrade → `upgrade`; backup + restore →
//! `backup_restore`; custom → `functional`; `abra recipe lint` → `lint` (level 5). The level
//! counts rungs in that order that passed or were intentionally skipped, stopping at the first
//! fail, unver or unintentional skip. Level and lint never change the verdict.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Lint, Skips, StageResult, Status};
use crate::stage::{Rung, Stage};

/// The status of each rung (`lint` is always `unver`: ccci does not lint yet).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct Rungs {
    pub install: Status,
    pub upgrade: Status,
    pub backup_restore: Status,
    pub functional: Status,
    pub lint: Status,
}

/// A rung's status and, for skips, whether it was intentional and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RungState {
    status: Status,
    intentional: bool,
    reason: Option<String>,
}

fn state_of(stage: Option<&StageResult>) -> RungState {
    match stage {
        Some(s) => RungState { status: s.status, intentional: s.intentional, reason: s.reason.clone() },
        None => RungState { status: Status::Unver, intentional: false, reason: Some("not requested".into()) },
    }
}

fn severity(r: &RungState) -> u8 {
    match (r.status, r.intentional) {
        (Status::Fail, _) => 4,
        (Status::Skip, false) => 3,
        (Status::Unver, _) => 2,
        (Status::Skip, true) => 1,
        (Status::Pass, _) => 0,
    }
}

fn backup_restore(backup: RungState, restore: RungState) -> RungState {
    if backup.status == Status::Pass && restore.status == Status::Pass {
        return backup;
    }
    if backup.status == Status::Skip && backup.intentional && restore.status == Status::Skip && restore.intentional {
        return backup;
    }
    if severity(&backup) >= severity(&restore) { backup } else { restore }
}

/// Computes the rungs, the level and the skips block from the stage results and the lint.
pub fn rungs_and_level(stages: &[StageResult], lint: &Lint) -> (Rungs, u32, Skips) {
    let find = |stage: Stage| stages.iter().find(|s| s.stage == stage);
    let ordered = [
        (Rung::Install, state_of(find(Stage::Install))),
        (Rung::Upgrade, state_of(find(Stage::Upgrade))),
        (Rung::BackupRestore, backup_restore(state_of(find(Stage::Backup)), state_of(find(Stage::Restore)))),
        (Rung::Functional, state_of(find(Stage::Custom))),
        (Rung::Lint, RungState { status: lint.status.rung_status(), intentional: false, reason: lint.detail.clone() }),
    ];
    let mut level = 0;
    for (_, r) in &ordered {
        let climbs = r.status == Status::Pass || (r.status == Status::Skip && r.intentional);
        if !climbs {
            break;
        }
        level += 1;
    }
    let mut intentional = BTreeMap::new();
    let mut unintentional = Vec::new();
    for (rung, r) in &ordered {
        if r.status == Status::Skip {
            if r.intentional {
                intentional.insert(rung.name().to_string(), r.reason.clone().unwrap_or_default());
            } else {
                unintentional.push(rung.name().to_string());
            }
        }
    }
    let s = |i: usize| ordered[i].1.status;
    let rungs = Rungs { install: s(0), upgrade: s(1), backup_restore: s(2), functional: s(3), lint: s(4) };
    (rungs, level, Skips { intentional, unintentional })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::LintStatus;

    fn lint(status: LintStatus) -> Lint {
        Lint { status, detail: None, rules_failed: Vec::new() }
    }

    fn unver() -> Lint {
        lint(LintStatus::Unver)
    }

    fn st(stage: Stage, status: Status) -> StageResult {
        StageResult::new(stage, status, 1, None)
    }

    #[test]
    fn all_pass_is_level_four_and_lint_makes_it_five() {
        let stages: Vec<_> = Stage::ALL.into_iter().map(|s| st(s, Status::Pass)).collect();
        let (r, level, skips) = rungs_and_level(&stages, &unver());
        assert_eq!(level, 4);
        assert_eq!(r.lint, Status::Unver);
        assert!(skips.intentional.is_empty() && skips.unintentional.is_empty());
        let (r, level, _) = rungs_and_level(&stages, &lint(LintStatus::Pass));
        assert_eq!((r.lint, level), (Status::Pass, 5));
        let (r, level, skips) = rungs_and_level(&stages, &lint(LintStatus::Fail));
        assert_eq!((r.lint, level), (Status::Fail, 4));
        assert!(skips.unintentional.is_empty(), "a failed lint is no skip");
    }

    #[test]
    fn intentional_skips_are_climbed_past() {
        let stages = vec![
            st(Stage::Install, Status::Pass),
            StageResult::skip(Stage::Upgrade, true, "no earlier release"),
            StageResult::skip(Stage::Backup, true, "not backup-capable"),
            StageResult::skip(Stage::Restore, true, "not backup-capable"),
            st(Stage::Custom, Status::Pass),
        ];
        let (r, level, skips) = rungs_and_level(&stages, &unver());
        assert_eq!((r.upgrade, r.backup_restore, level), (Status::Skip, Status::Skip, 4));
        assert_eq!(skips.intentional["upgrade"], "no earlier release");
        assert_eq!(skips.intentional["backup_restore"], "not backup-capable");
    }

    #[test]
    fn the_worse_of_backup_and_restore() {
        let stages = vec![
            st(Stage::Install, Status::Pass),
            st(Stage::Upgrade, Status::Pass),
            st(Stage::Backup, Status::Pass),
            StageResult::skip(Stage::Restore, false, "no snapshot id from this run's backup"),
            st(Stage::Custom, Status::Pass),
        ];
        let (r, level, skips) = rungs_and_level(&stages, &unver());
        assert_eq!((r.backup_restore, level), (Status::Skip, 2));
        assert_eq!(skips.unintentional, vec!["backup_restore".to_string()]);
        let stages =
            vec![st(Stage::Install, Status::Pass), st(Stage::Backup, Status::Fail), st(Stage::Restore, Status::Pass)];
        assert_eq!(rungs_and_level(&stages, &unver()).0.backup_restore, Status::Fail);
    }

    #[test]
    fn unrequested_stops_the_climb() {
        let stages = vec![st(Stage::Install, Status::Pass), st(Stage::Custom, Status::Pass)];
        let (r, level, _) = rungs_and_level(&stages, &unver());
        assert_eq!((r.upgrade, r.functional, level), (Status::Unver, Status::Pass, 1));
    }

    #[test]
    fn a_failure_stops_the_climb() {
        let stages: Vec<_> = Stage::ALL
            .into_iter()
            .map(|s| st(s, if s == Stage::Install { Status::Fail } else { Status::Pass }))
            .collect();
        assert_eq!(rungs_and_level(&stages, &unver()).1, 0);
    }
}
