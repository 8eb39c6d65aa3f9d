//! What ccci reads from abra's output. Every parser here is fed the recorded transcripts of a
//! real abra by the contract test, so a change in abra's output shows up there, not in a run.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::AbraError;
use crate::process::text::for_log;

/// One app listed by `abra app ls -m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedApp {
    pub server: String,
    /// The name abra knows the app by (its `.env` file name): what every abra command takes.
    pub domain: String,
    pub recipe: String,
}

/// `abra --version`: its first line, e.g. `abra version 0.13.0-beta-06a57de`.
pub fn version(stdout: &str) -> String {
    stdout.lines().map(|l| for_log(l).trim().to_string()).find(|l| !l.is_empty()).unwrap_or_default()
}

/// `{server: {apps: [{appName, domain, recipe, …}]}}`; every field is read as a string. The app
/// is keyed by `appName` (the `.env` file name every abra command takes); `domain` is the
/// `DOMAIN` inside that file, which a recipe's `.env.sample` may leave untemplated.
pub fn app_ls(text: &str) -> Result<Vec<ListedApp>, AbraError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text).map_err(|e| AbraError::Parse(e.to_string()))?;
    let mut apps = Vec::new();
    let Some(servers) = v.as_object() else { return Err(AbraError::Parse("not a JSON object".into())) };
    for (server, entry) in servers {
        for app in entry.get("apps").and_then(Value::as_array).into_iter().flatten() {
            let field = |k: &str| app.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let domain = if field("appName").is_empty() { field("domain") } else { field("appName") };
            if !domain.is_empty() {
                apps.push(ListedApp { server: server.clone(), domain, recipe: field("recipe") });
            }
        }
    }
    Ok(apps)
}

/// Lines that clearly carry a restic snapshot id, and nothing else does:
/// - restic's own `snapshot 4d1e8f0a saved` (plain `restic backup` output);
/// - a `"snapshot_id": "<hex>"` field (restic's `--json` summary, and backupbot's JSON log
///   lines when abra sets `MACHINE_LOGS`, which carry that summary);
/// - `snapshot id: <hex>` / `snapshot_id=<hex>` written as a field of a plain log line.
static SNAPSHOT: LazyLock<[Regex; 3]> = LazyLock::new(|| {
    [
        Regex::new(r"(?i)\bsnapshot\s+([0-9a-f]{8,64})\s+saved\b").expect("regex"),
        Regex::new(r#"(?i)"snapshot_id"\s*:\s*"([0-9a-f]{8,64})""#).expect("regex"),
        Regex::new(r#"(?i)\bsnapshot[ _]id\s*[:=]\s*"?([0-9a-f]{8,64})\b"#).expect("regex"),
    ]
});

/// The snapshot id `abra app backup create` reported, when one line clearly carries it (the
/// last such line wins: a retried backup reports its final snapshot last). `None` means
/// "unknown": the caller restores the latest snapshot instead of passing a guess.
pub fn snapshot_id(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let line = for_log(line);
        SNAPSHOT.iter().find_map(|re| re.captures(&line).map(|c| c[1].to_lowercase()))
    })
}

/// abra's failure line, read as ccci reads it from a failed call ([`crate::process::error_line`]:
/// the last `FATA` line, else cobra's `Error: …`, else the last non-empty line).
pub fn error_line(output: &str) -> Option<String> {
    let lines: Vec<String> = output.lines().map(|l| for_log(l).into_owned()).collect();
    crate::process::error_line(&lines).map(str::to_string)
}

/// One row of `abra recipe lint`'s rule table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintRule {
    /// `R001` …
    pub rule: String,
    pub satisfied: bool,
    pub skipped: bool,
}

static RULE_REF: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^R\d{3}$").expect("regex"));

fn cells(line: &str) -> Vec<String> {
    line.split(['│', '┃', '|']).map(|c| c.trim().to_string()).collect()
}

fn truthy(cell: &str) -> Option<bool> {
    match cell.to_lowercase().as_str() {
        "✅" | "✔" | "✓" | "✔️" | "yes" | "y" | "true" | "ok" => Some(true),
        "❌" | "✘" | "✗" | "❎" | "no" | "n" | "false" | "x" => Some(false),
        "" | "-" => None,
        _ => None,
    }
}

/// The rule table `abra recipe lint` prints (columns `ref`, `rule`, `severity`, `satisfied`,
/// `skipped`, `resolve`, in a box-drawn or ASCII table). `None` when the output holds no
/// table with a `satisfied` column: then nothing can be said about the rules.
pub fn lint_table(output: &str) -> Option<Vec<LintRule>> {
    let mut satisfied_col = None;
    let mut skipped_col = None;
    let mut rules = Vec::new();
    for line in output.lines() {
        let line = for_log(line);
        let row = cells(&line);
        if satisfied_col.is_none() {
            let lower: Vec<String> = row.iter().map(|c| c.to_lowercase()).collect();
            if let Some(i) = lower.iter().position(|c| c == "satisfied") {
                satisfied_col = Some(i);
                skipped_col = lower.iter().position(|c| c == "skipped");
            }
            continue;
        }
        let Some(at) = row.iter().position(|c| RULE_REF.is_match(c)) else { continue };
        let Some(sat) = satisfied_col.and_then(|i| row.get(i)) else { continue };
        let skipped = skipped_col.and_then(|i| row.get(i)).and_then(|c| truthy(c)).unwrap_or(false);
        // A skipped rule was not checked: it neither passes nor fails the recipe.
        let satisfied = skipped || truthy(sat).unwrap_or(true);
        rules.push(LintRule { rule: row[at].clone(), satisfied, skipped });
    }
    satisfied_col.map(|_| rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_machine_listing_keyed_by_app_name() {
        let text = r#"{"default":{"apps":[{"appName":"a-000000.x","domain":"hello.example.com","recipe":"hello","server":"default","status":"unknown"}],"appCount":1},"other":{"apps":[]}}"#;
        let apps = app_ls(text).unwrap();
        assert_eq!(
            apps,
            vec![ListedApp { server: "default".into(), domain: "a-000000.x".into(), recipe: "hello".into() }]
        );
        assert!(app_ls("").unwrap().is_empty());
        assert!(app_ls("[1]").is_err());
    }

    #[test]
    fn a_snapshot_id_only_from_a_line_that_carries_one() {
        assert_eq!(snapshot_id("snapshot 4d1e8f0a saved\n").as_deref(), Some("4d1e8f0a"));
        let json = r#"{"levelname": "SUMMARY", "message": "backup finished", "snapshot_id": "4D1E8F0AB2C3D4E5"}"#;
        assert_eq!(snapshot_id(json).as_deref(), Some("4d1e8f0ab2c3d4e5"));
        assert_eq!(snapshot_id("INFO Snapshot ID: deadbeef01\nINFO done").as_deref(), Some("deadbeef01"));
        assert_eq!(snapshot_id("\x1b[32mINFO\x1b[0m snapshot_id=cafebabe\r\n").as_deref(), Some("cafebabe"));
        // The last line is not an id, and lines that merely mention snapshots are no ids.
        assert_eq!(snapshot_id("backup finished\nsnapshot 1\n"), None);
        assert_eq!(snapshot_id("creating snapshot of volumes\nsnapshots: 3\nbackup finished"), None);
        assert_eq!(snapshot_id("snapshot zzzzzzzz saved"), None);
        assert_eq!(snapshot_id("snapshot aaaaaaaa saved\nsnapshot bbbbbbbb saved").as_deref(), Some("bbbbbbbb"));
    }

    #[test]
    fn the_error_line_is_the_last_fata_line_without_colours() {
        assert_eq!(error_line("x\n\x1b[91mFATA\x1b[0m boom\ny\n").as_deref(), Some("FATA boom"));
        assert_eq!(error_line("Error: unknown flag: --x\n\n").as_deref(), Some("Error: unknown flag: --x"));
        let cobra = "Error: accepts 1 arg(s), received 2\nRun 'abra app restore --help' for usage.\n";
        assert_eq!(error_line(cobra).as_deref(), Some("Error: accepts 1 arg(s), received 2"));
        assert_eq!(error_line(""), None);
    }

    #[test]
    fn reads_the_lint_table() {
        let text = "\
┌──────┬──────────────────────────┬──────────┬───────────┬─────────┬─────────┐
│ REF  │ RULE                     │ SEVERITY │ SATISFIED │ SKIPPED │ RESOLVE │
├──────┼──────────────────────────┼──────────┼───────────┼─────────┼─────────┤
│ R001 │ compose config has …     │ warn     │ ✅        │ ❌      │         │
│ R006 │ has published version    │ warn     │ ❌        │ ✅      │         │
│ R008 │ .env.sample provided     │ critical │ ❌        │ ❌      │ create  │
└──────┴──────────────────────────┴──────────┴───────────┴─────────┴─────────┘
FATA critical errors present in hello config";
        let rules = lint_table(text).unwrap();
        assert_eq!(rules.len(), 3);
        let failed: Vec<&str> = rules.iter().filter(|r| !r.satisfied).map(|r| r.rule.as_str()).collect();
        assert_eq!(failed, ["R008"]);
        assert!(rules[1].skipped);
        let ascii = "| ref | rule | satisfied |\n| R002 | healthcheck | no |\n| R003 | tags | yes |";
        let rules = lint_table(ascii).unwrap();
        assert_eq!((rules[0].satisfied, rules[1].satisfied), (false, true));
        assert_eq!(lint_table("FATA recipe hello does not exist"), None);
    }
}
