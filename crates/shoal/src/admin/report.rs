//! A socket as the admin UI reads it (the official `SerializedSocket`), the UI's
//! timestamps, and `all_sockets`: this node's sockets plus the other nodes'.

use crate::engine::session::TransportKind;
use crate::engine::Session;
use crate::io::{Namespace, Server, Socket};
use crate::protocol::Value;
use indexmap::IndexMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server-side event by which a node asks the others for their sockets.
const SOCKETS_REQUEST: &str = "shoal:admin:sockets";
/// How long a node waits for the others' sockets.
const SOCKETS_TIMEOUT: Duration = Duration::from_secs(2);

/// `{id, clientId, transport, nsp, data, handshake, rooms}`.
pub(super) fn serialize(socket: &Socket) -> Value {
    let mut obj = IndexMap::new();
    obj.insert("id".to_owned(), Value::String(socket.id().to_string()));
    obj.insert("clientId".to_owned(), Value::String(client_id(socket.session())));
    obj.insert("transport".to_owned(), Value::from(transport(socket.session())));
    obj.insert("nsp".to_owned(), Value::String(socket.ns().name().to_owned()));
    obj.insert("data".to_owned(), data(socket.data()));
    obj.insert("handshake".to_owned(), handshake(socket));
    obj.insert("rooms".to_owned(), rooms(socket));
    Value::Object(obj)
}

/// The socket's rooms, as the UI lists them (its own id included).
pub(super) fn rooms(socket: &Socket) -> Value {
    Value::Array(socket.rooms().into_iter().map(|r| Value::String(r.to_string())).collect())
}

/// `socket.data`, as an object (the official server's default is `{}`).
pub(super) fn data(data: Value) -> Value {
    if data.is_null() {
        Value::Object(IndexMap::new())
    } else {
        data
    }
}

/// The session's transport name.
pub(super) fn transport(session: &Session) -> &'static str {
    match session.transport() {
        TransportKind::Polling => "polling",
        TransportKind::WebSocket => "websocket",
    }
}

/// The client (Engine.IO session) a socket belongs to, as the UI groups sockets. Not the
/// sid itself, which lets anyone who has it act as the client: 12 hex digits of its
/// SHA-1, the same for every socket of the session.
pub(super) fn client_id(session: &Session) -> String {
    use sha1::Digest as _;
    let digest = sha1::Sha1::digest(session.sid.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The handshake without `auth` (which may hold secrets): address (as the official
/// server, `cf-connecting-ip` or `x-forwarded-for` first), headers, query, issued,
/// secure, time, url, xdomain.
fn handshake(socket: &Socket) -> Value {
    let hs = socket.handshake();
    let address = hs.headers.get("cf-connecting-ip").or_else(|| hs.headers.get("x-forwarded-for")).unwrap_or(&hs.address);
    let strings = |map: &IndexMap<String, String>| Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
    let mut obj = IndexMap::new();
    obj.insert("address".to_owned(), Value::String(address.clone()));
    obj.insert("headers".to_owned(), strings(&hs.headers));
    obj.insert("query".to_owned(), strings(&hs.query));
    obj.insert("issued".to_owned(), Value::from(hs.issued));
    obj.insert("secure".to_owned(), Value::Bool(hs.secure));
    obj.insert("time".to_owned(), Value::String(hs.time.clone()));
    obj.insert("url".to_owned(), Value::String(hs.url.clone()));
    obj.insert("xdomain".to_owned(), Value::Bool(hs.xdomain));
    Value::Object(obj)
}

/// The sockets of this node, every namespace.
pub(super) fn local_sockets(server: &Server) -> Vec<Value> {
    server.namespaces().iter().flat_map(Namespace::local_sockets).map(|s| serialize(&s)).collect()
}

/// The sockets of the whole cluster: this node's, then the other nodes' answers. If a
/// node does not answer in time (a Node.js server in a mixed cluster, a dying node), the
/// adapter gives no answers at all: this node's sockets only, and a warning in the log.
pub(super) async fn all_sockets(server: &Server, admin: &Namespace) -> Vec<Value> {
    let mut sockets = local_sockets(server);
    match admin.server_side_emit_with_ack(SOCKETS_REQUEST, (), SOCKETS_TIMEOUT).await {
        Ok(answers) => {
            for answer in answers {
                if let Value::Array(list) = answer {
                    sockets.extend(list);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "admin UI: the other nodes' sockets are missing from all_sockets"),
    }
    sockets
}

/// Answers the other nodes' requests for this node's sockets.
pub(super) fn answer_other_nodes(server: &Server, admin: &Namespace) {
    let server = server.clone();
    admin.on_server_event(SOCKETS_REQUEST, move |_args, ack| {
        let sockets = local_sockets(&server);
        async move {
            if let Some(ack) = ack {
                ack.send(Value::Array(sockets));
            }
        }
    });
}

/// Now, as a JavaScript `Date` travels in JSON: `2026-12-01T18:22:01.123Z`.
pub(super) fn now() -> Value {
    Value::String(iso_date(SystemTime::now()))
}

/// Milliseconds since the Unix epoch.
pub(super) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn iso_date(t: SystemTime) -> String {
    let ms = millis(t) as i64;
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = crate::io::handshake::civil_date(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_dates_like_json_stringify() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_626_240_123);
        assert_eq!(super::iso_date(t), "2026-11-25T17:04:00.123Z");
        assert_eq!(super::iso_date(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
