//! The reports (§7.8) as their readers see them: `results.json` reads into the real types and
//! validates against the committed `docs/results.schema.json`, which is generated from those
//! types (`UPDATE_DOCS=1 cargo test --test integration report::` rewrites it).

use std::fs;
use std::path::Path;
use std::time::Duration;

use ccci::exit::Outcome;
use ccci::report::{Evidence, Results, StageResult, Status, TeardownResult, TestResult};
use ccci::stage::Stage;

use crate::common::*;

const SCHEMA: &str = "docs/results.schema.json";

/// Validates a `results.json` text against the committed schema and reads it into the types.
pub fn checked_results(path: &Path) -> Results {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(repo_root().join(SCHEMA)).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the committed schema is a valid JSON Schema");
    let errors: Vec<String> =
        validator.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{} does not validate against {SCHEMA}:\n{}", path.display(), errors.join("\n"));
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{} does not read into Results: {e}", path.display()))
}

#[test]
fn the_committed_schema_is_generated_from_the_types() {
    let want = ccci::report::json_schema();
    let path = repo_root().join(SCHEMA);
    let have = fs::read_to_string(&path).unwrap_or_default();
    if have == want {
        return;
    }
    if std::env::var("UPDATE_DOCS").as_deref() == Ok("1") {
        fs::write(&path, &want).unwrap();
        eprintln!("rewrote {SCHEMA}");
        return;
    }
    panic!(
        "{SCHEMA} is not what the report types generate; regenerate it with `UPDATE_DOCS=1 cargo test --test integration report::`"
    );
}

#[test]
fn the_schema_rejects_what_the_types_do_not_write() {
    let schema: serde_json::Value = serde_json::from_str(&ccci::report::json_schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let good = serde_json::to_value(Results::blank("hello", "1")).unwrap();
    assert!(validator.is_valid(&good));
    for (pointer, bad) in [
        ("/outcome", serde_json::json!("green")),
        ("/mode", serde_json::json!("warm")),
        ("/teardown/result", serde_json::json!("done")),
        ("/stages/0/status", serde_json::json!("ok")),
        ("/lint/status", serde_json::json!("skip")),
        ("/level", serde_json::json!(-1)),
        ("/finished", serde_json::json!("2026-11-30T01:35:25+00:00")),
    ] {
        let mut v = good.clone();
        *v.pointer_mut(pointer).unwrap() = bad;
        assert!(!validator.is_valid(&v), "{pointer} accepted a value ccci never writes");
    }
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("finished");
    assert!(!validator.is_valid(&v), "a required key may be missing");
}

/// A run that stops at a missing ref needs no swarm: its results.json still carries every key.
#[test]
fn a_failed_runs_results_json_validates_and_reads_into_the_types() {
    let mut w = World::new();
    w.abra_mode("fail:new");
    let repo = w.recipe("hello");
    let run_id = format!("rs{}", unique());
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
    let o = output_within(c, Duration::from_secs(120));
    let r = checked_results(&w.run_dir(&run_id).join("results.json"));
    assert_eq!(i32::from(r.exit_code), code(&o), "{}", stderr_of(&o));
    assert_ne!(r.outcome, ccci::exit::Outcome::Pass);
    assert!(r.reason.as_deref().is_some_and(|s| s.contains("no-such-ref")), "{:?}", r.reason);
    assert!(r.finished.ends_with('Z') && r.started.ends_with('Z'), "{} {}", r.started, r.finished);
    // The reports beside it say the same verdict.
    let dir = w.run_dir(&run_id);
    assert_eq!(
        (r.reports.summary.as_deref(), r.reports.badge.as_deref(), r.reports.junit.as_deref()),
        (Some("summary.md"), Some("badge.svg"), Some("junit.xml"))
    );
    let md = fs::read_to_string(dir.join("summary.md")).unwrap();
    let verdict = r.outcome.as_str();
    assert!(md.starts_with("## ") && md.lines().next().unwrap().contains(&format!("hello: {verdict} · L0")), "{md}");
    assert!(md.contains("no-such-ref") && md.contains("- Reproduce: `RECIPE=hello REF=no-such-ref SRC="), "{md}");
    assert!(md.contains("| install | ➖ unver | 0ms | not run (see above) |"), "the cause is said once: {md}");
    let svg = fs::read_to_string(dir.join("badge.svg")).unwrap();
    assert!(svg.contains(&format!(">L0 {verdict}</text>")), "{svg}");
}

/// On the real swarm: a passing run's results.json, summary.md, badge.svg and junit.xml all
/// say `pass`, and each is valid.
#[test]
fn a_passing_runs_reports_all_say_pass() {
    let Some((_slot, w)) = swarm_world() else { return };
    w.recipe("hello");
    w.own_port("hello");
    w.trusted("hello", "test_ok", "#!/bin/sh\necho checked\n", true);
    let run_id = format!("rp{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).env("DRONE_BUILD_LINK", "https://drone.example.org/o/r/7");
    c.args(["run", "--recipe", "hello", "--stages", "install,custom"]);
    let o = output_within(c, Duration::from_secs(400));
    assert_eq!(code(&o), 0, "{}", stderr_of(&o));
    let dir = w.run_dir(&run_id);
    let r = checked_results(&dir.join("results.json"));
    assert_eq!((r.outcome, r.exit_code, r.level, r.reason.as_deref()), (ccci::exit::Outcome::Pass, 0, 1, None));
    assert_eq!(r.build_link.as_deref(), Some("https://drone.example.org/o/r/7"));
    let md = fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.starts_with("## ✅ hello") && md.contains(": pass · L1"), "{md}");
    assert!(
        md.contains("| ↳ `test_ok` | ✅ pass |") && md.contains("- Build: <https://drone.example.org/o/r/7>"),
        "{md}"
    );
    assert!(md.contains("STAGES=install,custom ccci run"), "{md}");
    assert!(fs::read_to_string(dir.join("badge.svg")).unwrap().contains(">L1 pass</text>"));
    let xml = fs::read_to_string(dir.join("junit.xml")).unwrap();
    crate::junit::assert_valid_junit(&xml, "real-pass");
    assert!(!xml.contains("<failure") && !xml.contains("<error") && xml.contains("name=\"test_ok\""), "{xml}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// The sample in docs/results.md is what ccci writes for that run.
#[test]
fn the_summary_sample_in_the_docs_is_what_ccci_writes() {
    let mut r = Results::blank("hello", "279");
    r.set_stages(vec![
        StageResult::new(Stage::Install, Status::Pass, 30_000, None),
        StageResult::skip(Stage::Upgrade, true, "no earlier release"),
        StageResult::skip(Stage::Backup, true, "not backup-capable"),
        StageResult::skip(Stage::Restore, true, "not backup-capable"),
        StageResult {
            tests: vec![
                TestResult { name: "test_a_passes".into(), status: Status::Pass, ms: 11, reason: None },
                TestResult {
                    name: "test_b_fails".into(),
                    status: Status::Fail,
                    ms: 20,
                    reason: Some("`./test_b_fails` exited 3: expected 200, got 500".into()),
                },
            ],
            ..StageResult::new(Stage::Custom, Status::Fail, 40, Some("failed: test_b_fails".into()))
        },
    ]);
    (r.version, r.pr, r.git_ref, r.head) = ("1.2.0+1".into(), "42".into(), "feat/x".into(), "0123456789abcdef".into());
    r.src = "https://git.coopcloud.tech/coop-cloud/hello.git".into();
    (r.outcome, r.exit_code, r.duration_ms) = (Outcome::Fail, 1, 95_000);
    r.reason = Some("custom failed: failed: test_b_fails".into());
    r.build_link = Some("https://drone.example.org/coop-cloud/hello/279".into());
    (r.teardown.result, r.teardown.ms) = (TeardownResult::Clean, 9_000);
    let ev = Evidence {
        tails: [("test_b_fails".to_string(), vec!["GET / -> 500".to_string(), "expected 200, got 500".to_string()])]
            .into(),
        diagnostics: vec![(
            "diagnostics/app.log".into(),
            vec![
                "2026-11-30T01:35:20Z app: listening on :80".into(),
                "2026-11-30T01:35:21Z app: panic: no database".into(),
            ],
        )],
    };
    let md = ccci::report::summary_md(&r, &ev, Path::new("/var/lib/cc-ci-runs/279"));
    let doc = fs::read_to_string(repo_root().join("docs/results.md")).unwrap();
    let sample = doc.split("````markdown\n").nth(1).and_then(|s| s.split("````").next()).unwrap_or_default();
    assert_eq!(sample, md, "docs/results.md's summary.md sample differs from what ccci writes:\n{md}");
}
