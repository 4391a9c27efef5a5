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

    /// Takes the stream back for a WebSocket: the stream with its guard, and the bytes
    /// read from it but not consumed yet (`read_ahead`, what the HTTP parser read past the
    /// upgrade, then what is left of the replay).
    pub(crate) fn into_ws(self, read_ahead: &[u8]) -> (TcpConn, Vec<u8>) {
        let mut unread = read_ahead.to_vec();
        unread.extend_from_slice(&self.replay[self.at..]);
        (TcpConn { stream: self.stream, _guard: self._guard }, unread)
    }
}

/// A WebSocket's TCP stream, shared by the connection's task (reads, and writes of what
/// is queued) and its session (a sender writes straight to the socket while nothing is
/// queued). Every operation takes `&self`.
pub(crate) struct TcpConn {
    pub(crate) stream: TcpStream,
    _guard: Option<Box<dyn Any + Send + Sync>>,
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
