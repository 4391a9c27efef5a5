//! The node's counters and gauges, in the Prometheus / OpenMetrics text format (the
//! `prometheus-client` crate writes it, label values escaped). The layers that count
//! (the cluster ingress, the forwarder) hold clones of these handles and bump them; the
//! gauges that are a snapshot (sessions, sockets, cluster members) are set when the
//! text is asked for. [`crate::Server::metrics_text`] is the way in.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FromLabel {
    pub from: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransportLabel {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NspLabel {
    pub nsp: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitLabel {
    pub limit: &'static str,
}

/// The limits a node enforces, as `shoal_limit_hits_total{limit=...}` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// A handshake refused: the node holds `max_sessions`.
    MaxSessions,
    /// A handshake refused: its address holds `max_sessions_per_address`.
    SessionsPerAddress,
    /// A handshake refused: its address made `handshakes_per_address_per_second` this second.
    HandshakeRate,
    /// A polling POST over `max_payload` (413).
    MaxPayload,
    /// A polling POST body slower than `request_body_timeout` (408).
    RequestBodyTimeout,
    /// A session that joined no namespace within `connect_timeout`.
    ConnectTimeout,
    /// A client dropped with more than `max_buffered_bytes` waiting for it.
    MaxBufferedBytes,
    /// An event over its socket's `event_rate_limit` (dropped, or the socket disconnected).
    EventRate,
    /// A join refused: the socket is in `max_rooms_per_socket` rooms.
    RoomsPerSocket,
    /// A CONNECT refused: the session has `max_namespaces_per_session` namespaces.
    NamespacesPerSession,
    /// A request head over the listener's `max_header_bytes` (431).
    RequestHead,
    /// A TCP connection closed at accept: the listener holds `max_connections`.
    MaxConnections,
    /// A binary packet announcing more than `max_attachments` attachments (its session
    /// closed as a parse error).
    MaxAttachments,
}

impl Limit {
    pub const ALL: [Limit; 13] = [
        Limit::MaxSessions,
        Limit::SessionsPerAddress,
        Limit::HandshakeRate,
        Limit::MaxPayload,
        Limit::RequestBodyTimeout,
        Limit::ConnectTimeout,
        Limit::MaxBufferedBytes,
        Limit::EventRate,
        Limit::RoomsPerSocket,
        Limit::NamespacesPerSession,
        Limit::RequestHead,
        Limit::MaxConnections,
        Limit::MaxAttachments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxSessions => "max_sessions",
            Limit::SessionsPerAddress => "max_sessions_per_address",
            Limit::HandshakeRate => "handshakes_per_address_per_second",
            Limit::MaxPayload => "max_payload",
            Limit::RequestBodyTimeout => "request_body_timeout",
            Limit::ConnectTimeout => "connect_timeout",
            Limit::MaxBufferedBytes => "max_buffered_bytes",
            Limit::EventRate => "event_rate_limit",
            Limit::RoomsPerSocket => "max_rooms_per_socket",
            Limit::NamespacesPerSession => "max_namespaces_per_session",
            Limit::RequestHead => "max_header_bytes",
            Limit::MaxConnections => "max_connections",
            Limit::MaxAttachments => "max_attachments",
        }
    }
}

/// The counter of limits that fired (`shoal_limit_hits_total{limit=...}`), shared by
/// the layers that enforce them. A listener counts into its server's with
/// [`crate::Server::serve_options`]; a default one counts into nothing that is exposed.
#[derive(Clone, Debug, Default)]
pub struct LimitHits(Family<LimitLabel, Counter>);

impl LimitHits {
    pub(crate) fn hit(&self, limit: Limit) {
        self.0.get_or_create(&LimitLabel { limit: limit.as_str() }).inc();
    }
}

/// Every metric of one node.
pub(crate) struct NodeMetrics {
    /// Locked only to register a metric or to write the text.
    registry: std::sync::Mutex<Registry>,
    pub sessions: Gauge,
    pub sockets: Family<NspLabel, Gauge>,
    pub requests_received: Counter,
    pub requests_served: Family<FromLabel, Counter>,
    pub engine_errors: Counter,
    pub cluster_nodes: Gauge,
    pub forwarded: Family<TransportLabel, Counter>,
    pub forward_failures: Family<ReasonLabel, Counter>,
    pub forwarded_websockets: Gauge,
    pub limit_hits: LimitHits,
}

impl NodeMetrics {
    pub fn new(clustered: bool) -> NodeMetrics {
        let mut m = NodeMetrics {
            registry: std::sync::Mutex::new(Registry::default()),
            sessions: Gauge::default(),
            sockets: Family::default(),
            requests_received: Counter::default(),
            requests_served: Family::default(),
            engine_errors: Counter::default(),
            cluster_nodes: Gauge::default(),
            forwarded: Family::default(),
            forward_failures: Family::default(),
            forwarded_websockets: Gauge::default(),
            limit_hits: LimitHits::default(),
        };
        let mut registry = std::sync::Mutex::new(Registry::default());
        std::mem::swap(&mut registry, &mut m.registry);
        let mut registry = registry.into_inner().unwrap_or_else(|e| e.into_inner());
        let r = &mut registry;
        r.register("shoal_sessions", "Open Engine.IO sessions on this node", m.sessions.clone());
        r.register("shoal_sockets", "Connected sockets on this node, by namespace", m.sockets.clone());
        r.register("shoal_requests_received", "Engine.IO requests from clients or balancers (served here or forwarded)", m.requests_received.clone());
        r.register("shoal_requests_served", "Engine.IO requests this node's engine answered, by origin", m.requests_served.clone());
        r.register("shoal_engine_errors", "Engine.IO error answers (Session ID unknown, Bad request, ...)", m.engine_errors.clone());
        r.register("shoal_limit_hits", "Requests, sessions, events or joins refused or cut by a limit, by limit", m.limit_hits.0.clone());
        for limit in Limit::ALL {
            let _ = m.limit_hits.0.get_or_create(&LimitLabel { limit: limit.as_str() });
        }
        for from in ["client", "peer"] {
            let _ = m.requests_served.get_or_create(&FromLabel { from });
        }
        if clustered {
            r.register("shoal_cluster_nodes", "Nodes in this node's view of the cluster (itself included)", m.cluster_nodes.clone());
            r.register("shoal_forwarded_requests", "Requests passed to the node that owns their session", m.forwarded.clone());
            r.register("shoal_forward_failures", "Requests that could not be forwarded (answered Session ID unknown)", m.forward_failures.clone());
            r.register("shoal_forwarded_websockets", "Open WebSocket connections piped to their owner", m.forwarded_websockets.clone());
            // Every series exists from the start, so a rate over it is defined.
            for transport in ["polling", "websocket"] {
                let _ = m.forwarded.get_or_create(&TransportLabel { transport });
            }
            for reason in ["unknown_owner", "unreachable", "timeout", "broken"] {
                let _ = m.forward_failures.get_or_create(&ReasonLabel { reason });
            }
        }
        m.registry = std::sync::Mutex::new(registry);
        m
    }

    /// Lets an embedding add its own metrics to the same exposition.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().unwrap_or_else(|e| e.into_inner()));
        out
    }
}

/// The content type of [`NodeMetrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
