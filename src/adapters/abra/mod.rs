//! abra, called as [`Call`] describes (flags before positionals, `-n` always, `ABRA_DIR`
//! exported), and read as [`parse`] describes.

pub mod call;
pub mod parse;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use call::Call;
pub use parse::{LintRule, ListedApp};

use crate::env_vars as ev;
use crate::process::{Cmd, Output, ProcessError, Stopped};

/// A call that did not work out: the child's own failure (with its output), or abra's answer
/// that ccci cannot read.
#[derive(Debug, Error)]
pub enum AbraError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("cannot parse `abra app ls -m` output: {0}")]
    Parse(String),
}

impl AbraError {
    pub fn stopped(&self) -> Option<Stopped> {
        match self {
            AbraError::Process(e) => e.stopped(),
            AbraError::Parse(_) => None,
        }
    }

    /// abra's failure line (its last `FATA` line), when the call failed by itself.
    pub fn error_line(&self) -> Option<&str> {
        match self {
            AbraError::Process(e) => e.error_line(),
            AbraError::Parse(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Abra {
    program: String,
    abra_dir: PathBuf,
    server: String,
}

impl Abra {
    pub fn new(program: &str, abra_dir: &Path, server: &str) -> Abra {
        Abra { program: program.to_string(), abra_dir: abra_dir.to_path_buf(), server: server.to_string() }
    }

    /// The same abra with another `ABRA_DIR` (lint runs on a pristine copy in its own).
    pub fn with_dir(&self, abra_dir: &Path) -> Abra {
        Abra { abra_dir: abra_dir.to_path_buf(), ..self.clone() }
    }

    pub fn abra_dir(&self) -> &Path {
        &self.abra_dir
    }

    /// The arguments of `call` after the program (no process is started).
    pub fn argv(&self, call: &Call) -> Vec<String> {
        call.argv(&self.server)
    }

    /// The child for `call`, under a pseudo-terminal when the call needs one. Callers may add a
    /// timeout or capture before [`Abra::execute`].
    pub fn command(&self, call: &Call) -> Cmd {
        let cmd = Cmd::new(&self.program)
            .name("abra")
            .args(self.argv(call))
            .env(ev::ABRA_DIR, self.abra_dir.display().to_string())
            .hint(" (set CCCI_ABRA to the abra program)");
        if call.pty() { cmd.pty() } else { cmd }
    }

    /// Runs the child to its end; only a failure to start it is an error here (the caller keeps
    /// the output whatever happened, then [`Output::checked`]s it).
    pub fn execute(&self, cmd: Cmd) -> Result<Output, AbraError> {
        Ok(cmd.run()?)
    }

    /// Runs the call and wants it to succeed (a stop or a failure is an error).
    fn run(&self, call: &Call) -> Result<Output, AbraError> {
        Ok(self.command(call).run_checked()?)
    }

    pub fn version(&self) -> Result<String, AbraError> {
        let call = Call::Version;
        Ok(parse::version(&self.command(&call).capture().level(tracing::Level::DEBUG).run_checked()?.stdout))
    }

    pub fn app_new(&self, recipe: &str, domain: &str) -> Result<Output, AbraError> {
        self.run(&Call::AppNew { recipe: recipe.to_string(), domain: domain.to_string() })
    }

    /// Generates the app's missing secrets. abra prints their values once on stdout: that is
    /// captured and dropped, never logged; stderr (warnings, the failure line) is logged.
    pub fn secret_generate(&self, domain: &str) -> Result<(), AbraError> {
        let call = Call::SecretGenerate { domain: domain.to_string() };
        self.command(&call).capture().run_checked()?;
        Ok(())
    }

    /// `redeploy`: a redeploy of a deployed app (the upgrade).
    pub fn app_deploy(&self, domain: &str, redeploy: bool) -> Result<Output, AbraError> {
        self.run(&Call::AppDeploy { domain: domain.to_string(), redeploy })
    }

    pub fn app_undeploy(&self, domain: &str) -> Result<Output, AbraError> {
        self.run(&Call::AppUndeploy { domain: domain.to_string() })
    }

    pub fn app_remove(&self, domain: &str) -> Result<Output, AbraError> {
        self.run(&Call::AppRemove { domain: domain.to_string() })
    }

    pub fn app_ls(&self) -> Result<Vec<ListedApp>, AbraError> {
        let call = Call::AppLs;
        parse::app_ls(&self.command(&call).capture().level(tracing::Level::DEBUG).run_checked()?.stdout)
    }

    pub fn recipe_fetch(&self, recipe: &str) -> Result<Output, AbraError> {
        self.run(&Call::RecipeFetch { recipe: recipe.to_string() })
    }
}
