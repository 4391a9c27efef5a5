//! The WebSocket transport: a session opened over WebSocket, or one that upgrades from
//! polling (`2probe` → `3probe`, a noop to the pending GET, then `5`). One task per
//! connection reads frames and writes what the session queues.
//!
//! Framing is shoal's own (`ws_frame.rs`): what is queued for a client leaves in one
//! `writev` of whole frames, each a small header in front of the queued bytes (a
//! broadcast's bytes, shared by every recipient, are never copied), so the cost per
//! delivery falls as the load rises. While a connection is idle it holds no buffer:
//! reads go through a per-thread scratch buffer, and only a partial frame is kept.
//! Writes have a deadline, so a client that stops reading is dropped instead of holding
//! memory.

use super::http::{error_response, ErrorCode, ResponseBody};
use super::session::{CloseReason, Session, TransportKind};
use super::ws_frame::{parse_client_frame, server_header, Assembler, FrameError, Incoming, Opcode};
use super::EngineShared;
use crate::protocol::engine_packet::{decode_text, OutPacket, Packet};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};

/// The byte stream under a WebSocket: the TCP stream itself when shoal's own listener
/// served the request (so hyper's read buffer is released), or hyper's upgraded
/// connection when the engine is mounted elsewhere.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

fn unwrap_upgraded(upgraded: hyper::upgrade::Upgraded) -> Box<dyn Io> {
    match upgraded.downcast::<TokioIo<super::Conn>>() {
        Ok(parts) => {
            let mut stream = parts.io.into_inner();
            stream.unread(&parts.read_buf);
            Box::new(stream)
        }
        Err(upgraded) => Box::new(TokioIo::new(upgraded)),
    }
}

/// Most frames in one `writev` (the kernel takes at most 1024 slices, two per frame).
const MAX_FRAMES_PER_WRITE: usize = 256;
/// The per-thread buffer every connection reads into.
const SCRATCH_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_BYTES].into_boxed_slice());
}

/// Why a connection ended while reading.
enum ReadEnd {
    /// The peer closed the TCP connection or it broke.
    Closed,
    /// The peer broke the WebSocket protocol (or sent too much).
    Protocol(FrameError),
}

/// One WebSocket connection, server side.
struct Ws {
    reader: ReadHalf<Box<dyn Io>>,
    writer: WriteHalf<Box<dyn Io>>,
    /// Bytes of a frame not complete yet; empty (and unallocated) between frames.
    pending: Vec<u8>,
    assembler: Assembler,
    max_payload: usize,
}

impl Ws {
    fn new(io: Box<dyn Io>, max_payload: usize) -> Ws {
        let (reader, writer) = tokio::io::split(io);
        Ws { reader, writer, pending: Vec::new(), assembler: Assembler::default(), max_payload }
    }

    /// The next message from the client; cancel-safe (a frame is taken from `pending`
    /// and handed on within one poll, and bytes read are kept in the same poll).
    async fn next(&mut self) -> Result<Incoming, ReadEnd> {
        loop {
            if let Some((frame, used)) = parse_client_frame(&self.pending, self.max_payload).map_err(ReadEnd::Protocol)? {
                self.pending.drain(..used);
                if self.pending.is_empty() {
                    self.pending = Vec::new();
                }
                if let Some(message) = self.assembler.push(frame, self.max_payload).map_err(ReadEnd::Protocol)? {
                    return Ok(message);
                }
                continue;
            }
            let reader = &mut self.reader;
            let pending = &mut self.pending;
            let read = std::future::poll_fn(|cx| {
                SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    let mut buf = ReadBuf::new(&mut scratch[..]);
                    match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) => {
                            pending.extend_from_slice(buf.filled());
                            Poll::Ready(Ok(buf.filled().len()))
                        }
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    }
                })
            });
            match read.await {
                Ok(0) | Err(_) => return Err(ReadEnd::Closed),
                Ok(_) => {}
            }
        }
    }

    /// Writes packets as unfragmented frames, as few writes as the socket allows.
    async fn write_packets(&mut self, packets: Vec<OutPacket>) -> io::Result<()> {
        let frames: Vec<(Opcode, Bytes)> = packets
            .into_iter()
            .map(|p| match p {
                OutPacket::Text(b) => (Opcode::Text, b),
                OutPacket::Binary(b) => (Opcode::Binary, b),
            })
            .collect();
        self.write_frames(&frames).await
    }

    async fn write_frames(&mut self, frames: &[(Opcode, Bytes)]) -> io::Result<()> {
        let headers: Vec<([u8; 10], usize)> = frames.iter().map(|(op, payload)| server_header(*op, payload.len())).collect();
        // Where the writing stands: frame index, and bytes of that frame already written
        // (its header first, then its payload).
        let (mut frame, mut done) = (0, 0);
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * frames.len().min(MAX_FRAMES_PER_WRITE));
        while frame < frames.len() {
            slices.clear();
            for i in frame..frames.len().min(frame + MAX_FRAMES_PER_WRITE) {
                let (h, hlen) = &headers[i];
                let skip = if i == frame { done } else { 0 };
                if skip < *hlen {
                    slices.push(IoSlice::new(&h[skip..*hlen]));
                }
                let body = &frames[i].1;
                let body_skip = skip.saturating_sub(*hlen);
                if body_skip < body.len() {
                    slices.push(IoSlice::new(&body[body_skip..]));
                }
            }
            let mut written = self.writer.write_vectored(&slices).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while written > 0 && frame < frames.len() {
                let left = headers[frame].1 + frames[frame].1.len() - done;
                if written >= left {
                    written -= left;
                    frame += 1;
                    done = 0;
                } else {
                    done += written;
                    written = 0;
                }
            }
        }
        self.writer.flush().await
    }

    async fn send_text(&mut self, text: &'static str) -> io::Result<()> {
        self.write_frames(&[(Opcode::Text, Bytes::from_static(text.as_bytes()))]).await
    }

    /// Sends a close frame (echoing the client's status code, if it sent one) and ends
    /// the connection.
    async fn close(&mut self, status: &[u8]) {
        let status = Bytes::copy_from_slice(&status[..status.len().min(2)]);
        let _ = self.write_frames(&[(Opcode::Close, status)]).await;
        let _ = self.writer.shutdown().await;
    }
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 4.2.2).
fn accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha1 = sha1::Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// Answers the HTTP upgrade and, once upgraded, runs the connection for `session`.
fn accept<B>(engine: &Arc<EngineShared>, req: Request<B>, run: impl FnOnce(Ws) -> futures_util::future::BoxFuture<'static, ()> + Send + 'static) -> Result<Response<ResponseBody>, Response<ResponseBody>> {
    let headers = req.headers();
    let key = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| accept_key(k.as_bytes()));
    let version_ok = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let Some(accept_key) = key.filter(|_| version_ok) else {
        return Err(error_response(engine, headers, ErrorCode::BadRequest, None));
    };
    let mut req = req;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max_payload = engine.config.max_payload;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(Ws::new(unwrap_upgraded(upgraded), max_payload)).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept_key).expect("base64 is a valid header"));
    Ok(res)
}

/// A session opened directly over WebSocket (its open packet is already queued).
pub(crate) fn open<B>(engine: &Arc<EngineShared>, session: Arc<Session>, req: Request<B>) -> Response<ResponseBody> {
    let engine2 = engine.clone();
    let s = session.clone();
    match accept(engine, req, move |ws| {
        Box::pin(async move {
            engine2.insert(s.clone());
            engine2.handler.on_open(&s);
            run(engine2, s, ws).await
        })
    }) {
        Ok(res) => res,
        Err(res) => res,
    }
}

/// Upgrades a polling session to WebSocket.
pub(crate) fn upgrade<B>(engine: &Arc<EngineShared>, session: Arc<Session>, req: Request<B>) -> Response<ResponseBody> {
    let refused = {
        let mut st = session.state.lock().unwrap();
        let refused = st.transport != TransportKind::Polling || st.upgrade_claimed || st.closed.is_some();
        st.upgrade_claimed = true;
        refused
    };
    if refused {
        // As the reference server: complete the handshake, then close that WebSocket.
        // The session and its current transport are untouched.
        tracing::debug!(sid = %session.sid, "second upgrade for a session refused");
        let (first, limit) = (session.clone(), engine.config.upgrade_timeout);
        return match accept(engine, req, move |mut ws| {
            Box::pin(async move {
                // Threads serve the two connections side by side, where the reference
                // server takes events in arrival order: a client that sent `2probe` and
                // `5` on the first WebSocket before opening this one must get its
                // `3probe` before it sees this one closed. So the refusal waits until
                // the first upgrade ended (bounded; a rare path, polled).
                let deadline = tokio::time::Instant::now() + limit;
                while first.upgrade_in_progress() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                ws.close(&[]).await;
            })
        }) {
            Ok(res) | Err(res) => res,
        };
    }
    let engine2 = engine.clone();
    let s = session.clone();
    match accept(engine, req, move |ws| {
        Box::pin(async move {
            let timeout = engine2.config.upgrade_timeout;
            match tokio::time::timeout(timeout, probe(&s, ws)).await {
                Ok(Some(ws)) => {
                    // The polling side's heartbeat task ends; this task takes it over.
                    run(engine2, s, ws).await
                }
                Ok(None) => {}
                Err(_) => {
                    tracing::debug!(sid = %s.sid, "upgrade timed out");
                    cancel_upgrade(&s);
                }
            }
        })
    }) {
        Ok(res) => res,
        Err(res) => {
            cancel_upgrade(&session);
            res
        }
    }
}

fn cancel_upgrade(session: &Session) {
    let mut st = session.state.lock().unwrap();
    if st.transport == TransportKind::Polling {
        st.upgrading = false;
        st.upgrade_claimed = false;
    }
}

/// The probe exchange. Returns the socket once the client sent `5`.
async fn probe(session: &Arc<Session>, mut ws: Ws) -> Option<Ws> {
    loop {
        let text = match ws.next().await {
            Ok(Incoming::Text(text)) => text,
            Ok(Incoming::Ping(_) | Incoming::Pong | Incoming::Binary(_)) => continue,
            Ok(Incoming::Close(_)) | Err(_) => {
                cancel_upgrade(session);
                return None;
            }
        };
        match decode_text(&text) {
            Ok(Packet::Ping(data)) if data == "probe" => {
                if ws.send_text("3probe").await.is_err() {
                    cancel_upgrade(session);
                    return None;
                }
                {
                    let mut st = session.state.lock().unwrap();
                    if st.closed.is_some() {
                        return None;
                    }
                    st.upgrading = true;
                }
                // Releases the pending GET with a noop so the client can pause polling.
                session.writable.notify_one();
            }
            Ok(Packet::Upgrade) => {
                let mut st = session.state.lock().unwrap();
                if !st.upgrading || st.closed.is_some() {
                    return None;
                }
                st.transport = TransportKind::WebSocket;
                st.upgrading = false;
                drop(st);
                tracing::debug!(sid = %session.sid, "upgraded to WebSocket");
                // A GET still pending gets its noop; the WebSocket now drains the queue.
                session.writable.notify_one();
                return Some(ws);
            }
            _ => {
                cancel_upgrade(session);
                return None;
            }
        }
    }
}

/// Reads frames and writes queued packets until the session or the connection ends.
async fn run(engine: Arc<EngineShared>, session: Arc<Session>, mut ws: Ws) {
    let write_timeout = engine.config.write_timeout;
    // The heartbeat runs in this task: one task per WebSocket session. Its timer is made
    // once and moved when the schedule moves, not made again on every wake-up.
    let far = || tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    let heartbeat = tokio::time::sleep_until(session.heartbeat_step().unwrap_or_else(far));
    tokio::pin!(heartbeat);
    loop {
        let notified = session.writable.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Everything queued (also by the polling side before the upgrade) leaves at once.
        let packets = super::eio3::frames(&session, session.drain());
        if !packets.is_empty() {
            match tokio::time::timeout(write_timeout, ws.write_packets(packets)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(sid = %session.sid, error = %e, "WebSocket write failed");
                    session.close(CloseReason::TransportError);
                    return;
                }
                Err(_) => {
                    tracing::warn!(sid = %session.sid, "WebSocket write timed out, dropping slow client");
                    session.close(CloseReason::SlowClient);
                    return;
                }
            }
        }
        if session.is_closed() {
            let _ = tokio::time::timeout(write_timeout, ws.close(&[])).await;
            return;
        }
        let incoming = tokio::select! {
            incoming = ws.next() => incoming,
            _ = &mut notified => continue,
            _ = &mut heartbeat => {
                let next = session.heartbeat_step().unwrap_or_else(far);
                heartbeat.as_mut().reset(next);
                continue;
            }
        };
        match incoming {
            Ok(Incoming::Text(text)) => match super::eio3::decode_text(&session, &text) {
                Ok(packet) => engine.on_packet(&session, packet),
                Err(e) => {
                    tracing::debug!(sid = %session.sid, error = %e, "bad WebSocket packet");
                    session.close(CloseReason::ParseError);
                }
            },
            Ok(Incoming::Binary(bytes)) => match super::eio3::decode_binary(&session, Bytes::from(bytes)) {
                Ok(packet) => engine.on_packet(&session, packet),
                Err(e) => {
                    tracing::debug!(sid = %session.sid, error = %e, "bad WebSocket binary packet");
                    session.close(CloseReason::ParseError);
                }
            },
            Ok(Incoming::Ping(payload)) => {
                let pong = [(Opcode::Pong, Bytes::from(payload))];
                if tokio::time::timeout(write_timeout, ws.write_frames(&pong)).await.map_or(true, |r| r.is_err()) {
                    session.close(CloseReason::TransportError);
                    return;
                }
            }
            Ok(Incoming::Pong) => {}
            Ok(Incoming::Close(status)) => {
                session.close(CloseReason::TransportClose);
                let _ = tokio::time::timeout(write_timeout, ws.close(&status)).await;
                return;
            }
            Err(ReadEnd::Closed) => {
                session.close(CloseReason::TransportClose);
                return;
            }
            Err(ReadEnd::Protocol(e)) => {
                tracing::debug!(sid = %session.sid, error = %e, "WebSocket protocol error, closing");
                if e == FrameError::TooLarge {
                    engine.limit_hit(crate::metrics::Limit::MaxPayload);
                }
                session.close(CloseReason::TransportError);
                // 1002 protocol error, 1009 message too big.
                let status: &[u8] = if e == FrameError::TooLarge { &[0x03, 0xF1] } else { &[0x03, 0xEA] };
                let _ = tokio::time::timeout(write_timeout, ws.close(status)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
