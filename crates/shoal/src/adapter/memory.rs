//! The in-memory adapter: one process is the whole cluster. Broadcasts encode their
//! packet once and queue the same bytes on every recipient's session.

use super::{AckResponses, Adapter, AdapterError, BroadcastOptions, LocalNamespace, LocalRooms, PacketLog, PersistedSession, RestoredSession, Room, SocketId, SocketInfo};
use crate::protocol::socket_packet::Packet;
use crate::protocol::Value;
use async_trait::async_trait;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The adapter of a single process: rooms kept in memory, broadcasts to local sockets only
/// (the default; the Redis adapter builds on it).
pub struct MemoryAdapter {
    ns: Weak<dyn LocalNamespace>,
    rooms: LocalRooms,
    /// The recovery log, when the server has connection state recovery on.
    log: Option<PacketLog>,
}

impl MemoryAdapter {
    /// An adapter for the namespace `ns` (with a recovery log if the server has recovery on).
    pub fn new(ns: &Arc<dyn LocalNamespace>) -> MemoryAdapter {
        MemoryAdapter { ns: Arc::downgrade(ns), rooms: LocalRooms::default(), log: ns.recovery().cloned().map(PacketLog::new) }
    }

    /// The namespace, while it exists.
    pub fn namespace(&self) -> Option<Arc<dyn LocalNamespace>> {
        self.ns.upgrade()
    }

    /// The recovery log, if recovery is on.
    pub fn log(&self) -> Option<&PacketLog> {
        self.log.as_ref()
    }

    /// Gives the packet its recovery offset (last argument) and logs it, when recovery
    /// is on and the packet is one that is stored.
    pub fn record(&self, packet: &mut Packet, opts: &BroadcastOptions) -> Option<String> {
        let log = self.log.as_ref()?;
        PacketLog::stores(packet, opts).then(|| log.record(packet, opts))
    }

    /// The local room index (for adapters that build on this one).
    pub fn local_rooms(&self) -> &LocalRooms {
        &self.rooms
    }

    /// Delivers a packet to the matching local sockets; returns how many got it.
    pub fn deliver_local(&self, packet: &Packet, opts: &BroadcastOptions) -> usize {
        let Some(ns) = self.ns.upgrade() else { return 0 };
        ns.send(&self.rooms.matching(opts), &ns.parser().encode(packet), opts.flags.volatile)
    }

    /// Sends a packet that expects acks to the matching local sockets. Returns how many
    /// got it and the channel their acks (argument lists) arrive on; the channel closes
    /// when every one of them acked or disconnected. The packet gets a local ack id.
    pub fn start_broadcast_with_ack(&self, mut packet: Packet, opts: &BroadcastOptions) -> (usize, AckReceiver) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let Some(ns) = self.ns.upgrade() else {
            return (0, AckReceiver { rx, ack_id: 0, ns: self.ns.clone(), sockets: vec![] });
        };
        let ack_id = ns.next_ack_id();
        packet.id = Some(ack_id);
        let sockets = ns.send_expecting_acks(&self.rooms.matching(opts), &ns.parser().encode(&packet), ack_id, &tx);
        (sockets.len(), AckReceiver { rx, ack_id, ns: self.ns.clone(), sockets })
    }

    /// Runs a broadcast that collects acks over the local sockets.
    pub async fn broadcast_with_ack_local(&self, packet: Packet, opts: &BroadcastOptions) -> AckResponses {
        let (expected, mut acks) = self.start_broadcast_with_ack(packet, opts);
        let deadline = opts.flags.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut responses = Vec::with_capacity(expected);
        let mut timed_out = false;
        while responses.len() < expected {
            match acks.next(deadline).await {
                AckNext::Ack(first) => responses.push(first),
                AckNext::Closed | AckNext::Timeout => {
                    timed_out = true;
                    break;
                }
            }
        }
        AckResponses { responses, expected, timed_out }
    }

    /// The local sockets that `opts` targets.
    pub fn fetch_local(&self, opts: &BroadcastOptions) -> Vec<SocketInfo> {
        let Some(ns) = self.ns.upgrade() else { return vec![] };
        self.rooms
            .matching(opts)
            .into_iter()
            .filter_map(|id| {
                let handshake = ns.handshake(&id)?;
                let data = ns.data(&id).unwrap_or(Value::Null);
                Some(SocketInfo { rooms: self.rooms.socket_rooms(&id), id, handshake, data })
            })
            .collect()
    }

    /// Makes the local sockets that `opts` targets join `rooms`.
    pub fn add_sockets_local(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        let ids = self.rooms.matching(opts);
        for id in &ids {
            self.rooms.add_all(id, rooms);
        }
        self.changed(&ids);
    }

    /// Makes the local sockets that `opts` targets leave `rooms`.
    pub fn del_sockets_local(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        let ids = self.rooms.matching(opts);
        for id in &ids {
            for room in rooms {
                self.rooms.del(id, room);
            }
        }
        self.changed(&ids);
    }

    /// Tells the namespace these sockets' recoverable state changed.
    pub fn changed(&self, ids: &[SocketId]) {
        if let Some(ns) = self.ns.upgrade() {
            ns.changed(ids);
        }
    }

    /// Disconnects the local sockets that `opts` targets (with `close`, their whole connection).
    pub fn disconnect_local(&self, opts: &BroadcastOptions, close: bool) {
        if let Some(ns) = self.ns.upgrade() {
            ns.disconnect(&self.rooms.matching(opts), close);
        }
    }
}

/// What `AckReceiver::next` got.
pub enum AckNext {
    /// The first argument of one socket's ack.
    Ack(Value),
    /// Every socket acked or disconnected.
    Closed,
    /// The deadline passed first.
    Timeout,
}

/// The acks of a local broadcast, as they arrive. Dropping it forgets the acks still due.
pub struct AckReceiver {
    rx: tokio::sync::mpsc::UnboundedReceiver<Vec<Value>>,
    ack_id: u64,
    ns: Weak<dyn LocalNamespace>,
    /// The sockets that were sent the packet.
    sockets: Vec<SocketId>,
}

impl AckReceiver {
    /// The next ack, or why there is none, waiting at most until `deadline`.
    pub async fn next(&mut self, deadline: Option<tokio::time::Instant>) -> AckNext {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, self.rx.recv()).await {
                Ok(v) => v,
                Err(_) => return AckNext::Timeout,
            },
            None => self.rx.recv().await,
        };
        match next {
            Some(args) => AckNext::Ack(args.into_iter().next().unwrap_or(Value::Null)),
            None => AckNext::Closed,
        }
    }
}

impl Drop for AckReceiver {
    fn drop(&mut self) {
        if let Some(ns) = self.ns.upgrade() {
            ns.forget_acks(&self.sockets, self.ack_id);
        }
    }
}

#[async_trait]
impl Adapter for MemoryAdapter {
    fn add_all(&self, id: &SocketId, rooms: &[Room]) {
        self.rooms.add_all(id, rooms)
    }
    fn del(&self, id: &SocketId, room: &Room) {
        self.rooms.del(id, room)
    }
    fn del_all(&self, id: &SocketId) {
        self.rooms.del_all(id)
    }
    fn socket_rooms(&self, id: &SocketId) -> Vec<Room> {
        self.rooms.socket_rooms(id)
    }
    fn rooms(&self) -> Vec<Room> {
        self.rooms.rooms()
    }
    fn broadcast(&self, mut packet: Packet, opts: BroadcastOptions) {
        self.record(&mut packet, &opts);
        self.deliver_local(&packet, &opts);
    }
    async fn broadcast_with_ack(&self, packet: Packet, opts: BroadcastOptions) -> Result<AckResponses, AdapterError> {
        Ok(self.broadcast_with_ack_local(packet, &opts).await)
    }
    async fn fetch_sockets(&self, opts: BroadcastOptions) -> Result<Vec<SocketInfo>, AdapterError> {
        Ok(self.fetch_local(&opts))
    }
    async fn add_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) -> Result<(), AdapterError> {
        self.add_sockets_local(&opts, &rooms);
        Ok(())
    }
    async fn del_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) -> Result<(), AdapterError> {
        self.del_sockets_local(&opts, &rooms);
        Ok(())
    }
    async fn disconnect_sockets(&self, opts: BroadcastOptions, close: bool) -> Result<(), AdapterError> {
        self.disconnect_local(&opts, close);
        Ok(())
    }
    async fn server_side_emit(&self, _event: &str, _args: Vec<Value>, _timeout: Option<Duration>) -> Result<Vec<Value>, AdapterError> {
        // One process: there is no other node to hear it.
        Ok(Vec::new())
    }
    async fn server_count(&self) -> usize {
        1
    }
    fn persist_session(&self, session: PersistedSession) {
        if let Some(log) = &self.log {
            log.persist(session);
        }
    }
    async fn restore_session(&self, pid: &str, offset: &str) -> Option<RestoredSession> {
        self.log.as_ref()?.restore(pid, offset)
    }
}
