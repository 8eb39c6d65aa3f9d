//! The app's `.env`, edited newline-safe (§7.4): an existing key is replaced in place, a
//! missing one appended on a line of its own. (The predecessor once glued a value onto a
//! comment line, and backupbot silently had no repository.)

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

static KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Z_][A-Z0-9_]*$").expect("regex"));

fn line_key(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let t = t.strip_prefix("export ").map_or(t, str::trim_start);
    let (k, _) = t.split_once('=')?;
    KEY.is_match(k.trim()).then(|| k.trim())
}

/// Sets `key=value` in the text; errors name the key.
pub fn set_in(text: &str, key: &str, value: &str) -> Result<String, String> {
    if !KEY.is_match(key) {
        return Err(format!("env key {key:?} must match ^[A-Z_][A-Z0-9_]*$"));
    }
    if value.contains(['\n', '\r']) {
        return Err(format!("env value of {key} must not contain a newline"));
    }
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let new = format!("{key}={value}");
    match lines.iter().position(|l| line_key(l) == Some(key)) {
        Some(i) => lines[i] = new,
        None => lines.push(new),
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

pub fn get_in(text: &str, key: &str) -> Option<String> {
    text.lines().rev().find(|l| line_key(l) == Some(key)).map(|l| {
        let v = l.split_once('=').map(|x| x.1).unwrap_or("").trim();
        v.trim_matches(|c| c == '"' || c == '\'').to_string()
    })
}

pub fn set(path: &Path, pairs: &[(String, String)]) -> Result<(), String> {
    let mut text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for (k, v) in pairs {
        text = set_in(&text, k, v)?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn get(path: &Path, key: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().and_then(|t| get_in(&t, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_in_place_and_appends_safely() {
        let text =
            "TYPE=hello\n# LETS_ENCRYPT_ENV=production is the default\nLETS_ENCRYPT_ENV=production\n# trailing comment";
        let out = set_in(text, "LETS_ENCRYPT_ENV", "").unwrap();
        assert!(out.contains("\nLETS_ENCRYPT_ENV=\n"));
        assert!(out.contains("# LETS_ENCRYPT_ENV=production is the default"));
        let out = set_in(&out, "TIMEOUT", "900").unwrap();
        assert!(out.ends_with("# trailing comment\nTIMEOUT=900\n"), "{out}");
        assert!(set_in(&out, "bad-key", "x").is_err());
        assert!(set_in(&out, "A", "x\ny").is_err());
    }

    #[test]
    fn reads_quoted_values() {
        assert_eq!(
            get_in("COMPOSE_FILE=\"compose.yml:compose.x.yml\"\n", "COMPOSE_FILE").as_deref(),
            Some("compose.yml:compose.x.yml")
        );
        assert_eq!(get_in("export A=1\n", "A").as_deref(), Some("1"));
        assert_eq!(get_in("#A=1\n", "A"), None);
    }
}
