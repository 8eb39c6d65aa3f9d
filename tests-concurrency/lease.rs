//! The cross-host app lease without a swarm (issue 20): two "hosts" (two ccci processes with
//! host files of their own) contend for one domain's lease on a real 3-member etcd cluster,
//! through `ccci lease-wait`, which takes the lease with the run's own acquire and obeys
//! `fence STEP` / `release` on stdin. Every wait here is on an event: a line a process printed,
//! a key in etcd, a process gone.

use std::io::Write;
use std::process::{Child, ChildStdin, Stdio};
use std::time::Duration;

use crate::common::etcd::Cluster;
use crate::common::*;

/// One "host": its own world (lock dir, runs dir, host file), sharing the cluster.
fn host(cluster: &Cluster, name: &str, ttl: &str) -> World {
    let mut w = World::new();
    w.set("CCCI_LEASE_ENDPOINTS", &cluster.endpoints());
    w.set("CCCI_LEASE_TTL", ttl);
    w.set("CCCI_LEASE_PREFIX", "/t");
    w.set("DRONE_STAGE_MACHINE", name);
    w
}

struct LeaseWait {
    child: Child,
    stdin: Option<ChildStdin>,
    out: LineWatch,
    err: LineWatch,
}

impl LeaseWait {
    fn start(w: &World, domain: &str, run_id: &str, timeout: Option<u64>) -> LeaseWait {
        let mut c = w.ccci();
        c.env("CCCI_RUN_ID", run_id).args(["lease-wait", domain]);
        if let Some(t) = timeout {
            c.args(["--timeout", &t.to_string()]);
        }
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take();
        let out = LineWatch::stdout_of(&mut child);
        let err = LineWatch::stderr_of(&mut child);
        LeaseWait { child, stdin, out, err }
    }

    fn say(&mut self, line: &str) {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }

    /// The token of the `held <ns> <token>` line, once printed.
    fn held(&self) -> u64 {
        self.out.wait_for("held ", Duration::from_secs(60));
        let text = self.out.text();
        let line = text.lines().find(|l| l.starts_with("held ")).unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    fn exit(&mut self) -> i32 {
        wait_within(&mut self.child, Duration::from_secs(60)).code().unwrap_or(-1)
    }
}

impl Drop for LeaseWait {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_waiter_is_told_the_holder_and_takes_over_at_the_release() {
    let cluster = Cluster::start();
    let (a, b) = (host(&cluster, "host-a", "10"), host(&cluster, "host-b", "10"));
    let mut holder = LeaseWait::start(&a, "d1.test", "run-a", None);
    let t1 = holder.held();
    let waiter = LeaseWait::start(&b, "d1.test", "run-b", Some(120));
    waiter.err.wait_for("holds it", Duration::from_secs(30));
    let told = waiter.err.text();
    let pid = holder.child.id();
    assert!(
        told.contains(&format!("another run of d1.test holds it (host host-a, run run-a, pid {pid}; token {t1})")),
        "{told}"
    );
    holder.say("release");
    assert_eq!(holder.exit(), 0, "{}", holder.err.text());
    let t2 = waiter.held();
    assert!(t2 > t1, "the next holder's token {t2} must exceed {t1}");
    let (rev, value, _) = cluster.get("/t/apps/d1.test").expect("the waiter's key");
    assert_eq!(rev, t2, "the token is the key's create_revision");
    assert!(value.contains("\"run_id\":\"run-b\"") && value.contains("\"host\":\"host-b\""), "{value}");
    drop(waiter);
    wait_until("the dead waiter's key to lapse", Duration::from_secs(30), || {
        cluster.exists("/t/apps/d1.test") == Some(false)
    });
}

#[test]
fn a_wait_times_out_with_75_naming_the_holder_and_a_signal_cancels_it() {
    let cluster = Cluster::start();
    let (a, b) = (host(&cluster, "host-a", "10"), host(&cluster, "host-b", "10"));
    let mut holder = LeaseWait::start(&a, "d2.test", "run-a", None);
    holder.held();
    let mut timed = LeaseWait::start(&b, "d2.test", "run-b", Some(1));
    assert_eq!(timed.exit(), 75, "{}", timed.err.text());
    assert!(timed.err.text().contains("held by host host-a, run run-a"), "{}", timed.err.text());
    let mut waiting = LeaseWait::start(&b, "d2.test", "run-c", None);
    waiting.err.wait_for("holds it", Duration::from_secs(30));
    signal(waiting.child.id(), libc::SIGTERM);
    assert_eq!(waiting.exit(), 143, "{}", waiting.err.text());
    assert!(!waiting.out.text().contains("held"), "a cancelled waiter never holds");
    holder.say("fence deploy");
    holder.out.wait_for("fence ok", Duration::from_secs(30));
    holder.say("release");
    assert_eq!(holder.exit(), 0);
}

/// The pause row of the failure table at the protocol level: a holder stopped past its TTL is
/// overtaken, and once resumed it never passes a fence — its fence is refused or its keepalive
/// finds the lease gone first (both end it with 69) — while the new holder's key is untouched.
#[test]
fn a_paused_holder_is_overtaken_and_never_passes_a_fence_again() {
    let cluster = Cluster::start();
    let (a, b) = (host(&cluster, "host-a", "2"), host(&cluster, "host-b", "2"));
    let mut paused = LeaseWait::start(&a, "d3.test", "run-a", None);
    let t1 = paused.held();
    let mut next = LeaseWait::start(&b, "d3.test", "run-b", None);
    next.err.wait_for("holds it", Duration::from_secs(30));
    signal(paused.child.id(), libc::SIGSTOP);
    // Queued while it is stopped: the first thing it may do once resumed.
    paused.say("fence undeploy");
    let t2 = next.held();
    assert!(t2 > t1);
    signal(paused.child.id(), libc::SIGCONT);
    assert_eq!(paused.exit(), 69, "{}", paused.err.text());
    let out = paused.out.text();
    assert!(!out.contains("fence ok"), "the stale holder passed a fence: {out}");
    assert!(out.contains("fence refused") || out.contains("lost"), "{out}");
    assert_eq!(cluster.get("/t/apps/d3.test").map(|k| k.0), Some(t2), "the new holder's key was touched");
    next.say("fence deploy");
    next.out.wait_for("fence ok", Duration::from_secs(30));
    next.say("release");
    assert_eq!(next.exit(), 0);
}

/// Quorum loss pauses, never breaks: without a quorum a new waiter gives up at its timeout with
/// the infra verdict; a live holder's key survives the outage and its fence passes again once
/// the members are back.
#[test]
fn without_quorum_a_new_waiter_exits_69_and_the_holder_survives_the_outage() {
    let mut cluster = Cluster::start();
    // A TTL far above the few seconds of the outage: the holder normally rides it out.
    let (a, b) = (host(&cluster, "host-a", "30"), host(&cluster, "host-b", "10"));
    let mut holder = LeaseWait::start(&a, "d4.test", "run-a", None);
    let t1 = holder.held();
    let leader = cluster.leader().expect("a leader");
    let other = (0..3).find(|i| *i != leader).unwrap();
    cluster.kill(leader);
    cluster.kill(other);
    let mut late = LeaseWait::start(&b, "d4.test", "run-b", Some(3));
    assert_eq!(late.exit(), 69, "{}", late.err.text());
    assert!(late.err.text().contains("no quorum"), "{}", late.err.text());
    cluster.restart(leader);
    cluster.restart(other);
    cluster.wait_writable(Duration::from_secs(60));
    // Without a quorum no lease expires, and the new leader refreshed every lease: still ours.
    assert_eq!(cluster.get("/t/apps/d4.test").map(|k| k.0), Some(t1));
    holder.say("fence deploy");
    holder.out.wait_for("fence ", Duration::from_secs(30));
    // Only on a host so slow that the outage outlasted 4/5 of the TTL would the holder have
    // given up first (then "lost": it stopped, as a run stops); it never passes a fence it
    // should not.
    let out = holder.out.text();
    assert!(out.contains("fence ok") || out.contains("lost"), "{out}\n{}", holder.err.text());
}
