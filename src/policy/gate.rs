//! The decision: a pure function of the rendered compose config (docker's own loader already
//! merged the files, interpolated them and wrote every mount in long syntax with an absolute
//! source), the app's effective `.env`, the context of the run and the trusted allow-list.
//! No I/O, so every rule is unit-tested on YAML text.
//!
//! It is a decision, not a list of known attacks: a host path is allowed only when it is inside
//! the recipe tree (and read-only) or allow-listed; a network only when it is the app's own or
//! the shared `proxy`; a named volume, secret, config or network only when its name is in the
//! app's stack namespace; a Traefik rule only when every request it can match carries one of the
//! app's hosts; and the keys that hand a container host privileges are refused whatever their
//! value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;
use thiserror::Error;

use crate::dotenv::Assignment;

/// Where and for whom the config will be deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The canonical recipe tree (the working directory of the render).
    pub tree: PathBuf,
    /// The app's domain (`DOMAIN`), e.g. `hell-620c9a.ci.example.org`.
    pub domain: String,
    /// The app's stack name (`STACK_NAME`): the namespace of its docker objects.
    pub stack: String,
    /// The recipe ccci means to deploy: the `.env`'s `RECIPE`/`TYPE` must name it (abra
    /// deploys the recipe they name, which would not be the tree ccci checked). `None` skips
    /// that check (`ccci policy` when no `--recipe` was given).
    pub recipe: Option<String>,
}

/// The operator's loosening, per recipe, from the trusted `ccci.yml` (`policy:`). Each list
/// loosens only its own rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowList {
    /// Host paths that may be bind-mounted: exact paths, or a prefix ending in `/`. Only an
    /// exact entry allows a path on the always-denied list (`/var/run/docker.sock`); `/` is
    /// always exact.
    #[serde(default, rename = "allow_binds")]
    pub binds: Vec<String>,
    /// Capabilities `cap_add` may name (`NET_ADMIN`; a `CAP_` prefix is ignored).
    #[serde(default, rename = "allow_cap_add")]
    pub cap_add: Vec<String>,
    /// External networks beyond `proxy`, by their docker name.
    #[serde(default, rename = "allow_networks")]
    pub networks: Vec<String>,
    /// Traefik hosts beyond the app's domain: `host.example.org` or `*.example.org`.
    #[serde(default, rename = "allow_hosts")]
    pub hosts: Vec<String>,
}

impl AllowList {
    /// Sanity of the operator's entries (a typo must not silently allow more).
    pub fn validate(&self) -> Result<(), String> {
        for b in &self.binds {
            let ok = b.starts_with('/')
                && !b.contains('\0')
                && !b.contains('\n')
                && (b == "/"
                    || b.trim_end_matches('/').split('/').skip(1).all(|c| !c.is_empty() && c != "." && c != ".."));
            if !ok {
                return Err(format!(
                    "policy.allow_binds entry {b:?} must be an absolute host path without `.`, `..` or `//` (a prefix ends in `/`)"
                ));
            }
        }
        for c in &self.cap_add {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                return Err(format!("policy.allow_cap_add entry {c:?} must be a capability name such as NET_ADMIN"));
            }
        }
        for n in &self.networks {
            let ok = n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(format!("policy.allow_networks entry {n:?} must be a docker network name"));
            }
        }
        for h in &self.hosts {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let labels: Vec<&str> = name.split('.').collect();
            let ok = labels.len() >= 2
                && labels.iter().all(|l| {
                    !l.is_empty()
                        && !l.starts_with('-')
                        && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            if !ok {
                return Err(format!(
                    "policy.allow_hosts entry {h:?} must be a lower-case host name with at least two labels, optionally starting with `*.`"
                ));
            }
        }
        Ok(())
    }

    fn allows_cap(&self, cap: &str) -> bool {
        let norm = |c: &str| c.trim().to_ascii_uppercase().trim_start_matches("CAP_").to_string();
        self.cap_add.iter().any(|a| norm(a) == norm(cap))
    }

    fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|pat| match pat.strip_prefix("*.") {
            Some(base) => {
                host.len() > base.len() + 1 && host.ends_with(base) && host[..host.len() - base.len()].ends_with('.')
            }
            None => host == pat,
        })
    }
}

/// One rule of the gate. Its serde name is what `results.json` and `--json` carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    DeniedHostPath,
    BindOutsideTree,
    WritableTreeBind,
    MountType,
    VolumeDriver,
    VolumeDriverOpts,
    ForeignObject,
    ExternalNetwork,
    NetworkDriver,
    SharedNetworkAlias,
    NetworkMode,
    CapAdd,
    Devices,
    SecurityOpt,
    Sysctls,
    Privileged,
    HostNamespace,
    CgroupParent,
    FileOutsideTree,
    EnvFileOutsideTree,
    TraefikHost,
    TraefikRule,
    TraefikUdp,
    TraefikCertresolver,
    TraefikService,
    TraefikName,
    EnvStackName,
    EnvDomain,
    EnvRecipe,
    EnvUnassigned,
}

impl Rule {
    pub const ALL: &[Rule] = &[
        Rule::DeniedHostPath,
        Rule::BindOutsideTree,
        Rule::WritableTreeBind,
        Rule::MountType,
        Rule::VolumeDriver,
        Rule::VolumeDriverOpts,
        Rule::ForeignObject,
        Rule::ExternalNetwork,
        Rule::NetworkDriver,
        Rule::SharedNetworkAlias,
        Rule::NetworkMode,
        Rule::CapAdd,
        Rule::Devices,
        Rule::SecurityOpt,
        Rule::Sysctls,
        Rule::Privileged,
        Rule::HostNamespace,
        Rule::CgroupParent,
        Rule::FileOutsideTree,
        Rule::EnvFileOutsideTree,
        Rule::TraefikHost,
        Rule::TraefikRule,
        Rule::TraefikUdp,
        Rule::TraefikCertresolver,
        Rule::TraefikService,
        Rule::TraefikName,
        Rule::EnvStackName,
        Rule::EnvDomain,
        Rule::EnvRecipe,
        Rule::EnvUnassigned,
    ];

    /// The kebab-case name (as serialised).
    pub fn name(self) -> &'static str {
        match self {
            Rule::DeniedHostPath => "denied-host-path",
            Rule::BindOutsideTree => "bind-outside-tree",
            Rule::WritableTreeBind => "writable-tree-bind",
            Rule::MountType => "mount-type",
            Rule::VolumeDriver => "volume-driver",
            Rule::VolumeDriverOpts => "volume-driver-opts",
            Rule::ForeignObject => "foreign-object",
            Rule::ExternalNetwork => "external-network",
            Rule::NetworkDriver => "network-driver",
            Rule::SharedNetworkAlias => "shared-network-alias",
            Rule::NetworkMode => "network-mode",
            Rule::CapAdd => "cap-add",
            Rule::Devices => "devices",
            Rule::SecurityOpt => "security-opt",
            Rule::Sysctls => "sysctls",
            Rule::Privileged => "privileged",
            Rule::HostNamespace => "host-namespace",
            Rule::CgroupParent => "cgroup-parent",
            Rule::FileOutsideTree => "file-outside-tree",
            Rule::EnvFileOutsideTree => "env-file-outside-tree",
            Rule::TraefikHost => "traefik-host",
            Rule::TraefikRule => "traefik-rule",
            Rule::TraefikUdp => "traefik-udp",
            Rule::TraefikCertresolver => "traefik-certresolver",
            Rule::TraefikService => "traefik-service",
            Rule::TraefikName => "traefik-name",
            Rule::EnvStackName => "env-stack-name",
            Rule::EnvDomain => "env-domain",
            Rule::EnvRecipe => "env-recipe",
            Rule::EnvUnassigned => "env-unassigned",
        }
    }

    /// What the rule refuses and why, for people.
    pub fn description(self) -> &'static str {
        match self {
            Rule::DeniedHostPath => {
                "a host path that is never mounted: the docker or containerd socket, /, /etc, /root, /run, /var/run, /var/lib/docker, /proc, /sys, /dev, anything under them or a parent of them (root on the host)"
            }
            Rule::BindOutsideTree => {
                "a bind mount of a host path outside the recipe tree (the container would read or write the CI host)"
            }
            Rule::WritableTreeBind => {
                "a writable bind mount of the recipe tree that another bind of the tree lies inside (or that lies inside another writable one): the container could replace that inner path with a link to a host path, which dockerd follows when it mounts it again (a restart); mount the outer one read-only (`:ro`) or bind disjoint paths"
            }
            Rule::MountType => "a mount type other than bind, volume, tmpfs or npipe",
            Rule::VolumeDriver => "a volume driver other than `local` (a plugin mounts what it likes on the host)",
            Rule::VolumeDriverOpts => {
                "volume driver_opts that mount a host path, device or remote filesystem (`type: none`, `o: bind`, `device:`); only a tmpfs volume may set them"
            }
            Rule::ForeignObject => {
                "a volume, secret, config or network named outside the app's stack namespace (another app's data or secrets)"
            }
            Rule::ExternalNetwork => {
                "an external network other than `proxy` (`host` and `bridge` give host networking; others reach other apps)"
            }
            Rule::NetworkDriver => {
                "a stack network with a driver other than overlay (macvlan, ipvlan, host, bridge reach the host's networks)"
            }
            Rule::SharedNetworkAlias => {
                "a DNS alias or fixed address on a shared network, which can take traffic meant for another app"
            }
            Rule::NetworkMode => "network_mode, which takes the container out of the stack's networks",
            Rule::CapAdd => "an added Linux capability not on the allow-list",
            Rule::Devices => "a host device passed into the container",
            Rule::SecurityOpt => "a security option other than no-new-privileges (e.g. apparmor or seccomp unconfined)",
            Rule::Sysctls => "kernel parameters set for the container",
            Rule::Privileged => "a privileged container",
            Rule::HostNamespace => "the host's (or another container's) pid, ipc, user or cgroup namespace",
            Rule::CgroupParent => "a cgroup parent chosen by the recipe",
            Rule::FileOutsideTree => {
                "a config or secret read from a file outside the recipe tree (its content would be copied into the swarm)"
            }
            Rule::EnvFileOutsideTree => {
                "an env_file outside the recipe tree (its content would be copied into the container)"
            }
            Rule::TraefikHost => {
                "a Traefik rule or TLS domain naming a host other than the app's domain or a subdomain of it"
            }
            Rule::TraefikRule => {
                "a Traefik rule that is not limited to the app's hosts (a catch-all such as HostSNI(`*`), a regexp, a negation, or no host at all)"
            }
            Rule::TraefikUdp => "a Traefik UDP router (UDP has no host to route by, so it captures a whole entrypoint)",
            Rule::TraefikCertresolver => {
                "a non-empty Traefik certresolver (test apps never request certificates; ccci writes LETS_ENCRYPT_ENV empty)"
            }
            Rule::TraefikService => {
                "a Traefik router or middleware that sends requests outside the app (another provider's or app's service, an internal API, a URL)"
            }
            Rule::TraefikName => {
                "a Traefik router, service or middleware name outside the app's stack name (names are global on the shared proxy, so a clash knocks out another app's route)"
            }
            Rule::EnvStackName => {
                "a STACK_NAME in the app's .env other than the one ccci computed (abra would deploy into another stack)"
            }
            Rule::EnvDomain => "a DOMAIN in the app's .env other than the one ccci computed",
            Rule::EnvRecipe => {
                "a RECIPE or TYPE in the app's .env naming another recipe (abra would deploy a tree ccci did not check)"
            }
            Rule::EnvUnassigned => {
                "a .env value expanding a variable the file never assigned (abra may fill it from its own environment, so ccci cannot know the value)"
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One refused setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Violation {
    /// The compose service, `(top level)` for an unused top-level object, `(.env)` for the
    /// app's environment.
    pub service: String,
    /// Where in the rendered config: `volumes`, `deploy.labels.traefik.http.routers.x.rule`,
    /// `networks.hostnet`, …
    pub key: String,
    pub value: String,
    pub rule: Rule,
    /// The file, where known (the renderer merges the compose files and does not say which
    /// one a setting came from; callers fill it for the `.env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The specific reason, when the rule's description is not enough (which host, which path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        write!(f, "service {}: {} = {} ({}", self.service, self.key, self.value, self.rule)?;
        match &self.detail {
            Some(d) => write!(f, ": {d})"),
            None => write!(f, ": {})", self.rule.description()),
        }
    }
}

/// What the gate found. Serialises as `{checked, violations}` (the `policy` of results.json).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// How many services were checked.
    #[serde(rename = "checked")]
    pub services: usize,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn allowed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The one-line reason of a refusal, starting `policy:`; `None` when allowed.
    pub fn reason(&self) -> Option<String> {
        let first = self.violations.first()?;
        let more = match self.violations.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Some(format!("policy: refused {first}{more}; see docs/security.md"))
    }
}

#[derive(Debug, Error)]
pub enum GateError {
    /// The renderer's output is not a compose config ccci can read. Fail closed: nothing is
    /// deployed. The message keeps serde's path and position but drops the quoted values (the
    /// rendered config holds interpolated `.env` values, which may be secrets).
    #[error(
        "the rendered compose config cannot be checked: {0}; nothing is deployed (this is a bug in ccci or a docker CLI ccci does not know)"
    )]
    Parse(String),
}

// ---- the rendered config, typed where its shape is fixed ------------------------------------

#[derive(Debug, Default, Deserialize)]
struct Compose {
    /// Always printed by the renderer (`services: {}` when there are none): its absence means
    /// the text is not a rendered config (a help text, an error), and nothing is allowed.
    services: Option<BTreeMap<String, Option<Service>>>,
    #[serde(default)]
    networks: BTreeMap<String, Option<Network>>,
    #[serde(default)]
    volumes: BTreeMap<String, Option<Volume>>,
    #[serde(default)]
    secrets: BTreeMap<String, Option<FileObject>>,
    #[serde(default)]
    configs: BTreeMap<String, Option<FileObject>>,
    /// Other top-level keys: only `version` and `x-` extensions are expected.
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

impl Compose {
    fn services(&self) -> impl Iterator<Item = (&String, &Service)> {
        self.services.iter().flatten().filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    }
}

#[derive(Debug, Default, Deserialize)]
struct Service {
    #[serde(default)]
    volumes: Vec<MountSpec>,
    #[serde(default)]
    networks: Option<Value>,
    #[serde(default)]
    network_mode: Option<Value>,
    #[serde(default)]
    cap_add: Vec<Value>,
    #[serde(default)]
    devices: Vec<Value>,
    #[serde(default)]
    security_opt: Vec<Value>,
    #[serde(default)]
    sysctls: Option<Value>,
    #[serde(default)]
    privileged: Option<Value>,
    #[serde(default)]
    pid: Option<Value>,
    #[serde(default)]
    ipc: Option<Value>,
    #[serde(default)]
    userns_mode: Option<Value>,
    #[serde(default)]
    cgroup: Option<Value>,
    #[serde(default)]
    cgroup_parent: Option<Value>,
    #[serde(default)]
    env_file: Option<Value>,
    #[serde(default)]
    labels: Option<Value>,
    #[serde(default)]
    deploy: Option<Deploy>,
    #[serde(default)]
    configs: Vec<Value>,
    #[serde(default)]
    secrets: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Deploy {
    #[serde(default)]
    labels: Option<Value>,
}

/// A service mount: long syntax in rendered output; short syntax is understood too, so the
/// gate stays safe on input that did not go through the renderer.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MountSpec {
    Long(Mount),
    Short(String),
}

#[derive(Debug, Default, Deserialize)]
struct Mount {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    read_only: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Network {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    external: Option<Value>,
    #[serde(default)]
    driver: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Volume {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    external: Option<Value>,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    driver_opts: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
struct FileObject {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    external: Option<Value>,
    #[serde(default)]
    file: Option<String>,
}

/// `external: true`, or the old `external: {name: x}` form (then also its name).
fn external_of(v: &Option<Value>) -> (bool, Option<String>) {
    match v {
        Some(Value::Bool(b)) => (*b, None),
        Some(Value::String(s)) => (s == "true", None),
        Some(Value::Mapping(m)) => (true, m.get("name").and_then(Value::as_str).map(str::to_string)),
        _ => (false, None),
    }
}

fn truthy(v: &Option<Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1"),
        Some(Value::Number(n)) => n.as_i64() != Some(0),
        _ => false,
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

fn opt_scalar(v: &Option<Value>) -> String {
    v.as_ref().map(scalar).unwrap_or_default()
}

/// A string or a list of strings.
fn strings(v: &Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(s)) => s.iter().map(scalar).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![scalar(other)],
    }
}

/// Labels as a map or as a `KEY=value` list.
fn labels(v: &Option<Value>) -> Vec<(String, String)> {
    match v {
        Some(Value::Mapping(m)) => m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|e| {
                let e = scalar(e);
                match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e, String::new()),
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A service's networks with their settings (`[a, b]` or `{a: {aliases: …}}`).
fn service_networks(v: &Option<Value>) -> Vec<(String, Option<Value>)> {
    match v {
        Some(Value::Sequence(s)) => s.iter().map(|n| (scalar(n), None)).collect(),
        Some(Value::Mapping(m)) => m.iter().map(|(k, v)| (scalar(k), Some(v.clone()))).collect(),
        _ => Vec::new(),
    }
}

/// The top-level key a service's `configs`/`secrets` entry refers to.
fn object_source(v: &Value) -> String {
    match v {
        Value::Mapping(m) => m.get("source").map(scalar).unwrap_or_default(),
        other => scalar(other),
    }
}

// ---- host paths ------------------------------------------------------------------------------

/// Directories no container gets, whatever the tree or an allow-list prefix says: each one is
/// root on the host (the docker socket lives under /run and /var/run; /var/run is a link to
/// /run, so both are named). A parent of one (`/`, `/var`, `/var/lib`) counts too.
const DENIED_DIRS: &[&str] = &["/etc", "/root", "/run", "/var/run", "/var/lib/docker", "/proc", "/sys", "/dev"];
/// Sockets that are the container engine: a path ending in one is root on the host wherever it
/// is mounted from.
const DENIED_SOCKETS: &[&str] = &["docker.sock", "containerd.sock"];

/// `path` made absolute (relative to `base`) and normalised lexically: `.` and empty components
/// vanish, `..` pops (never above `/`). Lexical on purpose: the gate does no I/O, and the tree
/// check has already refused links that leave the tree, so `tree/a/../..` is judged as the
/// parent of the tree it names.
pub fn normalize(path: &str, base: &str) -> String {
    let joined = if path.starts_with('/') { path.to_string() } else { format!("{base}/{path}") };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn under(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.starts_with(&format!("{dir}/"))
}

fn always_denied(path: &str) -> bool {
    path == "/"
        || DENIED_SOCKETS.iter().any(|s| path.ends_with(s))
        || DENIED_DIRS.iter().any(|d| under(path, d) || under(d, path))
}

struct Checker<'a> {
    ctx: &'a Context,
    allow: &'a AllowList,
    tree: String,
    out: Vec<Violation>,
    /// Binds of paths inside the tree: `(service, normalised path, read-only, as written)`.
    tree_binds: Vec<(String, String, bool, String)>,
}

impl Checker<'_> {
    fn push(
        &mut self,
        service: &str,
        key: impl Into<String>,
        value: impl Into<String>,
        rule: Rule,
        detail: Option<String>,
    ) {
        self.out.push(Violation {
            service: service.to_string(),
            key: key.into(),
            value: value.into(),
            rule,
            file: None,
            detail,
        });
    }

    fn inside_tree(&self, path: &str) -> bool {
        under(path, &self.tree)
    }

    /// A host path a container would see: allowed exactly, never, in the tree, by prefix.
    fn bind(&mut self, service: &str, source: &str, target: &str, read_only: bool) {
        let path = normalize(source, &self.tree);
        let shown = format!("{source}:{target}{}", if read_only { ":ro" } else { "" });
        let detail = (path != source).then(|| format!("{source} is the host path {path}"));
        if self.allow.binds.contains(&path) {
            return;
        }
        if always_denied(&path) || source.starts_with('~') {
            self.push(service, "volumes", shown, Rule::DeniedHostPath, detail);
        } else if self.inside_tree(&path) {
            // Judged once every bind is known (`tree_binds`): a writable bind of the tree is
            // fine alone, dangerous with another bind inside it.
            self.tree_binds.push((service.to_string(), path, read_only, shown));
        } else if !self.allow.binds.iter().any(|b| b.len() > 1 && b.ends_with('/') && path.starts_with(b.as_str())) {
            let d = detail.unwrap_or_else(|| format!("{path} is outside the recipe tree {}", self.tree));
            self.push(service, "volumes", shown, Rule::BindOutsideTree, Some(d));
        }
    }

    /// A writable bind of the tree lets its container change the tree under it. What it writes
    /// there is its own business — except a path another bind of the tree mounts: the container
    /// can swap that path for a link to `/`, and dockerd follows it when it mounts the inner one
    /// again (a restart, another service's task). Compose files and the upgrade's tree are not
    /// at risk: the head is deployed from a fresh copy of the tree, re-checked.
    fn nested_tree_binds(&mut self) {
        let binds = std::mem::take(&mut self.tree_binds);
        for (service, path, ro, shown) in &binds {
            if *ro {
                continue;
            }
            let inner = binds.iter().find(|(_, p, _, _)| p != path && under(p, path));
            let outer = binds.iter().find(|(_, p, r, _)| !*r && p != path && under(path, p));
            if let Some((s, _, _, other)) = inner.or(outer) {
                let detail = format!("{other} (service {s}) is inside or around this writable bind");
                self.push(service, "volumes", shown.clone(), Rule::WritableTreeBind, Some(detail));
            }
        }
    }

    /// A file docker or abra reads on the host (config/secret `file:`, `env_file`).
    fn host_file(&mut self, service: &str, key: &str, file: &str, outside: Rule) {
        let path = normalize(file, &self.tree);
        if always_denied(&path) {
            self.push(service, key, file, Rule::DeniedHostPath, (path != file).then(|| format!("{file} is {path}")));
        } else if !self.inside_tree(&path) {
            self.push(service, key, file, outside, Some(format!("{path} is outside the recipe tree {}", self.tree)));
        }
    }

    fn in_namespace(&self, name: &str) -> bool {
        name.starts_with(&format!("{}_", self.ctx.stack))
    }

    fn mount(&mut self, service: &str, m: &MountSpec) {
        match m {
            MountSpec::Short(s) => {
                // `[SOURCE:]TARGET[:MODE]`; a source that is a path (not a volume name) is a bind.
                let parts: Vec<&str> = s.split(':').collect();
                if parts.len() < 2 {
                    return;
                }
                let source = parts[0];
                let mode = parts.get(2).copied().unwrap_or("");
                if source.starts_with(['/', '.', '~']) {
                    let ro = mode.split(',').any(|m| m == "ro");
                    self.bind(service, source, parts[1], ro);
                }
            }
            MountSpec::Long(m) => {
                let source = m.source.clone().unwrap_or_default();
                let target = m.target.clone().unwrap_or_default();
                let ro = truthy(&m.read_only);
                match m.kind.as_deref() {
                    Some("bind") => self.bind(service, &source, &target, ro),
                    // A volume's source is a volume name (checked at the top level); a path there
                    // is judged as the host path it looks like.
                    Some("volume") if source.starts_with(['/', '.', '~']) => self.bind(service, &source, &target, ro),
                    // tmpfs and npipe take no host path; one given anyway is judged as a bind.
                    Some("tmpfs" | "npipe") if !source.is_empty() => self.bind(service, &source, &target, ro),
                    Some("volume" | "tmpfs" | "npipe") => {}
                    other => {
                        let kind = other.unwrap_or("(none)");
                        self.push(service, "volumes", format!("type {kind}: {source}:{target}"), Rule::MountType, None);
                    }
                }
            }
        }
    }

    fn service(&mut self, name: &str, s: &Service, externals: &BTreeSet<String>) {
        for m in &s.volumes {
            self.mount(name, m);
        }
        if let Some(mode) = s.network_mode.as_ref().map(scalar).filter(|m| !m.is_empty()) {
            self.push(name, "network_mode", mode, Rule::NetworkMode, None);
        }
        for (net, settings) in service_networks(&s.networks) {
            if !externals.contains(&net) {
                continue;
            }
            if let Some(Value::Mapping(m)) = settings {
                for key in ["aliases", "ipv4_address", "ipv6_address"] {
                    for v in strings(&m.get(key).cloned()) {
                        self.push(name, format!("networks.{net}.{key}"), v, Rule::SharedNetworkAlias, None);
                    }
                }
            }
        }
        for cap in s.cap_add.iter().map(scalar) {
            if !self.allow.allows_cap(&cap) {
                self.push(name, "cap_add", cap, Rule::CapAdd, None);
            }
        }
        for d in s.devices.iter().map(scalar) {
            self.push(name, "devices", d, Rule::Devices, None);
        }
        for o in s.security_opt.iter().map(scalar) {
            // The one option that only takes privileges away.
            let hardening =
                matches!(o.as_str(), "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true");
            if !hardening {
                self.push(name, "security_opt", o, Rule::SecurityOpt, None);
            }
        }
        match &s.sysctls {
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    self.push(name, "sysctls", format!("{}={}", scalar(k), scalar(v)), Rule::Sysctls, None);
                }
            }
            Some(Value::Sequence(l)) => {
                for v in l {
                    self.push(name, "sysctls", scalar(v), Rule::Sysctls, None);
                }
            }
            _ => {}
        }
        if truthy(&s.privileged) {
            self.push(name, "privileged", opt_scalar(&s.privileged), Rule::Privileged, None);
        }
        let namespaces: [(&str, &Option<Value>, &[&str]); 4] = [
            ("pid", &s.pid, &[]),
            ("ipc", &s.ipc, &["private", "shareable", "none"]),
            ("userns_mode", &s.userns_mode, &[]),
            ("cgroup", &s.cgroup, &["private"]),
        ];
        for (key, v, private) in namespaces {
            let v = opt_scalar(v);
            if !v.is_empty() && !private.contains(&v.as_str()) {
                self.push(name, key, v, Rule::HostNamespace, None);
            }
        }
        if let Some(p) = s.cgroup_parent.as_ref().map(scalar).filter(|p| !p.is_empty()) {
            self.push(name, "cgroup_parent", p, Rule::CgroupParent, None);
        }
        for f in strings(&s.env_file) {
            self.host_file(name, "env_file", &f, Rule::EnvFileOutsideTree);
        }
    }

    fn volumes(&mut self, doc: &Compose, users: &Users) {
        for (key, v) in &doc.volumes {
            let empty = Volume::default();
            let v = v.as_ref().unwrap_or(&empty);
            let who = users.of("volumes", key);
            let (external, old_name) = external_of(&v.external);
            if external || v.name.is_some() {
                let name = v.name.clone().or(old_name).unwrap_or_else(|| key.clone());
                if !self.in_namespace(&name) {
                    let d = format!("{name} is not in the stack namespace {}_", self.ctx.stack);
                    self.push(&who, format!("volumes.{key}.name"), name, Rule::ForeignObject, Some(d));
                }
            }
            if external {
                continue;
            }
            if let Some(d) = v.driver.as_deref().filter(|d| *d != "local") {
                self.push(&who, format!("volumes.{key}.driver"), d, Rule::VolumeDriver, None);
            }
            if !v.driver_opts.is_empty() {
                let opts: BTreeMap<String, String> =
                    v.driver_opts.iter().map(|(k, v)| (k.to_ascii_lowercase(), scalar(v))).collect();
                // A tmpfs volume is memory, not a host path: the one use of driver_opts allowed.
                let tmpfs = opts.get("type").map(String::as_str) == Some("tmpfs")
                    && opts.get("device").map(String::as_str) == Some("tmpfs")
                    && opts.keys().all(|k| ["type", "device", "o"].contains(&k.as_str()))
                    && !opts.get("o").is_some_and(|o| o.split(',').any(|o| o.trim().contains("bind")));
                if !tmpfs {
                    let shown = opts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
                    self.push(&who, format!("volumes.{key}.driver_opts"), shown, Rule::VolumeDriverOpts, None);
                }
            }
        }
    }

    fn networks(&mut self, doc: &Compose, users: &Users) {
        for (key, n) in &doc.networks {
            let empty = Network::default();
            let n = n.as_ref().unwrap_or(&empty);
            let who = users.of("networks", key);
            let (external, old_name) = external_of(&n.external);
            if external {
                let name = n.name.clone().or(old_name).unwrap_or_else(|| key.clone());
                if name != "proxy" && !self.allow.networks.contains(&name) {
                    let d = match name.as_str() {
                        "host" => "the host network: the container shares the CI host's network stack".to_string(),
                        "bridge" => "docker's default bridge on the CI host".to_string(),
                        _ => format!("{name} is not `proxy` nor in allow_networks"),
                    };
                    self.push(&who, format!("networks.{key}"), name, Rule::ExternalNetwork, Some(d));
                }
                continue;
            }
            if let Some(d) = n.driver.as_deref().filter(|d| *d != "overlay") {
                self.push(&who, format!("networks.{key}.driver"), d, Rule::NetworkDriver, None);
            }
            if let Some(name) = n.name.as_deref().filter(|name| !self.in_namespace(name)) {
                let d = format!("{name} is not in the stack namespace {}_", self.ctx.stack);
                self.push(&who, format!("networks.{key}.name"), name, Rule::ForeignObject, Some(d));
            }
        }
    }

    fn files(&mut self, section: &str, objects: &BTreeMap<String, Option<FileObject>>, users: &Users) {
        for (key, o) in objects {
            let Some(o) = o else { continue };
            let who = users.of(section, key);
            let (external, old_name) = external_of(&o.external);
            if external || o.name.is_some() {
                let name = o.name.clone().or(old_name).unwrap_or_else(|| key.clone());
                if !self.in_namespace(&name) {
                    let d = format!("{name} is not in the stack namespace {}_", self.ctx.stack);
                    self.push(&who, format!("{section}.{key}.name"), name, Rule::ForeignObject, Some(d));
                }
            }
            if let Some(f) = &o.file {
                self.host_file(&who, &format!("{section}.{key}.file"), f, Rule::FileOutsideTree);
            }
        }
    }

    fn env(&mut self, env: &BTreeMap<String, String>) {
        let svc = "(.env)";
        if let Some(s) = env.get("STACK_NAME").filter(|s| **s != self.ctx.stack) {
            let d = format!("ccci computed {}", self.ctx.stack);
            self.push(svc, "STACK_NAME", s.clone(), Rule::EnvStackName, Some(d));
        }
        if let Some(s) = env.get("DOMAIN").filter(|s| **s != self.ctx.domain) {
            let d = format!("ccci computed {}", self.ctx.domain);
            self.push(svc, "DOMAIN", s.clone(), Rule::EnvDomain, Some(d));
        }
        if let Some(recipe) = self.ctx.recipe.clone() {
            for key in ["RECIPE", "TYPE"] {
                // `TYPE=<recipe>:<version>` after abra wrote the deployed version back.
                if let Some(v) = env.get(key).filter(|v| v.split(':').next() != Some(recipe.as_str())) {
                    let d = format!("the recipe under test is {recipe}");
                    self.push(svc, key, v.clone(), Rule::EnvRecipe, Some(d));
                }
            }
        }
    }
}

/// Which services use each top-level object, so a violation there names them.
struct Users(BTreeMap<(String, String), BTreeSet<String>>);

impl Users {
    fn of_doc(doc: &Compose) -> Users {
        let mut m: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (name, s) in doc.services() {
            let mut add = |section: &str, key: String| {
                m.entry((section.to_string(), key)).or_default().insert(name.clone());
            };
            for v in &s.volumes {
                if let MountSpec::Long(Mount { kind: Some(k), source: Some(src), .. }) = v
                    && k == "volume"
                {
                    add("volumes", src.clone());
                }
                if let MountSpec::Short(s) = v
                    && let Some((src, _)) = s.split_once(':')
                {
                    add("volumes", src.to_string());
                }
            }
            for (n, _) in service_networks(&s.networks) {
                add("networks", n);
            }
            if s.networks.is_none() && s.network_mode.is_none() {
                add("networks", "default".to_string());
            }
            for c in &s.configs {
                add("configs", object_source(c));
            }
            for c in &s.secrets {
                add("secrets", object_source(c));
            }
        }
        Users(m)
    }

    fn of(&self, section: &str, key: &str) -> String {
        match self.0.get(&(section.to_string(), key.to_string())) {
            Some(s) if !s.is_empty() => s.iter().cloned().collect::<Vec<_>>().join(","),
            _ => "(top level)".to_string(),
        }
    }
}

// ---- Traefik ---------------------------------------------------------------------------------

/// A parsed Traefik rule: matchers combined with `&&`, `||`, `!` and parentheses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleExpr {
    And(Box<RuleExpr>, Box<RuleExpr>),
    Or(Box<RuleExpr>, Box<RuleExpr>),
    Not(Box<RuleExpr>),
    Matcher { name: String, args: Vec<String> },
}

/// Parses a Traefik (v2/v3) router rule. Strings are back-quoted or double-quoted.
pub fn parse_traefik_rule(rule: &str) -> Result<RuleExpr, String> {
    struct P<'a> {
        s: &'a [u8],
        i: usize,
        depth: usize,
    }
    impl P<'_> {
        fn ws(&mut self) {
            while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
        }
        fn eat(&mut self, t: &str) -> bool {
            self.ws();
            if self.s[self.i..].starts_with(t.as_bytes()) {
                self.i += t.len();
                true
            } else {
                false
            }
        }
        fn or(&mut self) -> Result<RuleExpr, String> {
            self.depth += 1;
            if self.depth > 64 {
                return Err("nested too deeply".into());
            }
            let mut left = self.and()?;
            while self.eat("||") {
                left = RuleExpr::Or(Box::new(left), Box::new(self.and()?));
            }
            self.depth -= 1;
            Ok(left)
        }
        fn and(&mut self) -> Result<RuleExpr, String> {
            let mut left = self.unary()?;
            while self.eat("&&") {
                left = RuleExpr::And(Box::new(left), Box::new(self.unary()?));
            }
            Ok(left)
        }
        fn unary(&mut self) -> Result<RuleExpr, String> {
            if self.eat("!") {
                self.depth += 1;
                if self.depth > 64 {
                    return Err("nested too deeply".into());
                }
                let e = self.unary()?;
                self.depth -= 1;
                return Ok(RuleExpr::Not(Box::new(e)));
            }
            if self.eat("(") {
                let e = self.or()?;
                if !self.eat(")") {
                    return Err(format!("expected `)` at {}", self.i));
                }
                return Ok(e);
            }
            self.matcher()
        }
        fn matcher(&mut self) -> Result<RuleExpr, String> {
            self.ws();
            let start = self.i;
            while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_') {
                self.i += 1;
            }
            if start == self.i {
                return Err(format!("expected a matcher at {start}"));
            }
            let name = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
            if !self.eat("(") {
                return Err(format!("expected `(` after {name}"));
            }
            let mut args = Vec::new();
            if self.eat(")") {
                return Ok(RuleExpr::Matcher { name, args });
            }
            loop {
                args.push(self.string()?);
                if self.eat(",") {
                    continue;
                }
                if self.eat(")") {
                    return Ok(RuleExpr::Matcher { name, args });
                }
                return Err(format!("expected `,` or `)` in {name}(…)"));
            }
        }
        fn string(&mut self) -> Result<String, String> {
            self.ws();
            let quote = *self.s.get(self.i).ok_or("unexpected end")?;
            if quote != b'`' && quote != b'"' {
                return Err(format!("expected a quoted string at {}", self.i));
            }
            self.i += 1;
            let mut out = Vec::new();
            while self.i < self.s.len() {
                let c = self.s[self.i];
                self.i += 1;
                if c == quote {
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                if c == b'\\' && quote == b'"' && self.i < self.s.len() {
                    out.push(self.s[self.i]);
                    self.i += 1;
                    continue;
                }
                out.push(c);
            }
            Err("unterminated string".into())
        }
    }
    let mut p = P { s: rule.as_bytes(), i: 0, depth: 0 };
    let e = p.or()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected text at {}", p.i));
    }
    Ok(e)
}

const HOST_MATCHERS: &[&str] = &["host", "hostheader", "hostsni"];
const REGEXP_MATCHERS: &[&str] = &["hostregexp", "hostsniregexp"];

/// Every request the rule matches carries one of the hosts its host matchers name: `&&` needs
/// one side bounded, `||` both, and a negation never is.
fn bounded(e: &RuleExpr) -> bool {
    match e {
        RuleExpr::And(a, b) => bounded(a) || bounded(b),
        RuleExpr::Or(a, b) => bounded(a) && bounded(b),
        RuleExpr::Not(_) => false,
        RuleExpr::Matcher { name, args } => {
            HOST_MATCHERS.contains(&name.to_ascii_lowercase().as_str())
                && !args.is_empty()
                && args.iter().all(|a| a.trim() != "*")
        }
    }
}

/// The host literals of every host matcher, and whether a regexp matcher appears anywhere.
fn rule_hosts(e: &RuleExpr, hosts: &mut Vec<String>, regexp: &mut bool) {
    match e {
        RuleExpr::And(a, b) | RuleExpr::Or(a, b) => {
            rule_hosts(a, hosts, regexp);
            rule_hosts(b, hosts, regexp);
        }
        RuleExpr::Not(a) => rule_hosts(a, hosts, regexp),
        RuleExpr::Matcher { name, args } => {
            let name = name.to_ascii_lowercase();
            if HOST_MATCHERS.contains(&name.as_str()) {
                hosts.extend(args.iter().cloned());
            } else if REGEXP_MATCHERS.contains(&name.as_str()) {
                *regexp = true;
            }
        }
    }
}

/// Traefik protocols whose labels define routers, services and middlewares.
const TRAEFIK_PROTOCOLS: &[&str] = &["http", "tcp", "udp"];
const TRAEFIK_KINDS: &[&str] = &["routers", "services", "middlewares"];

impl Checker<'_> {
    fn host_ok(&self, host: &str) -> bool {
        let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
        // A TLS domain may be a wildcard: `*.x` is fine when `x` is.
        let h = h.strip_prefix("*.").unwrap_or(&h);
        let domain = self.ctx.domain.to_ascii_lowercase();
        h == domain || h.ends_with(&format!(".{domain}")) || self.allow.allows_host(h)
    }

    fn foreign_hosts<'h>(&self, hosts: impl IntoIterator<Item = &'h str>) -> Vec<String> {
        hosts.into_iter().filter(|h| h.trim() != "*" && !self.host_ok(h)).map(str::to_string).collect()
    }

    fn hosts_detail(&self, foreign: &[String]) -> String {
        format!("{} is not {} nor a subdomain of it, nor in allow_hosts", foreign.join(", "), self.ctx.domain)
    }

    fn traefik_rule(&mut self, service: &str, key: &str, value: &str) {
        let expr = match parse_traefik_rule(value) {
            Ok(e) => e,
            Err(why) => {
                self.push(service, key, value, Rule::TraefikRule, Some(format!("cannot be parsed ({why})")));
                return;
            }
        };
        let (mut hosts, mut regexp) = (Vec::new(), false);
        rule_hosts(&expr, &mut hosts, &mut regexp);
        let foreign = self.foreign_hosts(hosts.iter().map(String::as_str));
        if !foreign.is_empty() {
            let d = self.hosts_detail(&foreign);
            self.push(service, key, value, Rule::TraefikHost, Some(d));
        }
        let why = if regexp {
            Some("a host regexp can match any host")
        } else if hosts.iter().any(|h| h.trim() == "*") {
            Some("HostSNI(`*`) is a catch-all")
        } else if !bounded(&expr) {
            Some("it matches requests for hosts other than the ones it names")
        } else {
            None
        };
        if let Some(why) = why {
            self.push(service, key, value, Rule::TraefikRule, Some(why.to_string()));
        }
    }

    /// `value` names a Traefik service this app defines (or Traefik's no-op service).
    fn traefik_service_ref(&mut self, service: &str, key: &str, value: &str, defined: &BTreeSet<String>) {
        let v = value.trim().to_ascii_lowercase();
        if v.is_empty() || v == "noop@internal" {
            return;
        }
        let detail = if v.contains('@') {
            format!("{value} is a service of another provider (`@internal` is Traefik's own API)")
        } else if !defined.contains(&v) {
            format!("{value} is not a Traefik service this app defines")
        } else {
            return;
        };
        self.push(service, key, value, Rule::TraefikService, Some(detail));
    }

    fn traefik(&mut self, doc: &Compose) {
        // Every label of every service, from both places Traefik reads them (the swarm provider
        // reads service labels, the docker provider container labels).
        let mut all: Vec<(String, String, String, String)> = Vec::new();
        for (name, s) in doc.services() {
            for (k, v) in labels(&s.labels) {
                all.push((name.clone(), format!("labels.{k}"), k.to_ascii_lowercase(), v));
            }
            for (k, v) in labels(&s.deploy.as_ref().and_then(|d| d.labels.clone())) {
                all.push((name.clone(), format!("deploy.labels.{k}"), k.to_ascii_lowercase(), v));
            }
        }
        let defined: BTreeSet<String> = all
            .iter()
            .filter_map(|(_, _, k, _)| {
                let p: Vec<&str> = k.split('.').collect();
                (p.len() >= 5 && p[0] == "traefik" && TRAEFIK_PROTOCOLS.contains(&p[1]) && p[2] == "services")
                    .then(|| p[3].to_string())
            })
            .collect();
        let stack = self.ctx.stack.to_ascii_lowercase();
        let mut named: BTreeSet<(String, String)> = BTreeSet::new();
        for (svc, key, lower, value) in &all {
            let p: Vec<&str> = lower.split('.').collect();
            if p.first() != Some(&"traefik") {
                continue;
            }
            if value.to_ascii_lowercase().contains("@internal") && !value.trim().eq_ignore_ascii_case("noop@internal") {
                self.push(svc, key.as_str(), value.as_str(), Rule::TraefikService, Some("Traefik's own API".into()));
                continue;
            }
            if p.len() < 4 || !TRAEFIK_PROTOCOLS.contains(&p[1]) || !TRAEFIK_KINDS.contains(&p[2]) {
                continue;
            }
            let (proto, kind, name) = (p[1], p[2], p[3]);
            let field = p[4..].join(".");
            // Once per router, service or middleware, not once per label of it.
            if !name.starts_with(&stack) && named.insert((svc.clone(), p[..4].join("."))) {
                let d = format!("{name} does not start with the stack name {stack}");
                self.push(svc, key.as_str(), value.as_str(), Rule::TraefikName, Some(d));
            }
            match (proto, kind) {
                ("udp", "routers") => self.push(svc, key.as_str(), value.as_str(), Rule::TraefikUdp, None),
                (_, "routers") if field == "rule" => self.traefik_rule(svc, key, value),
                (_, "routers") if field == "tls.certresolver" && !value.trim().is_empty() => {
                    self.push(svc, key.as_str(), value.as_str(), Rule::TraefikCertresolver, None)
                }
                (_, "routers")
                    if field.starts_with("tls.domains") && (field.ends_with(".main") || field.ends_with(".sans")) =>
                {
                    let foreign = self.foreign_hosts(value.split(','));
                    if !foreign.is_empty() || value.split(',').any(|h| h.trim() == "*") {
                        let d = self.hosts_detail(&foreign);
                        self.push(svc, key.as_str(), value.as_str(), Rule::TraefikHost, Some(d));
                    }
                }
                (_, "routers" | "middlewares") if field == "service" || field.ends_with(".service") => {
                    self.traefik_service_ref(svc, key, value, &defined)
                }
                (_, "services")
                    if ["mirroring.", "weighted.", "failover."].iter().any(|p| field.starts_with(p))
                        && (field.ends_with(".service")
                            || field.ends_with(".name")
                            || field.ends_with(".fallback")) =>
                {
                    // Mirroring, weighted and failover services refer to other services by name.
                    self.traefik_service_ref(svc, key, value, &defined)
                }
                (_, "services") if field.ends_with(".url") || field.ends_with(".address") => {
                    let d = "a backend address chosen by the recipe instead of the app's own containers".to_string();
                    self.push(svc, key.as_str(), value.as_str(), Rule::TraefikService, Some(d));
                }
                (_, "middlewares") if field.contains("forwardauth.address") => {
                    let d = "Traefik would send every request's headers to this address".to_string();
                    self.push(svc, key.as_str(), value.as_str(), Rule::TraefikService, Some(d));
                }
                _ => {}
            }
        }
    }
}

/// The gate. `rendered` is `docker stack config` output; `env` the app's effective `.env` (after
/// abra.sh's exports, as abra merges them). An `Err` means the config could not be read: treat
/// it as a refusal.
pub fn check(
    rendered: &str,
    env: &BTreeMap<String, String>,
    ctx: &Context,
    allow: &AllowList,
) -> Result<Report, GateError> {
    let doc: Compose =
        serde_yaml_ng::from_str(rendered).map_err(|e| GateError::Parse(redact_quoted(&e.to_string())))?;
    if doc.services.is_none() {
        return Err(GateError::Parse("it has no `services` key".into()));
    }
    if let Some(k) = doc.other.keys().find(|k| *k != "version" && !k.starts_with("x-")) {
        return Err(GateError::Parse(format!("it has the unknown top-level key {k:?}")));
    }
    let tree = normalize(&ctx.tree.to_string_lossy(), "/");
    let mut c = Checker { ctx, allow, tree, out: Vec::new(), tree_binds: Vec::new() };
    let users = Users::of_doc(&doc);
    let externals: BTreeSet<String> = doc
        .networks
        .iter()
        .filter(|(_, n)| n.as_ref().is_some_and(|n| external_of(&n.external).0))
        .map(|(k, _)| k.clone())
        .collect();
    for (name, s) in doc.services() {
        c.service(name, s, &externals);
    }
    c.volumes(&doc, &users);
    c.networks(&doc, &users);
    c.files("secrets", &doc.secrets, &users);
    c.files("configs", &doc.configs, &users);
    c.traefik(&doc);
    c.env(env);
    c.nested_tree_binds();
    Ok(Report { services: doc.services().count(), violations: c.out })
}

/// The `.env` lines whose values expanded a variable the file never assigned (see
/// [`crate::dotenv::Assignment::unassigned`]). Pure, like [`check`]; its violations belong in the
/// same report.
pub fn check_assignments(assignments: &[Assignment]) -> Vec<Violation> {
    assignments
        .iter()
        .filter(|a| !a.unassigned.is_empty())
        .map(|a| Violation {
            service: "(.env)".into(),
            key: a.key.clone(),
            value: a.value.clone(),
            rule: Rule::EnvUnassigned,
            file: None,
            detail: Some(format!("line {} expands {} before any line assigns it", a.line, a.unassigned.join(", "))),
        })
        .collect()
}

/// serde's message with quoted values replaced by `…`: paths and positions stay, content goes.
fn redact_quoted(msg: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for c in msg.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '"' || c == '`' => {
                out.push(c);
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = "/srv/ccci/runs/r1/recipe";
    const DOMAIN: &str = "hell-620c9a.ci.example.org";
    const STACK: &str = "hell-620c9a_ci_example_org";

    fn ctx() -> Context {
        Context { tree: TREE.into(), domain: DOMAIN.into(), stack: STACK.into(), recipe: Some("hello".into()) }
    }

    /// `{tree}`, `{domain}`, `{stack}` filled in.
    fn fill(yaml: &str) -> String {
        let yaml = yaml.replace("{tree}", TREE).replace("{domain}", DOMAIN).replace("{stack}", STACK);
        let yaml = yaml.replace("{DOMAIN}", &DOMAIN.to_uppercase());
        // The renderer always prints `services:`; snippets about top-level objects leave it out.
        if yaml.contains("services:") { yaml } else { format!("services: {{}}\n{yaml}") }
    }

    fn report_with(yaml: &str, allow: &AllowList) -> Report {
        check(&fill(yaml), &BTreeMap::new(), &ctx(), allow).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    fn rules_with(yaml: &str, allow: &AllowList) -> Vec<Rule> {
        report_with(yaml, allow).violations.iter().map(|v| v.rule).collect()
    }

    fn rules(yaml: &str) -> Vec<Rule> {
        rules_with(yaml, &AllowList::default())
    }

    /// The hello fixture as `docker stack config` 28.x renders it (captured on this project's
    /// CI host), with a run's names.
    const HELLO: &str = r#"version: "3.8"
services:
  app:
    command:
      - /bin/httpd
      - -f
    configs:
      - source: index
        target: /www/index.html
    deploy:
      labels:
        backupbot.backup: "true"
        coop-cloud.{stack}.timeout: "120"
        coop-cloud.{stack}.version: 1.1.0+1
    healthcheck:
      test:
        - CMD
        - /bin/wget
      timeout: 1s
    image: ccci-fixture-busybox:1
    ports:
      - mode: host
        target: 8080
        published: 18080
        protocol: tcp
    secrets:
      - source: api_key
    stop_grace_period: 1s
    volumes:
      - type: volume
        source: data
        target: /data
volumes:
  data: {}
secrets:
  api_key:
    name: {stack}_api_key_v1
    external: true
configs:
  index:
    name: {stack}_index_v3
    file: {tree}/index.html
"#;

    /// Real Co-op Cloud idioms, rendered: each must pass with no allow-list.
    const BENIGN: &[(&str, &str)] = &[
        ("the hello fixture", HELLO),
        (
            "external proxy network and an internal one",
            "services:\n  app:\n    image: x\n    networks:\n      internal: null\n      proxy: null\nnetworks:\n  internal: {}\n  proxy:\n    name: proxy\n    external: true\n",
        ),
        (
            "relative read-only binds inside the tree",
            "services:\n  web:\n    image: nginx\n    volumes:\n      - type: bind\n        source: {tree}/nginx.conf\n        target: /etc/nginx/nginx.conf\n        read_only: true\n      - type: bind\n        source: {tree}/conf.d\n        target: /etc/nginx/conf.d\n        read_only: true\n",
        ),
        (
            "relative writable binds inside the tree, disjoint",
            "services:\n  app:\n    image: x\n    volumes:\n      - type: bind\n        source: {tree}/data\n        target: /data\n      - type: bind\n        source: {tree}/uploads\n        target: /uploads\n  worker:\n    image: x\n    volumes:\n      - type: bind\n        source: {tree}/data\n        target: /data\n",
        ),
        (
            "configs from files in the tree, a golang template",
            "services:\n  app:\n    image: x\n    configs:\n      - source: entrypoint\n        target: /docker-entrypoint.sh\n        mode: 365\nconfigs:\n  entrypoint:\n    name: {stack}_entrypoint_v2\n    file: {tree}/entrypoint.sh.tmpl\n    template_driver: golang\n  nested:\n    name: {stack}_tune_v1\n    file: {tree}/postgres/postgres.conf.tmpl\n",
        ),
        (
            "STACK_NAME-named external secrets",
            "services:\n  app:\n    image: x\n    secrets:\n      - source: db_password\n        target: db_password\nsecrets:\n  db_password:\n    name: {stack}_db_password_v1\n    external: true\n  key:\n    name: {stack}_secret_key_base_v2\n    external: true\n",
        ),
        (
            "Traefik labels of a Co-op Cloud recipe, certresolver rendered empty",
            "services:\n  app:\n    image: x\n    networks:\n      proxy: null\n    deploy:\n      labels:\n        traefik.enable: \"true\"\n        traefik.http.services.{stack}.loadbalancer.server.port: \"4000\"\n        traefik.http.routers.{stack}.rule: Host(`{domain}`)\n        traefik.http.routers.{stack}.entrypoints: web-secure\n        traefik.http.routers.{stack}.tls.certresolver: \"\"\n        traefik.http.routers.{stack}.middlewares: {stack}-redirect\n        traefik.http.middlewares.{stack}-redirect.headers.SSLForceHost: \"true\"\n        traefik.http.middlewares.{stack}-redirect.headers.SSLHost: {domain}\n        traefik.docker.network: proxy\nnetworks:\n  proxy:\n    name: proxy\n    external: true\n",
        ),
        (
            "EXTRA_DOMAINS, a path rule and a redirect router to noop@internal",
            "services:\n  app:\n    image: x\n    deploy:\n      labels:\n        traefik.http.routers.{stack}.rule: Host(`{domain}`, `www.{domain}`)\n        traefik.http.routers.{stack}-api.rule: Host(`{DOMAIN}`) && (PathPrefix(`/api`) || Path(`/health`))\n        traefik.http.routers.{stack}-www.rule: Host(\"www.{domain}.\")\n        traefik.http.routers.{stack}-www.service: noop@internal\n        traefik.http.routers.{stack}-svc.rule: Host(`{domain}`)\n        traefik.http.routers.{stack}-svc.service: {stack}-web\n        traefik.http.services.{stack}-web.loadbalancer.server.port: \"80\"\n        traefik.http.routers.{stack}-tls.tls.domains[0].main: \"*.{domain}\"\n        traefik.http.routers.{stack}-tls.tls.domains[0].sans: a.{domain},b.{domain}\n",
        ),
        (
            "a TCP router with HostSNI of the app's own domain",
            "services:\n  db:\n    image: x\n    deploy:\n      labels:\n        traefik.tcp.routers.{stack}-db.rule: HostSNI(`db.{domain}`)\n        traefik.tcp.routers.{stack}-db.tls.passthrough: \"true\"\n        traefik.tcp.services.{stack}-db.loadbalancer.server.port: \"5432\"\n",
        ),
        (
            "backupbot labels with hooks",
            "services:\n  db:\n    image: postgres\n    volumes:\n      - type: volume\n        source: postgres\n        target: /var/lib/postgresql/data\n    deploy:\n      labels:\n        backupbot.backup: \"true\"\n        backupbot.backup.pre-hook: /pg_backup.sh backup\n        backupbot.backup.volumes.postgres.path: backup.sql\n        backupbot.restore.post-hook: /pg_backup.sh restore\nvolumes:\n  postgres: {}\n",
        ),
        (
            "tmpfs mounts and a tmpfs volume",
            "services:\n  app:\n    image: x\n    tmpfs:\n      - /run\n    volumes:\n      - type: tmpfs\n        target: /cache\n      - type: volume\n        source: scratch\n        target: /scratch\n      - type: volume\n        target: /anonymous\nvolumes:\n  scratch:\n    driver: local\n    driver_opts:\n      type: tmpfs\n      device: tmpfs\n      o: size=100m,uid=1000\n",
        ),
        (
            "hardening: cap_drop, no-new-privileges, read_only, private namespaces",
            "services:\n  app:\n    image: x\n    cap_drop:\n      - ALL\n    security_opt:\n      - no-new-privileges:true\n    read_only: true\n    ipc: private\n    privileged: false\n    user: \"1000\"\n",
        ),
        (
            "stack-namespaced named volume and network, overlay driver",
            "services:\n  app:\n    image: x\n    networks:\n      backend:\n        aliases:\n          - db\n    volumes:\n      - type: volume\n        source: data\n        target: /data\nnetworks:\n  backend:\n    name: {stack}_backend\n    driver: overlay\n    attachable: true\nvolumes:\n  data:\n    name: {stack}_data\n  old:\n    external: true\n    name: {stack}_old\n",
        ),
        (
            "env_file inside the tree, relative and absolute",
            "services:\n  app:\n    image: x\n    env_file:\n      - app.env\n      - {tree}/env/extra.env\n",
        ),
        ("no services", "version: \"3.8\"\nservices: {}\n"),
        (
            "list-syntax labels and short-syntax named volumes (input that skipped the renderer)",
            "services:\n  app:\n    image: x\n    volumes:\n      - data:/data\n      - ./conf:/conf:ro\n    labels:\n      - traefik.http.routers.{stack}.rule=Host(`{domain}`)\n      - coop-cloud.{stack}.version=1.0.0\nvolumes:\n  data: {}\n",
        ),
    ];

    #[test]
    fn benign_configs_pass() {
        assert!(BENIGN.len() >= 10);
        for (name, yaml) in BENIGN {
            let r = report_with(yaml, &AllowList::default());
            assert!(r.allowed(), "{name}: {:#?}", r.violations);
        }
        assert_eq!(report_with(HELLO, &AllowList::default()).services, 1);
    }

    /// Hostile snippets and the rule each must trip (every violation listed, in order).
    fn hostile() -> Vec<(&'static str, String, Vec<Rule>)> {
        use Rule::*;
        let svc = |body: &str| format!("services:\n  app:\n    image: x\n{body}");
        let bind = |source: &str, ro: bool| {
            svc(&format!(
                "    volumes:\n      - type: bind\n        source: {source}\n        target: /mnt\n{}",
                if ro { "        read_only: true\n" } else { "" }
            ))
        };
        let label =
            |k: &str, v: &str| svc(&format!("    deploy:\n      labels:\n        {k}: '{}'\n", v.replace('\'', "''")));
        let router = |v: &str| label("traefik.http.routers.{stack}.rule", v);
        vec![
            ("the docker socket", bind("/var/run/docker.sock", false), vec![DeniedHostPath]),
            ("the docker socket, read-only", bind("/var/run/docker.sock", true), vec![DeniedHostPath]),
            ("/ at /host", bind("/", false), vec![DeniedHostPath]),
            ("/etc", bind("/etc", true), vec![DeniedHostPath]),
            ("a file under /etc", bind("/etc/ccci/env", true), vec![DeniedHostPath]),
            ("/root/.docker", bind("/root/.docker", true), vec![DeniedHostPath]),
            ("/run/secrets", bind("/run/secrets", true), vec![DeniedHostPath]),
            ("docker's data", bind("/var/lib/docker/volumes", true), vec![DeniedHostPath]),
            ("/var, a parent of docker's data", bind("/var", true), vec![DeniedHostPath]),
            ("/proc", bind("/proc", true), vec![DeniedHostPath]),
            ("/sys/fs/cgroup", bind("/sys/fs/cgroup", true), vec![DeniedHostPath]),
            ("/dev/sda", bind("/dev/sda", false), vec![DeniedHostPath]),
            ("containerd's socket", bind("/run/containerd/containerd.sock", false), vec![DeniedHostPath]),
            ("a docker.sock anywhere", bind("/srv/proxy/docker.sock", false), vec![DeniedHostPath]),
            ("../../.. out of the tree to /", bind("{tree}/../../../../..", true), vec![DeniedHostPath]),
            ("../.. out of the tree", bind("{tree}/../../other-run", true), vec![BindOutsideTree]),
            ("a sibling with the tree's name as prefix", bind("{tree}-evil/x", true), vec![BindOutsideTree]),
            ("a home directory", bind("/home/alice", true), vec![BindOutsideTree]),
            (
                "a writable bind of the tree with another bind inside it",
                svc("    volumes:\n      - ./data:/data\n      - ./data/sub:/sub:ro\n"),
                vec![WritableTreeBind],
            ),
            (
                "the tree itself writable, and a bind inside it",
                svc("    volumes:\n      - .:/src\n      - ./conf:/conf:ro\n"),
                vec![WritableTreeBind],
            ),
            (
                "short syntax from the home dir",
                svc("    volumes:\n      - ~/.ssh:/root/.ssh:ro\n"),
                vec![DeniedHostPath],
            ),
            ("short syntax docker.sock", svc("    volumes:\n      - /var/run/docker.sock:/s\n"), vec![DeniedHostPath]),
            (
                "a volume mount whose source is a path",
                svc("    volumes:\n      - type: volume\n        source: /etc\n        target: /e\n"),
                vec![DeniedHostPath],
            ),
            (
                "a tmpfs mount with a host source",
                svc("    volumes:\n      - type: tmpfs\n        source: /etc\n        target: /e\n"),
                vec![DeniedHostPath],
            ),
            (
                "an unknown mount type",
                svc("    volumes:\n      - type: cluster\n        source: csi\n        target: /c\n"),
                vec![MountType],
            ),
            (
                "a named volume that binds /etc",
                svc("    volumes:\n      - type: volume\n        source: v\n        target: /v\nvolumes:\n  v:\n    driver_opts:\n      type: none\n      o: bind\n      device: /etc\n"),
                vec![VolumeDriverOpts],
            ),
            (
                "an NFS volume",
                "volumes:\n  v:\n    driver: local\n    driver_opts:\n      type: nfs\n      o: addr=10.0.0.1,rw\n      device: \":/export\"\n".into(),
                vec![VolumeDriverOpts],
            ),
            (
                "a tmpfs volume smuggling a bind",
                "volumes:\n  v:\n    driver_opts:\n      type: tmpfs\n      device: tmpfs\n      o: bind\n".into(),
                vec![VolumeDriverOpts],
            ),
            ("a volume plugin", "volumes:\n  v:\n    driver: rexray/ebs\n".into(), vec![VolumeDriver]),
            (
                "another app's volume, external",
                "volumes:\n  v:\n    external: true\n    name: warm-keycloak_ci_example_org_postgres\n".into(),
                vec![ForeignObject],
            ),
            ("another app's volume by name", "volumes:\n  v:\n    name: warm_app_data\n".into(), vec![ForeignObject]),
            (
                "external network host",
                svc("    networks:\n      hostnet: null\nnetworks:\n  hostnet:\n    name: host\n    external: true\n"),
                vec![ExternalNetwork],
            ),
            ("external network bridge", "networks:\n  bridge:\n    name: bridge\n    external: true\n".into(), vec![ExternalNetwork]),
            (
                "a network keyed proxy but named otherwise",
                "networks:\n  proxy:\n    name: warm-keycloak_ci_example_org_internal\n    external: true\n".into(),
                vec![ExternalNetwork],
            ),
            (
                "the old external form",
                "networks:\n  n:\n    external:\n      name: host\n".into(),
                vec![ExternalNetwork],
            ),
            ("a macvlan network", "networks:\n  lan:\n    driver: macvlan\n".into(), vec![NetworkDriver]),
            (
                "a stack network named like another app's",
                "networks:\n  internal:\n    name: warm_internal\n".into(),
                vec![ForeignObject],
            ),
            (
                "an alias on the shared proxy network",
                svc("    networks:\n      proxy:\n        aliases:\n          - traefik\nnetworks:\n  proxy:\n    name: proxy\n    external: true\n"),
                vec![SharedNetworkAlias],
            ),
            ("network_mode host", svc("    network_mode: host\n"), vec![NetworkMode]),
            ("network_mode of another container", svc("    network_mode: container:abc\n"), vec![NetworkMode]),
            ("cap_add", svc("    cap_add:\n      - SYS_ADMIN\n      - NET_ADMIN\n"), vec![CapAdd, CapAdd]),
            ("devices", svc("    devices:\n      - /dev/sda:/dev/sda\n"), vec![Devices]),
            ("security_opt", svc("    security_opt:\n      - apparmor:unconfined\n"), vec![SecurityOpt]),
            ("sysctls", svc("    sysctls:\n      kernel.core_pattern: \"|/bin/sh\"\n"), vec![Sysctls]),
            ("privileged", svc("    privileged: true\n"), vec![Privileged]),
            (
                "host namespaces",
                svc("    pid: host\n    ipc: host\n    userns_mode: host\n    cgroup: host\n"),
                vec![HostNamespace, HostNamespace, HostNamespace, HostNamespace],
            ),
            ("another container's pid namespace", svc("    pid: container:warm\n"), vec![HostNamespace]),
            ("cgroup_parent", svc("    cgroup_parent: /system.slice\n"), vec![CgroupParent]),
            ("a config from /etc/passwd", "configs:\n  c:\n    name: {stack}_c_v1\n    file: /etc/passwd\n".into(), vec![DeniedHostPath]),
            (
                "a config from outside the tree",
                "configs:\n  c:\n    name: {stack}_c_v1\n    file: /srv/ccci/runs/r2/recipe/secret\n".into(),
                vec![FileOutsideTree],
            ),
            (
                "a secret file up out of the tree",
                "secrets:\n  s:\n    name: {stack}_s_v1\n    file: {tree}/../../secret\n".into(),
                vec![FileOutsideTree],
            ),
            (
                "another app's secret",
                "secrets:\n  s:\n    name: warm-keycloak_ci_example_org_db_password_v1\n    external: true\n".into(),
                vec![ForeignObject],
            ),
            ("an external config by its key", "configs:\n  traefik_conf:\n    external: true\n".into(), vec![ForeignObject]),
            ("env_file from /etc", svc("    env_file:\n      - /etc/ccci/env\n"), vec![DeniedHostPath]),
            ("env_file up out of the tree", svc("    env_file:\n      - ../../other/.env\n"), vec![EnvFileOutsideTree]),
            ("a foreign host", router("Host(`evil.example.com`)"), vec![TraefikHost]),
            ("a foreign host beside the app's", router("Host(`{domain}`) || Host(`ci.example.org`)"), vec![TraefikHost]),
            ("a foreign host among Host's arguments", router("Host(`{domain}`, `dashboard.example.org`)"), vec![TraefikHost]),
            ("upper-case foreign host", router("Host(`EVIL.example.com`)"), vec![TraefikHost]),
            ("a look-alike without the dot", router("Host(`evil{domain}`)"), vec![TraefikHost]),
            ("the app's domain as a prefix", router("Host(`{domain}.evil.com`)"), vec![TraefikHost]),
            ("the parent domain", router("Host(`example.org`)"), vec![TraefikHost]),
            ("a catch-all SNI", label("traefik.tcp.routers.{stack}.rule", "HostSNI(`*`)"), vec![TraefikRule]),
            ("a host regexp", router("HostRegexp(`{sub:[a-z]+}.{domain}`)"), vec![TraefikRule]),
            ("no host at all", router("PathPrefix(`/`)"), vec![TraefikRule]),
            ("the app's host or any path", router("Host(`{domain}`) || PathPrefix(`/`)"), vec![TraefikRule]),
            ("a negation", router("!Host(`x.{domain}`)"), vec![TraefikRule]),
            ("a Host header matcher", router("Headers(`Host`, `evil.com`)"), vec![TraefikRule]),
            ("an unparsable rule", router("Host(`{domain}`"), vec![TraefikRule]),
            ("a certresolver", label("traefik.http.routers.{stack}.tls.certresolver", "production"), vec![TraefikCertresolver]),
            (
                "a foreign TLS domain",
                label("traefik.http.routers.{stack}.tls.domains[0].sans", "a.{domain},evil.com"),
                vec![TraefikHost],
            ),
            ("a UDP router", label("traefik.udp.routers.{stack}.entrypoints", "dns"), vec![TraefikUdp]),
            ("Traefik's own API", label("traefik.http.routers.{stack}.service", "api@internal"), vec![TraefikService]),
            (
                "another app's Traefik service",
                label("traefik.http.routers.{stack}.service", "warm-keycloak_ci_example_org"),
                vec![TraefikService],
            ),
            (
                "a backend URL",
                label("traefik.http.services.{stack}.loadbalancer.server.url", "http://127.0.0.1:2375"),
                vec![TraefikService],
            ),
            (
                "a forward-auth address",
                label("traefik.http.middlewares.{stack}-auth.forwardauth.address", "http://attacker.example/collect"),
                vec![TraefikService],
            ),
            ("a router named like another app's", label("traefik.http.routers.warm-keycloak.entrypoints", "web-secure"), vec![TraefikName]),
            (
                "container labels are checked too",
                svc("    labels:\n      traefik.http.routers.{stack}.rule: Host(`evil.example.com`)\n"),
                vec![TraefikHost],
            ),
            (
                "list-syntax labels are checked too",
                svc("    deploy:\n      labels:\n        - traefik.http.routers.{stack}.rule=Host(`evil.example.com`)\n"),
                vec![TraefikHost],
            ),
            (
                "label keys are case-insensitive",
                label("traefik.http.routers.{stack}.Rule", "Host(`evil.example.com`)"),
                vec![TraefikHost],
            ),
        ]
    }

    #[test]
    fn hostile_configs_are_refused_by_the_rule_that_says_why() {
        let cases = hostile();
        assert!(cases.len() >= 30);
        for (name, yaml, want) in &cases {
            let got = rules(yaml);
            assert_eq!(&got, want, "{name}:\n{}", fill(yaml));
        }
    }

    #[test]
    fn every_rule_is_exercised_by_a_case() {
        let mut seen: BTreeSet<Rule> = hostile().into_iter().flat_map(|(_, _, r)| r).collect();
        seen.extend([Rule::EnvStackName, Rule::EnvDomain, Rule::EnvRecipe, Rule::EnvUnassigned]);
        let missing: Vec<_> = Rule::ALL.iter().filter(|r| !seen.contains(r)).collect();
        assert!(missing.is_empty(), "no case for {missing:?}");
    }

    #[test]
    fn violations_name_service_key_value_and_why() {
        let yaml = "services:\n  web:\n    image: x\n    volumes:\n      - type: bind\n        source: {tree}/../../../../../etc\n        target: /host\nvolumes:\n  v:\n    driver: rexray\n";
        let r = report_with(yaml, &AllowList::default());
        let v = &r.violations[0];
        assert_eq!((v.service.as_str(), v.key.as_str(), v.rule), ("web", "volumes", Rule::DeniedHostPath));
        assert_eq!(v.value, format!("{TREE}/../../../../../etc:/host"));
        assert_eq!(v.detail.as_deref(), Some(format!("{TREE}/../../../../../etc is the host path /etc").as_str()));
        // An unused top-level object says so.
        assert_eq!(r.violations[1].service, "(top level)");
        let reason = r.reason().unwrap();
        assert!(reason.starts_with("policy: refused service web: volumes = "), "{reason}");
        assert!(
            reason.contains("(denied-host-path:") && reason.ends_with("(and 1 more); see docs/security.md"),
            "{reason}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checked"], 1);
        assert_eq!(json["violations"][0]["rule"], "denied-host-path");
        assert_eq!(json["violations"][0]["service"], "web");
        assert!(Report::default().reason().is_none());
    }

    #[test]
    fn top_level_violations_name_the_services_that_use_them() {
        let yaml = "services:\n  a:\n    image: x\n    networks: [hostnet]\n  b:\n    image: x\n    networks:\n      hostnet: null\nnetworks:\n  hostnet:\n    name: host\n    external: true\n";
        let r = report_with(yaml, &AllowList::default());
        assert_eq!(r.violations.len(), 1);
        assert_eq!((r.violations[0].service.as_str(), r.violations[0].key.as_str()), ("a,b", "networks.hostnet"));
        assert_eq!(r.violations[0].value, "host");
    }

    #[test]
    fn the_allow_list_loosens_only_its_own_rule() {
        let allow = AllowList {
            binds: vec!["/var/run/docker.sock".into(), "/srv/shared/".into(), "/".into()],
            cap_add: vec!["NET_ADMIN".into()],
            networks: vec!["backups".into()],
            hosts: vec!["*.example.net".into(), "auth.example.com".into()],
        };
        let bind = |s: &str| {
            format!(
                "services:\n  app:\n    image: x\n    volumes:\n      - type: bind\n        source: {s}\n        target: /m\n"
            )
        };
        // Exact entries, and prefixes ending in `/`.
        assert!(rules_with(&bind("/var/run/docker.sock"), &allow).is_empty());
        assert!(rules_with(&bind("/srv/shared/data"), &allow).is_empty());
        assert!(rules_with(&bind("/"), &allow).is_empty(), "`/` listed exactly");
        assert_eq!(
            rules_with(&bind("/run/docker.sock"), &allow),
            vec![Rule::DeniedHostPath],
            "not the exact path listed"
        );
        assert_eq!(
            rules_with(&bind("/srv/shared"), &allow),
            vec![Rule::BindOutsideTree],
            "the prefix is `/srv/shared/`"
        );
        assert_eq!(rules_with(&bind("/srv/shared/../../etc"), &allow), vec![Rule::DeniedHostPath]);
        assert_eq!(rules_with(&bind("/etc"), &allow), vec![Rule::DeniedHostPath], "`/` is exact, never a prefix");
        // A prefix never reaches the always-denied list.
        let wide = AllowList { binds: vec!["/var/".into()], ..AllowList::default() };
        assert_eq!(rules_with(&bind("/var/lib/docker"), &wide), vec![Rule::DeniedHostPath]);
        assert_eq!(rules_with(&bind("/var/lib"), &wide), vec![Rule::DeniedHostPath]);
        assert!(rules_with(&bind("/var/cache/app"), &wide).is_empty());
        // allow_binds is not a config-file allow-list.
        let cfg = "configs:\n  c:\n    name: {stack}_c\n    file: /srv/shared/c.conf\n";
        assert_eq!(rules_with(cfg, &allow), vec![Rule::FileOutsideTree]);
        // Capabilities, with or without CAP_, any case.
        let caps = "services:\n  app:\n    image: x\n    cap_add: [NET_ADMIN, CAP_NET_ADMIN, net_admin, SYS_ADMIN]\n";
        assert_eq!(rules_with(caps, &allow), vec![Rule::CapAdd]);
        // Networks by name; `host` still refused.
        let nets = "networks:\n  b:\n    name: backups\n    external: true\n  h:\n    name: host\n    external: true\n";
        assert_eq!(rules_with(nets, &allow), vec![Rule::ExternalNetwork]);
        // Hosts: a glob covers subdomains, not the bare domain; exact entries exactly.
        let host = |h: &str| {
            format!(
                "services:\n  app:\n    image: x\n    deploy:\n      labels:\n        traefik.http.routers.{{stack}}.rule: Host(`{h}`)\n"
            )
        };
        assert!(rules_with(&host("a.example.net"), &allow).is_empty());
        assert!(rules_with(&host("a.b.example.net"), &allow).is_empty());
        assert_eq!(rules_with(&host("example.net"), &allow), vec![Rule::TraefikHost]);
        assert_eq!(rules_with(&host("evilexample.net"), &allow), vec![Rule::TraefikHost]);
        assert!(rules_with(&host("auth.example.com"), &allow).is_empty());
        assert_eq!(rules_with(&host("x.auth.example.com"), &allow), vec![Rule::TraefikHost]);
        // A catch-all stays refused whatever the host list says.
        let sni = "services:\n  app:\n    image: x\n    deploy:\n      labels:\n        traefik.tcp.routers.{stack}.rule: HostSNI(`*`)\n";
        assert_eq!(rules_with(sni, &allow), vec![Rule::TraefikRule]);
    }

    #[test]
    fn the_env_must_name_this_app() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let run = |e: BTreeMap<String, String>, c: &Context| -> Vec<Rule> {
            check("services: {}\n", &e, c, &AllowList::default()).unwrap().violations.iter().map(|v| v.rule).collect()
        };
        let c = ctx();
        let ok = env(&[("STACK_NAME", STACK), ("DOMAIN", DOMAIN), ("TYPE", "hello:1.0.0+1"), ("RECIPE", "hello")]);
        assert!(run(ok, &c).is_empty());
        assert!(run(env(&[]), &c).is_empty());
        assert_eq!(run(env(&[("STACK_NAME", "warm-keycloak_ci_example_org")]), &c), vec![Rule::EnvStackName]);
        assert_eq!(run(env(&[("DOMAIN", "keycloak.example.org")]), &c), vec![Rule::EnvDomain]);
        assert_eq!(run(env(&[("TYPE", "keycloak")]), &c), vec![Rule::EnvRecipe]);
        assert_eq!(run(env(&[("RECIPE", "hello-evil")]), &c), vec![Rule::EnvRecipe]);
        assert_eq!(run(env(&[("TYPE", "")]), &c), vec![Rule::EnvRecipe]);
        let no_recipe = Context { recipe: None, ..ctx() };
        assert!(run(env(&[("TYPE", "keycloak")]), &no_recipe).is_empty());
        let a = crate::dotenv::parse("A=$HOME/x\nB=$A\nC=${NOPE}\n").unwrap();
        let v = check_assignments(&a);
        assert_eq!(v.iter().map(|v| v.key.as_str()).collect::<Vec<_>>(), vec!["A", "C"]);
        assert_eq!(v[0].rule, Rule::EnvUnassigned);
        assert_eq!(v[0].detail.as_deref(), Some("line 1 expands HOME before any line assigns it"));
    }

    #[test]
    fn traefik_rules_parse() {
        let e = parse_traefik_rule("Host(`a`) && (PathPrefix(`/x`) || !Method(\"GET\"))").unwrap();
        assert!(bounded(&e));
        let RuleExpr::And(a, _) = &e else { panic!("{e:?}") };
        assert_eq!(**a, RuleExpr::Matcher { name: "Host".into(), args: vec!["a".into()] });
        assert_eq!(
            parse_traefik_rule("Host(\"a\\\"b\")").unwrap(),
            RuleExpr::Matcher { name: "Host".into(), args: vec!["a\"b".into()] }
        );
        assert!(!bounded(&parse_traefik_rule("Host(`a`) || Path(`/`)").unwrap()));
        assert!(!bounded(&parse_traefik_rule("Host()").unwrap()));
        assert!(bounded(&parse_traefik_rule("(Host(`a`) || HostSNI(`b`)) && ClientIP(`10.0.0.0/8`)").unwrap()));
        for bad in
            ["", "Host", "Host(`a`", "Host(`a`) &&", "Host(a)", "Host(`a`) Host(`b`)", "Host('a')", &"(".repeat(200)]
        {
            assert!(parse_traefik_rule(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_normalise_lexically() {
        assert_eq!(normalize("/a/b/../c/./d//", "/x"), "/a/c/d");
        assert_eq!(normalize("../../../../..", "/srv/t"), "/");
        assert_eq!(normalize("data", "/srv/t"), "/srv/t/data");
        assert_eq!(normalize("./", "/srv/t"), "/srv/t");
        assert!(always_denied("/"));
        assert!(always_denied("/var/lib"));
        assert!(always_denied("/var/run/docker.sock"));
        assert!(!always_denied("/var/lib/cc-ci-runs/1/recipe"));
        assert!(!always_denied("/etcetera"));
    }

    #[test]
    fn unreadable_renders_fail_closed_without_quoting_values() {
        let e = check(
            "services:\n  app:\n    cap_add: \"s3cret-token\"\n",
            &BTreeMap::new(),
            &ctx(),
            &AllowList::default(),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains("s3cret"), "{msg}");
        assert!(msg.contains("cannot be checked") && msg.contains("line"), "{msg}");
        let fails = |text: &str| check(text, &BTreeMap::new(), &ctx(), &AllowList::default()).is_err();
        assert!(fails("- a list\n"));
        assert!(fails(""));
        assert!(fails("Usage: docker stack COMMAND\n"), "a help text is no config");
        assert!(fails("services: {}\nUsage: docker stack COMMAND\n"), "nor one with an unknown key");
        assert!(!fails("version: \"3.8\"\nservices: {}\nx-extension: 1\n"));
    }

    #[test]
    fn rule_names_are_their_serde_names() {
        let mut names = BTreeSet::new();
        for r in Rule::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name(), "{r:?}");
            assert!(!r.description().is_empty());
            assert!(names.insert(r.name()), "{r:?} twice");
        }
        assert_eq!(names.len(), 30);
    }
}
