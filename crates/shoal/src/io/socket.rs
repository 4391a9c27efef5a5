//! A socket: one client's connection to one namespace. Its event handlers, its acks in
//! both directions, its rooms (kept by the namespace's adapter), its data, and its
//! disconnection.

use super::broadcast::BroadcastOperator;
use super::client::Client;
use super::handshake::Handshake;
use super::namespace::Namespace;
use super::extract::{ack_from_args, into_any_handler, into_event_handler, AckSendError, Handler};
use super::{run_handler, DisconnectReason};
use crate::adapter::{Room, SocketId};
use crate::engine::{CloseReason, Session};
use crate::protocol::socket_packet::{Encoded, Packet, RESERVED_EVENTS};
use crate::protocol::{IntoArgs, Value};
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub(crate) type EventHandler = Arc<dyn Fn(Socket, Event) -> BoxFuture<'static, ()> + Send + Sync>;
pub(crate) type DisconnectHandler = Arc<dyn Fn(Socket, DisconnectReason) -> BoxFuture<'static, ()> + Send + Sync>;

/// Why an emit did not go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmitError {
    /// The socket (or its session) is closed.
    Disconnected,
    /// The event name is reserved by the protocol (`connect`, `disconnect`, ...).
    ReservedEvent(String),
}

impl std::fmt::Display for EmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmitError::Disconnected => f.write_str("socket is disconnected"),
            EmitError::ReservedEvent(name) => write!(f, "\"{name}\" is a reserved event name"),
        }
    }
}
impl std::error::Error for EmitError {}

/// Why an emit that expected an ack got none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// No ack within the timeout ("operation has timed out", as the official server says).
    Timeout,
    /// The socket disconnected before it answered.
    Disconnected,
    /// The event could not be sent.
    Emit(EmitError),
    /// The cluster could not complete the request.
    Adapter(crate::adapter::AdapterError),
    /// The ack's arguments do not fit the type asked of
    /// [`Socket::emit_with_ack_as`] (serde's message).
    InvalidAck(String),
}

impl std::fmt::Display for AckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckError::Timeout => f.write_str("operation has timed out"),
            AckError::Disconnected => f.write_str("socket disconnected before acknowledging"),
            AckError::Emit(e) => e.fmt(f),
            AckError::Adapter(e) => e.fmt(f),
            AckError::InvalidAck(why) => write!(f, "invalid ack arguments: {why}"),
        }
    }
}
impl std::error::Error for AckError {}

pub(crate) enum AckWaiter {
    One(oneshot::Sender<Vec<Value>>),
    Many(mpsc::UnboundedSender<Vec<Value>>),
}

/// An event received from a client: its name, its arguments, and (if the client asked
/// for one) the means to acknowledge it.
#[derive(Clone)]
pub struct Event {
    /// The event's name (the first element of the packet's array).
    pub name: String,
    /// Its arguments, binary attachments in place.
    pub args: Vec<Value>,
    pub(crate) ack: Option<Arc<AckState>>,
}

/// The ack a client asked for: sent once, by whichever clone of the event comes first.
pub(crate) struct AckState {
    socket: Socket,
    id: u64,
    sent: AtomicBool,
}

impl AckState {
    pub(crate) fn send(&self, args: Vec<Value>) -> Result<(), AckSendError> {
        if self.sent.swap(true, Ordering::AcqRel) {
            return Err(AckSendError::AlreadySent);
        }
        let packet = Packet::ack(self.socket.ns().name(), self.id, args);
        self.socket.send_packet(&packet).map_err(|_| AckSendError::Disconnected)
    }

    pub(crate) fn is_sent(&self) -> bool {
        self.sent.load(Ordering::Acquire)
    }
}

impl Event {
    /// The argument at `index`, or `Null`.
    pub fn arg(&self, index: usize) -> &Value {
        static NULL: Value = Value::Null;
        self.args.get(index).unwrap_or(&NULL)
    }
    /// True if the client waits for an ack.
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }
    /// Acknowledges the event with `args` (only the first ack is sent). Returns false
    /// if the client asked for no ack, it was already sent, or the socket is gone.
    pub fn ack(&self, args: impl IntoArgs) -> bool {
        let Some(ack) = &self.ack else { return false };
        ack.send(args.into_args()).is_ok()
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event").field("name", &self.name).field("args", &self.args).field("wants_ack", &self.wants_ack()).finish()
    }
}

pub(crate) struct SocketShared {
    id: SocketId,
    ns: Namespace,
    session: Arc<Session>,
    client: Weak<Client>,
    /// Built from the session's request on first use (most sockets never ask).
    handshake: std::sync::OnceLock<Box<Handshake>>,
    /// The CONNECT's payload; None for an empty object (most clients send none), so an
    /// idle socket does not carry 72 bytes for it.
    auth: Option<Box<Value>>,
    /// By event name. A list, not a map: a socket has a handful of handlers, and an
    /// idle socket's list costs a third of a map's table (scanned by length first).
    handlers: RwLock<Vec<(Box<str>, EventHandler)>>,
    any_handlers: RwLock<Vec<EventHandler>>,
    disconnecting_handlers: Mutex<Vec<DisconnectHandler>>,
    disconnect_handlers: Mutex<Vec<DisconnectHandler>>,
    acks: Mutex<HashMap<u64, AckWaiter>>,
    data: Mutex<Value>,
    connected: AtomicBool,
    /// While a recovered socket is being restored: the packets delivered to it meanwhile,
    /// sent after the replay (those the replay already holds are not sent twice).
    restoring: Mutex<Option<Vec<Encoded>>>,
    /// False until the connection handlers ran: the client may send events as soon as
    /// it has the CONNECT answer, and on another thread they would meet a socket whose
    /// handlers are not set yet. Such events wait in `held`, in order.
    ready: AtomicBool,
    held: Mutex<Vec<Packet>>,
    /// Right after a restore: the packets replayed, so that one also arriving live (it was
    /// logged before the replay and delivered after) is not sent twice. Cleared by the
    /// first live packet that is not among them.
    replayed: Mutex<Option<Box<std::collections::HashSet<bytes::Bytes>>>>,
    /// Private session id for connection state recovery (None when recovery is off).
    pid: Option<String>,
    recovered: bool,
    /// Inbound events: tokens left and when they were last refilled.
    event_tokens: Mutex<(f64, std::time::Instant)>,
}

/// A client's connection to one namespace. Cheap to clone: every clone is the same socket.
///
/// A socket is handed to the namespace's connection handlers; it takes event handlers
/// ([`Socket::on`]), emits to its client, joins rooms and broadcasts to others.
///
/// ```
/// use shoal::extract::{AckSender, Data};
/// use shoal::{Server, Socket};
///
/// let io = Server::builder().build();
/// io.on_connection(|socket: Socket| async move {
///     socket.join("lobby");
///     let _ = socket.emit("welcome", socket.id().to_string());
///     // To everyone in the lobby but this socket.
///     let _ = socket.to("lobby").emit("joined", socket.id().to_string());
///     socket.on("rename", |socket: Socket, Data(name): Data<String>, ack: AckSender| async move {
///         socket.set_data(name.as_str());
///         let _ = ack.send(&true);
///     });
///     socket.on_disconnect(|socket: Socket, reason| async move {
///         println!("{} left: {reason}", socket.id());
///     });
/// });
/// ```
#[derive(Clone)]
pub struct Socket(pub(crate) Arc<SocketShared>);

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("id", &self.0.id).field("nsp", &self.0.ns.name()).finish()
    }
}

impl Socket {
    pub(crate) fn new(
        id: SocketId,
        ns: Namespace,
        session: Arc<Session>,
        client: Weak<Client>,
        auth: Value,
        pid: Option<String>,
        recovered: bool,
    ) -> Socket {
        Socket(Arc::new(SocketShared {
            id,
            session,
            client,
            handshake: std::sync::OnceLock::new(),
            auth: match auth {
                Value::Object(map) if map.is_empty() => None,
                other => Some(Box::new(other)),
            },
            handlers: RwLock::new(Vec::new()),
            any_handlers: RwLock::new(Vec::new()),
            disconnecting_handlers: Mutex::new(Vec::new()),
            disconnect_handlers: Mutex::new(Vec::new()),
            acks: Mutex::new(HashMap::new()),
            data: Mutex::new(Value::Null),
            connected: AtomicBool::new(false),
            restoring: Mutex::new(None),
            ready: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
            replayed: Mutex::new(None),
            event_tokens: Mutex::new((f64::from(ns.0.limits.event_rate.burst), std::time::Instant::now())),
            ns,
            pid,
            recovered,
        }))
    }

    /// The socket's id (`socket.id` on the client), unique in the cluster.
    pub fn id(&self) -> &SocketId {
        &self.0.id
    }
    /// The namespace this socket is connected to.
    pub fn ns(&self) -> &Namespace {
        &self.0.ns
    }
    /// The handshake: headers, query, address, `auth` of the CONNECT, time.
    pub fn handshake(&self) -> &Handshake {
        // Boxed: most sockets never ask, and the record is large.
        self.0.handshake.get_or_init(|| Box::new(Handshake::new(&self.0.session.handshake, self.0.auth.as_deref().cloned().unwrap_or_else(|| Value::Object(Default::default())))))
    }
    /// The Engine.IO session under this socket (shared by its other namespaces).
    pub fn session(&self) -> &Arc<Session> {
        &self.0.session
    }
    /// True if this socket was restored by connection state recovery (same id, rooms
    /// and data as before its disconnection, missed events replayed).
    pub fn recovered(&self) -> bool {
        self.0.recovered
    }
    /// True from the CONNECT answer until the socket disconnects.
    pub fn connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire)
    }
    /// `socket.data`: anything the application wants to keep with the socket.
    pub fn data(&self) -> Value {
        self.0.data.lock().unwrap().clone()
    }
    /// Replaces `socket.data` (kept by connection state recovery, seen by
    /// `fetch_sockets` on other nodes).
    pub fn set_data(&self, value: impl Into<Value>) {
        *self.0.data.lock().unwrap() = value.into();
        self.changed();
    }

    /// What connection state recovery keeps of this socket (None when it is off).
    pub(crate) fn snapshot(&self) -> Option<crate::adapter::PersistedSession> {
        let pid = self.0.pid.as_ref()?;
        let rooms = self.rooms().into_iter().filter(|r| r != self.id()).collect();
        Some(crate::adapter::PersistedSession { pid: pid.clone(), id: self.id().clone(), rooms, data: self.data() })
    }

    /// Tells the adapter the recoverable state changed (recovery on, socket connected).
    pub(crate) fn changed(&self) {
        if let Some(observer) = self.ns().observer() {
            observer.changed(self);
        }
        if self.connected() {
            if let Some(snapshot) = self.snapshot() {
                self.ns().adapter().session_changed(snapshot);
            }
        }
    }

    // ---- handlers -------------------------------------------------------------------

    /// Listens to an event (a later handler for the same name replaces the earlier one).
    ///
    /// The handler is an async closure or function whose arguments are extractors (see
    /// [`crate::extract`]): `|socket: Socket, event: Event|` for the dynamic form, or
    /// typed, `|socket: Socket, Data(chat): Data<Chat>, ack: AckSender|`. It may return
    /// `()` or a `Result` whose error is logged and sent as the ack if one is due.
    ///
    /// ```
    /// use shoal::extract::{AckSender, Data};
    /// use shoal::{Event, Server, Socket};
    ///
    /// let io = Server::builder().build();
    /// io.on_connection(|socket: Socket| async move {
    ///     // Dynamic: any arguments, as `Value`s.
    ///     socket.on("echo", |socket: Socket, event: Event| async move {
    ///         let _ = socket.emit("echo", event.args);
    ///     });
    ///     // Typed: two numbers, answered with their sum.
    ///     socket.on("add", |Data((a, b)): Data<(i64, i64)>, ack: AckSender| async move {
    ///         ack.send(&(a + b))
    ///     });
    /// });
    /// ```
    pub fn on<H, Args>(&self, event: impl Into<String>, handler: H)
    where
        H: Handler<Args>,
    {
        let h: EventHandler = into_event_handler(handler);
        let event: String = event.into();
        let mut handlers = self.0.handlers.write().unwrap();
        match handlers.iter_mut().find(|(name, _)| **name == *event) {
            Some(slot) => slot.1 = h,
            None => {
                handlers.reserve_exact(1);
                handlers.push((event.into_boxed_str(), h));
            }
        }
    }

    /// Removes the handler of an event.
    pub fn off(&self, event: &str) {
        let mut handlers = self.0.handlers.write().unwrap();
        handlers.retain(|(name, _)| **name != *event);
        if handlers.is_empty() {
            handlers.shrink_to_fit();
        }
    }

    /// A catch-all listener: called for every event, before its named handler. It takes
    /// extractors as [`Socket::on`] does (an [`Event`] tells the event's name).
    pub fn on_any<H, Args>(&self, handler: H)
    where
        H: Handler<Args>,
    {
        self.0.any_handlers.write().unwrap().push(into_any_handler(handler));
    }

    /// Called when the socket disconnects, after it left its rooms.
    pub fn on_disconnect<F, Fut>(&self, handler: F)
    where
        F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.0.disconnect_handlers.lock().unwrap().push(Arc::new(move |s, r| Box::pin(handler(s, r))));
    }

    /// Called when the socket is about to disconnect, while it is still in its rooms.
    pub fn on_disconnecting<F, Fut>(&self, handler: F)
    where
        F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.0.disconnecting_handlers.lock().unwrap().push(Arc::new(move |s, r| Box::pin(handler(s, r))));
    }

    // ---- emitting -------------------------------------------------------------------

    /// Sends an event to this client.
    pub fn emit(&self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        check_event_name(event)?;
        let args = args.into_args();
        if let Some(observer) = self.ns().observer() {
            observer.event_sent(self, event, &args);
        }
        let packet = Packet::event(self.ns().name(), event, args, None);
        if self.ns().recovery().is_some() {
            // As the official server: with recovery on, a direct emit is a broadcast to
            // the socket's own room, so it gets an offset and is logged for replay.
            if !self.connected() {
                return Err(EmitError::Disconnected);
            }
            let opts = crate::adapter::BroadcastOptions { rooms: vec![self.id().clone()], ..Default::default() };
            self.ns().adapter().broadcast(packet, opts);
            return Ok(());
        }
        self.send_packet(&packet)
    }

    /// Sends an event and waits for the client's ack (its arguments), however long it takes.
    pub async fn emit_with_ack(&self, event: &str, args: impl IntoArgs) -> Result<Vec<Value>, AckError> {
        self.emit_with_ack_inner(event, args.into_args(), None).await
    }

    /// Sends an event and waits for the client's ack, read as `R` with serde (by the
    /// rule of [`Data`](crate::extract::Data): a tuple or a `Vec` reads every argument
    /// of the ack, another type the first). Arguments that do not fit are
    /// [`AckError::InvalidAck`].
    ///
    /// ```no_run
    /// # async fn ask(socket: shoal::Socket) -> Result<(), shoal::AckError> {
    /// #[derive(serde::Deserialize)]
    /// struct Answer { ok: bool }
    /// let answer: Answer = socket.timeout(std::time::Duration::from_secs(5)).emit_with_ack_as("ready?", ()).await?;
    /// # let _ = answer.ok; Ok(()) }
    /// ```
    pub async fn emit_with_ack_as<R: DeserializeOwned>(&self, event: &str, args: impl IntoArgs) -> Result<R, AckError> {
        ack_from_args(self.emit_with_ack_inner(event, args.into_args(), None).await?)
    }

    /// Operations with a deadline: `socket.timeout(d).emit_with_ack(...)`.
    pub fn timeout(&self, timeout: Duration) -> SocketWithTimeout {
        SocketWithTimeout { socket: self.clone(), timeout }
    }

    async fn emit_with_ack_inner(&self, event: &str, args: Vec<Value>, timeout: Option<Duration>) -> Result<Vec<Value>, AckError> {
        check_event_name(event).map_err(AckError::Emit)?;
        let id = self.ns().next_ack_id();
        let (tx, rx) = oneshot::channel();
        self.0.acks.lock().unwrap().insert(id, AckWaiter::One(tx));
        if let Err(e) = self.send_packet(&Packet::event(self.ns().name(), event, args, Some(id))) {
            self.forget_ack(id);
            return Err(AckError::Emit(e));
        }
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(r) => r.map_err(|_| AckError::Disconnected),
                Err(_) => Err(AckError::Timeout),
            },
            None => rx.await.map_err(|_| AckError::Disconnected),
        };
        if result.is_err() {
            self.forget_ack(id);
        }
        result
    }

    /// Broadcast to `room`, excluding this socket.
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().to(room)
    }
    /// Broadcast to every socket of the namespace but this one.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.ns().clone()).except(self.id().clone())
    }
    /// Broadcast to everyone except sockets in `room` (and this socket).
    pub fn except(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().except(room)
    }

    // ---- rooms ----------------------------------------------------------------------

    /// Joins a room. Refused (logged, counted in the metrics) when the socket would be
    /// in more than `max_rooms_per_socket` rooms; [`Socket::try_join`] says so.
    pub fn join(&self, room: impl Into<Room>) {
        let _ = self.try_join_all([room.into()]);
    }
    /// Joins every room, or none if that would exceed `max_rooms_per_socket`
    /// ([`Socket::try_join_all`] says which).
    pub fn join_all(&self, rooms: impl IntoIterator<Item = impl Into<Room>>) {
        let _ = self.try_join_all(rooms);
    }
    /// Joins a room; false (and nothing joined) if that would put the socket in more
    /// than `max_rooms_per_socket` rooms.
    pub fn try_join(&self, room: impl Into<Room>) -> bool {
        self.try_join_all([room.into()])
    }
    /// Joins every room, or (if that would put the socket in more than
    /// `max_rooms_per_socket` rooms) none, and returns false.
    pub fn try_join_all(&self, rooms: impl IntoIterator<Item = impl Into<Room>>) -> bool {
        let rooms: Vec<Room> = rooms.into_iter().map(Into::into).collect();
        let limits = &self.ns().0.limits;
        let current = self.rooms();
        let new = rooms.iter().filter(|r| current.binary_search(r).is_err()).collect::<std::collections::HashSet<_>>().len();
        if current.len() + new > limits.max_rooms_per_socket {
            tracing::debug!(socket = %self.id(), nsp = %self.ns().name(), limit = limits.max_rooms_per_socket, "rooms per socket reached, join refused");
            limits.hits.hit(crate::metrics::Limit::RoomsPerSocket);
            return false;
        }
        self.ns().adapter().add_all(self.id(), &rooms);
        self.changed();
        true
    }
    /// Leaves a room (nothing happens if the socket is not in it).
    pub fn leave(&self, room: impl Into<Room>) {
        self.ns().adapter().del(self.id(), &room.into());
        self.changed();
    }
    /// The socket's rooms, sorted (its own id included).
    pub fn rooms(&self) -> Vec<Room> {
        self.ns().adapter().socket_rooms(self.id())
    }

    // ---- disconnecting ----------------------------------------------------------------

    /// Disconnects from this namespace (the client hears "io server disconnect" and does
    /// not reconnect on its own). With `close`, closes the whole connection too.
    pub fn disconnect(&self, close: bool) {
        if close {
            if let Some(client) = self.0.client.upgrade() {
                client.disconnect_all();
            }
            self.0.session.close(CloseReason::ForcedClose);
        } else {
            if !self.connected() {
                return;
            }
            let _ = self.send_packet(&Packet::disconnect(self.ns().name()));
            self.on_close(DisconnectReason::ServerNamespaceDisconnect);
        }
    }

    // ---- crate internals ----------------------------------------------------------------

    pub(crate) fn set_connected(&self) {
        self.0.connected.store(true, Ordering::Release);
    }

    pub(crate) fn send_packet(&self, packet: &Packet) -> Result<(), EmitError> {
        let encoded = self.ns().parser().encode(packet);
        self.0.session.send_all(encoded.to_out_packets()).map_err(|_| EmitError::Disconnected)
    }

    /// Queues an already encoded packet. A volatile packet is dropped when the client
    /// still has unsent data. Returns whether it was queued.
    pub(crate) fn send_encoded(&self, encoded: &Encoded, volatile: bool) -> bool {
        if !self.connected() {
            let mut restoring = self.0.restoring.lock().unwrap();
            if let Some(buffer) = restoring.as_mut() {
                if volatile {
                    return false;
                }
                buffer.push(encoded.clone());
                return true;
            }
            drop(restoring);
            // Restoring may have just finished.
            if !self.connected() {
                return false;
            }
        }
        if volatile && self.0.session.buffered_bytes() > 0 {
            return false;
        }
        if self.0.recovered {
            let mut replayed = self.0.replayed.lock().unwrap();
            if let Some(set) = replayed.as_ref() {
                if set.contains(encoded.head_bytes()) {
                    return true; // already sent by the replay
                }
                *replayed = None;
            }
        }
        self.0.session.send_all(encoded.to_out_packets()).is_ok()
    }

    /// A recovered socket is back in its rooms but not yet connected: packets delivered
    /// to it wait until `finish_restoring`.
    pub(crate) fn start_restoring(&self) {
        *self.0.restoring.lock().unwrap() = Some(Vec::new());
    }

    /// Sends the missed packets, then what was delivered meanwhile and is not among them,
    /// then `answer` (the CONNECT answer), and marks the socket connected, all while
    /// deliveries wait, so nothing is lost, doubled or reordered. False if the socket
    /// was closed meanwhile.
    pub(crate) fn finish_restoring(&self, missed: &[Packet], answer: &Packet) -> bool {
        let mut restoring = self.0.restoring.lock().unwrap();
        let Some(buffered) = restoring.take() else { return false };
        let mut replayed = std::collections::HashSet::new();
        for packet in missed {
            let encoded = self.ns().parser().encode(packet);
            replayed.insert(encoded.head_bytes().clone());
            let _ = self.0.session.send_all(encoded.to_out_packets());
        }
        for encoded in buffered {
            if !replayed.contains(encoded.head_bytes()) {
                let _ = self.0.session.send_all(encoded.to_out_packets());
            }
        }
        let _ = self.0.session.send_all(self.ns().parser().encode(answer).to_out_packets());
        if !replayed.is_empty() {
            *self.0.replayed.lock().unwrap() = Some(Box::new(replayed));
        }
        self.0.connected.store(true, Ordering::Release);
        true
    }

    pub(crate) fn expect_ack_many(&self, id: u64, tx: mpsc::UnboundedSender<Vec<Value>>) {
        self.0.acks.lock().unwrap().insert(id, AckWaiter::Many(tx));
    }

    pub(crate) fn forget_ack(&self, id: u64) {
        self.0.acks.lock().unwrap().remove(&id);
    }

    pub(crate) fn on_ack(&self, id: u64, args: Vec<Value>) {
        let waiter = self.0.acks.lock().unwrap().remove(&id);
        match waiter {
            Some(AckWaiter::One(tx)) => {
                let _ = tx.send(args);
            }
            Some(AckWaiter::Many(tx)) => {
                let _ = tx.send(args);
            }
            None => tracing::debug!(socket = %self.id(), id, "ack for an unknown id ignored"),
        }
    }

    pub(crate) fn on_event(&self, packet: Packet) {
        if !self.0.ready.load(Ordering::Acquire) {
            let mut held = self.0.held.lock().unwrap_or_else(|e| e.into_inner());
            // Checked again under the lock: `handlers_ready` sets it under the lock.
            if !self.0.ready.load(Ordering::Acquire) {
                held.push(packet);
                return;
            }
        }
        self.dispatch_event(packet);
    }

    /// The connection handlers ran (their listeners are set): the events that arrived
    /// meanwhile are handled, in order, and later ones go straight to their handlers.
    pub(crate) fn handlers_ready(&self) {
        loop {
            let batch = {
                let mut held = self.0.held.lock().unwrap_or_else(|e| e.into_inner());
                if held.is_empty() {
                    self.0.ready.store(true, Ordering::Release);
                    *held = Vec::new();
                    return;
                }
                std::mem::take(&mut *held)
            };
            for packet in batch {
                self.dispatch_event(packet);
            }
        }
    }

    fn dispatch_event(&self, packet: Packet) {
        let mut data = match packet.data {
            Some(Value::Array(a)) => a.into_iter(),
            _ => return,
        };
        let name = match data.next() {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return,
        };
        if !self.take_event_token() {
            return;
        }
        let ack = packet.id.map(|id| Arc::new(AckState { socket: self.clone(), id, sent: AtomicBool::new(false) }));
        let event = Event { name, args: data.collect(), ack };
        if let Some(observer) = self.ns().observer() {
            observer.event_received(self, &event);
        }
        let any: Vec<EventHandler> = self.0.any_handlers.read().unwrap().clone();
        for h in any {
            let (socket, event) = (self.clone(), event.clone());
            let what = Lazy(event.name.clone(), "catch-all listener (event {:?})");
            run_handler(move || h(socket, event), self.panic_closes(what));
        }
        let handler = self.0.handlers.read().unwrap().iter().find(|(name, _)| **name == *event.name).map(|(_, h)| h.clone());
        match handler {
            Some(h) => {
                // Formatted only if the handler panics (this runs for every event).
                let what = Lazy(event.name.clone(), "handler of event {:?}");
                let socket = self.clone();
                run_handler(move || h(socket, event), self.panic_closes(what));
            }
            None => tracing::trace!(socket = %self.id(), event = %event.name, "no handler for event"),
        }
    }

    /// Takes one token of the socket's event bucket; false if the event must not run
    /// (it is over the rate: dropped, or the socket is disconnected, by configuration).
    fn take_event_token(&self) -> bool {
        let limits = &self.ns().0.limits;
        let rate = limits.event_rate;
        if rate.per_second == 0 {
            return true;
        }
        let allowed = {
            let mut bucket = self.0.event_tokens.lock().unwrap();
            let now = std::time::Instant::now();
            let refill = now.duration_since(bucket.1).as_secs_f64() * f64::from(rate.per_second);
            *bucket = ((bucket.0 + refill).min(f64::from(rate.burst.max(1))), now);
            if bucket.0 >= 1.0 {
                bucket.0 -= 1.0;
                true
            } else {
                false
            }
        };
        if !allowed {
            limits.hits.hit(crate::metrics::Limit::EventRate);
            match rate.over {
                super::OverLimit::Drop => {
                    tracing::trace!(socket = %self.id(), nsp = %self.ns().name(), "event over the rate limit dropped");
                }
                super::OverLimit::Disconnect => {
                    tracing::debug!(socket = %self.id(), nsp = %self.ns().name(), per_second = rate.per_second, "events over the rate limit; disconnecting");
                    self.disconnect(false);
                }
            }
        }
        allowed
    }

    /// What a handler of this socket that panics does: the panic is logged with its
    /// message, and this socket (only) is disconnected, as if the server had called
    /// `disconnect()`: the client hears "io server disconnect"; the session's other
    /// namespaces and every other socket go on.
    pub(crate) fn panic_closes(&self, what: impl std::fmt::Display + Send + 'static) -> impl FnOnce(String) + Send + 'static {
        let socket = self.clone();
        move |message: String| {
            tracing::error!(socket = %socket.id(), nsp = %socket.ns().name(), sid = %socket.session().sid, panic = %message,
                "{what} panicked; disconnecting this socket");
            socket.disconnect(false);
        }
    }

    /// For handlers that run when the socket is already going (disconnect handlers):
    /// the panic is logged, there is nothing left to close.
    fn panic_logged(&self, what: &'static str) -> impl FnOnce(String) + Send + 'static {
        let (id, nsp) = (self.id().clone(), self.ns().name().to_owned());
        move |message: String| tracing::error!(socket = %id, %nsp, panic = %message, "{what} panicked")
    }

    /// Leaves everything and tells the handlers. Runs once.
    pub(crate) fn on_close(&self, reason: DisconnectReason) {
        let was_restoring = self.0.restoring.lock().unwrap().take().is_some();
        if !self.0.connected.swap(false, Ordering::AcqRel) && !was_restoring {
            return;
        }
        let handlers: Vec<_> = self.0.disconnecting_handlers.lock().unwrap().drain(..).collect();
        for h in handlers {
            let socket = self.clone();
            run_handler(move || h(socket, reason), self.panic_logged("disconnecting handler"));
        }
        if let Some(snapshot) = self.snapshot() {
            if reason.is_recoverable() {
                self.ns().adapter().persist_session(snapshot);
            } else {
                self.ns().adapter().forget_session(&snapshot.pid);
            }
        }
        self.ns().adapter().del_all(self.id());
        self.ns().remove_socket(self.id());
        if let Some(client) = self.0.client.upgrade() {
            client.remove_socket(self.ns().name());
        }
        if let Some(observer) = self.ns().observer() {
            observer.disconnected(self, reason);
        }
        // Dropping the waiters tells every pending emit_with_ack that the socket is gone.
        self.0.acks.lock().unwrap().clear();
        let handlers: Vec<_> = self.0.disconnect_handlers.lock().unwrap().drain(..).collect();
        for h in handlers {
            let socket = self.clone();
            run_handler(move || h(socket, reason), self.panic_logged("disconnect handler"));
        }
        self.0.handlers.write().unwrap().clear();
        self.0.any_handlers.write().unwrap().clear();
        tracing::debug!(socket = %self.id(), nsp = %self.ns().name(), %reason, "socket disconnected");
    }
}

fn check_event_name(event: &str) -> Result<(), EmitError> {
    if RESERVED_EVENTS.contains(&event) {
        return Err(EmitError::ReservedEvent(event.to_owned()));
    }
    Ok(())
}

/// A socket with a deadline for its next ack.
pub struct SocketWithTimeout {
    socket: Socket,
    timeout: Duration,
}

impl SocketWithTimeout {
    /// Sends an event and waits for the client's ack, at most the timeout.
    pub async fn emit_with_ack(&self, event: &str, args: impl IntoArgs) -> Result<Vec<Value>, AckError> {
        self.socket.emit_with_ack_inner(event, args.into_args(), Some(self.timeout)).await
    }

    /// [`Socket::emit_with_ack_as`] with the timeout: the ack read as `R`.
    pub async fn emit_with_ack_as<R: DeserializeOwned>(&self, event: &str, args: impl IntoArgs) -> Result<R, AckError> {
        ack_from_args(self.socket.emit_with_ack_inner(event, args.into_args(), Some(self.timeout)).await?)
    }
}

/// A panic context formatted only when printed: what ran (a template with one `{:?}`)
/// and the event name.
struct Lazy(String, &'static str);

impl std::fmt::Display for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (before, after) = self.1.split_once("{:?}").unwrap_or((self.1, ""));
        write!(f, "{before}{:?}{after}", self.0)
    }
}
