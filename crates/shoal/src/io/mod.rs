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
pub mod extract;
pub(crate) mod handshake;
mod namespace;
mod observer;
mod server;
mod service;
mod socket;

pub use broadcast::{BroadcastOperator, RemoteSocket};
pub use handshake::Handshake;
pub use namespace::{ConnectError, Namespace, ServerAck, WeakNamespace};
pub use socket::{AckError, EmitError, Event, Socket, SocketWithTimeout};
pub use builder::{ServerBuilder, StartError};
pub use server::{EventRateLimit, Health, OverLimit, Server};
pub use service::SocketIoService;
pub(crate) use server::ServerShared;
pub(crate) use observer::{ObserverSlot, SocketObserver};

use crate::engine::CloseReason;
use std::future::Future;
use std::task::{Context, Poll};

/// Why a socket disconnected, with the official reason strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The connection was closed (the client closed the page, or the network dropped).
    TransportClose,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// The transport failed (or the client was too slow to read).
    TransportError,
    /// The client sent something that is not the protocol.
    ParseError,
    /// The session was closed by the server (`socket.disconnect(true)`).
    ForcedClose,
    /// The server is shutting down (drain).
    ServerShuttingDown,
    /// The client left the namespace (`socket.disconnect()` on the client).
    ClientNamespaceDisconnect,
    /// The server made the socket leave the namespace (`socket.disconnect(false)`).
    ServerNamespaceDisconnect,
    /// The server closed the whole connection.
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

    /// The official reason string (`"transport close"`, ...).
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

/// Runs a handler: at once up to its first await, then (if it is not done) as a task.
/// Handlers so start in the order their packets arrived, as in the official server, and
/// a handler that only joins a room and emits finishes inline.
///
/// `make` builds the handler's future (calling the app's closure, which may itself
/// panic). A panic anywhere in it, inline or after an await, is caught here, so it never
/// unwinds through the engine or a lock of shoal's, and never takes its task down
/// unseen: `on_panic` gets the panic's message and closes what the handler belonged to
/// (its socket, or the connection attempt), and nothing else.
pub(crate) fn run_handler<M, F, P>(make: M, on_panic: P)
where
    M: FnOnce() -> F,
    F: Future<Output = ()> + Send + 'static,
    P: FnOnce(String) + Send + 'static,
{
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut fut = Box::pin(make());
        let poll = fut.as_mut().poll(&mut cx);
        (fut, poll)
    }));
    match first {
        Ok((_, Poll::Ready(()))) => {}
        // The task polls it again at once, registering its real waker.
        Ok((fut, Poll::Pending)) => {
            tokio::spawn(Guarded { fut, on_panic: Some(Box::new(on_panic)) });
        }
        Err(payload) => on_panic(panic_message(payload.as_ref())),
    }
}

/// A handler's future after its first await: polled inside `catch_unwind`.
struct Guarded<F> {
    fut: std::pin::Pin<Box<F>>,
    on_panic: Option<Box<dyn FnOnce(String) + Send>>,
}

impl<F: Future<Output = ()>> Future for Guarded<F> {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.fut.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                if let Some(on_panic) = this.on_panic.take() {
                    on_panic(panic_message(payload.as_ref()));
                }
                Poll::Ready(())
            }
        }
    }
}

/// The text a panic was raised with (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}
