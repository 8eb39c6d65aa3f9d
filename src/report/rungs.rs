//! Rungs and the level (§7.8): install → `install`; upgrade → `upgrade`; backup + restore →
//! `backup_restore`; custom → `functional`; `lint` is `unver`. The level counts rungs in that
//! order that passed or were intentionally skipped, stopping at the first fail, unver or
//! unintentional skip. Level and lint never change the verdict.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Skips, StageResult, Status};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rungs {
    pub install: &'static str,
    pub upgrade: &'static str,
    pub backup_restore: &'static str,
    pub functional: &'static str,
    pub lint: &'static str,
}

/// A rung's status and, for skips, whether it was intentional and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rung {
    status: Status,
    intentional: bool,
    reason: Option<String>,
}

fn rung_of(stage: Option<&StageResult>) -> Rung {
    match stage {
        Some(s) => Rung { status: s.status, intentional: s.intentional, reason: s.reason.clone() },
        None => Rung { status: Status::Unver, intentional: false, reason: Some("not requested".into()) },
    }
}

fn severity(r: &Rung) -> u8 {
    match (r.status, r.intentional) {
        (Status::Fail, _) => 4,
        (Status::Skip, false) => 3,
        (Status::Unver, _) => 2,
        (Status::Skip, true) => 1,
        (Status::Pass, _) => 0,
    }
}

fn backup_restore(backup: Rung, restore: Rung) -> Rung {
    if backup.status == Status::Pass && restore.status == Status::Pass {
        return backup;
    }
    if backup.status == Status::Skip && backup.intentional && restore.status == Status::Skip && restore.intentional {
        return backup;
    }
    if severity(&backup) >= severity(&restore) { backup } else { restore }
}

/// Computes the rungs, the level and the skips block from the stage results.
pub fn rungs_and_level(stages: &[StageResult]) -> (Rungs, u32, Skips) {
    let find = |name: &str| stages.iter().find(|s| s.name == name);
    let ordered = [
        ("install", rung_of(find("install"))),
        ("upgrade", rung_of(find("upgrade"))),
        ("backup_restore", backup_restore(rung_of(find("backup")), rung_of(find("restore")))),
        ("functional", rung_of(find("custom"))),
        ("lint", Rung { status: Status::Unver, intentional: false, reason: Some("ccci does not lint yet".into()) }),
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
    for (name, r) in &ordered {
        if r.status == Status::Skip {
            if r.intentional {
                intentional.insert(name.to_string(), r.reason.clone().unwrap_or_default());
            } else {
                unintentional.push(name.to_string());
            }
        }
    }
    let s = |i: usize| ordered[i].1.status.as_str();
    let rungs = Rungs { install: s(0), upgrade: s(1), backup_restore: s(2), functional: s(3), lint: s(4) };
    (rungs, level, Skips { intentional, unintentional })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Stage;

    fn st(stage: Stage, status: Status) -> StageResult {
        StageResult::new(stage, status, 1, None)
    }

    #[test]
    fn all_pass_is_level_four() {
        let stages: Vec<_> = Stage::ALL.into_iter().map(|s| st(s, Status::Pass)).collect();
        let (r, level, skips) = rungs_and_level(&stages);
        assert_eq!(level, 4);
        assert_eq!(r.lint, "unver");
        assert!(skips.intentional.is_empty() && skips.unintentional.is_empty());
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
        let (r, level, skips) = rungs_and_level(&stages);
        assert_eq!((r.upgrade, r.backup_restore, level), ("skip", "skip", 4));
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
        let (r, level, skips) = rungs_and_level(&stages);
        assert_eq!((r.backup_restore, level), ("skip", 2));
        assert_eq!(skips.unintentional, vec!["backup_restore".to_string()]);
        let stages =
            vec![st(Stage::Install, Status::Pass), st(Stage::Backup, Status::Fail), st(Stage::Restore, Status::Pass)];
        assert_eq!(rungs_and_level(&stages).0.backup_restore, "fail");
    }

    #[test]
    fn unrequested_stops_the_climb() {
        let stages = vec![st(Stage::Install, Status::Pass), st(Stage::Custom, Status::Pass)];
        let (r, level, _) = rungs_and_level(&stages);
        assert_eq!((r.upgrade, r.functional, level), ("unver", "pass", 1));
    }

    #[test]
    fn a_failure_stops_the_climb() {
        let stages: Vec<_> = Stage::ALL
            .into_iter()
            .map(|s| st(s, if s == Stage::Install { Status::Fail } else { Status::Pass }))
            .collect();
        assert_eq!(rungs_and_level(&stages).1, 0);
    }
}
