//! A TCP connection as a listener hands it to the engine: the stream, the bytes already
//! read from it (a PROXY header's tail, or what hyper read past an upgrade), and a guard
//! that lives exactly as long as the connection (a listener counts open connections
//! with it). When a WebSocket upgrade arrives on a `Conn`, the engine takes the stream
//! back from hyper and frees hyper's read buffer; on any other I/O it uses hyper's
//! upgraded connection as it is. The engine knows no listener: this type is the whole
//! contract.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// An accepted TCP connection, with the bytes read ahead (PROXY protocol sniffing) replayed
/// first, and an optional idle timeout.
pub struct Conn {
    replay: Vec<u8>,
    at: usize,
    stream: TcpStream,
    /// Dropped with the connection, whatever layer holds it by then.
    _guard: Option<Box<dyn Any + Send + Sync>>,
}

impl Conn {
    /// `replay`: bytes already read from `stream`, served before anything else.
    pub fn new(stream: TcpStream, replay: Vec<u8>, guard: Option<Box<dyn Any + Send + Sync>>) -> Conn {
        Conn { replay, at: 0, stream, _guard: guard }
    }

    /// Puts bytes read ahead (e.g. by the HTTP parser, past an upgrade) back in front.
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut replay = bytes.to_vec();
        replay.extend_from_slice(&self.replay[self.at..]);
        self.replay = replay;
        self.at = 0;
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.replay.len() {
            let n = (self.replay.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.replay[at..at + n]);
            self.at += n;
            if self.at == self.replay.len() {
                self.replay = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
