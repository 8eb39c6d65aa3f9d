//! Readiness (§7.5), judged on what dockerd reports. Pure: one look at the stack in (typed
//! Engine API models), a verdict out; the waiting, probing and HTTP floor live in [`super::wait`],
//! the rules between looks (two passes, `stable`, the HTTP floor's timeout) in [`super::state`].
//!
//! Lessons paid for by the predecessor: N/N replicas is not enough while an update is rolling
//! (a stop-first update briefly shows N/N on the old task); `paused` never clears once set, so
//! it counts as settled; after an upgrade a `rollback_completed` means swarm put the old version
//! back, and the old task would otherwise pass every check.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::adapters::engine::models::{
    ContainerInspectResponse, Health, HealthStatusEnum, Service, ServiceUpdateStatusStateEnum, Task,
    TaskSpecContainerSpec, TaskState,
};

/// Service versions seen before a deploy: a service is judged only once this deploy moved it.
#[derive(Debug, Clone, Default)]
pub struct Baseline(pub HashMap<String, u64>);

impl Baseline {
    pub fn of(services: &[Service]) -> Baseline {
        Baseline(services.iter().filter_map(|s| Some((s.id.clone()?, s.version.as_ref()?.index?))).collect())
    }
}

/// One look at the stack.
#[derive(Debug, Clone, Default)]
pub struct Poll {
    pub services: Vec<Service>,
    /// Every task of those services, history included (`docker service ps`).
    pub tasks: Vec<Task>,
    /// The inspected containers of the running and starting tasks (health lives only there).
    pub containers: Vec<ContainerInspectResponse>,
    /// Nodes a global service can run on.
    pub nodes: usize,
    /// When the look was taken, from the start of the wait: an unhealthy streak must also last.
    pub at: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    /// What is not ready yet, one entry per problem.
    NotReady(Vec<String>),
    /// Waiting longer will not help (a crash loop, a rollback).
    Failed(String),
}

/// Judges looks at one deploy; remembers unhealthy streaks between looks.
#[derive(Debug, Clone, Default)]
pub struct Judge {
    pub after_upgrade: bool,
    pub baseline: Baseline,
    /// Container id → (looks in a row it was unhealthy, when it was first seen so).
    unhealthy: HashMap<String, (u32, Duration)>,
    pub last_task_error: Option<String>,
    /// The last look found a task still `starting` whose container is already healthy (or has
    /// no healthcheck): swarm is about to record it running, without an event.
    trailing: bool,
}

const CRASH_TASKS: usize = 3;
/// A container unhealthy in this many looks in a row, spread over at least [`UNHEALTHY_SPAN`], is
/// a crash loop. Looks follow events, so several can come within milliseconds: the span keeps
/// the old meaning of "three polls a second apart".
const UNHEALTHY_LOOKS: u32 = 3;
pub const UNHEALTHY_SPAN: Duration = Duration::from_secs(2);

/// The parts of a container spec that change when a deploy changes what runs. Tasks carry a
/// copy of the spec they were created from, but not byte for byte (docker drops some defaults),
/// so whole-object equality would never match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    image: Option<String>,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    env: Vec<String>,
    labels: BTreeMap<String, String>,
    mounts: Vec<(Option<String>, Option<String>)>,
    configs: Vec<Option<String>>,
    secrets: Vec<Option<String>>,
}

pub fn fingerprint(spec: Option<&TaskSpecContainerSpec>) -> Fingerprint {
    let Some(c) = spec else { return Fingerprint::default() };
    let mut env = c.env.clone().unwrap_or_default();
    env.sort();
    let mut configs: Vec<Option<String>> = c.configs.iter().flatten().map(|x| x.config_name.clone()).collect();
    configs.sort();
    let mut secrets: Vec<Option<String>> = c.secrets.iter().flatten().map(|x| x.secret_name.clone()).collect();
    secrets.sort();
    Fingerprint {
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env,
        labels: c.labels.clone().unwrap_or_default().into_iter().collect(),
        mounts: c.mounts.iter().flatten().map(|m| (m.source.clone(), m.target.clone())).collect(),
        configs,
        secrets,
    }
}

fn service_spec(s: &Service) -> Option<&TaskSpecContainerSpec> {
    s.spec.as_ref()?.task_template.as_ref()?.container_spec.as_ref()
}

fn task_spec(t: &Task) -> Option<&TaskSpecContainerSpec> {
    t.spec.as_ref()?.container_spec.as_ref()
}

/// Where the tasks of this version that are meant to run but do not yet stand, for the wait's log
/// and heartbeat: ` (1 preparing, 1 starting)` — a slow image pull reads differently from a
/// container that starts and dies.
fn on_the_way(current: &[&Task]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for t in current.iter().filter(|t| t.desired_state == Some(TaskState::RUNNING) && !is_running(t)) {
        let st = state(t).map_or_else(|| "unknown".to_string(), |s| s.to_string());
        match counts.iter_mut().find(|(k, _)| *k == st) {
            Some((_, n)) => *n += 1,
            None => counts.push((st, 1)),
        }
    }
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts.into_iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!(" ({})", parts.join(", "))
}

fn state(t: &Task) -> Option<TaskState> {
    t.status.as_ref()?.state
}

/// The container id of a task (none before it got one).
pub fn container_of(t: &Task) -> Option<&str> {
    t.status.as_ref()?.container_status.as_ref()?.container_id.as_deref()
}

/// Whether the task runs and should: the containers whose health the judge needs.
pub fn is_running(t: &Task) -> bool {
    state(t) == Some(TaskState::RUNNING) && t.desired_state == Some(TaskState::RUNNING)
}

fn health_of(c: &ContainerInspectResponse) -> Option<&Health> {
    c.state.as_ref()?.health.as_ref()
}

impl Judge {
    pub fn new(baseline: Baseline, after_upgrade: bool) -> Judge {
        Judge { after_upgrade, baseline, ..Judge::default() }
    }

    /// Whether some container is unhealthy right now: its streak only grows with looks, and no
    /// event comes while it stays unhealthy, so the wait looks again soon.
    pub fn watching_unhealthy(&self) -> bool {
        !self.unhealthy.is_empty()
    }

    /// Whether the last look was short of running tasks only because swarm had not yet recorded
    /// a healthy (or healthcheck-less) container's task as running: it will, within
    /// milliseconds and without an event, so the wait looks again shortly.
    pub fn tasks_trailing(&self) -> bool {
        self.trailing
    }

    pub fn judge(&mut self, poll: &Poll) -> Verdict {
        if poll.services.is_empty() {
            return Verdict::NotReady(vec!["no service of the stack exists yet".into()]);
        }
        self.last_task_error = latest_task_error(poll.tasks.iter());
        self.trailing = false;
        // Containers that run (a created one not yet started is not about to be called running).
        let inspected: std::collections::HashSet<&str> = poll
            .containers
            .iter()
            .filter(|c| c.state.as_ref().and_then(|s| s.running) == Some(true))
            .filter_map(|c| c.id.as_deref())
            .collect();
        let health: HashMap<&str, &Health> =
            poll.containers.iter().filter_map(|c| Some((c.id.as_deref()?, health_of(c)?))).collect();
        let mut waiting = Vec::new();
        let mut seen_unhealthy: Vec<String> = Vec::new();
        for svc in &poll.services {
            let id = svc.id.as_deref().unwrap_or("");
            let name = svc.spec.as_ref().and_then(|s| s.name.as_deref()).unwrap_or(id);
            if let (Some(before), Some(now)) = (self.baseline.0.get(id), svc.version.as_ref().and_then(|v| v.index))
                && now <= *before
            {
                waiting.push(format!("{name}: not yet updated by this deploy"));
                continue;
            }
            let update = svc.update_status.as_ref();
            match update.and_then(|u| u.state) {
                Some(
                    st @ (ServiceUpdateStatusStateEnum::UPDATING | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED),
                ) => {
                    waiting.push(format!("{name}: update {st}"));
                    continue;
                }
                Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) if self.after_upgrade => {
                    let msg = update.and_then(|u| u.message.as_deref()).unwrap_or("");
                    return Verdict::Failed(
                        format!("{name}: swarm rolled the update back (rollback_completed) {msg}").trim().to_string(),
                    );
                }
                _ => {}
            }
            let fp = fingerprint(service_spec(svc));
            let current: Vec<&Task> = poll
                .tasks
                .iter()
                .filter(|t| t.service_id.as_deref() == Some(id) && fingerprint(task_spec(t)) == fp)
                .collect();
            let failed: Vec<&Task> = current
                .iter()
                .copied()
                .filter(|t| matches!(state(t), Some(TaskState::FAILED | TaskState::REJECTED)))
                .collect();
            if failed.len() >= CRASH_TASKS {
                let err = latest_task_error(failed.iter().copied()).unwrap_or_default();
                return Verdict::Failed(format!(
                    "{name}: {} tasks of this version failed or were rejected (crash loop); last task error: {err}",
                    failed.len()
                ));
            }
            let running: Vec<&Task> = current.iter().copied().filter(|t| is_running(t)).collect();
            // A starting task whose container passed its healthcheck (or has none) is one swarm
            // will call running any moment.
            let about_to_run = |t: &&Task| {
                state(t) == Some(TaskState::STARTING)
                    && t.desired_state == Some(TaskState::RUNNING)
                    && container_of(t).is_some_and(|cid| {
                        inspected.contains(cid)
                            && health.get(cid).is_none_or(|h| {
                                matches!(
                                    h.status,
                                    None | Some(
                                        HealthStatusEnum::HEALTHY | HealthStatusEnum::NONE | HealthStatusEnum::EMPTY
                                    )
                                )
                            })
                    })
            };
            if current.iter().any(about_to_run) {
                self.trailing = true;
            }
            let mode = svc.spec.as_ref().and_then(|s| s.mode.as_ref());
            if let Some(n) = mode.and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas) {
                if running.len() as i64 != n {
                    waiting.push(format!("{name}: {}/{n} tasks running{}", running.len(), on_the_way(&current)));
                    continue;
                }
            } else if mode.is_some_and(|m| m.global.is_some()) {
                if running.len() != poll.nodes.max(1) {
                    waiting.push(format!(
                        "{name}: {}/{} global tasks running{}",
                        running.len(),
                        poll.nodes.max(1),
                        on_the_way(&current)
                    ));
                    continue;
                }
            } else if mode.is_some_and(|m| m.replicated_job.is_some() || m.global_job.is_some()) {
                let done = current.iter().filter(|t| state(t) == Some(TaskState::COMPLETE)).count();
                let settled = |t: &&Task| {
                    matches!(
                        state(t),
                        Some(TaskState::COMPLETE | TaskState::SHUTDOWN | TaskState::FAILED | TaskState::REJECTED)
                    )
                };
                if done == 0 || !current.iter().all(settled) {
                    waiting.push(format!("{name}: job not completed"));
                    continue;
                }
            }
            for t in &running {
                let Some(cid) = container_of(t) else { continue };
                let Some(h) = health.get(cid) else { continue };
                match h.status {
                    None | Some(HealthStatusEnum::HEALTHY | HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) => {
                        self.unhealthy.remove(cid);
                    }
                    Some(HealthStatusEnum::UNHEALTHY) => {
                        seen_unhealthy.push(cid.to_string());
                        let (streak, since) = self.unhealthy.entry(cid.to_string()).or_insert((0, poll.at));
                        *streak += 1;
                        let lasted = poll.at.saturating_sub(*since);
                        let output = h.log.as_ref().and_then(|l| l.last()).and_then(|e| e.output.as_deref());
                        if *streak >= UNHEALTHY_LOOKS && lasted >= UNHEALTHY_SPAN {
                            return Verdict::Failed(format!(
                                "{name}: container unhealthy for {streak} looks in a row over {} (crash loop); last health output: {}",
                                crate::clock::human(lasted),
                                output.unwrap_or("").trim()
                            ));
                        }
                        waiting.push(format!("{name}: container unhealthy"));
                    }
                    Some(other) => waiting.push(format!("{name}: container health {other}")),
                }
            }
        }
        self.unhealthy.retain(|cid, _| seen_unhealthy.contains(cid));
        if waiting.is_empty() { Verdict::Ready } else { Verdict::NotReady(waiting) }
    }
}

fn latest_task_error<'a>(tasks: impl Iterator<Item = &'a Task>) -> Option<String> {
    tasks
        .filter_map(|t| {
            let s = t.status.as_ref()?;
            let err = s.err.as_deref().filter(|e| !e.is_empty())?;
            Some((s.timestamp.as_deref().unwrap_or(""), err))
        })
        .max_by(|a, b| a.0.cmp(b.0))
        .map(|(_, e)| e.to_string())
}

#[cfg(test)]
mod tests {
    //! Policy on JSON captured from a real swarm (`tests/data/ready/`: the hello fixture at
    //! 1.0.0+1, mid-upgrade, after the upgrade; the never-healthy fixture), edited where a state
    //! is hard to catch live, and read into the Engine API's typed models as the wait reads them.
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    use super::*;

    fn load(text: &str) -> Vec<Value> {
        serde_json::from_str(text).unwrap()
    }
    fn typed<T: DeserializeOwned>(v: Vec<Value>) -> Vec<T> {
        v.into_iter().map(|x| serde_json::from_value(x).unwrap()).collect()
    }

    fn svc_v1() -> Vec<Value> {
        load(include_str!("../../../tests/data/ready/svc-v1.json"))
    }
    fn svc_v3() -> Vec<Value> {
        load(include_str!("../../../tests/data/ready/svc-v3.json"))
    }
    fn poll_at(services: Vec<Value>, tasks: Vec<Value>, containers: Vec<Value>, at: u64) -> Poll {
        Poll {
            services: typed(services),
            tasks: typed(tasks),
            containers: typed(containers),
            nodes: 1,
            at: Duration::from_secs(at),
        }
    }
    fn poll(services: Vec<Value>, tasks: &str, containers: &str) -> Poll {
        poll_at(services, load(tasks), load(containers), 0)
    }
    const TASKS_V1: &str = include_str!("../../../tests/data/ready/tasks-v1.json");
    const TASKS_V3: &str = include_str!("../../../tests/data/ready/tasks-v3.json");
    const CTR_V1: &str = include_str!("../../../tests/data/ready/ctr-v1.json");
    const CTR_V3: &str = include_str!("../../../tests/data/ready/ctr-v3.json");

    fn with_update_state(mut services: Vec<Value>, state: &str) -> Vec<Value> {
        services[0]["UpdateStatus"] = json!({"State": state, "Message": format!("update {state}")});
        services
    }

    #[test]
    fn a_healthy_first_deploy_is_ready() {
        assert_eq!(Judge::default().judge(&poll(svc_v1(), TASKS_V1, CTR_V1)), Verdict::Ready);
    }

    #[test]
    fn the_captures_read_into_the_typed_models() {
        let p = poll(svc_v1(), TASKS_V1, CTR_V1);
        assert_eq!(p.services[0].version.as_ref().and_then(|v| v.index), Some(375));
        assert!(is_running(&p.tasks[0]));
        assert_eq!(container_of(&p.tasks[0]), p.containers[0].id.as_deref());
        assert_eq!(health_of(&p.containers[0]).and_then(|h| h.status), Some(HealthStatusEnum::HEALTHY));
        // The task's spec and the service's agree on everything the fingerprint keeps.
        assert_eq!(fingerprint(task_spec(&p.tasks[0])), fingerprint(service_spec(&p.services[0])));
        assert_ne!(fingerprint(task_spec(&p.tasks[0])), Fingerprint::default());
    }

    #[test]
    fn n_of_n_counts_only_tasks_of_the_current_spec() {
        // After the upgrade: one running task of v3, one shut-down task of v1.
        assert_eq!(Judge::default().judge(&poll(svc_v3(), TASKS_V3, CTR_V3)), Verdict::Ready);
        // The v1 task still running under the v3 spec does not count.
        match Judge::default().judge(&poll(svc_v3(), TASKS_V1, CTR_V1)) {
            Verdict::NotReady(why) => assert!(why[0].contains("0/1 tasks running"), "{why:?}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_wait_says_where_the_missing_tasks_stand() {
        // The captured v1 task, caught earlier in its life: still pulling, then starting.
        for (st, want) in
            [("preparing", "0/1 tasks running (1 preparing)"), ("starting", "0/1 tasks running (1 starting)")]
        {
            let mut tasks = load(TASKS_V1);
            tasks[0]["Status"]["State"] = json!(st);
            match Judge::default().judge(&poll_at(svc_v1(), tasks, load(CTR_V1), 0)) {
                Verdict::NotReady(why) => assert!(why[0].ends_with(want), "{st}: {why:?}"),
                v => panic!("{st}: {v:?}"),
            }
        }
    }

    #[test]
    fn a_service_this_deploy_did_not_move_is_not_judged_ready() {
        let baseline = Baseline::of(&typed(svc_v3()));
        match Judge::new(baseline, true).judge(&poll(svc_v3(), TASKS_V3, CTR_V3)) {
            Verdict::NotReady(why) => assert!(why[0].contains("not yet updated"), "{why:?}"),
            v => panic!("{v:?}"),
        }
        let older = Baseline::of(&typed(svc_v1()));
        assert_eq!(Judge::new(older, true).judge(&poll(svc_v3(), TASKS_V3, CTR_V3)), Verdict::Ready);
    }

    #[test]
    fn updating_and_rollback_started_are_not_settled_but_paused_is() {
        let updating = load(include_str!("../../../tests/data/ready/svc-updating.json"));
        assert!(
            matches!(Judge::default().judge(&poll(updating, TASKS_V3, CTR_V3)), Verdict::NotReady(w) if w[0].contains("update updating"))
        );
        let rb = with_update_state(svc_v3(), "rollback_started");
        assert!(
            matches!(Judge::default().judge(&poll(rb, TASKS_V3, CTR_V3)), Verdict::NotReady(w) if w[0].contains("rollback_started"))
        );
        let paused = with_update_state(svc_v3(), "paused");
        assert_eq!(Judge::default().judge(&poll(paused, TASKS_V3, CTR_V3)), Verdict::Ready);
    }

    #[test]
    fn rollback_completed_after_an_upgrade_is_a_failure() {
        let rolled = with_update_state(svc_v3(), "rollback_completed");
        match Judge::new(Baseline::default(), true).judge(&poll(rolled.clone(), TASKS_V3, CTR_V3)) {
            Verdict::Failed(why) => assert!(why.contains("rolled the update back"), "{why}"),
            v => panic!("{v:?}"),
        }
        assert_eq!(Judge::new(Baseline::default(), false).judge(&poll(rolled, TASKS_V3, CTR_V3)), Verdict::Ready);
    }

    #[test]
    fn an_unhealthy_container_blocks_and_three_looks_over_two_seconds_fail_fast() {
        let mut ctr = load(CTR_V1);
        ctr[0]["State"]["Health"]["Status"] = json!("unhealthy");
        let sick = |at: u64| poll_at(svc_v1(), load(TASKS_V1), ctr.clone(), at);
        let mut j = Judge::default();
        assert!(matches!(j.judge(&sick(0)), Verdict::NotReady(w) if w[0].contains("unhealthy")));
        assert!(j.watching_unhealthy());
        assert!(matches!(j.judge(&sick(1)), Verdict::NotReady(_)));
        assert!(
            matches!(j.judge(&sick(2)), Verdict::Failed(w) if w.contains("unhealthy for 3 looks in a row over 2.0s"))
        );
        // Three looks within a moment (a burst of events) are not a crash loop yet.
        let mut j = Judge::default();
        for _ in 0..5 {
            assert!(matches!(j.judge(&sick(7)), Verdict::NotReady(_)));
        }
        assert!(matches!(j.judge(&sick(9)), Verdict::Failed(_)));
        // A healthy look in between resets the streak.
        let mut j = Judge::default();
        j.judge(&sick(0));
        j.judge(&sick(1));
        j.judge(&poll_at(svc_v1(), load(TASKS_V1), load(CTR_V1), 2));
        assert!(!j.watching_unhealthy());
        assert!(matches!(j.judge(&sick(3)), Verdict::NotReady(_)));
        let mut starting = load(CTR_V1);
        starting[0]["State"]["Health"]["Status"] = json!("starting");
        let p = poll_at(svc_v1(), load(TASKS_V1), starting, 0);
        assert!(matches!(Judge::default().judge(&p), Verdict::NotReady(w) if w[0].contains("health starting")));
    }

    #[test]
    fn a_starting_task_with_a_healthy_container_is_trailing_not_yet_running() {
        let mut tasks = load(TASKS_V1);
        tasks[0]["Status"]["State"] = json!("starting");
        let mut j = Judge::default();
        assert!(
            matches!(j.judge(&poll_at(svc_v1(), tasks.clone(), load(CTR_V1), 0)), Verdict::NotReady(w) if w[0].contains("0/1 tasks running"))
        );
        assert!(j.tasks_trailing(), "healthy container, task not yet running: swarm is about to record it");
        let mut starting = load(CTR_V1);
        starting[0]["State"]["Health"]["Status"] = json!("starting");
        j.judge(&poll_at(svc_v1(), tasks.clone(), starting, 0));
        assert!(!j.tasks_trailing(), "the container's health event comes first");
        j.judge(&poll_at(svc_v1(), tasks, vec![], 0));
        assert!(!j.tasks_trailing(), "no container inspected yet");
        j.judge(&poll(svc_v1(), TASKS_V1, CTR_V1));
        assert!(!j.tasks_trailing());
    }

    #[test]
    fn a_container_without_a_healthcheck_or_not_inspected_does_not_block() {
        let mut none = load(CTR_V1);
        none[0]["State"]["Health"] = Value::Null;
        assert_eq!(Judge::default().judge(&poll_at(svc_v1(), load(TASKS_V1), none, 0)), Verdict::Ready);
        assert_eq!(Judge::default().judge(&poll_at(svc_v1(), load(TASKS_V1), vec![], 0)), Verdict::Ready);
    }

    #[test]
    fn three_failed_tasks_of_this_version_are_a_crash_loop() {
        let svc = load(include_str!("../../../tests/data/ready/svc-sick.json"));
        let tasks = load(include_str!("../../../tests/data/ready/tasks-sick.json"));
        let failed = tasks.iter().find(|t| t["Status"]["State"] == "failed").unwrap().clone();
        assert!(matches!(
            Judge::default().judge(&poll_at(svc.clone(), tasks.clone(), vec![], 0)),
            Verdict::NotReady(_)
        ));
        let mut more = tasks.clone();
        for i in 0..2 {
            let mut t = failed.clone();
            t["ID"] = json!(format!("extra{i}"));
            more.push(t);
        }
        let mut j = Judge::default();
        match j.judge(&poll_at(svc, more, vec![], 0)) {
            Verdict::Failed(why) => {
                assert!(why.contains("3 tasks of this version failed"), "{why}");
                assert!(why.contains("unhealthy container"), "names the last task error: {why}");
            }
            v => panic!("{v:?}"),
        }
        assert!(j.last_task_error.as_deref().is_some_and(|e| e.contains("unhealthy container")));
    }

    #[test]
    fn global_job_and_zero_replica_services() {
        let mut global = svc_v1();
        global[0]["Spec"]["Mode"] = json!({"Global": {}});
        let mut p = poll(global, TASKS_V1, CTR_V1);
        assert_eq!(Judge::default().judge(&p), Verdict::Ready);
        p.nodes = 2;
        assert!(matches!(Judge::default().judge(&p), Verdict::NotReady(w) if w[0].contains("1/2 global")));

        let mut job = svc_v1();
        job[0]["Spec"]["Mode"] = json!({"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}});
        assert!(
            matches!(Judge::default().judge(&poll(job.clone(), TASKS_V1, CTR_V1)), Verdict::NotReady(w) if w[0].contains("job not completed"))
        );
        let mut done = load(TASKS_V1);
        done[0]["Status"]["State"] = json!("complete");
        done[0]["DesiredState"] = json!("complete");
        assert_eq!(Judge::default().judge(&poll_at(job, done, vec![], 0)), Verdict::Ready);

        let mut zero = svc_v1();
        zero[0]["Spec"]["Mode"] = json!({"Replicated": {"Replicas": 0}});
        assert_eq!(Judge::default().judge(&poll_at(zero, vec![], vec![], 0)), Verdict::Ready);
    }

    #[test]
    fn no_services_is_not_ready() {
        assert!(matches!(Judge::default().judge(&Poll::default()), Verdict::NotReady(_)));
    }
}
