//! The `shoal` binary's parts, as a library so that examples (an axum app embedding the
//! same server, `examples/axum_cluster.rs`) reuse them: the configuration (flags and
//! environment, mapped onto `shoal::ServerBuilder`) and the chat demo (page, handlers,
//! and the node's small HTTP site: the page, `/health`, `/metrics`, Socket.IO).

pub mod config;
pub mod demo;
pub mod gateway;
