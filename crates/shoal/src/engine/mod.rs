//! The Engine.IO server (protocol 4, and protocol 3 with `allow_eio3`): handshake, the session table, HTTP long-polling,
//! WebSocket, the upgrade from one to the other, heartbeats, limits and CORS.
//!
//! It hands complete messages (text or binary) to an [`EngineHandler`] and knows nothing
//! of Socket.IO. `http.rs` routes a request; `polling.rs` and `websocket.rs` are the two
//! transports; `session.rs` is one session's state.

pub mod config;
mod conn;
mod eio3;
mod http;
mod limits;
mod polling;
pub mod session;
pub mod sid;
mod websocket;
pub mod ws_frame;

pub use self::http::{is_websocket_upgrade, ErrorCode, PeerAddr, Query, Relayed, ResponseBody};
pub use conn::Conn;
pub use config::{AllowRequest, Cors, EngineConfig, Transports};
pub use session::{CloseReason, HandshakeRequest, ProtocolVersion, Session, SessionClosed, TransportKind};

use crate::protocol::engine_packet::{OutPacket, Packet, PacketType};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// A complete message from a client.
#[derive(Debug, Clone)]
pub enum Message {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

/// What sits above the engine (the Socket.IO layer, or an app speaking raw Engine.IO).
/// Calls for one session come in order; none of them may block.
pub trait EngineHandler: Send + Sync + 'static {
    /// A session finished its handshake.
    fn on_open(&self, session: &Arc<Session>);
    /// A session received a message.
    fn on_message(&self, session: &Arc<Session>, message: Message);
    /// A session closed (called once).
    fn on_close(&self, session: &Session, reason: CloseReason);
}

pub(crate) struct EngineShared {
    pub config: EngineConfig,
    pub handler: Arc<dyn EngineHandler>,
    sessions: RwLock<HashMap<Arc<str>, Arc<Session>>>,
    shutting_down: AtomicBool,
    /// Open sessions and handshakes per client address.
    pub(crate) per_address: limits::AddressLimits,
    pub(crate) limit_hits: crate::metrics::LimitHits,
}

impl EngineShared {
    pub fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions.read().unwrap().get(sid).cloned()
    }
    pub fn insert(&self, session: Arc<Session>) {
        self.per_address.opened(session.handshake.address.ip().to_canonical());
        self.sessions.write().unwrap().insert(session.sid.clone(), session);
    }
    /// Takes a session out of the table (again: a no-op).
    pub fn remove(&self, sid: &str) {
        let removed = self.sessions.write().unwrap().remove(sid);
        if let Some(session) = removed {
            self.per_address.closed(session.handshake.address.ip().to_canonical());
        }
    }
    pub(crate) fn limit_hit(&self, limit: crate::metrics::Limit) {
        self.limit_hits.hit(limit);
    }
    pub fn session_count(&self) -> usize {
        self.sessions.read().unwrap().len()
    }

    /// Acts on one packet from a client, whatever transport carried it.
    pub fn on_packet(&self, session: &Arc<Session>, packet: Packet) {
        match packet {
            Packet::Message(text) => self.handler.on_message(session, Message::Text(text)),
            Packet::Binary(bytes) => self.handler.on_message(session, Message::Binary(bytes)),
            // In protocol 3 only the client pings, and the server answers.
            Packet::Ping(_) if session.protocol() == ProtocolVersion::V3 => {
                session.on_client_ping();
                let _ = session.send(OutPacket::control(PacketType::Pong));
            }
            Packet::Pong(_) if session.protocol() == ProtocolVersion::V3 => {
                tracing::debug!(sid = %session.sid, "pong from a protocol 3 client: invalid heartbeat direction");
                session.close(CloseReason::TransportError);
            }
            Packet::Pong(_) => session.on_pong(),
            // In protocol 4 only the server pings.
            Packet::Ping(_) => {
                tracing::debug!(sid = %session.sid, "ping from a client: invalid heartbeat direction");
                session.close(CloseReason::TransportError);
            }
            Packet::Close => session.close(CloseReason::TransportClose),
            Packet::Open | Packet::Upgrade | Packet::Noop => {}
        }
    }
}

/// An Engine.IO server. Cheap to clone; every clone is the same server.
#[derive(Clone)]
pub struct Engine {
    pub(crate) shared: Arc<EngineShared>,
}

impl Engine {
    /// An engine with `config` that hands its sessions to `handler`.
    pub fn new(config: EngineConfig, handler: Arc<dyn EngineHandler>) -> Engine {
        Engine::with_limit_hits(config, handler, Default::default())
    }

    /// An engine that counts the limits it enforces in the node's metrics.
    pub(crate) fn with_limit_hits(config: EngineConfig, handler: Arc<dyn EngineHandler>, limit_hits: crate::metrics::LimitHits) -> Engine {
        Engine {
            shared: Arc::new(EngineShared {
                config,
                handler,
                sessions: RwLock::new(HashMap::new()),
                shutting_down: AtomicBool::new(false),
                per_address: Default::default(),
                limit_hits,
            }),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// True if the request's path is this engine's path.
    pub fn matches<B>(&self, req: &::http::Request<B>) -> bool {
        req.uri().path().starts_with(&self.shared.config.path)
    }

    /// Answers one HTTP request addressed to the engine's path.
    pub async fn handle<B>(&self, req: ::http::Request<B>) -> ::http::Response<ResponseBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        http::handle(&self.shared, req).await
    }

    /// The open session with this id, if any.
    pub fn session(&self, sid: &str) -> Option<Arc<Session>> {
        self.shared.get(sid)
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.shared.session_count()
    }

    /// Refuses new sessions from now on and closes every open one with `reason`.
    pub fn close_all(&self, reason: CloseReason) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let sessions: Vec<_> = self.shared.sessions.read().unwrap().values().cloned().collect();
        for s in sessions {
            s.close(reason);
        }
    }

    /// Refuses new sessions from now on (403 "Server is shutting down"); open ones go on.
    pub fn refuse_new_sessions(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
    }

    /// True once the engine refuses new sessions (the node drains).
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::SeqCst)
    }
}
