//! The PROXY protocol v1/v2 header a TCP balancer puts before HTTP
//! (`serve::proxy_protocol::parse_proxy_header`, through `shoal::fuzzing`).
//!
//! The input's first byte picks the mode:
//! - even: the rest is the first bytes of a connection. Checks: a header never claims more
//!   bytes than it was given, nor more than the protocol allows (107 for v1, 16 + 65535 for
//!   v2); bytes after a header change nothing; every shorter prefix of a header is
//!   `Incomplete` (the reader would wait for more, never take it for HTTP or an error);
//!   `Incomplete` only below those bounds (so the reader's loop ends); and a connection that
//!   cannot start with a header is `Absent`, whatever follows.
//! - odd: the rest describes a well-formed header (v1 or v2, IPv4 or IPv6, any address
//!   and port, a TLV tail, then HTTP bytes); the parser must return exactly its length and
//!   the source address written into it.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use shoal::fuzzing::{parse_proxy_header, ProxyHeader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\x00\r\nQUIT\n";

#[derive(Arbitrary, Debug)]
struct Header {
    v2: bool,
    source: ([u8; 16], bool, u16),
    destination: ([u8; 16], u16),
    tlvs: Vec<u8>,
    after: Vec<u8>,
}

fn raw(buf: &[u8]) {
    let result = parse_proxy_header(buf);
    match &result {
        Ok(ProxyHeader::Present { len, .. }) => {
            let len = *len;
            assert!(len <= buf.len(), "header of {len} bytes in {} bytes", buf.len());
            if buf.starts_with(b"PROXY ") {
                assert!(len <= V1_MAX);
                assert_eq!(&buf[len - 2..len], b"\r\n");
            } else {
                assert!(buf.starts_with(V2_SIGNATURE));
                assert_eq!(len, 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize);
            }
            for cut in 0..len {
                assert_eq!(parse_proxy_header(&buf[..cut]), Ok(ProxyHeader::Incomplete), "prefix of {cut} bytes");
            }
            let mut longer = buf[..len].to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(parse_proxy_header(&longer), result);
        }
        Ok(ProxyHeader::Incomplete) => {
            assert!(buf.len() < 16 + 65_535);
            if buf.starts_with(b"PROXY ") {
                assert!(buf.len() < V1_MAX);
            }
        }
        Ok(ProxyHeader::Absent) => {
            assert!(!buf.is_empty());
            let n = buf.len().min(12);
            assert!(&b"PROXY "[..n.min(6)] != &buf[..n.min(6)] && &V2_SIGNATURE[..n] != &buf[..n]);
            let mut longer = buf.to_vec();
            longer.extend_from_slice(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
            assert_eq!(parse_proxy_header(&longer), Ok(ProxyHeader::Absent));
        }
        Err(_) => {
            // An error is final: more bytes cannot turn it into a header.
            let mut longer = buf.to_vec();
            longer.extend_from_slice(&[0u8; 64]);
            assert!(parse_proxy_header(&longer).is_err(), "error became {:?}", parse_proxy_header(&longer));
        }
    }
}

fn structured(h: Header) {
    let (src_octets, v6, sport) = h.source;
    let (dst_octets, dport) = h.destination;
    let (src, dst) = if v6 {
        (IpAddr::V6(Ipv6Addr::from(src_octets)), IpAddr::V6(Ipv6Addr::from(dst_octets)))
    } else {
        let four = |o: [u8; 16]| IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]));
        (four(src_octets), four(dst_octets))
    };
    let mut buf = Vec::new();
    if h.v2 {
        let mut body = Vec::new();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                body.extend_from_slice(&s.octets());
                body.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                body.extend_from_slice(&s.octets());
                body.extend_from_slice(&d.octets());
            }
            _ => unreachable!(),
        }
        body.extend_from_slice(&sport.to_be_bytes());
        body.extend_from_slice(&dport.to_be_bytes());
        body.extend_from_slice(&h.tlvs[..h.tlvs.len().min(1000)]);
        buf.extend_from_slice(V2_SIGNATURE);
        buf.push(0x21); // version 2, PROXY
        buf.push(if v6 { 0x21 } else { 0x11 }); // INET6 or INET, STREAM
        buf.extend_from_slice(&(body.len() as u16).to_be_bytes());
        buf.extend_from_slice(&body);
    } else {
        let proto = if v6 { "TCP6" } else { "TCP4" };
        buf.extend_from_slice(format!("PROXY {proto} {src} {dst} {sport} {dport}\r\n").as_bytes());
    }
    let len = buf.len();
    buf.extend_from_slice(&h.after);
    assert_eq!(parse_proxy_header(&buf), Ok(ProxyHeader::Present { len, source: Some(SocketAddr::new(src, sport)) }), "{buf:?}");
    raw(&buf);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        raw(rest);
    } else if let Ok(h) = Header::arbitrary_take_rest(Unstructured::new(rest)) {
        structured(h);
    }
});
