//! What the real abra is known to do, through the stricter stand-in (issue 13): the
//! `$COMPOSE_FILE` idiom with an overlay, a DOMAIN abra does not template and a sample naming a
//! stack, secrets generated after the overrides and again for a head that adds one, backup and
//! restore under a terminal without trusting the last output line, unlabelled secrets found by
//! name, the catalogue preflight, the run's own recipe tree, and the lint rung.

use std::fs;
use std::process::Command;
use std::time::Duration;

use ccci::report::{LintStatus, Results, Status, TeardownResult};
use ccci::stage::Stage;

use crate::common::*;

/// Runs `ccci run` and returns (exit code, results.json, stderr, run id).
fn run(w: &World, args: &[&str]) -> (i32, Results, String, String) {
    let run_id = format!("a{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).arg("run").args(args);
    let o = output_within(c, Duration::from_secs(500));
    let r = w.results(&run_id);
    (code(&o), r, stderr_of(&o), run_id)
}

/// Secrets whose name starts with the stack's (labelled or not).
fn secrets_of(stack: &str) -> Vec<String> {
    let o = Command::new("docker").args(["secret", "ls", "--format", "{{.Name}}"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|n| n.starts_with(&format!("{stack}_")))
        .map(String::from)
        .collect()
}

const IN_APP: &str = "docker exec \"$(docker ps -q --filter label=com.docker.stack.namespace=$CCCI_STACK --filter name=${CCCI_STACK}_app | head -n 1)\"";

#[test]
fn a_compose_file_idiom_recipe_with_an_overlay_and_a_head_adding_a_secret_reaches_level_five() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("multi");
    let port = free_port();
    w.trusted(
        "multi",
        "ccci.yml",
        &format!(
            "extra_env: {{ HTTP_PORT: \"{port}\", SMTP_PASSWORD: \"extra-env-credential-7f3a\" }}\n\
             upgrade_extra_env: {{ SECRET_API_TOKEN_VERSION: \"v1\" }}\n\
             timeouts: {{ deploy: 90, http: 30, test: 60, hook: 60 }}\n\
             health: {{ url: \"http://127.0.0.1:{port}/\", expect: [200] }}\n"
        ),
        false,
    );
    // The overlay adds a service of its own.
    w.trusted(
        "multi",
        "compose.ccci.yml",
        "---\nversion: \"3.8\"\nservices:\n  sidecar:\n    image: ccci-fixture-busybox:1\n    command: [\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 1; done\"]\n    stop_grace_period: 1s\n",
        false,
    );
    w.trusted("multi", "hooks/pre_backup", &script(&format!("{IN_APP} sh -c 'echo original > /data/marker'")), true);
    w.trusted("multi", "hooks/pre_restore", &script(&format!("{IN_APP} sh -c 'echo changed > /data/marker'")), true);
    w.trusted("multi", "hooks/post_restore", &script(&format!("{IN_APP} grep -qx original /data/marker")), true);
    w.trusted(
        "multi",
        "test_shape",
        &script(
            r#"env="$CCCI_APP_ENV"
fail() { echo "test_shape: $*"; exit 1; }
# Every service runs: the second compose file's worker and the overlay's sidecar.
for s in app worker sidecar; do
  docker service ls --filter "label=com.docker.stack.namespace=$CCCI_STACK" --format '{{.Name}} {{.Replicas}}' |
    grep -qx "${CCCI_STACK}_$s 1/1" || fail "$s is not running"
done
# One final COMPOSE_FILE line holds the expanded list, the overlay and ccci's stamp overlay.
cf=$(grep '^COMPOSE_FILE=' "$env" | tail -n 1)
[ "$cf" = "COMPOSE_FILE='compose.yml:compose.worker.yml:compose.ccci.yml:compose.ccci-stamp.yml'" ] || fail "last line $cf"
# DOMAIN and STACK_NAME are the run's, whatever the sample said.
[ "$(grep '^DOMAIN=' "$env" | tail -n 1)" = "DOMAIN=$CCCI_APP_DOMAIN" ] || fail "DOMAIN"
[ "$(grep '^STACK_NAME=' "$env" | tail -n 1)" = "STACK_NAME=$CCCI_STACK" ] || fail "STACK_NAME"
c=$(docker ps -q --filter "name=${CCCI_STACK}_app" | head -n 1)
d=$(docker exec "$c" /bin/sh -c 'echo "$APP_DOMAIN"')
[ "$d" = "$CCCI_APP_DOMAIN" ] || fail "APP_DOMAIN in the app: $d"
# abra wrote the deployed version back into TYPE.
grep -q '^TYPE=multi:[0-9a-f]\{8\}' "$env" || fail "TYPE: $(grep '^TYPE=' "$env")"
# The .env came from the base, whose sample did not know the API token yet.
if grep -q 'API token' "$env"; then fail "the .env came from the head"; fi"#,
        ),
        true,
    );
    let stack = w.stack("multi");
    let (code, r, err, run_id) = run(&w, &["--recipe", "multi"]);
    assert_eq!(code, 0, "{err}");
    for s in Stage::ALL {
        assert_eq!(status(&r, s), Status::Pass, "{s}: {}", reason(&r, s));
    }
    assert_eq!(r.lint.status, LintStatus::Pass, "{:?}", r.lint);
    assert_eq!(r.level, 5, "{r:?}");
    assert_eq!(r.base, "2.0.0+1");
    // The head declares no version: its commit stands in (an empty label is skipped).
    let head = r.head.as_str();
    assert_eq!(r.version, &head[..8], "{r:?}");
    // Secrets: generated after the overrides, again for the head's new one, values never logged.
    let log = w.abra_log();
    assert_eq!(
        log.lines().filter(|l| l.starts_with("start ") && l.contains("app secret generate")).count(),
        2,
        "{log}"
    );
    assert!(!log.contains("app new -n -o -C -S"), "no secrets at app new: {log}");
    let run_log = fs::read_to_string(w.run_dir(&run_id).join("run.log")).unwrap();
    assert!(!run_log.contains("fixture-secret-value"), "a generated secret value reached run.log");
    assert!(run_log.contains("already exists"), "the second generate met the existing secret: {run_log}");
    // An operator's extra_env value (a credential, say) reaches the app's .env, never the
    // public report.
    let results = fs::read_to_string(w.run_dir(&run_id).join("results.json")).unwrap();
    assert!(!results.contains("extra-env-credential-7f3a"), "an extra_env value reached results.json");
    assert!(results.contains("SMTP_PASSWORD"), "the key stays, its value hidden: {results}");
    // Everything is gone, the unlabelled secrets included.
    assert!(secrets_of(&stack).is_empty(), "{:?}", secrets_of(&stack));
    assert_eq!(r.teardown.result, TeardownResult::Clean, "{r:?}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn backup_and_restore_round_trip_without_a_snapshot_id() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut w = World::new();
    w.recipe("hello");
    w.own_port("hello");
    // The backup's log stream carries no snapshot id at all.
    w.abra_mode("no-id:backup");
    let out = w.path().join("restored");
    w.trusted("hello", "hooks/pre_backup", &script(&format!("{IN_APP} sh -c 'echo original > /data/marker'")), true);
    w.trusted("hello", "hooks/pre_restore", &script(&format!("{IN_APP} sh -c 'echo changed > /data/marker'")), true);
    w.trusted("hello", "hooks/post_restore", &script(&format!("{IN_APP} cat /data/marker > {}", out.display())), true);
    let (code, r, err, run_id) = run(&w, &["--recipe", "hello", "--stages", "install,backup,restore"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((status(&r, Stage::Backup), status(&r, Stage::Restore)), (Status::Pass, Status::Pass), "{r:?}");
    assert_eq!(fs::read_to_string(&out).unwrap().trim(), "original", "the latest snapshot was restored");
    assert!(err.contains("restoring the latest snapshot"), "{err}");
    // The raw output is kept; restore was never handed a guess.
    let raw = fs::read_to_string(w.run_dir(&run_id).join("backup-1.txt")).unwrap();
    assert!(raw.contains("backup finished") && raw.lines().count() > 3, "{raw}");
    assert!(w.run_dir(&run_id).join("restore.txt").is_file());
    let restore =
        w.abra_log().lines().find(|l| l.starts_with("start ") && l.contains("app restore")).unwrap().to_string();
    assert!(restore.ends_with(&format!("app restore -n -o -C {}", w.domain("hello", "0", ""))), "{restore}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn lint_passes_or_fails_on_the_tested_ref_and_never_changes_the_exit_code() {
    let Some((_slot, w)) = swarm_world() else { return };
    // A lightweight tag: abra's rule R014 (critical) fails; the deploy does not care.
    let hello = w.recipe("hello");
    git(&hello, &["tag", "0.9.0", "1.0.0+1^{commit}"]);
    w.own_port("hello");
    let (code, r, err, run_id) = run(&w, &["--recipe", "hello", "--stages", "install"]);
    assert_eq!(code, 0, "lint never changes the exit code: {err}");
    assert_eq!(status(&r, Stage::Install), Status::Pass);
    assert_eq!(r.lint.status, LintStatus::Fail, "{:?}", r.lint);
    assert_eq!(r.lint.rules_failed, ["R014"]);
    assert_eq!(r.rungs.lint, Status::Fail);
    assert!(r.lint.detail.as_deref().unwrap().contains("critical errors"), "{:?}", r.lint);
    let table = fs::read_to_string(w.run_dir(&run_id).join("lint.txt")).unwrap();
    assert!(table.contains("R014") && table.contains("SATISFIED"), "{table}");
    // The lint ran under a terminal, in an abra dir of its own, which is gone afterwards.
    assert!(w.abra_log().contains("recipe lint -n -o hello"), "{}", w.abra_log());
    assert!(!w.run_dir(&run_id).join("lint").exists());

    // A head without its .env.sample: lint fails on the missing file (R008), and so does the
    // deploy, for its own reason.
    let broken = w.recipe_as("hello", "broke");
    git(&broken, &["rm", "-q", ".env.sample"]);
    git(&broken, &["commit", "-q", "-m", "lose the sample"]);
    let (code, r, _, _) = run(&w, &["--recipe", "broke", "--stages", "install"]);
    assert_eq!(code, 1);
    assert!(reason(&r, Stage::Install).contains(".env.sample"), "{}", reason(&r, Stage::Install));
    assert_eq!(r.lint.status, LintStatus::Fail, "{:?}", r.lint);
    assert!(r.lint.rules_failed.iter().any(|x| x == "R008"), "{:?}", r.lint);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn a_sample_naming_another_recipe_fails_the_first_stage_clearly() {
    let Some((_slot, w)) = swarm_world() else { return };
    let other = w.recipe_as("hello", "other");
    let sample = other.join(".env.sample");
    fs::write(&sample, fs::read_to_string(&sample).unwrap().replace("TYPE=other", "TYPE=hello:1.1.0+1")).unwrap();
    git(&other, &["commit", "-q", "-a", "-m", "name another recipe"]);
    let (code, r, err, _) = run(&w, &["--recipe", "other", "--stages", "install,custom"]);
    assert_eq!(code, 1, "{err}");
    let why = reason(&r, Stage::Install);
    assert!(why.contains("names recipe \"hello\"") && why.contains("not other"), "{why}");
    assert!(!w.abra_log().contains("app deploy"), "nothing was deployed");
    assert_eq!(r.teardown.result, TeardownResult::Clean, "{r:?}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn a_recipe_cloned_by_the_run_start_janitor_does_not_stand_in_for_the_fetch() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let mut w = World::new();
    w.recipe("hello");
    // An app abra lists (not a run app): listing it clones its recipe into the run's abra dir,
    // as the predecessor saw abra do, before the fetch.
    let warm = w.abra_home.join("servers/default/warm-hello.example.org.env");
    fs::write(&warm, "TYPE=hello\nDOMAIN=warm-hello.example.org\n").unwrap();
    w.abra_mode("fail:new");
    let src = w.recipes.join("hello");
    let (code, r, err, _) = run(&w, &["--recipe", "hello", "--src", src.to_str().unwrap(), "--stages", "install"]);
    assert_eq!(code, 1);
    assert!(err.contains("fetched hello (git clone"), "the fetch cloned the code under test: {err}");
    assert!(reason(&r, Stage::Install).contains("abra app new failed"), "{}", reason(&r, Stage::Install));
    let log = w.abra_log();
    let ls = log.find("app ls").expect("the run-start janitor listed apps");
    assert!(ls < log.find("app new").unwrap(), "{log}");
    fs::remove_file(&warm).unwrap();
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn a_compact_listing_of_hundreds_of_apps_parses_and_apps_are_keyed_by_app_name() {
    if !swarm_available() {
        return;
    }
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let servers = w.abra_home.join("servers/default");
    for i in 0..600 {
        fs::write(servers.join(format!("warm-{i:04}.apps.example.org.env")), "TYPE=other\nDOMAIN=x\n").unwrap();
    }
    // A dead run's app whose DOMAIN was never templated: only its file name is its app name.
    let dead = w.domain("hello", "0", "");
    fs::write(servers.join(format!("{dead}.env")), "TYPE=hello\nDOMAIN=hello.example.org\n").unwrap();
    let mut c = w.ccci();
    c.args(["janitor", "--dry-run", "--json"]);
    let o = output_within(c, Duration::from_secs(240));
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["discovery"]["abra"]["ok"], true, "{}", v["discovery"]);
    assert_eq!(v["discovery"]["abra"]["listed"], 601, "{}", v["discovery"]);
    let app = v["apps"].as_array().unwrap().iter().find(|a| a["domain"] == dead.as_str()).expect("the dead run's app");
    assert_eq!(app["sources"], serde_json::json!(["abra"]), "{app}");
}

#[test]
fn an_app_left_with_only_unlabelled_secrets_is_found_by_name_and_reaped() {
    if !swarm_available() {
        return;
    }
    let w = World::new();
    fs::create_dir_all(&w.lock_dir).unwrap();
    let domain = w.domain("hello", "9", "");
    let stack = ccci::names::stack_name(&domain);
    // The dead run's lockfile (free): abra's secrets cannot carry ccci's stamp, so without a
    // lockfile nothing would prove the app is ccci's (and the janitor would leave it).
    let lock = w.lock_dir.join(ccci::names::lock_file_name(&domain));
    fs::write(&lock, "").unwrap();
    let value = w.path().join("value");
    fs::write(&value, "secret-value-123").unwrap();
    for name in [format!("{stack}_db_password_v1"), format!("{stack}_api_token_v2")] {
        let st = Command::new("docker").args(["secret", "create", &name]).arg(&value).output().unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    }
    let mut c = w.ccci();
    c.args(["janitor", "--json"]);
    let o = output_within(c, Duration::from_secs(240));
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let app = v["apps"].as_array().unwrap().iter().find(|a| a["domain"] == domain.as_str()).expect("found by name");
    assert_eq!(
        (app["sources"].clone(), app["action"].as_str()),
        (serde_json::json!(["docker"]), Some("reaped")),
        "{v}"
    );
    assert!(secrets_of(&stack).is_empty(), "{:?}", secrets_of(&stack));
}

#[test]
fn the_preflight_wants_a_catalogue_clone_and_a_short_enough_suffix() {
    let w = World::new();
    fs::remove_dir_all(w.abra_home.join("catalogue")).unwrap();
    fs::create_dir(w.abra_home.join("catalogue")).unwrap();
    let o = w.run(&["run", "--recipe", "hello"]);
    assert_eq!(code(&o), 2);
    let err = stderr_of(&o);
    assert!(err.contains("catalogue") && err.contains("git clone"), "the error names the fix: {err}");
    assert!(!w.runs_dir.exists() || fs::read_dir(&w.runs_dir).unwrap().count() == 0, "nothing was created");
    assert!(fs::read_dir(w.abra_home.join("catalogue")).unwrap().next().is_none(), "ccci wrote into the catalogue");

    let mut c = w.ccci();
    c.env("CCCI_DOMAIN_SUFFIX", format!("{}.example.org", "x".repeat(30))).args(["run", "--recipe", "hello"]);
    let o = output_within(c, Duration::from_secs(60));
    assert_eq!(code(&o), 2);
    assert!(stderr_of(&o).contains("CCCI_DOMAIN_SUFFIX"), "{}", stderr_of(&o));
}
