//! The app's `.env`, edited newline-safe (§7.4). Real `.env.sample`s assign a key more than
//! once and build values from earlier ones (`COMPOSE_FILE="$COMPOSE_FILE:compose.x.yml"`), and
//! abra reads the file the way a dotenv reader does: in order, expanding `$VAR`, the last
//! assignment winning. So an override replaces the **last** assignment of its key (or is
//! appended on a line of its own), and a value is read as that reader would see it.
//! (The predecessor once glued a value onto a comment line, and backupbot silently had no
//! repository.)

use std::collections::BTreeMap;
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

/// Sets `key=value` in the text, replacing the key's last assignment; errors name the key.
pub fn set_in(text: &str, key: &str, value: &str) -> Result<String, String> {
    if !KEY.is_match(key) {
        return Err(format!("env key {key:?} must match ^[A-Z_][A-Z0-9_]*$"));
    }
    if value.contains(['\n', '\r']) {
        return Err(format!("env value of {key} must not contain a newline"));
    }
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let new = format!("{key}={}", quote(value).ok_or_else(|| format!("env value of {key} cannot be quoted safely"))?);
    match lines.iter().rposition(|l| line_key(l) == Some(key)) {
        Some(i) => lines[i] = new,
        None => lines.push(new),
    }
    Ok(join(lines))
}

/// A value as abra's dotenv reader and a shell both read it back: bare when plain, else in
/// single quotes (literal), else in double quotes with `"` and `$` escaped. `None` for what
/// no quoting carries safely (a backslash next to a single quote).
fn quote(value: &str) -> Option<String> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"_.,:/+@%=-".contains(&b);
    if value.bytes().all(plain) {
        return Some(value.to_string());
    }
    if !value.contains('\'') {
        return Some(format!("'{value}'"));
    }
    if value.contains('\\') || value.contains('`') {
        return None;
    }
    Some(format!("\"{}\"", value.replace('"', "\\\"").replace('$', "\\$")))
}

fn join(lines: Vec<String>) -> String {
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Every key's value as abra would read it (in order, expanded, the last assignment winning;
/// [`crate::dotenv`] refuses lines abra and a shell would read differently).
pub fn effective_in(text: &str) -> Result<BTreeMap<String, String>, String> {
    crate::dotenv::parse(text).map(|a| crate::dotenv::effective(&a)).map_err(|e| format!("the app's .env, {e}"))
}

pub fn get_in(text: &str, key: &str) -> Option<String> {
    effective_in(text).ok()?.remove(key)
}

pub fn set(path: &Path, pairs: &[(String, String)]) -> Result<(), String> {
    let mut text = read(path)?;
    for (k, v) in pairs {
        text = set_in(&text, k, v)?;
    }
    write(path, &text)
}

pub fn get(path: &Path, key: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().and_then(|t| get_in(&t, key))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// abra's compose files when `COMPOSE_FILE` is unset or empty.
pub const DEFAULT_COMPOSE: &str = "compose.yml";

/// Makes the effective `COMPOSE_FILE` list `file`: one final line `COMPOSE_FILE=<the
/// effective, expanded value>:<file>`, so every earlier assignment (and every `$COMPOSE_FILE`
/// built on it) keeps its meaning and `compose.yml` is never lost. Returns the new value.
pub fn add_compose_file_in(text: &str, file: &str) -> Result<(String, String), String> {
    let current = effective_in(text)?.remove("COMPOSE_FILE").filter(|v| !v.trim().is_empty());
    let current = current.unwrap_or_else(|| DEFAULT_COMPOSE.to_string());
    if current.split(':').any(|f| f == file) {
        return Ok((text.to_string(), current));
    }
    let value = format!("{current}:{file}");
    if value.contains(['\n', '\r', '\'']) {
        return Err(format!("COMPOSE_FILE {value:?} cannot be written safely"));
    }
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Single quotes: the value is already expanded and must not be expanded again.
    lines.push(format!("COMPOSE_FILE='{value}'"));
    Ok((join(lines), value))
}

pub fn add_compose_file(path: &Path, file: &str) -> Result<String, String> {
    let (text, value) = add_compose_file_in(&read(path)?, file)?;
    write(path, &text)?;
    Ok(value)
}

/// The recipe an `.env` names: `RECIPE`, else `TYPE`, without a `:<version>` suffix.
pub fn recipe_in(text: &str) -> Option<String> {
    let vars = effective_in(text).ok()?;
    let v = vars.get("RECIPE").filter(|v| !v.is_empty()).or_else(|| vars.get("TYPE"))?;
    let name = v.split(':').next().unwrap_or("").trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_last_assignment_and_appends_safely() {
        let text =
            "TYPE=hello\n# LETS_ENCRYPT_ENV=production is the default\nLETS_ENCRYPT_ENV=production\n# trailing comment";
        let out = set_in(text, "LETS_ENCRYPT_ENV", "").unwrap();
        assert!(out.contains("\nLETS_ENCRYPT_ENV=\n"));
        assert!(out.contains("# LETS_ENCRYPT_ENV=production is the default"));
        let out = set_in(&out, "TIMEOUT", "900").unwrap();
        assert!(out.ends_with("# trailing comment\nTIMEOUT=900\n"), "{out}");
        assert!(set_in(&out, "bad-key", "x").is_err());
        assert!(set_in(&out, "A", "x\ny").is_err());
        // A later assignment wins for abra, so that is the one an override replaces.
        let out = set_in("DOMAIN=a.example.com\nX=1\nDOMAIN=b.example.com\n", "DOMAIN", "c").unwrap();
        assert_eq!(out, "DOMAIN=a.example.com\nX=1\nDOMAIN=c\n");
        assert_eq!(get_in(&out, "DOMAIN").as_deref(), Some("c"));
    }

    #[test]
    fn reads_values_as_a_dotenv_reader_does() {
        assert_eq!(
            get_in("COMPOSE_FILE=\"compose.yml:compose.x.yml\"\n", "COMPOSE_FILE").as_deref(),
            Some("compose.yml:compose.x.yml")
        );
        assert_eq!(get_in("export A=1\n", "A").as_deref(), Some("1"));
        assert_eq!(get_in("#A=1\n", "A"), None);
        assert_eq!(get_in("A=x # comment\n", "A").as_deref(), Some("x"));
        assert_eq!(get_in("A='$B'\n", "A").as_deref(), Some("$B"));
        assert_eq!(get_in("B=1\nA=\"${B}-$B-$NONE\"\n", "A").as_deref(), Some("1-1-"));
        // What a shell and abra would read differently is refused, not guessed.
        assert!(effective_in("A=${B:-d}\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn values_are_written_so_that_they_read_back() {
        for v in ["", "plain-1.2:x/y", "two words", "it's", "a $HOME # b", "say \"it's\""] {
            let text = set_in("X=1\n", "V", v).unwrap();
            assert_eq!(get_in(&text, "V").as_deref(), Some(v), "{text}");
        }
        assert!(set_in("", "V", "a\\'b").is_err());
    }

    #[test]
    fn the_overlay_joins_the_effective_compose_file_list_on_one_final_line() {
        // bonfire's idiom: three lines building the list.
        let text = "TYPE=bonfire\nCOMPOSE_FILE=\"compose.yml\"\nCOMPOSE_FILE=\"$COMPOSE_FILE:compose.postgres.yml\"\n#COMPOSE_FILE=\"$COMPOSE_FILE:compose.x.yml\"\nCOMPOSE_FILE=\"$COMPOSE_FILE:compose.meilisearch.yml\"\nX=1\n";
        let (out, value) = add_compose_file_in(text, "compose.ccci.yml").unwrap();
        assert_eq!(value, "compose.yml:compose.postgres.yml:compose.meilisearch.yml:compose.ccci.yml");
        assert!(out.starts_with(text), "earlier lines are untouched: {out}");
        assert!(out.ends_with(&format!("\nCOMPOSE_FILE='{value}'\n")), "{out}");
        assert_eq!(get_in(&out, "COMPOSE_FILE").unwrap(), value);
        // Idempotent, and never without compose.yml.
        assert_eq!(add_compose_file_in(&out, "compose.ccci.yml").unwrap().0, out);
        assert_eq!(add_compose_file_in("TYPE=x\n", "compose.ccci.yml").unwrap().1, "compose.yml:compose.ccci.yml");
        assert_eq!(add_compose_file_in("COMPOSE_FILE=\n", "o.yml").unwrap().1, "compose.yml:o.yml");
    }

    #[test]
    fn the_recipe_an_env_names() {
        assert_eq!(recipe_in("TYPE=hello\n").as_deref(), Some("hello"));
        assert_eq!(recipe_in("TYPE=hello:1.0.0+1\n").as_deref(), Some("hello"));
        assert_eq!(recipe_in("TYPE=x\nRECIPE=hello:abcdef12+U\n").as_deref(), Some("hello"));
        assert_eq!(recipe_in("DOMAIN=x\n"), None);
    }
}
