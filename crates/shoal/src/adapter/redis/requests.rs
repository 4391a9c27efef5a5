//! Requests this node makes of the other nodes, and the answers it waits for.
//!
//! Room operations and disconnects are published and not answered: this node applies
//! them to its own sockets at once, the others when the request arrives. Requests that
//! need answers (fetch_sockets, server-side events with acks, broadcasts with acks)
//! first ask Redis how many nodes listen on the request channel, then wait for that
//! many answers, never longer than their timeout: a node that died or never answers
//! shows up as [`AdapterError::Timeout`] with the number of answers missing.

use super::wire::{self, RequestType};
use super::RedisAdapter;
use crate::adapter::{AckNext, AckResponses, AdapterError, BroadcastFlags, BroadcastOptions, Room, SocketInfo};
use crate::protocol::socket_packet::Packet;
use crate::protocol::Value;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most requests of this node waiting for answers at once; more fail at once.
const MAX_PENDING: usize = 10_000;

/// A request of ours that waits for the other nodes' answers.
pub(super) enum Pending {
    /// fetch_sockets: the sockets gathered so far (ours first).
    Fetch { sockets: Vec<SocketInfo>, answers_missing: usize, done: Option<oneshot::Sender<Vec<SocketInfo>>> },
    /// server_side_emit with acks: one answer (the first ack argument) per other node.
    ServerSide { responses: Vec<Value>, answers_expected: usize, done: Option<oneshot::Sender<Vec<Value>>> },
}

/// Collects the acks of a broadcast that went to every node: the local recipients' and,
/// from the other nodes, how many recipients each has and their acks, until `servers`
/// nodes counted theirs and every ack arrived, or `deadline`.
pub(super) async fn collect_acks(
    local_count: usize,
    mut local_acks: crate::adapter::memory::AckReceiver,
    servers: usize,
    deadline: tokio::time::Instant,
    rx: &mut mpsc::UnboundedReceiver<AckEvent>,
) -> AckResponses {
    let mut expected = local_count;
    let mut servers_counted = 1;
    let mut responses = Vec::new();
    let mut local_done = local_count == 0;
    let mut timed_out = false;
    while !(servers_counted >= servers && responses.len() >= expected) {
        tokio::select! {
            next = local_acks.next(Some(deadline)), if !local_done => match next {
                AckNext::Ack(first) => responses.push(first),
                AckNext::Closed => local_done = true,
                AckNext::Timeout => { timed_out = true; break; }
            },
            event = rx.recv() => match event {
                Some(AckEvent::ClientCount(count)) => { expected += count; servers_counted += 1; }
                Some(AckEvent::Ack(first)) => responses.push(first),
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => { timed_out = true; break; }
        }
    }
    AckResponses { expected, timed_out: timed_out || responses.len() < expected || servers_counted < servers, responses }
}

impl Pending {
    /// Takes one node's answer (`message`; a server-side emit's answer is its field
    /// `answer_field`, which the classic and sharded formats name differently). True once
    /// every answer came: the waiter has them.
    pub(super) fn answered(&mut self, message: &Value, answer_field: &str) -> bool {
        match self {
            Pending::Fetch { sockets, answers_missing, done } => {
                *answers_missing = answers_missing.saturating_sub(1);
                if let Some(Value::Array(list)) = message.get("sockets") {
                    sockets.extend(list.iter().filter_map(wire::socket_info_from_value));
                }
                let finished = *answers_missing == 0;
                if finished {
                    if let Some(done) = done.take() {
                        let _ = done.send(std::mem::take(sockets));
                    }
                }
                finished
            }
            Pending::ServerSide { responses, answers_expected, done } => {
                responses.push(message.get(answer_field).cloned().unwrap_or(Value::Null));
                let finished = responses.len() >= *answers_expected;
                if finished {
                    if let Some(done) = done.take() {
                        let _ = done.send(std::mem::take(responses));
                    }
                }
                finished
            }
        }
    }
}

/// What another node tells us about one of our broadcasts with acks.
pub(super) enum AckEvent {
    /// How many of its sockets were sent the packet (so how many acks it will relay).
    ClientCount(usize),
    /// One socket's ack (its first argument).
    Ack(Value),
}

impl RedisAdapter {
    /// Publishes a room operation to the other nodes (this node applied it already).
    pub(super) fn publish_room_op(&self, kind: RequestType, opts: &BroadcastOptions, rooms: &[Room]) {
        if !opts.flags.local {
            let request = self.request(kind, vec![("opts", wire::opts_to_value(opts, false)), ("rooms", wire::rooms_value(rooms))]);
            self.publish_json(&self.channels.request, &request);
        }
    }

    /// Publishes a disconnect to the other nodes (this node applies it itself).
    pub(super) fn publish_disconnect(&self, opts: &BroadcastOptions, close: bool) {
        if !opts.flags.local {
            let request = self.request(RequestType::RemoteDisconnect, vec![("opts", wire::opts_to_value(opts, false)), ("close", Value::Bool(close))]);
            self.publish_json(&self.channels.request, &request);
        }
    }

    /// The matching sockets here and on every other node.
    pub(super) async fn fetch_sockets_everywhere(&self, opts: BroadcastOptions) -> Result<Vec<SocketInfo>, AdapterError> {
        let local = self.local.fetch_local(&opts);
        if opts.flags.local {
            return Ok(local);
        }
        let others = self.other_nodes().await?;
        if others == 0 {
            return Ok(local);
        }
        let request_id = wire::uid();
        let (done, wait) = oneshot::channel();
        self.register(&request_id, Pending::Fetch { sockets: local, answers_missing: others, done: Some(done) })?;
        let request = self.request(RequestType::RemoteFetch, vec![("requestId", Value::from(request_id.as_str())), ("opts", wire::opts_to_value(&opts, false))]);
        self.publish_json(&self.channels.request, &request);
        match tokio::time::timeout(self.options.requests_timeout, wait).await {
            Ok(Ok(sockets)) => Ok(sockets),
            _ => {
                let missing = match self.pending.lock().unwrap().remove(&request_id) {
                    Some(Pending::Fetch { answers_missing, .. }) => answers_missing,
                    _ => others,
                };
                Err(AdapterError::Timeout { waited: self.options.requests_timeout, missing })
            }
        }
    }

    /// Emits an event to the other nodes' handlers; with a timeout, waits for one ack
    /// from each of them.
    pub(super) async fn server_side_emit_to_others(&self, event: &str, args: Vec<Value>, timeout: Option<Duration>) -> Result<Vec<Value>, AdapterError> {
        let mut data = vec![Value::from(event)];
        data.extend(args);
        let Some(timeout) = timeout else {
            let request = self.request(RequestType::ServerSideEmit, vec![("data", Value::Array(data))]);
            self.publish_json(&self.channels.request, &request);
            return Ok(vec![]);
        };
        let others = self.other_nodes().await?;
        if others == 0 {
            return Ok(vec![]);
        }
        let request_id = wire::uid();
        let (done, wait) = oneshot::channel();
        self.register(&request_id, Pending::ServerSide { responses: vec![], answers_expected: others, done: Some(done) })?;
        let request = self.request(RequestType::ServerSideEmit, vec![("requestId", Value::from(request_id.as_str())), ("data", Value::Array(data))]);
        self.publish_json(&self.channels.request, &request);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(responses)) => Ok(responses),
            _ => {
                let missing = match self.pending.lock().unwrap().remove(&request_id) {
                    Some(Pending::ServerSide { responses, answers_expected, .. }) => answers_expected.saturating_sub(responses.len()),
                    _ => others,
                };
                Err(AdapterError::Timeout { waited: timeout, missing })
            }
        }
    }

    /// Broadcasts a packet that expects acks, here and on every other node, and
    /// collects the acks until every node told how many to expect and all of them
    /// arrived, or the timeout passed.
    pub(super) async fn broadcast_with_ack_everywhere(&self, packet: Packet, opts: BroadcastOptions) -> AckResponses {
        if opts.flags.local {
            return self.local.broadcast_with_ack_local(packet, &opts).await;
        }
        let timeout = opts.flags.timeout.unwrap_or(self.options.requests_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let request_id = wire::uid();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.ack_requests.lock().unwrap().insert(request_id.clone(), tx);
        let request = wire::object(vec![
            ("uid", Value::from(self.uid.as_str())),
            ("requestId", Value::from(request_id.as_str())),
            ("type", Value::from(RequestType::Broadcast as u8)),
            ("packet", wire::packet_to_value(&packet)),
            ("opts", wire::opts_to_value(&BroadcastOptions { flags: BroadcastFlags { timeout: Some(timeout), ..opts.flags.clone() }, ..opts.clone() }, true)),
        ]);
        // The nodes are counted before the request goes out, so that the count cannot
        // race with the answers (or with Redis going away once they arrived). Not knowing
        // how many nodes there are, the broadcast waits for its deadline.
        let servers = match self.link.numsub(&self.channels.request).await {
            Ok(n) => n.max(1),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the nodes for a broadcast with acks; waiting for its timeout");
                usize::MAX
            }
        };
        self.link.publish(self.channels.request.clone(), wire::encode_msgpack(&request));
        let (local_count, local_acks) = self.local.start_broadcast_with_ack(packet, &opts);
        let responses = collect_acks(local_count, local_acks, servers, deadline, &mut rx).await;
        self.ack_requests.lock().unwrap().remove(&request_id);
        responses
    }

    /// An answer to one of our requests (on the shared or our own response channel).
    pub(super) fn on_response(&self, payload: &[u8]) {
        let Ok(response) = wire::decode_message(payload) else {
            tracing::debug!("ignoring a malformed response");
            return;
        };
        let Some(id) = response.get("requestId").and_then(Value::as_str) else { return };
        if let Some(tx) = self.ack_requests.lock().unwrap().get(id) {
            match response.get("type").and_then(RequestType::from_value) {
                Some(RequestType::BroadcastClientCount) => {
                    let count = response.get("clientCount").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let _ = tx.send(AckEvent::ClientCount(count));
                }
                Some(RequestType::BroadcastAck) => {
                    let _ = tx.send(AckEvent::Ack(response.get("packet").cloned().unwrap_or(Value::Null)));
                }
                _ => {}
            }
            return;
        }
        let mut pending = self.pending.lock().unwrap();
        let Some(entry) = pending.get_mut(id) else { return };
        let finished = entry.answered(&response, "data");
        if finished {
            pending.remove(id);
        }
    }

    /// A request from this node: `{uid, type, ...fields}`.
    fn request(&self, kind: RequestType, fields: Vec<(&str, Value)>) -> Value {
        let mut pairs = vec![("uid", Value::from(self.uid.as_str())), ("type", Value::from(kind as u8))];
        pairs.extend(fields);
        wire::object(pairs)
    }

    fn register(&self, id: &str, entry: Pending) -> Result<(), AdapterError> {
        let mut pending = self.pending.lock().unwrap();
        if pending.len() >= MAX_PENDING {
            return Err(AdapterError::Unavailable(format!("{MAX_PENDING} cluster requests already waiting")));
        }
        pending.insert(id.to_owned(), entry);
        Ok(())
    }

    /// How many other nodes listen on this namespace's request channel.
    async fn other_nodes(&self) -> Result<usize, AdapterError> {
        let listening = self.link.numsub(&self.channels.request).await.map_err(AdapterError::Unavailable)?;
        Ok(listening.saturating_sub(1))
    }

    /// Requests and answers go as JSON, as the official adapter sends them.
    pub(super) fn publish_json(&self, channel: &str, message: &Value) {
        self.link.publish(channel.to_owned(), wire::to_json_text(message).into_bytes());
    }
}
