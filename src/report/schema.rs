//! The JSON Schema of `results.json`, generated from the report types.
//!
//! `docs/results.schema.json` is this text; a test checks the committed file against it
//! (`UPDATE_DOCS=1 cargo test --test integration report::` rewrites it) and validates real
//! `results.json` files against it.

use schemars::generate::SchemaSettings;

use super::Results;

/// The schema (JSON Schema draft 2020-12) of what ccci writes: the serialising side of the
/// types, so a key is `required` exactly when ccci always writes it.
pub fn json_schema() -> String {
    let mut schema = SchemaSettings::draft2020_12().for_serialize().into_generator().into_root_schema_for::<Results>();
    schema.insert("title".into(), "ccci results.json (schema 2)".into());
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
