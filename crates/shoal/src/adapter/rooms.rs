//! The local room index of one namespace: room → sockets and socket → rooms. Shared by
//! every adapter, since local delivery is the same whether or not there is a cluster.

use super::{BroadcastOptions, Room, SocketId};
use std::collections::{HashMap, HashSet};
use std::sync::{OnceLock, RwLock};

/// A room that appeared on this node (its first local socket joined) or disappeared
/// (its last one left). `private` is true for a socket's own room (named by its id).
#[derive(Clone, Debug, PartialEq)]
pub struct RoomChange {
    /// The room's name.
    pub room: Room,
    /// True if it appeared, false if it disappeared.
    pub created: bool,
    /// True for a socket's own room (named by a socket id).
    pub private: bool,
}

/// Told of room changes, after the index is updated (e.g. the sharded Redis adapter,
/// which subscribes to a channel per room that has local sockets).
pub type RoomObserver = Box<dyn Fn(&[RoomChange]) + Send + Sync>;

#[derive(Default)]
/// The rooms of one namespace on this node: which sockets each room holds, and the
/// rooms of each socket.
pub struct LocalRooms {
    inner: RwLock<Index>,
    observer: OnceLock<RoomObserver>,
}

#[derive(Default)]
struct Index {
    /// Room → the local sockets in it, except a socket's own room (named by its id),
    /// which `rooms_of` alone records: most sockets stay in it, and an entry here would
    /// cost every connection a set of one.
    members: HashMap<Room, HashSet<SocketId>>,
    /// Socket → its rooms; every local socket has an entry, even with no room left.
    rooms_of: HashMap<SocketId, HashSet<Room>>,
}

impl Index {
    /// The socket whose own room `room` is, if it is still in it.
    fn owner(&self, room: &str) -> Option<&SocketId> {
        self.rooms_of.get_key_value(room).filter(|(_, rooms)| rooms.contains(room)).map(|(id, _)| id)
    }

    /// The local sockets in `room`.
    fn in_room<'a>(&'a self, room: &str) -> impl Iterator<Item = &'a SocketId> + 'a {
        self.members.get(room).into_iter().flat_map(|m| m.iter()).chain(self.owner(room))
    }
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

    /// Puts the socket in every room.
    pub fn add_all(&self, id: &SocketId, rooms: &[Room]) {
        let mut changes = Vec::new();
        {
            let mut index = self.inner.write().unwrap();
            for room in rooms {
                let inserted = index.rooms_of.entry(id.clone()).or_default().insert(room.clone());
                if room == id {
                    // Its own room lives in `rooms_of` only.
                    if inserted {
                        changes.push(RoomChange { room: room.clone(), created: true, private: true });
                    }
                    continue;
                }
                let members = index.members.entry(room.clone()).or_default();
                if members.insert(id.clone()) && members.len() == 1 {
                    changes.push(RoomChange { room: room.clone(), created: true, private: false });
                }
            }
            for change in &mut changes {
                change.private = change.private || index.rooms_of.contains_key(&change.room);
            }
        }
        self.notify(changes);
    }

    /// Takes the socket out of the room.
    pub fn del(&self, id: &SocketId, room: &Room) {
        let mut changes = Vec::new();
        {
            let mut index = self.inner.write().unwrap();
            let removed = index.rooms_of.get_mut(id).is_some_and(|rooms| rooms.remove(room));
            if room == id {
                if removed {
                    changes.push(RoomChange { room: room.clone(), created: false, private: true });
                }
            } else if let Some(members) = index.members.get_mut(room) {
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

    /// Takes the socket out of every room.
    pub fn del_all(&self, id: &SocketId) {
        let mut changes = Vec::new();
        {
            let mut index = self.inner.write().unwrap();
            if let Some(rooms) = index.rooms_of.remove(id) {
                for room in rooms {
                    if &room == id {
                        changes.push(RoomChange { room, created: false, private: true });
                        continue;
                    }
                    if let Some(members) = index.members.get_mut(&room) {
                        members.remove(id);
                        if members.is_empty() {
                            index.members.remove(&room);
                            let private = index.rooms_of.contains_key(&room);
                            changes.push(RoomChange { room, created: false, private });
                        }
                    }
                }
            }
        }
        self.notify(changes);
    }

    /// The socket's rooms, sorted.
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
        let index = self.inner.read().unwrap();
        index.members.contains_key(room) || index.owner(room).is_some()
    }

    /// Every room with at least one socket.
    pub fn rooms(&self) -> Vec<Room> {
        let index = self.inner.read().unwrap();
        let own = index.rooms_of.iter().filter(|(id, rooms)| rooms.contains(*id) && !index.members.contains_key(*id)).map(|(id, _)| id);
        index.members.keys().chain(own).cloned().collect()
    }

    /// The local sockets a broadcast with `opts` reaches, each once.
    pub fn matching(&self, opts: &BroadcastOptions) -> Vec<SocketId> {
        let index = self.inner.read().unwrap();
        // The common case, one room and no exception: its members as they are (no set of
        // those seen, so no hashing per recipient).
        if let ([room], []) = (&opts.rooms[..], &opts.except[..]) {
            return index.in_room(room).cloned().collect();
        }
        let excluded: HashSet<&SocketId> = opts.except.iter().flat_map(|room| index.in_room(room)).collect();
        if opts.rooms.is_empty() {
            return index.rooms_of.keys().filter(|id| !excluded.contains(id)).cloned().collect();
        }
        let mut seen: HashSet<&SocketId> = HashSet::new();
        let mut out = Vec::new();
        for room in &opts.rooms {
            for id in index.in_room(room) {
                if !excluded.contains(id) && seen.insert(id) {
                    out.push(id.clone());
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
        assert_eq!(index.matching(&opts(&["a"], &[])), vec![r("a")]);
        assert_eq!(index.matching(&opts(&["a", "b"], &["b"])), vec![r("a")]);
        assert!(index.has_room("a") && index.rooms().contains(&r("a")));
        index.del(&r("c"), &r("c"));
        assert!(index.matching(&opts(&["c"], &[])).is_empty() && !index.has_room("c"));
        index.del_all(&r("a"));
        assert!(index.matching(&opts(&["a"], &[])).is_empty() && !index.rooms().contains(&r("a")));
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
