//! Serving a service on a TCP listener: one task per connection, HTTP/1.1 with
//! upgrades, the peer address as a request extension, a deadline for request headers
//! (so half-sent requests cannot hold connections), and a cap on open connections.
//!
//! A listener behind a TCP balancer (HAProxy `send-proxy`, AWS NLB) may also accept the
//! PROXY protocol (v1 or v2, parsed in `proxy_protocol.rs`): the header is read before
//! HTTP, and its source address becomes the peer address, but only when the TCP peer is
//! one the options trust. Each connection reaches hyper as an [`engine::Conn`], so the
//! engine can take the stream back after a WebSocket upgrade.

pub(crate) mod proxy_protocol;

use crate::cluster::TrustedProxies;
use crate::engine::{Conn, PeerAddr};
use crate::metrics::{Limit, LimitHits};
use proxy_protocol::read_proxy_header;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Limits and options of [`serve_with`].
#[derive(Clone)]
pub struct ServeOptions {
    /// Time a client has to send a request's headers (default 10 s).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) a client may send, in bytes
    /// (default 16 KiB, as Node's http server). A larger head is answered 431 and the
    /// connection closed, so a connection cannot hold more than this while its headers
    /// arrive. At least 8 KiB (hyper's floor).
    pub max_header_bytes: usize,
    /// Connections beyond this are closed at once (default 100,000).
    pub max_connections: usize,
    /// Accept a PROXY protocol header (v1 or v2) at the start of a connection (default
    /// false). Connections without one are served as usual, so peers that speak plain
    /// HTTP (other nodes, health checks) still work. A malformed header closes the
    /// connection.
    pub proxy_protocol: bool,
    /// The TCP peers whose PROXY header is believed (default: none). From any other peer
    /// the header is read and ignored: the peer address stays the socket's. Usually
    /// `io.trusted_proxies().clone()`.
    pub trusted_proxies: TrustedProxies,
    /// Where the listener counts the limits it enforces (request heads answered 431,
    /// connections refused over `max_connections`).
    /// [`crate::Server::serve_options`] sets it to the server's, so they show in its
    /// metrics; the default counts into nothing that is exposed.
    pub limit_hits: LimitHits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { header_read_timeout: Duration::from_secs(10), max_header_bytes: 16 * 1024, max_connections: 100_000, proxy_protocol: false, trusted_proxies: TrustedProxies::default(), limit_hits: LimitHits::default() }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_connections", &self.max_connections)
            .field("proxy_protocol", &self.proxy_protocol)
            .field("trusted_proxies", &self.trusted_proxies)
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

/// [`serve`] with options: limits on connections and headers, the PROXY protocol.
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
            options.limit_hits.hit(Limit::MaxConnections);
            tracing::warn!(%peer, limit = options.max_connections, "connection limit reached, refusing");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let slot = OpenSlot::take(&open);
        let service = service.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let header_timeout = options.header_read_timeout;
            let (stream, peer) = if options.proxy_protocol {
                match tokio::time::timeout(header_timeout, read_proxy_header(stream)).await {
                    Ok(Ok((stream, replay, source))) => {
                        let stream = Conn::new(stream, replay, Some(Box::new(slot)));
                        let trusted = options.trusted_proxies.contains(peer.ip());
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
                        return;
                    }
                    Err(_) => return,
                }
            } else {
                (Conn::new(stream, Vec::new(), Some(Box::new(slot))), peer)
            };
            let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                let mut service = service.clone();
                tower_service::Service::call(&mut service, req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(options.max_header_bytes.max(8192))
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                if e.is_parse_too_large() {
                    // hyper answered 431 and closed.
                    options.limit_hits.hit(Limit::RequestHead);
                    tracing::debug!(%peer, limit = options.max_header_bytes, "request head too large, answered 431");
                } else {
                    tracing::trace!(%peer, error = %e, "connection ended with an error");
                }
            }
        });
    }
}


/// A connection's place under `max_connections`, held by its [`Conn`] until the
/// connection is dropped, so connections that upgraded to WebSocket still count.
struct OpenSlot(Arc<AtomicUsize>);

impl OpenSlot {
    fn take(open: &Arc<AtomicUsize>) -> OpenSlot {
        open.fetch_add(1, Ordering::Relaxed);
        OpenSlot(open.clone())
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
