//! A run app — its domain, its stack and its `.env` — and taking one apart ([`reap`]). The
//! pipeline (teardown, the pre-deploy clear) and the janitor share both.

pub mod reap;

use std::path::{Path, PathBuf};

/// The triple every step that touches a run app needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct App {
    pub domain: String,
    /// abra's stack name: the domain with `.` replaced by `_`.
    pub stack: String,
    /// `<abra home>/servers/<server>/<domain>.env` (it may not exist).
    pub env_path: PathBuf,
}

impl App {
    /// The app of `domain` whose `.env` lives in `server_dir`.
    pub fn new(domain: &str, server_dir: &Path) -> App {
        App {
            domain: domain.to_string(),
            stack: crate::names::stack_name(domain),
            env_path: server_dir.join(format!("{domain}.env")),
        }
    }
}
