//! The adapter: the one seam between "this process" and "the cluster".
//!
//! The socket layer asks its namespace's adapter to index rooms, to broadcast, and to run
//! the operations that may reach sockets on other nodes (fetch, join, leave, disconnect,
//! server-side events). [`MemoryAdapter`] serves one process; a cluster adapter (Redis)
//! wraps the same local index and adds the publishing and the requests that wait for
//! answers from other nodes, which is why the cross-node operations are `async` and fail
//! with an [`AdapterError`].
//!
//! The adapter sees the socket layer only through [`LocalNamespace`], a view it defines
//! itself (in `local.rs`) and the socket layer implements.

mod handshake;
mod local;
mod memory;
pub mod recovery;
#[cfg(feature = "redis")]
pub mod redis;
mod rooms;

pub use handshake::Handshake;
pub use local::{LocalNamespace, ServerAck};
pub use memory::{AckNext, AckReceiver, MemoryAdapter};
pub use recovery::{PacketLog, PersistedSession, RecoveryOptions, RestoredSession};
pub use rooms::{LocalRooms, RoomChange, RoomObserver};

use crate::protocol::socket_packet::Packet;
use crate::protocol::Value;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// A room's name. A socket's id is also a room (the socket alone).
pub type Room = Arc<str>;
/// A socket's id, unique in the cluster.
pub type SocketId = Arc<str>;

/// Flags of a broadcast, as the official `BroadcastFlags`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BroadcastFlags {
    /// Only this node's sockets.
    pub local: bool,
    /// May be dropped for a client that is not ready to receive.
    pub volatile: bool,
    /// Time to wait for acks, when the broadcast expects them.
    pub timeout: Option<Duration>,
}

/// Who a broadcast or a cluster operation targets: sockets in any of `rooms` (all
/// sockets when empty), minus sockets in any of `except`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BroadcastOptions {
    /// Sockets in any of these rooms; every socket when empty.
    pub rooms: Vec<Room>,
    /// Sockets in any of these rooms are left out.
    pub except: Vec<Room>,
    /// `local`, `volatile` and the timeout of acks.
    pub flags: BroadcastFlags,
}

/// A socket as seen by `fetch_sockets`: possibly on another node.
#[derive(Clone, Debug)]
pub struct SocketInfo {
    /// The socket's id.
    pub id: SocketId,
    /// Its handshake.
    pub handshake: Handshake,
    /// Its rooms, its own id included.
    pub rooms: Vec<Room>,
    /// Its `socket.data`.
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// Why a cluster operation failed.
pub enum AdapterError {
    /// Not every node answered a request in time.
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// How many nodes did not answer.
        missing: usize,
    },
    /// The cluster transport (e.g. Redis) is unavailable.
    Unavailable(String),
    /// A node answered with something that could not be understood.
    BadResponse(String),
}

impl std::fmt::Display for AdapterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdapterError::Timeout { waited, missing } => {
                write!(f, "timeout reached after {} ms: {missing} answer(s) missing", waited.as_millis())
            }
            AdapterError::Unavailable(why) => write!(f, "cluster unavailable: {why}"),
            AdapterError::BadResponse(why) => write!(f, "bad response from another node: {why}"),
        }
    }
}
impl std::error::Error for AdapterError {}

/// Outcome of a broadcast that collects acks.
#[derive(Debug, Clone, PartialEq)]
pub struct AckResponses {
    /// The first argument of each ack received, in arrival order.
    pub responses: Vec<Value>,
    /// How many sockets were sent the packet (and so how many acks were expected).
    pub expected: usize,
    /// True if some acks did not arrive before the timeout.
    pub timed_out: bool,
}

/// One namespace's view of the cluster. Created by an [`AdapterFactory`] per namespace.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// Adds a local socket to rooms.
    fn add_all(&self, id: &SocketId, rooms: &[Room]);
    /// Removes a local socket from one room.
    fn del(&self, id: &SocketId, room: &Room);
    /// Removes a local socket from every room.
    fn del_all(&self, id: &SocketId);
    /// The rooms of a local socket (empty if unknown).
    fn socket_rooms(&self, id: &SocketId) -> Vec<Room>;
    /// All rooms with at least one local socket.
    fn rooms(&self) -> Vec<Room>;

    /// Sends a packet to every matching socket, here and (unless `local`) on other nodes.
    /// The packet is encoded once. Never waits: cluster publishing is queued in order.
    fn broadcast(&self, packet: Packet, opts: BroadcastOptions);

    /// Broadcasts a packet that expects an ack from every recipient and collects them
    /// until all arrived or `opts.flags.timeout` passed.
    async fn broadcast_with_ack(&self, packet: Packet, opts: BroadcastOptions) -> Result<AckResponses, AdapterError>;

    /// Sockets matching `opts`, on every node (only here with `local`).
    async fn fetch_sockets(&self, opts: BroadcastOptions) -> Result<Vec<SocketInfo>, AdapterError>;
    /// Makes matching sockets join rooms.
    async fn add_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) -> Result<(), AdapterError>;
    /// Makes matching sockets leave rooms.
    async fn del_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) -> Result<(), AdapterError>;
    /// Disconnects matching sockets (and their whole connection with `close`).
    async fn disconnect_sockets(&self, opts: BroadcastOptions, close: bool) -> Result<(), AdapterError>;

    /// Emits an event to the other nodes' handlers of this namespace. With a timeout,
    /// waits for every other node's ack and returns them (first argument of each).
    async fn server_side_emit(&self, event: &str, args: Vec<Value>, timeout: Option<Duration>) -> Result<Vec<Value>, AdapterError>;

    /// Number of nodes in the cluster, this one included.
    async fn server_count(&self) -> usize;

    /// A connected socket's recoverable state changed (it connected, joined, left, or its
    /// data changed). A cluster adapter keeps it where other nodes can find it, so that
    /// even a node killed outright loses no session.
    fn session_changed(&self, _session: PersistedSession) {}

    /// Keeps a disconnected socket's session for connection state recovery.
    fn persist_session(&self, _session: PersistedSession) {}

    /// The socket of `pid` left for good (a namespace disconnect): nothing to recover.
    fn forget_session(&self, _pid: &str) {}

    /// The session of `pid` and the packets it missed after `offset`, if recoverable.
    async fn restore_session(&self, _pid: &str, _offset: &str) -> Option<RestoredSession> {
        None
    }

    /// Releases what the adapter holds (subscriptions, tasks) when the server stops.
    async fn close(&self) {}
}

/// Creates the adapter of each namespace, given the namespace's view of its local
/// sockets (which the adapter should keep only as a `Weak`: the namespace owns it).
pub type AdapterFactory = Arc<dyn Fn(&Arc<dyn LocalNamespace>) -> Arc<dyn Adapter> + Send + Sync>;

/// The factory of the in-memory adapter (the default).
///
/// ```
/// let io = shoal::Server::builder().adapter(shoal::adapter::memory()).build();
/// # let _ = io;
/// ```
pub fn memory() -> AdapterFactory {
    Arc::new(|ns: &Arc<dyn LocalNamespace>| Arc::new(MemoryAdapter::new(ns)) as Arc<dyn Adapter>)
}

/// A random id of `len` ASCII letters and digits (node uids, request ids, log epochs).
/// The adapter makes its own: they must be unique, not secret.
pub(crate) fn random_id(len: usize) -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(len).map(char::from).collect()
}
