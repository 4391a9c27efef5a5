//! Engine.IO over raw HTTP and WebSocket: a client sends this, the server answers that.

mod common;

use common::*;
use shoal::engine::{Cors, EngineConfig, Transports};
use std::time::Duration;

fn config() -> EngineConfig {
    EngineConfig { node_id: "n1".into(), ..EngineConfig::default() }
}

const P: &str = "/engine.io/";

/// Waits (up to 2 s) until `sid`'s polling GET is in flight on the server, or not.
async fn until_get_in_flight(engine: &shoal::engine::Engine, sid: &str, in_flight: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while engine.session(sid).is_some_and(|s| s.polling_get_in_flight()) != in_flight {
        assert!(tokio::time::Instant::now() < deadline, "the GET of {sid} is not {}", if in_flight { "in flight" } else { "released" });
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A new polling session, and a GET of it left waiting on the server.
async fn session_with_pending_get(addr: std::net::SocketAddr, engine: &shoal::engine::Engine) -> (String, tokio::task::JoinHandle<HttpResponse>) {
    let sid = polling_handshake(addr, P).await;
    let url = format!("{P}?EIO=4&transport=polling&sid={sid}");
    let pending = tokio::spawn({
        let url = url.clone();
        async move { get(addr, &url).await }
    });
    until_get_in_flight(engine, &sid, true).await;
    (url, pending)
}

#[tokio::test]
async fn polling_handshake_has_the_five_fields_and_an_owner_prefixed_sid() {
    let (addr, _) = serve_echo_engine(config()).await;
    let res = get(addr, "/engine.io/?EIO=4&transport=polling").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/plain; charset=UTF-8"));
    let open: serde_json::Value = serde_json::from_str(&res.text()[1..]).unwrap();
    let keys: Vec<&str> = open.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5);
    for k in ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"] {
        assert!(keys.contains(&k), "missing {k}");
    }
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open["pingInterval"], 25000);
    assert_eq!(open["maxPayload"], 1_000_000);
    assert!(open["sid"].as_str().unwrap().starts_with("n1~"));
}

#[tokio::test]
async fn error_answers_carry_the_protocol_codes() {
    let (addr, _) = serve_echo_engine(config()).await;
    let cases = [
        ("GET", "/engine.io/?EIO=4&transport=carrier-pigeon", 400, 0, "Transport unknown"),
        ("GET", "/engine.io/?EIO=4&transport=polling&sid=nope", 400, 1, "Session ID unknown"),
        ("POST", "/engine.io/?EIO=4&transport=polling", 400, 2, "Bad handshake method"),
        ("GET", "/engine.io/?EIO=4&transport=websocket", 400, 3, "Bad request"),
        ("GET", "/engine.io/?EIO=3&transport=polling", 400, 5, "Unsupported protocol version"),
        ("GET", "/engine.io/?transport=polling", 400, 5, "Unsupported protocol version"),
    ];
    for (method, path, status, code, message) in cases {
        let res = http(addr, method, path, &[], b"").await;
        assert_eq!(res.status, status, "{method} {path}");
        assert_eq!(res.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(body, serde_json::json!({"code": code, "message": message}), "{method} {path}");
    }
}

#[tokio::test]
async fn allow_request_refuses_with_403_and_its_message() {
    let mut cfg = config();
    cfg.allow_request = Some(std::sync::Arc::new(|parts: &http::request::Parts| {
        if parts.headers.get("x-token").is_some_and(|v| v == "ok") {
            Ok(())
        } else {
            Err("token required".into())
        }
    }));
    let (addr, _) = serve_echo_engine(cfg).await;
    let res = get(addr, "/engine.io/?EIO=4&transport=polling").await;
    assert_eq!(res.status, 403);
    assert_eq!(res.text(), r#"{"code":4,"message":"token required"}"#);
    let res = http(addr, "GET", "/engine.io/?EIO=4&transport=polling", &[("X-Token", "ok")], b"").await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn polling_post_then_get_returns_every_packet_in_one_payload() {
    let (addr, _) = serve_echo_engine(config()).await;
    let sid = polling_handshake(addr, P).await;
    let url = format!("{P}?EIO=4&transport=polling&sid={sid}");
    let res = post(addr, &url, b"4hello\x1ebAQIDBA==\x1e4\xc3\xa9t\xc3\xa9").await;
    assert_eq!((res.status, res.text().as_str()), (200, "ok"));
    assert_eq!(res.header("content-type"), Some("text/html"));
    let res = get(addr, &url).await;
    assert_eq!(res.text(), "4hello\x1ebAQIDBA==\x1e4été");
}

#[tokio::test]
async fn polling_body_over_max_payload_is_413_and_the_session_lives() {
    let (addr, _) = serve_echo_engine(EngineConfig { max_payload: 100, ..config() }).await;
    let sid = polling_handshake(addr, P).await;
    let url = format!("{P}?EIO=4&transport=polling&sid={sid}");
    let big = format!("4{}", "x".repeat(200));
    assert_eq!(post(addr, &url, big.as_bytes()).await.status, 413);
    assert_eq!(post(addr, &url, b"4small").await.text(), "ok");
    assert_eq!(get(addr, &url).await.text(), "4small");
}

#[tokio::test]
async fn a_second_concurrent_get_closes_the_session() {
    let (addr, engine) = serve_echo_engine(config()).await;
    let (url, first) = session_with_pending_get(addr, &engine).await;
    let second = get(addr, &url).await;
    assert_eq!(second.status, 400);
    let first = first.await.unwrap();
    assert_eq!((first.status, first.text().as_str()), (200, "1"));
    let body: serde_json::Value = serde_json::from_slice(&get(addr, &url).await.body).unwrap();
    assert_eq!(body["code"], 1);
}

#[tokio::test]
async fn invalid_polling_payload_closes_the_session() {
    let (addr, _) = serve_echo_engine(config()).await;
    for bad in [&b"abc"[..], b"4ok\x1e", b"\xff\xfe", b"bnot base64!"] {
        let sid = polling_handshake(addr, P).await;
        let url = format!("{P}?EIO=4&transport=polling&sid={sid}");
        post(addr, &url, bad).await;
        assert_eq!(get(addr, &url).await.status, 400, "{bad:?}");
    }
}

#[tokio::test]
async fn polling_ping_then_timeout() {
    let cfg = EngineConfig { ping_interval: Duration::from_millis(100), ping_timeout: Duration::from_millis(100), ..config() };
    let (addr, engine) = serve_echo_engine(cfg).await;
    let sid = polling_handshake(addr, P).await;
    let url = format!("{P}?EIO=4&transport=polling&sid={sid}");
    assert_eq!(get(addr, &url).await.text(), "2");
    assert_eq!(post(addr, &url, b"3").await.text(), "ok");
    assert_eq!(get(addr, &url).await.text(), "2");
    // Unanswered, the ping times out 100 ms after it was sent: the session is still
    // there now, and gone within a deadline (a loaded machine may run the timer late).
    let pinged = tokio::time::Instant::now();
    assert_eq!(engine.session_count(), 1, "closed before its ping timeout");
    while engine.session_count() > 0 {
        assert!(pinged.elapsed() < Duration::from_secs(2), "no ping timeout within 2 s of a 100 ms timeout");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(get(addr, &url).await.status, 400);
}

#[tokio::test]
async fn websocket_only_session_echoes_text_and_binary() {
    let (addr, _) = serve_echo_engine(config()).await;
    let mut ws = ws_connect(addr, "/engine.io/?EIO=4&transport=websocket").await;
    let open = next_text(&mut ws).await.unwrap();
    let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(open["upgrades"], serde_json::json!([]));
    send_text(&mut ws, "4héllo").await;
    assert_eq!(next_non_ping(&mut ws).await.unwrap(), "4héllo");
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next_non_ping(&mut ws).await.unwrap(), "<binary [1, 2, 3]>");
    send_text(&mut ws, "abc").await;
    assert!(closed_within(&mut ws, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn websocket_message_over_max_payload_closes_the_session() {
    let (addr, engine) = serve_echo_engine(EngineConfig { max_payload: 1000, ..config() }).await;
    let mut ws = ws_connect(addr, "/engine.io/?EIO=4&transport=websocket").await;
    next_text(&mut ws).await.unwrap();
    send_text(&mut ws, &format!("4{}", "x".repeat(998))).await;
    assert_eq!(next_non_ping(&mut ws).await.unwrap().len(), 999);
    send_text(&mut ws, &format!("4{}", "x".repeat(5000))).await;
    assert!(closed_within(&mut ws, Duration::from_secs(2)).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while engine.session_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the session outlived its closed WebSocket");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn upgrade_from_polling_releases_the_pending_get_and_keeps_queued_packets() {
    let (addr, engine) = serve_echo_engine(config()).await;
    let (url, pending) = session_with_pending_get(addr, &engine).await;
    let sid = url.rsplit("sid=").next().unwrap();
    let mut ws = ws_connect(addr, &format!("{P}?EIO=4&transport=websocket&sid={sid}")).await;
    send_text(&mut ws, "2probe").await;
    assert_eq!(next_text(&mut ws).await.unwrap(), "3probe");
    assert_eq!(pending.await.unwrap().text(), "6");
    // Sent over polling while the upgrade is under way: must come out on the WebSocket.
    assert_eq!(post(addr, &url, b"4during").await.text(), "ok");
    send_text(&mut ws, "5").await;
    assert_eq!(next_non_ping(&mut ws).await.unwrap(), "4during");
    send_text(&mut ws, "4after").await;
    assert_eq!(next_non_ping(&mut ws).await.unwrap(), "4after");
    assert_eq!(get(addr, &url).await.status, 400, "polling is over for this session");
}

#[tokio::test]
async fn transports_option_limits_what_clients_may_use() {
    let (addr, _) = serve_echo_engine(EngineConfig { transports: Transports::WEBSOCKET, ..config() }).await;
    let res = get(addr, "/engine.io/?EIO=4&transport=polling").await;
    assert_eq!(res.status, 400);
    assert_eq!(res.text(), r#"{"code":0,"message":"Transport unknown"}"#);
    let mut ws = ws_connect(addr, "/engine.io/?EIO=4&transport=websocket").await;
    assert!(next_text(&mut ws).await.unwrap().starts_with("0{"));

    let (addr, _) = serve_echo_engine(EngineConfig { transports: Transports::POLLING, ..config() }).await;
    let res = get(addr, "/engine.io/?EIO=4&transport=polling").await;
    let open: serde_json::Value = serde_json::from_str(&res.text()[1..]).unwrap();
    assert_eq!(open["upgrades"], serde_json::json!([]));
}

#[tokio::test]
async fn cors_preflight_and_allowed_origins() {
    let cors = Cors { origins: vec!["https://app.example".into()], credentials: true };
    let (addr, _) = serve_echo_engine(EngineConfig { cors: Some(cors), ..config() }).await;
    let res = http(
        addr,
        "OPTIONS",
        "/engine.io/?EIO=4&transport=polling",
        &[("Origin", "https://app.example"), ("Access-Control-Request-Headers", "content-type")],
        b"",
    )
    .await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(res.header("access-control-allow-headers"), Some("content-type"));
    assert!(res.header("access-control-allow-methods").unwrap().contains("POST"));

    let ok = http(addr, "GET", "/engine.io/?EIO=4&transport=polling", &[("Origin", "https://app.example")], b"").await;
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://app.example"));
    let other = http(addr, "GET", "/engine.io/?EIO=4&transport=polling", &[("Origin", "https://evil.example")], b"").await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    let (addr, _) = serve_echo_engine(EngineConfig { cors: Some(Cors::default()), ..config() }).await;
    let any = http(addr, "GET", "/engine.io/?EIO=4&transport=polling", &[("Origin", "https://x.example")], b"").await;
    assert_eq!(any.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn client_close_packet_ends_the_session() {
    let (addr, engine) = serve_echo_engine(config()).await;
    let sid = polling_handshake(addr, P).await;
    let url = format!("{P}?EIO=4&transport=polling&sid={sid}");
    let pending = tokio::spawn({
        let url = url.clone();
        async move { get(addr, &url).await }
    });
    until_get_in_flight(&engine, &sid, true).await;
    post(addr, &url, b"1").await;
    assert_eq!(pending.await.unwrap().text(), "6");
    assert_eq!(get(addr, &url).await.status, 400);
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test]
async fn a_get_whose_client_went_away_is_released() {
    use tokio::io::AsyncWriteExt;
    let (addr, engine) = serve_echo_engine(config()).await;
    let sid = polling_handshake(addr, P).await;
    let url = format!("{P}?EIO=4&transport=polling&sid={sid}");
    // A long-poll whose connection dies (a client, or a forwarding node, that crashed).
    let mut gone = tokio::net::TcpStream::connect(addr).await.unwrap();
    gone.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    until_get_in_flight(&engine, &sid, true).await;
    drop(gone);
    until_get_in_flight(&engine, &sid, false).await;
    // The next GET is not an overlap: the session lives and gets its packets.
    assert_eq!(post(addr, &url, b"4still here").await.text(), "ok");
    let res = get(addr, &url).await;
    assert_eq!((res.status, res.text().as_str()), (200, "4still here"));
}

/// A GET retried through another node may reach the owner a moment before the owner saw
/// the first GET's connection close (the node carrying it died): when the first GET was
/// relayed, the second waits for it to end and is served, and the session lives.
#[tokio::test]
async fn a_get_that_arrives_just_before_the_relayed_one_is_dropped_is_served() {
    use tokio::io::AsyncWriteExt;
    let (addr, engine) = serve_echo_engine(config()).await;
    let sid = polling_handshake(addr, P).await;
    let url = format!("{P}?EIO=4&transport=polling&sid={sid}");
    let mut gone = tokio::net::TcpStream::connect(addr).await.unwrap();
    gone.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n{RELAYED_BY_TEST}: 1\r\n\r\n").as_bytes()).await.unwrap();
    until_get_in_flight(&engine, &sid, true).await;
    // The retry is on its way while the first GET is still in flight...
    let retry = tokio::spawn({
        let url = url.clone();
        async move { get(addr, &url).await }
    });
    // ...and the first one's connection closes within the grace.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!retry.is_finished(), "the retried GET was answered while the first was in flight");
    drop(gone);
    assert_eq!(post(addr, &url, b"4after the retry").await.text(), "ok");
    let res = retry.await.unwrap();
    assert_eq!((res.status, res.text().as_str()), (200, "4after the retry"));
    assert!(!engine.session(&sid).unwrap().is_closed());
}

/// A relayed GET that does not end within the grace (1 s): the second GET is an
/// overlap after all, refused, and the session closed.
#[tokio::test]
async fn a_get_overlapping_a_live_relayed_get_is_refused_after_the_grace() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, engine) = serve_echo_engine(config()).await;
    let sid = polling_handshake(addr, P).await;
    let url = format!("{P}?EIO=4&transport=polling&sid={sid}");
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    first.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n{RELAYED_BY_TEST}: 1\r\n\r\n").as_bytes()).await.unwrap();
    until_get_in_flight(&engine, &sid, true).await;
    let asked = tokio::time::Instant::now();
    let second = get(addr, &url).await;
    assert_eq!(second.status, 400);
    assert!(asked.elapsed() >= Duration::from_millis(1000), "refused after {:?}, before the grace ran out", asked.elapsed());
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), first.read(&mut answer)).await.expect("the first GET answered").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("\r\n\r\n1"), "{answer}");
}

/// A WebSocket client on a bare TCP stream, frames written and read by hand, so a test
/// can tell whether the server has sent something without reading it (`has_arrived`).
struct RawWs {
    tcp: tokio::net::TcpStream,
    /// Bytes read but not yet taken as frames.
    buf: Vec<u8>,
}

/// How a [`RawWs`] read ended when it did not bring a frame.
#[derive(Debug, PartialEq)]
enum RawEnd {
    /// The server ended the TCP connection (EOF or a reset).
    Closed,
}

impl RawWs {
    /// Sends the upgrade request for `sid` on `tcp` and reads the `101` answer.
    async fn open(tcp: tokio::net::TcpStream, addr: std::net::SocketAddr, sid: &str) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut ws = RawWs { tcp, buf: Vec::new() };
        let req = format!(
            "GET {P}?EIO=4&transport=websocket&sid={sid} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        ws.tcp.write_all(req.as_bytes()).await.unwrap();
        let end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), ws.tcp.read(&mut chunk)).await.expect("the upgrade answered in time").unwrap();
            assert!(n > 0, "closed before the upgrade was answered: {:?}", String::from_utf8_lossy(&ws.buf));
            ws.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        ws.buf.drain(..end);
        ws
    }

    /// A masked text frame, as a client must send it.
    fn text_frame(text: &str) -> Vec<u8> {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        assert!(text.len() < 126);
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// Sends text frames in one write.
    async fn send(&mut self, texts: &[&str]) {
        use tokio::io::AsyncWriteExt;
        let bytes: Vec<u8> = texts.iter().flat_map(|t| RawWs::text_frame(t)).collect();
        self.tcp.write_all(&bytes).await.unwrap();
    }

    /// The next frame from the server, `(opcode, payload)`, within 5 s.
    async fn next_frame(&mut self) -> Result<(u8, Vec<u8>), RawEnd> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 2 {
                let (op, len) = (self.buf[0] & 0x0f, (self.buf[1] & 0x7f) as usize);
                let (start, len) = match len {
                    126 if self.buf.len() >= 4 => (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize),
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n),
                };
                if start != usize::MAX && self.buf.len() >= start + len {
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return Ok((op, payload));
                }
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(5), self.tcp.read(&mut chunk)).await.expect("a frame or the close in time") {
                Ok(0) | Err(_) => return Err(RawEnd::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next text frame that is not a ping (`2`).
    async fn next_text(&mut self) -> String {
        loop {
            let (op, payload) = self.next_frame().await.expect("a text frame");
            assert_eq!(op, 1, "a text frame, got opcode {op} {payload:?}");
            let text = String::from_utf8(payload).unwrap();
            if text != "2" {
                return text;
            }
        }
    }

    /// True if the server has sent bytes not read yet: looks at the socket's receive
    /// queue directly (MSG_PEEK on a duplicate of its descriptor), not at tokio's idea
    /// of readiness, which lags behind the kernel.
    fn has_arrived(&self) -> bool {
        use std::os::fd::AsFd;
        if !self.buf.is_empty() {
            return true;
        }
        let dup = std::net::TcpStream::from(self.tcp.as_fd().try_clone_to_owned().unwrap());
        match dup.peek(&mut [0u8; 1]) {
            Ok(n) => n > 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("peek: {e}"),
        }
    }

    /// Reads to the end of the connection and returns the frames that came before it.
    async fn frames_until_closed(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Ok(frame) = self.next_frame().await {
            frames.push(frame);
        }
        frames
    }
}

/// The official suite's "ignores WebSocket connection with same sid after upgrade", as
/// a regression test for its race (fixed in 29a6e19): the server serves two connections
/// on two threads, so the refusal of a second WebSocket could overtake the first one's
/// `3probe`. Each round runs it twice: the second WebSocket opened once the upgrade is
/// over, and opened right after the first sent `2probe` and `5` without waiting (the
/// suite's newest form). Either way the second one gets no `3probe` (no frame but a
/// close) and is closed, the first was sent its `3probe` before that close, and the
/// session goes on over the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_websocket_for_an_upgraded_session_is_closed_without_a_probe_answer() {
    let (addr, engine) = serve_echo_engine(config()).await;
    for round in 0..50 {
        for during_upgrade in [false, true] {
            let at = format!("round {round}, second WebSocket {}", if during_upgrade { "during the upgrade" } else { "after it" });
            let sid = polling_handshake(addr, P).await;
            let mut first = RawWs::open(tokio::net::TcpStream::connect(addr).await.unwrap(), addr, &sid).await;
            // Connected ahead, so the second upgrade request follows the first's packets closely.
            let second_tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            if during_upgrade {
                first.send(&["2probe", "5"]).await;
            } else {
                first.send(&["2probe"]).await;
                assert_eq!(first.next_text().await, "3probe", "{at}");
                first.send(&["5"]).await;
            }
            let mut second = RawWs::open(second_tcp, addr, &sid).await;
            second.send(&["2probe"]).await;
            let frames = second.frames_until_closed().await;
            // A close frame (opcode 8), or nothing when the reset came first; never text.
            assert!(frames.iter().all(|(op, _)| *op == 8), "{at}: the second WebSocket got {frames:?}");
            if during_upgrade {
                assert!(first.has_arrived(), "{at}: the second WebSocket was closed before the first was sent its 3probe");
                assert_eq!(first.next_text().await, "3probe", "{at}");
            }
            first.send(&["4hello"]).await;
            assert_eq!(first.next_text().await, "4hello", "{at}");
            let session = engine.session(&sid).unwrap_or_else(|| panic!("{at}: the session is gone"));
            assert!(!session.is_closed(), "{at}: the session was closed");
            // Polling is over for it, as for any upgraded session.
            assert_eq!(get(addr, &format!("{P}?EIO=4&transport=polling&sid={sid}")).await.status, 400, "{at}");
        }
    }
}
