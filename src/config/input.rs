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
                return Err(err(
                    what,
                    &redact_userinfo(value),
                    "must not carry user info (user@ or user:password@); use CCCI_GIT_TOKEN",
                ));
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

/// An integer from 1 (0 with `zero_ok`: a grace of 0 means SIGKILL at once) up to `max`.
/// Digits only: no sign, no spaces, no exponent.
pub fn bounded(what: &str, value: &str, max: u64, zero_ok: bool) -> Result<u64, InputError> {
    let low = if zero_ok { 0 } else { 1 };
    let rule = || format!("must be an integer from {low} to {max}");
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(what, value, &rule()));
    }
    match value.parse::<u64>() {
        Ok(n) if (low..=max).contains(&n) => Ok(n),
        _ => Err(err(what, value, &rule())),
    }
}

/// An absolute path without `..`, used canonicalised: the nearest existing ancestor is
/// resolved (symlinks included) and the rest appended. A relative path would mean something
/// else in every working directory (Drone gives each build its own), and two runs — or a run
/// and the janitor — that disagree on the lock dir reap each other's live apps.
pub fn abs_path(what: &str, value: &str) -> Result<PathBuf, InputError> {
    use std::path::Component;
    if value.chars().any(char::is_control) {
        return Err(err(what, value, "must not contain control characters"));
    }
    let p = std::path::Path::new(value);
    if !p.is_absolute() {
        return Err(err(what, value, "must be an absolute path"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(err(what, value, "must not contain `..`"));
    }
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out =
        std::fs::canonicalize(&existing).map_err(|e| err(what, value, &format!("cannot be resolved ({e})")))?;
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    Ok(out)
}

/// A file ccci writes (the JUnit report): [`abs_path`]'s rules, but only its directory is
/// resolved. The last component stays as given, so a link planted there is replaced by the
/// write, never followed to wherever it points.
pub fn abs_output_path(what: &str, value: &str) -> Result<PathBuf, InputError> {
    let p = std::path::Path::new(value);
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return Err(err(what, value, "must name a file in an absolute directory"));
    };
    if value.ends_with('/') {
        return Err(err(what, value, "must name a file, not a directory"));
    }
    let dir = abs_path(what, &parent.to_string_lossy())?;
    // `abs_path` refused control characters and `..` in the whole value's directory; the name
    // itself is a plain component (no `/`), checked here.
    if name.to_string_lossy().chars().any(char::is_control) {
        return Err(err(what, value, "must not contain control characters"));
    }
    Ok(dir.join(name))
}

/// A program: a plain name looked up on PATH, or an absolute path.
pub fn program(what: &str, value: &str) -> Result<String, InputError> {
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) || value.starts_with('-') {
        return Err(err(what, value, "must be a program name or an absolute path"));
    }
    if value.contains('/') && !value.starts_with('/') {
        return Err(err(what, value, "must be a plain name on PATH or an absolute path"));
    }
    Ok(value.to_string())
}

/// abra cuts stack names it derives from domains to this many characters.
pub const MAX_STACK_NAME: usize = 45;

/// Dot-separated lowercase DNS labels, short enough that every run app's stack name
/// (`<4>-<6>_<suffix>`) stays within abra's limit.
pub fn domain_suffix(what: &str, value: &str) -> Result<String, InputError> {
    let labels_ok = !value.is_empty()
        && value.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
        });
    if !labels_ok {
        return Err(err(what, value, "must be dot-separated lowercase DNS labels"));
    }
    let max = MAX_STACK_NAME - "abcd-123456_".len();
    if value.len() > max {
        return Err(err(
            what,
            value,
            &format!("must be at most {max} characters (a run app's stack name must fit abra's {MAX_STACK_NAME})"),
        ));
    }
    Ok(value.to_string())
}

/// An `http://` or `https://` URL with a host, no whitespace or control characters (it is
/// passed to curl and git as one argument, so it must not look like an option either).
pub fn http_url(what: &str, value: &str) -> Result<String, InputError> {
    let rule = "must be an http:// or https:// URL with a host";
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(what, value, rule));
    }
    let rest = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        Some(h) if !h.is_empty() && !h.contains('@') => Ok(value.to_string()),
        Some(h) if h.contains('@') => Err(err(what, &redact_userinfo(value), "must not carry user info")),
        _ => Err(err(what, value, rule)),
    }
}

/// A comma list of etcd client URLs (`http://host:port`), at least one, no duplicates.
pub fn lease_endpoints(what: &str, value: &str) -> Result<Vec<crate::lease::Endpoint>, InputError> {
    let mut out: Vec<crate::lease::Endpoint> = Vec::new();
    for e in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let ep = crate::lease::Endpoint::parse(e).map_err(|rule| err(what, e, &rule))?;
        if !out.contains(&ep) {
            out.push(ep);
        }
    }
    if out.is_empty() {
        return Err(err(what, value, "must name at least one http://host:port"));
    }
    Ok(out)
}

/// An etcd key prefix: starts with `/`, no trailing `/`, letters, digits and `._-/` only.
pub fn lease_prefix(what: &str, value: &str) -> Result<String, InputError> {
    let ok = value.starts_with('/')
        && value.len() > 1
        && value.len() <= 128
        && !value.ends_with('/')
        && !value.contains("//")
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(err(
            what,
            value,
            "must start with `/`, not end with one, and use only letters, digits and `._-/` (at most 128)",
        ))
    }
}

/// A comma list of `https://host[:port]` origins.
pub fn token_origins(what: &str, value: &str) -> Result<Vec<String>, InputError> {
    let mut out = Vec::new();
    for o in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let host = o.strip_prefix("https://").unwrap_or("");
        let ok = !host.is_empty()
            && !host.contains(['/', '@', '?', '#'])
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
        if !ok {
            return Err(err(
                what,
                value,
                "must be a comma list of https://host[:port] origins (the token never goes over http)",
            ));
        }
        out.push(o.to_ascii_lowercase());
    }
    Ok(out)
}

/// `scheme://user:pw@host/…` → `scheme://***@host/…`: a credential in a URL is never echoed.
pub fn redact_userinfo(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else { return value.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    match authority.rsplit_once('@') {
        Some((_, host)) => {
            let path = path.map(|p| format!("/{p}")).unwrap_or_default();
            format!("{scheme}://***@{host}{path}")
        }
        None => value.to_string(),
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
    fn an_output_path_resolves_its_directory_but_never_its_last_link() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("dir")).unwrap();
        std::os::unix::fs::symlink(real.join("dir"), real.join("dirlink")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", real.join("dir/out.xml")).unwrap();
        let p = abs_output_path("junit", &format!("{}/dirlink/out.xml", real.display())).unwrap();
        assert_eq!(p, real.join("dir/out.xml"), "the directory is resolved, the link at the end kept");
        for bad in ["out.xml", "/", "/tmp/", "/tmp/../etc/x", "/tmp/a\u{7}b"] {
            assert!(abs_output_path("junit", bad).is_err(), "{bad:?}");
        }
    }

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
        assert_eq!(bounded("d", "3", 10, false).unwrap(), 3);
        assert!(bounded("d", "0", 10, false).is_err());
        assert_eq!(bounded("d", "0", 10, true).unwrap(), 0);
        assert!(bounded("d", "11", 10, false).is_err());
        assert!(bounded("d", "18446744073709551615", 10, false).is_err());
        assert!(bounded("d", "99999999999999999999999", 10, false).is_err());
        assert!(bounded("d", "-1", 10, false).is_err());
        assert!(bounded("d", "+1", 10, false).is_err());
        assert!(bounded("d", "1.5", 10, false).is_err());
        assert!(bounded("d", " 1", 10, false).is_err());
        assert!(boolean("q", "YES").unwrap());
        assert!(!boolean("q", "0").unwrap());
        assert!(boolean("q", "maybe").is_err());
        assert!(pr("pr", "12").is_ok());
        assert!(pr("pr", "1a").is_err());
    }

    #[test]
    fn paths_urls_and_programs() {
        let d = tempfile::tempdir().unwrap();
        let canon = std::fs::canonicalize(d.path()).unwrap();
        assert_eq!(abs_path("p", &format!("{}/not/yet", d.path().display())).unwrap(), canon.join("not/yet"));
        for bad in ["rel/lock", "run/lock", "./x", "/a/../b", ""] {
            assert!(abs_path("p", bad).is_err(), "{bad}");
        }
        assert!(http_url("u", "https://{domain}/health").is_ok());
        for bad in ["-o/tmp/x", "ftp://x", "https://", "https://u:pw@h/x", "http://a b/"] {
            assert!(http_url("u", bad).is_err(), "{bad}");
        }
        assert!(program("p", "abra").is_ok() && program("p", "/usr/bin/abra").is_ok());
        assert!(program("p", "bin/abra").is_err() && program("p", "--x").is_err());
        assert_eq!(token_origins("t", "https://git.example.org, https://x:8443").unwrap().len(), 2);
        assert!(token_origins("t", "http://git.example.org").is_err());
        assert!(domain_suffix("s", "ci.example.org").is_ok());
        assert!(domain_suffix("s", &format!("{}.example.org", "a".repeat(30))).is_err());
        let e = source("src", "https://oauth2:glpat-SECRET@git.example/o/r.git").unwrap_err();
        assert!(!e.to_string().contains("SECRET") && !e.to_string().contains("oauth2"), "{e}");
        assert_eq!(redact_userinfo("ssh://git@host/o/r"), "ssh://***@host/o/r");
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
