//! `ccci doctor` and the disk pre-flight against hosts broken on purpose (the runs of drain,
//! cancel, ps and the watch are in `tests-concurrency/`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

fn doctor(w: &World, setup: impl FnOnce(&mut Command)) -> (i32, Value) {
    let mut c = w.ccci();
    c.args(["doctor", "--json"]);
    setup(&mut c);
    let o = output_within(c, Duration::from_secs(120));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr_of(&o)));
    (code(&o), v)
}

fn status<'a>(v: &'a Value, name: &str) -> &'a str {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .map_or("absent", |c| c["status"].as_str().unwrap())
}

#[test]
fn doctor_passes_what_is_set_up_and_fails_each_broken_item() {
    let mut w = World::new();
    fs::create_dir_all(w.abra_home.join("catalogue/.git")).unwrap();
    fs::create_dir_all(&w.lock_dir).unwrap();
    fs::set_permissions(&w.lock_dir, fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(&w.runs_dir).unwrap();
    w.set("CCCI_MIN_FREE_MB", "1");
    // The world's host file is written by ccci(); make it private before the command runs.
    let private = |_: &mut Command| fs::set_permissions(w.host_file(), fs::Permissions::from_mode(0o600)).unwrap();
    let (_, good) = doctor(&w, private);
    for name in ["abra", "abra-server", "abra-catalogue", "lock-dir", "runs-dir", "host-file", "disk", "drain"] {
        assert_eq!(status(&good, name), "pass", "{name}: {good}");
    }
    for c in good["checks"].as_array().unwrap() {
        assert!(c["status"] == "pass" || c["fix"].as_str().is_some_and(|f| !f.is_empty()), "no fix: {c}");
    }

    // Each broken item fails, and doctor exits 1.
    let mut broken = World::new();
    broken.set("CCCI_ABRA", "/nonexistent/abra");
    broken.set("CCCI_GIT_TOKEN", "t0ken");
    broken.set("CCCI_MIN_FREE_MB", "1048576");
    let stub = broken.path().join("docker-without-stack-config");
    fs::write(&stub, "#!/bin/sh\necho 'Usage: docker stack COMMAND'\n").unwrap();
    fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    broken.set("CCCI_DOCKER", stub.to_str().unwrap());
    fs::remove_dir_all(broken.abra_home.join("servers/default")).unwrap();
    fs::remove_dir_all(broken.abra_home.join("catalogue")).unwrap();
    fs::create_dir_all(&broken.lock_dir).unwrap();
    fs::set_permissions(&broken.lock_dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::create_dir_all(&broken.runs_dir).unwrap();
    fs::set_permissions(&broken.runs_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let (rc, bad) = doctor(&broken, |c| {
        fs::set_permissions(broken.host_file(), fs::Permissions::from_mode(0o644)).unwrap();
        c.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    });
    assert_eq!(rc, 1, "{bad}");
    assert_eq!(bad["ok"], false);
    for name in ["abra", "abra-server", "abra-catalogue", "docker", "lock-dir", "runs-dir", "host-file", "disk"] {
        assert_eq!(status(&bad, name), "fail", "{name}: {bad}");
    }
    // docker stack config is judged from the CLI, swarm and proxy need dockerd: with the real
    // dockerd, the stub CLI alone fails stack-config.
    let (_, v) = doctor(&broken, |_| {});
    assert_eq!(status(&v, "stack-config"), "fail", "{v}");

    // A draining host is a warning, not a failure.
    let o = w.run(&["drain"]);
    assert_eq!(code(&o), 0);
    let (_, v) = doctor(&w, private);
    assert_eq!(status(&v, "drain"), "warn", "{v}");
}

/// Unmounts a test tmpfs however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn the_disk_preflight_refuses_a_run_on_a_tiny_filesystem() {
    let mut w = World::new();
    w.recipe("hello");
    fs::create_dir_all(&w.runs_dir).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&w.runs_dir).status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    }
    let _umount = Mounted(w.runs_dir.clone());
    w.set("CCCI_MIN_FREE_MB", "8");
    let mut c = w.ccci();
    c.args(["run", "--recipe", "hello"]);
    let o = output_within(c, Duration::from_secs(60));
    assert_eq!(code(&o), 69, "{}", stderr_of(&o));
    assert!(
        stderr_of(&o).contains("CCCI_MIN_FREE_MB=8") && stderr_of(&o).contains("the runs dir"),
        "{}",
        stderr_of(&o)
    );
    assert_eq!(fs::read_dir(&w.runs_dir).unwrap().count(), 0, "a refused run created something");
    let (_, v) = doctor(&w, |_| {});
    assert_eq!(status(&v, "disk"), "fail", "{v}");

    // Above the threshold the run starts (and fails in its fetch, which is not the point).
    w.set("CCCI_MIN_FREE_MB", "1");
    w.abra_mode("fail:fetch");
    let mut c = w.ccci();
    c.args(["run", "--recipe", "hello"]);
    let o = output_within(c, Duration::from_secs(120));
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    assert_eq!(fs::read_dir(&w.runs_dir).unwrap().count(), 1);
}
