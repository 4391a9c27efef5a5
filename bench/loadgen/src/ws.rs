//! A minimal Socket.IO v4 client over WebSocket (Engine.IO 4): the HTTP upgrade, client
//! frames (masked), server frames (unmasked), and the Engine.IO/Socket.IO handshake.
//! Hand-written so that one process can hold thousands of clients at a small, steady
//! CPU cost: one read buffer per connection, no per-message allocation for parsing.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::Interest;
use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Opens a TCP connection from `src` (port chosen by the kernel).
pub async fn tcp_connect(server: SocketAddr, src: Option<Ipv4Addr>, rcvbuf: Option<u32>) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip.into(), 0))?;
    }
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n)?;
    }
    let stream = sock.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The client address for client number `i`: 127.0.0.2 ..= 127.0.0.254.
pub fn source_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % 253) as u8)
}

pub fn io_err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// One text (or binary) message from the server.
pub enum Frame {
    Text(Bytes),
    Binary,
    Closed,
}

pub struct WsConn {
    pub stream: TcpStream,
    buf: BytesMut,
    partial: Option<Vec<u8>>,
    mask: u32,
    out: Vec<u8>,
}

impl WsConn {
    /// Sends the upgrade request and reads the `101` answer.
    pub async fn upgrade(stream: TcpStream, host: &str, path: &str) -> io::Result<WsConn> {
        WsConn::upgrade_sid(stream, host, path, None).await
    }

    /// The upgrade of an existing (polling) session when `sid` is given.
    pub async fn upgrade_sid(mut stream: TcpStream, host: &str, path: &str, sid: Option<&str>) -> io::Result<WsConn> {
        let sid = sid.map(|s| format!("&sid={s}")).unwrap_or_default();
        let req = format!(
            "GET {path}?EIO=4&transport=websocket{sid} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = &buf[..end];
                if !head.starts_with(b"HTTP/1.1 101") {
                    let line = String::from_utf8_lossy(&head[..head.len().min(60)]).into_owned();
                    return Err(io_err(format!("upgrade refused: {line}")));
                }
                buf.advance(end + 4);
                break;
            }
            if buf.len() > 16 * 1024 {
                return Err(io_err("upgrade answer too long"));
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(io_err("closed during upgrade"));
            }
        }
        let mask = (stream.local_addr().map(|a| a.port() as u32).unwrap_or(7) << 16) ^ 0x9e37_79b9;
        Ok(WsConn { stream, buf, partial: None, mask, out: Vec::with_capacity(256) })
    }

    /// The next message. Cancel-safe: its only await is a read into the buffer.
    pub async fn next(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(f) = self.parse()? {
                return Ok(f);
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(4096);
            }
            if self.read().await? == 0 {
                return Ok(Frame::Closed);
            }
        }
    }

    /// One read into the buffer. A short read means the socket is drained: the readiness is
    /// cleared then and there (tokio's epoll is edge-triggered and reports the next
    /// arrival), so a receiver spends one `read` per arrival instead of two (the second
    /// one returning EAGAIN), which matters at 200k+ frames/s on one core.
    async fn read(&mut self) -> io::Result<usize> {
        let fd = self.stream.as_raw_fd();
        loop {
            self.stream.readable().await?;
            let spare = self.buf.spare_capacity_mut();
            let mut got = None;
            let r = self.stream.try_io(Interest::READABLE, || {
                // SAFETY: reads into the spare capacity of the buffer, whose length is given.
                let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                got = Some(n as usize);
                if n > 0 && (n as usize) < spare.len() {
                    // Drained: tell tokio so (this "error" only clears the readiness).
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            if let Some(n) = got {
                // SAFETY: the kernel initialized `n` bytes of the spare capacity.
                unsafe { self.buf.advance_mut(n) };
                return Ok(n);
            }
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(()) => unreachable!("a read that returned sets `got`"),
            }
        }
    }

    fn parse(&mut self) -> io::Result<Option<Frame>> {
        loop {
            let b = &self.buf[..];
            if b.len() < 2 {
                return Ok(None);
            }
            let fin = b[0] & 0x80 != 0;
            let opcode = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let (len, mut at) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
                126 | 127 => return Ok(None),
                n => (n as usize, 2),
            };
            if masked {
                return Err(io_err("masked server frame"));
            }
            if len > 64 << 20 {
                return Err(io_err("frame too large"));
            }
            if b.len() < at + len {
                let need = at + len - b.len();
                self.buf.reserve(need);
                return Ok(None);
            }
            self.buf.advance(at);
            let payload = self.buf.split_to(len).freeze();
            at = 0;
            let _ = at;
            match opcode {
                0x8 => return Ok(Some(Frame::Closed)),
                0x9 => {
                    // WebSocket ping: answer with a pong carrying the same bytes.
                    self.queue_frame(0xA, &payload);
                    continue;
                }
                0xA => continue,
                0x0 => {
                    let mut p = self.partial.take().unwrap_or_default();
                    p.extend_from_slice(&payload);
                    if fin {
                        return Ok(Some(if p.first() == Some(&b'b') { Frame::Binary } else { Frame::Text(Bytes::from(p)) }));
                    }
                    self.partial = Some(p);
                }
                0x1 if fin => return Ok(Some(Frame::Text(payload))),
                0x2 if fin => return Ok(Some(Frame::Binary)),
                0x1 | 0x2 => self.partial = Some(payload.to_vec()),
                _ => return Err(io_err(format!("unknown opcode {opcode}"))),
            }
        }
    }

    fn queue_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.mask = self.mask.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let key = self.mask.to_be_bytes();
        self.out.push(0x80 | opcode);
        let n = payload.len();
        if n < 126 {
            self.out.push(0x80 | n as u8);
        } else if n <= u16::MAX as usize {
            self.out.push(0x80 | 126);
            self.out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.out.push(0x80 | 127);
            self.out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        self.out.extend_from_slice(&key);
        self.out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
    }

    /// Sends one text message (and whatever control frames are waiting).
    pub async fn send(&mut self, text: &[u8]) -> io::Result<()> {
        self.queue_frame(0x1, text);
        self.flush().await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Engine.IO open, Socket.IO CONNECT to `/`, and its answer.
    pub async fn socketio_handshake(&mut self) -> io::Result<()> {
        match self.next().await? {
            Frame::Text(t) if t.first() == Some(&b'0') => {}
            _ => return Err(io_err("no Engine.IO open packet")),
        }
        self.socketio_connect().await
    }

    /// The Engine.IO upgrade of a polling session on this WebSocket (`2probe`, `3probe`,
    /// `5`), then the Socket.IO CONNECT over it.
    pub async fn probe_and_connect(&mut self) -> io::Result<()> {
        self.send(b"2probe").await?;
        loop {
            match self.next().await? {
                Frame::Text(t) if t.as_ref() == b"3probe" => break,
                Frame::Text(_) | Frame::Binary => {}
                Frame::Closed => return Err(io_err("closed during the upgrade probe")),
            }
        }
        self.send(b"5").await?;
        self.socketio_connect().await
    }

    /// Joins `room` with an ack and waits for the ack, asking again each second, five
    /// times at most; returns how many times it asked again. The contract's `join` acks,
    /// so a server that drops an event sent right after its CONNECT (socketioxide runs the
    /// connect handler, which registers the event handlers, in a spawned task) shows up
    /// here as a retry rather than as deliveries lost during the run.
    pub async fn join(&mut self, room: &str) -> io::Result<u64> {
        for attempt in 0..JOIN_TRIES {
            self.send(join_packet(room, attempt).as_bytes()).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                match tokio::time::timeout_at(deadline, self.next()).await {
                    Err(_) => break,
                    Ok(Ok(Frame::Text(t))) if is_join_ack(&t) => return Ok(attempt),
                    Ok(Ok(Frame::Text(t))) if t.as_ref() == b"2" => self.send(b"3").await?,
                    Ok(Ok(Frame::Text(_) | Frame::Binary)) => {}
                    Ok(Ok(Frame::Closed)) => return Err(io_err("closed while joining")),
                    Ok(Err(e)) => return Err(e),
                }
            }
        }
        Err(io_err(format!("join not acknowledged after {JOIN_TRIES} tries")))
    }

    /// Socket.IO CONNECT to `/` and its answer.
    pub async fn socketio_connect(&mut self) -> io::Result<()> {
        self.send(b"40").await?;
        loop {
            match self.next().await? {
                Frame::Text(t) if t.starts_with(b"40") => return Ok(()),
                Frame::Text(t) if t.starts_with(b"44") => return Err(io_err("connect_error")),
                Frame::Text(t) if t.as_ref() == b"2" => self.send(b"3").await?,
                Frame::Text(_) | Frame::Binary => {}
                Frame::Closed => return Err(io_err("closed during Socket.IO connect")),
            }
        }
    }
}

/// The number after `key` (e.g. `"t":`) in a JSON text, if any.
pub fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let mut n: u64 = 0;
    let mut any = false;
    for &c in &text[at..] {
        if c.is_ascii_digit() {
            n = n * 10 + (c - b'0') as u64;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(n)
}

/// The payload of the benchmark messages: a send timestamp, a sequence number, the
/// measured window it belongs to (`m`: 0 outside any, 1 for the one window of a run, the
/// step number in a saturation run), and padding up to about `size` bytes of JSON.
pub fn payload(t_us: u64, seq: u64, window: u64, size: usize) -> String {
    let head = format!("{{\"t\":{t_us},\"m\":{window},\"s\":{seq},\"p\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    let mut s = String::with_capacity(head.len() + pad + 2);
    s.push_str(&head);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// How many times a client asks to join before it gives up.
pub const JOIN_TRIES: u64 = 5;
/// Ack ids of `join` start here, one per attempt (echo acks count from 0 and are told
/// apart by their payload).
const JOIN_ACK_BASE: u64 = 1_000_000_000;

/// `join(room)` with the ack id of this attempt.
pub fn join_packet(room: &str, attempt: u64) -> String {
    format!("42{}[\"join\",\"{room}\"]", JOIN_ACK_BASE + attempt)
}

/// Whether a text packet is the ack of one of our `join` attempts (`43<id>[...]`).
pub fn is_join_ack(t: &[u8]) -> bool {
    let Some(rest) = t.strip_prefix(b"43") else { return false };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok().and_then(|d| d.parse::<u64>().ok())
        .is_some_and(|id| (JOIN_ACK_BASE..JOIN_ACK_BASE + JOIN_TRIES).contains(&id))
}
