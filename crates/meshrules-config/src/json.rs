//! Reading JSON into a `serde_json::Value` while refusing duplicate member names.
//!
//! serde_json keeps the last of two members with one name, so `"action": "DENY", "action":
//! "ALLOW"` would read as an ALLOW. Envoy reads JSON into a protobuf `Struct` with protobuf's
//! parser, which refuses duplicates (jwt_authn answers such a token `Jwt header is an invalid
//! JSON`); so does the YAML reader of the CLI. This reader builds the same `Value` serde_json
//! builds (for a configuration, a [`Tree`] borrowing from the text) and stops at the first
//! duplicate, naming its JSON path.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::path_de::{render_path, Segment, Tree};
use crate::ConfigError;

/// Parses one JSON text (nesting bounded by serde_json's recursion limit of 128). The error's
/// path is where the problem is (`$` for the text as a whole), its message serde_json's with
/// the line and column.
pub fn parse_unique(json: &[u8]) -> Result<Value, ConfigError> {
    let mut segments = Vec::new();
    read(json, &mut segments).map_err(|e| config_error(&segments, &e))
}

/// [`parse_unique`] for a configuration, into a [`Tree`] borrowing from `json`: each element
/// of the top-level `resources` array goes to `resources` as soon as it is read, and the array
/// is left empty in the tree returned. A JSON tree takes about 25 times its text, and the Wasm
/// VM's memory never shrinks: the whole configuration is never one tree.
pub(crate) fn parse_config<'a>(
    json: &'a [u8],
    resources: &mut dyn FnMut(Tree<'a>),
) -> Result<Tree<'a>, ConfigError> {
    let mut state = Reading::default();
    read_tree(json, &mut state, Some(resources)).map_err(|e| config_error(&state.path, &e))
}

/// The one reader: on an error, `state.path` holds the path to where it happened, innermost
/// first.
fn read_tree<'a>(
    json: &'a [u8],
    state: &mut Reading<'a>,
    resources: Option<&mut dyn FnMut(Tree<'a>)>,
) -> Result<Tree<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let top = TreeNode {
        state,
        resources,
        elements: None,
    };
    top.deserialize(&mut de).and_then(|v| de.end().map(|()| v))
}

/// A reader's failure as a configuration problem.
fn config_error(segments: &[Segment], e: &serde_json::Error) -> ConfigError {
    let path = match render_path(segments) {
        p if p == "." => "$".to_string(),
        p => p,
    };
    let message = if e.is_data() {
        e.to_string()
    } else {
        format!("not valid JSON: {e}")
    };
    ConfigError::new(path, message)
}

/// The same reader for JSON that is not configuration (tokens, key sets): serde_json's error,
/// with its line and column, and no path.
pub fn read_unique(json: &[u8]) -> Result<Value, serde_json::Error> {
    read(json, &mut Vec::new())
}

/// On an error, `segments` holds the path to where it happened, innermost first. Read as a
/// configuration is, then made a `Value`: one reader in the module.
fn read(json: &[u8], segments: &mut Vec<Segment>) -> Result<Value, serde_json::Error> {
    let mut state = Reading::default();
    let read = read_tree(json, &mut state, None);
    *segments = std::mem::take(&mut state.path);
    read.map(Tree::into_value)
}

/// What the levels of [`TreeNode`] share: the path of a failure, and the members and elements
/// read so far of the objects and arrays open, each moved at its end into a `Vec` of its
/// exact length (one allocation, where growing a `Vec` element by element takes several).
#[derive(Default)]
struct Reading<'a> {
    path: Vec<Segment>,
    members: Vec<(Cow<'a, str>, Tree<'a>)>,
    items: Vec<Tree<'a>>,
}

/// Builds a [`Tree`], borrowing each string and member name that has no escape from the text;
/// on a failure below it, adds its own key or index to the path (innermost first), so only a
/// failure costs the path.
struct TreeNode<'p, 'h, 'a> {
    state: &'p mut Reading<'a>,
    /// At the top: where the elements of a `resources` array go.
    resources: Option<&'h mut dyn FnMut(Tree<'a>)>,
    /// Where this value's elements go, if it is an array, instead of into it.
    elements: Option<&'h mut dyn FnMut(Tree<'a>)>,
}

impl<'a> DeserializeSeed<'a> for TreeNode<'_, '_, 'a> {
    type Value = Tree<'a>;

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<Tree<'a>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for TreeNode<'_, '_, 'a> {
    type Value = Tree<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Tree<'a>, E> {
        Ok(Tree::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Tree<'a>, E> {
        Ok(Tree::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Tree<'a>, E> {
        Ok(Tree::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Tree<'a>, E> {
        Ok(Tree::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Tree<'a>, E> {
        // serde_json never yields a non-finite number; Null is what its own Value would hold.
        Ok(Number::from_f64(n).map_or(Tree::Null, Tree::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'a str) -> Result<Tree<'a>, E> {
        Ok(Tree::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Tree<'a>, E> {
        Ok(Tree::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<Tree<'a>, A::Error> {
        let TreeNode {
            state, elements, ..
        } = self;
        let start = state.items.len();
        let mut read = 0;
        let mut elements = elements;
        loop {
            let node = TreeNode {
                state: &mut *state,
                resources: None,
                elements: None,
            };
            match seq.next_element_seed(node) {
                Ok(Some(v)) => {
                    read += 1;
                    match elements.as_mut() {
                        Some(each) => each(v),
                        None => state.items.push(v),
                    }
                }
                Ok(None) => return Ok(Tree::Array(state.items.drain(start..).collect())),
                Err(e) => {
                    state.path.push(Segment::Index(read));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Tree<'a>, A::Error> {
        let TreeNode {
            state,
            mut resources,
            ..
        } = self;
        let start = state.members.len();
        // Once the object is too large to keep its members sorted by moving them: each name
        // with the place of its member, in the map type serde_json's `Value` already builds.
        let mut large = Map::new();
        while let Some(key) = map.next_key_seed(Name)? {
            let read = state.members.len() - start;
            let place = if read <= SORTED_MEMBERS {
                state.members[start..].binary_search_by(|(name, _)| name.cmp(&key))
            } else {
                match large.insert(key.to_string(), Value::from(read)) {
                    Some(_) => Ok(0),
                    None => Err(read),
                }
            };
            let Err(place) = place else {
                let message = format!("duplicate key {key:?}");
                state.path.push(Segment::Key(key.into_owned()));
                return Err(de::Error::custom(message));
            };
            let node = TreeNode {
                state: &mut *state,
                resources: None,
                elements: if key == "resources" {
                    resources.take()
                } else {
                    None
                },
            };
            match map.next_value_seed(node) {
                Ok(v) => {
                    state.members.insert(start + place, (key, v));
                    if read == SORTED_MEMBERS {
                        for (at, (name, _)) in state.members[start..].iter().enumerate() {
                            large.insert(name.to_string(), Value::from(at));
                        }
                    }
                }
                Err(e) => {
                    state.path.push(Segment::Key(key.into_owned()));
                    return Err(e);
                }
            }
        }
        let members = state.members.drain(start..);
        if large.is_empty() {
            return Ok(Tree::Object(members.collect()));
        }
        // The members in the order of their names.
        let mut members: Vec<_> = members.map(Some).collect();
        let sorted = large
            .values()
            .filter_map(|at| members.get_mut(at.as_u64()? as usize)?.take())
            .collect();
        Ok(Tree::Object(sorted))
    }
}

/// Up to this many members, an object's are kept sorted (as serde_json's `Value` keeps them)
/// by moving the later ones; beyond, sorted through a map of their names, so that a large
/// object is not read in quadratic time.
const SORTED_MEMBERS: usize = 32;

/// A member name, borrowed from the text unless it has an escape.
struct Name;

impl<'a> DeserializeSeed<'a> for Name {
    type Value = Cow<'a, str>;

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<Cow<'a, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'a> Visitor<'a> for Name {
    type Value = Cow<'a, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, s: &'a str) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
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

    /// An object of `n` members named `k0`..., in an order that is not theirs, with `extra`
    /// members at the end.
    fn object(n: usize, extra: &str) -> String {
        let members: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "\"k{}\": [{i}, {{\"b\": 1, \"a\": \"\\u0041\"}}]",
                    (i * 7) % n
                )
            })
            .collect();
        format!("{{{}{extra}}}", members.join(", "))
    }

    #[test]
    fn small_and_large_objects_read_as_serde_json_reads_them() {
        for n in [0, 1, 5, 32, 33, 34, 200] {
            let text = object(n, "");
            let expected: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parse_unique(text.as_bytes()).unwrap(), expected, "{n}");
            let tree = parse_config(text.as_bytes(), &mut |_| {}).unwrap();
            let names: Vec<&str> = match &tree {
                Tree::Object(members) => members.iter().map(|(k, _)| k.as_ref()).collect(),
                _ => Vec::new(),
            };
            assert_eq!(names.len(), n);
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "members sorted by name, as a Value's");
        }
    }

    #[test]
    fn a_duplicate_is_found_in_small_and_large_objects_where_it_is() {
        for n in [3, 32, 33, 200] {
            let text = object(n, r#", "k1": 0"#);
            // serde_json places the error just after the name.
            let column = text.len() - 4;
            assert_eq!(
                error(&text),
                format!("k1: duplicate key \"k1\" at line 1 column {column}"),
                "{n}"
            );
        }
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
        let v = parse_config(text, &mut |v| seen.push(v.into_value())).unwrap();
        let expected: Value =
            serde_json::from_str(r#"{"a": {"resources": [1]}, "resources": [], "b": [3]}"#)
                .unwrap();
        assert_eq!(v.into_value(), expected);
        assert_eq!(seen, [json!({"x": 1}), json!([2]), json!("s")]);
    }

    #[test]
    fn a_problem_in_a_streamed_resource_is_named_by_its_index() {
        let text = br#"{"resources": [{}, {}, {"spec": {"k": 1, "k": 2}}]}"#;
        let e = parse_config(text, &mut |_| {}).unwrap_err().to_string();
        assert!(
            e.starts_with(r#"resources[2].spec.k: duplicate key "k""#),
            "{e}"
        );
    }
}
