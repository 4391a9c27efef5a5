//! Socket.IO packets with binary attachments (`protocol::socket_packet`), from a client.
//!
//! Input: the text message, then each attachment, separated by 0xFF (a byte that never
//! occurs in UTF-8). Checks, beyond "no panic":
//! - the announced attachment count is within the limit, and the packet completes exactly
//!   when that many attachments have been pushed;
//! - what decodes is well-formed: the namespace starts with `/` and holds no `,`, an ack
//!   id is at most 2^53, EVENT data is an array led by a name, ACK has an id;
//! - encode(decode(x)) decodes (with its attachments) to the same packet;
//! - the encoded text of a decoded packet is no longer than necessary: re-encoding it
//!   gives the same bytes (the encoder is a fixed point).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::protocol::socket_packet::{decode, encode, Decoded, Packet, PacketKind};
use shoal::Value;

const MAX_ATTACHMENTS: usize = 10;

/// Decodes a text message and feeds it attachments; Err if anything fails.
fn decode_all(text: &str, attachments: &[bytes::Bytes]) -> Result<(Packet, usize), String> {
    match decode(text, MAX_ATTACHMENTS).map_err(|e| e.to_string())? {
        Decoded::Packet(p) => Ok((p, 0)),
        Decoded::Partial(mut partial) => {
            for (i, a) in attachments.iter().enumerate() {
                match partial.push(a.clone()).map_err(|e| e.to_string())? {
                    Ok(p) => return Ok((p, i + 1)),
                    Err(more) => partial = more,
                }
            }
            Err("attachments missing".into())
        }
    }
}

fn normal_kind(k: PacketKind) -> PacketKind {
    match k {
        PacketKind::BinaryEvent => PacketKind::Event,
        PacketKind::BinaryAck => PacketKind::Ack,
        k => k,
    }
}

fn check_well_formed(p: &Packet) {
    assert!(p.nsp.starts_with('/'), "namespace {:?}", p.nsp);
    assert!(!p.nsp.contains(','), "namespace {:?}", p.nsp);
    if let Some(id) = p.id {
        assert!(id <= 1 << 53);
    }
    match p.kind {
        PacketKind::Event | PacketKind::BinaryEvent => {
            let a = p.data.as_ref().and_then(Value::as_array).expect("EVENT data is an array");
            assert!(matches!(a.first(), Some(Value::String(_)) | Some(Value::Number(_))));
        }
        PacketKind::Ack | PacketKind::BinaryAck => {
            assert!(p.id.is_some());
            assert!(p.data.as_ref().and_then(Value::as_array).is_some());
        }
        PacketKind::Connect => assert!(matches!(p.data, None | Some(Value::Object(_)))),
        PacketKind::Disconnect => assert!(p.data.is_none()),
        PacketKind::ConnectError => assert!(matches!(p.data, Some(Value::Object(_)) | Some(Value::String(_)))),
    }
    if !matches!(p.kind, PacketKind::BinaryEvent | PacketKind::BinaryAck) {
        assert!(!p.data.as_ref().is_some_and(Value::has_binary), "binary data in a text packet");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff);
    let Ok(text) = std::str::from_utf8(parts.next().unwrap()) else { return };
    let attachments: Vec<bytes::Bytes> = parts.map(bytes::Bytes::copy_from_slice).collect();

    // The attachment count: the packet completes on exactly the announced one.
    if let Ok(Decoded::Partial(mut partial)) = decode(text, MAX_ATTACHMENTS) {
        let announced: usize = text[1..text.find('-').unwrap()].parse().unwrap();
        assert!((1..=MAX_ATTACHMENTS).contains(&announced));
        for i in 1..=announced {
            match partial.push(bytes::Bytes::new()) {
                Ok(Err(more)) => {
                    assert!(i < announced, "still partial after {i} of {announced}");
                    partial = more;
                }
                Ok(Ok(_)) | Err(_) => {
                    assert_eq!(i, announced, "finished after {i} of {announced}");
                    break;
                }
            }
        }
    }

    let Ok((packet, used)) = decode_all(text, &attachments) else { return };
    check_well_formed(&packet);
    assert!(used <= attachments.len());

    let encoded = encode(&packet);
    let head = encoded.head_bytes();
    assert_eq!(head[0], b'4', "an Engine.IO message");
    let etext = std::str::from_utf8(&head[1..]).expect("encoder wrote UTF-8");
    let (back, back_used) = decode_all(etext, &encoded.attachments).unwrap_or_else(|e| panic!("{etext:?} does not decode: {e}"));
    assert_eq!(back_used, encoded.attachments.len());
    assert_eq!(normal_kind(back.kind), normal_kind(packet.kind));
    assert_eq!((&back.nsp, back.id, &back.data), (&packet.nsp, packet.id, &packet.data));
    let again = encode(&back);
    assert_eq!(again.head_bytes(), encoded.head_bytes(), "encoding is not a fixed point");
    assert_eq!(again.attachments, encoded.attachments);
});
