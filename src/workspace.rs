//! The run dir (§3): `run.lock`, the per-run ABRA_DIR, run-scoped state files and `run.log`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::lock::{self, LockGuard, TryLock};
use crate::names;

/// Attempts of one run id beyond this are refused (a runaway retry loop, not a CI).
const MAX_ATTEMPTS: u32 = 10_000;

/// The attempt dirs of `run_id` that exist under `runs_dir`, with their attempt numbers.
pub fn attempts(runs_dir: &Path, run_id: &str) -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = match fs::read_dir(runs_dir) {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let n = names::attempt_of(run_id, name.to_str()?)?;
                e.file_type().ok()?.is_dir().then(|| (n, e.path()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Fails with `RunIdHeld` when a live process holds the `run.lock` of an attempt of `run_id`
/// other than `except`. A free `run.lock` is taken for an instant by the non-blocking try.
fn live_attempt(runs_dir: &Path, run_id: &str, except: Option<u32>) -> Result<(), WorkspaceError> {
    for (n, dir) in attempts(runs_dir, run_id) {
        if Some(n) == except {
            continue;
        }
        let lock_path = dir.join("run.lock");
        if let TryLock::Held { info, .. } = lock::try_lock(&lock_path, false) {
            let holder = lock::file::open(&lock_path, false)
                .ok()
                .and_then(|(f, _)| lock::proc_locks::holders_of_file(&f).first().copied())
                .map(|p| p.to_string())
                .or_else(|| info.map(|i| i.pid.to_string()))
                .unwrap_or_else(|| "unknown".to_string());
            return Err(WorkspaceError::RunIdHeld { run_id: run_id.to_string(), holder, dir });
        }
    }
    Ok(())
}

#[derive(Debug, Error)]
pub enum WorkspaceError {
    #[error(
        "abra server dir {0} does not exist: create it with `abra server add --local` (or set CCCI_SERVER / CCCI_ABRA_HOME)"
    )]
    NoServerDir(PathBuf),
    #[error(
        "abra's recipe catalogue {0} is not a git clone: abra clones it only when the dir is absent, and `app new` and `recipe fetch` read it. Fix it as the CI user with `git clone {CATALOGUE_URL} {0}` (remove an empty {0} first)"
    )]
    NoCatalogue(PathBuf),
    #[error(
        "run id {run_id} is held by a live run (pid {holder}): its run dir is {dir}; use another run id (CCCI_RUN_ID)"
    )]
    RunIdHeld { run_id: String, holder: String, dir: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

/// abra's recipe catalogue (a git repository holding `recipes.json`).
pub const CATALOGUE_URL: &str = "https://git.coopcloud.tech/toolshed/recipes-catalogue-json.git";

impl WorkspaceError {
    /// A full or read-only disk: the host's trouble, not ccci's (the infra verdict).
    pub fn is_host_trouble(&self) -> bool {
        use std::io::ErrorKind as K;
        matches!(self, WorkspaceError::Io { source, .. }
            if matches!(source.kind(), K::StorageFull | K::QuotaExceeded | K::ReadOnlyFilesystem))
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WorkspaceError {
    let path = path.to_path_buf();
    move |source| WorkspaceError::Io { action, path, source }
}

/// A live run's directory. Holding this holds `run.lock`, the liveness oracle of the run dir.
#[derive(Debug)]
pub struct Workspace {
    /// 1 for `<run id>`, n for `<run id>.<n>`.
    pub attempt: u32,
    pub run_dir: PathBuf,
    pub abra_dir: PathBuf,
    pub state_dir: PathBuf,
    pub deploy_count_file: PathBuf,
    pub op_state_file: PathBuf,
    /// `$CCCI_DEPS_FILE` (`crate::deps::DepsFile`): `{}` until a dependency is up.
    pub deps_file: PathBuf,
    pub tests_dir: PathBuf,
    run_lock: LockGuard,
}

impl Workspace {
    /// Checks what must exist before anything is created: the server dir and a catalogue
    /// clone in the canonical abra home. ccci creates neither (an empty catalogue dir would
    /// stop abra from ever cloning it).
    pub fn preflight(abra_home: &Path, server: &str) -> Result<(), WorkspaceError> {
        let server_dir = abra_home.join("servers").join(server);
        if !server_dir.is_dir() {
            return Err(WorkspaceError::NoServerDir(server_dir));
        }
        let catalogue = abra_home.join("catalogue");
        if !catalogue.join(".git").exists() {
            return Err(WorkspaceError::NoCatalogue(catalogue));
        }
        Ok(())
    }

    /// Creates a new attempt dir for `run_id` (attempt 1 is `<runs dir>/<run id>`, later ones
    /// `<run id>.2`, `<run id>.3`, …: the first that does not exist, made with an exclusive
    /// `mkdir`), takes its `run.lock` without blocking and builds the per-run ABRA_DIR. An
    /// earlier attempt is never appended to or deleted.
    ///
    /// A live holder of any attempt's `run.lock` means "duplicate live run id": nothing is
    /// touched. The check runs once before and once after this attempt takes its own lock, so of
    /// two runs with one run id starting together at most one goes on (the later checker sees
    /// the earlier one's lock).
    pub fn create(runs_dir: &Path, run_id: &str, abra_home: &Path) -> Result<Workspace, WorkspaceError> {
        fs::create_dir_all(runs_dir).map_err(io("create the runs dir", runs_dir))?;
        live_attempt(runs_dir, run_id, None)?;
        let mut attempt = 1;
        let run_dir = loop {
            let dir = runs_dir.join(names::attempt_dir(run_id, attempt));
            match fs::DirBuilder::new().mode(0o750).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < MAX_ATTEMPTS => attempt += 1,
                Err(e) => return Err(io("create the run dir", &dir)(e)),
            }
        };
        let lock_path = run_dir.join("run.lock");
        let run_lock = match lock::try_lock(&lock_path, true) {
            TryLock::Acquired(g) => g,
            other => {
                let _ = fs::remove_dir_all(&run_dir);
                let why = match other {
                    TryLock::Unsafe(why) => why,
                    _ => "another process took run.lock of a dir this run just created".to_string(),
                };
                return Err(io("lock", &lock_path)(std::io::Error::other(why)));
            }
        };
        if let Err(e) = live_attempt(runs_dir, run_id, Some(attempt)) {
            let _ = run_lock.unlink();
            drop(run_lock);
            let _ = fs::remove_dir_all(&run_dir);
            return Err(e);
        }
        let _ = fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o750));
        let abra_dir = run_dir.join("abra");
        fs::create_dir_all(&abra_dir).map_err(io("create", &abra_dir))?;
        let servers = abra_home.join("servers");
        let catalogue = abra_home.join("catalogue");
        link(&servers, &abra_dir.join("servers"))?;
        link(&catalogue, &abra_dir.join("catalogue"))?;
        fs::create_dir(abra_dir.join("recipes")).map_err(io("create", &abra_dir.join("recipes")))?;

        let state_dir = run_dir.join("state").join(std::process::id().to_string());
        fs::create_dir_all(&state_dir).map_err(io("create", &state_dir))?;
        let deploy_count_file = state_dir.join("deploy-count");
        fs::write(&deploy_count_file, "0\n").map_err(io("write", &deploy_count_file))?;
        let op_state_file = state_dir.join("op-state.json");
        fs::write(&op_state_file, "{}\n").map_err(io("write", &op_state_file))?;
        let deps_file = state_dir.join("deps.json");
        crate::deps::DepsFile::create(&deps_file).map_err(io("write", &deps_file))?;
        Ok(Workspace {
            attempt,
            tests_dir: run_dir.join("tests"),
            run_dir,
            abra_dir,
            state_dir,
            deploy_count_file,
            op_state_file,
            deps_file,
            run_lock,
        })
    }

    /// Records the run in `run.lock` (pid, run id, token, …): `ccci cancel` and `ccci ps` read
    /// it to find and verify the live holder.
    pub fn record_holder(&self, info: &lock::HolderInfo) {
        if let Err(e) = self.run_lock.write_holder(info) {
            tracing::warn!("{}: cannot record the holder: {e}", self.run_lock.path().display());
        }
    }

    pub fn status_path(&self) -> PathBuf {
        self.run_dir.join("status.json")
    }

    /// Empties the run's `recipes/`: nothing but this run's fetch may put a tree there (abra
    /// calls of the run-start janitor can clone recipes into it).
    pub fn clear_recipes(&self) -> Result<(), WorkspaceError> {
        let recipes = self.abra_dir.join("recipes");
        remove_dir_all_if_exists(&recipes)?;
        fs::create_dir(&recipes).map_err(io("create", &recipes))
    }

    pub fn recipe_dir(&self, recipe: &str) -> PathBuf {
        self.abra_dir.join("recipes").join(recipe)
    }

    pub fn run_log(&self) -> PathBuf {
        self.run_dir.join("run.log")
    }

    pub fn results_path(&self) -> PathBuf {
        self.run_dir.join("results.json")
    }

    /// Writes a file atomically: a temp file in the same dir, then rename. The temp file has a
    /// random name and is created with `O_CREAT|O_EXCL` (mode 0600, then the final mode): in a
    /// shared directory (a `CCCI_JUNIT` path under /tmp, say) another user's symlink or file at
    /// a predictable name is never followed or reused.
    pub fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<()> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        let mut tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
        tmp.write_all(content)?;
        tmp.as_file().set_permissions(fs::Permissions::from_mode(0o644))?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map(|_| ()).map_err(|e| e.error)
    }

    /// End of run: the recipe trees can be large; state files are run-scoped. The rest stays
    /// for the dashboard and post-mortems.
    pub fn finish(&self) {
        for dir in [self.abra_dir.join("recipes"), self.state_dir.clone()] {
            if let Err(e) = remove_dir_all_if_exists(&dir) {
                tracing::warn!("{e}");
            }
        }
        let _ = fs::remove_dir(self.run_dir.join("state"));
    }
}

fn link(target: &Path, at: &Path) -> Result<(), WorkspaceError> {
    if let Ok(existing) = fs::read_link(at) {
        if existing == target {
            return Ok(());
        }
        fs::remove_file(at).map_err(io("replace the symlink", at))?;
    } else if at.exists() {
        return Err(WorkspaceError::Io {
            action: "create the symlink",
            path: at.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a non-symlink is in the way"),
        });
    }
    symlink(target, at).map_err(io("create the symlink", at))
}

pub fn remove_dir_all_if_exists(dir: &Path) -> Result<(), WorkspaceError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", dir)(e)),
    }
}

/// Copies a directory tree, keeping symlinks as symlinks and file modes.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(from).map_err(std::io::Error::other)?;
        let dest = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&dest)?;
        } else if ft.is_symlink() {
            symlink(fs::read_link(entry.path())?, &dest)?;
        } else if ft.is_file() {
            fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}
