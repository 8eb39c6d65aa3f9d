//! The summary table printed on stderr at the end of a run.

use super::Results;

pub fn summary_table(r: &Results) -> String {
    let mut out = String::new();
    out.push_str(&format!("== summary: {} {} ({}) ==\n", r.recipe, r.domain, r.mode.as_str()));
    out.push_str(&format!("  {:<10} {:<6} {:>9}  {}\n", "stage", "status", "duration", "reason"));
    for s in &r.stages {
        let status = match (s.status.as_str(), s.intentional) {
            ("skip", true) => "skip",
            ("skip", false) => "SKIP!",
            (other, _) => other,
        };
        out.push_str(&format!(
            "  {:<10} {:<6} {:>9}  {}\n",
            s.stage.name(),
            status,
            crate::clock::human(std::time::Duration::from_millis(s.ms)),
            s.reason.as_deref().unwrap_or("")
        ));
        for t in &s.tests {
            out.push_str(&format!(
                "    {:<8} {:<6} {:>9}  {}\n",
                t.name,
                t.status.as_str(),
                crate::clock::human(std::time::Duration::from_millis(t.ms)),
                t.reason.as_deref().unwrap_or("")
            ));
        }
    }
    out.push_str(&format!(
        "  {:<10} {:<6} {:>9}  {}{}\n",
        "lint",
        r.lint.status.rung_status().as_str(),
        "",
        r.lint.detail.as_deref().unwrap_or(""),
        if r.lint.rules_failed.is_empty() { String::new() } else { format!(" ({})", r.lint.rules_failed.join(", ")) }
    ));
    for d in &r.deps {
        let ready = d.ready_ms.map_or_else(
            || "never ready".to_string(),
            |ms| format!("ready in {}", crate::clock::human(std::time::Duration::from_millis(ms))),
        );
        out.push_str(&format!(
            "  dep {:<6} {} {}  {ready}, teardown {}{}\n",
            d.name,
            d.domain,
            if d.version.is_empty() { "?" } else { &d.version },
            d.teardown.as_str(),
            d.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        ));
    }
    let residue =
        if r.teardown.residue.is_empty() { String::new() } else { format!(" ({})", r.teardown.residue.join(", ")) };
    out.push_str(&format!(
        "  teardown   {:<6} {:>9}  {}{residue}\n",
        r.teardown.result.as_str(),
        crate::clock::human(std::time::Duration::from_millis(r.teardown.ms)),
        r.teardown.reason.as_deref().unwrap_or("")
    ));
    out.push_str(&format!(
        "  level {}  outcome {}  exit {}  in {}  (ccci cpu {} ms)\n",
        r.level,
        r.outcome.as_str(),
        r.exit_code,
        crate::clock::human(std::time::Duration::from_millis(r.duration_ms)),
        r.self_cpu_ms
    ));
    out
}
