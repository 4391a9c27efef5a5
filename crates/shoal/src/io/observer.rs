//! An optional observer of socket lifecycles, for tools that watch a node (the admin UI
//! in `crate::admin`). At most one per server, set once; when none is set each hook
//! point costs one atomic load and nothing else, and broadcasts never call it.

use super::{DisconnectReason, Event, Socket};
use crate::engine::CloseReason;
use crate::protocol::Value;
use std::sync::{Arc, OnceLock};

/// What a node's sockets do, as they do it. Every method runs inline on the path that
/// caused it, so implementations must be quick and must not block.
pub(crate) trait SocketObserver: Send + Sync {
    /// An Engine.IO session opened on this node.
    fn session_opened(&self) {}
    /// An Engine.IO session of this node closed.
    fn session_closed(&self, _reason: CloseReason) {}
    /// A socket connected (before the connection handlers run).
    fn connected(&self, _socket: &Socket) {}
    /// A socket's rooms or data may have changed (join, leave, `set_data`, an adapter
    /// operation such as `sockets_join`).
    fn changed(&self, _socket: &Socket) {}
    /// A socket disconnected; it has left its rooms.
    fn disconnected(&self, _socket: &Socket, _reason: DisconnectReason) {}
    /// An event arrived from a client (before its handlers run).
    fn event_received(&self, _socket: &Socket, _event: &Event) {}
    /// An event was sent to one socket with `Socket::emit` (not broadcasts).
    fn event_sent(&self, _socket: &Socket, _event: &str, _args: &[Value]) {}
}

/// The server's observer slot, shared by its namespaces.
pub(crate) type ObserverSlot = Arc<OnceLock<Arc<dyn SocketObserver>>>;
