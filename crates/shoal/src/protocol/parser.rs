//! [`Parser`]: how a server writes and reads Socket.IO packets. The client library is
//! built with one parser and the server must use the same: the default text parser
//! (`socket.io-parser`), or `socket.io-msgpack-parser`. No I/O.

use super::engine_packet::OutPacket;
use super::socket_packet::{self, Encoded, Packet};
use std::fmt;
use std::str::FromStr;

/// The packet format of a server, shared by all its clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parser {
    /// The default (`socket.io-parser`): text packets with JSON data, each binary value
    /// sent after its packet as a binary attachment.
    #[default]
    Json,
    /// `socket.io-msgpack-parser`: every packet is one binary message, the packet object
    /// in MessagePack (notepack.io), binary values in place.
    MsgPack,
}

impl Parser {
    /// Encodes a packet once; the result may be shared by every recipient of a broadcast.
    pub fn encode(self, packet: &Packet) -> Encoded {
        match self {
            Parser::Json => socket_packet::encode(packet),
            Parser::MsgPack => Encoded { head: OutPacket::Binary(super::msgpack_packet::encode(packet)), attachments: Vec::new() },
        }
    }

    /// The name used in configuration: `json` or `msgpack`.
    pub fn name(self) -> &'static str {
        match self {
            Parser::Json => "json",
            Parser::MsgPack => "msgpack",
        }
    }
}

impl fmt::Display for Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Parser {
    type Err = String;
    /// `json` (also `default`) or `msgpack`.
    fn from_str(s: &str) -> Result<Parser, String> {
        match s {
            "json" | "default" => Ok(Parser::Json),
            "msgpack" => Ok(Parser::MsgPack),
            other => Err(format!("unknown parser {other:?}: use \"json\" or \"msgpack\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Value;

    #[test]
    fn each_parser_encodes_a_packet_as_one_head_and_its_attachments() {
        let p = Packet::event("/", "ev", vec![Value::Binary(bytes::Bytes::from_static(b"x"))], None);
        let json = Parser::Json.encode(&p);
        assert!(matches!(json.head, OutPacket::Text(_)));
        assert_eq!(json.attachments.len(), 1);
        let msgpack = Parser::MsgPack.encode(&p);
        assert!(matches!(msgpack.head, OutPacket::Binary(_)));
        assert!(msgpack.attachments.is_empty());
        assert_eq!(crate::protocol::msgpack_packet::decode(msgpack.head_bytes()).unwrap(), p);
    }

    #[test]
    fn names_parse_back() {
        for p in [Parser::Json, Parser::MsgPack] {
            assert_eq!(p.name().parse::<Parser>(), Ok(p));
        }
        assert!("cbor".parse::<Parser>().is_err());
    }
}
