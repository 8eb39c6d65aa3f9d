//! Runner hosts that share one swarm (issue 20), on the real swarm and a real 3-member etcd
//! cluster on loopback: two "hosts" are two worlds — separate lock dirs, runs dirs, abra homes
//! and host files, the same domain suffix — whose ccci's share the swarm and the cluster. Each
//! test is one row of the failure table in docs/concurrency.md.
//!
//! Synchronisation is on events only: marker lines on stderr, keys in etcd, pids gone, a
//! lease's TTL seen renewed.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ccci::exit::Outcome;
use ccci::janitor::report::{LeaseSeen, Report};
use ccci::janitor::vocab::Act;
use ccci::report::TeardownResult;

use crate::common::etcd::Cluster;
use crate::common::netns::Netns;
use crate::common::*;

struct Hosts {
    a: World,
    b: World,
    gate_a: PathBuf,
    gate_b: PathBuf,
    cluster: Cluster,
}

/// Two hosts with hello on host ports of their own, parked in a custom test until their gate
/// exists, sharing the swarm (one domain suffix) and a fresh cluster; leases of `ttl` seconds.
fn two_hosts(ttl: &str) -> Hosts {
    let cluster = Cluster::start();
    let endpoints = cluster.endpoints();
    two_hosts_on(cluster, ttl, &endpoints)
}

/// [`two_hosts`] on a given cluster, host A reaching it at `a_endpoints`.
fn two_hosts_on(cluster: Cluster, ttl: &str, a_endpoints: &str) -> Hosts {
    let mut a = World::new();
    let mut b = World::new();
    b.suffix = a.suffix.clone();
    for (w, name) in [(&mut a, "host-a"), (&mut b, "host-b")] {
        let endpoints = if name == "host-a" { a_endpoints.to_string() } else { cluster.endpoints() };
        w.set("CCCI_LEASE_ENDPOINTS", &endpoints);
        w.set("CCCI_LEASE_TTL", ttl);
        w.set("CCCI_LEASE_PREFIX", "/t");
        w.set("DRONE_STAGE_MACHINE", name);
        w.recipe("hello");
        w.own_port("hello");
    }
    let (gate_a, gate_b) = (a.parked_test("hello"), b.parked_test("hello"));
    Hosts { a, b, gate_a, gate_b, cluster }
}

impl Hosts {
    fn domain(&self) -> String {
        self.a.domain("hello", "0", "")
    }

    fn key(&self) -> String {
        format!("/t/apps/{}", self.domain())
    }

    fn leftovers(&self) -> Vec<String> {
        let mut l = self.a.leftovers();
        l.extend(self.b.leftovers().into_iter().map(|x| format!("host-b {x}")));
        l.sort();
        l.dedup();
        l
    }
}

fn start(w: &World, run_id: &str, stages: &str, extra: &[&str]) -> (Child, LineWatch) {
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", run_id)
        .args(["run", "--recipe", "hello", "--stages", stages])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let err = LineWatch::stderr_of(&mut child);
    (child, err)
}

fn janitor(w: &World) -> (i32, Report) {
    let mut c = w.ccci();
    c.args(["janitor", "--json"]);
    let o = output_within(c, Duration::from_secs(240));
    let r = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("janitor exited {} with no report ({e}): {}", code(&o), stderr_of(&o)));
    (code(&o), r)
}

/// The token a run logged when it took the lease (`app lease held: <key> (token N, …`).
fn token_of(err: &LineWatch) -> u64 {
    let text = err.text();
    let at = text.find("app lease held: ").unwrap_or_else(|| panic!("no lease taken:\n{text}"));
    let rest = &text[at..];
    let t = &rest[rest.find("(token ").unwrap() + 7..];
    t[..t.find(',').unwrap()].parse().unwrap()
}

fn lockfile(w: &World, domain: &str) -> PathBuf {
    w.lock_dir.join(format!("cc-ci-app-{domain}.lock"))
}

fn now_secs() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// `create` and `remove` of the stack's services, in the order dockerd saw them since `since`.
fn service_events(stack: &str, since: &str) -> Vec<String> {
    let o = Command::new("docker")
        .args(["events", "--since", since, "--until", &now_secs(), "--filter", "type=service"])
        .args(["--format", "{{.Action}} {{.Actor.Attributes.name}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.ends_with(&format!(" {stack}_app")))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|a| matches!(*a, "create" | "remove"))
        .map(str::to_string)
        .collect()
}

/// Row "contention": the same domain from two hosts serialises — one waits, told who holds it,
/// both pass, and the swarm never sees the second deploy before the first app is removed.
#[test]
fn the_same_domain_from_two_hosts_serialises_and_both_pass() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let h = two_hosts("10");
    let since = now_secs();
    let (a_id, b_id) = (format!("a{}", unique()), format!("b{}", unique()));
    let _guard = KillTokens(vec![token_env(&a_id), token_env(&b_id)]);
    let (mut a, a_err) = start(&h.a, &a_id, "install,custom", &[]);
    a_err.wait_for("parked-in-test", Duration::from_secs(120));
    let (mut b, b_err) = start(&h.b, &b_id, "install", &[]);
    b_err.wait_for("holds it", Duration::from_secs(60));
    let told = format!("(host host-a, run {a_id}, pid {}", a.id());
    assert!(b_err.text().contains(&told), "the waiter is told who holds it: {told}\n{}", b_err.text());
    fs::write(&h.gate_a, "").unwrap();
    assert_eq!(wait_within(&mut a, Duration::from_secs(180)).code(), Some(0), "{}", a_err.text());
    assert_eq!(wait_within(&mut b, Duration::from_secs(180)).code(), Some(0), "{}", b_err.text());
    for (w, id) in [(&h.a, &a_id), (&h.b, &b_id)] {
        let r = w.results(id);
        assert_eq!((r.outcome, r.teardown.result), (Outcome::Pass, TeardownResult::Clean), "{r:?}");
    }
    let (ta, tb) = (token_of(&a_err), token_of(&b_err));
    assert!(tb > ta, "the second holder's token {tb} must exceed the first's {ta}");
    // Never two deploys at once: dockerd saw create, remove, create, remove — in that order.
    let events = service_events(&h.a.stack("hello"), &since);
    assert_eq!(events, ["create", "remove", "create", "remove"], "the deploys overlapped");
    // And each host's own abra log shows a whole life cycle.
    for w in [&h.a, &h.b] {
        let log = w.abra_log();
        assert_eq!(log.lines().filter(|l| l.starts_with("start ") && l.contains("app new")).count(), 1, "{log}");
    }
    assert_eq!(h.cluster.exists(&h.key()), Some(false), "the lease is released");
    assert!(h.leftovers().is_empty(), "{:?}", h.leftovers());
}

/// Row "holder crash": host A's ccci is SIGKILLed while it holds the domain. After the TTL its
/// key lapses and host B's waiting run proceeds (clearing A's app under its own lease); then B
/// dies too, and host A's janitor reaps B's app under a fresh lease once B's key lapses.
#[test]
fn a_sigkilled_holder_lapses_after_the_ttl_a_waiting_run_proceeds_and_the_other_janitor_reaps() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let h = two_hosts("4");
    let (a_id, b_id) = (format!("a{}", unique()), format!("b{}", unique()));
    let _guard = KillTokens(vec![token_env(&a_id), token_env(&b_id)]);
    let (mut a, a_err) = start(&h.a, &a_id, "install,custom", &[]);
    a_err.wait_for("parked-in-test", Duration::from_secs(120));
    let (mut b, b_err) = start(&h.b, &b_id, "install,custom", &[]);
    b_err.wait_for("holds it", Duration::from_secs(60));
    signal(a.id(), libc::SIGKILL);
    let _ = a.wait();
    wait_until("A's children to die with it", Duration::from_secs(20), || pids_with_env(&token_env(&a_id)).is_empty());
    // After the TTL B takes the domain, and clears what A left under its own lease.
    b_err.wait_for("parked-in-test", Duration::from_secs(120));
    let text = b_err.text();
    assert!(text.contains("clearing leftovers of"), "B reaped A's app before its deploy:\n{text}");
    assert!(token_of(&b_err) > token_of(&a_err));

    signal(b.id(), libc::SIGKILL);
    let _ = b.wait();
    wait_until("B's children to die with it", Duration::from_secs(20), || pids_with_env(&token_env(&b_id)).is_empty());
    let left = h.leftovers();
    assert!(left.iter().any(|l| l.starts_with("service:")), "B's app is there to reap: {left:?}");
    wait_until("B's lease key to lapse", Duration::from_secs(60), || h.cluster.exists(&h.key()) == Some(false));
    // Host A's janitor: B's app is an orphan of the shared swarm (its key is gone), whichever
    // host ran it; reaped under a fresh lease, with the token checked at every step.
    let (code_a, r) = janitor(&h.a);
    assert_eq!(code_a, 0, "{r:?}");
    let app = &r.apps[0];
    assert_eq!((app.action, app.lease), (Act::Reaped, Some(LeaseSeen::Taken)), "{r:?}");
    assert!(app.lease_token > Some(token_of(&b_err)), "{r:?}");
    assert!(!lockfile(&h.a, &h.domain()).exists(), "A's lockfile goes with the reap");
    // Host B's own leftovers (its .env and lockfile) are its janitor's.
    let (code_b, r) = janitor(&h.b);
    assert_eq!(code_b, 0, "{r:?}");
    assert!(!lockfile(&h.b, &h.domain()).exists(), "{r:?}");
    assert!(h.leftovers().is_empty(), "{:?}", h.leftovers());
    assert_eq!(h.cluster.exists(&h.key()), Some(false), "the janitors released their leases");
}

/// Row "pause": host A's ccci is SIGSTOPped past the TTL. Host B takes the domain over and
/// deploys; when A resumes, it stops (lease lost) and its teardown is refused by the fence: it
/// does not undeploy or remove B's app, which goes on and passes.
#[test]
fn a_paused_holder_is_overtaken_and_its_resumed_teardown_is_refused_by_the_fence() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let h = two_hosts("4");
    let (a_id, b_id) = (format!("a{}", unique()), format!("b{}", unique()));
    let _guard = KillTokens(vec![token_env(&a_id), token_env(&b_id)]);
    let (mut a, a_err) = start(&h.a, &a_id, "install,custom", &[]);
    a_err.wait_for("parked-in-test", Duration::from_secs(120));
    let (mut b, b_err) = start(&h.b, &b_id, "install,custom", &[]);
    b_err.wait_for("holds it", Duration::from_secs(60));
    signal(a.id(), libc::SIGSTOP);
    b_err.wait_for("parked-in-test", Duration::from_secs(120));
    let tb = token_of(&b_err);
    assert!(tb > token_of(&a_err));
    let before = h.a.abra_log().lines().count();
    signal(a.id(), libc::SIGCONT);
    let st = wait_within(&mut a, Duration::from_secs(120));
    let text = a_err.text();
    assert_eq!(st.code(), Some(69), "a lost lease is the infra verdict:\n{text}");
    assert!(text.contains("the app lease was lost"), "{text}");
    assert!(text.contains("refused by the fence"), "{text}");
    let r = h.a.results(&a_id);
    assert_eq!((r.outcome, r.teardown.result), (Outcome::Infra, TeardownResult::Abandoned), "{r:?}");
    // A touched nothing once resumed: no abra call at all after the pause.
    let after: Vec<String> = h.a.abra_log().lines().skip(before).map(str::to_string).collect();
    assert!(after.iter().all(|l| !l.contains("app undeploy") && !l.contains("app remove")), "{after:?}");
    // B's app is whole: B passes, its teardown clean.
    assert_eq!(h.cluster.get(&h.key()).map(|k| k.0), Some(tb), "B still holds the domain");
    fs::write(&h.gate_b, "").unwrap();
    assert_eq!(wait_within(&mut b, Duration::from_secs(180)).code(), Some(0), "{}", b_err.text());
    let r = h.b.results(&b_id);
    assert_eq!((r.outcome, r.teardown.result), (Outcome::Pass, TeardownResult::Clean), "{r:?}");
    // What A left on its own host (its .env, its lockfile) is its janitor's.
    let (code_a, r) = janitor(&h.a);
    assert_eq!(code_a, 0, "{r:?}");
    assert!(h.leftovers().is_empty(), "{:?}", h.leftovers());
}

/// Row "partition": host A runs in a network namespace of its own and is cut off from the
/// etcd cluster (its veth down) while it holds the domain — it can still reach dockerd, the
/// hard case. A stops itself once its keepalive cannot be answered; its teardown cannot prove
/// the lease and waits. After the TTL the cluster expires A's lease and host B takes over. When
/// the link is back, A's teardown fence finds the lease gone and refuses: A touches nothing of
/// B's app.
#[test]
fn a_partitioned_holder_stops_and_after_the_heal_its_teardown_is_refused_by_the_fence() {
    if !swarm_available() {
        return;
    }
    if !Netns::available() {
        eprintln!("skipped: a network namespace needs root and iproute2");
        return;
    }
    let _slot = swarm_slot();
    let ns = Netns::new();
    let cluster = Cluster::start_on(&[&ns.host_ip]);
    let a_endpoints = cluster.endpoints_at(&ns.host_ip);
    let h = two_hosts_on(cluster, "4", &a_endpoints);
    let (a_id, b_id) = (format!("a{}", unique()), format!("b{}", unique()));
    let _guard = KillTokens(vec![token_env(&a_id), token_env(&b_id)]);
    let mut c = h.a.ccci();
    c.env("CCCI_RUN_ID", &a_id).args(["run", "--recipe", "hello", "--stages", "install,custom"]);
    let mut a = ns.wrap(&c).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let a_err = LineWatch::stderr_of(&mut a);
    a_err.wait_for("parked-in-test", Duration::from_secs(120));
    let (mut b, b_err) = start(&h.b, &b_id, "install,custom", &[]);
    b_err.wait_for("holds it", Duration::from_secs(60));
    let before = h.a.abra_log().lines().count();
    ns.cut();
    a_err.wait_for("waiting for etcd to answer", Duration::from_secs(60));
    b_err.wait_for("parked-in-test", Duration::from_secs(120));
    let tb = token_of(&b_err);
    ns.heal();
    let st = wait_within(&mut a, Duration::from_secs(120));
    let text = a_err.text();
    assert_eq!(st.code(), Some(69), "{text}");
    assert!(text.contains("refused by the fence"), "{text}");
    let r = h.a.results(&a_id);
    assert_eq!((r.outcome, r.teardown.result), (Outcome::Infra, TeardownResult::Abandoned), "{r:?}");
    let after: Vec<String> = h.a.abra_log().lines().skip(before).map(str::to_string).collect();
    assert!(after.iter().all(|l| !l.contains("app undeploy") && !l.contains("app remove")), "{after:?}");
    assert_eq!(h.cluster.get(&h.key()).map(|k| k.0), Some(tb), "B still holds the domain");
    fs::write(&h.gate_b, "").unwrap();
    assert_eq!(wait_within(&mut b, Duration::from_secs(180)).code(), Some(0), "{}", b_err.text());
    let (code_a, r) = janitor(&h.a);
    assert_eq!(code_a, 0, "{r:?}");
    assert!(h.leftovers().is_empty(), "{:?}", h.leftovers());
}

/// Row "leader loss": the etcd leader is killed while host A holds the domain. Nothing changes:
/// A's lease is renewed through the new leader, host B still waits (told the holder) and takes
/// over at A's release, and both pass.
#[test]
fn killing_the_etcd_leader_mid_run_changes_nothing() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut h = two_hosts("4");
    let (a_id, b_id) = (format!("a{}", unique()), format!("b{}", unique()));
    let _guard = KillTokens(vec![token_env(&a_id), token_env(&b_id)]);
    let (mut a, a_err) = start(&h.a, &a_id, "install,custom", &[]);
    a_err.wait_for("parked-in-test", Duration::from_secs(120));
    let (_, _, lease) = h.cluster.get(&h.key()).expect("A's key");
    let leader = h.cluster.leader().expect("a leader");
    h.cluster.kill(leader);
    wait_until("a new leader", Duration::from_secs(30), || h.cluster.leader().is_some());
    // A keepalive answered through the new leader: the lease's remaining TTL goes up again.
    let mut lowest = i64::MAX;
    wait_until("A's lease renewed after the election", Duration::from_secs(30), || {
        let t = h.cluster.ttl_left(lease).unwrap_or(i64::MAX);
        let renewed = t > lowest && t > 0;
        lowest = lowest.min(t);
        renewed
    });
    let (mut b, b_err) = start(&h.b, &b_id, "install", &[]);
    b_err.wait_for("holds it", Duration::from_secs(60));
    assert!(b_err.text().contains(&format!("run {a_id}")), "{}", b_err.text());
    fs::write(&h.gate_a, "").unwrap();
    assert_eq!(wait_within(&mut a, Duration::from_secs(180)).code(), Some(0), "{}", a_err.text());
    assert_eq!(wait_within(&mut b, Duration::from_secs(180)).code(), Some(0), "{}", b_err.text());
    assert!(!a_err.text().contains("lease was lost"), "{}", a_err.text());
    assert!(h.leftovers().is_empty(), "{:?}", h.leftovers());
}

/// Row "quorum loss": two of three members are killed while host A holds the domain. A new run
/// on host B waits up to its --lock-timeout and exits with the infra verdict, creating nothing;
/// B's janitor reaps nothing it cannot prove orphaned. A's keepalive fails, so A stops — and
/// its teardown waits for etcd: once the members are back its lease is re-proved (without a
/// quorum no lease expires) and it tears down cleanly.
#[test]
fn without_quorum_new_runs_exit_infra_nothing_is_reaped_and_the_holder_tears_down_once_it_is_back() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut h = two_hosts("4");
    let (a_id, b_id) = (format!("a{}", unique()), format!("b{}", unique()));
    let _guard = KillTokens(vec![token_env(&a_id), token_env(&b_id)]);
    let (mut a, a_err) = start(&h.a, &a_id, "install,custom", &[]);
    a_err.wait_for("parked-in-test", Duration::from_secs(120));
    let ta = token_of(&a_err);
    let leader = h.cluster.leader().expect("a leader");
    let other = (0..3).find(|i| *i != leader).unwrap();
    h.cluster.kill(leader);
    h.cluster.kill(other);

    let mut c = h.b.ccci();
    c.env("CCCI_RUN_ID", &b_id).args(["run", "--recipe", "hello", "--stages", "install", "--lock-timeout", "3"]);
    let o = output_within(c, Duration::from_secs(180));
    assert_eq!(code(&o), 69, "{}", stderr_of(&o));
    let r = h.b.results(&b_id);
    assert_eq!(r.outcome, Outcome::Infra, "{r:?}");
    assert!(r.reason.as_deref().unwrap_or("").contains("no quorum"), "{r:?}");
    let b_log = h.b.abra_log();
    assert!(!b_log.contains("app new") && !b_log.contains("app deploy"), "B created nothing:\n{b_log}");
    assert!(!h.b.leftovers().iter().any(|l| l.starts_with("env:")), "{:?}", h.b.leftovers());

    let (code_b, r) = janitor(&h.b);
    assert_eq!(code_b, 69, "etcd unreadable is the infra verdict, as for a run: {r:?}");
    assert!(r.errors.iter().any(|e| e.contains("cannot read the app leases")), "{r:?}");
    assert!(r.apps.iter().all(|a| a.action != Act::Reaped), "{r:?}");
    assert!(h.a.leftovers().iter().any(|l| l.starts_with("service:")), "A's app is untouched");

    // A lost its keepalive, stopped, and waits in teardown for etcd to prove its lease.
    a_err.wait_for("waiting for etcd to answer", Duration::from_secs(60));
    h.cluster.restart(leader);
    h.cluster.restart(other);
    let st = wait_within(&mut a, Duration::from_secs(180));
    assert_eq!(st.code(), Some(69), "{}", a_err.text());
    let r = h.a.results(&a_id);
    assert_eq!((r.outcome, r.teardown.result), (Outcome::Infra, TeardownResult::Clean), "{r:?}");
    assert!(a_err.text().contains("re-proved"), "{}", a_err.text());
    assert!(h.leftovers().is_empty(), "{:?}", h.leftovers());
    assert_eq!(h.cluster.exists(&h.key()), Some(false), "A released its lease (token {ta})");
}

/// Row "two janitors": the janitors of both hosts sweep the same orphan at once. The lease
/// they each need decides: exactly one reaps it, the other leaves it (held) or finds it gone;
/// neither fails, and nothing is left once each host's janitor has cleaned its own files.
#[test]
fn two_hosts_janitors_racing_for_one_orphan_reap_it_once() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let h = two_hosts("4");
    let a_id = format!("a{}", unique());
    let _guard = KillTokens(vec![token_env(&a_id)]);
    let (mut a, a_err) = start(&h.a, &a_id, "install,custom", &[]);
    a_err.wait_for("parked-in-test", Duration::from_secs(120));
    signal(a.id(), libc::SIGKILL);
    let _ = a.wait();
    wait_until("A's children to die with it", Duration::from_secs(20), || pids_with_env(&token_env(&a_id)).is_empty());
    wait_until("A's lease key to lapse", Duration::from_secs(60), || h.cluster.exists(&h.key()) == Some(false));
    assert!(h.leftovers().iter().any(|l| l.starts_with("service:")), "{:?}", h.leftovers());
    // Host B has run nothing yet: its lock dir is what its first run would create.
    fs::create_dir_all(&h.b.lock_dir).unwrap();
    fs::set_permissions(&h.b.lock_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let sweep = |w: &World| {
        let mut c = w.ccci();
        c.args(["janitor", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    // Both started before either is waited on: their sweeps overlap.
    let ja = sweep(&h.a).spawn().unwrap();
    let jb = sweep(&h.b).spawn().unwrap();
    let (oa, ob) = (output_of(ja, Duration::from_secs(240)), output_of(jb, Duration::from_secs(240)));
    let report = |o: &std::process::Output| -> Report {
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("no report ({e}): {}", stderr_of(o)))
    };
    let (ra, rb) = (report(&oa), report(&ob));
    assert_eq!((code(&oa), code(&ob)), (0, 0), "A: {ra:?}\nB: {rb:?}");
    let reaped = |r: &Report| r.apps.iter().filter(|a| a.domain == h.domain() && a.action == Act::Reaped).count();
    assert_eq!(reaped(&ra) + reaped(&rb), 1, "exactly one janitor reaped the orphan\nA: {ra:?}\nB: {rb:?}");
    for r in [&ra, &rb] {
        for app in r.apps.iter().filter(|a| a.domain == h.domain()) {
            assert!([Act::Reaped, Act::Left, Act::AlreadyGone].contains(&app.action), "{app:?}");
            if app.action == Act::Reaped {
                assert_eq!(app.lease, Some(LeaseSeen::Taken), "{app:?}");
            }
        }
    }
    // What is left is each host's own bookkeeping (a .env, a lockfile): its janitor's.
    for w in [&h.a, &h.b] {
        let (c, r) = janitor(w);
        assert_eq!(c, 0, "{r:?}");
    }
    assert!(h.leftovers().is_empty(), "{:?}", h.leftovers());
    assert_eq!(h.cluster.exists(&h.key()), Some(false), "the janitors released their leases");
}
