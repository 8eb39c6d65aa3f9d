//! What the commands print for operators: primary output on stdout (the dry run's plan as a
//! table, `--json` documents), logs on stderr, and a stdout whose reader is gone changes
//! nothing but the delivery: no panic, the same exit code.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// A pipe whose read end is already closed: every write to the returned end fails with EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fresh descriptors, owned by the OwnedFds below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

/// Runs `c` with its stdout a closed pipe; returns (exit code, stderr).
fn with_closed_stdout(mut c: Command) -> (i32, String) {
    c.stdout(closed_pipe()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let o = child.wait_with_output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn json_output_survives_a_closed_stdout_and_keeps_the_exit_code() {
    let mut w = World::new();
    w.abra_mode("fail:new");
    let repo = w.recipe("hello");
    std::fs::create_dir_all(&w.lock_dir).unwrap();

    let run_id = format!("cl{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--json", "--recipe", "hello", "--src", repo.to_str().unwrap()]);
    c.args(["--ref", "no-such-ref"]);
    let (code, err) = with_closed_stdout(c);
    let r = w.results(&run_id);
    assert_eq!(code, i32::from(r.exit_code), "{err}");
    assert_ne!(code, 0);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("stdout was closed"), "{err}");

    for args in [&["janitor", "--json"][..], &["janitor", "--dry-run"], &["locks", "--json"], &["locks"]] {
        let mut c = w.ccci();
        c.args(args);
        let (code, err) = with_closed_stdout(c);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn janitor_dry_run_prints_its_plan_on_stdout_even_when_quiet() {
    let w = World::new();
    std::fs::create_dir_all(&w.lock_dir).unwrap();
    let stale = w.domain("hello", "7", "");
    std::fs::write(w.lock_dir.join(ccci::names::lock_file_name(&stale)), "").unwrap();
    let mut c = w.ccci();
    c.args(["-qq", "janitor", "--dry-run"]);
    let o = output_within(c, Duration::from_secs(60));
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["ACTION", "KIND", "NAME", "DETAIL"], "{out}");
    assert!(rows.iter().any(|r| r.starts_with(&["unlink", "lockfile", stale.as_str()])), "{out}");
    assert!(!stderr_of(&o).contains("unlink"), "the plan is not logged: {}", stderr_of(&o));

    // Nothing to do: one line that says so.
    std::fs::remove_file(w.lock_dir.join(ccci::names::lock_file_name(&stale))).unwrap();
    let mut c = w.ccci();
    c.args(["janitor", "--dry-run"]);
    let o = output_within(c, Duration::from_secs(60));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "nothing to do\n", "{}", stderr_of(&o));
}
