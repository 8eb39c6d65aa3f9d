//! The abra contract (issue 13), no swarm needed: every argv ccci builds uses only flags the
//! recorded `--help` of that command lists and fits its positional count, and the recorded
//! outputs parse the way ccci needs. `tests/abra_contract/<abra version>/` holds the
//! transcripts: seeded as `synthetic` from the sources, replaced by real recordings with
//! `ci/record-abra-transcripts.sh` on a host with abra (`docs/operations.md`, go-live check).
//! While a directory is synthetic, the stand-in `fixtures/abra` must accept exactly what its
//! help files list, so the tests' abra and the contract cannot drift apart.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ccci::adapters::Abra;
use ccci::adapters::abra::{Call, parse};
use ccci::pipeline::lint::classify;
use ccci::process::Output;
use ccci::report::LintStatus;

use crate::common::repo_root;

/// A flag of a recorded help: its long name, short letter and whether it takes a value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Flag {
    long: String,
    short: Option<char>,
    value: bool,
}

/// What a cobra help says about a command: its flags (own and global) and how many
/// positionals its usage line takes (`max` None: unbounded).
#[derive(Debug)]
struct Help {
    flags: Vec<Flag>,
    min: usize,
    max: Option<usize>,
}

fn parse_help(text: &str, words: &[&str]) -> Help {
    let mut flags = Vec::new();
    let mut in_flags = false;
    let mut usage = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t == "Usage:" {
            usage = lines.peek().map(|l| l.trim().to_string());
            continue;
        }
        if t == "Flags:" || t == "Global Flags:" {
            in_flags = true;
            continue;
        }
        if t.is_empty() || !line.starts_with(' ') {
            in_flags = false;
            continue;
        }
        if !in_flags {
            continue;
        }
        // `  -C, --chaos   …`, `      --x string   …`
        let (short, rest) = match t.strip_prefix('-').filter(|r| !r.starts_with('-')) {
            Some(r) => (r.chars().next(), r.get(1..).unwrap_or("").trim_start_matches(',').trim_start()),
            None => (None, t),
        };
        let Some(rest) = rest.strip_prefix("--") else { continue };
        let mut parts = rest.split_whitespace();
        let long = parts.next().unwrap_or("").to_string();
        // A type word right after the name (one space) means the flag takes a value.
        let after = &rest[long.len()..];
        let value = after.starts_with(' ') && !after.starts_with("  ") && after.trim_start().chars().next().is_some();
        flags.push(Flag { long, short, value });
    }
    let usage = usage.unwrap_or_else(|| panic!("no Usage: line in the help of {words:?}"));
    let mut tokens = usage.split_whitespace();
    assert_eq!(tokens.next(), Some("abra"), "{usage}");
    for w in words {
        assert_eq!(tokens.next(), Some(*w), "the usage line names another command: {usage}");
    }
    let (mut min, mut max) = (0, Some(0));
    for tok in tokens {
        if tok == "[flags]" || tok == "[command]" {
            continue;
        }
        let unbounded = tok.contains("...");
        if tok.starts_with('<') {
            min += 1;
        }
        max = match (max, unbounded) {
            (_, true) | (None, _) => None,
            (Some(n), false) => Some(n + 1),
        };
    }
    Help { flags, min, max }
}

/// The positionals of `argv` (after the command words), checking every flag against `help`.
fn check_argv(argv: &[String], words: usize, help: &Help) -> Result<usize, String> {
    let find_long = |n: &str| help.flags.iter().find(|f| f.long == n);
    let find_short = |c: char| help.flags.iter().find(|f| f.short == Some(c));
    let mut positionals = 0;
    let mut args = argv[words..].iter();
    while let Some(a) = args.next() {
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            let f = find_long(name).ok_or_else(|| format!("unknown flag --{name}"))?;
            if f.value && !inline && args.next().is_none() {
                return Err(format!("--{name} needs a value"));
            }
            if !f.value && inline {
                return Err(format!("--{name} takes no value"));
            }
        } else if let Some(shorts) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (i, c) in shorts.char_indices() {
                let f = find_short(c).ok_or_else(|| format!("unknown shorthand flag '{c}' in {a}"))?;
                if f.value {
                    if i + c.len_utf8() == shorts.len() && args.next().is_none() {
                        return Err(format!("-{c} needs a value"));
                    }
                    break;
                }
            }
        } else {
            positionals += 1;
        }
    }
    let fits = positionals >= help.min && help.max.is_none_or(|m| positionals <= m);
    if !fits {
        return Err(format!("{positionals} positional(s), the usage takes {}..{:?}", help.min, help.max));
    }
    Ok(positionals)
}

fn help_name(call: &Call) -> String {
    if call.command().is_empty() { "root".to_string() } else { call.command().join("-") }
}

fn contract_dirs() -> Vec<PathBuf> {
    let root = repo_root().join("tests/abra_contract");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no transcripts under {}", root.display());
    dirs
}

fn meta(dir: &Path) -> serde_json::Value {
    let text = fs::read_to_string(dir.join("meta.json")).unwrap_or_else(|e| panic!("{}/meta.json: {e}", dir.display()));
    serde_json::from_str(&text).unwrap()
}

fn read(dir: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir.join(name)).ok()
}

#[test]
fn every_argv_ccci_builds_fits_the_recorded_help() {
    let abra = Abra::new("abra", Path::new("/nonexistent"), "default");
    let mut problems = Vec::new();
    for dir in contract_dirs() {
        for call in Call::examples() {
            let name = help_name(&call);
            let Some(text) = read(&dir, &format!("{name}.help")) else {
                problems.push(format!("{}: no {name}.help", dir.display()));
                continue;
            };
            let help = parse_help(&text, call.command());
            let argv = abra.argv(&call);
            if let Err(e) = check_argv(&argv, call.command().len(), &help) {
                problems.push(format!("{}: `abra {}`: {e}", dir.display(), argv.join(" ")));
            }
        }
    }
    assert!(problems.is_empty(), "argv outside the recorded contract:\n{}", problems.join("\n"));
}

#[test]
fn the_argv_check_catches_what_cobra_would_refuse() {
    let help = parse_help(
        "Restore a snapshot\n\nUsage:\n  abra app restore <domain> [flags]\n\nFlags:\n  -C, --chaos             x\n  -s, --snapshot string   x\n\nGlobal Flags:\n  -n, --no-input   x\n",
        &["app", "restore"],
    );
    let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    assert_eq!(check_argv(&argv("app restore -n -C --snapshot=ab d"), 2, &help), Ok(1));
    assert_eq!(check_argv(&argv("app restore -nC -s ab d"), 2, &help), Ok(1));
    assert!(check_argv(&argv("app restore -n d ab"), 2, &help).unwrap_err().contains("positional"));
    assert!(check_argv(&argv("app restore -n -x d"), 2, &help).unwrap_err().contains("unknown shorthand"));
    assert!(check_argv(&argv("app restore --bogus d"), 2, &help).unwrap_err().contains("unknown flag"));
    assert!(check_argv(&argv("app restore --chaos=1 d"), 2, &help).unwrap_err().contains("no value"));
}

/// A recorded sample as the `Output` of a finished child.
fn sample(dir: &Path, name: &str) -> Option<Output> {
    let stdout = read(dir, &format!("{name}.stdout"));
    let stderr = read(dir, &format!("{name}.stderr"));
    if stdout.is_none() && stderr.is_none() {
        return None;
    }
    let code = read(dir, &format!("{name}.rc")).and_then(|t| t.trim().parse().ok());
    let stdout = stdout.unwrap_or_default();
    let tail: Vec<String> = stdout.lines().chain(stderr.as_deref().unwrap_or("").lines()).map(String::from).collect();
    Some(Output {
        name: "abra".into(),
        cmdline: read(dir, &format!("{name}.argv")).unwrap_or_default().trim().to_string(),
        ended: code.map_or(ccci::process::Ended::Unknown, ccci::process::Ended::Exited),
        stdout,
        tail,
        leaky: Vec::new(),
        duration: Duration::ZERO,
    })
}

fn samples_named(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| {
            ["stdout", "stderr"].iter().find_map(|ext| n.strip_suffix(&format!(".{ext}")).map(String::from))
        })
        .filter(|n| n == prefix || n.starts_with(&format!("{prefix}.")))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_recorded_outputs_parse_as_ccci_needs() {
    let mut problems: Vec<String> = Vec::new();
    for dir in contract_dirs() {
        let m = meta(&dir);
        let expect = |name: &str, key: &str| m["expect"][name][key].clone();
        let d = dir.display().to_string();
        // The version line.
        match sample(&dir, "version") {
            Some(out) => {
                let v = parse::version(&out.stdout);
                if !v.starts_with("abra") || !v.chars().any(|c| c.is_ascii_digit()) {
                    problems.push(format!("{d}: version line {v:?}"));
                }
                if let Some(want) = expect("version", "version").as_str()
                    && v != want
                {
                    problems.push(format!("{d}: version {v:?}, expected {want:?}"));
                }
            }
            None => problems.push(format!("{d}: no version sample")),
        }
        // The machine listing: compact JSON, apps keyed by appName.
        for name in samples_named(&dir, "app-ls") {
            let out = sample(&dir, &name).unwrap();
            match parse::app_ls(&out.stdout) {
                Ok(apps) => {
                    let listed: Vec<&str> = apps.iter().map(|a| a.domain.as_str()).collect();
                    if let Some(want) = expect(&name, "apps").as_array() {
                        let want: Vec<&str> = want.iter().filter_map(|v| v.as_str()).collect();
                        if listed != want {
                            problems.push(format!("{d}: {name} lists {listed:?}, expected {want:?}"));
                        }
                    }
                }
                Err(e) => problems.push(format!("{d}: {name}: {e}")),
            }
        }
        // Snapshot ids: only from a line that clearly carries one.
        let backups = samples_named(&dir, "app-backup-create");
        if backups.is_empty() {
            problems.push(format!("{d}: no app-backup-create sample"));
        }
        for name in backups {
            let out = sample(&dir, &name).unwrap();
            if out.code() != Some(0) {
                // e.g. `.notty`: the same call without a terminal.
                eprintln!("{d}: {name}: exit {:?}: {:?}", out.code(), out.last_error_line());
                continue;
            }
            let id = parse::snapshot_id(&out.stdout);
            match expect(&name, "snapshot_id") {
                serde_json::Value::String(want) if id.as_deref() != Some(want.as_str()) => {
                    problems.push(format!("{d}: {name}: snapshot id {id:?}, expected {want}"))
                }
                serde_json::Value::Null if m["expect"][&name].get("snapshot_id").is_some() && id.is_some() => {
                    problems.push(format!("{d}: {name}: snapshot id {id:?} where none is"))
                }
                _ => eprintln!("{d}: {name}: snapshot id {id:?}"),
            }
        }
        // Failure lines.
        for name in samples_named(&dir, "app-deploy") {
            let out = sample(&dir, &name).unwrap();
            if out.code() == Some(0) {
                continue;
            }
            let line = out.last_error_line().map(str::to_string);
            match expect(&name, "error_line").as_str() {
                Some(want) if line.as_deref() != Some(want) => {
                    problems.push(format!("{d}: {name}: error line {line:?}, expected {want:?}"))
                }
                _ if line.is_none() => problems.push(format!("{d}: {name}: no error line")),
                _ => {}
            }
        }
        // The lint table and the rung it gives.
        for name in samples_named(&dir, "recipe-lint") {
            let out = sample(&dir, &name).unwrap();
            let lint = classify(&out);
            let expected = m["expect"].get(&name).is_some();
            if (expected || out.code() == Some(0)) && parse::lint_table(&out.stdout).is_none_or(|t| t.is_empty()) {
                problems.push(format!("{d}: {name}: no lint table"));
            }
            eprintln!("{d}: {name}: lint {:?} {:?} {:?}", lint.status, lint.detail, lint.rules_failed);
            let status = match lint.status {
                LintStatus::Pass => "pass",
                LintStatus::Fail => "fail",
                LintStatus::Unver => "unver",
            };
            if let Some(want) = expect(&name, "lint").as_str()
                && status != want
            {
                problems.push(format!("{d}: {name}: lint {status}, expected {want} ({:?})", lint.detail));
            }
            if let Some(want) = expect(&name, "rules_failed").as_array() {
                let want: Vec<String> = want.iter().filter_map(|v| v.as_str().map(String::from)).collect();
                if lint.rules_failed != want {
                    problems.push(format!("{d}: {name}: rules failed {:?}, expected {want:?}", lint.rules_failed));
                }
            }
        }
    }
    assert!(problems.is_empty(), "recorded outputs ccci cannot read:\n{}", problems.join("\n"));
}

/// While transcripts are synthetic, the stand-in must accept exactly the flags and positional
/// counts their help lists.
#[test]
fn the_stand_in_agrees_with_synthetic_transcripts() {
    let abra = repo_root().join("fixtures/abra");
    let mut problems = Vec::new();
    for dir in contract_dirs() {
        if meta(&dir)["synthetic"] != true {
            continue;
        }
        let mut seen = BTreeMap::new();
        for call in Call::examples() {
            let words = call.command();
            if words.is_empty() || seen.insert(words.join(" "), ()).is_some() {
                continue;
            }
            let name = help_name(&call);
            let recorded = parse_help(&read(&dir, &format!("{name}.help")).unwrap(), words);
            let o = std::process::Command::new(&abra)
                .args(words)
                .arg("--help")
                .env("ABRA_DIR", "/nonexistent")
                .env_remove("FIXTURE_ABRA_LOG")
                .output()
                .unwrap();
            let fixture = parse_help(&String::from_utf8_lossy(&o.stdout), words);
            let (mut a, mut b) = (recorded.flags.clone(), fixture.flags.clone());
            a.sort();
            b.sort();
            if a != b || (recorded.min, recorded.max) != (fixture.min, fixture.max) {
                problems.push(format!(
                    "{name}: transcript {a:?} {}..{:?}; stand-in {b:?} {}..{:?}",
                    recorded.min, recorded.max, fixture.min, fixture.max
                ));
            }
        }
    }
    assert!(problems.is_empty(), "fixtures/abra and the synthetic transcripts differ:\n{}", problems.join("\n"));
}
