//! Readiness (§7.5), judged on what docker reports. Pure: one poll in, a verdict out; the
//! waiting, probing and HTTP floor live in `readiness`.
//!
//! Lessons paid for by the predecessor: N/N replicas is not enough while an update is rolling
//! (a stop-first update briefly shows N/N on the old task); `paused` never clears once set, so
//! it counts as settled; after an upgrade a `rollback_completed` means swarm put the old version
//! back, and the old task would otherwise pass every check.

use std::collections::HashMap;

use serde_json::{Value, json};

/// Service versions seen before a deploy: a service is judged only once this deploy moved it.
#[derive(Debug, Clone, Default)]
pub struct Baseline(pub HashMap<String, u64>);

impl Baseline {
    pub fn of(services: &[Value]) -> Baseline {
        Baseline(
            services
                .iter()
                .filter_map(|s| Some((s["ID"].as_str()?.to_string(), s["Version"]["Index"].as_u64()?)))
                .collect(),
        )
    }
}

/// One look at the stack.
#[derive(Debug, Clone, Default)]
pub struct Poll {
    pub services: Vec<Value>,
    pub tasks: Vec<Value>,
    pub containers: Vec<Value>,
    pub nodes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    /// What is not ready yet, one entry per problem.
    NotReady(Vec<String>),
    /// Waiting longer will not help (a crash loop, a rollback).
    Failed(String),
}

/// Judges polls of one deploy; remembers unhealthy streaks between polls.
#[derive(Debug, Clone, Default)]
pub struct Judge {
    pub after_upgrade: bool,
    pub baseline: Baseline,
    unhealthy: HashMap<String, u32>,
    pub last_task_error: Option<String>,
}

const CRASH_TASKS: usize = 3;
const UNHEALTHY_POLLS: u32 = 3;

/// The parts of a container spec that change when a deploy changes what runs. Tasks carry a
/// copy of the spec they were created from, but not byte for byte (docker drops some defaults),
/// so whole-object equality would never match.
pub fn fingerprint(container_spec: &Value) -> Value {
    let mut env: Vec<String> =
        container_spec["Env"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
    env.sort();
    let names = |key: &str, field: &str| -> Vec<Value> {
        let mut v: Vec<Value> =
            container_spec[key].as_array().into_iter().flatten().map(|x| x[field].clone()).collect();
        v.sort_by_key(|x| x.to_string());
        v
    };
    let mounts: Vec<Value> =
        container_spec["Mounts"].as_array().into_iter().flatten().map(|m| json!([m["Source"], m["Target"]])).collect();
    json!({
        "image": container_spec["Image"],
        "command": container_spec["Command"],
        "args": container_spec["Args"],
        "env": env,
        "labels": container_spec["Labels"],
        "mounts": mounts,
        "configs": names("Configs", "ConfigName"),
        "secrets": names("Secrets", "SecretName"),
    })
}

fn state(task: &Value) -> &str {
    task["Status"]["State"].as_str().unwrap_or("")
}

impl Judge {
    pub fn new(baseline: Baseline, after_upgrade: bool) -> Judge {
        Judge { after_upgrade, baseline, ..Judge::default() }
    }

    pub fn judge(&mut self, poll: &Poll) -> Verdict {
        if poll.services.is_empty() {
            return Verdict::NotReady(vec!["no service of the stack exists yet".into()]);
        }
        self.last_task_error = latest_task_error(&poll.tasks);
        let health: HashMap<&str, &Value> =
            poll.containers.iter().filter_map(|c| Some((c["Id"].as_str()?, &c["State"]["Health"]))).collect();
        let mut waiting = Vec::new();
        let mut seen_unhealthy: Vec<String> = Vec::new();
        for svc in &poll.services {
            let id = svc["ID"].as_str().unwrap_or("");
            let name = svc["Spec"]["Name"].as_str().unwrap_or(id);
            if let (Some(before), Some(now)) = (self.baseline.0.get(id), svc["Version"]["Index"].as_u64())
                && now <= *before
            {
                waiting.push(format!("{name}: not yet updated by this deploy"));
                continue;
            }
            match svc["UpdateStatus"]["State"].as_str() {
                Some(st @ ("updating" | "rollback_started")) => {
                    waiting.push(format!("{name}: update {st}"));
                    continue;
                }
                Some("rollback_completed") if self.after_upgrade => {
                    let msg = svc["UpdateStatus"]["Message"].as_str().unwrap_or("");
                    return Verdict::Failed(
                        format!("{name}: swarm rolled the update back (rollback_completed) {msg}").trim().to_string(),
                    );
                }
                _ => {}
            }
            let fp = fingerprint(&svc["Spec"]["TaskTemplate"]["ContainerSpec"]);
            let current: Vec<&Value> = poll
                .tasks
                .iter()
                .filter(|t| t["ServiceID"].as_str() == Some(id) && fingerprint(&t["Spec"]["ContainerSpec"]) == fp)
                .collect();
            let failed: Vec<&&Value> = current.iter().filter(|t| matches!(state(t), "failed" | "rejected")).collect();
            if failed.len() >= CRASH_TASKS {
                let err =
                    latest_task_error(&failed.iter().map(|t| (**t).clone()).collect::<Vec<_>>()).unwrap_or_default();
                return Verdict::Failed(format!(
                    "{name}: {} tasks of this version failed or were rejected (crash loop); last task error: {err}",
                    failed.len()
                ));
            }
            let running: Vec<&&Value> = current
                .iter()
                .filter(|t| state(t) == "running" && t["DesiredState"].as_str() == Some("running"))
                .collect();
            let mode = &svc["Spec"]["Mode"];
            if let Some(n) = mode["Replicated"]["Replicas"].as_u64() {
                if running.len() as u64 != n {
                    waiting.push(format!("{name}: {}/{n} tasks running", running.len()));
                    continue;
                }
            } else if mode.get("Global").is_some() {
                if running.len() != poll.nodes.max(1) {
                    waiting.push(format!("{name}: {}/{} global tasks running", running.len(), poll.nodes.max(1)));
                    continue;
                }
            } else if mode.get("ReplicatedJob").is_some() || mode.get("GlobalJob").is_some() {
                let done = current.iter().filter(|t| state(t) == "complete").count();
                if done == 0
                    || current.iter().any(|t| !matches!(state(t), "complete" | "shutdown" | "failed" | "rejected"))
                {
                    waiting.push(format!("{name}: job not completed"));
                    continue;
                }
            }
            for t in &running {
                let Some(cid) = t["Status"]["ContainerStatus"]["ContainerID"].as_str() else { continue };
                let Some(h) = health.get(cid) else { continue };
                match h["Status"].as_str() {
                    None | Some("healthy") => {
                        self.unhealthy.remove(cid);
                    }
                    Some("unhealthy") => {
                        seen_unhealthy.push(cid.to_string());
                        let streak = self.unhealthy.entry(cid.to_string()).or_insert(0);
                        *streak += 1;
                        let output = h["Log"]
                            .as_array()
                            .and_then(|l| l.last())
                            .and_then(|e| e["Output"].as_str())
                            .unwrap_or("")
                            .trim();
                        if *streak >= UNHEALTHY_POLLS {
                            return Verdict::Failed(format!(
                                "{name}: container unhealthy for {streak} polls in a row (crash loop); last health output: {output}"
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

fn latest_task_error(tasks: &[Value]) -> Option<String> {
    tasks
        .iter()
        .filter_map(|t| {
            let err = t["Status"]["Err"].as_str().filter(|e| !e.is_empty())?;
            Some((t["Status"]["Timestamp"].as_str().unwrap_or(""), err))
        })
        .max_by(|a, b| a.0.cmp(b.0))
        .map(|(_, e)| e.to_string())
}

#[cfg(test)]
mod tests {
    //! Policy on JSON captured from a real swarm (`tests/data/ready/`: the hello fixture at
    //! 1.0.0+1, mid-upgrade, after the upgrade; the never-healthy fixture), edited where a state
    //! is hard to catch live.
    use super::*;

    fn load(text: &str) -> Vec<Value> {
        serde_json::from_str(text).unwrap()
    }

    fn svc_v1() -> Vec<Value> {
        load(include_str!("../../../tests/data/ready/svc-v1.json"))
    }
    fn svc_v3() -> Vec<Value> {
        load(include_str!("../../../tests/data/ready/svc-v3.json"))
    }
    fn poll(services: Vec<Value>, tasks: &str, containers: &str) -> Poll {
        Poll { services, tasks: load(tasks), containers: load(containers), nodes: 1 }
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
    fn a_service_this_deploy_did_not_move_is_not_judged_ready() {
        let baseline = Baseline::of(&svc_v3());
        match Judge::new(baseline, true).judge(&poll(svc_v3(), TASKS_V3, CTR_V3)) {
            Verdict::NotReady(why) => assert!(why[0].contains("not yet updated"), "{why:?}"),
            v => panic!("{v:?}"),
        }
        let older = Baseline::of(&svc_v1());
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
    fn an_unhealthy_container_blocks_and_three_polls_in_a_row_fail_fast() {
        let mut ctr = load(CTR_V1);
        ctr[0]["State"]["Health"]["Status"] = json!("unhealthy");
        let p = Poll { services: svc_v1(), tasks: load(TASKS_V1), containers: ctr, nodes: 1 };
        let mut j = Judge::default();
        assert!(matches!(j.judge(&p), Verdict::NotReady(w) if w[0].contains("unhealthy")));
        assert!(matches!(j.judge(&p), Verdict::NotReady(_)));
        assert!(matches!(j.judge(&p), Verdict::Failed(w) if w.contains("unhealthy for 3 polls")));
        // A healthy poll in between resets the streak.
        let mut j = Judge::default();
        j.judge(&p);
        j.judge(&p);
        j.judge(&poll(svc_v1(), TASKS_V1, CTR_V1));
        assert!(matches!(j.judge(&p), Verdict::NotReady(_)));
        let mut starting = load(CTR_V1);
        starting[0]["State"]["Health"]["Status"] = json!("starting");
        let p = Poll { services: svc_v1(), tasks: load(TASKS_V1), containers: starting, nodes: 1 };
        assert!(matches!(Judge::default().judge(&p), Verdict::NotReady(w) if w[0].contains("health starting")));
    }

    #[test]
    fn three_failed_tasks_of_this_version_are_a_crash_loop() {
        let svc = load(include_str!("../../../tests/data/ready/svc-sick.json"));
        let tasks = load(include_str!("../../../tests/data/ready/tasks-sick.json"));
        let failed = tasks.iter().find(|t| t["Status"]["State"] == "failed").unwrap().clone();
        let mut p = Poll { services: svc, tasks: tasks.clone(), containers: vec![], nodes: 1 };
        assert!(matches!(Judge::default().judge(&p), Verdict::NotReady(_)));
        for i in 0..2 {
            let mut t = failed.clone();
            t["ID"] = json!(format!("extra{i}"));
            p.tasks.push(t);
        }
        match Judge::default().judge(&p) {
            Verdict::Failed(why) => {
                assert!(why.contains("3 tasks of this version failed"), "{why}");
                assert!(why.contains("unhealthy container"), "names the last task error: {why}");
            }
            v => panic!("{v:?}"),
        }
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
        let p = Poll { services: job, tasks: done, containers: vec![], nodes: 1 };
        assert_eq!(Judge::default().judge(&p), Verdict::Ready);

        let mut zero = svc_v1();
        zero[0]["Spec"]["Mode"] = json!({"Replicated": {"Replicas": 0}});
        let p = Poll { services: zero, tasks: vec![], containers: vec![], nodes: 1 };
        assert_eq!(Judge::default().judge(&p), Verdict::Ready);
    }

    #[test]
    fn no_services_is_not_ready() {
        assert!(matches!(Judge::default().judge(&Poll::default()), Verdict::NotReady(_)));
    }
}
