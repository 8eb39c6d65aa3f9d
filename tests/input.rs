//! Bad input gets one line naming the value and the rule, exit 2, and nothing is created: no run
//! dir, no lockfile, no abra/git/docker call.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;

/// A world whose abra, git, docker and curl only record that they were called.
fn recording_world() -> (World, std::path::PathBuf) {
    let mut w = World::new();
    let calls = w.path().join("calls.log");
    let rec = w.path().join("recorders");
    fs::create_dir_all(&rec).unwrap();
    for prog in ["abra", "git", "docker", "curl"] {
        let p = rec.join(prog);
        fs::write(&p, format!("#!/bin/sh\necho \"{prog} $*\" >> '{}'\nexit 1\n", calls.display())).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", rec.display(), std::env::var("PATH").unwrap_or_default());
    w.set("PATH", &path).set("CCCI_ABRA", rec.join("abra").to_str().unwrap());
    (w, calls)
}

fn assert_nothing_created(w: &World, calls: &std::path::Path) {
    assert!(!w.runs_dir.exists(), "runs dir was created");
    assert!(!w.lock_dir.exists(), "lock dir was created");
    assert!(!calls.exists(), "a program was called: {}", fs::read_to_string(calls).unwrap_or_default());
}

#[test]
fn bad_inputs_exit_2_and_create_nothing() {
    let (w, calls) = recording_world();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--recipe", "../x"], &[], "recipe"),
        (&["--recipe", "A"], &[], "recipe"),
        (&["--recipe", "a_b"], &[], "recipe"),
        (&["--recipe", ""], &[], "recipe"),
        (&["--recipe", "hello", "--ref", ".."], &[], "ref"),
        (&["--recipe", "hello", "--ref=-x"], &[], "ref"),
        (&["--recipe", "hello", "--ref", "a\nb"], &[], "ref"),
        (&["--recipe", "hello", "--pr", "1a"], &[], "pr"),
        (&["--recipe", "hello", "--src", "ftp://x/y"], &[], "src"),
        (&["--recipe", "hello", "--src", "relative/path/x"], &[], "src"),
        (&["--recipe", "hello", "--src", "https://user:pw@git.example/o/r.git"], &[], "src"),
        (&["--recipe", "hello", "--stages", "install,lint"], &[], "stages"),
        (&["--recipe", "hello", "--stages", "install,install"], &[], "stages"),
        (&["--recipe", "hello", "--deadline", "0"], &[], "deadline"),
        (&["--recipe", "hello"], &[("CCCI_RUN_ID", "../x")], "run id"),
        (&["--recipe", "hello", "--teardown-budget=-5"], &[], "teardown-budget"),
        (&["--recipe", "hello", "--lock-timeout", "soon"], &[], "lock-timeout"),
        (&[], &[("RECIPE", "Bad!")], "RECIPE"),
        (&["--recipe", "hello"], &[("CCCI_QUICK", "maybe")], "quick"),
        (&["--recipe", "hello", "--src", "o/r"], &[("CCCI_SKIP_FETCH", "1")], "CCCI_SKIP_FETCH"),
    ];
    for (args, env, needle) in cases {
        let mut c = w.ccci();
        c.arg("run").args(*args);
        for (k, v) in *env {
            c.env(k, v);
        }
        let o = output_within(c, std::time::Duration::from_secs(30));
        let err = stderr_of(&o);
        assert_eq!(code(&o), 2, "{args:?} {env:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: expected one line, got: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} should name {needle}");
        assert_nothing_created(&w, &calls);
    }
}

/// The host-hardening refusals (settings only the host may set, absolute paths, ceilings, the
/// token's origins): one line naming the value and the rule, exit 2, nothing created, no
/// abra/git/docker call. `host` lines go into the world's host file, `env` into ccci's
/// environment; `hidden` must not appear in the message (a credential).
#[test]
fn hostile_host_inputs_exit_2_and_create_nothing() {
    const MAX: &str = "18446744073709551615";
    struct Case<'a> {
        args: &'a [&'a str],
        host: &'a [(&'a str, &'a str)],
        env: &'a [(&'a str, &'a str)],
        needle: &'a str,
        hidden: Option<&'a str>,
    }
    let c = |args, host, env, needle| Case { args, host, env, needle, hidden: None };
    let cases = [
        // u64::MAX and friends for every number.
        c(&["--deadline", MAX], &[], &[], "deadline"),
        c(&["--teardown-budget", MAX], &[], &[], "teardown-budget"),
        c(&["--lock-timeout", MAX], &[], &[], "lock-timeout"),
        c(&["--deadline", "99999999999999999999999"], &[], &[], "deadline"),
        c(&["--deadline", "86401"], &[], &[], "at most|to 86400"),
        c(&[], &[], &[("CCCI_DEADLINE", MAX)], "CCCI_DEADLINE"),
        c(&[], &[("CCCI_KILL_GRACE", MAX)], &[], "kill grace"),
        c(&[], &[("CCCI_LEAK_TIMEOUT_MS", MAX)], &[], "leak timeout"),
        c(&[], &[("CCCI_MAX_DEADLINE", MAX)], &[], "max deadline"),
        c(&[], &[("CCCI_MAX_TEARDOWN_BUDGET", MAX)], &[], "max teardown budget"),
        c(&[], &[("CCCI_KILL_GRACE", "3601")], &[], "kill grace"),
        c(&[], &[], &[("CCCI_LOCK_TIMEOUT", MAX)], "CCCI_LOCK_TIMEOUT|lock timeout"),
        c(&[], &[], &[("CCCI_TEARDOWN_BUDGET", MAX)], "CCCI_TEARDOWN_BUDGET|teardown budget"),
        c(&[], &[("CCCI_MIN_FREE_MB", MAX)], &[], "CCCI_MIN_FREE_MB|free"),
        c(&[], &[("CCCI_LEASE_ENDPOINTS", "http://127.0.0.1:1"), ("CCCI_LEASE_TTL", MAX)], &[], "lease TTL"),
        c(&[], &[("CCCI_LEASE_ENDPOINTS", "http://127.0.0.1:1"), ("CCCI_LEASE_TTL", "1")], &[], "lease TTL"),
        // Relative paths for every dir/file setting.
        c(&[], &[("CCCI_APP_LOCK_DIR", "run/lock")], &[], "absolute"),
        c(&[], &[("CCCI_RUNS_DIR", "runs")], &[], "absolute"),
        c(&[], &[("CCCI_ABRA_HOME", ".abra")], &[], "absolute"),
        c(&[], &[("CCCI_TESTS_DIR", "./tests")], &[], "absolute"),
        c(&[], &[("CCCI_SECRETS_DIR", "secrets")], &[], "absolute"),
        c(&[], &[("CCCI_JUNIT", "junit.xml")], &[], "absolute"),
        c(&["--junit", "out/junit.xml"], &[], &[], "absolute"),
        c(&[], &[("CCCI_APP_LOCK_DIR", "/run/../etc")], &[], ".."),
        c(&[], &[("CCCI_ABRA", "bin/abra")], &[], "absolute"),
        c(&[], &[], &[("CCCI_CONFIG", "ccci.env")], "absolute"),
        // Host settings from the environment that disagree with the host file.
        c(&[], &[], &[("CCCI_APP_LOCK_DIR", "/tmp/other-lock")], "CCCI_APP_LOCK_DIR"),
        c(&[], &[], &[("CCCI_ABRA", "/tmp/evil-abra")], "CCCI_ABRA"),
        c(&[], &[], &[("CCCI_DOCKER", "/tmp/evil-docker")], "CCCI_DOCKER"),
        c(&[], &[], &[("CCCI_JUNIT", "/etc/shadow")], "CCCI_JUNIT"),
        c(&[], &[], &[("CCCI_HEALTH_URL", "http://evil.example/")], "CCCI_HEALTH_URL"),
        c(&[], &[], &[("CCCI_DOMAIN_SUFFIX", "other.test")], "CCCI_DOMAIN_SUFFIX"),
        c(&[], &[], &[("CCCI_TRUST_ENV", "1"), ("CCCI_ABRA", "/tmp/evil-abra")], "CCCI_ABRA"),
        // URLs and names.
        c(&[], &[("CCCI_HEALTH_URL", "-o/tmp/pwned")], &[], "http"),
        c(&[], &[("CCCI_GIT_BASE", "ftp://git.example")], &[], "http"),
        c(&[], &[("CCCI_GIT_TOKEN_ORIGINS", "http://git.example")], &[], "https"),
        c(&[], &[("CCCI_DOMAIN_SUFFIX", "a-very-long-suffix-that-overflows.example.org")], &[], "at most"),
        Case {
            args: &["--src", "https://oauth2:glpat-SUPERSECRET@git.example/o/r.git"],
            host: &[],
            env: &[],
            needle: "user info",
            hidden: Some("SUPERSECRET"),
        },
    ];
    assert!(cases.len() >= 20);
    for case in &cases {
        let (mut w, calls) = recording_world();
        for (k, v) in case.host {
            w.set(k, v);
        }
        let mut cmd = w.ccci();
        cmd.args(["run", "--recipe", "hello"]).args(case.args);
        for (k, v) in case.env {
            cmd.env(k, v);
        }
        let o = output_within(cmd, std::time::Duration::from_secs(30));
        let err = stderr_of(&o);
        let what = format!("{:?} host {:?} env {:?}", case.args, case.host, case.env);
        assert_eq!(code(&o), 2, "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: expected one line, got: {err}");
        assert!(case.needle.split('|').any(|n| err.contains(n)), "{what}: {err:?} should name {}", case.needle);
        if let Some(h) = case.hidden {
            assert!(!err.contains(h), "{what}: the credential is echoed: {err}");
        }
        assert_nothing_created(&w, &calls);
    }
}

#[test]
fn unknown_key_in_trusted_ccci_yml_is_bad_input() {
    let (w, calls) = recording_world();
    w.trusted("hello", "ccci.yml", "timeouts: { deploy: 10 }\nhealthz: { url: off }\n", false);
    let o = w.run(&["run", "--recipe", "hello"]);
    let err = stderr_of(&o);
    assert_eq!(code(&o), 2, "{err}");
    // The position, never the file's content (a linked file's secrets would be quoted).
    assert!(err.contains("ccci.yml") && err.contains("line 2") && err.contains("unknown field"), "{err}");
    assert!(!err.contains("healthz"), "{err}");
    assert_nothing_created(&w, &calls);
}

#[test]
fn hostile_deps_in_trusted_ccci_yml_are_bad_input() {
    for (yml, want) in [
        ("deps: [ { recipe: hello } ]\n", "hello cannot be a dependency of itself"),
        ("deps: [ { recipe: \"../../etc\" } ]\n", "deps[0].recipe must match"),
        ("deps: [ { recipe: idp }, { recipe: idp } ]\n", "idp is listed twice"),
        ("deps: [ { recipe: idp, provision: { run: /bin/sh } } ]\n", "hooks/provision_<name>"),
        ("extra_env: { A: \"{{deps.kc.domain}}\" }\n", "names no dependency"),
    ] {
        let (w, calls) = recording_world();
        w.trusted("hello", "ccci.yml", yml, false);
        let o = w.run(&["run", "--recipe", "hello"]);
        let err = stderr_of(&o);
        assert_eq!(code(&o), 2, "{yml}: {err}");
        assert!(err.contains(want) && err.trim().lines().count() == 1, "{yml}: {err}");
        assert_nothing_created(&w, &calls);
    }
}

#[test]
fn missing_server_dir_names_abra_server_add() {
    let (w, calls) = recording_world();
    fs::remove_dir_all(w.abra_home.join("servers/default")).unwrap();
    let o = w.run(&["run", "--recipe", "hello"]);
    let err = stderr_of(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(err.contains("abra server add --local"), "{err}");
    assert_nothing_created(&w, &calls);
}

#[test]
fn missing_explicit_config_file_is_an_error() {
    let (w, calls) = recording_world();
    let mut c = w.ccci();
    c.args(["run", "--recipe", "hello"]).env("CCCI_CONFIG", w.path().join("nope.env"));
    let o = output_within(c, std::time::Duration::from_secs(30));
    assert_eq!(code(&o), 2, "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("nope.env"));
    assert_nothing_created(&w, &calls);
}

#[test]
fn help_lists_env_vars_and_examples_and_version_has_commit() {
    let w = World::new();
    let o = w.run(&["run", "--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in ["RECIPE", "CCCI_DEADLINE", "CCCI_LOCK_TIMEOUT", "--quick"] {
        assert!(text.contains(needle), "run --help lacks {needle}");
    }
    let o = w.run(&["--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Examples:"));
    let o = w.run(&["--version"]);
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(v.starts_with("ccci 0.") && v.contains('('), "{v}");
}

#[test]
fn janitor_numbers_out_of_range_exit_2_and_touch_nothing() {
    const MAX: &str = "18446744073709551615";
    for (flag, value, needle) in [
        ("--deadline", MAX, "deadline"),
        ("--deadline", "0", "deadline"),
        ("--prune-after", MAX, "prune-after|prune after"),
        ("--prune-after", "99999999999999999999999", "prune-after|prune after"),
    ] {
        let (w, calls) = recording_world();
        let mut cmd = w.ccci();
        cmd.args(["janitor", flag, value]);
        let o = output_within(cmd, std::time::Duration::from_secs(30));
        let err = stderr_of(&o);
        assert_eq!(code(&o), 2, "{flag} {value}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{flag} {value}: expected one line, got: {err}");
        assert!(needle.split('|').any(|n| err.contains(n)), "{flag} {value}: {err:?} should name {needle}");
        assert_nothing_created(&w, &calls);
    }
}
