//! The host config file (`/etc/ccci/env` or `$CCCI_CONFIG`): `KEY=value` lines.
//!
//! The Drone step, the janitor timer and a person at a shell all read it, so they agree on the lock
//! dir, the runs dir, the suffix and the abra home.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ConfigError;
use crate::env_vars;

/// The default location, read when `CCCI_CONFIG` is unset; a missing file here is fine.
pub const DEFAULT_PATH: &str = "/etc/ccci/env";

/// Parsed `KEY=value` pairs plus keys that ccci does not know (reported as warnings).
#[derive(Debug, Default)]
pub struct HostFile {
    pub path: Option<PathBuf>,
    pub values: BTreeMap<String, String>,
    pub unknown_keys: Vec<String>,
}

impl HostFile {
    /// Reads `explicit` (from `CCCI_CONFIG`, must exist) or the default path (may be missing).
    pub fn load(explicit: Option<&str>) -> Result<HostFile, ConfigError> {
        Self::load_or(explicit, Path::new(DEFAULT_PATH))
    }

    /// [`HostFile::load`] with the default path as a parameter (the tests cannot use the real
    /// `/etc/ccci/env`).
    fn load_or(explicit: Option<&str>, default: &Path) -> Result<HostFile, ConfigError> {
        let (path, required) = match explicit {
            Some(p) => (PathBuf::from(p), true),
            None => (default.to_path_buf(), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(HostFile::default()),
            Err(source) => Err(ConfigError::HostFileRead { path, source }),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<HostFile, ConfigError> {
        let mut file = HostFile { path: Some(path.to_path_buf()), ..HostFile::default() };
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            let bad = |reason: &str| ConfigError::HostFileLine {
                path: path.to_path_buf(),
                line: index + 1,
                reason: reason.to_string(),
            };
            let (key, value) = line.split_once('=').ok_or_else(|| bad("expected KEY=value"))?;
            let key = key.trim();
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(bad("the key must be letters, digits and underscores"));
            }
            let value = unquote(value.trim()).ok_or_else(|| bad("unbalanced quotes in the value"))?;
            if env_vars::allowed_in_config_file(key) {
                file.values.insert(key.to_string(), value);
            } else {
                file.unknown_keys.push(key.to_string());
            }
        }
        Ok(file)
    }
}

fn unquote(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(&q @ (b'"' | b'\'')) => {
            if bytes.len() >= 2 && bytes[bytes.len() - 1] == q {
                Some(value[1..value.len() - 1].to_string())
            } else {
                None
            }
        }
        _ => Some(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_quotes_and_export() {
        let text = "# host settings\n\nCCCI_RUNS_DIR=/srv/runs\nexport CCCI_SERVER='local'\nCCCI_DOMAIN_SUFFIX=\"ci.example.org\"\nFOO=bar\n";
        let f = HostFile::parse(Path::new("/etc/ccci/env"), text).unwrap();
        assert_eq!(f.values["CCCI_RUNS_DIR"], "/srv/runs");
        assert_eq!(f.values["CCCI_SERVER"], "local");
        assert_eq!(f.values["CCCI_DOMAIN_SUFFIX"], "ci.example.org");
        assert_eq!(f.unknown_keys, vec!["FOO".to_string()]);
    }

    #[test]
    fn rejects_malformed_lines() {
        let err = HostFile::parse(Path::new("/x"), "CCCI_SERVER\n").unwrap_err();
        assert!(err.to_string().contains("/x:1"), "{err}");
        assert!(HostFile::parse(Path::new("/x"), "CCCI_SERVER=\"open\n").is_err());
    }

    #[test]
    fn missing_default_is_fine_but_missing_explicit_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("env");
        let f = HostFile::load_or(None, &missing).expect("a host without a host file");
        assert!(f.path.is_none(), "{f:?}");
        let missing = missing.to_str().unwrap();
        assert!(matches!(HostFile::load_or(Some(missing), Path::new("/x")), Err(ConfigError::HostFileRead { .. })));
        std::fs::write(dir.path().join("env"), "CCCI_KILL_GRACE=3\n").unwrap();
        let f = HostFile::load_or(None, &dir.path().join("env")).unwrap();
        assert_eq!(f.path.as_deref(), Some(dir.path().join("env").as_path()));
    }
}
