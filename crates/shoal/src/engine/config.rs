//! Engine.IO settings, with the reference server's defaults.

use http::request::Parts;
use std::sync::Arc;
use std::time::Duration;

/// Which transports a client may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transports {
    /// HTTP long-polling is allowed.
    pub polling: bool,
    /// WebSocket is allowed.
    pub websocket: bool,
}

impl Transports {
    /// Both transports (the default).
    pub const ALL: Transports = Transports { polling: true, websocket: true };
    /// HTTP long-polling only.
    pub const POLLING: Transports = Transports { polling: true, websocket: false };
    /// WebSocket only.
    pub const WEBSOCKET: Transports = Transports { polling: false, websocket: true };

    /// Parses a list such as `polling,websocket`.
    pub fn parse(list: &str) -> Result<Transports, String> {
        let mut t = Transports { polling: false, websocket: false };
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "polling" => t.polling = true,
                "websocket" => t.websocket = true,
                other => return Err(format!("unknown transport {other:?} (expected polling or websocket)")),
            }
        }
        if !t.polling && !t.websocket {
            return Err("at least one transport must be enabled".into());
        }
        Ok(t)
    }
}

/// Cross-origin settings for polling requests (WebSocket is not subject to CORS).
#[derive(Clone, Debug, Default)]
pub struct Cors {
    /// Allowed origins; empty means any origin (`*`, or the request's origin with credentials).
    pub origins: Vec<String>,
    /// Sends `Access-Control-Allow-Credentials: true` (cookies, auth headers).
    pub credentials: bool,
}

/// Decides whether a handshake may proceed. `Err(message)` answers 403 with that message.
pub type AllowRequest = Arc<dyn Fn(&Parts) -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
/// The settings of the Engine.IO server, with their defaults (`EngineConfig::default()`).
pub struct EngineConfig {
    /// URL path the engine answers on, with leading and trailing slash.
    pub path: String,
    /// Time between two server pings (default 25 s).
    pub ping_interval: Duration,
    /// Time a client has to answer a ping (default 20 s).
    pub ping_timeout: Duration,
    /// Largest message or polling body a client may send, in bytes (default 1 MB).
    pub max_payload: usize,
    /// The transports clients may use (default: both).
    pub transports: Transports,
    /// `None`: no CORS headers at all (same-origin only for browsers).
    pub cors: Option<Cors>,
    /// A check of each handshake request (default: none, every request may open a session).
    pub allow_request: Option<AllowRequest>,
    /// How long a client has to finish an upgrade to WebSocket (default 10 s).
    pub upgrade_timeout: Duration,
    /// Bytes that may wait in one session's outbound queue before the session is
    /// closed as too slow (default 8 MiB).
    pub max_buffered_bytes: usize,
    /// Longest time one WebSocket write may take before the session is dropped (default 10 s).
    pub write_timeout: Duration,
    /// Prefix of every session id; names the owner node in a cluster.
    pub node_id: String,
    /// Most open sessions; handshakes beyond get 403 (default 100,000).
    pub max_sessions: usize,
    /// Longest time a polling POST body may take to arrive (default 10 s); then 408.
    pub request_body_timeout: Duration,
    /// Most sessions one client address may hold at once; more handshakes get 403
    /// (default 1,000).
    pub max_sessions_per_address: usize,
    /// Most handshakes one client address may make per second; more get 403 (default 100).
    pub handshakes_per_address_per_second: u32,
    /// Whether loopback addresses (127.0.0.0/8, ::1) are held to the two per-address
    /// limits (default false: a proxy on the same machine that is not in the trusted
    /// proxies would otherwise make every client one address, and local load
    /// generators and health checks are not abuse).
    pub limit_loopback: bool,
    /// Whether Engine.IO protocol 3 clients (socket.io-client 1.x and 2.x, `EIO=3`) may
    /// open sessions (default false: they get 400 "Unsupported protocol version"), as
    /// the reference server's `allowEIO3`. docs/compatibility.md says what differs.
    pub allow_eio3: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            path: "/engine.io/".into(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            transports: Transports::ALL,
            cors: None,
            allow_request: None,
            upgrade_timeout: Duration::from_secs(10),
            max_buffered_bytes: 8 << 20,
            write_timeout: Duration::from_secs(10),
            node_id: crate::engine::sid::random_node_id(),
            max_sessions: 100_000,
            request_body_timeout: Duration::from_secs(10),
            max_sessions_per_address: 1_000,
            handshakes_per_address_per_second: 100,
            limit_loopback: false,
            allow_eio3: false,
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("path", &self.path)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("max_payload", &self.max_payload)
            .field("transports", &self.transports)
            .field("cors", &self.cors)
            .field("node_id", &self.node_id)
            .field("allow_eio3", &self.allow_eio3)
            .finish_non_exhaustive()
    }
}
