//! [`ServerBuilder`]: every setting of a server with its default, `build` for a single
//! node and `start` for a node that joins a cluster.

use super::engine_handler::{ConnectDeadlines, Handler};
use super::extract::StateMap;
use super::server::{EventRateLimit, ServerConfig, SocketLimits};
use super::{Server, ServerShared};
use crate::adapter::{AdapterFactory, RecoveryOptions};
use crate::cluster::{Ingress, TrustedProxies};
use crate::engine::{AllowRequest, Cors, Engine, EngineConfig, Transports};
use crate::metrics::NodeMetrics;
use crate::protocol::Parser;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// Settings of a [`Server`], with the official defaults.
///
/// ```
/// use shoal::Server;
/// use std::time::Duration;
///
/// let io = Server::builder()
///     .path("/realtime/")
///     .ping_interval(Duration::from_secs(20))
///     .max_payload(100_000)
///     .max_rooms_per_socket(50)
///     .build();
/// assert_eq!(io.engine().config().path, "/realtime/");
/// ```
pub struct ServerBuilder {
    engine: EngineConfig,
    recovery: Option<RecoveryOptions>,
    connect_timeout: Duration,
    max_attachments: usize,
    parser: Parser,
    adapter: AdapterFactory,
    trusted_proxies: TrustedProxies,
    event_rate: EventRateLimit,
    max_rooms_per_socket: usize,
    max_namespaces_per_session: usize,
    states: HashMap<std::any::TypeId, Box<dyn std::any::Any + Send + Sync>>,
    #[cfg(feature = "redis")]
    cluster: Option<crate::cluster::ClusterOptions>,
}

/// Why a server could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// A setting is invalid (e.g. a node id with characters a sid cannot carry).
    Config(String),
    /// The cluster could not be joined: Redis unreachable, or the node id is in use by
    /// a live node.
    Cluster(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(why) => write!(f, "invalid configuration: {why}"),
            StartError::Cluster(why) => write!(f, "cannot join the cluster: {why}"),
        }
    }
}
impl std::error::Error for StartError {}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            engine: EngineConfig { path: "/socket.io/".into(), ..EngineConfig::default() },
            recovery: None,
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            parser: Parser::Json,
            adapter: crate::adapter::memory(),
            trusted_proxies: TrustedProxies::default(),
            event_rate: EventRateLimit::default(),
            max_rooms_per_socket: 1_000,
            max_namespaces_per_session: 32,
            states: HashMap::new(),
            #[cfg(feature = "redis")]
            cluster: None,
        }
    }
}

impl ServerBuilder {
    /// Shared state for handlers, read with the [`State<T>`](crate::extract::State)
    /// extractor: one value per type (a second value of the same type replaces the
    /// first), cloned for each handler that asks for it. No state by default.
    ///
    /// ```
    /// use shoal::extract::State;
    /// use shoal::{Server, Socket};
    /// use std::sync::{Arc, Mutex};
    ///
    /// #[derive(Clone, Default)]
    /// struct Scores(Arc<Mutex<Vec<u32>>>);
    ///
    /// let io = Server::builder().with_state(Scores::default()).build();
    /// io.on_connection(|socket: Socket| async move {
    ///     socket.on("score", |State(scores): State<Scores>, shoal::extract::Data(n): shoal::extract::Data<u32>| async move {
    ///         scores.0.lock().unwrap().push(n);
    ///     });
    /// });
    /// ```
    pub fn with_state<T: Clone + Send + Sync + 'static>(mut self, state: T) -> Self {
        self.states.insert(std::any::TypeId::of::<T>(), Box::new(state));
        self
    }

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
    /// CORS for browsers on other origins (default: none, same origin only).
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
    /// The packet format, which every client must share (default [`Parser::Json`], the
    /// official default parser). [`Parser::MsgPack`] serves clients built with
    /// `socket.io-msgpack-parser`: each packet is one binary message in MessagePack.
    pub fn parser(mut self, parser: Parser) -> Self {
        self.parser = parser;
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
    /// Most sessions one client address may hold at once; more handshakes get 403 "Too
    /// many sessions from this address" (default 1,000). The address is the client's:
    /// the TCP peer, or the client behind [`ServerBuilder::trusted_proxies`].
    pub fn max_sessions_per_address(mut self, n: usize) -> Self {
        self.engine.max_sessions_per_address = n;
        self
    }
    /// Most handshakes one client address may make per second; more get 403 "Too many
    /// handshakes from this address" (default 100).
    pub fn handshakes_per_address_per_second(mut self, n: u32) -> Self {
        self.engine.handshakes_per_address_per_second = n;
        self
    }
    /// Holds loopback clients (127.0.0.0/8, ::1) to the two per-address limits too
    /// (default false: a local proxy missing from the trusted proxies would make every
    /// client one address, and local load generators and health checks are not abuse).
    pub fn limit_loopback(mut self, on: bool) -> Self {
        self.engine.limit_loopback = on;
        self
    }
    /// Accepts Engine.IO protocol 3 clients (socket.io-client 1.x and 2.x, `EIO=3`) too,
    /// as the reference server's `allowEIO3` (default false: they get 400 "Unsupported
    /// protocol version"). They join `/` on connecting, as they expect; what else differs
    /// is in docs/compatibility.md.
    pub fn allow_eio3(mut self, on: bool) -> Self {
        self.engine.allow_eio3 = on;
        self
    }
    /// Inbound events per socket (default 100 per second, bursts of 500, dropped over
    /// it). Acks from the client are not counted.
    pub fn event_rate_limit(mut self, limit: EventRateLimit) -> Self {
        self.event_rate = limit;
        self
    }
    /// Most rooms a socket may be in, its own room included (default 1,000); a `join`
    /// beyond is refused (logged and counted). Joins made by other nodes
    /// (`sockets_join`) are not limited.
    pub fn max_rooms_per_socket(mut self, n: usize) -> Self {
        self.max_rooms_per_socket = n;
        self
    }
    /// Most namespaces one session may join (default 32); a CONNECT beyond is answered
    /// `connect_error` "Too many namespaces".
    pub fn max_namespaces_per_session(mut self, n: usize) -> Self {
        self.max_namespaces_per_session = n;
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
    /// The adapter of each namespace (default: [`adapter::memory`](crate::adapter::memory), one process).
    pub fn adapter(mut self, factory: AdapterFactory) -> Self {
        self.adapter = factory;
        self
    }
    /// The engine settings so far.
    pub fn engine_config(&self) -> &EngineConfig {
        &self.engine
    }

    /// Proxies and balancers whose `X-Forwarded-For`, `Forwarded` and PROXY protocol
    /// headers give the client's address (`handshake.address`). Default: none, so
    /// those headers are ignored and the client is the TCP peer.
    pub fn trusted_proxies(mut self, trusted: TrustedProxies) -> Self {
        self.trusted_proxies = trusted;
        self
    }

    /// Makes this node one of a cluster: the Redis adapter on `options.redis` (so any
    /// node emits to any socket), membership in Redis (registration, renewal, id clash
    /// refusal, graceful leave) and forwarding of requests for other nodes' sessions to
    /// their owner, so that any balancer works without sticky sessions. Call
    /// [`ServerBuilder::start`] (not `build`) to join.
    #[cfg(feature = "redis")]
    pub fn cluster(mut self, options: crate::cluster::ClusterOptions) -> Self {
        self.adapter = match options.adapter {
            crate::cluster::ClusterAdapter::Classic => {
                let adapter_options = crate::adapter::redis::RedisOptions {
                    key: options.key.clone(),
                    requests_timeout: options.requests_timeout,
                    ..Default::default()
                };
                crate::adapter::redis::factory(options.redis.clone(), adapter_options)
            }
            crate::cluster::ClusterAdapter::Sharded(subscription_mode) => {
                let adapter_options = crate::adapter::redis::ShardedOptions {
                    channel_prefix: options.key.clone(),
                    subscription_mode,
                    requests_timeout: options.requests_timeout,
                };
                crate::adapter::redis::sharded_factory(options.redis.clone(), adapter_options)
            }
        };
        self.cluster = Some(options);
        self
    }

    /// Builds a single node (no cluster), ready to serve.
    ///
    /// # Panics
    /// If [`ServerBuilder::cluster`] was called (a cluster node must join the membership:
    /// use `start().await`), or the node id is not 1-64 letters, digits, `-` or `_`.
    pub fn build(self) -> Server {
        #[cfg(feature = "redis")]
        assert!(self.cluster.is_none(), "a cluster node joins the membership on start: call `ServerBuilder::start().await` instead of `build()`");
        if let Err(e) = self.check() {
            panic!("{e}");
        }
        let (server, _) = self.assemble();
        let ingress = Ingress::new(server.engine().clone(), server.shared.config_trusted(), server.shared.metrics.clone());
        let _ = server.shared.ingress.set(Arc::new(ingress));
        server
    }

    /// Starts the node: checks the settings and, with [`ServerBuilder::cluster`], joins
    /// the cluster (refusing a node id a live node holds) and starts forwarding. Works
    /// without a cluster too.
    pub async fn start(self) -> Result<Server, StartError> {
        self.check()?;
        let (server, cluster) = self.assemble();
        let shared = &server.shared;
        #[allow(unused_mut)]
        let mut ingress = Ingress::new(server.engine().clone(), shared.config_trusted(), shared.metrics.clone());
        #[cfg(feature = "redis")]
        if let Some(options) = cluster {
            let config = server.engine().config();
            let cluster_ingress = crate::cluster::join(&options, config, shared.metrics.clone()).await.map_err(StartError::Cluster)?;
            ingress = ingress.with_cluster(cluster_ingress);
        }
        #[cfg(not(feature = "redis"))]
        let _ = cluster;
        let _ = shared.ingress.set(Arc::new(ingress));
        Ok(server)
    }

    fn check(&self) -> Result<(), StartError> {
        let id = &self.engine.node_id;
        if !crate::engine::sid::is_valid_node_id(id) {
            return Err(StartError::Config(format!("node id {id:?}: use 1 to 64 letters, digits, '-' and '_'")));
        }
        #[cfg(feature = "redis")]
        if let Some(c) = &self.cluster {
            if c.advertise.is_empty() || c.advertise.parse::<http::uri::Authority>().is_err() {
                return Err(StartError::Config(format!("advertise address {:?}: use host:port", c.advertise)));
            }
            if c.membership_ttl < Duration::from_secs(1) {
                return Err(StartError::Config("membership ttl: at least 1 s".into()));
            }
        }
        Ok(())
    }

    #[cfg(feature = "redis")]
    fn assemble(self) -> (Server, Option<crate::cluster::ClusterOptions>) {
        let cluster = self.cluster.clone();
        (self.assemble_server(cluster.is_some()), cluster)
    }

    #[cfg(not(feature = "redis"))]
    fn assemble(self) -> (Server, Option<()>) {
        (self.assemble_server(false), None)
    }

    fn assemble_server(self, clustered: bool) -> Server {
        let metrics = Arc::new(NodeMetrics::new(clustered));
        let limits = SocketLimits {
            event_rate: self.event_rate,
            max_rooms_per_socket: self.max_rooms_per_socket,
            max_namespaces_per_session: self.max_namespaces_per_session,
            hits: metrics.limit_hits.clone(),
        };
        let shared = Arc::new(ServerShared {
            config: ServerConfig {
                recovery: self.recovery,
                connect_timeout: self.connect_timeout,
                max_attachments: self.max_attachments,
                parser: self.parser,
                adapter: self.adapter,
                trusted_proxies: self.trusted_proxies,
                limits,
                state: StateMap::new(self.states),
            },
            namespaces: RwLock::new(HashMap::new()),
            dynamic: RwLock::new(Vec::new()),
            creating: std::sync::Mutex::new(()),
            engine: OnceLock::new(),
            connect_deadlines: ConnectDeadlines::default(),
            observer: Default::default(),
            ingress: OnceLock::new(),
            metrics: metrics.clone(),
        });
        let handler = Arc::new(Handler { server: Arc::downgrade(&shared) });
        let _ = shared.engine.set(Engine::with_limit_hits(self.engine, handler, metrics.limit_hits.clone()));
        shared.of("/");
        Server { shared }
    }
}
