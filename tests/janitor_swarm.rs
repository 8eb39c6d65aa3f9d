//! The janitor on a real swarm (§6): what a SIGKILLed run leaves is reaped completely, a
//! half-removed app (services gone, volumes and secrets left) is found and reaped, and two runs
//! of one domain serialise on the app lock and both pass.

use std::fs;
use std::process::{Child, Stdio};
use std::time::Duration;

use ccci::exit::Outcome;
use ccci::janitor::report::Report;
use ccci::janitor::vocab::{Act, LockSeen, Source};
use ccci::report::TeardownResult;

use crate::common::*;

/// A world with hello on its own host port; its custom test `test_wait` parks until `gate`
/// exists (printing `parked-in-test` first).
fn world_with_gate() -> (World, std::path::PathBuf) {
    let w = World::new();
    w.recipe("hello");
    w.own_port("hello");
    let gate = w.parked_test("hello");
    (w, gate)
}

fn start(w: &World, run_id: &str, stages: &str) -> (Child, LineWatch) {
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", run_id)
        .args(["run", "--recipe", "hello", "--stages", stages])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let err = LineWatch::stderr_of(&mut child);
    (child, err)
}

fn lock_file(w: &World) -> std::path::PathBuf {
    w.lock_dir.join(format!("cc-ci-app-{}.lock", w.domain("hello", "0", "")))
}

fn janitor(w: &World) -> Report {
    let mut c = w.ccci();
    c.args(["janitor", "--json"]);
    let o = output_within(c, Duration::from_secs(240));
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    janitor_report(&o.stdout)
}

fn kinds(left: &[String]) -> Vec<&str> {
    let mut k: Vec<&str> = left.iter().filter_map(|l| l.split(':').next()).collect();
    k.sort_unstable();
    k.dedup();
    k
}

/// Kills whatever still carries a run token when the test ends (even when it failed).
/// Waits until no process carries the run's token (PDEATHSIG took them down).
fn wait_descendants_gone(run_id: &str) {
    let token = token_env(run_id);
    wait_until("the run's children to die with it", Duration::from_secs(20), || pids_with_env(&token).is_empty());
}

#[test]
fn a_sigkilled_run_is_reaped_completely_by_the_janitor() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let (w, _gate) = world_with_gate();
    let run_id = format!("k{}", unique());
    let (mut run, err) = start(&w, &run_id, "install,custom");
    let _guard = KillTokens(vec![token_env(&run_id)]);
    err.wait_for("parked-in-test", Duration::from_secs(120));
    signal(run.id(), libc::SIGKILL);
    let _ = run.wait();
    wait_descendants_gone(&run_id);
    let left = w.leftovers();
    for k in ["service", "volume", "secret", "config", "network", "env"] {
        assert!(kinds(&left).contains(&k), "the killed run should have left a {k}: {left:?}");
    }
    assert!(lock_file(&w).exists());

    let r = janitor(&w);
    let app = &r.apps[0];
    assert_eq!(app.domain, w.domain("hello", "0", ""));
    assert_eq!((app.lock, app.action), (LockSeen::Free, Act::Reaped), "{r:?}");
    assert_eq!(app.sources, [Source::Abra, Source::Docker]);
    let left = w.leftovers();
    assert!(left.is_empty(), "after the janitor: {left:?}");
    assert!(!lock_file(&w).exists(), "the lockfile remains");
}

#[test]
fn volumes_and_secrets_left_without_services_are_found_and_reaped() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let (mut w, _gate) = world_with_gate();
    // The run's teardown undeploys, then hangs in `abra app remove`: SIGKILL it right there.
    w.abra_mode("hang:remove");
    let run_id = format!("h{}", unique());
    let (mut run, err) = start(&w, &run_id, "install");
    wait_until("teardown to hang in abra app remove", Duration::from_secs(180), || {
        w.abra_log().lines().any(|l| l.starts_with("hang ") && l.ends_with("app remove"))
    });
    signal(run.id(), libc::SIGKILL);
    let _ = run.wait();
    // The hung fixture abra died with ccci (PDEATHSIG), but its `sleep` lives on: a straggler.
    let token = token_env(&run_id);
    let _guard = KillTokens(vec![token.clone()]);
    wait_until("abra to die with ccci", Duration::from_secs(20), || pids_with_env(&token).len() == 1);
    let left = w.leftovers();
    let k = kinds(&left);
    assert!(!k.contains(&"service") && !k.contains(&"container"), "undeploy removed the services: {left:?}");
    assert!(k.contains(&"volume") && k.contains(&"secret") && k.contains(&"env"), "{left:?}\n{}", err.text());

    w.abra_mode("");
    let r = janitor(&w);
    let app = &r.apps[0];
    assert_eq!(app.action, Act::Reaped, "{r:?}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    assert_eq!(r.stragglers[0].run_id, run_id, "{r:?}");
    assert!(pids_with_env(&token).is_empty(), "the straggler of the dead run survived the janitor");
    assert!(!lock_file(&w).exists());
}

#[test]
fn two_runs_of_one_domain_serialise_and_both_pass() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let (w, gate) = world_with_gate();
    let (a_id, b_id) = (format!("a{}", unique()), format!("b{}", unique()));
    let (mut a, a_err) = start(&w, &a_id, "install,custom");
    a_err.wait_for("parked-in-test", Duration::from_secs(120));
    let (mut b, b_err) = start(&w, &b_id, "install");
    b_err.wait_for("is in flight", Duration::from_secs(60));
    assert!(b_err.text().contains(&format!("run {a_id}")), "{}", b_err.text());
    fs::write(&gate, "").unwrap();
    let st = wait_within(&mut a, Duration::from_secs(180));
    assert_eq!(st.code(), Some(0), "{}", a_err.text());
    let st = wait_within(&mut b, Duration::from_secs(180));
    assert_eq!(st.code(), Some(0), "{}", b_err.text());
    for id in [&a_id, &b_id] {
        let r = w.results(id);
        assert_eq!((r.outcome, r.teardown.result), (Outcome::Pass, TeardownResult::Clean), "{r:?}");
    }
    // From the fixture's event log: B created its app only after A removed its own.
    let log = w.abra_log();
    let lines: Vec<&str> = log.lines().collect();
    let a_remove_end = lines.iter().position(|l| l.starts_with("end ") && l.contains("app remove rc=0")).expect(&log);
    let news: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("start ") && l.contains("app new"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(news.len(), 2, "{log}");
    assert!(news[0] < a_remove_end && a_remove_end < news[1], "the runs overlapped:\n{log}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// Issue 16: with `janitor --watch` running, a deployed run SIGKILLed mid-test is reaped with no
/// further command — stack, volumes, secrets, configs, network, `.env`, lockfile and the
/// process its test left behind — while the normal run before it was never touched.
#[test]
fn the_watch_alone_reaps_a_sigkilled_deployed_run() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("hello");
    w.own_port("hello");
    let gate = w.path().join("gate");
    // The test leaves a process of its own behind (setsid: out of its step's group, carrying
    // the run token), then parks.
    w.trusted(
        "hello",
        "test_wait",
        &format!(
            "#!/bin/sh\nsetsid sleep 300 </dev/null >/dev/null 2>&1 &\necho parked-in-test\nwhile [ ! -e '{}' ]; do sleep 0.1; done\n",
            gate.display()
        ),
        true,
    );
    let watch = Watcher::start(&w);
    let d = w.domain("hello", "0", "");

    // A normal run first: released after its own clean teardown, the watch does nothing to it.
    fs::write(&gate, "").unwrap();
    let ok_id = format!("n{}", unique());
    let (mut ok, ok_err) = start(&w, &ok_id, "install,custom");
    let st = wait_within(&mut ok, Duration::from_secs(240));
    assert_eq!(st.code(), Some(0), "{}", ok_err.text());
    let _ok_guard = KillTokens(vec![token_env(&ok_id)]);
    for p in pids_with_env(&token_env(&ok_id)) {
        signal(p as u32, libc::SIGKILL);
    }
    fs::remove_file(&gate).unwrap();

    let run_id = format!("k{}", unique());
    let token = token_env(&run_id);
    let _guard = KillTokens(vec![token.clone()]);
    let (mut run, err) = start(&w, &run_id, "install,custom");
    err.wait_for("parked-in-test", Duration::from_secs(180));
    // The live run is never touched while it holds its lock.
    assert!(watch.events("decided", Some(&d)).iter().all(|e| e["action"] != "reaped"), "{}", watch.err.text());
    wait_until("the test's setsid sleep", Duration::from_secs(10), || {
        pids_with_env(&token).iter().any(|p| comm_is(*p, "sleep"))
    });
    let before = watch.events("decided", Some(&d)).len();
    signal(run.id(), libc::SIGKILL);
    let _ = run.wait();
    wait_until("the watch to reap the dead run", Duration::from_secs(120), || {
        watch.events("decided", Some(&d)).len() > before
    });
    let decided = watch.events("decided", Some(&d)).pop().unwrap();
    assert_eq!(decided["action"], "reaped", "{decided}\n{}", watch.err.text());
    let left = w.leftovers();
    assert!(left.is_empty(), "after the watch: {left:?}");
    assert!(!lock_file(&w).exists(), "the lockfile remains");
    wait_until("the dead run's processes to be gone", Duration::from_secs(30), || pids_with_env(&token).is_empty());
    assert_eq!(watch.stop(), 0);
}
