//! What the run dir adds to `results.json` for a person reading a failure: the last lines a
//! failing custom test printed (from `run.log`) and the tails of the diagnostics files the run
//! saved. The JUnit report and `summary.md` show them; `results.json` only lists the files.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::{Results, Status};

/// Lines kept of each failing step's output.
pub(super) const TAIL_LINES: usize = 20;
/// Lines shown of each diagnostics file.
pub(super) const DIAGNOSTICS_LINES: usize = 15;
/// Diagnostics files shown at most.
const DIAGNOSTICS_FILES: usize = 6;
/// Bytes read from the end of a diagnostics file.
const TAIL_BYTES: u64 = 64 * 1024;

/// Output tails and diagnostics excerpts of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    /// The last lines each failing custom test printed, by test name.
    pub tails: BTreeMap<String, Vec<String>>,
    /// `(path relative to the run dir, its last lines)` of the diagnostics files
    /// `results.json` lists, the one the reason names first.
    pub diagnostics: Vec<(String, Vec<String>)>,
}

impl Evidence {
    /// Reads what the reports show of `run_dir`: the tails of the failing tests from `run.log`
    /// and the diagnostics files listed in `results.diagnostics`. Nothing that cannot be read is
    /// an error: the reports show less.
    pub fn gather(run_dir: &Path, r: &Results) -> Evidence {
        let failing: Vec<&str> = r
            .stages
            .iter()
            .flat_map(|s| &s.tests)
            .filter(|t| t.status == Status::Fail)
            .map(|t| t.name.as_str())
            .collect();
        let tails = match std::fs::File::open(run_dir.join("run.log")) {
            Ok(f) if !failing.is_empty() => step_tails(BufReader::new(f), &failing, TAIL_LINES),
            _ => BTreeMap::new(),
        };
        let mut listed: Vec<&String> = r.diagnostics.iter().collect();
        // The file the reason points at ("see diagnostics/app.log") comes first.
        let reason = r.reason.as_deref().unwrap_or("");
        listed.sort_by_key(|p| !reason.contains(p.as_str()));
        let diagnostics = listed
            .into_iter()
            .take(DIAGNOSTICS_FILES)
            .filter_map(|rel| {
                let path = diagnostics_path(run_dir, rel)?;
                let lines = tail_of_file(&path, DIAGNOSTICS_LINES)?;
                let shown = path.strip_prefix(run_dir).unwrap_or(&path).display().to_string();
                Some((shown, lines))
            })
            .collect();
        Evidence { tails, diagnostics }
    }
}

/// The last `n` output lines of each of `steps` in a `run.log` (`<time> <LEVEL> <step>| <line>`).
pub(super) fn step_tails(log: impl BufRead, steps: &[&str], n: usize) -> BTreeMap<String, Vec<String>> {
    let mut tails: BTreeMap<String, VecDeque<String>> = BTreeMap::new();
    for line in log.split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line);
        // `<time> <LEVEL> ` with the level padded to five characters.
        let Some(body) = line.split_once(' ').and_then(|(_, rest)| rest.get(6..)) else { continue };
        let Some((step, text)) = body.split_once("| ") else { continue };
        if steps.contains(&step) {
            let tail = tails.entry(step.to_string()).or_default();
            if tail.len() == n {
                tail.pop_front();
            }
            tail.push_back(text.to_string());
        }
    }
    tails.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect()
}

/// A listed diagnostics file below the run dir: `diagnostics/app.log` or `app.log` (taken as
/// below `diagnostics/`); absolute paths and `..` are refused.
fn diagnostics_path(run_dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    if rel.starts_with("diagnostics") { Some(run_dir.join(rel)) } else { Some(run_dir.join("diagnostics").join(rel)) }
}

/// The last `n` lines of a regular file (read from its last [`TAIL_BYTES`]), following no link.
fn tail_of_file(path: &Path, n: usize) -> Option<Vec<String>> {
    let mut f =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let start = meta.len().saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // cut mid-line
    }
    let from = lines.len().saturating_sub(n);
    Some(lines[from..].iter().map(|l| l.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_come_from_the_steps_own_lines() {
        let log = "\
2026-11-30T01:00:00.000Z DEBUG spawn `test_b` (pid 5)
2026-11-30T01:00:00.001Z INFO  test_b| expected 200
2026-11-30T01:00:00.002Z INFO  test_a| unrelated
2026-11-30T01:00:00.003Z INFO  test_b| got 500
2026-11-30T01:00:00.004Z INFO  test_b| a | pipe stays
";
        let t = step_tails(log.as_bytes(), &["test_b"], 2);
        assert_eq!(t["test_b"], vec!["got 500", "a | pipe stays"]);
        assert!(!t.contains_key("test_a"));
    }

    #[test]
    fn diagnostics_are_read_from_below_the_run_dir_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("diagnostics")).unwrap();
        let body: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        std::fs::write(d.path().join("diagnostics/app.log"), &body).unwrap();
        std::fs::write(d.path().join("diagnostics/app.ps"), "task failed\n").unwrap();
        std::fs::write(d.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), d.path().join("diagnostics/link.log")).unwrap();
        let mut r = Results::blank("hello", "1");
        r.diagnostics =
            ["diagnostics/app.ps", "app.log", "../secret", "/etc/passwd", "link.log"].map(String::from).to_vec();
        r.reason = Some("install failed: not ready (see diagnostics/app.log)".into());
        let e = Evidence::gather(d.path(), &r);
        let names: Vec<&str> = e.diagnostics.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["diagnostics/app.log", "diagnostics/app.ps"], "the named one first, nothing outside");
        assert_eq!(e.diagnostics[0].1.len(), DIAGNOSTICS_LINES);
        assert_eq!(e.diagnostics[0].1.last().unwrap(), "line 40");
        assert_eq!(e.diagnostics[1].1, vec!["task failed"]);
    }
}
