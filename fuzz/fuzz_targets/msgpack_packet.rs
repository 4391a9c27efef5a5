//! Socket.IO packets in the msgpack parser's format (`protocol::msgpack_packet`), from a
//! client, and MessagePack values (`protocol::msgpack`), which the Redis adapter reads too.
//!
//! Checks, beyond "no panic" (lengths are not trusted for allocation, deep nesting is an
//! error):
//! - what decodes as a value survives encode/decode unchanged, and its encoding is a fixed
//!   point;
//! - what decodes as a packet is well-formed: the namespace starts with `/`, an ack id is
//!   at most 2^53, EVENT data is an array led by a name, ACK has an id and array data,
//!   and the BINARY_* kinds are exactly the events and acks that hold bytes;
//! - encode(decode(x)) decodes to the same packet, and encoding it again gives the same
//!   bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::protocol::msgpack;
use shoal::protocol::msgpack_packet::{decode, encode};
use shoal::protocol::socket_packet::{Packet, PacketKind};
use shoal::Value;

fn check_well_formed(p: &Packet) {
    assert!(p.nsp.starts_with('/'), "namespace {:?}", p.nsp);
    if let Some(id) = p.id {
        assert!(id <= 1 << 53);
    }
    let binary = p.data.as_ref().is_some_and(Value::has_binary);
    match p.kind {
        PacketKind::Event | PacketKind::BinaryEvent => {
            let a = p.data.as_ref().and_then(Value::as_array).expect("EVENT data is an array");
            assert!(matches!(a.first(), Some(Value::String(_)) | Some(Value::Number(_))));
            assert_eq!(p.kind == PacketKind::BinaryEvent, binary);
        }
        PacketKind::Ack | PacketKind::BinaryAck => {
            assert!(p.id.is_some());
            assert!(p.data.as_ref().and_then(Value::as_array).is_some());
            assert_eq!(p.kind == PacketKind::BinaryAck, binary);
        }
        PacketKind::Connect => assert!(matches!(p.data, None | Some(Value::Object(_)))),
        PacketKind::Disconnect => assert!(p.data.is_none()),
        PacketKind::ConnectError => assert!(matches!(p.data, Some(Value::Object(_)) | Some(Value::String(_)))),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = msgpack::decode(data) {
        let packed = msgpack::encode(&value);
        let unpacked = msgpack::decode(&packed).expect("our own msgpack decodes");
        assert_eq!(unpacked, value, "msgpack round trip changed the value");
        assert_eq!(msgpack::encode(&unpacked), packed, "msgpack encoding is not a fixed point");
    }

    let Ok(packet) = decode(data) else { return };
    check_well_formed(&packet);
    let encoded = encode(&packet);
    let back = decode(&encoded).unwrap_or_else(|e| panic!("{encoded:02x?} does not decode: {e}"));
    assert_eq!(back, packet);
    assert_eq!(encode(&back), encoded, "encoding is not a fixed point");
});
