//! Reading JSON into a `serde_json::Value` while refusing duplicate member names.
//!
//! serde_json keeps the last of two members with one name, so `"action": "DENY", "action":
//! "ALLOW"` would read as an ALLOW. Envoy reads JSON into a protobuf `Struct` with protobuf's
//! parser, which refuses duplicates (jwt_authn answers such a token `Jwt header is an invalid
//! JSON`); so does the YAML reader of the CLI. This reader builds the same `Value` serde_json
//! builds and stops at the first duplicate, naming its JSON path.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::path_de::{render_path, Segment};
use crate::ConfigError;

/// Parses one JSON text (nesting bounded by serde_json's recursion limit of 128). The error's
/// path is where the problem is (`$` for the text as a whole), its message serde_json's with
/// the line and column.
pub fn parse_unique(json: &[u8]) -> Result<Value, ConfigError> {
    parse_config(json, None)
}

/// [`parse_unique`] for a configuration: with `resources` given, each element of the top-level
/// `resources` array goes to it as soon as it is read, and the array is left empty in the value
/// returned. A JSON tree takes about 25 times its text, and the Wasm VM's memory never shrinks:
/// the whole configuration is never one tree.
pub fn parse_config(
    json: &[u8],
    resources: Option<&mut dyn FnMut(Value)>,
) -> Result<Value, ConfigError> {
    let mut segments = Vec::new();
    read(json, &mut segments, resources).map_err(|e| {
        let path = match render_path(&segments) {
            p if p == "." => "$".to_string(),
            p => p,
        };
        let message = if e.is_data() {
            e.to_string()
        } else {
            format!("not valid JSON: {e}")
        };
        ConfigError::new(path, message)
    })
}

/// The same reader for JSON that is not configuration (tokens, key sets): serde_json's error,
/// with its line and column, and no path.
pub fn read_unique(json: &[u8]) -> Result<Value, serde_json::Error> {
    read(json, &mut Vec::new(), None)
}

/// On an error, `segments` holds the path to where it happened, innermost first.
fn read(
    json: &[u8],
    segments: &mut Vec<Segment>,
    resources: Option<&mut dyn FnMut(Value)>,
) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let top = Node {
        path: segments,
        resources,
        elements: None,
    };
    top.deserialize(&mut de).and_then(|v| de.end().map(|()| v))
}

/// Builds a value; on a failure below it, adds its own key or index to the path (innermost
/// first), so only a failure costs the path.
struct Node<'p, 'h> {
    path: &'p mut Vec<Segment>,
    /// At the top: where the elements of a `resources` array go.
    resources: Option<&'h mut dyn FnMut(Value)>,
    /// Where this value's elements go, if it is an array, instead of into it.
    elements: Option<&'h mut dyn FnMut(Value)>,
}

/// A value inside another: no hooks.
fn child<'p>(path: &'p mut Vec<Segment>) -> Node<'p, 'static> {
    Node {
        path,
        resources: None,
        elements: None,
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        // serde_json never yields a non-finite number; Null is what its own Value would hold.
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let Node { path, elements, .. } = self;
        let mut items = Vec::new();
        let mut read = 0;
        let mut elements = elements;
        loop {
            match seq.next_element_seed(child(&mut *path)) {
                Ok(Some(v)) => {
                    read += 1;
                    match elements.as_mut() {
                        Some(each) => each(v),
                        None => items.push(v),
                    }
                }
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    path.push(Segment::Index(read));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Node {
            path,
            mut resources,
            ..
        } = self;
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                let message = format!("duplicate key {key:?}");
                path.push(Segment::Key(key));
                return Err(de::Error::custom(message));
            }
            let node = Node {
                path: &mut *path,
                resources: None,
                elements: if key == "resources" {
                    resources.take()
                } else {
                    None
                },
            };
            match map.next_value_seed(node) {
                Ok(v) => {
                    members.insert(key, v);
                }
                Err(e) => {
                    path.push(Segment::Key(key));
                    return Err(e);
                }
            }
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(json: &str) -> String {
        match parse_unique(json.as_bytes()) {
            Ok(v) => format!("parsed {v}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_duplicate_member_is_refused_at_its_path() {
        let e = error(r#"{"resources": [{}, {"spec": {"action": "DENY", "action": "ALLOW"}}]}"#);
        assert!(
            e.starts_with(r#"resources[1].spec.action: duplicate key "action" at line 1"#),
            "{e}"
        );
    }

    #[test]
    fn a_duplicate_at_the_top_is_named_by_its_key() {
        let e = error(r#"{"resources": [], "resources": []}"#);
        assert!(
            e.starts_with(r#"resources: duplicate key "resources""#),
            "{e}"
        );
    }

    #[test]
    fn equal_names_in_different_objects_are_not_duplicates() {
        let v = parse_unique(br#"{"a": {"x": 1}, "b": {"x": 2.5, "y": [null, true, -3, "s"]}}"#);
        let expected: Value =
            serde_json::from_str(r#"{"a": {"x": 1}, "b": {"x": 2.5, "y": [null, true, -3, "s"]}}"#)
                .unwrap();
        assert_eq!(v.unwrap(), expected);
    }

    #[test]
    fn a_syntax_error_is_named_where_it_is_with_line_and_column() {
        let e = error("{\"a\": [1, {\"b\": }]}");
        assert!(
            e.starts_with("a[1].b: not valid JSON: expected value at line 1 column 17"),
            "{e}"
        );
        assert!(
            error("").starts_with("$: not valid JSON: EOF"),
            "{}",
            error("")
        );
        assert!(error("{} x").starts_with("$: not valid JSON: trailing characters"));
    }

    #[test]
    fn nesting_is_bounded_by_serde_jsons_recursion_limit() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            error(&deep).contains("recursion limit exceeded"),
            "{}",
            error(&deep)
        );
    }

    #[test]
    fn top_level_resources_go_one_by_one_to_the_hook_and_nothing_else_does() {
        let text = br#"{"a": {"resources": [1]}, "resources": [{"x": 1}, [2], "s"], "b": [3]}"#;
        let mut seen = Vec::new();
        let v = parse_config(text, Some(&mut |v| seen.push(v))).unwrap();
        let expected: Value =
            serde_json::from_str(r#"{"a": {"resources": [1]}, "resources": [], "b": [3]}"#)
                .unwrap();
        assert_eq!(v, expected);
        assert_eq!(seen, [json!({"x": 1}), json!([2]), json!("s")]);
    }

    #[test]
    fn a_problem_in_a_streamed_resource_is_named_by_its_index() {
        let text = br#"{"resources": [{}, {}, {"spec": {"k": 1, "k": 2}}]}"#;
        let e = parse_config(text, Some(&mut |_| {}))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(r#"resources[2].spec.k: duplicate key "k""#),
            "{e}"
        );
    }
}
