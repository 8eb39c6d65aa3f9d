//! docker: ccci's one door to dockerd. Reads (list, inspect, tasks, nodes, version) go to the
//! Engine API ([`crate::adapters::engine`]: typed, bounded, nothing spawned) — or, on a host
//! that sets `CCCI_DOCKER_READS=cli`, to the docker CLI as before, kept for comparison and as a
//! fallback. Writes that abra does not do (`stack rm`, `<kind> rm` of a stack's leftovers) always
//! go to the CLI through the spawn path: every mutation is a line in `run.log` and a stub program
//! can stand in for it in tests.
//!
//! Every read takes a [`Deadline`]: the time left of the wait or budget it serves (and, when the
//! caller watches the lifetime, a cancel). On the CLI path the deadline is the child's timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use super::engine::models::{ContainerInspectResponse, Service, Task};
use super::engine::{Deadline, Engine, EngineError, StackLook};
use crate::process::{Cmd, ProcessError, Stopped};

/// Docker's label on everything of a stack.
pub const NS_LABEL: &str = "com.docker.stack.namespace";
/// ccci's stamp on the objects of a run app: the lock dir it was locked in.
pub const STAMP_LABEL: &str = "ccci.lock-dir";

/// How a read with no wait around it is bounded (a label lookup between steps).
pub const READ_BOUND: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum DockerError {
    /// The docker CLI's own failure (a write, or a read on the CLI path), its output kept.
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("cannot parse docker output of `{cmd}`: {err}")]
    Parse { cmd: String, err: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl DockerError {
    /// Whether dockerd (or the docker CLI) is at fault — unreachable, erroring, too slow,
    /// unreadable — rather than the caller having stopped: CI could not look, the infra verdict.
    pub fn is_infra(&self) -> bool {
        match self {
            DockerError::Engine(e) => e.is_infra(),
            DockerError::Process(e) => match e.stopped() {
                Some(why) => matches!(why, Stopped::TimedOut(_)),
                None => true,
            },
            DockerError::Parse { .. } => true,
        }
    }
}

/// Where reads go (`CCCI_DOCKER_READS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPath {
    /// dockerd's Engine API over `DOCKER_HOST` (the default).
    #[default]
    Api,
    /// The docker CLI, one process per listing or inspect (the path before the Engine API).
    Cli,
}

impl ReadPath {
    pub fn parse(s: &str) -> Option<ReadPath> {
        match s {
            "api" => Some(ReadPath::Api),
            "cli" => Some(ReadPath::Cli),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ReadPath::Api => "api",
            ReadPath::Cli => "cli",
        }
    }
}

/// Objects of a stack that still exist.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Residue {
    pub services: Vec<String>,
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub secrets: Vec<String>,
    pub configs: Vec<String>,
    pub networks: Vec<String>,
}

impl Residue {
    pub fn is_empty(&self) -> bool {
        self.items().is_empty()
    }

    /// `kind:name` entries, for reports.
    pub fn items(&self) -> Vec<String> {
        let kinds: [(&str, &Vec<String>); 6] = [
            ("service", &self.services),
            ("container", &self.containers),
            ("volume", &self.volumes),
            ("secret", &self.secrets),
            ("config", &self.configs),
            ("network", &self.networks),
        ];
        kinds.iter().flat_map(|(k, v)| v.iter().map(move |n| format!("{k}:{n}"))).collect()
    }
}

/// The kinds `docker <kind> rm` removes, in the order a stack must be taken apart.
pub const REMOVABLE: [&str; 4] = ["volume", "secret", "config", "network"];

#[derive(Debug, Clone)]
enum Reads {
    Api(Arc<Engine>),
    Cli,
    /// The API path was asked for but `DOCKER_HOST` cannot be used (config refuses this at
    /// start; kept so a read explains itself instead of guessing another socket).
    Unusable {
        host: String,
        why: String,
    },
}

#[derive(Debug, Clone)]
pub struct Docker {
    program: String,
    reads: Reads,
}

impl Docker {
    /// Reads through the CLI `program` (and writes through it, as always).
    pub fn cli(program: &str) -> Docker {
        Docker { program: program.to_string(), reads: Reads::Cli }
    }

    /// Reads through `engine`, writes through the CLI `program`.
    pub fn api(program: &str, engine: Engine) -> Docker {
        Docker { program: program.to_string(), reads: Reads::Api(Arc::new(engine)) }
    }

    /// The host's choice (`CCCI_DOCKER`, `CCCI_DOCKER_READS`, `DOCKER_HOST`).
    pub fn for_host(host: &crate::config::Host) -> Docker {
        match host.docker_reads {
            ReadPath::Cli => Docker::cli(&host.docker),
            ReadPath::Api => match Engine::from_env() {
                Ok(e) => Docker::api(&host.docker, e),
                Err(EngineError::Config { host: h, why }) => {
                    Docker { program: host.docker.clone(), reads: Reads::Unusable { host: h, why } }
                }
                Err(e) => Docker {
                    program: host.docker.clone(),
                    reads: Reads::Unusable {
                        host: std::env::var("DOCKER_HOST").unwrap_or_default(),
                        why: e.to_string(),
                    },
                },
            },
        }
    }

    pub fn read_path(&self) -> ReadPath {
        match self.reads {
            Reads::Cli => ReadPath::Cli,
            _ => ReadPath::Api,
        }
    }

    /// The Engine API client, on the API path (for event subscriptions).
    pub fn engine(&self) -> Option<&Engine> {
        match &self.reads {
            Reads::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The engine, or why there is none, for a read on the API path (`None`: the CLI path).
    fn api_reads(&self) -> Result<Option<&Engine>, DockerError> {
        match &self.reads {
            Reads::Api(e) => Ok(Some(e)),
            Reads::Cli => Ok(None),
            Reads::Unusable { host, why } => Err(EngineError::Config { host: host.clone(), why: why.clone() }.into()),
        }
    }

    // --- reads ---------------------------------------------------------------------------------

    /// dockerd's version (`20.10.24+dfsg1`).
    pub fn server_version(&self, until: Deadline<'_>) -> Result<String, DockerError> {
        match self.api_reads()? {
            Some(e) => Ok(e.version(until)?.version.unwrap_or_default()),
            None => Ok(self.query(&["version", "--format", "{{.Server.Version}}"], until)?.trim().to_string()),
        }
    }

    /// Everything of the stack: objects carrying its namespace label, and secrets and configs
    /// named `<stack>_…` without any namespace label (abra creates the app's secrets itself,
    /// unlabelled: `docker stack deploy` only references them as external).
    pub fn residue(&self, stack: &str, until: Deadline<'_>) -> Result<Residue, DockerError> {
        if let Some(e) = self.api_reads()? {
            return Ok(e.residue(stack, until)?);
        }
        let filter = format!("label={NS_LABEL}={stack}");
        let f = filter.as_str();
        Ok(Residue {
            services: self.lines(&["service", "ls", "--filter", f, "--format", "{{.Name}}"], until)?,
            containers: self.lines(&["ps", "-a", "--filter", f, "--format", "{{.Names}}"], until)?,
            volumes: self.lines(&["volume", "ls", "--filter", f, "--format", "{{.Name}}"], until)?,
            secrets: self.named_objects("secret", stack, until)?,
            configs: self.named_objects("config", stack, until)?,
            networks: self.lines(&["network", "ls", "--filter", f, "--format", "{{.Name}}"], until)?,
        })
    }

    /// Every stack namespace found on any object kind (a SIGKILL between `undeploy` and
    /// `remove` leaves volumes and secrets with no service), and the stacks of unlabelled
    /// secrets and configs as `stack_of_name` reads them from their names.
    pub fn namespaces(
        &self,
        stack_of_name: impl Fn(&str) -> Option<String>,
        until: Deadline<'_>,
    ) -> Result<BTreeSet<String>, DockerError> {
        Ok(self.namespaces_with_stamps(stack_of_name, until)?.into_keys().collect())
    }

    /// [`Docker::namespaces`], with the lock-dir stamps ([`STAMP_LABEL`]) each stack's objects
    /// carry: ccci's proof that it made the app, and in which lock dir (the janitor reaps an app
    /// without a lockfile only on that proof).
    pub fn namespaces_with_stamps(
        &self,
        stack_of_name: impl Fn(&str) -> Option<String>,
        until: Deadline<'_>,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, DockerError> {
        if let Some(e) = self.api_reads()? {
            return Ok(e.namespaces_with_stamps(STAMP_LABEL, &stack_of_name, until)?);
        }
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut add = |lines: Vec<String>| {
            for line in lines {
                let (ns, stamp) = line.split_once('\t').unwrap_or((line.as_str(), ""));
                if ns.is_empty() {
                    continue;
                }
                let e = out.entry(ns.to_string()).or_default();
                if !stamp.is_empty() && stamp != "<no value>" {
                    e.insert(stamp.to_string());
                }
            }
        };
        let label_fmt = format!("{{{{.Label \"{NS_LABEL}\"}}}}\t{{{{.Label \"{STAMP_LABEL}\"}}}}");
        let filter = format!("label={NS_LABEL}");
        for kind in ["volume", "network"] {
            add(self.lines(&[kind, "ls", "--filter", &filter, "--format", &label_fmt], until)?);
        }
        // abra creates secrets without the stack label: those count by their `<stack>_` name.
        for kind in ["secret", "config"] {
            for (name, ns) in self.labelled_names(kind, until)? {
                if !ns.is_empty() {
                    add(vec![ns]);
                } else if let Some(stack) = stack_of_name(&name) {
                    add(vec![stack]);
                }
            }
        }
        add(self.lines(&["ps", "-a", "--filter", &filter, "--format", &label_fmt], until)?);
        let ids = self.lines(&["service", "ls", "-q", "--filter", &filter], until)?;
        if !ids.is_empty() {
            let fmt =
                format!("{{{{index .Spec.Labels \"{NS_LABEL}\"}}}}\t{{{{index .Spec.Labels \"{STAMP_LABEL}\"}}}}");
            let mut args = vec!["service", "inspect", "--format", fmt.as_str()];
            args.extend(ids.iter().map(String::as_str));
            match self.lines(&args, until) {
                Ok(lines) => add(lines),
                // A service removed between the listing and the inspect fails the whole call
                // (any stack's, not only a run app's): look at the rest one by one.
                Err(_) => {
                    for id in &ids {
                        if let Ok(lines) = self.lines(&["service", "inspect", "--format", fmt.as_str(), id], until) {
                            add(lines);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The services of the stack, typed (full specs).
    pub fn services_of(&self, stack: &str, until: Deadline<'_>) -> Result<Vec<Service>, DockerError> {
        if let Some(e) = self.api_reads()? {
            return Ok(e.services(super::engine::Scope::Stack(stack), until)?);
        }
        let ids = self.service_ids(stack, until)?;
        self.inspect(&["service", "inspect"], &ids, until)
    }

    /// The services of the stack as `docker service inspect` prints them (for label lookups
    /// between steps), bounded by [`READ_BOUND`].
    pub fn services(&self, stack: &str) -> Result<Vec<Value>, DockerError> {
        let services = self.services_of(stack, Deadline::after(READ_BOUND))?;
        services
            .iter()
            .map(|s| {
                serde_json::to_value(s)
                    .map_err(|e| DockerError::Parse { cmd: "service inspect".into(), err: e.to_string() })
            })
            .collect()
    }

    /// One look at the stack for readiness: its services, their tasks (with history) and the
    /// inspected containers of the running and starting tasks. Three requests on the API path; on the CLI
    /// path five docker processes (`service ls`, `service inspect`, `service ps`, `inspect
    /// --type task`, `inspect --type container`).
    pub fn look(&self, stack: &str, until: Deadline<'_>) -> Result<StackLook, DockerError> {
        if let Some(e) = self.api_reads()? {
            return Ok(e.look(stack, until)?);
        }
        let services = self.services_of(stack, until)?;
        let ids: Vec<String> = services.iter().filter_map(|s| s.id.clone()).collect();
        let tasks = self.tasks(&ids, until)?;
        let cids = StackLook::live_containers(&tasks);
        let containers = self.containers(&cids, until)?;
        Ok(StackLook { services, tasks, containers })
    }

    /// Nodes a global service can run on (ready and active), at least 1.
    pub fn eligible_nodes(&self, until: Deadline<'_>) -> Result<usize, DockerError> {
        if let Some(e) = self.api_reads()? {
            return Ok(e.eligible_nodes(until)?);
        }
        let nodes = self.lines(&["node", "ls", "--format", "{{.Status}} {{.Availability}}"], until)?;
        Ok(nodes.iter().filter(|l| l.starts_with("Ready") && l.ends_with("Active")).count().max(1))
    }

    // --- writes (always the CLI, through the spawn path) ----------------------------------------

    pub fn stack_rm(&self, stack: &str) -> Result<(), DockerError> {
        self.run(&["stack", "rm", stack], None).map(|_| ())
    }

    pub fn rm(&self, kind: &str, names: &[String]) -> Result<(), DockerError> {
        if names.is_empty() {
            return Ok(());
        }
        let mut args = vec![kind, "rm"];
        if kind == "container" {
            args.push("-f");
        }
        args.extend(names.iter().map(String::as_str));
        self.run(&args, None).map(|_| ())
    }

    // --- the CLI read path ----------------------------------------------------------------------

    fn cmd(&self, args: &[&str]) -> Cmd {
        Cmd::new(&self.program)
            .name("docker")
            .args(args.iter().copied())
            .level(tracing::Level::DEBUG)
            .capture()
            .hint(" (set CCCI_DOCKER to the docker program)")
    }

    fn run(&self, args: &[&str], timeout: Option<Duration>) -> Result<String, DockerError> {
        let mut cmd = self.cmd(args);
        if let Some(t) = timeout {
            cmd = cmd.timeout(t);
        }
        Ok(cmd.run_checked()?.stdout)
    }

    /// A read: the child is stopped at the deadline (a wedged dockerd no longer holds the run).
    fn query(&self, args: &[&str], until: Deadline<'_>) -> Result<String, DockerError> {
        if until.expired() {
            let cmdline = self.cmd(args).cmdline();
            return Err(ProcessError::Stopped { cmdline, why: Stopped::TimedOut(Duration::ZERO) }.into());
        }
        self.run(args, Some(until.remaining()))
    }

    fn lines(&self, args: &[&str], until: Deadline<'_>) -> Result<Vec<String>, DockerError> {
        Ok(self.query(args, until)?.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
    }

    /// `docker <what…> <ids…>` read into typed models (the CLI prints the API's objects).
    fn inspect<T: DeserializeOwned>(
        &self,
        what: &[&str],
        ids: &[String],
        until: Deadline<'_>,
    ) -> Result<Vec<T>, DockerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = what.to_vec();
        args.extend(ids.iter().map(String::as_str));
        let text = self.query(&args, until)?;
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str::<Vec<T>>(&text)
            .map_err(|e| DockerError::Parse { cmd: format!("docker {}", what.join(" ")), err: e.to_string() })
    }

    /// `(name, namespace label)` of every secret or config (`kind`); the label is empty when
    /// the object has none.
    fn labelled_names(&self, kind: &str, until: Deadline<'_>) -> Result<Vec<(String, String)>, DockerError> {
        let fmt = format!("{{{{.Name}}}}\t{{{{.Label \"{NS_LABEL}\"}}}}");
        Ok(self
            .lines(&[kind, "ls", "--format", &fmt], until)?
            .into_iter()
            .map(|l| match l.split_once('\t') {
                Some((name, ns)) => (name.trim().to_string(), ns.trim().to_string()),
                None => (l.trim().to_string(), String::new()),
            })
            .collect())
    }

    /// Secrets or configs of the stack: labelled with it, or unlabelled and named `<stack>_…`
    /// (an object labelled for another stack is never taken for this one's).
    fn named_objects(&self, kind: &str, stack: &str, until: Deadline<'_>) -> Result<Vec<String>, DockerError> {
        let prefix = format!("{stack}_");
        Ok(self
            .labelled_names(kind, until)?
            .into_iter()
            .filter(|(name, ns)| ns == stack || (ns.is_empty() && name.starts_with(&prefix)))
            .map(|(name, _)| name)
            .collect())
    }

    fn service_ids(&self, stack: &str, until: Deadline<'_>) -> Result<Vec<String>, DockerError> {
        self.lines(&["service", "ls", "-q", "--filter", &format!("label={NS_LABEL}={stack}")], until)
    }

    /// Tasks (with history) of the given services, inspected.
    fn tasks(&self, service_ids: &[String], until: Deadline<'_>) -> Result<Vec<Task>, DockerError> {
        if service_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["service", "ps", "-q", "--no-trunc"];
        args.extend(service_ids.iter().map(String::as_str));
        let ids = self.lines(&args, until)?;
        self.inspect(&["inspect", "--type", "task"], &ids, until)
    }

    /// `docker inspect` of containers (for their health).
    fn containers(&self, ids: &[String], until: Deadline<'_>) -> Result<Vec<ContainerInspectResponse>, DockerError> {
        // A container can vanish between listing and inspecting; docker then fails the whole
        // call, so fall back to one by one.
        match self.inspect(&["inspect", "--type", "container"], ids, until) {
            Ok(v) => Ok(v),
            Err(e) if !e.is_infra() => Err(e),
            Err(_) => Ok(ids
                .iter()
                .filter_map(|id| {
                    self.inspect(&["inspect", "--type", "container"], std::slice::from_ref(id), until).ok()
                })
                .flatten()
                .collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_paths_parse_and_print() {
        assert_eq!(ReadPath::parse("api"), Some(ReadPath::Api));
        assert_eq!(ReadPath::parse("cli"), Some(ReadPath::Cli));
        assert_eq!(ReadPath::parse("API"), None);
        assert_eq!(ReadPath::default().as_str(), "api");
    }

    #[test]
    fn an_unusable_docker_host_explains_itself_on_every_read() {
        let d = Docker {
            program: "docker".into(),
            reads: Reads::Unusable { host: "ssh://x".into(), why: "unsupported scheme".into() },
        };
        let e = d.residue("s", Deadline::after(Duration::from_secs(1))).unwrap_err();
        assert_eq!(e.to_string(), "DOCKER_HOST=ssh://x: unsupported scheme");
        assert!(!e.is_infra());
        assert_eq!(d.read_path(), ReadPath::Api);
        assert!(d.engine().is_none());
    }

    #[test]
    fn timeouts_and_failures_are_infra_cancels_are_not() {
        let stopped = |why| DockerError::from(ProcessError::Stopped { cmdline: "docker ps".into(), why });
        assert!(stopped(Stopped::TimedOut(Duration::from_secs(1))).is_infra());
        assert!(!stopped(Stopped::Cancelled(crate::exit::Cause::Term)).is_infra());
        let output = crate::process::Output {
            name: "docker".into(),
            cmdline: "docker ps".into(),
            ended: crate::process::Ended::Exited(1),
            stdout: String::new(),
            tail: vec!["Cannot connect to the Docker daemon at unix:///var/run/docker.sock.".into()],
            leaky: Vec::new(),
            duration: Duration::ZERO,
        };
        let failed = DockerError::from(output.checked().unwrap_err());
        assert!(failed.is_infra());
        assert_eq!(
            failed.to_string(),
            "`docker ps` exited 1: Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
        );
    }
}
