//! `badge.svg`: a self-contained flat badge (no fonts, links or scripts fetched), label the
//! recipe, message `L<level> <verdict>`, one colour per verdict.

use super::Results;
use crate::exit::Outcome;

/// The badge's message and colour for a report.
pub fn badge_text(r: &Results) -> (String, &'static str) {
    let residue = r.outcome == Outcome::Pass && r.teardown.unclean();
    let verdict = if residue { "pass, residue" } else { r.outcome.as_str() };
    let colour = match r.outcome {
        Outcome::Pass if residue => "#dfb317",
        Outcome::Pass => "#4c1",
        Outcome::Fail | Outcome::Error => "#e05d44",
        Outcome::Infra | Outcome::LockTimeout => "#9f9f9f",
        Outcome::Cancelled | Outcome::Deadline => "#fe7d37",
    };
    (format!("L{} {verdict}", r.level), colour)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Width in pixels of `s` in 11 px Verdana, near enough: 7 px a character, plus padding.
fn width(s: &str) -> usize {
    s.chars().count() * 7 + 10
}

/// The badge as SVG text.
pub fn badge_svg(r: &Results) -> String {
    let label = if r.recipe.is_empty() { "ccci".to_string() } else { r.recipe.clone() };
    let (message, colour) = badge_text(r);
    let (lw, mw) = (width(&label), width(&message));
    let total = lw + mw;
    let (label, message) = (esc(&label), esc(&message));
    let (lx, mx) = (lw * 5, lw * 10 + mw * 5);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{label}: {message}">
  <title>{label}: {message}</title>
  <linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>
  <clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>
  <g clip-path="url(#r)">
    <rect width="{lw}" height="20" fill="#555"/>
    <rect x="{lw}" width="{mw}" height="20" fill="{colour}"/>
    <rect width="{total}" height="20" fill="url(#s)"/>
  </g>
  <g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="110">
    <text x="{lx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{label}</text>
    <text x="{lx}" y="140" transform="scale(.1)">{label}</text>
    <text x="{mx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{message}</text>
    <text x="{mx}" y="140" transform="scale(.1)">{message}</text>
  </g>
</svg>
"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TeardownResult;

    #[test]
    fn the_badge_says_the_level_and_the_verdict() {
        let mut r = Results::blank("hello", "1");
        r.level = 4;
        assert_eq!(badge_text(&r), ("L4 pass".to_string(), "#4c1"));
        r.teardown.result = TeardownResult::Residue;
        assert_eq!(badge_text(&r).0, "L4 pass, residue");
        r.outcome = Outcome::Infra;
        r.level = 0;
        assert_eq!(badge_text(&r), ("L0 infra".to_string(), "#9f9f9f"));
        let svg = badge_svg(&r);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains(">hello</text>") && svg.contains(">L0 infra</text>"));
        assert!(!svg.contains("href") && !svg.contains("<script"), "self-contained");
    }
}
