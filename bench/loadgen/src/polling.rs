//! A Socket.IO v4 client over HTTP long-polling only (Engine.IO 4): one keep-alive
//! connection for the pending GET, one for POSTs, as a browser would use. A server may
//! close a connection after each answer (Node behind @socket.io/sticky answers with
//! `Connection: close`); then the next request opens a new one.

use crate::ws::{io_err, tcp_connect};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

type Sender = SendRequest<Full<Bytes>>;

pub struct PollClient {
    server: SocketAddr,
    src: Ipv4Addr,
    get: Option<Sender>,
    post: Option<Sender>,
    host: String,
    uri: String,
}

async fn http_conn(server: SocketAddr, src: Ipv4Addr) -> io::Result<Sender> {
    let stream = tcp_connect(server, Some(src), None).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| io_err(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on `slot`'s connection, opening a new one if there is none or it closed.
async fn request(slot: &mut Option<Sender>, server: SocketAddr, src: Ipv4Addr, method: &str, uri: &str, host: &str, body: Bytes) -> io::Result<Bytes> {
    let reusable = match slot.as_mut() {
        Some(s) => !s.is_closed() && s.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        *slot = Some(http_conn(server, src).await?);
    }
    let sender = slot.as_mut().expect("connection just opened");
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", host)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(Full::new(body))
        .map_err(|e| io_err(e.to_string()))?;
    let res = sender.send_request(req).await.map_err(|e| io_err(e.to_string()))?;
    let status = res.status();
    let body = res.into_body().collect().await.map_err(|e| io_err(e.to_string()))?.to_bytes();
    if !status.is_success() {
        return Err(io_err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(80)]))));
    }
    Ok(body)
}

impl PollClient {
    /// Engine.IO open over polling, then the Socket.IO CONNECT to `/` and its answer.
    /// `via`: every request after the Engine.IO open goes there (the forwarding hop).
    pub async fn connect(server: SocketAddr, via: Option<SocketAddr>, src: Ipv4Addr, host: &str, path: &str) -> io::Result<PollClient> {
        let mut get = None;
        let open = request(&mut get, server, src, "GET", &format!("{path}?EIO=4&transport=polling"), host, Bytes::new()).await?;
        let text = String::from_utf8_lossy(&open);
        let sid = text
            .split("\"sid\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or_else(|| io_err(format!("no sid in open packet: {text}")))?
            .to_owned();
        // Through the hop, the open's keep-alive connection (to `server`) is not reused.
        let (server, get) = match via {
            Some(v) => (v, None),
            None => (server, get),
        };
        let mut c = PollClient { server, src, get, post: None, host: host.to_owned(), uri: format!("{path}?EIO=4&transport=polling&sid={sid}") };
        // Behind @socket.io/sticky a POST on a new connection can outrun the worker's
        // "new sid" message to the primary and get "Session ID unknown": retry a little.
        let mut tries = 0;
        loop {
            match c.post(Bytes::from_static(b"40")).await {
                Ok(()) => break,
                Err(e) if tries < 20 && e.to_string().contains("Session ID unknown") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        }
        for _ in 0..5 {
            let body = c.poll().await?;
            for p in body.split(|&b| b == 0x1e) {
                if p.starts_with(b"40") {
                    return Ok(c);
                }
                if p.starts_with(b"44") {
                    return Err(io_err("connect_error"));
                }
            }
        }
        Err(io_err("no Socket.IO connect answer"))
    }

    /// Two clients of the same session: one for the GETs, one for the POSTs.
    pub fn split(self) -> (PollClient, PollClient) {
        let post = PollClient { server: self.server, src: self.src, get: None, post: self.post, host: self.host.clone(), uri: self.uri.clone() };
        (PollClient { post: None, ..self }, post)
    }

    pub async fn post(&mut self, body: Bytes) -> io::Result<()> {
        request(&mut self.post, self.server, self.src, "POST", &self.uri, &self.host, body).await.map(|_| ())
    }

    /// One long-poll GET: the packets the server had or got while it waited.
    pub async fn poll(&mut self) -> io::Result<Bytes> {
        request(&mut self.get, self.server, self.src, "GET", &self.uri, &self.host, Bytes::new()).await
    }
}

/// The Engine.IO open over polling: the new session's id.
pub async fn open_sid(server: SocketAddr, src: Ipv4Addr, host: &str, path: &str) -> io::Result<String> {
    let mut slot = None;
    let open = request(&mut slot, server, src, "GET", &format!("{path}?EIO=4&transport=polling"), host, Bytes::new()).await?;
    let text = String::from_utf8_lossy(&open);
    text.split("\"sid\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(str::to_owned)
        .ok_or_else(|| io_err(format!("no sid in open packet: {text}")))
}
