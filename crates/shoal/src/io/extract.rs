//! Typed event handlers: a handler is any async function whose arguments are
//! extractors, each taking what it needs from the event.
//!
//! ```
//! use serde::Deserialize;
//! use shoal::extract::{AckSender, Data, State};
//! use shoal::{Server, Socket};
//! use std::sync::Arc;
//!
//! #[derive(Deserialize)]
//! struct Chat {
//!     room: String,
//!     text: String,
//! }
//!
//! #[derive(Clone, Default)]
//! struct Counter(Arc<std::sync::atomic::AtomicU64>);
//!
//! let io = Server::builder().with_state(Counter::default()).build();
//! io.on_connection(|socket: Socket| async move {
//!     socket.on("chat", |socket: Socket, Data(chat): Data<Chat>, State(count): State<Counter>, ack: AckSender| async move {
//!         let n = count.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!         socket.to(chat.room.as_str()).emit("chat", chat.text)?;
//!         ack.send(&n)?;
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//!     });
//! });
//! ```
//!
//! The extractors: [`Socket`], [`Event`] (the whole event, dynamic), [`Data<T>`] (the
//! arguments as a serde type), [`Bin`] (the binary attachments), [`AckSender`],
//! [`State<T>`] (shared state given to [`ServerBuilder::with_state`]), and
//! `Result<E, ExtractError>` of any of them, which lets the handler see a failure
//! instead of being skipped.
//!
//! **When an extractor fails** (arguments that do not fit `Data<T>`, a `State<T>` that
//! was never given), the handler does not run: the event is dropped with a debug log
//! (an error log for a missing state, a bug of the server), and if the client asked for
//! an ack it gets one argument, `{"error": "<what was wrong>"}`.
//!
//! **A handler may return** `()` or `Result<T, E>` with `E: Display`. On `Err(e)`, the
//! error is logged at debug level and, if the client asked for an ack that the handler
//! did not send, the ack is `{"error": e.to_string()}`. Mind what `e` says: the client
//! reads it.
//!
//! A catch-all listener ([`Socket::on_any`]) takes extractors too, but its failures are
//! only logged: the ack is left to the event's own handler.
//!
//! [`ServerBuilder::with_state`]: crate::ServerBuilder::with_state

use super::socket::{AckState, EventHandler};
use super::{AckError, Event, Socket};
use crate::protocol::{from_args, IntoArgs, Value};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// Something a handler takes as an argument, taken from the socket and its event.
///
/// Implement it for your own types to extract them the same way.
pub trait FromEvent: Sized {
    /// Takes the value from the event; an error means the handler does not run.
    fn from_event(socket: &Socket, event: &Event) -> Result<Self, ExtractError>;

    /// Called for the handler's last argument, which may take the event's parts
    /// instead of copying them. The default calls [`FromEvent::from_event`].
    #[doc(hidden)]
    fn from_event_last(socket: &Socket, event: &mut Event) -> Result<Self, ExtractError> {
        Self::from_event(socket, event)
    }
}

/// Why an extractor could not give the handler its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtractError {
    /// The event's arguments do not fit the type of [`Data<T>`]; the text is serde's.
    InvalidData(String),
    /// No state of this type was given to [`ServerBuilder::with_state`](crate::ServerBuilder::with_state).
    MissingState(&'static str),
}

impl std::fmt::Display for ExtractError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExtractError::InvalidData(why) => write!(f, "invalid event arguments: {why}"),
            ExtractError::MissingState(ty) => write!(f, "no state of type {ty} was given to the server builder"),
        }
    }
}
impl std::error::Error for ExtractError {}

impl ExtractError {
    /// What the client reads in its ack: no detail of the server for a server bug.
    fn client_message(&self) -> String {
        match self {
            ExtractError::InvalidData(_) => self.to_string(),
            ExtractError::MissingState(_) => "internal server error".to_owned(),
        }
    }
}

impl FromEvent for Socket {
    fn from_event(socket: &Socket, _: &Event) -> Result<Self, ExtractError> {
        Ok(socket.clone())
    }
}

impl FromEvent for Event {
    fn from_event(_: &Socket, event: &Event) -> Result<Self, ExtractError> {
        Ok(event.clone())
    }
    fn from_event_last(_: &Socket, event: &mut Event) -> Result<Self, ExtractError> {
        Ok(Event { name: std::mem::take(&mut event.name), args: std::mem::take(&mut event.args), ack: event.ack.clone() })
    }
}

impl<T: FromEvent> FromEvent for Result<T, ExtractError> {
    fn from_event(socket: &Socket, event: &Event) -> Result<Self, ExtractError> {
        Ok(T::from_event(socket, event))
    }
    fn from_event_last(socket: &Socket, event: &mut Event) -> Result<Self, ExtractError> {
        Ok(T::from_event_last(socket, event))
    }
}

/// The event's arguments read as `T` with serde.
///
/// A tuple, a tuple struct or a sequence (`Vec`, an array) reads the whole argument
/// list: `Data<(String, u32)>` for `socket.emit("e", "a", 1)`. Any other type reads the
/// first argument: `Data<Chat>` for `socket.emit("chat", { room, text })`. A missing
/// argument reads as `null`, so `Data<Option<T>>` accepts none. Binary leaves read as
/// `bytes::Bytes`, `Vec<u8>` or [`Value`].
///
/// If the arguments do not fit, the handler does not run (see the [module](self) docs).
/// Take `Result<Data<T>, ExtractError>` to handle that yourself.
#[derive(Debug, Clone, PartialEq)]
pub struct Data<T>(pub T);

impl<T: DeserializeOwned> FromEvent for Data<T> {
    fn from_event(_: &Socket, event: &Event) -> Result<Self, ExtractError> {
        from_args(&event.args).map(Data).map_err(|e| ExtractError::InvalidData(e.to_string()))
    }
}

/// The binary attachments of the event, in the order they appear in its arguments
/// (depth first), as the client's `Buffer`s, `ArrayBuffer`s and `Blob`s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bin(pub Vec<Bytes>);

impl FromEvent for Bin {
    fn from_event(_: &Socket, event: &Event) -> Result<Self, ExtractError> {
        let mut out = Vec::new();
        for arg in &event.args {
            collect_binary(arg, &mut out);
        }
        Ok(Bin(out))
    }
}

fn collect_binary(value: &Value, out: &mut Vec<Bytes>) {
    match value {
        Value::Binary(b) => out.push(b.clone()),
        Value::Array(a) => a.iter().for_each(|v| collect_binary(v, out)),
        Value::Object(o) => o.values().for_each(|v| collect_binary(v, out)),
        _ => {}
    }
}

/// Shared state given to [`ServerBuilder::with_state`](crate::ServerBuilder::with_state),
/// one value per type, cloned for each handler call (so put an `Arc` or a pool in it).
///
/// ```
/// use shoal::extract::State;
/// use shoal::{Server, Socket};
///
/// #[derive(Clone)]
/// struct Config { motd: &'static str }
///
/// let io = Server::builder().with_state(Config { motd: "hello" }).build();
/// io.on_connection(|socket: Socket| async move {
///     socket.on("motd", |socket: Socket, State(config): State<Config>| async move {
///         let _ = socket.emit("motd", config.motd);
///     });
/// });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromEvent for State<T> {
    fn from_event(socket: &Socket, _: &Event) -> Result<Self, ExtractError> {
        socket.ns().0.state.get::<T>().map(State).ok_or(ExtractError::MissingState(std::any::type_name::<T>()))
    }
}

/// The states a server was built with, by type. Each namespace keeps a clone.
#[derive(Clone, Default)]
pub(crate) struct StateMap(Arc<HashMap<TypeId, Box<dyn Any + Send + Sync>>>);

impl StateMap {
    pub(crate) fn new(states: HashMap<TypeId, Box<dyn Any + Send + Sync>>) -> StateMap {
        StateMap(Arc::new(states))
    }
    fn get<T: Clone + 'static>(&self) -> Option<T> {
        self.0.get(&TypeId::of::<T>()).and_then(|b| b.downcast_ref::<T>()).cloned()
    }
}

/// Why an ack was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckSendError {
    /// The client did not ask for an ack.
    NotRequested,
    /// The ack was already sent (an event is acknowledged once).
    AlreadySent,
    /// The socket is closed.
    Disconnected,
    /// The value could not be turned into JSON (serde's message).
    Serialize(String),
}

impl std::fmt::Display for AckSendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckSendError::NotRequested => f.write_str("the client asked for no ack"),
            AckSendError::AlreadySent => f.write_str("the ack was already sent"),
            AckSendError::Disconnected => f.write_str("socket is disconnected"),
            AckSendError::Serialize(why) => write!(f, "ack not serializable: {why}"),
        }
    }
}
impl std::error::Error for AckSendError {}

/// The means to acknowledge the event, if the client asked for an ack
/// (`socket.emit("e", data, (answer) => ...)` or `emitWithAck`).
#[derive(Clone)]
pub struct AckSender {
    ack: Option<Arc<AckState>>,
}

impl std::fmt::Debug for AckSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckSender").field("requested", &self.requested()).finish()
    }
}

impl FromEvent for AckSender {
    fn from_event(_: &Socket, event: &Event) -> Result<Self, ExtractError> {
        Ok(AckSender { ack: event.ack.clone() })
    }
}

impl AckSender {
    /// True if the client waits for an ack.
    pub fn requested(&self) -> bool {
        self.ack.is_some()
    }

    /// Acknowledges with one argument, `value` turned into JSON with serde (binary
    /// leaves become arrays of numbers there: use [`AckSender::send_args`] with
    /// [`Value::Binary`] to send bytes).
    pub fn send<T: Serialize>(&self, value: &T) -> Result<(), AckSendError> {
        let value = Value::from_serde(value).map_err(|e| AckSendError::Serialize(e.to_string()))?;
        self.send_args(value)
    }

    /// Acknowledges with these arguments (`()`, one value, a tuple, a `Vec<Value>`).
    pub fn send_args(&self, args: impl IntoArgs) -> Result<(), AckSendError> {
        match &self.ack {
            None => Err(AckSendError::NotRequested),
            Some(ack) => ack.send(args.into_args()),
        }
    }
}

/// What a handler returns: `()`, or `Result<T, E>` whose error is reported (see the
/// [module](self) docs).
pub trait HandlerResult: Send + 'static {
    /// False for `()`: nothing to report, nothing to keep for it.
    #[doc(hidden)]
    const CAN_FAIL: bool;
    /// The error's text, if the handler failed.
    #[doc(hidden)]
    fn error_message(self) -> Option<String>;
}

impl HandlerResult for () {
    const CAN_FAIL: bool = false;
    fn error_message(self) -> Option<String> {
        None
    }
}

impl<T: Send + 'static, E: std::fmt::Display + Send + 'static> HandlerResult for Result<T, E> {
    const CAN_FAIL: bool = true;
    fn error_message(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

/// An event handler: an async function (or closure) of up to eight extractors
/// ([`FromEvent`]), returning a [`HandlerResult`]. `Args` is the tuple of its argument
/// types; it is inferred.
pub trait Handler<Args>: Send + Sync + 'static {
    /// Extracts the arguments and runs the handler. With `answer_errors`, a failure is
    /// also the ack (if one is due).
    #[doc(hidden)]
    fn call(&self, socket: Socket, event: Event, answer_errors: bool) -> BoxFuture<'static, ()>;
}

/// A named event's handler: its failures are answered in the ack.
pub(crate) fn into_event_handler<H: Handler<Args>, Args>(handler: H) -> EventHandler {
    Arc::new(move |socket, event| handler.call(socket, event, true))
}

/// A catch-all listener: its failures are only logged, so that it never answers in the
/// place of the event's own handler.
pub(crate) fn into_any_handler<H: Handler<Args>, Args>(handler: H) -> EventHandler {
    Arc::new(move |socket, event| handler.call(socket, event, false))
}

/// The handler did not run: an extractor failed.
fn rejected(socket: &Socket, event: &Event, error: ExtractError, answer_errors: bool) -> BoxFuture<'static, ()> {
    match &error {
        ExtractError::MissingState(_) => {
            tracing::error!(socket = %socket.id(), nsp = %socket.ns().name(), event = %event.name, %error, "event dropped")
        }
        ExtractError::InvalidData(_) => {
            tracing::debug!(socket = %socket.id(), nsp = %socket.ns().name(), event = %event.name, %error, "event dropped")
        }
    }
    if let Some(ack) = event.ack.as_ref().filter(|_| answer_errors) {
        let _ = ack.send(error_object(error.client_message()));
    }
    Box::pin(std::future::ready(()))
}

fn error_object(message: String) -> Vec<Value> {
    vec![Value::Object([("error".to_owned(), Value::String(message))].into_iter().collect())]
}

/// Runs the handler's future and reports its error, if any.
fn finish<Fut>(fut: Fut, socket: &Socket, event: &Event, answer_errors: bool) -> BoxFuture<'static, ()>
where
    Fut: Future + Send + 'static,
    Fut::Output: HandlerResult,
{
    if !<Fut::Output as HandlerResult>::CAN_FAIL {
        return Box::pin(async move {
            let _ = fut.await;
        });
    }
    let (socket, ack) = (socket.clone(), event.ack.clone().filter(|_| answer_errors));
    Box::pin(async move {
        if let Some(message) = fut.await.error_message() {
            tracing::debug!(socket = %socket.id(), nsp = %socket.ns().name(), error = %message, "event handler failed");
            if let Some(ack) = ack {
                if !ack.is_sent() {
                    let _ = ack.send(error_object(message));
                }
            }
        }
    })
}

impl<F, Fut> Handler<()> for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerResult,
{
    fn call(&self, socket: Socket, event: Event, answer_errors: bool) -> BoxFuture<'static, ()> {
        finish(self(), &socket, &event, answer_errors)
    }
}

macro_rules! handler_for {
    ($($a:ident),* ; $last:ident) => {
        impl<F, Fut, $($a,)* $last> Handler<($($a,)* $last,)> for F
        where
            F: Fn($($a,)* $last) -> Fut + Send + Sync + 'static,
            Fut: Future + Send + 'static,
            Fut::Output: HandlerResult,
            $($a: FromEvent,)*
            $last: FromEvent,
        {
            #[allow(non_snake_case)]
            fn call(&self, socket: Socket, mut event: Event, answer_errors: bool) -> BoxFuture<'static, ()> {
                $(
                    let $a = match $a::from_event(&socket, &event) {
                        Ok(v) => v,
                        Err(e) => return rejected(&socket, &event, e, answer_errors),
                    };
                )*
                let $last = match $last::from_event_last(&socket, &mut event) {
                    Ok(v) => v,
                    Err(e) => return rejected(&socket, &event, e, answer_errors),
                };
                finish(self($($a,)* $last), &socket, &event, answer_errors)
            }
        }
    };
}

handler_for!(; A1);
handler_for!(A1; A2);
handler_for!(A1, A2; A3);
handler_for!(A1, A2, A3; A4);
handler_for!(A1, A2, A3, A4; A5);
handler_for!(A1, A2, A3, A4, A5; A6);
handler_for!(A1, A2, A3, A4, A5, A6; A7);
handler_for!(A1, A2, A3, A4, A5, A6, A7; A8);

/// Reads an ack's arguments as `R`, by the rule of [`Data<T>`].
pub(crate) fn ack_from_args<R: DeserializeOwned>(args: Vec<Value>) -> Result<R, AckError> {
    from_args(&args).map_err(|e| AckError::InvalidAck(e.to_string()))
}
