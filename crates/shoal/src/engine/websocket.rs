//! The WebSocket transport: a session opened over WebSocket, or one that upgrades from
//! polling (`2probe` → `3probe`, a noop to the pending GET, then `5`). One task per
//! connection reads frames and writes what the session queues.
//!
//! Framing is shoal's own (`ws_frame.rs`): each frame is a small header in front of the
//! packet's bytes (a broadcast's bytes, shared by every recipient, are never copied).
//! While nothing is queued for a client, whoever sends to it writes the frames to its
//! socket directly (`try_write_now`, from the sender's thread, no task wake-up); what
//! the socket does not take is queued, and the connection's task writes the whole queue
//! in one `writev`, so the cost per delivery falls as the load rises. While a connection
//! is idle it holds no buffer:
//! reads go through a per-thread scratch buffer, and only a partial frame is kept.
//! Writes have a deadline, so a client that stops reading is dropped instead of holding
//! memory.

use super::conn::TcpConn;
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
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The byte stream under a WebSocket served by hyper's upgraded connection.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The byte stream under a WebSocket.
enum Stream {
    /// The TCP stream itself when shoal's own listener served the request (hyper's read
    /// buffer is released); shared with the session, which writes to it directly while
    /// nothing is queued.
    Tcp(Arc<TcpConn>),
    /// Hyper's upgraded connection, when the engine is mounted elsewhere.
    Other(Box<dyn Io>),
}

impl Stream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(conn) => loop {
                ready!(conn.stream.poll_read_ready(cx))?;
                match conn.stream.try_read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
            Stream::Other(io) => {
                let mut buf = ReadBuf::new(buf);
                ready!(Pin::new(io).poll_read(cx, &mut buf))?;
                Poll::Ready(Ok(buf.filled().len()))
            }
        }
    }

    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, slices: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(conn) => loop {
                ready!(conn.stream.poll_write_ready(cx))?;
                match conn.stream.try_write_vectored(slices) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
            Stream::Other(io) => Pin::new(io).poll_write_vectored(cx, slices),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(_) => Ok(()),
            Stream::Other(io) => io.flush().await,
        }
    }

    /// Ends the writing side. (A TCP stream is shut down when its last holder drops it.)
    async fn shutdown(&mut self) {
        if let Stream::Other(io) = self {
            let _ = io.shutdown().await;
        }
    }
}

/// Takes the stream back from hyper: the TCP stream when it is shoal's own (`Conn`), with
/// the bytes hyper read past the upgrade; hyper's connection as it is otherwise.
fn unwrap_upgraded(upgraded: hyper::upgrade::Upgraded) -> (Stream, Vec<u8>) {
    match upgraded.downcast::<TokioIo<super::Conn>>() {
        Ok(parts) => {
            let (conn, unread) = parts.io.into_inner().into_ws(&parts.read_buf);
            (Stream::Tcp(Arc::new(conn)), unread)
        }
        Err(upgraded) => (Stream::Other(Box::new(TokioIo::new(upgraded))), Vec::new()),
    }
}

/// Most frames in one `writev` (the kernel takes at most 1024 slices, two per frame).
/// The slices are gathered on the stack of the poll, never in the connection's future.
const MAX_FRAMES_PER_WRITE: usize = 64;
/// Most frames a sender writes directly (an event and its binary attachments).
const MAX_FRAMES_DIRECT: usize = 4;
/// The per-thread buffer every connection reads into.
const SCRATCH_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_BYTES].into_boxed_slice());
}

fn frame_parts(packet: &OutPacket) -> (Opcode, &Bytes) {
    match packet {
        OutPacket::Text(b) => (Opcode::Text, b),
        OutPacket::Binary(b) => (Opcode::Binary, b),
    }
}

/// Gathers, from byte `skip` on, `raw` bytes and then up to `headers.len()` packets as
/// frames (header, payload) into `slices` (at least twice as long, plus one); `headers`
/// holds the headers. Returns the number of slices filled.
fn gather<'a>(
    raw: &'a [u8],
    packets: impl Iterator<Item = &'a OutPacket> + Clone,
    mut skip: usize,
    headers: &'a mut [([u8; 10], usize)],
    slices: &mut [IoSlice<'a>],
) -> usize {
    for (h, p) in headers.iter_mut().zip(packets.clone()) {
        let (op, body) = frame_parts(p);
        *h = server_header(op, body.len());
    }
    let mut n = 0;
    let mut push = |part: &'a [u8], skip: &mut usize| {
        if *skip >= part.len() {
            *skip -= part.len();
        } else {
            slices[n] = IoSlice::new(&part[*skip..]);
            n += 1;
            *skip = 0;
        }
    };
    push(raw, &mut skip);
    for ((h, hlen), p) in headers.iter().zip(packets) {
        push(&h[..*hlen], &mut skip);
        push(frame_parts(p).1, &mut skip);
    }
    n
}

/// Wire bytes of a packet as a frame.
fn frame_len(packet: &OutPacket) -> usize {
    let len = packet.len();
    len + server_header(Opcode::Text, len).1
}

/// A sender's write straight to an idle client's socket (called with the session's lock
/// held, when nothing is queued and the connection's task is not writing). Returns the
/// bytes written; what did not fit is for the caller to keep (`rest_after`).
pub(crate) fn try_write_now(conn: &TcpConn, first: &OutPacket, rest: &[OutPacket]) -> io::Result<usize> {
    if rest.len() >= MAX_FRAMES_DIRECT {
        return Err(io::ErrorKind::WouldBlock.into()); // a long batch goes through the queue
    }
    let mut headers = [([0u8; 10], 0usize); MAX_FRAMES_DIRECT];
    let mut slices = [IoSlice::new(&[]); 2 * MAX_FRAMES_DIRECT + 1];
    let n = gather(&[], std::iter::once(first).chain(rest), 0, &mut headers, &mut slices);
    conn.stream.try_write_vectored(&slices[..n])
}

/// Wire bytes of `first` and `rest` as frames.
pub(crate) fn wire_len(first: &OutPacket, rest: &[OutPacket]) -> usize {
    frame_len(first) + rest.iter().map(frame_len).sum::<usize>()
}

/// The frames of `first` and `rest`, past their first `written` bytes: what a direct
/// write left to send.
pub(crate) fn rest_after(first: &OutPacket, rest: &[OutPacket], mut written: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for p in std::iter::once(first).chain(rest) {
        let (op, body) = frame_parts(p);
        let (h, hlen) = server_header(op, body.len());
        for part in [&h[..hlen], &body[..]] {
            if written >= part.len() {
                written -= part.len();
            } else {
                out.extend_from_slice(&part[written..]);
                written = 0;
            }
        }
    }
    out
}

/// What the connection's task writes in one go: raw bytes (the rest of a frame a sender
/// began, or a control frame), then packets as frames.
struct Outgoing {
    raw: Vec<u8>,
    packets: VecDeque<OutPacket>,
    /// Bytes already written, counted from the start of `raw`.
    done: usize,
}

impl Outgoing {
    fn new(raw: Vec<u8>, packets: VecDeque<OutPacket>) -> Outgoing {
        Outgoing { raw, packets, done: 0 }
    }

    fn control(op: Opcode, payload: &[u8]) -> Outgoing {
        let (h, hlen) = server_header(op, payload.len());
        let mut raw = h[..hlen].to_vec();
        raw.extend_from_slice(payload);
        Outgoing::new(raw, VecDeque::new())
    }

    fn is_empty(&self) -> bool {
        self.done >= self.raw.len() && self.packets.is_empty()
    }

    /// One `writev` of what is left (as much as the socket takes).
    fn poll_write(&mut self, cx: &mut Context<'_>, stream: &mut Stream) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let mut headers = [([0u8; 10], 0usize); MAX_FRAMES_PER_WRITE];
            let mut slices = [IoSlice::new(&[]); 2 * MAX_FRAMES_PER_WRITE + 1];
            let n = gather(&self.raw, self.packets.iter(), self.done, &mut headers, &mut slices);
            let written = ready!(stream.poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        Poll::Ready(Ok(()))
    }

    /// Drops what `written` more bytes completed.
    fn advance(&mut self, written: usize) {
        self.done += written;
        if self.done < self.raw.len() {
            return;
        }
        if !self.raw.is_empty() {
            self.done -= self.raw.len();
            self.raw = Vec::new();
        }
        while let Some(p) = self.packets.front() {
            let len = frame_len(p);
            if self.done < len {
                break;
            }
            self.done -= len;
            self.packets.pop_front();
        }
    }
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
    stream: Stream,
    /// Bytes of a frame not complete yet; empty (and unallocated) between frames.
    pending: Vec<u8>,
    assembler: Assembler,
    max_payload: usize,
}

impl Ws {
    fn new(stream: Stream, unread: Vec<u8>, max_payload: usize) -> Ws {
        Ws { stream, pending: unread, assembler: Assembler::default(), max_payload }
    }

    /// The TCP stream, when senders may write to it directly.
    fn direct(&self) -> Option<Arc<TcpConn>> {
        match &self.stream {
            Stream::Tcp(conn) => Some(conn.clone()),
            Stream::Other(_) => None,
        }
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
            let stream = &mut self.stream;
            let pending = &mut self.pending;
            let read = std::future::poll_fn(|cx| {
                SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    let n = ready!(stream.poll_read(cx, &mut scratch[..]))?;
                    pending.extend_from_slice(&scratch[..n]);
                    Poll::Ready(Ok::<usize, io::Error>(n))
                })
            });
            match read.await {
                Ok(0) | Err(_) => return Err(ReadEnd::Closed),
                Ok(_) => {}
            }
        }
    }

    /// Writes everything in `out`, as few writes as the socket allows.
    async fn write(&mut self, mut out: Outgoing) -> io::Result<()> {
        let stream = &mut self.stream;
        std::future::poll_fn(|cx| out.poll_write(cx, stream)).await?;
        self.stream.flush().await
    }

    async fn send_text(&mut self, text: &'static str) -> io::Result<()> {
        self.write(Outgoing::control(Opcode::Text, text.as_bytes())).await
    }

    /// Sends a close frame (echoing the client's status code, if it sent one) and ends
    /// the connection.
    async fn close(&mut self, status: &[u8]) {
        let _ = self.write(Outgoing::control(Opcode::Close, &status[..status.len().min(2)])).await;
        self.stream.shutdown().await;
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
/// `run` becomes part of the connection's one task (not a second allocation).
fn accept<B, F, Fut>(engine: &Arc<EngineShared>, req: Request<B>, run: F) -> Result<Response<ResponseBody>, Response<ResponseBody>>
where
    F: FnOnce(Ws) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
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
            Ok(upgraded) => {
                let (stream, unread) = unwrap_upgraded(upgraded);
                run(Ws::new(stream, unread, max_payload)).await
            }
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
        // Not an async block around `run`: it would hold `ws` and the handles a second
        // time, in every idle connection's task.
        engine2.insert(s.clone());
        engine2.handler.on_open(&s);
        run(engine2, s, ws)
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
    match accept(engine, req, move |ws| async move {
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

/// While the connection's task runs, its session may write to the TCP stream directly;
/// this ends that when the task ends, however it ends.
struct Attached<'a>(&'a Session);

impl<'a> Attached<'a> {
    fn new(session: &'a Session, ws: &Ws) -> Attached<'a> {
        if let Some(conn) = ws.direct() {
            session.attach_ws(conn);
        }
        Attached(session)
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.0.detach_ws();
    }
}

/// How a write of the connection's task ended badly.
enum WriteEnd {
    Failed(io::Error),
    TimedOut,
}

/// Writes what waits for the client (the rest of a frame a sender began, then the queue),
/// within the write timeout. `force`: take the writing over even if nothing waits (before
/// the task writes a control frame itself). Ok(false) if nothing waited.
async fn write_waiting(ws: &mut Ws, session: &Session, timeout: std::time::Duration, force: bool) -> Result<bool, WriteEnd> {
    let Some((raw, packets)) = session.take_for_ws(force) else { return Ok(false) };
    let out = Outgoing::new(raw, super::eio3::frames_queue(session, packets));
    // Boxed: the write and its timer are part of the connection's state only while it
    // writes (an idle connection's task stays small).
    match Box::pin(tokio::time::timeout(timeout, ws.write(out))).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) => Err(WriteEnd::Failed(e)),
        Err(_) => Err(WriteEnd::TimedOut),
    }
}

/// Ends a session whose write failed or timed out.
fn write_failed(session: &Session, end: WriteEnd) {
    match end {
        WriteEnd::Failed(e) => {
            tracing::debug!(sid = %session.sid, error = %e, "WebSocket write failed");
            session.close(CloseReason::TransportError);
        }
        WriteEnd::TimedOut => {
            tracing::warn!(sid = %session.sid, "WebSocket write timed out, dropping slow client");
            session.close(CloseReason::SlowClient);
        }
    }
}

/// Answers a client's ping, after what waits.
async fn pong(ws: &mut Ws, session: &Session, timeout: std::time::Duration, payload: &[u8]) -> Result<(), WriteEnd> {
    write_waiting(ws, session, timeout, true).await?;
    match tokio::time::timeout(timeout, ws.write(Outgoing::control(Opcode::Pong, payload))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WriteEnd::Failed(e)),
        Err(_) => Err(WriteEnd::TimedOut),
    }
}

/// Writes what still waits, then a close frame, and ends the connection.
async fn close_after_waiting(ws: &mut Ws, session: &Session, timeout: std::time::Duration, status: &[u8]) {
    if write_waiting(ws, session, timeout, true).await.is_ok() {
        let _ = tokio::time::timeout(timeout, ws.close(status)).await;
    }
}

/// Reads frames and writes queued packets until the session or the connection ends.
async fn run(engine: Arc<EngineShared>, session: Arc<Session>, mut ws: Ws) {
    let write_timeout = engine.config.write_timeout;
    let _attached = Attached::new(&session, &ws);
    // The heartbeat runs in this task: one task per WebSocket session. Its timer is made
    // once and moved when the schedule moves, not made again on every wake-up.
    let far = || tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    let heartbeat = tokio::time::sleep_until(session.heartbeat_step().unwrap_or_else(far));
    tokio::pin!(heartbeat);
    loop {
        let notified = session.writable.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Everything queued (also by the polling side before the upgrade) leaves at once;
        // once nothing waits, senders write to an idle client's socket themselves.
        match write_waiting(&mut ws, &session, write_timeout, false).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(end) => return write_failed(&session, end),
        }
        if session.is_closed() {
            let _ = Box::pin(tokio::time::timeout(write_timeout, ws.close(&[]))).await;
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
        // More of the client's input already read behind this message: the server is
        // behind (a publisher faster than the fan-out); broadcasts it makes now queue.
        // (Marked around the synchronous hand-over only, never across an await.)
        let behind = !ws.pending.is_empty();
        let on_packet = |packet| {
            let _behind = super::session::Behind::mark(behind);
            engine.on_packet(&session, packet);
        };
        match incoming {
            Ok(Incoming::Text(text)) => match super::eio3::decode_text(&session, &text) {
                Ok(packet) => on_packet(packet),
                Err(e) => {
                    tracing::debug!(sid = %session.sid, error = %e, "bad WebSocket packet");
                    session.close(CloseReason::ParseError);
                }
            },
            Ok(Incoming::Binary(bytes)) => match super::eio3::decode_binary(&session, Bytes::from(bytes)) {
                Ok(packet) => on_packet(packet),
                Err(e) => {
                    tracing::debug!(sid = %session.sid, error = %e, "bad WebSocket binary packet");
                    session.close(CloseReason::ParseError);
                }
            },
            Ok(Incoming::Ping(payload)) => {
                if let Err(end) = Box::pin(pong(&mut ws, &session, write_timeout, &payload)).await {
                    return write_failed(&session, end);
                }
            }
            Ok(Incoming::Pong) => {}
            Ok(Incoming::Close(status)) => {
                session.close(CloseReason::TransportClose);
                Box::pin(close_after_waiting(&mut ws, &session, write_timeout, &status)).await;
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
                Box::pin(close_after_waiting(&mut ws, &session, write_timeout, status)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(packets: &[OutPacket]) -> Vec<u8> {
        super::rest_after(&packets[0], &packets[1..], 0)
    }

    #[test]
    fn frames_are_gathered_from_any_byte_on() {
        let packets = vec![
            OutPacket::Text(Bytes::from_static(b"42[\"tick\"]")),
            OutPacket::Binary(Bytes::from(vec![7u8; 300])),
            OutPacket::Text(Bytes::from_static(b"2")),
        ];
        let all = wire(&packets);
        assert_eq!(&all[..2], &[0x81, 10]);
        assert_eq!(&all[12..16], &[0x82, 126, 1, 44]);
        assert_eq!(all.len(), 12 + 4 + 300 + 3);
        for skip in 0..all.len() {
            let mut headers = [([0u8; 10], 0usize); MAX_FRAMES_PER_WRITE];
            let mut slices = [IoSlice::new(&[]); 2 * MAX_FRAMES_PER_WRITE + 1];
            let n = gather(&[], packets.iter(), skip, &mut headers, &mut slices);
            let joined: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(joined, all[skip..], "from byte {skip}");
            assert_eq!(rest_after(&packets[0], &packets[1..], skip), all[skip..]);
        }
    }

    #[test]
    fn a_write_cut_anywhere_resumes_where_it_stopped() {
        let packets: VecDeque<OutPacket> = (0..100).map(|i| OutPacket::Text(Bytes::from(format!("4{i}")))).collect();
        let raw = vec![1u8, 2, 3];
        let mut expected = raw.clone();
        expected.extend(wire(&packets.iter().cloned().collect::<Vec<_>>()));
        for step in [1, 2, 3, 5, 64, 1000] {
            let mut out = Outgoing::new(raw.clone(), packets.clone());
            let mut sent = Vec::new();
            while !out.is_empty() {
                let mut headers = [([0u8; 10], 0usize); MAX_FRAMES_PER_WRITE];
                let mut slices = [IoSlice::new(&[]); 2 * MAX_FRAMES_PER_WRITE + 1];
                let n = gather(&out.raw, out.packets.iter(), out.done, &mut headers, &mut slices);
                let joined: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
                let k = joined.len().min(step);
                sent.extend_from_slice(&joined[..k]);
                out.advance(k);
            }
            assert_eq!(sent, expected, "in steps of {step}");
        }
    }

    struct NoHandler;
    impl super::super::EngineHandler for NoHandler {
        fn on_open(&self, _: &Arc<Session>) {}
        fn on_message(&self, _: &Arc<Session>, _: super::super::Message) {}
        fn on_close(&self, _: &Session, _: CloseReason) {}
    }

    /// Every idle WebSocket session holds its connection's task: its state must stay
    /// small (the rare paths and the writes are boxed).
    #[tokio::test]
    async fn the_connection_task_of_an_idle_session_stays_small() {
        let engine = super::super::Engine::new(Default::default(), Arc::new(NoHandler)).shared;
        let request = super::super::HandshakeRequest {
            headers: Default::default(),
            uri: "/".parse().unwrap(),
            address: ([127, 0, 0, 1], 1).into(),
            issued: std::time::SystemTime::UNIX_EPOCH,
            secure: false,
        };
        let session = Arc::new(Session::new("s".into(), TransportKind::WebSocket, request, Arc::downgrade(&engine), crate::engine::ProtocolVersion::V4, false));
        let (io, _peer) = tokio::io::duplex(64);
        let ws = Ws::new(Stream::Other(Box::new(io)), Vec::new(), 1000);
        let task = run(engine, session, ws);
        let size = std::mem::size_of_val(&task);
        eprintln!("connection task state: {size} bytes");
        assert!(size <= 640, "the connection task's state grew to {size} bytes");
    }

    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
