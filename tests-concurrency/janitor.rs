//! The janitor (§6) against real locks held by real processes. Its "apps" are cheap: docker
//! objects carrying the stack label (volumes, secrets, configs, networks) and `.env` files, so
//! no deploy is needed; the reap itself is real (abra fixture or docker).

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ccci::janitor::report::{AppEntry, Report};
use ccci::janitor::vocab::{Act, DirAct, Halt, LockSeen, Part, ProcAct, Source};
use ccci::report::TeardownResult;
use serde_json::Value;

use crate::common::*;
use crate::locks::{Holder, flock_holder, hello_lock, holders, lock_path, park_run, parking_world, py_holder, waiters};

fn docker(args: &[&str]) {
    let o = Command::new("docker").args(args).output().unwrap();
    assert!(o.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// ccci's stamp on a run app's objects: the world's lock dir (what a run of this world writes).
fn stamp(w: &World) -> String {
    format!("ccci.lock-dir={}", w.lock_dir.display())
}

/// A run app that exists only as docker objects of its stack: a volume, a secret, a config and
/// a network (what a SIGKILL between `undeploy` and `remove` leaves, and more), stamped as a
/// run of `w` would stamp them.
pub(crate) fn fake_app(w: &World, domain: &str) {
    let stack = ccci::names::stack_name(domain);
    let label = format!("com.docker.stack.namespace={stack}");
    let stamp = stamp(w);
    docker(&["volume", "create", "--label", &label, "--label", &stamp, &format!("{stack}_data")]);
    let src = tempfile::NamedTempFile::new().unwrap();
    fs::write(src.path(), "v").unwrap();
    let p = src.path().to_str().unwrap();
    docker(&["secret", "create", "--label", &label, &format!("{stack}_pw_v1"), p]);
    docker(&["config", "create", "--label", &label, &format!("{stack}_conf_v1"), p]);
    docker(&["network", "create", "--label", &label, &format!("{stack}_default")]);
}

/// One stamped volume of the stack: the cheapest run app.
fn fake_volume(w: &World, domain: &str) {
    fake_volume_labelled(domain, Some(&stamp(w)));
}

fn fake_volume_labelled(domain: &str, stamp: Option<&str>) {
    let stack = ccci::names::stack_name(domain);
    let ns = format!("com.docker.stack.namespace={stack}");
    let mut args = vec!["volume", "create", "--label", ns.as_str()];
    if let Some(s) = stamp {
        args.extend(["--label", s]);
    }
    let name = format!("{stack}_data");
    args.push(&name);
    docker(&args);
}

/// The app's `.env` in the canonical abra home (abra lists it, `app remove` deletes it), with
/// the stamp a run writes.
pub(crate) fn env_file(w: &World, domain: &str) -> std::path::PathBuf {
    let p = w.abra_home.join("servers/default").join(format!("{domain}.env"));
    fs::write(&p, format!("TYPE=hello\nDOMAIN={domain}\nCCCI_LOCK_DIR={}\n", w.lock_dir.display())).unwrap();
    p
}

pub(crate) fn objects_of(domain: &str) -> Vec<String> {
    docker_objects_matching(&ccci::names::stack_name(domain))
}

/// A lockfile left by a dead run: a python holder wrote its info, then was SIGKILLed.
fn dead_holders_lockfile(path: &Path) {
    let info = r#"{"pid":1,"run_id":"dead-run","recipe":"hello","started":"2026-01-01T00:00:00Z","deadline_secs":3600,"budget_secs":600}"#;
    let mut h = py_holder(path, Some(info));
    h.sigkill();
}

/// A child process the test started; killed and reaped however the test ends.
struct KillOnDrop(std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn janitor(w: &World, extra: &[&str]) -> (Output, Report) {
    let mut c = w.ccci();
    c.args(["janitor", "--json"]).args(extra);
    let o = output_within(c, Duration::from_secs(180));
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("--json printed no report ({e}):\n{}", stderr_of(&o)));
    (o, typed(v))
}

/// A `--json` document checked against the documented schema (its raw keys), then read into
/// the real report types.
fn typed(v: Value) -> Report {
    check_schema(&v);
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("the --json report is not a Report ({e}): {v}"))
}

/// The documented `--json` schema (src/janitor/report.rs), checked on every report.
fn check_schema(v: &Value) {
    let keys = |o: &Value, want: &[&str]| {
        let obj = o.as_object().unwrap_or_else(|| panic!("not an object: {o}"));
        let mut have: Vec<&str> = obj.keys().map(String::as_str).collect();
        have.sort_unstable();
        let mut want = want.to_vec();
        want.sort_unstable();
        assert_eq!(have, want, "keys of {o}");
    };
    keys(
        v,
        &[
            "schema",
            "kind",
            "dry_run",
            "started",
            "duration_ms",
            "completed",
            "stopped",
            "settings",
            "discovery",
            "apps",
            "lockfiles",
            "run_dirs",
            "stragglers",
            "errors",
            "exit_code",
        ],
    );
    assert_eq!(v["schema"], 1);
    assert!(v["kind"] == "janitor" || v["kind"] == "run-start");
    assert!(v["dry_run"].is_boolean() && v["completed"].is_boolean() && v["duration_ms"].is_u64());
    assert!(v["stopped"].is_null() || v["stopped"] == "deadline" || v["stopped"] == "cancelled");
    assert!(v["started"].as_str().unwrap().ends_with('Z'));
    keys(&v["settings"], &["lock_dir", "runs_dir", "domain_suffix", "prune_after_days", "deadline_secs"]);
    keys(&v["discovery"], &["abra", "docker", "candidates", "ignored"]);
    for s in ["abra", "docker"] {
        keys(&v["discovery"][s], &["ok", "listed", "error"]);
    }
    let one_of = |x: &Value, allowed: &[&str]| {
        assert!(allowed.iter().any(|a| x == *a), "{x} not in {allowed:?}");
    };
    for a in v["apps"].as_array().unwrap() {
        keys(
            a,
            &[
                "domain",
                "stack",
                "sources",
                "lock",
                "action",
                "reason",
                "long_held",
                "age_secs",
                "holder_pid",
                "holder_run_id",
                "lease",
                "lease_token",
                "ms",
            ],
        );
        assert!(a["lease"].is_null() || ["held", "taken", "unknown"].iter().any(|l| a["lease"] == *l), "{a}");
        assert!(a["lease_token"].is_null() || a["lease_token"].is_u64(), "{a}");
        one_of(&a["lock"], &["free", "absent", "held", "unsafe", "gone", "unprobed", "unknown"]);
        one_of(&a["action"], &["reaped", "already-gone", "would-reap", "left", "skipped", "failed", "not-reached"]);
    }
    for l in v["lockfiles"].as_array().unwrap() {
        keys(l, &["domain", "action", "reason", "long_held", "age_secs", "holder_pid", "holder_run_id"]);
        one_of(&l["action"], &["unlinked", "would-unlink", "left", "skipped", "gone", "failed", "not-reached"]);
    }
    for d in v["run_dirs"].as_array().unwrap() {
        keys(d, &["run_id", "path", "action", "removed", "reason"]);
        one_of(&d["action"], &["pruned", "would-prune", "live", "kept", "failed", "not-reached"]);
    }
    for s in v["stragglers"].as_array().unwrap() {
        keys(s, &["pid", "run_id", "action", "reason"]);
        one_of(&s["action"], &["terminated", "killed", "gone", "would-kill", "failed"]);
    }
    assert!(v["errors"].is_array() && v["exit_code"].is_u64());
}

fn app<'a>(r: &'a Report, domain: &str) -> &'a AppEntry {
    r.apps.iter().find(|a| a.domain == domain).unwrap_or_else(|| panic!("{domain} not in {r:?}"))
}

fn app_entries(r: &Report, domain: &str) -> usize {
    r.apps.iter().filter(|a| a.domain == domain).count()
}

pub(crate) fn abra_starts(w: &World, words: &str) -> Vec<usize> {
    w.abra_log()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("start ") && l.contains(words))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn an_orphan_is_reaped_exactly_once_and_its_lockfile_unlinked() {
    let w = World::new();
    let d = w.domain("hello", "5", "");
    let lock = lock_path(&w, &d);
    fs::create_dir_all(&w.lock_dir).unwrap();
    fake_app(&w, &d);
    let env = env_file(&w, &d);
    dead_holders_lockfile(&lock);
    assert!(!objects_of(&d).is_empty());

    let (o, r) = janitor(&w, &[]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let a = app(&r, &d);
    assert_eq!((a.lock, a.action), (LockSeen::Free, Act::Reaped), "{r:?}");
    assert_eq!(a.sources, [Source::Abra, Source::Docker]);
    assert!(objects_of(&d).is_empty(), "{:?}", objects_of(&d));
    assert!(!env.exists(), ".env remains");
    assert!(!lock.exists(), "the lockfile remains");
    assert_eq!(abra_starts(&w, "app remove").len(), 1);

    let (o, r) = janitor(&w, &[]);
    assert_eq!(code(&o), 0);
    assert_eq!(app_entries(&r, &d), 0, "reaped twice: {r:?}");
    assert!(r.lockfiles.is_empty(), "{r:?}");
    assert_eq!(abra_starts(&w, "app remove").len(), 1, "{}", w.abra_log());
    assert!(!lock.exists(), "the second janitor created a lockfile");
}

#[test]
fn a_live_run_is_never_reaped() {
    let w = parking_world();
    let run = park_run(&w);
    let d = w.domain("hello", "0", "");
    let lock = hello_lock(&w);
    fake_volume(&w, &d);
    let (o, r) = janitor(&w, &[]);
    let err = stderr_of(&o);
    assert_eq!(code(&o), 0, "{err}");
    let a = app(&r, &d);
    assert_eq!((a.lock, a.action), (LockSeen::Held, Act::Left), "{r:?}");
    assert_eq!(a.holder.holder_pid, Some(run.pid() as u32));
    assert_eq!(a.holder.holder_run_id.as_deref(), Some(run.run_id.as_str()));
    assert!(!a.holder.long_held, "{a:?}");
    assert!(err.contains("a live run; leaving it"), "{err}");
    assert_eq!(objects_of(&d).len(), 1, "the live run's volume was removed");
    assert_eq!(holders(&lock), vec![run.pid()], "the lock was stolen");
    assert!(!w.abra_log().contains("app remove"));
    assert_eq!(run.stop(), 143);
}

#[test]
fn a_new_run_of_a_domain_being_reaped_waits_until_the_reap_finished() {
    let mut w = World::new();
    w.abra_mode("slow=5:remove,hang:new");
    w.recipe("hello");
    let d = w.domain("hello", "0", "");
    fs::create_dir_all(&w.lock_dir).unwrap();
    fake_volume(&w, &d);
    env_file(&w, &d);
    let mut c = w.ccci();
    c.args(["janitor", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut jan = c.spawn().unwrap();
    let jan_err = LineWatch::stderr_of(&mut jan);
    wait_until("the janitor's slow abra app remove", Duration::from_secs(30), || {
        !abra_starts(&w, "app remove").is_empty()
    });
    let run = crate::locks::start_run(&w, "install", &[]);
    run.err.wait_for("is in flight", Duration::from_secs(30));
    assert!(run.err.text().contains(&format!("pid {}, run janitor", jan.id())), "{}", run.err.text());
    let st = wait_within(&mut jan, Duration::from_secs(60));
    assert_eq!(st.code(), Some(0), "{}", jan_err.text());
    run.err.wait_for("app lock held", Duration::from_secs(10));
    wait_until("the run's abra app new", Duration::from_secs(10), || !abra_starts(&w, "app new").is_empty());
    // Ordering from the fixture's event log: the reap ended before the run went on.
    let log = w.abra_log();
    let lines: Vec<&str> = log.lines().collect();
    let remove_end = lines.iter().position(|l| l.starts_with("end ") && l.contains("app remove rc=0")).expect(&log);
    let new_start = abra_starts(&w, "app new")[0];
    assert!(remove_end < new_start, "the run did not wait for the reap:\n{log}");
    assert!(objects_of(&d).is_empty());
    assert_eq!(run.stop(), 143);
}

#[test]
fn two_janitors_at_once_exactly_one_reaps() {
    let mut w = World::new();
    w.abra_mode("slow=3:remove");
    let d = w.domain("hello", "8", "");
    fs::create_dir_all(&w.lock_dir).unwrap();
    fake_app(&w, &d);
    env_file(&w, &d);
    let spawn = || {
        let mut c = w.ccci();
        c.args(["janitor", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs: Vec<Output> = [a, b]
        .into_iter()
        .map(|mut c| {
            let st = wait_within(&mut c, Duration::from_secs(120));
            let mut o = c.wait_with_output().unwrap();
            o.status = st;
            o
        })
        .collect();
    let mut reaped = 0;
    for o in &outs {
        assert_eq!(code(o), 0, "{}", stderr_of(o));
        let r = typed(serde_json::from_slice(&o.stdout).unwrap());
        for e in r.apps.iter().filter(|e| e.domain == d) {
            match e.action {
                Act::Reaped => reaped += 1,
                // The winner writes its holder info right after it took the lock: the loser may
                // look in between and find none yet.
                Act::Left => assert!(matches!(e.holder.holder_run_id.as_deref(), Some("janitor") | None), "{e:?}"),
                Act::Skipped => assert_eq!(e.lock, LockSeen::Gone, "{e:?}"),
                Act::AlreadyGone => {}
                other => panic!("unexpected {other}: {e:?}"),
            }
        }
    }
    assert_eq!(reaped, 1);
    assert_eq!(abra_starts(&w, "app remove").len(), 1, "{}", w.abra_log());
    assert!(objects_of(&d).is_empty());
    assert!(!lock_path(&w, &d).exists());
}

#[test]
fn app_present_lockfile_absent_is_reaped_at_once() {
    let w = World::new();
    let d = w.domain("hello", "9", "");
    fs::create_dir_all(&w.lock_dir).unwrap();
    fake_app(&w, &d);
    let t = Instant::now();
    let (o, r) = janitor(&w, &[]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let a = app(&r, &d);
    assert_eq!((a.lock, a.action), (LockSeen::Absent, Act::Reaped), "{r:?}");
    assert_eq!(a.sources, [Source::Docker]);
    assert!(objects_of(&d).is_empty());
    assert!(!lock_path(&w, &d).exists(), "the lockfile created under the probe lock stays");
    assert!(t.elapsed() < Duration::from_secs(90), "no age wait");
}

/// Without a lockfile, only ccci's stamp of this lock dir proves an app is a run app of this
/// setup: an unstamped app matching the name pattern, or one stamped with another lock dir (a
/// relative or per-build lock dir, another host's setup), is left alone and reported — whatever
/// its `.env` or objects say otherwise.
#[test]
fn without_a_lockfile_only_this_lock_dirs_stamp_lets_the_janitor_reap() {
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let (ours, unstamped, foreign, foreign_env) = (
        w.domain("hello", "20", ""),
        w.domain("hello", "21", ""),
        w.domain("hello", "22", ""),
        w.domain("hello", "23", ""),
    );
    fake_volume(&w, &ours);
    fake_volume_labelled(&unstamped, None);
    fake_volume_labelled(&foreign, Some("ccci.lock-dir=/somewhere/else"));
    let env = w.abra_home.join("servers/default").join(format!("{foreign_env}.env"));
    fs::write(&env, format!("TYPE=hello\nDOMAIN={foreign_env}\nCCCI_LOCK_DIR=/somewhere/else\n")).unwrap();
    let (o, r) = janitor(&w, &[]);
    let err = stderr_of(&o);
    assert_eq!(code(&o), 0, "{err}");
    assert_eq!(app(&r, &ours).action, Act::Reaped, "{r:?}");
    for (d, why) in [(&unstamped, "no ccci stamp"), (&foreign, "/somewhere/else"), (&foreign_env, "/somewhere/else")] {
        let a = app(&r, d);
        assert_eq!((a.lock, a.action), (LockSeen::Absent, Act::Skipped), "{a:?}");
        assert!(a.reason.as_deref().unwrap().contains(why), "{a:?}");
        assert!(err.contains(&format!("janitor: {d}: ")), "reported on stderr: {err}");
        assert!(!lock_path(&w, d).exists(), "no lockfile is left for an app the janitor does not own");
    }
    assert!(objects_of(&ours).is_empty());
    assert_eq!(objects_of(&unstamped).len(), 1, "an unstamped app is never reaped");
    assert_eq!(objects_of(&foreign).len(), 1);
    assert!(env.exists());
    assert!(!w.abra_log().contains(&format!("app remove -n -f {foreign_env}")), "{}", w.abra_log());
    for d in [&unstamped, &foreign] {
        docker(&["volume", "rm", &format!("{}_data", ccci::names::stack_name(d))]);
    }
}

fn touch_back(path: &Path, when: &str) {
    let st = Command::new("touch").args(["-h", "-d", when]).arg(path).status().unwrap();
    assert!(st.success());
}

#[test]
fn a_lock_held_beyond_twice_its_deadline_is_flagged_not_stolen() {
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let (d1, d2, d3) = (w.domain("hello", "10", ""), w.domain("hello", "11", ""), w.domain("hello", "12", ""));
    // d1: ccci-style holder info with a 60 s deadline, held for 5 minutes: > 2 × 60 s.
    let info =
        r#"{"pid":4242,"run_id":"slow-run","recipe":"hello","started":"x","deadline_secs":60,"budget_secs":600}"#;
    let h1 = py_holder(&lock_path(&w, &d1), Some(info));
    touch_back(&lock_path(&w, &d1), "5 minutes ago");
    // d2: held by flock(1) with no content (deadline unknown: 2 h), for 3 hours.
    let h2: Holder = flock_holder(&lock_path(&w, &d2));
    touch_back(&lock_path(&w, &d2), "3 hours ago");
    // d3: held briefly: not flagged.
    let h3 = py_holder(&lock_path(&w, &d3), Some(info));
    for d in [&d1, &d2, &d3] {
        fake_volume(&w, d);
    }
    let (o, r) = janitor(&w, &[]);
    let err = stderr_of(&o);
    assert_eq!(code(&o), 0, "{err}");
    // Neither holder is ccci: the flag names them as foreign processes (any local user who can
    // open a lockfile can hold it).
    let flag = |d: &str, mins: u32, pid: u32, comm: &str| {
        format!(
            "lock for {d} held >{mins}m (held by a foreign process (pid {pid}, {comm})) — possible leaked run; inspect with ccci locks"
        )
    };
    assert!(err.contains(&flag(&d1, 2, h1.pid() as u32, "python3")), "{err}");
    assert!(err.contains(&flag(&d2, 120, h2.pid() as u32, "flock")), "{err}");
    assert!(!err.contains(&format!("lock for {d3} held")), "{err}");
    for (d, flagged) in [(&d1, true), (&d2, true), (&d3, false)] {
        let a = app(&r, d);
        assert_eq!((a.action, a.holder.long_held), (Act::Left, flagged), "{a:?}");
        assert_eq!(objects_of(d).len(), 1, "{d} was reaped");
    }
    assert_eq!(holders(&lock_path(&w, &d1)), vec![h1.pid()]);
    assert_eq!(holders(&lock_path(&w, &d2)), vec![h2.pid()]);
    assert_eq!(holders(&lock_path(&w, &d3)), vec![h3.pid()]);
}

#[test]
fn non_run_names_are_never_probed_and_get_no_lockfile() {
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let ns = w.suffix.replace('.', "_");
    let warm_stack = format!("warm-keycloak_{ns}");
    let long_stack = format!("hello-620c9a_{ns}");
    for s in [&warm_stack, &long_stack] {
        docker(&["volume", "create", "--label", &format!("com.docker.stack.namespace={s}"), &format!("{s}_data")]);
    }
    let warm_env = env_file(&w, &format!("warm-app.{}", w.suffix));
    let other_env = env_file(&w, "hell-620c9a.other.example");
    let before = fs::read_to_string(&warm_env).unwrap();
    // Free lockfiles of non-run names are not the janitor's either (not even "stale").
    let foreign_locks = [lock_path(&w, &format!("warm-app.{}", w.suffix)), lock_path(&w, "hell-620c9a.other.example")];
    for l in &foreign_locks {
        fs::write(l, "").unwrap();
    }
    let (o, r) = janitor(&w, &[]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    assert!(r.apps.is_empty(), "{r:?}");
    let ignored: Vec<&str> = r.discovery.ignored.iter().map(String::as_str).collect();
    for name in [warm_stack.as_str(), long_stack.as_str()] {
        assert!(ignored.contains(&name), "{name} not in {ignored:?}");
    }
    assert!(
        ignored.contains(&format!("warm-app.{}", w.suffix).as_str()) && ignored.contains(&"hell-620c9a.other.example")
    );
    assert_eq!(fs::read_dir(&w.lock_dir).unwrap().count(), 2, "a lockfile was created for a non-run name");
    assert!(foreign_locks.iter().all(|l| l.exists()), "a non-run lockfile was unlinked");
    assert!(r.lockfiles.is_empty(), "{r:?}");
    assert_eq!(fs::read_to_string(&warm_env).unwrap(), before);
    assert!(other_env.exists());
    assert_eq!(docker_objects_matching(&warm_stack).len(), 1);
    assert_eq!(docker_objects_matching(&long_stack).len(), 1);
}

#[test]
fn garbage_at_the_lock_path_is_skipped_by_the_janitor_and_fails_a_run() {
    let w = parking_world();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let target = w.path().join("precious");
    fs::write(&target, "do not touch\n").unwrap();
    touch_back(&target, "2 days ago");
    let target_mtime = fs::metadata(&target).unwrap().mtime();
    let nobody = 65534;
    let make = |kind: &str, path: &Path| match kind {
        "dir" => fs::create_dir(path).unwrap(),
        "symlink" => std::os::unix::fs::symlink(&target, path).unwrap(),
        "fifo" => assert!(Command::new("mkfifo").arg(path).status().unwrap().success()),
        _ => {
            fs::write(path, "").unwrap();
            std::os::unix::fs::chown(path, Some(nobody), Some(nobody)).unwrap();
        }
    };
    // (kind, what the janitor says, what a run says)
    let kinds = [
        ("dir", "is a directory", "is a directory"),
        ("symlink", "is a symlink", "is a symlink"),
        ("fifo", "is a FIFO", "is a FIFO"),
        ("foreign", "owned by uid 65534", "owned by uid 65534"),
    ];
    for (i, (kind, _, _)) in kinds.iter().enumerate() {
        let d = w.domain("hello", &format!("{}", 20 + i), "");
        make(kind, &lock_path(&w, &d));
        fake_volume(&w, &d);
    }
    let (o, r) = janitor(&w, &[]);
    let err = stderr_of(&o);
    assert_eq!(code(&o), 0, "the janitor logs and skips, never crashes: {err}");
    for (i, (kind, why, _)) in kinds.iter().enumerate() {
        let d = w.domain("hello", &format!("{}", 20 + i), "");
        let a = app(&r, &d);
        assert_eq!((a.lock, a.action), (LockSeen::Unsafe, Act::Skipped), "{kind}: {a:?}");
        assert!(a.reason.as_deref().unwrap().contains(why), "{kind}: {a:?}");
        assert!(err.contains(&format!("{}", lock_path(&w, &d).display())), "{kind}: the log names the path: {err}");
        assert_eq!(objects_of(&d).len(), 1, "{kind}: the app was reaped");
    }
    // Nothing the symlink points to was followed, opened or touched; the rest is as it was.
    assert_eq!(fs::read_to_string(&target).unwrap(), "do not touch\n");
    assert_eq!(fs::metadata(&target).unwrap().mtime(), target_mtime);
    let l = |i: usize| lock_path(&w, &w.domain("hello", &format!("{}", 20 + i), ""));
    assert!(fs::symlink_metadata(l(0)).unwrap().is_dir());
    assert!(fs::symlink_metadata(l(1)).unwrap().file_type().is_symlink());
    assert!(fs::symlink_metadata(l(2)).unwrap().file_type().is_fifo());
    assert_eq!(fs::symlink_metadata(l(3)).unwrap().uid(), nobody);

    // A run whose lock path is garbage fails with a clear error naming the path.
    let hello = hello_lock(&w);
    for (kind, _, why) in kinds {
        make(kind, &hello);
        let run_id = format!("g{}", unique());
        let mut c = w.ccci();
        c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello", "--stages", "install"]);
        let o = output_within(c, Duration::from_secs(120));
        let err = stderr_of(&o);
        assert_eq!(code(&o), 1, "{kind}: {err}");
        assert!(err.contains(&format!("app lock {}", hello.display())) && err.contains(why), "{kind}: {err}");
        assert!(!w.abra_log().contains("app new"), "{kind}");
        assert_eq!(w.results(&run_id).teardown.result, TeardownResult::Skipped);
        if kind == "dir" {
            fs::remove_dir(&hello).unwrap();
        } else {
            fs::remove_file(&hello).unwrap();
        }
    }
    assert_eq!(fs::read_to_string(&target).unwrap(), "do not touch\n");
    assert_eq!(fs::metadata(&target).unwrap().mtime(), target_mtime);
}

/// A run dir as ccci leaves it, aged with `touch -d`.
fn old_run_dir(w: &World, id: &str, with_lock: bool, age: &str) -> std::path::PathBuf {
    let dir = w.runs_dir.join(id);
    fs::create_dir_all(dir.join("abra/recipes/hello/.git")).unwrap();
    fs::create_dir_all(w.abra_home.join("servers")).unwrap();
    std::os::unix::fs::symlink(w.abra_home.join("servers"), dir.join("abra/servers")).unwrap();
    fs::create_dir_all(dir.join("tests")).unwrap();
    fs::write(dir.join("tests/test_x"), "#!/bin/sh\n").unwrap();
    fs::create_dir_all(dir.join("state/4242")).unwrap();
    for f in ["results.json", "run.log", "junit.xml"] {
        fs::write(dir.join(f), f).unwrap();
    }
    if with_lock {
        fs::write(dir.join("run.lock"), "").unwrap();
    }
    let mut paths = walkdir_all(&dir);
    paths.push(dir.clone());
    for p in paths {
        touch_back(&p, age);
    }
    dir
}

fn walkdir_all(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir_all(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn prune_keeps_results_and_skips_dirs_without_run_lock() {
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let old = old_run_dir(&w, "old", true, "20 days ago");
    let foreign = old_run_dir(&w, "foreign", false, "20 days ago");
    let live = old_run_dir(&w, "live", true, "20 days ago");
    let young = old_run_dir(&w, "young", true, "2 days ago");
    let holder = py_holder(&live.join("run.lock"), None);
    touch_back(&live.join("run.lock"), "20 days ago");

    // Younger than --prune-after 30: nothing happens.
    let (o, r) = janitor(&w, &["--prune-after", "30"]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    assert!(old.join("abra").exists());
    assert!(r.run_dirs.iter().all(|d| d.action == DirAct::Kept), "{r:?}");

    let (o, r) = janitor(&w, &[]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let of = |id: &str| r.run_dirs.iter().find(|e| e.run_id == id);
    assert_eq!(of("old").unwrap().action, DirAct::Pruned, "{r:?}");
    assert_eq!(of("old").unwrap().removed, [Part::Abra, Part::Tests, Part::State]);
    assert_eq!(of("foreign").unwrap().action, DirAct::Kept);
    // The live one's run.lock is held: its prune is refused at apply time (without /proc/locks).
    assert_eq!(of("live").unwrap().action, DirAct::Live, "{r:?}");
    assert!(of("young").is_none(), "{r:?}");
    for gone in ["abra", "tests", "state"] {
        assert!(!old.join(gone).exists(), "{gone}");
    }
    for kept in ["results.json", "run.log", "junit.xml", "run.lock"] {
        assert_eq!(fs::read_to_string(old.join(kept)).unwrap_or_default().is_empty(), kept == "run.lock", "{kept}");
    }
    assert!(w.abra_home.join("servers").is_dir(), "the servers symlink was followed");
    for untouched in [&foreign, &live, &young] {
        for part in ["abra/recipes/hello", "tests/test_x", "state/4242", "results.json"] {
            assert!(untouched.join(part).exists(), "{}/{part}", untouched.display());
        }
    }
    drop(holder);
}

#[test]
fn the_straggler_sweep_kills_only_processes_of_dead_runs() {
    let w = parking_world();
    // A SIGKILLed ccci run leaves the fixture's sleep behind (made first: a run starts with
    // a janitor sweep of its own, which would take the fakes below).
    let mut run = park_run(&w);
    signal(run.child.id(), libc::SIGKILL);
    let _ = run.child.wait();
    let token = format!("CCCI_RUN_TOKEN={}:", run.run_id);
    wait_until("abra to die with ccci", Duration::from_secs(10), || pids_with_env(&token).len() == 1);
    let orphan = pids_with_env(&token)[0];
    fs::create_dir_all(w.runs_dir.join("dead")).unwrap();
    fs::write(w.runs_dir.join("dead/run.lock"), "").unwrap();
    fs::create_dir_all(w.runs_dir.join("live")).unwrap();
    let live_ccci = py_holder(&w.runs_dir.join("live/run.lock"), None);
    let start_of = |pid: i32| ccci::process::procfs::read_stat(pid).unwrap().start_time;
    let (lpid, lstart) = (live_ccci.pid(), start_of(live_ccci.pid()));
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();

    let spawn = |token: Option<String>, ignore_term: bool| {
        let mut c = Command::new("sh");
        let script = if ignore_term { "trap '' TERM; exec sleep 300" } else { "exec sleep 300" };
        c.args(["-c", script]).stdin(Stdio::null());
        if let Some(t) = token {
            c.env("CCCI_RUN_TOKEN", t);
        }
        KillOnDrop(c.spawn().unwrap())
    };
    let mut dead_plain = spawn(Some(format!("dead:{gone_pid}:1")), false);
    let mut dead_stubborn = spawn(Some(format!("dead:{gone_pid}:1")), true);
    let mut dead_reused = spawn(Some(format!("dead:{lpid}:{}", lstart + 1)), false);
    let of_live = spawn(Some(format!("live:{lpid}:{lstart}")), false);
    let dead_dir_live_ccci = spawn(Some(format!("dead:{lpid}:{lstart}")), false);
    let elsewhere = spawn(Some(format!("elsewhere:{gone_pid}:1")), false);
    let no_token = spawn(None, false);
    // Each `sh` execs sleep after its trap: once /proc says `sleep`, the ignored TERM is in
    // place (dispositions survive exec), so the janitor cannot catch one before its trap.
    for c in [&dead_plain, &dead_stubborn, &dead_reused, &of_live, &dead_dir_live_ccci, &elsewhere, &no_token] {
        wait_until("the victim to exec sleep", Duration::from_secs(10), || comm_is(c.id() as i32, "sleep"));
    }

    let (o, r) = janitor(&w, &[]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let by_pid = |pid: u32| r.stragglers.iter().find(|s| i64::from(s.pid) == i64::from(pid)).map(|s| s.action);
    assert_eq!(by_pid(dead_plain.id()), Some(ProcAct::Terminated), "{r:?}");
    assert_eq!(by_pid(dead_stubborn.id()), Some(ProcAct::Killed), "{r:?}");
    assert_eq!(by_pid(dead_reused.id()), Some(ProcAct::Terminated), "{r:?}");
    assert_eq!(by_pid(orphan as u32), Some(ProcAct::Terminated), "{r:?}");
    assert_eq!(r.stragglers.len(), 4, "{r:?}");
    for c in [&mut dead_plain, &mut dead_stubborn, &mut dead_reused] {
        let st = wait_within(&mut c.0, Duration::from_secs(5));
        assert!(st.code().is_none(), "killed by a signal");
    }
    assert!(!alive(orphan));
    for c in [&of_live, &dead_dir_live_ccci, &elsewhere, &no_token] {
        assert!(alive(c.id() as i32), "pid {} was killed", c.id());
    }
    drop(live_ccci);
}

#[test]
fn dry_run_changes_nothing_and_prints_the_plan() {
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let (orphan, reboot, stale) =
        (w.domain("hello", "30", ""), w.domain("hello", "31", ""), w.domain("hello", "32", ""));
    fake_volume(&w, &orphan);
    fake_volume(&w, &reboot);
    dead_holders_lockfile(&lock_path(&w, &orphan));
    fs::write(lock_path(&w, &stale), "").unwrap();
    let stamp = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec(), fs::read(p).unwrap())
    };
    let (orphan_before, stale_before) = (stamp(&lock_path(&w, &orphan)), stamp(&lock_path(&w, &stale)));
    let old = old_run_dir(&w, "old", true, "20 days ago");
    fs::create_dir_all(w.runs_dir.join("dead")).unwrap();
    fs::write(w.runs_dir.join("dead/run.lock"), "").unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let straggler = KillOnDrop(
        Command::new("sleep").arg("300").env("CCCI_RUN_TOKEN", format!("dead:{gone_pid}:1")).spawn().unwrap(),
    );

    // `-q` silences the logs, not the plan: it is the dry run's output, a table on stdout.
    let mut c = w.ccci();
    c.args(["-q", "janitor", "--dry-run"]);
    let o = output_within(c, Duration::from_secs(60));
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    assert!(!stderr_of(&o).contains(" INFO "), "-q: no info logs: {}", stderr_of(&o));
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    let rows: Vec<Vec<&str>> = plan.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["ACTION", "KIND", "NAME", "DETAIL"], "{plan}");
    let old_path = old.display().to_string();
    let straggler_pid = straggler.id().to_string();
    for want in [
        ["reap", "app", orphan.as_str()],
        ["reap", "app", reboot.as_str()],
        ["unlink", "lockfile", stale.as_str()],
        ["prune", "run-dir", old_path.as_str()],
        ["kill", "process", straggler_pid.as_str()],
    ] {
        assert!(rows.iter().any(|r| r.starts_with(&want)), "{want:?} not in the plan:\n{plan}");
    }
    let (o, r) = janitor(&w, &["--dry-run"]);
    assert_eq!(code(&o), 0);
    assert!(r.dry_run);
    assert_eq!(app(&r, &orphan).action, Act::WouldReap);
    assert_eq!((app(&r, &reboot).action, app(&r, &reboot).lock), (Act::WouldReap, LockSeen::Absent));
    assert_eq!(r.lockfiles[0].action, Act::WouldUnlink);
    assert_eq!(r.run_dirs[0].action, DirAct::WouldPrune);
    assert_eq!(r.stragglers[0].action, ProcAct::WouldKill);

    // Nothing changed: the apps, the lockfiles (same inode, mtime and content), no lockfile for
    // the reboot case, the run dir, the straggler.
    assert_eq!(objects_of(&orphan).len(), 1);
    assert_eq!(objects_of(&reboot).len(), 1);
    assert_eq!(stamp(&lock_path(&w, &orphan)), orphan_before);
    assert_eq!(stamp(&lock_path(&w, &stale)), stale_before);
    assert!(!lock_path(&w, &reboot).exists());
    assert!(old.join("abra/recipes/hello").exists() && old.join("state/4242").exists());
    assert!(alive(straggler.id() as i32));
    assert!(w.abra_log().lines().all(|l| l.contains("app ls") || l.contains("--version")), "{}", w.abra_log());
}

#[test]
fn sigterm_stops_the_janitor_between_candidates() {
    let mut w = World::new();
    w.abra_mode("slow=30:remove");
    fs::create_dir_all(&w.lock_dir).unwrap();
    let mut ds: Vec<String> = (40..43).map(|i| w.domain("hello", &i.to_string(), "")).collect();
    ds.sort(); // the janitor goes through candidates in domain order
    for d in &ds {
        fake_volume(&w, d);
        env_file(&w, d);
    }
    let mut c = w.ccci();
    c.args(["janitor", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut jan = c.spawn().unwrap();
    let err = LineWatch::stderr_of(&mut jan);
    wait_until("the first reap", Duration::from_secs(30), || !abra_starts(&w, "app remove").is_empty());
    let t = Instant::now();
    signal(jan.id(), libc::SIGTERM);
    let st = wait_within(&mut jan, Duration::from_secs(30));
    assert!(t.elapsed() < Duration::from_secs(10), "stopping took {:?}", t.elapsed());
    assert_eq!(st.code(), Some(143), "{}", err.text());
    let mut out = String::new();
    jan.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let r = typed(serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}")));
    assert_eq!((r.completed, r.stopped), (false, Some(Halt::Cancelled)));
    let actions: Vec<Act> = ds.iter().map(|d| app(&r, d).action).collect();
    assert_eq!(actions, [Act::Failed, Act::NotReached, Act::NotReached], "{r:?}");
    assert_eq!(abra_starts(&w, "app remove").len(), 1, "{}", w.abra_log());
    // Its probe lock went with it: the lockfile is free (and stays for the next sweep).
    assert!(crate::locks::lock_is_free(&lock_path(&w, &ds[0])));
    assert!(waiters(&lock_path(&w, &ds[0])).is_empty());
}

#[test]
fn the_deadline_stops_the_janitor_between_candidates_and_a_failed_reap_exits_1() {
    // Deadline: the first reap outlasts --deadline 1; the second is not reached.
    let mut w = World::new();
    w.abra_mode("slow=2:remove");
    fs::create_dir_all(&w.lock_dir).unwrap();
    let (a, b) = (w.domain("hello", "50", ""), w.domain("hello", "51", ""));
    for d in [&a, &b] {
        fake_volume(&w, d);
        env_file(&w, d);
    }
    let (o, r) = janitor(&w, &["--deadline", "1"]);
    assert_eq!(code(&o), 142, "{}", stderr_of(&o));
    assert_eq!(r.stopped, Some(Halt::Deadline));
    // The deadline bounds the reap in flight too (its abra is stopped as timed out): the first
    // reap fails, the second is not reached; both are the next sweep's job.
    assert_eq!((app(&r, &a).action, app(&r, &b).action), (Act::Failed, Act::NotReached));
    assert!(stderr_of(&o).contains("timed out"), "{}", stderr_of(&o));
    assert_eq!(objects_of(&b).len(), 1);

    // A failed reap: docker fails for one stack only; the janitor still reaps the next one. The
    // failure is a stub docker CLI's, so this part reads through the CLI (CCCI_DOCKER_READS=cli);
    // a dockerd that fails the Engine API is tests/engine_reads.rs's.
    let bad_stack = ccci::names::stack_name(&b);
    let wrapper = w.bin.join("docker-failing");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$1\" = ps ] && case \"$*\" in *'={bad_stack}'*) echo 'simulated docker failure' >&2; exit 1;; esac\nexec docker \"$@\"\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let c_ = w.domain("hello", "52", "");
    fake_volume(&w, &c_);
    let mut c = w.ccci();
    c.env("CCCI_DOCKER", &wrapper).env("CCCI_DOCKER_READS", "cli").args(["janitor", "--json"]);
    let o = output_within(c, Duration::from_secs(120));
    let r = typed(serde_json::from_slice(&o.stdout).unwrap());
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    assert_eq!(app(&r, &b).action, Act::Failed, "{r:?}");
    assert_eq!(app(&r, &c_).action, Act::Reaped, "{r:?}");
    assert_eq!(app(&r, &a).action, Act::Reaped, "the sweep after the deadline finishes a's reap: {r:?}");
    assert!(objects_of(&c_).is_empty() && objects_of(&a).is_empty());
    assert!(!lock_path(&w, &b).exists(), "a lockfile created by the failed probe stays behind");
}

#[test]
fn a_missing_lock_dir_skips_every_reap_and_fails_the_sweep() {
    // A janitor looking at the wrong lock dir would take every live run for an orphan: without
    // the dir it must not guess.
    let w = World::new();
    let d = w.domain("hello", "60", "");
    fake_volume(&w, &d);
    let (o, r) = janitor(&w, &[]);
    let err = stderr_of(&o);
    assert_eq!(code(&o), 1, "{err}");
    let a = app(&r, &d);
    assert_eq!((a.lock, a.action), (LockSeen::Unsafe, Act::Skipped), "{r:?}");
    assert!(a.reason.as_deref().unwrap().contains("does not exist"), "{a:?}");
    assert!(r.errors[0].contains("CCCI_APP_LOCK_DIR"), "{r:?}");
    assert!(!w.lock_dir.exists(), "the janitor created the lock dir");
    assert_eq!(objects_of(&d).len(), 1);
}

/// A janitor whose docker hangs (a wedged dockerd) still ends within its `--deadline`: every
/// child it starts is bounded by it, not only the gaps between candidates. The hang is a stub
/// docker CLI's, so the janitor reads through the CLI here (`CCCI_DOCKER_READS=cli`); the Engine
/// API's stalled dockerd is tests/engine_reads.rs's.
#[test]
fn a_janitor_whose_docker_hangs_returns_within_its_deadline() {
    let mut w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let hang = w.bin.join("docker-hangs");
    // A unique duration marks this test's sleeps in /proc.
    let marker = format!("599.{}", unique());
    fs::write(&hang, format!("#!/bin/sh\nexec sleep {marker}\n")).unwrap();
    fs::set_permissions(&hang, fs::Permissions::from_mode(0o755)).unwrap();
    w.set("CCCI_DOCKER", hang.to_str().unwrap());
    w.set("CCCI_DOCKER_READS", "cli");
    let mut c = w.ccci();
    c.args(["janitor", "--json", "--deadline", "3"]);
    // The bound is the claim: --deadline 3, plus 5 s for the kill grace (1 s here) and exit.
    let o = output_within(c, Duration::from_secs(3 + 5));
    let err = stderr_of(&o);
    assert!(matches!(code(&o), 1 | 69 | 142), "{err}");
    assert!(err.contains("timed out"), "{err}");
    let stuck: Vec<_> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker)))
        .collect();
    assert!(stuck.is_empty(), "the hung docker children were stopped with their group");
}
