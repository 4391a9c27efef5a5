//! The admin UI's socket observer: it turns the socket layer's lifecycle hooks into the
//! UI's live updates, broadcast to the admin namespace (so, in a cluster, to the admin
//! sockets of every node), and counts connections for `server_stats`.
//!
//! The socket layer tells it only that a socket's rooms or data changed, not how, so it
//! keeps each local socket's last rooms and data and reports the difference.

use super::report;
use crate::adapter::{Room, SocketId};
use crate::engine::CloseReason;
use crate::io::{DisconnectReason, Event, SocketObserver, WeakNamespace};
use crate::protocol::{IntoArgs, Value};
use crate::Socket;
use indexmap::IndexMap;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// What the UI was last told about a local socket.
struct Seen {
    rooms: Vec<Room>,
    data: Value,
    transport: &'static str,
}

/// One line of the official `aggregatedEvents`: a kind of event in one second.
#[derive(Hash, PartialEq, Eq)]
struct CountKey {
    second_ms: u64,
    kind: &'static str,
    sub_kind: Option<&'static str>,
}

pub(super) struct Watch {
    admin: WeakNamespace,
    admin_name: String,
    /// Development mode: report every socket and event, not only counts.
    all_events: bool,
    seen: Mutex<HashMap<(String, SocketId), Seen>>,
    counts: Mutex<HashMap<CountKey, u64>>,
}

impl Watch {
    pub(super) fn new(admin: WeakNamespace, all_events: bool) -> Watch {
        let admin_name = admin.upgrade().map(|ns| ns.name().to_owned()).unwrap_or_default();
        Watch { admin, admin_name, all_events, seen: Mutex::new(HashMap::new()), counts: Mutex::new(HashMap::new()) }
    }

    fn emit(&self, event: &str, args: impl IntoArgs) {
        if let Some(admin) = self.admin.upgrade() {
            let _ = admin.emit(event, args);
        }
    }

    fn count(&self, kind: &'static str, sub_kind: Option<&'static str>) {
        let second_ms = report::millis(SystemTime::now()) / 1000 * 1000;
        *self.counts.lock().unwrap().entry(CountKey { second_ms, kind, sub_kind }).or_insert(0) += 1;
    }

    /// The counts since the last call, as `aggregatedEvents`.
    pub(super) fn take_counts(&self) -> Value {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap());
        let mut list: Vec<(CountKey, u64)> = counts.into_iter().collect();
        list.sort_by_key(|(key, _)| key.second_ms);
        Value::Array(
            list.into_iter()
                .map(|(key, count)| {
                    let mut obj = IndexMap::new();
                    obj.insert("timestamp".to_owned(), Value::from(key.second_ms));
                    obj.insert("type".to_owned(), Value::from(key.kind));
                    if let Some(sub) = key.sub_kind {
                        obj.insert("subType".to_owned(), Value::from(sub));
                    }
                    obj.insert("count".to_owned(), Value::from(count));
                    Value::Object(obj)
                })
                .collect(),
        )
    }

    /// Tells the UI of a socket whose transport changed (a polling session upgraded to
    /// WebSocket): called for every local socket on each stats tick.
    pub(super) fn check_transport(&self, socket: &Socket) {
        if !self.all_events {
            return;
        }
        let transport = report::transport(socket.session());
        {
            let mut seen = self.seen.lock().unwrap();
            let Some(entry) = seen.get_mut(&key(socket)) else { return };
            if entry.transport == transport {
                return;
            }
            entry.transport = transport;
        }
        self.emit("socket_updated", update(socket, "transport", Value::from(transport)));
    }

    fn watches_events_of(&self, socket: &Socket) -> bool {
        self.all_events && socket.ns().name() != self.admin_name
    }
}

fn key(socket: &Socket) -> (String, SocketId) {
    (socket.ns().name().to_owned(), socket.id().clone())
}

/// A `socket_updated` payload: `{id, nsp, <field>: value}`.
fn update(socket: &Socket, field: &str, value: Value) -> Value {
    let mut obj = IndexMap::new();
    obj.insert("id".to_owned(), Value::String(socket.id().to_string()));
    obj.insert("nsp".to_owned(), Value::String(socket.ns().name().to_owned()));
    obj.insert(field.to_owned(), value);
    Value::Object(obj)
}

/// `[event name, ...args]`, as the UI lists an event.
fn event_args(name: &str, args: &[Value]) -> Value {
    let mut list = Vec::with_capacity(args.len() + 1);
    list.push(Value::from(name));
    list.extend(args.iter().cloned());
    Value::Array(list)
}

impl SocketObserver for Watch {
    fn session_opened(&self) {
        self.count("rawConnection", None);
    }

    fn session_closed(&self, reason: CloseReason) {
        self.count("rawDisconnection", Some(reason.as_str()));
    }

    fn connected(&self, socket: &Socket) {
        if !self.all_events {
            return;
        }
        let seen = Seen { rooms: socket.rooms(), data: socket.data(), transport: report::transport(socket.session()) };
        self.seen.lock().unwrap().insert(key(socket), seen);
        self.emit("socket_connected", (report::serialize(socket), report::now()));
    }

    fn changed(&self, socket: &Socket) {
        if !self.all_events {
            return;
        }
        let (rooms, data) = (socket.rooms(), socket.data());
        let (joined, left, data_changed) = {
            let mut seen = self.seen.lock().unwrap();
            let Some(entry) = seen.get_mut(&key(socket)) else { return };
            let joined: Vec<Room> = rooms.iter().filter(|r| !entry.rooms.contains(r)).cloned().collect();
            let left: Vec<Room> = entry.rooms.iter().filter(|r| !rooms.contains(r)).cloned().collect();
            let data_changed = entry.data != data;
            entry.rooms = rooms;
            if data_changed {
                entry.data = data.clone();
            }
            (joined, left, data_changed)
        };
        let (nsp, id) = (socket.ns().name(), socket.id().to_string());
        for room in joined {
            self.emit("room_joined", (nsp, room.to_string(), id.as_str(), report::now()));
        }
        for room in left {
            self.emit("room_left", (nsp, room.to_string(), id.as_str(), report::now()));
        }
        if data_changed {
            self.emit("socket_updated", update(socket, "data", report::data(data)));
        }
    }

    fn disconnected(&self, socket: &Socket, reason: DisconnectReason) {
        if !self.all_events {
            return;
        }
        let Some(seen) = self.seen.lock().unwrap().remove(&key(socket)) else { return };
        let (nsp, id) = (socket.ns().name(), socket.id().to_string());
        for room in seen.rooms {
            self.emit("room_left", (nsp, room.to_string(), id.as_str(), report::now()));
        }
        self.emit("socket_disconnected", (nsp, id.as_str(), reason.as_str(), report::now()));
    }

    fn event_received(&self, socket: &Socket, event: &Event) {
        if self.watches_events_of(socket) {
            let args = event_args(&event.name, &event.args);
            self.emit("event_received", (socket.ns().name(), socket.id().to_string(), args, report::now()));
        }
    }

    fn event_sent(&self, socket: &Socket, event: &str, args: &[Value]) {
        if self.watches_events_of(socket) {
            let args = event_args(event, args);
            self.emit("event_sent", (socket.ns().name(), socket.id().to_string(), args, report::now()));
        }
    }
}
