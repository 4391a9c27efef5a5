//! Reading event arguments as serde types, straight from the [`Value`] tree (no copy
//! through serde_json), for the typed extractors of the socket layer.
//!
//! Binary leaves are seen as bytes by `deserialize_any` (so a field of type
//! `bytes::Bytes` or [`Value`] keeps them) and as a sequence of numbers by
//! `deserialize_seq` (so a `Vec<u8>` field reads them too).
//!
//! Which arguments a type reads: a tuple, a tuple struct or a sequence (`Vec`, array)
//! reads the whole argument list; any other type reads the first argument (a missing
//! argument reads as `null`, so `Option<T>` and `()` accept none).

use super::Value;
use serde::de::value::{Error, MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, EnumAccess, IntoDeserializer, VariantAccess, Visitor};
use serde::forward_to_deserialize_any;
use std::cell::Cell;

/// Reads `T` from an event's (or an ack's) arguments, by the rule of the module docs.
pub(crate) fn from_args<T: DeserializeOwned>(args: &[Value]) -> Result<T, Error> {
    static NULL: Value = Value::Null;
    if reads_whole_list::<T>() {
        T::deserialize(ArgList(args))
    } else {
        T::deserialize(args.first().unwrap_or(&NULL))
    }
}

/// True if `T` asks its deserializer for a tuple or a sequence.
fn reads_whole_list<T: DeserializeOwned>() -> bool {
    let seen = Cell::new(false);
    let _ = T::deserialize(Probe(&seen));
    seen.get()
}

/// A deserializer that only records whether a tuple or a sequence was asked for.
struct Probe<'a>(&'a Cell<bool>);

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Error;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("probe"))
    }
    fn deserialize_seq<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        self.0.set(true);
        Err(de::Error::custom("probe"))
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Error> {
        self.0.set(true);
        Err(de::Error::custom("probe"))
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, _: usize, _: V) -> Result<V::Value, Error> {
        self.0.set(true);
        Err(de::Error::custom("probe"))
    }
    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct map struct enum identifier ignored_any
    }
}

/// The argument list as one sequence.
struct ArgList<'a>(&'a [Value]);

impl<'de> Deserializer<'de> for ArgList<'de> {
    type Error = Error;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut seq = SeqDeserializer::new(self.0.iter());
        let value = visitor.visit_seq(&mut seq)?;
        seq.end()?;
        Ok(value)
    }
    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, Error> for &'de Value {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for &'de Value {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Binary(b) => visitor.visit_borrowed_bytes(b),
            Value::Array(a) => {
                let mut seq = SeqDeserializer::new(a.iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(o) => {
                let mut map = MapDeserializer::new(o.iter().map(|(k, v)| (k.as_str(), v)));
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Binary(b) => {
                let mut seq = SeqDeserializer::new(b.iter().copied());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(self, _: &'static str, _: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        match self {
            // A unit variant: "Name".
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            // Any other variant: {"Name": content}, as serde_json writes it.
            Value::Object(o) if o.len() == 1 => {
                let (name, content) = o.iter().next().expect("one entry");
                visitor.visit_enum(Variant { name, content })
            }
            _ => Err(de::Error::invalid_type(unexpected(self), &"a string or an object with one key")),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct tuple tuple_struct map struct identifier ignored_any
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Binary(b) => de::Unexpected::Bytes(b),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

/// An enum variant written `{"Name": content}`.
struct Variant<'de> {
    name: &'de str,
    content: &'de Value,
}

impl<'de> EnumAccess<'de> for Variant<'de> {
    type Error = Error;
    type Variant = &'de Value;
    fn variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, &'de Value), Error> {
        let name = seed.deserialize(self.name.into_deserializer())?;
        Ok((name, self.content))
    }
}

impl<'de> VariantAccess<'de> for &'de Value {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self)
    }
    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::value::parse_json;
    use bytes::Bytes;
    use serde::Deserialize;

    fn args(json: &str) -> Vec<Value> {
        match parse_json(json).unwrap() {
            Value::Array(a) => a,
            _ => panic!("not a list"),
        }
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Chat {
        room: String,
        text: String,
        #[serde(default)]
        urgent: bool,
    }

    #[test]
    fn a_struct_reads_the_first_argument() {
        let chat: Chat = from_args(&args(r#"[{"room":"a","text":"hi"}, 2]"#)).unwrap();
        assert_eq!(chat, Chat { room: "a".into(), text: "hi".into(), urgent: false });
    }

    #[test]
    fn a_tuple_reads_every_argument() {
        let (a, b): (String, u32) = from_args(&args(r#"["x", 7]"#)).unwrap();
        assert_eq!((a.as_str(), b), ("x", 7));
        let all: Vec<Value> = from_args(&args(r#"[1, "two", null]"#)).unwrap();
        assert_eq!(all.len(), 3);
        // A tuple with the wrong count of arguments is an error, not a guess.
        assert!(from_args::<(String, u32)>(&args(r#"["x"]"#)).is_err());
        assert!(from_args::<(String,)>(&args(r#"["x", 1]"#)).is_err());
    }

    #[test]
    fn missing_argument_reads_as_null() {
        assert_eq!(from_args::<Option<String>>(&[]).unwrap(), None);
        from_args::<()>(&[]).unwrap();
        assert!(from_args::<String>(&[]).is_err());
    }

    #[test]
    fn wrong_shape_says_what_is_wrong() {
        let e = from_args::<Chat>(&args(r#"[{"room":"a"}]"#)).unwrap_err();
        assert!(e.to_string().contains("missing field `text`"), "{e}");
        let e = from_args::<Chat>(&args(r#"["hello"]"#)).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }

    #[test]
    fn binary_reads_as_bytes_or_numbers() {
        #[derive(Deserialize)]
        struct Upload {
            name: String,
            file: Bytes,
            copy: Vec<u8>,
            raw: Value,
        }
        let blob = Value::Binary(Bytes::from_static(b"\x01\x02"));
        let arg = Value::Object(
            [("name", Value::from("f")), ("file", blob.clone()), ("copy", blob.clone()), ("raw", blob.clone())]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        );
        let up: Upload = from_args(&[arg]).unwrap();
        assert_eq!(up.name, "f");
        assert_eq!(&up.file[..], b"\x01\x02");
        assert_eq!(up.copy, vec![1, 2]);
        assert_eq!(up.raw, blob);
    }

    #[test]
    fn enums_and_numbers() {
        #[derive(Deserialize, Debug, PartialEq)]
        enum Move {
            Stop,
            Go { x: i32, y: f64 },
        }
        assert_eq!(from_args::<Move>(&args(r#"["Stop"]"#)).unwrap(), Move::Stop);
        assert_eq!(from_args::<Move>(&args(r#"[{"Go":{"x":-3,"y":1.5}}]"#)).unwrap(), Move::Go { x: -3, y: 1.5 });
        assert!(from_args::<u8>(&args("[300]")).is_err());
    }
}
