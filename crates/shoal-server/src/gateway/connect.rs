//! The connect proxy: a connect middleware that POSTs the handshake to the app before a
//! socket joins its namespace. The app accepts (with the socket's `data` and rooms to
//! join) or rejects (`message`, `data`: the client's `connect_error`). When the app
//! fails, the client gets a `connect_error` that says so, with `data.code`.
//!
//! Request: `{namespace, socket, node, address, secure, headers, query, auth}`.
//! Answer: `{"accept": {"data"?, "rooms"?}}` or `{"reject": {"message", "data"?}}`.

use super::app::{AppError, Proxy};
use super::wire::object;
use shoal::{ConnectError, Socket, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rooms a socket may be put in by one answer.
pub const MAX_ROOMS: usize = 256;
/// Longest room name accepted from the app.
pub const MAX_ROOM_LEN: usize = 1024;

pub struct ConnectProxy {
    pub proxy: Proxy,
    pub headers: Vec<String>,
    /// Rooms from accepted answers, joined once the socket is connected (a middleware
    /// runs before it is). Entries of sockets that never connected are swept.
    pending: Mutex<HashMap<String, (Vec<String>, Instant)>>,
}

/// What the app decided.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Accept { data: Option<Value>, rooms: Vec<String> },
    Reject(ConnectError),
}

impl ConnectProxy {
    pub fn new(proxy: Proxy, headers: Vec<String>) -> ConnectProxy {
        ConnectProxy { proxy, headers: headers.into_iter().map(|h| h.to_ascii_lowercase()).collect(), pending: Mutex::new(HashMap::new()) }
    }

    /// The middleware.
    pub async fn check(&self, socket: Socket) -> Result<(), ConnectError> {
        let request = self.request(&socket);
        let decision = match self.proxy.call(&request).await {
            Ok(answer) => parse_answer(answer).inspect_err(|e| {
                self.proxy.shared().metrics.proxy_errors.get_or_create(&[("proxy", self.proxy.kind), ("error", e.code())]).inc();
                tracing::warn!(proxy = self.proxy.kind, error = %e, "the app's answer was refused");
            }),
            Err(e) => Err(e),
        };
        match decision {
            Ok(Decision::Accept { data, rooms }) => {
                if let Some(data) = data {
                    socket.set_data(data);
                }
                if !rooms.is_empty() {
                    let mut pending = self.pending.lock().unwrap();
                    if pending.len() > 10_000 {
                        pending.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
                    }
                    pending.insert(socket.id().to_string(), (rooms, Instant::now()));
                }
                Ok(())
            }
            Ok(Decision::Reject(e)) => Err(e),
            Err(e) => Err(app_failure(&e)),
        }
    }

    /// Called once the socket is connected: it joins the rooms the app gave it.
    pub fn connected(&self, socket: &Socket) {
        let rooms = self.pending.lock().unwrap().remove(&socket.id().to_string());
        if let Some((rooms, _)) = rooms {
            socket.join_all(rooms);
        }
    }

    fn request(&self, socket: &Socket) -> Value {
        let hs = socket.handshake();
        let headers: indexmap::IndexMap<String, Value> =
            self.headers.iter().filter_map(|h| hs.headers.get(h).map(|v| (h.clone(), Value::from(v.as_str())))).collect();
        let query = hs.query.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        object([
            ("namespace", Value::from(socket.ns().name())),
            ("socket", Value::from(socket.id().to_string())),
            ("node", Value::from(self.proxy.shared().node())),
            ("address", Value::from(hs.address.as_str())),
            ("secure", Value::Bool(hs.secure)),
            ("headers", Value::Object(headers)),
            ("query", Value::Object(query)),
            ("auth", hs.auth.clone()),
        ])
    }
}

/// The client's `connect_error` when the app gave no answer: a message that says what
/// failed (without the app's internals) and `data.code`.
pub fn app_failure(e: &AppError) -> ConnectError {
    ConnectError::with_data(client_message(e), object([("code", Value::from(e.code()))]))
}

pub fn client_message(e: &AppError) -> &'static str {
    match e {
        AppError::Unavailable(_) => "the app is unavailable",
        AppError::Timeout => "the app did not answer in time",
        AppError::Overloaded => "the app is overloaded",
        AppError::Status(_) => "the app failed",
        AppError::TooLarge(_) | AppError::BadAnswer(_) => "the app answered something invalid",
    }
}

pub fn parse_answer(answer: Value) -> Result<Decision, AppError> {
    let bad = |m: &str| AppError::BadAnswer(m.to_owned());
    let Value::Object(mut map) = answer else { return Err(bad("expected an object with `accept` or `reject`")) };
    match (map.shift_remove("accept"), map.shift_remove("reject")) {
        (Some(accept), None) => {
            let accept = match accept {
                Value::Object(m) => m,
                Value::Bool(true) | Value::Null => Default::default(),
                _ => return Err(bad("`accept` must be an object")),
            };
            let rooms = match accept.get("rooms") {
                None | Some(Value::Null) => vec![],
                Some(v) => rooms(v).map_err(|e| AppError::BadAnswer(format!("accept.rooms: {e}")))?,
            };
            Ok(Decision::Accept { data: accept.get("data").cloned(), rooms })
        }
        (None, Some(reject)) => {
            let message = reject.get("message").and_then(Value::as_str).unwrap_or("refused by the app").to_owned();
            Ok(Decision::Reject(match reject.get("data") {
                Some(data) => ConnectError::with_data(message, data.clone()),
                None => ConnectError::new(message),
            }))
        }
        _ => Err(bad("expected exactly one of `accept` and `reject`")),
    }
}

/// A list of room names, bounded in count and length.
pub fn rooms(v: &Value) -> Result<Vec<String>, String> {
    names(v, MAX_ROOMS)
}

/// A list of at most `max` room names (or socket ids).
pub fn names(v: &Value, max: usize) -> Result<Vec<String>, String> {
    let Value::Array(items) = v else { return Err("expected a list of room names".into()) };
    if items.len() > max {
        return Err(format!("more than {max} entries"));
    }
    items
        .iter()
        .map(|r| match r.as_str() {
            Some(r) if !r.is_empty() && r.len() <= MAX_ROOM_LEN => Ok(r.to_owned()),
            _ => Err(format!("a room name is a non-empty string of at most {MAX_ROOM_LEN} bytes")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire::decode;

    fn answer(json: &str) -> Result<Decision, AppError> {
        parse_answer(decode(json.as_bytes(), None).unwrap())
    }

    #[test]
    fn accept_and_reject() {
        assert_eq!(
            answer(r#"{"accept":{"data":{"user":"ann"},"rooms":["user:ann"]}}"#).unwrap(),
            Decision::Accept { data: Some(object([("user", Value::from("ann"))])), rooms: vec!["user:ann".into()] }
        );
        assert_eq!(answer(r#"{"accept":{}}"#).unwrap(), Decision::Accept { data: None, rooms: vec![] });
        assert_eq!(
            answer(r#"{"reject":{"message":"bad token","data":{"code":"auth"}}}"#).unwrap(),
            Decision::Reject(ConnectError::with_data("bad token", object([("code", Value::from("auth"))])))
        );
    }

    #[test]
    fn wrong_shapes_are_bad_answers() {
        for body in [r#"[1]"#, r#"{}"#, r#"{"accept":{},"reject":{}}"#, r#"{"accept":{"rooms":"r"}}"#, r#"{"accept":{"rooms":[""]}}"#, r#"{"accept":3}"#] {
            assert_eq!(answer(body).unwrap_err().code(), "app_bad_answer", "{body}");
        }
    }
}
