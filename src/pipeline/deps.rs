//! Dependency apps (issue 19), deployed before the app under test and torn down after it.
//!
//! Each `deps:` entry of the trusted `ccci.yml` becomes a run app of its own — domain
//! `<app>-d<n>` ([`names::dep_domain`]), its own app lock, taken while the run already holds the
//! app's — and goes through the app's deploy steps ([`Target`]): the clear under the lock,
//! `app new` and the `.env` overrides, the secrets, the gate with ccci's stamp, the deploy
//! counter, `abra app deploy`, the readiness wait. Only the tree differs: the dependency's
//! catalogue release, fetched with `abra recipe fetch` and checked out at its tag — never
//! anything of the PR. Once ready, its provision hook (trusted) prints what the tests need;
//! that lands in `$CCCI_DEPS_FILE`, secret values masked from then on.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::Running;
use super::customization::Origin;
use super::deploy::Target;
use super::step::{Step, StepError, checkpoint};
use crate::adapters::git::Git;
use crate::app::App;
use crate::config::ccci_yml::Dep;
use crate::env_vars as ev;
use crate::lock::LockGuard;
use crate::names;
use crate::process::Cmd;
use crate::report::{DepOut, TeardownResult};

/// A dependency app of the run, from its lock to its teardown.
pub(crate) struct DepApp {
    pub name: String,
    pub target: Target,
    /// Its own app lock, once taken; teardown touches the app only while holding it.
    pub lock: Option<LockGuard>,
    pub version: String,
    pub ready_ms: Option<u64>,
    pub reason: Option<String>,
}

impl DepApp {
    pub(super) fn out(&self, teardown: TeardownResult, teardown_reason: Option<String>) -> DepOut {
        let reason = match (&self.reason, teardown_reason) {
            (Some(a), Some(b)) => Some(format!("{a}; teardown: {b}")),
            (Some(a), None) => Some(a.clone()),
            (None, b) => b.map(|b| format!("teardown: {b}")),
        };
        DepOut {
            name: self.name.clone(),
            domain: self.target.app.domain.clone(),
            version: self.version.clone(),
            ready_ms: self.ready_ms,
            teardown,
            reason,
        }
    }
}

/// The newest release of `recipe` the catalogue (`<abra dir>/catalogue/recipes.json`) lists.
fn newest_in_catalogue(abra_dir: &std::path::Path, recipe: &str) -> Result<String, String> {
    let path = abra_dir.join("catalogue").join("recipes.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    // `versions` is a list of one-key objects, `[{"1.0.0+1": {…}}, …]`.
    let tags: Vec<(String, i64)> = doc[recipe]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys().map(|k| (k.clone(), 0)))
        .collect();
    super::base::newest_release(&tags).ok_or_else(|| format!("the catalogue lists no release of {recipe}"))
}

impl Running<'_> {
    /// Deploys every dependency in order; the first that does not come up stops the run's
    /// deploy with its name (`Err((name, why))`).
    pub(super) fn deploy_deps(&mut self) -> Result<(), (String, StepError)> {
        let deps = self.custom.yml.deps.clone();
        for (i, dep) in deps.iter().enumerate() {
            super::banner(&format!("dependency {}", dep.recipe));
            let domain = names::dep_domain(&self.ctx.cfg.domain, i + 1);
            let app = App::new(&domain, &self.ctx.cfg.host.server_dir());
            self.deps.push(DepApp {
                name: dep.recipe.clone(),
                target: Target {
                    tree: self.ctx.ws.recipe_dir(&dep.recipe),
                    recipe: dep.recipe.clone(),
                    app,
                    health: dep.ready.health.clone(),
                    probes: dep.ready.ready_probes.clone(),
                },
                lock: None,
                version: String::new(),
                ready_ms: None,
                reason: None,
            });
            if let Err(e) = self.deploy_dep(i, dep) {
                if let StepError::Failed(why) = &e {
                    tracing::error!("dependency {}: {why}", dep.recipe);
                    self.deps[i].reason = Some(why.clone());
                }
                return Err((dep.recipe.clone(), e));
            }
        }
        Ok(())
    }

    fn deploy_dep(&mut self, i: usize, dep: &Dep) -> Result<(), StepError> {
        let ctx = self.ctx;
        let t = self.deps[i].target.clone();
        let lock_path = ctx.cfg.host.lock_dir.join(names::lock_file_name(&t.app.domain));
        let lock = super::acquire_lock_of(ctx, &lock_path, &t.app.domain)
            .step(format_args!("cannot lock dependency app {}", t.app.domain))?;
        self.deps[i].lock = Some(lock);
        checkpoint()?;

        // The catalogue's release, never the PR's tree.
        ctx.abra.recipe_fetch(&dep.recipe).step("abra recipe fetch failed")?;
        let version = match &dep.version {
            Some(v) => v.clone(),
            None => newest_in_catalogue(&ctx.ws.abra_dir, &dep.recipe)?,
        };
        self.deps[i].version = version.clone();
        tracing::info!("dependency {}: release {version} as {}", dep.recipe, t.app.domain);
        checkout(&ctx.git, &t.tree, &version)?;

        self.clear_leftovers(&t)?;
        checkpoint()?;
        let env = self.rendered_env(&dep.env, &format!("deps.{}.env", dep.recipe))?;
        self.new_app(&t, &env)?;
        let started = Instant::now();
        let baseline = self.gated_deploy(&t)?;
        let timeout = Duration::from_secs(dep.ready.timeout.unwrap_or(self.custom.yml.timeouts.deploy));
        self.wait_ready_of(&t, baseline, false, timeout)?;
        let provisioned = self.provision(dep, &t)?;
        self.deps[i].ready_ms = Some(started.elapsed().as_millis() as u64);
        let entry = crate::deps::file::entry(&t.app.domain, provisioned.as_ref());
        self.deps_file
            .insert(&dep.recipe, entry)
            .map_err(|e| format!("cannot write {}: {e}", self.deps_file.path().display()))?;
        Ok(())
    }

    /// Runs the dependency's provision hook: its stdout is one JSON object, never logged; the
    /// values of its secret keys join the masker before anything else can print them.
    fn provision(&self, dep: &Dep, t: &Target) -> Result<Option<Map<String, Value>>, StepError> {
        let Some(p) = &dep.provision else { return Ok(None) };
        // Only the operator's own dir is honoured for a hook that sees credentials.
        if self.custom.files.get(&p.run) != Some(&Origin::Trusted) {
            return Err(StepError::Failed(format!(
                "provision hook {} is not in the trusted customisation (<CCCI_TESTS_DIR>/{}/{})",
                p.run, self.ctx.cfg.recipe, p.run
            )));
        }
        let out = Cmd::new(self.custom.path(&p.run).display().to_string())
            .name(format!("provision:{}", dep.recipe))
            .cwd(&self.custom.dir)
            .env(ev::CCCI_DEP_NAME, &dep.recipe)
            .env(ev::CCCI_DEP_DOMAIN, &t.app.domain)
            .env(ev::CCCI_DEP_STACK, &t.app.stack)
            .env(ev::CCCI_DEP_ENV, t.app.env_path.display().to_string())
            .timeout(Duration::from_secs(self.custom.yml.timeouts.hook))
            .capture()
            .run_checked()
            .step("provision hook failed")?;
        let got = crate::deps::provision::parse(&out.stdout, &p.secrets)
            .map_err(|e| StepError::Failed(format!("provision hook {}: {e}", p.run)))?;
        let short = got.secret_values.iter().filter(|v| v.len() < crate::mask::MIN_LEN).count();
        if short > 0 {
            tracing::warn!(
                "dependency {}: {short} secret value(s) shorter than {} characters cannot be masked",
                dep.recipe,
                crate::mask::MIN_LEN
            );
        }
        crate::mask::add(got.secret_values);
        let keys: Vec<&String> = got.values.keys().collect();
        tracing::info!("dependency {}: provisioned {keys:?}", dep.recipe);
        Ok(Some(got.values))
    }
}

/// `git checkout -f <tag>` of a dependency's fetched tree, then the tree check (it is not the
/// PR's, but nothing is deployed unchecked).
fn checkout(git: &Git, dir: &Path, rev: &str) -> Result<(), StepError> {
    Git::run(git.at(dir).args(["checkout", "--quiet", "-f", rev]))
        .step(format_args!("release {rev} cannot be checked out"))?;
    crate::policy::check_tree(git, dir).map_err(|e| StepError::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::newest_in_catalogue;

    #[test]
    fn the_newest_catalogue_release_is_the_default_version() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("catalogue")).unwrap();
        std::fs::write(
            d.path().join("catalogue/recipes.json"),
            r#"{"idp": {"versions": [{"1.2.0+2": {}}, {"1.10.0+1": {}}, {"1.9.9+5": {}}]}, "none": {"versions": []}}"#,
        )
        .unwrap();
        assert_eq!(newest_in_catalogue(d.path(), "idp").unwrap(), "1.10.0+1");
        assert!(newest_in_catalogue(d.path(), "none").unwrap_err().contains("no release of none"));
        assert!(newest_in_catalogue(d.path(), "absent").is_err());
    }
}
