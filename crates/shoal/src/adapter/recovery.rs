//! Connection state recovery, in memory: the sessions of sockets that went away for a
//! recoverable reason, and a log of the packets broadcast since, each with its offset.
//!
//! A client that reconnects within `max_disconnection_duration` with its `pid` and the
//! offset of the last event it received gets its socket back (id, rooms, data) and every
//! logged packet after that offset that its rooms match. Storage is bounded by age (the
//! same duration) and by count (`max_packets`): a client whose offset has been pruned
//! cannot be recovered and gets a fresh session, never a silent gap.

use super::{BroadcastOptions, Room, SocketId};
use crate::protocol::socket_packet::Packet;
use crate::protocol::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Recovery settings (`connectionStateRecovery` in the official server).
#[derive(Clone, Debug)]
pub struct RecoveryOptions {
    /// How long a disconnected session can be recovered (default 2 minutes).
    pub max_disconnection_duration: Duration,
    /// Recovered sockets skip the connect middlewares (default true).
    pub skip_middlewares: bool,
    /// Most packets kept in the log of one namespace on one node (default 100,000).
    pub max_packets: usize,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        RecoveryOptions { max_disconnection_duration: Duration::from_secs(120), skip_middlewares: true, max_packets: 100_000 }
    }
}

/// What is kept of a socket that may come back.
#[derive(Clone, Debug, PartialEq)]
pub struct PersistedSession {
    /// The private session id the client sends back to recover.
    pub pid: String,
    /// The socket's id, given back on recovery.
    pub id: SocketId,
    /// Its rooms, without its own id.
    pub rooms: Vec<Room>,
    /// Its `socket.data`.
    pub data: Value,
}

/// A session given back to a reconnecting client, with the packets it missed, in order.
#[derive(Clone, Debug)]
pub struct RestoredSession {
    /// The session as it was at the disconnection.
    pub session: PersistedSession,
    /// The packets broadcast to it since, oldest first.
    pub missed: Vec<Packet>,
}

struct Stored {
    offset: String,
    packet: Packet,
    opts: BroadcastOptions,
    at: Instant,
}

/// The log of connection state recovery: recent broadcasts with their offsets, and the
/// sessions of disconnected sockets, each kept for the recovery duration.
pub struct PacketLog {
    options: RecoveryOptions,
    epoch: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    log: VecDeque<Stored>,
    /// Offsets in `log`, to skip a packet seen twice (live and from a catch-up).
    offsets: std::collections::HashSet<String>,
    sessions: HashMap<String, (PersistedSession, Instant)>,
}

impl PacketLog {
    /// An empty log with these options.
    pub fn new(options: RecoveryOptions) -> PacketLog {
        // Offsets of this process differ from those of any earlier one.
        let epoch = super::random_id(8);
        PacketLog { options, epoch, inner: Mutex::new(Inner::default()) }
    }

    /// The options it was made with.
    pub fn options(&self) -> &RecoveryOptions {
        &self.options
    }

    /// True if the packet is one that recovery stores: an event with no ack, not volatile.
    pub fn stores(packet: &Packet, opts: &BroadcastOptions) -> bool {
        packet.id.is_none() && !opts.flags.volatile && matches!(packet.data, Some(Value::Array(_)))
    }

    /// Appends the packet's offset as its last argument, logs it, and returns the offset.
    pub fn record(&self, packet: &mut Packet, opts: &BroadcastOptions) -> String {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        inner.next += 1;
        let offset = format!("{}-{:x}", self.epoch, inner.next);
        self.prune(&mut inner, now);
        self.push(&mut inner, packet, opts, offset.clone(), now);
        offset
    }

    /// Logs a packet that already carries its offset as last argument (assigned by the
    /// node that broadcast it). Returns false if that offset was already logged.
    pub fn record_with_offset(&self, packet: &Packet, opts: &BroadcastOptions, offset: String) -> bool {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        if inner.offsets.contains(&offset) {
            return false;
        }
        self.prune(&mut inner, now);
        let mut stored = packet.clone();
        if let Some(Value::Array(args)) = stored.data.as_mut() {
            args.pop();
        }
        self.push(&mut inner, &mut stored, opts, offset, now);
        true
    }

    fn push(&self, inner: &mut Inner, packet: &mut Packet, opts: &BroadcastOptions, offset: String, at: Instant) {
        if let Some(Value::Array(args)) = packet.data.as_mut() {
            args.push(Value::String(offset.clone()));
        }
        inner.offsets.insert(offset.clone());
        inner.log.push_back(Stored { offset, packet: packet.clone(), opts: BroadcastOptions { flags: Default::default(), ..opts.clone() }, at });
        while inner.log.len() > self.options.max_packets {
            if let Some(old) = inner.log.pop_front() {
                inner.offsets.remove(&old.offset);
            }
        }
    }

    fn prune(&self, inner: &mut Inner, now: Instant) {
        let max = self.options.max_disconnection_duration;
        while inner.log.front().is_some_and(|p| now.duration_since(p.at) > max) {
            if let Some(old) = inner.log.pop_front() {
                inner.offsets.remove(&old.offset);
            }
        }
        if inner.sessions.len() > 1024 || inner.next % 1024 == 0 {
            inner.sessions.retain(|_, (_, at)| now.duration_since(*at) <= max);
        }
    }

    /// True if the packet with this offset is in the log.
    pub fn contains(&self, offset: &str) -> bool {
        self.inner.lock().unwrap().offsets.contains(offset)
    }

    /// Keeps a disconnected socket's session for the recovery duration.
    pub fn persist(&self, session: PersistedSession) {
        let mut inner = self.inner.lock().unwrap();
        inner.sessions.insert(session.pid.clone(), (session, Instant::now()));
    }

    /// The session of `pid` and the packets after `offset`, if both are still known.
    pub fn restore(&self, pid: &str, offset: &str) -> Option<RestoredSession> {
        let session = self.session(pid)?;
        let missed = self.missed(offset, &session)?;
        Some(RestoredSession { session, missed })
    }

    /// The persisted session of `pid`, if it has not expired.
    pub fn session(&self, pid: &str) -> Option<PersistedSession> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        let (session, at) = inner.sessions.get(pid)?.clone();
        if now.duration_since(at) > self.options.max_disconnection_duration {
            inner.sessions.remove(pid);
            return None;
        }
        Some(session)
    }

    /// The logged packets after `offset` that `session` was a target of, or None if
    /// `offset` is not in the log (too old, or never seen here).
    pub fn missed(&self, offset: &str, session: &PersistedSession) -> Option<Vec<Packet>> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        self.prune(&mut inner, now);
        let index = inner.log.iter().position(|p| p.offset == offset)?;
        let mut rooms = session.rooms.clone();
        rooms.push(session.id.clone());
        Some(inner.log.iter().skip(index + 1).filter(|p| matches_rooms(&p.opts, &rooms)).map(|p| p.packet.clone()).collect())
    }
}

/// True if a socket in `rooms` was a target of a broadcast with `opts`.
pub fn matches_rooms(opts: &BroadcastOptions, rooms: &[Room]) -> bool {
    let included = opts.rooms.is_empty() || opts.rooms.iter().any(|r| rooms.contains(r));
    let excluded = opts.except.iter().any(|r| rooms.contains(r));
    included && !excluded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(rooms: &[&str]) -> BroadcastOptions {
        BroadcastOptions { rooms: rooms.iter().map(|r| Room::from(*r)).collect(), ..Default::default() }
    }

    #[test]
    fn restores_what_was_missed_in_order_and_only_for_its_rooms() {
        let log = PacketLog::new(RecoveryOptions::default());
        let mut first = Packet::event("/", "a", vec![], None);
        log.record(&mut first, &opts(&[]));
        let offset = first.data.as_ref().unwrap().as_array().unwrap().last().unwrap().as_str().unwrap().to_owned();
        for (ev, rooms) in [("b", vec!["r1"]), ("c", vec!["other"]), ("d", vec![])] {
            log.record(&mut Packet::event("/", ev, vec![], None), &opts(&rooms));
        }
        log.persist(PersistedSession { pid: "p".into(), id: "s".into(), rooms: vec!["s".into(), "r1".into()], data: Value::Null });
        let restored = log.restore("p", &offset).unwrap();
        let names: Vec<&str> = restored.missed.iter().map(|p| p.data.as_ref().unwrap().as_array().unwrap()[0].as_str().unwrap()).collect();
        assert_eq!(names, vec!["b", "d"]);
        assert!(log.restore("p", "unknown-offset").is_none());
        assert!(log.restore("nobody", &offset).is_none());
    }

    #[test]
    fn storage_is_bounded_by_count() {
        let log = PacketLog::new(RecoveryOptions { max_packets: 3, ..Default::default() });
        let mut first = Packet::event("/", "a", vec![], None);
        log.record(&mut first, &opts(&[]));
        let offset = first.data.as_ref().unwrap().as_array().unwrap().last().unwrap().as_str().unwrap().to_owned();
        for _ in 0..5 {
            log.record(&mut Packet::event("/", "x", vec![], None), &opts(&[]));
        }
        log.persist(PersistedSession { pid: "p".into(), id: "s".into(), rooms: vec![], data: Value::Null });
        assert!(log.restore("p", &offset).is_none(), "a pruned offset cannot be recovered");
    }
}
