//! A namespace: its sockets on this node, its connect middlewares and connection
//! handlers, its server-side event handlers, and its adapter.

use super::broadcast::{BroadcastOperator, RemoteSocket};
use super::client::Client;
use super::socket::{AckError, EmitError, Socket};
use super::{run_handler, ServerShared};
pub use crate::adapter::ServerAck;
use crate::adapter::{Adapter, AdapterError, Handshake, LocalNamespace, RecoveryOptions, Room, SocketId};
use crate::engine::Session;
use crate::protocol::socket_packet::{Encoded, Packet};
use crate::protocol::{IntoArgs, Parser, Value};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

/// Refusal of a connection by a middleware; the client gets it as `connect_error` with
/// `err.message` and `err.data`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    /// The message the client gets in its `connect_error` event (`err.message`).
    pub message: String,
    /// Extra data for the client (`err.data`).
    pub data: Option<Value>,
}

impl ConnectError {
    /// A refusal with a message.
    pub fn new(message: impl Into<String>) -> ConnectError {
        ConnectError { message: message.into(), data: None }
    }
    /// A refusal with a message and data.
    pub fn with_data(message: impl Into<String>, data: impl Into<Value>) -> ConnectError {
        ConnectError { message: message.into(), data: Some(data.into()) }
    }
    pub(crate) fn to_value(&self) -> Value {
        let mut obj = indexmap::IndexMap::new();
        obj.insert("message".to_owned(), Value::String(self.message.clone()));
        if let Some(d) = &self.data {
            obj.insert("data".to_owned(), d.clone());
        }
        Value::Object(obj)
    }

    /// What a protocol 3 client gets (socket.io-client 2.x emits it as its `error`):
    /// the data if any, else the message, as the reference server sends it.
    pub(crate) fn legacy_value(&self) -> Value {
        match &self.data {
            Some(data) if !matches!(data, Value::Null | Value::Bool(false)) => data.clone(),
            _ => Value::String(self.message.clone()),
        }
    }
}

/// The socket id a protocol 3 client computes for itself: the session id in `/`,
/// `<namespace>#<session id>` elsewhere (so it also names the session: such clients
/// get it as the reference server gives it to them).
fn legacy_socket_id(nsp: &str, sid: &str) -> String {
    if nsp == "/" {
        sid.to_owned()
    } else {
        format!("{nsp}#{sid}")
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for ConnectError {}

type Middleware = Arc<dyn Fn(Socket) -> BoxFuture<'static, Result<(), ConnectError>> + Send + Sync>;
type ConnectionHandler = Arc<dyn Fn(Socket) -> BoxFuture<'static, ()> + Send + Sync>;
/// A server-side event from another node: its arguments and, if asked, an ack.
pub(crate) type ServerEventHandler = Arc<dyn Fn(Vec<Value>, Option<ServerAck>) -> BoxFuture<'static, ()> + Send + Sync>;

pub(crate) struct NamespaceShared {
    name: Arc<str>,
    sockets: RwLock<HashMap<SocketId, Socket, IdHash>>,
    middlewares: RwLock<Vec<Middleware>>,
    connection_handlers: RwLock<Vec<ConnectionHandler>>,
    server_handlers: RwLock<HashMap<String, ServerEventHandler>>,
    adapter: OnceLock<Arc<dyn Adapter>>,
    ack_ids: AtomicU64,
    recovery: Option<RecoveryOptions>,
    /// The server's socket observer slot (empty unless an admin UI is attached).
    observer: super::ObserverSlot,
    parser: Parser,
    pub(super) limits: super::server::SocketLimits,
    /// What `ServerBuilder::with_state` was given, for the `State<T>` extractor.
    pub(super) state: super::extract::StateMap,
}

/// The hash of the local sockets' map, which a broadcast looks up once per recipient: a
/// multiply-rotate over 8 bytes at a time (FxHash), several times cheaper than SipHash.
/// Its keys are socket ids the server made at random, so no client can choose keys that
/// collide (a lookup of any string only probes among random ones).
#[derive(Clone, Copy, Default)]
pub(crate) struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

pub(crate) struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 56));
    }
    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A namespace. Cheap to clone: every clone is the same namespace.
///
/// ```
/// use shoal::{ConnectError, Server, Socket};
///
/// let io = Server::builder().build();
/// let admin = io.of("/admin");
/// // Runs before each socket connects; an error refuses it (`connect_error` on the client).
/// admin.middleware(|socket: Socket| async move {
///     match socket.handshake().auth.get("token").and_then(|t| t.as_str()) {
///         Some("secret") => Ok(()),
///         _ => Err(ConnectError::new("not authorized")),
///     }
/// });
/// admin.on_connection(|socket: Socket| async move {
///     socket.join("admins");
/// });
/// // To everyone in room "admins" of "/admin", on every node.
/// let _ = admin.to("admins").emit("notice", "maintenance at noon");
/// assert_eq!(admin.name(), "/admin");
/// ```
#[derive(Clone)]
pub struct Namespace(pub(crate) Arc<NamespaceShared>);

/// A namespace reference that does not keep it alive (for its adapter).
#[derive(Clone)]
pub struct WeakNamespace(Weak<NamespaceShared>);

impl WeakNamespace {
    /// The namespace, if it still exists.
    pub fn upgrade(&self) -> Option<Namespace> {
        self.0.upgrade().map(Namespace)
    }
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Namespace").field(&self.0.name).finish()
    }
}

impl Namespace {
    pub(crate) fn new(name: &str, server: &Arc<ServerShared>) -> Namespace {
        let ns = Namespace(Arc::new(NamespaceShared {
            name: name.into(),
            sockets: RwLock::new(HashMap::default()),
            middlewares: RwLock::new(Vec::new()),
            connection_handlers: RwLock::new(Vec::new()),
            server_handlers: RwLock::new(HashMap::new()),
            adapter: OnceLock::new(),
            ack_ids: AtomicU64::new(0),
            recovery: server.config.recovery.clone(),
            observer: server.observer.clone(),
            parser: server.config.parser,
            limits: server.config.limits.clone(),
            state: server.config.state.clone(),
        }));
        let view: Arc<dyn LocalNamespace> = ns.0.clone();
        let adapter = (server.config.adapter)(&view);
        let _ = ns.0.adapter.set(adapter);
        ns
    }

    /// Its name, with the leading `/`.
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// The recovery settings, when connection state recovery is on.
    pub fn recovery(&self) -> Option<&RecoveryOptions> {
        self.0.recovery.as_ref()
    }
    /// The packet format of the server's clients.
    pub fn parser(&self) -> Parser {
        self.0.parser
    }

    /// A reference that does not keep the namespace alive.
    pub fn downgrade(&self) -> WeakNamespace {
        WeakNamespace(Arc::downgrade(&self.0))
    }
    /// Its adapter (local, or the cluster's).
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        self.0.adapter.get().expect("adapter is set at creation")
    }

    /// Adds a connect middleware. Middlewares run in order; the first error refuses the
    /// connection and is sent to the client as `connect_error`.
    pub fn middleware<F, Fut>(&self, f: F)
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.0.middlewares.write().unwrap().push(Arc::new(move |s| Box::pin(f(s))));
    }

    /// Called for each socket that connects to this namespace.
    pub fn on_connection<F, Fut>(&self, f: F)
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.0.connection_handlers.write().unwrap().push(Arc::new(move |s| Box::pin(f(s))));
    }

    /// Handles a server-side event emitted by another node of the cluster.
    pub fn on_server_event<F, Fut>(&self, event: impl Into<String>, f: F)
    where
        F: Fn(Vec<Value>, Option<ServerAck>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.0.server_handlers.write().unwrap().insert(event.into(), Arc::new(move |a, ack| Box::pin(f(a, ack))));
    }

    /// Runs the handler of a server-side event that came from another node (adapters call this).
    pub fn dispatch_server_event(&self, event: &str, args: Vec<Value>, ack: Option<ServerAck>) {
        self.0.dispatch_server_event(event, args, ack)
    }

    // ---- broadcasting -------------------------------------------------------------------

    /// An operator targeting every socket of the namespace, to refine with `to`,
    /// `except`, `volatile`, ...
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.clone())
    }
    /// A broadcast to `room` (chain more with `to`).
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).to(room)
    }
    /// The same as [`Namespace::to`].
    pub fn within(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.to(room)
    }
    /// A broadcast to every socket but those in `room`.
    pub fn except(&self, room: impl Into<Room>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).except(room)
    }
    /// A broadcast to this node's sockets only.
    pub fn local(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).local()
    }
    /// A broadcast that may be dropped for clients that are not ready (unsent data queued).
    pub fn volatile(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).volatile()
    }
    /// A broadcast whose acks are awaited at most `timeout`.
    pub fn timeout(&self, timeout: Duration) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).timeout(timeout)
    }
    /// Sends an event to every socket of the namespace.
    pub fn emit(&self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        BroadcastOperator::new(self.clone()).emit(event, args)
    }
    /// Emits to every socket, on every node, and collects their acks (the first argument
    /// of each; see [`BroadcastOperator::emit_with_ack`]).
    pub async fn emit_with_ack(&self, event: &str, args: impl IntoArgs) -> Result<Vec<Value>, AckError> {
        BroadcastOperator::new(self.clone()).emit_with_ack(event, args).await
    }
    /// The sockets of the namespace, on every node.
    pub async fn fetch_sockets(&self) -> Result<Vec<RemoteSocket>, AdapterError> {
        BroadcastOperator::new(self.clone()).fetch_sockets().await
    }
    /// Makes every socket of the namespace join `rooms`, on every node.
    pub async fn sockets_join(&self, rooms: impl IntoIterator<Item = impl Into<Room>>) -> Result<(), AdapterError> {
        BroadcastOperator::new(self.clone()).sockets_join(rooms).await
    }
    /// Makes every socket of the namespace leave `rooms`, on every node.
    pub async fn sockets_leave(&self, rooms: impl IntoIterator<Item = impl Into<Room>>) -> Result<(), AdapterError> {
        BroadcastOperator::new(self.clone()).sockets_leave(rooms).await
    }
    /// Disconnects every socket of the namespace, on every node (with `close`, their
    /// whole connections).
    pub async fn disconnect_sockets(&self, close: bool) -> Result<(), AdapterError> {
        BroadcastOperator::new(self.clone()).disconnect_sockets(close).await
    }
    /// Emits to the other nodes of the cluster (not to clients).
    pub async fn server_side_emit(&self, event: &str, args: impl IntoArgs) -> Result<(), AdapterError> {
        self.adapter().server_side_emit(event, args.into_args(), None).await.map(|_| ())
    }
    /// Emits to the other nodes and collects one ack from each (first argument).
    pub async fn server_side_emit_with_ack(&self, event: &str, args: impl IntoArgs, timeout: Duration) -> Result<Vec<Value>, AdapterError> {
        self.adapter().server_side_emit(event, args.into_args(), Some(timeout)).await
    }

    // ---- local sockets --------------------------------------------------------------------

    /// A socket connected to this node.
    pub fn local_socket(&self, id: &str) -> Option<Socket> {
        self.0.sockets.read().unwrap().get(id).cloned()
    }
    /// Sockets connected to this node.
    pub fn local_sockets(&self) -> Vec<Socket> {
        self.0.sockets.read().unwrap().values().cloned().collect()
    }
    /// How many sockets this node holds in the namespace.
    pub fn local_socket_count(&self) -> usize {
        self.0.sockets.read().unwrap().len()
    }

    /// The server's socket observer, if one is attached (one atomic load).
    pub(crate) fn observer(&self) -> Option<&Arc<dyn super::SocketObserver>> {
        self.0.observer.get()
    }

    pub(crate) fn next_ack_id(&self) -> u64 {
        self.0.next_ack_id()
    }

    pub(crate) fn remove_socket(&self, id: &SocketId) {
        self.0.sockets.write().unwrap().remove(id);
    }

    /// Runs a client's CONNECT: recovery (when on and asked for), middlewares, then the
    /// socket joins its rooms, the client gets the missed packets and the CONNECT answer,
    /// and the connection handlers run.
    pub(crate) async fn connect(self, client: Arc<Client>, session: Arc<Session>, auth: Value) {
        // A protocol 3 client (socket.io-client 2.x) knows no recovery, builds its
        // socket id from the session id, and expects no body in the CONNECT answer.
        let legacy = session.protocol() == crate::engine::ProtocolVersion::V3;
        let mut restored = None;
        let mut offset = None;
        if self.recovery().is_some() && !legacy {
            if let (Some(pid), Some(o)) = (auth.get("pid").and_then(Value::as_str), auth.get("offset").and_then(Value::as_str)) {
                offset = Some(o.to_owned());
                restored = self.adapter().restore_session(pid, o).await;
                if restored.is_none() {
                    tracing::debug!(nsp = %self.name(), pid, "session not recoverable, starting a fresh one");
                }
            }
        }
        let (id, pid): (SocketId, Option<String>) = match (&restored, self.recovery()) {
            (Some(r), _) => (r.session.id.clone(), Some(r.session.pid.clone())),
            (None, _) if legacy => (legacy_socket_id(self.name(), &session.sid).into(), None),
            (None, Some(_)) => (crate::engine::sid::new_socket_id().into(), Some(crate::engine::sid::new_socket_id())),
            (None, None) => (crate::engine::sid::new_socket_id().into(), None),
        };
        let socket = Socket::new(id.clone(), self.clone(), session.clone(), Arc::downgrade(&client), auth, pid.clone(), restored.is_some());
        let skip = restored.is_some() && self.recovery().is_some_and(|r| r.skip_middlewares);
        if !skip {
            let middlewares: Vec<Middleware> = self.0.middlewares.read().unwrap().clone();
            for mw in middlewares {
                if let Err(err) = mw(socket.clone()).await {
                    tracing::debug!(nsp = %self.name(), reason = %err, "connection refused by middleware");
                    let data = if legacy { err.legacy_value() } else { err.to_value() };
                    let _ = socket.send_packet(&Packet::connect_error(self.name(), data));
                    return;
                }
            }
        }
        if session.is_closed() {
            return;
        }
        let mut answer = indexmap::IndexMap::new();
        answer.insert("sid".to_owned(), Value::String(id.to_string()));
        if let Some(pid) = &pid {
            answer.insert("pid".to_owned(), Value::String(pid.clone()));
        }
        let answer = Packet::connect(self.name(), (!legacy).then_some(Value::Object(answer)));
        let recovered = restored.is_some();
        match restored {
            None => {
                socket.set_connected();
                self.adapter().add_all(&id, &[id.clone()]);
                self.0.sockets.write().unwrap().insert(id.clone(), socket.clone());
                client.add_socket(self.name(), socket.clone());
                let _ = socket.send_packet(&answer);
            }
            Some(first) => {
                // Back in its rooms first, delivering into a buffer; then the missed packets
                // are computed again, so none recorded in between is lost.
                socket.start_restoring();
                self.0.sockets.write().unwrap().insert(id.clone(), socket.clone());
                client.add_socket(self.name(), socket.clone());
                let mut rooms = vec![id.clone()];
                rooms.extend(first.session.rooms.iter().cloned());
                self.adapter().add_all(&id, &rooms);
                socket.set_data(first.session.data.clone()); // not connected yet: not written back
                let (pid, offset) = (first.session.pid.clone(), offset.unwrap_or_default());
                let missed = match self.adapter().restore_session(&pid, &offset).await {
                    Some(again) => again.missed,
                    None => first.missed,
                };
                let missed: Vec<Packet> = missed
                    .into_iter()
                    .map(|mut p| {
                        p.nsp = self.name().to_owned();
                        p
                    })
                    .collect();
                if !socket.finish_restoring(&missed, &answer) {
                    return; // the connection closed meanwhile
                }
            }
        }
        socket.changed();
        tracing::debug!(socket = %id, nsp = %self.name(), sid = %session.sid, recovered, "socket connected");
        if let Some(observer) = self.observer() {
            observer.connected(&socket);
        }
        let handlers: Vec<ConnectionHandler> = self.0.connection_handlers.read().unwrap().clone();
        for h in handlers {
            let s = socket.clone();
            run_handler(move || h(s), socket.panic_closes("connection handler"));
        }
        socket.handlers_ready();
    }
}

/// The adapter's view of this namespace: it names the local sockets by id.
impl LocalNamespace for NamespaceShared {
    fn name(&self) -> &str {
        &self.name
    }

    fn recovery(&self) -> Option<&RecoveryOptions> {
        self.recovery.as_ref()
    }

    fn parser(&self) -> Parser {
        self.parser
    }

    fn send(&self, ids: &[SocketId], packet: &Encoded, volatile: bool) -> usize {
        self.sockets_of(ids)
            .iter().filter(|socket| socket.send_encoded(packet, volatile)).count()
    }

    fn next_ack_id(&self) -> u64 {
        self.ack_ids.fetch_add(1, Ordering::Relaxed)
    }

    fn send_expecting_acks(&self, ids: &[SocketId], packet: &Encoded, ack_id: u64, acks: &tokio::sync::mpsc::UnboundedSender<Vec<Value>>) -> Vec<SocketId> {
        let mut sent = Vec::new();
        for socket in self.sockets_of(ids) {
            socket.expect_ack_many(ack_id, acks.clone());
            if socket.send_encoded(packet, false) {
                sent.push(socket.id().clone());
            } else {
                socket.forget_ack(ack_id);
            }
        }
        sent
    }

    fn forget_acks(&self, ids: &[SocketId], ack_id: u64) {
        for socket in self.sockets_of(ids) {
            socket.forget_ack(ack_id);
        }
    }

    fn handshake(&self, id: &SocketId) -> Option<Handshake> {
        self.socket(id).map(|socket| socket.handshake().clone())
    }

    fn data(&self, id: &SocketId) -> Option<Value> {
        self.socket(id).map(|socket| socket.data())
    }

    fn changed(&self, ids: &[SocketId]) {
        for socket in self.sockets_of(ids) {
            socket.changed();
        }
    }

    fn disconnect(&self, ids: &[SocketId], close: bool) {
        for socket in self.sockets_of(ids) {
            socket.disconnect(close);
        }
    }

    fn dispatch_server_event(&self, event: &str, args: Vec<Value>, ack: Option<ServerAck>) {
        let handler = self.server_handlers.read().unwrap().get(event).cloned();
        if let Some(handler) = handler {
            let (nsp, event) = (self.name.clone(), event.to_owned());
            run_handler(move || handler(args, ack), move |message| {
                tracing::error!(%nsp, %event, panic = %message, "server-side event handler panicked")
            });
        }
    }
}

impl NamespaceShared {
    fn socket(&self, id: &str) -> Option<Socket> {
        self.sockets.read().unwrap().get(id).cloned()
    }

    /// The local sockets of these ids, cloned out under one lock (acting on a socket may
    /// take the map's lock again, e.g. a disconnect removes it).
    fn sockets_of(&self, ids: &[SocketId]) -> Vec<Socket> {
        let map = self.sockets.read().unwrap();
        ids.iter().filter_map(|id| map.get(id).cloned()).collect()
    }
}
