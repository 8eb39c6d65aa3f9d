//! Diagnostics before teardown (issue 15.1): when a stage failed or the run was stopped with
//! the app up, what a maintainer needs to know why is saved into `<run dir>/diagnostics/`
//! before teardown destroys it — the tasks of every service (states, errors, exit codes), the
//! last lines of each service's log, the health-check log of every container that is not
//! healthy, and the configuration that was deployed. Everything is masked like every other
//! output, bounded in time (a share of the teardown budget) and in size.
//!
//! Reads go through the Engine API; deciding what matters (which service the failure reason
//! points at) and the formatting are pure functions below, tested on tables.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::adapters::engine::models::{ContainerInspectResponse, Service, Task, TaskState};
use crate::adapters::engine::{Deadline, Engine, LogTail, Scope, service_name};
use crate::lifetime;

/// Lines of each service's log (per task, as dockerd counts them).
const LOG_LINES: usize = 200;
/// Bytes of each saved file: enough for the story, never a disk-filler.
const MAX_FILE_BYTES: usize = 256 * 1024;
/// Health-check results kept per container (dockerd keeps the last five).
const HEALTH_RESULTS: usize = 5;
/// Tasks listed per service (history included, newest first).
const TASKS_PER_SERVICE: usize = 10;

/// What was saved, relative to the run dir, and the file the failure reason should point at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Saved {
    pub files: Vec<String>,
    pub key: Option<String>,
}

/// Diagnostics never take more than this: every read is of a stack that is up, and teardown
/// needs the rest of its budget.
const MAX_SHARE: Duration = Duration::from_secs(30);

/// The time diagnostics may take: a fifth of the teardown budget, at most [`MAX_SHARE`].
pub(super) fn share_of(budget: Duration) -> Duration {
    (budget / 5).min(MAX_SHARE)
}

/// Saves what the stack's services show now into `run_dir/diagnostics/`. Never fails the run:
/// what cannot be read is noted in the files and logged.
/// `sub`: a subdirectory of `diagnostics/` (a dependency app's name; `""` for the app under
/// test), so two apps' `tasks.txt` and service logs never overwrite each other.
pub(super) fn save(
    engine: &Engine,
    stack: &str,
    rendered: Option<&str>,
    run_dir: &Path,
    sub: &str,
    within: Duration,
) -> Saved {
    let abandoned = || lifetime::abandoned();
    let until = Deadline::after(within).or_when(&abandoned);
    let rel = if sub.is_empty() { "diagnostics".to_string() } else { format!("diagnostics/{sub}") };
    let dir = run_dir.join(&rel);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!("diagnostics: cannot create {}: {e}", dir.display());
        return Saved::default();
    }
    let mut saved = Saved::default();
    let mut put = |name: &str, text: &str| {
        let text = crate::mask::mask(&bounded(text, MAX_FILE_BYTES));
        match crate::workspace::Workspace::write_atomic(&dir.join(name), text.as_bytes()) {
            Ok(()) => saved.files.push(format!("{rel}/{name}")),
            Err(e) => tracing::warn!("diagnostics: cannot write {name}: {e}"),
        }
    };
    if let Some(r) = rendered {
        put("compose.rendered.yml", r);
    }
    let services = match engine.services(Scope::Stack(stack), until) {
        Ok(s) => s,
        Err(e) => {
            put("tasks.txt", &format!("cannot list the services of {stack}: {e}\n"));
            tracing::warn!("diagnostics: cannot list the services of {stack}: {e}");
            return saved;
        }
    };
    if services.is_empty() {
        // Nothing of the app runs (a refused or failed deploy): the reason says it all.
        return saved;
    }
    let ids: Vec<String> = services.iter().filter_map(|s| s.id.clone()).collect();
    let tasks = engine.tasks(&ids, until).unwrap_or_else(|e| {
        tracing::warn!("diagnostics: cannot list the tasks of {stack}: {e}");
        Vec::new()
    });
    put("tasks.txt", &task_table(stack, &services, &tasks));
    let containers: Vec<String> = tasks.iter().filter_map(container_of).map(str::to_string).collect();
    let inspected = engine.inspect_containers(&containers, until).unwrap_or_default();
    let mut unhealthy = Vec::new();
    for c in &inspected {
        let Some(health) = c.state.as_ref().and_then(|s| s.health.as_ref()) else { continue };
        let status = health.status.map(|s| s.to_string()).unwrap_or_default();
        if status == "healthy" {
            continue;
        }
        let Some(svc) = service_of_container(c, &services) else { continue };
        unhealthy.push(svc.clone());
        put(&format!("{}.health.txt", file_stem(&svc, stack)), &health_text(c));
    }
    let problem = problem_service(&services, &tasks, &unhealthy);
    for s in &services {
        let (Some(id), name) = (s.id.as_deref(), service_name(s)) else { continue };
        let text = match engine.service_logs(id, LogTail { lines: LOG_LINES, max_bytes: MAX_FILE_BYTES }, until) {
            Ok(logs) => {
                let mut t: String = logs.lines.iter().map(|l| format!("{}\n", l.line)).collect();
                if logs.truncated {
                    t.push_str("[… cut short: size or time bound]\n");
                }
                if t.is_empty() { "(the service logged nothing)\n".to_string() } else { t }
            }
            Err(e) => format!("cannot read the log of {name}: {e}\n"),
        };
        put(&format!("{}.log", file_stem(&name, stack)), &text);
    }
    saved.key = problem.map(|svc| format!("{rel}/{}.log", file_stem(&svc, stack)));
    tracing::info!("diagnostics: saved {} file(s) in {}", saved.files.len(), dir.display());
    saved
}

fn container_of(t: &Task) -> Option<&str> {
    t.status.as_ref()?.container_status.as_ref()?.container_id.as_deref().filter(|c| !c.is_empty())
}

fn service_of_container(c: &ContainerInspectResponse, services: &[Service]) -> Option<String> {
    let labels = c.config.as_ref()?.labels.as_ref()?;
    let name = labels.get("com.docker.swarm.service.name")?;
    services.iter().map(service_name).find(|s| s == name)
}

/// A file name for a service: without the stack prefix, only `[A-Za-z0-9._-]`, never starting
/// with a dot. Service names come from the PR's compose file.
pub(super) fn file_stem(service: &str, stack: &str) -> String {
    let short = service.strip_prefix(&format!("{stack}_")).unwrap_or(service);
    let clean: String = short
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    let clean = clean.trim_start_matches('.').chars().take(64).collect::<String>();
    if clean.is_empty() { "service".to_string() } else { clean }
}

/// Cuts `text` to its last `max` bytes (on a char boundary), saying so: the end of a log is
/// where a failure is.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {} bytes cut]\n{}", start, &text[start..])
}

fn state_of(t: &Task) -> Option<TaskState> {
    t.status.as_ref()?.state
}

/// The service a failure is most likely about: one with a failed or rejected task, else one
/// with an unhealthy container, else one with no running task, else the first.
pub(super) fn problem_service(services: &[Service], tasks: &[Task], unhealthy: &[String]) -> Option<String> {
    let states = |id: Option<&str>| -> Vec<TaskState> {
        tasks.iter().filter(|t| id.is_some() && t.service_id.as_deref() == id).filter_map(state_of).collect()
    };
    let names: Vec<(String, Vec<TaskState>)> =
        services.iter().map(|s| (service_name(s), states(s.id.as_deref()))).collect();
    let failed = names.iter().find(|(_, st)| st.iter().any(|s| matches!(s, TaskState::FAILED | TaskState::REJECTED)));
    if let Some((n, _)) = failed {
        return Some(n.clone());
    }
    if let Some((n, _)) = names.iter().find(|(n, _)| unhealthy.contains(n)) {
        return Some(n.clone());
    }
    let idle = names.iter().find(|(_, st)| !st.contains(&TaskState::RUNNING));
    idle.or(names.first()).map(|(n, _)| n.clone())
}

/// `docker service ps --no-trunc` for every service: the newest tasks first, with the state,
/// since when, the exit code and the error or message.
pub(super) fn task_table(stack: &str, services: &[Service], tasks: &[Task]) -> String {
    let mut out = format!("tasks of stack {stack} (newest first, at most {TASKS_PER_SERVICE} per service)\n");
    let _ = writeln!(
        out,
        "{:<16} {:<12} {:<10} {:<10} {:<30} {:>5}  ERROR / MESSAGE",
        "SERVICE", "TASK", "DESIRED", "STATE", "SINCE", "EXIT"
    );
    for s in services {
        let full = service_name(s);
        let name = full.strip_prefix(&format!("{stack}_")).unwrap_or(&full);
        let mut mine: Vec<&Task> = tasks.iter().filter(|t| t.service_id.is_some() && t.service_id == s.id).collect();
        mine.sort_by(|a, b| {
            let ts = |t: &Task| t.status.as_ref().and_then(|s| s.timestamp.clone()).unwrap_or_default();
            ts(b).cmp(&ts(a))
        });
        if mine.is_empty() {
            let _ = writeln!(out, "{name:<16} (no task)");
        }
        for t in mine.into_iter().take(TASKS_PER_SERVICE) {
            let st = t.status.as_ref();
            let id: String = t.id.as_deref().unwrap_or("-").chars().take(12).collect();
            let desired = t.desired_state.map(|d| d.to_string()).unwrap_or_default();
            let state = st.and_then(|s| s.state).map(|s| s.to_string()).unwrap_or_default();
            let since = st.and_then(|s| s.timestamp.clone()).unwrap_or_default();
            let exit = st
                .and_then(|s| s.container_status.as_ref())
                .and_then(|c| c.exit_code)
                .map_or_else(|| "-".to_string(), |c| c.to_string());
            let why = st
                .and_then(|s| s.err.clone().filter(|e| !e.is_empty()).or_else(|| s.message.clone()))
                .unwrap_or_default();
            let _ = writeln!(out, "{name:<16} {id:<12} {desired:<10} {state:<10} {since:<30} {exit:>5}  {why}");
        }
    }
    out
}

/// A container's health: its status, failing streak and the last results with their output.
fn health_text(c: &ContainerInspectResponse) -> String {
    let mut out = String::new();
    let name = c.name.as_deref().unwrap_or("?").trim_start_matches('/');
    let Some(h) = c.state.as_ref().and_then(|s| s.health.as_ref()) else { return out };
    let status = h.status.map(|s| s.to_string()).unwrap_or_default();
    let _ = writeln!(out, "container {name}: health {status}, failing streak {}", h.failing_streak.unwrap_or(0));
    if let Some(test) = c.config.as_ref().and_then(|c| c.healthcheck.as_ref()).and_then(|h| h.test.as_ref()) {
        let _ = writeln!(out, "check: {}", test.join(" "));
    }
    let log = h.log.as_deref().unwrap_or_default();
    for r in log.iter().rev().take(HEALTH_RESULTS) {
        let _ = writeln!(
            out,
            "--- {} exit {}\n{}",
            r.start.as_deref().unwrap_or("?"),
            r.exit_code.map_or_else(|| "?".to_string(), |c| c.to_string()),
            r.output.as_deref().unwrap_or("").trim_end()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::engine::models::{ContainerStatus, ServiceSpec, TaskStatus};

    fn svc(id: &str, name: &str) -> Service {
        Service {
            id: Some(id.into()),
            spec: Some(ServiceSpec { name: Some(name.into()), ..Default::default() }),
            ..Default::default()
        }
    }

    fn task(id: &str, service: &str, state: TaskState, ts: &str, exit: Option<i64>, err: Option<&str>) -> Task {
        Task {
            id: Some(id.into()),
            service_id: Some(service.into()),
            desired_state: Some(TaskState::RUNNING),
            status: Some(TaskStatus {
                state: Some(state),
                timestamp: Some(ts.into()),
                err: err.map(str::to_string),
                message: Some("started".into()),
                container_status: Some(ContainerStatus { exit_code: exit, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_failure_points_at_the_service_that_shows_it() {
        let services = [svc("a", "st_app"), svc("d", "st_db")];
        let running = |id: &str, s: &str| task(id, s, TaskState::RUNNING, "2026-01-01T00:00:01Z", None, None);
        for (tasks, unhealthy, want) in [
            // A crash loop in db: its failed tasks say so, though app is fine.
            (
                vec![
                    running("1", "a"),
                    task("2", "d", TaskState::FAILED, "2026-01-01T00:00:02Z", Some(1), Some("task: non-zero exit (1)")),
                ],
                vec![],
                "st_db",
            ),
            // Everything runs but app's healthcheck fails.
            (vec![running("1", "a"), running("2", "d")], vec!["st_app".to_string()], "st_app"),
            // db never got a running task (pending: no resources, preparing: pulling).
            (vec![running("1", "a"), task("2", "d", TaskState::PENDING, "t", None, None)], vec![], "st_db"),
            // Nothing stands out: the first service.
            (vec![running("1", "a"), running("2", "d")], vec![], "st_app"),
        ] {
            assert_eq!(problem_service(&services, &tasks, &unhealthy).as_deref(), Some(want), "{tasks:?}");
        }
        assert_eq!(problem_service(&[], &[], &[]), None);
    }

    #[test]
    fn the_task_table_lists_errors_and_exit_codes_newest_first() {
        let services = [svc("a", "st_app")];
        let tasks = [
            task("old", "a", TaskState::FAILED, "2026-01-01T00:00:01Z", Some(137), Some("task: non-zero exit (137)")),
            task("new", "a", TaskState::RUNNING, "2026-01-01T00:00:09Z", None, None),
        ];
        let t = task_table("st", &services, &tasks);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[2].contains("new") && lines[2].contains("running"), "{t}");
        assert!(
            lines[3].contains("failed") && lines[3].contains("137") && lines[3].ends_with("task: non-zero exit (137)"),
            "{t}"
        );
        assert!(task_table("st", &[svc("x", "st_x")], &[]).contains("(no task)"));
    }

    #[test]
    fn file_names_come_from_hostile_service_names_safely() {
        for (svc, want) in [
            ("st_app", "app"),
            ("st_../../etc/passwd", "_.._etc_passwd"),
            ("other_app", "other_app"),
            ("st_", "service"),
            ("st_.hidden", "hidden"),
            ("st_a b/c", "a_b_c"),
        ] {
            assert_eq!(file_stem(svc, "st"), want, "{svc}");
        }
        assert_eq!(file_stem(&format!("st_{}", "x".repeat(300)), "st").len(), 64);
    }

    #[test]
    fn big_text_keeps_its_end() {
        let text = format!("{}END", "é".repeat(1000));
        let b = bounded(&text, 100);
        assert!(b.ends_with("END") && b.starts_with("[… ") && b.len() < 130, "{b}");
        assert_eq!(bounded("short", 100), "short");
        assert_eq!(share_of(Duration::from_secs(600)), Duration::from_secs(30));
        assert_eq!(share_of(Duration::from_secs(60)), Duration::from_secs(12));
    }
}
