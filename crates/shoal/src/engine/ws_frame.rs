//! WebSocket framing (RFC 6455) as a server speaks it, with no I/O: frames from a client
//! are parsed out of a byte buffer (masked, possibly fragmented, control frames between
//! fragments), and frames to a client are a small header in front of a payload that is
//! never copied. shoal does its own framing so that a broadcast's bytes go to every
//! recipient as they are (one refcount each), many queued frames leave in one `writev`,
//! and an idle connection holds no buffer at all.

/// A frame's opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// A continuation of a fragmented message.
    Continuation,
    /// A text message (UTF-8).
    Text,
    /// A binary message.
    Binary,
    /// The closing handshake.
    Close,
    /// A ping (answered with a pong).
    Ping,
    /// A pong.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// What a client did wrong; each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Reserved bits set (no extension was negotiated), an unknown opcode, an unmasked
    /// frame, a fragmented or oversized control frame, or a continuation of nothing.
    Protocol(&'static str),
    /// A frame or a message longer than the limit.
    TooLarge,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Protocol(why) => write!(f, "WebSocket protocol error: {why}"),
            FrameError::TooLarge => f.write_str("WebSocket message over the size limit"),
        }
    }
}

/// One frame from a client, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// True on the last frame of a message.
    pub fin: bool,
    /// The frame's opcode.
    pub opcode: Opcode,
    /// Its payload, unmasked.
    pub payload: Vec<u8>,
}

/// Parses one client frame at the start of `buf`. Returns the frame and the bytes it
/// took, or None if `buf` does not hold a whole frame yet. A frame that announces more
/// than `max_len` bytes is refused before its payload arrives.
pub fn parse_client_frame(buf: &[u8], max_len: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::Protocol("unknown opcode"))?;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("client frame not masked"));
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(FrameError::Protocol("length with its top bit set"));
            }
            (len, 10)
        }
        n => (n as u64, 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(FrameError::Protocol("fragmented or oversized control frame"));
    }
    if len > max_len as u64 {
        return Err(FrameError::TooLarge);
    }
    let len = len as usize;
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let mut payload = buf[at..at + len].to_vec();
    unmask(&mut payload, mask);
    Ok(Some((Frame { fin, opcode, payload }, at + len)))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    // Eight bytes at a time, then the tail.
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// The header of an unfragmented server frame with a payload of `len` bytes; the
/// payload follows it unchanged (servers do not mask).
pub fn server_header(opcode: Opcode, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode.bits();
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// Reassembles messages from frames: fragments are joined, control frames pass through.
#[derive(Default)]
pub struct Assembler {
    /// The message being reassembled: its opcode and what arrived of it.
    partial: Option<(Opcode, Vec<u8>)>,
}

/// What a client's frame amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text message.
    Text(String),
    /// A whole binary message.
    Binary(Vec<u8>),
    /// A ping with its payload (to echo in the pong).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// The close frame's payload (status code and reason), echoed back.
    Close(Vec<u8>),
}

/// Why a text message was refused.
pub const INVALID_UTF8: FrameError = FrameError::Protocol("text message is not UTF-8");

impl Assembler {
    /// Takes one frame; returns a whole message when one is complete.
    pub fn push(&mut self, frame: Frame, max_len: usize) -> Result<Option<Incoming>, FrameError> {
        let message = match frame.opcode {
            Opcode::Ping => return Ok(Some(Incoming::Ping(frame.payload))),
            Opcode::Pong => return Ok(Some(Incoming::Pong)),
            Opcode::Close => return Ok(Some(Incoming::Close(frame.payload))),
            Opcode::Text | Opcode::Binary => {
                if self.partial.is_some() {
                    return Err(FrameError::Protocol("new message before the last one ended"));
                }
                if !frame.fin {
                    self.partial = Some((frame.opcode, frame.payload));
                    return Ok(None);
                }
                (frame.opcode, frame.payload)
            }
            Opcode::Continuation => {
                let Some((opcode, mut data)) = self.partial.take() else {
                    return Err(FrameError::Protocol("continuation of nothing"));
                };
                if data.len() + frame.payload.len() > max_len {
                    return Err(FrameError::TooLarge);
                }
                data.extend_from_slice(&frame.payload);
                if !frame.fin {
                    self.partial = Some((opcode, data));
                    return Ok(None);
                }
                (opcode, data)
            }
        };
        Ok(Some(match message {
            (Opcode::Text, data) => Incoming::Text(String::from_utf8(data).map_err(|_| INVALID_UTF8)?),
            (_, data) => Incoming::Binary(data),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn a_masked_text_frame_is_read_whole_and_only_whole() {
        let f = client_frame(true, 1, b"42[\"chat\",\"hi\"]");
        for cut in 0..f.len() {
            assert_eq!(parse_client_frame(&f[..cut], 1000), Ok(None), "cut at {cut}");
        }
        let (frame, used) = parse_client_frame(&f, 1000).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(frame, Frame { fin: true, opcode: Opcode::Text, payload: b"42[\"chat\",\"hi\"]".to_vec() });
    }

    #[test]
    fn lengths_of_16_and_64_bits() {
        for n in [125, 126, 65535, 65536, 100_000] {
            let payload = vec![7u8; n];
            let f = client_frame(true, 2, &payload);
            let (frame, used) = parse_client_frame(&f, 1 << 20).unwrap().unwrap();
            assert_eq!((frame.payload.len(), used), (n, f.len()));
            assert!(frame.payload.iter().all(|b| *b == 7));
        }
    }

    #[test]
    fn hostile_frames_are_errors() {
        assert_eq!(parse_client_frame(&[0x81, 0x05, b'h', b'e'], 100), Err(FrameError::Protocol("client frame not masked")));
        assert_eq!(parse_client_frame(&[0xC1, 0x80, 0, 0, 0, 0], 100), Err(FrameError::Protocol("reserved bits set")));
        assert_eq!(parse_client_frame(&[0x83, 0x80, 0, 0, 0, 0], 100), Err(FrameError::Protocol("unknown opcode")));
        // Announcing 2^40 bytes is refused from the header alone.
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(parse_client_frame(&huge, 1000), Err(FrameError::TooLarge));
        let mut top = vec![0x82, 0xFF];
        top.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(parse_client_frame(&top, 1000).is_err());
        assert!(parse_client_frame(&client_frame(false, 9, b"x"), 100).is_err(), "fragmented ping");
        assert!(parse_client_frame(&client_frame(true, 9, &[0; 126]), 1000).is_err(), "ping over 125 bytes");
    }

    #[test]
    fn fragments_are_joined_around_control_frames() {
        let mut a = Assembler::default();
        let frames = [client_frame(false, 1, b"42[\"a"), client_frame(true, 9, b"p"), client_frame(false, 0, b"bc"), client_frame(true, 0, b"\"]")];
        let mut out = Vec::new();
        for f in frames {
            let (frame, _) = parse_client_frame(&f, 100).unwrap().unwrap();
            if let Some(m) = a.push(frame, 100).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, [Incoming::Ping(b"p".to_vec()), Incoming::Text("42[\"abc\"]".into())]);
    }

    #[test]
    fn messages_over_the_limit_and_bad_utf8_are_refused() {
        let mut a = Assembler::default();
        let (f1, _) = parse_client_frame(&client_frame(false, 2, &[1; 60]), 100).unwrap().unwrap();
        assert_eq!(a.push(f1, 100), Ok(None));
        let (f2, _) = parse_client_frame(&client_frame(true, 0, &[1; 60]), 100).unwrap().unwrap();
        assert_eq!(a.push(f2, 100), Err(FrameError::TooLarge));
        let mut a = Assembler::default();
        let (f, _) = parse_client_frame(&client_frame(true, 1, &[0xff, 0xfe]), 100).unwrap().unwrap();
        assert_eq!(a.push(f, 100), Err(INVALID_UTF8));
        let mut a = Assembler::default();
        let (f, _) = parse_client_frame(&client_frame(true, 0, b"x"), 100).unwrap().unwrap();
        assert!(a.push(f, 100).is_err(), "a continuation of nothing");
    }

    #[test]
    fn server_headers() {
        assert_eq!(&server_header(Opcode::Text, 5).0[..2], &[0x81, 5]);
        let (h, n) = server_header(Opcode::Binary, 300);
        assert_eq!(&h[..n], &[0x82, 126, 1, 44]);
        let (h, n) = server_header(Opcode::Text, 70_000);
        assert_eq!(&h[..n], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }
}
