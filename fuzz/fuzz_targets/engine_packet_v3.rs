//! Engine.IO protocol 3 framing (`protocol::engine_packet_v3`), from a client's bytes: text
//! payloads (`<length>:<packet>`, UTF-16 lengths), binary payloads, and WebSocket frames.
//!
//! Checks, beyond "no panic": whatever decodes re-encodes (as the server would queue those
//! packets: control packets lose their data) to a text payload and to a binary payload that
//! both decode to the same packets; a binary frame round-trips through `binary_frame`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shoal::protocol::engine_packet::{OutPacket, Packet, PacketType};
use shoal::protocol::engine_packet_v3::{
    binary_frame, decode_binary, decode_binary_payload, decode_text, decode_text_payload, encode_binary_payload,
    encode_text_payload,
};

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

/// Both payload forms of `packets` decode back to them.
fn round_trip(packets: &[Packet]) {
    let out: Vec<OutPacket> = packets.iter().map(to_out).collect();
    let text = encode_text_payload(&out);
    let text = std::str::from_utf8(&text).expect("a text payload is UTF-8");
    if packets.is_empty() {
        assert_eq!(text, "0:");
        return;
    }
    assert_eq!(decode_text_payload(text).as_deref(), Ok(packets), "text payload {text:?}");
    let binary = encode_binary_payload(&out);
    assert_eq!(decode_binary_payload(&binary).as_deref(), Ok(packets), "binary payload {binary:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(packets) = decode_binary_payload(data) {
        round_trip(&packets);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(packets) = decode_text_payload(text) {
            round_trip(&packets);
        }
        if let Ok(packet) = decode_text(text) {
            round_trip(std::slice::from_ref(&packet));
        }
    }
    if let Ok(packet) = decode_binary(Bytes::copy_from_slice(data)) {
        if let Packet::Binary(b) = &packet {
            assert_eq!(decode_binary(binary_frame(b)).as_ref(), Ok(&packet));
        }
        round_trip(std::slice::from_ref(&packet));
    }
});
