//! Canonical JSON: the one byte string tapes hashes for a JSON value (tool inputs, unmodeled
//! blocks). Keys are sorted by their UTF-8 bytes, there is no insignificant whitespace, strings
//! use the shortest JSON escapes, numbers print as serde_json prints them. SPEC.md §2.3.
//!
//! The key order is done here explicitly rather than relying on serde_json's map type, because
//! any crate in a build can switch serde_json to insertion order (`preserve_order`).

use serde_json::Value;

/// Canonicalizes JSON text. Returns `None` if `text` is not valid JSON.
pub fn canonicalize(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    Some(canonical_value(&value))
}

/// The canonical text of an already parsed value.
pub fn canonical_value(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_and_strips_whitespace() {
        assert_eq!(
            canonicalize(r#"{ "b": [1, 2.5, {"z":null, "a":true}], "a": "x\ny" }"#).unwrap(),
            r#"{"a":"x\ny","b":[1,2.5,{"a":true,"z":null}]}"#
        );
    }

    #[test]
    fn escapes_control_characters_shortest() {
        assert_eq!(canonicalize("\"\\u0001\\u00e9\"").unwrap(), "\"\\u0001é\"");
    }

    #[test]
    fn rejects_invalid_json() {
        assert!(canonicalize("{not json").is_none());
    }

    #[test]
    fn is_idempotent() {
        let once = canonicalize(r#"{"k":[1,{"y":2,"x":1}],"a":"\u2028"}"#).unwrap();
        assert_eq!(canonicalize(&once).unwrap(), once);
    }
}
