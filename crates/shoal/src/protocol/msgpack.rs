//! MessagePack as notepack.io writes and reads it, to and from the [`Value`] tree. Two
//! users share it: the msgpack parser of Socket.IO packets (`msgpack_packet.rs`, the
//! format of `socket.io-msgpack-parser`) and the Redis adapter's wire format (the
//! official `@socket.io/redis-adapter` encodes with notepack.io too). No I/O.
//!
//! Writing follows notepack: the smallest integer form (unsigned for non-negative
//! numbers), float64 for other numbers, str for strings, bin for bytes, maps with their
//! keys in order. Reading accepts any MessagePack, and is bounded because its input
//! comes from the network: nesting is at most [`MAX_DEPTH`], no declared length is
//! trusted beyond the bytes actually present (so nothing is allocated for a length the
//! input cannot hold), and the input must be exactly one value. Hostile input is an
//! error, never a panic.

use super::value::Value;
use bytes::Bytes;
use indexmap::IndexMap;
use std::fmt;

/// Deepest nesting of arrays and maps a reader accepts (as the JSON reader: 128).
pub const MAX_DEPTH: usize = 128;

/// Why bytes are not one acceptable MessagePack value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgpackError {
    /// The input ends inside a value (or a length promises more than it holds).
    Truncated,
    /// Bytes follow the value.
    TrailingBytes(usize),
    /// Arrays and maps nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The byte 0xc1, which MessagePack never uses.
    ReservedByte,
    /// A map key that is neither a string nor an integer.
    BadMapKey,
}

impl fmt::Display for MsgpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgpackError::Truncated => f.write_str("truncated MessagePack"),
            MsgpackError::TrailingBytes(n) => write!(f, "{n} trailing byte(s) after the MessagePack value"),
            MsgpackError::TooDeep => write!(f, "MessagePack nested deeper than {MAX_DEPTH}"),
            MsgpackError::ReservedByte => f.write_str("the reserved MessagePack byte 0xc1"),
            MsgpackError::BadMapKey => f.write_str("a MessagePack map key that is not a string or an integer"),
        }
    }
}
impl std::error::Error for MsgpackError {}

// ---- writing ------------------------------------------------------------------------------

/// Encodes a value as notepack.io does.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_value(v, &mut out);
    out
}

/// Appends the encoding of `v` to `out`.
pub fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                write_uint(u, out);
            } else if let Some(i) = n.as_i64() {
                write_negative(i, out);
            } else {
                out.push(0xcb);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        }
        Value::String(s) => write_str(s, out),
        Value::Binary(b) => {
            write_len(b.len(), [0, 0xc4, 0xc5, 0xc6], out);
            out.extend_from_slice(b);
        }
        Value::Array(a) => {
            write_len(a.len(), [0x90, 0, 0xdc, 0xdd], out);
            for x in a {
                write_value(x, out);
            }
        }
        Value::Object(o) => write_map(o.iter().map(|(k, v)| (k.as_str(), v)), o.len(), out),
    }
}

/// Appends a map of `len` entries (the packet encoder writes its map from fields).
pub(crate) fn write_map<'a>(entries: impl Iterator<Item = (&'a str, &'a Value)>, len: usize, out: &mut Vec<u8>) {
    write_len(len, [0x80, 0, 0xde, 0xdf], out);
    for (k, v) in entries {
        write_str(k, out);
        write_value(v, out);
    }
}

/// Appends a str.
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    write_len(s.len(), [0xa0, 0xd9, 0xda, 0xdb], out);
    out.extend_from_slice(s.as_bytes());
}

/// Appends a non-negative integer in its smallest form.
pub(crate) fn write_uint(u: u64, out: &mut Vec<u8>) {
    if u < 0x80 {
        out.push(u as u8);
    } else if u < 0x100 {
        out.extend_from_slice(&[0xcc, u as u8]);
    } else if u < 0x1_0000 {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u < 0x1_0000_0000 {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

/// Appends a negative integer in its smallest form.
fn write_negative(i: i64, out: &mut Vec<u8>) {
    if i >= -0x20 {
        out.push(i as i8 as u8);
    } else if i >= -0x80 {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= -0x8000 {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= -0x8000_0000 {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

/// A length header: `markers` are the fix form (0 when there is none), then the 8, 16
/// and 32-bit forms (0 when there is none). Lengths beyond 32 bits cannot occur: the
/// values written are in memory, and notepack refuses them too.
fn write_len(len: usize, markers: [u8; 4], out: &mut Vec<u8>) {
    let [fix, m8, m16, m32] = markers;
    let fix_max = if fix == 0xa0 { 32 } else { 16 };
    if fix != 0 && len < fix_max {
        out.push(fix | len as u8);
    } else if m8 != 0 && len < 0x100 {
        out.extend_from_slice(&[m8, len as u8]);
    } else if len < 0x1_0000 {
        out.push(m16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m32);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

// ---- reading ------------------------------------------------------------------------------

/// Decodes exactly one value. Extension types (notepack's old `undefined`, dates) read
/// as null; integer map keys as their decimal text; strings that are not UTF-8 with the
/// replacement character, as JavaScript reads them.
pub fn decode(bytes: &[u8]) -> Result<Value, MsgpackError> {
    let mut reader = Reader::new(bytes);
    let value = reader.value()?;
    reader.finish()?;
    Ok(value)
}

/// A cursor over MessagePack input; every read checks the bytes are there.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// The head of a map or array, or any other value.
pub(crate) enum Head {
    Map(usize),
    Other,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// Fails unless the whole input was read.
    pub(crate) fn finish(&self) -> Result<(), MsgpackError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(MsgpackError::TrailingBytes(n)),
        }
    }

    /// Reads one value at the top level.
    pub(crate) fn value(&mut self) -> Result<Value, MsgpackError> {
        self.read(0)
    }

    /// Reads a map header if one comes next (consuming it), or nothing.
    pub(crate) fn map_head(&mut self) -> Result<Head, MsgpackError> {
        let Some(&b) = self.bytes.get(self.pos) else { return Err(MsgpackError::Truncated) };
        let len = match b {
            0x80..=0x8f => {
                self.pos += 1;
                (b & 0x0f) as usize
            }
            0xde => {
                self.pos += 1;
                self.uint(2)? as usize
            }
            0xdf => {
                self.pos += 1;
                self.uint(4)? as usize
            }
            _ => return Ok(Head::Other),
        };
        self.check_count(len, 2)?;
        Ok(Head::Map(len))
    }

    /// Reads a map key (a string, or an integer as its decimal text).
    pub(crate) fn key(&mut self) -> Result<String, MsgpackError> {
        // Arrays and maps are never keys: refused before they are read.
        if matches!(self.bytes.get(self.pos), Some(0x80..=0x9f | 0xdc..=0xdf)) {
            return Err(MsgpackError::BadMapKey);
        }
        match self.read(MAX_DEPTH)? {
            Value::String(s) => Ok(s),
            Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
            _ => Err(MsgpackError::BadMapKey),
        }
    }

    /// True, consuming it, if the next value is `undefined` as notepack.io 2.2 writes it
    /// (fixext 1 of type 0): an absent field, unlike null.
    pub(crate) fn skip_undefined(&mut self) -> bool {
        if self.bytes.get(self.pos..self.pos + 2) == Some(&[0xd4, 0x00]) && self.bytes.len() >= self.pos + 3 {
            self.pos += 3;
            return true;
        }
        false
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MsgpackError> {
        let end = self.pos.checked_add(n).ok_or(MsgpackError::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(MsgpackError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, MsgpackError> {
        Ok(self.take(1)?[0])
    }

    /// A big-endian unsigned integer of `n` bytes (1, 2, 4 or 8).
    fn uint(&mut self, n: usize) -> Result<u64, MsgpackError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
    }

    /// A container of `count` items, each at least `min_bytes` long, must fit in what is
    /// left: a length is never trusted beyond the input.
    fn check_count(&self, count: usize, min_bytes: usize) -> Result<(), MsgpackError> {
        let left = self.bytes.len() - self.pos;
        if count.checked_mul(min_bytes).is_none_or(|need| need > left) {
            return Err(MsgpackError::Truncated);
        }
        Ok(())
    }

    fn read(&mut self, depth: usize) -> Result<Value, MsgpackError> {
        let b = self.byte()?;
        Ok(match b {
            0x00..=0x7f => Value::from(b),
            0x80..=0x8f => return self.map((b & 0x0f) as usize, depth),
            0x90..=0x9f => return self.array((b & 0x0f) as usize, depth),
            0xa0..=0xbf => self.str((b & 0x1f) as usize)?,
            0xc0 => Value::Null,
            0xc1 => return Err(MsgpackError::ReservedByte),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let len = self.uint(1 << (b - 0xc4))? as usize;
                Value::Binary(Bytes::copy_from_slice(self.take(len)?))
            }
            0xc7..=0xc9 => {
                let len = self.uint(1 << (b - 0xc7))? as usize;
                self.take(len.checked_add(1).ok_or(MsgpackError::Truncated)?)?;
                Value::Null
            }
            0xca => Value::from(f32::from_bits(self.uint(4)? as u32) as f64),
            0xcb => Value::from(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::from(self.uint(1 << (b - 0xcc))?),
            0xd0 => Value::from(self.uint(1)? as u8 as i8),
            0xd1 => Value::from(self.uint(2)? as u16 as i16),
            0xd2 => Value::from(self.uint(4)? as u32 as i32),
            0xd3 => Value::from(self.uint(8)? as i64),
            0xd4..=0xd8 => {
                self.take(1 + (1 << (b - 0xd4)))?;
                Value::Null
            }
            0xd9..=0xdb => {
                let len = self.uint(1 << (b - 0xd9))? as usize;
                self.str(len)?
            }
            0xdc | 0xdd => {
                let len = self.uint(if b == 0xdc { 2 } else { 4 })? as usize;
                return self.array(len, depth);
            }
            0xde | 0xdf => {
                let len = self.uint(if b == 0xde { 2 } else { 4 })? as usize;
                return self.map(len, depth);
            }
            0xe0..=0xff => Value::from(b as i8),
        })
    }

    fn str(&mut self, len: usize) -> Result<Value, MsgpackError> {
        let bytes = self.take(len)?;
        Ok(Value::String(String::from_utf8_lossy(bytes).into_owned()))
    }

    fn array(&mut self, len: usize, depth: usize) -> Result<Value, MsgpackError> {
        if depth >= MAX_DEPTH {
            return Err(MsgpackError::TooDeep);
        }
        self.check_count(len, 1)?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(self.read(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Value, MsgpackError> {
        if depth >= MAX_DEPTH {
            return Err(MsgpackError::TooDeep);
        }
        self.check_count(len, 2)?;
        let mut entries = IndexMap::with_capacity(len);
        for _ in 0..len {
            let key = self.key()?;
            let value = self.read(depth + 1)?;
            // As JavaScript: the last duplicate wins, in the place of the first.
            entries.insert(key, value);
        }
        Ok(Value::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn writes_what_notepack_writes() {
        // notepack.encode(x).toString("hex") for each x, the same with notepack.io 2.2.0
        // (what socket.io-msgpack-parser 3.0.2 uses) and 3.0.1 (the Redis adapter's).
        let long31 = format!("bf{}", "61".repeat(31));
        let long32 = format!("d920{}", "61".repeat(32));
        let cases: Vec<(Value, &str)> = vec![
            (Value::from(0), "00"),
            (Value::from(127), "7f"),
            (Value::from(128), "cc80"),
            (Value::from(256), "cd0100"),
            (Value::from(65536), "ce00010000"),
            (Value::from(4294967296u64), "cf0000000100000000"),
            (Value::from(-1), "ff"),
            (Value::from(-32), "e0"),
            (Value::from(-33), "d0df"),
            (Value::from(-129), "d1ff7f"),
            (Value::from(-32769), "d2ffff7fff"),
            (Value::from(-4294967296i64), "d3ffffffff00000000"),
            (Value::from(1.5), "cb3ff8000000000000"),
            (Value::from("a".repeat(31)), &long31),
            (Value::from("a".repeat(32)), &long32),
            (Value::Binary(Bytes::from_static(&[1, 2])), "c4020102"),
            (Value::Array((0..16).map(Value::from).collect()), "dc0010000102030405060708090a0b0c0d0e0f"),
            (Value::Null, "c0"),
            (Value::Bool(true), "c3"),
        ];
        for (value, expected) in cases {
            assert_eq!(encode(&value), hex(expected), "{value}");
            assert_eq!(decode(&hex(expected)).unwrap(), value, "{expected}");
        }
    }

    #[test]
    fn reads_every_form() {
        assert_eq!(decode(&hex("ca3fc00000")).unwrap(), Value::from(1.5)); // float32
        assert_eq!(decode(&hex("d3ffffffffffffffff")).unwrap(), Value::from(-1));
        assert_eq!(decode(&hex("cf0000000000000001")).unwrap(), Value::from(1));
        assert_eq!(decode(&hex("da000161")).unwrap(), Value::from("a"));
        assert_eq!(decode(&hex("c5000101")).unwrap(), Value::Binary(Bytes::from_static(&[1])));
        assert_eq!(decode(&hex("de0001a161c0")).unwrap().get("a"), Some(&Value::Null));
        assert_eq!(decode(&hex("8101c3")).unwrap().get("1"), Some(&Value::Bool(true)));
        // Extensions (undefined, a date) read as null.
        assert_eq!(decode(&hex("92d40000d6ff00000001")).unwrap(), Value::Array(vec![Value::Null, Value::Null]));
    }

    #[test]
    fn hostile_input_is_an_error() {
        let bad: Vec<(&str, MsgpackError)> = vec![
            ("", MsgpackError::Truncated),
            ("c1", MsgpackError::ReservedByte),
            ("0000", MsgpackError::TrailingBytes(1)),
            ("ddffffffff", MsgpackError::Truncated), // 4 billion items promised
            ("dfffffffff", MsgpackError::Truncated),
            ("c6ffffffff00", MsgpackError::Truncated),
            ("dbffffffff61", MsgpackError::Truncated),
            ("c9ffffffff01", MsgpackError::Truncated),
            ("9301", MsgpackError::Truncated),
            ("81c0c0", MsgpackError::BadMapKey),
            ("8192c0", MsgpackError::BadMapKey),
        ];
        for (input, err) in bad {
            assert_eq!(decode(&hex(input)), Err(err), "{input}");
        }
        let deep = [vec![0x91u8; 100_000], vec![0xc0]].concat();
        assert_eq!(decode(&deep), Err(MsgpackError::TooDeep));
        let ok_depth = [vec![0x91u8; MAX_DEPTH], vec![0xc0]].concat();
        assert!(decode(&ok_depth).is_ok());
        let too_deep = [vec![0x81u8, 0xa1, b'a'].repeat(MAX_DEPTH + 1), vec![0xc0]].concat();
        assert_eq!(decode(&too_deep), Err(MsgpackError::TooDeep));
    }

    #[test]
    fn invalid_utf8_reads_as_javascript_does() {
        assert_eq!(decode(&hex("a2ff61")).unwrap(), Value::from("\u{fffd}a"));
    }
}
