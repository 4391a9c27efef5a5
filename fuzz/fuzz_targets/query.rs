//! The query string of every Engine.IO request (`engine::Query::parse`), and the owner
//! node a sid names (`engine::sid::owner_of`), which decides where a request is forwarded.
//!
//! The input's first byte picks the mode:
//! - even: the rest is a raw query string. Checks: parsing is deterministic and a query
//!   rebuilt from what was read reads the same; the owner of a sid is a prefix of it
//!   without `~`.
//! - odd: the rest describes key/value pairs (the three keys, others, any text), written
//!   with form encoding. Checks the exact answer: each field is the last value given for
//!   its key, and `repeated` is set exactly when one of the three keys came twice.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use shoal::engine::sid::owner_of;
use shoal::engine::Query;

#[derive(Arbitrary, Debug)]
enum Key {
    Eio,
    Transport,
    Sid,
    Other(String),
}

fn rebuild(q: &Query) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    if let Some(v) = &q.eio {
        s.append_pair("EIO", v);
    }
    if let Some(v) = &q.transport {
        s.append_pair("transport", v);
    }
    if let Some(v) = &q.sid {
        s.append_pair("sid", v);
    }
    s.finish()
}

fn check_sid(q: &Query) {
    if let Some(sid) = &q.sid {
        if let Some(owner) = owner_of(sid) {
            assert!(sid.starts_with(owner));
            assert!(!owner.contains('~'));
            assert_eq!(sid.as_bytes().get(owner.len()), Some(&b'~'));
        } else {
            assert!(!sid.contains('~'));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else { return };
        let q = Query::parse(text);
        assert_eq!(Query::parse(text), q);
        let again = Query::parse(&rebuild(&q));
        assert_eq!((&again.eio, &again.transport, &again.sid), (&q.eio, &q.transport, &q.sid));
        assert!(!again.repeated);
        check_sid(&q);
        return;
    }
    let Ok(pairs) = <Vec<(Key, String)>>::arbitrary_take_rest(Unstructured::new(rest)) else { return };
    let mut s = form_urlencoded::Serializer::new(String::new());
    let (mut eio, mut transport, mut sid) = (None, None, None);
    let mut counts = [0usize; 3];
    for (k, v) in &pairs {
        let name = match k {
            Key::Eio => "EIO",
            Key::Transport => "transport",
            Key::Sid => "sid",
            Key::Other(name) => name,
        };
        s.append_pair(name, v);
        let slot = match name {
            "EIO" => Some((&mut eio, 0)),
            "transport" => Some((&mut transport, 1)),
            "sid" => Some((&mut sid, 2)),
            _ => None,
        };
        if let Some((slot, i)) = slot {
            *slot = Some(v.clone());
            counts[i] += 1;
        }
    }
    let text = s.finish();
    let q = Query::parse(&text);
    assert_eq!((&q.eio, &q.transport, &q.sid), (&eio, &transport, &sid), "{text:?}");
    assert_eq!(q.repeated, counts.iter().any(|c| *c > 1), "{text:?}");
    check_sid(&q);
});
