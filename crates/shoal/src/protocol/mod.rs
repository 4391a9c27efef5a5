//! The wire formats: Engine.IO 4 packets and polling payloads, Socket.IO 5 packets, and
//! the `Value` tree they carry. Pure encode/decode, no I/O; every error is a value.

pub mod engine_packet;
pub mod socket_packet;
pub mod value;
mod value_de;

pub(crate) use value_de::from_args;

pub use value::{IntoArgs, Value};
