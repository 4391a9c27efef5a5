//! The Redis adapter: many nodes behave as one server. It speaks the protocol of the
//! official `@socket.io/redis-adapter` 8.x (classic pub/sub), so a cluster may mix shoal
//! and Node.js nodes, and `@socket.io/redis-emitter` publishers reach shoal clients.
//!
//! Local delivery is the in-memory adapter's; the Redis side is split by concern:
//! - `broadcast.rs`: broadcasts published to and received from other nodes, and the
//!   catch-up after an outage of the subscription;
//! - `requests.rs`: requests this node makes of the others (fetch, room operations,
//!   server-side events, broadcasts with acks) and the answers it waits for, bounded
//!   by `requests_timeout`;
//! - `answers.rs`: requests of other nodes that this node answers;
//! - `persistence.rs`: what connection state recovery keeps in Redis (session records
//!   and the stream log of broadcast packets), so any node can restore any session;
//! - `wire.rs`: the message formats (no I/O); `link.rs`: the connections to Redis,
//!   `cluster_link.rs` when they go to a Redis Cluster, `sentinel_link.rs` when Redis
//!   Sentinel names the primary.
//!
//! `sharded.rs` holds the other adapter: sharded Pub/Sub on a Redis Cluster, as the
//! official `createShardedAdapter` (see there).
//!
//! This file holds the adapter itself: its state, its subscription, and the
//! [`Adapter`] methods, each handing over to the file of its concern.
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! let link = shoal::adapter::redis::RedisLink::connect("redis://127.0.0.1:6379").await?;
//! let io = shoal::Server::builder()
//!     .adapter(shoal::adapter::redis::factory(link, shoal::adapter::redis::RedisOptions::default()))
//!     .build();
//! # Ok(()) }
//! ```

mod answers;
mod broadcast;
mod cluster_link;
mod link;
mod persistence;
mod requests;
mod sentinel_link;
pub mod sharded;
pub mod wire;

pub use link::{masked_url, LinkStats, RedisLink, Subscriber};
pub use sharded::{sharded_factory, ShardedAdapter, ShardedOptions, SubscriptionMode};

use super::{AckResponses, Adapter, AdapterError, AdapterFactory, BroadcastOptions, LocalNamespace, MemoryAdapter, PersistedSession, RestoredSession, Room, SocketId, SocketInfo};
use crate::protocol::socket_packet::Packet;
use crate::protocol::Value;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use wire::Channels;

/// Settings of the Redis adapter, with the official defaults.
///
/// The adapter alone (broadcasts across processes, as `@socket.io/redis-adapter`, but
/// no membership or forwarding: the balancer must then keep sessions sticky); a cluster
/// without sticky sessions uses [`crate::ServerBuilder::cluster`] instead.
///
/// ```no_run
/// # async fn run() -> Result<(), String> {
/// use shoal::adapter::redis::{factory, RedisLink, RedisOptions};
/// let link = RedisLink::connect("redis://127.0.0.1:6379").await?;
/// let options = RedisOptions { key: "my-app".into(), ..RedisOptions::default() };
/// let io = shoal::Server::builder().adapter(factory(link, options)).build();
/// # let _ = io; Ok(()) }
/// ```
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

/// A broadcast received during a catch-up: its channel and payload.
type HeldBroadcast = (String, Vec<u8>);

/// The adapter of a cluster over Redis, compatible with the official
/// `@socket.io/redis-adapter`: local delivery through a [`MemoryAdapter`], the rest
/// through Redis.
pub struct RedisAdapter {
    local: MemoryAdapter,
    nsp: String,
    /// This node's id in the adapter protocol (requests carry it; a node skips its own).
    uid: String,
    channels: Channels,
    link: Arc<RedisLink>,
    options: RedisOptions,
    /// `{key}-log#{nsp}#`: the Redis Stream of logged packets (recovery on).
    log_stream: String,
    /// Our requests waiting for other nodes' answers, by request id.
    pending: Mutex<HashMap<String, requests::Pending>>,
    /// Our broadcasts with acks, by request id: where their counts and acks go.
    ack_requests: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<requests::AckEvent>>>,
    /// While catching up after an outage, live broadcasts wait here so that clients
    /// get everything in order.
    catching_up: Mutex<Option<Vec<HeldBroadcast>>>,
    /// This adapter, for the tasks it spawns (they must not keep it alive).
    weak_self: Weak<RedisAdapter>,
}

impl RedisAdapter {
    /// An adapter for the namespace `ns` over `link`.
    pub fn new(ns: &Arc<dyn LocalNamespace>, link: Arc<RedisLink>, options: RedisOptions) -> Arc<RedisAdapter> {
        let uid = wire::uid();
        let channels = Channels::new(&options.key, ns.name(), &uid);
        let adapter = Arc::new_cyclic(|weak_self| RedisAdapter {
            local: MemoryAdapter::new(ns),
            nsp: ns.name().to_owned(),
            uid,
            channels: channels.clone(),
            link: link.clone(),
            log_stream: format!("{}-log#{}#", options.key, ns.name()),
            options,
            pending: Mutex::new(HashMap::new()),
            ack_requests: Mutex::new(HashMap::new()),
            catching_up: Mutex::new(None),
            weak_self: weak_self.clone(),
        });
        let subscriber: Weak<dyn Subscriber> = Arc::downgrade(&adapter) as Weak<dyn Subscriber>;
        link.subscribe(
            subscriber,
            vec![channels.request.clone(), channels.response.clone(), channels.specific_response.clone()],
            format!("{}*", channels.broadcast),
        );
        tracing::debug!(nsp = %adapter.nsp, uid = %adapter.uid, "Redis adapter ready");
        if let Some(recovery) = ns.recovery() {
            persistence::keep_session_records_alive(&adapter, recovery.max_disconnection_duration);
        }
        adapter
    }

    /// This node's id in the adapter protocol.
    pub fn uid(&self) -> &str {
        &self.uid
    }
}

impl Subscriber for RedisAdapter {
    fn on_resubscribed(&self, lost_at: std::time::SystemTime) {
        self.catch_up(lost_at);
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

/// The room bookkeeping of an adapter whose rooms live in its `local` part: both Redis
/// adapters keep only this node's sockets' rooms.
macro_rules! local_rooms {
    () => {
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
    };
}
pub(crate) use local_rooms;

#[async_trait]
impl Adapter for RedisAdapter {
    local_rooms!();

    fn broadcast(&self, packet: Packet, opts: BroadcastOptions) {
        self.publish_broadcast(packet, opts)
    }

    async fn broadcast_with_ack(&self, packet: Packet, opts: BroadcastOptions) -> Result<AckResponses, AdapterError> {
        Ok(self.broadcast_with_ack_everywhere(packet, opts).await)
    }

    async fn fetch_sockets(&self, opts: BroadcastOptions) -> Result<Vec<SocketInfo>, AdapterError> {
        self.fetch_sockets_everywhere(opts).await
    }

    async fn add_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) -> Result<(), AdapterError> {
        self.local.add_sockets_local(&opts, &rooms);
        self.publish_room_op(wire::RequestType::RemoteJoin, &opts, &rooms);
        Ok(())
    }

    async fn del_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) -> Result<(), AdapterError> {
        self.local.del_sockets_local(&opts, &rooms);
        self.publish_room_op(wire::RequestType::RemoteLeave, &opts, &rooms);
        Ok(())
    }

    async fn disconnect_sockets(&self, opts: BroadcastOptions, close: bool) -> Result<(), AdapterError> {
        self.publish_disconnect(&opts, close);
        self.local.disconnect_local(&opts, close);
        Ok(())
    }

    async fn server_side_emit(&self, event: &str, args: Vec<Value>, timeout: Option<Duration>) -> Result<Vec<Value>, AdapterError> {
        self.server_side_emit_to_others(event, args, timeout).await
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

    fn session_changed(&self, session: PersistedSession) {
        self.write_live_session(&session);
    }

    fn persist_session(&self, session: PersistedSession) {
        self.write_disconnected_session(session);
    }

    fn forget_session(&self, pid: &str) {
        self.delete_session(pid);
    }

    async fn restore_session(&self, pid: &str, offset: &str) -> Option<RestoredSession> {
        self.restore_from_anywhere(pid, offset).await
    }

    async fn close(&self) {
        // What was queued (last session records, last broadcasts) reaches Redis first.
        if !self.link.flush(Duration::from_secs(2)).await {
            tracing::warn!(nsp = %self.nsp, "could not flush the Redis queue before closing");
        }
    }
}
