//! Forwarding a request to the node that owns its session. Any balancer may send a
//! session's requests to any node; the node that gets one for a session it does not own
//! passes it to the owner named by the sid:
//! - a polling GET/POST goes over a pooled keep-alive HTTP/1.1 connection, its body
//!   streamed, and the owner's response comes back unchanged;
//! - a WebSocket upgrade goes over a fresh connection; once both sides switched
//!   protocols the two connections are piped to each other, byte for byte.
//!
//! Every hop has a deadline, and a forwarded request is marked (`x-shoal-forwarded`) and
//! never forwarded again. When the owner is unknown or cannot be reached, the caller
//! answers "Session ID unknown", so the client reconnects.

use super::client_addr::{FORWARDED_BY, FORWARDED_CLIENT};
use super::membership::Membership;
use crate::metrics::{NodeMetrics, ReasonLabel, TransportLabel};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use super::ingress::{BoxError, ServiceBody as Body};

/// Time to open a connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time an owner has to answer a WebSocket upgrade.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are closed well before the peer may close them (it gives a
/// request's headers 10 s, ServeOptions::header_read_timeout), so a request does not
/// land on a connection that is being closed.
const POOL_IDLE: Duration = Duration::from_secs(5);
/// Once one direction of a piped WebSocket ended, the other gets this long to finish.
const PIPE_LINGER: Duration = Duration::from_secs(5);

/// Why a request could not be forwarded.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// No live node has the owner's id.
    UnknownOwner,
    /// The owner's address did not accept a connection.
    Unreachable,
    /// The owner did not answer in time.
    Timeout,
    /// The connection to the owner broke mid-request.
    Broken,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::UnknownOwner => "unknown_owner",
            Failure::Unreachable => "unreachable",
            Failure::Timeout => "timeout",
            Failure::Broken => "broken",
        }
    }
}

pub struct Forwarder {
    /// `<node id> <cluster secret>`, the value of `x-shoal-forwarded`.
    forwarded_by: HeaderValue,
    membership: Arc<Membership>,
    client: Client<HttpConnector, Body>,
    /// Deadline of a forwarded polling request, answer included: a long-polling GET is
    /// answered within a ping interval.
    polling_timeout: Duration,
    metrics: Arc<NodeMetrics>,
}

impl Forwarder {
    pub(crate) fn new(membership: Arc<Membership>, polling_timeout: Duration, metrics: Arc<NodeMetrics>) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Forwarder {
            // Node ids and secrets are checked to be letters, digits, '-' and '_'.
            forwarded_by: HeaderValue::from_str(&format!("{} {}", membership.node_id(), membership.secret())).expect("node ids and secrets are header-safe"),
            membership,
            client,
            polling_timeout,
            metrics,
        }
    }

    fn failed(&self, failure: Failure) -> Failure {
        self.metrics.forward_failures.get_or_create(&ReasonLabel { reason: failure.label() }).inc();
        failure
    }

    /// Passes `req` to node `owner` and returns its answer.
    pub async fn forward<B>(&self, req: Request<B>, owner: &str, client: SocketAddr) -> Result<Response<Body>, Failure>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(address) = self.membership.address_of(owner).await else {
            return Err(self.failed(Failure::UnknownOwner));
        };
        let websocket = is_websocket_upgrade(req.headers());
        let transport = if websocket { "websocket" } else { "polling" };
        self.metrics.forwarded.get_or_create(&TransportLabel { transport }).inc();
        let result = if websocket { self.websocket(req, &address, client).await } else { self.polling(req, &address, client).await };
        result.map_err(|f| {
            tracing::debug!(owner, %address, failure = ?f, "forwarding failed");
            self.failed(f)
        })
    }

    fn mark_forwarded(&self, headers: &mut HeaderMap, client: SocketAddr) {
        headers.insert(HeaderName::from_static(FORWARDED_BY), self.forwarded_by.clone());
        headers.insert(HeaderName::from_static(FORWARDED_CLIENT), HeaderValue::from_str(&client.to_string()).expect("an address is header-safe"));
    }

    async fn polling<B>(&self, req: Request<B>, address: &str, client: SocketAddr) -> Result<Response<Body>, Failure>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        let body: Body = body.map_err(Into::into).boxed_unsync();
        let path = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        parts.uri = Uri::try_from(format!("http://{address}{path}")).map_err(|_| Failure::UnknownOwner)?;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        self.mark_forwarded(&mut parts.headers, client);
        let deadline = tokio::time::Instant::now() + self.polling_timeout;
        let res = match tokio::time::timeout_at(deadline, self.client.request(Request::from_parts(parts, body))).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) if e.is_connect() => return Err(Failure::Unreachable),
            Ok(Err(_)) => return Err(Failure::Broken),
            Ok(Ok(res)) => res,
        };
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = Deadline { inner: body, sleep: Box::pin(tokio::time::sleep_until(deadline)) };
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }

    async fn websocket<B>(&self, mut req: Request<B>, address: &str, client: SocketAddr) -> Result<Response<Body>, Failure> {
        let client_side = hyper::upgrade::on(&mut req);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(_)) => return Err(Failure::Unreachable),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await.map_err(|_| Failure::Broken)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });

        let (parts, _body) = req.into_parts();
        let mut out = Request::new(Empty::<Bytes>::new());
        *out.method_mut() = parts.method;
        *out.uri_mut() = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/").parse().map_err(|_| Failure::Broken)?;
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        self.mark_forwarded(&mut headers, client);
        *out.headers_mut() = headers;

        let mut res = match tokio::time::timeout(UPGRADE_TIMEOUT, sender.send_request(out)).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(_)) => return Err(Failure::Broken),
            Ok(Ok(res)) => res,
        };
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The owner refused (a bad request, a session that is no longer polling...):
            // its answer goes to the client as it is.
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = Deadline { inner: body, sleep: Box::pin(tokio::time::sleep(UPGRADE_TIMEOUT)) };
            return Ok(Response::from_parts(parts, body.boxed_unsync()));
        }
        let owner_side = hyper::upgrade::on(&mut res);
        let counter = PipeCounter::new(self.metrics.clone());
        tokio::spawn(async move {
            let _counter = counter;
            match tokio::try_join!(client_side, owner_side) {
                Ok((client, owner)) => pipe(TokioIo::new(client), TokioIo::new(owner)).await,
                Err(e) => tracing::debug!(error = %e, "forwarded WebSocket upgrade failed"),
            }
        });
        let mut answer = Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync());
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *answer.headers_mut() = res.headers().clone();
        Ok(answer)
    }
}

/// Counts an open pipe for as long as it lives.
struct PipeCounter(Arc<NodeMetrics>);

impl PipeCounter {
    fn new(metrics: Arc<NodeMetrics>) -> PipeCounter {
        metrics.forwarded_websockets.inc();
        PipeCounter(metrics)
    }
}

impl Drop for PipeCounter {
    fn drop(&mut self) {
        self.0.forwarded_websockets.dec();
    }
}

/// Copies bytes both ways until one side closes, then gives the other a moment to finish.
async fn pipe<A, B>(client: A, owner: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut owner_read, mut owner_write) = tokio::io::split(owner);
    let up = async move {
        let _ = tokio::io::copy(&mut client_read, &mut owner_write).await;
        let _ = owner_write.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut owner_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(PIPE_LINGER, down).await; }
        _ = &mut down => { let _ = tokio::time::timeout(PIPE_LINGER, up).await; }
    }
}

use crate::engine::is_websocket_upgrade;

/// Removes the headers that describe one connection, not the request (RFC 9110 7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [header::CONNECTION, header::TE, header::TRAILER, header::TRANSFER_ENCODING, header::UPGRADE, header::PROXY_AUTHENTICATE, header::PROXY_AUTHORIZATION] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A body that fails once its deadline passed, so a stalled owner cannot hold a client.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err("the owner node did not finish its answer in time".into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_do_not_travel() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://app.example"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, ["cookie", "origin"]);
    }

    #[test]
    fn failures_have_stable_metric_labels() {
        let labels: Vec<_> = [Failure::UnknownOwner, Failure::Unreachable, Failure::Timeout, Failure::Broken].iter().map(|f| f.label()).collect();
        assert_eq!(labels, ["unknown_owner", "unreachable", "timeout", "broken"]);
    }
}
