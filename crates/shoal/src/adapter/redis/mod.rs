//! The Redis adapter: many nodes behave as one server. It speaks the protocol of the
//! official `@socket.io/redis-adapter` 8.x (classic pub/sub), so a cluster may mix shoal
//! and Node.js nodes, and `@socket.io/redis-emitter` publishers reach shoal clients.
//!
//! Local delivery is the in-memory adapter's; this module adds publishing broadcasts,
//! answering other nodes' requests, and requests that wait for other nodes' answers
//! (bounded by `requests_timeout`).
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! let link = shoal::adapter::redis::RedisLink::connect("redis://127.0.0.1:6379").await?;
//! let io = shoal::Server::builder()
//!     .adapter(shoal::adapter::redis::factory(link, shoal::adapter::redis::RedisOptions::default()))
//!     .build();
//! # Ok(()) }
//! ```

mod link;
pub mod wire;

pub use link::{LinkStats, RedisLink, Subscriber};

use super::recovery::matches_rooms;
use super::{AckNext, AckResponses, Adapter, AdapterError, AdapterFactory, BroadcastOptions, Handshake, LocalNamespace, MemoryAdapter, PersistedSession, RestoredSession, Room, ServerAck, SocketId, SocketInfo};
use crate::protocol::socket_packet::Packet;
use crate::protocol::Value;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wire::{obj, Channels, RequestType};

/// Settings of the Redis adapter, with the official defaults.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Prefix of every channel (default `socket.io`).
    pub key: String,
    /// How long a request waits for other nodes (default 5 s).
    pub requests_timeout: Duration,
    /// Answer on the requester's own response channel (default false, as the Node adapter).
    pub publish_on_specific_response_channel: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions { key: "socket.io".into(), requests_timeout: Duration::from_secs(5), publish_on_specific_response_channel: false }
    }
}

/// The adapter factory for `ServerBuilder::adapter`.
pub fn factory(link: Arc<RedisLink>, options: RedisOptions) -> AdapterFactory {
    Arc::new(move |ns: &Arc<dyn LocalNamespace>| RedisAdapter::new(ns, link.clone(), options.clone()) as Arc<dyn Adapter>)
}

/// Most requests of this node waiting for answers at once; more fail at once.
const MAX_PENDING: usize = 10_000;

enum Pending {
    /// fetch_sockets: sockets gathered, answers still due.
    Fetch { sockets: Vec<SocketInfo>, due: usize, done: Option<oneshot::Sender<Vec<SocketInfo>>> },
    /// server_side_emit with acks.
    ServerSide { responses: Vec<Value>, due: usize, done: Option<oneshot::Sender<Vec<Value>>> },
}

enum AckEvent {
    ClientCount(usize),
    Ack(Value),
}

pub struct RedisAdapter {
    local: MemoryAdapter,
    nsp: String,
    uid: String,
    channels: Channels,
    link: Arc<RedisLink>,
    options: RedisOptions,
    /// `{key}-log#{nsp}#`: the Redis Stream of logged packets (recovery on).
    log_stream: String,
    pending: Mutex<HashMap<String, Pending>>,
    /// While catching up after an outage, live broadcasts wait here so that clients
    /// get everything in order.
    catching_up: Mutex<Option<Vec<(String, Vec<u8>)>>>,
    ack_requests: Mutex<HashMap<String, mpsc::UnboundedSender<AckEvent>>>,
    me: Weak<RedisAdapter>,
}

impl RedisAdapter {
    pub fn new(ns: &Arc<dyn LocalNamespace>, link: Arc<RedisLink>, options: RedisOptions) -> Arc<RedisAdapter> {
        let uid = wire::uid();
        let channels = Channels::new(&options.key, ns.name(), &uid);
        let adapter = Arc::new_cyclic(|me| RedisAdapter {
            local: MemoryAdapter::new(ns),
            nsp: ns.name().to_owned(),
            uid,
            channels: channels.clone(),
            link: link.clone(),
            log_stream: format!("{}-log#{}#", options.key, ns.name()),
            options,
            pending: Mutex::new(HashMap::new()),
            catching_up: Mutex::new(None),
            ack_requests: Mutex::new(HashMap::new()),
            me: me.clone(),
        });
        let sub: Weak<dyn Subscriber> = Arc::downgrade(&adapter) as Weak<dyn Subscriber>;
        link.subscribe(
            sub,
            vec![channels.request.clone(), channels.response.clone(), channels.specific_response.clone()],
            format!("{}*", channels.broadcast),
        );
        tracing::debug!(nsp = %adapter.nsp, uid = %adapter.uid, "Redis adapter ready");
        if let Some(recovery) = ns.recovery() {
            // Session records of live sockets are rewritten before they expire, so a
            // node that dies without a word leaves them for max_disconnection_duration.
            let every = (recovery.max_disconnection_duration / 3).max(Duration::from_secs(1));
            let weak = Arc::downgrade(&adapter);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(adapter) = weak.upgrade() else { return };
                    let local = &adapter.local;
                    local.changed(&local.local_rooms().matching(&BroadcastOptions::default()));
                }
            });
        }
        adapter
    }

    /// Delivers the broadcasts that arrived during a catch-up, in order.
    fn end_catch_up(&self) {
        loop {
            let batch = {
                let mut guard = self.catching_up.lock().unwrap();
                match guard.as_mut() {
                    Some(waiting) if !waiting.is_empty() => std::mem::take(waiting),
                    _ => {
                        *guard = None;
                        return;
                    }
                }
            };
            for (channel, payload) in batch {
                self.on_broadcast(&channel, &payload);
            }
        }
    }

    fn session_key(&self, pid: &str) -> String {
        format!("{}-session#{}", self.options.key, pid)
    }

    fn write_session(&self, session: &PersistedSession, ttl: Duration) {
        let record = obj(vec![
            ("id", Value::from(session.id.to_string())),
            ("nsp", Value::from(self.nsp.as_str())),
            ("rooms", Value::Array(session.rooms.iter().map(|r| Value::from(r.to_string())).collect())),
            ("data", session.data.clone()),
        ]);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.session_key(&session.pid)).arg(wire::encode_msgpack(&record)).arg("PX").arg(ttl.as_millis() as u64);
        self.link.send(cmd);
    }

    async fn read_session(&self, pid: &str) -> Option<PersistedSession> {
        let bytes = self.link.get(&self.session_key(pid)).await.ok()??;
        let record = wire::decode_msgpack(&bytes).ok()?;
        if record.get("nsp").and_then(Value::as_str) != Some(self.nsp.as_str()) {
            return None;
        }
        Some(PersistedSession {
            pid: pid.to_owned(),
            id: record.get("id")?.as_str()?.into(),
            rooms: wire::rooms_list(record.get("rooms")),
            data: record.get("data").cloned().unwrap_or(Value::Null),
        })
    }

    /// Packets after `offset` from the Redis Stream log, newest pages first, until the
    /// offset is found (None if it is not there any more).
    async fn missed_from_stream(&self, offset: &str, session: &PersistedSession, max: usize) -> Option<Vec<Packet>> {
        let mut rooms = session.rooms.clone();
        rooms.push(session.id.clone());
        let mut newer: Vec<Packet> = Vec::new();
        let mut end = "+".to_owned();
        let mut scanned = 0;
        while scanned < max {
            let page = self.link.xrevrange(&self.log_stream, &end, 500).await.ok()?;
            if page.is_empty() {
                return None;
            }
            for (id, fields) in &page {
                if end != "+" && *id == end {
                    continue; // the first entry of a page is the last of the previous one
                }
                scanned += 1;
                if fields.get("o").map(Vec::as_slice) == Some(offset.as_bytes()) {
                    newer.reverse();
                    return Some(newer);
                }
                let Some(Value::Array(parts)) = fields.get("m").and_then(|m| wire::decode_msgpack(m).ok()) else { continue };
                let (Some(packet), opts) = (parts.first().and_then(wire::packet_from_value), wire::opts_from_value(parts.get(1))) else { continue };
                if matches_rooms(&opts, &rooms) {
                    newer.push(packet);
                }
            }
            let last = page.last().map(|(id, _)| id.clone())?;
            if last == end {
                return None;
            }
            end = last;
        }
        None
    }

    /// This node's id in the adapter protocol.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    fn publish_json(&self, channel: &str, v: &Value) {
        self.link.publish(channel.to_owned(), wire::to_json_text(v).into_bytes());
    }

    fn publish_response(&self, request: &Value, response: &Value, msgpack: bool) {
        let channel = match (self.options.publish_on_specific_response_channel, request.get("uid").and_then(Value::as_str)) {
            (true, Some(uid)) => format!("{}{uid}#", self.channels.response),
            _ => self.channels.response.clone(),
        };
        if msgpack {
            self.link.publish(channel, wire::encode_msgpack(response));
        } else {
            self.publish_json(&channel, response);
        }
    }

    fn opts_json(opts: &BroadcastOptions) -> Value {
        wire::opts_to_value(opts, false)
    }

    /// A request from this node: `{uid, type, ...fields}`.
    fn request(&self, kind: RequestType, fields: Vec<(&str, Value)>) -> Value {
        let mut pairs = vec![("uid", Value::from(self.uid.as_str())), ("type", Value::from(kind as u8))];
        pairs.extend(fields);
        obj(pairs)
    }

    /// Publishes a room operation to the other nodes (this node applied it already).
    fn publish_room_op(&self, kind: RequestType, opts: &BroadcastOptions, rooms: &[Room]) {
        if !opts.flags.local {
            let rooms = Value::Array(rooms.iter().map(|r| Value::from(r.to_string())).collect());
            let request = self.request(kind, vec![("opts", Self::opts_json(opts)), ("rooms", rooms)]);
            self.publish_json(&self.channels.request, &request);
        }
    }

    // ---- incoming ------------------------------------------------------------------------

    fn on_broadcast(&self, channel: &str, payload: &[u8]) {
        let room = &channel[self.channels.broadcast.len()..];
        let room = room.strip_suffix('#').unwrap_or(room);
        let logging = self.local.log().is_some();
        if !logging && !room.is_empty() && !self.local.local_rooms().has_room(room) {
            return; // nobody here is in that room (checked before decoding)
        }
        let Ok(Value::Array(parts)) = wire::decode_msgpack(payload) else {
            tracing::debug!(%channel, "ignoring a malformed broadcast");
            return;
        };
        let mut parts = parts.into_iter();
        let (uid, packet, raw_opts) = (parts.next(), parts.next(), parts.next());
        if uid.as_ref().and_then(Value::as_str) == Some(self.uid.as_str()) {
            return;
        }
        let Some(mut packet) = packet.as_ref().and_then(wire::packet_from_value) else {
            tracing::debug!(%channel, "ignoring a broadcast that is not an event");
            return;
        };
        if packet.nsp != self.nsp {
            return;
        }
        let mut opts = wire::opts_from_value(raw_opts.as_ref());
        opts.flags.timeout = None;
        packet.id = None;
        // Every node logs every stored packet, so a client recovers on any node. A
        // packet already logged (seen in a catch-up) is not delivered twice.
        if let (Some(log), Some(offset)) = (self.local.log(), raw_opts.as_ref().and_then(|o| o.get("offset")).and_then(Value::as_str)) {
            if !log.record_with_offset(&packet, &opts, offset.to_owned()) {
                return;
            }
        }
        if !room.is_empty() && !self.local.local_rooms().has_room(room) {
            return;
        }
        self.local.deliver_local(&packet, &opts);
    }

    fn on_request(&self, payload: &[u8]) {
        let Ok(request) = wire::decode_message(payload) else {
            tracing::debug!("ignoring a malformed request");
            return;
        };
        let Some(kind) = request.get("type").and_then(RequestType::from_value) else { return };
        let request_id = request.get("requestId").and_then(Value::as_str).map(str::to_owned);
        let from_me = request.get("uid").and_then(Value::as_str) == Some(self.uid.as_str());
        let opts = wire::opts_from_value(request.get("opts"));
        match kind {
            RequestType::Sockets => {
                if from_me {
                    return;
                }
                let ids: Vec<Value> = self.local.local_rooms().matching(&BroadcastOptions { rooms: wire::rooms_list(request.get("rooms")), ..Default::default() })
                    .into_iter()
                    .map(|id| Value::from(id.to_string()))
                    .collect();
                let response = obj(vec![("requestId", request_id.into()), ("sockets", Value::Array(ids))]);
                self.publish_response(&request, &response, false);
            }
            RequestType::AllRooms => {
                if from_me {
                    return;
                }
                let rooms: Vec<Value> = self.local.rooms().into_iter().map(|r| Value::from(r.to_string())).collect();
                let response = obj(vec![("requestId", request_id.into()), ("rooms", Value::Array(rooms))]);
                self.publish_response(&request, &response, false);
            }
            RequestType::RemoteJoin | RequestType::RemoteLeave | RequestType::RemoteDisconnect => {
                // This node applied its own request when it made it.
                if from_me {
                    return;
                }
                if request.get("opts").is_some() {
                    let rooms = wire::rooms_list(request.get("rooms"));
                    match kind {
                        RequestType::RemoteJoin => self.local.add_sockets_local(&opts, &rooms),
                        RequestType::RemoteLeave => self.local.del_sockets_local(&opts, &rooms),
                        _ => self.local.disconnect_local(&opts, request.get("close").and_then(Value::as_bool).unwrap_or(false)),
                    }
                    return;
                }
                // The older form: one socket by id, answered when done.
                let Some(sid) = request.get("sid").and_then(Value::as_str) else { return };
                let (Some(ns), true) = (self.local.namespace(), self.local.local_rooms().has_socket(sid)) else { return };
                let sid = SocketId::from(sid);
                let room = Room::from(request.get("room").and_then(Value::as_str).unwrap_or_default());
                match kind {
                    RequestType::RemoteJoin => self.local.add_all(&sid, &[room]),
                    RequestType::RemoteLeave => self.local.del(&sid, &room),
                    _ => ns.disconnect(&[sid.clone()], request.get("close").and_then(Value::as_bool).unwrap_or(false)),
                }
                if kind != RequestType::RemoteDisconnect {
                    ns.changed(&[sid]);
                }
                self.publish_response(&request, &obj(vec![("requestId", request_id.into())]), false);
            }
            RequestType::RemoteFetch => {
                if from_me {
                    return;
                }
                let sockets: Vec<Value> = self
                    .local
                    .fetch_local(&opts)
                    .into_iter()
                    .map(|s| {
                        obj(vec![
                            ("id", Value::from(s.id.to_string())),
                            ("handshake", s.handshake.to_value()),
                            ("rooms", Value::Array(s.rooms.iter().map(|r| Value::from(r.to_string())).collect())),
                            ("data", s.data),
                        ])
                    })
                    .collect();
                let response = obj(vec![("requestId", request_id.into()), ("sockets", Value::Array(sockets))]);
                self.publish_response(&request, &response, false);
            }
            RequestType::ServerSideEmit => {
                if from_me {
                    return;
                }
                let Some(Value::Array(mut data)) = request.get("data").cloned() else { return };
                if data.is_empty() {
                    return;
                }
                let event = match data.remove(0) {
                    Value::String(s) => s,
                    _ => return,
                };
                let Some(ns) = self.local.namespace() else { return };
                let ack = request_id.map(|id| {
                    let me = self.me.clone();
                    ServerAck::new(move |args: Vec<Value>| {
                        if let Some(me) = me.upgrade() {
                            let response = obj(vec![
                                ("type", Value::from(RequestType::ServerSideEmit as u8)),
                                ("requestId", Value::from(id)),
                                ("data", args.into_iter().next().unwrap_or(Value::Null)),
                            ]);
                            me.publish_json(&me.channels.response, &response);
                        }
                    })
                });
                ns.dispatch_server_event(&event, data, ack);
            }
            RequestType::Broadcast => {
                let Some(id) = request_id else { return };
                if self.ack_requests.lock().unwrap().contains_key(&id) {
                    return; // our own
                }
                let Some(packet) = request.get("packet").and_then(wire::packet_from_value) else { return };
                let (count, mut acks) = self.local.start_broadcast_with_ack(packet, &opts);
                let count_msg = obj(vec![
                    ("type", Value::from(RequestType::BroadcastClientCount as u8)),
                    ("requestId", Value::from(id.as_str())),
                    ("clientCount", Value::from(count)),
                ]);
                self.publish_response(&request, &count_msg, false);
                let me = self.me.clone();
                let timeout = opts.flags.timeout.unwrap_or(self.options.requests_timeout);
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + timeout;
                    for _ in 0..count {
                        match acks.next(Some(deadline)).await {
                            AckNext::Ack(first) => {
                                let Some(me) = me.upgrade() else { return };
                                let msg = obj(vec![
                                    ("type", Value::from(RequestType::BroadcastAck as u8)),
                                    ("requestId", Value::from(id.as_str())),
                                    ("packet", first),
                                ]);
                                me.publish_response(&request, &msg, true);
                            }
                            AckNext::Closed | AckNext::Timeout => return,
                        }
                    }
                });
            }
            RequestType::BroadcastClientCount | RequestType::BroadcastAck => {}
        }
    }

    fn on_response(&self, payload: &[u8]) {
        let Ok(response) = wire::decode_message(payload) else {
            tracing::debug!("ignoring a malformed response");
            return;
        };
        let Some(id) = response.get("requestId").and_then(Value::as_str) else { return };
        if let Some(tx) = self.ack_requests.lock().unwrap().get(id) {
            match response.get("type").and_then(RequestType::from_value) {
                Some(RequestType::BroadcastClientCount) => {
                    let n = response.get("clientCount").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let _ = tx.send(AckEvent::ClientCount(n));
                }
                Some(RequestType::BroadcastAck) => {
                    let _ = tx.send(AckEvent::Ack(response.get("packet").cloned().unwrap_or(Value::Null)));
                }
                _ => {}
            }
            return;
        }
        let mut pending = self.pending.lock().unwrap();
        let Some(entry) = pending.get_mut(id) else { return };
        let finished = match entry {
            Pending::Fetch { sockets, due, done } => {
                *due = due.saturating_sub(1);
                if let Some(Value::Array(list)) = response.get("sockets") {
                    sockets.extend(list.iter().filter_map(socket_info_from));
                }
                if *due == 0 {
                    if let Some(done) = done.take() {
                        let _ = done.send(std::mem::take(sockets));
                    }
                    true
                } else {
                    false
                }
            }
            Pending::ServerSide { responses, due, done } => {
                responses.push(response.get("data").cloned().unwrap_or(Value::Null));
                if responses.len() >= *due {
                    if let Some(done) = done.take() {
                        let _ = done.send(std::mem::take(responses));
                    }
                    true
                } else {
                    false
                }
            }
        };
        if finished {
            pending.remove(id);
        }
    }

    fn register(&self, id: &str, entry: Pending) -> Result<(), AdapterError> {
        let mut pending = self.pending.lock().unwrap();
        if pending.len() >= MAX_PENDING {
            return Err(AdapterError::Unavailable(format!("{MAX_PENDING} cluster requests already waiting")));
        }
        pending.insert(id.to_owned(), entry);
        Ok(())
    }

    async fn other_nodes(&self) -> Result<usize, AdapterError> {
        let n = self.link.numsub(&self.channels.request).await.map_err(AdapterError::Unavailable)?;
        Ok(n.saturating_sub(1))
    }
}

/// A socket from another node's REMOTE_FETCH answer.
fn socket_info_from(v: &Value) -> Option<SocketInfo> {
    let id = v.get("id")?.as_str()?;
    let h = v.get("handshake").cloned().unwrap_or(Value::Null);
    let strings = |x: Option<&Value>| -> indexmap::IndexMap<String, String> {
        x.and_then(Value::as_object)
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect())
            .unwrap_or_default()
    };
    let handshake = Handshake {
        headers: strings(h.get("headers")),
        time: h.get("time").and_then(Value::as_str).unwrap_or_default().to_owned(),
        address: h.get("address").and_then(Value::as_str).unwrap_or_default().to_owned(),
        xdomain: h.get("xdomain").and_then(Value::as_bool).unwrap_or(false),
        secure: h.get("secure").and_then(Value::as_bool).unwrap_or(false),
        issued: h.get("issued").and_then(Value::as_f64).unwrap_or(0.0) as u64,
        url: h.get("url").and_then(Value::as_str).unwrap_or_default().to_owned(),
        query: strings(h.get("query")),
        auth: h.get("auth").cloned().unwrap_or(Value::Null),
    };
    Some(SocketInfo {
        id: id.into(),
        handshake,
        rooms: wire::rooms_list(v.get("rooms")),
        data: v.get("data").cloned().unwrap_or(Value::Null),
    })
}

impl Subscriber for RedisAdapter {
    /// Catches up, from the Redis Stream log, on the stored packets other nodes
    /// broadcast while this node's subscription was down (recovery on).
    fn on_resubscribed(&self, lost_at: std::time::SystemTime) {
        let Some(log) = self.local.log() else { return };
        let max = log.options().max_packets;
        let since = lost_at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis().saturating_sub(2000);
        let weak = self.me.clone();
        *self.catching_up.lock().unwrap() = Some(Vec::new());
        tokio::spawn(async move {
            let Some(me) = weak.upgrade() else { return };
            let entries = match me.link.xrange(&me.log_stream, &since.to_string(), max).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, nsp = %me.nsp, "could not catch up on missed broadcasts");
                    me.end_catch_up();
                    return;
                }
            };
            let mut caught_up = 0;
            for (_id, fields) in entries {
                let Some(offset) = fields.get("o").and_then(|o| String::from_utf8(o.clone()).ok()) else { continue };
                let Some(log) = me.local.log() else { return };
                if log.contains(&offset) {
                    continue;
                }
                let Some(Value::Array(parts)) = fields.get("m").and_then(|m| wire::decode_msgpack(m).ok()) else { continue };
                let (Some(packet), opts) = (parts.first().and_then(wire::packet_from_value), wire::opts_from_value(parts.get(1))) else { continue };
                log.record_with_offset(&packet, &opts, offset);
                me.local.deliver_local(&packet, &opts);
                caught_up += 1;
            }
            if caught_up > 0 {
                tracing::info!(nsp = %me.nsp, caught_up, "delivered broadcasts missed during the Redis outage");
            }
            me.end_catch_up();
        });
    }

    fn on_message(&self, channel: &str, payload: &[u8]) {
        if channel.starts_with(&self.channels.broadcast) {
            if let Some(waiting) = self.catching_up.lock().unwrap().as_mut() {
                waiting.push((channel.to_owned(), payload.to_vec()));
                return;
            }
        }
        if channel.starts_with(&self.channels.response) {
            self.on_response(payload);
        } else if channel == self.channels.request {
            self.on_request(payload);
        } else if channel.starts_with(&self.channels.broadcast) {
            self.on_broadcast(channel, payload);
        }
    }
}

#[async_trait]
impl Adapter for RedisAdapter {
    fn add_all(&self, id: &SocketId, rooms: &[Room]) {
        self.local.add_all(id, rooms)
    }
    fn del(&self, id: &SocketId, room: &Room) {
        self.local.del(id, room)
    }
    fn del_all(&self, id: &SocketId) {
        self.local.del_all(id)
    }
    fn socket_rooms(&self, id: &SocketId) -> Vec<Room> {
        self.local.socket_rooms(id)
    }
    fn rooms(&self) -> Vec<Room> {
        self.local.rooms()
    }

    fn broadcast(&self, mut packet: Packet, opts: BroadcastOptions) {
        let offset = self.local.record(&mut packet, &opts);
        if let Some(offset) = &offset {
            // The cluster's copy of the log, for nodes that did not see this packet.
            let entry = Value::Array(vec![wire::packet_to_value(&packet), wire::opts_to_value(&opts, false)]);
            let max = self.local.log().map(|l| l.options().max_packets).unwrap_or(10_000);
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&self.log_stream).arg("MAXLEN").arg("~").arg(max).arg("*").arg("o").arg(offset.as_str()).arg("m").arg(wire::encode_msgpack(&entry));
            self.link.send(cmd);
        }
        if !opts.flags.local {
            let mut raw_opts = wire::opts_to_value(&opts, true);
            if let (Some(offset), Value::Object(o)) = (&offset, &mut raw_opts) {
                o.insert("offset".to_owned(), Value::from(offset.as_str()));
            }
            let message = Value::Array(vec![Value::from(self.uid.as_str()), wire::packet_to_value(&packet), raw_opts]);
            let mut channel = self.channels.broadcast.clone();
            if opts.rooms.len() == 1 {
                channel.push_str(&opts.rooms[0]);
                channel.push('#');
            }
            self.link.publish(channel, wire::encode_msgpack(&message));
        }
        self.local.deliver_local(&packet, &opts);
    }

    async fn broadcast_with_ack(&self, packet: Packet, opts: BroadcastOptions) -> Result<AckResponses, AdapterError> {
        if opts.flags.local {
            return Ok(self.local.broadcast_with_ack_local(packet, &opts).await);
        }
        let timeout = opts.flags.timeout.unwrap_or(self.options.requests_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let request_id = wire::uid();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.ack_requests.lock().unwrap().insert(request_id.clone(), tx);
        let request = obj(vec![
            ("uid", Value::from(self.uid.as_str())),
            ("requestId", Value::from(request_id.as_str())),
            ("type", Value::from(RequestType::Broadcast as u8)),
            ("packet", wire::packet_to_value(&packet)),
            ("opts", wire::opts_to_value(&BroadcastOptions { flags: super::BroadcastFlags { timeout: Some(timeout), ..opts.flags.clone() }, ..opts.clone() }, true)),
        ]);
        self.link.publish(self.channels.request.clone(), wire::encode_msgpack(&request));
        let (local_count, mut local_acks) = self.local.start_broadcast_with_ack(packet, &opts);
        let servers = self.link.numsub(&self.channels.request).await.unwrap_or(1).max(1);
        let mut expected = local_count;
        let mut servers_counted = 1;
        let mut responses = Vec::new();
        let mut local_done = local_count == 0;
        let mut timed_out = false;
        while !(servers_counted >= servers && responses.len() >= expected) {
            tokio::select! {
                next = local_acks.next(Some(deadline)), if !local_done => match next {
                    AckNext::Ack(v) => responses.push(v),
                    AckNext::Closed => local_done = true,
                    AckNext::Timeout => { timed_out = true; break; }
                },
                event = rx.recv() => match event {
                    Some(AckEvent::ClientCount(n)) => { expected += n; servers_counted += 1; }
                    Some(AckEvent::Ack(v)) => responses.push(v),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => { timed_out = true; break; }
            }
        }
        self.ack_requests.lock().unwrap().remove(&request_id);
        Ok(AckResponses { expected, timed_out: timed_out || responses.len() < expected, responses })
    }

    async fn fetch_sockets(&self, opts: BroadcastOptions) -> Result<Vec<SocketInfo>, AdapterError> {
        let local = self.local.fetch_local(&opts);
        if opts.flags.local {
            return Ok(local);
        }
        let others = self.other_nodes().await?;
        if others == 0 {
            return Ok(local);
        }
        let request_id = wire::uid();
        let (done, wait) = oneshot::channel();
        self.register(&request_id, Pending::Fetch { sockets: local, due: others, done: Some(done) })?;
        let request = self.request(RequestType::RemoteFetch, vec![("requestId", Value::from(request_id.as_str())), ("opts", Self::opts_json(&opts))]);
        self.publish_json(&self.channels.request, &request);
        match tokio::time::timeout(self.options.requests_timeout, wait).await {
            Ok(Ok(sockets)) => Ok(sockets),
            _ => {
                let missing = match self.pending.lock().unwrap().remove(&request_id) {
                    Some(Pending::Fetch { due, .. }) => due,
                    _ => others,
                };
                Err(AdapterError::Timeout { waited: self.options.requests_timeout, missing })
            }
        }
    }

    async fn add_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) -> Result<(), AdapterError> {
        self.local.add_sockets_local(&opts, &rooms);
        self.publish_room_op(RequestType::RemoteJoin, &opts, &rooms);
        Ok(())
    }

    async fn del_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) -> Result<(), AdapterError> {
        self.local.del_sockets_local(&opts, &rooms);
        self.publish_room_op(RequestType::RemoteLeave, &opts, &rooms);
        Ok(())
    }

    async fn disconnect_sockets(&self, opts: BroadcastOptions, close: bool) -> Result<(), AdapterError> {
        if !opts.flags.local {
            let request = self.request(RequestType::RemoteDisconnect, vec![("opts", Self::opts_json(&opts)), ("close", Value::Bool(close))]);
            self.publish_json(&self.channels.request, &request);
        }
        self.local.disconnect_local(&opts, close);
        Ok(())
    }

    async fn server_side_emit(&self, event: &str, args: Vec<Value>, timeout: Option<Duration>) -> Result<Vec<Value>, AdapterError> {
        let mut data = vec![Value::from(event)];
        data.extend(args);
        let Some(timeout) = timeout else {
            let request = self.request(RequestType::ServerSideEmit, vec![("data", Value::Array(data))]);
            self.publish_json(&self.channels.request, &request);
            return Ok(vec![]);
        };
        let others = self.other_nodes().await?;
        if others == 0 {
            return Ok(vec![]);
        }
        let request_id = wire::uid();
        let (done, wait) = oneshot::channel();
        self.register(&request_id, Pending::ServerSide { responses: vec![], due: others, done: Some(done) })?;
        let request = self.request(RequestType::ServerSideEmit, vec![("requestId", Value::from(request_id.as_str())), ("data", Value::Array(data))]);
        self.publish_json(&self.channels.request, &request);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(responses)) => Ok(responses),
            _ => {
                let missing = match self.pending.lock().unwrap().remove(&request_id) {
                    Some(Pending::ServerSide { responses, due, .. }) => due.saturating_sub(responses.len()),
                    _ => others,
                };
                Err(AdapterError::Timeout { waited: timeout, missing })
            }
        }
    }

    fn session_changed(&self, session: PersistedSession) {
        if let Some(log) = self.local.log() {
            let ttl = log.options().max_disconnection_duration + (log.options().max_disconnection_duration / 3).max(Duration::from_secs(1));
            self.write_session(&session, ttl);
        }
    }

    fn persist_session(&self, session: PersistedSession) {
        if let Some(log) = self.local.log() {
            self.write_session(&session, log.options().max_disconnection_duration);
            log.persist(session);
        }
    }

    fn forget_session(&self, pid: &str) {
        if self.local.log().is_some() {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.session_key(pid));
            self.link.send(cmd);
        }
    }

    async fn restore_session(&self, pid: &str, offset: &str) -> Option<RestoredSession> {
        let log = self.local.log()?;
        let session = match log.session(pid) {
            Some(s) => s,
            None => self.read_session(pid).await?,
        };
        let missed = match log.missed(offset, &session) {
            Some(m) => m,
            None => self.missed_from_stream(offset, &session, log.options().max_packets).await?,
        };
        Some(RestoredSession { session, missed })
    }

    async fn close(&self) {
        // What was queued (last session records, last broadcasts) reaches Redis first.
        if !self.link.flush(Duration::from_secs(2)).await {
            tracing::warn!(nsp = %self.nsp, "could not flush the Redis queue before closing");
        }
    }

    async fn server_count(&self) -> usize {
        match self.link.numsub(&self.channels.request).await {
            Ok(n) => n.max(1),
            Err(e) => {
                tracing::warn!(error = %e, "server count unavailable, counting this node only");
                1
            }
        }
    }
}
