//! Operating a host with real runs: drain and the host lock, cancel, ps. The runs park in a hung
//! `abra app new` (holding their app lock) or in a hung `abra recipe fetch`; nothing is deployed.

use std::fs;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ccci::exit::Outcome;
use ccci::report::Results;
use serde_json::Value;

use crate::common::*;
use crate::locks::{Parked, park_run, parking_world, start_run, waiters};

fn json_of(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn ccci(w: &World, args: &[&str]) -> std::process::Output {
    let mut c = w.ccci();
    c.args(args);
    output_within(c, Duration::from_secs(120))
}

fn spawn(w: &World, args: &[&str]) -> Child {
    let mut c = w.ccci();
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().unwrap()
}

fn results(w: &World, p: &Parked) -> Results {
    w.results(&p.run_id)
}

#[test]
fn drain_refuses_new_runs_wait_returns_after_the_last_live_run_and_undrain_lets_runs_start() {
    let w = parking_world();
    let live = park_run(&w);
    let o = ccci(&w, &["drain", "--reason", "docker upgrade", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let v = json_of(&o);
    assert_eq!((v["draining"].as_bool(), v["created"].as_bool()), (Some(true), Some(true)), "{v}");
    assert!(w.lock_dir.join("cc-ci-drain").is_file());

    // A new run refuses at once, with the infra verdict, and creates nothing.
    let runs_before: Vec<_> = fs::read_dir(&w.runs_dir).unwrap().flatten().map(|e| e.file_name()).collect();
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", format!("refused{}", unique())).args(["run", "--recipe", "hello", "--pr", "9"]);
    let o = output_within(c, Duration::from_secs(60));
    assert_eq!(code(&o), 69, "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("draining") && stderr_of(&o).contains("docker upgrade"), "{}", stderr_of(&o));
    let runs_after: Vec<_> = fs::read_dir(&w.runs_dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(runs_before, runs_after, "a refused run created a run dir");

    // --wait with a timeout gives up with 75 while the run lives; a SIGTERM cancels the wait.
    let o = ccci(&w, &["drain", "--wait", "--timeout", "1", "--json"]);
    assert_eq!(code(&o), 75, "{}", stderr_of(&o));
    let v = json_of(&o);
    assert_eq!(v["drained"], false);
    assert_eq!(v["live"][0]["run_id"], live.run_id.as_str(), "{v}");
    let host_lock = w.lock_dir.join("cc-ci-host.lock");
    let mut cancelled = spawn(&w, &["drain", "--wait"]);
    let pid = cancelled.id() as i32;
    wait_until("drain --wait to block on the host lock", Duration::from_secs(10), || {
        waiters(&host_lock).contains(&pid)
    });
    assert!(cancelled.try_wait().unwrap().is_none(), "drain --wait returned while a run is live");
    let t = Instant::now();
    signal(cancelled.id(), libc::SIGTERM);
    let st = wait_within(&mut cancelled, Duration::from_secs(5));
    assert_eq!(st.code(), Some(143));
    assert!(t.elapsed() < Duration::from_secs(2), "the cancel took {:?}", t.elapsed());
    assert!(w.lock_dir.join("cc-ci-drain").is_file(), "a cancelled wait keeps the host draining");

    // The real wait returns only after the live run released the host lock.
    let mut waiter = spawn(&w, &["drain", "--wait", "--json"]);
    let pid = waiter.id() as i32;
    wait_until("drain --wait to block on the host lock", Duration::from_secs(10), || {
        waiters(&host_lock).contains(&pid)
    });
    assert!(waiter.try_wait().unwrap().is_none());
    let mut live = live;
    signal(live.child.id(), libc::SIGTERM);
    let st = wait_within(&mut live.child, Duration::from_secs(60));
    let ended = Instant::now();
    assert_eq!(st.code(), Some(143));
    let st = wait_within(&mut waiter, Duration::from_secs(10));
    let waited = ended.elapsed();
    assert_eq!(st.code(), Some(0));
    assert!(waited < Duration::from_secs(2), "drain --wait returned {waited:?} after the run ended");
    let mut out = String::new();
    std::io::Read::read_to_string(waiter.stdout.as_mut().unwrap(), &mut out).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["drained"], true, "{v}");

    let o = ccci(&w, &["undrain", "--json"]);
    assert_eq!(code(&o), 0);
    assert_eq!(json_of(&o)["was_draining"], true);
    assert!(!w.lock_dir.join("cc-ci-drain").exists());
    // Runs start again: this one parks in app new like the first.
    let again = park_run(&w);
    assert_eq!(again.stop(), 143);
}

#[test]
fn cancel_by_run_id_and_by_domain_stops_the_right_run_and_waits_for_its_end() {
    let w = parking_world();
    let a = park_run(&w);
    // Another domain of the same recipe, parked in the same hung `app new`.
    let b = start_run(&w, "install", &["--pr", "4"]);
    b.err.wait_for("app lock held", Duration::from_secs(60));

    let o = ccci(&w, &["cancel", &a.run_id, "--wait", "--timeout", "60", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let v = json_of(&o);
    assert_eq!((v["matched_by"].as_str(), v["signalled"].as_str()), (Some("run-id"), Some("SIGTERM")), "{v}");
    assert_eq!(v["run"]["pid"].as_i64(), Some(a.pid() as i64));
    assert_eq!((v["outcome"].as_str(), v["exit_code"].as_u64()), (Some("cancelled"), Some(143)), "{v}");
    assert_eq!(results(&w, &a).outcome, Outcome::Cancelled);
    assert!(alive(b.pid()), "cancelling A stopped B");

    let domain = w.domain("hello", "4", "");
    let o = ccci(&w, &["cancel", &domain, "--wait", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let v = json_of(&o);
    assert_eq!(
        (v["matched_by"].as_str(), v["run"]["run_id"].as_str()),
        (Some("domain"), Some(b.run_id.as_str())),
        "{v}"
    );
    assert_eq!(v["outcome"], "cancelled");
    let mut b = b;
    let st = wait_within(&mut b.child, Duration::from_secs(10));
    assert_eq!(st.code(), Some(143));

    // Nothing live any more: exit 1, nothing signalled.
    let o = ccci(&w, &["cancel", &a.run_id]);
    assert_eq!(code(&o), 1);
    assert!(stderr_of(&o).contains("no live run") && stderr_of(&o).contains("cancelled"), "{}", stderr_of(&o));
}

#[test]
fn cancel_refuses_a_pid_whose_start_time_does_not_match() {
    let w = parking_world();
    let a = park_run(&w);
    let run_lock = w.run_dir(&a.run_id).join("run.lock");
    let mut info: Value = serde_json::from_str(&fs::read_to_string(&run_lock).unwrap()).unwrap();
    let token = info["token"].as_str().unwrap().to_string();
    let (head, start) = token.rsplit_once(':').unwrap();
    let wrong = format!("{head}:{}", start.parse::<u64>().unwrap() + 1);
    info["token"] = Value::String(wrong);
    // Rewritten as a process that reused the pid would look: same pid, another start time.
    fs::write(&run_lock, info.to_string()).unwrap();
    let o = ccci(&w, &["cancel", &a.run_id]);
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("refusing to signal"), "{}", stderr_of(&o));
    // `cancel` exited before this line; a signal it had sent would be in the run's log by the
    // time it handled it. The short pause is a window for that negative assertion only.
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(a.pid()), "the run was signalled");
    assert!(a.err.text().find("received SIGTERM").is_none());
    assert_eq!(a.stop(), 143);
}

#[test]
fn ps_shows_a_holding_and_a_waiting_run() {
    let w = parking_world();
    let holder = park_run(&w);
    let waiter = start_run(&w, "install", &[]);
    waiter.err.wait_for("is in flight", Duration::from_secs(60));
    let o = ccci(&w, &["ps", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let v = json_of(&o);
    let live = v["live"].as_array().unwrap();
    let find = |id: &str| live.iter().find(|r| r["run_id"] == id).unwrap_or_else(|| panic!("{id} not in {v}"));
    let h = find(&holder.run_id);
    assert_eq!(
        (h["lock"].as_str(), h["verified"].as_bool(), h["stage"].as_str()),
        (Some("holding"), Some(true), Some("deploy")),
        "{h}"
    );
    assert_eq!(h["pid"].as_i64(), Some(holder.pid() as i64));
    assert!(h["deadline_left_secs"].as_i64().unwrap() > 0, "{h}");
    let wt = find(&waiter.run_id);
    assert_eq!(wt["lock"], "waiting", "{wt}");
    assert_eq!(wt["lock_holder_pid"].as_i64(), Some(holder.pid() as i64), "{wt}");
    assert_eq!(wt["lock_holder_run"], holder.run_id.as_str());
    // The table names both, and the waiting one's holder.
    let o = ccci(&w, &["ps"]);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(table.contains("holding") && table.contains(&format!("waiting for run {}", holder.run_id)), "{table}");
    let (wid, hid) = (waiter.run_id.clone(), holder.run_id.clone());
    assert_eq!(waiter.stop(), 143);
    assert_eq!(holder.stop(), 143);
    let o = ccci(&w, &["ps", "--all", "--json"]);
    let v = json_of(&o);
    assert!(v["live"].as_array().unwrap().is_empty(), "{v}");
    let finished: Vec<&str> = v["finished"].as_array().unwrap().iter().filter_map(|f| f["run_id"].as_str()).collect();
    assert!(finished.contains(&wid.as_str()) && finished.contains(&hid.as_str()), "{v}");
}
