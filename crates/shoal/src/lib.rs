//! shoal: a Socket.IO v4 server (Engine.IO protocol 4, Socket.IO protocol 5).
//!
//! Layers, bottom up, each knowing only the one below it:
//! - [`protocol`]: encode/decode of Engine.IO and Socket.IO packets, no I/O;
//! - [`engine`]: the Engine.IO server (sessions, polling, WebSocket, heartbeats, limits);
//! - [`io`]: the Socket.IO layer (namespaces, sockets, rooms, acks, broadcasts);
//! - [`adapter`]: the seam between this process and a cluster.
//!
//! [`serve`] runs a service on a TCP listener with the limits a public server needs.

pub mod adapter;
pub mod cluster;
pub mod engine;
pub mod io;
mod metrics;
pub mod protocol;
mod serve;

pub use io::{
    AckError, BroadcastOperator, ConnectError, DisconnectReason, EmitError, Event, Handshake, Health, Namespace, RemoteSocket, Server,
    ServerBuilder, Socket, SocketIoService, StartError,
};
#[cfg(feature = "redis")]
pub use cluster::ClusterOptions;
pub use cluster::TrustedProxies;
pub use protocol::{IntoArgs, Value};
pub use serve::{serve, serve_with, ServeOptions};
