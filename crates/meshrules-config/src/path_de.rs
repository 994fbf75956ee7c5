//! Deserializing a `serde_json::Value` while remembering where a failure happened, so a bad
//! field is reported by its JSON path (`spec.http[2].timeout`).
//!
//! serde_path_to_error does the same by wrapping another deserializer and every visitor,
//! which builds each config type's serde code twice over: measured, it was 81 KB of the
//! 1,043 KB filter after wasm-opt. Here the path is added to the error on the way out
//! instead, one map key or list index per level, so the types' code is built once.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;

use crate::HttpRoute;

/// A failure and where in the value it happened. Boxed: every `Result` of the types' serde
/// code carries it, and one pointer moves in a fraction of the code three words take
/// (bench/size_levers.md).
#[derive(Debug, Clone)]
pub struct PathError(Box<Failure>);

#[derive(Debug, Clone)]
struct Failure {
    /// Innermost first: segments are added as the error leaves each level.
    segments: Vec<Segment>,
    message: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

impl PathError {
    // Out of line, as the other non-generic halves below: the types' serde code is generic
    // over each field's type, so whatever of this module it inlines is built once per field.
    #[inline(never)]
    fn at(mut self, segment: Segment) -> Self {
        self.0.segments.push(segment);
        self
    }

    /// The path in serde_path_to_error's notation: `a.b[0].c`, `.` for the value itself.
    pub fn path(&self) -> String {
        render_path(&self.0.segments)
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Where the failure is, outermost first.
    pub(crate) fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.0.segments.iter().rev()
    }

    /// Removes from `value` what failed, so that reading it again can go on to the next
    /// problem: the member named by the innermost key, or, for a bad list element, the whole
    /// list (removing an element would renumber the later ones in later messages). `false`
    /// when the failure is the value itself.
    pub(crate) fn prune(&self, value: &mut Value) -> bool {
        let segments = &self.0.segments;
        let keep = segments
            .iter()
            .position(|s| matches!(s, Segment::Key(_)))
            .map(|innermost_key| innermost_key + 1);
        let Some(depth) = keep else {
            return false;
        };
        // Outermost first, down to the object holding the key to remove.
        let mut path = segments[depth..].iter().rev();
        let mut node = value;
        for segment in path.by_ref() {
            node = match (segment, node) {
                (Segment::Key(k), Value::Object(map)) => match map.get_mut(k) {
                    Some(v) => v,
                    None => return false,
                },
                (Segment::Index(i), Value::Array(items)) => match items.get_mut(*i) {
                    Some(v) => v,
                    None => return false,
                },
                _ => return false,
            };
        }
        match (&segments[depth - 1], node) {
            (Segment::Key(k), Value::Object(map)) => map.remove(k).is_some(),
            _ => false,
        }
    }
}

/// Renders innermost-first segments as `a.b[0].c`, `.` when there are none.
pub(crate) fn render_path(segments: &[Segment]) -> String {
    if segments.is_empty() {
        return ".".to_string();
    }
    let mut out = String::new();
    for segment in segments.iter().rev() {
        match segment {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path(), self.0.message)
    }
}

impl std::error::Error for PathError {}

impl de::Error for PathError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PathError(Box::new(Failure {
            segments: Vec::new(),
            message: msg.to_string(),
        }))
    }

    // serde's texts, but `Unexpected` printed by `unexpected_text`.
    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid type: {}, expected {exp}",
            unexpected_text(&unexp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid value: {}, expected {exp}",
            unexpected_text(&unexp)
        ))
    }
}

/// serde's `Display` of `Unexpected`, with a float printed by [`crate::number`]: serde's
/// prints it with core's float formatting, which is 20 KB of the module.
fn unexpected_text(unexp: &de::Unexpected) -> String {
    use de::Unexpected::*;
    match *unexp {
        Bool(b) => format!("boolean `{b}`"),
        Unsigned(i) => format!("integer `{i}`"),
        Signed(i) => format!("integer `{i}`"),
        Float(f) => {
            let text = crate::number(f);
            // serde marks a float that printed without a decimal point (`70000.0`).
            let point = if f.is_finite() && !text.contains(['.', 'e']) {
                ".0"
            } else {
                ""
            };
            format!("floating point `{text}{point}`")
        }
        Char(c) => format!("character `{c}`"),
        Str(s) => format!("string {s:?}"),
        Other(other) => other.to_string(),
        Bytes(_) => "byte array".to_string(),
        Unit => "unit value".to_string(),
        Option => "Option value".to_string(),
        NewtypeStruct => "newtype struct".to_string(),
        Seq => "sequence".to_string(),
        Map => "map".to_string(),
        Enum => "enum".to_string(),
        UnitVariant => "unit variant".to_string(),
        NewtypeVariant => "newtype variant".to_string(),
        TupleVariant => "tuple variant".to_string(),
        StructVariant => "struct variant".to_string(),
    }
}

/// A JSON value kept as it is, to be read later by itself (a route, so that its problems are
/// its own). Read from a `Value` it is moved, not rebuilt: serde_json's `Value` impl would copy
/// the whole subtree at every level that keeps one (a configuration's routes were copied four
/// times on their way to the route parser).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Raw(pub Value);

impl std::ops::Deref for Raw {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0
    }
}

/// The newtype name by which [`TreeDe`] recognizes a [`Raw`] (serde_json's `RawValue` uses the
/// same kind of token): serde gives a `Deserialize` impl no other way to take the value whole.
const RAW: &str = "$meshrules::Raw";

thread_local! {
    /// Where [`TreeDe`] leaves the value for the [`Raw`] being read: the value is handed over
    /// out of band, the visitor only told to take it.
    static HANDOFF: std::cell::Cell<Option<Value>> = const { std::cell::Cell::new(None) };
}

impl<'de> de::Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_newtype_struct(RAW, RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    /// From [`TreeDe`]: the value is in [`HANDOFF`].
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw(HANDOFF.with(|h| h.take()).unwrap_or(Value::Null)))
    }

    /// From any other deserializer: read as serde_json reads a `Value`.
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        de::Deserialize::deserialize(d).map(Raw)
    }
}

/// A JSON value as the configuration reader builds it: strings and member names borrowed from
/// the text where they have no escape, so that reading a member name or a string that the
/// types copy anyway (or only compare, as names and enum values) allocates nothing. Members
/// are sorted by name, as in serde_json's `Value` (a `BTreeMap`), so that problems are found
/// in the same order; a `Vec` of them takes one allocation where a `BTreeMap` takes a node
/// and its bookkeeping.
#[derive(Debug)]
pub(crate) enum Tree<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(Cow<'a, str>),
    Array(Vec<Tree<'a>>),
    Object(Vec<(Cow<'a, str>, Tree<'a>)>),
}

impl Tree<'_> {
    /// The value a [`Raw`] keeps.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(b),
            Tree::Number(n) => Value::Number(n),
            Tree::Str(s) => Value::String(s.into_owned()),
            Tree::Array(items) => Value::Array(items.into_iter().map(Tree::into_value).collect()),
            Tree::Object(members) => {
                // Inserted one by one: collecting would build a sort into the module.
                let mut map = serde_json::Map::new();
                for (k, v) in members {
                    map.insert(k.into_owned(), v.into_value());
                }
                Value::Object(map)
            }
        }
    }

    /// A kept value to be read into its types: its strings moved, not copied.
    fn from_value(value: Value) -> Tree<'static> {
        match value {
            Value::Null => Tree::Null,
            Value::Bool(b) => Tree::Bool(b),
            Value::Number(n) => Tree::Number(n),
            Value::String(s) => Tree::Str(Cow::Owned(s)),
            Value::Array(items) => Tree::Array(items.into_iter().map(Tree::from_value).collect()),
            Value::Object(map) => Tree::Object(
                map.into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Tree::from_value(v)))
                    .collect(),
            ),
        }
    }
}

/// Deserializes `T` from `value`, naming the failing field's path in the error.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, PathError> {
    from_tree(Tree::from_value(value))
}

/// [`from_value`] for a value read by the configuration reader. Every type is read through
/// this one deserializer: each other one would build the types' serde code again.
pub(crate) fn from_tree<T: DeserializeOwned>(tree: Tree<'_>) -> Result<T, PathError> {
    T::deserialize(TreeDe(tree))
}

/// The newtype name by which [`TreeDe`] recognizes an [`HttpRouteEntry`]: its route is read
/// from the tree by itself, its failure kept instead of returned.
pub(crate) const ROUTE: &str = "$meshrules::HttpRouteEntry";

thread_local! {
    /// Where [`TreeDe`] leaves the route read for the [`HttpRouteEntry`] being read; boxed,
    /// as moving a whole route in and out of the cell took more than the allocation.
    pub(crate) static ROUTE_HANDOFF: std::cell::Cell<Option<Box<Result<HttpRoute, PathError>>>> =
        const { std::cell::Cell::new(None) };
}

struct TreeDe<'a>(Tree<'a>);

impl TreeDe<'_> {
    #[inline(never)]
    fn invalid(&self, expected: &dyn de::Expected) -> PathError {
        de::Error::invalid_type(unexpected(&self.0), expected)
    }
}

/// Each typed request calls only the visitor method that can succeed, as serde_json's own
/// `Value` deserializer does: calling any visitor method from anywhere would build every
/// visitor's every method.
macro_rules! number {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
            match self.0 {
                Tree::Number(n) => number(n, visitor),
                _ => Err(self.invalid(&visitor)),
            }
        }
    )*};
}

macro_rules! string {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
            match self.0 {
                Tree::Str(s) => string(s, visitor),
                _ => Err(self.invalid(&visitor)),
            }
        }
    )*};
}

fn number<'de, V: Visitor<'de>>(n: serde_json::Number, visitor: V) -> Result<V::Value, PathError> {
    if let Some(u) = n.as_u64() {
        visitor.visit_u64(u)
    } else if let Some(i) = n.as_i64() {
        visitor.visit_i64(i)
    } else {
        visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Copied only if the type keeps it. Always by `visit_str`: offering an owned string too would
/// build each visitor's `visit_string` as well, for the few strings that had an escape.
fn string<'de, V: Visitor<'de>>(s: Cow<'_, str>, visitor: V) -> Result<V::Value, PathError> {
    visitor.visit_str(&s)
}

fn seq<'de, V: Visitor<'de>>(items: Vec<Tree<'_>>, visitor: V) -> Result<V::Value, PathError> {
    let len = items.len();
    let mut seq = SeqDe {
        items: items.into_iter().enumerate(),
    };
    let out = visitor.visit_seq(&mut seq)?;
    match seq.items.len() {
        0 => Ok(out),
        _ => Err(too_long(len)),
    }
}

#[inline(never)]
fn too_long(len: usize) -> PathError {
    de::Error::invalid_length(len, &"fewer elements in array")
}

impl<'de> de::Deserializer<'de> for TreeDe<'_> {
    type Error = PathError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Tree::Null => visitor.visit_unit(),
            Tree::Bool(b) => visitor.visit_bool(b),
            Tree::Number(n) => number(n, visitor),
            Tree::Str(s) => string(s, visitor),
            Tree::Array(items) => seq(items, visitor),
            Tree::Object(map) => visitor.visit_map(MapDe::new(map)),
        }
    }

    number! { deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
    deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    deserialize_f32 deserialize_f64 }

    string! { deserialize_char deserialize_str deserialize_string deserialize_identifier }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Tree::Bool(b) => visitor.visit_bool(b),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Tree::Null => visitor.visit_unit(),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Tree::Array(items) => seq(items, visitor),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Tree::Object(map) => visitor.visit_map(MapDe::new(map)),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Tree::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        if name == RAW {
            HANDOFF.with(|h| h.set(Some(self.0.into_value())));
            return visitor.visit_unit();
        }
        if name == ROUTE {
            let route = Box::new(from_tree::<HttpRoute>(self.0));
            ROUTE_HANDOFF.with(|h| h.set(Some(route)));
            return visitor.visit_unit();
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        visitor.visit_unit()
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        // Only unit variants written as strings occur in the Istio API.
        match &self.0 {
            Tree::Str(s) => {
                let de: StrDeserializer<'_, PathError> = s.as_ref().into_deserializer();
                visitor.visit_enum(de)
            }
            _ => Err(self.invalid(&"a string")),
        }
    }

    forward_to_deserialize_any! { bytes byte_buf }
}

fn unexpected<'t>(v: &'t Tree<'_>) -> de::Unexpected<'t> {
    match v {
        Tree::Null => de::Unexpected::Unit,
        Tree::Bool(b) => de::Unexpected::Bool(*b),
        Tree::Number(_) => de::Unexpected::Other("number"),
        Tree::Str(s) => de::Unexpected::Str(s),
        Tree::Array(_) => de::Unexpected::Seq,
        Tree::Object(_) => de::Unexpected::Map,
    }
}

struct SeqDe<'a> {
    items: std::iter::Enumerate<std::vec::IntoIter<Tree<'a>>>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = PathError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, PathError> {
        match self.items.next() {
            Some((i, v)) => seed
                .deserialize(TreeDe(v))
                .map(Some)
                .map_err(|e| e.at(Segment::Index(i))),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a> {
    entries: std::vec::IntoIter<(Cow<'a, str>, Tree<'a>)>,
    /// The last key read, and its value until it is read.
    key: Cow<'a, str>,
    value: Option<Tree<'a>>,
}

impl<'a> MapDe<'a> {
    fn new(map: Vec<(Cow<'a, str>, Tree<'a>)>) -> Self {
        MapDe {
            entries: map.into_iter(),
            key: Cow::Borrowed(""),
            value: None,
        }
    }

    /// A failure at the last key read (an unknown field there, or a bad value).
    #[inline(never)]
    fn keyed(&mut self, e: PathError) -> PathError {
        e.at(Segment::Key(std::mem::take(&mut self.key).into_owned()))
    }

    #[inline(never)]
    fn take_value(&mut self) -> Result<Tree<'a>, PathError> {
        self.value
            .take()
            .ok_or_else(|| de::Error::custom("a map value was read before its key"))
    }
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = PathError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, PathError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.key = key;
        self.value = Some(value);
        let de: StrDeserializer<'_, PathError> = self.key.as_ref().into_deserializer();
        seed.deserialize(de).map(Some).map_err(|e| self.keyed(e))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, PathError> {
        let value = self.take_value()?;
        seed.deserialize(TreeDe(value)).map_err(|e| self.keyed(e))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default)]
        items: Vec<Inner>,
        #[serde(default)]
        extra: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
    }

    fn error(v: Value) -> String {
        match from_value::<Outer>(v) {
            Ok(o) => format!("parsed {o:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_wrong_type_deep_in_a_list_is_named_by_its_path() {
        let e = error(json!({"name": "x", "items": [{"port": 1}, {"port": "80"}]}));
        assert!(
            e.starts_with("items[1].port: invalid type: string \"80\""),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_field_is_named_at_its_own_path() {
        let e = error(json!({"name": "x", "items": [{"prot": 1}]}));
        assert!(e.starts_with("items[0].prot: unknown field `prot`"), "{e}");
    }

    #[test]
    fn a_missing_field_is_named_at_its_parent() {
        assert!(error(json!({})).starts_with(".: missing field `name`"));
        let e = error(json!({"name": "x", "items": [{}]}));
        assert!(e.starts_with("items[0]: missing field `port`"), "{e}");
    }

    #[test]
    fn unexpected_values_are_described_as_serde_describes_them() {
        use de::Unexpected::*;
        for u in [
            Bool(true),
            Unsigned(70000),
            Signed(-1),
            Float(1.5),
            Float(70000.0),
            Float(-0.0),
            Char('x'),
            Str("a\"b"),
            Bytes(b"x"),
            Unit,
            Option,
            NewtypeStruct,
            Seq,
            Map,
            Enum,
            UnitVariant,
            NewtypeVariant,
            TupleVariant,
            StructVariant,
            Other("number"),
        ] {
            assert_eq!(unexpected_text(&u), u.to_string());
        }
    }

    #[test]
    fn out_of_range_numbers_and_nulls_are_handled_like_serde_json() {
        let e = error(json!({"name": "x", "items": [{"port": 70000}]}));
        assert!(
            e.starts_with("items[0].port: invalid value: integer `70000`"),
            "{e}"
        );
        let o = from_value::<Outer>(json!({"name": "x", "extra": null}));
        assert!(matches!(o, Ok(Outer { extra: None, .. })), "{o:?}");
    }

    #[derive(Debug, Deserialize)]
    struct Kept {
        raw: Raw,
        #[serde(default)]
        raws: Vec<Raw>,
        maybe: Option<Raw>,
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_raw_value_is_taken_whole_from_a_value_and_from_json_text() {
        let v = json!({"raw": {"a": [1, {"b": "c"}]}, "raws": [true, null], "maybe": null});
        let from_value = from_value::<Kept>(v.clone()).unwrap();
        let from_text: Kept = serde_json::from_str(&v.to_string()).unwrap();
        for kept in [from_value, from_text] {
            assert_eq!(kept.raw.0, json!({"a": [1, {"b": "c"}]}));
            assert_eq!(kept.raws, [Raw(json!(true)), Raw(Value::Null)]);
            assert_eq!(kept.maybe, None);
        }
    }
}
