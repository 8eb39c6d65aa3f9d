//! The five stages (§7.6), run in order on the one deployment.

use std::time::{Duration, Instant};

use serde_json::json;

use super::Running;
use super::base::Base;
use super::ready;
use super::step::{self, Step, StepError};
use crate::adapters::abra::{Call, parse};
use crate::process::{Cmd, Stopped, env as child_env};
use crate::report::{StageResult, Status, TestResult};
use crate::stage::Stage;

/// The exit status of a custom test that skipped itself.
const SKIP_CODE: i32 = 77;

enum Out {
    Pass,
    Fail(String),
    Skip { intentional: bool, reason: String },
    Stopped,
}

impl From<StepError> for Out {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Failed(r) => Out::Fail(r),
            StepError::Stopped => Out::Stopped,
        }
    }
}

impl Running<'_> {
    pub(super) fn run_stages(&mut self, requested: &[Stage]) {
        let Some(&first) = requested.first() else { return };
        // The dependencies first: the app under test may need them to become ready at all.
        if let Err((name, e)) = self.deploy_deps() {
            if let StepError::Failed(why) = e {
                let reason = format!("dependency {name}: {why}");
                self.record(StageResult::new(first, Status::Fail, 0, Some(reason)));
                self.st.rest(requested, Status::Unver, &format!("dependency {name} did not come up"));
            }
            return;
        }
        let t = Instant::now();
        let deploy = self.deploy();
        let deploy_ms = t.elapsed().as_millis() as u64;
        match deploy {
            Ok(_) => {}
            Err(StepError::Stopped) => return,
            Err(StepError::Failed(reason)) => {
                tracing::error!("deploy failed: {reason}");
                self.record(StageResult::new(first, Status::Fail, deploy_ms, Some(reason)));
                self.st.rest(requested, Status::Unver, "deploy failed");
                return;
            }
        }
        let mut ran_one = false;
        for &stage in requested {
            if step::stopping() {
                return;
            }
            super::banner(&format!("stage {stage}"));
            child_env::set_stage(stage.name());
            let t = Instant::now();
            if let Some(reason) = self.custom.yml.expected_na.get(&stage.rung()) {
                self.record(StageResult::skip(stage, true, &format!("expected n/a: {reason}")));
                continue;
            }
            if ran_one && stage != Stage::Install {
                match self.wait_ready(
                    Default::default(),
                    false,
                    Duration::from_secs(self.custom.yml.timeouts.deploy.min(120)),
                ) {
                    Ok(_) => {}
                    Err(StepError::Stopped) => return,
                    Err(StepError::Failed(r)) => {
                        self.record(StageResult::new(
                            stage,
                            Status::Fail,
                            t.elapsed().as_millis() as u64,
                            Some(format!("app no longer ready before {stage}: {r}")),
                        ));
                        self.st.rest(requested, Status::Unver, &format!("app no longer ready before {stage}"));
                        return;
                    }
                }
            }
            ran_one = true;
            let mut tests = Vec::new();
            let out = match stage {
                Stage::Install => Out::Pass,
                Stage::Upgrade => self.upgrade(),
                Stage::Backup => self.backup(),
                Stage::Restore => self.restore(),
                Stage::Custom => self.custom_tests(&mut tests),
            };
            let ms = if stage == Stage::Install { deploy_ms } else { t.elapsed().as_millis() as u64 };
            let mut result = match out {
                Out::Pass => StageResult::new(stage, Status::Pass, ms, None),
                Out::Fail(r) => StageResult::new(stage, Status::Fail, ms, Some(r)),
                Out::Skip { intentional, reason } => {
                    StageResult { ms, ..StageResult::skip(stage, intentional, &reason) }
                }
                Out::Stopped => return,
            };
            result.tests = tests;
            if result.status == Status::Pass
                && let Err(StepError::Failed(r)) = self.check_deploy_count()
            {
                result.status = Status::Fail;
                result.reason = Some(r);
            }
            self.record(result);
        }
    }

    fn hook(&self, name: &str) -> Result<(), StepError> {
        let rel = format!("hooks/{name}");
        if !self.custom.has(&rel) {
            return Ok(());
        }
        Cmd::new(self.custom.path(&rel).display().to_string())
            .name(format!("hook:{name}"))
            .cwd(&self.custom.dir)
            .timeout(Duration::from_secs(self.custom.yml.timeouts.hook))
            .run_checked()
            .step(format_args!("hook {name} failed"))?;
        Ok(())
    }

    fn upgrade(&mut self) -> Out {
        if let Some(e) = &self.base_error {
            return Out::Fail(e.clone());
        }
        let head = self.fetched.head.clone();
        match &self.base_ref {
            Some(Base::Ref { .. }) => {}
            _ => return Out::Skip { intentional: true, reason: "no earlier release".into() },
        }
        let mut step = || -> Result<(), StepError> {
            self.hook("pre_upgrade")?;
            self.fresh_tree(&head)?;
            let extra = self.rendered_env(&self.custom.yml.upgrade_extra_env, "upgrade_extra_env")?;
            if !extra.is_empty() {
                super::envfile::set(&self.ctx.app.env_path, &extra)?;
            }
            self.prepare_tree("upgrade")?;
            // Secrets the head adds (existing ones are left alone).
            self.generate_secrets()?;
            self.gate()?;
            let baseline = ready::baseline(&self.ctx.docker, &self.ctx.app.stack);
            self.lease.check_running("abra app deploy -f")?;
            self.ctx.abra.app_deploy(&self.ctx.cfg.domain, true).step("abra app deploy -f failed")?;
            self.wait_ready(baseline, true, Duration::from_secs(self.custom.yml.timeouts.deploy))?;
            self.check_chaos_version(&head)?;
            self.hook("post_upgrade")
        };
        match step() {
            Ok(()) => Out::Pass,
            Err(e) => e.into(),
        }
    }

    /// An "upgrade" that redeployed the old tree must fail here: the `chaos-version` label of the
    /// app's services must name the head commit.
    fn check_chaos_version(&self, head: &str) -> Result<(), StepError> {
        let key = format!("coop-cloud.{}.chaos-version", self.ctx.app.stack);
        let services = self
            .ctx
            .docker
            .services(&self.ctx.app.stack)
            .map_err(|e| self.docker_error("cannot read the app's services", &e))?;
        let mut labelled = 0;
        for s in &services {
            let name = s["Spec"]["Name"].as_str().unwrap_or("?");
            let Some(v) = s["Spec"]["Labels"][&key].as_str() else { continue };
            labelled += 1;
            let commit = v.split('+').next().unwrap_or("").trim();
            let ok = commit.len() >= 7
                && commit.chars().all(|c| c.is_ascii_hexdigit())
                && head.starts_with(&commit.to_lowercase());
            if !ok {
                return Err(StepError::Failed(format!(
                    "upgrade did not deploy the head: {name} has {key}={v}, the head is {}",
                    &head[..head.len().min(12)]
                )));
            }
        }
        if labelled == 0 {
            return Err(StepError::Failed(format!("upgrade cannot be verified: no service carries {key}")));
        }
        Ok(())
    }

    /// `backup.capable` from `ccci.yml`, else whether a deployed service of the app carries
    /// `backupbot.backup=true` — the label backupbot itself selects services by, read from what
    /// docker deployed, i.e. the rendered compose set of the app's `COMPOSE_FILE` (never a file
    /// the set does not include, never a comment).
    fn is_backup_capable(&mut self) -> bool {
        if let Some(c) = self.backup_capable {
            return c;
        }
        // From the configuration the gate rendered for the last deploy: docker's own reading of
        // the app's compose files (labels, not comments or a `false`).
        let capable =
            self.custom.yml.backup.capable.unwrap_or_else(|| self.rendered.as_deref().is_some_and(backupbot_label_in));
        self.backup_capable = Some(capable);
        capable
    }

    /// Runs a backup or restore call (under a pseudo-terminal: backupbot runs through a TTY
    /// exec), logging its output and keeping it, masked, at `<run dir>/<file>`.
    fn backupbot_call(&self, call: &Call, file: &str) -> Result<crate::process::Output, StepError> {
        let abra = &self.ctx.abra;
        let what = format!("abra {}", call.what());
        self.lease.check_running(&what)?;
        let out = abra.execute(abra.command(call).tee()).step(format_args!("{what} failed"))?;
        let path = self.ctx.ws.run_dir.join(file);
        if let Err(e) = std::fs::write(&path, crate::mask::mask(&out.stdout)) {
            tracing::warn!("cannot keep the output of {what} in {}: {e}", path.display());
        }
        out.checked().step(format_args!("{what} failed"))
    }

    fn backup(&mut self) -> Out {
        if !self.is_backup_capable() {
            return Out::Skip { intentional: true, reason: "not backup-capable".into() };
        }
        if let Err(e) = self.hook("pre_backup") {
            return e.into();
        }
        let attempts = self.custom.yml.backup.attempts;
        let call = Call::BackupCreate { domain: self.ctx.cfg.domain.clone() };
        for attempt in 1..=attempts {
            let file = format!("backup-{attempt}.txt");
            let out = match self.backupbot_call(&call, &file) {
                Ok(out) => out,
                Err(e) => return e.into(),
            };
            // Only a line that clearly carries an id counts; without one, restore takes the
            // latest snapshot (this backup's) rather than a guess.
            let id = parse::snapshot_id(&out.stdout);
            if id.is_none() {
                tracing::warn!(
                    "no snapshot id in the output of abra app backup create (kept in {file}); restore will restore the latest snapshot"
                );
            }
            self.record_op_state("snapshot", id.as_deref());
            match self.hook("verify_backup") {
                Ok(()) => {
                    tracing::info!(
                        "backup snapshot {} (attempt {attempt}/{attempts})",
                        id.as_deref().unwrap_or("of unknown id")
                    );
                    self.backup = Some(id);
                    return Out::Pass;
                }
                Err(StepError::Stopped) => return Out::Stopped,
                Err(StepError::Failed(r)) if attempt == attempts => {
                    return Out::Fail(format!("backup verification failed after {attempts} attempts: {r}"));
                }
                Err(StepError::Failed(r)) => {
                    tracing::warn!("backup attempt {attempt}/{attempts} did not verify ({r}); backing up again")
                }
            }
        }
        Out::Fail("no backup attempt was made".into())
    }

    fn record_op_state(&self, key: &str, value: Option<&str>) {
        let path = &self.ctx.ws.op_state_file;
        let mut v: serde_json::Value =
            std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_else(|| json!({}));
        if !v.is_object() {
            v = json!({});
        }
        v[key] = json!(value);
        if let Err(e) = std::fs::write(path, format!("{v}\n")) {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }

    fn restore(&mut self) -> Out {
        if !self.is_backup_capable() {
            return Out::Skip { intentional: true, reason: "not backup-capable".into() };
        }
        // Only a backup made by this run may be restored: its snapshot id when abra reported
        // one, otherwise the latest snapshot, which under this run's app lock is that backup.
        let Some(snapshot) = self.backup.clone() else {
            return Out::Skip { intentional: false, reason: "no backup from this run".into() };
        };
        if snapshot.is_none() {
            tracing::info!("restoring the latest snapshot (the backup reported no snapshot id)");
        }
        let call = Call::Restore { domain: self.ctx.cfg.domain.clone(), snapshot };
        let step = || -> Result<(), StepError> {
            self.hook("pre_restore")?;
            self.backupbot_call(&call, "restore.txt")?;
            self.wait_ready(Default::default(), false, Duration::from_secs(self.custom.yml.timeouts.deploy))?;
            self.hook("post_restore")
        };
        match step() {
            Ok(()) => Out::Pass,
            Err(e) => e.into(),
        }
    }

    fn custom_tests(&self, results: &mut Vec<TestResult>) -> Out {
        let tests = self.custom.tests();
        if tests.is_empty() {
            return Out::Skip { intentional: true, reason: "no tests".into() };
        }
        let timeout = Duration::from_secs(self.custom.yml.timeouts.test);
        let mut failed = Vec::new();
        for name in tests {
            if step::stopping() {
                return Out::Stopped;
            }
            let out = match Cmd::new(self.custom.path(&name).display().to_string())
                .name(name.clone())
                .cwd(&self.custom.dir)
                .timeout(timeout)
                .run()
            {
                Ok(o) => o,
                Err(e) => {
                    results.push(TestResult {
                        name: name.clone(),
                        status: Status::Fail,
                        ms: 0,
                        reason: Some(e.to_string()),
                    });
                    failed.push(name);
                    continue;
                }
            };
            let ms = out.duration.as_millis() as u64;
            let (status, reason) = match out.stopped() {
                Some(Stopped::Cancelled(_)) => return Out::Stopped,
                Some(Stopped::TimedOut(_)) => {
                    (Status::Fail, Some(format!("timed out after {}", crate::clock::human(timeout))))
                }
                Some(s) => (Status::Fail, Some(s.to_string())),
                None if out.success() => (Status::Pass, None),
                // 77: the test could not run here (a dependency it needs is not up, a tool it
                // needs is missing) — automake's skip code. Its last line says why.
                None if out.code() == Some(SKIP_CODE) => {
                    (Status::Skip, Some(out.last_error_line().unwrap_or("skipped (exit 77)").to_string()))
                }
                None => (Status::Fail, Some(out.describe())),
            };
            tracing::info!("test {name}: {} {}", status.as_str(), reason.as_deref().unwrap_or(""));
            if status == Status::Fail {
                failed.push(name.clone());
            }
            results.push(TestResult { name, status, ms, reason });
        }
        if !failed.is_empty() {
            return Out::Fail(format!("failed: {}", failed.join(", ")));
        }
        // A skipped test proves nothing: the stage is an unintentional skip, never green (the
        // predecessor's F2-11: a run whose every test skipped for want of a dependency passed).
        let skipped: Vec<&str> = results.iter().filter(|t| t.status == Status::Skip).map(|t| t.name.as_str()).collect();
        if skipped.is_empty() {
            Out::Pass
        } else {
            Out::Skip {
                intentional: false,
                reason: format!("{} of {} tests skipped: {}", skipped.len(), results.len(), skipped.join(", ")),
            }
        }
    }
}

/// Whether a rendered compose configuration labels a service `backupbot.backup=true` (in
/// `deploy.labels` or the service's own `labels`; the renderer prints both as maps).
fn backupbot_label_in(rendered: &str) -> bool {
    let Ok(doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(rendered) else { return false };
    let truthy = |labels: Option<&serde_yaml_ng::Value>| {
        labels.and_then(|l| l.get("backupbot.backup")).is_some_and(|v| match v {
            serde_yaml_ng::Value::String(s) => s.trim().eq_ignore_ascii_case("true"),
            serde_yaml_ng::Value::Bool(b) => *b,
            _ => false,
        })
    };
    doc.get("services")
        .and_then(serde_yaml_ng::Value::as_mapping)
        .into_iter()
        .flatten()
        .any(|(_, s)| truthy(s.get("deploy").and_then(|d| d.get("labels"))) || truthy(s.get("labels")))
}

#[cfg(test)]
mod tests {
    use super::backupbot_label_in;

    #[test]
    fn backup_capability_reads_the_rendered_labels() {
        for (rendered, capable) in [
            ("services:\n  app:\n    deploy:\n      labels:\n        backupbot.backup: \"true\"\n", true),
            ("services:\n  db:\n    labels:\n      backupbot.backup: \"TRUE \"\n", true),
            ("services:\n  app:\n    deploy:\n      labels:\n        backupbot.backup: true\n", true),
            ("services:\n  app:\n    deploy:\n      labels:\n        backupbot.backup: \"false\"\n", false),
            // A label of another service's name, a comment or an env var is not the label.
            ("services:\n  app:\n    environment:\n      backupbot.backup: \"true\"\n", false),
            ("# backupbot.backup=true\nservices:\n  app: {}\n", false),
            ("services: [\n", false),
            ("", false),
        ] {
            assert_eq!(backupbot_label_in(rendered), capable, "{rendered}");
        }
    }
}
