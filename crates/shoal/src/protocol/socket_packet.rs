//! Socket.IO protocol 5 packets: encode and decode, with binary attachments. No I/O.
//!
//! Text form: `<type>[<attachments>-][<nsp>,][<ack id>][<json>]`, e.g.
//! `2/chat,12["message","hi"]`. A packet with binary data is sent as a text packet whose
//! JSON has placeholders, followed by one binary message per attachment.

use super::engine_packet::{OutPacket, PacketType as EngineType};
use super::value::{parse_json, Value};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// The seven Socket.IO packet types.
pub enum PacketKind {
    /// Connects to a namespace (and its answer).
    Connect = 0,
    /// Leaves a namespace.
    Disconnect = 1,
    /// An event.
    Event = 2,
    /// An acknowledgement.
    Ack = 3,
    /// Refuses a connection to a namespace.
    ConnectError = 4,
    /// An event with binary attachments.
    BinaryEvent = 5,
    /// An acknowledgement with binary attachments.
    BinaryAck = 6,
}

/// Event names a client may not use: the client library gives them their own meaning.
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

#[derive(Clone, Debug, PartialEq)]
/// One Socket.IO packet, its attachments in place.
pub struct Packet {
    /// Its type (binary types are chosen at encoding, from the data).
    pub kind: PacketKind,
    /// Its namespace (`/` by default).
    pub nsp: String,
    /// Its ack id: an event that wants an ack, or the ack that answers it.
    pub id: Option<u64>,
    /// Its payload: an event's `[name, ...args]`, an ack's args, a CONNECT's auth.
    pub data: Option<Value>,
}

impl Packet {
    /// A CONNECT (from a client: with its auth; from the server: with `{sid}`).
    pub fn connect(nsp: &str, data: Option<Value>) -> Packet {
        Packet { kind: PacketKind::Connect, nsp: nsp.to_owned(), id: None, data }
    }
    /// A DISCONNECT from the namespace.
    pub fn disconnect(nsp: &str) -> Packet {
        Packet { kind: PacketKind::Disconnect, nsp: nsp.to_owned(), id: None, data: None }
    }
    /// A CONNECT_ERROR with its data (`{message, data?}`).
    pub fn connect_error(nsp: &str, data: Value) -> Packet {
        Packet { kind: PacketKind::ConnectError, nsp: nsp.to_owned(), id: None, data: Some(data) }
    }
    /// An EVENT (or BINARY_EVENT when an argument holds bytes).
    pub fn event(nsp: &str, event: &str, args: Vec<Value>, id: Option<u64>) -> Packet {
        let mut data = Vec::with_capacity(args.len() + 1);
        data.push(Value::String(event.to_owned()));
        data.extend(args);
        let kind = if data.iter().any(Value::has_binary) { PacketKind::BinaryEvent } else { PacketKind::Event };
        Packet { kind, nsp: nsp.to_owned(), id, data: Some(Value::Array(data)) }
    }
    /// An ACK (or BINARY_ACK) for packet `id`.
    pub fn ack(nsp: &str, id: u64, args: Vec<Value>) -> Packet {
        let kind = if args.iter().any(Value::has_binary) { PacketKind::BinaryAck } else { PacketKind::Ack };
        Packet { kind, nsp: nsp.to_owned(), id: Some(id), data: Some(Value::Array(args)) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// Why a Socket.IO packet could not be decoded (the session is closed for it).
pub enum DecodeError {
    /// An empty message.
    Empty,
    /// An unknown packet type.
    UnknownType,
    /// The attachment count is not a number.
    BadAttachmentCount,
    /// More attachments than allowed (the count announced).
    TooManyAttachments(usize),
    /// The namespace is malformed.
    BadNamespace,
    /// The ack id is malformed.
    BadAckId,
    /// The payload is not JSON (serde's message).
    InvalidJson(String),
    /// The payload is not MessagePack as the msgpack parser writes it (what was wrong).
    InvalidMsgpack(String),
    /// The payload does not fit the packet type (what was wrong).
    InvalidPayload(&'static str),
    /// A binary message arrived when none was expected.
    UnexpectedBinary,
    /// A binary placeholder is malformed or out of range.
    BadPlaceholder,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty packet"),
            DecodeError::UnknownType => f.write_str("unknown packet type"),
            DecodeError::BadAttachmentCount => f.write_str("illegal attachment count"),
            DecodeError::TooManyAttachments(n) => write!(f, "too many attachments ({n})"),
            DecodeError::BadNamespace => f.write_str("illegal namespace"),
            DecodeError::BadAckId => f.write_str("illegal ack id"),
            DecodeError::InvalidJson(e) => write!(f, "invalid JSON: {e}"),
            DecodeError::InvalidMsgpack(e) => write!(f, "invalid MessagePack: {e}"),
            DecodeError::InvalidPayload(why) => write!(f, "invalid payload: {why}"),
            DecodeError::UnexpectedBinary => f.write_str("binary data with no packet expecting it"),
            DecodeError::BadPlaceholder => f.write_str("placeholder refers to no attachment"),
        }
    }
}
impl std::error::Error for DecodeError {}

/// What a text message decodes to: a whole packet, or the head of a binary packet that
/// still waits for its attachments.
#[derive(Debug)]
pub enum Decoded {
    /// A whole packet.
    Packet(Packet),
    /// A binary packet waiting for its attachments.
    Partial(PartialPacket),
}

#[derive(Debug)]
/// The head of a binary packet, completed by its attachments as they arrive.
pub struct PartialPacket {
    packet: Packet,
    expected: usize,
    attachments: Vec<Bytes>,
}

impl PartialPacket {
    /// Adds one attachment; returns the finished packet once all have arrived.
    pub fn push(mut self, bytes: Bytes) -> Result<Result<Packet, PartialPacket>, DecodeError> {
        self.attachments.push(bytes);
        if self.attachments.len() < self.expected {
            return Ok(Err(self));
        }
        if let Some(data) = self.packet.data.as_mut() {
            data.fill_placeholders(&self.attachments).map_err(|_| DecodeError::BadPlaceholder)?;
        }
        Ok(Ok(self.packet))
    }
}

/// Decodes a text message. `max_attachments` bounds what a binary packet may announce.
pub fn decode(text: &str, max_attachments: usize) -> Result<Decoded, DecodeError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let kind = match bytes.first().ok_or(DecodeError::Empty)? {
        b'0' => PacketKind::Connect,
        b'1' => PacketKind::Disconnect,
        b'2' => PacketKind::Event,
        b'3' => PacketKind::Ack,
        b'4' => PacketKind::ConnectError,
        b'5' => PacketKind::BinaryEvent,
        b'6' => PacketKind::BinaryAck,
        _ => return Err(DecodeError::UnknownType),
    };
    i += 1;

    let mut attachments = 0usize;
    let binary = matches!(kind, PacketKind::BinaryEvent | PacketKind::BinaryAck);
    if binary {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 6 || bytes.get(i) != Some(&b'-') {
            return Err(DecodeError::BadAttachmentCount);
        }
        attachments = text[start..i].parse().map_err(|_| DecodeError::BadAttachmentCount)?;
        if attachments > max_attachments {
            return Err(DecodeError::TooManyAttachments(attachments));
        }
        i += 1;
    }

    let nsp = if bytes.get(i) == Some(&b'/') {
        let start = i;
        while i < bytes.len() && bytes[i] != b',' {
            i += 1;
        }
        let nsp = &text[start..i];
        if i < bytes.len() {
            i += 1; // the comma
        }
        nsp.to_owned()
    } else {
        "/".to_owned()
    };

    let mut id = None;
    let start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i > start {
        // JavaScript numbers are exact up to 2^53; ids beyond are not ids a client sends.
        let n: u64 = text[start..i].parse().map_err(|_| DecodeError::BadAckId)?;
        if n > (1u64 << 53) {
            return Err(DecodeError::BadAckId);
        }
        id = Some(n);
    }

    let data = if i < bytes.len() {
        Some(parse_json(&text[i..]).map_err(|e| DecodeError::InvalidJson(e.to_string()))?)
    } else {
        None
    };
    validate(kind, id, data.as_ref())?;
    let packet = Packet { kind, nsp, id, data };

    if binary && attachments > 0 {
        Ok(Decoded::Partial(PartialPacket { packet, expected: attachments, attachments: Vec::new() }))
    } else if binary {
        let mut packet = packet;
        if let Some(d) = packet.data.as_mut() {
            d.fill_placeholders(&[]).map_err(|_| DecodeError::BadPlaceholder)?;
        }
        Ok(Decoded::Packet(packet))
    } else {
        Ok(Decoded::Packet(packet))
    }
}

/// Checks that a packet's data has the form its type needs (shared by both parsers).
pub(crate) fn validate(kind: PacketKind, id: Option<u64>, data: Option<&Value>) -> Result<(), DecodeError> {
    match kind {
        PacketKind::Connect => match data {
            None | Some(Value::Object(_)) => Ok(()),
            _ => Err(DecodeError::InvalidPayload("CONNECT data must be an object")),
        },
        PacketKind::Disconnect => match data {
            None => Ok(()),
            _ => Err(DecodeError::InvalidPayload("DISCONNECT carries no data")),
        },
        PacketKind::ConnectError => match data {
            Some(Value::Object(_)) | Some(Value::String(_)) => Ok(()),
            _ => Err(DecodeError::InvalidPayload("CONNECT_ERROR data must be an object or a string")),
        },
        PacketKind::Event | PacketKind::BinaryEvent => match data {
            Some(Value::Array(a)) => match a.first() {
                Some(Value::String(name)) if !RESERVED_EVENTS.contains(&name.as_str()) => Ok(()),
                Some(Value::Number(_)) => Ok(()),
                Some(Value::String(_)) => Err(DecodeError::InvalidPayload("reserved event name")),
                _ => Err(DecodeError::InvalidPayload("EVENT needs an event name")),
            },
            _ => Err(DecodeError::InvalidPayload("EVENT data must be an array")),
        },
        PacketKind::Ack | PacketKind::BinaryAck => match (id, data) {
            (Some(_), Some(Value::Array(_))) => Ok(()),
            (None, _) => Err(DecodeError::InvalidPayload("ACK needs an id")),
            _ => Err(DecodeError::InvalidPayload("ACK data must be an array")),
        },
    }
}

/// A packet encoded for Engine.IO: its first message and the binary attachments that
/// follow it. With the default parser the first message is the text packet (with its
/// `4` type digit, ready for any transport); with the msgpack parser it is the whole
/// packet as one binary message, and there are no attachments.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The first message: the text packet (default parser) or the whole packet as one
    /// binary message (msgpack parser).
    pub head: OutPacket,
    /// The binary attachments, in order.
    pub attachments: Vec<Bytes>,
}

impl Encoded {
    /// The Engine.IO packets to queue, in order.
    pub fn to_out_packets(&self) -> impl Iterator<Item = OutPacket> + '_ {
        std::iter::once(self.head.clone()).chain(self.attachments.iter().cloned().map(OutPacket::Binary))
    }
    /// The bytes of the first message (which tell one packet from another).
    pub fn head_bytes(&self) -> &Bytes {
        match &self.head {
            OutPacket::Text(b) | OutPacket::Binary(b) => b,
        }
    }
    /// Bytes on the wire (text and attachments).
    pub fn wire_len(&self) -> usize {
        self.head.len() + self.attachments.iter().map(Bytes::len).sum::<usize>()
    }
}

/// Encodes a packet once; the result may be shared by every recipient of a broadcast.
pub fn encode(packet: &Packet) -> Encoded {
    let mut json = String::new();
    let mut attachments = Vec::new();
    if let Some(d) = &packet.data {
        d.write_json(&mut json, &mut attachments);
    }
    let kind = match (packet.kind, attachments.is_empty()) {
        (PacketKind::Event, false) => PacketKind::BinaryEvent,
        (PacketKind::Ack, false) => PacketKind::BinaryAck,
        (PacketKind::BinaryEvent, true) => PacketKind::Event,
        (PacketKind::BinaryAck, true) => PacketKind::Ack,
        (k, _) => k,
    };
    let mut out = BytesMut::with_capacity(json.len() + packet.nsp.len() + 24);
    out.put_u8(EngineType::Message.digit());
    out.put_u8(b'0' + kind as u8);
    if !attachments.is_empty() {
        out.put_slice(attachments.len().to_string().as_bytes());
        out.put_u8(b'-');
    }
    if packet.nsp != "/" {
        out.put_slice(packet.nsp.as_bytes());
        out.put_u8(b',');
    }
    if let Some(id) = packet.id {
        out.put_slice(id.to_string().as_bytes());
    }
    out.put_slice(json.as_bytes());
    Encoded { head: OutPacket::Text(out.freeze()), attachments }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Packet {
        match decode(text, 10).unwrap() {
            Decoded::Packet(p) => p,
            Decoded::Partial(_) => panic!("expected a whole packet"),
        }
    }

    #[test]
    fn decodes_the_spec_examples() {
        assert_eq!(whole("0"), Packet::connect("/", None));
        let p = whole("0/admin,{\"token\":\"123\"}");
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.data.unwrap().get("token").unwrap().as_str(), Some("123"));
        assert_eq!(whole("1/admin,"), Packet::disconnect("/admin"));
        let p = whole("2/admin,12[\"project:delete\",123]");
        assert_eq!(p.id, Some(12));
        assert_eq!(p.kind, PacketKind::Event);
        let p = whole("312[\"bar\"]");
        assert_eq!((p.kind, p.id, p.nsp.as_str()), (PacketKind::Ack, Some(12), "/"));
    }

    #[test]
    fn binary_event_waits_for_attachments() {
        let partial = match decode("51-[\"hello\",{\"_placeholder\":true,\"num\":0}]", 10).unwrap() {
            Decoded::Partial(p) => p,
            _ => panic!("expected partial"),
        };
        let packet = partial.push(Bytes::from_static(&[1, 2, 3])).unwrap().unwrap();
        assert_eq!(
            packet.data.unwrap(),
            Value::Array(vec!["hello".into(), Value::Binary(Bytes::from_static(&[1, 2, 3]))])
        );
    }

    #[test]
    fn rejects_bad_packets() {
        let bad = [
            "", "7", "9[\"a\"]", "2[\"a\"", "2{\"a\":1}", "2[]", "2[\"connect\"]", "2[null]",
            "0[]", "1\"x\"", "3[\"a\"]", "31{}", "5-[\"a\"]", "5x-[\"a\"]", "51[\"a\"]",
            "4", "299999999999999999999[\"a\"]", "2\u{0}",
        ];
        for text in bad {
            assert!(decode(text, 10).is_err(), "accepted {text:?}");
        }
        assert_eq!(decode("511-[\"a\"]", 10).unwrap_err(), DecodeError::TooManyAttachments(11));
        assert_eq!(decode("5999999999-[\"a\"]", 10).unwrap_err(), DecodeError::BadAttachmentCount);
    }

    #[test]
    fn placeholder_beyond_attachments_is_rejected() {
        let partial = match decode("51-[\"a\",{\"_placeholder\":true,\"num\":5}]", 10).unwrap() {
            Decoded::Partial(p) => p,
            _ => panic!(),
        };
        assert_eq!(partial.push(Bytes::new()).unwrap_err(), DecodeError::BadPlaceholder);
    }

    #[test]
    fn encodes_with_engine_prefix_and_attachments() {
        let e = encode(&Packet::event("/chat", "msg", vec!["hi".into()], Some(7)));
        assert_eq!(&e.head_bytes()[..], b"42/chat,7[\"msg\",\"hi\"]");
        let e = encode(&Packet::event("/", "bin", vec![Value::Binary(Bytes::from_static(b"x"))], None));
        assert_eq!(&e.head_bytes()[..], b"451-[\"bin\",{\"_placeholder\":true,\"num\":0}]");
        assert_eq!(e.attachments, vec![Bytes::from_static(b"x")]);
        let e = encode(&Packet::connect("/", Some(serde_json::json!({"sid": "abc"}).into())));
        assert_eq!(&e.head_bytes()[..], b"40{\"sid\":\"abc\"}");
        let e = encode(&Packet::ack("/", 3, vec![]));
        assert_eq!(&e.head_bytes()[..], b"433[]");
    }
}
