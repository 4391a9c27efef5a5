//! The wire format of the official `@socket.io/redis-adapter` (8.x) and
//! `@socket.io/redis-emitter` (5.x): channel names, MessagePack as notepack.io writes it,
//! and the request/response messages between nodes. No I/O.

use crate::adapter::{BroadcastFlags, BroadcastOptions, Handshake, Room, SocketInfo};
use crate::protocol::socket_packet::{Packet, PacketKind};
use crate::protocol::Value;
use indexmap::IndexMap;
use std::time::Duration;

/// Request types, numbered as in the official adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    /// The ids of the sockets in some rooms (`allSockets`).
    Sockets = 0,
    /// Every room of the namespace.
    AllRooms = 1,
    /// `socketsJoin` on another node.
    RemoteJoin = 2,
    /// `socketsLeave` on another node.
    RemoteLeave = 3,
    /// `disconnectSockets` on another node.
    RemoteDisconnect = 4,
    /// `fetchSockets` on another node.
    RemoteFetch = 5,
    /// `serverSideEmit`.
    ServerSideEmit = 6,
    /// A broadcast that expects acks.
    Broadcast = 7,
    /// How many clients a broadcast with acks reached.
    BroadcastClientCount = 8,
    /// One client's ack of a broadcast.
    BroadcastAck = 9,
}

impl RequestType {
    /// The request type of a decoded `type` field, if known.
    pub fn from_value(v: &Value) -> Option<RequestType> {
        Some(match v.as_u64()? {
            0 => RequestType::Sockets,
            1 => RequestType::AllRooms,
            2 => RequestType::RemoteJoin,
            3 => RequestType::RemoteLeave,
            4 => RequestType::RemoteDisconnect,
            5 => RequestType::RemoteFetch,
            6 => RequestType::ServerSideEmit,
            7 => RequestType::Broadcast,
            8 => RequestType::BroadcastClientCount,
            9 => RequestType::BroadcastAck,
            _ => return None,
        })
    }
}

/// The channels of one namespace under a key prefix.
#[derive(Clone, Debug)]
pub struct Channels {
    /// `socket.io#/chat#`: broadcasts (a single-room broadcast appends `room#`).
    pub broadcast: String,
    /// `socket.io-request#/chat#`
    pub request: String,
    /// `socket.io-response#/chat#`
    pub response: String,
    /// `socket.io-response#/chat#<uid>#`
    pub specific_response: String,
}

impl Channels {
    /// The channel names for namespace `nsp` under `prefix`, this node's uid `uid`.
    pub fn new(prefix: &str, nsp: &str, uid: &str) -> Channels {
        let response = format!("{prefix}-response#{nsp}#");
        Channels {
            broadcast: format!("{prefix}#{nsp}#"),
            request: format!("{prefix}-request#{nsp}#"),
            specific_response: format!("{response}{uid}#"),
            response,
        }
    }
}

/// A 6-character id, like the official adapter's uid2(6).
pub fn uid() -> String {
    crate::adapter::random_id(6)
}

// ---- MessagePack -------------------------------------------------------------------------

/// Encodes a value as notepack.io does (`protocol::msgpack`, shared with the msgpack
/// parser of Socket.IO packets).
pub fn encode_msgpack(v: &Value) -> Vec<u8> {
    crate::protocol::msgpack::encode(v)
}

/// Decodes MessagePack into a `Value`, bounded as `protocol::msgpack` reads: extension
/// types (notepack's `undefined`, dates) become null, integer map keys their decimal text.
pub fn decode_msgpack(bytes: &[u8]) -> Result<Value, String> {
    crate::protocol::msgpack::decode(bytes).map_err(|e| e.to_string())
}

/// Decodes a request or response: JSON when it starts with `{`, MessagePack otherwise.
pub fn decode_message(bytes: &[u8]) -> Result<Value, String> {
    if bytes.first() == Some(&b'{') {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        crate::protocol::value::parse_json(text).map_err(|e| e.to_string())
    } else {
        decode_msgpack(bytes)
    }
}

/// JSON text of a value, binary written as Node's `Buffer.toJSON()` does.
pub fn to_json_text(v: &Value) -> String {
    fn with_node_buffers(v: &Value) -> Value {
        match v {
            Value::Binary(b) => object(vec![
                ("type", Value::from("Buffer")),
                ("data", Value::Array(b.iter().map(|x| Value::from(*x)).collect())),
            ]),
            Value::Array(a) => Value::Array(a.iter().map(with_node_buffers).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), with_node_buffers(v))).collect()),
            other => other.clone(),
        }
    }
    let mut out = String::new();
    with_node_buffers(v).write_json(&mut out, &mut Vec::new());
    out
}

/// A map value with its keys in this order (as notepack and JSON.stringify keep them).
pub fn object(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<IndexMap<_, _>>())
}

// ---- packets and options -------------------------------------------------------------------

/// The socket.io-parser packet object of a broadcast: `{type, data, nsp[, id]}`.
pub fn packet_to_value(packet: &Packet) -> Value {
    let mut pairs = vec![
        ("type", Value::from(PacketKind::Event as u8)),
        ("data", packet.data.clone().unwrap_or(Value::Array(vec![]))),
        ("nsp", Value::from(packet.nsp.as_str())),
    ];
    if let Some(id) = packet.id {
        pairs.push(("id", Value::from(id)));
    }
    object(pairs)
}

/// An event packet from its object form (type EVENT or BINARY_EVENT, `nsp` default `/`).
pub fn packet_from_value(v: &Value) -> Option<Packet> {
    let kind = v.get("type")?.as_u64()?;
    if kind != PacketKind::Event as u64 && kind != PacketKind::BinaryEvent as u64 {
        return None;
    }
    let data = v.get("data")?.clone();
    match data.as_array()?.first()? {
        Value::String(_) => {}
        _ => return None,
    }
    let nsp = v.get("nsp").and_then(Value::as_str).unwrap_or("/").to_owned();
    Some(Packet { kind: PacketKind::Event, nsp, id: v.get("id").and_then(Value::as_u64), data: Some(data) })
}

/// Rooms as an array of strings.
pub fn rooms_value(rooms: &[Room]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::from(r.to_string())).collect())
}

/// `{rooms, except, flags}` as the adapter sends them with broadcasts.
pub fn opts_to_value(opts: &BroadcastOptions, with_flags: bool) -> Value {
    let mut pairs = vec![("rooms", rooms_value(&opts.rooms)), ("except", rooms_value(&opts.except))];
    if with_flags {
        let mut flags = vec![];
        if opts.flags.volatile {
            flags.push(("volatile", Value::Bool(true)));
        }
        if let Some(t) = opts.flags.timeout {
            flags.push(("timeout", Value::from(t.as_millis() as u64)));
        }
        pairs.push(("flags", object(flags)));
    }
    object(pairs)
}

fn rooms_from(v: Option<&Value>) -> Vec<Room> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|r| match r {
                Value::String(s) => Some(Room::from(s.as_str())),
                Value::Number(n) => Some(Room::from(n.to_string().as_str())),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

/// Broadcast options read from their wire form (missing fields take their defaults).
pub fn opts_from_value(v: Option<&Value>) -> BroadcastOptions {
    let Some(v) = v else { return BroadcastOptions::default() };
    let flags = v.get("flags");
    BroadcastOptions {
        rooms: rooms_from(v.get("rooms")),
        except: rooms_from(v.get("except")),
        flags: BroadcastFlags {
            local: false,
            volatile: flags.and_then(|f| f.get("volatile")).and_then(Value::as_bool).unwrap_or(false),
            timeout: flags.and_then(|f| f.get("timeout")).and_then(Value::as_f64).map(timeout_from_millis),
        },
    }
}

/// The longest timeout a message from Redis is read with. Anything that can publish on
/// the adapter's channels sets it, and `Instant + timeout` must not overflow; what a
/// node then waits for is bounded again by its own settings (`answers.rs`).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Milliseconds from the wire as a duration in `0..=MAX_TIMEOUT`: negative and NaN read
/// as 0, larger values (infinity included) as `MAX_TIMEOUT`.
pub fn timeout_from_millis(ms: f64) -> Duration {
    if ms.is_nan() || ms <= 0.0 {
        Duration::ZERO
    } else if ms >= MAX_TIMEOUT.as_millis() as f64 {
        MAX_TIMEOUT
    } else {
        Duration::from_millis(ms as u64)
    }
}

/// A list of rooms read from its wire form (empty if missing or malformed).
pub fn rooms_list(v: Option<&Value>) -> Vec<Room> {
    rooms_from(v)
}

// ---- sockets in REMOTE_FETCH answers -------------------------------------------------------

/// A local socket as a REMOTE_FETCH answer lists it: `{id, handshake, rooms, data}`.
pub fn socket_info_to_value(socket: SocketInfo) -> Value {
    object(vec![
        ("id", Value::from(socket.id.to_string())),
        ("handshake", socket.handshake.to_value()),
        ("rooms", rooms_value(&socket.rooms)),
        ("data", socket.data),
    ])
}

/// A socket from another node's REMOTE_FETCH answer. Missing handshake fields take
/// their empty value, since a Node.js node may send fewer of them.
pub fn socket_info_from_value(v: &Value) -> Option<SocketInfo> {
    let id = v.get("id")?.as_str()?;
    let handshake = v.get("handshake").cloned().unwrap_or(Value::Null);
    let strings = |field: Option<&Value>| -> IndexMap<String, String> {
        field
            .and_then(Value::as_object)
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect())
            .unwrap_or_default()
    };
    let text = |name: &str| handshake.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let flag = |name: &str| handshake.get(name).and_then(Value::as_bool).unwrap_or(false);
    let handshake = Handshake {
        headers: strings(handshake.get("headers")),
        time: text("time"),
        address: text("address"),
        xdomain: flag("xdomain"),
        secure: flag("secure"),
        issued: handshake.get("issued").and_then(Value::as_f64).unwrap_or(0.0) as u64,
        url: text("url"),
        query: strings(handshake.get("query")),
        auth: handshake.get("auth").cloned().unwrap_or(Value::Null),
    };
    Some(SocketInfo { id: id.into(), handshake, rooms: rooms_from(v.get("rooms")), data: v.get("data").cloned().unwrap_or(Value::Null) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_timeout_from_the_wire_is_bounded() {
        let read = |t: Value| {
            let opts = object(vec![("flags", object(vec![("timeout", t)]))]);
            opts_from_value(Some(&opts)).flags.timeout
        };
        assert_eq!(read(Value::from(1500)), Some(Duration::from_millis(1500)));
        assert_eq!(read(Value::from(-5)), Some(Duration::ZERO));
        // NaN and infinity have no JSON form (the Value tree may hold them as null);
        // whatever a decoder makes of them reads within the bounds.
        assert_eq!(timeout_from_millis(f64::NAN), Duration::ZERO);
        assert_eq!(timeout_from_millis(f64::INFINITY), MAX_TIMEOUT);
        assert_eq!(timeout_from_millis(f64::NEG_INFINITY), Duration::ZERO);
        assert_eq!(read(Value::from(1e300)), Some(MAX_TIMEOUT));
        assert_eq!(read(Value::from(u64::MAX)), Some(MAX_TIMEOUT));
        assert_eq!(read(Value::from("soon")), None);
        // A bounded timeout can be added to an instant.
        let _ = std::time::Instant::now() + read(Value::from(1e300)).unwrap();
    }

    #[test]
    fn msgpack_is_notepack_compatible() {
        // notepack.encode(["abc", {type: 2, data: ["ev", 1, 1.5, -1, null, true, Buffer.from([1])], nsp: "/"}])
        let v = Value::Array(vec![
            Value::from("abc"),
            object(vec![
                ("type", Value::from(2)),
                (
                    "data",
                    Value::Array(vec![
                        Value::from("ev"),
                        Value::from(1),
                        Value::from(1.5),
                        Value::from(-1),
                        Value::Null,
                        Value::Bool(true),
                        Value::Binary(Bytes::from_static(&[1])),
                    ]),
                ),
                ("nsp", Value::from("/")),
            ]),
        ]);
        let bytes = encode_msgpack(&v);
        let expected: Vec<u8> = [
            &[0x92, 0xa3][..], b"abc", &[0x83, 0xa4], b"type", &[0x02, 0xa4], b"data", &[0x97, 0xa2], b"ev",
            &[0x01, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xff, 0xc0, 0xc3, 0xc4, 0x01, 0x01, 0xa3], b"nsp", &[0xa1], b"/",
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(decode_msgpack(&bytes).unwrap(), v);
    }

    #[test]
    fn channels_follow_the_official_names() {
        let c = Channels::new("socket.io", "/chat", "abc123");
        assert_eq!(c.broadcast, "socket.io#/chat#");
        assert_eq!(c.request, "socket.io-request#/chat#");
        assert_eq!(c.response, "socket.io-response#/chat#");
        assert_eq!(c.specific_response, "socket.io-response#/chat#abc123#");
    }

    #[test]
    fn packets_and_options_round_trip() {
        let p = Packet::event("/chat", "ev", vec![Value::from(1)], None);
        assert_eq!(packet_from_value(&packet_to_value(&p)).unwrap(), p);
        let opts = BroadcastOptions {
            rooms: vec!["a".into()],
            except: vec!["b".into()],
            flags: BroadcastFlags { local: false, volatile: true, timeout: Some(Duration::from_millis(500)) },
        };
        assert_eq!(opts_from_value(Some(&opts_to_value(&opts, true))), opts);
        assert!(decode_message(b"{\"type\":1}").is_ok());
        assert!(decode_message(&[0x92, 0x01]).is_err());
    }
}
