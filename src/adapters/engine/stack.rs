//! The composite reads ccci's waits and the janitor make of a stack: one look for readiness, and
//! every stack namespace with its lock-dir stamps for discovery. Each is a few requests (one per
//! object kind), under one deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::models::{ContainerInspectResponse, Service, Task, TaskState};
use super::{Boxed, Deadline, Engine, EngineError, NS_LABEL, Scope, config_name, secret_name};

/// One look at a stack: its services (full specs), every task of them (history included) and the
/// inspected containers of the tasks that run or are starting (health lives only there).
#[derive(Debug, Clone, Default)]
pub struct StackLook {
    pub services: Vec<Service>,
    pub tasks: Vec<Task>,
    pub containers: Vec<ContainerInspectResponse>,
}

impl StackLook {
    /// Container ids of the tasks that run or are starting, and should run. Every one is
    /// inspected: the healthcheck a task carries is not in the typed model (dockerd sends
    /// `Healthcheck`, the API's model reads `HealthCheck`), an image's own `HEALTHCHECK` is in
    /// no spec at all, and a starting task's container tells whether swarm is about to call it
    /// running (healthy, or no healthcheck) or waits for its health.
    pub fn live_containers(tasks: &[Task]) -> Vec<String> {
        tasks
            .iter()
            .filter(|t| {
                let state = t.status.as_ref().and_then(|s| s.state);
                matches!(state, Some(TaskState::RUNNING | TaskState::STARTING))
                    && t.desired_state == Some(TaskState::RUNNING)
            })
            .filter_map(|t| t.status.as_ref()?.container_status.as_ref()?.container_id.clone())
            .collect()
    }
}

/// Every stack namespace found on any object kind, with the lock-dir stamps (`stamp_label`) its
/// objects carry.
pub type Namespaces = BTreeMap<String, BTreeSet<String>>;

impl Engine {
    /// `GET /services` of the stack, `GET /tasks` of those services, then `GET
    /// /containers/{id}/json` of each running task's container, concurrently: three round trips.
    pub fn look(&self, stack: &str, until: Deadline<'_>) -> Result<StackLook, EngineError> {
        self.block_on(async {
            let services = self.services_fut(Scope::Stack(stack).filters(), until).await?;
            let ids: Vec<String> = services.iter().filter_map(|s| s.id.clone()).collect();
            let tasks = if ids.is_empty() { Vec::new() } else { self.tasks_fut(&ids, until).await? };
            let cids = StackLook::live_containers(&tasks);
            let futs: Vec<Boxed<'_, Option<ContainerInspectResponse>>> =
                cids.iter().map(|id| Box::pin(self.inspect_container_fut(id, until)) as Boxed<'_, _>).collect();
            let containers = futures_util::future::try_join_all(futs).await?.into_iter().flatten().collect();
            Ok(StackLook { services, tasks, containers })
        })
    }

    /// Every stack namespace found on services, containers, volumes and networks (by the
    /// namespace label, with the `stamp_label` values they carry), on secrets and configs
    /// labelled with one, and — for abra's unlabelled secrets and configs — the stack
    /// `stack_of_name` reads from their names. Six requests, concurrent, under one deadline: the
    /// same answer the CLI adapter assembles from seven `ls` and an `inspect`.
    pub fn namespaces_with_stamps(
        &self,
        stamp_label: &str,
        stack_of_name: &dyn Fn(&str) -> Option<String>,
        until: Deadline<'_>,
    ) -> Result<Namespaces, EngineError> {
        type Labels = Option<HashMap<String, String>>;
        /// A namespace, and the stamp of the object it was found on.
        type Found = (String, Option<String>);
        let any = Scope::AnyStack.filters();
        let pair = |labels: Option<&HashMap<String, String>>| -> Option<Found> {
            let l = labels?;
            let ns = l.get(NS_LABEL).filter(|v| !v.is_empty())?;
            Some((ns.clone(), l.get(stamp_label).filter(|v| !v.is_empty()).cloned()))
        };
        let named = |name: &str, labels: &Labels| -> Option<Found> {
            match labels.as_ref().and_then(|l| l.get(NS_LABEL)).filter(|v| !v.is_empty()) {
                Some(ns) => Some((ns.clone(), None)),
                None => stack_of_name(name).map(|s| (s, None)),
            }
        };
        let futs: Vec<Boxed<'_, Vec<Found>>> = vec![
            Box::pin(async {
                Ok(self
                    .services_fut(any.clone(), until)
                    .await?
                    .iter()
                    .filter_map(|s| pair(s.spec.as_ref().and_then(|s| s.labels.as_ref())))
                    .collect())
            }),
            Box::pin(async {
                Ok(self
                    .containers_fut(any.clone(), until)
                    .await?
                    .iter()
                    .filter_map(|c| pair(c.labels.as_ref()))
                    .collect())
            }),
            Box::pin(async {
                Ok(self.volumes_fut(any.clone(), until).await?.iter().filter_map(|v| pair(Some(&v.labels))).collect())
            }),
            Box::pin(async {
                Ok(self
                    .networks_fut(any.clone(), until)
                    .await?
                    .iter()
                    .filter_map(|n| pair(n.labels.as_ref()))
                    .collect())
            }),
            // Every secret and config (abra's carry no label): one listing each.
            Box::pin(async {
                Ok(self
                    .secrets_fut(super::Filters::new(), until)
                    .await?
                    .iter()
                    .filter_map(|s| named(secret_name(s), &s.spec.as_ref().and_then(|s| s.labels.clone())))
                    .collect())
            }),
            Box::pin(async {
                Ok(self
                    .configs_fut(super::Filters::new(), until)
                    .await?
                    .iter()
                    .filter_map(|c| named(config_name(c), &c.spec.as_ref().and_then(|s| s.labels.clone())))
                    .collect())
            }),
        ];
        let mut out = Namespaces::new();
        for (ns, stamp) in self.block_on(self.joined(futs, until))?.into_iter().flatten() {
            let e = out.entry(ns).or_default();
            if let Some(s) = stamp {
                e.insert(s);
            }
        }
        Ok(out)
    }
}
