//! The node's HTTP front: Socket.IO traffic on its path, the demo page and client
//! bundle, `/health` and `/metrics`. Everything else is 404.
//!
//! Before a request reaches the engine, the front works out the client's real address
//! (client_addr.rs) and, for a session another node owns, forwards the request there
//! (forward.rs): the sid names its owner, so no balancer needs sticky sessions.

use crate::client_addr::{self, TrustedProxies, FORWARDED_BY};
use crate::cluster::Cluster;
use crate::demo;
use crate::forward::{Body, Forwarder};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use shoal::engine::{percent_decode, sid, PeerAddr};
use shoal::Server;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

#[derive(Clone)]
pub struct Routes {
    pub io: Server,
    pub front: Arc<Front>,
}

/// What the front needs besides the server: whom to trust, where the other nodes are.
pub struct Front {
    pub trusted: TrustedProxies,
    /// Set when the node is part of a cluster.
    pub cluster: Option<Arc<Cluster>>,
    pub forwarder: Option<Forwarder>,
    /// Engine.IO requests that came from clients (directly or through a balancer),
    /// whether this node answered them or forwarded them.
    pub received: AtomicU64,
    /// Engine.IO requests this node's engine answered, by where they came from.
    pub served_for_clients: AtomicU64,
    pub served_for_peers: AtomicU64,
    /// Error answers of the engine (400 "Session ID unknown", "Bad request", 403...).
    pub engine_errors: AtomicU64,
}

impl Front {
    pub fn new(trusted: TrustedProxies, cluster: Option<Arc<Cluster>>, forwarder: Option<Forwarder>) -> Front {
        Front { trusted, cluster, forwarder, received: AtomicU64::new(0), served_for_clients: AtomicU64::new(0), served_for_peers: AtomicU64::new(0), engine_errors: AtomicU64::new(0) }
    }

    /// True if another node of the cluster forwarded the request (it knows the secret).
    fn forwarded_by_peer(&self, headers: &http::HeaderMap) -> bool {
        self.cluster.as_ref().is_some_and(|c| client_addr::from_cluster_peer(headers, c.secret()))
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(full(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
}

/// The owner named by the request's `sid`, if that is another node.
fn foreign_owner<B>(req: &Request<B>, own_id: &str) -> Option<String> {
    let query = req.uri().query()?;
    let raw = query.split('&').find_map(|pair| pair.strip_prefix("sid="))?;
    let sid = percent_decode(raw);
    let owner = sid::owner_of(&sid)?;
    (owner != own_id && !owner.is_empty()).then(|| owner.to_owned())
}

impl Routes {
    fn metrics(&self) -> String {
        let f = &self.front;
        let mut out = String::new();
        out.push_str("# HELP shoal_sessions Open Engine.IO sessions on this node.\n# TYPE shoal_sessions gauge\n");
        out.push_str(&format!("shoal_sessions {}\n", self.io.session_count()));
        out.push_str("# HELP shoal_sockets Connected sockets on this node, by namespace.\n# TYPE shoal_sockets gauge\n");
        for ns in self.io.namespaces() {
            out.push_str(&format!("shoal_sockets{{nsp=\"{}\"}} {}\n", ns.name().replace('"', "\\\""), ns.local_socket_count()));
        }
        out.push_str("# HELP shoal_requests_received_total Engine.IO requests from clients or balancers (served here or forwarded).\n# TYPE shoal_requests_received_total counter\n");
        out.push_str(&format!("shoal_requests_received_total {}\n", f.received.load(Ordering::Relaxed)));
        out.push_str("# HELP shoal_requests_served_total Engine.IO requests this node's engine answered, by origin.\n# TYPE shoal_requests_served_total counter\n");
        out.push_str(&format!("shoal_requests_served_total{{from=\"client\"}} {}\n", f.served_for_clients.load(Ordering::Relaxed)));
        out.push_str(&format!("shoal_requests_served_total{{from=\"peer\"}} {}\n", f.served_for_peers.load(Ordering::Relaxed)));
        out.push_str("# HELP shoal_engine_errors_total Engine.IO error answers (\"Session ID unknown\", \"Bad request\", ...).\n# TYPE shoal_engine_errors_total counter\n");
        out.push_str(&format!("shoal_engine_errors_total {}\n", f.engine_errors.load(Ordering::Relaxed)));
        if let Some(cluster) = &f.cluster {
            out.push_str("# HELP shoal_cluster_nodes Nodes in this node's view of the cluster (itself included).\n# TYPE shoal_cluster_nodes gauge\n");
            out.push_str(&format!("shoal_cluster_nodes {}\n", cluster.member_count()));
        }
        if let Some(fw) = &f.forwarder {
            let s = &fw.stats;
            out.push_str("# HELP shoal_forwarded_requests_total Requests passed to the node that owns their session.\n# TYPE shoal_forwarded_requests_total counter\n");
            out.push_str(&format!("shoal_forwarded_requests_total{{transport=\"polling\"}} {}\n", s.polling.load(Ordering::Relaxed)));
            out.push_str(&format!("shoal_forwarded_requests_total{{transport=\"websocket\"}} {}\n", s.websocket.load(Ordering::Relaxed)));
            out.push_str("# HELP shoal_forward_failures_total Requests that could not be forwarded (answered \"Session ID unknown\").\n# TYPE shoal_forward_failures_total counter\n");
            for (reason, n) in [("unknown_owner", &s.unknown_owner), ("unreachable", &s.unreachable), ("timeout", &s.timeout), ("broken", &s.broken)] {
                out.push_str(&format!("shoal_forward_failures_total{{reason=\"{reason}\"}} {}\n", n.load(Ordering::Relaxed)));
            }
            out.push_str("# HELP shoal_forwarded_websockets Open WebSocket connections piped to their owner.\n# TYPE shoal_forwarded_websockets gauge\n");
            out.push_str(&format!("shoal_forwarded_websockets {}\n", s.pipes_open.load(Ordering::Relaxed)));
        }
        out
    }

    /// The engine's answer, its errors counted.
    async fn engine<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let res = self.io.handle(req).await;
        if res.status().is_client_error() {
            self.front.engine_errors.fetch_add(1, Ordering::Relaxed);
        }
        res.map(|b| b.map_err(|e| match e {}).boxed_unsync())
    }

    async fn route(self, mut req: Request<Incoming>) -> Response<Body> {
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        // A marked request came from another node (or pretends to): never forwarded again.
        let marked = req.headers().contains_key(FORWARDED_BY);
        let from_peer = marked && self.front.forwarded_by_peer(req.headers());
        let client = match from_peer {
            true => client_addr::forwarded_client(req.headers()).unwrap_or(peer),
            false => client_addr::resolve(peer, req.headers(), |ip| self.front.trusted.contains(ip)),
        };
        req.extensions_mut().insert(PeerAddr(client));

        if self.io.engine().matches(&req) {
            if !from_peer {
                self.front.received.fetch_add(1, Ordering::Relaxed);
            }
            if !marked && req.method() != Method::OPTIONS {
                if let (Some(forwarder), Some(owner)) = (&self.front.forwarder, foreign_owner(&req, &self.io.engine().config().node_id)) {
                    let (method, uri, headers) = (req.method().clone(), req.uri().clone(), req.headers().clone());
                    match forwarder.forward(req, &owner, client).await {
                        Ok(res) => return res,
                        Err(_) => {
                            // Owner gone or unreachable: the engine's own "Session ID unknown"
                            // answer (CORS included), so the client reconnects.
                            let mut fallback = Request::new(Empty::<Bytes>::new());
                            *fallback.method_mut() = method;
                            *fallback.uri_mut() = uri;
                            *fallback.headers_mut() = headers;
                            fallback.headers_mut().remove(header::UPGRADE);
                            return self.engine(fallback).await;
                        }
                    }
                }
            }
            let counter = if from_peer { &self.front.served_for_peers } else { &self.front.served_for_clients };
            counter.fetch_add(1, Ordering::Relaxed);
            return self.engine(req).await;
        }
        match (req.method().as_str(), req.uri().path()) {
            ("GET" | "HEAD", "/") | ("GET" | "HEAD", "/index.html") => respond(StatusCode::OK, "text/html; charset=utf-8", demo::INDEX_HTML),
            ("GET" | "HEAD", "/socket.io.min.js") => {
                let mut res = respond(StatusCode::OK, "application/javascript; charset=utf-8", Bytes::from_static(demo::CLIENT_JS));
                res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
                res
            }
            ("GET", "/health") => {
                let status = if self.io.engine().is_shutting_down() { "draining" } else { "ok" };
                let code = if status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                let body = format!("{{\"status\":\"{status}\",\"node\":\"{}\",\"sessions\":{}}}", self.io.engine().config().node_id, self.io.session_count());
                respond(code, "application/json", body)
            }
            ("GET", "/metrics") => respond(StatusCode::OK, "text/plain; version=0.0.4", self.metrics()),
            _ => respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "Not Found"),
        }
    }
}

impl tower_service::Service<Request<Incoming>> for Routes {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.route(req).await) })
    }
}
