//! The pipeline (§7): fetch → customisation → deploy exactly once under the app lock → stages →
//! teardown, always. Each step checks the lifetime: a signal or the deadline skips what is left
//! and goes straight to teardown.

pub mod base;
pub mod customization;
mod deploy;
mod deps;
mod diagnostics;
pub mod envfile;
mod fence;
pub mod fetch;
pub mod lint;
pub mod ready;
mod stages;
mod step;
mod teardown;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::adapters::git::Git;
use crate::adapters::{Abra, Docker};
use crate::app::App;
use crate::config;
use crate::exit::Cause;
use crate::lease::AcquireError;
use crate::lifetime;
use crate::lock::{self, HolderInfo, LockError, LockGuard};
use crate::report::{StageResult, Teardown, TeardownResult};
use crate::stage::Stage;
use crate::workspace::Workspace;
use customization::{Customization, CustomizationError, SnapshotRequest};
use fetch::{FetchRequest, Fetched};

/// What a run needs to reach the outside world.
pub struct Ctx {
    pub cfg: config::Run,
    pub ws: Workspace,
    pub abra: Abra,
    pub docker: Docker,
    pub git: Git,
    /// The run app: domain, stack and `.env`.
    pub app: App,
    pub lock_path: PathBuf,
    /// The cross-host app lease's client, when the host uses one (`CCCI_LEASE_ENDPOINTS`).
    pub lease: Option<crate::lease::Lease>,
    pub started: std::time::SystemTime,
}

/// What the pipeline found out; the report and the verdict are made from it.
#[derive(Debug, Default)]
pub struct RunState {
    pub results: BTreeMap<Stage, StageResult>,
    pub teardown: Teardown,
    pub lock_timeout: bool,
    /// CI could not test the recipe (docker, the network, the disk, abra): the infra verdict.
    pub infra: Option<String>,
    pub internal_error: Option<String>,
    pub failed: Option<String>,
    pub fetched: Option<Fetched>,
    pub base: Option<String>,
    pub customization: Value,
    pub version: Option<String>,
    /// The lint rung, when lint ran.
    pub lint: Option<crate::report::Lint>,
    /// What the policy gate checked and refused (results.json `policy`).
    pub policy: crate::report::PolicyOut,
    /// Files saved under `diagnostics/` before teardown, relative to the run dir.
    pub diagnostics: Vec<String>,
    /// The dependency apps (results.json `deps`), in deploy order.
    pub deps: Vec<crate::report::DepOut>,
}

impl RunState {
    /// A refusal before any stage ran (the policy gate, the tree check): the first requested
    /// stage fails with the reason, the rest are `unver`.
    fn fail_first(&mut self, requested: &[Stage], reason: &str) {
        if let Some(first) = requested.first() {
            self.results
                .entry(*first)
                .or_insert_with(|| StageResult::new(*first, crate::report::Status::Fail, 0, Some(reason.to_string())));
        }
        self.failed = Some(reason.to_string());
        self.rest(requested, crate::report::Status::Unver, reason);
    }

    /// Marks every requested stage without a result yet.
    /// CI could not start testing (abra unusable): every requested stage `unver` with the
    /// reason, the infra verdict.
    pub fn infra_before_start(requested: &[Stage], reason: String) -> RunState {
        let mut st = RunState::default();
        st.rest(requested, crate::report::Status::Unver, &reason);
        st.infra = Some(reason);
        st
    }

    fn rest(&mut self, requested: &[Stage], status: crate::report::Status, reason: &str) {
        for s in requested {
            self.results.entry(*s).or_insert_with(|| StageResult::new(*s, status, 0, Some(reason.to_string())));
        }
    }

    /// The five stages in order; unrequested ones are `unver: not requested`.
    pub fn stage_list(&self, requested: &[Stage]) -> Vec<StageResult> {
        Stage::ALL
            .into_iter()
            .map(|s| match self.results.get(&s) {
                Some(r) => r.clone(),
                None if requested.contains(&s) => StageResult::unver(s, "not run"),
                None => StageResult::unver(s, "not requested"),
            })
            .collect()
    }
}

fn cancel_reason(cause: Cause) -> String {
    match cause {
        Cause::Deadline => "deadline reached".to_string(),
        Cause::LeaseLost => "stopped: the app lease was lost".to_string(),
        other => format!("cancelled ({})", format!("{other:?}").to_uppercase()),
    }
}

/// Runs the whole pipeline. Never panics on bad recipes or docker trouble: everything ends as a
/// stage result or a teardown result.
pub fn run(ctx: &Ctx) -> RunState {
    let mut st = RunState::default();
    let requested = ctx.cfg.stages.clone();
    let unver = crate::report::Status::Unver;
    // Each phase before the stages records how it ended in `st` when the run cannot go on.
    let Some((fetched, custom)) = prepare(ctx, &mut st, &requested) else { return st };
    let Some((lock, lease)) = hold_app(ctx, &mut st, &requested) else { return st };

    let deps_file = match crate::deps::DepsFile::create(&ctx.ws.deps_file) {
        Ok(f) => f,
        Err(e) => {
            let reason = format!("cannot write {}: {e}", ctx.ws.deps_file.display());
            tracing::error!("{reason}");
            st.internal_error = Some(reason.clone());
            st.rest(&requested, unver, &reason);
            teardown::begin();
            st.teardown = teardown::teardown(ctx, &ctx.app, &lock, &lease);
            lease.release();
            return st;
        }
    };
    let mut running = Running {
        ctx,
        st,
        lease,
        deps: Vec::new(),
        deps_file,
        custom,
        fetched,
        deployed: false,
        base_ref: None,
        backup: None,
        backup_capable: None,
        base_error: None,
        rendered: None,
        first_compose: None,
        infra: Default::default(),
    };
    running.run_stages(&requested);
    let rendered = running.rendered.clone();
    let deployed = running.deployed;
    let (mut st, lease, deps) = running.finish_stages(&requested);
    if deployed && (lifetime::cause().is_some() || st.results.values().any(|r| r.status == crate::report::Status::Fail))
    {
        save_diagnostics(ctx, &mut st, &ctx.app.stack, "", rendered.as_deref());
    }
    // A dependency that did not come up: its tasks, logs and health, in a directory of its own.
    for dep in deps.iter().filter(|d| d.reason.is_some() && d.lock.is_some()) {
        save_diagnostics(ctx, &mut st, &dep.target.app.stack, &dep.name, None);
    }
    banner("teardown");
    teardown::begin();
    // The app under test first (it may still talk to its dependencies), then the dependencies
    // in reverse order of deploy; the app's lock is held until they are gone too, so a new run
    // of this app never meets them half torn down.
    st.teardown = teardown::teardown(ctx, &ctx.app, &lock, &lease);
    st.deps = teardown_deps(ctx, deps, &lease, &mut st.teardown);
    // Released here, before the reports are written: a waiting run or a janitor may act on the
    // app from now on, and this line (paired with "app lock held") says from when.
    let path = lock.path().to_path_buf();
    drop(lock);
    tracing::info!("app lock released: {}", path.display());
    lease.release();
    st
}

/// Fetch, the tree check, the customisation snapshot and lint: everything before the app lock.
/// `None` when the run cannot go on (the reason is recorded in `st`).
fn prepare(ctx: &Ctx, st: &mut RunState, requested: &[Stage]) -> Option<(Fetched, Customization)> {
    let unver = crate::report::Status::Unver;
    banner("fetch");
    let t0 = Instant::now();
    let req = FetchRequest {
        recipe: &ctx.cfg.recipe,
        git_ref: ctx.cfg.git_ref.as_deref(),
        src: ctx.cfg.src.as_ref(),
        skip_fetch: ctx.cfg.skip_fetch,
        git_base: &ctx.cfg.host.git_base,
        abra_home: &ctx.cfg.host.abra_home,
        dest: &ctx.ws.recipe_dir(&ctx.cfg.recipe),
    };
    let fetched = match fetch::fetch(&req, &ctx.git, &ctx.abra) {
        Ok(f) => f,
        Err(e) => {
            match lifetime::cause() {
                Some(c) if e.stopped() => st.rest(requested, unver, &cancel_reason(c)),
                _ if e.trouble() != crate::adapters::git::Trouble::None => {
                    // The network or the host, not the recipe: CI could not test it (69).
                    let reason = format!("CI could not fetch the recipe: {e}");
                    tracing::error!("{reason}");
                    st.infra = Some(reason.clone());
                    st.rest(requested, unver, &reason);
                }
                _ => {
                    tracing::error!("fetch failed: {e}");
                    st.failed = Some(format!("fetch failed: {e}"));
                    st.rest(requested, unver, &format!("fetch failed: {e}"));
                }
            }
            return None;
        }
    };
    tracing::info!(
        "fetched {} ({}) at {} in {}",
        ctx.cfg.recipe,
        fetched.how,
        fetched.head,
        crate::clock::human(t0.elapsed())
    );
    st.fetched = Some(fetched.clone());

    // The PR's tree, before ccci reads anything of it (the customisation snapshot reads its
    // tests/, the gate its compose files): no link may leave it or name a FIFO or a device.
    if let Err(e) = crate::policy::check_tree(&ctx.git, &fetched.dir) {
        tracing::error!("{e}");
        st.fail_first(requested, &e.to_string());
        return None;
    }

    let custom = match customization::snapshot(&SnapshotRequest {
        tests_dir: ctx.cfg.host.tests_dir.as_deref(),
        recipe: &ctx.cfg.recipe,
        recipe_tree: &fetched.dir,
        dest: &ctx.ws.tests_dir,
        trusted_yml: ctx.cfg.trusted_yml.as_ref().map(|(_, y)| y),
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            let reason = e.to_string();
            if matches!(e, CustomizationError::LocalYml(_)) {
                st.internal_error = Some(reason.clone());
            } else {
                st.failed = Some(reason.clone());
            }
            st.rest(requested, unver, &reason);
            return None;
        }
    };
    custom.log();
    st.customization = custom.to_json();

    if let Some(c) = lifetime::cause() {
        st.rest(requested, unver, &cancel_reason(c));
        return None;
    }
    // Before the app lock: lint needs only the tree, and a run waiting for the lock should
    // not hold it longer for lint.
    banner("lint");
    st.lint = Some(lint::lint(ctx, &fetched));
    if let Some(c) = lifetime::cause() {
        st.rest(requested, unver, &cancel_reason(c));
        return None;
    }
    Some((fetched, custom))
}

/// The app lock, then the cross-host lease: the run owns its domain from here on. `None` when
/// it cannot (nothing was deployed; the reason is recorded in `st`).
fn hold_app(ctx: &Ctx, st: &mut RunState, requested: &[Stage]) -> Option<(LockGuard, fence::RunLease)> {
    let unver = crate::report::Status::Unver;
    banner("deploy");
    let t_lock = Instant::now();
    let lock = match acquire_lock(ctx) {
        Ok(l) => l,
        Err(LockError::Timeout { .. }) | Err(LockError::Cancelled { .. }) if lifetime::cause().is_none() => {
            let reason = "gave up waiting for the app lock (--lock-timeout)";
            tracing::error!("{reason}");
            st.lock_timeout = true;
            st.rest(requested, unver, reason);
            st.teardown = skipped_teardown();
            return None;
        }
        Err(LockError::Cancelled { .. }) | Err(LockError::Timeout { .. }) => {
            let c = lifetime::cause().unwrap_or(Cause::Term);
            tracing::warn!("cancelled while waiting for the app lock of {}: nothing was deployed", ctx.cfg.domain);
            st.rest(requested, unver, &format!("{} while waiting for the app lock", cancel_reason(c)));
            st.teardown = skipped_teardown();
            return None;
        }
        Err(e) => {
            tracing::error!("{e}");
            st.failed = Some(e.to_string());
            st.rest(requested, unver, &e.to_string());
            st.teardown = skipped_teardown();
            return None;
        }
    };

    // The cross-host lease, after the local lock (local contenders never reach etcd) and
    // before anything is created.
    let lease = match fence::acquire(ctx, t_lock.elapsed()) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            // Nothing of this run exists: the local lockfile goes with the lock.
            if let Err(e) = lock.unlink() {
                tracing::debug!("cannot unlink the app lock {}: {e}", lock.path().display());
            }
            let reason = e.to_string();
            match e {
                AcquireError::Timeout { .. } => st.lock_timeout = true,
                AcquireError::Cancelled { .. } => {}
                AcquireError::Unavailable { .. } | AcquireError::Failed { .. } => st.infra = Some(reason.clone()),
            }
            let reason = match lifetime::cause() {
                Some(c) => format!("{} while waiting for the app lease", cancel_reason(c)),
                None => reason,
            };
            st.rest(requested, unver, &reason);
            st.teardown = skipped_teardown();
            return None;
        }
    };
    Some((lock, lease))
}

/// Tears down each dependency that took its lock, last deployed first. A dependency's residue
/// or abandoned teardown is the run's too (the verdict's exit 4): `teardown` is the run's
/// whole teardown, the app's and its dependencies'.
fn teardown_deps(
    ctx: &Ctx,
    deps: Vec<deps::DepApp>,
    lease: &fence::RunLease,
    run: &mut Teardown,
) -> Vec<crate::report::DepOut> {
    let mut out = Vec::with_capacity(deps.len());
    for mut dep in deps.into_iter().rev() {
        let Some(lock) = dep.lock.take() else {
            out.push(dep.out(TeardownResult::None, None));
            continue;
        };
        let t = teardown::teardown(ctx, &dep.target.app, &lock, lease);
        drop(lock);
        run.ms += t.ms;
        // The worst of the run's teardowns decides: abandoned, then residue, then clean.
        let rank = |r: TeardownResult| match r {
            TeardownResult::Abandoned => 2,
            TeardownResult::Residue => 1,
            _ => 0,
        };
        if rank(t.result) > rank(run.result) {
            run.result = t.result;
            run.reason = t.reason.clone().map(|r| format!("dependency {}: {r}", dep.name));
        }
        run.residue.extend(t.residue.iter().cloned());
        out.push(dep.out(t.result, t.reason.clone()));
    }
    out.reverse();
    out
}

/// Before teardown destroys the evidence: the app's tasks, logs and health into the run dir's
/// `diagnostics/`, and the first failed stage's reason pointing at the file that matters.
fn save_diagnostics(ctx: &Ctx, st: &mut RunState, stack: &str, sub: &str, rendered: Option<&str>) {
    if lifetime::abandoned() {
        return;
    }
    banner("diagnostics");
    let engine = match crate::adapters::engine::Engine::from_env() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("diagnostics: {e}");
            return;
        }
    };
    let within = diagnostics::share_of(ctx.cfg.teardown_budget);
    let saved = diagnostics::save(&engine, stack, rendered, &ctx.ws.run_dir, sub, within);
    if let Some(key) = &saved.key
        && let Some(r) = st.results.values_mut().find(|r| r.status == crate::report::Status::Fail)
    {
        let reason = r.reason.get_or_insert_with(String::new);
        reason.push_str(&format!(" (see {key})"));
    }
    st.diagnostics.extend(saved.files);
}

fn skipped_teardown() -> Teardown {
    Teardown {
        result: TeardownResult::Skipped,
        reason: Some("this run never held the app lock: the app, if any, belongs to its holder".into()),
        ..Teardown::default()
    }
}

fn acquire_lock(ctx: &Ctx) -> Result<LockGuard, LockError> {
    acquire_lock_of(ctx, &ctx.lock_path, &ctx.cfg.domain)
}

/// Takes the app lock of `domain` (the app under test's, or a dependency's) and records this
/// run as its holder.
fn acquire_lock_of(ctx: &Ctx, path: &std::path::Path, domain: &str) -> Result<LockGuard, LockError> {
    let t = Instant::now();
    let lock = lock::acquire(path, domain, ctx.cfg.lock_timeout)?;
    let info = HolderInfo {
        pid: std::process::id(),
        run_id: ctx.cfg.run_id.clone(),
        recipe: ctx.cfg.recipe.clone(),
        started: crate::clock::rfc3339(ctx.started),
        deadline_secs: ctx.cfg.deadline.as_secs(),
        budget_secs: ctx.cfg.teardown_budget.as_secs(),
        build_link: ctx.cfg.build_link.clone(),
        token: crate::process::env::run_token(),
    };
    if let Err(e) = lock.write_holder(&info) {
        tracing::warn!("app lock {}: cannot record the holder: {e}", path.display());
    }
    tracing::info!("app lock held: {} (after {})", path.display(), crate::clock::human(t.elapsed()));
    Ok(lock)
}

/// Logs a stage banner operators can find in a long Drone log.
pub fn banner(what: &str) {
    crate::report::status::set_stage(what);
    tracing::info!("==== {what} ====");
}

/// The state of a run between deploy and teardown.
pub(crate) struct Running<'a> {
    ctx: &'a Ctx,
    st: RunState,
    /// The cross-host app lease: every mutating step passes its fence first.
    lease: fence::RunLease,
    /// The dependency apps, in deploy order (issue 19).
    deps: Vec<deps::DepApp>,
    /// `$CCCI_DEPS_FILE`: what templates and the tests learn of the dependencies.
    deps_file: crate::deps::DepsFile,
    custom: Customization,
    fetched: Fetched,
    deployed: bool,
    base_ref: Option<base::Base>,
    /// This run's verified backup, with its snapshot id when abra reported one.
    backup: Option<Option<String>>,
    backup_capable: Option<bool>,
    base_error: Option<String>,
    /// The configuration the last gated deploy rendered (for backup capability).
    rendered: Option<String>,
    /// The first file of the last gated `COMPOSE_FILE` (the stamp overlay copies its `version`).
    first_compose: Option<String>,
    /// Why dockerd could not be read during a readiness wait (set where `wait_ready` handles it,
    /// which borrows `self` shared); becomes `RunState.infra`.
    infra: std::cell::RefCell<Option<String>>,
}

impl Running<'_> {
    fn requested(&self, s: Stage) -> bool {
        self.ctx.cfg.stages.contains(&s)
    }

    fn record(&mut self, r: StageResult) {
        let status = r.status.as_str();
        let reason = r.reason.clone().unwrap_or_default();
        tracing::info!("stage {}: {status} in {} {reason}", r.stage, crate::clock::human(Duration::from_millis(r.ms)));
        self.st.results.insert(r.stage, r);
    }

    fn finish_stages(mut self, requested: &[Stage]) -> (RunState, fence::RunLease, Vec<deps::DepApp>) {
        if let Some(why) = self.infra.take() {
            self.st.infra.get_or_insert(why);
        }
        if let Some(c) = lifetime::cause() {
            self.st.rest(requested, crate::report::Status::Unver, &cancel_reason(c));
        }
        if self.deployed {
            self.st.version = self.deployed_version();
        }
        (self.st, self.lease, self.deps)
    }
}
