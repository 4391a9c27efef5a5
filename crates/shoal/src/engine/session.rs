//! One Engine.IO session: its outbound queue, its current transport, its heartbeat and
//! its closing. The queue belongs to the session, not to a transport, so packets queued
//! while a client upgrades from polling to WebSocket are never lost or reordered.
//!
//! Locks here guard plain data for a few instructions; nothing awaits or writes to a
//! socket while holding one.

use super::conn::TcpConn;
use super::EngineShared;
use crate::protocol::engine_packet::{OutPacket, PacketType};
use std::any::Any;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;
use tokio::sync::Notify;

/// Why a session ended. `as_str` gives the reason strings of the reference server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection or sent a close packet.
    TransportClose,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// The transport failed: a read or write error, a protocol violation, an overlap.
    TransportError,
    /// The client sent a packet the upper layer could not parse.
    ParseError,
    /// The server closed the session on purpose.
    ForcedClose,
    /// The server is shutting down.
    ServerShuttingDown,
    /// The client did not read fast enough and its outbound queue overflowed.
    SlowClient,
}

impl CloseReason {
    /// The official reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::TransportError => "transport error",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::ServerShuttingDown => "server shutting down",
            // The official client knows no such reason; to it this is a transport error.
            CloseReason::SlowClient => "transport error",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// The transport a session currently uses.
pub enum TransportKind {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    WebSocket,
}

/// The Engine.IO protocol revision a session speaks: the `EIO` of its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolVersion {
    /// Revision 3: socket.io-client 1.x and 2.x, accepted with `allow_eio3`. The client
    /// pings and the server answers; polling payloads are length-prefixed; binary
    /// WebSocket frames carry a type byte (`protocol::engine_packet_v3`).
    V3,
    /// Revision 4: socket.io-client 3.x and later.
    V4,
}

/// What the client sent when it opened the session.
#[derive(Debug)]
pub struct HandshakeRequest {
    /// The request headers.
    pub headers: http::HeaderMap,
    /// The request URI (path and query).
    pub uri: http::Uri,
    /// The client's address (the peer, or what a trusted proxy said).
    pub address: SocketAddr,
    /// When the session was opened.
    pub issued: SystemTime,
    /// True if the request came over TLS.
    pub secure: bool,
}

impl HandshakeRequest {
    /// The same request, its header values and URI copied into one allocation of their
    /// own size. As parsed, they are slices of the HTTP parser's read buffer and would
    /// keep all of it (8 KiB) alive for as long as the session lives.
    fn compact(self) -> HandshakeRequest {
        let HandshakeRequest { headers, uri, address, issued, secure } = self;
        let path_form = uri.scheme().is_none() && uri.authority().is_none();
        let uri_text = uri.path_and_query().map(|p| p.as_str()).filter(|_| path_form).unwrap_or("");
        let uri_len = uri_text.len();
        let size = uri_len + headers.values().map(|v| v.len()).sum::<usize>();
        let mut all = bytes::BytesMut::with_capacity(size);
        all.extend_from_slice(uri_text.as_bytes());
        for value in headers.values() {
            all.extend_from_slice(value.as_bytes());
        }
        let all = all.freeze();
        let uri = if path_form {
            http::Uri::from_maybe_shared(all.slice(..uri_len)).unwrap_or(uri)
        } else {
            uri.to_string().parse().unwrap_or(uri)
        };
        let mut compact = http::HeaderMap::with_capacity(headers.len());
        let mut at = uri_len;
        for (name, value) in headers.iter() {
            let bytes = all.slice(at..at + value.len());
            at += value.len();
            // Names of standard headers are constants; others are copied.
            let name = http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
            let mut copy = http::HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| value.clone());
            copy.set_sensitive(value.is_sensitive());
            compact.append(name, copy);
        }
        // A clone's entries take their exact length, not the growth room of `with_capacity`.
        HandshakeRequest { headers: compact.clone(), uri, address, issued, secure }
    }
}

/// Error of `Session::send`: the session is closed, nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClosed;

impl std::fmt::Display for SessionClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("session is closed")
    }
}
impl std::error::Error for SessionClosed {}

impl State {
    /// Takes everything queued.
    pub(crate) fn take_outbox(&mut self) -> Vec<OutPacket> {
        self.outbox_bytes = 0;
        self.outbox.drain(..).collect()
    }
}

pub(crate) struct State {
    pub transport: TransportKind,
    /// A WebSocket was accepted for the upgrade; no second one may try.
    pub upgrade_claimed: bool,
    /// The probe succeeded: the pending GET is released with a noop.
    pub upgrading: bool,
    pub outbox: VecDeque<OutPacket>,
    pub outbox_bytes: usize,
    pub get_active: bool,
    /// The GET in flight came through another node (see `Relayed`).
    pub get_relayed: bool,
    pub post_active: bool,
    pub closed: Option<CloseReason>,
    /// When the client must have answered the last ping (None: no ping outstanding).
    /// Protocol 3: when the client's next ping must have come (always set).
    pub pong_deadline: Option<tokio::time::Instant>,
    /// When the next ping is due (while no ping is outstanding).
    pub next_ping: tokio::time::Instant,
    /// The WebSocket's TCP stream while its task runs: a sender writes to it directly
    /// when nothing waits and the task is not writing (no task wake-up per packet).
    pub(crate) direct: Option<Arc<TcpConn>>,
    /// The WebSocket task is writing what it took; senders queue meanwhile.
    pub(crate) ws_writing: bool,
    /// The rest of frames a sender began to write directly; it leaves before the queue.
    pub(crate) partial: Vec<u8>,
}

/// One Engine.IO session: a client connection that outlives its transport (polling
/// requests, then maybe a WebSocket), with its outbound queue and heartbeat.
pub struct Session {
    /// The session id (prefixed with the owner node's id in a cluster).
    pub sid: Arc<str>,
    /// The request that opened it.
    pub handshake: HandshakeRequest,
    /// The protocol revision of the client.
    protocol: ProtocolVersion,
    /// Protocol 3: the client asked for binary data as base64 on polling (`b64=1`).
    polling_base64: bool,
    pub(crate) state: Mutex<State>,
    /// Wakes whoever writes to the client: a pending polling GET or the WebSocket task.
    pub(crate) writable: Notify,
    /// Wakes every task of the session when it closes.
    pub(crate) closed_notify: Notify,
    pub(crate) engine: Weak<EngineShared>,
    /// The engine's `max_buffered_bytes`, kept here: it is read on every send.
    max_buffered_bytes: usize,
    /// The EngineHandler's state for this session (the Socket.IO client of this session).
    handler_state: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("sid", &self.sid).finish_non_exhaustive()
    }
}

thread_local! {
    /// True while this thread handles a message read behind others from the same
    /// connection: the server is behind its input.
    static BEHIND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as behind its input (see [`Session::send_all`]) until dropped.
pub(crate) struct Behind(bool);

impl Behind {
    pub(crate) fn mark(behind: bool) -> Behind {
        Behind(BEHIND.with(|b| b.replace(behind)))
    }
}

impl Drop for Behind {
    fn drop(&mut self) {
        BEHIND.with(|b| b.set(self.0));
    }
}

impl Session {
    pub(crate) fn new(
        sid: String,
        transport: TransportKind,
        handshake: HandshakeRequest,
        engine: Weak<EngineShared>,
        protocol: ProtocolVersion,
        polling_base64: bool,
    ) -> Session {
        let (interval, timeout) = engine.upgrade().map(|e| (e.config.ping_interval, e.config.ping_timeout)).unwrap_or_default();
        let now = tokio::time::Instant::now();
        // Protocol 3: the server only waits for the client's pings, the first within an
        // interval and a timeout of the handshake, as the reference server does.
        let pong_deadline = (protocol == ProtocolVersion::V3).then(|| now + interval + timeout);
        Session {
            sid: sid.into(),
            handshake: handshake.compact(),
            protocol,
            polling_base64,
            state: Mutex::new(State {
                transport,
                upgrade_claimed: false,
                upgrading: false,
                outbox: VecDeque::new(),
                outbox_bytes: 0,
                get_active: false,
                get_relayed: false,
                post_active: false,
                closed: None,
                pong_deadline,
                direct: None,
                ws_writing: false,
                partial: Vec::new(),
                next_ping: now + interval,
            }),
            writable: Notify::new(),
            closed_notify: Notify::new(),
            max_buffered_bytes: engine.upgrade().map(|e| e.config.max_buffered_bytes).unwrap_or(usize::MAX),
            engine,
            handler_state: OnceLock::new(),
        }
    }

    /// Queues packets for the client, in order, as one unit. Fails if the session is
    /// closed. A queue over the session's byte limit closes the session as too slow.
    pub fn send_all(&self, packets: impl IntoIterator<Item = OutPacket>) -> Result<(), SessionClosed> {
        let mut packets = packets.into_iter();
        let overflow = {
            let mut st = self.state.lock().unwrap();
            if st.closed.is_some() {
                return Err(SessionClosed);
            }
            // (Protocol 3 sessions always queue: their binary frames are reframed by the task.)
            // Nor while the thread is behind its input: then what is queued for a client
            // leaves with what follows in one write from its task, so the cost per delivery
            // falls as the load rises; one write per delivery would hold it where it is.
            if self.protocol == ProtocolVersion::V4 && !BEHIND.with(|b| b.get()) && st.direct.is_some() && !st.ws_writing && st.outbox.is_empty() && st.partial.is_empty() {
                // An idle WebSocket: the packets go to the socket now, from this thread.
                // Only what the socket does not take is queued, and only then is the
                // connection's task woken.
                let Some(first) = packets.next() else { return Ok(()) };
                let rest: Vec<OutPacket> = packets.by_ref().collect();
                let conn = st.direct.as_ref().expect("checked above");
                match super::websocket::try_write_now(conn, &first, &rest) {
                    Ok(written) => {
                        if written >= super::websocket::wire_len(&first, &rest) {
                            return Ok(());
                        }
                        let left = super::websocket::rest_after(&first, &rest, written);
                        st.outbox_bytes += left.len();
                        st.partial = left;
                    }
                    // Full (or broken: the task finds out): queue them.
                    Err(_) => {
                        for p in std::iter::once(first).chain(rest) {
                            st.outbox_bytes += p.len();
                            st.outbox.push_back(p);
                        }
                    }
                }
            }
            for p in packets {
                st.outbox_bytes += p.len();
                st.outbox.push_back(p);
            }
            st.outbox_bytes > self.max_buffered_bytes
        };
        if overflow {
            tracing::warn!(sid = %self.sid, "outbound queue over its limit, closing the slow client");
            self.close(CloseReason::SlowClient);
            return Err(SessionClosed);
        }
        self.writable.notify_one();
        Ok(())
    }

    /// Queues a packet for the client; an error once the session is closed.
    pub fn send(&self, packet: OutPacket) -> Result<(), SessionClosed> {
        self.send_all(std::iter::once(packet))
    }

    /// Bytes waiting in the outbound queue.
    pub fn buffered_bytes(&self) -> usize {
        self.state.lock().unwrap().outbox_bytes
    }

    /// The transport it uses now.
    pub fn transport(&self) -> TransportKind {
        self.state.lock().unwrap().transport
    }

    /// True while a polling GET of this session waits on the server for packets.
    pub fn polling_get_in_flight(&self) -> bool {
        self.state.lock().unwrap().get_active
    }

    /// True while a WebSocket claimed the upgrade of this polling session and has not
    /// finished it (or given up).
    pub(crate) fn upgrade_in_progress(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.upgrade_claimed && st.transport == TransportKind::Polling && st.closed.is_none()
    }

    /// True once the session is closed.
    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed.is_some()
    }

    /// Takes everything queued so far.
    pub(crate) fn drain(&self) -> Vec<OutPacket> {
        self.state.lock().unwrap().take_outbox()
    }

    /// Senders may write to this WebSocket's stream directly from now on.
    pub(crate) fn attach_ws(&self, conn: Arc<TcpConn>) {
        let mut st = self.state.lock().unwrap();
        if st.closed.is_none() {
            st.direct = Some(conn);
        }
    }

    /// The WebSocket's task ends: no more direct writes.
    pub(crate) fn detach_ws(&self) {
        let conn = {
            let mut st = self.state.lock().unwrap();
            st.ws_writing = false;
            st.direct.take()
        };
        drop(conn);
    }

    /// The WebSocket task takes what waits (the rest of a frame begun directly, then the
    /// queue, whose memory goes with it) and writes it; senders queue until it comes back.
    /// When nothing waits it returns None and senders may write directly again, unless
    /// `force` (the task is about to write a frame of its own).
    pub(crate) fn take_for_ws(&self, force: bool) -> Option<(Vec<u8>, VecDeque<OutPacket>)> {
        let mut st = self.state.lock().unwrap();
        if !force && st.partial.is_empty() && st.outbox.is_empty() {
            st.ws_writing = false;
            return None;
        }
        st.ws_writing = true;
        st.outbox_bytes = 0;
        Some((std::mem::take(&mut st.partial), std::mem::take(&mut st.outbox)))
    }

    /// Closes the session: the upper layer hears of it at once (once), the session
    /// leaves the table, and the transport flushes what is queued before it goes.
    pub fn close(&self, reason: CloseReason) {
        let linger = {
            let mut st = self.state.lock().unwrap();
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason);
            let polling = st.transport == TransportKind::Polling;
            if reason == CloseReason::SlowClient {
                // What it did not read is what overflowed: free it now.
                st.outbox.clear();
                st.outbox_bytes = 0;
                st.partial = Vec::new();
            }
            // The stream stays with the connection's task until it ends.
            drop(st.direct.take());
            // A polling client learns of a close from its next GET: first what was queued
            // (a DISCONNECT, say), then, in a later answer, the close packet, as the
            // reference server does. Until then the session stays findable, for a grace
            // period. Broken sessions go at once, so later requests learn the sid is gone.
            match reason {
                CloseReason::PingTimeout | CloseReason::TransportError | CloseReason::ParseError | CloseReason::SlowClient => None,
                _ if !polling => None,
                CloseReason::TransportClose if st.get_active => None,
                CloseReason::TransportClose => Some(std::time::Duration::from_secs(1)),
                _ => Some(std::time::Duration::from_secs(10)),
            }
        };
        tracing::debug!(sid = %self.sid, %reason, "session closed");
        self.closed_notify.notify_waiters();
        self.writable.notify_one();
        if let Some(engine) = self.engine.upgrade() {
            match linger {
                Some(delay) if tokio::runtime::Handle::try_current().is_ok() => {
                    let weak = self.engine.clone();
                    let sid = self.sid.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        if let Some(engine) = weak.upgrade() {
                            engine.remove(&sid);
                        }
                    });
                }
                _ => engine.remove(&self.sid),
            }
            engine.handler.on_close(self, reason);
        }
    }

    /// Why it closed, once it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.state.lock().unwrap().closed
    }

    /// Waits until the session is closed.
    pub async fn closed(&self) {
        loop {
            let notified = self.closed_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// The protocol revision of the client (3 only with `allow_eio3`).
    pub fn protocol(&self) -> ProtocolVersion {
        self.protocol
    }

    /// Protocol 3: the client asked for binary data as base64 on polling.
    pub(crate) fn polling_base64(&self) -> bool {
        self.polling_base64
    }

    /// Protocol 3: a ping from the client. Its next one must come within an interval
    /// and a timeout from now.
    pub(crate) fn on_client_ping(&self) {
        let Some(engine) = self.engine.upgrade() else { return };
        let wait = engine.config.ping_interval + engine.config.ping_timeout;
        let mut st = self.state.lock().unwrap();
        if st.closed.is_none() {
            st.pong_deadline = Some(tokio::time::Instant::now() + wait);
        }
    }

    pub(crate) fn on_pong(&self) {
        let interval = self.engine.upgrade().map(|e| e.config.ping_interval).unwrap_or_default();
        let mut st = self.state.lock().unwrap();
        if st.pong_deadline.take().is_some() {
            // The next ping comes one interval after the pong, as in the reference server.
            st.next_ping = tokio::time::Instant::now() + interval;
        }
    }

    /// Stores the EngineHandler's state for this session (only the first call counts).
    pub fn set_handler_state<T: Any + Send + Sync>(&self, value: Arc<T>) {
        let _ = self.handler_state.set(value);
    }

    /// The EngineHandler's state for this session, if it is of type `T`.
    pub fn handler_state<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.handler_state.get().cloned().and_then(|a| a.downcast::<T>().ok())
    }

    /// Runs the heartbeat for as long as the session lives (polling sessions; a
    /// WebSocket session's own task calls `heartbeat_step` instead).
    pub(crate) async fn heartbeat(self: Arc<Self>) {
        while let Some(wake) = self.heartbeat_step() {
            if self.transport() == TransportKind::WebSocket {
                return; // upgraded: the WebSocket task runs the heartbeat now
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.closed() => return,
            }
        }
    }

    /// Does what the heartbeat owes now: sends the ping that is due (the client then has
    /// `ping_timeout` to answer), or closes the session whose client missed its pong.
    /// Times follow the schedule, not when a timer happened to fire, so a session is
    /// never kept past its deadline. Returns when to call again (None: session closed).
    pub(crate) fn heartbeat_step(&self) -> Option<tokio::time::Instant> {
        let timeout = self.engine.upgrade().map(|e| e.config.ping_timeout)?;
        let now = tokio::time::Instant::now();
        let send_ping = {
            let mut st = self.state.lock().unwrap();
            if st.closed.is_some() {
                return None;
            }
            match st.pong_deadline {
                Some(deadline) if now >= deadline => None,
                Some(deadline) => return Some(deadline),
                None if now >= st.next_ping => {
                    let deadline = st.next_ping + timeout;
                    st.pong_deadline = Some(deadline);
                    Some(deadline)
                }
                None => return Some(st.next_ping),
            }
        };
        match send_ping {
            Some(deadline) => {
                self.send(OutPacket::control(PacketType::Ping)).ok()?;
                Some(deadline)
            }
            None => {
                self.close(CloseReason::PingTimeout);
                None
            }
        }
    }

    /// Closes the session if its client missed a pong deadline that its timer has not
    /// acted on yet. Returns true if the session is (now) closed.
    pub(crate) fn check_expired(&self) -> bool {
        let expired = {
            let st = self.state.lock().unwrap();
            if st.closed.is_some() {
                return true;
            }
            st.pong_deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
        };
        if expired {
            self.close(CloseReason::PingTimeout);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::HandshakeRequest;

    #[test]
    fn a_compacted_handshake_keeps_every_header_and_the_uri_but_not_the_parser_buffer() {
        // As hyper parses them: values and URI are slices of one large read buffer.
        let buffer = bytes::Bytes::from(vec![b'x'; 8192]);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, http::HeaderValue::from_maybe_shared(buffer.slice(0..9)).unwrap());
        headers.append("x-custom", http::HeaderValue::from_static("one"));
        headers.append("x-custom", http::HeaderValue::from_static("two"));
        let mut secret = http::HeaderValue::from_static("Bearer t");
        secret.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, secret);
        let req = HandshakeRequest {
            headers,
            uri: "/socket.io/?EIO=4&transport=websocket&a=%20b".parse().unwrap(),
            address: ([127, 0, 0, 1], 1).into(),
            issued: std::time::SystemTime::UNIX_EPOCH,
            secure: false,
        };
        let compact = req.compact();
        assert_eq!(compact.headers.get(http::header::HOST).unwrap(), "xxxxxxxxx");
        let custom: Vec<_> = compact.headers.get_all("x-custom").iter().collect();
        assert_eq!(custom, ["one", "two"]);
        assert!(compact.headers.get(http::header::AUTHORIZATION).unwrap().is_sensitive());
        assert_eq!(compact.headers.len(), 4);
        assert_eq!(compact.uri.path(), "/socket.io/");
        assert_eq!(compact.uri.query(), Some("EIO=4&transport=websocket&a=%20b"));
        // The 8 KiB buffer is referenced only by `buffer` now.
        assert!(buffer.is_unique());
        let absolute = HandshakeRequest { uri: "http://example.com/socket.io/?EIO=4".parse().unwrap(), ..compact }.compact();
        assert_eq!(absolute.uri.host(), Some("example.com"));
        assert_eq!(absolute.uri.query(), Some("EIO=4"));
    }
}
