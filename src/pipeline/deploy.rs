//! Deploy exactly once (§7.1 step 3), under the app lock. The upgrade redeploy is not a new
//! deploy; a second deploy in one run is a bug the deploy counter catches.

use std::time::{Duration, Instant};

use super::ready::{self, HttpFloor, NotReady, Readiness};
use super::{Running, base, envfile};
use crate::adapters::git::Git;
use crate::app::reap;
use crate::env_vars as ev;
use crate::lifetime::{self, Stop};
use crate::process::{Cmd, env as child_env};

/// A step that did not work out: a failure to report, or a stop to obey.
#[derive(Debug)]
pub(crate) enum StepError {
    Failed(String),
    Stopped,
}

impl From<String> for StepError {
    fn from(s: String) -> Self {
        StepError::Failed(s)
    }
}

impl Running<'_> {
    pub(super) fn deploy(&mut self) -> Result<Duration, StepError> {
        let ctx = self.ctx;
        let (domain, stack, env_path) = (&ctx.app.domain, &ctx.app.stack, &ctx.app.env_path);
        let started = Instant::now();

        // Under the lock, anything of this domain belongs to a dead run (a live one would hold
        // the lock): clear it before `app new` would trip over it.
        let left = reap::leftovers(&ctx.docker, &ctx.app)?;
        if !left.is_empty() {
            tracing::warn!("clearing leftovers of {domain} from an earlier run: {}", left.join(", "));
            reap::reap(&ctx.abra, &ctx.docker, &ctx.app)
                .map_err(|e| format!("cannot clear leftovers of {domain}: {e}"))?;
            let still = reap::leftovers(&ctx.docker, &ctx.app)?;
            if !still.is_empty() {
                return Err(StepError::Failed(format!(
                    "leftovers of {domain} remain after clearing: {}",
                    still.join(", ")
                )));
            }
        }
        self.stopped()?;

        // The base first (SPEC §7.1 steps 3 and 5, swapped by issue 13): `app new` copies the
        // checked-out `.env.sample`, so the `.env` and the secrets come from the version that
        // is deployed first, not from the head.
        if self.requested(crate::stage::Stage::Upgrade) {
            let b = base::choose(
                &ctx.git,
                &self.fetched.dir,
                &self.fetched.head,
                self.custom.yml.upgrade.base.as_deref(),
                self.fetched.default_branch.as_deref(),
            );
            match b {
                Ok(b) => self.base_ref = Some(b),
                Err(e) => {
                    // A base that does not exist fails the upgrade stage, not the deploy.
                    tracing::error!("{e}");
                    self.base_ref = Some(base::Base::None);
                    self.base_error = Some(e);
                }
            }
        }
        match &self.base_ref {
            Some(base::Base::Ref { name, commit, why }) => {
                tracing::info!("base version: {name} ({}; {why})", &commit[..commit.len().min(10)]);
                self.st.base = Some(name.clone());
                self.checkout(commit)?;
            }
            _ => {
                self.st.base = Some(self.fetched.head.clone());
            }
        }

        ctx.abra.app_new(&ctx.cfg.recipe, domain).map_err(|e| self.abra_err("abra app new", e))?;
        self.check_recipe_of_env()?;
        // LETS_ENCRYPT_ENV first: no ACME request is ever made for a test app. Then the stamp:
        // from here on the janitor can prove this app is ccci's and which lock dir guards it,
        // even if the lockfile is gone (a reboot). DOMAIN and STACK_NAME: abra templates only
        // `<recipe>.example.com` into a new `.env`, and a PR's `.env.sample` must not point
        // abra at another domain or stack.
        let mut overrides = vec![
            ("LETS_ENCRYPT_ENV".to_string(), String::new()),
            (ev::CCCI_LOCK_DIR_STAMP.to_string(), ctx.cfg.host.lock_dir.display().to_string()),
            ("DOMAIN".to_string(), domain.clone()),
            ("STACK_NAME".to_string(), stack.clone()),
        ];
        overrides.extend(self.custom.yml.extra_env.iter().map(|(k, v)| (k.clone(), v.as_env_value())));
        envfile::set(env_path, &overrides)?;

        self.prepare_tree("install")?;
        // After the overrides and the overlay, which may enable compose files that declare
        // more secrets than the `.env.sample` did.
        self.generate_secrets()?;
        self.count_deploy()?;
        let baseline = ready::baseline(&ctx.docker, stack);
        self.deployed = true;
        ctx.abra.app_deploy(domain, false).map_err(|e| self.abra_err("abra app deploy", e))?;
        let timeout = Duration::from_secs(self.custom.yml.timeouts.deploy);
        self.wait_ready(baseline, false, timeout)?;
        Ok(started.elapsed())
    }

    /// `abra app new` copied the recipe's `.env.sample`; abra deploys the recipe its `TYPE`
    /// (or `RECIPE`) names, so a sample naming another recipe would deploy another tree.
    fn check_recipe_of_env(&self) -> Result<(), StepError> {
        let env_path = &self.ctx.app.env_path;
        let text = std::fs::read_to_string(env_path)
            .map_err(|e| format!("`abra app new` left no readable .env at {}: {e}", env_path.display()))?;
        let recipe = &self.ctx.cfg.recipe;
        match envfile::recipe_in(&text) {
            Some(r) if &r == recipe => Ok(()),
            found => Err(StepError::Failed(format!(
                "the recipe's .env.sample names {} in TYPE/RECIPE, not {recipe}: abra would deploy that recipe's tree \
                 (set TYPE={recipe} in .env.sample, or run ccci with --recipe set to the name it gives)",
                found.map_or_else(|| "no recipe".to_string(), |r| format!("recipe {r:?}"))
            ))),
        }
    }

    /// `abra app secret generate` for every secret the app's compose files declare that does
    /// not exist yet (values never printed). abra warns and carries on about secrets that
    /// already exist; a failure that only says so is not fatal either: the deploy itself
    /// checks that every declared secret exists.
    pub(super) fn generate_secrets(&self) -> Result<(), StepError> {
        match self.ctx.abra.secret_generate(&self.ctx.app.domain) {
            Ok(()) => Ok(()),
            Err(crate::adapters::AbraError::Failed(msg)) if msg.contains("already exists") => {
                tracing::warn!("abra app secret generate: {msg}; carrying on (the deploy checks the secrets)");
                Ok(())
            }
            Err(e) => Err(self.abra_err("abra app secret generate", e)),
        }
    }

    pub(super) fn stopped(&self) -> Result<(), StepError> {
        if lifetime::cause().is_some() { Err(StepError::Stopped) } else { Ok(()) }
    }

    pub(super) fn abra_err(&self, what: &str, e: crate::adapters::AbraError) -> StepError {
        if e.stopped().is_some() && lifetime::cause().is_some() {
            StepError::Stopped
        } else {
            StepError::Failed(format!("{what} failed: {e}"))
        }
    }

    pub(super) fn checkout(&self, rev: &str) -> Result<(), StepError> {
        Git::run(self.ctx.git.at(&self.fetched.dir).args(["checkout", "--quiet", "-f", rev])).map(|_| ()).map_err(|e| {
            if lifetime::cause().is_some() {
                StepError::Stopped
            } else {
                StepError::Failed(format!("git checkout {rev} failed: {e}"))
            }
        })
    }

    /// After every checkout that precedes a deploy: the overlay and `install_steps.sh` again.
    pub(super) fn prepare_tree(&self, stage: &str) -> Result<(), StepError> {
        child_env::set_stage(stage);
        let ctx = self.ctx;
        if self.custom.has("compose.ccci.yml") {
            let dest = self.fetched.dir.join("compose.ccci.yml");
            std::fs::copy(self.custom.path("compose.ccci.yml"), &dest)
                .map_err(|e| format!("cannot copy compose.ccci.yml into {}: {e}", dest.display()))?;
            let value = envfile::add_compose_file(&ctx.app.env_path, "compose.ccci.yml")?;
            tracing::info!("COMPOSE_FILE={value}");
        }
        if self.custom.has("install_steps.sh") {
            let out = Cmd::new("sh")
                .name("install_steps")
                .arg(self.custom.path("install_steps.sh").display().to_string())
                .cwd(&self.fetched.dir)
                .timeout(Duration::from_secs(self.custom.yml.timeouts.hook))
                .run()
                .map_err(|e| e.to_string())?;
            if !out.success() {
                if lifetime::cause().is_some() {
                    return Err(StepError::Stopped);
                }
                return Err(StepError::Failed(format!("install_steps.sh ({stage}) failed: {}", out.describe())));
            }
        }
        Ok(())
    }

    /// Counts this deploy in `CCCI_DEPLOY_COUNT_FILE`; more than one per run fails the run.
    pub(super) fn count_deploy(&self) -> Result<(), StepError> {
        let path = &self.ctx.ws.deploy_count_file;
        let n: u32 = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0) + 1;
        std::fs::write(path, format!("{n}\n")).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.check_deploy_count()
    }

    pub(super) fn check_deploy_count(&self) -> Result<(), StepError> {
        let path = &self.ctx.ws.deploy_count_file;
        let n: u32 = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        if n > 1 {
            return Err(StepError::Failed(format!(
                "deploy-count guard: {n} deploys recorded in {} ({}); a run deploys exactly once",
                path.display(),
                ev::CCCI_DEPLOY_COUNT_FILE
            )));
        }
        Ok(())
    }

    fn http_floor(&self) -> Option<HttpFloor> {
        let host_url = &self.ctx.cfg.host.health_url;
        if host_url == "off" {
            return None;
        }
        let template = self.custom.yml.health.url.clone().unwrap_or_else(|| host_url.clone());
        if template == "off" {
            return None;
        }
        Some(HttpFloor {
            url: template.replace("{domain}", &self.ctx.cfg.domain),
            expect: self.custom.yml.health.expect.clone().unwrap_or_else(|| vec![200, 301, 302]),
            timeout: Duration::from_secs(self.custom.yml.timeouts.http),
        })
    }

    pub(super) fn wait_ready(
        &self,
        baseline: ready::Baseline,
        after_upgrade: bool,
        timeout: Duration,
    ) -> Result<Duration, StepError> {
        let floor = self.http_floor();
        let r = Readiness {
            docker: &self.ctx.docker,
            stack: &self.ctx.app.stack,
            probes: &self.custom.yml.ready_probes,
            http: floor.as_ref(),
            timeout,
        };
        match r.wait(baseline, after_upgrade) {
            Ok(d) => {
                tracing::info!("{} is ready (after {})", self.ctx.cfg.domain, crate::clock::human(d));
                Ok(d)
            }
            Err(NotReady::Failed(reason)) => Err(StepError::Failed(format!("not ready: {reason}"))),
            // dockerd could not be read: the stage fails, and the run's verdict is infra (69).
            Err(NotReady::Infra(reason)) => {
                tracing::error!("readiness could not be judged: {reason}");
                self.infra.borrow_mut().get_or_insert_with(|| reason.clone());
                Err(StepError::Failed(format!("readiness could not be judged: {reason}")))
            }
            Err(NotReady::Stopped(Stop::Cancelled(_))) => Err(StepError::Stopped),
            Err(NotReady::Stopped(s)) => Err(StepError::Failed(format!("readiness wait stopped: {s:?}"))),
        }
    }

    /// `coop-cloud.<stack>.version` after the last deploy, else the head's tag, else its short commit.
    pub(super) fn deployed_version(&self) -> Option<String> {
        let key = format!("coop-cloud.{}.version", self.ctx.app.stack);
        if let Ok(services) = self.ctx.docker.services(&self.ctx.app.stack) {
            for s in services {
                // An app service with no declared version gets an empty label on a chaos deploy.
                if let Some(v) = s["Spec"]["Labels"][&key].as_str().map(str::trim).filter(|v| !v.is_empty()) {
                    return Some(v.to_string());
                }
            }
        }
        let dir = &self.fetched.dir;
        Git::output(
            self.ctx
                .git
                .at(dir)
                .args(["describe", "--tags", "--exact-match", &self.fetched.head])
                .level(tracing::Level::DEBUG),
        )
        .ok()
        .or_else(|| Some(self.fetched.head.chars().take(8).collect()))
    }
}
