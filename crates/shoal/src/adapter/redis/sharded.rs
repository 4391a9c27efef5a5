//! The sharded Redis adapter: Redis 7 sharded Pub/Sub (`SPUBLISH`/`SSUBSCRIBE`) on a
//! Redis Cluster, wire-compatible with `createShardedAdapter` of the official
//! `@socket.io/redis-adapter` 8.3 (whose messages are those of `ClusterAdapter` in
//! `socket.io-adapter` 2.5), so shoal and Node.js nodes can share one cluster.
//!
//! Channels of namespace `/nsp` under prefix `socket.io`:
//! - `socket.io#/nsp#`: every message to all nodes (broadcasts, room operations,
//!   requests); each node subscribes to it, so `SHARDNUMSUB` of it counts the nodes;
//! - `socket.io#/nsp#<uid>#`: the answers to this node's requests;
//! - `socket.io#/nsp#<room>#` (modes `dynamic`, `dynamic-private`): broadcasts without
//!   acks to exactly one room, heard only by the nodes that have a socket in the room.
//!
//! A message is `{type, data, uid, nsp}`, JSON, or MessagePack when it carries binary.
//! Channels hash to slots, and each slot lives on one primary: the load spreads over
//! the cluster's primaries instead of every broadcast reaching every Redis node.
//!
//! Recovery of a session on another node (the Redis log of the classic adapter) is not
//! kept by this adapter: connection state recovery works on the node that held the
//! session, as with the official sharded adapter.

use super::local_rooms;
use super::requests::{collect_acks, AckEvent, Pending};
use super::wire;
use super::{RedisLink, Subscriber};
use crate::adapter::{
    AckNext, AckResponses, Adapter, AdapterError, AdapterFactory, BroadcastFlags, BroadcastOptions, LocalNamespace, MemoryAdapter, PersistedSession, RestoredSession,
    Room, RoomChange, ServerAck, SocketId, SocketInfo,
};
use crate::protocol::socket_packet::Packet;
use crate::protocol::Value;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Which channels a node subscribes to, as the official `subscriptionMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SubscriptionMode {
    /// Two channels per namespace: every broadcast reaches every node.
    Static,
    /// Plus one channel per public room with local sockets (the default): a broadcast
    /// to one room reaches only the nodes that have sockets in it.
    #[default]
    Dynamic,
    /// Like `Dynamic`, and for private rooms (one socket's id) too.
    DynamicPrivate,
}

impl std::str::FromStr for SubscriptionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "static" => Ok(SubscriptionMode::Static),
            "dynamic" => Ok(SubscriptionMode::Dynamic),
            "dynamic-private" => Ok(SubscriptionMode::DynamicPrivate),
            other => Err(format!("unknown sharded subscription mode {other:?} (static, dynamic, dynamic-private)")),
        }
    }
}

/// Settings of the sharded adapter, with the official defaults.
#[derive(Clone, Debug)]
pub struct ShardedOptions {
    /// Prefix of every channel (`channelPrefix`, default `socket.io`).
    pub channel_prefix: String,
    /// Default `dynamic`.
    pub subscription_mode: SubscriptionMode,
    /// How long a request waits for other nodes (default 5 s).
    pub requests_timeout: Duration,
}

impl Default for ShardedOptions {
    fn default() -> Self {
        ShardedOptions { channel_prefix: "socket.io".into(), subscription_mode: SubscriptionMode::Dynamic, requests_timeout: Duration::from_secs(5) }
    }
}

/// The adapter factory for `ServerBuilder::adapter`. The link must be a Redis Cluster
/// link (`redis+cluster://...`).
pub fn sharded_factory(link: Arc<RedisLink>, options: ShardedOptions) -> AdapterFactory {
    Arc::new(move |ns: &Arc<dyn LocalNamespace>| ShardedAdapter::new(ns, link.clone(), options.clone()) as Arc<dyn Adapter>)
}

/// Message types of `ClusterAdapter` (socket.io-adapter 2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Broadcast = 3,
    SocketsJoin = 4,
    SocketsLeave = 5,
    DisconnectSockets = 6,
    FetchSockets = 7,
    FetchSocketsResponse = 8,
    ServerSideEmit = 9,
    ServerSideEmitResponse = 10,
    BroadcastClientCount = 11,
    BroadcastAck = 12,
}

impl Kind {
    fn from_value(v: &Value) -> Option<Kind> {
        Some(match v.as_u64()? {
            3 => Kind::Broadcast,
            4 => Kind::SocketsJoin,
            5 => Kind::SocketsLeave,
            6 => Kind::DisconnectSockets,
            7 => Kind::FetchSockets,
            8 => Kind::FetchSocketsResponse,
            9 => Kind::ServerSideEmit,
            10 => Kind::ServerSideEmitResponse,
            11 => Kind::BroadcastClientCount,
            12 => Kind::BroadcastAck,
            _ => return None,
        })
    }
}

/// A room channel is used for a room that is not a socket id (20 characters, as the
/// official adapter tells them apart) in `dynamic` mode, and for every room in
/// `dynamic-private` mode.
fn uses_room_channel(mode: SubscriptionMode, room: &str) -> bool {
    match mode {
        SubscriptionMode::Static => false,
        SubscriptionMode::Dynamic => room.chars().count() != 20,
        SubscriptionMode::DynamicPrivate => true,
    }
}

/// Whether a node with a local room subscribes to its channel: public rooms in
/// `dynamic` mode (and private ones whose name does not look like a socket id, since a
/// publisher would use their channel), every room in `dynamic-private` mode.
fn subscribes_to_room(mode: SubscriptionMode, room: &str, private: bool) -> bool {
    match mode {
        SubscriptionMode::Static => false,
        SubscriptionMode::Dynamic => !private || room.chars().count() != 20,
        SubscriptionMode::DynamicPrivate => true,
    }
}

fn has_binary(v: &Value) -> bool {
    match v {
        Value::Binary(_) => true,
        Value::Array(a) => a.iter().any(has_binary),
        Value::Object(o) => o.values().any(has_binary),
        _ => false,
    }
}

/// JSON, or MessagePack when the message carries binary (as the official adapter).
fn encode(message: &Value) -> Vec<u8> {
    if has_binary(message) {
        wire::encode_msgpack(message)
    } else {
        wire::to_json_text(message).into_bytes()
    }
}

/// The adapter of one namespace on a Redis Cluster, wire-compatible with the official
/// `createShardedAdapter` (SPUBLISH/SSUBSCRIBE; subscription modes in [`ShardedOptions`]).
pub struct ShardedAdapter {
    local: MemoryAdapter,
    nsp: String,
    uid: String,
    /// `{prefix}#{nsp}#`
    channel: String,
    /// `{prefix}#{nsp}#{uid}#`
    response_channel: String,
    link: Arc<RedisLink>,
    options: ShardedOptions,
    pending: Mutex<HashMap<String, Pending>>,
    ack_requests: Mutex<HashMap<String, mpsc::UnboundedSender<AckEvent>>>,
    /// Room channels subscribed to; the lock also keeps subscribe/unsubscribe in order.
    room_channels: Mutex<HashSet<Room>>,
    weak_self: Weak<ShardedAdapter>,
}

/// Most requests of this node waiting for answers at once.
const MAX_PENDING: usize = 10_000;

impl ShardedAdapter {
    /// The adapter of namespace `ns` over `link` (a Redis Cluster connection).
    pub fn new(ns: &Arc<dyn LocalNamespace>, link: Arc<RedisLink>, options: ShardedOptions) -> Arc<ShardedAdapter> {
        if !link.is_cluster() {
            tracing::error!("the sharded adapter needs a Redis Cluster link (redis+cluster://...); cross-node traffic will not flow");
        }
        let uid = crate::adapter::random_id(16);
        let channel = format!("{}#{}#", options.channel_prefix, ns.name());
        let response_channel = format!("{channel}{uid}#");
        let adapter = Arc::new_cyclic(|weak_self| ShardedAdapter {
            local: MemoryAdapter::new(ns),
            nsp: ns.name().to_owned(),
            uid,
            channel: channel.clone(),
            response_channel: response_channel.clone(),
            link: link.clone(),
            options,
            pending: Mutex::new(HashMap::new()),
            ack_requests: Mutex::new(HashMap::new()),
            room_channels: Mutex::new(HashSet::new()),
            weak_self: weak_self.clone(),
        });
        let subscriber: Weak<dyn Subscriber> = Arc::downgrade(&adapter) as Weak<dyn Subscriber>;
        link.ssubscribe(subscriber, vec![channel, response_channel]);
        if adapter.options.subscription_mode != SubscriptionMode::Static {
            let weak = Arc::downgrade(&adapter);
            adapter.local.local_rooms().observe(Box::new(move |changes: &[RoomChange]| {
                if let Some(adapter) = weak.upgrade() {
                    adapter.rooms_changed(changes);
                }
            }));
        }
        tracing::debug!(nsp = %adapter.nsp, uid = %adapter.uid, "sharded Redis adapter ready");
        adapter
    }

    /// This node's id in the adapter protocol.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    fn room_channel(&self, room: &str) -> String {
        format!("{}{room}#", self.channel)
    }

    /// Subscribes to the channel of each room that now has local sockets and leaves
    /// those of rooms that have none. Each room's state is read again under the lock,
    /// so changes reported out of order by racing threads still end right.
    fn rooms_changed(&self, changes: &[RoomChange]) {
        let mode = self.options.subscription_mode;
        let mut subscribed = self.room_channels.lock().unwrap();
        for change in changes {
            if !subscribes_to_room(mode, &change.room, change.private) {
                continue;
            }
            let present = self.local.local_rooms().has_room(&change.room);
            if present && subscribed.insert(change.room.clone()) {
                let me: Weak<dyn Subscriber> = self.weak_self.clone() as Weak<dyn Subscriber>;
                self.link.ssubscribe(me, vec![self.room_channel(&change.room)]);
            } else if !present && subscribed.remove(&change.room) {
                self.link.sunsubscribe(vec![self.room_channel(&change.room)]);
            }
        }
    }

    /// `{type, data, uid, nsp}`
    fn message(&self, kind: Kind, data: Vec<(&str, Value)>) -> Value {
        wire::object(vec![
            ("type", Value::from(kind as u8)),
            ("data", wire::object(data)),
            ("uid", Value::from(self.uid.as_str())),
            ("nsp", Value::from(self.nsp.as_str())),
        ])
    }

    fn publish(&self, channel: String, message: &Value) {
        self.link.spublish(channel, encode(message));
    }

    fn publish_response(&self, requester: &str, response: &Value) {
        self.publish(format!("{}{requester}#", self.channel), response);
    }

    /// How many nodes listen on this namespace (this one included).
    async fn nodes(&self) -> Result<usize, AdapterError> {
        self.link.shard_numsub(&self.channel).await.map_err(AdapterError::Unavailable)
    }

    fn register(&self, id: &str, entry: Pending) -> Result<(), AdapterError> {
        let mut pending = self.pending.lock().unwrap();
        if pending.len() >= MAX_PENDING {
            return Err(AdapterError::Unavailable(format!("{MAX_PENDING} cluster requests already waiting")));
        }
        pending.insert(id.to_owned(), entry);
        Ok(())
    }

    // ---- what other nodes send -------------------------------------------------------

    fn on_cluster_message(&self, message: Value) {
        if message.get("uid").and_then(Value::as_str) == Some(self.uid.as_str()) {
            return;
        }
        if message.get("nsp").and_then(Value::as_str) != Some(self.nsp.as_str()) {
            return;
        }
        let Some(kind) = message.get("type").and_then(Kind::from_value) else { return };
        let null = Value::Null;
        let data = message.get("data").unwrap_or(&null);
        let requester = message.get("uid").and_then(Value::as_str).unwrap_or_default().to_owned();
        let request_id = data.get("requestId").and_then(Value::as_str).map(str::to_owned);
        let opts = wire::opts_from_value(data.get("opts"));
        match kind {
            Kind::Broadcast => {
                let Some(mut packet) = data.get("packet").and_then(wire::packet_from_value) else { return };
                if packet.nsp != self.nsp {
                    return;
                }
                match request_id {
                    Some(id) => self.answer_broadcast_with_ack(packet, opts, id, requester),
                    None => {
                        let mut opts = opts;
                        opts.flags.timeout = None;
                        packet.id = None;
                        self.local.record(&mut packet, &opts);
                        self.local.deliver_local(&packet, &opts);
                    }
                }
            }
            Kind::SocketsJoin => self.local.add_sockets_local(&opts, &wire::rooms_list(data.get("rooms"))),
            Kind::SocketsLeave => self.local.del_sockets_local(&opts, &wire::rooms_list(data.get("rooms"))),
            Kind::DisconnectSockets => self.local.disconnect_local(&opts, data.get("close").and_then(Value::as_bool).unwrap_or(false)),
            Kind::FetchSockets => {
                let Some(id) = request_id else { return };
                let sockets: Vec<Value> = self.local.fetch_local(&opts).into_iter().map(wire::socket_info_to_value).collect();
                let response = self.message(Kind::FetchSocketsResponse, vec![("requestId", Value::from(id)), ("sockets", Value::Array(sockets))]);
                self.publish_response(&requester, &response);
            }
            Kind::ServerSideEmit => {
                let Some(Value::Array(mut packet)) = data.get("packet").cloned() else { return };
                if packet.is_empty() {
                    return;
                }
                let Value::String(event) = packet.remove(0) else { return };
                let Some(ns) = self.local.namespace() else { return };
                let ack = request_id.map(|id| {
                    let adapter = self.weak_self.clone();
                    ServerAck::new(move |args: Vec<Value>| {
                        if let Some(adapter) = adapter.upgrade() {
                            let response = adapter.message(
                                Kind::ServerSideEmitResponse,
                                vec![("requestId", Value::from(id)), ("packet", args.into_iter().next().unwrap_or(Value::Null))],
                            );
                            adapter.publish_response(&requester, &response);
                        }
                    })
                });
                ns.dispatch_server_event(&event, packet, ack);
            }
            Kind::FetchSocketsResponse | Kind::ServerSideEmitResponse | Kind::BroadcastClientCount | Kind::BroadcastAck => self.on_response(message),
        }
    }

    /// A peer's broadcast with acks: tell it how many sockets got it, then relay each
    /// ack, for as long as the peer asked (bounded, as the classic adapter).
    fn answer_broadcast_with_ack(&self, mut packet: Packet, opts: BroadcastOptions, id: String, requester: String) {
        packet.id = None;
        let (sent, mut acks) = self.local.start_broadcast_with_ack(packet, &opts);
        let count = self.message(Kind::BroadcastClientCount, vec![("requestId", Value::from(id.as_str())), ("clientCount", Value::from(sent))]);
        self.publish_response(&requester, &count);
        let adapter = self.weak_self.clone();
        let timeout = opts.flags.timeout.unwrap_or(self.options.requests_timeout).min(self.options.requests_timeout.max(Duration::from_secs(60)));
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            for _ in 0..sent {
                match acks.next(Some(deadline)).await {
                    AckNext::Ack(first) => {
                        let Some(adapter) = adapter.upgrade() else { return };
                        let ack = adapter.message(Kind::BroadcastAck, vec![("requestId", Value::from(id.as_str())), ("packet", first)]);
                        adapter.publish_response(&requester, &ack);
                    }
                    AckNext::Closed | AckNext::Timeout => return,
                }
            }
        });
    }

    fn on_response(&self, response: Value) {
        let Some(kind) = response.get("type").and_then(Kind::from_value) else { return };
        let null = Value::Null;
        let data = response.get("data").unwrap_or(&null);
        let Some(id) = data.get("requestId").and_then(Value::as_str) else { return };
        match kind {
            Kind::BroadcastClientCount | Kind::BroadcastAck => {
                if let Some(tx) = self.ack_requests.lock().unwrap().get(id) {
                    let event = if kind == Kind::BroadcastClientCount {
                        AckEvent::ClientCount(data.get("clientCount").and_then(Value::as_u64).unwrap_or(0) as usize)
                    } else {
                        AckEvent::Ack(data.get("packet").cloned().unwrap_or(Value::Null))
                    };
                    let _ = tx.send(event);
                }
            }
            Kind::FetchSocketsResponse | Kind::ServerSideEmitResponse => {
                let mut pending = self.pending.lock().unwrap();
                let Some(entry) = pending.get_mut(id) else { return };
                let finished = entry.answered(data, "packet");
                if finished {
                    pending.remove(id);
                }
            }
            _ => {}
        }
    }
}

impl Subscriber for ShardedAdapter {
    fn on_message(&self, channel: &str, payload: &[u8]) {
        let Ok(message) = wire::decode_message(payload) else {
            tracing::debug!(%channel, "ignoring a malformed cluster message");
            return;
        };
        if channel == self.response_channel {
            self.on_response(message);
        } else {
            self.on_cluster_message(message);
        }
    }
}

#[async_trait]
impl Adapter for ShardedAdapter {
    local_rooms!();

    fn broadcast(&self, mut packet: Packet, opts: BroadcastOptions) {
        self.local.record(&mut packet, &opts);
        if !opts.flags.local {
            let message = self.message(Kind::Broadcast, vec![("packet", wire::packet_to_value(&packet)), ("opts", wire::opts_to_value(&opts, true))]);
            let channel = match opts.rooms.as_slice() {
                [room] if uses_room_channel(self.options.subscription_mode, room) => self.room_channel(room),
                _ => self.channel.clone(),
            };
            self.publish(channel, &message);
        }
        self.local.deliver_local(&packet, &opts);
    }

    async fn broadcast_with_ack(&self, packet: Packet, opts: BroadcastOptions) -> Result<AckResponses, AdapterError> {
        if opts.flags.local {
            return Ok(self.local.broadcast_with_ack_local(packet, &opts).await);
        }
        let timeout = opts.flags.timeout.unwrap_or(self.options.requests_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let request_id = crate::adapter::random_id(16);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.ack_requests.lock().unwrap().insert(request_id.clone(), tx);
        let flags = BroadcastFlags { timeout: Some(timeout), ..opts.flags.clone() };
        let message = self.message(
            Kind::Broadcast,
            vec![
                ("packet", wire::packet_to_value(&packet)),
                ("requestId", Value::from(request_id.as_str())),
                ("opts", wire::opts_to_value(&BroadcastOptions { flags, ..opts.clone() }, true)),
            ],
        );
        // Counted before the request goes out, so the count cannot race the answers.
        let servers = match self.nodes().await {
            Ok(n) => n.max(1),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the nodes for a broadcast with acks; waiting for its timeout");
                usize::MAX
            }
        };
        self.publish(self.channel.clone(), &message);
        let (local_count, local_acks) = self.local.start_broadcast_with_ack(packet, &opts);
        let responses = collect_acks(local_count, local_acks, servers, deadline, &mut rx).await;
        self.ack_requests.lock().unwrap().remove(&request_id);
        Ok(responses)
    }

    async fn fetch_sockets(&self, opts: BroadcastOptions) -> Result<Vec<SocketInfo>, AdapterError> {
        let local = self.local.fetch_local(&opts);
        if opts.flags.local {
            return Ok(local);
        }
        let others = self.nodes().await?.saturating_sub(1);
        if others == 0 {
            return Ok(local);
        }
        let timeout = opts.flags.timeout.unwrap_or(self.options.requests_timeout);
        let request_id = crate::adapter::random_id(16);
        let (done, wait) = oneshot::channel();
        self.register(&request_id, Pending::Fetch { sockets: local, answers_missing: others, done: Some(done) })?;
        let message = self.message(Kind::FetchSockets, vec![("opts", wire::opts_to_value(&opts, true)), ("requestId", Value::from(request_id.as_str()))]);
        self.publish(self.channel.clone(), &message);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(sockets)) => Ok(sockets),
            _ => {
                let missing = match self.pending.lock().unwrap().remove(&request_id) {
                    Some(Pending::Fetch { answers_missing, .. }) => answers_missing,
                    _ => others,
                };
                Err(AdapterError::Timeout { waited: timeout, missing })
            }
        }
    }

    async fn add_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) -> Result<(), AdapterError> {
        if !opts.flags.local {
            let message = self.message(Kind::SocketsJoin, vec![("opts", wire::opts_to_value(&opts, true)), ("rooms", wire::rooms_value(&rooms))]);
            self.publish(self.channel.clone(), &message);
        }
        self.local.add_sockets_local(&opts, &rooms);
        Ok(())
    }

    async fn del_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) -> Result<(), AdapterError> {
        if !opts.flags.local {
            let message = self.message(Kind::SocketsLeave, vec![("opts", wire::opts_to_value(&opts, true)), ("rooms", wire::rooms_value(&rooms))]);
            self.publish(self.channel.clone(), &message);
        }
        self.local.del_sockets_local(&opts, &rooms);
        Ok(())
    }

    async fn disconnect_sockets(&self, opts: BroadcastOptions, close: bool) -> Result<(), AdapterError> {
        if !opts.flags.local {
            let message = self.message(Kind::DisconnectSockets, vec![("opts", wire::opts_to_value(&opts, true)), ("close", Value::Bool(close))]);
            self.publish(self.channel.clone(), &message);
        }
        self.local.disconnect_local(&opts, close);
        Ok(())
    }

    async fn server_side_emit(&self, event: &str, args: Vec<Value>, timeout: Option<Duration>) -> Result<Vec<Value>, AdapterError> {
        let mut packet = vec![Value::from(event)];
        packet.extend(args);
        let Some(timeout) = timeout else {
            let message = self.message(Kind::ServerSideEmit, vec![("packet", Value::Array(packet))]);
            self.publish(self.channel.clone(), &message);
            return Ok(vec![]);
        };
        let others = self.nodes().await?.saturating_sub(1);
        if others == 0 {
            return Ok(vec![]);
        }
        let request_id = crate::adapter::random_id(16);
        let (done, wait) = oneshot::channel();
        self.register(&request_id, Pending::ServerSide { responses: vec![], answers_expected: others, done: Some(done) })?;
        let message = self.message(Kind::ServerSideEmit, vec![("requestId", Value::from(request_id.as_str())), ("packet", Value::Array(packet))]);
        self.publish(self.channel.clone(), &message);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(responses)) => Ok(responses),
            _ => {
                let missing = match self.pending.lock().unwrap().remove(&request_id) {
                    Some(Pending::ServerSide { responses, answers_expected, .. }) => answers_expected.saturating_sub(responses.len()),
                    _ => others,
                };
                Err(AdapterError::Timeout { waited: timeout, missing })
            }
        }
    }

    async fn server_count(&self) -> usize {
        match self.nodes().await {
            Ok(n) => n.max(1),
            Err(e) => {
                tracing::warn!(error = %e, "server count unavailable, counting this node only");
                1
            }
        }
    }

    fn persist_session(&self, session: PersistedSession) {
        self.local.persist_session(session)
    }

    async fn restore_session(&self, pid: &str, offset: &str) -> Option<RestoredSession> {
        self.local.restore_session(pid, offset).await
    }

    async fn close(&self) {
        let mut channels = vec![self.channel.clone(), self.response_channel.clone()];
        channels.extend(self.room_channels.lock().unwrap().drain().map(|room| self.room_channel(&room)));
        self.link.sunsubscribe(channels);
        if !self.link.flush(Duration::from_secs(2)).await {
            tracing::warn!(nsp = %self.nsp, "could not flush the Redis queue before closing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_channels_follow_the_official_modes() {
        let id = "abcdefghijklmnopqrst"; // 20 characters: looks like a socket id
        assert!(!uses_room_channel(SubscriptionMode::Static, "room"));
        assert!(uses_room_channel(SubscriptionMode::Dynamic, "room"));
        assert!(!uses_room_channel(SubscriptionMode::Dynamic, id));
        assert!(uses_room_channel(SubscriptionMode::DynamicPrivate, id));
        assert!(subscribes_to_room(SubscriptionMode::Dynamic, "room", false));
        assert!(!subscribes_to_room(SubscriptionMode::Dynamic, id, true));
        assert!(subscribes_to_room(SubscriptionMode::DynamicPrivate, id, true));
        assert_eq!("dynamic-private".parse::<SubscriptionMode>(), Ok(SubscriptionMode::DynamicPrivate));
        assert!("sticky".parse::<SubscriptionMode>().is_err());
    }

    #[test]
    fn messages_are_json_unless_they_carry_binary() {
        let text = wire::object(vec![("type", Value::from(3)), ("data", wire::object(vec![("x", Value::from(1))]))]);
        assert_eq!(encode(&text), br#"{"type":3,"data":{"x":1}}"#.to_vec());
        let bin = wire::object(vec![("type", Value::from(3)), ("data", Value::Binary(bytes::Bytes::from_static(&[1])))]);
        assert_eq!(encode(&bin)[0], 0x82);
    }
}
