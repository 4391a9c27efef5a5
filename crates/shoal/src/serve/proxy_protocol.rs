//! The PROXY protocol (v1 text, v2 binary) that TCP balancers (HAProxy `send-proxy`, AWS
//! NLB) put before the first byte of HTTP: a pure parser and the read that uses it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\x00\r\nQUIT\n";
/// The longest v1 header, CRLF included (the spec's limit).
const V1_MAX: usize = 107;

/// What the first bytes of a connection say about a PROXY header.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// Not a PROXY header: plain HTTP.
    Absent,
    /// Could be one; more bytes needed.
    Incomplete,
    /// A header of `len` bytes, naming the client (None for LOCAL/UNKNOWN).
    Present {
        /// The header's length, to skip.
        len: usize,
        /// The client's address.
        source: Option<SocketAddr>,
    },
}

/// Parses a PROXY protocol v1 or v2 header at the start of `buf` (no I/O).
pub fn parse_proxy_header(buf: &[u8]) -> Result<ProxyHeader, &'static str> {
    let v1 = b"PROXY ";
    let could_be = |sig: &[u8]| sig.starts_with(&buf[..buf.len().min(sig.len())]);
    if buf.is_empty() {
        return Ok(ProxyHeader::Incomplete);
    }
    match (could_be(v1), could_be(V2_SIGNATURE)) {
        (false, false) => return Ok(ProxyHeader::Absent),
        (true, _) if buf.len() < v1.len() => return Ok(ProxyHeader::Incomplete),
        (_, true) if buf.len() < V2_SIGNATURE.len() => return Ok(ProxyHeader::Incomplete),
        _ => {}
    }
    if buf.starts_with(v1) {
        let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
            return if buf.len() >= V1_MAX { Err("PROXY v1 header too long") } else { Ok(ProxyHeader::Incomplete) };
        };
        let line = std::str::from_utf8(&buf[v1.len()..end]).map_err(|_| "PROXY v1 header is not ASCII")?;
        let parts: Vec<&str> = line.split(' ').collect();
        let source = match parts.as_slice() {
            ["UNKNOWN", ..] => None,
            [proto @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
                let ip: IpAddr = src.parse().map_err(|_| "PROXY v1: bad source address")?;
                if (*proto == "TCP4") != ip.is_ipv4() {
                    return Err("PROXY v1: address does not match the protocol");
                }
                let port: u16 = sport.parse().map_err(|_| "PROXY v1: bad source port")?;
                Some(SocketAddr::new(ip, port))
            }
            _ => return Err("PROXY v1: malformed header"),
        };
        return Ok(ProxyHeader::Present { len: end + 2, source });
    }
    if buf.starts_with(V2_SIGNATURE) {
        if buf.len() < 16 {
            return Ok(ProxyHeader::Incomplete);
        }
        let version_command = buf[12];
        if version_command >> 4 != 2 {
            return Err("PROXY v2: unknown version");
        }
        let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if buf.len() < len {
            return Ok(ProxyHeader::Incomplete);
        }
        let body = &buf[16..len];
        let source = match (version_command & 0x0f, buf[13] >> 4) {
            // LOCAL: the proxy's own connection (a health check): keep the socket address.
            (0, _) => None,
            (1, 1) if body.len() >= 12 => {
                let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([body[8], body[9]])))
            }
            (1, 2) if body.len() >= 36 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[..16]);
                Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), u16::from_be_bytes([body[32], body[33]])))
            }
            // AF_UNSPEC or AF_UNIX: no IP address to give.
            (1, 0 | 3) => None,
            (1, _) => return Err("PROXY v2: address block too short"),
            _ => return Err("PROXY v2: unknown command"),
        };
        return Ok(ProxyHeader::Present { len, source });
    }
    Ok(ProxyHeader::Absent)
}

/// Reads a PROXY header if the connection starts with one. Returns the stream, the bytes
/// read past the header (they belong to HTTP) and the client the header names.
pub(super) async fn read_proxy_header(mut stream: TcpStream) -> io::Result<(TcpStream, Vec<u8>, Option<SocketAddr>)> {
    let mut buf = Vec::with_capacity(256);
    loop {
        match parse_proxy_header(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
            ProxyHeader::Absent => return Ok((stream, buf, None)),
            ProxyHeader::Present { len, source } => {
                let rest = buf.split_off(len);
                return Ok((stream, rest, source));
            }
            ProxyHeader::Incomplete => {
                if buf.len() > 16 + 65_535 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "PROXY header too long"));
                }
                let mut chunk = [0u8; 512];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn proxy_v1() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse_proxy_header(h), Ok(ProxyHeader::Present { len: 41, source: Some("192.0.2.7:56324".parse().unwrap()) }));
        let h = b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n";
        assert_eq!(parse_proxy_header(h), Ok(ProxyHeader::Present { len: h.len(), source: Some("[2001:db8::1]:1".parse().unwrap()) }));
        assert_eq!(parse_proxy_header(b"PROXY UNKNOWN\r\n"), Ok(ProxyHeader::Present { len: 15, source: None }));
        assert_eq!(parse_proxy_header(b"PROXY TCP4 1.2.3.4"), Ok(ProxyHeader::Incomplete));
        assert_eq!(parse_proxy_header(b"PRO"), Ok(ProxyHeader::Incomplete));
        assert!(parse_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 x 1\r\n").is_err());
        assert!(parse_proxy_header(b"PROXY TCP4 ::1 ::1 1 1\r\n").is_err());
        assert!(parse_proxy_header(&[b'P', b'R', b'O', b'X', b'Y', b' '].iter().copied().chain(std::iter::repeat(b'1').take(200)).collect::<Vec<_>>()).is_err());
    }

    #[test]
    fn plain_http_is_not_a_proxy_header() {
        assert_eq!(parse_proxy_header(b"GET /socket.io/ HTTP/1.1\r\n"), Ok(ProxyHeader::Absent));
        assert_eq!(parse_proxy_header(b"POST"), Ok(ProxyHeader::Absent));
        assert_eq!(parse_proxy_header(b"PUT /x HTTP/1.1\r\n"), Ok(ProxyHeader::Absent));
        assert_eq!(parse_proxy_header(b""), Ok(ProxyHeader::Incomplete));
    }

    #[test]
    fn proxy_v2() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb]);
        assert_eq!(parse_proxy_header(&h), Ok(ProxyHeader::Present { len: 28, source: Some("192.0.2.7:56324".parse().unwrap()) }));
        assert_eq!(parse_proxy_header(&h[..20]), Ok(ProxyHeader::Incomplete));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse_proxy_header(&local), Ok(ProxyHeader::Present { len: 16, source: None }));
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x21, 0x11, 0, 2, 1, 2]);
        assert!(parse_proxy_header(&bad).is_err());
    }

    #[tokio::test]
    async fn prefixed_stream_replays_the_bytes_read() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut s, b"PROXY TCP4 9.9.9.9 1.1.1.1 7 80\r\nhello").await.unwrap();
        });
        let (stream, _) = listener.accept().await.unwrap();
        client.await.unwrap();
        let (mut stream, replay, source) = read_proxy_header(stream).await.unwrap();
        assert_eq!(source, Some("9.9.9.9:7".parse().unwrap()));
        let mut rest = String::from_utf8(replay).unwrap();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "hello");
    }
}
