//! The JUnit report validates against strict JUnit schemas (`tests/data/junit/`: Windy Road's
//! Apache Ant `JUnit.xsd` and Jenkins' xUnit `junit-10.xsd`) with `xmllint --schema` (Debian
//! package `libxml2-utils`, installed by `ci/test.sh`), and says what happened: one failure per
//! cause, a cancelled run as an `<error>`, residue as a failing teardown testcase, the failure's
//! reason and the test's last lines in the element's body.

use std::fs;
use std::path::Path;
use std::process::Command;

use ccci::exit::Outcome;
use ccci::report::{Evidence, Results, StageResult, Status, TeardownResult, TestResult, junit_xml};
use ccci::stage::Stage;

use crate::common::*;

const SCHEMAS: [&str; 2] = ["tests/data/junit/windyroad-JUnit.xsd", "tests/data/junit/jenkins-xunit-junit-10.xsd"];

/// Validates `xml` against both schemas; panics with xmllint's complaint.
pub fn assert_valid_junit(xml: &str, what: &str) {
    let have = Command::new("sh").args(["-c", "command -v xmllint"]).output().is_ok_and(|o| o.status.success());
    assert!(have, "xmllint not found: install the Debian package libxml2-utils (ci/test.sh does)");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{what}.xml"));
    fs::write(&file, xml).unwrap();
    for schema in SCHEMAS {
        let o = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(repo_root().join(schema))
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "the JUnit of {what} does not validate against {schema}:\n{}\n{xml}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

fn count(xml: &str, needle: &str) -> usize {
    xml.matches(needle).count()
}

fn base() -> Results {
    let mut r = Results::blank("hello", "279");
    r.provenance.host = "ci-host".into();
    r.version = "1.2.0+1".into();
    r.duration_ms = 95_000;
    r
}

fn passing() -> Results {
    let mut r = base();
    r.set_stages(vec![
        StageResult::new(Stage::Install, Status::Pass, 30_000, None),
        StageResult::skip(Stage::Upgrade, true, "no earlier release"),
        StageResult::skip(Stage::Backup, true, "not backup-capable"),
        StageResult::skip(Stage::Restore, true, "not backup-capable"),
        StageResult {
            tests: vec![TestResult { name: "test_serves".into(), status: Status::Pass, ms: 40, reason: None }],
            ..StageResult::new(Stage::Custom, Status::Pass, 100, None)
        },
    ]);
    r.teardown.result = TeardownResult::Clean;
    r.teardown.ms = 9_000;
    r
}

fn failing() -> Results {
    let mut r = passing();
    let custom = StageResult {
        tests: vec![
            TestResult { name: "test_a_passes".into(), status: Status::Pass, ms: 11, reason: None },
            TestResult {
                name: "test_b_fails".into(),
                status: Status::Fail,
                ms: 20,
                reason: Some("`./test_b_fails` exited 3: expected 200, got 500 <&>".into()),
            },
        ],
        ..StageResult::new(Stage::Custom, Status::Fail, 40, Some("failed: test_b_fails".into()))
    };
    let mut stages = r.stages.clone();
    stages[4] = custom;
    r.set_stages(stages);
    r.outcome = Outcome::Fail;
    r.exit_code = 1;
    r.reason = Some("custom failed: failed: test_b_fails".into());
    r
}

fn cancelled() -> Results {
    let mut r = base();
    r.set_stages(vec![
        StageResult::new(Stage::Install, Status::Pass, 30_000, None),
        StageResult::unver(Stage::Upgrade, "cancelled (TERM)"),
        StageResult::unver(Stage::Backup, "cancelled (TERM)"),
        StageResult::unver(Stage::Restore, "cancelled (TERM)"),
        StageResult::unver(Stage::Custom, "cancelled (TERM)"),
    ]);
    r.outcome = Outcome::Cancelled;
    r.exit_code = 143;
    r.reason = Some("cancelled by SIGTERM".into());
    r.teardown.result = TeardownResult::Clean;
    r
}

fn residue() -> Results {
    let mut r = passing();
    r.teardown.result = TeardownResult::Residue;
    r.teardown.residue = vec!["volume:hell-620c9a_data".into()];
    r.teardown.reason = Some("objects remained after teardown".into());
    r.exit_code = 4;
    r.reason = Some("teardown residue: objects remained after teardown (volume:hell-620c9a_data)".into());
    r
}

#[test]
fn junit_of_a_passing_run_validates_and_is_all_green() {
    let xml = junit_xml(&passing(), &Evidence::default());
    assert_valid_junit(&xml, "pass");
    assert_eq!((count(&xml, "<failure"), count(&xml, "<error")), (0, 0), "{xml}");
    assert!(xml.contains("<testsuites>"), "no totals on the root, as the Ant schema wants: {xml}");
    assert!(xml.contains("hostname=\"ci-host\"") && xml.contains("package=\"ccci.hello\""), "{xml}");
    assert!(xml.contains("name=\"test_serves\"") && !xml.contains("name=\"custom\" time"), "{xml}");
    assert!(xml.contains("<skipped message=\"no earlier release\"/>"), "{xml}");
}

#[test]
fn junit_of_a_failing_test_has_one_failure_with_the_reason_and_the_tail_in_its_body() {
    let ev = Evidence {
        tails: [(
            "test_b_fails".to_string(),
            vec!["GET / -> 500".to_string(), "\u{1b}[31mexpected\u{1b}[0m 200\u{7}\u{fffe}".to_string()],
        )]
        .into(),
        diagnostics: vec![("diagnostics/app.log".into(), vec!["app: panic: boom".into()])],
    };
    let xml = junit_xml(&failing(), &ev);
    assert_valid_junit(&xml, "fail");
    assert_eq!(count(&xml, "<failure"), 1, "one cause, one failure (the custom stage is not counted again): {xml}");
    assert_eq!(count(&xml, "<error"), 0, "{xml}");
    assert!(
        xml.contains("type=\"test-failed\">`./test_b_fails` exited 3: expected 200, got 500 &lt;&amp;&gt;\n\nlast lines of test_b_fails:\nGET / -&gt; 500\nexpected 200\n</failure>"),
        "{xml}"
    );
    assert!(xml.contains("app: panic: boom"), "the diagnostics excerpt is in the run's system-out: {xml}");
}

#[test]
fn junit_of_a_cancelled_run_is_an_error_not_a_skip() {
    let xml = junit_xml(&cancelled(), &Evidence::default());
    assert_valid_junit(&xml, "cancelled");
    assert_eq!((count(&xml, "<error"), count(&xml, "<failure")), (1, 0), "{xml}");
    assert!(xml.contains("<error message=\"cancelled by SIGTERM\" type=\"cancelled\">"), "{xml}");
    assert!(xml.contains("<skipped message=\"not run: cancelled (TERM)\"/>"), "{xml}");
    for (outcome, code) in
        [(Outcome::Deadline, 142), (Outcome::Infra, 69), (Outcome::LockTimeout, 75), (Outcome::Error, 70)]
    {
        let mut r = cancelled();
        (r.outcome, r.exit_code) = (outcome, code);
        let xml = junit_xml(&r, &Evidence::default());
        assert_valid_junit(&xml, outcome.as_str());
        assert!(xml.contains(&format!("type=\"{}\"", outcome.as_str())) && count(&xml, "<error") == 1, "{xml}");
    }
}

#[test]
fn junit_of_a_residue_run_fails_the_teardown_testcase() {
    let xml = junit_xml(&residue(), &Evidence::default());
    assert_valid_junit(&xml, "residue");
    assert_eq!((count(&xml, "<failure"), count(&xml, "<error")), (1, 0), "{xml}");
    assert!(xml.contains("type=\"teardown-residue\">teardown residue: objects remained after teardown\nleft: volume:hell-620c9a_data\n</failure>"), "{xml}");
}

#[test]
fn junit_of_a_failed_fetch_fails_the_run_testcase_once() {
    let mut r = base();
    r.set_stages(Stage::ALL.into_iter().map(|s| StageResult::unver(s, "fetch failed: no such ref")).collect());
    (r.outcome, r.exit_code, r.reason) = (Outcome::Fail, 1, Some("fetch failed: no such ref".into()));
    let xml = junit_xml(&r, &Evidence::default());
    assert_valid_junit(&xml, "fetch");
    assert_eq!((count(&xml, "<failure"), count(&xml, "<error")), (1, 0), "{xml}");
    assert!(xml.contains("type=\"run-failed\""), "{xml}");
}

/// The real binary writes `junit.xml` into the run dir (and to `--junit`), and it validates.
#[test]
fn junit_of_a_real_failed_run_validates() {
    let mut w = World::new();
    w.abra_mode("fail:new");
    let repo = w.recipe("hello");
    let run_id = format!("ju{}", unique());
    let extra = w.path().join("out.xml");
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello", "--src", repo.to_str().unwrap()]);
    c.args(["--ref", "no-such-ref", "--junit", extra.to_str().unwrap()]);
    let o = output_within(c, std::time::Duration::from_secs(120));
    assert_ne!(code(&o), 0);
    let xml = fs::read_to_string(w.run_dir(&run_id).join("junit.xml")).unwrap();
    assert_eq!(fs::read_to_string(&extra).unwrap(), xml);
    assert_valid_junit(&xml, "real");
    assert!(count(&xml, "<failure") + count(&xml, "<error") == 1, "{xml}");
    assert!(Path::new(&w.run_dir(&run_id)).join("junit.xml").exists());
}

/// Security review L9: a link planted at the `--junit` path is replaced, never written through —
/// the file it pointed at keeps its content and mode.
#[test]
fn a_link_planted_at_the_junit_path_is_replaced_not_written_through() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let w = World::new();
    let repo = w.recipe("hello");
    let victim = w.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let target = w.path().join("junit.xml");
    symlink(&victim, &target).unwrap();
    let run_id = format!("jl{}", unique());
    let mut c = w.ccci();
    c.env("CCCI_RUN_ID", &run_id).args(["run", "--recipe", "hello", "--src", repo.to_str().unwrap()]);
    c.args(["--ref", "no-such-ref", "--junit", target.to_str().unwrap()]);
    let o = output_within(c, std::time::Duration::from_secs(120));
    assert_eq!(code(&o), 1, "{}", stderr_of(&o));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n", "written through the link");
    assert_eq!(fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o600);
    let meta = fs::symlink_metadata(&target).unwrap();
    assert!(meta.file_type().is_file(), "the link was replaced by the report");
    assert_valid_junit(&fs::read_to_string(&target).unwrap(), "replaced");
}
