//! `summary.md`: what a PR comment shows of a run: the verdict, the level and rungs, the stage
//! table, why it failed with the failing tests' last lines and the diagnostics excerpt, the
//! duration, and links (the build, the run dir, a command that reproduces the run).

use std::path::Path;
use std::time::Duration;

use super::{Evidence, Results, StageResult, Status, TeardownResult};
use crate::clock::human;
use crate::exit::Outcome;
use crate::stage::Stage;

/// Longest reason shown in a table cell.
const CELL_MAX: usize = 300;

fn status_cell(status: Status, intentional: bool) -> &'static str {
    match (status, intentional) {
        (Status::Pass, _) => "✅ pass",
        (Status::Fail, _) => "❌ fail",
        (Status::Skip, true) => "⏭️ skip",
        (Status::Skip, false) => "⚠️ skip (unintended)",
        (Status::Unver, _) => "➖ unver",
    }
}

fn verdict_icon(r: &Results) -> &'static str {
    match r.outcome {
        Outcome::Pass if r.teardown.unclean() => "⚠️",
        Outcome::Pass => "✅",
        Outcome::Fail => "❌",
        Outcome::Infra => "🛠️",
        Outcome::Error => "💥",
        Outcome::LockTimeout => "🔒",
        Outcome::Cancelled => "⏹️",
        Outcome::Deadline => "⏱️",
    }
}

/// A table cell: one line, no `|`, bounded.
fn cell(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one.chars().take(CELL_MAX).collect();
    if one.chars().count() > CELL_MAX {
        out.push('…');
    }
    out.replace('\\', "\\\\").replace('|', "\\|").replace('<', "&lt;")
}

/// Inline code that survives backticks in the text.
fn code(s: &str) -> String {
    let run = longest_backtick_run(s);
    let ticks = "`".repeat(run + 1);
    if run > 0 { format!("{ticks} {s} {ticks}") } else { format!("`{s}`") }
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// A fenced block that no line of `lines` can close.
fn block(lines: &[String]) -> String {
    let run = lines.iter().map(|l| longest_backtick_run(l)).max().unwrap_or(0);
    let fence = "`".repeat(run.max(2) + 1);
    format!("{fence}text\n{}\n{fence}\n", lines.join("\n"))
}

fn shell_quote(v: &str) -> String {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "._/:@+,=-".contains(c)) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// Whether the run was asked for this stage (an unrequested one is `unver: not requested`).
fn requested(s: &StageResult) -> bool {
    !(s.status == Status::Unver && s.reason.as_deref() == Some("not requested"))
}

/// `RECIPE=… REF=… PR=… SRC=… ccci run`: the same recipe, code and stages again.
pub fn reproduce_command(r: &Results) -> String {
    let mut vars = vec![("RECIPE", r.recipe.clone())];
    if !r.git_ref.is_empty() {
        vars.push(("REF", r.git_ref.clone()));
    }
    if r.pr != "0" && !r.pr.is_empty() {
        vars.push(("PR", r.pr.clone()));
    }
    if !r.src.is_empty() {
        vars.push(("SRC", r.src.clone()));
    }
    let stages: Vec<Stage> = r.stages.iter().filter(|s| requested(s)).map(|s| s.stage).collect();
    if !stages.is_empty() && stages.len() < Stage::ALL.len() {
        vars.push(("STAGES", stages.iter().map(|s| s.name()).collect::<Vec<_>>().join(",")));
    }
    if r.mode == super::Mode::Quick {
        vars.push(("CCCI_QUICK", "1".to_string()));
    }
    let mut cmd: Vec<String> = vars.into_iter().map(|(k, v)| format!("{k}={}", shell_quote(&v))).collect();
    cmd.push("ccci run".to_string());
    cmd.join(" ")
}

/// `summary.md` of a run whose files are in `run_dir`.
pub fn summary_md(r: &Results, ev: &Evidence, run_dir: &Path) -> String {
    let mut md = String::new();
    let version = if r.version.is_empty() { String::new() } else { format!(" {}", r.version) };
    let residue = if r.outcome == Outcome::Pass && r.teardown.unclean() { ", teardown left residue" } else { "" };
    md.push_str(&format!(
        "## {} {}{version}: {}{residue} · L{}\n\n",
        verdict_icon(r),
        r.recipe,
        r.outcome.as_str(),
        r.level
    ));
    let mut facts = vec![
        format!("**{}** (exit {})", r.outcome.as_str(), r.exit_code),
        format!("in {}", human(Duration::from_millis(r.duration_ms))),
        format!("level **L{}**", r.level),
        r.mode.as_str().to_string(),
    ];
    if r.pr != "0" && !r.pr.is_empty() {
        facts.push(format!("PR #{}", r.pr));
    }
    if !r.git_ref.is_empty() {
        facts.push(format!("ref {}", code(&r.git_ref)));
    }
    if !r.head.is_empty() {
        facts.push(format!("head {}", code(&r.head.chars().take(12).collect::<String>())));
    }
    md.push_str(&facts.join(" · "));
    md.push_str("\n\n");
    if let Some(why) = &r.reason {
        md.push_str(&format!("> {}\n\n", cell(why)));
    }

    // The ladder.
    md.push_str("| install | upgrade | backup_restore | functional | lint |\n|:-:|:-:|:-:|:-:|:-:|\n");
    let intentional = |rung: &str| r.skips.intentional.contains_key(rung);
    let g = &r.rungs;
    md.push_str(&format!(
        "| {} | {} | {} | {} | {} |\n\n",
        status_cell(g.install, intentional("install")),
        status_cell(g.upgrade, intentional("upgrade")),
        status_cell(g.backup_restore, intentional("backup_restore")),
        status_cell(g.functional, intentional("functional")),
        status_cell(g.lint, intentional("lint")),
    ));

    // The stages.
    md.push_str("### Stages\n\n| stage | status | time | reason |\n|---|---|--:|---|\n");
    for s in &r.stages {
        // A stage not run because of the verdict's own cause says so, not the cause again.
        let reason = match s.reason.as_deref() {
            Some(why) if s.status == Status::Unver && r.reason.as_deref() == Some(why) => "not run (see above)",
            other => other.unwrap_or(""),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            s.stage,
            status_cell(s.status, s.intentional),
            human(Duration::from_millis(s.ms)),
            cell(reason)
        ));
        for t in &s.tests {
            md.push_str(&format!(
                "| ↳ {} | {} | {} | {} |\n",
                code(&t.name),
                status_cell(t.status, false),
                human(Duration::from_millis(t.ms)),
                cell(t.reason.as_deref().unwrap_or(""))
            ));
        }
    }
    let t = &r.teardown;
    let teardown_cell = match t.result {
        TeardownResult::Clean => "✅ clean",
        TeardownResult::Residue => "⚠️ residue",
        TeardownResult::Abandoned => "⚠️ abandoned",
        TeardownResult::Skipped => "➖ skipped",
        TeardownResult::None => "➖ none",
    };
    let mut why = t.reason.clone().unwrap_or_default();
    if !t.residue.is_empty() {
        why.push_str(&format!(" (left: {})", t.residue.join(", ")));
    }
    md.push_str(&format!(
        "| teardown | {teardown_cell} | {} | {} |\n\n",
        human(Duration::from_millis(t.ms)),
        cell(why.trim())
    ));

    // The dependency apps, in deploy order.
    if !r.deps.is_empty() {
        md.push_str(
            "### Dependencies\n\n| dependency | release | domain | ready | teardown |\n|---|---|---|--:|---|\n",
        );
        for d in &r.deps {
            let ready = d.ready_ms.map_or_else(|| "never".to_string(), |ms| human(Duration::from_millis(ms)));
            let teardown = match &d.reason {
                Some(why) => format!("{} ({})", d.teardown.as_str(), why),
                None => d.teardown.as_str().to_string(),
            };
            md.push_str(&format!(
                "| {} | {} | {} | {ready} | {} |\n",
                code(&d.name),
                cell(&d.version),
                code(&d.domain),
                cell(&teardown)
            ));
        }
        md.push('\n');
    }

    // Why it failed: the failing tests' last lines.
    let failing: Vec<_> = r
        .stages
        .iter()
        .flat_map(|s| &s.tests)
        .filter(|t| t.status == Status::Fail && ev.tails.contains_key(&t.name))
        .collect();
    if !failing.is_empty() {
        md.push_str("### Failing tests\n\n");
        for t in failing {
            md.push_str(&format!("{}: {}\n\n", code(&t.name), cell(t.reason.as_deref().unwrap_or("failed"))));
            md.push_str(&block(&ev.tails[&t.name]));
            md.push('\n');
        }
    }
    if !ev.diagnostics.is_empty() {
        md.push_str("### Diagnostics\n\n");
        for (file, lines) in &ev.diagnostics {
            md.push_str(&format!("{} (last {} lines):\n\n", code(file), lines.len()));
            md.push_str(&block(lines));
            md.push('\n');
        }
    }

    // Links.
    md.push_str("### Links\n\n");
    if let Some(link) = r.build_link.as_deref().filter(|l| !l.is_empty()) {
        md.push_str(&format!("- Build: <{link}>\n"));
    }
    md.push_str(&format!("- Run {}: {}\n", code(&r.run_id), code(&run_dir.display().to_string())));
    md.push_str(&format!("- Reproduce: {}\n", code(&reproduce_command(r))));
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TestResult;

    #[test]
    fn cells_and_code_cannot_break_the_markdown() {
        assert_eq!(cell("a | b\nc"), "a \\| b c");
        assert_eq!(code("x`y"), "`` x`y ``");
        assert!(block(&["```".to_string()]).starts_with("````text\n"));
        assert_eq!(cell(&"x".repeat(400)).chars().count(), CELL_MAX + 1);
    }

    #[test]
    fn the_reproduce_command_names_what_was_run() {
        let mut r = Results::blank("hello", "1");
        assert_eq!(reproduce_command(&r), "RECIPE=hello ccci run", "no stage requested: no STAGES");
        r.set_stages(vec![
            StageResult::new(Stage::Install, Status::Pass, 1, None),
            StageResult::unver(Stage::Upgrade, "not requested"),
            StageResult::unver(Stage::Backup, "not requested"),
            StageResult::unver(Stage::Restore, "not requested"),
            StageResult::new(Stage::Custom, Status::Fail, 1, None),
        ]);
        (r.git_ref, r.pr, r.src) = ("feat/x y".into(), "42".into(), "https://git.example.org/o/hello.git".into());
        r.mode = crate::report::Mode::Quick;
        assert_eq!(
            reproduce_command(&r),
            "RECIPE=hello REF='feat/x y' PR=42 SRC=https://git.example.org/o/hello.git STAGES=install,custom CCCI_QUICK=1 ccci run"
        );
    }

    #[test]
    fn a_failing_run_shows_why_with_the_tests_last_lines_and_the_diagnostics() {
        let mut r = Results::blank("hello", "279");
        r.set_stages(vec![
            StageResult::new(Stage::Install, Status::Pass, 61_000, None),
            StageResult::skip(Stage::Upgrade, true, "no earlier release"),
            StageResult::unver(Stage::Backup, "not requested"),
            StageResult::unver(Stage::Restore, "not requested"),
            StageResult {
                tests: vec![
                    TestResult { name: "test_a".into(), status: Status::Pass, ms: 11, reason: None },
                    TestResult {
                        name: "test_b".into(),
                        status: Status::Fail,
                        ms: 20,
                        reason: Some("`./test_b` exited 3: expected 200, got 500".into()),
                    },
                ],
                ..StageResult::new(Stage::Custom, Status::Fail, 12_000, Some("failed: test_b".into()))
            },
        ]);
        r.outcome = Outcome::Fail;
        r.exit_code = 1;
        r.reason = Some("custom failed: failed: test_b".into());
        r.build_link = Some("https://drone.example.org/o/r/279".into());
        r.teardown.result = TeardownResult::Clean;
        let ev = Evidence {
            tails: [("test_b".to_string(), vec!["expected 200, got 500".to_string()])].into(),
            diagnostics: vec![("diagnostics/app.log".into(), vec!["app: listening".into(), "app: crashed".into()])],
        };
        let md = summary_md(&r, &ev, Path::new("/var/lib/ccci/runs/279"));
        assert!(md.starts_with("## ❌ hello: fail · L2\n"), "{md}");
        assert!(md.contains("> custom failed: failed: test_b\n"), "{md}");
        assert!(md.contains("| ✅ pass | ⏭️ skip | ➖ unver | ❌ fail | ➖ unver |"), "{md}");
        assert!(md.contains("| ↳ `test_b` | ❌ fail | 20ms |"), "{md}");
        assert!(md.contains("```text\nexpected 200, got 500\n```"), "{md}");
        assert!(
            md.contains("`diagnostics/app.log` (last 2 lines):\n\n```text\napp: listening\napp: crashed\n```"),
            "{md}"
        );
        assert!(md.contains("- Build: <https://drone.example.org/o/r/279>"), "{md}");
        assert!(md.contains("STAGES=install,upgrade,custom ccci run"), "{md}");
        assert!(md.contains("| teardown | ✅ clean |"), "{md}");
        // A pass shows neither section.
        let ok = summary_md(&Results::blank("hello", "1"), &Evidence::default(), Path::new("/r"));
        assert!(!ok.contains("### Failing tests") && !ok.contains("### Diagnostics"), "{ok}");
    }
}
