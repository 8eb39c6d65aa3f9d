//! The janitor's words: what it found and what it did, as they appear in `--json`, the
//! summary line and the logs. Each is an enum so a typo is a compile error and the JSON
//! schema (docs and `ccci janitor --json`) is written down once, here.

use serde::{Deserialize, Serialize};

/// An enum whose variants serialise as the given words (and print as them).
macro_rules! words {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        // Read back by tests and tools (`ccci janitor --json` into the real report types).
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = String::deserialize(d)?;
                $name::ALL.iter().copied().find(|v| v.as_str() == word).ok_or_else(|| {
                    let all: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    serde::de::Error::custom(format!(
                        "unknown {} {word:?} (one of: {})", stringify!($name), all.join(", ")
                    ))
                })
            }
        }
    };
}

words! {
    /// Who swept (`kind`).
    Kind { Janitor => "janitor", RunStart => "run-start", Watch => "watch" }
}

words! {
    /// Why a sweep ended before its end (`stopped`).
    Halt { Deadline => "deadline", Cancelled => "cancelled" }
}

words! {
    /// Where a candidate was listed (`apps[].sources`); `watch`: the watch saw its lock freed.
    Source { Abra => "abra", Docker => "docker", Watch => "watch" }
}

words! {
    /// The app lock of a candidate as the janitor found it (`apps[].lock`).
    LockSeen {
        Free => "free",
        Absent => "absent",
        Held => "held",
        /// Not a lockfile ccci may open (a link, a FIFO, a hard link, the wrong owner).
        Unsafe => "unsafe",
        Gone => "gone",
        /// Not looked at (a dry run, or the sweep stopped first).
        Unprobed => "unprobed",
        /// `/proc/locks` could not be matched to the lockfile's device.
        Unknown => "unknown",
    }
}

impl LockSeen {
    /// A listing's view of a lockfile, in the report's words.
    pub fn of(state: &crate::lock::dir::LockState) -> LockSeen {
        use crate::lock::dir::LockState as S;
        match state {
            S::Unprobed => LockSeen::Unprobed,
            S::Absent => LockSeen::Absent,
            S::Free => LockSeen::Free,
            S::Held { .. } => LockSeen::Held,
            S::Unknown => LockSeen::Unknown,
            S::Unsafe(_) => LockSeen::Unsafe,
        }
    }
}

words! {
    /// What happened to an app or a stale lockfile (`apps[].action`, `lockfiles[].action`).
    Act {
        Reaped => "reaped",
        AlreadyGone => "already-gone",
        WouldReap => "would-reap",
        Unlinked => "unlinked",
        WouldUnlink => "would-unlink",
        Left => "left",
        Skipped => "skipped",
        Gone => "gone",
        Failed => "failed",
        NotReached => "not-reached",
    }
}

words! {
    /// What happened to a run dir (`run_dirs[].action`).
    DirAct {
        Pruned => "pruned",
        WouldPrune => "would-prune",
        Live => "live",
        Kept => "kept",
        Failed => "failed",
        NotReached => "not-reached",
    }
}

words! {
    /// A bulky part of a finished run dir that prune removes (`run_dirs[].removed`); results
    /// and logs stay.
    Part { Abra => "abra", Tests => "tests", State => "state" }
}

impl Part {
    /// The part's name in a run dir.
    pub fn dir_name(self) -> &'static str {
        self.as_str()
    }

    /// `abra, state`, for the summary and the log.
    pub fn list(parts: &[Part]) -> String {
        parts.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
    }
}

words! {
    /// What happened to a process left behind by a dead run (`stragglers[].action`).
    ProcAct {
        Terminated => "terminated",
        Killed => "killed",
        Gone => "gone",
        WouldKill => "would-kill",
        Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_serialise_as_themselves() {
        for a in Act::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        assert_eq!(serde_json::to_value(Kind::RunStart).unwrap(), "run-start");
        for a in Act::ALL {
            assert_eq!(serde_json::from_value::<Act>(serde_json::to_value(a).unwrap()).unwrap(), *a);
        }
        let e = serde_json::from_value::<Act>("reaping".into()).unwrap_err().to_string();
        assert!(e.contains("unknown Act \"reaping\" (one of: reaped,"), "{e}");
        assert_eq!(LockSeen::ALL.len(), 7);
        assert_eq!(format!("{}", Act::AlreadyGone), "already-gone");
    }
}
