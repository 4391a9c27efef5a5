//! What connection state recovery keeps in Redis, so that a client reconnecting to any
//! node, even after its first node died, gets its socket back:
//! - a session record per socket (`{key}-session#{pid}`: id, namespace, rooms, data),
//!   written while the socket lives and kept for `max_disconnection_duration` after
//!   it left;
//! - the stream log (`{key}-log#{nsp}#`, a Redis Stream): every stored broadcast with
//!   its offset, read when a session's missed packets are not in this node's memory,
//!   and by a catch-up after an outage.
//!
//! Writes are queued on the link and never waited for; reads happen on a reconnect.

use super::{wire, RedisAdapter};
use crate::adapter::recovery::matches_rooms;
use crate::adapter::{BroadcastOptions, PersistedSession, RestoredSession};
use crate::protocol::socket_packet::Packet;
use crate::protocol::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Stream entries read per XREVRANGE page when looking for an offset.
const PAGE: usize = 500;

/// Rewrites the session records of live sockets before they expire, so that a node
/// that dies without a word leaves them for `max_disconnection_duration`.
pub(super) fn keep_session_records_alive(adapter: &Arc<RedisAdapter>, max_disconnection_duration: Duration) {
    let refresh_every = (max_disconnection_duration / 3).max(Duration::from_secs(1));
    let adapter = Arc::downgrade(adapter);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(refresh_every).await;
            let Some(adapter) = adapter.upgrade() else { return };
            let local = &adapter.local;
            // Every local socket is in the room index, so "all of them" is a match-all.
            local.changed(&local.local_rooms().matching(&BroadcastOptions::default()));
        }
    });
}

impl RedisAdapter {
    // ---- session records -------------------------------------------------------------

    /// A live socket's record: it outlives the next refresh, in case this node dies.
    pub(super) fn write_live_session(&self, session: &PersistedSession) {
        if let Some(log) = self.local.log() {
            let max = log.options().max_disconnection_duration;
            self.write_session(session, max + (max / 3).max(Duration::from_secs(1)));
        }
    }

    /// A socket that left for a recoverable reason: kept here and in Redis.
    pub(super) fn write_disconnected_session(&self, session: PersistedSession) {
        if let Some(log) = self.local.log() {
            self.write_session(&session, log.options().max_disconnection_duration);
            log.persist(session);
        }
    }

    /// The socket left for good: nothing to recover.
    pub(super) fn delete_session(&self, pid: &str) {
        if self.local.log().is_some() {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.session_key(pid));
            self.link.send(cmd);
        }
    }

    /// The session of `pid` and what it missed after `offset`: from this node's memory
    /// when it has them, else from Redis.
    pub(super) async fn restore_from_anywhere(&self, pid: &str, offset: &str) -> Option<RestoredSession> {
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

    fn session_key(&self, pid: &str) -> String {
        format!("{}-session#{}", self.options.key, pid)
    }

    fn write_session(&self, session: &PersistedSession, ttl: Duration) {
        let record = wire::object(vec![
            ("id", Value::from(session.id.to_string())),
            ("nsp", Value::from(self.nsp.as_str())),
            ("rooms", wire::rooms_value(&session.rooms)),
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

    // ---- the stream log ----------------------------------------------------------------

    /// Appends a stored packet to the cluster's copy of the log, for nodes that did
    /// not see it (they were down, or their subscription was).
    pub(super) fn append_to_stream_log(&self, offset: &str, packet: &Packet, opts: &BroadcastOptions) {
        let entry = Value::Array(vec![wire::packet_to_value(packet), wire::opts_to_value(opts, false)]);
        let max = self.local.log().map(|l| l.options().max_packets).unwrap_or(10_000);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.log_stream).arg("MAXLEN").arg("~").arg(max).arg("*").arg("o").arg(offset).arg("m").arg(wire::encode_msgpack(&entry));
        self.link.send(cmd);
    }

    /// At most `max` logged packets from `since_ms` (Unix milliseconds) on, oldest
    /// first, each with its offset. Entries that cannot be read are skipped.
    pub(super) async fn stream_log_since(&self, since_ms: u128, max: usize) -> Result<Vec<(String, Packet, BroadcastOptions)>, String> {
        let entries = self.link.xrange(&self.log_stream, &since_ms.to_string(), max).await?;
        Ok(entries.iter().filter_map(|(_id, fields)| read_entry(fields)).collect())
    }

    /// Packets after `offset` from the stream log, newest pages first, until the offset
    /// is found (None if it is not there any more).
    async fn missed_from_stream(&self, offset: &str, session: &PersistedSession, max: usize) -> Option<Vec<Packet>> {
        let mut rooms = session.rooms.clone();
        rooms.push(session.id.clone());
        let mut newer: Vec<Packet> = Vec::new();
        let mut end = "+".to_owned();
        let mut scanned = 0;
        while scanned < max {
            let page = self.link.xrevrange(&self.log_stream, &end, PAGE).await.ok()?;
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
                let Some((_, packet, opts)) = read_entry(fields) else { continue };
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
}

/// A stream entry: `o` (the offset) and `m` (msgpack of `[packet, opts]`).
fn read_entry(fields: &HashMap<String, Vec<u8>>) -> Option<(String, Packet, BroadcastOptions)> {
    let offset = String::from_utf8(fields.get("o")?.clone()).ok()?;
    let Ok(Value::Array(parts)) = wire::decode_msgpack(fields.get("m")?) else { return None };
    let packet = parts.first().and_then(wire::packet_from_value)?;
    Some((offset, packet, wire::opts_from_value(parts.get(1))))
}
