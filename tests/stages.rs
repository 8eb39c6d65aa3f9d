//! The five stages (§7.6), customisation and approval (§7.3), the quick lane and the full
//! report (§7.8), on the real swarm through the fixture abra.

use std::fs;
use std::process::Command;
use std::time::Duration;

use ccci::exit::Outcome;
use ccci::report::{LintStatus, Mode, Results, Rungs, Status, TeardownResult};
use ccci::stage::Stage;

use crate::common::*;

/// Runs `ccci run` with the given args and returns (exit code, results.json, stderr).
fn run(w: &World, args: &[&str]) -> (i32, Results, String) {
    let run_id = format!("s{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).arg("run").args(args);
    let o = output_within(c, Duration::from_secs(400));
    let r = w.results(&run_id);
    (code(&o), r, stderr_of(&o))
}

const SERVED: &str = "port=$(sed -n 's/^HTTP_PORT=//p' \"$CCCI_APP_ENV\"); curl -fsS \"http://127.0.0.1:$port/\"";
const IN_APP: &str =
    "docker exec \"$(docker ps -q --filter label=com.docker.stack.namespace=$CCCI_STACK | head -n 1)\"";

#[test]
fn hello_passes_all_five_stages_and_reports_everything() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("hello");
    let port = free_port();
    let out = w.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let o = out.display();
    w.trusted(
        "hello",
        "ccci.yml",
        &format!(
            "extra_env: {{ HTTP_PORT: \"{port}\" }}\ntimeouts: {{ deploy: 90, http: 30, test: 30, hook: 60 }}\nhealth: {{ url: \"http://127.0.0.1:{port}/\", expect: [200] }}\nready_probes: [ {{ tcp: \"127.0.0.1:{port}\", stable: 3 }} ]\n"
        ),
        false,
    );
    // What the app serves before and after the upgrade is the proof the upgrade happened.
    w.trusted("hello", "hooks/pre_upgrade", &script(&format!("{SERVED} > {o}/before")), true);
    w.trusted("hello", "hooks/post_upgrade", &script(&format!("{SERVED} > {o}/after")), true);
    // Backup/restore round trip through the app's volume.
    w.trusted("hello", "hooks/pre_backup", &script(&format!("{IN_APP} sh -c 'echo original > /data/marker'")), true);
    w.trusted(
        "hello",
        "hooks/verify_backup",
        &script(&format!(
            "n=$(cat {o}/verifies 2>/dev/null || echo 0); n=$((n+1)); echo $n > {o}/verifies; [ $n -ge 3 ]"
        )),
        true,
    );
    w.trusted("hello", "hooks/pre_restore", &script(&format!("{IN_APP} sh -c 'echo changed > /data/marker'")), true);
    w.trusted("hello", "hooks/post_restore", &script(&format!("{IN_APP} cat /data/marker > {o}/restored")), true);
    w.trusted("hello", "test_serves_the_head", &script(&format!("{SERVED} | grep -qx 'hello 1.2.0-dev'")), true);
    w.trusted(
        "hello",
        "test_env",
        &script("test -n \"$CCCI_RUN_ID\" && test -f \"$CCCI_OP_STATE_FILE\" && test \"$CCCI_STAGE\" = custom"),
        true,
    );
    let junit = w.path().join("report.xml");
    let (code, r, err) = run(&w, &["--recipe", "hello", "--junit", junit.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for s in Stage::ALL {
        assert_eq!(status(&r, s), Status::Pass, "{s}: {}", reason(&r, s));
    }
    assert_eq!(
        fs::read_to_string(out.join("before")).unwrap().trim(),
        "hello 1.1.0",
        "the base was the newest release"
    );
    assert_eq!(
        fs::read_to_string(out.join("after")).unwrap().trim(),
        "hello 1.2.0-dev",
        "the upgrade deployed the head"
    );
    assert_eq!(fs::read_to_string(out.join("restored")).unwrap().trim(), "original", "restore brought the backup back");
    assert_eq!(fs::read_to_string(out.join("verifies")).unwrap().trim(), "3", "verify_backup ran three times");
    assert_eq!(w.abra_log().matches("app backup create").count(), 3, "three backup attempts");
    assert!(w.abra_log().contains("app deploy -n -o -C -c --no-domain-checks -f"), "the upgrade is a redeploy");
    // abra reported the snapshot id (not on the last line); restore named it.
    let backup = fs::read_to_string(w.run_dir(&r.run_id).join("backup-3.txt")).unwrap();
    assert!(!backup.trim_end().lines().last().unwrap().contains("snapshot_id"), "{backup}");
    let id = backup.lines().find_map(|l| l.split("\"snapshot_id\": \"").nth(1)).unwrap()[..8].to_string();
    assert!(w.abra_log().contains(&format!("app restore -n -o -C --snapshot={id} ")), "{}", w.abra_log());
    let tests = &stage(&r, Stage::Custom).tests;
    assert_eq!(tests.len(), 2);
    // Every field of §7.8: a key's presence is the raw document's (the types read a missing
    // optional key as null).
    let raw = w.results_json(&r.run_id);
    for field in [
        "schema",
        "recipe",
        "version",
        "pr",
        "ref",
        "run_id",
        "finished",
        "mode",
        "stages",
        "level",
        "rungs",
        "skips",
        "lint",
        "screenshot",
        "summary_card",
        "flags",
        "customization",
        "domain",
        "src",
        "head",
        "base",
        "started",
        "duration_ms",
        "self_cpu_ms",
        "provenance",
        "teardown",
        "outcome",
        "exit_code",
    ] {
        assert!(raw.get(field).is_some(), "results.json lacks {field}");
    }
    assert_eq!(r.schema, 2);
    assert_eq!(r.mode, Mode::Cold);
    assert_eq!(r.level, 5);
    assert_eq!(
        r.rungs,
        Rungs {
            install: Status::Pass,
            upgrade: Status::Pass,
            backup_restore: Status::Pass,
            functional: Status::Pass,
            lint: Status::Pass
        }
    );
    // Exactly these five rungs: the typed read would not see a sixth key.
    let mut rung_keys: Vec<&str> =
        raw["rungs"].as_object().expect("rungs is an object").keys().map(String::as_str).collect();
    rung_keys.sort_unstable();
    assert_eq!(rung_keys, ["backup_restore", "functional", "install", "lint", "upgrade"], "{:?}", raw["rungs"]);
    assert_eq!(r.base, "1.1.0+1");
    assert_eq!(r.version, "1.1.0+1", "the version label of the last deploy");
    assert_eq!(r.lint.status, LintStatus::Pass, "{:?}", r.lint);
    assert_eq!(r.lint.rules_failed, Vec::<String>::new());
    assert!(r.flags.no_secret_leak);
    assert_eq!(r.customization["files"]["hooks/verify_backup"], "trusted");
    assert_eq!(r.teardown.result, TeardownResult::Clean);
    assert!(r.stages[0].ms > 0);
    eprintln!("five-stage hello: duration_ms={} self_cpu_ms={} stages={:?}", r.duration_ms, r.self_cpu_ms, r.stages);
    // JUnit parses as XML: the run, install to restore, each custom test (they stand for the
    // custom stage) and teardown.
    let check = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; print(len(list(E.parse(sys.argv[1]).getroot().iter('testcase'))))",
            junit.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "8");
    crate::junit::assert_valid_junit(&fs::read_to_string(&junit).unwrap(), "five-stage hello");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn an_upgrade_that_redeploys_the_old_tree_fails_the_chaos_version_check() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut w = World::new();
    w.abra_mode("old-tree:redeploy");
    w.recipe("hello");
    w.own_port("hello");
    let (code, r, err) = run(&w, &["--recipe", "hello", "--stages", "install,upgrade"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(status(&r, Stage::Install), Status::Pass);
    assert_eq!(status(&r, Stage::Upgrade), Status::Fail);
    assert!(reason(&r, Stage::Upgrade).contains("did not deploy the head"), "{}", reason(&r, Stage::Upgrade));
    assert_eq!(r.rungs.upgrade, Status::Fail);
    assert_eq!(r.teardown.result, TeardownResult::Clean);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// A recipe whose own `tests/` would create a marker file from `install_steps.sh` and from a
/// `test_*`.
fn recipe_with_local_tests(w: &World, name: &str, marker_dir: &std::path::Path) {
    let dest = w.recipe_as("hello", name);
    let tests = dest.join("tests");
    fs::create_dir_all(&tests).unwrap();
    let m = marker_dir.display();
    fs::write(tests.join("install_steps.sh"), format!("touch {m}/local-install-steps\n")).unwrap();
    fs::write(tests.join("test_local"), script(&format!("touch {m}/local-test"))).unwrap();
    fs::write(tests.join("test_shared"), script(&format!("touch {m}/local-shared"))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for t in ["test_local", "test_shared"] {
        fs::set_permissions(tests.join(t), fs::Permissions::from_mode(0o755)).unwrap();
    }
    git(&dest, &["add", "tests"]);
    git(&dest, &["commit", "-q", "-m", "PR: add recipe-local tests"]);
}

#[test]
fn recipe_local_code_runs_only_when_approved_and_trusted_files_win() {
    let Some((_slot, w)) = swarm_world() else { return };
    let markers = w.path().join("markers");
    fs::create_dir_all(&markers).unwrap();
    recipe_with_local_tests(&w, "pr", &markers);
    let cfg = format!("extra_env: {{ HTTP_PORT: \"{}\" }}\ntimeouts: {{ deploy: 60 }}\n", free_port());
    w.trusted("pr", "ccci.yml", &cfg, false);
    let src = w.recipes.join("pr");
    let src = src.to_str().unwrap();

    // Not approved: neither the install steps nor the tests of the PR author run.
    let (code, r, err) = run(&w, &["--recipe", "pr", "--src", src, "--stages", "install,custom"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("recipe-local tests/ ignored") && err.contains("repo-local-approved.txt"),
        "the log says why: {err}"
    );
    assert_eq!(fs::read_dir(&markers).unwrap().count(), 0, "recipe-local code ran without approval");
    assert_eq!(status(&r, Stage::Custom), Status::Skip);
    assert_eq!(reason(&r, Stage::Custom), "no tests");
    assert_eq!(r.customization["recipe_local_tests"], "not approved");

    // Approved: both run; a trusted file of the same name wins over the recipe's.
    fs::write(w.tests_dir.join("repo-local-approved.txt"), "# reviewed by an operator\npr\n").unwrap();
    w.trusted("pr", "test_shared", &script(&format!("touch {}/trusted-shared", markers.display())), true);
    let (code, r, err) = run(&w, &["--recipe", "pr", "--src", src, "--stages", "install,custom"]);
    assert_eq!(code, 0, "{err}");
    for m in ["local-install-steps", "local-test", "trusted-shared"] {
        assert!(markers.join(m).exists(), "{m} missing");
    }
    assert!(!markers.join("local-shared").exists(), "the recipe-local file of a trusted name must not run");
    assert_eq!(r.customization["files"]["test_shared"], "trusted");
    assert_eq!(r.customization["files"]["test_local"], "recipe-local");
    assert_eq!(stage(&r, Stage::Custom).tests.len(), 2);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn a_non_executable_test_is_an_error_not_a_skip() {
    let w = World::new();
    w.recipe("hello");
    w.trusted("hello", "test_forgot_chmod", "#!/bin/sh\nexit 0\n", false);
    let (code, r, err) = run(&w, &["--recipe", "hello"]);
    assert_eq!(code, 1, "{err}");
    assert!(reason(&r, Stage::Install).contains("not executable"), "{r:?}");
    assert!(!w.abra_log().contains("app new"), "nothing is deployed");
}

#[test]
fn failing_and_timed_out_tests_are_named_and_killed() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("hello");
    w.trusted(
        "hello",
        "ccci.yml",
        &format!("extra_env: {{ HTTP_PORT: \"{}\" }}\ntimeouts: {{ deploy: 60, test: 2 }}\n", free_port()),
        false,
    );
    let pidfile = w.path().join("slow.pid");
    w.trusted("hello", "test_a_passes", &script("true"), true);
    w.trusted("hello", "test_b_fails", &script("echo 'expected 200, got 500' >&2; exit 3"), true);
    w.trusted("hello", "test_c_hangs", &script(&format!("sleep 300 & echo $! > {}; wait", pidfile.display())), true);
    let junit = w.path().join("j.xml");
    let (code, r, err) =
        run(&w, &["--recipe", "hello", "--stages", "install,custom", "--junit", junit.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(status(&r, Stage::Install), Status::Pass);
    for s in [Stage::Upgrade, Stage::Backup, Stage::Restore] {
        assert_eq!((status(&r, s), reason(&r, s)), (Status::Unver, "not requested".to_string()));
    }
    assert_eq!(status(&r, Stage::Custom), Status::Fail);
    assert!(reason(&r, Stage::Custom).contains("test_b_fails") && reason(&r, Stage::Custom).contains("test_c_hangs"));
    let tests = &stage(&r, Stage::Custom).tests;
    let t = |n: &str| tests.iter().find(|t| t.name == n).unwrap();
    assert_eq!(t("test_a_passes").status, Status::Pass);
    assert_eq!(t("test_b_fails").status, Status::Fail);
    assert!(t("test_b_fails").reason.as_deref().unwrap().contains("exited 3"));
    assert!(t("test_c_hangs").reason.as_deref().unwrap().contains("timed out"));
    let sleeper: i32 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(!alive(sleeper), "the timed-out test's whole process group was killed");
    assert!(err.contains("test_b_fails"), "the summary names the failing test");
    let xml = fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("name=\"test_b_fails\"") && xml.contains("<failure"), "{xml}");
    assert_eq!(r.rungs.functional, Status::Fail);
    assert_eq!(r.level, 1);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn single_release_no_backupbot_and_expected_na_are_intentional_skips() {
    let Some((_slot, w)) = swarm_world() else { return };
    let hello = w.recipe("hello");
    // A recipe with one release and no backupbot label.
    let solo = w.recipes.join("solo");
    fs::create_dir_all(&solo).unwrap();
    git(&solo, &["init", "-q", "-b", "main"]);
    for f in ["compose.yml", ".env.sample", "abra.sh", "index.html"] {
        let text = git(&hello, &["show", &format!("1.0.0+1:{f}")]).replace("TYPE=hello", "TYPE=solo");
        // The backupbot label only in a comment, and in a compose file the app does not use:
        // backup capability is read from what is deployed.
        let text = text
            .lines()
            .map(|l| if l.contains("backupbot") { format!("        # {}", l.trim()) } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(solo.join(f), format!("{text}\n")).unwrap();
    }
    fs::write(
        solo.join("compose.unused.yml"),
        "---\nversion: \"3.8\"\nservices:\n  app:\n    deploy:\n      labels:\n        - \"backupbot.backup=true\"\n",
    )
    .unwrap();
    git(&solo, &["add", "."]);
    git(&solo, &["commit", "-q", "-m", "first release"]);
    git(&solo, &["tag", "-a", "-m", "1.0.0+1", "1.0.0+1"]);
    w.trusted(
        "solo",
        "ccci.yml",
        &format!("extra_env: {{ HTTP_PORT: \"{}\" }}\ntimeouts: {{ deploy: 60 }}\nexpected_na: {{ functional: \"nothing to test yet\" }}\n", free_port()),
        false,
    );
    let (code, r, err) = run(&w, &["--recipe", "solo", "--src", solo.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status(&r, Stage::Install), Status::Pass);
    assert_eq!((status(&r, Stage::Upgrade), reason(&r, Stage::Upgrade)), (Status::Skip, "no earlier release".into()));
    assert_eq!((status(&r, Stage::Backup), reason(&r, Stage::Backup)), (Status::Skip, "not backup-capable".into()));
    assert_eq!((status(&r, Stage::Restore), reason(&r, Stage::Restore)), (Status::Skip, "not backup-capable".into()));
    assert_eq!(status(&r, Stage::Custom), Status::Skip);
    assert!(reason(&r, Stage::Custom).contains("nothing to test yet"));
    assert_eq!(r.level, 5, "intentional skips are climbed past, and lint passes: {:?}", r.lint);
    assert_eq!(r.skips.intentional["upgrade"], "no earlier release");
    assert_eq!(r.skips.intentional["backup_restore"], "not backup-capable");
    assert_eq!(r.skips.unintentional, Vec::<String>::new());
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn the_quick_lane_runs_exactly_upgrade_and_custom() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut w = World::new();
    w.recipe("hello");
    w.set("CCCI_QUICK", "yes");
    w.own_port("hello");
    w.trusted("hello", "test_ok", &script("true"), true);
    let (code, r, err) = run(&w, &["--recipe", "hello", "--stages", "install"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("quick lane"), "a --stages given too is ignored with a warning: {err}");
    assert_eq!(r.mode, Mode::Quick);
    assert_eq!(status(&r, Stage::Upgrade), Status::Pass);
    assert_eq!(status(&r, Stage::Custom), Status::Pass);
    for s in [Stage::Install, Stage::Backup, Stage::Restore] {
        assert_eq!((status(&r, s), reason(&r, s)), (Status::Unver, "not requested".into()));
    }
    assert_eq!(r.level, 0, "an unrequested install stops the climb");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn probes_that_never_pass_fail_with_the_address_and_what_was_seen() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("hello");
    let (port, closed) = (free_port(), free_port());
    w.trusted(
        "hello",
        "ccci.yml",
        &format!("extra_env: {{ HTTP_PORT: \"{port}\" }}\ntimeouts: {{ deploy: 12 }}\nready_probes: [ {{ tcp: \"127.0.0.1:{closed}\" }} ]\n"),
        false,
    );
    let (code, r, err) = run(&w, &["--recipe", "hello", "--stages", "install"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        reason(&r, Stage::Install).contains(&format!("tcp 127.0.0.1:{closed} does not accept connections")),
        "{r:?}"
    );
    w.trusted(
        "hello",
        "ccci.yml",
        &format!("extra_env: {{ HTTP_PORT: \"{port}\" }}\ntimeouts: {{ deploy: 60, http: 4 }}\nhealth: {{ url: \"http://127.0.0.1:{port}/\", expect: [418] }}\n"),
        false,
    );
    // `CCCI_HEALTH_URL=off` (the test world's default) would win over the recipe's URL.
    let mut w = w;
    w.set("CCCI_HEALTH_URL", "https://{domain}/");
    let (code, r, err) = run(&w, &["--recipe", "hello", "--stages", "install"]);
    assert_eq!(code, 1, "{err}");
    let why = reason(&r, Stage::Install);
    assert!(why.contains(&format!("GET http://127.0.0.1:{port}/ answered 200 (expected 418)")), "{why}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn the_deploy_count_guard_trips_on_a_second_deploy() {
    let w = World::new();
    w.recipe("hello");
    // install_steps.sh runs right before the deploy is counted: recording a deploy there is
    // what a second deploy in one run looks like to the guard.
    w.trusted("hello", "install_steps.sh", "echo 1 > \"$CCCI_DEPLOY_COUNT_FILE\"\n", false);
    let (code, r, err) = run(&w, &["--recipe", "hello", "--stages", "install"]);
    assert_eq!(code, 1, "{err}");
    assert!(reason(&r, Stage::Install).contains("deploy-count guard: 2 deploys"), "{r:?}");
    assert!(!w.abra_log().contains("app deploy"), "the guard stops the second deploy before it happens");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn a_bad_recipe_local_ccci_yml_is_an_error_and_deploys_nothing() {
    let w = World::new();
    let hello = w.recipe("hello");
    let dest = w.recipes.join("badyml");
    git(&w.recipes, &["clone", "-q", hello.to_str().unwrap(), dest.to_str().unwrap()]);
    fs::create_dir_all(dest.join("tests")).unwrap();
    fs::write(dest.join("tests/ccci.yml"), "timeouts: { deploy: 30 }\nretries: 3\n").unwrap();
    git(&dest, &["add", "tests"]);
    git(&dest, &["commit", "-q", "-m", "PR: a ccci.yml with a typo"]);
    fs::write(w.tests_dir.join("repo-local-approved.txt"), "badyml\n").unwrap();
    let (code, r, err) = run(&w, &["--recipe", "badyml", "--src", dest.to_str().unwrap()]);
    assert_eq!(code, 70, "{err}");
    assert_eq!(r.outcome, Outcome::Error);
    assert_eq!(r.exit_code, 70);
    assert!(
        reason(&r, Stage::Install).contains("recipe-local ccci.yml") && reason(&r, Stage::Install).contains("line 2"),
        "{r:?}"
    );
    assert!(!w.abra_log().contains("app new"), "nothing is deployed");
}
