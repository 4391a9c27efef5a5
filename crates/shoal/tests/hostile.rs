//! Hostile input: each offending session is closed with a reason (or the request is
//! refused), nothing panics, and a well-behaved session beside it keeps working.

mod common;

use common::*;
use futures_util::SinkExt;
use shoal::{Event, Server, ServerBuilder, ServeOptions, Socket};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn echo_server() -> Server {
    let io = Server::builder().connect_timeout(Duration::from_millis(500)).max_buffered_bytes(256 * 1024).build();
    io.on_connection(|socket: Socket| async move {
        socket.on("echo", |socket: Socket, ev: Event| async move {
            if ev.wants_ack() {
                ev.ack(ev.args.clone());
            } else {
                let _ = socket.emit("echo", ev.args.clone());
            }
        });
        socket.on("flood-me", |socket: Socket, _ev: Event| async move {
            // Far more than a client that does not read can take.
            let chunk = "y".repeat(64 * 1024);
            for _ in 0..200 {
                if socket.emit("chunk", chunk.as_str()).is_err() {
                    break;
                }
            }
        });
    });
    io
}

/// A healthy client still gets its echo.
async fn assert_healthy(ws: &mut Ws) {
    send_text(ws, "42[\"echo\",\"still here\"]").await;
    assert_eq!(next_non_ping(ws).await.as_deref(), Some("42[\"echo\",\"still here\"]"));
}

#[tokio::test]
async fn malformed_socket_io_packets_close_only_their_session() {
    let io = echo_server();
    let addr = serve_io(&io).await;
    let mut good = sio_connect(addr).await;
    let deep = format!("42[\"echo\",{}1{}]", "[".repeat(5000), "]".repeat(5000));
    let bad: Vec<String> = vec![
        "4abc".into(),
        "42{}".into(),
        "42abc[\"echo\"]".into(),
        "42[\"echo\"".into(),
        "42[\"connect\"]".into(),
        "4".into(),
        "49[\"x\"]".into(),
        "43[\"no id\"]".into(),
        "42/nowhere,[\"echo\"]".into(),
        "40".into(), // a second CONNECT to `/`
        "44{\"message\":\"client may not send this\"}".into(),
        "499999999999999999999999[\"echo\"]".into(),
        "451000000-[\"echo\"]".into(),
        "4511-[\"echo\"]".into(),
        deep,
    ];
    for packet in bad {
        let mut ws = sio_connect(addr).await;
        send_text(&mut ws, &packet).await;
        assert!(closed_within(&mut ws, Duration::from_secs(2)).await, "not closed after {:.40}", packet);
    }
    assert_healthy(&mut good).await;
}

#[tokio::test]
async fn bad_binary_sequences_close_the_session() {
    let io = echo_server();
    let addr = serve_io(&io).await;
    // Binary frame nobody announced.
    let mut ws = sio_connect(addr).await;
    ws.send(WsMessage::binary(vec![1u8, 2])).await.unwrap();
    assert!(closed_within(&mut ws, Duration::from_secs(2)).await);
    // Text frame while attachments are still due.
    let mut ws = sio_connect(addr).await;
    send_text(&mut ws, "452-[\"echo\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]").await;
    ws.send(WsMessage::binary(vec![1u8])).await.unwrap();
    send_text(&mut ws, "42[\"echo\"]").await;
    assert!(closed_within(&mut ws, Duration::from_secs(2)).await);
    // Placeholder pointing past the attachments.
    let mut ws = sio_connect(addr).await;
    send_text(&mut ws, "451-[\"echo\",{\"_placeholder\":true,\"num\":7}]").await;
    ws.send(WsMessage::binary(vec![1u8])).await.unwrap();
    assert!(closed_within(&mut ws, Duration::from_secs(2)).await);
    // A correct binary event still round-trips.
    let mut ws = sio_connect(addr).await;
    send_text(&mut ws, "451-[\"echo\",{\"_placeholder\":true,\"num\":0}]").await;
    ws.send(WsMessage::binary(vec![9u8, 8])).await.unwrap();
    assert_eq!(next_non_ping(&mut ws).await.unwrap(), "451-[\"echo\",{\"_placeholder\":true,\"num\":0}]");
    assert_eq!(next_non_ping(&mut ws).await.unwrap(), "<binary [9, 8]>");
}

#[tokio::test]
async fn invalid_utf8_over_polling_is_refused() {
    let io = echo_server();
    let addr = serve_io(&io).await;
    let sid = polling_handshake(addr, "/socket.io/").await;
    let url = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(post(addr, &url, b"40").await.text(), "ok");
    let res = post(addr, &url, b"42[\"echo\",\"\xff\xfe\"]").await;
    assert_eq!(res.status, 400);
    assert_eq!(get(addr, &url).await.status, 400, "the session is gone");
}

#[tokio::test]
async fn websocket_that_never_connects_is_closed_after_connect_timeout() {
    let io = echo_server();
    let addr = serve_io(&io).await;
    let mut ws = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await;
    assert!(next_text(&mut ws).await.unwrap().starts_with("0{"));
    let started = std::time::Instant::now();
    assert!(closed_within(&mut ws, Duration::from_secs(3)).await);
    assert!(started.elapsed() >= Duration::from_millis(400), "closed too early: {:?}", started.elapsed());
    assert_eq!(io.session_count(), 0);
}

#[tokio::test]
async fn half_sent_requests_are_dropped_after_the_header_deadline() {
    let io = echo_server();
    let addr = serve_io_with(&io, ServeOptions { header_read_timeout: Duration::from_millis(300), ..Default::default() }).await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a half-sent request open");
    let mut good = sio_connect(addr).await;
    assert_healthy(&mut good).await;
}

#[tokio::test]
async fn idle_connections_that_send_nothing_are_dropped() {
    let io = echo_server();
    let addr = serve_io_with(&io, ServeOptions { header_read_timeout: Duration::from_millis(300), ..Default::default() }).await;
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), idle.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a silent connection open");
}

#[tokio::test]
async fn a_polling_body_that_never_ends_is_refused_and_frees_the_session() {
    let io = Server::builder().request_body_timeout(Duration::from_millis(300)).build();
    let addr = serve_io(&io).await;
    let sid = polling_handshake(addr, "/socket.io/").await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n40");
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), slow.read(&mut buf)).await.expect("an answer in time").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&buf[..n]));
}

#[tokio::test]
async fn sessions_beyond_the_limit_are_refused() {
    let io = Server::builder().max_sessions(3).build();
    let addr = serve_io(&io).await;
    for _ in 0..3 {
        polling_handshake(addr, "/socket.io/").await;
    }
    let res = get(addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(res.status, 403);
    assert_eq!(res.text(), r#"{"code":4,"message":"Too many sessions"}"#);
}

/// The `shoal_limit_hits_total{limit="<limit>"}` count in the node's metrics.
fn limit_hits(io: &Server, limit: &str) -> u64 {
    let text = io.metrics_text();
    let prefix = format!("shoal_limit_hits_total{{limit=\"{limit}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {limit} series in:\n{text}"));
    line[prefix.len()..].trim().parse().unwrap()
}

#[tokio::test]
async fn a_flood_of_tiny_frames_does_not_hurt_other_sessions() {
    let io = echo_server();
    let addr = serve_io(&io).await;
    let mut good = sio_connect(addr).await;
    let mut flooder = sio_connect(addr).await;
    let started = std::time::Instant::now();
    for i in 0..20_000 {
        if flooder.feed(WsMessage::text(format!("42[\"nothing\",{i}]"))).await.is_err() {
            break;
        }
    }
    let _ = flooder.flush().await;
    // Every echo of a healthy client comes back, in order, while the flood is handled.
    for i in 0..50 {
        send_text(&mut good, &format!("42[\"echo\",{i}]")).await;
    }
    for i in 0..50 {
        assert_eq!(next_non_ping(&mut good).await, Some(format!("42[\"echo\",{i}]")), "echo {i}");
    }
    // The flood went over the flooder's event rate (100/s, bursts of 500): all but the
    // burst and what refilled meanwhile were dropped, and counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let allowed = |elapsed: Duration| 500 + (elapsed.as_secs_f64() * 100.0).ceil() as u64;
    loop {
        let dropped = limit_hits(&io, "event_rate_limit");
        if dropped + allowed(started.elapsed()) >= 20_000 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {dropped} of 20000 flood events dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_its_queue_freed() {
    let io = echo_server();
    let addr = serve_io(&io).await;
    let mut good = sio_connect(addr).await;
    // A raw TCP client that upgrades, connects, asks for a flood, then never reads.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.set_nodelay(true).unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"), &mut raw)
        .await
        .unwrap();
    let open = next_text_raw(&mut ws).await;
    let sid = open.strip_prefix("0{\"sid\":\"").and_then(|r| r.split('"').next()).unwrap_or_else(|| panic!("open packet: {open}")).to_owned();
    let session = io.engine().session(&sid).expect("the session is open");
    ws.send(WsMessage::text("40")).await.unwrap();
    ws.send(WsMessage::text("42[\"flood-me\"]")).await.unwrap();
    // Stop reading. The server must drop the session as too slow, and free its queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !session.is_closed() {
        assert!(tokio::time::Instant::now() < deadline, "slow client was never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(session.close_reason(), Some(shoal::engine::CloseReason::SlowClient));
    assert_eq!(session.buffered_bytes(), 0, "the queue of a dropped slow client is freed");
    assert!(io.engine().session(&sid).is_none(), "the session left the table");
    assert_eq!(io.session_count(), 1);
    assert_eq!(limit_hits(&io, "max_buffered_bytes"), 1);
    assert_healthy(&mut good).await;
}

/// The next text frame, within 5 s.
async fn next_text_raw<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String {
    use futures_util::StreamExt;
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame within 5 s") {
        Some(Ok(WsMessage::Text(t))) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// A request head over the limit (16 KiB by default) is answered 431, as Node answers,
/// and the node goes on serving.
#[tokio::test]
async fn an_oversized_request_head_is_answered_431() {
    let io = shoal::Server::builder().build();
    let addr = serve_io(&io).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let big = "a".repeat(100 * 1024);
    let req = format!("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The server may stop reading before all of it is written.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer)).await.expect("an answer within 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(io.metrics_text().contains("shoal_limit_hits_total{limit=\"max_header_bytes\"} 1\n"), "{}", io.metrics_text());
    // A head just under the limit is served.
    let fine = "a".repeat(12 * 1024);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {fine}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 "));
}

/// A WebSocket message over `max_payload` closes its session with 1009 and is counted;
/// the session beside it goes on.
#[tokio::test]
async fn an_oversized_websocket_message_closes_its_session_and_is_counted() {
    let (io, mut good, mut bad) = echo_pair(Server::builder().max_payload(10_000)).await;
    bad.send(WsMessage::Text(format!("42[\"echo\",\"{}\"]", "x".repeat(20_000)).into())).await.unwrap();
    assert!(closed_within(&mut bad, Duration::from_secs(2)).await, "the oversized message did not close its session");
    let metrics = io.metrics_text();
    assert!(metrics.contains("shoal_limit_hits_total{limit=\"max_payload\"} 1\n"), "{metrics}");
    send_text(&mut good, "421[\"echo\",\"still here\"]").await;
    assert_eq!(next_non_ping(&mut good).await.as_deref(), Some("431[\"still here\"]"));
}

/// Past `max_connections` open connections, a new one is closed as soon as it is
/// accepted, unanswered, and counted; the ones inside are served on.
#[tokio::test]
async fn a_connection_past_max_connections_is_closed_unanswered_and_counted() {
    let io = Server::builder().build();
    let addr = serve_io_with(&io, ServeOptions { max_connections: 2, ..io.serve_options() }).await;
    let request = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut inside = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer)).await.expect("served in time").unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        inside.push(stream);
    }
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer)).await.expect("closed in time");
    assert!(answer.is_empty(), "the third connection got {:?}", String::from_utf8_lossy(&answer));
    assert_eq!(limit_hits(&io, "max_connections"), 1);
}

/// A binary packet announcing more attachments than `max_attachments` closes its
/// session as a parse error and is counted; at the limit it is taken, and the session
/// beside it goes on.
#[tokio::test]
async fn a_packet_over_max_attachments_closes_its_session_and_is_counted() {
    let (io, mut good, mut bad) = echo_pair(Server::builder().max_attachments(2)).await;
    send_text(&mut good, r#"452-1["echo",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#).await;
    good.send(WsMessage::binary(vec![1u8])).await.unwrap();
    good.send(WsMessage::binary(vec![2u8])).await.unwrap();
    assert_eq!(next_non_ping(&mut good).await.as_deref(), Some(r#"462-1[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#));
    assert_eq!(next_non_ping(&mut good).await.as_deref(), Some("<binary [1]>"));
    assert_eq!(next_non_ping(&mut good).await.as_deref(), Some("<binary [2]>"));
    send_text(&mut bad, r#"453-["echo",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}]"#).await;
    assert!(closed_within(&mut bad, Duration::from_secs(2)).await, "three attachments did not close the session");
    assert_eq!(limit_hits(&io, "max_attachments"), 1);
    send_text(&mut good, "421[\"echo\",\"still here\"]").await;
    assert_eq!(next_non_ping(&mut good).await.as_deref(), Some("431[\"still here\"]"));
}

/// A server from `builder` whose `echo` acks its arguments, served, and two sessions
/// connected to `/`: one to misbehave, one that must not notice.
async fn echo_pair(builder: ServerBuilder) -> (Server, Ws, Ws) {
    let io = builder.build();
    io.on_connection(|socket: Socket| async move {
        socket.on("echo", |_socket: Socket, ev: Event| async move {
            ev.ack(ev.args.clone());
        });
    });
    let addr = serve_io(&io).await;
    let (good, bad) = (sio_connect(addr).await, sio_connect(addr).await);
    (io, good, bad)
}
