//! The lint rung (level 5): `abra recipe lint -n -o <recipe>` on a pristine copy of the tested
//! ref — not the run's tree, which gets `compose.ccci.yml` and `install_steps.sh` applied —
//! under a pseudo-terminal (abra's lint fails with "inappropriate ioctl for device" without
//! one), within [`BUDGET`]. Its output goes to `<run dir>/lint.txt`. Verdict-neutral: whatever
//! lint says, the exit code does not change.

use std::path::Path;
use std::time::Duration;

use super::Ctx;
use super::fetch::Fetched;
use crate::adapters::abra::{Call, parse};
use crate::adapters::git::Git;
use crate::process::{Output, Stopped};
use crate::report::{Lint, LintStatus};

pub const BUDGET: Duration = Duration::from_secs(60);

/// Lints the tested ref. Never fails the run: every problem becomes `unver` with a reason.
pub(super) fn lint(ctx: &Ctx, fetched: &Fetched) -> Lint {
    let root = ctx.ws.run_dir.join("lint");
    let result = run(ctx, fetched, &root);
    if let Err(e) = crate::workspace::remove_dir_all_if_exists(&root) {
        tracing::warn!("{e}");
    }
    let lint = result.unwrap_or_else(|e| Lint::unver(&e));
    match lint.status {
        LintStatus::Pass if lint.rules_failed.is_empty() => tracing::info!("lint: pass"),
        s => tracing::info!(
            "lint: {} ({}){}",
            s.rung_status().as_str(),
            lint.detail.as_deref().unwrap_or(""),
            if lint.rules_failed.is_empty() {
                String::new()
            } else {
                format!("; rules not satisfied: {}", lint.rules_failed.join(", "))
            }
        ),
    }
    lint
}

fn run(ctx: &Ctx, fetched: &Fetched, root: &Path) -> Result<Lint, String> {
    let recipe = &ctx.cfg.recipe;
    let copy = pristine_copy(ctx, fetched, root)?;
    tracing::info!("lint: abra recipe lint on {} at {}", copy.display(), &fetched.head[..fetched.head.len().min(10)]);
    let abra = ctx.abra.with_dir(root);
    let call = Call::RecipeLint { recipe: recipe.clone() };
    let out = abra.execute(abra.command(&call).tee().timeout(BUDGET)).map_err(|e| format!("abra recipe lint: {e}"))?;
    let path = ctx.ws.run_dir.join("lint.txt");
    if let Err(e) = std::fs::write(&path, crate::mask::mask(&out.stdout)) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
    Ok(classify(&out))
}

/// `<root>/recipes/<recipe>`: a clone of the fetched tree checked out at the head commit, in an
/// `ABRA_DIR` of its own (`servers` and `catalogue` linked to the canonical abra home).
fn pristine_copy(ctx: &Ctx, fetched: &Fetched, root: &Path) -> Result<std::path::PathBuf, String> {
    crate::workspace::remove_dir_all_if_exists(root).map_err(|e| e.to_string())?;
    let recipes = root.join("recipes");
    std::fs::create_dir_all(&recipes).map_err(|e| format!("cannot create {}: {e}", recipes.display()))?;
    let home = &ctx.cfg.host.abra_home;
    for shared in ["servers", "catalogue"] {
        std::os::unix::fs::symlink(home.join(shared), root.join(shared))
            .map_err(|e| format!("cannot link {}: {e}", root.join(shared).display()))?;
    }
    let dest = recipes.join(&ctx.cfg.recipe);
    let (src, to) = (fetched.dir.display().to_string(), dest.display().to_string());
    let git = &ctx.git;
    Git::run(git.at(root).args(["clone", "--quiet", "--no-hardlinks", "--no-checkout", src.as_str(), to.as_str()]))
        .map_err(|e| format!("cannot copy the recipe for lint: {e}"))?;
    Git::run(git.at(&dest).args(["checkout", "--quiet", "-f", fetched.head.as_str()]))
        .map_err(|e| format!("cannot check out {} for lint: {e}", fetched.head))?;
    Ok(dest)
}

/// pass: lint exited 0 (unsatisfied `warn` rules are listed); fail: it exited non-zero over
/// its rule table; unver: it was stopped, or failed without judging the recipe (no table).
pub fn classify(out: &Output) -> Lint {
    let rules = parse::lint_table(&out.stdout);
    let failed: Vec<String> = rules.iter().flatten().filter(|r| !r.satisfied).map(|r| r.rule.clone()).collect();
    match out.stopped() {
        Some(Stopped::TimedOut(d)) => {
            return Lint::unver(&format!("abra recipe lint timed out after {}", crate::clock::human(d)));
        }
        Some(s) => return Lint::unver(&format!("abra recipe lint {s}")),
        None => {}
    }
    let error = parse::error_line(&out.stdout);
    match (out.success(), rules) {
        (true, _) => Lint {
            status: LintStatus::Pass,
            detail: Some(if failed.is_empty() {
                "every rule satisfied".to_string()
            } else {
                format!("passed with {} rule(s) not satisfied", failed.len())
            }),
            rules_failed: failed,
        },
        (false, Some(_)) => Lint {
            status: LintStatus::Fail,
            detail: Some(error.unwrap_or_else(|| format!("{} rule(s) not satisfied", failed.len()))),
            rules_failed: failed,
        },
        (false, None) => {
            Lint::unver(&format!("abra recipe lint failed before linting: {}", error.unwrap_or_else(|| out.describe())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: i32, stdout: &str, stopped: Option<Stopped>) -> Output {
        Output {
            name: "abra".into(),
            cmdline: "abra recipe lint -n -o hello".into(),
            ended: stopped.map_or(crate::process::Ended::Exited(code), crate::process::Ended::Stopped),
            stdout: stdout.into(),
            tail: stdout.lines().map(str::to_string).collect(),
            leaky: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    const TABLE: &str = "│ REF │ RULE │ SEVERITY │ SATISFIED │ SKIPPED │\n\
                         │ R001 │ version │ warn │ ✅ │ ❌ │\n\
                         │ R007 │ metadata │ warn │ ❌ │ ❌ │\n";

    #[test]
    fn pass_fail_and_unver() {
        let l = classify(&out(0, TABLE, None));
        assert_eq!((l.status, l.rules_failed.clone()), (LintStatus::Pass, vec!["R007".to_string()]));
        let failing = format!(
            "{TABLE}│ R008 │ .env.sample │ critical │ ❌ │ ❌ │\nFATA critical errors present in hello config\n"
        );
        let l = classify(&out(1, &failing, None));
        assert_eq!(l.status, LintStatus::Fail);
        assert_eq!(l.rules_failed, ["R007", "R008"]);
        assert_eq!(l.detail.as_deref(), Some("FATA critical errors present in hello config"));
        let l = classify(&out(1, "FATA inappropriate ioctl for device\n", None));
        assert_eq!(l.status, LintStatus::Unver);
        assert!(l.detail.unwrap().contains("inappropriate ioctl"));
        let l = classify(&out(0, "", Some(Stopped::TimedOut(BUDGET))));
        assert_eq!(l.status, LintStatus::Unver);
        assert!(l.detail.unwrap().contains("timed out after 1m"));
    }
}
