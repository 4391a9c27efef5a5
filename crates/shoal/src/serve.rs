//! Serving a service on a TCP listener: one task per connection, HTTP/1.1 with
//! upgrades, the peer address as a request extension, a deadline for request headers
//! (so half-sent requests cannot hold connections), and a cap on open connections.

use crate::engine::{PeerAddr, ResponseBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Limits of [`serve_with`].
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Time a client has to send a request's headers (default 10 s).
    pub header_read_timeout: Duration,
    /// Connections beyond this are closed at once (default 100,000).
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { header_read_timeout: Duration::from_secs(10), max_connections: 100_000 }
    }
}

/// Serves `service` on `listener` until `shutdown` completes.
pub async fn serve<S>(listener: TcpListener, service: S, shutdown: impl Future<Output = ()>) -> std::io::Result<()>
where
    S: tower_service::Service<http::Request<Incoming>, Response = http::Response<ResponseBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    serve_with(listener, service, shutdown, ServeOptions::default()).await
}

pub async fn serve_with<S>(listener: TcpListener, service: S, shutdown: impl Future<Output = ()>, options: ServeOptions) -> std::io::Result<()>
where
    S: tower_service::Service<http::Request<Incoming>, Response = http::Response<ResponseBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
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
        let header_timeout = options.header_read_timeout;
        tokio::spawn(async move {
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
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
