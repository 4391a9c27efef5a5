//! The server: its namespaces (static and dynamic), the engine under them, and what a
//! node is asked from outside (health, metrics, drain).

use super::engine_handler::ConnectDeadlines;
use super::{BroadcastOperator, ConnectError, EmitError, Namespace, ServerBuilder, Socket, SocketIoService};
use crate::adapter::{AdapterFactory, RecoveryOptions, Room};
use crate::cluster::Ingress;
use crate::engine::{CloseReason, Engine, ResponseBody};
use crate::metrics::NodeMetrics;
use crate::protocol::{IntoArgs, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

type NamespaceMatcher = Arc<dyn Fn(&str, &Value) -> bool + Send + Sync>;
type NamespaceInit = Arc<dyn Fn(&Namespace) + Send + Sync>;

pub(crate) struct ServerConfig {
    pub recovery: Option<RecoveryOptions>,
    pub connect_timeout: Duration,
    pub max_attachments: usize,
    pub parser: crate::protocol::Parser,
    pub adapter: AdapterFactory,
    pub trusted_proxies: crate::cluster::TrustedProxies,
    pub limits: SocketLimits,
    pub state: super::extract::StateMap,
}

/// The limits on what one client does at the Socket.IO level, with the counter they
/// bump when they fire. Each namespace keeps a copy.
#[derive(Clone, Debug)]
pub(crate) struct SocketLimits {
    pub event_rate: EventRateLimit,
    pub max_rooms_per_socket: usize,
    pub max_namespaces_per_session: usize,
    pub hits: crate::metrics::LimitHits,
}

/// What happens to an event that a socket sends over its [`EventRateLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverLimit {
    /// The event is dropped (no handler runs, no ack); the socket goes on.
    Drop,
    /// The socket is disconnected, as by `socket.disconnect()`.
    Disconnect,
}

/// Inbound events per socket: a token bucket of `burst` events, refilled with
/// `per_second` events each second. Default: 100 per second, bursts of 500, over it
/// the event is dropped. `per_second` 0 turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRateLimit {
    /// Tokens added per second (0: no limit).
    pub per_second: u32,
    /// Most tokens held: the largest burst allowed.
    pub burst: u32,
    /// What happens to an event over the limit.
    pub over: OverLimit,
}

impl Default for EventRateLimit {
    fn default() -> Self {
        EventRateLimit { per_second: 100, burst: 500, over: OverLimit::Drop }
    }
}

pub(crate) struct ServerShared {
    pub(crate) config: ServerConfig,
    pub(super) connect_deadlines: ConnectDeadlines,
    pub(super) namespaces: RwLock<HashMap<String, Namespace>>,
    pub(super) dynamic: RwLock<Vec<(NamespaceMatcher, NamespaceInit)>>,
    /// Held while a dynamic namespace is created and set up, so that no connection (or
    /// `Server::namespace` caller) sees it before its `init` installed its middlewares.
    pub(super) creating: Mutex<()>,
    pub(super) engine: OnceLock<Engine>,
    /// Set once the node is ready to serve: at `build`, or once `start` joined the cluster.
    pub(super) ingress: OnceLock<Arc<Ingress>>,
    pub(super) metrics: Arc<NodeMetrics>,
    /// The socket observer (the admin UI), when one is attached.
    pub(crate) observer: super::ObserverSlot,
}

impl ServerShared {
    /// The attached socket observer, if any (one atomic load).
    pub(crate) fn observer(&self) -> Option<&Arc<dyn super::SocketObserver>> {
        self.observer.get()
    }

    pub(super) fn config_trusted(&self) -> crate::cluster::TrustedProxies {
        self.config.trusted_proxies.clone()
    }

    /// The namespace a CONNECT asks for: an existing one, or a new child of the first
    /// dynamic pattern that accepts the name.
    pub(crate) fn namespace_for_connect(self: &Arc<Self>, name: &str, auth: &Value) -> Option<Namespace> {
        if let Some(ns) = self.namespaces.read().unwrap().get(name) {
            return Some(ns.clone());
        }
        let dynamic: Vec<_> = self.dynamic.read().unwrap().clone();
        for (matcher, init) in dynamic {
            if matcher(name, auth) {
                // Set up first, published after: a CONNECT racing this one must not reach
                // the namespace before its middlewares exist (it would skip them). `init`
                // runs outside the map's lock (it may call `of`), under `creating`, so it
                // runs once per name. A panicking `init` leaves no namespace behind.
                let _creating = self.creating.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(ns) = self.namespaces.read().unwrap().get(name) {
                    return Some(ns.clone());
                }
                let ns = Namespace::new(name, self);
                init(&ns);
                self.namespaces.write().unwrap().insert(name.to_owned(), ns.clone());
                return Some(ns);
            }
        }
        None
    }

    pub(super) fn of(self: &Arc<Self>, name: &str) -> Namespace {
        let name = if name.starts_with('/') { name.to_owned() } else { format!("/{name}") };
        if let Some(ns) = self.namespaces.read().unwrap().get(&name) {
            return ns.clone();
        }
        let mut map = self.namespaces.write().unwrap();
        map.entry(name.clone()).or_insert_with(|| Namespace::new(&name, self)).clone()
    }
}


/// A Socket.IO server. Cheap to clone: every clone is the same server.
///
/// Built by [`Server::builder`]; served by [`crate::serve`] (or mounted in any hyper or
/// tower app with [`Server::service`], or asked request by request with [`Server::handle`]).
///
/// ```
/// use shoal::{Event, Server, Socket};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let io = Server::builder().build();
/// io.on_connection(|socket: Socket| async move {
///     socket.on("ping", |socket: Socket, event: Event| async move {
///         let _ = socket.emit("pong", event.args);
///     });
/// });
/// // An Engine.IO handshake, as a client's first long-polling request.
/// let request = http::Request::get("/socket.io/?EIO=4&transport=polling").body(String::new()).unwrap();
/// let response = io.handle(request).await;
/// assert_eq!(response.status(), 200);
/// assert_eq!(io.session_count(), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct Server {
    pub(super) shared: Arc<ServerShared>,
}

impl Server {
    /// A builder with every setting at its default.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Attaches the socket observer; false if one is already attached (there is one slot).
    pub(crate) fn set_observer(&self, observer: Arc<dyn super::SocketObserver>) -> bool {
        self.shared.observer.set(observer).is_ok()
    }

    /// The Engine.IO server under it.
    pub fn engine(&self) -> &Engine {
        self.shared.engine.get().expect("engine is set at build")
    }

    /// The namespace `name` (created if needed).
    pub fn of(&self, name: &str) -> Namespace {
        self.shared.of(name)
    }

    /// Accepts namespaces whose name (and CONNECT auth) `matcher` approves, creating each
    /// on its first connection and calling `init` to set it up (middlewares, handlers).
    pub fn dynamic_namespace(
        &self,
        matcher: impl Fn(&str, &Value) -> bool + Send + Sync + 'static,
        init: impl Fn(&Namespace) + Send + Sync + 'static,
    ) {
        self.shared.dynamic.write().unwrap().push((Arc::new(matcher), Arc::new(init)));
    }

    /// The namespace a client's CONNECT to `name` would reach, without creating one that
    /// no client could reach: an existing namespace, or a new child of the first dynamic
    /// pattern that accepts the name (with an empty auth), set up by its `init`; `None`
    /// if neither. Unlike [`Server::of`], it never makes an unserved name connectable.
    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        self.shared.namespace_for_connect(name, &Value::Null)
    }

    /// Namespaces that exist now (static, and dynamic ones already created).
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.shared.namespaces.read().unwrap().values().cloned().collect()
    }

    // Shorthands for the main namespace `/`, as `io.on("connection")`, `io.emit(...)`.
    /// `io.on("connection")`: called with each new socket of the main namespace `/`.
    pub fn on_connection<F, Fut>(&self, f: F)
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.of("/").on_connection(f)
    }
    /// A middleware of the main namespace `/`: runs before a socket connects, and may refuse it.
    pub fn middleware<F, Fut>(&self, f: F)
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.of("/").middleware(f)
    }
    /// Emits to every socket of the main namespace, on every node.
    pub fn emit(&self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        self.of("/").emit(event, args)
    }
    /// A broadcast to `room` in the main namespace.
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.of("/").to(room)
    }
    /// A broadcast to every socket of the main namespace but those in `room`.
    pub fn except(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.of("/").except(room)
    }
    /// A broadcast to this node's sockets of the main namespace only.
    pub fn local(&self) -> BroadcastOperator {
        self.of("/").local()
    }
    /// A broadcast that may be dropped for clients that are not ready.
    pub fn volatile(&self) -> BroadcastOperator {
        self.of("/").volatile()
    }
    /// A broadcast whose acks are awaited at most `timeout`.
    pub fn timeout(&self, timeout: Duration) -> BroadcastOperator {
        self.of("/").timeout(timeout)
    }

    /// Number of open Engine.IO sessions on this node.
    pub fn session_count(&self) -> usize {
        self.engine().session_count()
    }

    /// Answers one HTTP request: Engine.IO traffic on the configured path, 404 elsewhere.
    pub async fn handle<B>(&self, req: http::Request<B>) -> http::Response<ResponseBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if self.engine().matches(&req) {
            self.engine().handle(req).await
        } else {
            let mut res = http::Response::new(ResponseBody::new(bytes::Bytes::from_static(b"Not Found")));
            *res.status_mut() = http::StatusCode::NOT_FOUND;
            res
        }
    }

    /// A hyper/tower service answering Socket.IO requests (mount it in axum, or pass it
    /// to [`crate::serve`]). In a cluster it forwards requests for other nodes'
    /// sessions to their owner; behind trusted proxies it gives sockets the client's
    /// real address.
    pub fn service(&self) -> SocketIoService {
        SocketIoService::new(self.clone())
    }

    pub(crate) fn ingress(&self) -> &Arc<Ingress> {
        self.shared.ingress.get().expect("the ingress is set when the server is built")
    }

    /// Stops: refuses new sessions and closes every open one. Clients see a transport
    /// close and reconnect (to another node, in a cluster). See [`Server::drain`] for
    /// a node that leaves a cluster.
    pub async fn close(&self) {
        self.engine().close_all(CloseReason::ServerShuttingDown);
        for ns in self.namespaces() {
            ns.adapter().close().await;
        }
    }

    /// Leaves gracefully: readiness turns to "draining" (balancers stop sending new
    /// clients), the node leaves the cluster (peers stop forwarding here), then every
    /// session is closed so that its client reconnects elsewhere, and the adapter's
    /// queue reaches Redis. Returns once the sessions are gone or `grace` passed.
    pub async fn drain(&self, grace: Duration) {
        self.engine().refuse_new_sessions();
        #[cfg(feature = "redis")]
        if let Some(membership) = self.shared.ingress.get().and_then(|f| f.membership()) {
            membership.leave().await;
        }
        let sessions = self.session_count();
        self.close().await;
        let deadline = tokio::time::Instant::now() + grace;
        // The close packets and the last polling answers need a moment to leave.
        while self.session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_millis(300))).await;
        tracing::info!(sessions, left = self.session_count(), "drained");
    }

    /// Readiness: `Ready` while the node takes new sessions, `Draining` once it stops.
    pub fn health(&self) -> Health {
        Health { ready: !self.engine().is_shutting_down(), node: self.engine().config().node_id.clone(), sessions: self.session_count() }
    }

    /// `health()` as an HTTP answer: 200 ready or 503 draining, with a JSON body
    /// `{"status":"ok"|"draining","node":..,"sessions":..}`. Mount it where probes look
    /// (the `shoal` binary serves it on `/health`).
    pub fn health_response(&self) -> http::Response<ResponseBody> {
        let health = self.health();
        let mut res = http::Response::new(ResponseBody::new(bytes::Bytes::from(health.to_json())));
        *res.status_mut() = if health.ready { http::StatusCode::OK } else { http::StatusCode::SERVICE_UNAVAILABLE };
        res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        res
    }

    /// Every metric of this node in the Prometheus / OpenMetrics text format: sessions,
    /// sockets per namespace, requests received and served, engine errors and, in a
    /// cluster, members, forwarded requests, forwarding failures and piped WebSockets.
    pub fn metrics_text(&self) -> String {
        let m = &self.shared.metrics;
        m.sessions.set(self.session_count() as i64);
        for ns in self.namespaces() {
            m.sockets.get_or_create(&crate::metrics::NspLabel { nsp: ns.name().to_owned() }).set(ns.local_socket_count() as i64);
        }
        #[cfg(feature = "redis")]
        if let Some(membership) = self.shared.ingress.get().and_then(|f| f.membership()) {
            m.cluster_nodes.set(membership.member_count() as i64);
        }
        m.encode()
    }

    /// Adds the app's own metrics to this node's exposition (`metrics_text`), e.g.
    /// `io.register_metrics(|r| r.register("app_logins", "Logins", counter.clone()))`.
    pub fn register_metrics(&self, f: impl FnOnce(&mut prometheus_client::registry::Registry)) {
        self.shared.metrics.register(f);
    }

    /// `metrics_text()` as an HTTP answer, for a scrape endpoint.
    pub fn metrics_response(&self) -> http::Response<ResponseBody> {
        let mut res = http::Response::new(ResponseBody::new(bytes::Bytes::from(self.metrics_text())));
        res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
        res
    }

    /// The proxies whose forwarding headers this server believes (see
    /// [`crate::ServerBuilder::trusted_proxies`]); give them to [`crate::ServeOptions`]
    /// to believe their PROXY protocol headers too.
    pub fn trusted_proxies(&self) -> &crate::cluster::TrustedProxies {
        &self.shared.config.trusted_proxies
    }

    /// The options for [`crate::serve_with`] that fit this server: its trusted proxies
    /// (whose PROXY protocol headers are believed, when `proxy_protocol` is turned on) and
    /// its limit counter (so request heads answered 431 show in its metrics). Change the
    /// other fields as needed: `ServeOptions { proxy_protocol: true, ..io.serve_options() }`.
    pub fn serve_options(&self) -> crate::ServeOptions {
        crate::ServeOptions {
            trusted_proxies: self.shared.config.trusted_proxies.clone(),
            limit_hits: self.shared.metrics.limit_hits.clone(),
            ..Default::default()
        }
    }

    /// This node's view of its cluster: `(node id, internal address)` of every member,
    /// itself included; empty for a node that is not in a cluster.
    pub fn cluster_members(&self) -> Vec<(String, String)> {
        #[cfg(feature = "redis")]
        if let Some(membership) = self.shared.ingress.get().and_then(|f| f.membership()) {
            return membership.members();
        }
        Vec::new()
    }
}

/// A node's readiness, from [`Server::health`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// False once the node drains: it takes no new sessions.
    pub ready: bool,
    /// The node's id.
    pub node: String,
    /// How many sessions it holds.
    pub sessions: usize,
}

impl Health {
    /// As the JSON body of `/health`: `{"status":"ok"|"draining","node":...,"sessions":N}`.
    pub fn to_json(&self) -> String {
        let status = if self.ready { "ok" } else { "draining" };
        let mut node = String::new();
        crate::protocol::value::write_json_string(&self.node, &mut node);
        format!("{{\"status\":\"{status}\",\"node\":{node},\"sessions\":{}}}", self.sessions)
    }
}

