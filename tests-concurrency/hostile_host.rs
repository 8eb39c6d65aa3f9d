//! A hostile-but-realistic host (security-review M1–M4, L1, L12): other local users, files
//! planted in the lock dir, settings that disagree, numbers that would overflow. Real kernel,
//! real processes: the second user is `setpriv --reuid 65534`, links are real links.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use ccci::janitor::vocab::Act;

use crate::common::*;
use crate::locks::{hello_lock, park_run, parking_world, py_holder};

/// Another local user cannot open a run's lockfile at all (it is 0600), so cannot flock it to
/// keep an orphan unreaped or a domain blocked — not even read-only.
#[test]
fn a_second_user_cannot_open_a_runs_lockfile() {
    if Command::new("setpriv").arg("--version").output().is_err() {
        panic!("setpriv (util-linux) is needed: ci/test.sh installs it");
    }
    let w = parking_world();
    let run = park_run(&w);
    let lock = hello_lock(&w);
    assert_eq!(fs::metadata(&lock).unwrap().mode() & 0o777, 0o600);
    // The world's dirs are root's 0700 temp dirs: make the path traversable so only the
    // lockfile's own mode is tested.
    for dir in [w.path(), w.lock_dir.as_path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A read-only open is all flock(2) needs: `cat` does exactly that open.
    let o = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "/bin/cat"])
        .arg(&lock)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("Permission denied"), "the second user opened it: {err}");
    // The same open as root works: the refusal is the lockfile's mode, not the path.
    assert!(Command::new("/bin/cat").arg(&lock).output().unwrap().status.success());
    assert_eq!(run.stop(), 143);
}

/// A hard link planted at a lock path (possible where `fs.protected_hardlinks=0`) is refused:
/// the run fails naming it and the linked file keeps its content and mtime — never truncated
/// by the holder-info write.
#[test]
fn a_hard_link_at_the_lock_path_is_refused_and_its_target_untouched() {
    let w = World::new();
    w.recipe("hello");
    fs::create_dir_all(&w.lock_dir).unwrap();
    let victim = w.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    let before = fs::metadata(&victim).unwrap();
    fs::hard_link(&victim, hello_lock(&w)).unwrap();
    let o =
        w.run(&["run", "--recipe", "hello", "--stages", "install", "--src", w.recipes.join("hello").to_str().unwrap()]);
    let err = stderr_of(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert!(err.contains("hard links"), "{err}");
    let after = fs::metadata(&victim).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!((after.mtime(), after.mtime_nsec(), after.mode()), (before.mtime(), before.mtime_nsec(), before.mode()));
    assert!(!w.abra_log().contains("app new"), "nothing was deployed");
}

/// A lock dir other users can write (and not sticky) is refused before anything is created: in
/// it anyone could replace a live run's lockfile.
#[test]
fn a_world_writable_non_sticky_lock_dir_is_refused() {
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    fs::set_permissions(&w.lock_dir, fs::Permissions::from_mode(0o777)).unwrap();
    for args in [&["run", "--recipe", "hello"][..], &["janitor"][..]] {
        let o = w.run(args);
        let err = stderr_of(&o);
        assert_eq!(code(&o), 2, "{args:?}: {err}");
        assert!(err.contains("writable by other users"), "{err}");
    }
    assert!(!w.runs_dir.exists());
    fs::set_permissions(&w.lock_dir, fs::Permissions::from_mode(0o1777)).unwrap();
    let o = w.run(&["janitor"]);
    assert_eq!(code(&o), 0, "sticky like /run/lock is accepted: {}", stderr_of(&o));
}

/// Two runs in different working directories with a relative lock dir would lock in two
/// places and reap each other's live apps (M2): the relative dir is refused, and the live
/// run's app is left alone.
#[test]
fn a_relative_lock_dir_is_refused_and_reaps_nothing() {
    let w = parking_world();
    let run = park_run(&w);
    let lock = hello_lock(&w);
    let elsewhere = tempfile::tempdir().unwrap();
    let mut c = w.ccci();
    let host = w.path().join("relative.env");
    let mut text = fs::read_to_string(w.host_file()).unwrap();
    text.push_str("CCCI_APP_LOCK_DIR=lock\n");
    fs::write(&host, text).unwrap();
    c.current_dir(elsewhere.path()).env("CCCI_CONFIG", &host).args(["run", "--recipe", "other"]);
    let o = output_within(c, Duration::from_secs(30));
    assert_eq!(code(&o), 2, "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("absolute"), "{}", stderr_of(&o));
    assert!(lock.exists(), "the live run's lockfile is untouched");
    assert!(!w.abra_log().contains("app remove"), "nothing was reaped: {}", w.abra_log());
    assert_eq!(run.stop(), 143);
}

/// A lockfile's content is hostile input: a live holder that recorded `u64::MAX` as its
/// deadline does not crash a concurrent run's start (its run-start janitor reads it) nor
/// `ccci janitor` (M4: both exited 101).
#[test]
fn a_planted_u64_max_deadline_crashes_nobody() {
    let w = World::new();
    w.recipe("hello");
    fs::create_dir_all(&w.lock_dir).unwrap();
    let d = w.domain("hello", "77", "");
    let info = r#"{"pid":4242,"run_id":"absurd","recipe":"hello","started":"x","deadline_secs":18446744073709551615,"budget_secs":18446744073709551615}"#;
    let holder = py_holder(&w.lock_dir.join(ccci::names::lock_file_name(&d)), Some(info));
    // Make it a candidate: an .env abra lists.
    fs::write(w.abra_home.join("servers/default").join(format!("{d}.env")), "TYPE=hello\n").unwrap();
    let o = w.run(&["janitor", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let r = janitor_report(&o.stdout);
    let app = r.apps.iter().find(|a| a.domain == d).unwrap();
    assert_eq!(app.action, Act::Left, "{app:?}");
    let o = w.run(&["janitor", "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    // A run of another recipe starts, sweeps (leaving the held lock), and gets past its start.
    let mut w2 = w;
    w2.abra_mode("fail:new");
    let o = w2.run(&[
        "run",
        "--recipe",
        "hello",
        "--stages",
        "install",
        "--src",
        w2.recipes.join("hello").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1, "the run failed at app new, as the fixture says, not with a panic: {}", stderr_of(&o));
    drop(holder);
}

/// A `CCCI_WATCH_PID` that is already dead is refused like a parent that died during start-up:
/// exit 3, nothing created (L12: it created a run dir and exited 143).
#[test]
fn a_dead_watched_pid_exits_3_and_creates_nothing() {
    let w = World::new();
    let mut gone = Command::new("true").stdout(Stdio::null()).spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let mut c = w.ccci();
    c.env("CCCI_WATCH_PID", pid.to_string()).args(["run", "--recipe", "hello"]);
    let o = output_within(c, Duration::from_secs(30));
    let err = stderr_of(&o);
    assert_eq!(code(&o), 3, "{err}");
    assert!(err.contains("not running"), "{err}");
    assert!(!w.runs_dir.exists() && !w.lock_dir.exists());
}
