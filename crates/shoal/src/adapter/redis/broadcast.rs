//! Broadcasts between nodes: publishing ours on `{key}#{nsp}#` (with `room#` appended
//! when it targets one room, so nodes can skip it cheaply), delivering other nodes'
//! to our local sockets, and catching up after our subscription was down.
//!
//! Broadcasts are fire-and-forget: nobody answers them, so they never wait on Redis.
//! With recovery on, each stored packet also gets an offset and goes to the stream log
//! (`persistence.rs`), which is what a catch-up reads back.

use super::{wire, RedisAdapter};
use crate::adapter::BroadcastOptions;
use crate::protocol::socket_packet::Packet;
use crate::protocol::Value;

impl RedisAdapter {
    /// Records the packet (recovery on), publishes it to the other nodes unless `local`,
    /// and delivers it here.
    pub(super) fn publish_broadcast(&self, mut packet: Packet, opts: BroadcastOptions) {
        let offset = self.local.record(&mut packet, &opts);
        if let Some(offset) = &offset {
            self.append_to_stream_log(offset, &packet, &opts);
        }
        if !opts.flags.local {
            let mut raw_opts = wire::opts_to_value(&opts, true);
            if let (Some(offset), Value::Object(fields)) = (&offset, &mut raw_opts) {
                fields.insert("offset".to_owned(), Value::from(offset.as_str()));
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

    /// A broadcast from another node (or an emitter): `[uid, packet, opts]`.
    pub(super) fn on_broadcast(&self, channel: &str, payload: &[u8]) {
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

    /// Catches up, from the stream log, on the stored packets other nodes broadcast
    /// while our subscription was down (recovery on). Live broadcasts wait meanwhile,
    /// so that clients get everything in order.
    pub(super) fn catch_up(&self, lost_at: std::time::SystemTime) {
        let Some(log) = self.local.log() else { return };
        let max = log.options().max_packets;
        // A little before the loss: what was in flight then may not have arrived.
        let since_ms = lost_at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis().saturating_sub(2000);
        let adapter = self.weak_self.clone();
        *self.catching_up.lock().unwrap() = Some(Vec::new());
        tokio::spawn(async move {
            let Some(adapter) = adapter.upgrade() else { return };
            let entries = match adapter.stream_log_since(since_ms, max).await {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(error = %e, nsp = %adapter.nsp, "could not catch up on missed broadcasts");
                    adapter.end_catch_up();
                    return;
                }
            };
            let mut caught_up = 0;
            for (offset, packet, opts) in entries {
                let Some(log) = adapter.local.log() else { return };
                if log.contains(&offset) {
                    continue;
                }
                log.record_with_offset(&packet, &opts, offset);
                adapter.local.deliver_local(&packet, &opts);
                caught_up += 1;
            }
            if caught_up > 0 {
                tracing::info!(nsp = %adapter.nsp, caught_up, "delivered broadcasts missed during the Redis outage");
            }
            adapter.end_catch_up();
        });
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
}
