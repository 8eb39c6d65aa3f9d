//! Prune: the bulky parts of finished run dirs go, the dashboard's history stays.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::vocab::{DirAct, Part};
use crate::lock::{self, LockGuard, TryLock};

/// What happened to one run dir.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PruneEntry {
    pub run_id: String,
    pub path: String,
    /// `pruned`, `would-prune`, `live` (its run.lock was held at apply time), `kept` (no
    /// run.lock: ccci did not make it), or `failed`.
    pub action: DirAct,
    pub removed: Vec<Part>,
    pub reason: Option<String>,
}

/// Takes a run dir's `run.lock` without blocking, under the lockfile rules (no link followed,
/// nothing created). `None` when a live run holds it.
fn take_run_lock(path: &Path) -> Result<Option<LockGuard>, String> {
    match lock::try_lock(path, false) {
        TryLock::Acquired(g) => Ok(Some(g)),
        TryLock::Held { .. } => Ok(None),
        TryLock::Gone => Err(format!("{} disappeared", path.display())),
        TryLock::Unsafe(why) => Err(format!("{}: {why}", path.display())),
    }
}

/// Deletes `parts` of `dir` while holding its `run.lock`, so no run can re-enter the dir
/// meanwhile (a retry of that run id would exit 75 naming the janitor — only dirs older than
/// `--prune-after` are touched, so that window is small). Symlinks are removed, never followed.
pub fn prune(run_id: &str, dir: &Path, parts: &[Part]) -> PruneEntry {
    let mut entry = PruneEntry {
        run_id: run_id.to_string(),
        path: dir.display().to_string(),
        action: DirAct::Pruned,
        removed: Vec::new(),
        reason: None,
    };
    let _lock = match take_run_lock(&dir.join("run.lock")) {
        Ok(Some(f)) => f,
        Ok(None) => {
            entry.action = DirAct::Live;
            entry.reason = Some("its run.lock is held by a live run".into());
            return entry;
        }
        Err(e) => {
            entry.action = DirAct::Failed;
            entry.reason = Some(e);
            return entry;
        }
    };
    let mut errors = Vec::new();
    for part in parts {
        let p = dir.join(part.dir_name());
        let res = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => entry.removed.push(*part),
            Err(e) => errors.push(format!("{}: {e}", p.display())),
        }
    }
    if !errors.is_empty() {
        entry.action = DirAct::Failed;
        entry.reason = Some(errors.join("; "));
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_results_and_never_follows_links() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), "x").unwrap();
        let dir = root.path().join("r1");
        std::fs::create_dir_all(dir.join("abra/recipes/hello")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("abra/servers")).unwrap();
        std::fs::create_dir_all(dir.join("state/42")).unwrap();
        for f in ["run.lock", "run.log", "results.json", "junit.xml"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let e = prune("r1", &dir, &[Part::Abra, Part::Tests, Part::State]);
        assert_eq!((e.action, e.removed.clone()), (DirAct::Pruned, vec![Part::Abra, Part::State]));
        for f in ["run.lock", "run.log", "results.json", "junit.xml"] {
            assert!(dir.join(f).exists(), "{f}");
        }
        assert!(!dir.join("abra").exists() && !dir.join("state").exists());
        assert!(outside.join("precious").exists());

        // Held by another open file description: live, nothing removed.
        std::fs::create_dir(dir.join("tests")).unwrap();
        let holder = std::fs::File::open(dir.join("run.lock")).unwrap();
        holder.lock().unwrap();
        let e = prune("r1", &dir, &[Part::Tests]);
        assert_eq!(e.action, DirAct::Live);
        assert!(dir.join("tests").exists());
    }
}
