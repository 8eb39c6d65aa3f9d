//! The reports (§7.8) as their readers see them: `results.json` reads into the real types and
//! validates against the committed `docs/results.schema.json`, which is generated from those
//! types (`UPDATE_DOCS=1 cargo test --test integration report::` rewrites it).

use std::fs;
use std::path::Path;
use std::time::Duration;

use ccci::report::Results;

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
}
