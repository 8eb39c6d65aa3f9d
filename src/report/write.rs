//! Writing a run's reports into its run dir: `summary.md`, `badge.svg`, `junit.xml` (also to
//! `--junit` when set) and last `results.json`, which lists the others. Each is masked and
//! written atomically; a file that cannot be written is logged and listed as null. Then every
//! written file is scanned for a secret the masking missed: if one is found,
//! `flags.no_secret_leak` becomes false and `results.json` is written again.

use std::path::{Path, PathBuf};

use super::{Evidence, Results, badge_svg, junit_xml, summary_md};
use crate::mask::{self, Masker};
use crate::workspace::Workspace;

pub(super) const RESULTS: &str = "results.json";
pub(super) const SUMMARY: &str = "summary.md";
pub(super) const BADGE: &str = "badge.svg";
pub(super) const JUNIT: &str = "junit.xml";

fn write(path: &Path, text: &str) -> bool {
    match Workspace::write_atomic(path, mask::mask(text).as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!("cannot write {}: {e}", path.display());
            false
        }
    }
}

/// Writes every report of `results` into `run_dir` (and the JUnit report to `junit` too);
/// returns the paths written. Never changes the verdict.
pub fn write_reports(run_dir: &Path, junit: Option<&Path>, results: &mut Results) -> Vec<PathBuf> {
    let evidence = Evidence::gather(run_dir, results);
    let mut written = Vec::new();
    let mut put = |name: &str, text: &str| -> Option<String> {
        let path = run_dir.join(name);
        write(&path, text).then(|| {
            written.push(path);
            name.to_string()
        })
    };
    let xml = junit_xml(results, &evidence);
    results.reports.junit = if xml.is_empty() { None } else { put(JUNIT, &xml) };
    results.reports.badge = put(BADGE, &badge_svg(results));
    results.reports.summary = put(SUMMARY, &summary_md(results, &evidence, run_dir));
    if let Some(extra) = junit.filter(|_| !xml.is_empty())
        && write(extra, &xml)
    {
        written.push(extra.to_path_buf());
    }
    let results_path = run_dir.join(RESULTS);
    let json = |r: &Results| serde_json::to_string_pretty(r).unwrap_or_default();
    if write(&results_path, &json(results)) {
        written.push(results_path.clone());
    }
    let masker: Masker = mask::global();
    if !masker.is_empty() {
        let leak = written
            .iter()
            .chain([&run_dir.join("run.log")])
            .any(|p| std::fs::read_to_string(p).is_ok_and(|t| masker.leaks(&t)));
        if leak {
            tracing::error!("secret leak scan: a written report still carries a secret value");
            results.flags.no_secret_leak = false;
            write(&results_path, &json(results));
        }
    }
    written
}
