//! Socket.IO packets as `socket.io-msgpack-parser` (3.x) writes them: the whole packet
//! object `{type, data, nsp, id}` as one MessagePack value (notepack.io), sent as one
//! binary Engine.IO message. Binary data stays in place as MessagePack bin: there are no
//! attachments, and the packet types are the five of that parser (CONNECT, DISCONNECT,
//! EVENT, ACK, CONNECT_ERROR; an event with bytes is still an EVENT). No I/O.

use super::msgpack::{self, Head, Reader};
use super::socket_packet::{validate, DecodeError, Packet, PacketKind};
use super::value::Value;
use bytes::Bytes;

/// Encodes a packet: the bytes of one binary Engine.IO message.
pub fn encode(packet: &Packet) -> Bytes {
    let kind = match packet.kind {
        PacketKind::BinaryEvent => PacketKind::Event,
        PacketKind::BinaryAck => PacketKind::Ack,
        k => k,
    };
    let data_len = packet.data.as_ref().map_or(16, |_| 256);
    let mut out = Vec::with_capacity(packet.nsp.len() + data_len);
    let fields = 2 + packet.data.is_some() as usize + packet.id.is_some() as usize;
    out.push(0x80 | fields as u8);
    msgpack::write_str("type", &mut out);
    msgpack::write_uint(kind as u64, &mut out);
    if let Some(data) = &packet.data {
        msgpack::write_str("data", &mut out);
        msgpack::write_value(data, &mut out);
    }
    msgpack::write_str("nsp", &mut out);
    msgpack::write_str(&packet.nsp, &mut out);
    if let Some(id) = packet.id {
        msgpack::write_str("id", &mut out);
        msgpack::write_uint(id, &mut out);
    }
    Bytes::from(out)
}

/// Decodes one binary message. Fails, as the official parser does, unless it is a map
/// with an integer `type` from 0 to 4, a string `nsp`, `data` of the form the type needs
/// and, if present, an integer `id`; beyond the official checks, the namespace must start
/// with `/` and an ack id be at most 2^53, as in the text format. Other keys (the JS
/// client sends `options`) are read, within the bounds, and ignored.
pub fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
    let bad = |e: msgpack::MsgpackError| DecodeError::InvalidMsgpack(e.to_string());
    let mut reader = Reader::new(bytes);
    let Head::Map(fields) = reader.map_head().map_err(bad)? else {
        return Err(DecodeError::InvalidPayload("a msgpack packet must be a map"));
    };
    let (mut kind, mut nsp, mut data, mut id) = (None, None, None, None);
    for _ in 0..fields {
        let key = reader.key().map_err(bad)?;
        if reader.skip_undefined() {
            // notepack.io 2.2 (socket.io-msgpack-parser 3.0.2's) writes an undefined field
            // (a CONNECT without auth has `data: undefined`); it is absent.
            match key.as_str() {
                "type" => kind = None,
                "nsp" => nsp = None,
                "data" => data = None,
                "id" => id = None,
                _ => {}
            }
            continue;
        }
        let value = reader.value().map_err(bad)?;
        match key.as_str() {
            "type" => kind = Some(value),
            "nsp" => nsp = Some(value),
            "data" => data = Some(value),
            "id" => id = Some(value),
            _ => {}
        }
    }
    reader.finish().map_err(bad)?;

    let kind = match kind.as_ref().and_then(Value::as_u64) {
        Some(0) => PacketKind::Connect,
        Some(1) => PacketKind::Disconnect,
        Some(2) => PacketKind::Event,
        Some(3) => PacketKind::Ack,
        Some(4) => PacketKind::ConnectError,
        _ => return Err(DecodeError::UnknownType),
    };
    let nsp = match nsp {
        Some(Value::String(s)) if s.starts_with('/') => s,
        _ => return Err(DecodeError::BadNamespace),
    };
    let id = match id {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n <= 1 << 53 => Some(n),
            _ => return Err(DecodeError::BadAckId),
        },
    };
    validate(kind, id, data.as_ref())?;
    // Events and acks with bytes are BINARY_* in shoal's packets, as the text decoder
    // gives them.
    let kind = match kind {
        PacketKind::Event if data.as_ref().is_some_and(Value::has_binary) => PacketKind::BinaryEvent,
        PacketKind::Ack if data.as_ref().is_some_and(Value::has_binary) => PacketKind::BinaryAck,
        k => k,
    };
    Ok(Packet { kind, nsp, id, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::msgpack::MAX_DEPTH;

    fn round_trip(p: &Packet) {
        let bytes = encode(p);
        assert_eq!(&decode(&bytes).unwrap(), p, "{bytes:02x?}");
    }

    #[test]
    fn every_packet_type_round_trips() {
        let auth: Value = serde_json::json!({"token": "abc", "n": 1}).into();
        round_trip(&Packet::connect("/", None));
        round_trip(&Packet::connect("/admin", Some(auth.clone())));
        round_trip(&Packet::disconnect("/chat"));
        round_trip(&Packet::event("/", "hello", vec![Value::from(1), Value::from("two"), Value::Null], None));
        round_trip(&Packet::event("/chat", "ask", vec![auth.clone()], Some(42)));
        round_trip(&Packet::ack("/", 7, vec![Value::from(true)]));
        round_trip(&Packet::ack("/", 1 << 53, vec![]));
        round_trip(&Packet::connect_error("/", auth));
        round_trip(&Packet::connect_error("/x", Value::from("nope")));
        let bytes = Value::Binary(Bytes::from_static(&[0, 1, 255]));
        let nested = Value::Object([("file".to_owned(), bytes.clone())].into());
        round_trip(&Packet::event("/", "upload", vec![bytes.clone(), nested], Some(3)));
        round_trip(&Packet::ack("/", 3, vec![bytes]));
    }

    #[test]
    fn writes_what_the_official_parser_reads() {
        // {type: 2, data: ["hi", <Buffer 01>], nsp: "/", id: 1}
        let p = Packet::event("/", "hi", vec![Value::Binary(Bytes::from_static(&[1]))], Some(1));
        let expected = [
            &[0x84, 0xa4][..], b"type", &[0x02, 0xa4], b"data", &[0x92, 0xa2], b"hi", &[0xc4, 0x01, 0x01, 0xa3], b"nsp",
            &[0xa1], b"/", &[0xa2], b"id", &[0x01],
        ]
        .concat();
        assert_eq!(&encode(&p)[..], &expected[..]);
        // A CONNECT with no data has no data key (the official decoder reads undefined).
        let connect = [&[0x82, 0xa4][..], b"type", &[0x00, 0xa3], b"nsp", &[0xa1], b"/"].concat();
        assert_eq!(&encode(&Packet::connect("/", None))[..], &connect[..]);
    }

    #[test]
    fn reads_what_the_official_client_writes() {
        // Captured from socket.io-client 4.8.3 with socket.io-msgpack-parser 3.0.2:
        // socket.emit("ev", 1, cb) is {type: 2, data: ["ev", 1], options: {compress: true},
        // id: 0, nsp: "/"} ...
        let hex = |s: &str| (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>();
        let bytes = hex("85a47479706502a46461746192a2657601a76f7074696f6e7381a8636f6d7072657373c3a2696400a36e7370a12f");
        assert_eq!(decode(&bytes).unwrap(), Packet::event("/", "ev", vec![Value::from(1)], Some(0)));
        // ... and its CONNECT without auth is {type: 0, data: undefined, nsp: "/"}, undefined
        // written as fixext 1 of type 0 (notepack.io 2.2): an absent field.
        let bytes = hex("83a47479706500a464617461d40000a36e7370a12f");
        assert_eq!(decode(&bytes).unwrap(), Packet::connect("/", None));
    }

    #[test]
    fn rejects_what_the_official_parser_rejects_and_more() {
        let packet = |pairs: Vec<(&str, Value)>| msgpack::encode(&Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
        let event = || Value::Array(vec![Value::from("ev")]);
        let bad: Vec<(Vec<u8>, DecodeError)> = vec![
            (vec![], DecodeError::InvalidMsgpack("truncated MessagePack".into())),
            (vec![0x92, 0x01, 0x02], DecodeError::InvalidPayload("a msgpack packet must be a map")),
            (packet(vec![("nsp", "/".into()), ("data", event())]), DecodeError::UnknownType),
            (packet(vec![("type", 5.into()), ("nsp", "/".into()), ("data", event())]), DecodeError::UnknownType),
            (packet(vec![("type", 2.5.into()), ("nsp", "/".into()), ("data", event())]), DecodeError::UnknownType),
            (packet(vec![("type", "2".into()), ("nsp", "/".into()), ("data", event())]), DecodeError::UnknownType),
            (packet(vec![("type", 2.into()), ("data", event())]), DecodeError::BadNamespace),
            (packet(vec![("type", 2.into()), ("nsp", 1.into()), ("data", event())]), DecodeError::BadNamespace),
            (packet(vec![("type", 2.into()), ("nsp", "chat".into()), ("data", event())]), DecodeError::BadNamespace),
            (packet(vec![("type", 2.into()), ("nsp", "/".into()), ("data", event()), ("id", (-1).into())]), DecodeError::BadAckId),
            (packet(vec![("type", 2.into()), ("nsp", "/".into()), ("data", event()), ("id", ((1u64 << 53) + 1).into())]), DecodeError::BadAckId),
            (packet(vec![("type", 2.into()), ("nsp", "/".into()), ("data", event()), ("id", 1.5.into())]), DecodeError::BadAckId),
            (packet(vec![("type", 2.into()), ("nsp", "/".into())]), DecodeError::InvalidPayload("EVENT data must be an array")),
            (packet(vec![("type", 2.into()), ("nsp", "/".into()), ("data", Value::Array(vec!["connect".into()]))]), DecodeError::InvalidPayload("reserved event name")),
            (packet(vec![("type", 0.into()), ("nsp", "/".into()), ("data", Value::Null)]), DecodeError::InvalidPayload("CONNECT data must be an object")),
            (packet(vec![("type", 1.into()), ("nsp", "/".into()), ("data", event())]), DecodeError::InvalidPayload("DISCONNECT carries no data")),
            (packet(vec![("type", 3.into()), ("nsp", "/".into()), ("data", event())]), DecodeError::InvalidPayload("ACK needs an id")),
            (packet(vec![("type", 4.into()), ("nsp", "/".into()), ("data", 1.into())]), DecodeError::InvalidPayload("CONNECT_ERROR data must be an object or a string")),
        ];
        for (bytes, err) in bad {
            assert_eq!(decode(&bytes).unwrap_err(), err, "{bytes:02x?}");
        }
        // Trailing bytes, deep nesting and lengths beyond the input are errors.
        let mut trailing = encode(&Packet::disconnect("/")).to_vec();
        trailing.push(0xc0);
        assert!(matches!(decode(&trailing), Err(DecodeError::InvalidMsgpack(_))));
        let deep = [&[0x83, 0xa4][..], b"type", &[0x02, 0xa3], b"nsp", &[0xa1], b"/", &[0xa4], b"data", &[0x92, 0xa1, b'e'], &vec![0x91; MAX_DEPTH + 1], &[0xc0]].concat();
        assert!(matches!(decode(&deep), Err(DecodeError::InvalidMsgpack(_))));
        let huge = [&[0x83, 0xa4][..], b"type", &[0x02, 0xa3], b"nsp", &[0xa1], b"/", &[0xa4], b"data", &[0xdd, 0xff, 0xff, 0xff, 0xff]].concat();
        assert!(matches!(decode(&huge), Err(DecodeError::InvalidMsgpack(_))));
        let huge_map = [0xdf, 0xff, 0xff, 0xff, 0xff, 0xa4];
        assert!(matches!(decode(&huge_map), Err(DecodeError::InvalidMsgpack(_))));
    }

    #[test]
    fn every_prefix_of_a_packet_is_an_error_not_a_panic() {
        let bytes = encode(&Packet::event("/chat", "ev", vec![Value::Binary(Bytes::from_static(&[1; 300])), Value::from(-70000)], Some(9)));
        for end in 0..bytes.len() {
            assert!(decode(&bytes[..end]).is_err(), "prefix of {end} bytes");
        }
        assert!(decode(&bytes).is_ok());
    }
}
