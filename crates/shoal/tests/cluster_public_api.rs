//! A whole cluster built from the public API alone (only `shoal::` paths), as an app that
//! embeds the library would: two nodes on a real `redis-server` this test starts on a
//! free port, joined with `ServerBuilder::cluster` and served with `shoal::serve_with`.
//! A client polls through the node that does not own its session; the request is
//! forwarded to the owner, the client's real address comes from the trusted proxy's
//! header, and a clashing node id, a broken cluster secret and a flood of forged sids
//! are handled as they must be.

mod common;

use common::redis_server::RedisServer as Redis;
use shoal::adapter::redis::RedisLink;
use shoal::cluster::{ClusterOptions, TrustedProxies};
use shoal::{Event, ServeOptions, Server, Socket, StartError, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Node {
    io: Server,
    addr: SocketAddr,
}

async fn start_node(redis: &Redis, id: &str, key: &str) -> Result<Node, StartError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let link = RedisLink::connect(&redis.url).await.unwrap();
    let io = Server::builder()
        .node_id(id)
        .trusted_proxies(TrustedProxies::parse(&["127.0.0.1"]).unwrap())
        .cluster(ClusterOptions { key: key.to_owned(), membership_ttl: Duration::from_secs(2), ..ClusterOptions::new(link, addr.to_string()) })
        .start()
        .await?;
    let node = id.to_owned();
    io.on_connection(move |socket: Socket| {
        let node = node.clone();
        async move {
            socket.on("whoami", move |socket: Socket, ev: Event| {
                let node = node.clone();
                async move {
                    let me = [("address".to_owned(), Value::from(socket.handshake().address.as_str())), ("node".to_owned(), Value::from(node.as_str()))];
                    ev.ack(Value::Object(me.into_iter().collect()));
                }
            });
        }
    });
    let options = ServeOptions { trusted_proxies: io.trusted_proxies().clone(), ..Default::default() };
    tokio::spawn(shoal::serve_with(listener, io.service(), std::future::pending(), options));
    Ok(Node { io, addr })
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
async fn http(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.expect("an answer within 10 s").unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// One metric's value from the Prometheus text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

async fn redis_calls(link: &RedisLink, command: &str) -> u64 {
    let info: String = link.query(redis::cmd("INFO").arg("commandstats"), "INFO").await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_from_the_public_api_forwards_to_the_owner() {
    let redis = Redis::start();
    let a = start_node(&redis, "a", "socket.io").await.unwrap();
    let b = start_node(&redis, "b", "socket.io").await.unwrap();
    assert_eq!(b.io.cluster_members().iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(b.io.cluster_members()[0].1, a.addr.to_string());

    // The handshake reaches a; every later request goes to b, which forwards it.
    let xff = [("X-Forwarded-For", "203.0.113.7")];
    let (status, open) = http(a.addr, "GET", "/socket.io/?EIO=4&transport=polling", &xff, "").await;
    assert_eq!(status, 200, "{open}");
    let sid = open.split("\"sid\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(sid.starts_with("a~"), "{sid}");
    let session = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(http(b.addr, "POST", &session, &xff, "40").await, (200, "ok".to_owned()));
    let (status, connected) = http(b.addr, "GET", &session, &xff, "").await;
    assert_eq!(status, 200);
    assert!(connected.starts_with("40{\"sid\":\""), "{connected}");
    assert_eq!(http(b.addr, "POST", &session, &xff, "421[\"whoami\"]").await, (200, "ok".to_owned()));
    let (_, ack) = http(b.addr, "GET", &session, &xff, "").await;
    assert_eq!(ack, "431[{\"address\":\"203.0.113.7\",\"node\":\"a\"}]", "the owner answered, with the client's real address");

    let text = b.io.metrics_text();
    assert_eq!(metric(&text, "shoal_forwarded_requests_total{transport=\"polling\"}"), 4.0, "{text}");
    assert_eq!(metric(&text, "shoal_cluster_nodes"), 2.0);
    let text = a.io.metrics_text();
    assert_eq!(metric(&text, "shoal_requests_served_total{from=\"peer\"}"), 4.0, "{text}");
    assert_eq!(metric(&text, "shoal_sessions"), 1.0);

    // A node id held by a live node is refused.
    match start_node(&redis, "a", "socket.io").await {
        Err(StartError::Cluster(why)) => assert!(why.contains("already in use"), "{why}"),
        other => panic!("a clashing node id must be refused, got {:?}", other.map(|n| n.addr)),
    }

    // A flood of made-up owners costs a bounded number of Redis lookups.
    let link = RedisLink::connect(&redis.url).await.unwrap();
    let before = redis_calls(&link, "get").await;
    for i in 0..300 {
        let (status, body) = http(b.addr, "GET", &format!("/socket.io/?EIO=4&transport=polling&sid=forged{i}~x"), &[], "").await;
        assert_eq!((status, body.as_str()), (400, "{\"code\":1,\"message\":\"Session ID unknown\"}"));
    }
    let lookups = redis_calls(&link, "get").await - before;
    assert!(lookups <= 2 * 20, "300 forged owners cost {lookups} Redis GETs (budget: 20 per second)");

    // a drains: it leaves at once, its session closes, b stops forwarding to it.
    a.io.drain(Duration::from_secs(1)).await;
    assert!(!a.io.health().ready);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while b.io.cluster_members().len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "b still sees {:?}", b.io.cluster_members());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = http(b.addr, "GET", &session, &[], "").await;
    assert_eq!(status, 400, "a session of a node that left is unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_secret_that_is_not_header_safe_is_refused_at_start() {
    let redis = Redis::start();
    let link = RedisLink::connect(&redis.url).await.unwrap();
    let _: () = link.query(redis::cmd("SET").arg("broken#shoal#secret").arg("two words\r\nx-evil: 1"), "SET").await.unwrap();
    match start_node(&redis, "n1", "broken").await {
        Err(StartError::Cluster(why)) => assert!(why.contains("secret") && why.contains("broken#shoal#secret"), "{why}"),
        other => panic!("a broken secret must be refused, got {:?}", other.map(|n| n.addr)),
    }
    // An invalid node id is a configuration error, before Redis is touched.
    match start_node(&redis, "a~b", "socket.io").await {
        Err(StartError::Config(why)) => assert!(why.contains("node id"), "{why}"),
        other => panic!("an invalid node id must be refused, got {:?}", other.map(|n| n.addr)),
    }
}

#[test]
fn trusted_proxies_parse_addresses_and_networks() {
    let t = TrustedProxies::parse(&["10.0.0.0/8", "::1"]).unwrap();
    assert!(t.contains("10.9.8.7".parse().unwrap()));
    assert!(t.contains("::1".parse().unwrap()));
    assert!(!t.contains("11.0.0.1".parse().unwrap()));
    assert!(TrustedProxies::parse(&["nginx"]).is_err());
}
