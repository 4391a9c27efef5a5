//! The Socket.IO layer (protocol 5): the server, its namespaces (static and dynamic),
//! sockets, rooms, events, acks, middlewares and broadcast operators. It sits on the
//! engine (which hands it whole messages) and reaches other processes only through the
//! namespace's adapter.
//!
//! ```no_run
//! use shoal::{Server, Socket, Event};
//! # async fn run() -> std::io::Result<()> {
//! let io = Server::builder().build();
//! io.on_connection(|socket: Socket| async move {
//!     socket.on("chat message", |socket: Socket, msg: Event| async move {
//!         let _ = socket.ns().emit("chat message", msg.args.clone());
//!     });
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! shoal::serve(listener, io.service(), std::future::pending()).await
//! # }
//! ```

mod broadcast;
mod client;
mod handshake;
mod namespace;
mod socket;

pub use broadcast::{BroadcastOperator, RemoteSocket};
pub use handshake::Handshake;
pub use namespace::{ConnectError, Namespace, ServerAck, WeakNamespace};
pub use socket::{AckError, EmitError, Event, Socket, SocketWithTimeout};

use crate::adapter::{AdapterFactory, RecoveryOptions, Room};
use crate::engine::{AllowRequest, CloseReason, Cors, Engine, EngineConfig, EngineHandler, Message, ResponseBody, Session, Transports};
use crate::protocol::{IntoArgs, Value};
use client::Client;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

/// Why a socket disconnected, with the official reason strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    TransportClose,
    PingTimeout,
    TransportError,
    ParseError,
    ForcedClose,
    ServerShuttingDown,
    ClientNamespaceDisconnect,
    ServerNamespaceDisconnect,
    ForcedServerClose,
}

impl DisconnectReason {
    /// True if the socket's session is kept for connection state recovery.
    pub fn is_recoverable(self) -> bool {
        !matches!(
            self,
            DisconnectReason::ClientNamespaceDisconnect | DisconnectReason::ServerNamespaceDisconnect | DisconnectReason::ParseError
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::ParseError => "parse error",
            DisconnectReason::ForcedClose => "forced close",
            DisconnectReason::ServerShuttingDown => "server shutting down",
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::ForcedServerClose => "forced server close",
        }
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<CloseReason> for DisconnectReason {
    fn from(r: CloseReason) -> Self {
        match r {
            CloseReason::TransportClose => DisconnectReason::TransportClose,
            CloseReason::PingTimeout => DisconnectReason::PingTimeout,
            CloseReason::TransportError | CloseReason::SlowClient => DisconnectReason::TransportError,
            CloseReason::ParseError => DisconnectReason::ParseError,
            CloseReason::ForcedClose => DisconnectReason::ForcedClose,
            CloseReason::ServerShuttingDown => DisconnectReason::ServerShuttingDown,
        }
    }
}

/// Runs a handler's future: at once up to its first await, then (if it is not done) as
/// a task. Handlers so start in the order their packets arrived, as in the official
/// server, and a handler that only joins a room and emits finishes inline.
pub(crate) fn run_handler<F: Future<Output = ()> + Send + 'static>(fut: F) {
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if let Poll::Pending = fut.as_mut().poll(&mut cx) {
        // The task polls it again at once, registering its real waker.
        tokio::spawn(fut);
    }
}

type NamespaceMatcher = Arc<dyn Fn(&str, &Value) -> bool + Send + Sync>;
type NamespaceInit = Arc<dyn Fn(&Namespace) + Send + Sync>;

pub(crate) struct ServerConfig {
    pub recovery: Option<RecoveryOptions>,
    pub connect_timeout: Duration,
    pub max_attachments: usize,
    pub adapter: AdapterFactory,
}

pub(crate) struct ServerShared {
    pub(crate) config: ServerConfig,
    connect_deadlines: ConnectDeadlines,
    namespaces: RwLock<HashMap<String, Namespace>>,
    dynamic: RwLock<Vec<(NamespaceMatcher, NamespaceInit)>>,
    engine: OnceLock<Engine>,
}

impl ServerShared {
    /// The namespace a CONNECT asks for: an existing one, or a new child of the first
    /// dynamic pattern that accepts the name.
    pub(crate) fn namespace_for_connect(self: &Arc<Self>, name: &str, auth: &Value) -> Option<Namespace> {
        if let Some(ns) = self.namespaces.read().unwrap().get(name) {
            return Some(ns.clone());
        }
        let dynamic: Vec<_> = self.dynamic.read().unwrap().clone();
        for (matcher, init) in dynamic {
            if matcher(name, auth) {
                let ns = {
                    let mut map = self.namespaces.write().unwrap();
                    if let Some(ns) = map.get(name) {
                        return Some(ns.clone());
                    }
                    let ns = Namespace::new(name, self);
                    map.insert(name.to_owned(), ns.clone());
                    ns
                };
                init(&ns);
                return Some(ns);
            }
        }
        None
    }

    fn of(self: &Arc<Self>, name: &str) -> Namespace {
        let name = if name.starts_with('/') { name.to_owned() } else { format!("/{name}") };
        if let Some(ns) = self.namespaces.read().unwrap().get(&name) {
            return ns.clone();
        }
        let mut map = self.namespaces.write().unwrap();
        map.entry(name.clone()).or_insert_with(|| Namespace::new(&name, self)).clone()
    }
}

/// Sessions that must join a namespace before a deadline. One task serves them all
/// (every deadline is the same timeout after a handshake, so they come in order),
/// instead of a timer per session.
#[derive(Default)]
struct ConnectDeadlines {
    queue: std::sync::Mutex<std::collections::VecDeque<(tokio::time::Instant, Weak<Session>)>>,
    running: std::sync::atomic::AtomicBool,
}

impl ConnectDeadlines {
    fn watch(server: &Arc<ServerShared>, session: &Arc<Session>) {
        let deadline = tokio::time::Instant::now() + server.config.connect_timeout;
        server.connect_deadlines.queue.lock().unwrap().push_back((deadline, Arc::downgrade(session)));
        if !server.connect_deadlines.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep_connect_deadlines(Arc::downgrade(server)));
        }
    }
}

/// Closes the sessions whose connect deadline passed without a namespace joined.
async fn sweep_connect_deadlines(server: Weak<ServerShared>) {
    loop {
        let next = {
            let Some(server) = server.upgrade() else { return };
            let now = tokio::time::Instant::now();
            let mut expired = Vec::new();
            let next = {
                let mut q = server.connect_deadlines.queue.lock().unwrap();
                while q.front().is_some_and(|(d, _)| *d <= now) {
                    expired.push(q.pop_front().unwrap().1);
                }
                q.front().map(|(d, _)| *d)
            };
            for session in expired.iter().filter_map(Weak::upgrade) {
                let joined = session.upper::<Client>().is_some_and(|c| c.connected_once.load(Ordering::Acquire));
                if !joined && !session.is_closed() {
                    tracing::debug!(sid = %session.sid, "no namespace joined within connect timeout");
                    session.close(CloseReason::ForcedClose);
                }
            }
            next
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => {
                // Nothing to watch: stop, unless a session arrived meanwhile.
                let Some(server) = server.upgrade() else { return };
                let d = &server.connect_deadlines;
                d.running.store(false, Ordering::Release);
                if d.queue.lock().unwrap().is_empty() || d.running.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        }
    }
}

/// The engine's view of the Socket.IO layer.
struct Handler {
    server: Weak<ServerShared>,
}

impl EngineHandler for Handler {
    fn on_open(&self, session: &Arc<Session>) {
        let Some(server) = self.server.upgrade() else { return };
        let client = Arc::new(Client::new(self.server.clone()));
        session.set_upper(client.clone());
        ConnectDeadlines::watch(&server, session);
    }

    fn on_message(&self, session: &Arc<Session>, message: Message) {
        if let Some(client) = session.upper::<Client>() {
            client.on_message(session, message);
        }
    }

    fn on_close(&self, session: &Session, reason: CloseReason) {
        if let Some(client) = session.upper::<Client>() {
            client.on_close(reason);
        }
    }
}

/// A Socket.IO server. Cheap to clone: every clone is the same server.
#[derive(Clone)]
pub struct Server {
    shared: Arc<ServerShared>,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

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

    /// Namespaces that exist now (static, and dynamic ones already created).
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.shared.namespaces.read().unwrap().values().cloned().collect()
    }

    // Shorthands for the main namespace `/`, as `io.on("connection")`, `io.emit(...)`.
    pub fn on_connection<F, Fut>(&self, f: F)
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.of("/").on_connection(f)
    }
    pub fn middleware<F, Fut>(&self, f: F)
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.of("/").middleware(f)
    }
    pub fn emit(&self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        self.of("/").emit(event, args)
    }
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.of("/").to(room)
    }
    pub fn except(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.of("/").except(room)
    }
    pub fn local(&self) -> BroadcastOperator {
        self.of("/").local()
    }
    pub fn volatile(&self) -> BroadcastOperator {
        self.of("/").volatile()
    }
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
    /// to [`crate::serve`]).
    pub fn service(&self) -> SocketIoService {
        SocketIoService { server: self.clone() }
    }

    /// Stops: refuses new sessions and closes every open one. Clients see a transport
    /// close and reconnect (to another node, in a cluster).
    pub async fn close(&self) {
        self.engine().close_all(CloseReason::ServerShuttingDown);
        for ns in self.namespaces() {
            ns.adapter().close().await;
        }
    }
}

/// A tower `Service` over [`Server::handle`]. Cheap to clone.
#[derive(Clone)]
pub struct SocketIoService {
    server: Server,
}

impl<B> tower_service::Service<http::Request<B>> for SocketIoService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let server = self.server.clone();
        Box::pin(async move { Ok(server.handle(req).await) })
    }
}

/// Settings of a [`Server`], with the official defaults.
pub struct ServerBuilder {
    engine: EngineConfig,
    recovery: Option<RecoveryOptions>,
    connect_timeout: Duration,
    max_attachments: usize,
    adapter: AdapterFactory,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            engine: EngineConfig { path: "/socket.io/".into(), ..EngineConfig::default() },
            recovery: None,
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            adapter: crate::adapter::memory(),
        }
    }
}

impl ServerBuilder {
    /// URL path (default `/socket.io/`).
    pub fn path(mut self, path: &str) -> Self {
        let mut p = path.trim_end_matches('/').to_owned();
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        p.push('/');
        self.engine.path = p;
        self
    }
    /// Default 25 s.
    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.engine.ping_interval = d;
        self
    }
    /// Default 20 s.
    pub fn ping_timeout(mut self, d: Duration) -> Self {
        self.engine.ping_timeout = d;
        self
    }
    /// Largest message a client may send, in bytes (default 1 MB).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.engine.max_payload = bytes;
        self
    }
    /// Default: polling and WebSocket.
    pub fn transports(mut self, t: Transports) -> Self {
        self.engine.transports = t;
        self
    }
    pub fn cors(mut self, cors: Cors) -> Self {
        self.engine.cors = Some(cors);
        self
    }
    /// A hook that may refuse a handshake (403 with its message).
    pub fn allow_request(mut self, f: impl Fn(&http::request::Parts) -> Result<(), String> + Send + Sync + 'static) -> Self {
        let f: AllowRequest = Arc::new(f);
        self.engine.allow_request = Some(f);
        self
    }
    /// Time a new session has to join a namespace (default 45 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// Most binary attachments one packet may announce (default 10).
    pub fn max_attachments(mut self, n: usize) -> Self {
        self.max_attachments = n;
        self
    }
    /// Bytes that may wait for one slow client before it is dropped (default 8 MiB).
    pub fn max_buffered_bytes(mut self, n: usize) -> Self {
        self.engine.max_buffered_bytes = n;
        self
    }
    /// Most open sessions on this node; more handshakes get 403 (default 100,000).
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.engine.max_sessions = n;
        self
    }
    /// Longest time a polling POST body may take to arrive (default 10 s).
    pub fn request_body_timeout(mut self, d: Duration) -> Self {
        self.engine.request_body_timeout = d;
        self
    }
    /// Upgrade deadline (default 10 s).
    pub fn upgrade_timeout(mut self, d: Duration) -> Self {
        self.engine.upgrade_timeout = d;
        self
    }
    /// This node's id: the prefix of every session id (default: random).
    pub fn node_id(mut self, id: &str) -> Self {
        self.engine.node_id = id.to_owned();
        self
    }
    /// Turns on connection state recovery: a client that comes back within
    /// `max_disconnection_duration` gets its socket id, rooms, data and missed events.
    pub fn connection_state_recovery(mut self, options: RecoveryOptions) -> Self {
        self.recovery = Some(options);
        self
    }
    pub fn adapter(mut self, factory: AdapterFactory) -> Self {
        self.adapter = factory;
        self
    }
    pub fn engine_config(&self) -> &EngineConfig {
        &self.engine
    }

    pub fn build(self) -> Server {
        let shared = Arc::new(ServerShared {
            config: ServerConfig { recovery: self.recovery, connect_timeout: self.connect_timeout, max_attachments: self.max_attachments, adapter: self.adapter },
            namespaces: RwLock::new(HashMap::new()),
            dynamic: RwLock::new(Vec::new()),
            engine: OnceLock::new(),
            connect_deadlines: ConnectDeadlines::default(),
        });
        let handler = Arc::new(Handler { server: Arc::downgrade(&shared) });
        let _ = shared.engine.set(Engine::new(self.engine, handler));
        shared.of("/");
        Server { shared }
    }
}
