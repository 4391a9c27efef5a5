//! The ingress of a node's Socket.IO service: every request on the engine's path
//! passes here before the engine sees it ([`crate::SocketIoService`] calls it, so an
//! axum app that mounts `io.service()` gets all of it).
//!
//! 1. The client's real address: from the trusted proxies' headers (client_addr.rs), or
//!    from the node that forwarded the request, believed only with the cluster secret.
//! 2. A request for a session another node owns (the sid names it) is forwarded there
//!    (forward.rs), so no balancer needs sticky sessions. A forwarded request is marked
//!    and never forwarded again; when the owner is gone, the engine's own "Session ID
//!    unknown" answers it, so the client reconnects.
//! 3. A liveness probe from a node that wants this node's id (membership.rs) is
//!    answered with the id.
//!
//! Each step is counted in the node's metrics.

use super::client_addr::{self, TrustedProxies, FORWARDED_BY};
use crate::engine::{Engine, PeerAddr, Query, Relayed};
use crate::metrics::{FromLabel, NodeMetrics};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of the service's answers: the engine's own, or one streamed from the owner.
pub type ServiceBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A request with this header asks the node for its id (see [`probe_answer`]).
pub const PROBE_HEADER: &str = "x-shoal-probe";

/// What a node answers to a liveness probe.
pub fn probe_answer(node_id: &str) -> Bytes {
    Bytes::from(format!("{{\"node\":\"{node_id}\"}}"))
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// A liveness probe: answered with this node's id.
    Probe,
    /// This node's engine answers.
    Engine,
    /// The session belongs to this node of the cluster.
    Forward(String),
}

/// Decides where a request goes. `marked`: another node forwarded it (or pretends to);
/// such a request is never forwarded again, so forwarding cannot loop. A pre-flight
/// (OPTIONS) is answered here, as is a query that names its sid twice (the engine
/// refuses it).
pub(crate) fn route(own_id: &str, clustered: bool, probe: bool, marked: bool, method: &Method, query: &Query) -> Route {
    if probe {
        return Route::Probe;
    }
    if !clustered || marked || method == Method::OPTIONS || query.repeated {
        return Route::Engine;
    }
    match query.sid.as_deref().and_then(crate::engine::sid::owner_of) {
        Some(owner) if owner != own_id && !owner.is_empty() => Route::Forward(owner.to_owned()),
        _ => Route::Engine,
    }
}

/// This node in its cluster, as the ingress sees it.
#[cfg(feature = "redis")]
pub(crate) struct ClusterIngress {
    pub membership: Arc<super::Membership>,
    pub forwarder: super::forward::Forwarder,
}

pub(crate) struct Ingress {
    engine: Engine,
    trusted: TrustedProxies,
    #[cfg(feature = "redis")]
    cluster: Option<ClusterIngress>,
    metrics: Arc<NodeMetrics>,
}

impl Ingress {
    pub fn new(engine: Engine, trusted: TrustedProxies, metrics: Arc<NodeMetrics>) -> Ingress {
        Ingress {
            engine,
            trusted,
            #[cfg(feature = "redis")]
            cluster: None,
            metrics,
        }
    }

    #[cfg(feature = "redis")]
    pub fn with_cluster(mut self, cluster: ClusterIngress) -> Ingress {
        self.cluster = Some(cluster);
        self
    }

    #[cfg(feature = "redis")]
    pub fn membership(&self) -> Option<&Arc<super::Membership>> {
        self.cluster.as_ref().map(|c| &c.membership)
    }

    /// True if another node of this cluster forwarded the request (it knows the secret).
    fn from_peer(&self, headers: &http::HeaderMap) -> bool {
        #[cfg(feature = "redis")]
        if let Some(cluster) = &self.cluster {
            return client_addr::from_cluster_peer(headers, cluster.membership.secret());
        }
        let _ = headers;
        false
    }

    fn clustered(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.cluster.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// Answers one request on the engine's path.
    pub async fn handle<B>(&self, mut req: Request<B>) -> Response<ServiceBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let marked = req.headers().contains_key(FORWARDED_BY);
        let from_peer = marked && self.from_peer(req.headers());
        let client = match from_peer {
            true => client_addr::forwarded_client(req.headers()).unwrap_or(peer),
            false => client_addr::resolve(peer, req.headers(), |ip| self.trusted.contains(ip)),
        };
        req.extensions_mut().insert(PeerAddr(client));
        if from_peer {
            req.extensions_mut().insert(Relayed);
        } else {
            self.metrics.requests_received.inc();
        }
        let node_id = &self.engine.config().node_id;
        let probe = req.headers().contains_key(PROBE_HEADER);
        match route(node_id, self.clustered(), probe, marked, req.method(), &Query::of(&req)) {
            Route::Probe => {
                let mut res = Response::new(http_body_util::Full::new(probe_answer(node_id)).map_err(|e| match e {}).boxed_unsync());
                res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                res
            }
            Route::Engine => self.engine(req, from_peer).await,
            #[cfg(feature = "redis")]
            Route::Forward(owner) => {
                let Some(cluster) = &self.cluster else { return self.engine(req, from_peer).await };
                let (method, uri, headers) = (req.method().clone(), req.uri().clone(), req.headers().clone());
                match cluster.forwarder.forward(req, &owner, client).await {
                    Ok(res) => res,
                    Err(_) => {
                        // Owner gone or unreachable: the engine's own "Session ID unknown"
                        // answer (CORS included), so the client reconnects.
                        let mut fallback = Request::new(http_body_util::Empty::<Bytes>::new());
                        *fallback.method_mut() = method;
                        *fallback.uri_mut() = uri;
                        *fallback.headers_mut() = headers;
                        fallback.headers_mut().remove(http::header::UPGRADE);
                        self.engine(fallback, from_peer).await
                    }
                }
            }
            #[cfg(not(feature = "redis"))]
            Route::Forward(_) => self.engine(req, from_peer).await,
        }
    }

    /// The engine's answer, counted.
    async fn engine<B>(&self, req: Request<B>, from_peer: bool) -> Response<ServiceBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let from = if from_peer { "peer" } else { "client" };
        self.metrics.requests_served.get_or_create(&FromLabel { from }).inc();
        let res = self.engine.handle(req).await;
        if res.status().is_client_error() {
            self.metrics.engine_errors.inc();
        }
        res.map(|b| b.map_err(|e| match e {}).boxed_unsync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Query {
        Query::parse(s)
    }

    #[test]
    fn a_foreign_sid_is_forwarded_to_its_owner() {
        let get = Method::GET;
        assert_eq!(route("n1", true, false, false, &get, &q("EIO=4&transport=polling&sid=n2~abc")), Route::Forward("n2".into()));
        assert_eq!(route("n1", true, false, false, &Method::POST, &q("EIO=4&transport=polling&sid=n3%7Eabc")), Route::Forward("n3".into()));
    }

    #[test]
    fn own_sessions_handshakes_and_strangers_stay_here() {
        let get = Method::GET;
        assert_eq!(route("n1", true, false, false, &get, &q("EIO=4&transport=polling&sid=n1~abc")), Route::Engine);
        assert_eq!(route("n1", true, false, false, &get, &q("EIO=4&transport=polling")), Route::Engine);
        // Not a shoal sid (e.g. a Node.js peer's): this engine says it does not know it.
        assert_eq!(route("n1", true, false, false, &get, &q("EIO=4&transport=polling&sid=abc")), Route::Engine);
        assert_eq!(route("n1", true, false, false, &get, &q("EIO=4&transport=polling&sid=~abc")), Route::Engine);
    }

    #[test]
    fn marked_preflight_ambiguous_and_single_node_requests_are_not_forwarded() {
        let query = q("EIO=4&transport=polling&sid=n2~abc");
        assert_eq!(route("n1", true, false, true, &Method::GET, &query), Route::Engine, "a marked request never hops twice");
        assert_eq!(route("n1", true, false, false, &Method::OPTIONS, &query), Route::Engine);
        assert_eq!(route("n1", false, false, false, &Method::GET, &query), Route::Engine, "no cluster: nowhere to forward");
        assert_eq!(route("n1", true, false, false, &Method::GET, &q("sid=n2~a&sid=n3~b")), Route::Engine);
        assert_eq!(route("n1", true, true, false, &Method::GET, &query), Route::Probe);
    }
}
