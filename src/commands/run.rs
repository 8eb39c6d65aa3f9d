//! `ccci run`: start-up order of §4, then the pipeline, the report and the exit code.

use std::time::{Instant, SystemTime};

use crate::adapters::git::Git;
use crate::adapters::{Abra, Docker};
use crate::app::App;
use crate::cli::{Cli, RunArgs, VERSION};
use crate::commands::output;
use crate::config::{self, ConfigError};
use crate::exit::{self, Facts};
use crate::host::{disk, drain};
use crate::janitor;
use crate::lock::{self, fs_check};
use crate::mask::{self};
use crate::pipeline::{self, Ctx, RunState};
use crate::process::{self, env as child_env, group};
use crate::report::{self, Provenance, Results};
use crate::workspace::{Workspace, WorkspaceError};
use crate::{env_vars as ev, lifetime, logging, names};
use std::os::unix::fs::DirBuilderExt;

pub fn main(cli: &Cli, args: &RunArgs) -> u8 {
    // 1. The signal thread first: signal-hook wants its handlers in place before other threads.
    if let Err(c) = super::session::signals() {
        return c;
    }
    let env = config::process_env();
    let cfg = match config::Run::resolve(args, env.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ccci: {e}");
            return exit::USAGE;
        }
    };
    // 2. The orphan guard, before any child, lock or file.
    let parent = match lifetime::orphan_guard(cfg.expect_ppid, cfg.under_systemd, cfg.allow_orphan) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ccci: {e}");
            return exit::ORPHANED;
        }
    };
    // Before the preflight's children: every child of this run stops with the host's grace.
    process::configure_timing(process::Timing { kill_grace: cfg.host.kill_grace, leak_timeout: cfg.host.leak_timeout });
    if let Err(e) = preflight(&cfg) {
        eprintln!("ccci: {e}");
        return exit::USAGE;
    }
    // The run's token is set once its run dir exists; until then its children belong to no run.
    super::session::start(cli, &env, &cfg.host, super::session::Start { mask: true, token: None, run_clock: true });
    // 3.–5. The watched pid, the subreaper, the deadline.
    if let Some(pid) = cfg.watch_pid
        && let Err(e) = lifetime::watch_pid(pid)
    {
        eprintln!("ccci: {e}");
        return match e {
            lifetime::WatchError::Gone(_) => exit::ORPHANED,
            lifetime::WatchError::Io { .. } => exit::INTERNAL,
        };
    }
    if let Err(e) = lifetime::become_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}; escaped grandchildren will not come back to ccci");
    }
    lifetime::configure_deadline(cfg.deadline, cfg.teardown_budget, Some(parent));
    lifetime::exit_now_hook(group::kill_active_groups);
    lifetime::arm_deadline(cfg.deadline);
    // Past deadline + budget (+ the abandon path's own slack) nothing is waited for any more.
    lifetime::arm_outer_bound(cfg.deadline.saturating_add(cfg.teardown_budget).saturating_add(OUTER_SLACK));
    // 6. The host's state, before anything is created: a draining host or a full disk is the
    // infra verdict, with one line and no run dir (there is no run to report on).
    if let Err(e) = host_preflight(&cfg) {
        tracing::error!("{e}");
        return exit::INFRA;
    }
    run(cfg)
}

/// The drain marker and the disk pre-flight (SPEC amendments: the operator issue).
fn host_preflight(cfg: &config::Run) -> Result<(), String> {
    drain::refuse_if_draining(&cfg.host.lock_dir)?;
    if cfg.host.min_free_mb > 0 {
        let engine = crate::adapters::engine::Engine::from_env().ok();
        let root = disk::docker_root(engine.as_ref());
        disk::check(cfg.host.min_free_mb, &disk::headroom(&cfg.host.runs_dir, root.as_deref()))?;
    }
    Ok(())
}

/// Between the end of the teardown budget and the outer bound: the abandon path writes the
/// report and exits within this (it gives a wedged main thread 15 s before exiting itself).
const OUTER_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

fn preflight(cfg: &config::Run) -> Result<(), String> {
    Workspace::preflight(&cfg.host.abra_home, &cfg.host.server).map_err(|e| e.to_string())?;
    fs_check::check(&cfg.host.lock_dir, "the app lock dir (CCCI_APP_LOCK_DIR)")?;
    lock::dir::check_dir(&cfg.host.lock_dir, "the app lock dir (CCCI_APP_LOCK_DIR)").map_err(|e| e.to_string())?;
    fs_check::check(&cfg.host.runs_dir, "the runs dir (CCCI_RUNS_DIR)")?;
    // The policy gate renders every deploy with `docker stack config`: a docker CLI without it
    // is a host to fix, never a gate to skip.
    crate::policy::check_stack_config(&cfg.host.docker).map_err(|e| e.to_string())?;
    // A swarm shared by several hosts needs the cross-host app lease.
    crate::host::topology::probe(cfg.host.lease.is_some()).map_err(|e| e.to_string())?;
    Ok(())
}

fn run(cfg: config::Run) -> u8 {
    let started = SystemTime::now();
    let t0 = Instant::now();
    let src = cfg.src.as_ref().map_or_else(
        || if cfg.skip_fetch { "staged copy".to_string() } else { "abra recipe fetch".to_string() },
        |s| s.to_string(),
    );
    let stage_names: Vec<&str> = cfg.stages.iter().map(|s| s.name()).collect();
    tracing::info!(
        "ccci run: recipe={} ref={} pr={} src={} stages={} quick={}",
        cfg.recipe,
        cfg.git_ref.as_deref().unwrap_or(""),
        cfg.pr,
        src,
        stage_names.join(","),
        if cfg.quick { 1 } else { 0 }
    );
    // Private when ccci makes it: a lock dir others can write is refused at start (§5).
    if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&cfg.host.lock_dir) {
        tracing::warn!("cannot create the app lock dir {}: {e}", cfg.host.lock_dir.display());
    }
    // The host lock, shared, for the whole run; then the marker once more (`ccci drain` creates
    // it before it takes the host lock exclusively, so either this run sees it or drain waits
    // for this run).
    let host_lock = match drain::hold_shared(&cfg.host.lock_dir).and_then(|g| {
        drain::refuse_if_draining(&cfg.host.lock_dir)?;
        Ok(g)
    }) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("{e}");
            return exit::INFRA;
        }
    };
    let ws = match Workspace::create(&cfg.host.runs_dir, &cfg.run_id, &cfg.host.abra_home) {
        Ok(ws) => ws,
        Err(e @ WorkspaceError::RunIdHeld { .. }) => {
            // Nothing of the live run is touched: no run.log, no results.json.
            tracing::error!("{e}");
            return exit::LOCK_TIMEOUT;
        }
        Err(e) if e.is_host_trouble() => {
            tracing::error!("CI could not start the run: {e}");
            return exit::INFRA;
        }
        Err(e) => {
            tracing::error!("{e}");
            return exit::INTERNAL;
        }
    };
    if let Err(e) = logging::attach_run_log(&ws.run_log()) {
        tracing::warn!("cannot write {}: {e}", ws.run_log().display());
    }
    let token = child_env::mint_run_token(&cfg.run_id);
    child_env::set_run_token(Some(token.clone()));
    ws.record_holder(&lock::HolderInfo {
        pid: std::process::id(),
        run_id: cfg.run_id.clone(),
        recipe: cfg.recipe.clone(),
        started: crate::clock::rfc3339(started),
        deadline_secs: cfg.deadline.as_secs(),
        budget_secs: cfg.teardown_budget.as_secs(),
        build_link: cfg.build_link.clone(),
        token: Some(token.clone()),
    });
    report::status::start(report::status::Start {
        path: ws.status_path(),
        run_id: &cfg.run_id,
        attempt: ws.attempt,
        recipe: &cfg.recipe,
        domain: &cfg.domain,
        token: &token,
        started,
        deadline: cfg.deadline,
    });
    if ws.attempt > 1 {
        tracing::info!("attempt {} of run id {}: {}", ws.attempt, cfg.run_id, ws.run_dir.display());
    }
    let app = App::new(&cfg.domain, &cfg.host.server_dir());
    child_env::set_run_vars(vec![
        (ev::CCCI_RECIPE.into(), cfg.recipe.clone()),
        (ev::CCCI_APP_DOMAIN.into(), cfg.domain.clone()),
        (ev::CCCI_STACK.into(), app.stack.clone()),
        (ev::CCCI_RUN_ID.into(), cfg.run_id.clone()),
        (ev::CCCI_RUN_DIR.into(), ws.run_dir.display().to_string()),
        (ev::ABRA_DIR.into(), ws.abra_dir.display().to_string()),
        (ev::CCCI_APP_ENV.into(), app.env_path.display().to_string()),
        (ev::CCCI_DEPLOY_COUNT_FILE.into(), ws.deploy_count_file.display().to_string()),
        (ev::CCCI_OP_STATE_FILE.into(), ws.op_state_file.display().to_string()),
        (ev::CCCI_DEPS_FILE.into(), ws.deps_file.display().to_string()),
    ]);
    let abra = Abra::new(&cfg.host.abra, &ws.abra_dir, &cfg.host.server);
    let docker = Docker::for_host(&cfg.host);
    // abra that does not start or answer `version` cannot test anything: the infra verdict,
    // before the run-start janitor and the fetch lean on it.
    let abra_version = abra.version();
    let provenance = Provenance {
        ccci: VERSION.to_string(),
        abra: abra_version.as_ref().map_or_else(|e| format!("unknown ({e})"), |v| v.clone()),
        docker: docker.server_version(crate::app::reap::read_until()).unwrap_or_else(|e| format!("unknown ({e})")),
        host: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    tracing::info!(
        "provenance: ccci {} | abra {} | docker {} | host {} | run {} in {}",
        provenance.ccci,
        provenance.abra,
        provenance.docker,
        provenance.host,
        cfg.run_id,
        ws.run_dir.display()
    );
    tracing::info!(
        "app domain {} (stack {}), lock {}",
        cfg.domain,
        app.stack,
        cfg.host.lock_dir.join(names::lock_file_name(&cfg.domain)).display()
    );

    let ctx = Ctx {
        lock_path: cfg.host.lock_dir.join(names::lock_file_name(&cfg.domain)),
        lease: cfg.host.lease.as_ref().map(crate::lease::Lease::new),
        git: Git::new(cfg.host.git_token.clone(), cfg.host.token_origins.clone()),
        abra,
        docker,
        app,
        ws,
        cfg,
        started,
    };
    if let Err(e) = abra_version {
        let reason = format!(
            "CI could not run abra ({}): {e}; install abra, or point CCCI_ABRA at it in the host file",
            ctx.cfg.host.abra
        );
        tracing::error!("{reason}");
        let st = pipeline::RunState::infra_before_start(&ctx.cfg.stages, reason);
        return finish(&ctx, st, started, t0, provenance);
    }
    // The run-start janitor (§6): before the fetch and before this run takes its own app lock,
    // so it can never see this run's app; a live run of the same domain holds its lock and is
    // left alone.
    janitor::run_start(&ctx.cfg.host, &ctx.abra, &ctx.docker, janitor::RUN_START_BUDGET);
    if let Err(e) = ctx.ws.clear_recipes() {
        tracing::error!("{e}");
        let st = if e.is_host_trouble() {
            pipeline::RunState::infra_before_start(&ctx.cfg.stages, format!("CI could not start the run: {e}"))
        } else {
            pipeline::RunState { internal_error: Some(e.to_string()), ..Default::default() }
        };
        return finish(&ctx, st, started, t0, provenance);
    }
    let st = pipeline::run(&ctx);
    let code = finish(&ctx, st, started, t0, provenance);
    drop(host_lock);
    code
}

fn finish(ctx: &Ctx, st: RunState, started: SystemTime, t0: Instant, provenance: Provenance) -> u8 {
    let cfg = &ctx.cfg;
    let stragglers = group::sweep_adopted(cfg.host.kill_grace);
    if !stragglers.is_empty() {
        tracing::warn!(
            "stopped {} adopted descendant process(es) that outlived their step: {stragglers:?}",
            stragglers.len()
        );
    }
    let escaped = group::stop_token_carriers(cfg.host.kill_grace);
    if !escaped.is_empty() {
        tracing::warn!("stopped {} process(es) of this run that escaped their step: {escaped:?}", escaped.len());
    }
    let stages = st.stage_list(&cfg.stages);
    let failed = st.failed.is_some() || stages.iter().any(|s| s.is_bad(cfg.stages.contains(&s.stage)));
    let facts = Facts {
        cause: lifetime::cause(),
        lock_timeout: st.lock_timeout,
        infra: st.infra.is_some(),
        internal_error: st.internal_error.is_some(),
        failed,
        teardown_unclean: st.teardown.unclean(),
    };
    let mut results = Results::from_run(cfg, &st, facts, ctx.ws.attempt, started, t0.elapsed(), provenance);
    let (outcome, code) = (results.outcome, results.exit_code);
    for line in report::summary_table(&results).lines() {
        tracing::info!("{line}");
    }
    report::write_reports(&ctx.ws.run_dir, cfg.junit.as_deref(), &mut results);
    report::status::finish(outcome.as_str(), code);
    ctx.ws.finish();
    if cfg.json {
        let text = serde_json::to_string_pretty(&results).unwrap_or_default();
        output::stdout(&mask::mask(&text));
    }
    tracing::info!("exit {code} ({})", outcome.as_str());
    logging::flush(crate::logging::EXIT_FLUSH);
    logging::detach_run_log();
    code
}

impl From<ConfigError> for u8 {
    fn from(_: ConfigError) -> u8 {
        exit::USAGE
    }
}
