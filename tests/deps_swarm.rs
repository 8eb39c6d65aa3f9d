//! Dependency apps on a real swarm (issue 19): `ssoapp` needs `idp` (its healthcheck fetches the
//! IdP's discovery document and checks the issuer is `IDP_DOMAIN`). The IdP is deployed from
//! the fixture catalogue before the app, provisioned by a trusted hook whose client secret
//! reaches a custom test through `$CCCI_DEPS_FILE` and is masked everywhere else, and torn down
//! after the app.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use ccci::exit::Outcome;
use ccci::janitor::report::{LeaseSeen, Report};
use ccci::janitor::vocab::Act;
use ccci::report::{Status, TeardownResult};
use ccci::stage::Stage;
use serde_json::Value;

use crate::common::*;

/// The provision hook: reads the IdP's static token from its host port and prints the
/// credentials as one JSON object (the client secret listed as secret). With `park`, it first
/// prints `parked-in-provision` and waits for the gate file: the run then holds its app lock
/// with the dependency up and the app not yet deployed.
fn provision_hook(idp_port: u16, park: Option<&Path>) -> String {
    let park = park
        .map(|gate| format!("echo parked-in-provision >&2\nwhile [ ! -e '{}' ]; do sleep 0.1; done\n", gate.display()))
        .unwrap_or_default();
    format!(
        r#"#!/bin/sh
set -eu
{park}token=$(busybox wget -q -O - "http://127.0.0.1:{idp_port}/token")
secret=$(printf '%s' "$token" | sed 's/.*"access_token": "\([^"]*\)".*/\1/')
echo "provisioning $CCCI_DEP_NAME at $CCCI_DEP_DOMAIN ($CCCI_DEP_STACK)" >&2
printf '{{"realm": "ccci", "client_id": "ccci-fixture", "client_secret": "%s", "discovery_url": "http://127.0.0.1:{idp_port}/.well-known/openid-configuration"}}\n' "$secret"
"#
    )
}

/// A world where `recipe` (built from the ssoapp fixture) needs `idp`, each on a host port of
/// its own. Returns the IdP's port.
fn sso_world(w: &World, recipe: &str, park_provision: Option<&Path>) -> u16 {
    if recipe == "ssoapp" {
        w.recipe("ssoapp");
    } else {
        w.recipe_as("ssoapp", recipe);
    }
    if !w.recipes.join("idp").exists() {
        w.recipe("idp");
    }
    let (app_port, idp_port) = (free_port(), free_port());
    w.trusted(
        recipe,
        "ccci.yml",
        &format!(
            r#"extra_env: {{ HTTP_PORT: "{app_port}", IDP_DOMAIN: "{{{{deps.idp.domain}}}}", IDP_PORT: "{idp_port}" }}
timeouts: {{ deploy: 60, http: 30 }}
deps:
  - recipe: idp
    env: {{ HTTP_PORT: "{idp_port}" }}
    provision: {{ run: hooks/provision_idp, secrets: [client_secret] }}
    ready: {{ timeout: 60 }}
"#
        ),
        false,
    );
    w.trusted(recipe, "hooks/provision_idp", &provision_hook(idp_port, park_provision), true);
    idp_port
}

fn run_to_end(w: &World, recipe: &str, run_id: &str, stages: &str, extra: &[&str]) -> std::process::Output {
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", run_id).args(["run", "--recipe", recipe, "--stages", stages]).args(extra);
    output_within(c, Duration::from_secs(540))
}

fn start(w: &World, recipe: &str, run_id: &str, stages: &str) -> (Child, LineWatch) {
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", run_id)
        .args(["run", "--recipe", recipe, "--stages", stages])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let err = LineWatch::stderr_of(&mut child);
    (child, err)
}

fn janitor(w: &World) -> Report {
    let mut c = w.ccci();
    c.args(["janitor", "--json"]);
    let o = output_within(c, Duration::from_secs(240));
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    janitor_report(&o.stdout)
}

fn dep_domain(w: &World, recipe: &str) -> String {
    ccci::names::dep_domain(&w.domain(recipe, "0", ""), 1)
}

#[test]
fn a_recipe_with_a_dependency_passes_five_stages_and_its_credentials_stay_masked() {
    let Some((_slot, w)) = swarm_world() else { return };
    let idp_port = sso_world(&w, "ssoapp", None);
    // The custom test reads the credentials from $CCCI_DEPS_FILE, keeps a copy for this test,
    // checks them against the IdP and prints the secret (which the logs must mask).
    let seen = w.path().join("deps-seen.json");
    w.trusted(
        "ssoapp",
        "test_sso",
        &format!(
            r#"#!/bin/sh
set -eu
cp "$CCCI_DEPS_FILE" '{seen}'
secret=$(sed -n 's/.*"client_secret": "\([^"]*\)".*/\1/p' "$CCCI_DEPS_FILE")
domain=$(sed -n 's/.*"domain": "\([^"]*\)".*/\1/p' "$CCCI_DEPS_FILE")
echo "client secret is $secret"
busybox wget -q -O - "http://127.0.0.1:{idp_port}/token" | grep -qF "$secret"
busybox wget -q -O - "http://127.0.0.1:{idp_port}/.well-known/openid-configuration" | grep -qF "https://$domain/"
echo "deploys so far: $(cat "$CCCI_DEPLOY_COUNT_FILE")"
"#,
            seen = seen.display()
        ),
        true,
    );
    let run_id = format!("d{}", unique());
    let junit = w.path().join("junit.xml");
    let o = run_to_end(
        &w,
        "ssoapp",
        &run_id,
        "install,upgrade,backup,restore,custom",
        &["--junit", junit.to_str().unwrap()],
    );
    let err = stderr_of(&o);
    assert_eq!(code(&o), 0, "{err}");
    let r = w.results(&run_id);
    for s in Stage::ALL {
        assert_eq!(stage(&r, s).status, Status::Pass, "{s}: {r:?}");
    }
    let dep = dep_domain(&w, "ssoapp");
    let d = &r.deps[0];
    assert_eq!((d.name.as_str(), d.domain.as_str()), ("idp", dep.as_str()), "{r:?}");
    assert_eq!(d.version, "1.0.0+1", "the newest catalogue release: {r:?}");
    assert!(d.ready_ms.is_some(), "{r:?}");
    assert_eq!(d.teardown, TeardownResult::Clean, "{r:?}");
    assert_eq!(r.teardown.result, TeardownResult::Clean);
    assert!(err.contains(&format!("dep idp    {dep} 1.0.0+1  ready in")), "the summary names it: {err}");
    let md = fs::read_to_string(w.run_dir(&run_id).join("summary.md")).unwrap();
    assert!(md.contains("### Dependencies") && md.contains(&format!("`{dep}`")), "{md}");

    // The credentials reached the test…
    let deps: Value = serde_json::from_str(&fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(deps["idp"]["domain"], dep.as_str());
    assert_eq!(deps["idp"]["client_id"], "ccci-fixture");
    let secret = deps["idp"]["client_secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32, "{deps}");
    assert!(err.contains("test_sso| deploys so far: 2"), "1 + deps deploys were counted: {err}");
    // …and are masked in every log and report.
    let run_dir = w.run_dir(&run_id);
    let log = fs::read_to_string(run_dir.join("run.log")).unwrap();
    assert!(log.contains("client secret is ***"), "{log}");
    for (what, text) in [
        ("stderr", err.clone()),
        ("run.log", log),
        ("results.json", fs::read_to_string(run_dir.join("results.json")).unwrap()),
        ("summary.md", fs::read_to_string(run_dir.join("summary.md")).unwrap_or_default()),
        ("junit.xml", fs::read_to_string(&junit).unwrap()),
    ] {
        assert!(!text.contains(&secret), "the dependency's client secret leaked into {what}");
    }
    assert!(r.flags.no_secret_leak);
    // Deploy order: the dependency before the app; teardown: the app first.
    let log = w.abra_log();
    let app = w.domain("ssoapp", "0", "");
    let pos = |call: &str, domain: &str| {
        log.lines()
            .position(|l| l.starts_with("start ") && l.contains(call) && l.ends_with(&format!(" {domain}")))
            .unwrap_or_else(|| panic!("no {call} of {domain} in the abra log:\n{log}"))
    };
    assert!(pos("app deploy", &dep) < pos("app deploy", &app), "{log}");
    assert!(pos("app undeploy", &app) < pos("app undeploy", &dep), "{log}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    assert!(!w.lock_dir.join(format!("cc-ci-app-{dep}.lock")).exists(), "the dep's lockfile is unlinked");
}

#[test]
fn a_dependency_that_never_becomes_ready_fails_the_run_cleanly() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("hello");
    w.recipe("sick");
    let port = free_port();
    w.trusted(
        "hello",
        "ccci.yml",
        &format!(
            "extra_env: {{ HTTP_PORT: \"{port}\" }}\ntimeouts: {{ deploy: 60 }}\ndeps:\n  - recipe: sick\n    env: {{ HTTP_PORT: \"{}\" }}\n    ready: {{ timeout: 30 }}\n",
            free_port()
        ),
        false,
    );
    let run_id = format!("n{}", unique());
    let o = run_to_end(&w, "hello", &run_id, "install,custom", &[]);
    let err = stderr_of(&o);
    assert_eq!(code(&o), 1, "{err}");
    let r = w.results(&run_id);
    let install = stage(&r, Stage::Install);
    assert_eq!(install.status, Status::Fail, "{r:?}");
    assert!(install.reason.as_deref().unwrap().starts_with("dependency sick: not ready"), "{r:?}");
    assert_eq!(stage(&r, Stage::Custom).status, Status::Unver, "{r:?}");
    assert_eq!(r.outcome, Outcome::Fail);
    // Its tasks, logs and health were saved before teardown, in a directory of its own.
    assert!(r.diagnostics.iter().any(|f| f == "diagnostics/sick/tasks.txt"), "{r:?}");
    assert!(install.reason.as_deref().unwrap().contains("(see diagnostics/sick/"), "{r:?}");
    assert_eq!(r.deps[0].ready_ms, None, "{r:?}");
    assert_eq!(r.deps[0].teardown, TeardownResult::Clean, "{r:?}");
    assert_eq!(r.teardown.result, TeardownResult::Clean, "{r:?}");
    let app = w.domain("hello", "0", "");
    assert!(!w.abra_log().contains(&format!("--domain={app}")), "the app is never created");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn a_run_killed_between_its_dependency_and_its_app_leaves_the_dependency_to_the_janitor() {
    let Some((_slot, w)) = swarm_world() else { return };
    let gate = w.path().join("provision-gate");
    sso_world(&w, "ssoapp", Some(&gate));
    let run_id = format!("k{}", unique());
    let token = token_env(&run_id);
    let _guard = KillTokens(vec![token.clone()]);
    let (mut run, err) = start(&w, "ssoapp", &run_id, "install");
    err.wait_for("parked-in-provision", Duration::from_secs(180));
    let dep = dep_domain(&w, "ssoapp");
    let app = w.domain("ssoapp", "0", "");

    // The run is alive: its dependency is never reaped.
    let r = janitor(&w);
    let apps = &r.apps;
    assert_eq!(apps.len(), 1, "{r:?}");
    assert_eq!((apps[0].domain.as_str(), apps[0].action), (dep.as_str(), Act::Left), "{r:?}");

    signal(run.id(), libc::SIGKILL);
    let _ = run.wait();
    wait_until("the run's children to die with it", Duration::from_secs(20), || pids_with_env(&token).is_empty());
    let left = w.leftovers();
    assert!(left.iter().any(|l| l.starts_with("service:") && l.contains(&ccci::names::stack_name(&dep))), "{left:?}");
    assert!(!left.iter().any(|l| l.contains(&ccci::names::stack_name(&app))), "the app was never deployed: {left:?}");

    // The dependency's own lock is free now, but its owner's is held (here by this test, as a
    // new run of the same app would hold it before taking its dependencies' locks): left.
    let owner_lock = fs::File::open(w.lock_dir.join(format!("cc-ci-app-{app}.lock"))).unwrap();
    owner_lock.try_lock().unwrap();
    let r = janitor(&w);
    let apps = &r.apps;
    assert_eq!((apps[0].domain.as_str(), apps[0].action), (dep.as_str(), Act::Left), "{r:?}");
    assert!(
        apps[0].reason.as_deref().unwrap().contains(&format!("its owning run's app lock ({app}) is held")),
        "{r:?}"
    );
    assert!(w.leftovers().iter().any(|l| l.starts_with("service:")), "{:?}", w.leftovers());
    drop(owner_lock);

    // Dead: the janitor reaps the dependency, and nothing else.
    let r = janitor(&w);
    let apps = &r.apps;
    assert_eq!(apps.len(), 1, "{r:?}");
    assert_eq!((apps[0].domain.as_str(), apps[0].action), (dep.as_str(), Act::Reaped), "{r:?}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    assert!(!w.lock_dir.join(format!("cc-ci-app-{dep}.lock")).exists());
}

#[test]
fn two_runs_needing_the_same_dependency_recipe_each_get_their_own() {
    if !swarm_available() {
        return;
    }
    let _slots = swarm_slots_both();
    let w = World::new();
    sso_world(&w, "ssoapp", None);
    sso_world(&w, "ssoapp2", None);
    let gate = w.path().join("gate");
    for recipe in ["ssoapp", "ssoapp2"] {
        w.trusted(
            recipe,
            "test_wait",
            &format!("#!/bin/sh\necho parked-in-test\nwhile [ ! -e '{}' ]; do sleep 0.1; done\n", gate.display()),
            true,
        );
    }
    let (a_id, b_id) = (format!("a{}", unique()), format!("b{}", unique()));
    let _guards = KillTokens(vec![token_env(&a_id), token_env(&b_id)]);
    let (mut a, a_err) = start(&w, "ssoapp", &a_id, "install,custom");
    let (mut b, b_err) = start(&w, "ssoapp2", &b_id, "install,custom");
    a_err.wait_for("parked-in-test", Duration::from_secs(240));
    b_err.wait_for("parked-in-test", Duration::from_secs(240));
    // Both dependencies are up at once, each named after its own run's app.
    let (dep_a, dep_b) = (dep_domain(&w, "ssoapp"), dep_domain(&w, "ssoapp2"));
    assert_ne!(dep_a, dep_b);
    let left = w.leftovers();
    for dep in [&dep_a, &dep_b] {
        let stack = ccci::names::stack_name(dep);
        assert!(left.iter().any(|l| l == &format!("service:{stack}_app")), "{dep} is not up: {left:?}");
    }
    fs::write(&gate, "").unwrap();
    assert!(wait_within(&mut a, Duration::from_secs(240)).success(), "{}", a_err.text());
    assert!(wait_within(&mut b, Duration::from_secs(240)).success(), "{}", b_err.text());
    assert_eq!(w.results(&a_id).deps[0].domain, dep_a);
    assert_eq!(w.results(&b_id).deps[0].domain, dep_b);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn the_deploy_count_guard_allows_one_deploy_per_app_and_dependency() {
    let Some((_slot, w)) = swarm_world() else { return };
    sso_world(&w, "ssoapp", None);
    // A deploy more than the app and its dependency: the guard must fail the stage.
    w.trusted(
        "ssoapp",
        "test_extra_deploy",
        "#!/bin/sh\nset -eu\nn=$(cat \"$CCCI_DEPLOY_COUNT_FILE\")\n[ \"$n\" -eq 2 ]\necho $((n + 1)) >\"$CCCI_DEPLOY_COUNT_FILE\"\n",
        true,
    );
    let run_id = format!("c{}", unique());
    let o = run_to_end(&w, "ssoapp", &run_id, "install,custom", &[]);
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    let r = w.results(&run_id);
    assert_eq!(stage(&r, Stage::Install).status, Status::Pass, "{r:?}");
    let custom = stage(&r, Stage::Custom);
    assert_eq!(custom.tests[0].status, Status::Pass, "the test saw 1 + deps = 2 deploys: {r:?}");
    assert_eq!(custom.status, Status::Fail, "{r:?}");
    let reason = custom.reason.as_deref().unwrap();
    assert!(reason.contains("deploy-count guard: 3 deploys") && reason.contains("1 dependencies"), "{reason}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// A test that cannot run without its dependency skips (exit 77); a stage of skips is never
/// green.
#[test]
fn a_skip_only_custom_stage_is_an_unintentional_skip() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("hello");
    w.own_port("hello");
    w.trusted(
        "hello",
        "test_needs_idp",
        "#!/bin/sh\necho 'deps-not-ready: idp is not in $CCCI_DEPS_FILE'\nexit 77\n",
        true,
    );
    let run_id = format!("s{}", unique());
    let o = run_to_end(&w, "hello", &run_id, "install,custom", &[]);
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    let r = w.results(&run_id);
    let custom = stage(&r, Stage::Custom);
    assert_eq!((custom.status, custom.intentional), (Status::Skip, false), "{r:?}");
    // `intentional` is written only when true: the raw document has no such key.
    let raw = w.results_json(&run_id);
    let raw_custom = raw["stages"].as_array().unwrap().iter().find(|s| s["name"] == "custom").unwrap();
    assert_eq!(raw_custom.get("intentional"), None, "{raw}");
    assert_eq!(custom.tests[0].status, Status::Skip);
    assert!(custom.tests[0].reason.as_deref().unwrap().contains("deps-not-ready"), "{r:?}");
    assert_eq!(r.skips.unintentional, ["functional"], "{r:?}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// On a shared swarm (issue 20) runs lease only their app's domain, so a dependency is leased
/// through its owner: host B's janitor leaves host A's dependency while A's run holds the
/// app's lease — B has no lockfile of it to probe — and reaps it under the owner's lease once
/// that lapsed.
#[test]
fn on_a_shared_swarm_a_dependency_is_reaped_only_after_its_owners_lease_lapsed() {
    if !swarm_available() {
        return;
    }
    let _slot = swarm_slot();
    let cluster = crate::common::etcd::Cluster::start();
    let mut a = World::new();
    let mut b = World::new();
    b.suffix = a.suffix.clone();
    for (w, name) in [(&mut a, "host-a"), (&mut b, "host-b")] {
        w.set("CCCI_LEASE_ENDPOINTS", &cluster.endpoints());
        w.set("CCCI_LEASE_TTL", "3");
        w.set("CCCI_LEASE_PREFIX", "/t");
        w.set("DRONE_STAGE_MACHINE", name);
    }
    // Host B has run nothing yet; its lock dir exists as `ccci run` would have made it.
    fs::create_dir_all(&b.lock_dir).unwrap();
    let gate = a.path().join("provision-gate");
    sso_world(&a, "ssoapp", Some(&gate));
    let run_id = format!("l{}", unique());
    let token = token_env(&run_id);
    let _guard = KillTokens(vec![token.clone()]);
    let (mut run, err) = start(&a, "ssoapp", &run_id, "install");
    err.wait_for("parked-in-provision", Duration::from_secs(180));
    let (app, dep) = (a.domain("ssoapp", "0", ""), dep_domain(&a, "ssoapp"));

    let r = janitor(&b);
    let apps = &r.apps;
    assert_eq!(apps.len(), 1, "{r:?}");
    assert_eq!((apps[0].domain.as_str(), apps[0].action), (dep.as_str(), Act::Left), "{r:?}");
    assert!(apps[0].reason.as_deref().unwrap().contains(&format!("its owner {app}")), "{r:?}");

    signal(run.id(), libc::SIGKILL);
    let _ = run.wait();
    wait_until("the run's children to die with it", Duration::from_secs(20), || pids_with_env(&token).is_empty());
    let key = format!("/t/apps/{app}");
    wait_until("the owner's lease to lapse", Duration::from_secs(60), || cluster.exists(&key) == Some(false));

    let r = janitor(&b);
    let apps = &r.apps;
    assert_eq!(apps.len(), 1, "{r:?}");
    assert_eq!((apps[0].domain.as_str(), apps[0].action), (dep.as_str(), Act::Reaped), "{r:?}");
    assert_eq!(apps[0].lease, Some(LeaseSeen::Taken), "{r:?}");
    assert!(!a.leftovers().iter().any(|l| !l.starts_with("env:")), "{:?}", a.leftovers());
    // Host A's own leftovers (the dependency's .env and the lockfiles) are its janitor's.
    janitor(&a);
    assert!(a.leftovers().is_empty() && b.leftovers().is_empty(), "{:?} {:?}", a.leftovers(), b.leftovers());
    assert_eq!(cluster.exists(&key), Some(false), "the janitors released the owner's lease");
}
