//! The floor: the cheapest program that serves the benchmark contract, the yardstick the
//! other servers are measured against. Not a product.
//!
//! On namespace `/`: `join(room, ack?)` joins the room (acked when asked), `broadcast(payload)` emits `tick` with
//! the payload to room `bench`, `echo(payload, ack)` acks the payload. Engine.IO 4 over
//! WebSocket and over HTTP long-polling (with the upgrade to WebSocket), pings every 25 s.
//!
//! How it stays cheap:
//! - one thread, one epoll set (mio, edge-triggered); pin it with `taskset`;
//! - WebSocket handshake and framing by hand; a broadcast's frame is built once and shared
//!   (`Bytes`) by every recipient;
//! - what one read produces (a broadcast, or several broadcasts that arrived together) is
//!   gathered per client and written once per client when that read is handled: one
//!   `write` when a single frame waits, one `writev` when several do (a server that falls
//!   behind reads several broadcasts at once, so its cost per delivery falls as load
//!   rises); a client whose socket is full keeps its queue until epoll says writable;
//! - no buffer per connection while idle: reads go to one shared scratch buffer, and a
//!   connection keeps bytes only while a partial frame or request is pending.
//!
//! Limits (enough for the benchmarks): fragmented client frames close the connection;
//! a client that misses a pong is dropped at its next ping (25 s later, not 20 s).
//!
//! ```text
//! bench-floor [--port 3000]
//! ```
//! Prints `LISTENING <port>` once ready; SIGTERM ends it.

use base64::Engine as _;
use bytes::Bytes;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use sha1::{Digest, Sha1};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
const MAX_PAYLOAD: usize = 1_000_000;
/// Bytes queued for one client before it is dropped as too slow (shoal's default).
const MAX_QUEUED: usize = 8 << 20;
const PING_INTERVAL_S: u64 = 25;
const NONE: u32 = u32::MAX;
const RING: usize = 64;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.iter().position(|a| a == "--port").and_then(|i| args.get(i + 1)).map(|p| p.parse().expect("--port wants a number")).unwrap_or(3000);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    sock.listen(1024)?;
    let listener = TcpListener::from_std(sock.into());
    println!("LISTENING {}", listener.local_addr()?.port());
    Server::new(listener)?.run()
}

/// A tiny slab: indexes stay valid until removed, freed slots are reused.
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab { items: Vec::new(), free: Vec::new() }
    }
    fn insert(&mut self, t: T) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.items[i] = Some(t);
                i
            }
            None => {
                self.items.push(Some(t));
                self.items.len() - 1
            }
        }
    }
    fn remove(&mut self, i: usize) -> Option<T> {
        let t = self.items.get_mut(i)?.take();
        if t.is_some() {
            self.free.push(i);
        }
        t
    }
    fn get(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i).and_then(Option::as_mut)
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Proto {
    Http,
    Ws,
}

/// One TCP connection: an HTTP/1.1 connection (polling requests, the upgrade) or a
/// WebSocket. `session` is the Engine.IO session it carries (WebSocket), or the session
/// whose GET it holds (polling).
struct Conn {
    sock: TcpStream,
    proto: Proto,
    session: u32,
    /// Bytes of a partial frame or request; empty (no allocation) otherwise.
    rbuf: Vec<u8>,
    out: VecDeque<Bytes>,
    queued: usize,
    dead: bool,
    /// In `Server::dirty`: has frames to write at the end of this read.
    dirty: bool,
    /// The socket refused bytes: wait for writable before writing again.
    blocked: bool,
}

struct Session {
    gen: u32,
    /// Polling sessions only (the sid is looked up by their requests).
    sid: Option<Box<str>>,
    /// The WebSocket carrying the session (direct, or once upgraded).
    ws: u32,
    /// A WebSocket in the middle of the upgrade probe.
    probing: u32,
    /// The connection of the pending polling GET.
    get: u32,
    /// Polling: packets waiting for the next GET.
    outbox: Vec<Bytes>,
    rooms: Vec<u16>,
    pinged: bool,
    ponged: bool,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    sessions: Slab<Session>,
    sids: HashMap<Box<str>, u32>,
    rooms: Vec<(Box<str>, Vec<u32>)>,
    /// Heartbeat: sessions by the second (mod RING) of their next ping.
    ring: Vec<Vec<(u32, u32)>>,
    started: Instant,
    second: u64,
    scratch: Vec<u8>,
    dead: Vec<usize>,
    /// Connections with frames queued since the last flush.
    dirty: Vec<usize>,
    gen: u32,
    rng: u64,
}

/// A server frame (unmasked, FIN) around `text`; `.1` is the header length.
fn frame(opcode: u8, text: &[u8]) -> (Bytes, usize) {
    let n = text.len();
    let mut v = Vec::with_capacity(n + 10);
    v.push(0x80 | opcode);
    if n < 126 {
        v.push(n as u8);
    } else if n <= u16::MAX as usize {
        v.push(126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let h = v.len();
    v.extend_from_slice(text);
    (Bytes::from(v), h)
}

fn http_response(status: &str, ctype: &str, body: &[u8]) -> Bytes {
    let mut v = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    v.extend_from_slice(body);
    Bytes::from(v)
}

fn bad_request(code: u8, msg: &str) -> Bytes {
    http_response("400 Bad Request", "application/json", format!("{{\"code\":{code},\"message\":\"{msg}\"}}").as_bytes())
}

/// `name=value` from a query string.
fn query<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

/// A Socket.IO event packet after its type digit: optional ack id, optional namespace,
/// then `["name"` and the rest. Returns (ack id, event name, the arguments without the
/// closing `]`, possibly empty).
fn parse_event(p: &[u8]) -> Option<(Option<&[u8]>, &[u8], &[u8])> {
    let mut i = 0;
    if p.first() == Some(&b'/') {
        i = p.iter().position(|&b| b == b',')? + 1;
        if &p[..i] != b"/," {
            return None;
        }
    }
    let id_start = i;
    while i < p.len() && p[i].is_ascii_digit() {
        i += 1;
    }
    let id = (i > id_start).then(|| &p[id_start..i]);
    let rest = p[i..].strip_prefix(b"[\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let name = &rest[..end];
    let after = &rest[end + 1..];
    let args = match after.first() {
        Some(b',') => after[1..].strip_suffix(b"]")?,
        Some(b']') => &[][..],
        _ => return None,
    };
    Some((id, name, args))
}

impl Server {
    fn new(listener: TcpListener) -> io::Result<Server> {
        let mut listener = listener;
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) ^ ((std::process::id() as u64) << 32);
        Ok(Server {
            poll,
            listener,
            conns: Slab::new(),
            sessions: Slab::new(),
            sids: HashMap::new(),
            rooms: Vec::new(),
            ring: (0..RING).map(|_| Vec::new()).collect(),
            started: Instant::now(),
            second: 0,
            scratch: vec![0; 64 * 1024],
            dead: Vec::new(),
            dirty: Vec::new(),
            gen: 0,
            rng: seed | 1,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let next = Duration::from_secs(self.second + 1).saturating_sub(self.started.elapsed());
            if let Err(e) = self.poll.poll(&mut events, Some(next)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    self.accept();
                    continue;
                }
                let c = ev.token().0;
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.on_readable(c);
                }
                // The peer's FIN came with this edge: a short read took the data before it,
                // and no later edge will report it. Answer what it sent, then close.
                if ev.is_read_closed() || ev.is_error() {
                    self.flush();
                    self.kill(c);
                }
                if ev.is_writable() {
                    if let Some(conn) = self.conns.get(c) {
                        conn.blocked = false;
                    }
                    self.drain(c);
                }
                self.flush();
                self.reap();
            }
            let now = self.started.elapsed().as_secs();
            while self.second < now {
                self.second += 1;
                self.heartbeat(self.second);
                self.flush();
                self.reap();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let entry = self.conns.free.last().copied().unwrap_or(self.conns.items.len());
                    if self.poll.registry().register(&mut sock, Token(entry), Interest::READABLE | Interest::WRITABLE).is_err() {
                        continue;
                    }
                    let i = self.conns.insert(Conn { sock, proto: Proto::Http, session: NONE, rbuf: Vec::new(), out: VecDeque::new(), queued: 0, dead: false, dirty: false, blocked: false });
                    debug_assert_eq!(i, entry);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of files and the like: try again at the next readiness.
                Err(_) => return,
            }
        }
    }

    fn kill(&mut self, c: usize) {
        if let Some(conn) = self.conns.get(c) {
            if !conn.dead {
                conn.dead = true;
                self.dead.push(c);
            }
        }
    }

    /// Closes the connections marked dead (never while a broadcast iterates a room).
    fn reap(&mut self) {
        while let Some(c) = self.dead.pop() {
            let Some(mut conn) = self.conns.remove(c) else { continue };
            let _ = self.poll.registry().deregister(&mut conn.sock);
            let s = conn.session;
            if s == NONE {
                continue;
            }
            let Some(sess) = self.sessions.get(s as usize) else { continue };
            if sess.ws == c as u32 {
                self.close_session(s);
            } else if sess.probing == c as u32 {
                sess.probing = NONE;
            } else if sess.get == c as u32 {
                sess.get = NONE;
            }
        }
    }

    fn close_session(&mut self, s: u32) {
        let Some(sess) = self.sessions.remove(s as usize) else { return };
        for r in sess.rooms {
            let members = &mut self.rooms[r as usize].1;
            if let Some(at) = members.iter().position(|&m| m == s) {
                members.swap_remove(at);
            }
        }
        if let Some(sid) = sess.sid {
            self.sids.remove(&sid);
        }
        for c in [sess.ws, sess.probing, sess.get] {
            if c != NONE {
                self.kill(c as usize);
            }
        }
    }

    /// Queues `bytes` for connection `c`; `flush` writes it when the current read is handled.
    fn write(&mut self, c: usize, bytes: Bytes) {
        let Some(conn) = self.conns.get(c) else { return };
        if conn.dead {
            return;
        }
        conn.queued += bytes.len();
        conn.out.push_back(bytes);
        if conn.queued > MAX_QUEUED {
            return self.kill(c);
        }
        if !conn.dirty && !conn.blocked {
            conn.dirty = true;
            self.dirty.push(c);
        }
    }

    /// Writes what the last read queued: one `write` or `writev` per client.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &c in &dirty {
            if let Some(conn) = self.conns.get(c) {
                conn.dirty = false;
            }
            self.drain(c);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Writes the queue of `c` while the socket takes it.
    fn drain(&mut self, c: usize) {
        let Some(conn) = self.conns.get(c) else { return };
        while !conn.out.is_empty() && !conn.dead {
            let r = if conn.out.len() == 1 {
                conn.sock.write(&conn.out[0])
            } else {
                let mut iov = [IoSlice::new(&[]); 64];
                let n = conn.out.len().min(64);
                for (slot, b) in iov.iter_mut().zip(conn.out.iter()) {
                    *slot = IoSlice::new(b);
                }
                conn.sock.write_vectored(&iov[..n])
            };
            match r {
                Ok(mut n) => {
                    conn.queued -= n;
                    while n > 0 {
                        let front = conn.out.front_mut().expect("written bytes were queued");
                        if n >= front.len() {
                            n -= front.len();
                            conn.out.pop_front();
                        } else {
                            *front = front.slice(n..);
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.blocked = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.kill(c),
            }
        }
        if conn.out.is_empty() && conn.out.capacity() > 0 {
            // Give the memory back: an idle connection holds no queue.
            conn.out = VecDeque::new();
        }
    }

    fn on_readable(&mut self, c: usize) {
        let mut buf = std::mem::take(&mut self.scratch);
        let Some(conn) = self.conns.get(c) else {
            self.scratch = buf;
            return;
        };
        let mut filled = conn.rbuf.len();
        if filled > buf.len() {
            buf.resize(filled.next_power_of_two(), 0);
        }
        buf[..filled].copy_from_slice(&conn.rbuf);
        conn.rbuf = Vec::new();
        let mut eof = false;
        loop {
            if filled == buf.len() {
                if buf.len() > 2 * MAX_PAYLOAD {
                    eof = true;
                    break;
                }
                buf.resize(buf.len() * 2, 0);
            }
            match conn.sock.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    filled += n;
                    // A short read drained the socket: edge-triggered epoll reports the
                    // next arrival, so no read is spent on EAGAIN.
                    if filled < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let used = self.process(c, &mut buf[..filled]);
        if let Some(conn) = self.conns.get(c) {
            if used < filled && !conn.dead {
                conn.rbuf = buf[used..filled].to_vec();
            }
        }
        if eof {
            self.kill(c);
        }
        // A big message grew the scratch buffer: give that memory back.
        if buf.len() > 64 * 1024 {
            buf = vec![0; 64 * 1024];
        }
        self.scratch = buf;
    }

    /// Handles the complete frames or requests in `data`; returns how many bytes it used.
    fn process(&mut self, c: usize, data: &mut [u8]) -> usize {
        let mut at = 0;
        loop {
            let Some(conn) = self.conns.get(c) else { return at };
            if conn.dead || at >= data.len() {
                return at;
            }
            let used = match conn.proto {
                Proto::Http => self.http(c, &data[at..]),
                Proto::Ws => self.ws_frame(c, &mut data[at..]),
            };
            match used {
                Some(0) | None => return at,
                Some(n) => at += n,
            }
        }
    }

    // ---- WebSocket -----------------------------------------------------------------------

    /// One client frame (masked). Returns the bytes used, Some(0) if incomplete.
    fn ws_frame(&mut self, c: usize, d: &mut [u8]) -> Option<usize> {
        if d.len() < 2 {
            return Some(0);
        }
        let (fin, opcode, masked) = (d[0] & 0x80 != 0, d[0] & 0x0f, d[1] & 0x80 != 0);
        let (len, mut h) = match d[1] & 0x7f {
            126 if d.len() >= 4 => (u16::from_be_bytes([d[2], d[3]]) as usize, 4),
            127 if d.len() >= 10 => (u64::from_be_bytes(d[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return Some(0),
            n => (n as usize, 2),
        };
        if !masked || !fin || opcode == 0 || len > MAX_PAYLOAD {
            self.kill(c);
            return None;
        }
        if d.len() < h + 4 + len {
            return Some(0);
        }
        let key = [d[h], d[h + 1], d[h + 2], d[h + 3]];
        h += 4;
        let payload = &mut d[h..h + len];
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i & 3];
        }
        match opcode {
            0x1 => self.engine_packet(c, payload),
            0x8 => {
                let (f, _) = frame(0x8, &[]);
                self.write(c, f);
                self.kill(c);
            }
            0x9 => {
                let (f, _) = frame(0xA, payload);
                self.write(c, f);
            }
            _ => {} // binary and pongs: not in the contract
        }
        Some(h + len)
    }

    /// Sends one Engine.IO packet (its text) to session `s`, by WebSocket or polling.
    fn send(&mut self, s: u32, text: &[u8]) {
        let (f, h) = frame(0x1, text);
        self.send_frame(s, &f, h);
    }

    fn send_frame(&mut self, s: u32, f: &Bytes, header: usize) {
        let Some(sess) = self.sessions.get(s as usize) else { return };
        if sess.ws != NONE {
            let c = sess.ws as usize;
            self.write(c, f.clone());
        } else {
            sess.outbox.push(f.slice(header..));
            if sess.get != NONE {
                self.answer_get(s);
            }
        }
    }

    /// An Engine.IO packet from session of connection `c` (WebSocket or polling POST).
    fn engine_packet(&mut self, c: usize, p: &[u8]) {
        let Some(conn) = self.conns.get(c) else { return };
        let s = conn.session;
        let Some(sess) = self.sessions.get(s as usize) else { return };
        match p.first() {
            Some(b'4') => self.socketio_packet(s, &p[1..]),
            Some(b'3') => sess.ponged = true,
            Some(b'2') if p == b"2probe" && sess.probing == c as u32 => {
                let (f, _) = frame(0x1, b"3probe");
                self.write(c, f);
                // Release a pending GET with a noop so the client pauses polling.
                self.send(s, b"6");
            }
            Some(b'5') if sess.probing == c as u32 => {
                sess.probing = NONE;
                sess.ws = c as u32;
                for p in std::mem::take(&mut sess.outbox) {
                    let (f, _) = frame(0x1, &p);
                    self.write(c, f);
                }
            }
            Some(b'1') => self.close_session(s),
            Some(b'6') => {}
            _ => self.close_session(s),
        }
    }

    fn socketio_packet(&mut self, s: u32, p: &[u8]) {
        match p.first() {
            Some(b'0') => {
                if p.get(1) == Some(&b'/') && !p.starts_with(b"0/,") {
                    let nsp = &p[1..p.iter().position(|&b| b == b',').unwrap_or(p.len())];
                    let mut out = b"44".to_vec();
                    out.extend_from_slice(nsp);
                    out.extend_from_slice(b",{\"message\":\"Invalid namespace\"}");
                    return self.send(s, &out);
                }
                let id = self.new_id();
                self.send(s, format!("40{{\"sid\":\"{id}\"}}").as_bytes());
            }
            Some(b'1') => {
                self.leave_all(s);
            }
            Some(b'2') => {
                let Some((id, name, args)) = parse_event(&p[1..]) else { return };
                match name {
                    b"broadcast" => {
                        let mut text = Vec::with_capacity(args.len() + 12);
                        text.extend_from_slice(b"42[\"tick\"");
                        if !args.is_empty() {
                            text.push(b',');
                            text.extend_from_slice(args);
                        }
                        text.push(b']');
                        self.broadcast(b"bench", &text);
                    }
                    b"echo" => {
                        let Some(id) = id else { return };
                        let mut text = Vec::with_capacity(args.len() + 24);
                        text.extend_from_slice(b"43");
                        text.extend_from_slice(id);
                        text.push(b'[');
                        text.extend_from_slice(args);
                        text.push(b']');
                        self.send(s, &text);
                    }
                    b"join" => {
                        let room = args.strip_prefix(b"\"").and_then(|r| r.iter().position(|&b| b == b'"').map(|e| &r[..e]));
                        if let Some(room) = room {
                            let room = String::from_utf8_lossy(room).into_owned();
                            self.join(s, &room);
                        }
                        if let Some(id) = id {
                            let mut text = b"43".to_vec();
                            text.extend_from_slice(id);
                            text.extend_from_slice(b"[]");
                            self.send(s, &text);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn join(&mut self, s: u32, room: &str) {
        let r = match self.rooms.iter().position(|(n, _)| &**n == room) {
            Some(r) => r,
            None => {
                self.rooms.push((room.into(), Vec::new()));
                self.rooms.len() - 1
            }
        };
        let Some(sess) = self.sessions.get(s as usize) else { return };
        if !sess.rooms.contains(&(r as u16)) {
            sess.rooms.push(r as u16);
            self.rooms[r].1.push(s);
        }
    }

    fn leave_all(&mut self, s: u32) {
        let Some(sess) = self.sessions.get(s as usize) else { return };
        for r in std::mem::take(&mut sess.rooms) {
            let members = &mut self.rooms[r as usize].1;
            if let Some(at) = members.iter().position(|&m| m == s) {
                members.swap_remove(at);
            }
        }
    }

    /// One frame for every member of `room`.
    fn broadcast(&mut self, room: &[u8], text: &[u8]) {
        let Some(r) = self.rooms.iter().position(|(n, _)| n.as_bytes() == room) else { return };
        let (f, h) = frame(0x1, text);
        let members = std::mem::take(&mut self.rooms[r].1);
        for &s in &members {
            self.send_frame(s, &f, h);
        }
        // Nothing joins or leaves while sending (closes wait in `dead`).
        self.rooms[r].1 = members;
    }

    // ---- HTTP: polling and the WebSocket handshake -----------------------------------------

    /// One HTTP request. Returns the bytes used, Some(0) if incomplete.
    fn http(&mut self, c: usize, d: &[u8]) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let head = match req.parse(d) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if d.len() < 16 * 1024 => return Some(0),
            _ => {
                self.kill(c);
                return None;
            }
        };
        let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        let length: usize = header("content-length").and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok()).unwrap_or(0);
        if length > MAX_PAYLOAD {
            self.kill(c);
            return None;
        }
        if d.len() < head + length {
            return Some(0);
        }
        let body = &d[head..head + length];
        let (path, q) = req.path.unwrap_or("/").split_once('?').unwrap_or((req.path.unwrap_or("/"), ""));
        if path != "/socket.io/" {
            self.write(c, http_response("404 Not Found", "text/plain", b"not found"));
            return Some(head + length);
        }
        if query(q, "EIO") != Some("4") {
            self.write(c, bad_request(5, "Unsupported protocol version"));
            return Some(head + length);
        }
        let sid = query(q, "sid");
        let session = match sid {
            Some(sid) => match self.sids.get(sid) {
                Some(&s) => Some(s),
                None => {
                    self.write(c, bad_request(1, "Session ID unknown"));
                    return Some(head + length);
                }
            },
            None => None,
        };
        let ws_key = header("sec-websocket-key").map(<[u8]>::to_vec);
        match (req.method, query(q, "transport")) {
            (Some("GET"), Some("websocket")) => {
                let Some(key) = ws_key else {
                    self.write(c, bad_request(3, "Bad request"));
                    return Some(head + length);
                };
                let mut sha = Sha1::new();
                sha.update(&key);
                sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85");
                let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
                let res = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
                if let Some(s) = session {
                    let sess = self.sessions.get(s as usize).expect("sid maps to a session");
                    if sess.ws != NONE || sess.probing != NONE {
                        self.write(c, bad_request(3, "Bad request"));
                        return Some(head + length);
                    }
                    sess.probing = c as u32;
                    self.write(c, Bytes::from(res));
                    let conn = self.conns.get(c).expect("live connection");
                    conn.proto = Proto::Ws;
                    conn.session = s;
                } else {
                    self.write(c, Bytes::from(res));
                    let s = self.new_session(None, c as u32);
                    let conn = self.conns.get(c).expect("live connection");
                    conn.proto = Proto::Ws;
                    conn.session = s;
                    // The sid of a session that never polls is not kept.
                    let sid = self.new_id();
                    let open = format!("0{{\"sid\":\"{sid}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}");
                    self.send(s, open.as_bytes());
                }
            }
            (Some("GET"), Some("polling")) => match session {
                None => {
                    let sid = self.new_id();
                    self.new_session(Some(sid.clone().into()), NONE);
                    let open = format!("0{{\"sid\":\"{sid}\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}");
                    self.write(c, http_response("200 OK", "text/plain; charset=UTF-8", open.as_bytes()));
                }
                Some(s) => {
                    let sess = self.sessions.get(s as usize).expect("sid maps to a session");
                    if sess.get != NONE || sess.ws != NONE {
                        self.write(c, bad_request(3, "Bad request"));
                        self.close_session(s);
                        return Some(head + length);
                    }
                    sess.get = c as u32;
                    self.conns.get(c).expect("live connection").session = s;
                    if !sess.outbox.is_empty() {
                        self.answer_get(s);
                    }
                }
            },
            (Some("POST"), Some("polling")) if session.is_some() => {
                let s = session.expect("checked");
                self.write(c, http_response("200 OK", "text/html", b"ok"));
                // The packets act as if sent by the session: borrow this connection's tag.
                let conn = self.conns.get(c).expect("live connection");
                let saved = conn.session;
                conn.session = s;
                let body = body.to_vec();
                for p in body.split(|&b| b == 0x1e) {
                    self.engine_packet(c, p);
                }
                if let Some(conn) = self.conns.get(c) {
                    conn.session = saved;
                }
            }
            _ => self.write(c, bad_request(3, "Bad request")),
        }
        Some(head + length)
    }

    /// Answers the pending GET of `s` with everything in its outbox.
    fn answer_get(&mut self, s: u32) {
        let Some(sess) = self.sessions.get(s as usize) else { return };
        let g = std::mem::replace(&mut sess.get, NONE) as usize;
        let mut body = Vec::new();
        for (i, p) in sess.outbox.drain(..).enumerate() {
            if i > 0 {
                body.push(0x1e);
            }
            body.extend_from_slice(&p);
        }
        if let Some(conn) = self.conns.get(g) {
            conn.session = NONE;
        }
        self.write(g, http_response("200 OK", "text/plain; charset=UTF-8", &body));
    }

    // ---- sessions and the heartbeat ---------------------------------------------------------

    fn new_id(&mut self) -> String {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let mut y = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        y ^= y >> 29;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([x.to_le_bytes(), y.to_le_bytes()].concat())
    }

    fn new_session(&mut self, sid: Option<Box<str>>, ws: u32) -> u32 {
        self.gen = self.gen.wrapping_add(1);
        let s = self.sessions.insert(Session { gen: self.gen, sid: sid.clone(), ws, probing: NONE, get: NONE, outbox: Vec::new(), rooms: Vec::new(), pinged: false, ponged: false }) as u32;
        if let Some(sid) = sid {
            self.sids.insert(sid, s);
        }
        let due = self.second + PING_INTERVAL_S;
        self.ring[due as usize % RING].push((s, self.gen));
        s
    }

    /// Pings the sessions due this second; drops those that did not answer the last ping.
    fn heartbeat(&mut self, second: u64) {
        let due = std::mem::take(&mut self.ring[second as usize % RING]);
        let mut again = Vec::with_capacity(due.len());
        for (s, gen) in due {
            let Some(sess) = self.sessions.get(s as usize) else { continue };
            if sess.gen != gen {
                continue;
            }
            if sess.pinged && !sess.ponged {
                self.close_session(s);
                continue;
            }
            sess.pinged = true;
            sess.ponged = false;
            self.send(s, b"2");
            again.push((s, gen));
        }
        let next = (second + PING_INTERVAL_S) as usize % RING;
        self.ring[next].extend(again);
    }
}
