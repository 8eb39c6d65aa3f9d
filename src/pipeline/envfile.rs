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
    let new = format!("{key}={value}");
    match lines.iter().rposition(|l| line_key(l) == Some(key)) {
        Some(i) => lines[i] = new,
        None => lines.push(new),
    }
    Ok(join(lines))
}

fn join(lines: Vec<String>) -> String {
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Every key's value as abra would read it (in order, expanded, the last assignment winning).
pub fn effective_in(text: &str) -> Result<BTreeMap<String, String>, String> {
    interim_dotenv::parse(text).map(|a| interim_dotenv::effective(&a))
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
    let current = effective_in(text)?.remove("COMPOSE_FILE").filter(|v| !v.is_empty());
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

/// A minimal dotenv reader standing in for `crate::dotenv` (being written on `main`: `parse`
/// keeping every assignment with its expanded value, `effective` giving the last of each),
/// with the same shape so the swap is mechanical. It reads `KEY=value` and `export KEY=value`
/// lines; single-quoted values are literal; double-quoted and bare values expand `$VAR`,
/// `${VAR}`, `${VAR:-default}` and `${VAR-default}` from earlier assignments (unset: empty);
/// a bare value ends at ` #`.
mod interim_dotenv {
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Assignment {
        pub key: String,
        pub value: String,
        /// 1-based line number.
        pub line: usize,
    }

    pub fn parse(text: &str) -> Result<Vec<Assignment>, String> {
        let mut out: Vec<Assignment> = Vec::new();
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let Some(key) = super::line_key(raw) else { continue };
            let rest = raw.split_once('=').map_or("", |x| x.1).trim_start();
            let value = value_of(rest, &vars).map_err(|e| format!("line {}: {key}: {e}", i + 1))?;
            vars.insert(key.to_string(), value.clone());
            out.push(Assignment { key: key.to_string(), value, line: i + 1 });
        }
        Ok(out)
    }

    pub fn effective(assignments: &[Assignment]) -> BTreeMap<String, String> {
        assignments.iter().map(|a| (a.key.clone(), a.value.clone())).collect()
    }

    fn value_of(rest: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
        if let Some(inner) = rest.strip_prefix('\'') {
            let end = inner.find('\'').ok_or("unterminated single quote")?;
            return Ok(inner[..end].to_string());
        }
        if let Some(inner) = rest.strip_prefix('"') {
            let mut body = String::new();
            let mut chars = inner.chars();
            loop {
                match chars.next() {
                    None => return Err("unterminated double quote".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => body.push('\n'),
                        Some(c) => {
                            if c != '"' && c != '\\' && c != '$' {
                                body.push('\\');
                            }
                            body.push(c);
                        }
                        None => return Err("unterminated double quote".into()),
                    },
                    Some(c) => body.push(c),
                }
            }
            return Ok(expand(&body, vars));
        }
        let bare = match rest.find(" #") {
            Some(i) => &rest[..i],
            None => rest,
        };
        Ok(expand(bare.trim(), vars))
    }

    fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
        let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(body) = after.strip_prefix('{')
                && let Some(end) = body.find('}')
            {
                let expr = &body[..end];
                let (name, default, if_empty) = match (expr.find(":-"), expr.find('-')) {
                    (Some(i), _) => (&expr[..i], Some(&expr[i + 2..]), true),
                    (None, Some(i)) => (&expr[..i], Some(&expr[i + 1..]), false),
                    (None, None) => (expr, None, false),
                };
                let v = vars.get(name);
                let use_default = match v {
                    None => true,
                    Some(v) => if_empty && v.is_empty(),
                };
                match (use_default, default) {
                    (true, Some(d)) => out.push_str(&expand(d, vars)),
                    _ => out.push_str(&get(name)),
                }
                rest = &body[end + 1..];
                continue;
            }
            let name_len = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
            if name_len == 0 {
                out.push('$');
                rest = after;
            } else {
                out.push_str(&get(&after[..name_len]));
                rest = &after[name_len..];
            }
        }
        out.push_str(rest);
        out
    }
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
        assert_eq!(get_in("B=1\nA=\"${B}-${C:-d}-${B-e}-$NONE\"\n", "A").as_deref(), Some("1-d-1-"));
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
