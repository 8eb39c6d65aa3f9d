//! Trusted and approved customisation (§7.3), snapshotted into `<run dir>/tests/` right after
//! the fetch so later checkouts cannot change it.
//!
//! A recipe's own `tests/` is written by whoever opened the PR and would run on the CI host, so
//! it is used only when the recipe is listed in `$CCCI_TESTS_DIR/repo-local-approved.txt`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use thiserror::Error;

use crate::config::CcciYml;
use crate::untrusted::{self, FileKind, UntrustedError};

pub const HOOKS: [&str; 6] =
    ["pre_upgrade", "post_upgrade", "pre_backup", "verify_backup", "pre_restore", "post_restore"];
const FILES: [&str; 3] = ["ccci.yml", "install_steps.sh", "compose.ccci.yml"];

#[derive(Debug, Error)]
pub enum CustomizationError {
    /// A bad recipe-local `ccci.yml`: the run ends with outcome `error` (exit 70).
    #[error("invalid recipe-local ccci.yml: {0}")]
    LocalYml(String),
    #[error("invalid trusted ccci.yml: {0}")]
    TrustedYml(String),
    #[error("{path} is not executable: a {what} must be executable (chmod +x), it is not skipped silently")]
    NotExecutable { path: PathBuf, what: &'static str },
    #[error("cannot snapshot {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A customisation file that is a link, a FIFO, too large…: never followed or read.
    #[error("customisation: {0}")]
    Untrusted(UntrustedError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Trusted,
    RecipeLocal,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Trusted => "trusted",
            Origin::RecipeLocal => "recipe-local",
        }
    }
}

/// The resolved customisation of a run.
#[derive(Debug, Clone)]
pub struct Customization {
    pub dir: PathBuf,
    pub files: BTreeMap<String, Origin>,
    pub yml: CcciYml,
    pub recipe_local: &'static str,
}

impl Customization {
    pub fn has(&self, rel: &str) -> bool {
        self.files.contains_key(rel)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn tests(&self) -> Vec<String> {
        self.files.keys().filter(|k| k.starts_with("test_")).cloned().collect()
    }

    pub fn to_json(&self) -> Value {
        let files: BTreeMap<&String, &str> = self.files.iter().map(|(k, v)| (k, v.as_str())).collect();
        json!({
            "files": files,
            "recipe_local_tests": self.recipe_local,
            "ccci_yml": serde_json::to_value(self.yml.redacted()).unwrap_or(Value::Null),
        })
    }

    pub fn log(&self) {
        if self.files.is_empty() {
            tracing::info!("customization: none (generic checks only)");
        } else {
            tracing::info!("customization ({} files, snapshot in {}):", self.files.len(), self.dir.display());
            for (f, o) in &self.files {
                tracing::info!("  {f} ({})", o.as_str());
            }
        }
    }
}

/// Whether `recipe` is listed (exact name, one per line, `#` comments) in the approval file.
pub fn approved(tests_dir: Option<&Path>, recipe: &str) -> bool {
    let Some(dir) = tests_dir else { return false };
    std::fs::read_to_string(dir.join("repo-local-approved.txt"))
        .map(|t| t.lines().map(|l| l.split('#').next().unwrap_or("").trim()).any(|l| l == recipe))
        .unwrap_or(false)
}

/// A test or hook may be any program; the cap only guards ccci's memory against a hostile tree.
const MAX_CUSTOM_FILE: u64 = 16 * 1024 * 1024;

/// Honoured files found in one source (`root`/`rel`: the trusted `<tests dir>/<recipe>`, or an
/// approved recipe's `tests/`), as paths relative to it. Only regular files count; nothing is
/// followed: a link to `/root/.docker/config.json` in a PR's `tests/` is not a `ccci.yml`.
/// `trusted`: the operator's own dir, whose `hooks/provision_*` (a dependency's provision hook,
/// which sees its credentials) are honoured too.
fn honoured(root: &Path, rel: &Path, trusted: bool) -> Result<Vec<String>, CustomizationError> {
    let list = |sub: &Path| match untrusted::list(root, sub) {
        Ok(entries) => Ok(entries),
        Err(UntrustedError::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(CustomizationError::Untrusted(e)),
    };
    let regular =
        |entries: &[(String, FileKind)], name: &str| entries.iter().any(|(n, k)| n == name && *k == FileKind::Regular);
    let top = list(rel)?;
    let mut out: Vec<String> = FILES.iter().filter(|f| regular(&top, f)).map(|f| f.to_string()).collect();
    if top.iter().any(|(n, k)| n == "hooks" && *k == FileKind::Directory) {
        let hooks = list(&rel.join("hooks"))?;
        out.extend(HOOKS.iter().filter(|h| regular(&hooks, h)).map(|h| format!("hooks/{h}")));
        if trusted {
            out.extend(
                hooks
                    .iter()
                    .filter(|(n, k)| n.starts_with("provision_") && *k == FileKind::Regular)
                    .map(|(n, _)| format!("hooks/{n}")),
            );
        }
    }
    out.extend(top.iter().filter(|(n, k)| n.starts_with("test_") && *k == FileKind::Regular).map(|(n, _)| n.clone()));
    Ok(out)
}

/// Copies one honoured file into the snapshot (ccci's own dir), keeping its mode; the source is
/// read through [`untrusted`] (no link, no FIFO, capped).
fn copy_into(root: &Path, rel: &Path, file: &str, dest: &Path) -> Result<(), CustomizationError> {
    let (bytes, mode) =
        untrusted::read_with_mode(root, &rel.join(file), MAX_CUSTOM_FILE).map_err(CustomizationError::Untrusted)?;
    let to = dest.join(file);
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p).map_err(|err| CustomizationError::Io { path: p.to_path_buf(), err })?;
    }
    std::fs::write(&to, bytes).map_err(|err| CustomizationError::Io { path: to.clone(), err })?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode & 0o755))
        .map_err(|err| CustomizationError::Io { path: to.clone(), err })?;
    Ok(())
}

pub struct SnapshotRequest<'a> {
    pub tests_dir: Option<&'a Path>,
    pub recipe: &'a str,
    pub recipe_tree: &'a Path,
    pub dest: &'a Path,
    pub trusted_yml: Option<&'a CcciYml>,
}

pub fn snapshot(req: &SnapshotRequest<'_>) -> Result<Customization, CustomizationError> {
    std::fs::create_dir_all(req.dest).map_err(|err| CustomizationError::Io { path: req.dest.to_path_buf(), err })?;
    let mut files = BTreeMap::new();
    let local = Path::new("tests");
    let has_local = untrusted::list(req.recipe_tree, Path::new("."))
        .map_err(CustomizationError::Untrusted)?
        .iter()
        .any(|(n, _)| n == "tests");
    let recipe_local = if !has_local {
        "absent"
    } else if approved(req.tests_dir, req.recipe) {
        for file in honoured(req.recipe_tree, local, false)? {
            copy_into(req.recipe_tree, local, &file, req.dest)?;
            files.insert(file, Origin::RecipeLocal);
        }
        "approved"
    } else {
        let approval = req.tests_dir.map_or_else(
            || "no CCCI_TESTS_DIR is set".to_string(),
            |d| format!("{} is not listed in {}", req.recipe, d.join("repo-local-approved.txt").display()),
        );
        tracing::warn!(
            "recipe-local tests/ ignored: {approval}; its code comes from the PR author and runs on the CI host only when an operator approves the recipe"
        );
        "not approved"
    };
    if let Some(dir) = req.tests_dir {
        // Precedence is by whole file: a trusted file replaces a recipe-local one.
        let own = Path::new(req.recipe);
        for file in honoured(dir, own, true)? {
            copy_into(dir, own, &file, req.dest)?;
            files.insert(file, Origin::Trusted);
        }
    }
    for (rel, _) in files.iter().filter(|(r, _)| r.starts_with("test_") || r.starts_with("hooks/")) {
        let p = req.dest.join(rel);
        let mode = std::fs::metadata(&p).map(|m| m.permissions().mode()).unwrap_or(0);
        if mode & 0o111 == 0 {
            let what = if rel.starts_with("test_") { "test" } else { "hook" };
            return Err(CustomizationError::NotExecutable { path: p, what });
        }
    }
    let yml = match files.get("ccci.yml") {
        Some(Origin::Trusted) => match req.trusted_yml {
            Some(y) => y.clone(),
            None => CcciYml::load(&req.dest.join("ccci.yml")).map_err(CustomizationError::TrustedYml)?,
        },
        Some(Origin::RecipeLocal) => {
            let y = CcciYml::load(&req.dest.join("ccci.yml")).map_err(CustomizationError::LocalYml)?;
            // The gate's allow-list is the operator's alone: a PR that could loosen the gate
            // would not be gated.
            if y.policy.is_some() {
                return Err(CustomizationError::LocalYml(
                    "policy: is honoured only in the trusted ccci.yml (<CCCI_TESTS_DIR>/<recipe>/ccci.yml), never in a recipe's own"
                        .into(),
                ));
            }
            // What else runs on the CI host, and the hooks that hand it credentials, are the
            // operator's choice too.
            if !y.deps.is_empty() {
                return Err(CustomizationError::LocalYml(
                    "deps: is honoured only in the trusted ccci.yml (<CCCI_TESTS_DIR>/<recipe>/ccci.yml), never in a recipe's own"
                        .into(),
                ));
            }
            y
        }
        None => CcciYml::default(),
    };
    Ok(Customization { dir: req.dest.to_path_buf(), files, yml, recipe_local })
}
