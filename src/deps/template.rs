//! `{{deps.<name>.<key>}}` in `.env` overrides: how the app under test (or a later dependency)
//! learns a dependency's domain or a value its provision hook printed. Only this one form is a
//! template; any other `{{…}}` is left as written (a value may legitimately carry braces).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use thiserror::Error;

/// A key of a dependency's entry in `$CCCI_DEPS_FILE` (and of a provision hook's object).
pub static KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z_][a-z0-9_]{0,63}$").expect("regex"));

/// `{{ deps.<recipe>.<key> }}`, blanks allowed inside the braces. The name part is as loose
/// as a recipe name can be, so a misspelt one is reported rather than left as text.
static TEMPLATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s*deps\.([^.{}\s]*)\.([^.{}\s]*)\s*\}\}").expect("regex"));

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("{{{{deps.{dep}.{key}}}}}: the key must match ^[a-z_][a-z0-9_]*$")]
    BadKey { dep: String, key: String },
    #[error("{{{{deps.{dep}.{key}}}}}: {dep} is not a dependency of this run")]
    UnknownDep { dep: String, key: String },
    #[error("{{{{deps.{dep}.{key}}}}}: {dep} has no {key:?} (it has: {has})")]
    UnknownKey { dep: String, key: String, has: String },
    #[error("{{{{deps.{dep}.{key}}}}}: the value is not text and cannot go into an .env")]
    NotScalar { dep: String, key: String },
    #[error("{{{{deps.{dep}.{key}}}}}: the value holds a newline and cannot go into an .env")]
    Newline { dep: String, key: String },
}

/// One `{{deps.<dep>.<key>}}` of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub dep: String,
    pub key: String,
}

/// The references of `value`, checked for shape (the config check: names are compared with
/// the `deps:` list by the caller).
pub fn references(value: &str) -> Result<Vec<Reference>, TemplateError> {
    TEMPLATE
        .captures_iter(value)
        .map(|c| {
            let r = Reference { dep: c[1].to_string(), key: c[2].to_string() };
            if KEY.is_match(&r.key) { Ok(r) } else { Err(TemplateError::BadKey { dep: r.dep, key: r.key }) }
        })
        .collect()
}

/// What templates are filled from: each dependency's entry of `$CCCI_DEPS_FILE`.
pub type Entries = BTreeMap<String, serde_json::Map<String, serde_json::Value>>;

/// `value` with every reference replaced by the entry's value (text as it is; numbers and
/// booleans as JSON writes them).
pub fn render(value: &str, entries: &Entries) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(value.len());
    let mut last = 0;
    for c in TEMPLATE.captures_iter(value) {
        let whole = c.get(0).expect("match");
        let (dep, key) = (c[1].to_string(), c[2].to_string());
        if !KEY.is_match(&key) {
            return Err(TemplateError::BadKey { dep, key });
        }
        let Some(entry) = entries.get(&dep) else { return Err(TemplateError::UnknownDep { dep, key }) };
        let text = match entry.get(&key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
            Some(_) => return Err(TemplateError::NotScalar { dep, key }),
            None => {
                let has = entry.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(TemplateError::UnknownKey { dep, key, has });
            }
        };
        if text.contains(['\n', '\r']) {
            return Err(TemplateError::Newline { dep, key });
        }
        out.push_str(&value[last..whole.start()]);
        out.push_str(&text);
        last = whole.end();
    }
    out.push_str(&value[last..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entries() -> Entries {
        let v = json!({"idp": {"domain": "ssoa-123456-d1.ci.example", "port": 18090, "multi": "a\nb", "obj": {}}});
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn renders_domains_and_provisioned_values() {
        let e = entries();
        assert_eq!(
            render("https://{{deps.idp.domain}}/realms/x", &e).unwrap(),
            "https://ssoa-123456-d1.ci.example/realms/x"
        );
        assert_eq!(render("{{ deps.idp.domain }}:{{deps.idp.port}}", &e).unwrap(), "ssoa-123456-d1.ci.example:18090");
        assert_eq!(render("no templates {{here}} {x}", &e).unwrap(), "no templates {{here}} {x}");
    }

    #[test]
    fn bad_references_are_errors_naming_them() {
        let e = entries();
        let err = render("{{deps.kc.domain}}", &e).unwrap_err();
        assert_eq!(err, TemplateError::UnknownDep { dep: "kc".into(), key: "domain".into() });
        assert!(err.to_string().starts_with("{{deps.kc.domain}}: kc is not"), "{err}");
        let err = render("{{deps.idp.realm}}", &e).unwrap_err().to_string();
        assert!(err.contains("has no \"realm\"") && err.contains("domain"), "{err}");
        assert!(matches!(render("{{deps.idp.multi}}", &e), Err(TemplateError::Newline { .. })));
        assert!(matches!(render("{{deps.idp.obj}}", &e), Err(TemplateError::NotScalar { .. })));
        assert!(matches!(references("{{deps.idp.Domain}}"), Err(TemplateError::BadKey { .. })));
        assert!(matches!(references("{{deps.idp.}}"), Err(TemplateError::BadKey { .. })));
    }

    #[test]
    fn references_list_every_template() {
        let r = references("{{deps.a.domain}}-{{ deps.b-c.client_id }}").unwrap();
        assert_eq!(
            r,
            vec![
                Reference { dep: "a".into(), key: "domain".into() },
                Reference { dep: "b-c".into(), key: "client_id".into() }
            ]
        );
        assert!(references("{{deps}} {{ other.x.y }}").unwrap().is_empty());
    }
}
