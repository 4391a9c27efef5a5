//! `socket.handshake`: what a client sent when it connected, in the official shape.
//!
//! A plain record, owned here rather than by the socket layer, because `fetch_sockets`
//! carries it between nodes: the adapter reads it from a local socket and rebuilds it
//! from another node's answer. The socket layer builds it from the Engine.IO handshake
//! request (`io/handshake.rs`) and re-exports it as `shoal::Handshake`.

use crate::protocol::Value;
use indexmap::IndexMap;
use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq)]
/// The handshake of a socket (`socket.handshake`), with the official server's fields.
pub struct Handshake {
    /// Request headers, names in lower case (repeated headers joined with ", ").
    pub headers: IndexMap<String, String>,
    /// When the session was created, as JavaScript's `Date.toString()` in UTC.
    pub time: String,
    /// The client's address.
    pub address: String,
    /// True if the request had an `Origin` header (a cross-domain browser request).
    pub xdomain: bool,
    /// True if the request came over TLS (as the server or a trusted proxy saw it).
    pub secure: bool,
    /// When the session was created, in milliseconds since the Unix epoch.
    pub issued: u64,
    /// The request URL (path and query) of the handshake.
    pub url: String,
    /// The handshake URL's query parameters, percent-decoded.
    pub query: IndexMap<String, String>,
    /// The payload of the client's CONNECT packet (`{}` when absent).
    pub auth: Value,
}

impl Handshake {
    /// The handshake as a `Value` (for sending to a client, or storing).
    pub fn to_value(&self) -> Value {
        Value::from_serde(self).unwrap_or(Value::Null)
    }
}
