//! Engine.IO packets and polling payloads (`protocol::engine_packet`), from a client's bytes.
//!
//! Checks, beyond "no panic":
//! - a payload decodes to one packet per `\x1e`-separated record, or fails with the error
//!   that the first bad record (or the UTF-8 check) calls for;
//! - re-encoding what was decoded gives back each record byte for byte (a control packet
//!   whose data is dropped gives back its type digit), and decodes to the same packets;
//! - a single text packet (a WebSocket frame) round-trips the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::protocol::engine_packet::{decode_payload, decode_text, encode_payload, DecodeError, OutPacket, Packet, PacketType};

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

/// True for the packets whose data the decoder drops (`0abc` is Open).
fn is_control(p: &Packet) -> bool {
    matches!(p, Packet::Open | Packet::Close | Packet::Upgrade | Packet::Noop)
}

/// What the first byte of a record alone says about it.
fn expected_error(record: &[u8]) -> Option<DecodeError> {
    match record.first() {
        None => Some(DecodeError::Empty),
        Some(b'0'..=b'6') => None,
        Some(b'b') => None, // valid or InvalidBase64: the base64 decoder decides
        Some(&b) => Some(DecodeError::UnknownType(b)),
    }
}

fn check_text(record: &str, packet: &Packet) {
    let encoded = encode_payload(&[to_out(packet)]);
    if is_control(packet) {
        assert_eq!(&encoded[..], &record.as_bytes()[..1], "control packet re-encoded differently");
    } else {
        assert_eq!(&encoded[..], record.as_bytes(), "packet re-encoded differently");
    }
    let again = decode_text(std::str::from_utf8(&encoded).expect("encoder wrote UTF-8")).expect("re-encoded packet must decode");
    assert_eq!(&again, packet);
}

fuzz_target!(|data: &[u8]| {
    // One WebSocket text frame.
    if let Ok(text) = std::str::from_utf8(data) {
        match decode_text(text) {
            Ok(packet) => check_text(text, &packet),
            Err(e) => {
                if let Some(want) = expected_error(data) {
                    assert_eq!(e, want);
                } else {
                    assert_eq!(e, DecodeError::InvalidBase64, "{text:?}");
                    assert_eq!(data[0], b'b');
                }
            }
        }
    }

    // A polling POST body.
    let records: Vec<&[u8]> = data.split(|b| *b == 0x1e).collect();
    match decode_payload(data) {
        Ok(packets) => {
            assert_eq!(packets.len(), records.len(), "one packet per record");
            for (record, packet) in records.iter().zip(&packets) {
                check_text(std::str::from_utf8(record).unwrap(), packet);
            }
            let out: Vec<OutPacket> = packets.iter().map(to_out).collect();
            let body = encode_payload(&out);
            assert!(body.len() <= data.len(), "re-encoding grew the payload");
            assert_eq!(decode_payload(&body).expect("re-encoded payload must decode"), packets);
        }
        Err(DecodeError::InvalidUtf8) => assert!(std::str::from_utf8(data).is_err()),
        Err(e) => {
            assert!(std::str::from_utf8(data).is_ok());
            // The first record that fails must fail with this error, and all before it decode.
            let first_bad = records
                .iter()
                .map(|r| decode_text(std::str::from_utf8(r).unwrap()))
                .find_map(Result::err)
                .expect("an error names a bad record");
            assert_eq!(e, first_bad);
        }
    }
});
