//! The policy gate: what a pull request's recipe may deploy on a CI host where ccci runs as
//! root (docs/security.md).
//!
//! **Threat.** Everything in the PR's tree — compose files, `.env.sample`, `abra.sh`, links,
//! file names — is written by whoever opened the PR. `docker stack deploy` of that compose runs
//! containers as root with whatever host access the compose asks for: a bind of
//! `/var/run/docker.sock` or `/` owns the host, every concurrent run and the git token; an
//! external `host` network reaches every loopback service; a Traefik rule for another host
//! hijacks it on the shared proxy; a `STACK_NAME` in `.env.sample` points abra (and its
//! teardown) at another app. So before every deploy the exact configuration is rendered with
//! docker's own loader ([`render`]) and judged by a pure function ([`gate::check`]); after every
//! checkout the tree's links are checked ([`tree`]); and ccci itself reads tree files only
//! through [`crate::untrusted`].
//!
//! **Rules** (refused by default; the trusted `ccci.yml`'s `policy:` loosens the four marked
//! ones, each only its own rule):
//!
//! | rule | refuses |
//! |---|---|
//! | `denied-host-path` | the docker/containerd socket, `/`, `/etc`, `/root`, `/run`, `/var/run`, `/var/lib/docker`, `/proc`, `/sys`, `/dev`, below or above them (only an exact `allow_binds` entry) |
//! | `bind-outside-tree` | a bind of a host path outside the tree, `..` included (`allow_binds`) |
//! | `writable-tree-bind` | a writable bind of the tree (a running container would edit what the next deploy reads) |
//! | `mount-type` | mount types other than bind, volume, tmpfs, npipe |
//! | `volume-driver`, `volume-driver-opts` | non-local volume drivers; driver_opts other than a tmpfs |
//! | `foreign-object` | volumes, secrets, configs, networks named outside `<stack>_` |
//! | `external-network` | external networks other than `proxy`, by name (`allow_networks`) |
//! | `network-driver`, `shared-network-alias`, `network-mode` | macvlan & co; aliases on shared networks; `network_mode` |
//! | `cap-add` (`allow_cap_add`), `devices`, `security-opt`, `sysctls`, `privileged`, `host-namespace`, `cgroup-parent` | host privileges |
//! | `file-outside-tree`, `env-file-outside-tree` | config/secret `file:` and `env_file` outside the tree |
//! | `traefik-host` (`allow_hosts`), `traefik-rule`, `traefik-udp`, `traefik-certresolver`, `traefik-service`, `traefik-name` | routes for foreign or unbounded hosts, ACME, routes to others' backends, name clashes |
//! | `env-stack-name`, `env-domain`, `env-recipe`, `env-unassigned` | a `.env` that redirects abra or depends on abra's own environment |
//!
//! **Wiring.** After a checkout: [`tree::check_tree`]. Before a deploy: [`check_deploy`] with the
//! app's `.env` ([`read_env`]); `Ok` with violations is a refusal (`report.reason()` is the
//! stage's reason, `report` goes into results.json), `Err` a recipe failure. At start-up:
//! [`render::check_stack_config`].

pub mod gate;
pub mod render;
pub mod tree;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;

pub use gate::{AllowList, Context, GateError, Report, Rule, Violation, check, check_assignments};
pub use render::{RenderError, check_stack_config, compose_files, render};
pub use tree::{LinkViolation, TreeError, check_tree, check_walk};

use crate::dotenv::{self, Assignment, DotenvError};
use crate::untrusted::{self, UntrustedError};

/// A bound for one render: a healthy one takes well under a second; an `env_file` naming a
/// FIFO blocks the docker CLI until this passes.
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("cannot read the app's environment: {0}")]
    EnvUnreadable(UntrustedError),
    #[error("{path}: {source}")]
    Env { path: String, source: DotenvError },
}

/// What [`check_deploy`] rendered and decided.
#[derive(Debug, Clone)]
pub struct Checked {
    pub report: Report,
    /// The compose files, in `COMPOSE_FILE` order.
    pub compose_files: Vec<String>,
    /// The interpolation environment the render used (the app's `.env`, then abra.sh's exports).
    pub env: BTreeMap<String, String>,
    /// What docker's loader rendered: the configuration that is (or would have been) deployed.
    pub rendered: String,
}

/// Reads a dotenv file of a tree ccci does not trust (`.env.sample`, the app's `.env`): no link,
/// no FIFO, at most [`untrusted::MAX_TREE_FILE`], never sourced by a shell.
pub fn read_env(dir: &Path, name: &Path) -> Result<Vec<Assignment>, PolicyError> {
    let text = untrusted::read_to_string(dir, name).map_err(PolicyError::EnvUnreadable)?;
    dotenv::parse(&text).map_err(|source| PolicyError::Env { path: dir.join(name).display().to_string(), source })
}

/// Everything a deploy of `ctx.tree` with `app_env` needs checked, the way abra will deploy it:
/// abra.sh's exports over the app's `.env` (and `STACK_NAME`, which abra always provides), the
/// `COMPOSE_FILE` list, the render with docker's loader and the gate. `Ok` carries the decision (violations mean refused); `Err` means the
/// recipe cannot be rendered (bad input, a loader error, no `stack config`): deploy nothing.
pub fn check_deploy(
    docker: &str,
    ctx: &Context,
    app_env: &[Assignment],
    allow: &AllowList,
    timeout: Duration,
) -> Result<Checked, PolicyError> {
    render::check_stack_config(docker)?;
    // docker resolves relative sources from its working directory, which the kernel reports
    // canonical: the gate must compare them with the canonical tree.
    let tree = ctx
        .tree
        .canonicalize()
        .map_err(|source| RenderError::Unreadable(UntrustedError::Io { path: ctx.tree.clone(), source }))?;
    let ctx = &Context { tree, ..ctx.clone() };
    let mut env = dotenv::effective(app_env);
    match untrusted::read_to_string(&ctx.tree, Path::new("abra.sh")) {
        Ok(text) => env.extend(render::abra_sh_exports(&text)?),
        Err(UntrustedError::NotFound { .. }) => {}
        Err(e) => return Err(RenderError::Unreadable(e).into()),
    }
    // abra always gives the compose files a STACK_NAME (the app's own, unless the .env sets
    // one, which the gate then judges).
    env.entry("STACK_NAME".to_string()).or_insert_with(|| ctx.stack.clone());
    let files = render::compose_files(env.get("COMPOSE_FILE").map_or("", String::as_str))?;
    let pairs: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let rendered = render::render(docker, &ctx.tree, &files, &pairs, timeout)?;
    let mut report = gate::check(&rendered, &env, ctx, allow)?;
    report.violations.extend(gate::check_assignments(app_env));
    Ok(Checked { report, compose_files: files, env, rendered })
}
