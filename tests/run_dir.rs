//! The run dir (§3): its layout, and a duplicate live run id.

use std::fs;
use std::time::Duration;

use ccci::exit::Outcome;

use crate::common::*;

#[test]
fn a_duplicate_live_run_id_exits_75_and_leaves_the_first_run_alone() {
    let mut w = World::new();
    w.abra_mode("hang:fetch");
    w.recipe("hello");
    let run_id = format!("dup{}", unique());
    let mut c1 = w.ccci();
    c1.env("CCCI_RUN_ID", &run_id)
        .args(["run", "--recipe", "hello"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut first = c1.spawn().unwrap();
    let first_err = LineWatch::stderr_of(&mut first);
    wait_until("the first run to hang in recipe fetch", Duration::from_secs(60), || w.abra_log().contains("hang "));
    let state = w.run_dir(&run_id).join("state").join(first.id().to_string());
    assert!(state.is_dir());
    let log_before = fs::read_to_string(w.run_dir(&run_id).join("run.log")).unwrap();

    let mut c2 = w.ccci();
    c2.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello"]);
    let o = output_within(c2, Duration::from_secs(60));
    let err = stderr_of(&o);
    assert_eq!(code(&o), 75, "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "the message names the holder: {err}");
    // The first run is untouched: its state dir, its run.log, its fetch still in progress.
    assert!(state.is_dir(), "the second run emptied the first run's state");
    let log_after = fs::read_to_string(w.run_dir(&run_id).join("run.log")).unwrap();
    assert!(log_after.starts_with(&log_before), "the second run rewrote run.log");
    // The first run called abra for its provenance, the run-start janitor's listing and the fetch.
    assert_eq!(w.abra_log().matches("start ").count(), 3, "the second run called abra: {}", w.abra_log());

    signal(first.id(), libc::SIGTERM);
    let st = wait_within(&mut first, Duration::from_secs(60));
    assert_eq!(st.code(), Some(143), "{}", first_err.text());
    let r = w.results(&run_id);
    assert_eq!(r.outcome, Outcome::Cancelled);
}

/// A reused run id gets a new attempt dir (`<id>.2`, …): the earlier attempt's results.json,
/// run.log and status.json stay as they were, and each results.json names its attempt.
#[test]
fn a_reused_run_id_gets_a_new_attempt_dir_and_keeps_the_earlier_one() {
    let mut w = World::new();
    w.abra_mode("fail:fetch");
    w.recipe("hello");
    let run_id = format!("att{}", unique());
    let run = || {
        let mut c = w.ccci();
        c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello"]);
        output_within(c, Duration::from_secs(120))
    };
    let o = run();
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    let first = fs::read_to_string(w.run_dir(&run_id).join("results.json")).unwrap();
    let first_log = fs::read_to_string(w.run_dir(&run_id).join("run.log")).unwrap();
    let o = run();
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    let second = w.run_dir(&format!("{run_id}.2"));
    assert!(second.join("results.json").is_file(), "attempt 2 has its own dir");
    assert_eq!(fs::read_to_string(w.run_dir(&run_id).join("results.json")).unwrap(), first);
    assert_eq!(fs::read_to_string(w.run_dir(&run_id).join("run.log")).unwrap(), first_log);
    assert_eq!(w.results(&run_id).attempt, 1);
    assert_eq!(w.results(&format!("{run_id}.2")).attempt, 2);
    assert_eq!(w.results(&format!("{run_id}.2")).run_id, run_id);
    let status: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(second.join("status.json")).unwrap()).unwrap();
    assert_eq!((status["outcome"].as_str(), status["attempt"].as_u64()), (Some("fail"), Some(2)), "{status}");
    assert_eq!(status["exit_code"], 1);
    let holder: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(second.join("run.lock")).unwrap()).unwrap();
    assert!(holder["token"].as_str().unwrap().starts_with(&format!("{run_id}:")), "{holder}");
}
