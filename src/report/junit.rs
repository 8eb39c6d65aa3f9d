//! JUnit XML: one testcase per stage and per custom test.

use super::{Results, Status};

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn case(out: &mut String, class: &str, name: &str, status: Status, ms: u64, reason: Option<&str>) {
    let secs = ms as f64 / 1000.0;
    out.push_str(&format!("    <testcase classname=\"{}\" name=\"{}\" time=\"{secs:.3}\"", esc(class), esc(name)));
    let msg = esc(reason.unwrap_or(""));
    match status {
        Status::Pass => out.push_str("/>\n"),
        Status::Fail => out.push_str(&format!(">\n      <failure message=\"{msg}\"/>\n    </testcase>\n")),
        Status::Skip | Status::Unver => {
            out.push_str(&format!(">\n      <skipped message=\"{}: {msg}\"/>\n    </testcase>\n", status.as_str()))
        }
    }
}

pub fn junit_xml(r: &Results) -> String {
    let mut cases = String::new();
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    let mut count = |s: Status| {
        tests += 1;
        match s {
            Status::Fail => failures += 1,
            Status::Skip | Status::Unver => skipped += 1,
            Status::Pass => {}
        }
    };
    for s in &r.stages {
        count(s.status);
        case(&mut cases, &format!("ccci.{}", r.recipe), s.stage.name(), s.status, s.ms, s.reason.as_deref());
        for t in &s.tests {
            count(t.status);
            case(&mut cases, &format!("ccci.{}.{}", r.recipe, s.stage), &t.name, t.status, t.ms, t.reason.as_deref());
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"ccci.{}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{}\">\n{cases}  </testsuite>\n</testsuites>\n",
        esc(&r.recipe),
        r.duration_ms as f64 / 1000.0,
        esc(&r.started)
    )
}
