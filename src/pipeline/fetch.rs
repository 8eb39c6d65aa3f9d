//! Fetch (§7.2): the recipe tree at the code under test, inside the per-run ABRA_DIR.

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::adapters::git::{self, Git, Trouble};
use crate::adapters::{Abra, AbraError};
use crate::config::Source;
use crate::process::ProcessError;

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("git clone of {location} failed: {err}")]
    Clone { location: String, err: ProcessError },
    #[error("ref {git_ref:?} not found in {location}: {err}")]
    Checkout { git_ref: String, location: String, err: ProcessError },
    #[error("abra recipe fetch {recipe} failed: {err}")]
    AbraFetch { recipe: String, err: AbraError },
    #[error("abra recipe fetch {recipe} succeeded but {dir} does not exist")]
    NotCloned { recipe: String, dir: PathBuf },
    #[error("CCCI_SKIP_FETCH: no staged recipe at {0}; stage it there or unset CCCI_SKIP_FETCH")]
    NotStaged(PathBuf),
    #[error("cannot copy the staged recipe {from} to {to}: {err}")]
    Copy { from: PathBuf, to: PathBuf, err: std::io::Error },
    #[error("cannot clear the run's recipe dir: {0}")]
    Clear(String),
    #[error("cannot read the head commit of {dir}: {err}")]
    Head { dir: PathBuf, err: ProcessError },
    #[error("stopped while waiting to retry the fetch")]
    RetryStopped,
}

impl FetchError {
    /// True when the fetch was interrupted by a stop, not a real failure.
    pub fn stopped(&self) -> bool {
        match self {
            FetchError::Clone { err, .. } | FetchError::Checkout { err, .. } | FetchError::Head { err, .. } => {
                err.stopped().is_some()
            }
            FetchError::AbraFetch { err, .. } => err.stopped().is_some(),
            FetchError::RetryStopped => true,
            _ => false,
        }
    }

    /// Whether the failure is the network's or the host's (CI could not test the recipe)
    /// rather than the code under test's.
    pub fn trouble(&self) -> Trouble {
        let io = |e: &std::io::Error| match e.kind() {
            std::io::ErrorKind::StorageFull
            | std::io::ErrorKind::ReadOnlyFilesystem
            | std::io::ErrorKind::QuotaExceeded => Trouble::Host,
            _ => Trouble::None,
        };
        match self {
            FetchError::Clone { err, .. } | FetchError::Checkout { err, .. } | FetchError::Head { err, .. } => {
                git::trouble(err)
            }
            // `abra recipe fetch` is a git clone inside: its output tells the same troubles.
            FetchError::AbraFetch { err: AbraError::Process(err), .. } => git::trouble(err),
            FetchError::Copy { err, .. } => io(err),
            _ => Trouble::None,
        }
    }
}

/// A clone that failed on the network is tried again after each of these waits (each one
/// cancellable): a forge's hiccup should not turn a PR red, and three failures in six seconds
/// are the infra verdict, not a retry loop that eats the deadline.
const RETRY_BACKOFF: &[Duration] = &[Duration::from_secs(2), Duration::from_secs(4)];

/// Runs `attempt` until it succeeds, fails for a reason other than the network, or the
/// backoff is spent; `clear` is removed before each retry (a half-written clone is refused by
/// the next `git clone`).
fn with_retries<T>(
    what: &str,
    clear: Option<&Path>,
    mut attempt: impl FnMut() -> Result<T, FetchError>,
) -> Result<T, FetchError> {
    let mut waits = RETRY_BACKOFF.iter();
    loop {
        let e = match attempt() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some(wait) = waits.next().filter(|_| e.trouble() == Trouble::Network && !e.stopped()) else {
            return Err(e);
        };
        tracing::warn!("{what} failed on the network: {e}; retrying in {}", crate::clock::human(*wait));
        if crate::lifetime::sleep(*wait).is_some() {
            return Err(FetchError::RetryStopped);
        }
        if let Some(dest) = clear {
            crate::workspace::remove_dir_all_if_exists(dest).map_err(|err| FetchError::Clear(err.to_string()))?;
        }
    }
}

/// The recipe tree a run deploys from.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub dir: PathBuf,
    pub head: String,
    /// `origin/<default branch>` when the clone has a remote HEAD.
    pub default_branch: Option<String>,
    pub how: String,
}

pub struct FetchRequest<'a> {
    pub recipe: &'a str,
    pub git_ref: Option<&'a str>,
    pub src: Option<&'a Source>,
    pub skip_fetch: bool,
    pub git_base: &'a str,
    pub abra_home: &'a Path,
    pub dest: &'a Path,
}

pub fn fetch(req: &FetchRequest<'_>, git: &Git, abra: &Abra) -> Result<Fetched, FetchError> {
    let dest = req.dest;
    // The run's own tree only: whatever is there (an abra call that cloned the recipe, a
    // retried run id) is not the code under test. abra's `recipe fetch` would leave an existing
    // tree as it is, and `git clone` refuses one.
    crate::workspace::remove_dir_all_if_exists(dest).map_err(|err| FetchError::Clear(err.to_string()))?;
    let how;
    if req.skip_fetch {
        let staged = req.abra_home.join("recipes").join(req.recipe);
        if !staged.is_dir() {
            return Err(FetchError::NotStaged(staged));
        }
        crate::workspace::copy_tree(&staged, dest).map_err(|err| FetchError::Copy {
            from: staged.clone(),
            to: dest.to_path_buf(),
            err,
        })?;
        how = format!("copy of the staged {}", staged.display());
    } else {
        let location = match req.src {
            Some(src) => {
                let location = src.clone_location(req.git_base);
                with_retries("git clone", Some(dest), || {
                    let cmd = git.authed(
                        git.at(dest.parent().unwrap_or(Path::new("/"))).args([
                            "clone",
                            "--quiet",
                            "--no-hardlinks",
                            location.as_str(),
                            &dest.display().to_string(),
                        ]),
                        &location,
                    );
                    Git::run(cmd).map_err(|err| FetchError::Clone { location: location.clone(), err })
                })?;
                how = format!("git clone {location}");
                location
            }
            None => {
                with_retries("abra recipe fetch", Some(dest), || {
                    abra.recipe_fetch(req.recipe)
                        .map_err(|err| FetchError::AbraFetch { recipe: req.recipe.to_string(), err })
                })?;
                if !dest.is_dir() {
                    return Err(FetchError::NotCloned { recipe: req.recipe.to_string(), dir: dest.to_path_buf() });
                }
                how = "abra recipe fetch".to_string();
                Git::output(git.at(dest).args(["remote", "get-url", "origin"])).unwrap_or_default()
            }
        };
        if let Some(r) = req.git_ref {
            // A clone made by `abra recipe fetch` points at the catalogue's forge: the token
            // never goes there, whatever its origin (M3).
            checkout_ref(git, dest, r, &location, req.src.is_some())?;
        }
    }
    let head = Git::output(git.at(dest).args(["rev-parse", "HEAD"]))
        .map_err(|err| FetchError::Head { dir: dest.to_path_buf(), err })?;
    let default_branch = Git::output(
        git.at(dest)
            .args(["symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD"])
            .level(tracing::Level::DEBUG),
    )
    .ok();
    Ok(Fetched { dir: dest.to_path_buf(), head, default_branch, how })
}

/// `git checkout -f <ref>`; a ref the clone does not have (e.g. `refs/pull/7/head`) is fetched
/// from the origin first.
fn checkout_ref(git: &Git, dir: &Path, git_ref: &str, location: &str, authed: bool) -> Result<(), FetchError> {
    let err = |err| FetchError::Checkout { git_ref: git_ref.to_string(), location: location.to_string(), err };
    let local = Git::run(git.at(dir).args(["checkout", "--quiet", "-f", git_ref, "--"]).level(tracing::Level::DEBUG));
    if local.is_ok() {
        return Ok(());
    }
    with_retries("git fetch", None, || {
        let fetch = git.at(dir).args(["fetch", "--quiet", "origin", git_ref]);
        let fetch = if authed { git.authed(fetch, location) } else { fetch };
        Git::run(fetch).map(|_| ()).map_err(err)
    })?;
    Git::run(git.at(dir).args(["checkout", "--quiet", "-f", "FETCH_HEAD"])).map_err(err)?;
    Ok(())
}
