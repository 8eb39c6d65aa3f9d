//! The Engine API adapter (`adapters::engine`) against the real local dockerd: version
//! negotiation, a deployed stack read as the CLI reports it, its events, and a dockerd that
//! stops answering or drops the event stream (through a proxy the test controls).

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ccci::adapters::engine::models::{ContainerInspectResponse, HealthStatusEnum, Service, Task, TaskState};
use ccci::adapters::engine::{
    Deadline, Engine, EngineError, EventFilter, Host, Kind, LogTail, NS_LABEL, Notice, Scope, container_name,
    service_name,
};
use ccci::lifetime::Event;
use ccci::pipeline::ready::judge::{Fingerprint, Judge, Poll, Verdict, fingerprint};
use serde_json::Value;

use crate::common::*;

const SOCKET: &str = "/var/run/docker.sock";

fn secs(n: u64) -> Deadline<'static> {
    Deadline::after(Duration::from_secs(n))
}

/// `docker <args>` (bounded), its trimmed stdout lines; panics when it fails.
pub(crate) fn docker(args: &[&str]) -> Vec<String> {
    let mut c = Command::new("docker");
    c.args(args);
    let o = output_within(c, Duration::from_secs(120));
    assert!(o.status.success(), "docker {args:?}: {}", stderr_of(&o));
    String::from_utf8_lossy(&o.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn sorted(v: Vec<String>) -> Vec<String> {
    v.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
}

// --- typed models from the CLI's JSON -------------------------------------------------------

fn ready_data() -> PathBuf {
    repo_root().join("tests/data/ready")
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(text: &str) -> (Vec<T>, Vec<Value>) {
    let typed: Vec<T> = serde_json::from_str(text).unwrap();
    let back = typed.iter().map(|t| serde_json::to_value(t).unwrap()).collect();
    (typed, back)
}

#[test]
fn engine_models_read_every_captured_cli_json() {
    let mut seen = 0;
    for entry in fs::read_dir(ready_data()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = fs::read_to_string(&path).unwrap();
        let raw: Vec<Value> = serde_json::from_str(&text).unwrap();
        if name.starts_with("svc-") {
            let (typed, back) = roundtrip::<Service>(&text);
            for ((s, b), r) in typed.iter().zip(&back).zip(&raw) {
                assert_eq!(s.id.as_deref(), r["ID"].as_str(), "{name}");
                assert_eq!(s.version.as_ref().and_then(|v| v.index), r["Version"]["Index"].as_u64(), "{name}");
                assert!(!service_name(s).is_empty());
                let spec =
                    s.spec.as_ref().and_then(|s| s.task_template.as_ref()).and_then(|t| t.container_spec.as_ref());
                assert_ne!(fingerprint(spec), Fingerprint::default(), "{name}: the fingerprint reads the typed spec");
                let again: Service = serde_json::from_value(b.clone()).unwrap();
                assert_eq!(&again, s, "{name}: the typed model round-trips");
                // dockerd sends `Healthcheck`, the model reads `HealthCheck`: the typed spec has
                // no healthcheck, which is why readiness inspects every running container.
                assert!(!r["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"].is_null(), "{name}");
                assert!(b["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"].is_null(), "{name}");
                assert_eq!(b["Spec"]["Mode"], r["Spec"]["Mode"], "{name}");
                assert_eq!(b["UpdateStatus"], r["UpdateStatus"], "{name}");
            }
        } else if name.starts_with("tasks-") {
            let (typed, back) = roundtrip::<Task>(&text);
            for ((t, b), r) in typed.iter().zip(&back).zip(&raw) {
                let state = t.status.as_ref().and_then(|s| s.state).map(|s| s.to_string());
                assert_eq!(state.as_deref(), r["Status"]["State"].as_str(), "{name}");
                assert_eq!(
                    b["Status"]["ContainerStatus"]["ContainerID"],
                    r["Status"]["ContainerStatus"]["ContainerID"]
                );
                assert_eq!(b["Status"]["Err"], r["Status"]["Err"], "{name}");
                assert_eq!(b["DesiredState"], r["DesiredState"], "{name}");
                assert_eq!(b["ServiceID"], r["ServiceID"], "{name}");
                let spec = t.spec.as_ref().and_then(|s| s.container_spec.as_ref());
                assert_ne!(fingerprint(spec), Fingerprint::default(), "{name}");
            }
        } else if name.starts_with("ctr-") {
            let (typed, back) = roundtrip::<ContainerInspectResponse>(&text);
            for ((c, b), r) in typed.iter().zip(&back).zip(&raw) {
                let health = c.state.as_ref().and_then(|s| s.health.as_ref()).and_then(|h| h.status);
                assert_eq!(health.map(|h| h.to_string()).as_deref(), r["State"]["Health"]["Status"].as_str(), "{name}");
                assert_eq!(b["State"]["Health"]["Log"], r["State"]["Health"]["Log"], "{name}");
                assert_eq!(b["Id"], r["Id"], "{name}");
            }
        } else {
            panic!("{name}: a capture of an unknown kind; teach this test its type");
        }
        seen += 1;
    }
    assert!(seen >= 9, "only {seen} files in tests/data/ready");

    // The judge's verdicts on the captures read into the typed models.
    let load = |f: &str| fs::read_to_string(ready_data().join(f)).unwrap();
    let poll = |svc: &str, tasks: &str, ctr: &str| Poll {
        services: roundtrip::<Service>(&load(svc)).0,
        tasks: roundtrip::<Task>(&load(tasks)).0,
        containers: roundtrip::<ContainerInspectResponse>(&load(ctr)).0,
        nodes: 1,
        at: Duration::ZERO,
    };
    let verdict = |svc: &str, tasks: &str, ctr: &str| match Judge::default().judge(&poll(svc, tasks, ctr)) {
        Verdict::Ready => "ready".to_string(),
        Verdict::NotReady(w) => format!("not ready: {}", w.join("; ")),
        Verdict::Failed(r) => format!("failed: {r}"),
    };
    assert_eq!(verdict("svc-v1.json", "tasks-v1.json", "ctr-v1.json"), "ready");
    assert_eq!(verdict("svc-v3.json", "tasks-v3.json", "ctr-v3.json"), "ready");
    assert!(verdict("svc-v3.json", "tasks-v1.json", "ctr-v1.json").contains("0/1 tasks running"));
    assert!(verdict("svc-updating.json", "tasks-v3.json", "ctr-v3.json").contains("update updating"));
    assert!(verdict("svc-sick.json", "tasks-sick.json", "ctr-v1.json").starts_with("not ready"));
}

// --- a proxy in front of dockerd that the test controls ---------------------------------------

enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Sock {
    fn try_clone(&self) -> std::io::Result<Sock> {
        Ok(match self {
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Sock::Unix(s) => s.shutdown(Shutdown::Both),
            Sock::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Unix(s) => s.read(buf),
            Sock::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write(buf),
            Sock::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Accepts on a temp unix socket (or 127.0.0.1) and forwards to dockerd's socket. Stalled, it
/// accepts and never answers; `cut()` closes every connection it carries (an event stream
/// dropped mid-way). With events muted, a connection that asks for `/events` gets nothing back
/// (events silently lost); with events dropped, it is closed as soon as it asks (every stream
/// lost). Dropping it closes everything and joins its accept thread. Other test modules reach
/// dockerd through it with `DOCKER_HOST` (`docker_host`).
pub(crate) struct Proxy {
    pub(crate) docker_host: String,
    stall: Arc<AtomicBool>,
    mute_events: Arc<AtomicBool>,
    drop_events: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<Sock>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub(crate) fn unix() -> Proxy {
        let dir = tempfile::Builder::new().prefix("ccci-engine-proxy-").tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let l = UnixListener::bind(&path).unwrap();
        l.set_nonblocking(true).unwrap();
        Proxy::start(format!("unix://{}", path.display()), dir, move || l.accept().map(|(s, _)| Sock::Unix(s)))
    }

    fn tcp() -> Proxy {
        let dir = tempfile::Builder::new().prefix("ccci-engine-proxy-").tempdir().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let host = format!("tcp://{}", l.local_addr().unwrap());
        Proxy::start(host, dir, move || l.accept().map(|(s, _)| Sock::Tcp(s)))
    }

    fn start(
        docker_host: String,
        dir: tempfile::TempDir,
        accept: impl Fn() -> std::io::Result<Sock> + Send + 'static,
    ) -> Proxy {
        let stall = Arc::new(AtomicBool::new(false));
        let mute_events = Arc::new(AtomicBool::new(false));
        let drop_events = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<Sock>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, cs, sp) = (stall.clone(), conns.clone(), stop.clone());
        let (mute, drop_ev) = (mute_events.clone(), drop_events.clone());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                let client = match accept() {
                    Ok(s) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                match &client {
                    Sock::Unix(s) => s.set_nonblocking(false).unwrap(),
                    Sock::Tcp(s) => s.set_nonblocking(false).unwrap(),
                }
                if st.load(Ordering::SeqCst) {
                    // Held open, never read, never answered.
                    cs.lock().unwrap().push(client);
                    continue;
                }
                let Ok(up) = UnixStream::connect(SOCKET) else { continue };
                let up = Sock::Unix(up);
                let mut guard = cs.lock().unwrap();
                guard.push(client.try_clone().unwrap());
                guard.push(up.try_clone().unwrap());
                drop(guard);
                // Requests flow client → dockerd, answers dockerd → client; an events request
                // seen on the way up mutes (or closes) the way down.
                let muted = Arc::new(AtomicBool::new(false));
                let (mute, drop_ev, muted_up) = (mute.clone(), drop_ev.clone(), muted.clone());
                let (mut from, mut to) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        if chunk.starts_with(b"GET ") && chunk.windows(8).any(|w| w == b"/events?") {
                            if drop_ev.load(Ordering::SeqCst) {
                                break;
                            }
                            if mute.load(Ordering::SeqCst) {
                                muted_up.store(true, Ordering::SeqCst);
                            }
                        }
                        if to.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    to.shutdown();
                    from.shutdown();
                });
                let (mut from, mut to) = (up, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if muted.load(Ordering::SeqCst) {
                            continue;
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    to.shutdown();
                    from.shutdown();
                });
            }
        });
        Proxy { docker_host, stall, mute_events, drop_events, conns, stop, accept: Some(thread), _dir: dir }
    }

    pub(crate) fn host(&self) -> Host {
        Host::parse(Some(&self.docker_host)).unwrap()
    }

    pub(crate) fn set_stalled(&self, on: bool) {
        self.stall.store(on, Ordering::SeqCst);
    }

    /// Event streams opened from now on deliver nothing (the connection stays up).
    pub(crate) fn set_events_muted(&self, on: bool) {
        self.mute_events.store(on, Ordering::SeqCst);
    }

    /// Event streams opened from now on are closed as soon as they are asked for.
    pub(crate) fn set_events_dropped(&self, on: bool) {
        self.drop_events.store(on, Ordering::SeqCst);
    }

    /// Closes every connection it carries (both sides).
    pub(crate) fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            s.shutdown();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.cut();
    }
}

// --- a tiny stack on the real swarm ---------------------------------------------------------

const COMPOSE: &str = r#"version: "3.8"
services:
  app:
    image: ccci-fixture-busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do echo line-$$i; i=$$((i+1)); sleep 0.2; done"]
    stop_grace_period: 2s
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
      retries: 2
    volumes:
      - data:/data
    secrets:
      - s1
    configs:
      - c1
volumes:
  data:
secrets:
  s1:
    file: ./s1.txt
configs:
  c1:
    file: ./c1.txt
"#;

/// A deployed test stack (plus an unlabelled `<stack>_x_v1` secret, as abra creates them);
/// dropping it removes everything, even when the test failed.
pub(crate) struct TestStack {
    pub(crate) name: String,
    dir: tempfile::TempDir,
}

impl TestStack {
    pub(crate) fn deploy(name: &str) -> TestStack {
        let dir = tempfile::Builder::new().prefix("ccci-engine-stack-").tempdir().unwrap();
        fs::write(dir.path().join("compose.yml"), COMPOSE).unwrap();
        fs::write(dir.path().join("s1.txt"), "secret one\n").unwrap();
        fs::write(dir.path().join("c1.txt"), "config one\n").unwrap();
        let stack = TestStack { name: name.to_string(), dir };
        stack.docker_in_dir(&["stack", "deploy", "--resolve-image", "never", "-c", "compose.yml", name]);
        fs::write(stack.dir.path().join("x.txt"), "unlabelled\n").unwrap();
        stack.docker_in_dir(&["secret", "create", &format!("{name}_x_v1"), "x.txt"]);
        stack
    }

    fn docker_in_dir(&self, args: &[&str]) {
        let mut c = Command::new("docker");
        c.args(args).current_dir(self.dir.path());
        let o = output_within(c, Duration::from_secs(120));
        assert!(o.status.success(), "docker {args:?}: {}", stderr_of(&o));
    }

    fn label(&self) -> String {
        format!("label={NS_LABEL}={}", self.name)
    }

    pub(crate) fn service(&self) -> String {
        format!("{}_app", self.name)
    }
}

/// Everything of a stack, as the CLI lists it (the unlabelled secret by name).
fn cli_objects(stack: &str) -> Vec<String> {
    let mut out = docker_objects_matching(stack);
    let x = format!("{stack}_x_v1");
    if docker(&["secret", "ls", "--format", "{{.Name}}"]).contains(&x) {
        out.push(format!("secret:{x}"));
    }
    out
}

fn remove_stack(stack: &str) {
    let run = |args: &[&str]| {
        let _ = Command::new("docker").args(args).output();
    };
    run(&["stack", "rm", stack]);
    let label = format!("label={NS_LABEL}={stack}");
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end && !docker(&["ps", "-aq", "--filter", &label]).is_empty() {
        std::thread::sleep(Duration::from_millis(200));
    }
    for kind in ["volume", "secret", "config", "network"] {
        for name in docker(&[kind, "ls", "--filter", &label, "--format", "{{.Name}}"]) {
            run(&[kind, "rm", &name]);
        }
    }
    run(&["secret", "rm", &format!("{stack}_x_v1")]);
}

impl Drop for TestStack {
    fn drop(&mut self) {
        remove_stack(&self.name);
        let left = cli_objects(&self.name);
        if !left.is_empty() && !std::thread::panicking() {
            panic!("left behind: {left:?}");
        }
    }
}

pub(crate) fn stack_name(tag: &str) -> String {
    format!("ccci-eng{tag}{}", unique())
}

/// Receives from `rx` until `pick` returns a value, failing the test after `within`.
fn recv_until<T, R>(rx: &Receiver<T>, within: Duration, what: &str, mut pick: impl FnMut(T) -> Option<R>) -> R {
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out after {within:?} waiting for {what}");
        if let Ok(v) = rx.recv_timeout(left)
            && let Some(r) = pick(v)
        {
            return r;
        }
    }
}

// --- the tests ----------------------------------------------------------------------------------

#[test]
fn engine_negotiates_the_api_version_with_the_local_daemon() {
    if !swarm_available() {
        return;
    }
    let engine = Engine::new(Host::parse(None).unwrap());
    let cli = docker(&["version", "--format", "{{.Server.APIVersion}} {{.Server.Version}}"]);
    let (api, server) = cli[0].split_once(' ').unwrap();
    assert_eq!(engine.api_version(secs(10)).unwrap(), api, "negotiated down to the daemon's version");
    let v = engine.version(secs(10)).unwrap();
    assert_eq!(v.api_version.as_deref(), Some(api));
    assert_eq!(v.version.as_deref(), Some(server));
    eprintln!("dockerd {server}, API {api}");
}

#[test]
fn engine_reads_a_deployed_stack_as_the_cli_does_and_streams_its_events() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let engine = Engine::new(Host::parse(None).unwrap());
    let name = stack_name("r");
    // Subscribed before the deploy, through a lifetime watch's sender as a waiter would be.
    let watch = ccci::lifetime::watch();
    let sub = engine
        .subscribe(&EventFilter::stack(&name), Instant::now() + Duration::from_secs(240), watch.sender())
        .unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let stack = TestStack::deploy(&name);

    // Converged: one running task whose container is healthy (bounded).
    let cli_ids = docker(&["service", "ls", "-q", "--filter", &stack.label()]);
    assert_eq!(cli_ids.len(), 1);
    let svc_ids: Vec<String> =
        engine.services(Scope::Stack(&name), secs(10)).unwrap().into_iter().filter_map(|s| s.id).collect();
    assert_eq!(svc_ids.len(), 1);
    assert!(svc_ids[0].starts_with(&cli_ids[0]), "{svc_ids:?} {cli_ids:?}");
    let end = Instant::now() + Duration::from_secs(90);
    let (task, ctr) = loop {
        assert!(Instant::now() < end, "the test stack did not converge");
        let tasks = engine.tasks(&svc_ids, secs(10)).unwrap();
        let running = tasks.iter().find(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING));
        if let Some(t) = running {
            let cid = t.status.as_ref().and_then(|s| s.container_status.as_ref()).and_then(|c| c.container_id.clone());
            let c = engine.container(cid.as_deref().unwrap(), secs(10)).unwrap().unwrap();
            let health = c.state.as_ref().and_then(|s| s.health.as_ref()).and_then(|h| h.status);
            if health == Some(HealthStatusEnum::HEALTHY) {
                break (t.clone(), c);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    // Services, by label, as `docker service ls`; and by id; gone is None.
    let services = engine.services(Scope::Stack(&name), secs(10)).unwrap();
    assert_eq!(services.iter().map(service_name).collect::<Vec<_>>(), [stack.service()]);
    assert_eq!(services[0].id.as_deref(), Some(svc_ids[0].as_str()));
    let by_id = engine.service(&svc_ids[0], secs(10)).unwrap().unwrap();
    assert_eq!(by_id.spec.as_ref().and_then(|s| s.name.clone()), Some(stack.service()));
    assert!(engine.service("nosuchservice0000000000000", secs(10)).unwrap().is_none());
    let any = engine.services(Scope::AnyStack, secs(10)).unwrap();
    assert!(any.iter().any(|s| service_name(s) == stack.service()));

    // Tasks (with history) as `docker service ps`; one task by id.
    let cli_tasks = sorted(docker(&["service", "ps", "-q", "--no-trunc", &svc_ids[0]]));
    let tasks = engine.tasks(&svc_ids, secs(10)).unwrap();
    assert_eq!(sorted(tasks.iter().filter_map(|t| t.id.clone()).collect()), cli_tasks);
    let t = engine.task(task.id.as_deref().unwrap(), secs(10)).unwrap().unwrap();
    assert_eq!(t.service_id.as_deref(), Some(svc_ids[0].as_str()));
    assert!(engine.task("nosuchtask000000000000000", secs(10)).unwrap().is_none());

    // Containers as `docker ps -a`; inspect with health; a vanished one is left out.
    let cli_ctrs = sorted(docker(&["ps", "-a", "--filter", &stack.label(), "--format", "{{.Names}}"]));
    let ctrs = engine.containers(Scope::Stack(&name), secs(10)).unwrap();
    assert_eq!(sorted(ctrs.iter().map(container_name).collect()), cli_ctrs);
    let cid = ctr.id.clone().unwrap();
    let inspected = engine.inspect_containers(&[cid.clone(), "0000nosuchcontainer".into()], secs(10)).unwrap();
    assert_eq!(inspected.len(), 1);
    assert_eq!(inspected[0].id.as_deref(), Some(cid.as_str()));
    assert!(engine.container("0000nosuchcontainer", secs(10)).unwrap().is_none());

    // Volumes, networks, secrets, configs by label; secrets and configs by name prefix.
    let ls = |kind: &str| sorted(docker(&[kind, "ls", "--filter", &stack.label(), "--format", "{{.Name}}"]));
    let names = |v: Vec<String>| sorted(v);
    assert_eq!(
        names(engine.volumes(Scope::Stack(&name), secs(10)).unwrap().into_iter().map(|v| v.name).collect()),
        ls("volume")
    );
    assert_eq!(
        names(engine.networks(Scope::Stack(&name), secs(10)).unwrap().into_iter().filter_map(|n| n.name).collect()),
        ls("network")
    );
    let secret_names = |v: Vec<ccci::adapters::engine::models::Secret>| {
        sorted(v.iter().map(|s| ccci::adapters::engine::secret_name(s).to_string()).collect())
    };
    assert_eq!(secret_names(engine.secrets(Scope::Stack(&name), secs(10)).unwrap()), ls("secret"));
    assert_eq!(ls("secret"), [format!("{name}_s1")], "the unlabelled secret has no label");
    let by_prefix = secret_names(engine.secrets_named(&format!("{name}_"), secs(10)).unwrap());
    assert_eq!(by_prefix, [format!("{name}_s1"), format!("{name}_x_v1")], "found by prefix, labelled or not");
    let configs = engine.configs(Scope::Stack(&name), secs(10)).unwrap();
    assert_eq!(
        sorted(configs.iter().map(|c| ccci::adapters::engine::config_name(c).to_string()).collect()),
        ls("config")
    );
    assert_eq!(engine.configs_named(&format!("{name}_"), secs(10)).unwrap().len(), 1);

    // The residue as the CLI adapter would list it, plus the unlabelled secret.
    let residue = engine.residue(&name, secs(10)).unwrap();
    assert_eq!(residue.services, [stack.service()]);
    assert_eq!(residue.containers, cli_ctrs);
    assert_eq!(residue.volumes, ls("volume"));
    assert_eq!(residue.secrets, [format!("{name}_s1"), format!("{name}_x_v1")]);
    assert_eq!(residue.configs, ls("config"));
    assert_eq!(residue.networks, ls("network"));
    assert!(engine.namespaces_with_stamps("ccci.lock-dir", &|_| None, secs(10)).unwrap().contains_key(&name));

    // Nodes, as `docker node ls`.
    let cli_nodes = docker(&["node", "ls", "-q"]);
    assert_eq!(engine.nodes(secs(10)).unwrap().len(), cli_nodes.len());
    assert!(engine.eligible_nodes(secs(10)).unwrap() >= 1);

    // Logs: the last lines with timestamps, bounded in bytes.
    let logs = engine.service_logs(&svc_ids[0], LogTail { lines: 5, max_bytes: 64 * 1024 }, secs(10)).unwrap();
    assert!(!logs.lines.is_empty() && logs.lines.len() <= 5, "{logs:?}");
    assert!(!logs.truncated);
    for l in &logs.lines {
        assert!(l.timestamp().is_some(), "{l:?}");
        assert!(l.message().starts_with("line-"), "{l:?}");
    }
    let small = engine.service_logs(&svc_ids[0], LogTail { lines: 50, max_bytes: 100 }, secs(10)).unwrap();
    assert!(small.truncated);
    assert!(small.lines.iter().map(|l| l.line.len()).sum::<usize>() <= 100);

    // Events: the deploy's, then a service update's. Everything delivered is the stack's.
    let log = |e: &ccci::adapters::engine::EngineEvent| {
        let mut line = format!("{} {} {}", e.kind.as_str(), e.action, e.name().unwrap_or(""));
        if let Some(u) = e.attributes.get("updatestate.new") {
            line.push_str(&format!(" updatestate.new={u}"));
        }
        seen.lock().unwrap().push(line);
    };
    let pick = |want: &dyn Fn(&ccci::adapters::engine::EngineEvent) -> bool, what: &str| {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {what} event; seen: {:?}", seen.lock().unwrap());
            match watch.recv_timeout(left) {
                Some(Event::Engine(Notice::Event(e))) => {
                    log(&e);
                    assert!(e.name().unwrap_or("").starts_with(&format!("{name}_")), "{e:?}");
                    assert!(!e.action.starts_with("exec_"), "{e:?}");
                    if want(&e) {
                        return e;
                    }
                }
                Some(Event::Engine(Notice::Lost(err))) => panic!("stream lost: {err}"),
                _ => {}
            }
        }
    };
    let created = pick(&|e| e.kind == Kind::Service && e.verb() == "create", "service create");
    assert!(created.time <= std::time::SystemTime::now());
    pick(&|e| e.kind == Kind::Container && e.verb() == "start", "container start");
    let healthy = pick(&|e| e.health() == Some("healthy"), "health_status: healthy");
    assert_eq!(healthy.namespace(), Some(name.as_str()));
    docker(&["service", "update", "--detach", "--env-add", "X=1", &stack.service()]);
    let update = pick(&|e| e.kind == Kind::Service && e.verb() == "update", "service update");
    eprintln!("service update event read {:?} after dockerd's timestamp", update.lag());
    // The update's end is a service event too: what readiness waits for.
    let done = pick(
        &|e| e.kind == Kind::Service && e.attributes.get("updatestate.new").is_some_and(|s| s == "completed"),
        "update completed",
    );
    assert_eq!(done.name(), Some(stack.service().as_str()));
    // A call watching a lifetime watch with no stop pending answers as usual.
    assert_eq!(engine.services(Scope::Stack(&name), secs(10).watching(&watch)).unwrap().len(), 1);

    // Teardown: every kind's removal arrives (what a wait-gone needs), the unlabelled secret's too.
    remove_stack(&name);
    let mut want: BTreeSet<(Kind, &str)> = [
        (Kind::Service, "remove"),
        (Kind::Container, "destroy"),
        (Kind::Network, "remove"),
        (Kind::Volume, "destroy"),
        (Kind::Secret, "remove"),
        (Kind::Config, "remove"),
    ]
    .into_iter()
    .collect();
    let x_v1 = format!("{name}_x_v1");
    let mut x_v1_removed = false;
    while !want.is_empty() || !x_v1_removed {
        let e = pick(&|e| matches!(e.verb(), "remove" | "destroy"), "the removals");
        x_v1_removed |= e.kind == Kind::Secret && e.name() == Some(x_v1.as_str());
        want.retain(|(k, a)| !(*k == e.kind && *a == e.verb()));
    }
    eprintln!("events of the stack, in order: {:#?}", seen.lock().unwrap());
    assert!(sub.is_live());
    sub.close();
    drop(stack);
}

#[test]
fn engine_call_to_a_stalled_dockerd_times_out_and_a_cancel_abandons_it() {
    if !swarm_available() {
        return;
    }
    let proxy = Proxy::unix();
    let engine = Engine::new(proxy.host());
    // Through the proxy, dockerd answers (and the version is negotiated).
    assert!(engine.api_version(secs(10)).unwrap().starts_with("1."));
    engine.services(Scope::AnyStack, secs(10)).unwrap();

    // Stalled, and the engine's idle keep-alive connections cut: it must connect anew.
    proxy.set_stalled(true);
    proxy.cut();
    let t = Instant::now();
    let err = engine.services(Scope::Stack("x"), Deadline::after(Duration::from_millis(800))).unwrap_err();
    let took = t.elapsed();
    match &err {
        EngineError::Timeout { endpoint, after, .. } => {
            assert_eq!(endpoint, r#"GET /services?filters={"label":["com.docker.stack.namespace=x"]}"#);
            assert!(*after <= Duration::from_millis(800));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.is_infra());
    // Not before its deadline; how long after it is a figure for the bench, not an assert.
    assert!(took >= Duration::from_millis(790), "{took:?}");
    eprintln!("an 800 ms deadline ended the call after {took:?}");
    assert!(err.to_string().contains(&proxy.docker_host), "{err}");

    // A first call (negotiation included) is bounded the same way.
    let fresh = Engine::new(proxy.host());
    let t = Instant::now();
    assert!(matches!(fresh.api_version(Deadline::after(Duration::from_millis(500))), Err(EngineError::Timeout { .. })));
    eprintln!("a first call with a 500 ms deadline ended after {:?}", t.elapsed());

    // A cancel abandons the call long before its deadline.
    let t = Instant::now();
    let cancel = || t.elapsed() > Duration::from_millis(300);
    let err = engine.tasks(&["abc".to_string()], secs(30).or_when(&cancel)).unwrap_err();
    assert!(matches!(err, EngineError::Cancelled { stop: None, .. }), "{err:?}");
    assert!(!err.is_infra());
    eprintln!("a cancel after 300 ms ended a 30 s call after {:?}", t.elapsed());

    // Logs too.
    let r =
        engine.service_logs("abc", LogTail { lines: 5, max_bytes: 1000 }, Deadline::after(Duration::from_millis(300)));
    assert!(matches!(r, Err(EngineError::Timeout { .. })), "{r:?}");

    // Unstalled, the same engine answers again.
    proxy.set_stalled(false);
    proxy.cut();
    assert!(engine.version(secs(10)).is_ok());
}

#[test]
fn engine_unreachable_dockerd_is_a_connection_error() {
    let dir = tempfile::tempdir().unwrap();
    // No socket file at all.
    let gone = Engine::new(Host::parse(Some(&format!("unix://{}/none.sock", dir.path().display()))).unwrap());
    let e = gone.version(secs(5)).unwrap_err();
    assert!(matches!(e, EngineError::Connect { .. }), "{e:?}");
    assert!(e.is_infra());
    // A socket file nobody listens on (refused).
    let path = dir.path().join("dead.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(Path::new(&path).exists());
    let dead = Engine::new(Host::parse(Some(&format!("unix://{}", path.display()))).unwrap());
    let e = dead.services(Scope::AnyStack, secs(5)).unwrap_err();
    assert!(matches!(e, EngineError::Connect { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("cannot reach dockerd at unix://{}", path.display())), "{e}");
    // tcp, refused.
    let port = free_port();
    let tcp = Engine::new(Host::parse(Some(&format!("tcp://127.0.0.1:{port}"))).unwrap());
    let e = tcp.version(secs(5)).unwrap_err();
    assert!(matches!(e, EngineError::Connect { .. }), "{e:?}");
}

#[test]
fn engine_tcp_docker_host_is_honoured() {
    if !swarm_available() {
        return;
    }
    let proxy = Proxy::tcp();
    assert!(proxy.docker_host.starts_with("tcp://127.0.0.1:"));
    let engine = Engine::new(proxy.host());
    let cli = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(engine.api_version(secs(10)).unwrap(), cli[0]);
    assert!(!engine.nodes(secs(10)).unwrap().is_empty());
}

#[test]
fn engine_event_stream_dropped_by_the_proxy_is_reported_lost() {
    if !swarm_available() {
        return;
    }
    let proxy = Proxy::unix();
    let engine = Engine::new(proxy.host());
    let name = stack_name("e");
    let secret = format!("{name}_s");
    let (tx, rx) = channel::<Notice>();
    let filter = EventFilter::stack(&name).kinds(&[Kind::Secret]);
    let sub = engine.subscribe(&filter, Instant::now() + Duration::from_secs(60), tx).unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("s"), "x").unwrap();
    let created = {
        let mut c = Command::new("docker");
        c.args(["secret", "create", &secret]).arg(dir.path().join("s"));
        output_within(c, Duration::from_secs(60))
    };
    assert!(created.status.success(), "{}", stderr_of(&created));
    let cleanup = scopeguard(secret.clone());
    let ev = recv_until(&rx, Duration::from_secs(15), "the secret's create event", |n| match n {
        Notice::Event(e) => Some(e),
        Notice::Lost(e) => panic!("lost: {e}"),
    });
    assert_eq!((ev.kind.clone(), ev.verb(), ev.name()), (Kind::Secret, "create", Some(secret.as_str())));
    assert_eq!(ev.scope, "swarm");
    assert!(sub.is_live());

    // The proxy drops the stream: one Lost notice, promptly, and the thread ends.
    let t = Instant::now();
    proxy.cut();
    let err = recv_until(&rx, Duration::from_secs(5), "the Lost notice", |n| match n {
        Notice::Lost(e) => Some(e),
        Notice::Event(_) => None,
    });
    eprintln!("the Lost notice came {:?} after the cut", t.elapsed());
    assert!(matches!(err, EngineError::Broken { .. }), "{err:?}");
    assert!(err.is_infra());
    assert!(err.to_string().contains("GET /events?since="), "{err}");
    wait_until("the event thread to end", Duration::from_secs(5), || !sub.is_live());
    drop(sub);

    // A subscription through a stalled proxy delivers nothing and ends quietly at `until`.
    proxy.set_stalled(true);
    let (tx, rx) = channel::<Notice>();
    let sub = engine.subscribe(&filter, Instant::now() + Duration::from_millis(300), tx).unwrap();
    wait_until("the stalled subscription to reach its until", Duration::from_secs(5), || !sub.is_live());
    assert!(rx.try_recv().is_err(), "reaching until is not a loss");
    // Closing a live one returns at once.
    let (tx, _rx) = channel::<Notice>();
    let sub = engine.subscribe(&filter, Instant::now() + Duration::from_secs(60), tx).unwrap();
    let t = Instant::now();
    sub.close();
    eprintln!("closing a live subscription took {:?}", t.elapsed());
    drop(cleanup);
}

/// Removes a secret when dropped.
struct SecretGuard(String);

fn scopeguard(name: String) -> SecretGuard {
    SecretGuard(name)
}

impl Drop for SecretGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["secret", "rm", &self.0]).output();
    }
}
