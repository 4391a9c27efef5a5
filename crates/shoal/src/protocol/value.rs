//! `Value`: one argument of a Socket.IO event.
//!
//! Socket.IO payloads are JSON plus binary buffers anywhere in the tree. serde_json's
//! `Value` has no place for bytes, so shoal carries its own tree with a `Binary` leaf.
//! Conversions from and to serde types go through serde_json (binary becomes an array
//! of numbers there, as `JSON.stringify` of a Buffer would not; use `Value` directly to
//! keep bytes).

use bytes::Bytes;
use indexmap::IndexMap;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// One JSON-or-binary value, as carried in event arguments and acks.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    #[default]
    /// `null` (and a missing argument).
    Null,
    /// A boolean.
    Bool(bool),
    /// A number, as JSON has it.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// Binary data (a `Buffer`, `ArrayBuffer` or `Blob` on the client), sent as an attachment.
    Binary(Bytes),
    /// An array.
    Array(Vec<Value>),
    /// Keys keep their order, as in JavaScript.
    Object(IndexMap<String, Value>),
}

impl Value {
    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// The boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// The number as an `i64`, if it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }
    /// The number as a `u64`, if it is a non-negative integer in range.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }
    /// The number as an `f64`, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    }
    /// The elements, if it is an array.
    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// The entries, if it is an object.
    pub fn as_object(&self) -> Option<&IndexMap<String, Value>> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }
    /// The bytes, if it is binary.
    pub fn as_binary(&self) -> Option<&Bytes> {
        match self {
            Value::Binary(b) => Some(b),
            _ => None,
        }
    }
    /// True if it is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    /// `obj.get("key")` for objects, `None` otherwise.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|o| o.get(key))
    }

    /// True if a binary leaf appears anywhere in the tree.
    pub fn has_binary(&self) -> bool {
        match self {
            Value::Binary(_) => true,
            Value::Array(a) => a.iter().any(Value::has_binary),
            Value::Object(o) => o.values().any(Value::has_binary),
            _ => false,
        }
    }

    /// Builds a `Value` from any serde type.
    pub fn from_serde<T: serde::Serialize>(value: &T) -> Result<Value, serde_json::Error> {
        Ok(serde_json::to_value(value)?.into())
    }

    /// Reads this value as any serde type (binary leaves become arrays of numbers).
    pub fn to_serde<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self.to_json())
    }

    /// Lossy view as serde_json (binary leaves become arrays of numbers).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::Value::Number(n.clone()),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Binary(b) => serde_json::Value::Array(b.iter().map(|x| (*x).into()).collect()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_json).collect()),
            Value::Object(o) => serde_json::Value::Object(
                o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            ),
        }
    }

    /// Writes JSON text; each binary leaf becomes a placeholder `{"_placeholder":true,"num":N}`
    /// and its bytes are pushed to `attachments`.
    pub fn write_json(&self, out: &mut String, attachments: &mut Vec<Bytes>) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(n) => {
                use std::fmt::Write;
                let _ = write!(out, "{n}");
            }
            Value::String(s) => write_json_string(s, out),
            Value::Binary(b) => {
                use std::fmt::Write;
                let _ = write!(out, "{{\"_placeholder\":true,\"num\":{}}}", attachments.len());
                attachments.push(b.clone());
            }
            Value::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out, attachments);
                }
                out.push(']');
            }
            Value::Object(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(k, out);
                    out.push(':');
                    v.write_json(out, attachments);
                }
                out.push('}');
            }
        }
    }

    /// Replaces placeholders with the attachments they point at. Fails on a placeholder
    /// whose index is out of range.
    pub(crate) fn fill_placeholders(&mut self, attachments: &[Bytes]) -> Result<(), ()> {
        match self {
            Value::Array(a) => {
                for v in a {
                    v.fill_placeholders(attachments)?;
                }
                Ok(())
            }
            Value::Object(o) => {
                if o.len() == 2 && o.get("_placeholder") == Some(&Value::Bool(true)) {
                    if let Some(num) = o.get("num") {
                        let idx = num.as_u64().ok_or(())? as usize;
                        let bytes = attachments.get(idx).ok_or(())?.clone();
                        *self = Value::Binary(bytes);
                        return Ok(());
                    }
                }
                for v in o.values_mut() {
                    v.fill_placeholders(attachments)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Writes `s` as a JSON string literal.
pub fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

impl fmt::Display for Value {
    /// JSON text; binary leaves are shown as `<Buffer N bytes>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let mut att = Vec::new();
        self.write_json(&mut out, &mut att);
        f.write_str(&out)
    }
}

// ---- parsing -------------------------------------------------------------------------

/// Parses JSON text into a `Value` (no placeholder substitution). serde_json bounds the
/// nesting depth (128), so deeply nested input is an error, not a stack overflow.
pub fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = ValueSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => n.serialize(s),
            Value::String(v) => s.serialize_str(v),
            Value::Binary(b) => s.serialize_bytes(b),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Binary(Bytes::copy_from_slice(v)))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Binary(Bytes::from(v)))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = IndexMap::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(ValueSeed)?;
            // JSON.parse keeps the last duplicate key, in the position of the first.
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

// ---- conversions ---------------------------------------------------------------------

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n),
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(a) => Value::Array(a.into_iter().map(Into::into).collect()),
            serde_json::Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, v.into())).collect())
            }
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::String(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::String(v.clone())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value { Value::Number(v.into()) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
    }
}
impl From<Bytes> for Value {
    fn from(v: Bytes) -> Value {
        Value::Binary(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Binary(Bytes::from(v))
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

/// Anything that can be the argument list of an emit or an ack: `()`, one value
/// (anything `Into<Value>`), a `Vec<Value>`, or a tuple of up to four values.
pub trait IntoArgs {
    /// The argument list.
    fn into_args(self) -> Vec<Value>;
}
impl IntoArgs for () {
    fn into_args(self) -> Vec<Value> {
        Vec::new()
    }
}
impl IntoArgs for Vec<Value> {
    fn into_args(self) -> Vec<Value> {
        self
    }
}
/// Any single value is a list of one argument.
impl<T: Into<Value>> IntoArgs for T {
    fn into_args(self) -> Vec<Value> {
        vec![self.into()]
    }
}
impl<A: Into<Value>> IntoArgs for (A,) {
    fn into_args(self) -> Vec<Value> {
        vec![self.0.into()]
    }
}
impl<A: Into<Value>, B: Into<Value>> IntoArgs for (A, B) {
    fn into_args(self) -> Vec<Value> {
        vec![self.0.into(), self.1.into()]
    }
}
impl<A: Into<Value>, B: Into<Value>, C: Into<Value>> IntoArgs for (A, B, C) {
    fn into_args(self) -> Vec<Value> {
        vec![self.0.into(), self.1.into(), self.2.into()]
    }
}
impl<A: Into<Value>, B: Into<Value>, C: Into<Value>, D: Into<Value>> IntoArgs for (A, B, C, D) {
    fn into_args(self) -> Vec<Value> {
        vec![self.0.into(), self.1.into(), self.2.into(), self.3.into()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_json_and_keeps_key_order() {
        let text = r#"{"b":1,"a":[true,null,"x\n\"y",1.5,-3],"c":{}}"#;
        let v = parse_json(text).unwrap();
        let mut out = String::new();
        v.write_json(&mut out, &mut Vec::new());
        assert_eq!(out, text);
    }

    #[test]
    fn binary_becomes_placeholders_and_back() {
        let v = Value::Array(vec![
            Value::Binary(Bytes::from_static(b"ab")),
            Value::Object([("x".to_string(), Value::Binary(Bytes::from_static(b"c")))].into()),
        ]);
        let mut out = String::new();
        let mut att = Vec::new();
        v.write_json(&mut out, &mut att);
        assert_eq!(out, r#"[{"_placeholder":true,"num":0},{"x":{"_placeholder":true,"num":1}}]"#);
        let mut back = parse_json(&out).unwrap();
        back.fill_placeholders(&att).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn placeholder_out_of_range_is_an_error() {
        let mut v = parse_json(r#"[{"_placeholder":true,"num":3}]"#).unwrap();
        assert!(v.fill_placeholders(&[]).is_err());
        let mut v = parse_json(r#"[{"_placeholder":true,"num":"0"}]"#).unwrap();
        assert!(v.fill_placeholders(&[Bytes::new()]).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(100_000);
        assert!(parse_json(&text).is_err());
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        write_json_string("a\u{1}b\u{7f}é", &mut out);
        assert_eq!(out, "\"a\\u0001b\u{7f}é\"");
        assert_eq!(parse_json(&out).unwrap(), Value::from("a\u{1}b\u{7f}é"));
    }

    /// Found by the `socket_packet` fuzz target: without serde_json's `float_roundtrip`, a
    /// long number was read 1 ULP off (JSON.parse rounds correctly), so shoal relayed a
    /// different number than the client sent, and its own output read back differently.
    #[test]
    fn long_numbers_are_read_correctly_rounded() {
        let text = format!("4{}12.3", "4".repeat(107));
        let v = parse_json(&text).unwrap();
        assert_eq!(v.as_f64(), Some(text.parse::<f64>().unwrap()));
        let mut out = String::new();
        v.write_json(&mut out, &mut Vec::new());
        assert_eq!(parse_json(&out).unwrap(), v);
    }
}
