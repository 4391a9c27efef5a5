//! The configuration of a node: command-line flags and environment variables with their
//! defaults, an optional TOML file under them (`--config`, see [`file`]), and the one
//! function that turns them into library calls ([`Config::start`]).
//!
//! Precedence, lowest first: defaults, the file, environment variables, flags.

pub mod file;

use clap::Parser;
pub use file::GatewayConfig;
use shoal::cluster::{default_advertise, ClusterAdapter, ClusterOptions, TrustedProxies};
use shoal::engine::{Cors, Transports};
use shoal::Server;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "shoal",
    version,
    about = "A Socket.IO v4 server node, serving a chat demo at / or, configured, a gateway to your app",
    after_help = "Configuration file: `shoal --config shoal.toml` (flags and environment over it);\n`shoal config check FILE` checks one, `shoal config print [--config FILE] [flags]` prints the effective one."
)]
pub struct Config {
    /// A TOML configuration file (docs/gateway.md has its schema). Environment variables
    /// and flags override its `[node]` keys.
    #[arg(long, env = "SHOAL_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "SHOAL_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// URL path of the Socket.IO endpoint.
    #[arg(long, env = "SHOAL_PATH", default_value = "/socket.io/")]
    pub path: String,

    /// Milliseconds between two server pings.
    #[arg(long, env = "SHOAL_PING_INTERVAL", default_value_t = 25_000)]
    pub ping_interval: u64,

    /// Milliseconds a client has to answer a ping.
    #[arg(long, env = "SHOAL_PING_TIMEOUT", default_value_t = 20_000)]
    pub ping_timeout: u64,

    /// Largest message or polling body a client may send, in bytes.
    #[arg(long, env = "SHOAL_MAX_PAYLOAD", default_value_t = 1_000_000)]
    pub max_payload: usize,

    /// Milliseconds a new connection has to join a namespace.
    #[arg(long, env = "SHOAL_CONNECT_TIMEOUT", default_value_t = 45_000)]
    pub connect_timeout: u64,

    /// Transports clients may use: polling, websocket, or both (comma-separated).
    #[arg(long, env = "SHOAL_TRANSPORTS", default_value = "polling,websocket")]
    pub transports: String,

    /// Origins allowed to make cross-origin polling requests (comma-separated), or `*`.
    /// Unset: no CORS headers (same-origin pages only).
    #[arg(long, env = "SHOAL_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Allow credentials (cookies) on cross-origin requests.
    #[arg(long, env = "SHOAL_CORS_CREDENTIALS", default_value_t = false)]
    pub cors_credentials: bool,

    /// Largest request head (request line and headers) in bytes; larger ones get 431.
    #[arg(long, env = "SHOAL_MAX_HEADER_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(8192..))]
    pub max_header_bytes: u64,

    /// Bytes that may wait for one slow client before it is disconnected.
    #[arg(long, env = "SHOAL_MAX_BUFFERED_BYTES", default_value_t = 8 << 20)]
    pub max_buffered_bytes: usize,

    /// Most open TCP connections on --listen (WebSocket ones included); a connection past
    /// it is closed as soon as it is accepted.
    #[arg(long, env = "SHOAL_MAX_CONNECTIONS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Most open sessions on this node; more handshakes get 403 "Too many sessions".
    #[arg(long, env = "SHOAL_MAX_SESSIONS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,

    /// Milliseconds a polling POST body may take to arrive; a slower one gets 408.
    #[arg(long, env = "SHOAL_REQUEST_BODY_TIMEOUT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_body_timeout: u64,

    /// Most binary attachments one packet may announce (at most 999999, what the
    /// protocol's count can say); more close the session as a parse error.
    #[arg(long, env = "SHOAL_MAX_ATTACHMENTS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(..1_000_000))]
    pub max_attachments: u64,

    /// Most sessions one client address may hold at once; more handshakes get 403.
    #[arg(long, env = "SHOAL_MAX_SESSIONS_PER_ADDRESS", default_value_t = 1_000)]
    pub max_sessions_per_address: usize,

    /// Most handshakes one client address may make per second; more get 403.
    #[arg(long, env = "SHOAL_HANDSHAKES_PER_ADDRESS_PER_SECOND", default_value_t = 100)]
    pub handshakes_per_address_per_second: u32,

    /// Hold loopback clients (127.0.0.0/8, ::1) to the per-address limits too.
    #[arg(long, env = "SHOAL_LIMIT_LOOPBACK", default_value_t = false)]
    pub limit_loopback: bool,

    /// Accept Engine.IO protocol 3 clients (socket.io-client 1.x and 2.x, `EIO=3`) too,
    /// as the reference server's `allowEIO3` (docs/compatibility.md).
    #[arg(long, env = "SHOAL_ALLOW_EIO3", default_value_t = false)]
    pub allow_eio3: bool,

    /// Inbound events per socket per second (token bucket refill; 0 = no limit).
    #[arg(long, env = "SHOAL_EVENTS_PER_SECOND", default_value_t = 100)]
    pub events_per_second: u32,

    /// Inbound events a socket may send at once (token bucket size).
    #[arg(long, env = "SHOAL_EVENT_BURST", default_value_t = 500)]
    pub event_burst: u32,

    /// Disconnect a socket that sends events over the rate (default: drop those events).
    #[arg(long, env = "SHOAL_DISCONNECT_OVER_EVENT_RATE", default_value_t = false)]
    pub disconnect_over_event_rate: bool,

    /// Most rooms a socket may be in (its own included); more joins are refused.
    #[arg(long, env = "SHOAL_MAX_ROOMS_PER_SOCKET", default_value_t = 1_000)]
    pub max_rooms_per_socket: usize,

    /// Most namespaces one session may join; more CONNECTs get connect_error.
    #[arg(long, env = "SHOAL_MAX_NAMESPACES_PER_SESSION", default_value_t = 32)]
    pub max_namespaces_per_session: usize,

    /// This node's id, the prefix of its session ids (default: random).
    #[arg(long, env = "SHOAL_NODE_ID")]
    pub node_id: Option<String>,

    /// Join a cluster through Redis, e.g. `redis://127.0.0.1:6379`, or through a Redis
    /// Cluster given some of its nodes: `redis+cluster://10.0.0.1:7000,10.0.0.2:7000`
    /// (`rediss+cluster://` for TLS), or through the primary Redis Sentinel names:
    /// `redis+sentinel://[user:pass@]10.0.0.1:26379,10.0.0.2:26379/<master-name>[/<db>]`
    /// (`?sentinel_password=...` if the sentinels have one). Unset: a single node on
    /// the in-memory adapter.
    #[arg(long, env = "SHOAL_REDIS_URL")]
    pub redis: Option<String>,

    /// The Redis adapter: `classic` (Pub/Sub, as createAdapter of
    /// @socket.io/redis-adapter) or `sharded` (sharded Pub/Sub on a Redis Cluster, as
    /// createShardedAdapter; needs a redis+cluster:// URL).
    #[arg(long, env = "SHOAL_ADAPTER", default_value = "classic", value_parser = ["classic", "sharded"])]
    pub adapter: String,

    /// Subscription mode of the sharded adapter: `static`, `dynamic` (a channel per
    /// room with local sockets) or `dynamic-private` (private rooms too).
    #[arg(long, env = "SHOAL_SHARDED_MODE", default_value = "dynamic", value_parser = ["static", "dynamic", "dynamic-private"])]
    pub sharded_mode: String,

    /// Prefix of the Redis channels (the `key` option of @socket.io/redis-adapter).
    #[arg(long, env = "SHOAL_REDIS_KEY", default_value = "socket.io")]
    pub redis_key: String,

    /// Milliseconds a cluster request (fetch_sockets, server_side_emit with acks) waits
    /// for the other nodes.
    #[arg(long, env = "SHOAL_REQUESTS_TIMEOUT", default_value_t = 5000)]
    pub requests_timeout: u64,

    /// Address (host:port) the other nodes use to reach this one, registered in Redis.
    /// Default: --listen, with an unspecified IP (0.0.0.0, ::) replaced by this
    /// machine's outgoing address.
    #[arg(long, env = "SHOAL_ADVERTISE")]
    pub advertise: Option<String>,

    /// Proxies and balancers (addresses or CIDRs, comma-separated) whose
    /// X-Forwarded-For, Forwarded and PROXY protocol headers give the client's address.
    /// Unset: those headers are ignored and the client is the TCP peer.
    #[arg(long, env = "SHOAL_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Accept a PROXY protocol header (v1 or v2) at the start of each connection on
    /// --listen (from trusted proxies only; connections without one still work).
    #[arg(long, env = "SHOAL_PROXY_PROTOCOL", default_value_t = false)]
    pub proxy_protocol: bool,

    /// Milliseconds this node's cluster registration lives without renewal (renewed every
    /// quarter of it; at least 1000); a node that dies drops out of the others' view after this long.
    #[arg(long, env = "SHOAL_MEMBERSHIP_TTL", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1000..))]
    pub membership_ttl: u64,

    /// Connection state recovery: milliseconds a disconnected client can come back and get
    /// its id, rooms, data and missed events, e.g. 120000. Off (0) by default, as in the
    /// official server, because stored events carry their offset as an extra last argument.
    #[arg(long, env = "SHOAL_RECOVERY", default_value_t = 0)]
    pub recovery: u64,

    /// Serve the official Socket.IO admin UI's protocol (`@socket.io/admin-ui`) on the
    /// admin namespace (docs/admin-ui.md). Set --admin-ui-username and
    /// --admin-ui-password-hash on any node others can reach.
    #[arg(long, env = "SHOAL_ADMIN_UI", default_value_t = false)]
    pub admin_ui: bool,

    /// The admin UI's namespace.
    #[arg(long, env = "SHOAL_ADMIN_UI_NAMESPACE", default_value = "/admin")]
    pub admin_ui_namespace: String,

    /// The admin UI's username (with --admin-ui-password-hash). Unset: no login.
    #[arg(long, env = "SHOAL_ADMIN_UI_USERNAME")]
    pub admin_ui_username: Option<String>,

    /// The bcrypt hash of the admin UI's password, e.g. from
    /// `htpasswd -nbBC 10 "" PASSWORD | cut -c2-`.
    #[arg(long, env = "SHOAL_ADMIN_UI_PASSWORD_HASH")]
    pub admin_ui_password_hash: Option<String>,

    /// The admin UI may look but not act (no emit, join, leave, disconnect).
    #[arg(long, env = "SHOAL_ADMIN_UI_READONLY", default_value_t = false)]
    pub admin_ui_readonly: bool,

    /// `development` (every socket and event, live) or `production` (stats only).
    #[arg(long, env = "SHOAL_ADMIN_UI_MODE", default_value = "development")]
    pub admin_ui_mode: String,

    /// A folder with the admin UI's static files (the `ui/dist` folder of the
    /// `@socket.io/admin-ui` npm package), served at /admin-ui/ on --listen.
    #[arg(long, env = "SHOAL_ADMIN_UI_STATIC")]
    pub admin_ui_static: Option<std::path::PathBuf>,
    /// Packet format, which every client must share: `json` (the official default
    /// parser) or `msgpack` (clients built with socket.io-msgpack-parser).
    #[arg(long, env = "SHOAL_PARSER", default_value = "json")]
    pub parser: shoal::Parser,

    /// Log filter, e.g. `info`, `debug`, `shoal=debug,info`.
    #[arg(long, env = "SHOAL_LOG", default_value = "info")]
    pub log: String,

    /// The gateway (proxies to the app, publish API): from the file only.
    #[arg(skip)]
    pub gateway: GatewayConfig,
}

impl Config {
    /// Checks the values that only the library's parsers know (transports, trusted
    /// proxies), without starting anything: `shoal config check` and `start`.
    pub fn validate(&self) -> Result<(), String> {
        Transports::parse(&self.transports).map_err(|e| format!("transports (--transports): {e}"))?;
        TrustedProxies::parse(&self.trusted_proxies).map_err(|e| format!("trusted_proxies (--trusted-proxies): {e}"))?;
        if let Some(url) = &self.redis {
            shoal::adapter::redis::RedisLink::check_url(url).map_err(|e| format!("redis (--redis): {e}"))?;
        }
        if self.admin_ui {
            self.admin_ui_options()?;
        }
        Ok(())
    }

    /// The admin UI's options (`--admin-ui-*`), checked.
    pub fn admin_ui_options(&self) -> Result<shoal::admin::AdminUi, String> {
        use shoal::admin::{AdminAuth, AdminMode, AdminOptions, AdminUi};
        let auth = match (&self.admin_ui_username, &self.admin_ui_password_hash) {
            (Some(username), Some(hash)) => AdminAuth::Basic { username: username.clone(), password_hash: hash.clone() },
            (None, None) => AdminAuth::None,
            _ => return Err("admin UI: set both --admin-ui-username and --admin-ui-password-hash, or neither".to_owned()),
        };
        let mode = match self.admin_ui_mode.as_str() {
            "development" => AdminMode::Development,
            "production" => AdminMode::Production,
            other => return Err(format!("admin UI: --admin-ui-mode must be development or production, not {other:?}")),
        };
        let options = AdminOptions {
            namespace: self.admin_ui_namespace.clone(),
            auth,
            readonly: self.admin_ui_readonly,
            server_id: self.node_id.clone(),
            mode,
            ..AdminOptions::default()
        };
        AdminUi::new(options).map_err(|e| e.to_string())
    }

    /// The server these settings describe, started: with `--redis`, joined to its
    /// cluster (Redis adapter, membership, forwarding), advertising `--advertise` or
    /// the address `listening` on.
    pub async fn start(&self, listening: SocketAddr) -> Result<Server, String> {
        let transports = Transports::parse(&self.transports).map_err(|e| format!("--transports: {e}"))?;
        let trusted = TrustedProxies::parse(&self.trusted_proxies).map_err(|e| format!("--trusted-proxies: {e}"))?;
        let mut builder = Server::builder()
            .path(&self.path)
            .ping_interval(Duration::from_millis(self.ping_interval))
            .ping_timeout(Duration::from_millis(self.ping_timeout))
            .max_payload(self.max_payload)
            .connect_timeout(Duration::from_millis(self.connect_timeout))
            .max_buffered_bytes(self.max_buffered_bytes)
            .max_sessions(self.max_sessions as usize)
            .request_body_timeout(Duration::from_millis(self.request_body_timeout))
            .max_attachments(self.max_attachments as usize)
            .transports(transports)
            .trusted_proxies(trusted)
            .max_sessions_per_address(self.max_sessions_per_address)
            .handshakes_per_address_per_second(self.handshakes_per_address_per_second)
            .limit_loopback(self.limit_loopback)
            .allow_eio3(self.allow_eio3)
            .event_rate_limit(shoal::io::EventRateLimit {
                per_second: self.events_per_second,
                burst: self.event_burst,
                over: if self.disconnect_over_event_rate { shoal::io::OverLimit::Disconnect } else { shoal::io::OverLimit::Drop },
            })
            .max_rooms_per_socket(self.max_rooms_per_socket)
            .max_namespaces_per_session(self.max_namespaces_per_session)
            .parser(self.parser);
        if !self.cors_origins.is_empty() {
            let any = self.cors_origins.iter().any(|o| o == "*");
            let origins = if any { vec![] } else { self.cors_origins.clone() };
            builder = builder.cors(Cors { origins, credentials: self.cors_credentials });
        }
        if let Some(id) = &self.node_id {
            builder = builder.node_id(id);
        }
        if self.recovery > 0 {
            builder = builder.connection_state_recovery(shoal::adapter::RecoveryOptions {
                max_disconnection_duration: Duration::from_millis(self.recovery),
                ..Default::default()
            });
        }
        if let Some(url) = &self.redis {
            let redis = shoal::adapter::redis::RedisLink::connect(url).await?;
            let adapter = match self.adapter.as_str() {
                "sharded" => {
                    if !redis.is_cluster() {
                        return Err(format!("--adapter sharded needs a Redis Cluster (--redis redis+cluster://host:port,...), not {url}"));
                    }
                    ClusterAdapter::Sharded(self.sharded_mode.parse()?)
                }
                _ => ClusterAdapter::Classic,
            };
            let advertise = self.advertise.clone().unwrap_or_else(|| default_advertise(listening));
            builder = builder.cluster(ClusterOptions {
                key: self.redis_key.clone(),
                membership_ttl: Duration::from_millis(self.membership_ttl),
                requests_timeout: Duration::from_millis(self.requests_timeout),
                adapter,
                ..ClusterOptions::new(redis, advertise)
            });
            tracing::info!(url = %file::mask_url(url), key = %self.redis_key, adapter = ?adapter, "clustering through Redis");
        }
        let io = builder.start().await.map_err(|e| e.to_string())?;
        if self.admin_ui {
            let admin = self.admin_ui_options()?;
            if self.admin_ui_username.is_none() {
                tracing::warn!("admin UI without a login: anyone who reaches {} may use it", self.admin_ui_namespace);
            }
            admin.attach(&io).map_err(|e| e.to_string())?;
        }
        Ok(io)
    }

    /// The listener's options: limits, and the PROXY protocol from trusted proxies.
    pub fn serve_options(&self, io: &Server) -> shoal::ServeOptions {
        shoal::ServeOptions {
            proxy_protocol: self.proxy_protocol,
            max_header_bytes: self.max_header_bytes as usize,
            max_connections: self.max_connections as usize,
            ..io.serve_options()
        }
    }
}

/// Reads the configuration, sets up logging (`--log`, or `RUST_LOG` over it), runs `run`
/// and exits with status 1 and the error in the log if it fails: the `main` of a node.
pub async fn run_node<F, Fut>(run: F)
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let config = match Config::load(std::env::args_os()) {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).init();
    if let Err(e) = run(config).await {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

/// The listener of `--listen`, and the address it got (a port 0 becomes a real one).
pub fn listen_on(config: &Config) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let listener = listen(config.listen).map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, local))
}

/// A listener with a backlog of 1024 (tokio's `bind` asks for 128, which overflows when
/// thousands of clients reconnect at once, e.g. after another node went down).
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
}
