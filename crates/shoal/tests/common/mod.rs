//! Test helpers: start a real server on a free loopback port, and speak raw HTTP/1.1
//! and WebSocket to it, so tests see exactly the bytes a client would.
#![allow(dead_code)]

pub mod redis_server;

use futures_util::{SinkExt, StreamExt};
use shoal::engine::{CloseReason, Engine, EngineConfig, EngineHandler, Message, Session};
use shoal::protocol::engine_packet::{OutPacket, PacketType};
use shoal::{Server, ServeOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Serves a Socket.IO server on 127.0.0.1:<free port>.
pub async fn serve_io(io: &Server) -> SocketAddr {
    serve_io_with(io, io.serve_options()).await
}

pub async fn serve_io_with(io: &Server, options: ServeOptions) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = io.service();
    tokio::spawn(async move { shoal::serve_with(listener, svc, std::future::pending(), options).await });
    addr
}

/// An Engine.IO handler that echoes every message.
pub struct Echo;
impl EngineHandler for Echo {
    fn on_open(&self, _s: &Arc<Session>) {}
    fn on_message(&self, s: &Arc<Session>, m: Message) {
        let _ = s.send(match m {
            Message::Text(t) => OutPacket::text(PacketType::Message, &t),
            Message::Binary(b) => OutPacket::Binary(b),
        });
    }
    fn on_close(&self, _s: &Session, _r: CloseReason) {}
}

/// A request header by which the tests play a cluster's ingress: a request carrying it
/// reaches the engine marked [`shoal::engine::Relayed`], as a request forwarded by another
/// node does.
pub const RELAYED_BY_TEST: &str = "x-test-relayed";

/// Serves a raw echoing Engine.IO server at `/engine.io/`.
pub async fn serve_echo_engine(config: EngineConfig) -> (SocketAddr, Engine) {
    let engine = Engine::new(config, Arc::new(Echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let e = engine.clone();
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let e = e.clone();
        if req.headers().contains_key(RELAYED_BY_TEST) {
            req.extensions_mut().insert(shoal::engine::Relayed);
        }
        async move { Ok::<_, std::convert::Infallible>(e.handle(req).await) }
    });
    let svc = ServiceFn(Arc::new(svc));
    tokio::spawn(async move { shoal::serve(listener, svc, std::future::pending()).await });
    (addr, engine)
}

/// Wraps a hyper service_fn as a cloneable tower service.
#[derive(Clone)]
pub struct ServiceFn<S>(Arc<S>);
impl<S, F> tower_service::Service<http::Request<hyper::body::Incoming>> for ServiceFn<S>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<shoal::engine::ResponseBody>, Error = std::convert::Infallible, Future = F>,
    F: std::future::Future<Output = Result<http::Response<shoal::engine::ResponseBody>, std::convert::Infallible>> + Send + 'static,
{
    type Response = http::Response<shoal::engine::ResponseBody>;
    type Error = std::convert::Infallible;
    type Future = F;
    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> F {
        self.0.call(req)
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request (Connection: close) and reads the whole response.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.expect("response in time").unwrap();
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete header");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    HttpResponse { status, headers, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { break };
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(addr, "GET", path, &[], b"").await
}

pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> HttpResponse {
    http(addr, "POST", path, &[("Content-Type", "text/plain;charset=UTF-8")], body).await
}

/// Opens a polling session and returns its sid.
pub async fn polling_handshake(addr: SocketAddr, path: &str) -> String {
    let res = get(addr, &format!("{path}?EIO=4&transport=polling")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let text = res.text();
    assert!(text.starts_with('0'), "{text}");
    let open: serde_json::Value = serde_json::from_str(&text[1..]).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

pub async fn ws_connect(addr: SocketAddr, path_and_query: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path_and_query}")).await.expect("websocket connects");
    ws
}

/// The next text frame (skipping nothing), or None if the socket closed.
pub async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame in time") {
            Some(Ok(WsMessage::Text(t))) => return Some(t.to_string()),
            Some(Ok(WsMessage::Binary(b))) => return Some(format!("<binary {:?}>", &b[..])),
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// The next text frame that is not a ping (`2`).
pub async fn next_non_ping(ws: &mut Ws) -> Option<String> {
    loop {
        let t = next_text(ws).await?;
        if t != "2" {
            return Some(t);
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(WsMessage::text(text.to_owned())).await.unwrap();
}

/// Waits until the server closes the socket (true) or `within` passes (false).
pub async fn closed_within(ws: &mut Ws, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(WsMessage::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// A Socket.IO client over raw WebSocket connected to `/`: returns the socket after
/// the CONNECT answer.
pub async fn sio_connect(addr: SocketAddr) -> Ws {
    let mut ws = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await;
    let open = next_text(&mut ws).await.unwrap();
    assert!(open.starts_with("0{"), "{open}");
    send_text(&mut ws, "40").await;
    let connect = next_non_ping(&mut ws).await.unwrap();
    assert!(connect.starts_with("40{\"sid\":"), "{connect}");
    ws
}
