//! dockerd's Engine API for reads (SPEC §8 as amended by the Engine API issue): list, inspect,
//! service tasks, logs, version and the event stream, typed, each call bounded by a
//! [`Deadline`].
//!
//! ccci is synchronous and signal-managed, so the async client (bollard) sits behind a sync
//! facade. [`Engine`] owns one tokio *current-thread* runtime, built on the first call (long after
//! the signal thread exists) and driven only inside that call's `block_on`: no worker thread, and
//! nothing runs between calls (the connection of a request abandoned at its deadline is closed
//! when the runtime next runs, or when the `Engine` is dropped). Nothing here ever spawns a
//! process (bollard's `ssh` transport, the only one that would, is not compiled in). The event
//! stream runs on a thread of its own with its own runtime ([`events`]).
//!
//! One request per object kind: a stack's services, tasks (with history), containers, volumes,
//! secrets, configs and networks are each one `GET` with a filter. Only container inspect (for
//! health) is per container, and those requests of one poll run concurrently under one deadline.
//!
//! Writes (`stack rm`, `<kind> rm`) stay on the docker CLI through the spawn path
//! (`adapters::docker`), so every mutation is in `run.log` and stub-able in tests.

mod error;
pub mod events;
mod filters;
mod host;
mod stack;
mod wake;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Mutex, OnceLock};

use bollard::query_parameters::{
    InspectContainerOptions, InspectServiceOptions, ListConfigsOptions, ListContainersOptions, ListNetworksOptions,
    ListNodesOptions, ListSecretsOptions, ListServicesOptions, ListTasksOptions, ListVolumesOptions, LogsOptions,
};
use futures_util::StreamExt;
use futures_util::future::{Either, select, try_join_all};

pub use bollard::models;
use models::{
    Config, ContainerInspectResponse, ContainerSummary, Network, Node, NodeSpecAvailabilityEnum, NodeState, Secret,
    Service, SystemInfo, SystemVersion, Task, Volume,
};

pub use crate::lifetime::{CANCEL_TICK, Deadline};
pub use error::EngineError;
pub use events::{EngineEvent, EventFilter, Kind, Notice, Subscription};
pub use filters::{Filters, NS_LABEL, Scope, endpoint};
pub use host::{DEFAULT_SOCKET, Host};
pub use stack::{Namespaces, StackLook};
pub use wake::{StackWake, Wake};

use crate::adapters::docker::Residue;

/// bollard's own whole-client timeout, in seconds. Every call here carries a caller's
/// [`Deadline`], which must always be the bound that fires; a week is "never" for a CI run.
const CLIENT_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// The last lines of a service's log, for failure diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTail {
    /// `tail=N`: lines per task, as dockerd counts them.
    pub lines: usize,
    /// Stop reading once this many bytes of messages are kept.
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One log line as dockerd sent it: `2026-11-30T03:50:00.123456789Z message` (with
/// `timestamps`), without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    pub line: String,
}

impl LogLine {
    /// The RFC 3339 timestamp dockerd put first.
    pub fn timestamp(&self) -> Option<&str> {
        self.line.split_once(' ').map(|(t, _)| t).filter(|t| t.len() >= 20 && t.ends_with('Z'))
    }

    /// The message without its timestamp.
    pub fn message(&self) -> &str {
        match self.timestamp() {
            Some(t) => &self.line[t.len() + 1..],
            None => &self.line,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logs {
    pub lines: Vec<LogLine>,
    /// Cut short: the byte bound was reached, or the deadline passed after some lines came.
    pub truncated: bool,
}

/// The Engine API client: cheap to create (no I/O until the first call), shareable by reference.
pub struct Engine {
    host: Host,
    host_text: String,
    runtime: OnceLock<tokio::runtime::Runtime>,
    /// The negotiated client, once a call has connected; a failed connect is retried next call.
    client: Mutex<Option<bollard::Docker>>,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + 'a>>;

impl Engine {
    pub fn new(host: Host) -> Engine {
        Engine { host_text: host.to_string(), host, runtime: OnceLock::new(), client: Mutex::new(None) }
    }

    /// An engine for `DOCKER_HOST` (unset: the default unix socket).
    pub fn from_env() -> Result<Engine, EngineError> {
        Ok(Engine::new(Host::from_env()?))
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The API version negotiated with dockerd (`1.41` for dockerd 20.10): the lower of
    /// bollard's and the daemon's. Negotiates on the first call if none has yet.
    pub fn api_version(&self, until: Deadline<'_>) -> Result<String, EngineError> {
        let d = self.block_on(self.client(until))?;
        let v = d.client_version();
        Ok(format!("{}.{}", v.major_version, v.minor_version))
    }

    /// `GET /version`: the daemon's version, API version and platform.
    pub fn version(&self, until: Deadline<'_>) -> Result<SystemVersion, EngineError> {
        self.call(endpoint("/version", &[], &Filters::new()), until, |d| async move { d.version().await })
    }

    /// `GET /info`: the daemon's settings (`DockerRootDir`, swarm state, …).
    pub fn info(&self, until: Deadline<'_>) -> Result<SystemInfo, EngineError> {
        self.call(endpoint("/info", &[], &Filters::new()), until, |d| async move { d.info().await })
    }

    /// `GET /networks/{name}`: whether a network (the proxy's) exists; `None` when it does not.
    pub fn network_exists(&self, name: &str, until: Deadline<'_>) -> Result<Option<String>, EngineError> {
        let ep = endpoint(&format!("/networks/{name}"), &[], &Filters::new());
        Ok(found(self.call(ep, until, |d| async move { d.inspect_network(name, None).await }))?
            .map(|n| n.driver.unwrap_or_default()))
    }

    /// `GET /services` of a scope, with full specs (no inspect needed).
    pub fn services(&self, scope: Scope<'_>, until: Deadline<'_>) -> Result<Vec<Service>, EngineError> {
        self.block_on(self.services_fut(scope.filters(), until))
    }

    /// `GET /services/{id}`; `None` when it is gone.
    pub fn service(&self, id: &str, until: Deadline<'_>) -> Result<Option<Service>, EngineError> {
        let ep = endpoint(&format!("/services/{id}"), &[], &Filters::new());
        found(self.call(ep, until, |d| async move {
            d.inspect_service(id, Some(InspectServiceOptions { insert_defaults: false })).await
        }))
    }

    /// `GET /tasks?filters={"service":[…]}`: every task of the services, history included
    /// (every desired state), as `docker service ps` lists them. No ids, no request.
    pub fn tasks(&self, service_ids: &[String], until: Deadline<'_>) -> Result<Vec<Task>, EngineError> {
        if service_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.block_on(self.tasks_fut(service_ids, until))
    }

    /// `GET /tasks/{id}`; `None` when it is gone.
    pub fn task(&self, id: &str, until: Deadline<'_>) -> Result<Option<Task>, EngineError> {
        let ep = endpoint(&format!("/tasks/{id}"), &[], &Filters::new());
        found(self.call(ep, until, |d| async move { d.inspect_task(id).await }))
    }

    /// `GET /containers/{id}/json` (health lives only here); `None` when it is gone.
    pub fn container(&self, id: &str, until: Deadline<'_>) -> Result<Option<ContainerInspectResponse>, EngineError> {
        self.block_on(self.inspect_container_fut(id, until))
    }

    /// Inspects the given containers concurrently under one deadline; a container that vanished
    /// between listing and inspect is left out (a 404 per object, not a failed call).
    pub fn inspect_containers(
        &self,
        ids: &[String],
        until: Deadline<'_>,
    ) -> Result<Vec<ContainerInspectResponse>, EngineError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let futs: Vec<Boxed<'_, Option<ContainerInspectResponse>>> =
            ids.iter().map(|id| Box::pin(self.inspect_container_fut(id, until)) as Boxed<'_, _>).collect();
        Ok(self.block_on(self.joined(futs, until))?.into_iter().flatten().collect())
    }

    /// `GET /containers/json?all=true` of a scope: `docker ps -a`.
    pub fn containers(&self, scope: Scope<'_>, until: Deadline<'_>) -> Result<Vec<ContainerSummary>, EngineError> {
        self.block_on(self.containers_fut(scope.filters(), until))
    }

    pub fn volumes(&self, scope: Scope<'_>, until: Deadline<'_>) -> Result<Vec<Volume>, EngineError> {
        self.block_on(self.volumes_fut(scope.filters(), until))
    }

    pub fn networks(&self, scope: Scope<'_>, until: Deadline<'_>) -> Result<Vec<Network>, EngineError> {
        self.block_on(self.networks_fut(scope.filters(), until))
    }

    /// Secrets by the namespace label. abra creates a recipe's secrets itself, without that
    /// label: find those with [`Engine::secrets_named`].
    pub fn secrets(&self, scope: Scope<'_>, until: Deadline<'_>) -> Result<Vec<Secret>, EngineError> {
        self.block_on(self.secrets_fut(scope.filters(), until))
    }

    /// Secrets whose name starts with `prefix` (`<stack>_`): dockerd's `name` filter is a prefix
    /// match; the prefix is checked again here so the answer is exact.
    pub fn secrets_named(&self, prefix: &str, until: Deadline<'_>) -> Result<Vec<Secret>, EngineError> {
        let mut v = self.block_on(self.secrets_fut(Filters::new().with("name", prefix), until))?;
        v.retain(|s| secret_name(s).starts_with(prefix));
        Ok(v)
    }

    pub fn configs(&self, scope: Scope<'_>, until: Deadline<'_>) -> Result<Vec<Config>, EngineError> {
        self.block_on(self.configs_fut(scope.filters(), until))
    }

    /// Configs whose name starts with `prefix` (see [`Engine::secrets_named`]).
    pub fn configs_named(&self, prefix: &str, until: Deadline<'_>) -> Result<Vec<Config>, EngineError> {
        let mut v = self.block_on(self.configs_fut(Filters::new().with("name", prefix), until))?;
        v.retain(|c| config_name(c).starts_with(prefix));
        Ok(v)
    }

    /// `GET /nodes`.
    pub fn nodes(&self, until: Deadline<'_>) -> Result<Vec<Node>, EngineError> {
        self.call(endpoint("/nodes", &[], &Filters::new()), until, |d| async move {
            d.list_nodes(None::<ListNodesOptions>).await
        })
    }

    /// Nodes a global service can run on (ready and active), at least 1.
    pub fn eligible_nodes(&self, until: Deadline<'_>) -> Result<usize, EngineError> {
        Ok(self.nodes(until)?.iter().filter(|n| node_eligible(n)).count().max(1))
    }

    /// `GET /services/{id}/logs?tail=N&timestamps=true`: the last lines of every task of the
    /// service, stdout and stderr, at most `tail.max_bytes` of messages. A deadline that passes
    /// after some lines came returns those lines, marked truncated.
    pub fn service_logs(&self, id: &str, tail: LogTail, until: Deadline<'_>) -> Result<Logs, EngineError> {
        // Once more on a new connection when the pooled one was found closed (see `request`).
        match self.service_logs_once(id, tail, until) {
            Err(EngineError::Broken { .. }) if !until.expired() && until.stopped().is_none() => {
                self.service_logs_once(id, tail, until)
            }
            r => r,
        }
    }

    fn service_logs_once(&self, id: &str, tail: LogTail, until: Deadline<'_>) -> Result<Logs, EngineError> {
        let query = [("stdout", "true".to_string()), ("stderr", "true".into()), ("timestamps", "true".into())];
        let mut query = query.to_vec();
        query.push(("tail", tail.lines.to_string()));
        let ep = endpoint(&format!("/services/{id}/logs"), &query, &Filters::new());
        let mut logs = Logs::default();
        let mut bytes = 0usize;
        let res = self.block_on(async {
            let d = self.client(until).await?;
            let opts = LogsOptions {
                stdout: true,
                stderr: true,
                timestamps: true,
                tail: tail.lines.to_string(),
                ..Default::default()
            };
            let collect = async {
                let mut stream = d.service_logs(id, Some(opts));
                while let Some(item) = stream.next().await {
                    let (stream_kind, msg) = match item? {
                        bollard::container::LogOutput::StdErr { message } => (LogStream::Stderr, message),
                        other => (LogStream::Stdout, other.into_bytes()),
                    };
                    let text = String::from_utf8_lossy(&msg);
                    for line in text.split_terminator('\n') {
                        let line = line.trim_end_matches('\r');
                        if bytes + line.len() > tail.max_bytes {
                            logs.truncated = true;
                            return Ok(());
                        }
                        bytes += line.len();
                        logs.lines.push(LogLine { stream: stream_kind, line: line.to_string() });
                    }
                }
                Ok(())
            };
            self.drive(&ep, until, collect).await
        });
        match res {
            Ok(()) => Ok(logs),
            Err(EngineError::Timeout { .. }) if !logs.lines.is_empty() => {
                logs.truncated = true;
                Ok(logs)
            }
            Err(e) => Err(e),
        }
    }

    /// Names of everything of the stack that still exists: six label queries plus secrets and
    /// configs by the `<stack>_` prefix (abra's secrets carry no label; one labelled for another
    /// stack is never taken for this one's), all concurrent under one deadline. The same
    /// [`Residue`] the CLI adapter returns.
    pub fn residue(&self, stack: &str, until: Deadline<'_>) -> Result<Residue, EngineError> {
        let label = Scope::Stack(stack).filters();
        let prefix = format!("{stack}_");
        let named = Filters::new().with("name", &prefix);
        let names = |v: Vec<String>| -> Vec<String> {
            let set: BTreeSet<String> = v.into_iter().collect();
            set.into_iter().collect()
        };
        let futs: Vec<Boxed<'_, Vec<String>>> = vec![
            Box::pin(async { Ok(self.services_fut(label.clone(), until).await?.iter().map(service_name).collect()) }),
            Box::pin(async {
                Ok(self.containers_fut(label.clone(), until).await?.iter().map(container_name).collect())
            }),
            Box::pin(async {
                Ok(self.volumes_fut(label.clone(), until).await?.iter().map(|v| v.name.clone()).collect())
            }),
            Box::pin(async {
                Ok(self.secrets_fut(label.clone(), until).await?.iter().map(|s| secret_name(s).to_string()).collect())
            }),
            Box::pin(async {
                Ok(self
                    .secrets_fut(named.clone(), until)
                    .await?
                    .iter()
                    .filter(|s| unlabelled_or(s.spec.as_ref().and_then(|s| s.labels.as_ref()), stack))
                    .map(|s| secret_name(s).to_string())
                    .filter(|n| n.starts_with(&prefix))
                    .collect())
            }),
            Box::pin(async {
                Ok(self.configs_fut(label.clone(), until).await?.iter().map(|c| config_name(c).to_string()).collect())
            }),
            Box::pin(async {
                Ok(self
                    .configs_fut(named.clone(), until)
                    .await?
                    .iter()
                    .filter(|c| unlabelled_or(c.spec.as_ref().and_then(|s| s.labels.as_ref()), stack))
                    .map(|c| config_name(c).to_string())
                    .filter(|n| n.starts_with(&prefix))
                    .collect())
            }),
            Box::pin(async {
                Ok(self.networks_fut(label.clone(), until).await?.iter().filter_map(|n| n.name.clone()).collect())
            }),
        ];
        let mut lists = self.block_on(self.joined(futs, until))?.into_iter();
        let mut next = || lists.next().unwrap_or_default();
        let (services, containers, volumes) = (names(next()), names(next()), names(next()));
        let mut secrets = next();
        secrets.extend(next());
        let mut configs = next();
        configs.extend(next());
        Ok(Residue {
            services,
            containers,
            volumes,
            secrets: names(secrets),
            configs: names(configs),
            networks: names(next()),
        })
    }

    /// Runs requests concurrently on the one runtime; the first error wins and drops the rest.
    /// Connects (and negotiates) once first, so the requests share one negotiated client.
    async fn joined<'a, T>(&'a self, futs: Vec<Boxed<'a, T>>, until: Deadline<'_>) -> Result<Vec<T>, EngineError> {
        self.client(until).await?;
        try_join_all(futs).await
    }

    // --- one future per request kind (composed by the calls above) ---

    async fn services_fut(&self, f: Filters, until: Deadline<'_>) -> Result<Vec<Service>, EngineError> {
        let ep = endpoint("/services", &[], &f);
        let f = &f;
        self.request(ep, until, |d| async move {
            d.list_services(Some(ListServicesOptions { filters: f.to_map(), status: None })).await
        })
        .await
    }

    async fn tasks_fut(&self, service_ids: &[String], until: Deadline<'_>) -> Result<Vec<Task>, EngineError> {
        let f = service_ids.iter().fold(Filters::new(), |f, id| f.with("service", id));
        let ep = endpoint("/tasks", &[], &f);
        let f = &f;
        self.request(ep, until, |d| async move { d.list_tasks(Some(ListTasksOptions { filters: f.to_map() })).await })
            .await
    }

    async fn containers_fut(&self, f: Filters, until: Deadline<'_>) -> Result<Vec<ContainerSummary>, EngineError> {
        let ep = endpoint("/containers/json", &[("all", "true".into())], &f);
        let f = &f;
        self.request(ep, until, |d| async move {
            d.list_containers(Some(ListContainersOptions { all: true, filters: f.to_map(), ..Default::default() }))
                .await
        })
        .await
    }

    async fn volumes_fut(&self, f: Filters, until: Deadline<'_>) -> Result<Vec<Volume>, EngineError> {
        let ep = endpoint("/volumes", &[], &f);
        let f = &f;
        let r =
            self.request(ep, until, |d| async move {
                d.list_volumes(Some(ListVolumesOptions { filters: f.to_map() })).await
            })
            .await?;
        Ok(r.volumes.unwrap_or_default())
    }

    async fn networks_fut(&self, f: Filters, until: Deadline<'_>) -> Result<Vec<Network>, EngineError> {
        let ep = endpoint("/networks", &[], &f);
        let f = &f;
        self.request(
            ep,
            until,
            |d| async move { d.list_networks(Some(ListNetworksOptions { filters: f.to_map() })).await },
        )
        .await
    }

    async fn secrets_fut(&self, f: Filters, until: Deadline<'_>) -> Result<Vec<Secret>, EngineError> {
        let ep = endpoint("/secrets", &[], &f);
        let f = &f;
        self.request(
            ep,
            until,
            |d| async move { d.list_secrets(Some(ListSecretsOptions { filters: f.to_map() })).await },
        )
        .await
    }

    async fn configs_fut(&self, f: Filters, until: Deadline<'_>) -> Result<Vec<Config>, EngineError> {
        let ep = endpoint("/configs", &[], &f);
        let f = &f;
        self.request(
            ep,
            until,
            |d| async move { d.list_configs(Some(ListConfigsOptions { filters: f.to_map() })).await },
        )
        .await
    }

    async fn inspect_container_fut(
        &self,
        id: &str,
        until: Deadline<'_>,
    ) -> Result<Option<ContainerInspectResponse>, EngineError> {
        let ep = endpoint(&format!("/containers/{id}/json"), &[], &Filters::new());
        found(
            self.request(ep, until, |d| async move {
                d.inspect_container(id, Some(InspectContainerOptions { size: false })).await
            })
            .await,
        )
    }

    // --- the machinery: runtime, connection, one bounded request ---

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, EngineError> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = new_runtime().map_err(|e| EngineError::Connect {
            host: self.host_text.clone(),
            endpoint: "-".into(),
            why: format!("cannot start the client runtime: {e}"),
        })?;
        // Two threads racing here both build one; the loser's is dropped unused.
        Ok(self.runtime.get_or_init(|| rt))
    }

    fn block_on<T>(&self, fut: impl Future<Output = Result<T, EngineError>>) -> Result<T, EngineError> {
        self.runtime()?.block_on(fut)
    }

    fn call<T, F, Fut>(&self, ep: String, until: Deadline<'_>, f: F) -> Result<T, EngineError>
    where
        F: Fn(bollard::Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        self.block_on(self.request(ep, until, f))
    }

    /// One request: connect (and negotiate, the first time), then wait for the answer until the
    /// deadline or a cancel. Every request is a read (idempotent): one that finds its pooled
    /// connection closed while it sat idle (dockerd restarted, a proxy cut it — nothing runs
    /// between calls to notice) is sent once more, on a new connection.
    async fn request<T, F, Fut>(&self, ep: String, until: Deadline<'_>, f: F) -> Result<T, EngineError>
    where
        F: Fn(bollard::Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let d = self.client(until).await?;
        match self.drive(&ep, until, f(d.clone())).await {
            Err(EngineError::Broken { .. }) if !until.expired() && until.stopped().is_none() => {
                self.drive(&ep, until, f(d)).await
            }
            r => r,
        }
    }

    /// The connected client, negotiating the API version on first use: bollard speaks the newest
    /// version it knows and steps down to the daemon's (`GET /version`), so dockerd 20.10 is
    /// spoken to as 1.41 and a newer daemon at bollard's own version.
    async fn client(&self, until: Deadline<'_>) -> Result<bollard::Docker, EngineError> {
        if let Some(d) = self.client.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(d);
        }
        let ep = endpoint("/version", &[], &Filters::new());
        let d = connect(&self.host, bollard::API_DEFAULT_VERSION)
            .map_err(|e| EngineError::from_bollard(e, &self.host_text, &ep))?;
        let d = self.drive(&ep, until, d.negotiate_version()).await?;
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(d.clone());
        Ok(d)
    }

    /// Awaits `fut` until the deadline, re-checking the cancel source every [`CANCEL_TICK`].
    /// Dropping the future (on timeout or cancel) closes its connection: dockerd sees the
    /// client go away, and nothing is left running.
    async fn drive<T, Fut>(&self, ep: &str, until: Deadline<'_>, fut: Fut) -> Result<T, EngineError>
    where
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let given = until.remaining();
        let mut fut = pin!(fut);
        loop {
            if let Some(stop) = until.stopped() {
                return Err(EngineError::Cancelled { endpoint: ep.to_string(), stop });
            }
            if until.expired() {
                return Err(EngineError::Timeout {
                    host: self.host_text.clone(),
                    endpoint: ep.to_string(),
                    after: given,
                });
            }
            let tick = pin!(tokio::time::sleep_until(tokio::time::Instant::from_std(until.next_check())));
            if let Either::Left((res, _)) = select(fut.as_mut(), tick).await {
                return res.map_err(|e| EngineError::from_bollard(e, &self.host_text, ep));
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Do not wait for a `tcp://` name lookup still running on the blocking pool.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("host", &self.host_text).finish()
    }
}

/// A current-thread runtime with I/O and timers: no worker threads. (A `tcp://` host name is
/// resolved on tokio's blocking pool, a thread, never a process.)
fn new_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// A bollard client for `host` speaking `version`, on a keep-alive connection pool. No I/O: only
/// a check that a unix socket file exists.
///
/// bollard's own `connect_with_unix`/`connect_with_http` build a hyper client with
/// `pool_max_idle_per_host(0)`: a new connection for every request, which costs dockerd a
/// connection and this process about 0.15 ms of CPU per request (measured: 0.65 ms per
/// readiness look of three requests on fresh connections). The same hyper client with its
/// default pool reuses one idle connection per request in flight; hyper retries a request
/// whose pooled connection turns out closed before it was sent (dockerd restarted). Idle
/// connections live until the `Engine` is dropped (nothing runs between calls to close them).
fn connect(host: &Host, version: &bollard::ClientVersion) -> Result<bollard::Docker, bollard::errors::Error> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    match host {
        Host::Unix(p) => {
            if !p.exists() {
                return Err(bollard::errors::Error::SocketNotFoundError(p.to_string_lossy().into_owned()));
            }
            let client = std::sync::Arc::new(Client::builder(TokioExecutor::new()).build(hyperlocal::UnixConnector));
            let transport = move |req: bollard::BollardRequest| {
                let client = client.clone();
                async move { client.request(req).await.map_err(bollard::errors::Error::from) }
            };
            // hyperlocal's URIs carry the socket path hex-encoded as the host.
            let hex: String = p.as_os_str().as_encoded_bytes().iter().map(|b| format!("{b:02x}")).collect();
            bollard::Docker::connect_with_custom_transport(
                transport,
                Some(format!("unix://{hex}")),
                CLIENT_TIMEOUT_SECS,
                version,
            )
        }
        Host::Tcp(addr) => {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let client = std::sync::Arc::new(Client::builder(TokioExecutor::new()).build(connector));
            let transport = move |req: bollard::BollardRequest| {
                let client = client.clone();
                async move { client.request(req).await.map_err(bollard::errors::Error::from) }
            };
            bollard::Docker::connect_with_custom_transport(
                transport,
                Some(format!("http://{addr}")),
                CLIENT_TIMEOUT_SECS,
                version,
            )
        }
    }
}

/// A 404 on an inspect-by-id means the object is gone: not an error.
fn found<T>(r: Result<T, EngineError>) -> Result<Option<T>, EngineError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(EngineError::Daemon { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn service_name(s: &Service) -> String {
    s.spec.as_ref().and_then(|s| s.name.clone()).or_else(|| s.id.clone()).unwrap_or_default()
}

/// A container's name as `docker ps` prints it (without the API's leading `/`).
pub fn container_name(c: &ContainerSummary) -> String {
    let first = c.names.as_ref().and_then(|n| n.first());
    first.map(|n| n.trim_start_matches('/').to_string()).or_else(|| c.id.clone()).unwrap_or_default()
}

pub fn secret_name(s: &Secret) -> &str {
    s.spec.as_ref().and_then(|s| s.name.as_deref()).unwrap_or("")
}

pub fn config_name(c: &Config) -> &str {
    c.spec.as_ref().and_then(|s| s.name.as_deref()).unwrap_or("")
}

/// Whether an object found by name belongs to `stack`: it carries no namespace label (abra's
/// secrets), or this stack's.
fn unlabelled_or(labels: Option<&std::collections::HashMap<String, String>>, stack: &str) -> bool {
    match labels.and_then(|l| l.get(NS_LABEL)).filter(|v| !v.is_empty()) {
        Some(ns) => ns == stack,
        None => true,
    }
}

fn node_eligible(n: &Node) -> bool {
    let ready = n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY);
    let active = n.spec.as_ref().and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::ACTIVE);
    ready && active
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_split_their_timestamp() {
        let l = LogLine { stream: LogStream::Stdout, line: "2026-11-30T03:50:00.123456789Z hello world".into() };
        assert_eq!(l.timestamp(), Some("2026-11-30T03:50:00.123456789Z"));
        assert_eq!(l.message(), "hello world");
        let bare = LogLine { stream: LogStream::Stderr, line: "no time here".into() };
        assert_eq!((bare.timestamp(), bare.message()), (None, "no time here"));
    }

    #[test]
    fn creating_an_engine_does_no_io() {
        let e = Engine::new(Host::Unix("/nonexistent/docker.sock".into()));
        assert_eq!(format!("{e:?}"), r#"Engine { host: "unix:///nonexistent/docker.sock" }"#);
        assert!(e.runtime.get().is_none());
        match e.services(Scope::AnyStack, Deadline::after(std::time::Duration::from_secs(5))) {
            Err(err @ EngineError::Connect { .. }) => {
                assert!(err.to_string().contains("/nonexistent/docker.sock"), "{err}");
                assert!(err.is_infra());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn eligibility_needs_ready_and_active() {
        let n: Node = serde_json::from_value(serde_json::json!({
            "Status": {"State": "ready"}, "Spec": {"Availability": "active"}
        }))
        .unwrap();
        assert!(node_eligible(&n));
        let drained: Node = serde_json::from_value(serde_json::json!({
            "Status": {"State": "ready"}, "Spec": {"Availability": "drain"}
        }))
        .unwrap();
        assert!(!node_eligible(&drained));
    }

    #[test]
    fn names_as_the_cli_prints_them() {
        let c: ContainerSummary =
            serde_json::from_value(serde_json::json!({"Id": "abc", "Names": ["/s_app.1.x"]})).unwrap();
        assert_eq!(container_name(&c), "s_app.1.x");
        let s: Service = serde_json::from_value(serde_json::json!({"ID": "id1", "Spec": {"Name": "s_app"}})).unwrap();
        assert_eq!(service_name(&s), "s_app");
    }
}
