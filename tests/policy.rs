//! `ccci policy DIR`: the real binary and the real docker CLI (`docker stack config`, no daemon
//! and no swarm needed) on benign and hostile recipe checkouts. Exit 0 allowed, 1 refused with
//! every violation named, 2 when the recipe cannot be rendered. Every run is bounded.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;

const BOUND: Duration = Duration::from_secs(120);

fn policy(w: &World, args: &[&str]) -> Output {
    let mut c = w.ccci();
    c.arg("policy").args(args);
    output_within(c, BOUND)
}

fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A plain (non-git) recipe checkout named `name` with this compose file.
fn checkout(w: &World, name: &str, compose: &str) -> PathBuf {
    let d = w.path().join("checkouts").join(name);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("compose.yml"), compose).unwrap();
    fs::write(
        d.join(".env.sample"),
        format!("TYPE={name}\nDOMAIN={name}.example.com\nLETS_ENCRYPT_ENV=production\nCOMPOSE_FILE=\"compose.yml\"\n"),
    )
    .unwrap();
    fs::write(d.join("index.html"), "hi\n").unwrap();
    d
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SERVICE: &str = "version: \"3.8\"\nservices:\n  app:\n    image: busybox:1\n";

#[test]
fn a_benign_recipe_is_allowed_and_nothing_is_created() {
    let w = World::new();
    let hello = w.recipe("hello");
    let o = policy(&w, &[arg(&hello)]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    assert!(stdout_of(&o).starts_with("allowed: hello (1 service checked"), "{}", stdout_of(&o));
    // Named explicitly, the sample's TYPE must match it, and does.
    let o = policy(&w, &["--recipe", "hello", arg(&hello)]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    assert!(!w.runs_dir.exists() && !w.lock_dir.exists(), "ccci policy created a run dir or lock dir");
}

#[test]
fn hostile_recipes_are_refused_naming_service_key_value_and_rule() {
    let w = World::new();
    fs::write(w.path().join("outside.txt"), "not the recipe's\n").unwrap();
    let cases: &[(&str, String, [&str; 3])] = &[
        (
            "sock",
            format!("{SERVICE}    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n"),
            ["volumes", "/var/run/docker.sock:/var/run/docker.sock", "denied-host-path"],
        ),
        (
            "root",
            format!("{SERVICE}    volumes:\n      - type: bind\n        source: /\n        target: /host\n"),
            ["volumes", "/:/host", "denied-host-path"],
        ),
        (
            "updir",
            format!("{SERVICE}    volumes:\n      - ../../..:/up:ro\n"),
            ["volumes", ":/up:ro", "bind-outside-tree"],
        ),
        (
            "bindvol",
            format!(
                "{SERVICE}    volumes:\n      - etc:/e\nvolumes:\n  etc:\n    driver_opts:\n      type: none\n      o: bind\n      device: /etc\n"
            ),
            ["volumes.etc.driver_opts", "device=/etc,o=bind,type=none", "volume-driver-opts"],
        ),
        (
            "hostnet",
            format!("{SERVICE}    networks: [hostnet]\nnetworks:\n  hostnet:\n    external: true\n    name: host\n"),
            ["networks.hostnet", "host", "external-network"],
        ),
        ("capadd", format!("{SERVICE}    cap_add: [SYS_ADMIN]\n"), ["cap_add", "SYS_ADMIN", "cap-add"]),
        (
            "cfgout",
            format!(
                "{SERVICE}    configs:\n      - source: c\n        target: /c\nconfigs:\n  c:\n    name: ${{STACK_NAME}}_c_v1\n    file: ../../outside.txt\n"
            ),
            ["configs.c.file", "outside.txt", "file-outside-tree"],
        ),
        (
            "foreign",
            format!(
                "{SERVICE}    deploy:\n      labels:\n        - \"traefik.http.routers.${{STACK_NAME}}.rule=Host(`ci.example.org`) || Host(`${{DOMAIN}}`)\"\n        - \"traefik.http.routers.${{STACK_NAME}}.tls.certresolver=${{LETS_ENCRYPT_ENV}}\"\n"
            ),
            ["deploy.labels.traefik.http.routers.", "Host(`ci.example.org`)", "traefik-host"],
        ),
    ];
    for (name, compose, [key, value, rule]) in cases {
        let d = checkout(&w, name, compose);
        let o = policy(&w, &[arg(&d)]);
        let out = stdout_of(&o);
        assert_eq!(code(&o), 1, "{name}: stdout:\n{out}\nstderr:\n{}", stderr_of(&o));
        let row = out.lines().find(|l| l.contains(rule)).unwrap_or_else(|| panic!("{name}: no {rule} row in\n{out}"));
        assert!(row.starts_with("app "), "{name}: {row}");
        assert!(row.contains(key) && row.contains(value), "{name}: {row}");
        assert!(out.starts_with("SERVICE  "), "{name}: {out}");
        assert!(stderr_of(&o).contains("ccci: policy: refused: "), "{name}: {}", stderr_of(&o));
    }
}

#[test]
fn the_trusted_allow_list_loosens_its_own_rule() {
    let w = World::new();
    let sock =
        checkout(&w, "sock", &format!("{SERVICE}    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n"));
    assert_eq!(code(&policy(&w, &[arg(&sock)])), 1);
    w.trusted("sock", "ccci.yml", "policy:\n  allow_binds: [\"/var/run/docker.sock\"]\n", false);
    let o = policy(&w, &[arg(&sock)]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout_of(&o), stderr_of(&o));
    // Each list loosens only its own rule.
    let compose =
        format!("{SERVICE}    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n    cap_add: [NET_ADMIN]\n");
    let d = checkout(&w, "sockok", &compose);
    let o = policy(&w, &[arg(&d)]);
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    w.trusted("sockok", "ccci.yml", "policy:\n  allow_binds: [\"/var/run/docker.sock\"]\n", false);
    let o = policy(&w, &[arg(&d)]);
    assert_eq!(code(&o), 1, "cap_add is not loosened by allow_binds: {}", stdout_of(&o));
    let out = stdout_of(&o);
    assert!(out.contains("cap-add") && !out.contains("denied-host-path"), "{out}");
    w.trusted(
        "sockok",
        "ccci.yml",
        "policy:\n  allow_binds: [\"/var/run/docker.sock\"]\n  allow_cap_add: [NET_ADMIN]\n",
        false,
    );
    let o = policy(&w, &[arg(&d), "--json"]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout_of(&o), stderr_of(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&o)).unwrap();
    assert_eq!(v["verdict"], "allowed");
    assert!(v["allow_list"].as_str().unwrap().ends_with("sockok/ccci.yml"), "{v}");
    // A bad allow-list is bad input, not a silent default.
    w.trusted("sockok", "ccci.yml", "policy:\n  allow_binds: [\"relative\"]\n", false);
    let o = policy(&w, &[arg(&d)]);
    assert_eq!(code(&o), 2);
    assert!(stderr_of(&o).contains("allow_binds entry \"relative\""), "{}", stderr_of(&o));
}

#[test]
fn json_output_has_the_documented_shape() {
    let w = World::new();
    let d = checkout(&w, "jsonsock", &format!("{SERVICE}    volumes:\n      - /var/run/docker.sock:/s\n"));
    let o = policy(&w, &["--json", arg(&d)]);
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&o)).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["verdict"], "refused");
    assert_eq!(v["recipe"], "jsonsock");
    assert_eq!(v["checked"], 1);
    assert_eq!(v["domain"], w.domain("jsonsock", "0", ""));
    assert_eq!(v["stack"], w.stack("jsonsock"));
    assert_eq!(v["compose_files"], serde_json::json!(["compose.yml"]));
    assert!(v["error"].is_null());
    let first = &v["violations"][0];
    assert_eq!(first["service"], "app");
    assert_eq!(first["key"], "volumes");
    assert_eq!(first["value"], "/var/run/docker.sock:/s");
    assert_eq!(first["rule"], "denied-host-path");
    // An error is JSON too, with exit 2.
    let o = policy(&w, &["--json", arg(&w.path().join("nope"))]);
    assert_eq!(code(&o), 2);
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&o)).unwrap();
    assert_eq!(v["verdict"], "error");
    assert!(v["error"].as_str().unwrap().contains("cannot open the recipe dir"), "{v}");
}

#[test]
fn the_env_cannot_redirect_abra() {
    let w = World::new();
    // The sample's own DOMAIN/STACK_NAME are overridden as a run overrides them; abra.sh's
    // exports are merged over the .env as abra merges them, so they are checked.
    let d = checkout(&w, "envy", SERVICE);
    fs::write(d.join("abra.sh"), "export STACK_NAME=warm-keycloak_ci_example_org\n").unwrap();
    let o = policy(&w, &[arg(&d)]);
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    assert!(stdout_of(&o).contains("env-stack-name"), "{}", stdout_of(&o));
    fs::remove_file(d.join("abra.sh")).unwrap();
    let o = policy(&w, &[arg(&d)]);
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    // Named explicitly, a sample whose TYPE names another recipe is refused.
    let o = policy(&w, &["--recipe", "hello", arg(&d)]);
    assert_eq!(code(&o), 1);
    assert!(stdout_of(&o).contains("env-recipe"), "{}", stdout_of(&o));
    // A sample a shell would execute is bad input, never run.
    fs::write(d.join(".env.sample"), "TYPE=envy\nX=$(touch pwned)\n").unwrap();
    let o = policy(&w, &[arg(&d)]);
    assert_eq!(code(&o), 2);
    assert!(stderr_of(&o).contains(".env.sample: line 2: uses command substitution"), "{}", stderr_of(&o));
    assert!(!d.join("pwned").exists());
}

#[test]
fn a_compose_link_to_a_fifo_or_an_oversized_compose_file_is_bad_input_at_once() {
    let w = World::new();
    let fifo = w.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let d = checkout(&w, "fifolink", SERVICE);
    fs::remove_file(d.join("compose.yml")).unwrap();
    symlink(&fifo, d.join("compose.yml")).unwrap();
    let mut c = w.ccci();
    c.args(["policy", arg(&d)]);
    let o = output_within(c, Duration::from_secs(20));
    assert_eq!(code(&o), 2, "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("compose.yml: is a symbolic link"), "{}", stderr_of(&o));

    fs::remove_file(d.join("compose.yml")).unwrap();
    nix::unistd::mkfifo(&d.join("compose.yml"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let mut c = w.ccci();
    c.args(["policy", arg(&d)]);
    let o = output_within(c, Duration::from_secs(20));
    assert_eq!(code(&o), 2);
    assert!(stderr_of(&o).contains("compose.yml: is a FIFO"), "{}", stderr_of(&o));

    fs::remove_file(d.join("compose.yml")).unwrap();
    fs::File::create(d.join("compose.yml")).unwrap().set_len(2 * 1024 * 1024).unwrap();
    let o = policy(&w, &[arg(&d)]);
    assert_eq!(code(&o), 2);
    assert!(stderr_of(&o).contains("over the cap of 1048576 bytes"), "{}", stderr_of(&o));
}

#[test]
fn links_leaving_the_tree_are_refused_before_anything_renders() {
    let w = World::new();
    let d = checkout(&w, "linky", &format!("{SERVICE}    env_file: [app.env]\n"));
    symlink("/etc/hostname", d.join("app.env")).unwrap();
    let o = policy(&w, &[arg(&d)]);
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    let out = stdout_of(&o);
    assert!(
        out.starts_with("PATH") && out.contains("app.env") && out.contains("points outside the recipe tree"),
        "{out}"
    );
    let o = policy(&w, &["--json", arg(&d)]);
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&o)).unwrap();
    assert_eq!(v["links"][0]["path"], "app.env");
    assert_eq!(v["links"][0]["why"], "outside");
}

#[test]
fn a_docker_cli_without_stack_config_is_a_clear_error() {
    let old = Path::new("/usr/bin/docker");
    if !old.exists() {
        eprintln!("skipped: /usr/bin/docker is absent (no CLI without `stack config` to try)");
        return;
    }
    let mut c = Command::new(old);
    c.args(["stack", "--help"]);
    let help = output_within(c, Duration::from_secs(30));
    if String::from_utf8_lossy(&help.stdout).lines().any(|l| l.trim_start().starts_with("config ")) {
        eprintln!("skipped: /usr/bin/docker has `stack config`");
        return;
    }
    let mut w = World::new();
    w.set("CCCI_DOCKER", "/usr/bin/docker");
    let hello = w.recipe("hello");
    let o = policy(&w, &[arg(&hello)]);
    assert_eq!(code(&o), 2);
    let err = stderr_of(&o);
    assert!(err.contains("/usr/bin/docker has no `docker stack config`") && err.contains("CCCI_DOCKER"), "{err}");
}

#[test]
fn a_recipe_that_does_not_render_is_bad_input_with_the_loaders_message() {
    let w = World::new();
    let d = checkout(&w, "badyaml", "services:\n  app:\n    image: x\n   bad: [\n");
    let o = policy(&w, &[arg(&d)]);
    assert_eq!(code(&o), 2, "{}", stdout_of(&o));
    let err = stderr_of(&o);
    assert!(err.contains("ccci: policy: docker stack config failed: yaml:"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("ccci: ")).count(), 1, "{err}");
    // A missing compose file of COMPOSE_FILE.
    let d = checkout(&w, "missing", SERVICE);
    fs::write(d.join(".env.sample"), "TYPE=missing\nCOMPOSE_FILE=compose.yml:compose.extra.yml\n").unwrap();
    let o = policy(&w, &[arg(&d)]);
    assert_eq!(code(&o), 2);
    assert!(stderr_of(&o).contains("compose.extra.yml: not found"), "{}", stderr_of(&o));
}

/// docs/security.md's rule table names every rule of the gate, and every test it cites exists.
#[test]
fn the_security_doc_lists_every_rule_and_real_tests() {
    let doc = fs::read_to_string(repo_root().join("docs/security.md")).unwrap();
    for rule in ccci::policy::Rule::ALL {
        assert!(doc.contains(&format!("`{}`", rule.name())), "docs/security.md does not list `{}`", rule.name());
    }
    let mut sources = String::new();
    for f in [
        "src/policy/gate.rs",
        "src/policy/render.rs",
        "src/policy/tree.rs",
        "src/untrusted.rs",
        "src/dotenv.rs",
        "tests/policy.rs",
    ] {
        sources.push_str(&fs::read_to_string(repo_root().join(f)).unwrap());
    }
    let cited = regex::Regex::new(r"`([a-z][a-z0-9_]+)`\s*\((?:unit|integration)\)").unwrap();
    let mut n = 0;
    for c in cited.captures_iter(&doc) {
        n += 1;
        assert!(
            sources.contains(&format!("fn {}(", &c[1])),
            "docs/security.md cites a test `{}` that does not exist",
            &c[1]
        );
    }
    assert!(n >= 10, "docs/security.md cites only {n} tests");
}
