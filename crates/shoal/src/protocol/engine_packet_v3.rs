//! Engine.IO protocol 3 (socket.io-client 1.x and 2.x): what differs from protocol 4 on
//! the wire. No I/O.
//!
//! - A text packet is the same (`4hello`), but a binary packet written as text carries its
//!   packet type: `b4<base64>` (protocol 4 writes `b<base64>`).
//! - A binary packet in a WebSocket frame (or in a binary payload) starts with its packet
//!   type as one byte (`0x04` for a message); protocol 4 sends the bare data.
//! - A polling payload is either text, each packet prefixed by its length and a colon
//!   (`6:4hello2:40`), the length in UTF-16 code units as JavaScript counts a string, or,
//!   when it holds binary data and the client takes binary, the binary payload format:
//!   for each packet `0` (text) or `1` (binary), the decimal digits of its length as
//!   bytes 0-9, `0xFF`, then the packet (text as UTF-8, binary with its type byte).
//!
//! The packets themselves are protocol 4's [`Packet`] and [`OutPacket`], so the queue of
//! a session and a broadcast's shared bytes are the same for both revisions; only the
//! framing written around them differs.

use super::engine_packet::{DecodeError, OutPacket, Packet, PacketType};
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

/// The type byte of a binary message.
const MESSAGE_TYPE: u8 = PacketType::Message as u8;
/// Most decimal digits a payload length may have (lengths above are over any limit).
const MAX_LENGTH_DIGITS: usize = 10;
/// Marks a text record in a binary payload.
const RECORD_TEXT: u8 = 0;
/// Marks a binary record in a binary payload.
const RECORD_BINARY: u8 = 1;
/// Ends the length of a record in a binary payload.
const LENGTH_END: u8 = 0xFF;

/// Decodes one text packet as a protocol 3 peer writes it (a WebSocket text frame, or a
/// record of a payload). Base64 binary is `b<type digit><base64>`.
pub fn decode_text(text: &str) -> Result<Packet, DecodeError> {
    match text.as_bytes() {
        // The type must be a digit (ASCII, so the base64 starts on a character boundary).
        [b'b', kind, ..] if !kind.is_ascii_digit() => Err(DecodeError::UnknownType(*kind)),
        [b'b', kind, ..] => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&text[2..])
                .map_err(|_| DecodeError::InvalidBase64)?;
            typed_binary(*kind, raw.into(), true)
        }
        [b'b'] => Err(DecodeError::BadPayload("base64 packet without its type")),
        _ => super::engine_packet::decode_text(text),
    }
}

/// Decodes one binary packet: a WebSocket binary frame, or a binary record of a payload.
/// Its first byte is the packet type.
pub fn decode_binary(data: Bytes) -> Result<Packet, DecodeError> {
    let kind = *data.first().ok_or(DecodeError::Empty)?;
    typed_binary(kind, data.slice(1..), false)
}

/// A packet of type `kind` (a digit when `digit`, else a byte 0-6) whose data came as
/// bytes. Only messages carry binary data; another type's data must be text.
fn typed_binary(kind: u8, data: Bytes, digit: bool) -> Result<Packet, DecodeError> {
    let kind = if digit { kind.wrapping_sub(b'0') } else { kind };
    if kind == MESSAGE_TYPE {
        return Ok(Packet::Binary(data));
    }
    if kind > PacketType::Noop as u8 {
        return Err(DecodeError::UnknownType(if digit { kind.wrapping_add(b'0') } else { kind }));
    }
    let text = std::str::from_utf8(&data).map_err(|_| DecodeError::InvalidUtf8)?;
    let mut packet = String::with_capacity(1 + text.len());
    packet.push((b'0' + kind) as char);
    packet.push_str(text);
    super::engine_packet::decode_text(&packet)
}

/// The payload of a polling POST, by its content type: a binary payload when the client
/// sent `application/octet-stream`, else a text payload.
pub fn decode_payload(body: &[u8], binary: bool) -> Result<Vec<Packet>, DecodeError> {
    if binary {
        decode_binary_payload(body)
    } else {
        let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
        decode_text_payload(text)
    }
}

/// Splits and decodes a text payload (`<length>:<packet>...`). Fails on the first bad
/// record, as the reference server drops the whole payload.
pub fn decode_text_payload(body: &str) -> Result<Vec<Packet>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut packets = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let colon = rest.find(':').ok_or(DecodeError::BadPayload("length without its colon"))?;
        let length = parse_length(rest[..colon].bytes().map(|b| b.wrapping_sub(b'0')))?;
        rest = &rest[colon + 1..];
        let end = utf16_prefix(rest, length).ok_or(DecodeError::BadPayload("packet shorter than its length"))?;
        let (packet, tail) = rest.split_at(end);
        // Empty records are skipped, as the reference parser does.
        if !packet.is_empty() {
            packets.push(decode_text(packet)?);
        }
        rest = tail;
    }
    Ok(packets)
}

/// Splits and decodes a binary payload.
pub fn decode_binary_payload(mut body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let whole = Bytes::copy_from_slice(body);
    let mut packets = Vec::new();
    while let Some((&record, rest)) = body.split_first() {
        let end = rest.iter().position(|&b| b == LENGTH_END).ok_or(DecodeError::BadPayload("length without its end"))?;
        let length = parse_length(rest[..end].iter().copied())?;
        let data = &rest[end + 1..];
        if data.len() < length {
            return Err(DecodeError::BadPayload("packet shorter than its length"));
        }
        let (packet, tail) = data.split_at(length);
        packets.push(match record {
            RECORD_TEXT => decode_text(std::str::from_utf8(packet).map_err(|_| DecodeError::InvalidUtf8)?)?,
            RECORD_BINARY => {
                let at = whole.len() - data.len();
                decode_binary(whole.slice(at..at + length))?
            }
            _ => return Err(DecodeError::BadPayload("record is neither text nor binary")),
        });
        body = tail;
    }
    Ok(packets)
}

/// A length written as decimal digits (each a value 0-9).
fn parse_length(digits: impl Iterator<Item = u8>) -> Result<usize, DecodeError> {
    let mut length: usize = 0;
    let mut count = 0;
    for d in digits {
        count += 1;
        if d > 9 || count > MAX_LENGTH_DIGITS {
            return Err(DecodeError::BadPayload("bad length"));
        }
        length = length * 10 + d as usize;
    }
    if count == 0 {
        return Err(DecodeError::BadPayload("empty length"));
    }
    Ok(length)
}

/// The byte length of the first `units` UTF-16 code units of `text`, or None if it is
/// shorter or the count ends inside a character.
fn utf16_prefix(text: &str, units: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    if units <= bytes.len() && bytes[..units].is_ascii() {
        return Some(units);
    }
    let mut counted = 0;
    for (at, c) in text.char_indices() {
        if counted == units {
            return Some(at);
        }
        counted += c.len_utf16();
        if counted > units {
            return None;
        }
    }
    (counted == units).then_some(text.len())
}

/// UTF-16 code units of a UTF-8 text: one per character, two for those beyond U+FFFF.
pub fn utf16_len(text: &[u8]) -> usize {
    text.iter().map(|&b| usize::from((b as i8) >= -0x40) + usize::from(b >= 0xF0)).sum()
}

/// The frame payload of a binary message on WebSocket: its type byte, then the data.
/// (One copy per recipient; only protocol 3 sessions pay it.)
pub fn binary_frame(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + data.len());
    out.put_u8(MESSAGE_TYPE);
    out.put_slice(data);
    out.freeze()
}

/// The body of a polling GET for a protocol 3 client, and whether it is binary
/// (`application/octet-stream`) rather than text. `base64`: the client asked for
/// binary data as base64 (`b64=1`), so the payload is always text.
pub fn encode_payload(packets: &[OutPacket], base64: bool) -> (Bytes, bool) {
    let has_binary = packets.iter().any(|p| matches!(p, OutPacket::Binary(_)));
    if has_binary && !base64 {
        (encode_binary_payload(packets), true)
    } else {
        (encode_text_payload(packets), false)
    }
}

/// A text payload: `<length>:<packet>` for each packet, binary ones as `b4<base64>`.
pub fn encode_text_payload(packets: &[OutPacket]) -> Bytes {
    if packets.is_empty() {
        return Bytes::from_static(b"0:");
    }
    let size: usize = packets.iter().map(|p| p.len() * 4 / 3 + 16).sum();
    let mut out = BytesMut::with_capacity(size);
    for p in packets {
        match p {
            OutPacket::Text(b) => {
                out.put_slice(utf16_len(b).to_string().as_bytes());
                out.put_u8(b':');
                out.put_slice(b);
            }
            OutPacket::Binary(b) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(b);
                out.put_slice((encoded.len() + 2).to_string().as_bytes());
                out.put_slice(b":b4");
                out.put_slice(encoded.as_bytes());
            }
        }
    }
    out.freeze()
}

/// A binary payload: each packet as a record (text as UTF-8, binary with its type byte).
pub fn encode_binary_payload(packets: &[OutPacket]) -> Bytes {
    let size: usize = packets.iter().map(|p| p.len() + 16).sum();
    let mut out = BytesMut::with_capacity(size);
    for p in packets {
        let (record, length) = match p {
            OutPacket::Text(b) => (RECORD_TEXT, b.len()),
            OutPacket::Binary(b) => (RECORD_BINARY, b.len() + 1),
        };
        out.put_u8(record);
        out.extend(length.to_string().bytes().map(|d| d - b'0'));
        out.put_u8(LENGTH_END);
        match p {
            OutPacket::Text(b) => out.put_slice(b),
            OutPacket::Binary(b) => {
                out.put_u8(MESSAGE_TYPE);
                out.put_slice(b);
            }
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> OutPacket {
        OutPacket::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn text_payload_lengths_count_utf16_code_units() {
        // "é" is 2 bytes and 1 unit; "😀" is 4 bytes and 2 units (a surrogate pair).
        let body = encode_text_payload(&[text("4héllo"), text("42[\"😀\"]"), OutPacket::control(PacketType::Pong)]);
        assert_eq!(std::str::from_utf8(&body).unwrap(), "6:4héllo8:42[\"😀\"]1:3");
        assert_eq!(
            decode_text_payload(std::str::from_utf8(&body).unwrap()).unwrap(),
            vec![Packet::Message("héllo".into()), Packet::Message("2[\"😀\"]".into()), Packet::Pong("".into())]
        );
    }

    #[test]
    fn text_payload_as_the_js_client_writes_it() {
        // What engine.io-parser 2.x encodePayload gives for ping, "日本" and a base64 buffer.
        let packets = decode_text_payload("1:23:4日本6:b4AQID").unwrap();
        assert_eq!(
            packets,
            vec![Packet::Ping("".into()), Packet::Message("日本".into()), Packet::Binary(Bytes::from_static(&[1, 2, 3]))]
        );
        // Empty records are skipped.
        assert_eq!(decode_text_payload("0:1:2").unwrap(), vec![Packet::Ping("".into())]);
    }

    #[test]
    fn bad_text_payloads_are_refused() {
        for bad in ["", "2", "x:2", "3:4a", "1:", "2:😀", "1:😀", "12345678901:4", ":4", "5:b4!!!", "1:9", "2:b9AA=="] {
            assert!(decode_text_payload(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn binary_over_text_is_base64_with_its_type() {
        let body = encode_text_payload(&[text("451-[\"b\",{\"_placeholder\":true,\"num\":0}]"), OutPacket::Binary(Bytes::from_static(&[1, 2, 3, 4]))]);
        assert_eq!(std::str::from_utf8(&body).unwrap(), "39:451-[\"b\",{\"_placeholder\":true,\"num\":0}]10:b4AQIDBA==");
        assert_eq!(decode_text("b4AQIDBA==").unwrap(), Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])));
        assert_eq!(decode_text("4hi").unwrap(), Packet::Message("hi".into()));
        assert!(decode_text("b").is_err());
        assert_eq!(decode_text("béA=="), Err(DecodeError::UnknownType(0xC3)));
        assert_eq!(decode_text("b9AA=="), Err(DecodeError::UnknownType(b'9')));
    }

    #[test]
    fn binary_payload_round_trip() {
        let packets = [text("4é"), OutPacket::Binary(Bytes::from_static(&[0xFF, 0])), OutPacket::control(PacketType::Noop)];
        let (body, binary) = encode_payload(&packets, false);
        assert!(binary);
        // text "4é": 3 UTF-8 bytes; binary: type byte + 2 bytes; noop: 1 byte.
        let mut expected = vec![0, 3, 0xFF, b'4', 0xC3, 0xA9];
        expected.extend([1, 3, 0xFF, 4, 0xFF, 0]);
        expected.extend([0, 1, 0xFF, b'6']);
        assert_eq!(&body[..], &expected[..]);
        assert_eq!(
            decode_binary_payload(&body).unwrap(),
            vec![Packet::Message("é".into()), Packet::Binary(Bytes::from_static(&[0xFF, 0])), Packet::Noop]
        );
        // Ten bytes or more: the length has two digits.
        let big = OutPacket::Binary(Bytes::from(vec![7u8; 12]));
        assert_eq!(&encode_binary_payload(&[big])[..4], &[1, 1, 3, 0xFF]);
    }

    #[test]
    fn base64_or_no_binary_gives_a_text_payload() {
        let packets = [text("4a"), OutPacket::Binary(Bytes::from_static(&[1]))];
        let (body, binary) = encode_payload(&packets, true);
        assert!(!binary);
        assert_eq!(&body[..], b"2:4a6:b4AQ==");
        let (body, binary) = encode_payload(&[text("40")], false);
        assert!(!binary);
        assert_eq!(&body[..], b"2:40");
        assert_eq!(&encode_text_payload(&[])[..], b"0:");
    }

    #[test]
    fn bad_binary_payloads_are_refused() {
        let bad: [&[u8]; 7] = [&[], &[0, 1], &[0, 2, 0xFF, b'4'], &[2, 1, 0xFF, b'4'], &[0, 12, 0xFF, b'4'], &[0, 0xFF], &[1, 1, 0xFF, 9]];
        for body in bad {
            assert!(decode_binary_payload(body).is_err(), "accepted {body:?}");
        }
        assert_eq!(decode_binary_payload(&[0, 2, 0xFF, b'4', 0xFF]), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn websocket_binary_frames_carry_the_type_byte() {
        assert_eq!(&binary_frame(&[9, 8])[..], &[4, 9, 8]);
        assert_eq!(decode_binary(Bytes::from_static(&[4, 9, 8])).unwrap(), Packet::Binary(Bytes::from_static(&[9, 8])));
        assert_eq!(decode_binary(Bytes::from_static(&[2])).unwrap(), Packet::Ping("".into()));
        assert_eq!(decode_binary(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(decode_binary(Bytes::from_static(&[7, 1])), Err(DecodeError::UnknownType(7)));
    }

    /// The packet as a server would queue it (control packets lose their data).
    fn to_out(p: &Packet) -> OutPacket {
        match p {
            Packet::Open => OutPacket::control(PacketType::Open),
            Packet::Close => OutPacket::control(PacketType::Close),
            Packet::Ping(s) => OutPacket::text(PacketType::Ping, s),
            Packet::Pong(s) => OutPacket::text(PacketType::Pong, s),
            Packet::Message(s) => OutPacket::text(PacketType::Message, s),
            Packet::Binary(b) => OutPacket::Binary(b.clone()),
            Packet::Upgrade => OutPacket::control(PacketType::Upgrade),
            Packet::Noop => OutPacket::control(PacketType::Noop),
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic_and_what_decodes_round_trips() {
        // A small deterministic generator over the bytes that matter to the framing.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces = ["0", "4", "6", "2", "b4", "b", "AQ==", "é", "😀", "x", ":", "\u{0}"];
        let mut decoded = (0, 0);
        for _ in 0..30_000 {
            // Records with mostly right lengths, sometimes wrong, and sometimes a random byte.
            let (mut text, mut binary) = (Vec::new(), Vec::new());
            for _ in 0..(next() % 4) {
                let data: String = (0..(next() % 4)).map(|_| pieces[next() as usize % pieces.len()]).collect();
                let skew = [0i64, 0, 0, 1, -1][next() as usize % 5];
                let units = (data.encode_utf16().count() as i64 + skew).max(0);
                text.extend(format!("{units}:{data}").bytes());
                let bytes = (data.len() as i64 + skew).max(0);
                binary.push([0u8, 1, 0, 1, 2][next() as usize % 5]);
                binary.extend(bytes.to_string().bytes().map(|d| d - b'0'));
                binary.push(0xFF);
                binary.extend(data.bytes());
            }
            if next() % 8 == 0 && !text.is_empty() {
                let at = next() as usize % text.len();
                text[at] = next() as u8;
                let at = next() as usize % binary.len();
                binary[at] = next() as u8;
            }
            let body = binary;
            if let Ok(packets) = decode_binary_payload(&body) {
                decoded.0 += 1;
                let out: Vec<OutPacket> = packets.iter().map(to_out).collect();
                assert_eq!(decode_binary_payload(&encode_binary_payload(&out)).unwrap(), packets, "{body:?}");
            }
            if let Ok(text) = std::str::from_utf8(&text) {
                if let Ok(packets) = decode_text_payload(text) {
                    decoded.1 += 1;
                    let out: Vec<OutPacket> = packets.iter().map(to_out).collect();
                    let again = encode_text_payload(&out);
                    assert_eq!(decode_text_payload(std::str::from_utf8(&again).unwrap()).unwrap(), packets, "{text:?}");
                }
            }
        }
        assert!(decoded.0 > 100 && decoded.1 > 100, "too few valid bodies generated: {decoded:?}");
    }

    #[test]
    fn utf16_length_of_utf8() {
        assert_eq!(utf16_len(b"abc"), 3);
        assert_eq!(utf16_len("é日😀".as_bytes()), 4);
    }
}
