//! The configuration reference, generated from the config types: the JSON
//! Schema of `hubcast.toml` (`docs/hubcast.schema.json`, for editors) and the
//! table of every key (`docs/configuration.md`). Both come from the doc
//! comments and `Default`s of [`Config`] and its sections (`schemars`), so a
//! new key is documented by writing its doc comment; a test fails while the
//! checked-in files are out of date (`hubcast config --schema`,
//! `hubcast config --reference` regenerate them).

use std::fmt::Write;

use serde_json::{Map, Value};

use super::Config;

/// The JSON Schema (draft 2020-12) of `hubcast.toml`, pretty-printed.
pub fn json_schema() -> String {
    let mut schema = serde_json::to_value(schemars::schema_for!(Config)).expect("schema is JSON");
    schema["title"] = Value::from("hubcast.toml");
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}

const INTRO: &str = "\
# Configuration reference

<!-- Generated from crates/hubcast-server/src/config.rs (and the sections it
     includes) by `hubcast config --reference > docs/configuration.md`; edit the
     doc comments there, not this file. A test fails while this file is stale. -->

hubcast reads its configuration in layers, each overriding the one before:
the defaults below, `hubcast.toml` (`--config PATH`; a path given explicitly
must exist), its `[env.NAME]` block (`--env NAME`), `HUBCAST_*` environment
variables, and the flags `--listen`, `--store`, `--bus`, `--insecure`.
An environment variable names a key in upper case with `__` between sections:
`limits.max_event_bytes` is `HUBCAST_LIMITS__MAX_EVENT_BYTES`. Unknown keys are
errors. `hubcast config` prints the effective configuration, secrets redacted.

Editors can validate `hubcast.toml` against
[`hubcast.schema.json`](hubcast.schema.json) (for example with Taplo or
Even Better TOML: `#:schema ./docs/hubcast.schema.json` on the first line).
";

/// `docs/configuration.md`: every key with its type, default and meaning.
pub fn reference_markdown() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(Config)).expect("schema is JSON");
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = String::from(INTRO);
    let mut sections = Vec::new();
    out.push_str("\n## Top level\n\n");
    table(&mut out, &schema, "", &defs, &mut sections);
    while !sections.is_empty() {
        let pending = std::mem::take(&mut sections);
        for (heading, prefix, section) in pending {
            let _ = write!(out, "\n## `{heading}`\n\n");
            if let Some(about) = section.get("description").and_then(Value::as_str) {
                let _ = writeln!(out, "{}\n", one_line(about));
            }
            table(&mut out, &section, &prefix, &defs, &mut sections);
        }
    }
    out
}

/// One table of the keys of `object`; nested sections are queued.
fn table(
    out: &mut String,
    object: &Value,
    prefix: &str,
    defs: &Map<String, Value>,
    sections: &mut Vec<(String, String, Value)>,
) {
    out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
    let Some(properties) = object.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, property) in properties {
        let key = format!("{prefix}{name}");
        let resolved = resolve(property, defs);
        if resolved.get("properties").is_some() {
            let heading = format!("[{key}]");
            let _ = writeln!(
                out,
                "| `{key}` | table | | {} (see [`{heading}`](#{})) |",
                describe(property, &resolved),
                anchor(&heading)
            );
            sections.push((heading, format!("{key}."), merged(property, &resolved)));
            continue;
        }
        let items = resolved.get("items").map(|items| resolve(items, defs));
        if let Some(items) = items.filter(|items| items.get("properties").is_some()) {
            let heading = format!("[[{key}]]");
            sections.push((heading.clone(), format!("{key}[]."), items));
            let _ = writeln!(
                out,
                "| `{key}` | array of tables | `[]` | {} (see [`{heading}`](#{})) |",
                describe(property, &resolved),
                anchor(&heading)
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| `{key}` | {} | {} | {} |",
            type_name(&resolved, defs),
            default(property),
            describe(property, &resolved)
        );
    }
}

/// A `$ref` replaced by its definition (or the schema as it is); an optional
/// value (`anyOf: [X, null]`, an `Option` section such as
/// `[auth.connect_hook]`) is described as `X`.
fn resolve(schema: &Value, defs: &Map<String, Value>) -> Value {
    if let Some(variants) = schema.get("anyOf").and_then(Value::as_array) {
        let mut present = variants
            .iter()
            .filter(|v| v.get("type") != Some(&Value::from("null")));
        if let (Some(only), None, 2) = (present.next(), present.next(), variants.len()) {
            return resolve(only, defs);
        }
    }
    let reference = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"));
    match reference.and_then(|name| defs.get(name)) {
        Some(def) => def.clone(),
        None => schema.clone(),
    }
}

/// A section's own schema, with the description of the key that holds it
/// when the section type has none.
fn merged(property: &Value, resolved: &Value) -> Value {
    let mut section = resolved.clone();
    if section.get("description").is_none() {
        if let Some(about) = property.get("description") {
            section["description"] = about.clone();
        }
    }
    section
}

fn describe(property: &Value, resolved: &Value) -> String {
    let text = property
        .get("description")
        .or_else(|| resolved.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("");
    one_line(text).replace('|', "\\|")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn type_name(schema: &Value, defs: &Map<String, Value>) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        return names.join(" \\| ");
    }
    if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        let names: Vec<String> = variants
            .iter()
            .filter_map(|v| v.get("const"))
            .map(|v| format!("`{v}`"))
            .collect();
        if !names.is_empty() {
            return names.join(" \\| ");
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    let base = match types.first().copied() {
        Some("array") => {
            let item = schema
                .get("items")
                .map(|items| type_name(&resolve(items, defs), defs))
                .unwrap_or_else(|| "any".into());
            format!("array of {item}")
        }
        Some("object") => "table".to_owned(),
        Some(t) => t.to_owned(),
        None => "any".to_owned(),
    };
    let optional =
        matches!(schema.get("type"), Some(Value::Array(ts)) if ts.contains(&Value::from("null")));
    if optional {
        format!("{base} (optional)")
    } else {
        base
    }
}

fn default(property: &Value) -> String {
    match property.get("default") {
        None | Some(Value::Null) => String::new(),
        Some(value) => format!("`{}`", value.to_string().replace('|', "\\|")),
    }
}

/// GitHub's anchor for a heading `` `name` ``.
fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: &str = "is out of date with crates/hubcast-server/src/config.rs; regenerate with \
        `cargo run -- config --schema > docs/hubcast.schema.json && \
         cargo run -- config --reference > docs/configuration.md`";

    fn checked_in(name: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/").to_owned() + name;
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_checked_in_schema_is_current() {
        assert!(
            checked_in("hubcast.schema.json") == json_schema(),
            "docs/hubcast.schema.json {STALE}"
        );
    }

    #[test]
    fn the_checked_in_reference_is_current() {
        assert!(
            checked_in("configuration.md") == reference_markdown(),
            "docs/configuration.md {STALE}"
        );
    }

    #[test]
    fn every_key_is_in_the_reference() {
        let reference = reference_markdown();
        for key in [
            "`listen`",
            "`sqlite.readers`",
            "`limits.max_event_bytes`",
            "`auth.api_keys[].key_env`",
            "`namespaces[].batch_ms`",
            "`rate_limits.max_connections`",
        ] {
            assert!(reference.contains(key), "{key} in the reference");
        }
        assert!(reference.contains("| `sqlite.readers` | integer | `4` |"));
    }

    #[test]
    fn the_schema_accepts_the_defaults_shape() {
        let schema: Value = serde_json::from_str(&json_schema()).unwrap();
        assert_eq!(
            schema["additionalProperties"], false,
            "unknown keys are errors"
        );
        assert_eq!(schema["properties"]["listen"]["default"], "127.0.0.1:8787");
    }
}
