//! What Engine.IO protocol 3 (`allow_eio3`, socket.io-client 1.x and 2.x) changes on a
//! WebSocket: binary frames carry a type byte both ways, and base64 text packets carry
//! their type. Polling's payloads are in `polling.rs`, the heartbeat in `session.rs`.
//! Each function leaves protocol 4 sessions' packets as they are.

use super::session::{ProtocolVersion, Session};
use crate::protocol::engine_packet::{self, DecodeError, OutPacket, Packet};
use crate::protocol::engine_packet_v3;
use bytes::Bytes;

/// Decodes a WebSocket text frame from the client.
pub(crate) fn decode_text(session: &Session, text: &str) -> Result<Packet, DecodeError> {
    match session.protocol() {
        ProtocolVersion::V4 => engine_packet::decode_text(text),
        ProtocolVersion::V3 => engine_packet_v3::decode_text(text),
    }
}

/// Decodes a WebSocket binary frame from the client.
pub(crate) fn decode_binary(session: &Session, data: Bytes) -> Result<Packet, DecodeError> {
    match session.protocol() {
        ProtocolVersion::V4 => Ok(Packet::Binary(data)),
        ProtocolVersion::V3 => engine_packet_v3::decode_binary(data),
    }
}

/// [`frames`] for the connection task's queue; a protocol 4 session's queue is returned
/// as it is.
pub(crate) fn frames_queue(session: &Session, packets: std::collections::VecDeque<OutPacket>) -> std::collections::VecDeque<OutPacket> {
    match session.protocol() {
        ProtocolVersion::V4 => packets,
        ProtocolVersion::V3 => frames(session, packets.into()).into(),
    }
}

/// The packets as this session's WebSocket frames carry them. A protocol 3 client gets
/// each binary packet behind its type byte: one copy per such packet, only for it; a
/// broadcast's shared bytes stay shared for every protocol 4 recipient.
pub(crate) fn frames(session: &Session, packets: Vec<OutPacket>) -> Vec<OutPacket> {
    match session.protocol() {
        ProtocolVersion::V4 => packets,
        ProtocolVersion::V3 => packets
            .into_iter()
            .map(|p| match p {
                OutPacket::Binary(b) => OutPacket::Binary(engine_packet_v3::binary_frame(&b)),
                text => text,
            })
            .collect(),
    }
}
