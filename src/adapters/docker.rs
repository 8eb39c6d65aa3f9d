//! docker: read-only listing and inspect calls, plus `stack rm` and `rm` of stack objects.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::process::{Cmd, ProcessError, Stopped};

/// Docker's label on everything of a stack.
pub const NS_LABEL: &str = "com.docker.stack.namespace";
/// ccci's stamp on the objects of a run app: the lock dir it was locked in.
pub const STAMP_LABEL: &str = "ccci.lock-dir";

#[derive(Debug, Error)]
pub enum DockerError {
    #[error(transparent)]
    Spawn(#[from] ProcessError),
    #[error("{0}")]
    Failed(String),
    #[error("docker: {0}")]
    Stopped(Stopped),
    #[error("cannot parse docker output of `{cmd}`: {err}")]
    Parse { cmd: String, err: String },
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
pub struct Docker {
    program: String,
}

impl Docker {
    pub fn new(program: &str) -> Docker {
        Docker { program: program.to_string() }
    }

    fn cmd(&self, args: &[&str]) -> Cmd {
        Cmd::new(&self.program)
            .name("docker")
            .args(args.iter().copied())
            .level(tracing::Level::DEBUG)
            .capture()
            .hint(" (set CCCI_DOCKER to the docker program)")
    }

    fn query(&self, args: &[&str]) -> Result<String, DockerError> {
        let out = self.cmd(args).run()?;
        if let Some(s) = out.stopped {
            return Err(DockerError::Stopped(s));
        }
        if !out.success() {
            return Err(DockerError::Failed(out.describe()));
        }
        Ok(out.stdout)
    }

    fn lines(&self, args: &[&str]) -> Result<Vec<String>, DockerError> {
        Ok(self.query(args)?.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
    }

    fn json_array(&self, args: &[&str]) -> Result<Vec<Value>, DockerError> {
        let text = self.query(args)?;
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str::<Vec<Value>>(&text)
            .map_err(|e| DockerError::Parse { cmd: format!("docker {}", args.join(" ")), err: e.to_string() })
    }

    pub fn server_version(&self) -> Result<String, DockerError> {
        Ok(self.query(&["version", "--format", "{{.Server.Version}}"])?.trim().to_string())
    }

    /// Everything of the stack: objects carrying its namespace label, and secrets and configs
    /// named `<stack>_…` without any namespace label (abra creates the app's secrets itself,
    /// unlabelled: `docker stack deploy` only references them as external).
    pub fn residue(&self, stack: &str) -> Result<Residue, DockerError> {
        let filter = format!("label={NS_LABEL}={stack}");
        let f = filter.as_str();
        Ok(Residue {
            services: self.lines(&["service", "ls", "--filter", f, "--format", "{{.Name}}"])?,
            containers: self.lines(&["ps", "-a", "--filter", f, "--format", "{{.Names}}"])?,
            volumes: self.lines(&["volume", "ls", "--filter", f, "--format", "{{.Name}}"])?,
            secrets: self.named_objects("secret", stack)?,
            configs: self.named_objects("config", stack)?,
            networks: self.lines(&["network", "ls", "--filter", f, "--format", "{{.Name}}"])?,
        })
    }

    /// `(name, namespace label)` of every secret or config (`kind`); the label is empty when
    /// the object has none.
    fn labelled_names(&self, kind: &str) -> Result<Vec<(String, String)>, DockerError> {
        let fmt = format!("{{{{.Name}}}}\t{{{{.Label \"{NS_LABEL}\"}}}}");
        Ok(self
            .lines(&[kind, "ls", "--format", &fmt])?
            .into_iter()
            .map(|l| match l.split_once('\t') {
                Some((name, ns)) => (name.trim().to_string(), ns.trim().to_string()),
                None => (l.trim().to_string(), String::new()),
            })
            .collect())
    }

    /// Secrets or configs of the stack: labelled with it, or unlabelled and named `<stack>_…`
    /// (an object labelled for another stack is never taken for this one's).
    fn named_objects(&self, kind: &str, stack: &str) -> Result<Vec<String>, DockerError> {
        let prefix = format!("{stack}_");
        Ok(self
            .labelled_names(kind)?
            .into_iter()
            .filter(|(name, ns)| ns == stack || (ns.is_empty() && name.starts_with(&prefix)))
            .map(|(name, _)| name)
            .collect())
    }

    /// Every stack namespace found on any object kind (a SIGKILL between `undeploy` and
    /// `remove` leaves volumes and secrets with no service), and the stacks of unlabelled
    /// secrets and configs as `stack_of_name` reads them from their names.
    pub fn namespaces(&self, stack_of_name: impl Fn(&str) -> Option<String>) -> Result<BTreeSet<String>, DockerError> {
        Ok(self.namespaces_with_stamps(stack_of_name)?.into_keys().collect())
    }

    /// [`Docker::namespaces`], with the lock-dir stamps ([`STAMP_LABEL`]) each stack's objects
    /// carry: ccci's proof that it made the app, and in which lock dir (the janitor reaps an app
    /// without a lockfile only on that proof).
    pub fn namespaces_with_stamps(
        &self,
        stack_of_name: impl Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, DockerError> {
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
            add(self.lines(&[kind, "ls", "--filter", &filter, "--format", &label_fmt])?);
        }
        // abra creates secrets without the stack label: those count by their `<stack>_` name.
        for kind in ["secret", "config"] {
            for (name, ns) in self.labelled_names(kind)? {
                if !ns.is_empty() {
                    add(vec![ns]);
                } else if let Some(stack) = stack_of_name(&name) {
                    add(vec![stack]);
                }
            }
        }
        add(self.lines(&["ps", "-a", "--filter", &filter, "--format", &label_fmt])?);
        let ids = self.lines(&["service", "ls", "-q", "--filter", &filter])?;
        if !ids.is_empty() {
            let fmt =
                format!("{{{{index .Spec.Labels \"{NS_LABEL}\"}}}}\t{{{{index .Spec.Labels \"{STAMP_LABEL}\"}}}}");
            let mut args = vec!["service", "inspect", "--format", fmt.as_str()];
            args.extend(ids.iter().map(String::as_str));
            match self.lines(&args) {
                Ok(lines) => add(lines),
                // A service removed between the listing and the inspect fails the whole call
                // (any stack's, not only a run app's): look at the rest one by one.
                Err(_) => {
                    for id in &ids {
                        if let Ok(lines) = self.lines(&["service", "inspect", "--format", fmt.as_str(), id]) {
                            add(lines);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// `docker service inspect` of every service of the stack.
    pub fn services(&self, stack: &str) -> Result<Vec<Value>, DockerError> {
        let ids = self.service_ids(stack)?;
        self.inspect_services(&ids)
    }

    pub fn service_ids(&self, stack: &str) -> Result<Vec<String>, DockerError> {
        self.lines(&["service", "ls", "-q", "--filter", &format!("label={NS_LABEL}={stack}")])
    }

    /// `docker service inspect` of known service ids (fails when one of them is gone).
    pub fn inspect_services(&self, ids: &[String]) -> Result<Vec<Value>, DockerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["service", "inspect"];
        args.extend(ids.iter().map(String::as_str));
        self.json_array(&args)
    }

    /// Tasks (with history) of the given services, inspected.
    pub fn tasks(&self, service_ids: &[String]) -> Result<Vec<Value>, DockerError> {
        if service_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["service", "ps", "-q", "--no-trunc"];
        args.extend(service_ids.iter().map(String::as_str));
        let ids = self.lines(&args)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["inspect", "--type", "task"];
        args.extend(ids.iter().map(String::as_str));
        self.json_array(&args)
    }

    /// `docker inspect` of containers (for their health).
    pub fn containers(&self, ids: &[String]) -> Result<Vec<Value>, DockerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["inspect", "--type", "container"];
        args.extend(ids.iter().map(String::as_str));
        // A container can vanish between listing and inspecting; docker then fails the whole
        // call, so fall back to one by one.
        match self.json_array(&args) {
            Ok(v) => Ok(v),
            Err(_) => Ok(ids
                .iter()
                .filter_map(|id| self.json_array(&["inspect", "--type", "container", id]).ok())
                .flatten()
                .collect()),
        }
    }

    /// Nodes a global service can run on (ready and active).
    pub fn eligible_nodes(&self) -> Result<usize, DockerError> {
        let nodes = self.lines(&["node", "ls", "--format", "{{.Status}} {{.Availability}}"])?;
        Ok(nodes.iter().filter(|l| l.starts_with("Ready") && l.ends_with("Active")).count().max(1))
    }

    pub fn stack_rm(&self, stack: &str) -> Result<(), DockerError> {
        self.query(&["stack", "rm", stack]).map(|_| ())
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
        self.query(&args).map(|_| ())
    }
}
