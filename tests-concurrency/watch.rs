//! `ccci janitor --watch` against real holders: an orphan is reaped the moment its owner is
//! SIGKILLed, a lockfile appearing and disappearing mid-wait and a normal release are no-ops, a
//! live holder is never touched, and a racing janitor sweep still reaps exactly once.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::janitor::{abra_starts, env_file, fake_app, objects_of};
use crate::locks::{lock_path, py_holder};

fn holder_info(run_id: &str) -> String {
    format!(
        r#"{{"pid":0,"run_id":"{run_id}","recipe":"hello","started":"2026-01-01T00:00:00Z","deadline_secs":3600,"budget_secs":600}}"#
    )
}

#[test]
fn an_owner_sigkilled_under_watch_is_reaped_at_once_and_exactly_once() {
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let d = w.domain("hello", "31", "");
    let lock = lock_path(&w, &d);
    let mut owner = py_holder(&lock, Some(&holder_info("dead-run")));
    fake_app(&w, &d);
    let env = env_file(&w, &d);
    let watch = Watcher::start(&w);
    // A live holder is never touched, whatever the watch's sweep saw.
    assert!(watch.events("released", Some(&d)).is_empty());
    assert!(!objects_of(&d).is_empty() && env.exists());

    let killed = Instant::now();
    owner.sigkill();
    let decided = watch.wait_event("decided", Some(&d), Duration::from_secs(60));
    let took = killed.elapsed();
    assert_eq!(decided["action"], "reaped", "{decided}\n{}", watch.err.text());
    assert!(objects_of(&d).is_empty(), "{:?}", objects_of(&d));
    assert!(!env.exists(), ".env remains");
    assert!(!lock.exists(), "the lockfile remains");
    assert_eq!(abra_starts(&w, "app remove").len(), 1);
    eprintln!("owner SIGKILL → reap done: {took:?}");
    // A janitor sweep racing afterwards finds nothing: exactly one reap.
    let mut c = w.ccci();
    c.args(["janitor", "--json"]);
    let o = output_within(c, Duration::from_secs(120));
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    assert_eq!(abra_starts(&w, "app remove").len(), 1, "{}", w.abra_log());
    assert_eq!(watch.stop(), 0);
}

#[test]
fn normal_releases_and_lockfiles_that_come_and_go_are_no_ops() {
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let watch = Watcher::start(&w);
    // A run that ends normally unlinks its lockfile, then exits.
    let d = w.domain("hello", "32", "");
    let lock = lock_path(&w, &d);
    let h = py_holder(&lock, Some(&holder_info("normal-run")));
    watch.wait_event("watching", Some(&d), Duration::from_secs(10));
    fs::remove_file(&lock).unwrap();
    h.release();
    // A lockfile that appears and disappears while nobody holds it.
    let d2 = w.domain("hello", "33", "");
    let lock2 = lock_path(&w, &d2);
    fs::write(&lock2, "").unwrap();
    fs::remove_file(&lock2).unwrap();
    // A live holder that stays.
    let d3 = w.domain("hello", "34", "");
    let lock3 = lock_path(&w, &d3);
    fake_app(&w, &d3);
    let live = py_holder(&lock3, Some(&holder_info("live-run")));
    // The watch takes the lock dir's inotify events in order on one channel: once it is
    // watching the third holder, it has handled the churn of the first two before it.
    watch.wait_event("watching", Some(&d3), Duration::from_secs(10));
    for dom in [&d, &d2, &d3] {
        let decided = watch.events("decided", Some(dom));
        assert!(decided.is_empty(), "{dom}: {decided:?}\n{}", watch.err.text());
    }
    assert!(!objects_of(&d3).is_empty(), "the live run's app was touched");
    assert!(w.abra_log().lines().all(|l| !l.contains("app remove")), "{}", w.abra_log());
    drop(live);
    let decided = watch.wait_event("decided", Some(&d3), Duration::from_secs(60));
    assert_eq!(decided["action"], "reaped");
    assert!(objects_of(&d3).is_empty());
    assert_eq!(watch.stop(), 0);
}

#[test]
fn a_recreated_lockfile_s_new_holder_is_watched_and_sigterm_stops_the_watch() {
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let watch = Watcher::start(&w);
    let d = w.domain("hello", "35", "");
    let lock = lock_path(&w, &d);
    // A first holder exits leaving its lockfile (decided: nothing left, lockfile unlinked) …
    let first = py_holder(&lock, Some(&holder_info("first")));
    watch.wait_event("watching", Some(&d), Duration::from_secs(10));
    first.release();
    watch.wait_event("decided", Some(&d), Duration::from_secs(60));
    // … then a new run creates the lockfile again, takes it and is SIGKILLed: the watch found
    // the new holder through inotify.
    let mut run = py_holder(&lock, Some(&holder_info("late-run")));
    let run_pid = run.pid();
    std::thread::sleep(Duration::from_millis(300));
    run.sigkill();
    wait_until("the decision on the new holder", Duration::from_secs(60), || {
        watch.events("decided", Some(&d)).iter().any(|v| v["holder_pid"].as_i64() == Some(run_pid as i64))
    });
    let decided = watch.events("decided", Some(&d));
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert_eq!(decided[1]["action"], "already-gone", "{decided:?}");
    assert!(!lock.exists());
    let t = Instant::now();
    assert_eq!(watch.stop(), 0);
    assert!(t.elapsed() < Duration::from_secs(5), "SIGTERM took {:?}", t.elapsed());
}
