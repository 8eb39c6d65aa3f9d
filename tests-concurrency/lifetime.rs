//! Lifetime (§4, issue 4): the orphan guard, the parent-death signal, the teardown funnel, the
//! deadline and the teardown budget, second and third signals, adopted descendants — with real
//! prctl, signals, alarm and processes, the fixture abra and (where a deploy is needed) the real
//! swarm.
//!
//! Every test synchronises on observable events — the fixture abra's event log, ccci's stderr
//! and run.log, pids gone — never on sleeps; every process a test starts is reaped by the test,
//! and at the end no process carrying the run's `CCCI_RUN_TOKEN` remains.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ccci::exit::Outcome;
use ccci::report::{Status, TeardownResult};

use crate::common::*;

const SIGTERM: i32 = libc::SIGTERM;
const SIGINT: i32 = libc::SIGINT;
const SIGHUP: i32 = libc::SIGHUP;
const SIGQUIT: i32 = libc::SIGQUIT;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---- helpers ------------------------------------------------------------------------------

/// One line of the fixture abra's event log: `start|end|hang|escape <pid> <rest>`.
#[derive(Debug, Clone)]
struct Ev {
    kind: String,
    pid: i32,
    rest: String,
}

fn events(w: &World) -> Vec<Ev> {
    w.abra_log()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            Some(Ev {
                kind: f.next()?.to_string(),
                pid: f.next()?.parse().ok()?,
                rest: f.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Index and event of the first `kind` event whose words start with `words`.
fn find_ev(w: &World, kind: &str, words: &str) -> Option<(usize, Ev)> {
    events(w).into_iter().enumerate().find(|(_, e)| e.kind == kind && e.rest.starts_with(words))
}

fn wait_ev(w: &World, kind: &str, words: &str, within: Duration) -> (usize, Ev) {
    wait_until(&format!("abra log event `{kind} … {words}`"), within, || find_ev(w, kind, words).is_some());
    find_ev(w, kind, words).unwrap()
}

/// Live processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    ccci::process::group::live_members(pgid)
}

fn ppid_of(pid: i32) -> Option<i32> {
    ccci::process::procfs::read_stat(pid).map(|s| s.ppid)
}

/// The live ccci process of run `id` (found by its environment and its name).
fn ccci_pids(id: &str) -> Vec<i32> {
    pids_with_env(&format!("CCCI_RUN_ID={id}")).into_iter().filter(|p| comm_is(*p, "ccci")).collect()
}

/// Every process a run started carries its token; none may outlive the run.
fn assert_no_stragglers(id: &str) {
    let needle = format!("CCCI_RUN_TOKEN={id}:");
    // A process that got SIGKILL may take a moment to be gone from /proc's point of view.
    let end = Instant::now() + secs(5);
    while !pids_with_env(&needle).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = pids_with_env(&needle);
    if !left.is_empty() {
        for p in &left {
            signal(*p as u32, libc::SIGKILL);
        }
        panic!("processes of run {id} outlived it: {left:?}");
    }
}

fn lock_path(w: &World, recipe: &str) -> PathBuf {
    w.lock_dir.join(format!("cc-ci-app-{}.lock", w.domain(recipe, "0", "")))
}

/// The app lock is free: the lockfile is gone, or nobody holds it (a real non-blocking flock).
fn lock_free(path: &Path) -> bool {
    match fs::File::open(path) {
        Err(_) => true,
        Ok(f) => f.try_lock().is_ok(),
    }
}

fn run_log(w: &World, id: &str) -> String {
    fs::read_to_string(w.run_dir(id).join("run.log")).unwrap_or_default()
}

/// Index of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle))
}

/// A command with the world's clean environment, for a program other than ccci.
fn like_ccci(w: &World, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let base = w.ccci();
    let mut c = Command::new(program);
    c.env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.stdin(Stdio::null());
    c
}

fn spawn_run(mut c: Command, id: &str, args: &[&str]) -> (Child, LineWatch) {
    c.env("CCCI_RUN_ID", id).args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let watch = LineWatch::stderr_of(&mut child);
    (child, watch)
}

/// A run id that cleans up after a failing test: when the test panics, every ccci of the run
/// and every process carrying its token is SIGKILLed (the world's Drop then removes its stack).
struct RunId(String);

impl std::ops::Deref for RunId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for RunId {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_ref()
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for RunId {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in ccci_pids(&self.0).into_iter().chain(pids_with_env(&format!("CCCI_RUN_TOKEN={}:", self.0))) {
                signal(p as u32, libc::SIGKILL);
            }
        }
    }
}

fn run_id() -> RunId {
    RunId(format!("lt{}", unique()))
}

/// A world whose `recipe` gets its own host port and the given deploy timeout.
fn swarm_world(recipe: &str, deploy_timeout: u64) -> World {
    let w = World::new();
    w.recipe(recipe);
    w.trusted(
        recipe,
        "ccci.yml",
        &format!("extra_env: {{ HTTP_PORT: \"{}\" }}\ntimeouts: {{ deploy: {deploy_timeout} }}\n", free_port()),
        false,
    );
    w
}

/// Removes what a run left on purpose (abandoned or exited at once): the fixture abra itself,
/// without any misbehaviour, then checks nothing of the world remains.
fn cleanup_app(w: &World, recipe: &str) {
    let domain = w.domain(recipe, "0", "");
    for args in [vec!["app", "undeploy", "-n", &domain], vec!["app", "remove", "-n", "-f", &domain]] {
        let _ = Command::new(repo_root().join("fixtures/abra"))
            .args(&args)
            .env("ABRA_DIR", &w.abra_home)
            .env_remove("FIXTURE_ABRA_MODE")
            .env_remove("FIXTURE_ABRA_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    assert_clean(w);
}

fn assert_clean(w: &World) {
    let end = Instant::now() + secs(60);
    while !w.leftovers().is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(w.leftovers().is_empty(), "leftovers: {:?}", w.leftovers());
}

fn code_of(st: std::process::ExitStatus) -> i32 {
    st.code().unwrap_or(-1)
}

// ---- 1. the Drone cancel path ---------------------------------------------------------------

/// Reads a child's stderr until told to let go, then closes the read end: a CI runner that stops
/// draining a cancelled step (ccci's later writes to stderr fail with EPIPE).
struct Drain {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    close: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drain {
    fn stderr_of(child: &mut Child) -> Drain {
        use std::io::Read;
        let mut err = child.stderr.take().unwrap();
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let close = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, c) = (text.clone(), close.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !c.load(std::sync::atomic::Ordering::SeqCst) {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => t.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
            // `err` drops here: the pipe's only read end is closed.
        });
        Drain { text, close }
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    fn let_go(&self) {
        self.close.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Drone cancels by SIGKILLing the step shell `/bin/sh -e <script>` and nothing else. With the
/// step line `exec ci/drone-step.sh`, that shell is ccci's parent: its death fires PDEATHSIG
/// (SIGTERM), and ccci tears down on its own — nobody waits for it, and (first case) nobody reads
/// its stderr any more.
///
/// - dash, `sick`: killed while ccci waits for readiness of the real deployed stack; the test
///   closes the stderr pipe after the kill. Teardown undeploys and removes the stack.
/// - bash, `hello`: killed while abra hangs in `app deploy`; teardown removes what `app new`
///   created.
#[test]
fn drone_cancel_sigkill_of_the_step_shell_tears_down() {
    if !swarm_available() {
        return;
    }
    for (shell, recipe, mode, close_stderr) in [("dash", "sick", "", true), ("bash", "hello", "hang:deploy", false)] {
        let _slot = (recipe == "sick").then(swarm_slot);
        let mut w = swarm_world(recipe, 300);
        w.abra_mode(mode);
        let id = run_id();
        let script = w.path().join("step.sh");
        fs::write(
            &script,
            format!("exec '{}' --recipe {recipe} --stages install\n", repo_root().join("ci/drone-step.sh").display()),
        )
        .unwrap();
        let mut c = like_ccci(&w, shell);
        c.arg("-e")
            .arg(&script)
            .env("CCCI_BIN", CCCI)
            .env("CCCI_RUN_ID", &id)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut step = c.spawn().unwrap();
        let drain = Drain::stderr_of(&mut step);
        let hang = if mode.is_empty() {
            wait_until("readiness polls (`not ready yet`)", secs(120), || drain.text().contains("not ready yet"));
            None
        } else {
            Some(wait_ev(&w, "hang", "app deploy", secs(60)).1)
        };
        let ccci = ccci_pids(&id);
        assert_eq!(ccci.len(), 1, "{shell}: one ccci of run {id}: {ccci:?}");
        let ccci = ccci[0];
        assert_eq!(ppid_of(ccci), Some(step.id() as i32), "{shell}: the step shell is ccci's parent");
        assert!(!lock_free(&lock_path(&w, recipe)), "{shell}: the run holds its app lock");

        // The cancel: SIGKILL to the step shell only.
        step.kill().unwrap();
        step.wait().unwrap();
        if close_stderr {
            drain.let_go();
        }
        let mark = events(&w).len();
        wait_until(&format!("{shell}: ccci {ccci} to exit after its parent's death"), secs(120), || !alive(ccci));

        let log = w.abra_log();
        let after: Vec<Ev> = events(&w).split_off(mark);
        let started = |words: &str| after.iter().position(|e| e.kind == "start" && e.rest.starts_with(words));
        let remove = started("app remove").unwrap_or_else(|| panic!("{shell}: no `app remove` after the kill:\n{log}"));
        if hang.is_none() {
            let undeploy =
                started("app undeploy").unwrap_or_else(|| panic!("{shell}: no undeploy after the kill:\n{log}"));
            assert!(undeploy < remove, "{shell}: {log}");
        }
        if let Some(h) = &hang {
            assert!(!alive(h.pid), "{shell}: the hanging deploy is gone");
        }
        let r = w.results(&id);
        assert_eq!(r.exit_code, 143, "{shell}: {r:?}");
        assert_eq!(r.outcome, Outcome::Cancelled);
        assert_eq!(r.teardown.result, TeardownResult::Clean, "{shell}: {r:?}");
        let text = run_log(&w, &id);
        assert!(text.contains("parent process exited (parent-death signal SIGTERM)"), "{shell}: {text}");
        assert!(lock_free(&lock_path(&w, recipe)), "{shell}: the app lock is free");
        assert_clean(&w);
        assert_no_stragglers(&id);
    }
}

/// The wrapper's own contract: it passes its args to `ccci run`, exits with ccci's code (a green
/// run stays green under `set -e`), and a TERM of the shell is forwarded to ccci's group while
/// the shell keeps waiting for ccci to finish its teardown.
#[test]
fn drone_wrapper_forwards_term_and_keeps_ccci_exit_code() {
    let wrapper = repo_root().join("ci/drone-step.sh");
    for shell in ["dash", "bash"] {
        let w = World::new();
        // Green: `ccci run --help` exits 0. Under `sh -e` the step stays green whether the wrapper
        // is called, exec'd, or inlined (sourced: its traps are the step shell's traps).
        let w_path = wrapper.display();
        for (form, body, stdout) in [
            ("called", format!("'{w_path}' --help >/dev/null\necho after-wrapper\n"), "after-wrapper"),
            ("exec", format!("exec '{w_path}' --help >/dev/null\n"), ""),
            ("inlined", format!("set -- --help\n. '{w_path}' >/dev/null\necho not-reached\n"), ""),
        ] {
            let script = w.path().join("green.sh");
            fs::write(&script, body).unwrap();
            let mut c = like_ccci(&w, shell);
            c.arg("-e").arg(&script).env("CCCI_BIN", CCCI);
            let o = output_within(c, secs(30));
            assert_eq!(code(&o), 0, "{shell} {form}: {}", stderr_of(&o));
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), stdout, "{shell} {form}");
        }

        // Red: a failing run's code comes through.
        let mut w = World::new();
        w.recipe("hello");
        w.abra_mode("fail:fetch");
        let mut c = like_ccci(&w, shell);
        c.arg("-e").arg(&wrapper).args(["--recipe", "hello"]).env("CCCI_BIN", CCCI);
        let o = output_within(c, secs(60));
        assert_eq!(code(&o), 1, "{shell}: {}", stderr_of(&o));

        // TERM to the shell: forwarded, and the shell waits for ccci's own exit code.
        let mut w = World::new();
        w.recipe("hello");
        w.abra_mode("hang:fetch");
        let id = run_id();
        let mut c = like_ccci(&w, shell);
        c.arg("-e").arg(&wrapper).args(["--recipe", "hello"]).env("CCCI_BIN", CCCI);
        let (mut sh, watch) = spawn_run(c, &id, &[]);
        let (_, hang) = wait_ev(&w, "hang", "recipe fetch", secs(60));
        let ccci = ccci_pids(&id)[0];
        signal(sh.id(), SIGTERM);
        let st = wait_within(&mut sh, secs(30));
        assert!(!alive(ccci), "{shell}: the wrapper exited only after ccci");
        assert_eq!(code_of(st), 143, "{shell}: {}", watch.text());
        assert!(watch.text().contains("received SIGTERM"), "{shell}: {}", watch.text());
        assert!(!alive(hang.pid));
        assert_eq!(w.results(&id).exit_code, 143);
        assert_no_stragglers(&id);
    }
}

// ---- 2. the orphan guard and CCCI_WATCH_PID -------------------------------------------------

fn assert_nothing_created(w: &World) {
    assert!(!w.runs_dir.exists(), "no runs dir");
    assert!(!w.lock_dir.exists(), "no lock dir");
    assert!(w.abra_log().is_empty(), "no abra call: {}", w.abra_log());
}

#[test]
fn orphan_guard_unexpected_parent_exits_3_and_creates_nothing() {
    let mut w = World::new();
    w.recipe("hello");
    w.abra_mode("fail:fetch");
    let mut c = w.ccci();
    // Our pid is the real parent; pid 1 is not.
    c.env("CCCI_EXPECT_PPID", "1").args(["run", "--recipe", "hello"]);
    let o = output_within(c, secs(30));
    assert_eq!(code(&o), 3, "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("CCCI_EXPECT_PPID is 1"), "{}", stderr_of(&o));
    assert_nothing_created(&w);

    // The matching parent passes the guard (and the run ends at the failing fetch).
    let mut c = w.ccci();
    c.env("CCCI_EXPECT_PPID", std::process::id().to_string()).args(["run", "--recipe", "hello"]);
    let o = output_within(c, secs(60));
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
}

/// ccci as the child of pid 1 — the init of a new pid namespace (`unshare -pf --mount-proc`), a
/// real pid 1 — is refused unless systemd started it or `--allow-orphan` says so.
#[test]
fn orphan_guard_parent_pid_1() {
    let probe = Command::new("unshare").args(["-pf", "--mount-proc", "true"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        panic!("unshare -pf --mount-proc is not available here ({probe:?}): cannot start ccci under a real pid 1");
    }
    let cases: [(&str, Option<&str>, &[&str], i32); 3] = [
        ("no INVOCATION_ID", None, &[], 3),
        ("INVOCATION_ID set", Some("0123456789abcdef0123456789abcdef"), &[], 1),
        ("--allow-orphan", None, &["--allow-orphan"], 1),
    ];
    for (what, invocation, extra, want) in cases {
        let mut w = World::new();
        w.recipe("hello");
        w.abra_mode("fail:fetch");
        let mut c = like_ccci(&w, "unshare");
        // `; exit $?` keeps the shell (pid 1 of the namespace) as ccci's parent: no exec in place.
        c.args(["-pf", "--mount-proc", "sh", "-c", "\"$0\" \"$@\"; exit $?", CCCI, "run", "--recipe", "hello"])
            .args(extra);
        if let Some(v) = invocation {
            c.env("INVOCATION_ID", v);
        }
        let id = run_id();
        c.env("CCCI_RUN_ID", &id);
        let o = output_within(c, secs(60));
        assert_eq!(code(&o), want, "{what}: {}", stderr_of(&o));
        if want == 3 {
            assert!(stderr_of(&o).contains("parent pid is 1 outside systemd"), "{what}: {}", stderr_of(&o));
            assert_nothing_created(&w);
        } else {
            // It ran: the fetch was attempted and failed as scripted.
            assert!(find_ev(&w, "start", "recipe fetch").is_some(), "{what}: {}", w.abra_log());
            assert!(w.runs_dir.exists());
            assert_eq!(w.results(&id).exit_code, 1);
        }
        assert_no_stragglers(&id);
    }
}

/// `CCCI_WATCH_PID`: the death of the watched process starts the funnel like the parent's.
#[test]
fn watched_pid_death_starts_the_funnel() {
    let mut w = World::new();
    w.recipe("hello");
    w.abra_mode("hang:fetch");
    let mut helper = Command::new("sleep").arg("1000").stdin(Stdio::null()).spawn().unwrap();
    let id = run_id();
    let mut c = w.ccci();
    c.env("CCCI_WATCH_PID", helper.id().to_string());
    let (mut ccci, watch) = spawn_run(c, &id, &["run", "--recipe", "hello"]);
    let (_, hang) = wait_ev(&w, "hang", "recipe fetch", secs(60));
    assert!(alive(ccci.id() as i32));
    helper.kill().unwrap();
    helper.wait().unwrap();
    let st = wait_within(&mut ccci, secs(30));
    assert_eq!(code_of(st), 143, "{}", watch.text());
    let text = watch.text();
    assert!(text.contains(&format!("watched pid {} (CCCI_WATCH_PID) exited", helper.id())), "{text}");
    assert!(!alive(hang.pid));
    assert_eq!(w.results(&id).outcome, Outcome::Cancelled);
    assert_no_stragglers(&id);
}

// ---- 3. signals while abra hangs --------------------------------------------------------------

/// SIGTERM while abra hangs in deploy: its whole process group is gone within the grace, the
/// teardown removes the app (the real swarm objects `app new` made), exit 143.
#[test]
fn sigterm_mid_deploy_kills_the_group_and_tears_down() {
    if !swarm_available() {
        return;
    }
    let mut w = World::new();
    w.recipe("hello");
    w.abra_mode("hang:deploy");
    let id = run_id();
    let (mut ccci, watch) = spawn_run(w.ccci(), &id, &["run", "--recipe", "hello", "--stages", "install"]);
    let (_, hang) = wait_ev(&w, "hang", "app deploy", secs(60));
    // The hanging abra leads its own group; the fixture's sleep is in it.
    wait_until("the fixture's sleep in the deploy's group", secs(5), || group_members(hang.pid).len() >= 2);
    let members = group_members(hang.pid);
    assert!(!w.leftovers().is_empty(), "app new created the app's secrets and .env");

    let t = Instant::now();
    signal(ccci.id(), SIGTERM);
    // KILL_GRACE is 1 s: TERM, then KILL after the grace; allow scheduling slack on top.
    wait_until("the deploy's whole process group to be gone", secs(3), || members.iter().all(|p| !alive(*p)));
    let gone_after = t.elapsed();
    let st = wait_within(&mut ccci, secs(120));
    assert_eq!(code_of(st), 143, "{}", watch.text());

    let ev = events(&w);
    let hang_at = ev.iter().position(|e| e.kind == "hang").unwrap();
    let end_at = ev.iter().position(|e| e.kind == "end" && e.pid == hang.pid).expect("the deploy's end line");
    let remove_at = ev.iter().position(|e| e.kind == "start" && e.rest.starts_with("app remove")).expect("app remove");
    assert!(hang_at < end_at && end_at < remove_at, "deploy stopped before teardown: {ev:?}");
    assert!(ev[end_at].rest.ends_with("rc=143"), "TERM ended the deploy: {:?}", ev[end_at]);
    let r = w.results(&id);
    assert_eq!(r.teardown.result, TeardownResult::Clean, "{r:?}");
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert_eq!(r.stages[0].status, Status::Unver);
    assert!(lock_free(&lock_path(&w, "hello")));
    assert_clean(&w);
    assert_no_stragglers(&id);
    eprintln!("deploy group gone {gone_after:?} after SIGTERM");
}

/// The other signals of the funnel, each with its exit code, while abra hangs in the fetch (no
/// swarm needed); and an abra that ignores SIGTERM is SIGKILLed after the grace.
#[test]
fn each_signal_cancels_with_its_exit_code() {
    let cases = [
        (SIGTERM, "SIGTERM", 143, "hang:fetch"),
        (SIGINT, "SIGINT", 130, "hang:fetch"),
        (SIGHUP, "SIGHUP", 143, "hang:fetch"),
        (SIGQUIT, "SIGQUIT", 130, "hang:fetch"),
        (SIGTERM, "SIGTERM", 143, "ignore-term:fetch"),
    ];
    for (sig, name, want, mode) in cases {
        let mut w = World::new();
        w.recipe("hello");
        w.abra_mode(mode);
        let id = run_id();
        let (mut ccci, watch) = spawn_run(w.ccci(), &id, &["run", "--recipe", "hello"]);
        let (_, hang) = wait_ev(&w, "hang", "recipe fetch", secs(60));
        wait_until("the fixture's sleep", secs(5), || group_members(hang.pid).len() >= 2);
        let members = group_members(hang.pid);
        signal(ccci.id(), sig);
        let st = wait_within(&mut ccci, secs(30));
        assert_eq!(code_of(st), want, "{name} ({mode}): {}", watch.text());
        let text = watch.text();
        assert!(text.contains(&format!("received {name}: cancelling the run")), "{name}: {text}");
        assert!(members.iter().all(|p| !alive(*p)), "{name} ({mode}): the fetch's group is gone: {members:?}");
        let r = w.results(&id);
        assert_eq!(i32::from(r.exit_code), want);
        assert_eq!(r.outcome, Outcome::Cancelled);
        let end = find_ev(&w, "end", "recipe fetch");
        if mode.starts_with("ignore-term") {
            // TERM was ignored: only SIGKILL, after the grace, ended it (no `end` line).
            assert!(end.is_none(), "{:?}", end);
            assert!(text.contains("SIGTERM, 1.0s grace, SIGKILL"), "{text}");
        } else {
            // Whatever the cause, the child's group gets SIGTERM first: the fixture's TERM trap ran.
            assert!(end.as_ref().is_some_and(|(_, e)| e.rest.ends_with("rc=143")), "{name}: {end:?}");
        }
        assert_no_stragglers(&id);
    }
}

// ---- 4. the deadline --------------------------------------------------------------------------

#[test]
fn deadline_stops_a_hanging_step_and_tears_down() {
    if !swarm_available() {
        return;
    }
    let mut w = World::new();
    w.recipe("hello");
    w.abra_mode("hang:deploy");
    let id = run_id();
    let (mut ccci, watch) =
        spawn_run(w.ccci(), &id, &["run", "--recipe", "hello", "--stages", "install", "--deadline", "3"]);
    let st = wait_within(&mut ccci, secs(60));
    let text = watch.text();
    assert_eq!(code_of(st), 142, "{text}");
    assert!(text.contains("run exceeded its 0m3s deadline"), "{text}");
    let (hang_at, _) = find_ev(&w, "hang", "app deploy").expect("the deploy hung");
    let (remove_at, _) = find_ev(&w, "start", "app remove").expect("teardown removed the app");
    assert!(hang_at < remove_at);
    let r = w.results(&id);
    assert_eq!(r.outcome, Outcome::Deadline);
    assert_eq!(r.exit_code, 142);
    assert_eq!(r.teardown.result, TeardownResult::Clean, "{r:?}");
    assert!(r.stages[0].reason.as_deref().unwrap_or("").contains("deadline"), "{r:?}");
    assert!(lock_free(&lock_path(&w, "hello")));
    assert_clean(&w);
    assert_no_stragglers(&id);
}

// ---- 5. second and third signals during teardown ---------------------------------------------

/// Starts a `sick` run (deployed, never ready) and waits until it polls readiness.
fn sick_run(w: &World, id: &str, extra: &[&str]) -> (Child, LineWatch) {
    let mut args = vec!["run", "--recipe", "sick", "--stages", "install"];
    args.extend_from_slice(extra);
    let (child, watch) = spawn_run(w.ccci(), id, &args);
    watch.wait_for("not ready yet", secs(120));
    (child, watch)
}

#[test]
fn second_sigterm_does_not_interrupt_a_slow_teardown() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut w = swarm_world("sick", 300);
    w.abra_mode("slow=4:undeploy");
    let id = run_id();
    let (mut ccci, watch) = sick_run(&w, &id, &[]);
    signal(ccci.id(), SIGTERM);
    let (_, undeploy) = wait_ev(&w, "start", "app undeploy", secs(30));
    signal(ccci.id(), SIGTERM);
    watch.wait_for("received SIGTERM during teardown: ignored, teardown continues", secs(10));
    let st = wait_within(&mut ccci, secs(120));
    assert_eq!(code_of(st), 143, "{}", watch.text());
    let ev = events(&w);
    let end = ev.iter().find(|e| e.kind == "end" && e.pid == undeploy.pid).expect("undeploy ended");
    assert!(end.rest.ends_with("rc=0"), "the undeploy ran to its end: {end:?}");
    assert!(find_ev(&w, "start", "app remove").is_some());
    let r = w.results(&id);
    assert_eq!(r.teardown.result, TeardownResult::Clean, "{r:?}");
    assert_eq!(r.exit_code, 143);
    assert!(lock_free(&lock_path(&w, "sick")));
    assert_clean(&w);
    assert_no_stragglers(&id);
}

/// A person pressing Ctrl-C: the first starts the funnel, the second kills the running teardown
/// step (teardown moves on to the next one), the third exits at once.
#[test]
fn second_sigint_skips_a_teardown_step_and_third_exits_at_once() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut w = swarm_world("sick", 300);
    w.abra_mode("slow=300:undeploy,slow=300:remove");
    let id = run_id();
    let (mut ccci, watch) = sick_run(&w, &id, &[]);
    signal(ccci.id(), SIGINT);
    let (_, undeploy) = wait_ev(&w, "start", "app undeploy", secs(30));
    let undeploy_group = group_members(undeploy.pid);

    signal(ccci.id(), SIGINT);
    watch.wait_for("stopping the current teardown step and moving on", secs(10));
    let (_, remove) = wait_ev(&w, "start", "app remove", secs(10));
    assert!(undeploy_group.iter().all(|p| !alive(*p)), "the undeploy was killed: {undeploy_group:?}");
    assert!(
        events(&w).iter().all(|e| !(e.kind == "end" && e.pid == undeploy.pid && e.rest.ends_with("rc=0"))),
        "the undeploy did not finish normally"
    );
    assert!(alive(ccci.id() as i32), "teardown goes on");
    let remove_group = group_members(remove.pid);

    signal(ccci.id(), SIGINT);
    // At once: long before the 300 s the remove would sleep, and without waiting for a grace.
    let st = wait_within(&mut ccci, secs(10));
    assert_eq!(code_of(st), 130, "{}", watch.text());
    assert!(watch.text().contains("third interrupt: exiting at once"), "{}", watch.text());
    assert!(remove_group.iter().all(|p| !alive(*p)), "the remove was killed on the way out: {remove_group:?}");
    assert!(lock_free(&lock_path(&w, "sick")), "exiting released the lock");
    assert_no_stragglers(&id);
    // The app stays for the janitor; here the test cleans it up.
    cleanup_app(&w, "sick");
}

// ---- 6. the teardown budget -------------------------------------------------------------------

fn assert_abandoned(w: &World, id: &str, recipe: &str, text: &str) {
    let domain = w.domain(recipe, "0", "");
    assert!(
        text.contains(&format!(
            "teardown abandoned: {domain} may remain; the janitor will reap it once this run's lock is released"
        )),
        "{text}"
    );
    // The main thread ended the run itself (not the signal thread's fallback exit).
    assert!(!text.contains("did not exit"), "{text}");
    let r = w.results(id);
    assert_eq!(r.teardown.result, TeardownResult::Abandoned, "{r:?}");
    assert!(lock_free(&lock_path(w, recipe)), "the app lock is free once the process exited");
    let (_, undeploy) = find_ev(w, "hang", "app undeploy").expect("the undeploy hung");
    assert!(!alive(undeploy.pid), "the hanging undeploy was killed");
}

#[test]
fn budget_abandons_a_wedged_teardown_after_a_signal() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut w = swarm_world("sick", 300);
    w.abra_mode("hang:undeploy");
    let id = run_id();
    let (mut ccci, watch) = sick_run(&w, &id, &["--teardown-budget", "3"]);
    signal(ccci.id(), SIGTERM);
    wait_ev(&w, "hang", "app undeploy", secs(30));
    let st = wait_within(&mut ccci, secs(60));
    assert_eq!(code_of(st), 143, "{}", watch.text());
    assert_abandoned(&w, &id, "sick", &watch.text());
    assert_eq!(w.results(&id).outcome, Outcome::Cancelled);
    assert_no_stragglers(&id);
    cleanup_app(&w, "sick");
}

/// The budget bounds every teardown, not only cancelled ones: the stages pass, then the undeploy
/// wedges → abandoned, exit 4 (`pass` with the teardown saying so).
#[test]
fn budget_abandons_a_wedged_teardown_after_passing_stages() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut w = swarm_world("hello", 60);
    w.abra_mode("hang:undeploy");
    let id = run_id();
    let (mut ccci, watch) =
        spawn_run(w.ccci(), &id, &["run", "--recipe", "hello", "--stages", "install", "--teardown-budget", "3"]);
    let st = wait_within(&mut ccci, secs(180));
    assert_eq!(code_of(st), 4, "{}", watch.text());
    assert_abandoned(&w, &id, "hello", &watch.text());
    let r = w.results(&id);
    assert_eq!(r.outcome, Outcome::Pass, "{r:?}");
    assert_eq!(r.stages[0].status, Status::Pass, "{r:?}");
    assert_no_stragglers(&id);
    cleanup_app(&w, "hello");
}

// ---- 7. escaped grandchildren -------------------------------------------------------------------

/// A grandchild that double-forks and calls setsid leaves its process group; the subreaper makes
/// it ccci's child again, and ccci kills it before exiting.
#[test]
fn escaped_grandchild_comes_back_and_is_killed() {
    let mut w = World::new();
    w.recipe("hello");
    w.abra_mode("escape:fetch,hang:new");
    let id = run_id();
    let (mut ccci, watch) = spawn_run(w.ccci(), &id, &["run", "--recipe", "hello", "--stages", "install"]);
    wait_ev(&w, "hang", "app new", secs(60));
    let (_, esc) = find_ev(&w, "escape", "").expect("escape line");
    let g: i32 = esc.rest.trim().parse().unwrap();
    assert!(alive(g), "the escaped grandchild runs");
    assert_eq!(ppid_of(g), Some(ccci.id() as i32), "adopted by ccci (subreaper)");
    assert_ne!(group_members(esc.pid), vec![g], "it left the fetch's group");
    signal(ccci.id(), SIGTERM);
    let st = wait_within(&mut ccci, secs(60));
    assert_eq!(code_of(st), 143, "{}", watch.text());
    // Once ccci is gone the grandchild would be init's: it must be dead already.
    assert!(!alive(g), "the escaped grandchild {g} outlived ccci");
    assert!(watch.text().contains("adopted descendant"), "{}", watch.text());
    assert_eq!(w.results(&id).teardown.result, TeardownResult::Clean);
    assert!(lock_free(&lock_path(&w, "hello")));
    assert_no_stragglers(&id);
}

// ---- 8. SIGKILL of ccci itself --------------------------------------------------------------------

/// A SIGKILLed ccci runs no code at all: its direct children die by their parent-death signal
/// (SIGKILL, armed in the spawn path). Grandchildren are not covered by that signal: the
/// fixture's sleep survives as init's child and is the janitor's straggler sweep's job (the
/// token marks it); the test reaps it itself.
#[test]
fn sigkill_of_ccci_kills_its_running_child() {
    let mut w = World::new();
    w.recipe("hello");
    w.abra_mode("hang:fetch");
    let id = run_id();
    let (mut ccci, _watch) = spawn_run(w.ccci(), &id, &["run", "--recipe", "hello"]);
    let (_, hang) = wait_ev(&w, "hang", "recipe fetch", secs(60));
    assert_eq!(ppid_of(hang.pid), Some(ccci.id() as i32));
    ccci.kill().unwrap();
    ccci.wait().unwrap();
    wait_until("the hanging abra to die by its parent-death signal", secs(5), || !alive(hang.pid));
    // The straggler the janitor would reap: anything else with the run's token.
    let needle = format!("CCCI_RUN_TOKEN={id}:");
    let left = pids_with_env(&needle);
    for p in &left {
        signal(*p as u32, libc::SIGKILL);
    }
    if !left.is_empty() {
        eprintln!("grandchildren left by the SIGKILLed run (janitor's job): {left:?}");
    }
    assert_no_stragglers(&id);
}

// ---- 9. cancel while waiting for readiness --------------------------------------------------------

#[test]
fn sigterm_during_readiness_starts_teardown_promptly() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let w = swarm_world("sick", 300);
    let id = run_id();
    let (mut ccci, watch) = sick_run(&w, &id, &[]);
    signal(ccci.id(), SIGTERM);
    let st = wait_within(&mut ccci, secs(120));
    assert_eq!(code_of(st), 143, "{}", watch.text());
    let log = run_log(&w, &id);
    let ready = line_of(&log, "not ready yet").expect("readiness polled");
    let cancel = line_of(&log, "received SIGTERM: cancelling the run").expect("cancel line");
    let banner = line_of(&log, "==== teardown ====").expect("teardown banner");
    let undeploy = line_of(&log, "app undeploy -n").expect("undeploy");
    assert!(
        ready < cancel && cancel < banner && banner < undeploy,
        "order: {ready} {cancel} {banner} {undeploy}\n{log}"
    );
    let ms = |i: usize| -> Option<i64> {
        let line = log.lines().nth(i)?;
        let ts = line.split_whitespace().next()?;
        // 2026-11-23T02:17:59.166Z
        let (hms, frac) = ts.get(11..23)?.split_once('.')?;
        let mut p = hms.split(':').map(|x| x.parse::<i64>().unwrap_or(0));
        Some(((p.next()? * 60 + p.next()?) * 60 + p.next()?) * 1000 + frac.parse::<i64>().ok()?)
    };
    if let (Some(a), Some(b)) = (ms(cancel), ms(banner)) {
        eprintln!("cancel → teardown banner: {} ms", b - a);
    }
    let r = w.results(&id);
    assert_eq!(r.teardown.result, TeardownResult::Clean, "{r:?}");
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert!(lock_free(&lock_path(&w, "sick")));
    assert_clean(&w);
    assert_no_stragglers(&id);
}

// ---- the spawn path --------------------------------------------------------------------------------

/// A child that ignores SIGTERM is SIGKILLed after the grace when ccci is cancelled.
#[test]
fn exec_step_kills_a_term_ignoring_child_after_the_grace() {
    let w = World::new();
    let mut c = w.ccci();
    c.args(["exec-step", "--", "sh", "-c", "trap '' TERM; echo pid=$$ >&2; sleep 100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ccci = c.spawn().unwrap();
    let mut stdout = ccci.stdout.take().unwrap();
    let watch = LineWatch::stderr_of(&mut ccci);
    // The command line is logged too (with a literal `pid=$$`): look for `pid=<digits>`.
    let pid_in = |text: &str| -> Option<i32> {
        text.split("pid=").skip(1).find_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
    };
    wait_until("the child's pid on stderr", secs(30), || pid_in(&watch.text()).is_some());
    let pid = pid_in(&watch.text()).unwrap();
    let members = {
        wait_until("the child's sleep", secs(5), || group_members(pid).len() >= 2);
        group_members(pid)
    };
    let t = Instant::now();
    signal(ccci.id(), SIGTERM);
    let st = wait_within(&mut ccci, secs(30));
    let took = t.elapsed();
    assert_eq!(code_of(st), 143, "{}", watch.text());
    assert!(members.iter().all(|p| !alive(*p)), "the whole group is gone: {members:?}");
    assert!(took >= Duration::from_millis(900), "SIGKILL came only after the 1 s grace ({took:?})");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["signal"], libc::SIGKILL, "{report}");
    assert!(report["stopped"].as_str().unwrap_or("").contains("cancelled"), "{report}");
    assert!(pids_with_env(&format!("CCCI_RUN_TOKEN=exec-step:{}:", ccci.id())).is_empty());
}
