//! `ccci.yml`, the per-recipe customisation file (§7.3). Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::policy::AllowList;

static ENV_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Z_][A-Z0-9_]*$").expect("regex"));

/// The rungs `expected_na` may name.
pub const RUNGS: [&str; 5] = ["install", "upgrade", "backup_restore", "functional", "lint"];

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CcciYml {
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub extra_env: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub upgrade_extra_env: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub ready_probes: Vec<ReadyProbe>,
    #[serde(default)]
    pub upgrade: Upgrade,
    #[serde(default)]
    pub backup: Backup,
    #[serde(default)]
    pub expected_na: BTreeMap<String, String>,
    /// The policy gate's allow-list for this recipe. Honoured only in the trusted ccci.yml
    /// (`<CCCI_TESTS_DIR>/<recipe>/ccci.yml`): a recipe-local ccci.yml is PR content, and a PR
    /// that could loosen the gate would not be gated; the pipeline refuses `policy:` there.
    #[serde(default)]
    pub policy: Option<AllowList>,
}

/// A YAML scalar written into the app's `.env` (`TIMEOUT: 900` and `TIMEOUT: "900"` both work).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn as_env_value(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "d900")]
    pub deploy: u64,
    #[serde(default = "d300")]
    pub http: u64,
    #[serde(default = "d600")]
    pub test: u64,
    #[serde(default = "d600")]
    pub hook: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { deploy: 900, http: 300, test: 600, hook: 600 }
    }
}

fn d900() -> u64 {
    900
}
fn d300() -> u64 {
    300
}
fn d600() -> u64 {
    600
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// URL template with `{domain}`; `off` disables the HTTP floor. Default: `CCCI_HEALTH_URL`.
    pub url: Option<String>,
    /// Accepted statuses; default 200, 301, 302.
    pub expect: Option<Vec<u16>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReadyProbe {
    pub tcp: String,
    #[serde(default = "one")]
    pub stable: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upgrade {
    pub base: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    pub capable: Option<bool>,
    #[serde(default = "three")]
    pub attempts: u32,
}

impl Default for Backup {
    fn default() -> Self {
        Backup { capable: None, attempts: 3 }
    }
}

fn three() -> u32 {
    3
}

impl CcciYml {
    /// Parses and validates; the error text names the file and what is wrong.
    pub fn parse(path: &Path, text: &str) -> Result<CcciYml, String> {
        let doc: CcciYml = if text.trim().is_empty() {
            CcciYml::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?
        };
        doc.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(doc)
    }

    pub fn load(path: &Path) -> Result<CcciYml, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.timeouts;
        for (name, v) in [("deploy", t.deploy), ("http", t.http), ("test", t.test), ("hook", t.hook)] {
            if v == 0 {
                return Err(format!("timeouts.{name} must be a positive number of seconds"));
            }
        }
        for (field, map) in [("extra_env", &self.extra_env), ("upgrade_extra_env", &self.upgrade_extra_env)] {
            for (k, v) in map {
                if !ENV_KEY.is_match(k) {
                    return Err(format!("{field} key {k:?} must match ^[A-Z_][A-Z0-9_]*$"));
                }
                if v.as_env_value().contains(['\n', '\r']) {
                    return Err(format!("{field}.{k} must not contain a newline"));
                }
            }
        }
        if let Some(url) = &self.health.url
            && url != "off"
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!("health.url {url:?} must be an http:// or https:// URL, or `off`"));
        }
        if let Some(expect) = &self.health.expect
            && (expect.is_empty() || expect.iter().any(|s| !(100..=599).contains(s)))
        {
            return Err("health.expect must list HTTP statuses (100-599)".to_string());
        }
        for probe in &self.ready_probes {
            let ok = probe
                .tcp
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(format!("ready_probes tcp {:?} must be host:port", probe.tcp));
            }
            if probe.stable == 0 {
                return Err("ready_probes stable must be at least 1".to_string());
            }
        }
        if self.backup.attempts == 0 {
            return Err("backup.attempts must be at least 1".to_string());
        }
        for key in self.expected_na.keys() {
            if !RUNGS.contains(&key.as_str()) {
                return Err(format!("expected_na key {key:?} is not a rung ({})", RUNGS.join(", ")));
            }
        }
        if let Some(policy) = &self.policy {
            policy.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_parses() {
        let text = r#"
timeouts: { deploy: 900, http: 300, test: 600, hook: 600 }
extra_env: { TIMEOUT: "900" }
upgrade_extra_env: {}
health: { url: "https://{domain}/", expect: [200, 301, 302] }
ready_probes: [ { tcp: "127.0.0.1:64738", stable: 3 } ]
upgrade: { base: "1.2.0+3.4.5" }
backup: { capable: true, attempts: 3 }
expected_na: { backup_restore: "no persistent state" }
"#;
        let y = CcciYml::parse(Path::new("ccci.yml"), text).unwrap();
        assert_eq!(y.ready_probes[0].stable, 3);
        assert_eq!(y.extra_env["TIMEOUT"].as_env_value(), "900");
        assert_eq!(y.upgrade.base.as_deref(), Some("1.2.0+3.4.5"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = CcciYml::parse(Path::new("/t/ccci.yml"), "timeout: {deploy: 5}\n").unwrap_err();
        assert!(e.contains("/t/ccci.yml") && e.contains("unknown field"), "{e}");
        assert!(CcciYml::parse(Path::new("c"), "timeouts: {deplo: 5}\n").is_err());
    }

    #[test]
    fn bad_values_are_errors() {
        for text in [
            "extra_env: { lower: x }",
            "extra_env: { A: \"x\\ny\" }",
            "timeouts: { deploy: 0 }",
            "ready_probes: [ { tcp: nohost } ]",
            "expected_na: { nope: x }",
            "health: { url: ftp://x }",
        ] {
            assert!(CcciYml::parse(Path::new("c"), text).is_err(), "{text}");
        }
    }

    #[test]
    fn the_policy_allow_list_parses_and_is_validated() {
        let text = r#"
policy:
  allow_binds: ["/var/run/docker.sock", "/srv/shared/"]
  allow_cap_add: ["NET_ADMIN"]
  allow_networks: ["backups"]
  allow_hosts: ["*.example.org", "auth.example.net"]
"#;
        let p = CcciYml::parse(Path::new("c"), text).unwrap().policy.unwrap();
        assert_eq!(p.binds, vec!["/var/run/docker.sock", "/srv/shared/"]);
        assert_eq!((p.cap_add.len(), p.networks.len(), p.hosts.len()), (1, 1, 2));
        assert_eq!(CcciYml::parse(Path::new("c"), "policy: {}\n").unwrap().policy, Some(AllowList::default()));
        assert_eq!(CcciYml::parse(Path::new("c"), "").unwrap().policy, None);
        for bad in [
            "policy: { allow_bind: [\"/x\"] }",
            "policy: { allow_binds: [\"relative/x\"] }",
            "policy: { allow_binds: [\"/a/../etc\"] }",
            "policy: { allow_binds: [\"/a//b\"] }",
            "policy: { allow_cap_add: [\"net_admin\"] }",
            "policy: { allow_cap_add: [\"NET ADMIN\"] }",
            "policy: { allow_networks: [\"-x\"] }",
            "policy: { allow_hosts: [\"*\"] }",
            "policy: { allow_hosts: [\"*.org\"] }",
            "policy: { allow_hosts: [\"a.*.org\"] }",
            "policy: { allow_hosts: [\"Example.org\"] }",
        ] {
            let e = CcciYml::parse(Path::new("/t/ccci.yml"), bad).unwrap_err();
            assert!(e.starts_with("/t/ccci.yml: "), "{bad}: {e}");
        }
    }

    #[test]
    fn empty_file_is_defaults() {
        let y = CcciYml::parse(Path::new("c"), "").unwrap();
        assert_eq!(y.timeouts.deploy, 900);
        assert_eq!(y.backup.attempts, 3);
    }
}
