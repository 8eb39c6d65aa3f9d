//! The five stages (§7.6) and the rungs they feed (§7.8).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The five stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Install,
    Upgrade,
    Backup,
    Restore,
    Custom,
}

impl Stage {
    pub const ALL: [Stage; 5] = [Stage::Install, Stage::Upgrade, Stage::Backup, Stage::Restore, Stage::Custom];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Install => "install",
            Stage::Upgrade => "upgrade",
            Stage::Backup => "backup",
            Stage::Restore => "restore",
            Stage::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.name() == s)
    }

    /// The rung this stage feeds (the keys of `expected_na`).
    pub fn rung(self) -> Rung {
        match self {
            Stage::Install => Rung::Install,
            Stage::Upgrade => Rung::Upgrade,
            Stage::Backup | Stage::Restore => Rung::BackupRestore,
            Stage::Custom => Rung::Functional,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rungs of the ladder, in the order the level climbs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rung {
    Install,
    Upgrade,
    BackupRestore,
    Functional,
    Lint,
}

impl Rung {
    pub const ALL: [Rung; 5] = [Rung::Install, Rung::Upgrade, Rung::BackupRestore, Rung::Functional, Rung::Lint];

    pub fn name(self) -> &'static str {
        match self {
            Rung::Install => "install",
            Rung::Upgrade => "upgrade",
            Rung::BackupRestore => "backup_restore",
            Rung::Functional => "functional",
            Rung::Lint => "lint",
        }
    }
}

impl fmt::Display for Rung {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.name()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.name()));
        }
        for r in Rung::ALL {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.name()));
        }
        assert_eq!(Stage::Restore.rung(), Rung::BackupRestore);
    }
}
