//! The operator-facing files agree with the binary: the systemd units verify and bound the
//! janitor and the Drone runner, the flake parses and uses only real subcommands, flags and
//! variables, the example host config holds only keys ccci accepts, the Drone pipeline execs the
//! wrapper and leaves the build parameters alone, and `docs/env.md` / `docs/exit-codes.md` are
//! generated from the code's registry and exit table (`UPDATE_DOCS=1 cargo test --test
//! integration ops::` rewrites their generated sections).
//!
//! Tests that need `systemd-analyze` (Debian package `systemd`) or `nix-instantiate` (Debian
//! package `nix-bin`) report "skipped" when the program is missing; every other check always runs.
//! The Drone wrapper itself is tested under dash and bash in `tests-concurrency/lifetime.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use ccci::env_vars::{self, REGISTRY, Role};
use regex::Regex;

use crate::common::*;

/// Files whose command lines, flags and variable names must be real.
const OPS_FILES: &[&str] = &[
    "ci/drone.yml",
    "ci/ccci.env.example",
    "ci/systemd/ccci-janitor.service",
    "ci/systemd/ccci-janitor.timer",
    "ci/systemd/drone-runner-exec.override.conf",
    "flake.nix",
    "docs/architecture.md",
    "docs/concurrency.md",
    "docs/operations.md",
    "docs/exit-codes.md",
    "docs/env.md",
];

/// `CCCI_*` names that ccci does not read but the project's scripts do, with the script that
/// reads each (checked: the script must really mention it).
const SCRIPT_VARS: &[(&str, &str)] = &[
    ("CCCI_BIN", "ci/drone-step.sh"),
    ("CCCI_SKIP_SWARM_TESTS", "tests/common/mod.rs"),
    ("CCCI_TEST_THREADS", "ci/test.sh"),
    ("CCCI_TEST_ECHO", "tests/common/mod.rs"),
    ("CCCI_DEMO_DIR", "ci/demo.sh"),
    ("CCCI_DEMO_PORT", "ci/demo.sh"),
];

/// Keys that ccci's parser accepts in the host file but that are per-build values: the example
/// must not set them (host-wide they would apply to every build whose parameter is empty).
const PER_BUILD_KEYS: &[&str] = &["RECIPE", "REF", "PR", "SRC", "STAGES", "CCCI_QUICK", "CCCI_ALLOW_ORPHAN"];

/// The Drone build parameters: never set under a step's `environment:`.
const DRONE_PARAMS: &[&str] = &["RECIPE", "REF", "PR", "SRC", "STAGES", "CCCI_QUICK"];

fn read(rel: &str) -> String {
    fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn have(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}

fn skip(program: &str, package: &str) -> bool {
    if have(program) {
        return false;
    }
    eprintln!("skipped: `{program}` not found (install the Debian package `{package}`)");
    true
}

fn registry_default(name: &str) -> &'static str {
    env_vars::lookup(name).and_then(|v| v.default).unwrap_or_else(|| panic!("{name} has no default in the registry"))
}

fn secs_of(name: &str) -> u64 {
    registry_default(name).parse().unwrap()
}

// ---- what the binary really has --------------------------------------------------------------

/// `ccci [SUB] --help`, when it succeeds.
fn help(sub: Option<&str>) -> Option<String> {
    let mut c = Command::new(CCCI);
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("CCCI_CONFIG", "/dev/null");
    if let Some(s) = sub {
        c.arg(s);
    }
    c.arg("--help");
    let o = output_within(c, Duration::from_secs(30));
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The `--long` flags listed in a help text's options.
fn flags_in(help: &str) -> BTreeSet<String> {
    let re = Regex::new(r"(?m)^\s+(?:-[A-Za-z], )?(--[a-z][a-z0-9-]*)").unwrap();
    re.captures_iter(help).map(|c| c[1].to_string()).collect()
}

/// The default a help text shows for a flag, e.g. `--deadline` → `1800`.
fn help_default(help: &str, flag: &str) -> String {
    let line = help.lines().find(|l| l.trim_start().starts_with(flag)).unwrap_or_else(|| panic!("{flag} not in help"));
    let re = Regex::new(r"\[default: ([^\]]+)\]").unwrap();
    re.captures(line).unwrap_or_else(|| panic!("no default for {flag}: {line}"))[1].to_string()
}

/// The flags a subcommand accepts (its own and the global ones), or `None` when `word` is not a
/// subcommand. Hidden subcommands count: they answer `--help` too.
fn subcommand_flags(word: &str) -> Option<BTreeSet<String>> {
    static CACHE: Mutex<Option<HashMap<String, Option<BTreeSet<String>>>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap();
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(v) = cache.get(word) {
        return v.clone();
    }
    let v = if word.starts_with('-') {
        None
    } else {
        help(Some(word)).map(|h| {
            let mut f = flags_in(&h);
            f.extend(flags_in(&help(None).unwrap()));
            f
        })
    };
    cache.insert(word.to_string(), v.clone());
    v
}

/// Places where a file names a ccci command: `/ccci SUB`, `` `ccci SUB ``, and in Markdown also
/// the start of a line inside a fenced code block (after an optional `$ `). Prose such as
/// "ccci reads…" is not a command. Returns (line number, subcommand, flags on the rest of the
/// command) — the command ends at a backtick, `#`, `|`, `;`, `&&` or `)`.
fn command_mentions(rel: &str, text: &str) -> Vec<(usize, String, Vec<String>)> {
    let inline = Regex::new(r"(?:/|`)ccci ([a-z][a-z-]*)(.*)").unwrap();
    let start = Regex::new(r"^\s*(?:\$\s+)?(?:sudo\s+)?ccci ([a-z][a-z-]*)(.*)").unwrap();
    let flag = Regex::new(r"(?:^|\s)(--[a-z][a-z0-9-]*)").unwrap();
    let markdown = rel.ends_with(".md");
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if markdown && line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let mut found: Vec<(String, String)> = Vec::new();
        if markdown
            && fenced
            && let Some(c) = start.captures(line)
        {
            found.push((c[1].to_string(), c[2].to_string()));
        }
        let mut rest = line;
        while let Some(c) = inline.captures(rest) {
            found.push((c[1].to_string(), c[2].to_string()));
            let end = c.get(1).unwrap().end();
            rest = &rest[end..];
        }
        for (sub, tail) in found {
            let cut = ["`", "#", "|", ";", "&&", ")"].iter().filter_map(|s| tail.find(s)).min().unwrap_or(tail.len());
            let flags = flag.captures_iter(&tail[..cut]).map(|c| c[1].to_string()).collect();
            out.push((i + 1, sub, flags));
        }
    }
    out
}

/// Every command mention names a real subcommand with flags it accepts.
fn check_commands(rel: &str, text: &str, problems: &mut Vec<String>) {
    for (line, sub, flags) in command_mentions(rel, text) {
        match subcommand_flags(&sub) {
            None => problems.push(format!("{rel}:{line}: `ccci {sub}` is not a ccci subcommand")),
            Some(known) => {
                for f in flags.iter().filter(|f| !known.contains(*f)) {
                    problems.push(format!("{rel}:{line}: `ccci {sub}` has no flag {f}"));
                }
            }
        }
    }
}

/// Every `CCCI_*` name is in the registry, or read by the script listed in [`SCRIPT_VARS`].
fn check_ccci_names(rel: &str, text: &str, allow_script_vars: bool, problems: &mut Vec<String>) {
    let re = Regex::new(r"\bCCCI_[A-Z0-9_]*[A-Z0-9]\b").unwrap();
    for (i, line) in text.lines().enumerate() {
        for m in re.find_iter(line) {
            let name = m.as_str();
            if env_vars::lookup(name).is_some() {
                continue;
            }
            match SCRIPT_VARS.iter().find(|(n, _)| *n == name) {
                Some((_, script)) if allow_script_vars && read(script).contains(name) => {}
                Some((_, script)) if allow_script_vars => {
                    problems.push(format!("{rel}:{}: {name} is said to be read by {script}, which does not", i + 1))
                }
                _ => problems.push(format!("{rel}:{}: {name} is not a variable ccci knows", i + 1)),
            }
        }
    }
}

fn assert_no_problems(problems: Vec<String>) {
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

// ---- systemd ---------------------------------------------------------------------------------

/// `KEY=value` settings of a unit file (last one wins), comments skipped.
fn unit_settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect()
}

/// A systemd time span such as `31min`, `1h 5min`, `1860s` or `1860`, in seconds.
fn timespan(v: &str) -> u64 {
    let re = Regex::new(r"(\d+)\s*([a-z]*)").unwrap();
    let mut total = 0;
    for c in re.captures_iter(v) {
        let n: u64 = c[1].parse().unwrap();
        total += n * match &c[2] {
            "" | "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hr" | "hour" | "hours" => 3600,
            other => panic!("unsupported time unit {other:?} in {v:?}"),
        };
    }
    total
}

/// Copies the units into a temp dir with ExecStart pointing at the built binary (verify checks
/// that the program exists), adds a stand-in runner unit carrying the drop-in, and runs
/// `systemd-analyze verify` on all three. Warnings about our units fail the test too.
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if skip("systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let service = read("ci/systemd/ccci-janitor.service");
    let exec = Regex::new(r"(?m)^ExecStart=\S*/ccci ").unwrap();
    assert!(exec.is_match(&service), "ExecStart does not run ccci");
    let service = exec.replace(&service, format!("ExecStart={CCCI} ").as_str()).into_owned();
    fs::write(dir.path().join("ccci-janitor.service"), service).unwrap();
    fs::write(dir.path().join("ccci-janitor.timer"), read("ci/systemd/ccci-janitor.timer")).unwrap();
    let runner = "drone-runner-exec.service";
    fs::write(
        dir.path().join(runner),
        format!("[Unit]\nDescription=stand-in for the Drone exec runner\n\n[Service]\nExecStart={CCCI} --version\n"),
    )
    .unwrap();
    let dropins = dir.path().join(format!("{runner}.d"));
    fs::create_dir(&dropins).unwrap();
    fs::write(dropins.join("ccci.conf"), read("ci/systemd/drone-runner-exec.override.conf")).unwrap();

    let mut c = Command::new("systemd-analyze");
    c.args(["verify", "--man=no"])
        .arg(dir.path().join("ccci-janitor.service"))
        .arg(dir.path().join("ccci-janitor.timer"))
        .arg(dir.path().join(runner))
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .env("SYSTEMD_LOG_COLOR", "0");
    let o = output_within(c, Duration::from_secs(60));
    let err = stderr_of(&o);
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(&*dir.path().to_string_lossy()) || l.contains("ccci") || l.contains("drone-runner-exec"))
        .collect();
    assert!(o.status.success() && ours.is_empty(), "systemd-analyze verify ({}):\n{err}", o.status);
}

/// The janitor unit runs `ccci janitor` as the timer's service, reads the host file, signals the
/// janitor alone, and both its stop timeout and its runtime bound sit above the janitor's own
/// deadline. The runner drop-in gives a stopping runner time for whole builds.
#[test]
fn systemd_units_bound_the_janitor_and_the_runner() {
    let service_text = read("ci/systemd/ccci-janitor.service");
    let service = unit_settings(&service_text);
    let timer = unit_settings(&read("ci/systemd/ccci-janitor.timer"));
    let runner = unit_settings(&read("ci/systemd/drone-runner-exec.override.conf"));

    let exec = &service["ExecStart"];
    assert!(Regex::new(r"^/\S*/ccci janitor( |$)").unwrap().is_match(exec), "ExecStart={exec}");
    let janitor_help = help(Some("janitor")).unwrap();
    let deadline: u64 = match Regex::new(r"--deadline[ =](\d+)").unwrap().captures(exec) {
        Some(c) => c[1].parse().unwrap(),
        None => help_default(&janitor_help, "--deadline").parse().unwrap(),
    };
    assert_eq!(service.get("KillMode").map(String::as_str), Some("mixed"));
    assert_eq!(service.get("EnvironmentFile").map(String::as_str), Some("-/etc/ccci/env"));
    assert_ne!(service.get("Type").map(String::as_str), Some("oneshot"), "RuntimeMaxSec has no effect on oneshot");
    for key in ["TimeoutStopSec", "RuntimeMaxSec"] {
        let v = service.get(key).unwrap_or_else(|| panic!("the janitor unit has no {key}"));
        assert!(timespan(v) > deadline, "{key}={v} is not above the janitor's deadline ({deadline} s)");
    }
    assert!(timer.contains_key("OnCalendar") || timer.contains_key("OnUnitActiveSec"), "the timer never repeats");
    assert_eq!(timer.get("WantedBy").map(String::as_str), Some("timers.target"));
    assert!(timer.get("Unit").is_none_or(|u| u == "ccci-janitor.service"));

    assert_eq!(runner.get("KillMode").map(String::as_str), Some("mixed"));
    let stop = timespan(runner.get("TimeoutStopSec").expect("the runner drop-in has no TimeoutStopSec"));
    let budget = secs_of("CCCI_TEARDOWN_BUDGET");
    let build = secs_of("CCCI_DEADLINE") + budget + 300;
    assert!(stop >= budget, "TimeoutStopSec {stop} s is below the teardown budget {budget} s");
    assert!(stop >= build, "TimeoutStopSec {stop} s does not cover a whole build ({build} s): see the drop-in");

    let mut problems = Vec::new();
    for rel in OPS_FILES.iter().filter(|r| r.starts_with("ci/systemd/")) {
        let text = read(rel);
        check_commands(rel, &text, &mut problems);
        check_ccci_names(rel, &text, false, &mut problems);
    }
    assert_no_problems(problems);
}

// ---- flake -----------------------------------------------------------------------------------

#[test]
fn flake_parses() {
    if skip("nix-instantiate", "nix-bin") {
        return;
    }
    let mut c = Command::new("nix-instantiate");
    c.arg("--parse").arg(repo_root().join("flake.nix"));
    let o = output_within(c, Duration::from_secs(60));
    assert!(o.status.success(), "nix-instantiate --parse flake.nix:\n{}", stderr_of(&o));
}

/// A stand-in for the few parts of nixpkgs' `lib` and `pkgs` the flake uses, enough to evaluate
/// its outputs and its NixOS module offline (mkIf/mkMerge resolved, option defaults applied).
const NIX_EVAL: &str = r#"# Evaluates flake.nix's outputs and NixOS module against a tiny stand-in for nixpkgs' lib.
{ flake }:
let
  b = builtins;
  lib = rec {
    genAttrs = names: f: b.listToAttrs (map (n: { name = n; value = f n; }) names);
    cleanSource = p: p;
    licenses.agpl3Plus = "agpl3Plus";
    platforms.linux = [ "x86_64-linux" ];
    mkOption = o: { _option = true; } // o;
    mkEnableOption = d: { _option = true; default = false; description = d; };
    mkIf = cond: content: { _type = "if"; inherit cond content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    types = {
      str = "str"; bool = "bool"; package = "package";
      attrsOf = t: "attrsOf";
      listOf = t: "listOf";
      nullOr = t: "nullOr";
      ints.positive = "positive";
    };
    literalMD = s: s;
    literalExpression = s: s;
    toInt = s: b.fromJSON s;
    concatStrings = b.concatStringsSep "";
    mapAttrsToList = f: s: map (n: f n s.${n}) (b.attrNames s);
    filter = b.filter;
    elem = b.elem;
    attrNames = b.attrNames;
    attrValues = b.attrValues;
    concatStringsSep = b.concatStringsSep;
    all = b.all;
    hasInfix = infix: s: b.match ".*${infix}.*" s != null;
    optional = c: x: if c then [ x ] else [ ];
  };
  pkgs = {
    stdenv.hostPlatform.system = "x86_64-linux";
    rustPlatform.buildRustPackage = a: a // { type = "derivation"; outPath = "/nix/store/ccci"; };
    docker = "docker"; git = "git"; curl = "curl";
  };
  nixpkgs = { inherit lib; legacyPackages.x86_64-linux = pkgs; legacyPackages.aarch64-linux = pkgs; };
  out = flake.outputs { self = out // { outPath = ./.; }; inherit nixpkgs; };
  # Option defaults, overridden by `set`.
  defaults = opts: b.mapAttrs (n: v: if v ? _option then v.default else defaults v) opts;
  # Resolves mkIf/mkMerge into plain attrsets (a shallow merge is enough here).
  resolve = v:
    if b.isAttrs v && v ? _type then
      (if v._type == "if" then (if v.cond then resolve v.content else { })
       else b.foldl' (acc: x: recursiveMerge acc (resolve x)) { } v.contents)
    else if b.isAttrs v && !(v ? type && v.type == "derivation") then b.mapAttrs (n: resolve) v
    else v;
  recursiveMerge = a: c: a // b.mapAttrs (n: v: if a ? ${n} && b.isAttrs v && b.isAttrs a.${n} then recursiveMerge a.${n} v else v) c;
  evalWith = set:
    let
      mod = out.nixosModules.default { inherit config pkgs; };
      config = { services.ccci = recursiveMerge (defaults mod.options.services.ccci) set; };
    in resolve mod.config;
in {
  package = out.packages.x86_64-linux.ccci.pname;
  plain = evalWith { enable = true; };
  custom = evalWith { enable = true; lockDir = "/run/ccci/lock"; droneRunnerUnit = "drone-runner-exec"; settings = { CCCI_DEADLINE = "1200"; CCCI_DOMAIN_SUFFIX = "ci.example.org"; }; janitor.deadline = 900; };
  refused = (evalWith { enable = true; settings = { RECIPE = "x"; CCCI_RUNS_DIR = "/x"; }; }).assertions;
}
"#;

/// Evaluates the package and the module with `nix-instantiate --eval` against [`NIX_EVAL`]: the
/// janitor unit runs `ccci janitor` with real flags and bounds above its deadline, the generated
/// `/etc/ccci/env` parses as ccci parses it, the runner unit gets a whole build's stop timeout,
/// and per-build keys or the managed dirs in `settings` fail the module's assertions.
#[test]
fn flake_module_evaluates() {
    if skip("nix-instantiate", "nix-bin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("eval.nix");
    fs::write(&stub, NIX_EVAL).unwrap();
    let mut c = Command::new("nix-instantiate");
    c.args(["--eval", "--strict", "--json", "-E"]).arg(format!(
        "import {} {{ flake = import {}; }}",
        stub.display(),
        repo_root().join("flake.nix").display()
    ));
    let o = output_within(c, Duration::from_secs(120));
    assert!(o.status.success(), "evaluating flake.nix failed:\n{}", stderr_of(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["package"], "ccci");

    let mut problems = Vec::new();
    for (case, deadline) in [("plain", 1800), ("custom", 900)] {
        let svc = &v[case]["systemd"]["services"]["ccci-janitor"]["serviceConfig"];
        let exec = svc["ExecStart"].as_str().unwrap_or_default();
        assert!(exec.starts_with("/nix/store/ccci/bin/ccci janitor "), "{case}: ExecStart={exec}");
        check_commands("flake.nix (evaluated)", &format!("`{}`", &exec["/nix/store".len()..]), &mut problems);
        assert!(exec.contains(&format!("--deadline {deadline} ")), "{case}: ExecStart={exec}");
        for key in ["TimeoutStopSec", "RuntimeMaxSec"] {
            let span = timespan(svc[key].as_str().unwrap_or_default());
            assert!(span > deadline, "{case}: {key}={span} s is not above the janitor's deadline {deadline} s");
        }
        assert_eq!(svc["KillMode"], "mixed");
        let env = v[case]["environment"]["etc"]["ccci/env"]["text"].as_str().unwrap();
        let parsed = ccci::config::host_file::HostFile::parse(Path::new("/etc/ccci/env"), env).unwrap();
        assert!(parsed.unknown_keys.is_empty(), "{case}: {:?}", parsed.unknown_keys);
        assert!(parsed.values.contains_key("CCCI_RUNS_DIR") && parsed.values.contains_key("CCCI_APP_LOCK_DIR"));
        let assertions = v[case]["assertions"].as_array().unwrap();
        assert!(assertions.iter().all(|a| a["assertion"] == true), "{case}: {assertions:?}");
    }
    assert_eq!(v["plain"]["environment"]["etc"]["ccci/env"]["text"].as_str().unwrap().lines().count(), 2);
    let runner = &v["custom"]["systemd"]["services"]["drone-runner-exec"]["serviceConfig"];
    assert_eq!(runner["KillMode"], "mixed");
    let stop = timespan(runner["TimeoutStopSec"].as_str().unwrap());
    assert!(
        stop >= 1200 + secs_of("CCCI_TEARDOWN_BUDGET") + 300,
        "the runner's stop timeout {stop} s is short of a build"
    );
    assert!(v["plain"]["systemd"]["services"].get("drone-runner-exec").is_none());
    let refused: Vec<bool> =
        v["refused"].as_array().unwrap().iter().map(|a| a["assertion"].as_bool().unwrap()).collect();
    assert_eq!(refused, [false, false, true], "per-build keys and managed dirs in settings must be refused");
    assert_no_problems(problems);
}

/// The strings of a Nix list bound to `name` (`name = [ "A" "B" ];`).
fn nix_list(text: &str, name: &str) -> BTreeSet<String> {
    let re = Regex::new(&format!(r"(?s)\b{name}\s*=\s*\[(.*?)\];")).unwrap();
    let body = re.captures(text).unwrap_or_else(|| panic!("flake.nix has no list {name}"))[1].to_string();
    Regex::new(r#""([^"]*)""#).unwrap().captures_iter(&body).map(|c| c[1].to_string()).collect()
}

/// The `default = …;` of the option declared as `name = mkOption {`.
fn nix_default(text: &str, name: &str) -> String {
    let re = Regex::new(&format!(r#"(?s)\b{name}\s*=\s*mkOption\s*\{{.*?default\s*=\s*"?([^";]*)"?;"#)).unwrap();
    re.captures(text).unwrap_or_else(|| panic!("flake.nix has no option {name} with a default"))[1].to_string()
}

/// The module runs only real subcommands with real flags, names only registry variables, and its
/// key lists are exactly the keys ccci accepts in the host file; its defaults are ccci's.
#[test]
fn flake_module_uses_only_real_commands_flags_and_variables() {
    let text = read("flake.nix");
    let mut problems = Vec::new();
    let mentions = command_mentions("flake.nix", &text);
    assert!(mentions.iter().any(|(_, s, _)| s == "janitor"), "the module never runs `ccci janitor`");
    check_commands("flake.nix", &text, &mut problems);
    check_ccci_names("flake.nix", &text, false, &mut problems);

    let host = nix_list(&text, "hostKeys");
    let per_build = nix_list(&text, "perBuildKeys");
    let secret = nix_list(&text, "secretKeys");
    let lists = [("hostKeys", &host), ("perBuildKeys", &per_build), ("secretKeys", &secret)];
    for (i, (a, x)) in lists.iter().enumerate() {
        for (b, y) in &lists[i + 1..] {
            for k in x.intersection(y) {
                problems.push(format!("flake.nix: {k} is in both {a} and {b}"));
            }
        }
    }
    let listed: BTreeSet<String> = lists.iter().flat_map(|(_, s)| s.iter().cloned()).collect();
    let accepted: BTreeSet<String> =
        REGISTRY.iter().filter(|v| env_vars::allowed_in_config_file(v.name)).map(|v| v.name.to_string()).collect();
    for k in listed.difference(&accepted) {
        problems.push(format!("flake.nix lists {k}, which ccci does not accept in its host file"));
    }
    for k in accepted.difference(&listed) {
        problems.push(format!("flake.nix does not list {k}, which ccci accepts in its host file"));
    }
    let per_build_expected: BTreeSet<String> = PER_BUILD_KEYS.iter().map(|s| s.to_string()).collect();
    if per_build != per_build_expected {
        problems.push(format!("flake.nix perBuildKeys {per_build:?} differ from {per_build_expected:?}"));
    }

    let janitor_help = help(Some("janitor")).unwrap();
    for (option, want) in [
        ("runsDir", registry_default("CCCI_RUNS_DIR").to_string()),
        ("lockDir", registry_default("CCCI_APP_LOCK_DIR").to_string()),
        ("deadline", help_default(&janitor_help, "--deadline")),
        ("pruneAfterDays", help_default(&janitor_help, "--prune-after")),
    ] {
        let got = nix_default(&text, option);
        if got != want {
            problems.push(format!("flake.nix: option {option} defaults to {got}, ccci's default is {want}"));
        }
    }
    for needle in ["KillMode = \"mixed\"", "EnvironmentFile = \"-/etc/ccci/env\"", "environment.etc.\"ccci/env\""] {
        if !text.contains(needle) {
            problems.push(format!("flake.nix: no `{needle}`"));
        }
    }
    assert_no_problems(problems);
}

// ---- the host config example and the Drone pipeline ------------------------------------------

/// Every key of the example (set or commented out) is one ccci accepts and none is per-build;
/// it parses as ccci parses it; and the values it shows are ccci's defaults.
#[test]
fn host_config_example_has_only_accepted_keys() {
    let rel = "ci/ccci.env.example";
    let text = read(rel);
    let mut problems = Vec::new();
    let parsed = ccci::config::host_file::HostFile::parse(Path::new(rel), &text)
        .unwrap_or_else(|e| panic!("ccci cannot parse {rel}: {e}"));
    for k in &parsed.unknown_keys {
        problems.push(format!("{rel}: ccci ignores the key {k}"));
    }
    let assignment = Regex::new(r"^#?\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=(.*)$").unwrap();
    let mut keys = 0;
    for (i, line) in text.lines().enumerate() {
        let Some(c) = assignment.captures(line.trim()) else { continue };
        keys += 1;
        let (key, value) = (&c[1], c[2].trim());
        if !env_vars::allowed_in_config_file(key) {
            problems.push(format!("{rel}:{}: {key} is not accepted in the host config file", i + 1));
            continue;
        }
        if PER_BUILD_KEYS.contains(&key) {
            problems.push(format!("{rel}:{}: {key} is a per-build value; it does not belong in the host file", i + 1));
        }
        if let Some(default) = env_vars::lookup(key).and_then(|v| v.default)
            && !default.contains(' ')
            && value != default
        {
            problems.push(format!("{rel}:{}: {key}={value}, but ccci's default is {default}", i + 1));
        }
    }
    assert!(keys > 0, "{rel} shows no settings");
    check_commands(rel, &text, &mut problems);
    check_ccci_names(rel, &text, false, &mut problems);
    assert_no_problems(problems);
}

/// The step execs the wrapper (so the process Drone SIGKILLs on a cancel is ccci's parent), no
/// step sets a build parameter under `environment:`, and nothing adds a second concurrency knob.
#[test]
fn drone_pipeline_execs_the_wrapper_and_leaves_the_params_alone() {
    let rel = "ci/drone.yml";
    let text = read(rel);
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(doc["kind"].as_str(), Some("pipeline"));
    assert_eq!(doc["type"].as_str(), Some("exec"), "ccci needs the exec runner");
    assert!(doc.get("concurrency").is_none(), "DRONE_RUNNER_CAPACITY is the one concurrency knob");
    let steps = doc["steps"].as_sequence().expect("steps");
    assert!(!steps.is_empty());
    for step in steps {
        let commands: Vec<&str> =
            step["commands"].as_sequence().expect("commands").iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(commands, ["exec ci/drone-step.sh"], "the wrapper must replace the step shell");
        if let Some(env) = step.get("environment").and_then(|e| e.as_mapping()) {
            for k in env.keys().filter_map(|k| k.as_str()) {
                assert!(!DRONE_PARAMS.contains(&k), "{k} under environment: overrides the build parameter");
            }
        }
    }
    for needle in ["DRONE_RUNNER_CAPACITY", "75 min"] {
        assert!(text.contains(needle), "{rel} does not explain {needle}");
    }
    let mut problems = Vec::new();
    check_commands(rel, &text, &mut problems);
    check_ccci_names(rel, &text, true, &mut problems);
    assert_no_problems(problems);
}

// ---- docs generated from the code ------------------------------------------------------------

const GEN_BEGIN: &str = "<!-- BEGIN GENERATED";
const GEN_END: &str = "<!-- END GENERATED -->";

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Flag => "run parameter",
        Role::Host => "host setting",
        Role::HostFile => "host file only",
        Role::Stamp => "stamp",
        Role::Runtime => "caller",
        Role::Child => "child",
        Role::Passthrough => "passed through",
        Role::Build => "build time",
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn env_table() -> String {
    let mut t = String::from("| variable | role | default | ceiling | meaning |\n|---|---|---|---|---|\n");
    for v in REGISTRY {
        let default = match v.default {
            Some(d) if d.contains(' ') => cell(d),
            Some(d) => format!("`{}`", cell(d)),
            None => "unset".to_string(),
        };
        let max = v.max.map_or_else(|| "–".to_string(), cell);
        t.push_str(&format!("| `{}` | {} | {} | {} | {} |\n", v.name, role_label(v.role), default, max, cell(v.doc)));
    }
    t
}

fn exit_table() -> String {
    let mut t = String::from("| exit | outcome | cause |\n|---|---|---|\n");
    for (code, outcome, cause) in ccci::exit::TABLE {
        let outcome = if *outcome == "-" { "– (nothing written)".to_string() } else { format!("`{outcome}`") };
        t.push_str(&format!("| {code} | {outcome} | {} |\n", cell(cause)));
    }
    t
}

/// Checks (or, with `UPDATE_DOCS=1`, rewrites) the generated section of a doc.
fn generated_section(rel: &str, source: &str, table: &str) -> Result<(), String> {
    let path = repo_root().join(rel);
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {rel}: {e}"))?;
    let begin = text.find(GEN_BEGIN).ok_or(format!("{rel}: no `{GEN_BEGIN}` marker"))?;
    let body = begin + text[begin..].find("-->").ok_or(format!("{rel}: unterminated begin marker"))? + 3;
    let end = text[body..].find(GEN_END).map(|e| body + e).ok_or(format!("{rel}: no `{GEN_END}` marker"))?;
    let header = format!(
        "{GEN_BEGIN} from {source} by tests/ops.rs; edit the code, then run `UPDATE_DOCS=1 cargo test --test integration ops::` -->"
    );
    let want = format!("{}{header}\n{table}{}", &text[..begin], &text[end..]);
    if want == text {
        return Ok(());
    }
    if std::env::var("UPDATE_DOCS").as_deref() == Ok("1") {
        fs::write(&path, want).map_err(|e| format!("cannot write {rel}: {e}"))?;
        eprintln!("rewrote the generated section of {rel}");
        return Ok(());
    }
    Err(format!(
        "{rel} disagrees with {source}; regenerate it with `UPDATE_DOCS=1 cargo test --test integration ops::`\n--- expected section ---\n{header}\n{table}"
    ))
}

/// `docs/env.md` lists exactly the registry (name, role, default, meaning) and `docs/exit-codes.md`
/// exactly the exit table; prose outside the generated sections names only real variables.
#[test]
fn env_and_exit_code_docs_match_the_code() {
    let mut problems = Vec::new();
    for (rel, source, table) in [
        ("docs/env.md", "ccci::env_vars::REGISTRY", env_table()),
        ("docs/exit-codes.md", "ccci::exit::TABLE", exit_table()),
    ] {
        if let Err(e) = generated_section(rel, source, &table) {
            problems.push(e);
        }
    }
    // Every variable-looking name in env.md is a registry name, a proxy variable or a script's.
    let env_md = read("docs/env.md");
    let upper = Regex::new(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+|[A-Z]{2,})`").unwrap();
    for c in upper.captures_iter(&env_md) {
        let name = &c[1];
        let known = env_vars::lookup(name).is_some()
            || env_vars::PROXY_VARS.contains(&name)
            || SCRIPT_VARS.iter().any(|(n, _)| *n == name);
        if !known {
            problems.push(format!("docs/env.md names `{name}`, which is not in ccci's registry"));
        }
    }
    // Every exit code of the table appears in the exit-codes table rows, and nothing else does.
    let exit_md = read("docs/exit-codes.md");
    let rows: BTreeSet<u8> =
        Regex::new(r"(?m)^\| (\d+) \|").unwrap().captures_iter(&exit_md).filter_map(|c| c[1].parse().ok()).collect();
    let codes: BTreeSet<u8> = ccci::exit::TABLE.iter().map(|r| r.0).collect();
    if !rows.is_superset(&codes) {
        problems.push(format!("docs/exit-codes.md rows {rows:?} miss some of {codes:?}"));
    }
    assert_no_problems(problems);
}

/// Every doc and ops file names only real subcommands, flags and variables.
#[test]
fn docs_name_only_real_commands_flags_and_variables() {
    let mut problems = Vec::new();
    for rel in OPS_FILES {
        let text = read(rel);
        check_commands(rel, &text, &mut problems);
        check_ccci_names(rel, &text, rel.starts_with("docs/") || rel.ends_with(".yml"), &mut problems);
    }
    assert_no_problems(problems);
}

// ---- the failure-mode table ------------------------------------------------------------------

/// The failure modes the table must cover, each found by a word in its first column.
const FAILURE_MODES: &[&str] = &[
    "crash",
    "SIGKILL",
    "Drone cancel",
    "manual cancel",
    "deadline",
    "reboot",
    "same domain",
    "two recipes",
    "janitor",
    "wedged teardown",
    "hostile lockfile",
];

/// Every row of the failure-mode table in `docs/concurrency.md` names at least one test, and
/// every test it names exists (`integration::<module>::<fn>` in `tests/`,
/// `concurrency::<module>::<fn>` in `tests-concurrency/`).
#[test]
fn concurrency_doc_cites_tests_that_exist() {
    let text = read("docs/concurrency.md");
    let cite = Regex::new(r"`(integration|concurrency)::([a-z_0-9]+)::([a-z_0-9]+)`").unwrap();
    let mut problems = Vec::new();
    for c in cite.captures_iter(&text) {
        let dir = if &c[1] == "integration" { "tests" } else { "tests-concurrency" };
        let file = repo_root().join(dir).join(format!("{}.rs", &c[2]));
        let src = fs::read_to_string(&file).unwrap_or_default();
        let test = Regex::new(&format!(r"#\[test\]\s*(?:#\[[^\]]*\]\s*)*fn {}\(\)", &c[3])).unwrap();
        if !test.is_match(&src) {
            problems.push(format!("docs/concurrency.md cites `{}`, but {} has no such test", &c[0], file.display()));
        }
    }
    let section = text
        .split("\n## ")
        .find(|s| s.to_lowercase().starts_with("failure modes"))
        .expect("docs/concurrency.md has no `## Failure modes` section");
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with('|') && !l.starts_with("|---")).skip(1).collect();
    assert!(!rows.is_empty(), "the failure-mode table is empty");
    for row in &rows {
        if !cite.is_match(row) {
            problems.push(format!("failure-mode row names no test: {row}"));
        }
    }
    for mode in FAILURE_MODES {
        let first_cells: Vec<String> = rows.iter().map(|r| r.split('|').nth(1).unwrap_or("").to_lowercase()).collect();
        if !first_cells.iter().any(|c| c.contains(&mode.to_lowercase())) {
            problems.push(format!("the failure-mode table has no row for: {mode}"));
        }
    }
    assert_no_problems(problems);
}

/// The concurrency suite is a target of its own; this guard (outside it) fails when Cargo.toml
/// stops declaring it or when one of its files is not part of it. `ci/test.sh` also checks that
/// the suite's own guard test ran.
#[test]
fn the_concurrency_suite_is_declared_and_complete() {
    let manifest = read("Cargo.toml");
    let target =
        manifest.split("[[test]]").find(|t| t.contains("name = \"concurrency\"")).expect("no concurrency target");
    assert!(target.contains("path = \"tests-concurrency/main.rs\""), "{target}");
    let main = read("tests-concurrency/main.rs");
    for e in fs::read_dir(repo_root().join("tests-concurrency")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(module) = name.strip_suffix(".rs").filter(|m| *m != "main") {
            assert!(main.contains(&format!("mod {module};")), "tests-concurrency/{name} is not declared in main.rs");
        }
    }
}
