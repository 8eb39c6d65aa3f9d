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

/// Honoured files found in one source dir, as relative paths.
fn honoured(src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for f in FILES {
        if src.join(f).is_file() {
            out.push(f.to_string());
        }
    }
    for h in HOOKS {
        if src.join("hooks").join(h).is_file() {
            out.push(format!("hooks/{h}"));
        }
    }
    if let Ok(rd) = std::fs::read_dir(src) {
        let mut tests: Vec<String> = rd
            .flatten()
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("test_"))
            .collect();
        tests.sort();
        out.extend(tests);
    }
    out
}

fn copy_into(src: &Path, rel: &str, dest: &Path) -> Result<(), CustomizationError> {
    let from = src.join(rel);
    let to = dest.join(rel);
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p).map_err(|err| CustomizationError::Io { path: p.to_path_buf(), err })?;
    }
    std::fs::copy(&from, &to).map_err(|err| CustomizationError::Io { path: from.clone(), err })?;
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
    let local_src = req.recipe_tree.join("tests");
    let recipe_local = if !local_src.is_dir() {
        "absent"
    } else if approved(req.tests_dir, req.recipe) {
        for rel in honoured(&local_src) {
            copy_into(&local_src, &rel, req.dest)?;
            files.insert(rel, Origin::RecipeLocal);
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
        let trusted_src = dir.join(req.recipe);
        if trusted_src.is_dir() {
            // Precedence is by whole file: a trusted file replaces a recipe-local one.
            for rel in honoured(&trusted_src) {
                copy_into(&trusted_src, &rel, req.dest)?;
                files.insert(rel, Origin::Trusted);
            }
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
        Some(Origin::RecipeLocal) => CcciYml::load(&req.dest.join("ccci.yml")).map_err(CustomizationError::LocalYml)?,
        None => CcciYml::default(),
    };
    Ok(Customization { dir: req.dest.to_path_buf(), files, yml, recipe_local })
}
