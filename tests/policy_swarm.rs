//! The policy gate in a real run (issue 12): a pull request's recipe is hostile. Each hostile
//! tree is refused before anything of it is deployed — exit 1, a `policy:` reason, no `abra app
//! deploy` in the fixture's log, nothing left — while the same hostile bind passes once the
//! operator's trusted `ccci.yml` allows it. Links and special files in the tree are refused
//! without ccci ever writing through them or blocking on them.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ccci::policy::Rule;
use ccci::report::{Results, Status, TeardownResult};
use ccci::stage::Stage;

use crate::common::*;

/// A PR of the hello recipe: a clone of the fixture repo with `compose.evil.yml` added to
/// `COMPOSE_FILE` (and committed on top of the default branch).
fn pr_with(w: &World, name: &str, evil: &str) -> PathBuf {
    w.pr_of("hello", name, |dest| {
        // docker's loader wants one `version` across the files (a file without one is its newest).
        fs::write(dest.join("compose.evil.yml"), format!("version: \"3.8\"\n{evil}")).unwrap();
        let sample = fs::read_to_string(dest.join(".env.sample")).unwrap();
        let sample = sample.replace("COMPOSE_FILE=\"compose.yml\"", "COMPOSE_FILE=\"compose.yml:compose.evil.yml\"");
        fs::write(dest.join(".env.sample"), sample).unwrap();
    })
}

struct Ran {
    code: i32,
    results: Results,
    err: String,
}

fn run(w: &World, src: &Path, stages: &str) -> Ran {
    let run_id = format!("g{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello", "--stages", stages, "--src"]).arg(src);
    let o = output_within(c, Duration::from_secs(300));
    Ran { code: code(&o), results: w.results(&run_id), err: stderr_of(&o) }
}

fn first_reason(r: &Results) -> String {
    r.stages.iter().find(|s| s.status == Status::Fail).and_then(|s| s.reason.as_deref()).unwrap_or("").to_string()
}

fn deploys(w: &World) -> usize {
    w.abra_log().lines().filter(|l| l.starts_with("start ") && l.contains("app deploy")).count()
}

const HOSTILE: &[(&str, &str, Rule)] = &[
    (
        "docker.sock",
        "services:\n  app:\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n",
        Rule::DeniedHostPath,
    ),
    (
        "root",
        "services:\n  app:\n    volumes:\n      - type: bind\n        source: /\n        target: /host\n",
        Rule::DeniedHostPath,
    ),
    ("updir", "services:\n  app:\n    volumes:\n      - ../../..:/runs:ro\n", Rule::BindOutsideTree),
    (
        "bindvol",
        "volumes:\n  data:\n    driver_opts:\n      type: none\n      o: bind\n      device: /srv\n",
        Rule::VolumeDriverOpts,
    ),
    (
        "hostnet",
        "services:\n  app:\n    networks:\n      - outside\nnetworks:\n  outside:\n    external: true\n    name: host\n",
        Rule::ExternalNetwork,
    ),
    ("capadd", "services:\n  app:\n    cap_add:\n      - SYS_ADMIN\n", Rule::CapAdd),
    (
        "cfgout",
        "services:\n  app:\n    configs:\n      - source: stolen\n        target: /stolen\nconfigs:\n  stolen:\n    name: ${STACK_NAME}_stolen_v1\n    file: ../../../../run.log\n",
        Rule::FileOutsideTree,
    ),
    (
        "foreign-host",
        "services:\n  app:\n    deploy:\n      labels:\n        - \"traefik.http.routers.${STACK_NAME}.rule=Host(`dashboard.example.org`)\"\n",
        Rule::TraefikHost,
    ),
];

#[test]
fn hostile_trees_are_refused_before_anything_is_deployed() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    for (name, evil, rule) in HOSTILE {
        let w = World::new();
        let pr = pr_with(&w, name, evil);
        let r = run(&w, &pr, "install");
        assert_eq!(r.code, 1, "{name}: {}", r.err);
        let reason = first_reason(&r.results);
        assert!(reason.starts_with("policy:"), "{name}: {reason}");
        let v = &r.results.policy.violations;
        assert!(v.iter().any(|x| x.rule == *rule), "{name}: {:?}", r.results.policy);
        assert_eq!(deploys(&w), 0, "{name}: nothing of the PR may be deployed: {}", w.abra_log());
        assert!(w.leftovers().is_empty(), "{name}: {:?}", w.leftovers());
        assert_eq!(r.results.teardown.result, TeardownResult::Clean, "{name}: the app created by app new is removed");
    }
}

#[test]
fn the_trusted_allow_list_lets_the_same_bind_through() {
    let Some((_slot, w)) = swarm_world() else { return };
    let port = free_port();
    w.trusted(
        "hello",
        "ccci.yml",
        &format!(
            "extra_env: {{ HTTP_PORT: \"{port}\" }}\ntimeouts: {{ deploy: 60 }}\npolicy:\n  allow_binds: [\"/var/run/docker.sock\"]\n"
        ),
        false,
    );
    let pr = pr_with(&w, "sock-allowed", HOSTILE[0].1);
    let r = run(&w, &pr, "install");
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.results.policy.violations.is_empty(), "{:?}", r.results.policy);
    assert!(r.results.policy.checked >= 1);
    assert_eq!(deploys(&w), 1);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// The base is benign and deployed; the head turns hostile: the upgrade fails at the gate, the
/// head is never deployed, and the base is torn down.
#[test]
fn a_hostile_head_over_a_benign_base_fails_the_upgrade_only() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.own_port("hello");
    // The app's `.env` keeps the base's COMPOSE_FILE across an upgrade (as abra's does), so
    // the head turns hostile in a file the base already lists.
    let pr = w.pr_of("hello", "evil-head", |pr| {
        let compose = fs::read_to_string(pr.join("compose.yml")).unwrap();
        assert!(compose.contains("      - data:/data\n"), "{compose}");
        let compose = compose
            .replace("      - data:/data\n", "      - data:/data\n      - /var/run/docker.sock:/var/run/docker.sock\n");
        fs::write(pr.join("compose.yml"), compose).unwrap();
    });
    let r = run(&w, &pr, "install,upgrade");
    assert_eq!(r.code, 1, "{}", r.err);
    assert_eq!(status(&r.results, Stage::Install), Status::Pass, "the base deployed: {}", r.err);
    let upgrade = stage(&r.results, Stage::Upgrade);
    assert_eq!(upgrade.status, Status::Fail);
    assert!(upgrade.reason.as_deref().unwrap().starts_with("policy:"), "{upgrade:?}");
    assert_eq!(deploys(&w), 1, "only the base: {}", w.abra_log());
    assert!(!w.abra_log().contains("app redeploy"), "{}", w.abra_log());
    assert_eq!(r.results.teardown.result, TeardownResult::Clean);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// A PR commits `compose.ccci.yml` as a link to a file elsewhere (the operator has a trusted
/// overlay, which ccci copies in): the link is refused, the file is untouched.
#[test]
fn a_linked_overlay_never_writes_through_the_link() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.trusted("hello", "compose.ccci.yml", "version: \"3.8\"\nservices: {}\n", false);
    let victim = w.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let before = fs::metadata(&victim).unwrap();
    let pr = w.pr_of("hello", "linked-overlay", |pr| {
        std::os::unix::fs::symlink(&victim, pr.join("compose.ccci.yml")).unwrap();
    });
    let r = run(&w, &pr, "install");
    assert_eq!(r.code, 1, "{}", r.err);
    let reason = first_reason(&r.results);
    assert!(reason.starts_with("policy:") && reason.contains("compose.ccci.yml"), "{reason}");
    let after = fs::metadata(&victim).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!((after.mode(), after.mtime(), after.mtime_nsec()), (before.mode(), before.mtime(), before.mtime_nsec()));
    assert_eq!(deploys(&w), 0);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// A compose file that is a link to a FIFO nobody writes, or a regular compose file over the
/// cap: the run ends promptly (never blocks holding the app lock), the lock is free, nothing is
/// left.
#[test]
fn a_fifo_or_an_oversized_compose_file_never_hangs_a_run() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    for case in ["fifo", "huge"] {
        let w = World::new();
        let fifo = w.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let pr = w.pr_of("hello", case, |pr| {
            if case == "fifo" {
                std::os::unix::fs::symlink(&fifo, pr.join("compose.zz.yml")).unwrap();
            } else {
                let mut big = String::from("services:\n  app:\n    labels:\n");
                while big.len() < 2 * 1024 * 1024 {
                    big.push_str(
                        "      x.padding.label.to.make.this.file.large: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n",
                    );
                }
                fs::write(pr.join("compose.zz.yml"), big).unwrap();
            }
            let sample = fs::read_to_string(pr.join(".env.sample")).unwrap();
            fs::write(pr.join(".env.sample"), sample.replace("\"compose.yml\"", "\"compose.yml:compose.zz.yml\""))
                .unwrap();
        });
        let t = Instant::now();
        // deadline 20 + budget 20 + 10: the bound the issue sets.
        let run_id = format!("g{}", unique());
        let mut c = w.ccci();
        c.env("CCCI_RUN_ID", &run_id)
            .args([
                "run",
                "--recipe",
                "hello",
                "--stages",
                "install",
                "--deadline",
                "20",
                "--teardown-budget",
                "20",
                "--src",
            ])
            .arg(&pr);
        let o = output_within(c, Duration::from_secs(50));
        assert!(matches!(code(&o), 1 | 142), "{case}: {}", stderr_of(&o));
        let r = w.results(&run_id);
        let reason = first_reason(&r);
        assert!(reason.starts_with("policy:"), "{case}: {reason}");
        let lock = w.lock_dir.join(ccci::names::lock_file_name(&w.domain("hello", "0", "")));
        if lock.exists() {
            let f = fs::File::open(&lock).unwrap();
            assert!(f.try_lock().is_ok(), "{case}: the app lock is free");
        }
        assert_eq!(deploys(&w), 0, "{case}");
        assert!(w.leftovers().is_empty(), "{case}: {:?}", w.leftovers());
        eprintln!("{case}: ended in {:?}", t.elapsed());
    }
}
