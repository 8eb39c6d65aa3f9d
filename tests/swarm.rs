//! The swarm tier (§7.1, §7.5, §7.7): real deploys on a real single-node swarm through the
//! fixture abra. At most two deploys run at once (`swarm_slot`).

use std::fs;
use std::time::Duration;

use ccci::exit::Outcome;
use ccci::report::{Status, TeardownResult};
use ccci::stage::Stage;

use crate::common::*;

/// A trusted ccci.yml giving the app its own host port (host-mode ports collide between
/// parallel apps) and short timeouts.
fn port_config(w: &World, recipe: &str, deploy_timeout: u64) -> u16 {
    let port = free_port();
    w.trusted(
        recipe,
        "ccci.yml",
        &format!("extra_env: {{ HTTP_PORT: \"{port}\" }}\ntimeouts: {{ deploy: {deploy_timeout}, http: 30 }}\n"),
        false,
    );
    port
}

fn assert_nothing_left(w: &World, run_id: &str) {
    let left = w.leftovers();
    assert!(left.is_empty(), "leftovers: {left:?}");
    let run_dir = w.run_dir(run_id);
    assert!(!run_dir.join("state").exists(), "state/ remains");
    assert!(!run_dir.join("abra/recipes").exists(), "abra/recipes remains");
}

#[test]
fn a_green_run_of_hello_passes_and_leaves_nothing() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut w = World::new();
    w.recipe("hello");
    let port = port_config(&w, "hello", 60);
    // The HTTP floor, pointed at the app's host port by the host-wide override.
    w.set("CCCI_HEALTH_URL", &format!("http://127.0.0.1:{port}/"));
    let run_id = format!("g{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello", "--stages", "install", "--json"]);
    let o = output_within(c, Duration::from_secs(300));
    let err = stderr_of(&o);
    assert_eq!(code(&o), 0, "{err}");
    let r = w.results(&run_id);
    let stdout: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints results.json on stdout");
    assert_eq!(stdout["run_id"], r.run_id.as_str());
    assert_eq!(r.stages[0].stage, Stage::Install);
    assert_eq!(r.stages[0].status, Status::Pass, "{r:?}");
    assert_eq!(r.teardown.result, TeardownResult::Clean, "{r:?}");
    assert!(r.flags.clean_teardown);
    assert_eq!(r.outcome, Outcome::Pass);
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.domain, w.domain("hello", "0", ""));
    assert!(r.provenance.docker.chars().next().unwrap().is_ascii_digit(), "{r:?}");
    // `self_cpu_ms` is there and a whole number: `w.results` reads it into a `u64` or panics.
    eprintln!("self_cpu_ms of a green install run: {}", r.self_cpu_ms);
    for s in [Stage::Upgrade, Stage::Backup, Stage::Restore, Stage::Custom] {
        let s = stage(&r, s);
        assert_eq!((s.status, s.reason.as_deref()), (Status::Unver, Some("not requested")));
    }
    // The first log line echoes the inputs; the summary table is on stderr.
    assert!(err.contains("ccci run: recipe=hello ref= pr=0 src=abra recipe fetch stages=install quick=0"), "{err}");
    assert!(err.contains("== summary: hello"), "{err}");
    assert!(err.contains("==== teardown ===="), "{err}");
    // The run dir keeps abra/ with both symlinks into the canonical abra home.
    let abra = w.run_dir(&run_id).join("abra");
    assert_eq!(fs::read_link(abra.join("servers")).unwrap(), w.abra_home.join("servers"));
    assert_eq!(fs::read_link(abra.join("catalogue")).unwrap(), w.abra_home.join("catalogue"));
    assert!(w.run_dir(&run_id).join("run.log").is_file());
    assert!(
        !w.lock_dir.join(format!("cc-ci-app-{}.lock", w.domain("hello", "0", ""))).exists(),
        "a clean teardown unlinks the lockfile"
    );
    assert_nothing_left(&w, &run_id);
}

#[test]
fn a_never_healthy_recipe_fails_fast_and_tears_down() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("sick");
    port_config(&w, "sick", 40);
    let run_id = format!("k{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "sick", "--stages", "install,custom"]);
    let o = output_within(c, Duration::from_secs(300));
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    let r = w.results(&run_id);
    let install = &r.stages[0];
    assert_eq!(install.status, Status::Fail, "{r:?}");
    let reason = install.reason.as_deref().unwrap();
    assert!(reason.contains("sick") && reason.contains("_app"), "the reason names the service: {reason}");
    assert!(reason.contains("unhealthy") || reason.contains("failed"), "the reason says what was wrong: {reason}");
    assert_eq!(r.stages[4].status, Status::Unver, "{r:?}");
    assert_eq!(r.teardown.result, TeardownResult::Clean, "{r:?}");
    assert_eq!(r.outcome, Outcome::Fail);
    // Issue 15.1: saved before teardown — the tasks, the health log, and the pointer to them.
    let run_dir = w.run_dir(&run_id);
    let files = &r.diagnostics;
    for f in [
        "diagnostics/tasks.txt",
        "diagnostics/app.log",
        "diagnostics/app.health.txt",
        "diagnostics/compose.rendered.yml",
    ] {
        assert!(files.iter().any(|x| x == f) && run_dir.join(f).is_file(), "{f} in {files:?}");
    }
    assert!(reason.ends_with("(see diagnostics/app.log)"), "{reason}");
    let health = fs::read_to_string(run_dir.join("diagnostics/app.health.txt")).unwrap();
    assert!(health.contains("health unhealthy") && health.contains("exit 1"), "{health}");
    let tasks = fs::read_to_string(run_dir.join("diagnostics/tasks.txt")).unwrap();
    assert!(tasks.contains("unhealthy container") && tasks.contains("137"), "{tasks}");
    let summary = fs::read_to_string(run_dir.join("summary.md")).unwrap();
    assert!(summary.contains("diagnostics/app"), "the summary shows the diagnostics: {summary}");
    assert_nothing_left(&w, &run_id);
}

#[test]
fn leftovers_of_a_crashed_run_are_cleared_before_app_new() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("hello");
    port_config(&w, "hello", 60);
    // A run SIGKILLed right after its deploy: its stack, secret and .env remain, its lock is
    // free (the kernel released it).
    let crashed = format!("c{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &crashed)
        .args(["run", "--recipe", "hello", "--stages", "install"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    wait_until("the first deploy to finish", Duration::from_secs(120), || w.abra_log().contains("app deploy rc=0"));
    signal(child.id(), libc::SIGKILL);
    let _ = wait_within(&mut child, Duration::from_secs(30));
    let before = w.leftovers();
    assert!(before.iter().any(|l| l.starts_with("secret:")), "{before:?}");
    assert!(before.iter().any(|l| l.starts_with("env:")), "{before:?}");
    // The next run of the same domain clears them under its lock and passes.
    let run_id = format!("n{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello", "--stages", "install"]);
    let o = output_within(c, Duration::from_secs(300));
    let err = stderr_of(&o);
    assert_eq!(code(&o), 0, "{err}");
    // The run-start janitor reaps the dead run's orphan; were it to miss it, the deploy step
    // clears it under the lock.
    assert!(err.contains("clearing leftovers of") || err.contains("orphan of a dead run"), "{err}");
    let log = w.abra_log();
    let crashed_deploy = log.find("app deploy rc=0").unwrap();
    let second_new = log.rfind(" app new ").unwrap();
    assert!(
        log[crashed_deploy..second_new].contains("app remove"),
        "leftovers are cleared before the second app new:\n{log}"
    );
    assert_nothing_left(&w, &run_id);
}

#[test]
fn two_different_recipes_in_parallel_both_pass() {
    if !swarm_available() {
        return;
    }
    let _slots = swarm_slots_both();
    let w = World::new();
    w.recipe("hello");
    // A second recipe: the same tree under another name.
    w.recipe_as("hello", "howdy");
    port_config(&w, "hello", 90);
    port_config(&w, "howdy", 90);
    let spawn = |recipe: &str, run_id: &str| {
        let mut c = w.ccci();
        c.env("CCCI_RUN_ID", run_id).args(["run", "--recipe", recipe, "--stages", "install"]);
        let recipe = recipe.to_string();
        std::thread::spawn(move || (recipe, output_within(c, Duration::from_secs(300))))
    };
    let (ra, rb) = (format!("pa{}", unique()), format!("pb{}", unique()));
    let a = spawn("hello", &ra);
    let b = spawn("howdy", &rb);
    for h in [a, b] {
        let (recipe, o) = h.join().unwrap();
        assert_eq!(code(&o), 0, "{recipe}: {}", stderr_of(&o));
    }
    assert_eq!(w.results(&ra).stages[0].status, Status::Pass);
    assert_eq!(w.results(&rb).stages[0].status, Status::Pass);
    assert_ne!(w.results(&ra).domain, w.results(&rb).domain);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// Issue 15.1: a service that crash-loops leaves its last log lines and its failed tasks (with
/// their exit codes) in `diagnostics/`, and the reason points there.
#[test]
fn a_crash_looping_service_leaves_its_last_log_lines() {
    let Some((_slot, w)) = swarm_world() else { return };
    let pr = w.pr_of("hello", "crashy", |pr| {
        let compose = fs::read_to_string(pr.join("compose.yml")).unwrap();
        let httpd = r#"command: ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]"#;
        assert!(compose.contains(httpd), "{compose}");
        let crash = r#"command: ["/bin/sh", "-c", "echo crash-loop-marker: cannot open /data/db; exit 3"]"#;
        fs::write(pr.join("compose.yml"), compose.replace(httpd, crash)).unwrap();
    });
    port_config(&w, "hello", 20);
    let run_id = format!("x{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello", "--stages", "install", "--src"]).arg(&pr);
    let o = output_within(c, Duration::from_secs(300));
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    let r = w.results(&run_id);
    let reason = r.stages[0].reason.as_deref().unwrap();
    assert!(reason.ends_with("(see diagnostics/app.log)"), "{reason}");
    let dir = w.run_dir(&run_id).join("diagnostics");
    let log = fs::read_to_string(dir.join("app.log")).unwrap();
    assert!(log.contains("crash-loop-marker: cannot open /data/db"), "{log}");
    let tasks = fs::read_to_string(dir.join("tasks.txt")).unwrap();
    assert!(tasks.lines().any(|l| l.contains("failed") && l.contains(" 3  ")), "a failed task with exit 3: {tasks}");
    let summary = fs::read_to_string(w.run_dir(&run_id).join("summary.md")).unwrap();
    assert!(summary.contains("crash-loop-marker"), "the summary shows the last log lines: {summary}");
    assert_nothing_left(&w, &run_id);
}

/// Issue 15.3: a service that takes its time (a slow pull, a slow start) is told apart from a
/// hung CI — the readiness wait beats with where the tasks stand, in the log and status.json.
#[test]
fn a_slow_start_beats_with_the_task_state() {
    let Some((_slot, w)) = swarm_world() else { return };
    port_config(&w, "hello", 120);
    // The web server comes up 15 s after the container: its healthcheck fails meanwhile, inside
    // the start period, so swarm keeps the task `starting`.
    let slow = w.pr_of("hello", "slow-hello", |pr| {
        let compose = fs::read_to_string(pr.join("compose.yml")).unwrap();
        let from = r#"command: ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]"#;
        assert!(compose.contains(from) && compose.contains("start_period: 1s"), "{compose}");
        let compose = compose
            .replace(from, r#"command: ["/bin/sh", "-c", "sleep 15; exec /bin/httpd -f -p 8080 -h /www"]"#)
            .replace("start_period: 1s", "start_period: 60s");
        fs::write(pr.join("compose.yml"), compose).unwrap();
    });
    let run_id = format!("q{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello", "--stages", "install", "--src"]).arg(&slow);
    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let err = LineWatch::stderr_of(&mut child);
    err.wait_for("still waiting for ", Duration::from_secs(120));
    // status.json carries the beat before its log line is written.
    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(w.run_dir(&run_id).join("status.json")).unwrap()).unwrap();
    let waiting = &status["waiting"];
    assert!(waiting["for"].as_str().unwrap().ends_with("to be ready"), "{status}");
    assert_eq!(waiting["limit_secs"], 120, "{status}");
    assert!(waiting["detail"].as_str().unwrap().contains("0/1 tasks running (1 starting)"), "{status}");
    let st = wait_within(&mut child, Duration::from_secs(300));
    assert_eq!(st.code(), Some(0), "{}", err.text());
    let text = err.text();
    let line = text.lines().find(|l| l.contains("still waiting for ")).unwrap();
    assert!(line.contains("to be ready") && line.contains("of 2m0s") && line.contains("(1 starting)"), "{line}");
    assert_eq!(w.results(&run_id).stages[0].status, Status::Pass);
    assert_nothing_left(&w, &run_id);
}
