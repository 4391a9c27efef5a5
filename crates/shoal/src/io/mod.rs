//! The Socket.IO layer (protocol 5): the server, its namespaces (static and dynamic),
//! sockets, rooms, events, acks, middlewares and broadcast operators. It sits on the
//! engine (which hands it whole messages) and reaches other processes only through the
//! namespace's adapter.
//!
//! - `server.rs`: [`Server`], the namespaces it holds, and the node-level operations
//!   (health, metrics, drain);
//! - `builder.rs`: [`ServerBuilder`], every setting with its default, and `start`, which
//!   joins the cluster;
//! - `service.rs`: [`SocketIoService`], the tower service an app mounts (the cluster
//!   ingress, then the engine);
//! - `engine_handler.rs`: what the engine calls on a session's open, message and close;
//! - `namespace.rs`, `socket.rs`, `client.rs` (one session's sockets), `broadcast.rs`,
//!   `handshake.rs`.
//!
//! ```no_run
//! use shoal::{Server, Socket, Event};
//! # async fn run() -> std::io::Result<()> {
//! let io = Server::builder().build();
//! io.on_connection(|socket: Socket| async move {
//!     socket.on("chat message", |socket: Socket, msg: Event| async move {
//!         let _ = socket.ns().emit("chat message", msg.args.clone());
//!     });
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! shoal::serve(listener, io.service(), std::future::pending()).await
//! # }
//! ```

mod broadcast;
mod builder;
mod client;
mod engine_handler;
mod handshake;
mod namespace;
mod server;
mod service;
mod socket;

pub use broadcast::{BroadcastOperator, RemoteSocket};
pub use handshake::Handshake;
pub use namespace::{ConnectError, Namespace, ServerAck, WeakNamespace};
pub use socket::{AckError, EmitError, Event, Socket, SocketWithTimeout};
pub use builder::{ServerBuilder, StartError};
pub use server::{Health, Server};
pub use service::SocketIoService;
pub(crate) use server::ServerShared;

use crate::engine::CloseReason;
use std::future::Future;
use std::task::{Context, Poll};

/// Why a socket disconnected, with the official reason strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    TransportClose,
    PingTimeout,
    TransportError,
    ParseError,
    ForcedClose,
    ServerShuttingDown,
    ClientNamespaceDisconnect,
    ServerNamespaceDisconnect,
    ForcedServerClose,
}

impl DisconnectReason {
    /// True if the socket's session is kept for connection state recovery.
    pub fn is_recoverable(self) -> bool {
        !matches!(
            self,
            DisconnectReason::ClientNamespaceDisconnect | DisconnectReason::ServerNamespaceDisconnect | DisconnectReason::ParseError
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::ParseError => "parse error",
            DisconnectReason::ForcedClose => "forced close",
            DisconnectReason::ServerShuttingDown => "server shutting down",
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::ForcedServerClose => "forced server close",
        }
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<CloseReason> for DisconnectReason {
    fn from(r: CloseReason) -> Self {
        match r {
            CloseReason::TransportClose => DisconnectReason::TransportClose,
            CloseReason::PingTimeout => DisconnectReason::PingTimeout,
            CloseReason::TransportError | CloseReason::SlowClient => DisconnectReason::TransportError,
            CloseReason::ParseError => DisconnectReason::ParseError,
            CloseReason::ForcedClose => DisconnectReason::ForcedClose,
            CloseReason::ServerShuttingDown => DisconnectReason::ServerShuttingDown,
        }
    }
}

/// Runs a handler's future: at once up to its first await, then (if it is not done) as
/// a task. Handlers so start in the order their packets arrived, as in the official
/// server, and a handler that only joins a room and emits finishes inline.
pub(crate) fn run_handler<F: Future<Output = ()> + Send + 'static>(fut: F) {
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if let Poll::Pending = fut.as_mut().poll(&mut cx) {
        // The task polls it again at once, registering its real waker.
        tokio::spawn(fut);
    }
}

