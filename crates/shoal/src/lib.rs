//! shoal: a Socket.IO v4 server (Engine.IO protocol 4, Socket.IO protocol 5).
//!
//! Layers, bottom up (an arrow of imports never points up; `docs/architecture.md` has
//! the rules):
//! - [`protocol`]: encode/decode of Engine.IO and Socket.IO packets, no I/O;
//! - [`engine`]: the Engine.IO server (sessions, polling, WebSocket, heartbeats, limits);
//! - [`adapter`]: the seam between this process and a cluster; it sees local sockets
//!   only through [`adapter::LocalNamespace`];
//! - [`io`]: the Socket.IO layer (namespaces, sockets, rooms, acks, broadcasts);
//! - [`cluster`]: what makes many nodes one server behind any balancer (real client
//!   address, forwarding to the owner node, membership in Redis), turned on with
//!   [`ServerBuilder::cluster`].
//!
//! [`admin`] serves the official Socket.IO admin UI (`@socket.io/admin-ui`) from a node.
//!
//! [`serve`] runs a service on a TCP listener with the limits a public server needs.
//! The repository's `docs/architecture.md` has the rules between the layers and the path
//! of a request, a broadcast and a forwarded request, file by file.

#![warn(missing_docs)]

pub mod adapter;
pub mod admin;
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
pub use io::extract;
pub use protocol::{IntoArgs, Parser, Value};
pub use serve::{serve, serve_with, ServeOptions};
pub use metrics::LimitHits;

/// Entry points of the private parsers, for the fuzz targets in the repository's `fuzz/`.
/// Not an API: no stability is promised.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::serve::proxy_protocol::{parse_proxy_header, ProxyHeader};
}

/// The metrics crate of [`Server::register_metrics`], so an app registers its own
/// metrics with the same version.
pub use prometheus_client;
