//! The event proxy and the disconnect notification. Each socket gets a queue and one
//! task that sends its events to the app one after the other, so the app sees them in
//! the order the client sent them, and then the disconnect notification. A full queue
//! refuses the event (the client's ack says so); other sockets never wait for this one.
//!
//! Event request: `{namespace, socket, node, rooms, data, event, args, ack}`.
//! Answer (every key optional): `{ack: [...], data, join: [...], leave: [...],
//! emit: [{to?, except?, event, args?}], disconnect: bool}`.
//! Disconnect request: `{namespace, socket, node, rooms, data, reason}` (answer ignored).

use super::app::{AppError, Proxy};
use super::connect::{client_message, rooms, ConnectProxy};
use super::wire::object;
use shoal::{DisconnectReason, Event, Socket, Value};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Emits one answer may ask for.
const MAX_EMITS: usize = 64;

/// The `error` label of `shoal_gateway_proxy_errors_total` for an event refused because
/// its socket's queue was full (the client's ack says `app_overloaded`).
pub const QUEUE_FULL: &str = "queue_full";

pub struct EventsProxy {
    pub proxy: Proxy,
    /// None: every event.
    pub names: Option<HashSet<String>>,
}

/// What a socket's task does next.
enum Job {
    Event(Socket, Event),
    Disconnect(Value),
    Stop,
}

/// Sets up a connected socket: its queue and task, its event handlers, and its
/// disconnect notification.
/// Called from the gateway's middleware, so before the socket is connected; `connect`
/// (if any) holds rooms the app gave it, joined before its first event goes out.
pub fn attach(socket: &Socket, events: Option<Arc<EventsProxy>>, disconnect: Option<Proxy>, connect: Option<Arc<ConnectProxy>>, max_queued: usize) {
    if events.is_none() && disconnect.is_none() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Job>(max_queued);
    let worker_events = events.clone();
    let worker_disconnect = disconnect.clone();
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            match job {
                Job::Event(socket, ev) => {
                    if let Some(connect) = &connect {
                        connect.connected(&socket);
                    }
                    if let Some(events) = &worker_events {
                        events.handle(socket, ev).await;
                    }
                }
                Job::Disconnect(request) => {
                    if let Some(proxy) = &worker_disconnect {
                        let _ = proxy.call(&request).await;
                    }
                }
                Job::Stop => break,
            }
        }
    });

    if let Some(events) = &events {
        let enqueue = {
            let tx = tx.clone();
            let proxy = events.proxy.clone();
            move |socket: Socket, ev: Event| {
                // try_send runs inline, in the order the socket layer hands events over.
                match tx.try_send(Job::Event(socket, ev)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(Job::Event(_, ev))) => {
                        // Never sent to the app, so not a request; counted so that an
                        // overloaded app shows in /metrics, not only in clients' acks.
                        proxy.shared().metrics.proxy_errors.get_or_create(&[("proxy", proxy.kind), ("error", QUEUE_FULL)]).inc();
                        ev.ack(error_value(&AppError::Overloaded, "too many events of this socket wait for the app"));
                    }
                    Err(_) => {}
                }
                std::future::ready(())
            }
        };
        match &events.names {
            None => socket.on_any(enqueue),
            Some(names) => {
                for name in names {
                    socket.on(name.clone(), enqueue.clone());
                }
            }
        }
    }

    if let Some(proxy) = disconnect {
        let tx = tx.clone();
        let node = proxy.shared().node().to_owned();
        // While the socket is still in its rooms.
        socket.on_disconnecting(move |socket: Socket, reason: DisconnectReason| {
            let tx = tx.clone();
            let request = object([
                ("namespace", Value::from(socket.ns().name())),
                ("socket", Value::from(socket.id().to_string())),
                ("node", Value::from(node.as_str())),
                ("rooms", own_rooms(&socket)),
                ("data", socket.data()),
                ("reason", Value::from(reason.as_str())),
            ]);
            async move {
                let _ = tx.send(Job::Disconnect(request)).await;
            }
        });
    }
    socket.on_disconnect(move |_socket, _reason| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Job::Stop).await;
        }
    });
}

/// The socket's rooms but its own id.
fn own_rooms(socket: &Socket) -> Value {
    let id = socket.id().to_string();
    Value::Array(socket.rooms().into_iter().map(|r| r.to_string()).filter(|r| *r != id).map(Value::from).collect())
}

/// The single ack argument a client gets when the app failed.
pub fn error_value(e: &AppError, message: &str) -> Value {
    object([("error", Value::from(e.code())), ("message", Value::from(message))])
}

/// What the app asked for in one answer.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    pub ack: Option<Vec<Value>>,
    pub data: Option<Value>,
    pub join: Vec<String>,
    pub leave: Vec<String>,
    pub emits: Vec<Emit>,
    pub disconnect: bool,
}

#[derive(Debug, PartialEq)]
pub struct Emit {
    pub to: Vec<String>,
    pub except: Vec<String>,
    pub event: String,
    pub args: Vec<Value>,
}

impl EventsProxy {
    pub fn wants(&self, name: &str) -> bool {
        self.names.as_ref().is_none_or(|n| n.contains(name))
    }

    async fn handle(&self, socket: Socket, ev: Event) {
        if !self.wants(&ev.name) {
            return;
        }
        let request = object([
            ("namespace", Value::from(socket.ns().name())),
            ("socket", Value::from(socket.id().to_string())),
            ("node", Value::from(self.proxy.shared().node())),
            ("rooms", own_rooms(&socket)),
            ("data", socket.data()),
            ("event", Value::from(ev.name.as_str())),
            ("args", Value::Array(ev.args.clone())),
            ("ack", Value::Bool(ev.wants_ack())),
        ]);
        let answer = match self.proxy.call(&request).await {
            Ok(answer) => parse_answer(answer).inspect_err(|e| {
                self.proxy.shared().metrics.proxy_errors.get_or_create(&[("proxy", self.proxy.kind), ("error", e.code())]).inc();
                tracing::warn!(proxy = self.proxy.kind, error = %e, "the app's answer was refused");
            }),
            Err(e) => Err(e),
        };
        match answer {
            Ok(answer) => apply(&socket, &ev, answer),
            Err(e) => {
                ev.ack(error_value(&e, client_message(&e)));
            }
        }
    }
}

fn apply(socket: &Socket, ev: &Event, answer: Answer) {
    if let Some(data) = answer.data {
        socket.set_data(data);
    }
    for room in answer.leave {
        socket.leave(room);
    }
    if !answer.join.is_empty() {
        socket.join_all(answer.join);
    }
    if ev.wants_ack() {
        ev.ack(answer.ack.unwrap_or_default());
    }
    for emit in answer.emits {
        let mut op = socket.ns().broadcast();
        for room in emit.to {
            op = op.to(room);
        }
        for room in emit.except {
            op = op.except(room);
        }
        if let Err(e) = op.emit(&emit.event, emit.args) {
            tracing::warn!(socket = %socket.id(), error = %e, "the app asked for an emit that cannot go out");
        }
    }
    if answer.disconnect {
        socket.disconnect(false);
    }
}

pub fn parse_answer(answer: Value) -> Result<Answer, AppError> {
    let bad = |m: String| AppError::BadAnswer(m);
    let map = match answer {
        Value::Null => return Ok(Answer::default()),
        Value::Object(map) => map,
        _ => return Err(bad("expected an object".into())),
    };
    let mut out = Answer::default();
    for (key, value) in map {
        match key.as_str() {
            "ack" => {
                out.ack = Some(match value {
                    Value::Array(args) => args,
                    Value::Null => vec![],
                    one => vec![one],
                })
            }
            "data" => out.data = Some(value),
            "join" => out.join = rooms(&value).map_err(|e| bad(format!("join: {e}")))?,
            "leave" => out.leave = rooms(&value).map_err(|e| bad(format!("leave: {e}")))?,
            "disconnect" => out.disconnect = value.as_bool().ok_or_else(|| bad("disconnect: expected true or false".into()))?,
            "emit" => {
                let Value::Array(items) = value else { return Err(bad("emit: expected a list".into())) };
                if items.len() > MAX_EMITS {
                    return Err(bad(format!("emit: more than {MAX_EMITS} emits")));
                }
                for (i, item) in items.into_iter().enumerate() {
                    out.emits.push(parse_emit(item).map_err(|e| bad(format!("emit[{i}]: {e}")))?);
                }
            }
            other => return Err(bad(format!("unknown key `{other}`"))),
        }
    }
    Ok(out)
}

pub fn parse_emit(item: Value) -> Result<Emit, String> {
    let Value::Object(map) = item else { return Err("expected an object".into()) };
    let event = match map.get("event") {
        Some(Value::String(e)) if !e.is_empty() => e.clone(),
        _ => return Err("`event`: a non-empty string".into()),
    };
    let to = map.get("to").map(rooms).transpose()?.unwrap_or_default();
    let except = map.get("except").map(rooms).transpose()?.unwrap_or_default();
    let args = match map.get("args") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err("`args`: a list".into()),
    };
    Ok(Emit { to, except, event, args })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire::decode;

    fn answer(json: &str) -> Result<Answer, AppError> {
        parse_answer(decode(json.as_bytes(), None).unwrap())
    }

    #[test]
    fn full_answer() {
        let a = answer(
            r#"{"ack":[true,{"$b64":"AQI="}],"data":{"n":1},"join":["a"],"leave":["b"],
               "emit":[{"to":["a"],"except":["c"],"event":"msg","args":["hi"]}],"disconnect":false}"#,
        )
        .unwrap();
        assert_eq!(a.ack, Some(vec![Value::Bool(true), Value::Binary(bytes::Bytes::from_static(&[1, 2]))]));
        assert_eq!(a.join, vec!["a"]);
        assert_eq!(a.leave, vec!["b"]);
        assert_eq!(a.emits, vec![Emit { to: vec!["a".into()], except: vec!["c".into()], event: "msg".into(), args: vec![Value::from("hi")] }]);
        assert!(!a.disconnect);
    }

    #[test]
    fn empty_answers_and_single_ack_values() {
        assert_eq!(answer("null").unwrap(), Answer::default());
        assert_eq!(answer("{}").unwrap(), Answer::default());
        assert_eq!(answer(r#"{"ack":"ok"}"#).unwrap().ack, Some(vec![Value::from("ok")]));
    }

    #[test]
    fn wrong_shapes_are_bad_answers() {
        for body in [
            r#""ok""#,
            r#"{"acks":[]}"#,
            r#"{"join":"room"}"#,
            r#"{"emit":{"event":"x"}}"#,
            r#"{"emit":[{"to":["a"]}]}"#,
            r#"{"emit":[{"event":"x","args":3}]}"#,
            r#"{"disconnect":"yes"}"#,
        ] {
            assert_eq!(answer(body).unwrap_err().code(), "app_bad_answer", "{body}");
        }
    }
}
