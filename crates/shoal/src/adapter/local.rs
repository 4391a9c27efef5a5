//! What the adapter sees of its namespace on this node: a narrow view that the adapter
//! defines and the socket layer implements (`io::Namespace`), so the adapter names no
//! type of the layer above it.
//!
//! The adapter speaks to it in socket ids, the vocabulary of its room index: it works
//! out which local sockets an operation reaches, then asks the namespace to act on them.
//! A broadcast so takes one call (one lock) for all its recipients, and no per-socket
//! handle is ever allocated.

use super::{Handshake, RecoveryOptions, SocketId};
use crate::protocol::socket_packet::Encoded;
use crate::protocol::{IntoArgs, Parser, Value};
use tokio::sync::mpsc;

/// One namespace on this node, as its adapter sees it. The adapter keeps it as a
/// `Weak` (the namespace owns the adapter).
pub trait LocalNamespace: Send + Sync + 'static {
    /// The namespace's name (`/`, `/chat`).
    fn name(&self) -> &str;

    /// The connection state recovery settings, when recovery is on.
    fn recovery(&self) -> Option<&RecoveryOptions>;

    /// The packet format of the server's clients: a broadcast is encoded with it, once.
    fn parser(&self) -> Parser;

    /// Queues an encoded packet on each of these local sockets (ids not connected here
    /// are skipped). A volatile packet skips clients that still have unsent data.
    /// Returns how many sockets took it.
    fn send(&self, ids: &[SocketId], packet: &Encoded, volatile: bool) -> usize;

    /// A new ack id, unique among this namespace's acks on this node.
    fn next_ack_id(&self) -> u64;

    /// Sends a packet that carries ack id `ack_id` to these local sockets; the ack of
    /// each (its arguments) will arrive on `acks`. Returns the ids of the sockets that
    /// took it (the others will not answer).
    fn send_expecting_acks(&self, ids: &[SocketId], packet: &Encoded, ack_id: u64, acks: &mpsc::UnboundedSender<Vec<Value>>) -> Vec<SocketId>;

    /// Stops waiting for ack `ack_id` from these sockets.
    fn forget_acks(&self, ids: &[SocketId], ack_id: u64);

    /// The handshake of a local socket.
    fn handshake(&self, id: &SocketId) -> Option<Handshake>;

    /// The `data` of a local socket.
    fn data(&self, id: &SocketId) -> Option<Value>;

    /// The recoverable state of these sockets changed (their rooms, usually): each one
    /// hands its session record to the adapter again.
    fn changed(&self, ids: &[SocketId]);

    /// Disconnects these local sockets from the namespace (and closes their whole
    /// connections with `close`).
    fn disconnect(&self, ids: &[SocketId], close: bool);

    /// Runs this node's handler of a server-side event that came from another node.
    fn dispatch_server_event(&self, event: &str, args: Vec<Value>, ack: Option<ServerAck>);
}

/// Answers a server-side event from another node: the adapter makes one per event that
/// asked for an answer, and the handler calls `send` once.
pub struct ServerAck(Box<dyn FnOnce(Vec<Value>) + Send>);

impl ServerAck {
    /// An ack that calls `f` with the answer's arguments.
    pub fn new(f: impl FnOnce(Vec<Value>) + Send + 'static) -> ServerAck {
        ServerAck(Box::new(f))
    }
    /// Answers the server-side event with `args` (once: it is consumed).
    pub fn send(self, args: impl IntoArgs) {
        (self.0)(args.into_args())
    }
}
