//! `ccci.yml`, the per-recipe customisation file (§7.3). Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::limits::{MAX_BACKUP_ATTEMPTS, MAX_DEPS, MAX_PROBE_STABLE, MAX_TIMEOUT_SECS};
use crate::policy::AllowList;
use crate::stage::Rung;

static ENV_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Z_][A-Z0-9_]*$").expect("regex"));
static RECIPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9-]{0,63}$").expect("regex"));
/// A release tag: what `abra` and git accept as a tag name, without `..` or a leading `-`.
static VERSION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,99}$").expect("regex"));
static PROVISION_HOOK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^hooks/provision_[A-Za-z0-9_-]{1,64}$").expect("regex"));

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
    pub expected_na: BTreeMap<Rung, String>,
    /// The policy gate's allow-list for this recipe. Honoured only in the trusted ccci.yml
    /// (`<CCCI_TESTS_DIR>/<recipe>/ccci.yml`): a recipe-local ccci.yml is PR content, and a PR
    /// that could loosen the gate would not be gated; the pipeline refuses `policy:` there.
    #[serde(default)]
    pub policy: Option<AllowList>,
    /// Apps this recipe needs next to it (issue 19), each deployed before the app under test
    /// from its catalogue release. Honoured only in the trusted ccci.yml: a PR must not choose
    /// what else runs on the CI host, nor the hooks that hand credentials to its tests.
    #[serde(default)]
    pub deps: Vec<Dep>,
}

/// One dependency app (`deps:` entry). Its recipe name is its name: in `$CCCI_DEPS_FILE`, in
/// `{{deps.<name>.<key>}}` templates and in reasons.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dep {
    /// A catalogue recipe, fetched with `abra recipe fetch` (never from the PR).
    pub recipe: String,
    /// The release tag to deploy; the newest release in the catalogue when absent.
    #[serde(default)]
    pub version: Option<String>,
    /// Overrides written into the dependency's `.env`, like `extra_env`; values may name
    /// earlier dependencies (`{{deps.<name>.<key>}}`).
    #[serde(default)]
    pub env: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub provision: Option<Provision>,
    #[serde(default)]
    pub ready: DepReady,
}

/// The hook that prepares a ready dependency for the run (a realm, a client) and prints what
/// the tests need as one JSON object on stdout.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    /// `hooks/provision_<x>` of the trusted customisation (any language, executable).
    pub run: String,
    /// Keys of the printed object whose values are secret: masked in every log and report
    /// (keys naming a secret, password, token or key are masked without being listed).
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// How a dependency's readiness is judged: the app's rules (§7.5) with its own HTTP floor,
/// probes and time limit.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DepReady {
    /// Seconds to become ready [`timeouts.deploy`].
    #[serde(default)]
    pub timeout: Option<u64>,
    /// `{domain}` is the dependency's domain; the host's `CCCI_HEALTH_URL` when absent.
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub ready_probes: Vec<ReadyProbe>,
}

/// A YAML scalar written into the app's `.env`, exactly as the YAML text shows it: `TIMEOUT: 900`
/// and `TIMEOUT: "900"` both give `900`, and `PG_VERSION: 15.10` gives `15.10` (a float would
/// give `15.1`), `VERSION: 1.0` gives `1.0`, `PORT: 0x1F` gives `0x1F`. A plain `null` or `~`
/// is the text itself; a sequence or a mapping is an error.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(transparent)]
pub struct Scalar(String);

impl Scalar {
    pub fn new(text: impl Into<String>) -> Scalar {
        Scalar(text.into())
    }

    pub fn as_env_value(&self) -> String {
        self.0.clone()
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Scalar;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a scalar (text, number or boolean)")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            // Formats that hand over typed values (JSON) keep their usual text.
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        // YAML's deserialize_str hands over a plain scalar's own text, never a parsed number.
        d.deserialize_str(Text)
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

/// A `ccci.yml` is small; anything bigger is not one.
const MAX_SIZE: u64 = 256 * 1024;

/// serde's message for a YAML error, without the file's content: `unknown field `<x>``
/// would otherwise quote whatever a linked file holds (a password hash, a registry token)
/// into logs, `results.json` and the public dashboard. Keeps the position and the kind.
fn yaml_error(e: &serde_yaml_ng::Error) -> String {
    let msg = e.to_string();
    let kind = msg.split(" at line ").next().unwrap_or(&msg);
    let kind = match kind.find(['`', '"', '\'']) {
        Some(i) => {
            let head = kind[..i].trim_end().trim_end_matches(':');
            // Keep what serde expected (our own key names), drop what it found.
            let expected = kind.find(", expected").map(|j| &kind[j + 2..]).filter(|x| !x.contains('"'));
            match expected {
                Some(x) => format!("{head}; {x}"),
                None => head.to_string(),
            }
        }
        None => kind.to_string(),
    };
    match e.location() {
        Some(l) => format!("line {} column {}: {kind}", l.line(), l.column()),
        None => kind,
    }
}

impl CcciYml {
    /// Parses and validates; the error text names the file and what is wrong (never its content).
    pub fn parse(path: &Path, text: &str) -> Result<CcciYml, String> {
        let doc: CcciYml = if text.trim().is_empty() {
            CcciYml::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| format!("{}: {}", path.display(), yaml_error(&e)))?
        };
        doc.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(doc)
    }

    /// Reads and parses `path` without following a link or blocking on a FIFO.
    pub fn load(path: &Path) -> Result<CcciYml, String> {
        let text = read_plain_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// The trusted `ccci.yml` at `path`: `Ok(None)` when there is none.
    pub fn load_trusted(path: &Path) -> Result<Option<CcciYml>, String> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => Self::load(path).map(Some),
        }
    }

    /// The document with `extra_env` values hidden, for `results.json` (operators may put
    /// credentials there; the dashboard is public).
    pub fn redacted(&self) -> CcciYml {
        let hide = |m: &BTreeMap<String, Scalar>| m.keys().map(|k| (k.clone(), Scalar::new("***"))).collect();
        let deps = self.deps.iter().map(|d| Dep { env: hide(&d.env), ..d.clone() }).collect();
        CcciYml {
            extra_env: hide(&self.extra_env),
            upgrade_extra_env: hide(&self.upgrade_extra_env),
            deps,
            ..self.clone()
        }
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.timeouts;
        for (name, v) in [("deploy", t.deploy), ("http", t.http), ("test", t.test), ("hook", t.hook)] {
            if v == 0 || v > MAX_TIMEOUT_SECS {
                return Err(format!("timeouts.{name} must be from 1 to {MAX_TIMEOUT_SECS} seconds"));
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
        validate_health(&self.health, "health")?;
        validate_probes(&self.ready_probes, "ready_probes")?;
        if self.backup.attempts == 0 || self.backup.attempts > MAX_BACKUP_ATTEMPTS {
            return Err(format!("backup.attempts must be from 1 to {MAX_BACKUP_ATTEMPTS}"));
        }
        if let Some(policy) = &self.policy {
            policy.validate()?;
        }
        self.validate_deps()
    }

    fn validate_deps(&self) -> Result<(), String> {
        if self.deps.len() > MAX_DEPS {
            return Err(format!("deps lists {} dependencies; at most {MAX_DEPS}", self.deps.len()));
        }
        for (i, dep) in self.deps.iter().enumerate() {
            let at = format!("deps[{i}]");
            if !RECIPE.is_match(&dep.recipe) {
                return Err(format!("{at}.recipe must match ^[a-z0-9][a-z0-9-]{{0,63}}$"));
            }
            if self.deps[..i].iter().any(|d| d.recipe == dep.recipe) {
                return Err(format!("{at}: {} is listed twice (a recipe is its dependency's name)", dep.recipe));
            }
            let at = format!("deps.{}", dep.recipe);
            if let Some(v) = &dep.version
                && (!VERSION.is_match(v) || v.contains(".."))
            {
                return Err(format!("{at}.version must be a release tag (^[0-9A-Za-z][0-9A-Za-z.+_-]*$, no `..`)"));
            }
            for (k, v) in &dep.env {
                if !ENV_KEY.is_match(k) {
                    return Err(format!("{at}.env key {k:?} must match ^[A-Z_][A-Z0-9_]*$"));
                }
                if v.as_env_value().contains(['\n', '\r']) {
                    return Err(format!("{at}.env.{k} must not contain a newline"));
                }
                // A dependency is deployed after the ones listed before it, never after itself.
                let earlier: Vec<&str> = self.deps[..i].iter().map(|d| d.recipe.as_str()).collect();
                check_templates(&v.as_env_value(), &earlier).map_err(|e| format!("{at}.env.{k}: {e}"))?;
            }
            if let Some(p) = &dep.provision {
                if !PROVISION_HOOK.is_match(&p.run) {
                    return Err(format!(
                        "{at}.provision.run must name a trusted hook hooks/provision_<name> ([A-Za-z0-9_-])"
                    ));
                }
                if let Some(k) = p.secrets.iter().find(|k| !crate::deps::template::KEY.is_match(k)) {
                    return Err(format!("{at}.provision.secrets: {k:?} must match ^[a-z_][a-z0-9_]*$"));
                }
            }
            if let Some(t) = dep.ready.timeout
                && (t == 0 || t > MAX_TIMEOUT_SECS)
            {
                return Err(format!("{at}.ready.timeout must be from 1 to {MAX_TIMEOUT_SECS} seconds"));
            }
            validate_health(&dep.ready.health, &format!("{at}.ready.health"))?;
            validate_probes(&dep.ready.ready_probes, &format!("{at}.ready.ready_probes"))?;
        }
        let all: Vec<&str> = self.deps.iter().map(|d| d.recipe.as_str()).collect();
        for (field, map) in [("extra_env", &self.extra_env), ("upgrade_extra_env", &self.upgrade_extra_env)] {
            for (k, v) in map {
                check_templates(&v.as_env_value(), &all).map_err(|e| format!("{field}.{k}: {e}"))?;
            }
        }
        Ok(())
    }

    /// What only makes sense next to the recipe: a dependency on the recipe itself would be
    /// deployed twice under two names.
    pub fn validate_for(&self, recipe: &str) -> Result<(), String> {
        if self.deps.iter().any(|d| d.recipe == recipe) {
            return Err(format!("deps: {recipe} cannot be a dependency of itself"));
        }
        Ok(())
    }
}

/// Every `{{deps.<name>.<key>}}` of `value` names one of `deps`.
fn check_templates(value: &str, deps: &[&str]) -> Result<(), String> {
    for r in crate::deps::template::references(value).map_err(|e| e.to_string())? {
        if !deps.contains(&r.dep.as_str()) {
            return Err(format!("{{{{deps.{}.{}}}}} names no dependency listed before it", r.dep, r.key));
        }
    }
    Ok(())
}

fn validate_health(health: &Health, field: &str) -> Result<(), String> {
    if let Some(url) = &health.url
        && url != "off"
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(format!("{field}.url {url:?} must be an http:// or https:// URL, or `off`"));
    }
    if let Some(expect) = &health.expect
        && (expect.is_empty() || expect.iter().any(|s| !(100..=599).contains(s)))
    {
        return Err(format!("{field}.expect must list HTTP statuses (100-599)"));
    }
    Ok(())
}

fn validate_probes(probes: &[ReadyProbe], field: &str) -> Result<(), String> {
    for probe in probes {
        let ok = probe
            .tcp
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(format!("{field} tcp {:?} must be host:port", probe.tcp));
        }
        if probe.stable == 0 || probe.stable > MAX_PROBE_STABLE {
            return Err(format!("{field} stable must be from 1 to {MAX_PROBE_STABLE}"));
        }
    }
    Ok(())
}

/// Reads a regular file of at most [`MAX_SIZE`] bytes without following a final symlink and
/// without blocking on a FIFO (`O_NOFOLLOW|O_NONBLOCK`, then `fstat`).
fn read_plain_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(
            |e| match e.raw_os_error() {
                Some(libc::ELOOP) => std::io::Error::other("is a symlink (never followed)"),
                _ => e,
            },
        )?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("is not a regular file"));
    }
    if meta.len() > MAX_SIZE {
        return Err(std::io::Error::other(format!("is {} bytes, more than {MAX_SIZE}", meta.len())));
    }
    let mut text = String::new();
    f.take(MAX_SIZE).read_to_string(&mut text)?;
    Ok(text)
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
    fn extra_env_values_keep_their_yaml_text() {
        let text = "extra_env:\n  PG_VERSION: 15.10\n  V: 1.0\n  T: 900\n  Q: \"900\"\n  B: true\n  H: 0x1F\n  E: 1e3\n  S: 'a: b'\nupgrade_extra_env: { PG_VERSION: 16.10 }\n";
        let y = CcciYml::parse(Path::new("c"), text).unwrap();
        let env = |k: &str| y.extra_env[k].as_env_value();
        assert_eq!(
            [env("PG_VERSION"), env("V"), env("T"), env("Q"), env("B"), env("H"), env("E"), env("S")],
            ["15.10", "1.0", "900", "900", "true", "0x1F", "1e3", "a: b"]
        );
        assert_eq!(y.upgrade_extra_env["PG_VERSION"].as_env_value(), "16.10");
        for bad in ["extra_env: { A: [1, 2] }", "extra_env: { A: { b: 1 } }"] {
            assert!(CcciYml::parse(Path::new("c"), bad).is_err(), "{bad}");
        }
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
    fn yaml_errors_do_not_quote_the_file() {
        let e = CcciYml::parse(Path::new("/t/ccci.yml"), "root:$6$SECRETHASH: x\n").unwrap_err();
        assert!(!e.contains("SECRETHASH") && e.contains("unknown field") && e.contains("line 1"), "{e}");
        assert!(e.contains("expected one of"), "what was expected stays: {e}");
        let e = CcciYml::parse(Path::new("c"), "timeouts: { deploy: \"hunter2hunter2\" }\n").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let e = CcciYml::parse(Path::new("c"), "timeouts: { deploy: 18446744073709551615 }\n").unwrap_err();
        assert!(e.contains("86400"), "{e}");
    }

    #[test]
    fn reads_never_follow_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("secret"), "extra_env: { A: x }\n").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), d.path().join("ccci.yml")).unwrap();
        let e = CcciYml::load(&d.path().join("ccci.yml")).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        assert!(CcciYml::load_trusted(&d.path().join("absent.yml")).unwrap().is_none());
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
    fn deps_parse_with_their_defaults() {
        let text = r#"
extra_env: { IDP_DOMAIN: "{{deps.idp.domain}}", IDP_URL: "https://{{ deps.idp.domain }}/{{deps.mail.realm}}" }
deps:
  - recipe: idp
    version: "1.0.0+1"
    env: { HTTP_PORT: 18090 }
    provision: { run: hooks/provision_idp, secrets: [client_secret] }
    ready: { timeout: 60, health: { url: "http://127.0.0.1:18090/", expect: [200] }, ready_probes: [ { tcp: "127.0.0.1:18090" } ] }
  - recipe: mail
    env: { IDP: "{{deps.idp.domain}}" }
"#;
        let y = CcciYml::parse(Path::new("c"), text).unwrap();
        assert_eq!(y.deps.len(), 2);
        let (idp, mail) = (&y.deps[0], &y.deps[1]);
        assert_eq!(idp.version.as_deref(), Some("1.0.0+1"));
        assert_eq!(idp.env["HTTP_PORT"].as_env_value(), "18090");
        assert_eq!(idp.provision.as_ref().unwrap().secrets, ["client_secret"]);
        assert_eq!(idp.ready.timeout, Some(60));
        assert_eq!(
            (mail.version.clone(), mail.provision.clone(), mail.ready.clone()),
            (None, None, DepReady::default())
        );
        assert!(y.validate_for("ssoapp").is_ok());
        let e = y.validate_for("idp").unwrap_err();
        assert!(e.contains("idp cannot be a dependency of itself"), "{e}");
        let hidden = y.redacted();
        assert_eq!(hidden.deps[0].env["HTTP_PORT"].as_env_value(), "***", "dep env values are hidden like extra_env");
    }

    #[test]
    fn bad_deps_are_errors_naming_the_rule() {
        let nine: String = (0..9).map(|i| format!("  - recipe: r{i}\n")).collect();
        for (text, want) in [
            ("deps: [ { recipe: Idp } ]".to_string(), "deps[0].recipe must match"),
            ("deps: [ { recipe: ../x } ]".into(), "deps[0].recipe must match"),
            ("deps: [ { recipe: idp }, { recipe: idp } ]".into(), "deps[1]: idp is listed twice"),
            ("deps: [ { recipe: idp, name: x } ]".into(), "unknown field"),
            ("deps: [ { version: 1.0.0 } ]".into(), "missing field"),
            ("deps: [ { recipe: idp, version: \"-x\" } ]".into(), "deps.idp.version must be a release tag"),
            ("deps: [ { recipe: idp, version: \"a..b\" } ]".into(), "deps.idp.version"),
            ("deps: [ { recipe: idp, env: { lower: x } } ]".into(), "deps.idp.env key"),
            (
                "deps: [ { recipe: idp, env: { A: \"{{deps.idp.domain}}\" } } ]".into(),
                "names no dependency listed before it",
            ),
            ("deps: [ { recipe: idp, provision: { run: /bin/sh } } ]".into(), "hooks/provision_<name>"),
            ("deps: [ { recipe: idp, provision: { run: hooks/provision_../x } } ]".into(), "hooks/provision_<name>"),
            ("deps: [ { recipe: idp, provision: { run: hooks/pre_upgrade } } ]".into(), "hooks/provision_<name>"),
            ("deps: [ { recipe: idp, provision: { run: hooks/provision_idp, secrets: [A] } } ]".into(), "secrets"),
            ("deps: [ { recipe: idp, ready: { timeout: 0 } } ]".into(), "deps.idp.ready.timeout"),
            ("deps: [ { recipe: idp, ready: { health: { url: ftp://x } } } ]".into(), "deps.idp.ready.health.url"),
            (
                "deps: [ { recipe: idp, ready: { ready_probes: [ { tcp: x } ] } } ]".into(),
                "deps.idp.ready.ready_probes",
            ),
            ("extra_env: { A: \"{{deps.kc.domain}}\" }\ndeps: [ { recipe: idp } ]".into(), "extra_env.A"),
            ("upgrade_extra_env: { A: \"{{deps.idp.Domain}}\" }\ndeps: [ { recipe: idp } ]".into(), "must match"),
            (format!("deps:\n{nine}"), "at most 8"),
        ] {
            let e = CcciYml::parse(Path::new("/t/ccci.yml"), &text).unwrap_err();
            assert!(e.starts_with("/t/ccci.yml: ") && e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn empty_file_is_defaults() {
        let y = CcciYml::parse(Path::new("c"), "").unwrap();
        assert_eq!(y.timeouts.deploy, 900);
        assert_eq!(y.backup.attempts, 3);
    }
}
