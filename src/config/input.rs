//! The input rules of §2. Each check names the value and the rule it broke; nothing is created
//! before every input has passed.

use std::fmt;
use std::path::PathBuf;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use crate::stage::Stage;

static RECIPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9-]{0,63}$").expect("regex"));
static OWNER_REPO: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$").expect("regex"));

/// One broken rule: which input, the offending value, the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub what: String,
    pub value: String,
    pub rule: String,
}

impl std::error::Error for InputError {}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.what, self.value, self.rule)
    }
}

fn err(what: &str, value: &str, rule: &str) -> InputError {
    InputError { what: what.to_string(), value: value.to_string(), rule: rule.to_string() }
}

pub fn recipe(what: &str, value: &str) -> Result<String, InputError> {
    if RECIPE.is_match(value) {
        Ok(value.to_string())
    } else {
        Err(err(what, value, "must match ^[a-z0-9][a-z0-9-]{0,63}$ (lowercase letters, digits and dashes)"))
    }
}

pub fn git_ref(what: &str, value: &str) -> Result<String, InputError> {
    let rule = if value.len() > 200 {
        Some("must be at most 200 characters")
    } else if value.contains("..") {
        Some("must not contain `..`")
    } else if value.starts_with('-') {
        Some("must not start with `-`")
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace or control characters")
    } else if value.contains("@{") {
        Some("must not contain `@{`")
    } else {
        None
    };
    match rule {
        Some(rule) => Err(err(what, value, rule)),
        None => Ok(value.to_string()),
    }
}

pub fn pr(what: &str, value: &str) -> Result<String, InputError> {
    if !value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_string())
    } else {
        Err(err(what, value, "must be digits"))
    }
}

/// Where the recipe comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `owner/repo`, expanded against `CCCI_GIT_BASE`.
    OwnerRepo(String),
    /// An `https://`, `ssh://` or `file://` URL without user info.
    Url(String),
    /// An absolute path to a local repository.
    Path(PathBuf),
}

impl Source {
    /// The URL or path git clones from.
    pub fn clone_location(&self, git_base: &str) -> String {
        match self {
            Source::OwnerRepo(or) => format!("{}/{or}.git", git_base.trim_end_matches('/')),
            Source::Url(u) => u.clone(),
            Source::Path(p) => p.display().to_string(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::OwnerRepo(s) | Source::Url(s) => f.write_str(s),
            Source::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

pub fn source(what: &str, value: &str) -> Result<Source, InputError> {
    const RULE: &str = "must be owner/repo, an https://, ssh:// or file:// URL without user info, or an absolute path";
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(what, value, RULE));
    }
    if value.starts_with('/') {
        return Ok(Source::Path(PathBuf::from(value)));
    }
    for scheme in ["https://", "ssh://", "file://"] {
        if let Some(rest) = value.strip_prefix(scheme) {
            let authority = rest.split('/').next().unwrap_or("");
            if authority.contains('@') {
                return Err(err(what, value, "must not carry user info (user@ or user:password@); use CCCI_GIT_TOKEN"));
            }
            if scheme != "file://" && authority.is_empty() {
                return Err(err(what, value, RULE));
            }
            return Ok(Source::Url(value.to_string()));
        }
    }
    if OWNER_REPO.is_match(value) && value.split('/').all(|part| part != "." && part != "..") {
        return Ok(Source::OwnerRepo(value.to_string()));
    }
    Err(err(what, value, RULE))
}

/// A comma list of stages from the five, no duplicates; returned in run order.
pub fn stages(what: &str, value: &str) -> Result<Vec<Stage>, InputError> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim) {
        let Some(stage) = Stage::parse(part) else {
            return Err(err(
                what,
                value,
                &format!("unknown stage {part:?}; stages are install,upgrade,backup,restore,custom"),
            ));
        };
        if out.contains(&stage) {
            return Err(err(what, value, &format!("stage {part:?} is listed twice")));
        }
        out.push(stage);
    }
    out.sort();
    Ok(out)
}

/// A positive integer (seconds, days, milliseconds).
pub fn positive(what: &str, value: &str) -> Result<u64, InputError> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(err(what, value, "must be a positive integer")),
    }
}

/// A non-negative integer (a grace of 0 means SIGKILL at once).
pub fn non_negative(what: &str, value: &str) -> Result<u64, InputError> {
    match value.parse::<u64>() {
        Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(err(what, value, "must be a non-negative integer")),
    }
}

/// `1/true/yes` and `0/false/no` (case-insensitive).
pub fn boolean(what: &str, value: &str) -> Result<bool, InputError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(err(what, value, "must be one of 1/true/yes or 0/false/no")),
    }
}

pub fn run_id(what: &str, value: &str) -> Result<String, InputError> {
    if crate::names::valid_run_id(value) {
        Ok(value.to_string())
    } else {
        Err(err(what, value, "must match ^[A-Za-z0-9._-]{1,64}$ and not be . or .."))
    }
}

pub fn pid(what: &str, value: &str) -> Result<i32, InputError> {
    match value.parse::<i32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(err(what, value, "must be a process id (a positive integer)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes() {
        assert!(recipe("recipe", "hello").is_ok());
        assert!(recipe("recipe", "custom-html").is_ok());
        for bad in ["../x", "A", "a_b", "", "-a", &"a".repeat(65)] {
            assert!(recipe("recipe", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs() {
        for ok in ["main", "1.0.0+1", "deadbeef", "feature/x", &"a".repeat(200)] {
            assert!(git_ref("ref", ok).is_ok(), "{ok}");
        }
        for bad in ["..", "a..b", "-x", "a\nb", "a b", "a\tb", "x@{1}", &"a".repeat(201)] {
            assert!(git_ref("ref", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources() {
        assert_eq!(source("src", "owner/repo").unwrap(), Source::OwnerRepo("owner/repo".into()));
        assert_eq!(source("src", "/srv/r").unwrap(), Source::Path("/srv/r".into()));
        assert!(matches!(source("src", "https://git.example/o/r.git").unwrap(), Source::Url(_)));
        assert!(matches!(source("src", "file:///srv/r").unwrap(), Source::Url(_)));
        for bad in [
            "ftp://x/y",
            "relative/path/x",
            "rel",
            "https://user:pw@host/o/r",
            "ssh://git@host/o/r",
            "../x",
            "https://",
            "a b/c",
        ] {
            assert!(source("src", bad).is_err(), "{bad}");
        }
        assert_eq!(
            Source::OwnerRepo("o/r".into()).clone_location("https://git.example/"),
            "https://git.example/o/r.git"
        );
    }

    #[test]
    fn stage_lists() {
        assert_eq!(stages("stages", "custom,install").unwrap(), vec![Stage::Install, Stage::Custom]);
        assert!(stages("stages", "install,install").is_err());
        assert!(stages("stages", "lint").is_err());
        assert!(stages("stages", "").is_err());
    }

    #[test]
    fn numbers_and_booleans() {
        assert_eq!(positive("d", "3").unwrap(), 3);
        assert!(positive("d", "0").is_err());
        assert!(positive("d", "-1").is_err());
        assert!(positive("d", "+1").is_err());
        assert!(positive("d", "1.5").is_err());
        assert!(boolean("q", "YES").unwrap());
        assert!(!boolean("q", "0").unwrap());
        assert!(boolean("q", "maybe").is_err());
        assert!(pr("pr", "12").is_ok());
        assert!(pr("pr", "1a").is_err());
    }

    #[test]
    fn message_names_value_and_rule() {
        let e = recipe("recipe (--recipe)", "../x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid recipe (--recipe) \"../x\": must match ^[a-z0-9][a-z0-9-]{0,63}$ (lowercase letters, digits and dashes)"
        );
    }
}
