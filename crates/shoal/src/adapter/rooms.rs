//! The local room index of one namespace: room → sockets and socket → rooms. Shared by
//! every adapter, since local delivery is the same whether or not there is a cluster.

use super::{BroadcastOptions, Room, SocketId};
use std::collections::{HashMap, HashSet};
use std::sync::{OnceLock, RwLock};

/// A room that appeared on this node (its first local socket joined) or disappeared
/// (its last one left). `private` is true for a socket's own room (named by its id).
#[derive(Clone, Debug, PartialEq)]
pub struct RoomChange {
    pub room: Room,
    pub created: bool,
    pub private: bool,
}

/// Told of room changes, after the index is updated (e.g. the sharded Redis adapter,
/// which subscribes to a channel per room that has local sockets).
pub type RoomObserver = Box<dyn Fn(&[RoomChange]) + Send + Sync>;

#[derive(Default)]
pub struct LocalRooms {
    inner: RwLock<Index>,
    observer: OnceLock<RoomObserver>,
}

#[derive(Default)]
struct Index {
    /// Room → the local sockets in it.
    members: HashMap<Room, HashSet<SocketId>>,
    /// Socket → its rooms; every local socket has an entry, even with no room left.
    rooms_of: HashMap<SocketId, HashSet<Room>>,
}

impl LocalRooms {
    /// Sets the one observer of room changes (later calls are ignored).
    pub fn observe(&self, observer: RoomObserver) {
        let _ = self.observer.set(observer);
    }

    fn notify(&self, changes: Vec<RoomChange>) {
        if let (false, Some(observer)) = (changes.is_empty(), self.observer.get()) {
            observer(&changes);
        }
    }

    pub fn add_all(&self, id: &SocketId, rooms: &[Room]) {
        let mut changes = Vec::new();
        {
            let mut index = self.inner.write().unwrap();
            for room in rooms {
                index.rooms_of.entry(id.clone()).or_default().insert(room.clone());
                let members = index.members.entry(room.clone()).or_default();
                if members.insert(id.clone()) && members.len() == 1 {
                    changes.push(RoomChange { room: room.clone(), created: true, private: false });
                }
            }
            for change in &mut changes {
                change.private = index.rooms_of.contains_key(&change.room);
            }
        }
        self.notify(changes);
    }

    pub fn del(&self, id: &SocketId, room: &Room) {
        let mut changes = Vec::new();
        {
            let mut index = self.inner.write().unwrap();
            if let Some(rooms) = index.rooms_of.get_mut(id) {
                rooms.remove(room);
            }
            if let Some(members) = index.members.get_mut(room) {
                members.remove(id);
                if members.is_empty() {
                    index.members.remove(room);
                    let private = index.rooms_of.contains_key(room);
                    changes.push(RoomChange { room: room.clone(), created: false, private });
                }
            }
        }
        self.notify(changes);
    }

    pub fn del_all(&self, id: &SocketId) {
        let mut changes = Vec::new();
        {
            let mut index = self.inner.write().unwrap();
            if let Some(rooms) = index.rooms_of.remove(id) {
                for room in rooms {
                    if let Some(members) = index.members.get_mut(&room) {
                        members.remove(id);
                        if members.is_empty() {
                            index.members.remove(&room);
                            let private = &room == id || index.rooms_of.contains_key(&room);
                            changes.push(RoomChange { room, created: false, private });
                        }
                    }
                }
            }
        }
        self.notify(changes);
    }

    pub fn socket_rooms(&self, id: &SocketId) -> Vec<Room> {
        let index = self.inner.read().unwrap();
        let mut rooms: Vec<Room> = index.rooms_of.get(id).map(|r| r.iter().cloned().collect()).unwrap_or_default();
        rooms.sort();
        rooms
    }

    /// True if `id` is a socket of this node (every local socket is indexed from its
    /// connection to its disconnection).
    pub fn has_socket(&self, id: &str) -> bool {
        self.inner.read().unwrap().rooms_of.contains_key(id)
    }

    /// True if some local socket is in `room`.
    pub fn has_room(&self, room: &str) -> bool {
        self.inner.read().unwrap().members.contains_key(room)
    }

    pub fn rooms(&self) -> Vec<Room> {
        self.inner.read().unwrap().members.keys().cloned().collect()
    }

    /// The local sockets a broadcast with `opts` reaches, each once.
    pub fn matching(&self, opts: &BroadcastOptions) -> Vec<SocketId> {
        let index = self.inner.read().unwrap();
        let excluded: HashSet<&SocketId> = opts
            .except
            .iter()
            .filter_map(|room| index.members.get(room))
            .flat_map(|members| members.iter())
            .collect();
        if opts.rooms.is_empty() {
            return index.rooms_of.keys().filter(|id| !excluded.contains(id)).cloned().collect();
        }
        let mut seen: HashSet<&SocketId> = HashSet::new();
        let mut out = Vec::new();
        for room in &opts.rooms {
            if let Some(members) = index.members.get(room) {
                for id in members {
                    if !excluded.contains(id) && seen.insert(id) {
                        out.push(id.clone());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn r(s: &str) -> Room {
        s.into()
    }
    #[test]
    fn union_of_rooms_each_socket_once_minus_except() {
        let index = LocalRooms::default();
        index.add_all(&r("a"), &[r("a"), r("x"), r("y")]);
        index.add_all(&r("b"), &[r("b"), r("x")]);
        index.add_all(&r("c"), &[r("c"), r("y")]);
        let opts = |rooms: &[&str], except: &[&str]| BroadcastOptions {
            rooms: rooms.iter().map(|s| r(s)).collect(),
            except: except.iter().map(|s| r(s)).collect(),
            ..Default::default()
        };
        let mut m = index.matching(&opts(&["x", "y"], &[]));
        m.sort();
        assert_eq!(m, vec![r("a"), r("b"), r("c")]);
        let mut m = index.matching(&opts(&["x", "y"], &["a"]));
        m.sort();
        assert_eq!(m, vec![r("b"), r("c")]);
        let mut m = index.matching(&opts(&[], &["y"]));
        m.sort();
        assert_eq!(m, vec![r("b")]);
        index.del_all(&r("a"));
        assert!(index.socket_rooms(&r("a")).is_empty());
        index.del(&r("b"), &r("x"));
        assert!(!index.rooms().contains(&r("x")));
        assert!(!index.has_room("x") && index.has_room("y"));
    }

    #[test]
    fn the_observer_hears_rooms_appear_and_disappear() {
        use std::sync::{Arc, Mutex};
        let index = LocalRooms::default();
        let heard: Arc<Mutex<Vec<(String, bool, bool)>>> = Arc::default();
        let sink = heard.clone();
        index.observe(Box::new(move |changes: &[RoomChange]| {
            sink.lock().unwrap().extend(changes.iter().map(|c| (c.room.to_string(), c.created, c.private)));
        }));
        let take = || std::mem::take(&mut *heard.lock().unwrap());
        index.add_all(&r("s1"), &[r("s1"), r("chat")]);
        assert_eq!(take(), vec![("s1".into(), true, true), ("chat".into(), true, false)]);
        index.add_all(&r("s2"), &[r("s2"), r("chat")]);
        assert_eq!(take(), vec![("s2".into(), true, true)], "chat existed already");
        index.del(&r("s1"), &r("chat"));
        assert_eq!(take(), vec![], "chat still has s2");
        index.del_all(&r("s2"));
        let mut last = take();
        last.sort();
        assert_eq!(last, vec![("chat".into(), false, false), ("s2".into(), false, true)]);
    }
}
