//! What other nodes (or any Redis client) publish: the official adapter's messages, in
//! MessagePack or JSON (`adapter::redis::wire`).
//!
//! Checks, beyond "no panic" (MessagePack lengths are not trusted for allocation, deep
//! nesting is an error):
//! - decode_message reads JSON exactly when the bytes start with `{`, MessagePack otherwise;
//! - whatever decodes survives encode_msgpack/decode_msgpack unchanged, and the encoding is
//!   a fixed point;
//! - a packet taken from a message (packet_from_value) is an EVENT with a name, in a
//!   namespace that starts with `/`; packet_to_value gives it back the same, and its
//!   Socket.IO encoding decodes to the same namespace, id and data;
//! - broadcast options taken from a message (opts_from_value) round-trip through
//!   opts_to_value, never ask for a local-only broadcast, and keep only the rooms given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::adapter::redis::wire::{decode_message, decode_msgpack, encode_msgpack, opts_from_value, opts_to_value, packet_from_value, packet_to_value};
use shoal::protocol::socket_packet::{decode, encode, Decoded, PacketKind};
use shoal::Value;

/// An object that reads as a binary placeholder: in a packet with binary data, the
/// Socket.IO format cannot tell it from a real one (socket.io-parser alike), so such
/// packets are left out of the Socket.IO round trip.
fn has_placeholder_shape(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(has_placeholder_shape),
        Value::Object(o) => o.contains_key("_placeholder") || o.values().any(has_placeholder_shape),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = decode_message(data) else { return };
    if data.first() != Some(&b'{') {
        assert_eq!(decode_msgpack(data).as_ref(), Ok(&value));
    } else {
        let text = std::str::from_utf8(data).expect("JSON was UTF-8");
        assert_eq!(shoal::protocol::value::parse_json(text).ok().as_ref(), Some(&value));
    }

    let packed = encode_msgpack(&value);
    let unpacked = decode_msgpack(&packed).expect("our own msgpack decodes");
    assert_eq!(unpacked, value, "msgpack round trip changed the value");
    assert_eq!(encode_msgpack(&unpacked), packed, "msgpack encoding is not a fixed point");

    // A broadcast or a request carries its packet under "packet", or is an array
    // [uid, packet, opts] (a broadcast); try both shapes, and the value itself.
    let candidates = [Some(&value), value.get("packet"), value.as_array().and_then(|a| a.get(1))];
    for candidate in candidates.into_iter().flatten() {
        let Some(packet) = packet_from_value(candidate) else { continue };
        assert_eq!(packet.kind, PacketKind::Event);
        let args = packet.data.as_ref().and_then(Value::as_array).expect("data is an array");
        assert!(matches!(args.first(), Some(Value::String(_))));
        assert_eq!(packet_from_value(&packet_to_value(&packet)).as_ref(), Some(&packet));
        // What local clients receive: the same namespace, id and data.
        if !has_placeholder_shape(packet.data.as_ref().unwrap())
            && packet.nsp.starts_with('/') && !packet.nsp.contains(',') && packet.id.is_none_or(|id| id <= 1 << 53) {
            let e = encode(&packet);
            let text = std::str::from_utf8(&e.head_bytes()[1..]).unwrap();
            let back = match decode(text, usize::MAX) {
                Ok(Decoded::Packet(p)) => Some(p),
                Ok(Decoded::Partial(mut partial)) => {
                    let mut done = None;
                    for a in &e.attachments {
                        match partial.push(a.clone()).expect("own placeholders resolve") {
                            Ok(p) => {
                                done = Some(p);
                                break;
                            }
                            Err(more) => partial = more,
                        }
                    }
                    done
                }
                // A reserved event name (`connect`) is refused from clients; a peer may send it.
                Err(_) => None,
            };
            if let Some(back) = back {
                assert_eq!((&back.nsp, back.id, &back.data), (&packet.nsp, packet.id, &packet.data));
            }
        }
    }

    let opts_source = value.get("opts").or_else(|| value.as_array().and_then(|a| a.get(2))).unwrap_or(&value);
    let opts = opts_from_value(Some(opts_source));
    assert!(!opts.flags.local, "a peer cannot ask for a local-only broadcast");
    assert_eq!(opts_from_value(Some(&opts_to_value(&opts, true))), opts, "options round trip");
    let given = |key: &str| opts_source.get(key).and_then(Value::as_array).map_or(0, Vec::len);
    assert!(opts.rooms.len() <= given("rooms"));
    assert!(opts.except.len() <= given("except"));
});
