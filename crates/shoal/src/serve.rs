//! Serving a service on a TCP listener: one task per connection, HTTP/1.1 with
//! upgrades, the peer address as a request extension, a deadline for request headers
//! (so half-sent requests cannot hold connections), and a cap on open connections.
//!
//! A listener behind a TCP balancer (HAProxy `send-proxy`, AWS NLB) may also accept the
//! PROXY protocol (v1 or v2): the header is read before HTTP, and its source address
//! becomes the peer address, but only when the TCP peer is one the options trust.

use crate::engine::PeerAddr;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Limits and options of [`serve_with`].
#[derive(Clone)]
pub struct ServeOptions {
    /// Time a client has to send a request's headers (default 10 s).
    pub header_read_timeout: Duration,
    /// Connections beyond this are closed at once (default 100,000).
    pub max_connections: usize,
    /// Accept a PROXY protocol header (v1 or v2) at the start of a connection (default
    /// false). Connections without one are served as usual, so peers that speak plain
    /// HTTP (other nodes, health checks) still work. A malformed header closes the
    /// connection.
    pub proxy_protocol: bool,
    /// The TCP peers whose PROXY header is believed (default: none). From any other peer
    /// the header is read and ignored: the peer address stays the socket's.
    pub trust_proxy: Option<Arc<dyn Fn(IpAddr) -> bool + Send + Sync>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { header_read_timeout: Duration::from_secs(10), max_connections: 100_000, proxy_protocol: false, trust_proxy: None }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("proxy_protocol", &self.proxy_protocol)
            .field("trust_proxy", &self.trust_proxy.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// Serves `service` on `listener` until `shutdown` completes.
pub async fn serve<S, B>(listener: TcpListener, service: S, shutdown: impl Future<Output = ()>) -> std::io::Result<()>
where
    S: tower_service::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(listener, service, shutdown, ServeOptions::default()).await
}

pub async fn serve_with<S, B>(listener: TcpListener, service: S, shutdown: impl Future<Output = ()>, options: ServeOptions) -> std::io::Result<()>
where
    S: tower_service::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let open = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= options.max_connections {
            tracing::warn!(%peer, "connection limit reached, refusing");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let open = open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let service = service.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let header_timeout = options.header_read_timeout;
            let (stream, peer) = if options.proxy_protocol {
                match tokio::time::timeout(header_timeout, read_proxy_header(stream)).await {
                    Ok(Ok((stream, source))) => {
                        let trusted = options.trust_proxy.as_ref().is_some_and(|trust| trust(peer.ip()));
                        match source {
                            Some(source) if trusted => (stream, source),
                            Some(source) => {
                                tracing::debug!(%peer, %source, "PROXY header from an untrusted peer ignored");
                                (stream, peer)
                            }
                            None => (stream, peer),
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "bad PROXY protocol header, closing");
                        open.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    Err(_) => {
                        open.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                }
            } else {
                (Prefixed::new(Vec::new(), stream), peer)
            };
            let mut stream = stream;
            stream.slot = Some(open);
            let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                let mut service = service.clone();
                tower_service::Service::call(&mut service, req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::trace!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\x00\r\nQUIT\n";
/// The longest v1 header, CRLF included (the spec's limit).
const V1_MAX: usize = 107;

/// What the first bytes of a connection say about a PROXY header.
#[derive(Debug, PartialEq, Eq)]
enum ProxyHeader {
    /// Not a PROXY header: plain HTTP.
    Absent,
    /// Could be one; more bytes needed.
    Incomplete,
    /// A header of `len` bytes, naming the client (None for LOCAL/UNKNOWN).
    Present { len: usize, source: Option<SocketAddr> },
}

/// Parses a PROXY protocol v1 or v2 header at the start of `buf` (no I/O).
fn parse_proxy_header(buf: &[u8]) -> Result<ProxyHeader, &'static str> {
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

/// Reads a PROXY header if the connection starts with one. Bytes read past it are kept
/// for HTTP.
async fn read_proxy_header(mut stream: TcpStream) -> io::Result<(Prefixed, Option<SocketAddr>)> {
    let mut buf = Vec::with_capacity(256);
    loop {
        match parse_proxy_header(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
            ProxyHeader::Absent => return Ok((Prefixed::new(buf, stream), None)),
            ProxyHeader::Present { len, source } => {
                let rest = buf.split_off(len);
                return Ok((Prefixed::new(rest, stream), source));
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

/// A TCP stream with bytes already read from it put back in front. It also holds the
/// connection's place under `max_connections` until it is dropped, so connections that
/// upgraded to WebSocket still count.
pub(crate) struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    stream: TcpStream,
    slot: Option<Arc<AtomicUsize>>,
}

impl Prefixed {
    fn new(prefix: Vec<u8>, stream: TcpStream) -> Prefixed {
        Prefixed { prefix, at: 0, stream, slot: None }
    }

    /// Puts bytes read ahead (e.g. by the HTTP parser, past an upgrade) back in front.
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut prefix = bytes.to_vec();
        prefix.extend_from_slice(&self.prefix[self.at..]);
        self.prefix = prefix;
        self.at = 0;
    }
}

impl Drop for Prefixed {
    fn drop(&mut self) {
        if let Some(open) = &self.slot {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (mut stream, source) = read_proxy_header(stream).await.unwrap();
        assert_eq!(source, Some("9.9.9.9:7".parse().unwrap()));
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "hello");
    }
}
