//! dockerd's list filters (`filters={"label":["k=v"]}`) and the endpoint text errors show.

use std::collections::{BTreeMap, HashMap};

/// Docker's label on everything a stack deploy creates (not on secrets abra creates itself).
pub const NS_LABEL: &str = "com.docker.stack.namespace";

/// Which stacks a listing covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Objects labelled `com.docker.stack.namespace=<stack>`.
    Stack(&'a str),
    /// Objects carrying the namespace label at all (the janitor's discovery).
    AnyStack,
}

impl Scope<'_> {
    pub fn filters(&self) -> Filters {
        match self {
            Scope::Stack(stack) => Filters::new().with("label", &format!("{NS_LABEL}={stack}")),
            Scope::AnyStack => Filters::new().with("label", NS_LABEL),
        }
    }
}

/// A filter set: values of one key are OR-ed by dockerd, keys are AND-ed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    pub fn new() -> Filters {
        Filters::default()
    }

    pub fn with(mut self, key: &str, value: &str) -> Filters {
        let values = self.0.entry(key.to_string()).or_default();
        if !values.iter().any(|v| v == value) {
            values.push(value.to_string());
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON dockerd reads, keys sorted (so endpoint texts are stable).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    pub(crate) fn to_map(&self) -> Option<HashMap<String, Vec<String>>> {
        (!self.is_empty()).then(|| self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// `GET /path?k=v&filters={…}` as errors show it: the request as sent, but not URL-encoded and
/// without the `/v1.xx` prefix, so a person can paste it into `curl --unix-socket`.
pub fn endpoint(path: &str, query: &[(&str, String)], filters: &Filters) -> String {
    let mut parts: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !filters.is_empty() {
        parts.push(format!("filters={}", filters.to_json()));
    }
    if parts.is_empty() { format!("GET {path}") } else { format!("GET {path}?{}", parts.join("&")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_filter_on_the_namespace_label() {
        assert_eq!(
            Scope::Stack("app_example_org").filters().to_json(),
            r#"{"label":["com.docker.stack.namespace=app_example_org"]}"#
        );
        assert_eq!(Scope::AnyStack.filters().to_json(), r#"{"label":["com.docker.stack.namespace"]}"#);
    }

    #[test]
    fn filters_keep_keys_sorted_and_values_unique() {
        let f = Filters::new()
            .with("type", "service")
            .with("event", "create")
            .with("type", "container")
            .with("type", "service");
        assert_eq!(f.to_json(), r#"{"event":["create"],"type":["service","container"]}"#);
        let m = f.to_map().unwrap();
        assert_eq!(m["type"], vec!["service", "container"]);
        assert_eq!(Filters::new().to_map(), None);
    }

    #[test]
    fn endpoint_text() {
        assert_eq!(endpoint("/version", &[], &Filters::new()), "GET /version");
        assert_eq!(
            endpoint("/containers/json", &[("all", "true".into())], &Scope::Stack("s").filters()),
            r#"GET /containers/json?all=true&filters={"label":["com.docker.stack.namespace=s"]}"#
        );
        assert_eq!(
            endpoint("/secrets", &[], &Filters::new().with("name", "s_")),
            r#"GET /secrets?filters={"name":["s_"]}"#
        );
    }
}
