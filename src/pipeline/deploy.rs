//! Deploy exactly once (§7.1 step 3), under the app lock. The upgrade redeploy is not a new
//! deploy; a second deploy in one run is a bug the deploy counter catches.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ready::{self, HttpFloor, NotReady, Readiness};
use super::step::{Step, StepError, checkpoint};
use super::{Running, base, envfile};
use crate::adapters::git::Git;
use crate::app::{App, reap};
use crate::config::ccci_yml::{Health, ReadyProbe};
use crate::env_vars as ev;
use crate::lifetime::Stop;
use crate::policy;
use crate::process::{Cmd, env as child_env};
use crate::untrusted;

/// The app a deploy step works on: the app under test or one of its dependencies (issue 19).
/// Every step of a deploy — the clear under the lock, `app new`, the `.env` overrides, the
/// secrets, the gate with ccci's stamp, the deploy and the readiness wait — is the same for
/// both; only these differ.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub app: App,
    pub recipe: String,
    /// The checked-out recipe tree `abra app deploy` deploys.
    pub tree: PathBuf,
    pub health: Health,
    pub probes: Vec<ReadyProbe>,
}

impl Running<'_> {
    /// The app under test as a deploy target.
    pub(super) fn app_target(&self) -> Target {
        Target {
            app: self.ctx.app.clone(),
            recipe: self.ctx.cfg.recipe.clone(),
            tree: self.fetched.dir.clone(),
            health: self.custom.yml.health.clone(),
            probes: self.custom.yml.ready_probes.clone(),
        }
    }

    pub(super) fn deploy(&mut self) -> Result<Duration, StepError> {
        let ctx = self.ctx;
        let t = self.app_target();
        let started = Instant::now();
        self.clear_leftovers(&t)?;
        checkpoint()?;

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

        // `{{deps.<name>.<key>}}` filled from the dependencies that are up by now.
        let extra = self.rendered_env(&self.custom.yml.extra_env, "extra_env")?;
        self.new_app(&t, &extra)?;
        self.prepare_tree("install")?;
        let baseline = self.gated_deploy(&t)?;
        let timeout = Duration::from_secs(self.custom.yml.timeouts.deploy);
        self.wait_ready(baseline, false, timeout)?;
        Ok(started.elapsed())
    }

    /// Under the lock, anything of the target's domain belongs to a dead run (a live one would
    /// hold the lock): clear it before `app new` would trip over it.
    pub(super) fn clear_leftovers(&self, t: &Target) -> Result<(), StepError> {
        let ctx = self.ctx;
        let domain = &t.app.domain;
        let look = || {
            reap::leftovers_within(&ctx.docker, &t.app, reap::read_until())
                .map_err(|e| self.docker_error(&format!("cannot look for leftovers of {domain}"), &e))
        };
        let left = look()?;
        if !left.is_empty() {
            tracing::warn!("clearing leftovers of {domain} from an earlier run: {}", left.join(", "));
            // Fenced: on a shared swarm they may be a paused predecessor's, and this run must
            // still hold the domain when it removes them.
            reap::reap(&ctx.abra, &ctx.docker, &t.app, &self.lease)
                .step(format_args!("cannot clear leftovers of {domain}"))?;
            let still = look()?;
            if !still.is_empty() {
                return Err(StepError::Failed(format!(
                    "leftovers of {domain} remain after clearing: {}",
                    still.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// A read or write of dockerd that failed: the step fails, and when dockerd is at fault
    /// (unreachable, erroring, too slow) the run's verdict is infra (69) — CI could not test.
    pub(super) fn docker_error(&self, what: &str, e: &crate::adapters::DockerError) -> StepError {
        let err = StepError::of(what, e);
        if let StepError::Failed(reason) = &err
            && e.is_infra()
        {
            self.note_infra(reason);
        }
        err
    }

    /// CI could not test (dockerd at fault): the first such reason becomes the run's infra
    /// verdict; the step that met it still fails.
    pub(super) fn note_infra(&self, reason: &str) {
        self.infra.borrow_mut().get_or_insert_with(|| reason.to_string());
    }

    /// `abra app new` and the `.env` overrides: ccci's own, then `extra`.
    pub(super) fn new_app(&self, t: &Target, extra: &[(String, String)]) -> Result<(), StepError> {
        let ctx = self.ctx;
        ctx.abra.app_new(&t.recipe, &t.app.domain).step("abra app new failed")?;
        self.check_recipe_of_env(t)?;
        // LETS_ENCRYPT_ENV first: no ACME request is ever made for a test app. Then the stamp:
        // from here on the janitor can prove this app is ccci's and which lock dir guards it,
        // even if the lockfile is gone (a reboot). DOMAIN and STACK_NAME: abra templates only
        // `<recipe>.example.com` into a new `.env`, and a PR's `.env.sample` must not point
        // abra at another domain or stack.
        let mut overrides = vec![
            ("LETS_ENCRYPT_ENV".to_string(), String::new()),
            (ev::CCCI_LOCK_DIR_STAMP.to_string(), ctx.cfg.host.lock_dir.display().to_string()),
            ("DOMAIN".to_string(), t.app.domain.clone()),
            ("STACK_NAME".to_string(), t.app.stack.clone()),
        ];
        // The fencing token, when the domain is leased: the janitor of any host tells this
        // run's app from a newer run's by it.
        if let Some(token) = self.lease.token() {
            overrides.push((ev::CCCI_LEASE_TOKEN_STAMP.to_string(), token.to_string()));
        }
        overrides.extend(extra.iter().cloned());
        envfile::set(&t.app.env_path, &overrides)?;
        Ok(())
    }

    /// The secrets, the gate, the deploy counter and `abra app deploy`; returns the readiness
    /// baseline taken just before the deploy.
    pub(super) fn gated_deploy(&mut self, t: &Target) -> Result<ready::Baseline, StepError> {
        let ctx = self.ctx;
        // After the overrides and the overlay, which may enable compose files that declare
        // more secrets than the `.env.sample` did.
        self.generate_secrets_of(t)?;
        // The policy gate: exactly what is deployed next, judged before anything of it runs.
        self.gate_target(t)?;
        self.count_deploy()?;
        let baseline = ready::baseline(&ctx.docker, &t.app.stack);
        self.lease.check_running("abra app deploy")?;
        if t.app == ctx.app {
            self.deployed = true;
        }
        ctx.abra.app_deploy(&t.app.domain, false).step("abra app deploy failed")?;
        Ok(baseline)
    }

    /// `.env` overrides of `ccci.yml` with their `{{deps.<name>.<key>}}` filled in.
    pub(super) fn rendered_env(
        &self,
        map: &std::collections::BTreeMap<String, crate::config::ccci_yml::Scalar>,
        field: &str,
    ) -> Result<Vec<(String, String)>, StepError> {
        map.iter()
            .map(|(k, v)| {
                crate::deps::template::render(&v.as_env_value(), self.deps_file.entries())
                    .map(|v| (k.clone(), v))
                    .map_err(|e| StepError::Failed(format!("{field}.{k}: {e}")))
            })
            .collect()
    }

    /// `abra app new` copied the recipe's `.env.sample`; abra deploys the recipe its `TYPE`
    /// (or `RECIPE`) names, so a sample naming another recipe would deploy another tree.
    fn check_recipe_of_env(&self, t: &Target) -> Result<(), StepError> {
        let env_path = &t.app.env_path;
        let text = std::fs::read_to_string(env_path)
            .map_err(|e| format!("`abra app new` left no readable .env at {}: {e}", env_path.display()))?;
        let recipe = &t.recipe;
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
        self.generate_secrets_of(&self.app_target())
    }

    fn generate_secrets_of(&self, t: &Target) -> Result<(), StepError> {
        self.lease.check_running("abra app secret generate")?;
        match self.ctx.abra.secret_generate(&t.app.domain) {
            Ok(()) => Ok(()),
            Err(e) if e.error_line().is_some_and(|l| l.contains("already exists")) => {
                tracing::warn!("abra app secret generate: {e}; carrying on (the deploy checks the secrets)");
                Ok(())
            }
            Err(e) => Err(StepError::of("abra app secret generate failed", e)),
        }
    }

    /// `git checkout -f`, then the tree check: every checkout of PR code is a new tree.
    pub(super) fn checkout(&self, rev: &str) -> Result<(), StepError> {
        Git::run(self.ctx.git.at(&self.fetched.dir).args(["checkout", "--quiet", "-f", rev]))
            .step(format_args!("git checkout {rev} failed"))?;
        policy::check_tree(&self.ctx.git, &self.fetched.dir).map_err(|e| StepError::Failed(e.to_string()))
    }

    /// The head of an upgrade gets a fresh copy of the tree: the base's containers may have
    /// written into the tree through a bind mount (a link where a bind source should be, a
    /// changed compose file), and what they wrote must not reach the head's deploy. The old
    /// tree is renamed aside (the running containers keep their mounts of it) and copied back
    /// without following links; `checkout -f` and `clean -ffdx` then leave exactly the head's
    /// tracked files, which the tree check judges again.
    pub(super) fn fresh_tree(&self, rev: &str) -> Result<(), StepError> {
        let dir = &self.fetched.dir;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let aside = dir.with_file_name(format!(".{name}.base"));
        crate::workspace::remove_dir_all_if_exists(&aside).map_err(|e| e.to_string())?;
        std::fs::rename(dir, &aside).map_err(|e| format!("cannot set the base tree aside: {e}"))?;
        crate::workspace::copy_tree(&aside, dir).map_err(|e| format!("cannot copy the tree for the head: {e}"))?;
        Git::run(self.ctx.git.at(dir).args(["clean", "-q", "-ffdx"]))
            .map_err(|e| StepError::Failed(format!("git clean of the head's tree failed: {e}")))?;
        self.checkout(rev)?;
        // ccci's own stamp overlay stays listed in COMPOSE_FILE: keep it until the gate
        // rewrites it for the head.
        if let Ok(stamp) = untrusted::read(&aside, Path::new(STAMP_OVERLAY)) {
            untrusted::replace_file(dir, Path::new(STAMP_OVERLAY), &stamp, 0o644)
                .map_err(|e| format!("cannot write {STAMP_OVERLAY} into the head's tree: {e}"))?;
        }
        Ok(())
    }

    /// The policy gate (docs/security.md) before every deploy: the app's `.env` and the
    /// compose files rendered by docker's own loader, judged; then ccci's stamp overlay (the
    /// lock dir on every service and volume, so the janitor can prove ownership from docker
    /// alone) added to `COMPOSE_FILE` and the exact configuration rendered and judged again.
    /// A refusal fails the step with a `policy:` reason; nothing is deployed.
    pub(super) fn gate(&mut self) -> Result<(), StepError> {
        self.gate_target(&self.app_target())
    }

    /// The gate of [`Self::gate`] for any target. The app under test's rendering is kept (backup
    /// capability and diagnostics read it); a dependency's is judged the same way, with the
    /// operator's allow-list, and then dropped.
    pub(super) fn gate_target(&mut self, t: &Target) -> Result<(), StepError> {
        self.st.policy.checked += 1;
        let (rendered, first_compose) = self.judge(t)?;
        // docker's loader refuses files of different `version`s and renders its own newest
        // version: the overlay copies the first compose file's, whatever the recipe wrote.
        let version = first_compose
            .as_deref()
            .and_then(|f| untrusted::read_to_string(&t.tree, Path::new(f)).ok())
            .and_then(|text| compose_version(&text));
        let overlay = stamp_overlay(&rendered, version, &self.ctx.cfg.host.lock_dir, self.lease.token())?;
        untrusted::replace_file(&t.tree, Path::new(STAMP_OVERLAY), overlay.as_bytes(), 0o644)
            .map_err(|e| format!("cannot write {STAMP_OVERLAY} into the recipe tree: {e}"))?;
        envfile::add_compose_file(&t.app.env_path, STAMP_OVERLAY)?;
        let (rendered, first_compose) = self.judge(t)?;
        if t.app == self.ctx.app {
            self.rendered = Some(rendered);
            self.first_compose = first_compose;
        }
        Ok(())
    }

    /// One render and judgement of what `COMPOSE_FILE` names now: the rendered configuration
    /// and its first compose file.
    fn judge(&mut self, t: &Target) -> Result<(String, Option<String>), StepError> {
        let ctx = self.ctx;
        let pctx = policy::Context {
            tree: t.tree.clone(),
            domain: t.app.domain.clone(),
            stack: t.app.stack.clone(),
            recipe: Some(t.recipe.clone()),
        };
        let env_dir = t.app.env_path.parent().unwrap_or(Path::new("/"));
        let env_name = t.app.env_path.file_name().map(Path::new).unwrap_or(Path::new(""));
        // The allow-list is the operator's: the trusted ccci.yml's alone.
        let allow = ctx.cfg.trusted_yml.as_ref().and_then(|(_, y)| y.policy.clone()).unwrap_or_default();
        let checked = policy::read_env(env_dir, env_name)
            .and_then(|env| policy::check_deploy(&ctx.cfg.host.docker, &pctx, &env, &allow, policy::RENDER_TIMEOUT));
        let checked = checked.step("policy: cannot render the recipe")?;
        if let Some(reason) = checked.report.reason() {
            for v in &checked.report.violations {
                tracing::error!("policy: {v}");
            }
            self.st.policy.violations.extend(checked.report.violations);
            return Err(StepError::Failed(reason));
        }
        Ok((checked.rendered, checked.compose_files.first().cloned()))
    }

    /// After every checkout that precedes a deploy: the overlay and `install_steps.sh` again.
    pub(super) fn prepare_tree(&self, stage: &str) -> Result<(), StepError> {
        child_env::set_stage(stage);
        let ctx = self.ctx;
        if self.custom.has("compose.ccci.yml") {
            // The PR may have committed compose.ccci.yml as a link to /etc/shadow: the name is
            // unlinked and created afresh (O_EXCL), never opened through.
            let overlay = std::fs::read(self.custom.path("compose.ccci.yml"))
                .map_err(|e| format!("cannot read the snapshot's compose.ccci.yml: {e}"))?;
            untrusted::replace_file(&self.fetched.dir, Path::new("compose.ccci.yml"), &overlay, 0o644)
                .map_err(|e| format!("cannot write compose.ccci.yml into the recipe tree: {e}"))?;
            let value = envfile::add_compose_file(&ctx.app.env_path, "compose.ccci.yml")?;
            tracing::info!("COMPOSE_FILE={value}");
        }
        if self.custom.has("install_steps.sh") {
            Cmd::new("sh")
                .name("install_steps")
                .arg(self.custom.path("install_steps.sh").display().to_string())
                .cwd(&self.fetched.dir)
                .timeout(Duration::from_secs(self.custom.yml.timeouts.hook))
                .run_checked()
                .step(format_args!("install_steps.sh ({stage}) failed"))?;
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

    /// The app once, and each dependency once: `1 + deps`.
    pub(super) fn check_deploy_count(&self) -> Result<(), StepError> {
        let path = &self.ctx.ws.deploy_count_file;
        let n: u32 = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        let deps = self.custom.yml.deps.len() as u32;
        if n > 1 + deps {
            let each = if deps == 0 {
                "a run deploys exactly once".to_string()
            } else {
                format!("a run deploys its app and each of its {deps} dependencies exactly once")
            };
            return Err(StepError::Failed(format!(
                "deploy-count guard: {n} deploys recorded in {} ({}); {each}",
                path.display(),
                ev::CCCI_DEPLOY_COUNT_FILE
            )));
        }
        Ok(())
    }

    fn http_floor(&self, t: &Target) -> Option<HttpFloor> {
        let host_url = &self.ctx.cfg.host.health_url;
        if host_url == "off" {
            return None;
        }
        let template = t.health.url.clone().unwrap_or_else(|| host_url.clone());
        if template == "off" {
            return None;
        }
        Some(HttpFloor {
            url: template.replace("{domain}", &t.app.domain),
            expect: t.health.expect.clone().unwrap_or_else(|| vec![200, 301, 302]),
            timeout: Duration::from_secs(self.custom.yml.timeouts.http),
        })
    }

    /// Waits until the app under test is ready (§7.5).
    pub(super) fn wait_ready(
        &self,
        baseline: ready::Baseline,
        after_upgrade: bool,
        timeout: Duration,
    ) -> Result<Duration, StepError> {
        self.wait_ready_of(&self.app_target(), baseline, after_upgrade, timeout)
    }

    pub(super) fn wait_ready_of(
        &self,
        t: &Target,
        baseline: ready::Baseline,
        after_upgrade: bool,
        timeout: Duration,
    ) -> Result<Duration, StepError> {
        let floor = self.http_floor(t);
        let r = Readiness {
            docker: &self.ctx.docker,
            stack: &t.app.stack,
            probes: &t.probes,
            http: floor.as_ref(),
            timeout,
        };
        match r.wait(baseline, after_upgrade) {
            Ok(d) => {
                tracing::info!("{} is ready (after {})", t.app.domain, crate::clock::human(d));
                Ok(d)
            }
            Err(NotReady::Failed(reason)) => Err(StepError::Failed(format!("not ready: {reason}"))),
            // dockerd could not be read: the stage fails, and the run's verdict is infra (69).
            Err(NotReady::Infra(reason)) => {
                tracing::error!("readiness could not be judged: {reason}");
                self.note_infra(&reason);
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

/// ccci's own compose overlay, written into the tree before every deploy.
pub(super) const STAMP_OVERLAY: &str = "compose.ccci-stamp.yml";

/// The stamp overlay for a rendered configuration: the `ccci.lock-dir` label on every service
/// (`deploy.labels`) and every volume the stack creates, so the janitor can tell ccci's apps —
/// and the lock dir that guards them — from docker's view alone; with the app lease, also the
/// run's fencing token (`ccci.lease-token`), so the janitor of any host sharing the swarm can
/// tell whose run deployed it.
fn stamp_overlay(
    rendered: &str,
    version: Option<serde_yaml_ng::Value>,
    lock_dir: &Path,
    token: Option<u64>,
) -> Result<String, StepError> {
    use serde_yaml_ng::{Mapping, Value};
    let doc: Value = serde_yaml_ng::from_str(rendered)
        .map_err(|e| StepError::Failed(format!("the rendered compose config cannot be read: {e}")))?;
    // `$` is interpolation in compose: a path is written as it is.
    let stamp = Value::String(lock_dir.display().to_string().replace('$', "$$"));
    let label = |m: &mut Mapping| {
        m.insert(Value::String(crate::adapters::docker::STAMP_LABEL.into()), stamp.clone());
        if let Some(t) = token {
            m.insert(Value::String(crate::lease::TOKEN_LABEL.into()), Value::String(t.to_string()));
        }
    };
    let mut services = Mapping::new();
    for (name, _) in doc.get("services").and_then(Value::as_mapping).into_iter().flatten() {
        let mut labels = Mapping::new();
        label(&mut labels);
        let mut deploy = Mapping::new();
        deploy.insert("labels".into(), Value::Mapping(labels));
        let mut svc = Mapping::new();
        svc.insert("deploy".into(), Value::Mapping(deploy));
        services.insert(name.clone(), Value::Mapping(svc));
    }
    let mut volumes = Mapping::new();
    for (name, v) in doc.get("volumes").and_then(Value::as_mapping).into_iter().flatten() {
        if v.get("external").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let mut labels = Mapping::new();
        label(&mut labels);
        let mut vol = Mapping::new();
        vol.insert("labels".into(), Value::Mapping(labels));
        volumes.insert(name.clone(), Value::Mapping(vol));
    }
    let mut out = Mapping::new();
    if let Some(version) = version {
        out.insert("version".into(), version);
    }
    out.insert("services".into(), Value::Mapping(services));
    if !volumes.is_empty() {
        out.insert("volumes".into(), Value::Mapping(volumes));
    }
    let text = serde_yaml_ng::to_string(&Value::Mapping(out)).map_err(|e| e.to_string())?;
    Ok(format!("# Written by ccci before every deploy: its stamp on this app's services and volumes.\n{text}"))
}

/// The top-level `version` of a compose file, as written (`3.8`, `"3.8"`), when it has one.
fn compose_version(text: &str) -> Option<serde_yaml_ng::Value> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    doc.get("version").filter(|v| v.is_string() || v.is_number()).cloned()
}

#[cfg(test)]
mod tests {
    use super::{compose_version, stamp_overlay};
    use serde_yaml_ng::Value;
    use std::path::Path;

    #[test]
    fn the_stamp_overlay_labels_every_service_and_own_volume() {
        let rendered = "version: \"3.13\"\nservices:\n  app:\n    image: x\n  db:\n    image: y\nvolumes:\n  data: {}\n  shared:\n    external: true\n";
        let text = stamp_overlay(rendered, Some(Value::String("3.8".into())), Path::new("/run/ccci$x"), None).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(doc["version"], "3.8", "the recipe's version, not the renderer's: {text}");
        for svc in ["app", "db"] {
            assert_eq!(doc["services"][svc]["deploy"]["labels"]["ccci.lock-dir"], "/run/ccci$$x", "{text}");
            assert!(doc["services"][svc].get("image").is_none(), "only the label: {text}");
            assert!(doc["services"][svc]["deploy"]["labels"].get("ccci.lease-token").is_none(), "no lease: {text}");
        }
        assert_eq!(doc["volumes"]["data"]["labels"]["ccci.lock-dir"], "/run/ccci$$x");
        assert!(doc["volumes"].get("shared").is_none(), "an external volume is not the app's: {text}");
        let leased = stamp_overlay(rendered, None, Path::new("/l"), Some(42)).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&leased).unwrap();
        assert_eq!(doc["services"]["app"]["deploy"]["labels"]["ccci.lease-token"], "42", "{leased}");
        assert_eq!(doc["volumes"]["data"]["labels"]["ccci.lease-token"], "42", "{leased}");
        let bare = stamp_overlay("services:\n  app: {}\n", None, Path::new("/l"), None).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&bare).unwrap();
        assert!(doc.get("version").is_none() && doc.get("volumes").is_none(), "{bare}");
        assert!(stamp_overlay("services: [", None, Path::new("/l"), None).is_err());
    }

    #[test]
    fn the_compose_version_is_taken_as_written() {
        assert_eq!(compose_version("version: \"3.8\"\nservices: {}\n"), Some(Value::String("3.8".into())));
        assert!(compose_version("version: 3.8\n").is_some_and(|v| v.is_number()));
        assert_eq!(compose_version("services: {}\n"), None);
        assert_eq!(compose_version("version: [1]\n"), None);
        assert_eq!(compose_version(":\n  - ["), None);
    }
}
