//! Broadcast operators: `to`, `in`, `except`, `local`, `volatile`, `timeout`, and what
//! they end with: `emit`, `emit_with_ack`, `fetch_sockets`, `sockets_join`,
//! `sockets_leave`, `disconnect_sockets`. Everything goes through the namespace's adapter,
//! so the same code reaches sockets on other nodes in a cluster.

use super::handshake::Handshake;
use super::namespace::Namespace;
use super::socket::{AckError, EmitError};
use crate::adapter::{AckResponses, AdapterError, BroadcastOptions, Room, SocketId, SocketInfo};
use crate::protocol::socket_packet::{Packet, RESERVED_EVENTS};
use crate::protocol::{IntoArgs, Value};
use std::time::Duration;

#[derive(Clone)]
/// The targets of a broadcast, built by chaining `to`, `except`, `local`, `volatile`,
/// `timeout`, and the operation that ends the chain (`emit`, `emit_with_ack`,
/// `fetch_sockets`, `sockets_join`, `sockets_leave`, `disconnect_sockets`).
///
/// ```
/// let io = shoal::Server::builder().build();
/// // Everyone in room "game" but not in room "spectators", on every node.
/// let _ = io.to("game").except("spectators").emit("tick", 42);
/// // Only this node's sockets, dropped for clients that are behind.
/// let _ = io.local().volatile().emit("cursor", (10, 20));
/// ```
pub struct BroadcastOperator {
    ns: Namespace,
    opts: BroadcastOptions,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Namespace) -> BroadcastOperator {
        BroadcastOperator { ns, opts: BroadcastOptions::default() }
    }

    /// Targets sockets in `room` (several calls: the union, each socket once).
    pub fn to(mut self, room: impl Into<Room>) -> Self {
        let room = room.into();
        if !self.opts.rooms.contains(&room) {
            self.opts.rooms.push(room);
        }
        self
    }
    /// Same as `to` (the official `in`).
    pub fn within(self, room: impl Into<Room>) -> Self {
        self.to(room)
    }
    /// Excludes sockets in `room`.
    pub fn except(mut self, room: impl Into<Room>) -> Self {
        let room = room.into();
        if !self.opts.except.contains(&room) {
            self.opts.except.push(room);
        }
        self
    }
    /// Only this node's sockets.
    pub fn local(mut self) -> Self {
        self.opts.flags.local = true;
        self
    }
    /// May be dropped for clients that are not ready to receive.
    pub fn volatile(mut self) -> Self {
        self.opts.flags.volatile = true;
        self
    }
    /// How long `emit_with_ack` waits for the acks.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.flags.timeout = Some(timeout);
        self
    }

    /// Who it targets so far.
    pub fn options(&self) -> &BroadcastOptions {
        &self.opts
    }

    /// Sends an event to every targeted socket. The packet is encoded once.
    pub fn emit(self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        if RESERVED_EVENTS.contains(&event) {
            return Err(EmitError::ReservedEvent(event.to_owned()));
        }
        let packet = Packet::event(self.ns.name(), event, args.into_args(), None);
        self.ns.adapter().broadcast(packet, self.opts);
        Ok(())
    }

    /// Sends an event that every targeted socket should ack, and collects the acks (the
    /// first argument of each). Fails with `Timeout` if some did not answer in time;
    /// the partial answers are then in `emit_with_ack_responses`.
    pub async fn emit_with_ack(self, event: &str, args: impl IntoArgs) -> Result<Vec<Value>, AckError> {
        let r = self.emit_with_ack_responses(event, args).await?;
        if r.timed_out {
            return Err(AckError::Timeout);
        }
        Ok(r.responses)
    }

    /// Like `emit_with_ack`, but returns what arrived even on timeout.
    pub async fn emit_with_ack_responses(self, event: &str, args: impl IntoArgs) -> Result<AckResponses, AckError> {
        if RESERVED_EVENTS.contains(&event) {
            return Err(AckError::Emit(EmitError::ReservedEvent(event.to_owned())));
        }
        let packet = Packet::event(self.ns.name(), event, args.into_args(), None);
        self.ns.adapter().broadcast_with_ack(packet, self.opts).await.map_err(AckError::Adapter)
    }

    /// The targeted sockets, wherever they are connected.
    pub async fn fetch_sockets(self) -> Result<Vec<RemoteSocket>, AdapterError> {
        let ns = self.ns.clone();
        let infos = self.ns.adapter().fetch_sockets(self.opts).await?;
        Ok(infos.into_iter().map(|info| RemoteSocket { info, ns: ns.clone() }).collect())
    }
    /// Makes the targeted sockets join rooms.
    pub async fn sockets_join(self, rooms: impl IntoIterator<Item = impl Into<Room>>) -> Result<(), AdapterError> {
        let rooms = rooms.into_iter().map(Into::into).collect();
        self.ns.adapter().add_sockets(self.opts, rooms).await
    }
    /// Makes the targeted sockets leave rooms.
    pub async fn sockets_leave(self, rooms: impl IntoIterator<Item = impl Into<Room>>) -> Result<(), AdapterError> {
        let rooms = rooms.into_iter().map(Into::into).collect();
        self.ns.adapter().del_sockets(self.opts, rooms).await
    }
    /// Disconnects the targeted sockets (with `close`, their whole connections).
    pub async fn disconnect_sockets(self, close: bool) -> Result<(), AdapterError> {
        self.ns.adapter().disconnect_sockets(self.opts, close).await
    }
}

/// A socket returned by `fetch_sockets`, here or on another node. Its operations go
/// through the adapter, so they work wherever the socket is.
#[derive(Clone, Debug)]
pub struct RemoteSocket {
    info: SocketInfo,
    ns: Namespace,
}

impl RemoteSocket {
    /// The socket's id.
    pub fn id(&self) -> &SocketId {
        &self.info.id
    }
    /// Its rooms, its own id included.
    pub fn rooms(&self) -> &[Room] {
        &self.info.rooms
    }
    /// Its `socket.data`.
    pub fn data(&self) -> &Value {
        &self.info.data
    }
    /// Its handshake.
    pub fn handshake(&self) -> &Handshake {
        &self.info.handshake
    }
    fn only_me(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.ns.clone()).to(self.info.id.clone())
    }
    /// Sends the socket an event, wherever it is.
    pub fn emit(&self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        self.only_me().emit(event, args)
    }
    /// Makes the socket join `rooms`, wherever it is.
    pub async fn join(&self, rooms: impl IntoIterator<Item = impl Into<Room>>) -> Result<(), AdapterError> {
        self.only_me().sockets_join(rooms).await
    }
    /// Makes the socket leave `rooms`, wherever it is.
    pub async fn leave(&self, rooms: impl IntoIterator<Item = impl Into<Room>>) -> Result<(), AdapterError> {
        self.only_me().sockets_leave(rooms).await
    }
    /// Disconnects the socket, wherever it is (with `close`, its whole connection).
    pub async fn disconnect(&self, close: bool) -> Result<(), AdapterError> {
        self.only_me().disconnect_sockets(close).await
    }
}
