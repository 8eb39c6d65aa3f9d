//! The one spawn path (§4) with real processes, through `ccci exec-step`: process groups, the
//! explicit environment, TERM→grace→KILL, the leak check, and the parent-death signal.

use std::time::Duration;

use crate::common::*;

fn exec_step(w: &World, args: &[&str]) -> (std::process::Child, LineWatch) {
    exec_step_with(w, &[], args)
}

fn exec_step_with(w: &World, flags: &[&str], args: &[&str]) -> (std::process::Child, LineWatch) {
    let mut c = w.ccci();
    c.arg("exec-step")
        .args(flags)
        .arg("--")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let watch = LineWatch::stderr_of(&mut child);
    (child, watch)
}

fn report_of(child: &mut std::process::Child) -> serde_json::Value {
    use std::io::Read;
    let mut s = String::new();
    child.stdout.take().unwrap().read_to_string(&mut s).unwrap();
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("bad exec-step report {s:?}: {e}"))
}

/// The pid a child printed as `pid=N` on its output.
fn printed_pid(watch: &LineWatch, key: &str) -> i32 {
    let text = watch.text();
    let marker = format!("| {key}=");
    let at = text.find(&marker).unwrap_or_else(|| panic!("no {marker:?} in {text}")) + marker.len();
    text[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_grace() {
    let w = World::new();
    let (mut child, watch) =
        exec_step(&w, &["sh", "-c", "trap '' TERM; echo pid=$$; sleep 100 & echo sleeper=$!; wait"]);
    watch.wait_for("| sleeper=", Duration::from_secs(20));
    let (sh, sleeper) = (printed_pid(&watch, "pid"), printed_pid(&watch, "sleeper"));
    signal(child.id(), libc::SIGTERM);
    let st = wait_within(&mut child, Duration::from_secs(20));
    assert_eq!(st.code(), Some(143), "{}", watch.text());
    let r = report_of(&mut child);
    assert!(r["stopped"].as_str().unwrap().contains("cancelled"), "{r}");
    assert_eq!(r["signal"], 9, "the shell ignored SIGTERM, so SIGKILL ended it: {r}");
    assert!(!alive(sh) && !alive(sleeper), "the whole group is gone");
    assert!(watch.text().contains("SIGTERM, 1.0s grace, SIGKILL"), "{}", watch.text());
}

#[test]
fn a_grandchild_holding_the_pipe_is_leaky_and_killed() {
    let w = World::new();
    let (mut child, watch) = exec_step(&w, &["sh", "-c", "sleep 100 & echo sleeper=$!; exit 0"]);
    let st = wait_within(&mut child, Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", watch.text());
    let r = report_of(&mut child);
    let sleeper = printed_pid(&watch, "sleeper");
    assert_eq!(r["leaky"], serde_json::json!([sleeper]), "{r}");
    assert!(!alive(sleeper), "the leaked grandchild was stopped");
    assert!(watch.text().contains("leaky step"), "{}", watch.text());
}

#[test]
fn a_group_left_with_only_zombies_is_not_leaky() {
    let w = World::new();
    // The grandchild exits at once and is never waited for by its parent: a zombie in the
    // group, which becomes ccci's (the subreaper's) to reap when the parent exits.
    let script = "import os, time\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint('zombie=%d' % pid, flush=True)\ntime.sleep(0.3)\nos._exit(0)\n";
    let (mut child, watch) = exec_step(&w, &["python3", "-c", script]);
    let st = wait_within(&mut child, Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", watch.text());
    let r = report_of(&mut child);
    assert_eq!(r["leaky"], serde_json::json!([]), "{r}");
    assert!(!watch.text().contains("leaky"), "{}", watch.text());
    let zombie = printed_pid(&watch, "zombie");
    assert!(std::fs::metadata(format!("/proc/{zombie}")).is_err(), "the zombie was reaped");
}

#[test]
fn the_child_environment_is_exactly_the_allow_list_plus_the_run_token() {
    let w = World::new();
    let mut c = w.ccci();
    c.env("TZ", "UTC")
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .env("https_proxy", "http://127.0.0.1:3128")
        .env("LC_ALL", "C.UTF-8")
        .env("CCCI_GIT_TOKEN", "tok-should-not-leak")
        .env("GITEA_TOKEN", "gitea-should-not-leak")
        .env("AWS_SECRET_ACCESS_KEY", "nope")
        .env("CCCI_RUN_TOKEN", "outside:1:1")
        .env("INVOCATION_ID", "abc")
        .args(["exec-step", "--", "env"]);
    let o = output_within(c, Duration::from_secs(30));
    assert!(o.status.success(), "{}", stderr_of(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut keys: Vec<String> = r["tail"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str()?.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    keys.sort();
    assert_eq!(keys, ["CCCI_RUN_TOKEN", "DOCKER_HOST", "HOME", "LANG", "LC_ALL", "PATH", "TZ", "https_proxy"], "{r}");
    let token = r["tail"].as_array().unwrap().iter().find_map(|l| l.as_str()?.strip_prefix("CCCI_RUN_TOKEN=")).unwrap();
    assert!(token.starts_with("exec-step:"), "ccci mints its own token, never trusts one from outside: {token}");
    let home = r["tail"].as_array().unwrap().iter().find_map(|l| l.as_str()?.strip_prefix("HOME=")).unwrap();
    assert_ne!(home, w.path().to_str().unwrap(), "children get the passwd home, not $HOME");
}

/// The parent-death signal reaches ccci's direct child; a grandchild that outlives it is the
/// janitor's straggler sweep's (§6), checked in `janitor::the_straggler_sweep_kills_only_processes_of_dead_runs`.
#[test]
fn a_sigkilled_ccci_takes_its_direct_child_with_it() {
    let w = World::new();
    let (mut child, watch) = exec_step(&w, &["sh", "-c", "echo pid=$$; sleep 100 & echo sleeper=$!; wait"]);
    watch.wait_for("| sleeper=", Duration::from_secs(20));
    let sh = printed_pid(&watch, "pid");
    signal(child.id(), libc::SIGKILL);
    let _ = wait_within(&mut child, Duration::from_secs(20));
    wait_until("the child shell to die with its parent (parent-death signal)", Duration::from_secs(10), || !alive(sh));
    // The sleeper is in the same group but not a direct child of ccci: its parent (the shell)
    // died, so it is orphaned; clean it up ourselves so the test leaves nothing behind.
    let sleeper = printed_pid(&watch, "sleeper");
    if alive(sleeper) {
        signal(sleeper as u32, libc::SIGKILL);
    }
}

#[test]
fn a_timed_out_child_is_stopped_and_reported() {
    let w = World::new();
    let mut c = w.ccci();
    c.args(["exec-step", "--timeout", "1", "--", "sh", "-c", "sleep 100"]);
    let o = output_within(c, Duration::from_secs(30));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["stopped"].as_str().unwrap().contains("timed out after 1.0s"), "{r}");
}

#[test]
fn a_pty_child_is_stopped_on_sigterm_and_dies_with_a_sigkilled_ccci() {
    let w = World::new();
    // SIGTERM: the funnel stops the child's group (its own session) and ccci exits 143.
    let (mut child, watch) =
        exec_step_with(&w, &["--pty"], &["sh", "-c", "echo pid=$$; sleep 100 & echo sleeper=$!; wait"]);
    watch.wait_for("| sleeper=", Duration::from_secs(20));
    let (sh, sleeper) = (printed_pid(&watch, "pid"), printed_pid(&watch, "sleeper"));
    signal(child.id(), libc::SIGTERM);
    let st = wait_within(&mut child, Duration::from_secs(20));
    assert_eq!(st.code(), Some(143), "{}", watch.text());
    assert!(!alive(sh) && !alive(sleeper), "the whole group is gone");
    // SIGKILL: the parent-death signal, armed in the terminal child too, takes it down.
    let (mut child, watch) = exec_step_with(&w, &["--pty"], &["sh", "-c", "echo pid=$$; exec sleep 100"]);
    watch.wait_for("| pid=", Duration::from_secs(20));
    let sh = printed_pid(&watch, "pid");
    signal(child.id(), libc::SIGKILL);
    let _ = wait_within(&mut child, Duration::from_secs(20));
    wait_until("the terminal child to die with its parent", Duration::from_secs(10), || !alive(sh));
}
