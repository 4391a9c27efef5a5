//! A Socket.IO v4 client over HTTP long-polling only (Engine.IO 4): one keep-alive
//! connection for the pending GET, one for POSTs, as a browser would use.

use crate::ws::{io_err, tcp_connect};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

pub struct PollClient {
    get: SendRequest<Full<Bytes>>,
    post: SendRequest<Full<Bytes>>,
    host: String,
    uri: String,
}

async fn http_conn(server: SocketAddr, src: Ipv4Addr) -> io::Result<SendRequest<Full<Bytes>>> {
    let stream = tcp_connect(server, Some(src), None).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| io_err(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn request(sender: &mut SendRequest<Full<Bytes>>, method: &str, uri: &str, host: &str, body: Bytes) -> io::Result<Bytes> {
    sender.ready().await.map_err(|e| io_err(e.to_string()))?;
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
    pub async fn connect(server: SocketAddr, src: Ipv4Addr, host: &str, path: &str) -> io::Result<PollClient> {
        let mut get = http_conn(server, src).await?;
        let open = request(&mut get, "GET", &format!("{path}?EIO=4&transport=polling"), host, Bytes::new()).await?;
        let text = String::from_utf8_lossy(&open);
        let sid = text
            .split("\"sid\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or_else(|| io_err(format!("no sid in open packet: {text}")))?
            .to_owned();
        let post = http_conn(server, src).await?;
        let mut c = PollClient { get, post, host: host.to_owned(), uri: format!("{path}?EIO=4&transport=polling&sid={sid}") };
        c.post(Bytes::from_static(b"40")).await?;
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

    pub async fn post(&mut self, body: Bytes) -> io::Result<()> {
        request(&mut self.post, "POST", &self.uri, &self.host, body).await.map(|_| ())
    }

    /// One long-poll GET: the packets the server had or got while it waited.
    pub async fn poll(&mut self) -> io::Result<Bytes> {
        request(&mut self.get, "GET", &self.uri, &self.host, Bytes::new()).await
    }
}
