//! The client's real address, for `socket.handshake.address`. Behind a balancer every
//! connection comes from the balancer, so the address it saw is taken from
//! `Forwarded` (RFC 7239) or `X-Forwarded-For`, and from a PROXY protocol header (read
//! in the accept loop), but only when the peer that sent them is a trusted proxy:
//! anyone else could write anything there. A request forwarded by another node carries
//! the address that node worked out, believed only from cluster peers and trusted proxies.

use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// Set by a node on every request it forwards: `<its id> <cluster secret>`. A marked
/// request is never forwarded again, so forwarding cannot loop.
pub const FORWARDED_BY: &str = "x-shoal-forwarded";
/// Set by a forwarding node: the client address it worked out (`ip:port`).
pub const FORWARDED_CLIENT: &str = "x-shoal-client";

/// Addresses and networks (`10.0.0.0/8`, `::1`) whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses a list of addresses and CIDRs.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for item in list {
            let item = item.as_ref().trim();
            if item.is_empty() {
                continue;
            }
            let (ip, bits) = match item.split_once('/') {
                Some((ip, bits)) => (ip, Some(bits)),
                None => (item, None),
            };
            let ip: IpAddr = ip.parse().map_err(|_| format!("{item:?} is not an IP address or CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("{item:?}: bad prefix length"))?,
                None => max,
            };
            nets.push((ip, bits));
        }
        Ok(TrustedProxies { nets })
    }

    /// True if `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|(net, bits)| in_net(ip, *net, *bits))
    }
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The client address of a request that came from `peer`: walks the hops the proxies
/// recorded from the nearest one back, while the hop is trusted. The first untrusted hop
/// is the client. `Forwarded` wins over `X-Forwarded-For` when both are present.
pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: impl Fn(IpAddr) -> bool) -> SocketAddr {
    if !trusted(peer.ip()) {
        return peer;
    }
    let hops = forwarded_for(headers).or_else(|| x_forwarded_for(headers));
    let Some(hops) = hops else { return peer };
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(addr) => {
                client = *addr;
                if !trusted(addr.ip()) {
                    break;
                }
            }
            // `unknown` or an obfuscated name: nothing further back can be believed.
            None => break,
        }
    }
    client
}

/// True if the request was forwarded by a node of the cluster whose secret is `secret`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub fn from_cluster_peer(headers: &HeaderMap, secret: &str) -> bool {
    let Some(mark) = headers.get(FORWARDED_BY).and_then(|v| v.to_str().ok()) else { return false };
    let Some((_node, given)) = mark.split_once(' ') else { return false };
    // Constant time, so the secret cannot be guessed byte by byte.
    given.len() == secret.len() && given.bytes().zip(secret.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The address a forwarding node vouches for, if the request carries one.
pub fn forwarded_client(headers: &HeaderMap) -> Option<SocketAddr> {
    headers.get(FORWARDED_CLIENT)?.to_str().ok()?.parse().ok()
}

/// The hops of every `X-Forwarded-For` header, in order (None: unparsable).
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<SocketAddr>>> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let value = value.to_str().ok()?;
        hops.extend(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_node));
    }
    (!hops.is_empty()).then_some(hops)
}

/// The `for=` hops of every `Forwarded` header, in order.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<SocketAddr>>> {
    let mut hops = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let value = value.to_str().ok()?;
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim().trim_matches('"'))
            });
            // An element without `for=` still is a hop, one we know nothing about.
            hops.push(node.and_then(parse_node));
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// `1.2.3.4`, `1.2.3.4:5`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:5`.
fn parse_node(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(SocketAddr::new(canonical(addr.ip()), addr.port()));
    }
    let ip = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(s);
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(canonical(ip), 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1", "fd00::/8"]).unwrap();
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!t.contains("127.0.0.2".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("fe80::1".parse().unwrap()));
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["nginx"]).is_err());
    }

    #[test]
    fn untrusted_peers_headers_are_ignored() {
        let t = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(resolve(addr("127.0.0.9:5000"), &h, |ip| t.contains(ip)), addr("127.0.0.9:5000"));
    }

    #[test]
    fn x_forwarded_for_from_the_right() {
        let t = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        // The client forged the first entry; the balancer appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9"), ("x-forwarded-for", "10.0.0.2")]);
        assert_eq!(resolve(addr("10.0.0.1:80"), &h, |ip| t.contains(ip)).ip(), "203.0.113.9".parse::<IpAddr>().unwrap());
        let h = headers(&[("x-forwarded-for", "10.0.0.3")]);
        assert_eq!(resolve(addr("10.0.0.1:80"), &h, |ip| t.contains(ip)).ip(), "10.0.0.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_header() {
        let t = TrustedProxies::parse(&["10.0.0.1"]).unwrap();
        let h = headers(&[("forwarded", "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=http"), ("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(resolve(addr("10.0.0.1:80"), &h, |ip| t.contains(ip)), addr("[2001:db8:cafe::17]:4711"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(resolve(addr("10.0.0.1:80"), &h, |ip| t.contains(ip)), addr("10.0.0.1:80"));
    }

    #[test]
    fn only_a_peer_with_the_secret_vouches_for_a_client() {
        let secret = "0123456789abcdefghij";
        let h = headers(&[("x-shoal-forwarded", "n2 0123456789abcdefghij"), ("x-shoal-client", "203.0.113.9:4000")]);
        assert!(from_cluster_peer(&h, secret));
        assert_eq!(forwarded_client(&h), Some(addr("203.0.113.9:4000")));
        for forged in ["n2 0123456789abcdefghiX", "n2 0123456789abcdefghi", "n2", "0123456789abcdefghij", ""] {
            let mut h = HeaderMap::new();
            h.insert(FORWARDED_BY, HeaderValue::from_str(forged).unwrap());
            assert!(!from_cluster_peer(&h, secret), "{forged:?}");
        }
        assert!(!from_cluster_peer(&HeaderMap::new(), secret));
    }
}
