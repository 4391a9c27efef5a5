//! Command-line flags and environment variables of a node, with their defaults.

use clap::Parser;
use std::net::SocketAddr;

#[derive(Parser, Debug, Clone)]
#[command(name = "shoal", version, about = "A Socket.IO v4 server node, serving a chat demo at /")]
pub struct Config {
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

    /// Bytes that may wait for one slow client before it is disconnected.
    #[arg(long, env = "SHOAL_MAX_BUFFERED_BYTES", default_value_t = 8 << 20)]
    pub max_buffered_bytes: usize,

    /// This node's id, the prefix of its session ids (default: random).
    #[arg(long, env = "SHOAL_NODE_ID")]
    pub node_id: Option<String>,

    /// Join a cluster through Redis, e.g. `redis://127.0.0.1:6379`. Unset: a single node
    /// on the in-memory adapter.
    #[arg(long, env = "SHOAL_REDIS_URL")]
    pub redis: Option<String>,

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
    /// quarter of it); a node that dies drops out of the others' view after this long.
    #[arg(long, env = "SHOAL_MEMBERSHIP_TTL", default_value_t = 10_000)]
    pub membership_ttl: u64,

    /// Connection state recovery: milliseconds a disconnected client can come back and get
    /// its id, rooms, data and missed events, e.g. 120000. Off (0) by default, as in the
    /// official server, because stored events carry their offset as an extra last argument.
    #[arg(long, env = "SHOAL_RECOVERY", default_value_t = 0)]
    pub recovery: u64,

    /// Log filter, e.g. `info`, `debug`, `shoal=debug,info`.
    #[arg(long, env = "SHOAL_LOG", default_value = "info")]
    pub log: String,
}
