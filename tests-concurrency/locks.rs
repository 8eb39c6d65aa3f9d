//! The app lock (§5) between real processes: ccci runs, util-linux `flock(1)` and python's
//! `fcntl.flock` holding real locks; `ccci locks` reading them without ever taking one.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use ccci::commands::locks::{LocksOut, Seen};
use ccci::exit::Outcome;
use ccci::report::TeardownResult;

use crate::common::*;

// ---- helpers shared with janitor.rs -------------------------------------------------------

/// A real process holding a real flock. Dropping it kills its process group and reaps it.
pub(crate) struct Holder {
    pub child: Child,
    stdin: Option<ChildStdin>,
}

impl Holder {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Lets a python holder exit on its own (closing its stdin), and reaps it.
    pub fn release(mut self) {
        drop(self.stdin.take());
        let _ = wait_within(&mut self.child, Duration::from_secs(20));
    }

    pub fn sigkill(&mut self) {
        // SAFETY: killpg(2) on the holder's own process group.
        unsafe {
            libc::killpg(self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.sigkill();
        }
    }
}

const PY_HOLD: &str = r#"
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
if len(sys.argv) > 2:
    os.ftruncate(fd, 0)
    os.write(fd, sys.argv[2].encode())
sys.stdout.write("held\n")
sys.stdout.flush()
sys.stdin.read()
"#;

/// A python3 process holding `fcntl.flock(LOCK_EX)` on `path` (blocking until it gets it),
/// optionally writing `content` into the file. Returns once it holds the lock.
pub(crate) fn py_holder(path: &Path, content: Option<&str>) -> Holder {
    let mut c = Command::new("python3");
    c.arg("-c").arg(PY_HOLD).arg(path).args(content).stdin(Stdio::piped()).stdout(Stdio::piped()).process_group(0);
    let mut child = c.spawn().expect("python3");
    let stdin = child.stdin.take();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "held", "the python holder did not take {}", path.display());
    Holder { child, stdin }
}

/// A python3 holder that is started but may still be blocked waiting for the lock.
pub(crate) fn py_holder_pending(path: &Path) -> (Holder, BufReader<std::process::ChildStdout>) {
    let mut c = Command::new("python3");
    c.arg("-c").arg(PY_HOLD).arg(path).stdin(Stdio::piped()).stdout(Stdio::piped()).process_group(0);
    let mut child = c.spawn().expect("python3");
    let stdin = child.stdin.take();
    let out = BufReader::new(child.stdout.take().unwrap());
    (Holder { child, stdin }, out)
}

/// util-linux `flock(1)` holding `path` while it runs `sleep` (in its own process group).
pub(crate) fn flock_holder(path: &Path) -> Holder {
    if !path.exists() {
        fs::write(path, "").unwrap();
    }
    let mut c = Command::new("flock");
    c.arg("-x").arg(path).args(["sleep", "300"]).stdin(Stdio::null()).process_group(0);
    let child = c.spawn().expect("flock(1) from util-linux");
    let h = Holder { child, stdin: None };
    wait_until("flock(1) to hold the lock", Duration::from_secs(10), || holders(path).contains(&h.pid()));
    h
}

/// Pids holding a flock on the inode `path` names, from `/proc/locks` (read-only).
pub(crate) fn holders(path: &Path) -> Vec<i32> {
    match fs::symlink_metadata(path) {
        Ok(m) => ccci::lock::proc_locks::holders(m.dev(), m.ino()),
        Err(_) => Vec::new(),
    }
}

/// Pids blocked waiting for a flock on the inode `path` names (the `->` lines of /proc/locks).
pub(crate) fn waiters(path: &Path) -> Vec<i32> {
    let Ok(m) = fs::symlink_metadata(path) else { return Vec::new() };
    let id = format!("{:02x}:{:02x}:{}", libc::major(m.dev()), libc::minor(m.dev()), m.ino());
    let text = fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"->") && f.get(6) == Some(&id.as_str())).then(|| f[5].parse().ok()).flatten()
        })
        .collect()
}

/// A real non-blocking try from this (test) process, released at once.
pub(crate) fn lock_is_free(path: &Path) -> bool {
    let f = fs::File::open(path).unwrap();
    f.try_lock().is_ok()
}

pub(crate) fn lock_path(w: &World, domain: &str) -> PathBuf {
    w.lock_dir.join(ccci::names::lock_file_name(domain))
}

/// The lock path of the `hello` run app of a world (pr 0, no ref).
pub(crate) fn hello_lock(w: &World) -> PathBuf {
    lock_path(w, &w.domain("hello", "0", ""))
}

/// A `ccci run` of hello parked in a hung `abra app new` (fixture mode `hang:new`): it holds
/// its app lock and has created nothing yet.
pub(crate) struct Parked {
    pub child: Child,
    pub err: LineWatch,
    pub run_id: String,
}

impl Parked {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, then the exit code (teardown of a run that created nothing is quick).
    pub fn stop(mut self) -> i32 {
        signal(self.child.id(), libc::SIGTERM);
        let st = wait_within(&mut self.child, Duration::from_secs(60));
        st.code().unwrap_or(-1)
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pid in pids_with_env(&format!("CCCI_RUN_TOKEN={}:", self.run_id)) {
            signal(pid as u32, libc::SIGKILL);
        }
    }
}

/// Starts a run of hello with `stages`.
pub(crate) fn start_run(w: &World, stages: &str, extra: &[&str]) -> Parked {
    let run_id = format!("p{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id)
        .args(["run", "--recipe", "hello", "--stages", stages])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let err = LineWatch::stderr_of(&mut child);
    Parked { child, err, run_id }
}

fn hung_in_app_new(w: &World) -> usize {
    w.abra_log().lines().filter(|l| l.starts_with("hang ") && l.ends_with("app new")).count()
}

/// A run of hello that holds its lock and hangs in `app new` (the world must be in `hang:new`
/// mode); returns once it is parked there.
pub(crate) fn park_run(w: &World) -> Parked {
    let before = hung_in_app_new(w);
    let p = start_run(w, "install", &[]);
    p.err.wait_for("app lock held", Duration::from_secs(60));
    wait_until("the run to hang in abra app new", Duration::from_secs(30), || hung_in_app_new(w) > before);
    p
}

/// A world whose fixture abra hangs in `app new`, with the hello recipe.
pub(crate) fn parking_world() -> World {
    let mut w = World::new();
    w.abra_mode("hang:new");
    w.recipe("hello");
    w
}

// ---- tests --------------------------------------------------------------------------------

#[test]
fn sigkill_of_a_holder_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["flock(1)", "python"] {
        let path = dir.path().join(format!("{}.lock", kind.len()));
        let mut h = if kind == "python" { py_holder(&path, None) } else { flock_holder(&path) };
        assert!(!lock_is_free(&path), "{kind} holds it");
        h.sigkill();
        // The holder's whole group dies, but flock(1)'s child (which shares the locked open
        // file description) may still be exiting when the leader's wait returns: the release
        // is an event to wait for, not a state to assert at once.
        wait_until(&format!("SIGKILL of the {kind} holder to release the lock"), Duration::from_secs(10), || {
            lock_is_free(&path)
        });
        assert!(path.exists(), "release is the kernel's; the file stays");
    }
}

#[test]
fn a_nonblocking_probe_fails_against_a_held_lock_and_succeeds_against_a_free_one() {
    use ccci::lock::{TryLock, try_lock};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cc-ci-app-a-000001.x.lock");
    let h = py_holder(
        &path,
        Some(r#"{"pid":4242,"run_id":"r42","recipe":"hello","started":"","deadline_secs":60,"budget_secs":600}"#),
    );
    assert!(ccci::lock::try_acquire(&path).unwrap().is_none(), "ccci's try must fail while python holds it");
    match try_lock(&path, true) {
        TryLock::Held { info: Some(i), .. } => assert_eq!(i.run_id, "r42"),
        other => panic!("expected held, got {other:?}"),
    }
    let t = Instant::now();
    assert!(ccci::lock::try_acquire(&path).unwrap().is_none());
    assert!(t.elapsed() < Duration::from_secs(1), "a non-blocking try never waits");
    h.release();
    let held = ccci::lock::try_acquire(&path).unwrap().expect("free now");
    drop(held);
    assert!(matches!(try_lock(&path, true), TryLock::Acquired(_)));
}

#[test]
fn a_holders_child_that_outlives_it_does_not_keep_the_lock() {
    let w = parking_world();
    let lock = hello_lock(&w);
    let mut run = park_run(&w);
    assert_eq!(holders(&lock), vec![run.pid()], "the run holds its app lock");
    // The hung fixture abra has a `sleep` child: a descendant of the holder.
    let token = format!("CCCI_RUN_TOKEN={}:", run.run_id);
    wait_until("the fixture's sleep to exist", Duration::from_secs(10), || pids_with_env(&token).len() >= 2);
    signal(run.child.id(), libc::SIGKILL);
    let _ = run.child.wait();
    // PDEATHSIG takes abra down; its `sleep` survives, orphaned, still carrying the run token.
    wait_until("abra to die with ccci", Duration::from_secs(10), || pids_with_env(&token).len() == 1);
    let survivors = pids_with_env(&token);
    assert_eq!(survivors.len(), 1, "{survivors:?}");
    assert!(lock_is_free(&lock), "a descendant that outlives the holder must not keep the lock");
    // It never even had the lock fd (O_CLOEXEC).
    let target = fs::canonicalize(&lock).unwrap();
    for fd in fs::read_dir(format!("/proc/{}/fd", survivors[0])).unwrap().flatten() {
        assert_ne!(fs::read_link(fd.path()).ok(), Some(target.clone()), "the lock fd leaked into a child");
    }
}

#[test]
fn a_second_acquire_waits_until_the_first_holder_exits() {
    // The first holder is util-linux flock(1); the second acquire is a ccci run.
    let w = parking_world();
    let lock = hello_lock(&w);
    fs::create_dir_all(&w.lock_dir).unwrap();
    let mut first = flock_holder(&lock);
    let run = start_run(&w, "install", &[]);
    run.err.wait_for("is in flight", Duration::from_secs(60));
    // A `->` entry in /proc/locks is the kernel saying ccci is blocked in flock(2): no pause needed.
    wait_until("ccci to block in flock(2)", Duration::from_secs(10), || waiters(&lock).contains(&run.pid()));
    assert!(!w.abra_log().contains("app new"), "the waiter ran abra app new while flock(1) held the lock");
    first.sigkill();
    run.err.wait_for("app lock held", Duration::from_secs(10));
    wait_until("the run to reach abra app new", Duration::from_secs(10), || w.abra_log().contains("app new"));
    assert_eq!(holders(&lock), vec![run.pid()]);
    assert_eq!(run.stop(), 143);
}

#[test]
fn a_waiter_whose_inode_is_unlinked_retries_on_the_live_path() {
    let w = parking_world();
    let lock = hello_lock(&w);
    fs::create_dir_all(&w.lock_dir).unwrap();
    let old = py_holder(&lock, None);
    let run = start_run(&w, "install", &[]);
    run.err.wait_for("is in flight", Duration::from_secs(60));
    wait_until("ccci to block on the old inode", Duration::from_secs(10), || waiters(&lock).contains(&run.pid()));
    let old_ino = fs::metadata(&lock).unwrap().ino();
    // Like a clean teardown: unlink while holding; then a newcomer takes the live path.
    fs::remove_file(&lock).unwrap();
    let new = py_holder(&lock, None);
    assert_ne!(fs::metadata(&lock).unwrap().ino(), old_ino);
    old.release();
    // The waiter got the old inode, saw it is no longer the path's, and now waits on the new one.
    wait_until("ccci to block on the live inode", Duration::from_secs(10), || waiters(&lock).contains(&run.pid()));
    assert!(!w.abra_log().contains("app new"), "the waiter proceeded on an unlinked inode");
    new.release();
    run.err.wait_for("app lock held", Duration::from_secs(10));
    assert_eq!(holders(&lock), vec![run.pid()]);
    assert_eq!(run.stop(), 143);
}

#[test]
fn flock1_and_python_locks_are_respected_both_ways() {
    let w = parking_world();
    let lock = hello_lock(&w);
    fs::create_dir_all(&w.lock_dir).unwrap();
    // Their locks stop ccci: a run with a lock timeout gives up (exit 75) and creates nothing.
    for kind in ["flock(1)", "python"] {
        let h = if kind == "python" { py_holder(&lock, None) } else { flock_holder(&lock) };
        let mut c = w.ccci();
        c.args(["run", "--recipe", "hello", "--stages", "install", "--lock-timeout", "1"]);
        let o = output_within(c, Duration::from_secs(120));
        assert_eq!(code(&o), 75, "a lock held by {kind}: {}", stderr_of(&o));
        assert!(!w.abra_log().contains("app new"), "{kind}");
        assert!(holders(&lock).contains(&h.pid()), "{kind} still holds it");
        drop(h);
    }
    // ccci's lock stops them.
    let run = park_run(&w);
    let o = Command::new("flock").args(["-n", "-E", "9"]).arg(&lock).arg("true").output().unwrap();
    assert_eq!(o.status.code(), Some(9), "flock -n must fail while ccci holds the lock");
    let py = "import fcntl,os,sys\nfd=os.open(sys.argv[1],os.O_RDWR)\ntry:\n fcntl.flock(fd,fcntl.LOCK_EX|fcntl.LOCK_NB); print('acquired')\nexcept BlockingIOError:\n print('blocked')";
    let o = Command::new("python3").args(["-c", py]).arg(&lock).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "blocked");
    // A blocking python waiter gets it once the run is gone.
    let (waiter, mut out) = py_holder_pending(&lock);
    wait_until("python to block", Duration::from_secs(10), || waiters(&lock).contains(&waiter.pid()));
    assert_eq!(run.stop(), 143);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "held");
    waiter.release();
}

#[test]
fn lock_timeout_exits_75_and_tears_nothing_down() {
    let w = parking_world();
    let lock = hello_lock(&w);
    fs::create_dir_all(&w.lock_dir).unwrap();
    let h = py_holder(
        &lock,
        Some(
            r#"{"pid":1,"run_id":"holder-run","recipe":"hello","started":"then","deadline_secs":3600,"budget_secs":600}"#,
        ),
    );
    let run_id = format!("t{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello", "--stages", "install", "--lock-timeout", "2"]);
    let t = Instant::now();
    let o = output_within(c, Duration::from_secs(120));
    let err = stderr_of(&o);
    assert_eq!(code(&o), 75, "{err}");
    assert!(t.elapsed() >= Duration::from_secs(2));
    assert!(err.contains("run holder-run"), "the wait message names the holder's run: {err}");
    let r = w.results(&run_id);
    assert_eq!(r.outcome, Outcome::LockTimeout);
    assert_eq!(r.teardown.result, TeardownResult::Skipped, "{r:?}");
    assert!(holders(&lock).contains(&h.pid()));
    assert!(!w.abra_log().contains("app new"));
}

#[test]
fn ccci_locks_shows_holder_pid_and_run_id() {
    let w = parking_world();
    let run = park_run(&w);
    let other = lock_path(&w, &w.domain("other", "0", ""));
    let py = py_holder(&other, None);
    let free = lock_path(&w, &w.domain("free", "0", ""));
    fs::write(&free, "").unwrap();
    let o = w.run(&["locks", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let v: LocksOut = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.schema, 1);
    let find = |d: String| v.locks.iter().find(|l| l.domain == d).unwrap_or_else(|| panic!("{d} in {v:?}"));
    let mine = find(w.domain("hello", "0", ""));
    assert_eq!(mine.state, Seen::Held);
    assert_eq!(mine.holder_pids, [run.pid()]);
    let holder = mine.holder.as_ref().expect("ccci wrote its holder info");
    assert_eq!(
        (holder.run_id.as_str(), holder.pid, holder.recipe.as_str()),
        (run.run_id.as_str(), run.pid() as u32, "hello")
    );
    assert_eq!(mine.stack_exists, Some(false));
    assert!(mine.run_app);
    assert!(mine.age_secs.unwrap() < 300);
    let theirs = find(w.domain("other", "0", ""));
    assert_eq!((theirs.state, theirs.holder_pids.clone()), (Seen::Held, vec![py.pid()]));
    assert!(theirs.holder.is_none(), "python wrote no holder info");
    assert_eq!(find(w.domain("free", "0", "")).state, Seen::Free);
    // The table carries the same facts.
    let o = w.run(&["locks"]);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    let row = table.lines().find(|l| l.starts_with(&w.domain("hello", "0", ""))).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" held ") && row.contains(&run.pid().to_string()) && row.contains(&run.run_id), "{table}");
    assert!(table.lines().next().unwrap().starts_with("DOMAIN"), "{table}");
    drop(py);
    assert_eq!(run.stop(), 143);
}

#[test]
fn ccci_locks_never_takes_a_lock() {
    let w = parking_world();
    let lock = hello_lock(&w);
    fs::create_dir_all(&w.lock_dir).unwrap();
    fs::write(&lock, "").unwrap();
    // With strace at hand, the proof is direct: no flock(2) call at all.
    if Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success()) {
        let trace = w.path().join("strace.out");
        let mut c = w.ccci();
        c.env_remove("PATH").env("PATH", std::env::var("PATH").unwrap());
        let mut s = Command::new("strace");
        s.args(["-f", "-e", "trace=flock,fcntl", "-o"]).arg(&trace).arg(CCCI).arg("locks");
        for (k, v) in c.get_envs() {
            if let Some(v) = v {
                s.env(k, v);
            }
        }
        s.env("CCCI_CONFIG", "/dev/null");
        let o = s.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let t = fs::read_to_string(&trace).unwrap();
        assert!(!t.contains("flock("), "ccci locks called flock(2):\n{t}");
        assert!(!t.contains("F_SETLK") && !t.contains("F_OFD_SETLK"), "ccci locks took a POSIX lock:\n{t}");
    }
    // Statistically too: while `ccci locks` loops, non-blocking tries never fail. The tries run
    // in their own process: a try from this one could leak into a child forked meanwhile (the
    // fork shares the open file description until exec closes it).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looper = {
        let stop = stop.clone();
        let mut base = w.ccci();
        base.arg("locks");
        let args: Vec<String> = base.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let envs: Vec<(String, String)> = base
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned())))
            .collect();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let st = Command::new(CCCI)
                    .args(&args)
                    .env_clear()
                    .envs(envs.clone())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success());
                n += 1;
            }
            n
        })
    };
    let py = "import fcntl,os,sys,time\nend=time.time()+1.5\nok=bad=0\nwhile time.time()<end:\n fd=os.open(sys.argv[1],os.O_RDONLY)\n try:\n  fcntl.flock(fd,fcntl.LOCK_EX|fcntl.LOCK_NB); ok+=1\n except BlockingIOError:\n  bad+=1\n os.close(fd)\nprint(ok,bad)";
    let o = Command::new("python3").args(["-c", py]).arg(&lock).output().unwrap();
    let counts = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (ok, bad) = counts.split_once(' ').unwrap_or_else(|| panic!("{counts:?}"));
    assert_eq!(bad, "0", "non-blocking tries failed while only `ccci locks` ran ({ok} succeeded)");
    let tries: u64 = ok.parse().unwrap();
    // And a run started meanwhile sees no phantom holder.
    let run = park_run(&w);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let loops = looper.join().unwrap();
    assert!(loops >= 3 && tries > 100, "{loops} loops, {tries} tries");
    assert!(!run.err.text().contains("in flight"), "phantom holder: {}", run.err.text());
    assert_eq!(run.stop(), 143);
}

#[test]
fn a_run_cancelled_while_waiting_tears_nothing_down() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("hello");
    w.own_port("hello");
    // The holder parks in its custom test until the test lets it go.
    let gate = w.parked_test("hello");
    let lock = hello_lock(&w);
    let mut first = start_run(&w, "install,custom", &[]);
    first.err.wait_for("parked-in-test", Duration::from_secs(120));
    let stack = w.stack("hello");
    let services = || {
        let o = Command::new("docker")
            .args(["service", "ls", "--filter", &format!("label=com.docker.stack.namespace={stack}"), "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    assert!(services() > 0);

    let mut second = start_run(&w, "install", &[]);
    second.err.wait_for("is in flight", Duration::from_secs(60));
    wait_until("the second run to block", Duration::from_secs(10), || waiters(&lock).contains(&second.pid()));
    let second_id = second.run_id.clone();
    signal(second.child.id(), libc::SIGTERM);
    let st = wait_within(&mut second.child, Duration::from_secs(30));
    assert_eq!(st.code(), Some(143), "{}", second.err.text());
    let r = w.results(&second_id);
    assert_eq!(r.teardown.result, TeardownResult::Skipped, "{r:?}");
    assert_eq!(r.outcome, Outcome::Cancelled);
    let log = w.abra_log();
    assert!(!log.contains("undeploy") && !log.contains("app remove"), "the cancelled waiter touched the app:\n{log}");
    assert!(services() > 0, "the holder's app was torn down by the cancelled waiter");
    assert_eq!(holders(&lock), vec![first.pid()]);

    fs::write(&gate, "").unwrap();
    let st = wait_within(&mut first.child, Duration::from_secs(120));
    assert_eq!(st.code(), Some(0), "{}", first.err.text());
    assert_eq!(w.results(&first.run_id).outcome, Outcome::Pass);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// Issue 15.3: a run waiting on the lock says so every 30 s after the first 10 s — elapsed,
/// limit and the holder — and its `status.json` carries the wait for the dashboard.
#[test]
fn a_long_lock_wait_beats_in_the_log_and_in_status_json() {
    let w = parking_world();
    let holder = park_run(&w);
    let waiter = start_run(&w, "install", &["--lock-timeout", "600"]);
    waiter.err.wait_for("is in flight", Duration::from_secs(60));
    let d = w.domain("hello", "0", "");
    waiter.err.wait_for(&format!("still waiting for the app lock of {d}"), Duration::from_secs(30));
    let text = waiter.err.text();
    let line = text.lines().find(|l| l.contains("still waiting for the app lock")).unwrap();
    assert!(line.contains("of 10m0s") && line.contains(&holder.run_id), "elapsed of limit, and the holder: {line}");
    let status = w.run_dir(&waiter.run_id).join("status.json");
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&status).unwrap()).unwrap();
    assert_eq!(v["outcome"], "running", "{v}");
    assert_eq!(v["waiting"]["for"], format!("the app lock of {d}"), "{v}");
    assert_eq!(v["waiting"]["limit_secs"], 600, "{v}");
    assert!(v["waiting"]["elapsed_secs"].as_u64().unwrap() >= 10, "{v}");
    assert_eq!(waiter.stop(), 143);
    assert_eq!(holder.stop(), 143);
}
