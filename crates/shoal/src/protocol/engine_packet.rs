//! Engine.IO protocol 4 packets and the HTTP long-polling payload format. No I/O.
//!
//! A text packet is one type digit followed by its data (`4hello`). A binary packet is
//! sent as a binary WebSocket frame with no type byte, or inside a polling payload as
//! `b<base64>`. A polling payload joins packets with the record separator `\x1e`.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// The record separator between packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// The seven Engine.IO packet types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    /// Opens a session (the handshake answer).
    Open = 0,
    /// Closes the session.
    Close = 1,
    /// A heartbeat (or an upgrade probe).
    Ping = 2,
    /// The answer to a ping.
    Pong = 3,
    /// A message.
    Message = 4,
    /// Completes an upgrade to WebSocket.
    Upgrade = 5,
    /// Nothing (ends a pending poll during an upgrade).
    Noop = 6,
}

impl PacketType {
    fn from_digit(b: u8) -> Option<PacketType> {
        Some(match b {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            _ => return None,
        })
    }
    /// The packet type's digit on the wire (`b'0'`..`b'6'`).
    pub fn digit(self) -> u8 {
        b'0' + self as u8
    }
}

/// A decoded packet received from a client.
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    /// An open packet (never valid from a client).
    Open,
    /// The client closes the session.
    Close,
    /// `2probe` during an upgrade carries `probe`.
    Ping(String),
    /// A pong, with its payload.
    Pong(String),
    /// A text message.
    Message(String),
    /// A binary message.
    Binary(Bytes),
    /// The client completes its upgrade.
    Upgrade,
    /// A noop.
    Noop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// Why a client's packet could not be decoded.
pub enum DecodeError {
    /// An empty packet.
    Empty,
    /// An unknown packet type (its byte).
    UnknownType(u8),
    /// Text that is not UTF-8.
    InvalidUtf8,
    /// A `b` packet whose base64 is invalid.
    InvalidBase64,
    /// A protocol 3 payload whose framing is broken (lengths, separators).
    BadPayload(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty packet"),
            DecodeError::UnknownType(b) => write!(f, "unknown packet type byte 0x{b:02x}"),
            DecodeError::InvalidUtf8 => f.write_str("packet is not valid UTF-8"),
            DecodeError::InvalidBase64 => f.write_str("binary packet is not valid base64"),
            DecodeError::BadPayload(why) => write!(f, "bad payload: {why}"),
        }
    }
}
impl std::error::Error for DecodeError {}

/// Decodes one text packet (a WebSocket text frame, or one record of a polling payload).
pub fn decode_text(text: &str) -> Result<Packet, DecodeError> {
    let first = *text.as_bytes().first().ok_or(DecodeError::Empty)?;
    if first == b'b' {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&text[1..])
            .map_err(|_| DecodeError::InvalidBase64)?;
        return Ok(Packet::Binary(Bytes::from(raw)));
    }
    let kind = PacketType::from_digit(first).ok_or(DecodeError::UnknownType(first))?;
    let data = &text[1..];
    Ok(match kind {
        PacketType::Open => Packet::Open,
        PacketType::Close => Packet::Close,
        PacketType::Ping => Packet::Ping(data.to_owned()),
        PacketType::Pong => Packet::Pong(data.to_owned()),
        PacketType::Message => Packet::Message(data.to_owned()),
        PacketType::Upgrade => Packet::Upgrade,
        PacketType::Noop => Packet::Noop,
    })
}

/// Splits and decodes a polling POST body. Fails on the first bad record: a client that
/// sends one garbled packet gets its session closed, as the reference server does.
pub fn decode_payload(body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    text.split('\x1e').map(decode_text).collect()
}

/// A packet ready to be written to a client. Text packets already hold their type
/// digit, so a broadcast's bytes are built once and shared by every recipient.
#[derive(Clone, Debug, PartialEq)]
pub enum OutPacket {
    /// Full text packet, type digit included (`4...`, `2`, `6`, `1`, ...).
    Text(Bytes),
    /// A binary attachment (raw bytes; `b<base64>` on polling).
    Binary(Bytes),
}

impl OutPacket {
    /// A packet of this type without payload.
    pub fn control(kind: PacketType) -> OutPacket {
        OutPacket::Text(Bytes::from_static(match kind {
            PacketType::Open => b"0",
            PacketType::Close => b"1",
            PacketType::Ping => b"2",
            PacketType::Pong => b"3",
            PacketType::Message => b"4",
            PacketType::Upgrade => b"5",
            PacketType::Noop => b"6",
        }))
    }
    /// A text packet of the given type with `data` after the digit.
    pub fn text(kind: PacketType, data: &str) -> OutPacket {
        let mut b = BytesMut::with_capacity(1 + data.len());
        b.put_u8(kind.digit());
        b.put_slice(data.as_bytes());
        OutPacket::Text(b.freeze())
    }
    /// Bytes this packet takes in an outbound queue (for limits).
    pub fn len(&self) -> usize {
        match self {
            OutPacket::Text(b) | OutPacket::Binary(b) => b.len(),
        }
    }
    /// True if its payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Joins packets into one polling GET response body.
pub fn encode_payload(packets: &[OutPacket]) -> Bytes {
    let size: usize = packets.iter().map(|p| p.len() * 4 / 3 + 4).sum();
    let mut out = BytesMut::with_capacity(size);
    for (i, p) in packets.iter().enumerate() {
        if i > 0 {
            out.put_u8(SEPARATOR);
        }
        match p {
            OutPacket::Text(b) => out.put_slice(b),
            OutPacket::Binary(b) => {
                out.put_u8(b'b');
                let encoded = base64::engine::general_purpose::STANDARD.encode(b);
                out.put_slice(encoded.as_bytes());
            }
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_type() {
        assert_eq!(decode_text("2probe").unwrap(), Packet::Ping("probe".into()));
        assert_eq!(decode_text("3").unwrap(), Packet::Pong("".into()));
        assert_eq!(decode_text("4héllo").unwrap(), Packet::Message("héllo".into()));
        assert_eq!(decode_text("5").unwrap(), Packet::Upgrade);
        assert_eq!(decode_text("6").unwrap(), Packet::Noop);
        assert_eq!(decode_text("1").unwrap(), Packet::Close);
        assert_eq!(decode_text("bAQID").unwrap(), Packet::Binary(Bytes::from_static(&[1, 2, 3])));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode_text(""), Err(DecodeError::Empty));
        assert_eq!(decode_text("9x"), Err(DecodeError::UnknownType(b'9')));
        assert_eq!(decode_text("b!!!"), Err(DecodeError::InvalidBase64));
        assert_eq!(decode_payload(&[b'4', 0xff]), Err(DecodeError::InvalidUtf8));
        assert_eq!(decode_payload(b"4a\x1e\x1e4b"), Err(DecodeError::Empty));
    }

    #[test]
    fn payload_round_trip() {
        let body = encode_payload(&[
            OutPacket::text(PacketType::Message, "hello"),
            OutPacket::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            OutPacket::control(PacketType::Ping),
        ]);
        assert_eq!(&body[..], b"4hello\x1ebAQIDBA==\x1e2");
        assert_eq!(
            decode_payload(&body).unwrap(),
            vec![
                Packet::Message("hello".into()),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
                Packet::Ping("".into())
            ]
        );
    }
}
