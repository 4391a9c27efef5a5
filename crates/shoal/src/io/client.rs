//! The Socket.IO side of one Engine.IO session: decodes its messages into packets with
//! the server's parser (re-assembling binary attachments for the default one), routes them to the session's sockets, one per
//! namespace, and enforces the protocol: anything out of order closes the session.
//! A protocol 3 session (socket.io-client 2.x, Socket.IO protocol 4) is in `/` from
//! the start, and names a namespace's auth as a query in its CONNECT.

use super::namespace::Namespace;
use super::socket::Socket;
use super::{run_handler, DisconnectReason, ServerShared};
use crate::engine::{CloseReason, Message, ProtocolVersion, Session};
use crate::protocol::msgpack_packet;
use crate::protocol::socket_packet::{decode, DecodeError, Decoded, Packet, PacketKind, PartialPacket};
use crate::protocol::{Parser, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub(crate) struct Client {
    server: Weak<ServerShared>,
    /// Its sockets by namespace: most sessions have one, so a list (no table per session).
    sockets: Mutex<Vec<(Box<str>, Socket)>>,
    /// Namespaces whose CONNECT is on its way (middlewares running); freed when empty.
    connecting: Mutex<HashSet<String>>,
    partial: Mutex<Option<PartialPacket>>,
    pub(crate) connected_once: AtomicBool,
}

impl Client {
    pub(crate) fn new(server: Weak<ServerShared>) -> Client {
        Client {
            server,
            sockets: Mutex::new(Vec::new()),
            connecting: Mutex::new(HashSet::new()),
            partial: Mutex::new(None),
            connected_once: AtomicBool::new(false),
        }
    }

    pub(crate) fn add_socket(&self, nsp: &str, socket: Socket) {
        {
            let mut sockets = self.sockets.lock().unwrap();
            match sockets.iter_mut().find(|(n, _)| **n == *nsp) {
                Some(slot) => slot.1 = socket,
                None => {
                    sockets.reserve_exact(1);
                    sockets.push((nsp.into(), socket));
                }
            }
        }
        self.connected_once.store(true, Ordering::Release);
    }

    pub(crate) fn remove_socket(&self, nsp: &str) {
        let mut sockets = self.sockets.lock().unwrap();
        sockets.retain(|(n, _)| **n != *nsp);
        if sockets.is_empty() {
            sockets.shrink_to_fit();
        }
    }

    /// The socket of namespace `nsp`, if connected.
    fn socket(&self, nsp: &str) -> Option<Socket> {
        self.sockets.lock().unwrap().iter().find(|(n, _)| **n == *nsp).map(|(_, s)| s.clone())
    }

    /// The CONNECT to `nsp` is over (connected or refused).
    fn done_connecting(&self, nsp: &str) {
        let mut connecting = self.connecting.lock().unwrap();
        connecting.remove(nsp);
        if connecting.is_empty() {
            connecting.shrink_to_fit();
        }
    }

    /// Server-side disconnect of every namespace of this session.
    pub(crate) fn disconnect_all(&self) {
        let sockets: Vec<Socket> = self.sockets.lock().unwrap().iter().map(|(_, s)| s.clone()).collect();
        for s in sockets {
            s.disconnect(false);
        }
    }

    pub(crate) fn on_close(&self, reason: CloseReason) {
        let sockets: Vec<Socket> = std::mem::take(&mut *self.sockets.lock().unwrap()).into_iter().map(|(_, s)| s).collect();
        let reason = DisconnectReason::from(reason);
        for s in sockets {
            s.on_close(reason);
        }
        self.partial.lock().unwrap().take();
    }

    pub(crate) fn on_message(self: &Arc<Self>, session: &Arc<Session>, message: Message) {
        let Some(server) = self.server.upgrade() else { return };
        let packet = match server.config.parser {
            Parser::Json => self.decode_json(&server, session, message),
            Parser::MsgPack => decode_msgpack(session, message),
        };
        if let Some(packet) = packet {
            self.on_packet(&server, session, packet);
        }
    }

    /// The default parser: a text packet, then its binary attachments, if any. `None`
    /// while attachments are awaited or when the session was closed on an error.
    fn decode_json(&self, server: &ServerShared, session: &Session, message: Message) -> Option<Packet> {
        match message {
            Message::Text(text) => {
                if self.partial.lock().unwrap().is_some() {
                    protocol_error(session, "text packet while binary attachments were expected");
                    return None;
                }
                match decode(&text, server.config.max_attachments) {
                    Ok(Decoded::Packet(p)) => Some(p),
                    Ok(Decoded::Partial(p)) => {
                        *self.partial.lock().unwrap() = Some(p);
                        None
                    }
                    Err(e) => {
                        if matches!(e, DecodeError::TooManyAttachments(_)) {
                            server.config.limits.hits.hit(crate::metrics::Limit::MaxAttachments);
                        }
                        protocol_error(session, &e.to_string());
                        None
                    }
                }
            }
            Message::Binary(bytes) => {
                let Some(partial) = self.partial.lock().unwrap().take() else {
                    protocol_error(session, "binary data with no packet expecting it");
                    return None;
                };
                match partial.push(bytes) {
                    Ok(Ok(p)) => Some(p),
                    Ok(Err(partial)) => {
                        *self.partial.lock().unwrap() = Some(partial);
                        None
                    }
                    Err(e) => {
                        protocol_error(session, &e.to_string());
                        None
                    }
                }
            }
        }
    }

    /// Protocol 3 (socket.io-client 1.x and 2.x): the client counts on being in `/` as
    /// soon as the session opens, and sends no CONNECT for it.
    pub(crate) fn connect_implicitly(self: &Arc<Self>, session: &Arc<Session>) {
        let Some(server) = self.server.upgrade() else { return };
        self.on_packet(&server, session, Packet::connect("/", None));
    }

    fn on_packet(self: &Arc<Self>, server: &Arc<ServerShared>, session: &Arc<Session>, mut packet: Packet) {
        if session.protocol() == ProtocolVersion::V3 {
            // A protocol 3 CONNECT names its namespace with the client's query for it
            // (`0/chat?token=x,`): the query is that namespace's auth.
            let (nsp, auth) = split_namespace_query(&packet.nsp);
            if packet.kind == PacketKind::Connect {
                packet.data = Some(auth);
            }
            packet.nsp = nsp;
        }
        let socket = self.socket(&packet.nsp);
        match (packet.kind, socket) {
            (PacketKind::Connect, None) => {
                let limits = &server.config.limits;
                let joined = self.sockets.lock().unwrap().len();
                {
                    let mut connecting = self.connecting.lock().unwrap();
                    if connecting.contains(&packet.nsp) {
                        drop(connecting);
                        return protocol_error(session, "second CONNECT to a namespace being connected");
                    }
                    if joined + connecting.len() >= limits.max_namespaces_per_session {
                        drop(connecting);
                        tracing::debug!(sid = %session.sid, nsp = %packet.nsp, limit = limits.max_namespaces_per_session, "namespaces per session reached, CONNECT refused");
                        limits.hits.hit(crate::metrics::Limit::NamespacesPerSession);
                        let mut err = indexmap::IndexMap::new();
                        err.insert("message".to_owned(), Value::from("Too many namespaces"));
                        let reply = Packet::connect_error(&packet.nsp, Value::Object(err));
                        let _ = session.send_all(server.config.parser.encode(&reply).to_out_packets());
                        return;
                    }
                    connecting.insert(packet.nsp.clone());
                }
                let auth = packet.data.unwrap_or_else(|| Value::Object(Default::default()));
                let Some(ns) = server.namespace_for_connect(&packet.nsp, &auth) else {
                    self.done_connecting(&packet.nsp);
                    let mut err = indexmap::IndexMap::new();
                    err.insert("message".to_owned(), Value::from("Invalid namespace"));
                    let reply = Packet::connect_error(&packet.nsp, Value::Object(err));
                    let _ = session.send_all(server.config.parser.encode(&reply).to_out_packets());
                    return;
                };
                let (client, session2) = (self.clone(), session.clone());
                let nsp = packet.nsp;
                let on_panic = self.connect_panicked(session, &nsp);
                run_handler(
                    move || async move {
                        Namespace::connect(ns, client.clone(), session2, auth).await;
                        client.done_connecting(&nsp);
                    },
                    on_panic,
                );
            }
            (PacketKind::Event | PacketKind::BinaryEvent, Some(socket)) => socket.on_event(packet),
            (PacketKind::Ack | PacketKind::BinaryAck, Some(socket)) => {
                let args = match packet.data {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                if let Some(id) = packet.id {
                    socket.on_ack(id, args);
                }
            }
            (PacketKind::Disconnect, Some(socket)) => socket.on_close(DisconnectReason::ClientNamespaceDisconnect),
            (kind, socket) => {
                let why = match (kind, socket.is_some()) {
                    (PacketKind::Connect, true) => "CONNECT to a namespace already connected",
                    (PacketKind::ConnectError, _) => "CONNECT_ERROR sent by a client",
                    _ => "packet for a namespace the client is not connected to",
                };
                protocol_error(session, why);
            }
        }
    }
}

impl Client {
    /// What a CONNECT whose middleware (or recovery) panicked does: the connection to that
    /// namespace is refused with a `connect_error` ("server error"), or, if the socket got
    /// connected already, that socket is disconnected. The namespace may be asked again;
    /// the session's other namespaces go on.
    fn connect_panicked(self: &Arc<Self>, session: &Arc<Session>, nsp: &str) -> impl FnOnce(String) + Send + 'static {
        let (client, session, nsp) = (Arc::downgrade(self), session.clone(), nsp.to_owned());
        move |message: String| {
            tracing::error!(sid = %session.sid, %nsp, panic = %message, "connect middleware panicked; refusing this connection");
            let Some(client) = client.upgrade() else { return };
            client.done_connecting(&nsp);
            let socket = client.socket(&nsp);
            match socket {
                Some(socket) => socket.disconnect(false),
                None => {
                    let mut err = indexmap::IndexMap::new();
                    err.insert("message".to_owned(), Value::from("server error"));
                    let reply = Packet::connect_error(&nsp, Value::Object(err));
                    let Some(server) = client.server.upgrade() else { return };
                    let _ = session.send_all(server.config.parser.encode(&reply).to_out_packets());
                }
            }
        }
    }
}

/// `/chat?token=x&a=b` → (`/chat`, `{"token": "x", "a": "b"}`), percent-decoded.
fn split_namespace_query(nsp: &str) -> (String, Value) {
    let Some((path, query)) = nsp.split_once('?') else {
        return (nsp.to_owned(), Value::Object(Default::default()));
    };
    let auth = form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect();
    (path.to_owned(), Value::Object(auth))
}

/// The msgpack parser: every packet is one binary message.
fn decode_msgpack(session: &Session, message: Message) -> Option<Packet> {
    let Message::Binary(bytes) = message else {
        protocol_error(session, "text message with the msgpack parser");
        return None;
    };
    match msgpack_packet::decode(&bytes) {
        Ok(p) => Some(p),
        Err(e) => {
            protocol_error(session, &e.to_string());
            None
        }
    }
}

fn protocol_error(session: &Session, why: &str) {
    tracing::debug!(sid = %session.sid, reason = why, "closing session on a protocol error");
    session.close(CloseReason::ParseError);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protocol_3_namespace_query_is_its_auth() {
        let (nsp, auth) = split_namespace_query("/chat?token=a%20b&x=1");
        assert_eq!(nsp, "/chat");
        assert_eq!(auth.get("token").and_then(Value::as_str), Some("a b"));
        assert_eq!(auth.get("x").and_then(Value::as_str), Some("1"));
        let (nsp, auth) = split_namespace_query("/");
        assert_eq!((nsp.as_str(), auth), ("/", Value::Object(Default::default())));
    }
}
