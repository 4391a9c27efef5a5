//! The wire formats: Engine.IO 4 packets and polling payloads (and protocol 3's framing
//! of them, for old clients), Socket.IO 5 packets, and
//! the `Value` tree they carry. Pure encode/decode, no I/O; every error is a value.

pub mod engine_packet;
pub mod engine_packet_v3;
pub mod socket_packet;
pub mod value;

pub use value::{IntoArgs, Value};
