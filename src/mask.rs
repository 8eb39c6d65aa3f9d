//! Secrets stay secret (§7.9): the git token and every value under `$CCCI_SECRETS_DIR` are
//! replaced by `***` in everything ccci logs or writes, child output included.

use std::path::Path;
use std::sync::{LazyLock, RwLock};

use regex::Regex;

/// Values shorter than this are not masked: masking "true" or "1" everywhere would wreck logs.
pub const MIN_LEN: usize = 8;
pub const MARK: &str = "***";

#[derive(Debug, Default, Clone)]
pub struct Masker {
    secrets: Vec<String>,
    pattern: Option<Regex>,
}

impl Masker {
    pub fn new(values: impl IntoIterator<Item = String>) -> Masker {
        let mut secrets: Vec<String> = Vec::new();
        for value in values {
            let value = value.trim_end_matches(['\n', '\r']).to_string();
            let mut add = |s: &str| {
                if s.len() >= MIN_LEN && !secrets.iter().any(|x| x == s) {
                    secrets.push(s.to_string());
                }
            };
            add(&value);
            // A PEM block is never printed whole; each of its lines must be caught on its own.
            for line in value.lines() {
                add(line.trim_end_matches('\r'));
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let pattern = (!secrets.is_empty()).then(|| {
            let alternation: Vec<String> = secrets.iter().map(|s| regex::escape(s)).collect();
            Regex::new(&alternation.join("|")).expect("escaped alternation is a valid regex")
        });
        Masker { secrets, pattern }
    }

    /// Reads every regular file under `dir` (symlinks followed); a missing dir gives no secrets.
    pub fn from_dir_and_token(dir: &Path, token: Option<&str>) -> Masker {
        let mut values: Vec<String> = token.map(str::to_string).into_iter().collect();
        if dir.is_dir() {
            for entry in walkdir::WalkDir::new(dir).follow_links(true).into_iter().flatten() {
                if entry.file_type().is_file()
                    && let Ok(bytes) = std::fs::read(entry.path())
                {
                    values.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        Masker::new(values)
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn mask<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.pattern {
            Some(re) => re.replace_all(text, MARK),
            None => std::borrow::Cow::Borrowed(text),
        }
    }

    /// True when `text` still carries a secret (the final leak scan of written files).
    pub fn leaks(&self, text: &str) -> bool {
        self.pattern.as_ref().is_some_and(|re| re.is_match(text))
    }
}

static GLOBAL: LazyLock<RwLock<Masker>> = LazyLock::new(|| RwLock::new(Masker::default()));

/// Installs the process-wide masker used by logging and reports.
pub fn install(masker: Masker) {
    *GLOBAL.write().unwrap_or_else(|e| e.into_inner()) = masker;
}

/// Adds values to the process-wide masker (secrets learnt during a run: a dependency's
/// credentials). Everything logged or written from now on masks them too.
pub fn add(values: impl IntoIterator<Item = String>) {
    let mut g = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
    let mut all = g.secrets.clone();
    all.extend(values);
    *g = Masker::new(all);
}

/// Masks with the process-wide masker.
pub fn mask(text: &str) -> String {
    GLOBAL.read().unwrap_or_else(|e| e.into_inner()).mask(text).into_owned()
}

pub fn global() -> Masker {
    GLOBAL.read().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_values_and_pem_lines() {
        let pem = "-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\nEEEEFFFF\n-----END KEY-----\n".to_string();
        let m = Masker::new(["s3cr3t-value".to_string(), "short".to_string(), pem]);
        assert_eq!(m.mask("token=s3cr3t-value!"), "token=***!");
        assert_eq!(m.mask("short stays"), "short stays");
        assert_eq!(m.mask("line AAAABBBBCCCCDDDD end"), "line *** end");
        assert!(m.leaks("xx EEEEFFFF"));
        assert!(!m.leaks("nothing here"));
    }

    #[test]
    fn secrets_learnt_later_join_the_global_masker() {
        install(Masker::new(["first-secret-value".to_string()]));
        add(["client-secret-from-a-dep".to_string(), "short".to_string()]);
        assert_eq!(mask("first-secret-value client-secret-from-a-dep short"), "*** *** short");
        install(Masker::default());
    }

    #[test]
    fn longest_first() {
        let m = Masker::new(["abcdefgh".to_string(), "abcdefghijkl".to_string()]);
        assert_eq!(m.mask("abcdefghijkl"), "***");
    }

    #[test]
    fn reads_a_dir_following_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("db_password"), "hunter2hunter2\n").unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("real"), "linked-secret-value").unwrap();
        std::os::unix::fs::symlink(other.path().join("real"), d.path().join("link")).unwrap();
        let m = Masker::from_dir_and_token(d.path(), Some("tok-123456789"));
        assert_eq!(m.mask("hunter2hunter2 linked-secret-value tok-123456789"), "*** *** ***");
    }
}
