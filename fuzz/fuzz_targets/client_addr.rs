//! The client address behind trusted proxies (`cluster::resolve_client_addr`), from
//! `X-Forwarded-For` and `Forwarded` headers a client can write into.
//!
//! The input's first byte picks the mode:
//! - even: the rest becomes raw header values (split on 0xFF), under both header names.
//!   Checks: an untrusted peer's headers are ignored; the answer is the peer or an
//!   address that appears in the headers' text.
//! - odd: the rest describes the hops (trusted or not, each written in one of the forms
//!   proxies use: `1.2.3.4`, `1.2.3.4:5`, `[v6]:5`, `"[v6]"`, `unknown`, an obfuscated
//!   name), split over one or more headers of one kind. Checks the exact answer: walking
//!   from the nearest hop back, the first untrusted hop is the client; an unknown hop stops
//!   the walk at the last trusted hop; `Forwarded` wins over `X-Forwarded-For`.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use shoal::cluster::resolve_client_addr;
use shoal::TrustedProxies;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Arbitrary, Debug, Clone)]
enum Hop {
    V4 { octets: [u8; 4], port: Option<u16> },
    V6 { octets: [u8; 16], port: Option<u16>, quoted: bool },
    Unknown,
    Obfuscated(u8),
}

#[derive(Arbitrary, Debug)]
struct Case {
    peer_trusted: bool,
    peer_port: u16,
    forwarded: bool,
    hops: Vec<Hop>,
    /// Where the list is cut into separate header lines (indexes into hops).
    splits: Vec<u8>,
    /// An X-Forwarded-For the client forged beside a Forwarded (must lose).
    decoy: bool,
}

fn trusted() -> TrustedProxies {
    TrustedProxies::parse(&["10.0.0.0/8", "fd00::/8"]).unwrap()
}

fn hop_addr(h: &Hop) -> Option<SocketAddr> {
    match h {
        Hop::V4 { octets, port } => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(*octets)), port.unwrap_or(0))),
        Hop::V6 { octets, port, .. } => {
            let ip = Ipv6Addr::from(*octets);
            // An IPv4 address seen through IPv6 is that IPv4 address.
            let ip = ip.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(ip));
            Some(SocketAddr::new(ip, port.unwrap_or(0)))
        }
        Hop::Unknown | Hop::Obfuscated(_) => None,
    }
}

fn hop_text(h: &Hop, forwarded: bool) -> String {
    let node = match h {
        Hop::V4 { octets, port: None } => Ipv4Addr::from(*octets).to_string(),
        Hop::V4 { octets, port: Some(p) } => format!("{}:{p}", Ipv4Addr::from(*octets)),
        Hop::V6 { octets, port: None, quoted: false } if !forwarded => Ipv6Addr::from(*octets).to_string(),
        Hop::V6 { octets, port: None, .. } => format!("[{}]", Ipv6Addr::from(*octets)),
        Hop::V6 { octets, port: Some(p), .. } => format!("[{}]:{p}", Ipv6Addr::from(*octets)),
        Hop::Unknown => "unknown".into(),
        Hop::Obfuscated(n) => format!("_hidden{n}"),
    };
    if forwarded {
        // RFC 7239: an IPv6 node or one with a port must be quoted.
        let quote = node.contains(':') || node.contains('[') || matches!(h, Hop::V6 { quoted: true, .. });
        if quote { format!("for=\"{node}\";proto=http") } else { format!("for={node}") }
    } else {
        node
    }
}

fn structured(c: Case) {
    let t = trusted();
    let peer = if c.peer_trusted { SocketAddr::new("10.0.0.1".parse().unwrap(), c.peer_port) } else { SocketAddr::new("192.0.2.1".parse().unwrap(), c.peer_port) };
    let hops = &c.hops[..c.hops.len().min(64)];
    let name = if c.forwarded { "forwarded" } else { "x-forwarded-for" };
    let mut headers = HeaderMap::new();
    let mut cuts: Vec<usize> = c.splits.iter().map(|s| *s as usize % (hops.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut start = 0;
    for end in cuts.into_iter().chain([hops.len()]) {
        if end > start {
            let line: Vec<String> = hops[start..end].iter().map(|h| hop_text(h, c.forwarded)).collect();
            headers.append(name, HeaderValue::from_str(&line.join(", ")).unwrap());
            start = end;
        }
    }
    if c.decoy && c.forwarded {
        headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.66"));
    }

    // The model: walk from the nearest hop back while hops are trusted.
    let mut want = peer;
    if t.contains(peer.ip()) {
        for hop in hops.iter().rev() {
            match hop_addr(hop) {
                Some(addr) => {
                    want = addr;
                    if !t.contains(addr.ip()) {
                        break;
                    }
                }
                None => break,
            }
        }
    }
    if hops.is_empty() && c.decoy && c.forwarded && t.contains(peer.ip()) {
        // No Forwarded header was written: the X-Forwarded-For is the only one.
        want = "198.51.100.66:0".parse().unwrap();
    }
    let got = resolve_client_addr(peer, &headers, |ip| t.contains(ip));
    assert_eq!(got, want, "headers {headers:?}");
}

fn raw(data: &[u8]) {
    let t = trusted();
    let mut headers = HeaderMap::new();
    for (i, value) in data.split(|b| *b == 0xff).enumerate() {
        let Ok(v) = HeaderValue::from_bytes(value) else { continue };
        headers.append(if i % 2 == 0 { "x-forwarded-for" } else { "forwarded" }, v);
    }
    let untrusted: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    assert_eq!(resolve_client_addr(untrusted, &headers, |ip| t.contains(ip)), untrusted);
    let peer: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let got = resolve_client_addr(peer, &headers, |ip| t.contains(ip));
    if got != peer {
        // The answer came from the headers: its address is written there, in some form.
        let text: String = headers.values().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
        let ip = got.ip();
        let mapped = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().to_string(),
            IpAddr::V6(v6) => v6.to_string(),
        };
        let seen = |s: &str| {
            s.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')).any(|w| {
                w.parse::<IpAddr>().ok() == Some(ip)
                    || w.parse::<SocketAddr>().ok().map(|a| a.ip()) == Some(ip)
                    || w.parse::<IpAddr>().ok().map(|a| a.to_string()) == Some(mapped.clone())
            })
        };
        assert!(seen(&text), "{got} is not in {text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        raw(rest);
    } else if let Ok(c) = Case::arbitrary_take_rest(Unstructured::new(rest)) {
        structured(c);
    }
});
