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
