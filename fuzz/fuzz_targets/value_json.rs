//! The JSON reader behind every event's arguments (`protocol::value::parse_json`).
//!
//! Checks, beyond "no panic" (deep nesting must be an error, not a stack overflow):
//! - it accepts exactly what serde_json accepts, and reads the same tree (binary never
//!   appears in parsed JSON);
//! - write_json(parse(x)) parses back to the same value, and writing that again gives the
//!   same text (the writer is a fixed point);
//! - the same value survives MessagePack (the Redis wire) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::protocol::value::parse_json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ours = parse_json(text);
    let theirs = serde_json::from_str::<serde_json::Value>(text);
    let value = match (ours, theirs) {
        (Ok(v), Ok(sj)) => {
            assert_eq!(v.to_json(), sj, "a different tree than serde_json's");
            v
        }
        (Err(_), Err(_)) => return,
        (Ok(v), Err(e)) => panic!("accepted what serde_json refuses ({e}): {v:?}"),
        (Err(e), Ok(_)) => panic!("refused what serde_json accepts: {e}"),
    };
    assert!(!value.has_binary());

    let mut written = String::new();
    let mut attachments = Vec::new();
    value.write_json(&mut written, &mut attachments);
    assert!(attachments.is_empty());
    let back = parse_json(&written).unwrap_or_else(|e| panic!("our own JSON {written:?} does not parse: {e}"));
    assert_eq!(back, value, "JSON round trip changed the value ({written:?})");
    let mut again = String::new();
    back.write_json(&mut again, &mut attachments);
    assert_eq!(again, written);

    let packed = shoal::adapter::redis::wire::encode_msgpack(&value);
    let unpacked = shoal::adapter::redis::wire::decode_msgpack(&packed).expect("our own msgpack decodes");
    assert_eq!(unpacked, value, "msgpack round trip changed the value");
});
