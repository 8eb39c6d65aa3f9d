//! The test world: a real ccci binary, the fixture abra, a real swarm, and nothing shared with
//! other tests. Each world has its own lock dir, runs dir, abra home and domain suffix, so
//! janitors of parallel tests never see each other's apps.
#![allow(
    dead_code,
    reason = "shared by two test crates (integration and concurrency): each uses a different part, so `expect` would fail in one of them"
)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ccci::env_vars::Role;
use ccci::process::procfs;
use ccci::report::{Results, StageResult, Status};
use ccci::stage::Stage;

pub mod etcd;
pub mod netns;
mod watcher;
pub use watcher::Watcher;

pub const CCCI: &str = env!("CARGO_BIN_EXE_ccci");

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for names (suffixes, run ids, ports).
pub fn unique() -> u32 {
    std::process::id() * 100 + COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// A free TCP port on 127.0.0.1 (for host-mode published ports and local servers).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub struct World {
    pub root: tempfile::TempDir,
    pub abra_home: PathBuf,
    pub runs_dir: PathBuf,
    pub lock_dir: PathBuf,
    pub tests_dir: PathBuf,
    pub recipes: PathBuf,
    pub bin: PathBuf,
    pub secrets: PathBuf,
    pub abra_log: PathBuf,
    pub suffix: String,
    /// Variables set in ccci's environment.
    pub env: BTreeMap<String, String>,
    /// Host settings, written into the world's host config file (`<world>/ccci.env`): in `ccci
    /// run` host settings from the environment are refused unless they agree with the host.
    pub host: BTreeMap<String, String>,
    abra_mode: String,
}

impl World {
    pub fn new() -> World {
        let root = tempfile::Builder::new().prefix("ccci-world-").tempdir().unwrap();
        let p = root.path().to_path_buf();
        let w = World {
            abra_home: p.join("abra"),
            runs_dir: p.join("runs"),
            lock_dir: p.join("lock"),
            tests_dir: p.join("tests"),
            recipes: p.join("recipes"),
            bin: p.join("bin"),
            secrets: p.join("secrets"),
            abra_log: p.join("abra.log"),
            suffix: format!("w{}.test", unique()),
            env: BTreeMap::new(),
            host: BTreeMap::new(),
            abra_mode: String::new(),
            root,
        };
        fs::create_dir_all(w.abra_home.join("servers/default")).unwrap();
        // The preflight wants a catalogue clone in the abra home, as a real host has one.
        let st = Command::new(repo_root().join("fixtures/make-catalogue.sh"))
            .arg(w.abra_home.join("catalogue"))
            .status()
            .unwrap();
        assert!(st.success(), "make-catalogue.sh failed");
        for d in [&w.tests_dir, &w.recipes, &w.bin, &w.secrets] {
            fs::create_dir_all(d).unwrap();
        }
        w.write_abra_wrapper();
        w
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    fn write_abra_wrapper(&self) {
        let script = format!(
            "#!/bin/sh\nexport FIXTURE_RECIPES='{}' FIXTURE_ABRA_LOG='{}' FIXTURE_ABRA_MODE='{}'\nexec '{}' \"$@\"\n",
            self.recipes.display(),
            self.abra_log.display(),
            self.abra_mode,
            repo_root().join("fixtures/abra").display()
        );
        let path = self.bin.join("abra");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Scripted misbehaviours of the fixture abra, e.g. `hang:deploy` or `fail:new,chatty:fetch`.
    pub fn abra_mode(&mut self, mode: &str) -> &mut World {
        self.abra_mode = mode.to_string();
        self.write_abra_wrapper();
        self
    }

    /// A fixture recipe repository (built once per world) at `<world>/recipes/<name>`.
    pub fn recipe(&self, name: &str) -> PathBuf {
        let dest = self.recipes.join(name);
        if !dest.exists() {
            let st =
                Command::new(repo_root().join("fixtures/recipes/make-repo.sh")).arg(name).arg(&dest).status().unwrap();
            assert!(st.success(), "make-repo.sh {name} failed");
        }
        dest
    }

    /// A pull request against the fixture recipe `from`: a clone at `<world>/recipes/<name>`,
    /// changed by `edit` and committed on top of the default branch.
    pub fn pr_of(&self, from: &str, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
        let base = self.recipe(from);
        let pr = self.recipes.join(name);
        git(&self.recipes, &["clone", "-q", base.to_str().unwrap(), pr.to_str().unwrap()]);
        edit(&pr);
        git(&pr, &["add", "-A"]);
        git(&pr, &["commit", "-q", "-m", &format!("PR: {name}")]);
        pr
    }

    /// The fixture recipe `from` built under another recipe name (`TYPE=<name>` in every
    /// commit's `.env.sample`: abra deploys the recipe `TYPE` names).
    pub fn recipe_as(&self, from: &str, name: &str) -> PathBuf {
        let dest = self.recipes.join(name);
        let st = Command::new(repo_root().join("fixtures/recipes/make-repo.sh"))
            .arg(from)
            .arg(&dest)
            .arg(name)
            .status()
            .unwrap();
        assert!(st.success(), "make-repo.sh {from} as {name} failed");
        dest
    }

    /// Writes a trusted customisation file `<tests dir>/<recipe>/<rel>`.
    pub fn trusted(&self, recipe: &str, rel: &str, content: &str, executable: bool) -> PathBuf {
        let p = self.tests_dir.join(recipe).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        let mode = if executable { 0o755 } else { 0o644 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// A trusted `ccci.yml` giving `recipe` a host port of its own (host-mode ports collide
    /// between parallel apps) and a 60 s deploy timeout. Returns the port.
    pub fn own_port(&self, recipe: &str) -> u16 {
        let port = free_port();
        self.trusted(
            recipe,
            "ccci.yml",
            &format!("extra_env: {{ HTTP_PORT: \"{port}\" }}\ntimeouts: {{ deploy: 60 }}\n"),
            false,
        );
        port
    }

    /// A custom test `test_wait` that prints `parked-in-test` and waits until the returned gate
    /// file exists: a run parked there holds its app lock with its app deployed.
    pub fn parked_test(&self, recipe: &str) -> PathBuf {
        let gate = self.path().join("gate");
        self.trusted(
            recipe,
            "test_wait",
            &format!("#!/bin/sh\necho parked-in-test\nwhile [ ! -e '{}' ]; do sleep 0.1; done\n", gate.display()),
            true,
        );
        gate
    }

    /// Sets a variable: host settings go into the world's host file, anything else into ccci's
    /// environment.
    pub fn set(&mut self, k: &str, v: &str) -> &mut World {
        if ccci::env_vars::lookup(k).is_some_and(|e| matches!(e.role, Role::Host | Role::HostFile)) {
            self.host.insert(k.to_string(), v.to_string());
        } else {
            self.env.insert(k.to_string(), v.to_string());
        }
        self
    }

    /// The host config file every ccci of this world reads.
    pub fn host_file(&self) -> PathBuf {
        self.path().join("ccci.env")
    }

    fn write_host_file(&self) {
        let mut settings: BTreeMap<&str, String> = BTreeMap::from([
            ("CCCI_ABRA", self.bin.join("abra").display().to_string()),
            ("CCCI_ABRA_HOME", self.abra_home.display().to_string()),
            ("CCCI_RUNS_DIR", self.runs_dir.display().to_string()),
            ("CCCI_APP_LOCK_DIR", self.lock_dir.display().to_string()),
            ("CCCI_TESTS_DIR", self.tests_dir.display().to_string()),
            ("CCCI_SECRETS_DIR", self.secrets.display().to_string()),
            ("CCCI_DOMAIN_SUFFIX", self.suffix.clone()),
            ("CCCI_HEALTH_URL", "off".to_string()),
            ("CCCI_KILL_GRACE", "1".to_string()),
        ]);
        for (k, v) in &self.host {
            settings.insert(k, v.clone());
        }
        let text: String = settings.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        fs::write(self.host_file(), text).unwrap();
    }

    pub fn domain(&self, recipe: &str, pr: &str, git_ref: &str) -> String {
        ccci::names::app_domain(recipe, pr, git_ref, &self.suffix)
    }

    pub fn stack(&self, recipe: &str) -> String {
        ccci::names::stack_name(&self.domain(recipe, "0", ""))
    }

    /// The ccci command with a clean environment: PATH and the world's settings only
    /// (`INVOCATION_ID` and every other inherited variable that changes behaviour are gone).
    pub fn ccci(&self) -> Command {
        self.write_host_file();
        let mut c = Command::new(CCCI);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("LANG", "C.UTF-8")
            .env("CCCI_CONFIG", self.host_file())
            .env("CCCI_RUN_ID", format!("r{}", unique()))
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `ccci <args>` to completion (bounded), echoing its stderr for failing tests.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.ccci();
        c.args(args);
        output_within(c, Duration::from_secs(600))
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut c = self.ccci();
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    }

    pub fn abra_log(&self) -> String {
        fs::read_to_string(&self.abra_log).unwrap_or_default()
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs_dir.join(run_id)
    }

    /// The run's `results.json`, read into its real types; panics (naming the file and the
    /// error) when it is missing or is not one.
    pub fn results(&self, run_id: &str) -> Results {
        let path = self.run_dir(run_id).join("results.json");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not read into ccci::report::Results: {e}\n{text}", path.display()))
    }

    /// The run's `results.json` as raw JSON, for the few checks the types cannot make (a key's
    /// presence or absence).
    pub fn results_json(&self, run_id: &str) -> serde_json::Value {
        let path = self.run_dir(run_id).join("results.json");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", path.display()))
    }

    /// Every docker object and `.env` of the world's apps (should be empty after each test).
    pub fn leftovers(&self) -> Vec<String> {
        let ns = self.suffix.replace('.', "_");
        let mut out = docker_objects_matching(&ns);
        if let Ok(rd) = fs::read_dir(self.abra_home.join("servers/default")) {
            out.extend(rd.flatten().map(|e| format!("env:{}", e.file_name().to_string_lossy())));
        }
        out
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Best effort: never leave a stack of this world behind, even when a test failed.
        let ns = self.suffix.replace('.', "_");
        let left = docker_objects_matching(&ns);
        if !left.is_empty() {
            eprintln!("world cleanup: removing {left:?}");
            remove_docker_objects_matching(&ns);
        }
    }
}

/// `kind:name` of every docker object whose stack namespace ends with `suffix_ns`, and of
/// every unlabelled secret or config named `<stack>_…` of such a stack (abra's secrets carry
/// no stack label).
pub fn docker_objects_matching(suffix_ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    let label = "{{.Label \"com.docker.stack.namespace\"}}";
    for kind in ["volume", "secret", "config", "network"] {
        let o = Command::new("docker").args([kind, "ls", "--format", &format!("{{{{.Name}}}} {label}")]).output();
        if let Ok(o) = o {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let mut f = line.split_whitespace();
                let (Some(name), ns) = (f.next(), f.next()) else { continue };
                let ours = match ns {
                    Some(ns) => ns.ends_with(suffix_ns),
                    None => name.contains(&format!("_{suffix_ns}_")),
                };
                if ours {
                    out.push(format!("{kind}:{name}"));
                }
            }
        }
    }
    if let Ok(o) = Command::new("docker").args(["ps", "-a", "--format", &format!("{{{{.Names}}}} {label}")]).output() {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let mut f = line.split_whitespace();
            if let (Some(name), Some(ns)) = (f.next(), f.next())
                && ns.ends_with(suffix_ns)
            {
                out.push(format!("container:{name}"));
            }
        }
    }
    if let Ok(o) = Command::new("docker").args(["service", "ls", "--format", "{{.Name}}"]).output() {
        for name in String::from_utf8_lossy(&o.stdout).lines() {
            if name.contains(suffix_ns) {
                out.push(format!("service:{name}"));
            }
        }
    }
    out
}

fn remove_docker_objects_matching(suffix_ns: &str) {
    let objs = docker_objects_matching(suffix_ns);
    for o in objs.iter().filter(|o| o.starts_with("service:")) {
        let _ = Command::new("docker").args(["service", "rm", &o[8..]]).output();
    }
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end && docker_objects_matching(suffix_ns).iter().any(|o| o.starts_with("container:")) {
        for o in docker_objects_matching(suffix_ns).iter().filter(|o| o.starts_with("container:")) {
            let _ = Command::new("docker").args(["rm", "-f", &o[10..]]).output();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    for o in docker_objects_matching(suffix_ns) {
        let (kind, name) = o.split_once(':').unwrap();
        let _ = Command::new("docker").args([kind, "rm", name]).output();
    }
}

/// Waits for `child` at most `within`; kills and reaps it when it overstays (never leaks it).
pub fn wait_within(child: &mut Child, within: Duration) -> ExitStatus {
    let end = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let st = child.wait().unwrap();
            panic!("process {} did not exit within {within:?} (killed: {st:?})", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `CCCI_RUN_TOKEN=<run id>:` prefix every process of a run carries in its environment.
pub fn token_env(run_id: &str) -> String {
    format!("CCCI_RUN_TOKEN={run_id}:")
}

/// Kills whatever still carries one of these token prefixes ([`token_env`]) when the test ends,
/// even when it failed; a stopped process is continued first so it can die.
pub struct KillTokens(pub Vec<String>);

impl Drop for KillTokens {
    fn drop(&mut self) {
        for t in &self.0 {
            for pid in pids_with_env(t) {
                signal(pid as u32, libc::SIGCONT);
                signal(pid as u32, libc::SIGKILL);
            }
        }
    }
}

/// The entry of stage `s` in a `results.json`.
pub fn stage(r: &Results, s: Stage) -> &StageResult {
    r.stages.iter().find(|x| x.stage == s).unwrap_or_else(|| panic!("no stage {s} in {r:?}"))
}

/// The status of stage `s`.
pub fn status(r: &Results, s: Stage) -> Status {
    stage(r, s).status
}

/// The reason of stage `s` ("" when it has none).
pub fn reason(r: &Results, s: Stage) -> String {
    stage(r, s).reason.clone().unwrap_or_default()
}

/// The `ccci janitor --json` report on `stdout`, read into its real types; panics (naming the
/// error and what was printed) when it is not one.
pub fn janitor_report(stdout: &[u8]) -> ccci::janitor::report::Report {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("not a `ccci janitor --json` report ({e}):\n{}", String::from_utf8_lossy(stdout)))
}

/// A shell hook or test (`set -eu`), to be made executable.
pub fn script(body: &str) -> String {
    format!("#!/bin/sh\nset -eu\n{body}\n")
}

/// `git -C dir ARGS` with a test identity and no signing; fails the test when git fails.
/// Returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Runs a command to completion within a bound, collecting stdout and stderr.
pub fn output_within(mut c: Command, within: Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    output_of(c.spawn().unwrap(), within)
}

/// Collects the stdout and stderr of a child spawned with both piped (several children can be
/// started before any is waited on), waiting at most `within` for it to end.
pub fn output_of(mut child: Child, within: Duration) -> Output {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_within(&mut child, within);
    let stdout = t_out.join().unwrap();
    let stderr = t_err.join().unwrap();
    if !status.success() || std::env::var("CCCI_TEST_ECHO").is_ok() {
        eprintln!("---- ccci stderr ({status}) ----\n{}", String::from_utf8_lossy(&stderr));
    }
    Output { status, stdout, stderr }
}

/// Polls until `f` is true (an observable event), failing the test after `within`.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out after {within:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    procfs::read_stat(pid).is_some_and(|s| !s.is_dead())
}

/// Pids of live processes whose environment carries `needle` (e.g. a run token).
pub fn pids_with_env(needle: &str) -> Vec<i32> {
    procfs::all_processes()
        .into_iter()
        .filter(|p| !p.is_dead())
        .filter(|p| {
            procfs::environ(p.pid)
                .is_some_and(|env| env.split(|b| *b == 0).any(|kv| String::from_utf8_lossy(kv).contains(needle)))
        })
        .map(|p| p.pid)
        .collect()
}

/// Whether `pid`'s command name is `name` (after an exec, the new program's).
pub fn comm_is(pid: i32, name: &str) -> bool {
    procfs::comm(pid).is_some_and(|c| c == name)
}

/// At most two swarm deploys at once across every test binary: a slot is a real flock.
pub fn swarm_slot() -> File {
    loop {
        for i in 0..2 {
            let f = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(format!("/tmp/ccci-test-swarm-slot-{i}"))
                .unwrap();
            if f.try_lock().is_ok() {
                return f;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Both swarm slots, for a test that deploys two apps at once. Takers of two slots queue on a
/// lock of their own first: two of them each holding one slot and waiting for the other (two
/// suites running side by side) would wait forever.
pub fn swarm_slots_both() -> [File; 3] {
    let pair =
        fs::OpenOptions::new().create(true).truncate(false).write(true).open("/tmp/ccci-test-swarm-slot-pair").unwrap();
    pair.lock().unwrap();
    [pair, swarm_slot(), swarm_slot()]
}

/// The start of a test on the real swarm: `None` (skip) when there is no swarm and
/// `CCCI_SKIP_SWARM_TESTS=1`; otherwise one of the swarm slots, held while the returned file
/// lives, and a fresh world.
pub fn swarm_world() -> Option<(File, World)> {
    if !swarm_available() {
        return None;
    }
    let slot = swarm_slot();
    Some((slot, World::new()))
}

/// Fails with a clear message when dockerd is unreachable, unless `CCCI_SKIP_SWARM_TESTS=1`
/// (then the caller skips). Returns false when skipping.
pub fn swarm_available() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "active")
        .unwrap_or(false);
    if ok {
        return true;
    }
    if std::env::var("CCCI_SKIP_SWARM_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: no swarm (CCCI_SKIP_SWARM_TESTS=1)");
        return false;
    }
    panic!(
        "dockerd is unreachable or not a swarm manager: start it with `ci/swarm.sh up` (dockerd + `docker swarm init --advertise-addr 127.0.0.1`), or set CCCI_SKIP_SWARM_TESTS=1 to skip swarm tests"
    );
}

pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Sends a signal to a pid.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid and signal number; no memory is touched.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Reads a child's stderr in the background, so a test can wait for a marker line.
pub struct LineWatch {
    lines: std::sync::Arc<std::sync::Mutex<String>>,
}

impl LineWatch {
    pub fn stderr_of(child: &mut Child) -> LineWatch {
        LineWatch::of(child.stderr.take().unwrap())
    }

    pub fn stdout_of(child: &mut Child) -> LineWatch {
        LineWatch::of(child.stdout.take().unwrap())
    }

    pub fn of(mut err: impl Read + Send + 'static) -> LineWatch {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => l2.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        LineWatch { lines }
    }

    pub fn text(&self) -> String {
        self.lines.lock().unwrap().clone()
    }

    pub fn wait_for(&self, needle: &str, within: Duration) {
        wait_until(&format!("stderr line containing {needle:?}"), within, || self.text().contains(needle));
    }
}
