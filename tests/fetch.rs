//! Fetch (§7.2) from real git repositories, the token's scope, and masking.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use ccci::exit::Outcome;
use ccci::report::Status;

use crate::common::*;

/// Runs up to the fetch and stops at `abra app new` (fixture mode `fail:new`); returns the
/// recorded head commit.
fn fetched_head(w: &World, extra: &[&str]) -> String {
    let run_id = format!("f{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello", "--stages", "install"]).args(extra);
    let o = output_within(c, Duration::from_secs(120));
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    let r = w.results(&run_id);
    assert_eq!(r.stages[0].status, Status::Fail);
    assert!(r.stages[0].reason.as_deref().unwrap().contains("abra app new"), "{r:?}");
    r.head
}

#[test]
fn fetch_from_a_local_repository_at_a_branch_a_tag_and_a_commit() {
    let mut w = World::new();
    w.abra_mode("fail:new");
    let repo = w.recipe("hello");
    git(&repo, &["branch", "feature", "1.0.0+1"]);
    let src = repo.to_str().unwrap().to_string();
    let main_tip = git(&repo, &["rev-parse", "main"]);
    assert_eq!(fetched_head(&w, &["--src", &src]), main_tip, "default branch head");
    assert_eq!(fetched_head(&w, &["--src", &src, "--ref", "main"]), main_tip);
    let tag = git(&repo, &["rev-parse", "1.1.0+1^{commit}"]);
    assert_eq!(fetched_head(&w, &["--src", &src, "--ref", "1.1.0+1"]), tag);
    let commit = git(&repo, &["rev-parse", "main~2"]);
    assert_eq!(fetched_head(&w, &["--src", &src, "--ref", &commit]), commit);
    let feature = git(&repo, &["rev-parse", "feature"]);
    assert_eq!(
        fetched_head(&w, &["--src", &format!("file://{src}"), "--ref", "feature"]),
        feature,
        "remote-only branch"
    );
    // Without --src: `abra recipe fetch` (the fixture clones from its recipe dir).
    assert_eq!(fetched_head(&w, &[]), main_tip);
    let log = w.abra_log();
    assert!(log.contains("recipe fetch -n hello"), "{log}");
}

#[test]
fn a_missing_ref_fails_the_run_with_every_stage_unverified() {
    let mut w = World::new();
    w.abra_mode("fail:new");
    let repo = w.recipe("hello");
    let run_id = format!("m{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args([
        "run",
        "--recipe",
        "hello",
        "--src",
        repo.to_str().unwrap(),
        "--ref",
        "no-such-ref",
    ]);
    let o = output_within(c, Duration::from_secs(60));
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    let r = w.results(&run_id);
    assert_eq!(r.outcome, Outcome::Fail);
    for s in &r.stages {
        assert_eq!(s.status, Status::Unver, "{s:?}");
        assert!(s.reason.as_deref().unwrap().contains("fetch failed"), "{s:?}");
    }
    assert!(!w.abra_log().contains("app new"), "nothing is deployed after a failed fetch");
}

/// A TLS endpoint on loopback that accepts connections and never answers: git stays in its
/// handshake, so the test can look at the live git process.
struct SilentServer {
    child: std::process::Child,
    port: u16,
}

impl SilentServer {
    fn start() -> SilentServer {
        let script = "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen(16)\nprint(s.getsockname()[1], flush=True)\nconns = []\nwhile True:\n    c, _ = s.accept()\n    conns.append(c)\n";
        let mut child = Command::new("python3").args(["-c", script]).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        SilentServer { port: line.trim().parse().unwrap(), child }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn environ(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|b| b.split(|c| *c == 0).map(|kv| String::from_utf8_lossy(kv).into_owned()).collect())
        .unwrap_or_default()
}

fn cmdlines_with(needle: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok().map(|c| (e.file_name(), c)))
        .filter(|(_, c)| String::from_utf8_lossy(c).contains(needle))
        .map(|(n, _)| n.to_string_lossy().into_owned())
        .collect()
}

/// The token is handed to git's own process only, as origin-scoped config in its environment —
/// never in argv (world-readable) and never to another child.
#[test]
fn the_token_reaches_only_the_git_process_scoped_to_its_origin() {
    let token = format!("tok-{}-s3cr3t", unique());
    let mut w = World::new();
    w.set("CCCI_GIT_TOKEN", &token);
    let server = SilentServer::start();
    w.set("CCCI_GIT_TOKEN_ORIGINS", &format!("https://127.0.0.1:{}", server.port));
    let url = format!("https://127.0.0.1:{}/owner/hello.git", server.port);
    let run_id = format!("t{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id)
        .args(["run", "--recipe", "hello", "--src", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let watch = LineWatch::stderr_of(&mut child);
    let run_marker = token_env(&run_id);
    let mut git_env = Vec::new();
    wait_until("git to be connecting to the origin", Duration::from_secs(30), || {
        for pid in pids_with_env(&run_marker) {
            let env = environ(pid);
            if env.iter().any(|kv| kv.starts_with("GIT_CONFIG_VALUE_0=")) {
                git_env = env;
                return true;
            }
        }
        false
    });
    assert!(git_env.contains(&"GIT_CONFIG_COUNT=1".to_string()), "{git_env:?}");
    assert!(
        git_env.contains(&format!("GIT_CONFIG_KEY_0=http.https://127.0.0.1:{}/.extraHeader", server.port)),
        "the header is scoped to the source's origin: {git_env:?}"
    );
    assert!(git_env.contains(&format!("GIT_CONFIG_VALUE_0=Authorization: Bearer {token}")), "{git_env:?}");
    assert!(cmdlines_with(&token).is_empty(), "token in a /proc/*/cmdline");
    signal(child.id(), libc::SIGTERM);
    let status = wait_within(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(143), "{}", watch.text());
    let run_log = fs::read_to_string(w.run_dir(&run_id).join("run.log")).unwrap();
    let results = fs::read_to_string(w.run_dir(&run_id).join("results.json")).unwrap();
    for (what, text) in [("stderr", watch.text()), ("run.log", run_log), ("results.json", results)] {
        assert!(!text.contains(&token), "{what} carries the token");
    }
}

/// The token goes only to origins the host named (`CCCI_GIT_BASE`'s, `CCCI_GIT_TOKEN_ORIGINS`),
/// and never over plain http: a build parameter naming another host, or an http URL of a named
/// host, gets a git process without the header.
#[test]
fn the_token_never_goes_to_an_origin_the_host_did_not_name() {
    let token = format!("tok-{}-s3cr3t", unique());
    let server = SilentServer::start();
    // A URL naming a host the operator did not name; and the operator's own git base, but over
    // http (`--src` itself accepts only https, ssh and file URLs).
    let https = format!("https://127.0.0.1:{}/owner/hello.git", server.port);
    let http_base = format!("http://127.0.0.1:{}", server.port);
    let origin = format!("https://127.0.0.1:{}", server.port);
    for (url, base) in [(https.as_str(), None), ("owner/hello", Some(http_base.as_str()))] {
        let mut w = World::new();
        w.set("CCCI_GIT_TOKEN", &token);
        if let Some(base) = base {
            w.set("CCCI_GIT_BASE", base).set("CCCI_GIT_TOKEN_ORIGINS", &origin);
        }
        let run_id = format!("t{}", unique());
        let mut c = w.ccci();
        c.env("CCCI_RUN_ID", &run_id)
            .args(["run", "--recipe", "hello", "--src", url])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let watch = LineWatch::stderr_of(&mut child);
        let run_marker = token_env(&run_id);
        let mut git_env = Vec::new();
        wait_until("git to be connecting to the server", Duration::from_secs(30), || {
            for pid in pids_with_env(&run_marker) {
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmd).contains("clone") {
                    git_env = environ(pid);
                    return true;
                }
            }
            false
        });
        assert!(
            !git_env.iter().any(|kv| kv.contains(&token)
                || kv.starts_with("GIT_CONFIG_COUNT")
                || kv.starts_with("GIT_CONFIG_VALUE")),
            "{url}: {git_env:?}"
        );
        signal(child.id(), libc::SIGTERM);
        let status = wait_within(&mut child, Duration::from_secs(60));
        assert_eq!(status.code(), Some(143), "{}", watch.text());
    }
}

/// With a token set, a finished clone's `.git/config`, abra's environment, every argv, the logs
/// and the report stay clean.
#[test]
fn the_token_is_never_written_or_shown() {
    let token = format!("tok-{}-s3cr3t", unique());
    let mut w = World::new();
    w.abra_mode("hang:new");
    w.set("CCCI_GIT_TOKEN", &token);
    let repo = w.recipe("hello");
    let run_id = format!("t{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id)
        .args(["run", "--recipe", "hello", "--src", &format!("file://{}", repo.display())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let watch = LineWatch::stderr_of(&mut child);
    let mut argv_hits = Vec::new();
    wait_until("the fixture abra to hang in app new", Duration::from_secs(60), || {
        argv_hits.extend(cmdlines_with(&token));
        w.abra_log().contains("hang ")
    });
    assert!(argv_hits.is_empty(), "token in /proc/*/cmdline of {argv_hits:?}");
    let cfg = fs::read_to_string(w.run_dir(&run_id).join("abra/recipes/hello/.git/config")).unwrap();
    assert!(!cfg.contains(&token), ".git/config carries the token");
    let abra_pid: i32 = w
        .abra_log()
        .lines()
        .find(|l| l.starts_with("hang "))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let env = environ(abra_pid).join("\n");
    assert!(!env.contains(&token) && !env.contains("GIT_CONFIG"), "abra's environment carries git auth: {env}");
    signal(child.id(), libc::SIGTERM);
    let status = wait_within(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(143), "{}", watch.text());
    let run_log = fs::read_to_string(w.run_dir(&run_id).join("run.log")).unwrap();
    let results = fs::read_to_string(w.run_dir(&run_id).join("results.json")).unwrap();
    for (what, text) in [("stderr", watch.text()), ("run.log", run_log), ("results.json", results)] {
        assert!(!text.contains(&token), "{what} carries the token");
    }
}

#[test]
fn a_secret_echoed_by_a_child_is_masked() {
    let w = World::new();
    let secret = format!("hunter2-{}-value", unique());
    fs::write(w.secrets.join("db_password"), format!("{secret}\n")).unwrap();
    let mut c = w.ccci();
    c.args(["exec-step", "--", "sh", "-c", &format!("echo password={secret}")]);
    let o = output_within(c, Duration::from_secs(30));
    let all = format!("{}{}", stderr_of(&o), String::from_utf8_lossy(&o.stdout));
    assert!(o.status.success(), "{all}");
    assert!(!all.contains(&secret), "secret shown: {all}");
    assert!(all.contains("password=***"), "{all}");
}

#[test]
fn a_stalled_stderr_reader_does_not_stall_the_run_and_run_log_keeps_every_line() {
    let mut w = World::new();
    // 20,000 lines on each stream during the fetch, then `app new` fails: no swarm object.
    w.abra_mode("chatty:fetch,fail:new");
    w.recipe("hello");
    let run_id = format!("s{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id)
        .args(["run", "--recipe", "hello", "--stages", "install"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Nobody reads stderr: the pipe fills after 64 KiB.
    let status = wait_within(&mut child, Duration::from_secs(180));
    assert_eq!(status.code(), Some(1));
    let run_log = fs::read_to_string(w.run_dir(&run_id).join("run.log")).unwrap();
    let chatty = run_log.lines().filter(|l| l.contains("abra|") && l.contains("chatty")).count();
    assert!(chatty >= 40_000, "run.log has {chatty} chatty lines");
    let r = w.results(&run_id);
    assert!(r.stderr_dropped_lines > 0, "{}", r.stderr_dropped_lines);
    drop(child.stderr.take());
    let _ = std::io::stdout().flush();
}
