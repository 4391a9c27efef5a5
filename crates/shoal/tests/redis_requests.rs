//! The Redis adapter's request path, between two shoal nodes in one process, over a real
//! `redis-server` that each test starts on a free port: a node asks, the other answers
//! (or, for the timeout test, a silent listener never does).
#![cfg(feature = "redis")]

mod common;

use common::redis_server::RedisServer;
use common::*;
use serde_json::json;
use shoal::adapter::redis::{factory, RedisLink, RedisOptions};
use shoal::adapter::{AckResponses, AdapterError, ServerAck};
use shoal::{Server, Socket, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The request channel of `/` under the default key: every node listens on it.
const REQUEST_CHANNEL: &str = "socket.io-request#/#";

struct Node {
    io: Server,
    addr: SocketAddr,
    link: Arc<RedisLink>,
}

async fn node(redis: &RedisServer, name: &'static str, requests_timeout: Duration) -> Node {
    let link = RedisLink::connect(&redis.url).await.unwrap();
    let options = RedisOptions { requests_timeout, ..RedisOptions::default() };
    let io = Server::builder().adapter(factory(link.clone(), options)).build();
    io.on_connection(move |socket: Socket| async move {
        let handshake = socket.handshake().clone();
        if let Some(team) = handshake.query.get("team") {
            socket.join(team.as_str());
        }
        let token = handshake.auth.get("token").cloned().unwrap_or(Value::Null);
        socket.set_data(Value::from(json!({ "node": name, "token": token.to_json() })));
        let _ = socket.emit("ready", ());
    });
    let addr = serve_io(&io).await;
    Node { io, addr, link }
}

/// Waits until `count` clients listen on the request channel (nodes subscribe in the
/// background; Redis only tells by being asked).
async fn until_listening(link: &RedisLink, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while link.numsub(REQUEST_CHANNEL).await.unwrap() != count {
        assert!(tokio::time::Instant::now() < deadline, "{count} listeners on {REQUEST_CHANNEL} within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two nodes on one Redis, both subscribed.
async fn two_nodes(redis: &RedisServer, requests_timeout: Duration) -> (Node, Node) {
    let a = node(redis, "a", requests_timeout).await;
    let b = node(redis, "b", requests_timeout).await;
    until_listening(&a.link, 2).await;
    (a, b)
}

/// A Socket.IO client on `/` of `node`, with `?team=..`, an `x-team` header and
/// `{token}` as auth. Returns it with its socket id, once the server said `ready`.
async fn client(node: &Node, team: &str, token: &str) -> (Ws, String) {
    let mut request = format!("ws://{}/socket.io/?EIO=4&transport=websocket&team={team}", node.addr).into_client_request().unwrap();
    request.headers_mut().insert("x-team", team.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let open = next_text(&mut ws).await.unwrap();
    assert!(open.starts_with("0{"), "{open}");
    send_text(&mut ws, &format!("40{{\"token\":\"{token}\"}}")).await;
    let connect = next_non_ping(&mut ws).await.unwrap();
    let answer: serde_json::Value = serde_json::from_str(connect.strip_prefix("40").expect("a CONNECT answer")).unwrap();
    let id = answer["sid"].as_str().unwrap().to_owned();
    assert_eq!(next_non_ping(&mut ws).await.as_deref(), Some("42[\"ready\"]"));
    (ws, id)
}

/// Answers the next event that asks for an ack with `answer`; returns the event's text.
async fn ack_next_event(ws: &mut Ws, answer: &str) -> String {
    let event = next_non_ping(ws).await.unwrap();
    let rest = event.strip_prefix("42").expect("an EVENT");
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(!digits.is_empty(), "the event asks for an ack: {event}");
    send_text(ws, &format!("43{digits}[\"{answer}\"]")).await;
    rest[digits.len()..].to_owned()
}

fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values
}

#[tokio::test]
async fn fetch_sockets_returns_the_other_nodes_sockets_with_their_state() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, Duration::from_secs(5)).await;
    let (_red, red_id) = client(&a, "red", "t-red").await;
    let (_blue, blue_id) = client(&b, "blue", "t-blue").await;

    let everywhere = a.io.of("/").fetch_sockets().await.unwrap();
    assert_eq!(sorted(everywhere.iter().map(|s| s.id().to_string()).collect()), sorted(vec![red_id.clone(), blue_id.clone()]));

    // The remote socket as node b knows it: id, rooms, data and the whole handshake.
    let remote = everywhere.iter().find(|s| **s.id() == *blue_id).unwrap();
    let original = b.io.of("/").local_socket(&blue_id).unwrap();
    assert_eq!(remote.rooms().iter().map(|r| r.to_string()).collect::<Vec<_>>(), sorted(vec![blue_id.clone(), "blue".into()]));
    assert_eq!(remote.data(), &Value::from(json!({ "node": "b", "token": "t-blue" })));
    assert_eq!(remote.handshake(), original.handshake());
    assert_eq!(remote.handshake().query.get("team").map(String::as_str), Some("blue"));
    assert_eq!(remote.handshake().headers.get("x-team").map(String::as_str), Some("blue"));
    assert_eq!(remote.handshake().auth, Value::from(json!({ "token": "t-blue" })));
    assert_eq!(remote.handshake().address, "127.0.0.1");

    // Targeting a room reaches only the node that has it; `local` only this node.
    let in_blue = a.io.to("blue").fetch_sockets().await.unwrap();
    assert_eq!(in_blue.iter().map(|s| s.id().to_string()).collect::<Vec<_>>(), vec![blue_id.clone()]);
    let local = a.io.local().fetch_sockets().await.unwrap();
    assert_eq!(local.iter().map(|s| s.id().to_string()).collect::<Vec<_>>(), vec![red_id]);
}

#[tokio::test]
async fn server_side_emit_reaches_the_other_node_and_brings_back_its_ack() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, Duration::from_secs(5)).await;
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    b.io.of("/").on_server_event("note", move |args: Vec<Value>, ack: Option<ServerAck>| {
        let heard_tx = heard_tx.clone();
        async move {
            let _ = heard_tx.send((args.clone(), ack.is_some()));
            if let Some(ack) = ack {
                let sum = args.iter().filter_map(Value::as_u64).sum::<u64>();
                ack.send(sum);
            }
        }
    });

    // Without an ack: delivered, nothing to wait for.
    a.io.of("/").server_side_emit("note", ("hello",)).await.unwrap();
    let (args, wanted_ack) = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await.unwrap().unwrap();
    assert_eq!((args, wanted_ack), (vec![Value::from("hello")], false));

    // With an ack: one answer per other node.
    let answers = a.io.of("/").server_side_emit_with_ack("note", (2, 3), Duration::from_secs(5)).await.unwrap();
    assert_eq!(answers, vec![Value::from(5)]);
    let (args, wanted_ack) = heard.recv().await.unwrap();
    assert_eq!((args, wanted_ack), (vec![Value::from(2), Value::from(3)], true));
}

#[tokio::test]
async fn broadcast_with_ack_counts_and_collects_acks_from_both_nodes() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, Duration::from_secs(5)).await;
    let (mut red, _) = client(&a, "red", "t-red").await;
    let (mut blue, _) = client(&b, "blue", "t-blue").await;

    let asking = tokio::spawn({
        let io = a.io.clone();
        async move { io.timeout(Duration::from_secs(5)).emit_with_ack_responses("question", 42).await.unwrap() }
    });
    assert_eq!(ack_next_event(&mut red, "from-red").await, "[\"question\",42]");
    assert_eq!(ack_next_event(&mut blue, "from-blue").await, "[\"question\",42]");
    let AckResponses { responses, expected, timed_out } = asking.await.unwrap();
    assert_eq!((expected, timed_out), (2, false));
    assert_eq!(sorted(responses.iter().map(|r| r.as_str().unwrap().to_owned()).collect()), vec!["from-blue", "from-red"]);
}

#[tokio::test]
async fn room_operations_and_disconnects_reach_the_other_node() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, Duration::from_secs(5)).await;
    let (_red, red_id) = client(&a, "red", "t-red").await;
    let (mut blue, blue_id) = client(&b, "blue", "t-blue").await;
    let rooms_on_b = || b.io.of("/").local_socket(&blue_id).unwrap().rooms().iter().map(|r| r.to_string()).collect::<Vec<_>>();

    // Node a publishes the join, then its fetch: node b gets them in that order, so
    // the fetch's answer already shows the join.
    a.io.to("blue").sockets_join(["vip"]).await.unwrap();
    let vips = a.io.to("vip").fetch_sockets().await.unwrap();
    assert_eq!(vips.iter().map(|s| s.id().to_string()).collect::<Vec<_>>(), vec![blue_id.clone()]);
    assert_eq!(vips[0].rooms().iter().map(|r| r.to_string()).collect::<Vec<_>>(), sorted(vec![blue_id.clone(), "blue".into(), "vip".into()]));
    assert_eq!(rooms_on_b(), sorted(vec![blue_id.clone(), "blue".into(), "vip".into()]));

    a.io.to("vip").sockets_leave(["blue"]).await.unwrap();
    let vips = a.io.to("vip").fetch_sockets().await.unwrap();
    assert_eq!(vips[0].rooms().iter().map(|r| r.to_string()).collect::<Vec<_>>(), sorted(vec![blue_id.clone(), "vip".into()]));
    assert!(a.io.to("blue").fetch_sockets().await.unwrap().is_empty());

    // A disconnect of the vips: the client on node b is told so; the one on a stays.
    a.io.to("vip").disconnect_sockets(false).await.unwrap();
    assert_eq!(next_non_ping(&mut blue).await.as_deref(), Some("41"));
    let left = a.io.of("/").fetch_sockets().await.unwrap();
    assert_eq!(left.iter().map(|s| s.id().to_string()).collect::<Vec<_>>(), vec![red_id]);
    assert!(b.io.of("/").local_socket(&blue_id).is_none());
}

#[tokio::test]
async fn a_request_times_out_when_a_node_does_not_answer() {
    let redis = RedisServer::start();
    let timeout = Duration::from_millis(300);
    let (a, b) = two_nodes(&redis, timeout).await;
    b.io.of("/").on_server_event("ping", |_args: Vec<Value>, ack: Option<ServerAck>| async move {
        if let Some(ack) = ack {
            ack.send("pong");
        }
    });
    let (mut red, _) = client(&a, "red", "t-red").await;
    let (mut blue, _) = client(&b, "blue", "t-blue").await;

    // A third listener on the request channel that never answers: a node that hangs.
    let silent = redis::Client::open(redis.url.as_str()).unwrap();
    let mut silent = silent.get_async_pubsub().await.unwrap();
    silent.subscribe(REQUEST_CHANNEL).await.unwrap();
    until_listening(&a.link, 3).await;

    assert_eq!(a.io.of("/").fetch_sockets().await.unwrap_err(), AdapterError::Timeout { waited: timeout, missing: 1 });
    assert_eq!(
        a.io.of("/").server_side_emit_with_ack("ping", (), timeout).await.unwrap_err(),
        AdapterError::Timeout { waited: timeout, missing: 1 }
    );

    // Both sockets ack, but the silent node never says how many acks it owes: the
    // broadcast ends at its timeout, with what arrived.
    let asking = tokio::spawn({
        let io = a.io.clone();
        async move { io.timeout(timeout).emit_with_ack_responses("question", ()).await.unwrap() }
    });
    ack_next_event(&mut red, "from-red").await;
    ack_next_event(&mut blue, "from-blue").await;
    let AckResponses { responses, expected, timed_out } = asking.await.unwrap();
    assert_eq!((expected, timed_out), (2, true));
    assert_eq!(sorted(responses.iter().map(|r| r.as_str().unwrap().to_owned()).collect()), vec!["from-blue", "from-red"]);
}
