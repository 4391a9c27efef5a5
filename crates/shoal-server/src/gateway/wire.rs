//! The bodies exchanged with the app and the API's clients: a [`Value`] as JSON (binary
//! as `{"$b64": "<base64>"}`) or as MessagePack (binary as `bin`), both ways. Decoding
//! is bounded in depth (serde_json's 128 levels, the same for MessagePack) and never
//! panics on what a peer sends.

use super::super::config::file::Encoding;
use base64::Engine as _;
use bytes::Bytes;
use shoal::Value;

/// The key of a binary value in JSON.
pub const B64_KEY: &str = "$b64";
const MAX_DEPTH: usize = 128;

pub const JSON: &str = "application/json";
pub const MSGPACK: &str = "application/msgpack";

/// `value` as JSON text, binary as `{"$b64": ...}`.
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => serde_json::Value::Number(n.clone()),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Binary(b) => {
            let mut m = serde_json::Map::new();
            m.insert(B64_KEY.to_owned(), serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b)));
            serde_json::Value::Object(m)
        }
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Object(map) => serde_json::Value::Object(map.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

/// The inverse of [`to_json`]: a one-key object `{"$b64": "<base64>"}` becomes binary.
pub fn from_json(json: serde_json::Value) -> Result<Value, String> {
    Ok(match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Number(n),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(items) => Value::Array(items.into_iter().map(from_json).collect::<Result<_, _>>()?),
        serde_json::Value::Object(map) => {
            if map.len() == 1 {
                if let Some(serde_json::Value::String(b64)) = map.get(B64_KEY) {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| format!("{B64_KEY}: not base64 ({e})"))?;
                    return Ok(Value::Binary(Bytes::from(bytes)));
                }
            }
            Value::Object(map.into_iter().map(|(k, v)| from_json(v).map(|v| (k, v))).collect::<Result<_, _>>()?)
        }
    })
}

fn to_msgpack(value: &Value) -> rmpv::Value {
    match value {
        Value::Null => rmpv::Value::Nil,
        Value::Bool(b) => rmpv::Value::Boolean(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                rmpv::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                rmpv::Value::from(i)
            } else {
                rmpv::Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => rmpv::Value::String(s.as_str().into()),
        Value::Binary(b) => rmpv::Value::Binary(b.to_vec()),
        Value::Array(items) => rmpv::Value::Array(items.iter().map(to_msgpack).collect()),
        Value::Object(map) => rmpv::Value::Map(map.iter().map(|(k, v)| (rmpv::Value::String(k.as_str().into()), to_msgpack(v))).collect()),
    }
}

fn from_msgpack(value: rmpv::Value) -> Result<Value, String> {
    Ok(match value {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => Value::Bool(b),
        rmpv::Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::Null,
        },
        rmpv::Value::F32(f) => Value::from(f64::from(f)),
        rmpv::Value::F64(f) => Value::from(f),
        rmpv::Value::String(s) => Value::String(s.into_str().ok_or("a MessagePack string that is not UTF-8")?),
        rmpv::Value::Binary(b) => Value::Binary(Bytes::from(b)),
        rmpv::Value::Array(items) => Value::Array(items.into_iter().map(from_msgpack).collect::<Result<_, _>>()?),
        rmpv::Value::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        rmpv::Value::String(s) => s.into_str().ok_or("a MessagePack key that is not UTF-8")?,
                        other => other.to_string(),
                    };
                    from_msgpack(v).map(|v| (key, v))
                })
                .collect::<Result<_, String>>()?,
        ),
        rmpv::Value::Ext(..) => return Err("MessagePack extension types are not accepted".into()),
    })
}

/// A body in `encoding`, and its content type.
pub fn encode(value: &Value, encoding: Encoding) -> (Bytes, &'static str) {
    match encoding {
        Encoding::Json => (Bytes::from(to_json(value).to_string()), JSON),
        Encoding::Msgpack => {
            let mut out = Vec::new();
            // Writing into a Vec cannot fail.
            let _ = rmpv::encode::write_value(&mut out, &to_msgpack(value));
            (Bytes::from(out), MSGPACK)
        }
    }
}

/// A body the peer sent: MessagePack if its content type says so, JSON otherwise.
pub fn decode(body: &[u8], content_type: Option<&str>) -> Result<Value, String> {
    let msgpack = content_type.is_some_and(|t| t.trim_start().starts_with(MSGPACK) || t.contains("msgpack"));
    if msgpack {
        let mut reader = body;
        let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH).map_err(|e| format!("not MessagePack: {e}"))?;
        if !reader.is_empty() {
            return Err("bytes after the MessagePack value".into());
        }
        from_msgpack(value)
    } else {
        let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        from_json(json)
    }
}

/// An object from `(key, value)` pairs.
pub fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        object([
            ("text", Value::from("hé")),
            ("n", Value::from(-3i64)),
            ("big", Value::from(u64::MAX)),
            ("f", Value::from(1.5)),
            ("bin", Value::Binary(Bytes::from_static(&[0, 1, 255]))),
            ("list", Value::Array(vec![Value::Null, Value::Bool(true)])),
        ])
    }

    #[test]
    fn json_round_trip_with_binary_as_base64() {
        let (body, ct) = encode(&sample(), Encoding::Json);
        assert_eq!(ct, JSON);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains(r#""bin":{"$b64":"AAH/"}"#), "{text}");
        assert_eq!(decode(&body, Some(JSON)).unwrap(), sample());
    }

    #[test]
    fn msgpack_round_trip() {
        let (body, ct) = encode(&sample(), Encoding::Msgpack);
        assert_eq!(ct, MSGPACK);
        assert_eq!(decode(&body, Some(MSGPACK)).unwrap(), sample());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"<html>oops</html>", Some("text/html")).is_err());
        assert!(decode(b"\xa5ab", Some(MSGPACK)).is_err(), "cut short");
        assert!(decode(b"\x01\x02", Some(MSGPACK)).is_err(), "bytes after the value");
        assert!(decode(br#"{"$b64":"!!"}"#, None).is_err());
        let deep = "[".repeat(10_000);
        assert!(decode(deep.as_bytes(), None).is_err(), "too deep");
        let deep_mp = vec![0x91u8; 10_000];
        assert!(decode(&deep_mp, Some(MSGPACK)).is_err(), "too deep");
    }
}
