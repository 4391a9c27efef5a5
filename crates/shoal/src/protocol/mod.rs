//! The wire formats: Engine.IO 4 packets and polling payloads (and protocol 3's framing
//! of them, for old clients), Socket.IO 5 packets (in the default text format or as
//! MessagePack), and the `Value` tree they carry. Pure encode/decode, no I/O; every error
//! is a value.

pub mod engine_packet;
pub mod engine_packet_v3;
pub mod msgpack;
pub mod msgpack_packet;
pub mod parser;
pub mod socket_packet;
pub mod value;
mod value_de;

pub(crate) use value_de::from_args;

pub use parser::Parser;
pub use value::{IntoArgs, Value};
