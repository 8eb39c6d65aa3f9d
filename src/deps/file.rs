//! `$CCCI_DEPS_FILE`: `{<dep>: {domain, …the provision hook's keys}}`, read by hooks and tests.
//! It holds credentials in clear (the tests need them), so it is the run's own: mode 0600 in the
//! run-scoped state dir, replaced atomically so a reader never sees half of it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::template::Entries;

#[derive(Debug)]
pub struct DepsFile {
    path: PathBuf,
    entries: Entries,
}

impl DepsFile {
    /// An empty deps file (`{}`) at `path`: a test that reads it when no dependency is up sees
    /// an object, not a missing file.
    pub fn create(path: &Path) -> std::io::Result<DepsFile> {
        let f = DepsFile { path: path.to_path_buf(), entries: Entries::new() };
        f.write()?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &Entries {
        &self.entries
    }

    /// Adds (or replaces) a dependency's entry and rewrites the file.
    pub fn insert(&mut self, dep: &str, entry: Map<String, Value>) -> std::io::Result<()> {
        self.entries.insert(dep.to_string(), entry);
        self.write()
    }

    fn write(&self) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(&self.entries).map_err(std::io::Error::other)? + "\n";
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// A dependency's entry: its domain first, then what its provision hook printed.
pub fn entry(domain: &str, provisioned: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("domain".into(), Value::String(domain.to_string()));
    for (k, v) in provisioned.into_iter().flatten() {
        m.insert(k.clone(), v.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entries_are_merged_under_their_names_in_a_private_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("deps.json");
        let mut f = DepsFile::create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "{}");
        let prov: Map<String, Value> = serde_json::from_str(r#"{"client_id": "ccci", "port": 1}"#).unwrap();
        f.insert("idp", entry("a-1.example", Some(&prov))).unwrap();
        f.insert("mail", entry("a-2.example", None)).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["idp"]["domain"], "a-1.example");
        assert_eq!(v["idp"]["client_id"], "ccci");
        assert_eq!(v["mail"], serde_json::json!({"domain": "a-2.example"}));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!path.with_extension("json.tmp").exists());
    }
}
