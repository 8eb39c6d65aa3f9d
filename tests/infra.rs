//! The infra verdict (issue 15.2): when CI could not test the recipe — abra missing or unusable,
//! the forge unreachable after the retries, a full disk — the run says so with outcome `infra`
//! and exit 69, while a broken recipe (a wrong repository, a ref that does not exist) stays a
//! plain failure, exit 1. dockerd's share is in `tests/engine_reads.rs`, the drain marker and
//! the disk pre-flight in `tests/operate.rs`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use ccci::exit::Outcome;
use ccci::report::{Results, Status};

use crate::common::*;

struct Ran {
    code: i32,
    err: String,
    results: Results,
}

fn run(w: &World, args: &[&str]) -> Ran {
    let run_id = format!("i{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello"]).args(args);
    let o = output_within(c, Duration::from_secs(120));
    Ran { code: code(&o), err: stderr_of(&o), results: w.results(&run_id) }
}

fn assert_infra(r: &Ran, needle: &str) {
    assert_eq!(r.code, 69, "{}", r.err);
    assert_eq!(r.results.outcome, Outcome::Infra, "{:?}", r.results);
    assert_eq!(r.results.exit_code, 69);
    let reason = r.results.reason.as_deref().unwrap_or_default();
    assert!(reason.contains(needle), "the reason names the trouble ({needle}): {reason}");
    for s in &r.results.stages {
        assert_ne!(s.status, Status::Fail, "CI's trouble is no stage's failure: {s:?}");
    }
}

#[test]
fn abra_missing_or_unusable_is_infra() {
    let mut w = World::new();
    w.recipe("hello");
    let missing = w.path().join("no-such/abra");
    w.set("CCCI_ABRA", missing.to_str().unwrap());
    let r = run(&w, &[]);
    assert_infra(&r, "CCCI_ABRA");
    assert!(r.err.contains("install abra"), "says what to do: {}", r.err);

    // On disk but not a program ccci can start.
    let not_exec = w.path().join("abra-not-executable");
    fs::write(&not_exec, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&not_exec, fs::Permissions::from_mode(0o644)).unwrap();
    w.set("CCCI_ABRA", not_exec.to_str().unwrap());
    assert_infra(&run(&w, &[]), "CCCI_ABRA");

    // Starts, but does not answer `abra version`.
    let broken = w.path().join("abra-broken");
    fs::write(&broken, "#!/bin/sh\necho 'FATA unable to read config' >&2\nexit 1\n").unwrap();
    fs::set_permissions(&broken, fs::Permissions::from_mode(0o755)).unwrap();
    w.set("CCCI_ABRA", broken.to_str().unwrap());
    let r = run(&w, &[]);
    assert_infra(&r, "unable to read config");
    assert!(!w.abra_log().contains("recipe fetch"), "nothing was fetched: {}", w.abra_log());
}

#[test]
fn an_unreachable_forge_is_retried_then_infra_and_a_wrong_repository_is_the_recipes() {
    let w = World::new();
    // Port 1 on loopback refuses at once: the network's failure, three times.
    let r = run(&w, &["--src", "https://127.0.0.1:1/coop-cloud/hello.git"]);
    assert_infra(&r, "CI could not fetch the recipe");
    assert_eq!(r.err.matches("failed on the network").count(), 2, "two retries, each logged: {}", r.err);

    // A repository that is not there, and a ref that is not there: the code under test's fault.
    let nowhere = w.path().join("not-a-repo");
    fs::create_dir_all(&nowhere).unwrap();
    let r = run(&w, &["--src", nowhere.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.err);
    assert_eq!(r.results.outcome, Outcome::Fail);
    assert!(!r.err.contains("failed on the network"), "no retry for a wrong repository: {}", r.err);
    let hello = w.recipe("hello");
    let r = run(&w, &["--src", hello.to_str().unwrap(), "--ref", "no-such-branch"]);
    assert_eq!(r.code, 1, "{}", r.err);
    assert_eq!(r.results.outcome, Outcome::Fail);
}

/// Unmounts a test tmpfs however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_disk_that_fills_during_the_fetch_is_infra() {
    let mut w = World::new();
    let hello = w.recipe("hello");
    // 3 MiB nobody can compress, on a 2 MiB runs dir: the clone runs out of space.
    let mut blob = fs::File::create(hello.join("blob.bin")).unwrap();
    let mut random = fs::File::open("/dev/urandom").unwrap();
    let mut buf = vec![0u8; 3 << 20];
    std::io::Read::read_exact(&mut random, &mut buf).unwrap();
    blob.write_all(&buf).unwrap();
    drop(blob);
    git(&hello, &["add", "blob.bin"]);
    git(&hello, &["commit", "-q", "-m", "a big file"]);
    fs::create_dir_all(&w.runs_dir).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&w.runs_dir).status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    }
    let _umount = Mounted(w.runs_dir.clone());
    // The pre-flight would refuse this disk before the run; this is the disk filling mid-run.
    w.set("CCCI_MIN_FREE_MB", "0");
    let r = run(&w, &["--src", hello.to_str().unwrap()]);
    assert_infra(&r, "No space left on device");
}

/// dockerd gone before the deploy (its socket names nothing): whichever read meets it first —
/// the disk pre-flight, the leftovers clear under the lock — the verdict is infra/69 naming
/// dockerd, never a failing recipe.
#[test]
fn a_dockerd_that_is_gone_before_the_deploy_is_infra() {
    let mut w = World::new();
    let sock = w.path().join("no-dockerd.sock");
    w.set("DOCKER_HOST", &format!("unix://{}", sock.display()));
    w.recipe("hello");
    let r = run(&w, &[]);
    assert_eq!(r.code, 69, "{}", r.err);
    assert_eq!(r.results.outcome, Outcome::Infra, "{:?}", r.results);
    let reason = r.results.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("cannot reach dockerd") && reason.contains("no-dockerd.sock"), "{reason}");
    assert!(!w.abra_log().contains("app deploy"), "nothing was deployed: {}", w.abra_log());
}
