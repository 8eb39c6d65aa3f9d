//! The disk pre-flight: a run needs room for its run dir (logs, the recipe tree, diagnostics) and
//! docker needs room for images and volumes. Below `CCCI_MIN_FREE_MB` on either, a deploy would
//! fail half-way for reasons that are not the recipe's.

use std::path::{Path, PathBuf};

use crate::adapters::engine::{Deadline, Engine};

/// Where docker keeps its data when the Engine API cannot say.
pub const DEFAULT_DOCKER_ROOT: &str = "/var/lib/docker";

/// Free MiB for ccci's user (`f_bavail`) on the filesystem of `path`, or
/// of its nearest existing ancestor (a runs dir ccci is about to create).
pub fn free_mb(path: &Path) -> Option<u64> {
    let mut probe = path;
    while !probe.exists() {
        probe = probe.parent()?;
    }
    let st = nix::sys::statvfs::statvfs(probe).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64) / (1024 * 1024))
}

/// Docker's data root, from the Engine API (`GET /info`'s `DockerRootDir`), else the default
/// when it exists. `None` when neither is known.
pub fn docker_root(engine: Option<&Engine>) -> Option<PathBuf> {
    let from_api = engine
        .and_then(|e| e.info(Deadline::after(super::INFO_BOUND)).ok())
        .and_then(|i| i.docker_root_dir)
        .filter(|d| d.starts_with('/'))
        .map(PathBuf::from);
    from_api.or_else(|| Some(PathBuf::from(DEFAULT_DOCKER_ROOT)).filter(|p| p.is_dir()))
}

/// One checked place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headroom {
    pub what: &'static str,
    pub path: PathBuf,
    pub free_mb: Option<u64>,
}

impl Headroom {
    pub fn below(&self, min_mb: u64) -> bool {
        self.free_mb.is_some_and(|f| f < min_mb)
    }
}

/// The free space of the runs dir and of docker's data root.
pub fn headroom(runs_dir: &Path, docker_root: Option<&Path>) -> Vec<Headroom> {
    let mut out = vec![Headroom { what: "the runs dir", path: runs_dir.to_path_buf(), free_mb: free_mb(runs_dir) }];
    if let Some(root) = docker_root {
        out.push(Headroom { what: "docker's data root", path: root.to_path_buf(), free_mb: free_mb(root) });
    }
    out
}

/// `Err(line)` when a place has less than `min_mb` free (0 disables the check).
pub fn check(min_mb: u64, places: &[Headroom]) -> Result<(), String> {
    if min_mb == 0 {
        return Ok(());
    }
    match places.iter().find(|h| h.below(min_mb)) {
        Some(h) => Err(format!(
            "not enough disk space: {} {} has {} MiB free, below CCCI_MIN_FREE_MB={min_mb}; free some space (docker system prune, old run dirs) or lower the threshold",
            h.what,
            h.path.display(),
            h.free_mb.unwrap_or(0)
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let d = tempfile::tempdir().unwrap();
        let places = headroom(&d.path().join("not/yet"), None);
        let free = places[0].free_mb.unwrap();
        assert!(free > 0);
        assert!(check(0, &places).is_ok());
        assert!(check(1, &places).is_ok());
        let e = check(free + 1_000_000, &places).unwrap_err();
        assert!(e.contains("CCCI_MIN_FREE_MB") && e.contains("the runs dir"), "{e}");
    }
}
