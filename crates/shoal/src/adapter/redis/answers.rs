//! Requests of other nodes that this node answers: it looks at its own sockets only
//! (the room index, and the namespace through `LocalNamespace`) and publishes an
//! answer when the request has a request id. Room operations and disconnects are
//! applied and not answered (but for the older one-socket form); a broadcast with
//! acks is answered with a count, then relays each ack as it arrives.
//!
//! Nothing from the network is trusted: a request that cannot be read is dropped.

use super::wire::{self, RequestType};
use super::RedisAdapter;
use crate::adapter::{AckNext, Adapter, BroadcastOptions, Room, ServerAck, SocketId};
use crate::protocol::Value;

impl RedisAdapter {
    /// A request from another node (ours come back too, and are skipped but for
    /// the broadcasts with acks, which tell themselves apart by request id).
    pub(super) fn on_request(&self, payload: &[u8]) {
        let Ok(request) = wire::decode_message(payload) else {
            tracing::debug!("ignoring a malformed request");
            return;
        };
        let Some(kind) = request.get("type").and_then(RequestType::from_value) else { return };
        let request_id = request.get("requestId").and_then(Value::as_str).map(str::to_owned);
        let from_me = request.get("uid").and_then(Value::as_str) == Some(self.uid.as_str());
        let opts = wire::opts_from_value(request.get("opts"));
        match kind {
            RequestType::Sockets => {
                if from_me {
                    return;
                }
                let ids = self.local.local_rooms().matching(&BroadcastOptions { rooms: wire::rooms_list(request.get("rooms")), ..Default::default() });
                let response = wire::object(vec![("requestId", request_id.into()), ("sockets", wire::rooms_value(&ids))]);
                self.publish_response(&request, &response, false);
            }
            RequestType::AllRooms => {
                if from_me {
                    return;
                }
                let response = wire::object(vec![("requestId", request_id.into()), ("rooms", wire::rooms_value(&self.local.rooms()))]);
                self.publish_response(&request, &response, false);
            }
            RequestType::RemoteJoin | RequestType::RemoteLeave | RequestType::RemoteDisconnect => {
                // This node applied its own request when it made it.
                if from_me {
                    return;
                }
                if request.get("opts").is_some() {
                    let rooms = wire::rooms_list(request.get("rooms"));
                    match kind {
                        RequestType::RemoteJoin => self.local.add_sockets_local(&opts, &rooms),
                        RequestType::RemoteLeave => self.local.del_sockets_local(&opts, &rooms),
                        _ => self.local.disconnect_local(&opts, request.get("close").and_then(Value::as_bool).unwrap_or(false)),
                    }
                    return;
                }
                // The older form: one socket by id, answered when done.
                let Some(sid) = request.get("sid").and_then(Value::as_str) else { return };
                let (Some(ns), true) = (self.local.namespace(), self.local.local_rooms().has_socket(sid)) else { return };
                let sid = SocketId::from(sid);
                let room = Room::from(request.get("room").and_then(Value::as_str).unwrap_or_default());
                match kind {
                    RequestType::RemoteJoin => self.local.add_all(&sid, &[room]),
                    RequestType::RemoteLeave => self.local.del(&sid, &room),
                    _ => ns.disconnect(std::slice::from_ref(&sid), request.get("close").and_then(Value::as_bool).unwrap_or(false)),
                }
                if kind != RequestType::RemoteDisconnect {
                    ns.changed(&[sid]);
                }
                self.publish_response(&request, &wire::object(vec![("requestId", request_id.into())]), false);
            }
            RequestType::RemoteFetch => {
                if from_me {
                    return;
                }
                let sockets: Vec<Value> = self.local.fetch_local(&opts).into_iter().map(wire::socket_info_to_value).collect();
                let response = wire::object(vec![("requestId", request_id.into()), ("sockets", Value::Array(sockets))]);
                self.publish_response(&request, &response, false);
            }
            RequestType::ServerSideEmit => {
                if from_me {
                    return;
                }
                let Some(Value::Array(mut data)) = request.get("data").cloned() else { return };
                if data.is_empty() {
                    return;
                }
                let event = match data.remove(0) {
                    Value::String(s) => s,
                    _ => return,
                };
                let Some(ns) = self.local.namespace() else { return };
                let ack = request_id.map(|id| {
                    let adapter = self.weak_self.clone();
                    ServerAck::new(move |args: Vec<Value>| {
                        if let Some(adapter) = adapter.upgrade() {
                            let response = wire::object(vec![
                                ("type", Value::from(RequestType::ServerSideEmit as u8)),
                                ("requestId", Value::from(id)),
                                ("data", args.into_iter().next().unwrap_or(Value::Null)),
                            ]);
                            adapter.publish_json(&adapter.channels.response, &response);
                        }
                    })
                });
                ns.dispatch_server_event(&event, data, ack);
            }
            RequestType::Broadcast => {
                let Some(id) = request_id else { return };
                if self.ack_requests.lock().unwrap().contains_key(&id) {
                    return; // our own
                }
                let Some(packet) = request.get("packet").and_then(wire::packet_from_value) else { return };
                let (sent, mut acks) = self.local.start_broadcast_with_ack(packet, &opts);
                let count = wire::object(vec![
                    ("type", Value::from(RequestType::BroadcastClientCount as u8)),
                    ("requestId", Value::from(id.as_str())),
                    ("clientCount", Value::from(sent)),
                ]);
                self.publish_response(&request, &count, false);
                let adapter = self.weak_self.clone();
                let timeout = peer_ack_timeout(opts.flags.timeout, self.options.requests_timeout);
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + timeout;
                    for _ in 0..sent {
                        match acks.next(Some(deadline)).await {
                            AckNext::Ack(first) => {
                                let Some(adapter) = adapter.upgrade() else { return };
                                let ack = wire::object(vec![
                                    ("type", Value::from(RequestType::BroadcastAck as u8)),
                                    ("requestId", Value::from(id.as_str())),
                                    ("packet", first),
                                ]);
                                adapter.publish_response(&request, &ack, true);
                            }
                            AckNext::Closed | AckNext::Timeout => return,
                        }
                    }
                });
            }
            RequestType::BroadcastClientCount | RequestType::BroadcastAck => {}
        }
    }

    /// Answers a request: on the shared response channel, or on the requester's own
    /// when `publish_on_specific_response_channel` is set (as the official adapter).
    fn publish_response(&self, request: &Value, response: &Value, msgpack: bool) {
        let channel = match (self.options.publish_on_specific_response_channel, request.get("uid").and_then(Value::as_str)) {
            (true, Some(uid)) => format!("{}{uid}#", self.channels.response),
            _ => self.channels.response.clone(),
        };
        if msgpack {
            self.link.publish(channel, wire::encode_msgpack(response));
        } else {
            self.publish_json(&channel, response);
        }
    }
}

/// Floor of the longest wait a peer may ask for (see [`peer_ack_timeout`]).
const PEER_ACK_TIMEOUT_FLOOR: std::time::Duration = std::time::Duration::from_secs(60);

/// How long this node relays the acks of a peer's broadcast: the timeout the peer asked
/// for, or this node's `requests_timeout` when it asked for none, and never more than the
/// larger of `requests_timeout` and 60 s. Each such wait holds a task and an ack slot on
/// every socket it reached, so a peer (or anything publishing on the channels) cannot make
/// the node hold them for hours.
fn peer_ack_timeout(asked: Option<std::time::Duration>, requests_timeout: std::time::Duration) -> std::time::Duration {
    asked.unwrap_or(requests_timeout).min(requests_timeout.max(PEER_ACK_TIMEOUT_FLOOR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_peer_cannot_ask_for_a_longer_ack_wait_than_the_bound() {
        let five = Duration::from_secs(5);
        assert_eq!(peer_ack_timeout(None, five), five);
        assert_eq!(peer_ack_timeout(Some(Duration::from_millis(300)), five), Duration::from_millis(300));
        assert_eq!(peer_ack_timeout(Some(Duration::from_secs(30)), five), Duration::from_secs(30));
        assert_eq!(peer_ack_timeout(Some(Duration::from_secs(3600)), five), Duration::from_secs(60));
        assert_eq!(peer_ack_timeout(Some(wire::MAX_TIMEOUT), five), Duration::from_secs(60));
        // A node configured to wait longer allows its own timeout.
        let long = Duration::from_secs(120);
        assert_eq!(peer_ack_timeout(Some(Duration::from_secs(3600)), long), long);
    }
}
