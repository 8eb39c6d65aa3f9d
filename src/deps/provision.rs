//! A provision hook's output: one JSON object of scalars on stdout, merged into the run's
//! `$CCCI_DEPS_FILE` under the dependency's name. Secret values join the masker before anything
//! else can print them.

use serde_json::{Map, Value};
use thiserror::Error;

use super::template::KEY;

/// A provision hook prints credentials and URLs, not data.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Key names that are secret whether or not the operator listed them: forgetting to list a
/// client secret must not publish it on the dashboard.
const SECRET_WORDS: [&str; 4] = ["secret", "password", "token", "key"];

/// Why a hook's output was refused. Never quotes the output: it holds credentials.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProvisionError {
    #[error("its stdout is {0} bytes; a provision hook prints at most {MAX_OUTPUT}")]
    TooLarge(usize),
    #[error("its stdout is not one JSON object ({0})")]
    NotJson(String),
    #[error("its stdout is JSON but not an object")]
    NotObject,
    #[error("key {0:?} must match ^[a-z_][a-z0-9_]*$")]
    BadKey(String),
    #[error("key \"domain\" is ccci's (the dependency's domain); the hook may not set it")]
    Domain,
    #[error("the value of {0:?} must be text, a number or a boolean")]
    NotScalar(String),
}

/// What a hook printed: the values for the deps file, and which of them are secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Provisioned {
    pub values: Map<String, Value>,
    /// The text of every secret value (numbers too), for the masker.
    pub secret_values: Vec<String>,
}

/// Whether `key` is masked: listed in `provision.secrets`, or named like a secret.
pub fn is_secret_key(key: &str, declared: &[String]) -> bool {
    declared.iter().any(|d| d == key) || SECRET_WORDS.iter().any(|w| key.split('_').any(|part| part == *w))
}

pub fn parse(stdout: &str, declared: &[String]) -> Result<Provisioned, ProvisionError> {
    if stdout.len() > MAX_OUTPUT {
        return Err(ProvisionError::TooLarge(stdout.len()));
    }
    // serde_json's messages name a position, never the text.
    let doc: Value = serde_json::from_str(stdout.trim()).map_err(|e| ProvisionError::NotJson(e.to_string()))?;
    let Value::Object(values) = doc else { return Err(ProvisionError::NotObject) };
    let mut secret_values = Vec::new();
    for (k, v) in &values {
        if !KEY.is_match(k) {
            return Err(ProvisionError::BadKey(k.clone()));
        }
        if k == "domain" {
            return Err(ProvisionError::Domain);
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => v.to_string(),
            _ => return Err(ProvisionError::NotScalar(k.clone())),
        };
        if is_secret_key(k, declared) {
            secret_values.push(text);
        }
    }
    Ok(Provisioned { values, secret_values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_of_scalars_is_taken_and_its_secrets_found() {
        let out = "\n{\"realm\": \"ssoa-1\", \"client_id\": \"ccci\", \"client_secret\": \"s3cr3t-v4lue\", \"admin_pass\": \"adminadmin\", \"port\": 18090, \"api_key\": \"k-123456789\"}\n";
        let p = parse(out, &["admin_pass".to_string()]).unwrap();
        assert_eq!(p.values["port"], 18090);
        let mut s = p.secret_values.clone();
        s.sort();
        assert_eq!(s, ["adminadmin", "k-123456789", "s3cr3t-v4lue"]);
        assert!(!is_secret_key("keycloak_url", &[]), "a word inside another is not a secret word");
        assert!(is_secret_key("token", &[]) && is_secret_key("db_password", &[]));
    }

    #[test]
    fn anything_else_is_refused_without_quoting_it() {
        for (out, want) in [
            ("not json hunter2hunter2", "not one JSON object"),
            ("[1]", "not an object"),
            ("{\"Realm\": \"x\"}", "must match"),
            ("{\"domain\": \"x\"}", "ccci's"),
            ("{\"nested\": {\"a\": \"hunter2hunter2\"}}", "text, a number"),
            ("{\"a\": \"x\"} {\"b\": 1}", "not one JSON object"),
        ] {
            let e = parse(out, &[]).unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains("hunter2"), "{out}: {e}");
        }
        assert_eq!(parse(&" ".repeat(MAX_OUTPUT + 1), &[]), Err(ProvisionError::TooLarge(MAX_OUTPUT + 1)));
    }
}
