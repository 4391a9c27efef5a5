//! The WebSocket transport: a session opened over WebSocket, or one that upgrades from
//! polling (`2probe` → `3probe`, a noop to the pending GET, then `5`). One task per
//! connection reads frames and writes what the session queues; writes have a deadline,
//! so a client that stops reading is dropped instead of holding memory.

use super::http::{error_response, ErrorCode, ResponseBody};
use super::session::{CloseReason, Session, TransportKind};
use super::EngineShared;
use crate::protocol::engine_packet::{decode_text, OutPacket, Packet};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

/// The byte stream under a WebSocket: the TCP stream itself when shoal's own listener
/// served the request (so hyper's 8 KiB read buffer is released), or hyper's upgraded
/// connection when the engine is mounted elsewhere.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

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

/// Answers the HTTP upgrade and, once upgraded, runs the connection for `session`.
fn accept<B>(engine: &Arc<EngineShared>, req: Request<B>, run: impl FnOnce(Ws) -> futures_util::future::BoxFuture<'static, ()> + Send + 'static) -> Result<Response<ResponseBody>, Response<ResponseBody>> {
    let headers = req.headers();
    let key = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| tungstenite::handshake::derive_accept_key(k.as_bytes()));
    let version_ok = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let Some(accept_key) = key.filter(|_| version_ok) else {
        return Err(error_response(engine, headers, ErrorCode::BadRequest, None));
    };
    let mut req = req;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let config = WebSocketConfig::default()
        .max_message_size(Some(engine.config.max_payload))
        .max_frame_size(Some(engine.config.max_payload))
        // Grows for big messages; small up front, since most sessions are idle.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(engine.config.max_buffered_bytes.max(1 << 20));
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(unwrap_upgraded(upgraded), Role::Server, Some(config)).await;
                run(ws).await;
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
        return match accept(engine, req, |mut ws| {
            Box::pin(async move {
                let _ = ws.close(None).await;
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
        let msg = match ws.next().await {
            Some(Ok(m)) => m,
            _ => {
                cancel_upgrade(session);
                return None;
            }
        };
        let WsMessage::Text(text) = msg else { continue };
        match decode_text(text.as_str()) {
            Ok(Packet::Ping(data)) if data == "probe" => {
                if ws.send(WsMessage::text("3probe")).await.is_err() {
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

async fn sleep_until_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn to_ws(packet: OutPacket) -> WsMessage {
    match packet {
        OutPacket::Text(b) => match tungstenite::Utf8Bytes::try_from(b) {
            Ok(text) => WsMessage::Text(text),
            Err(_) => WsMessage::text(""),
        },
        OutPacket::Binary(b) => WsMessage::Binary(b),
    }
}

/// Reads frames and writes queued packets until the session or the connection ends.
async fn run(engine: Arc<EngineShared>, session: Arc<Session>, mut ws: Ws) {
    let write_timeout = engine.config.write_timeout;
    // The heartbeat runs in this task: one task per WebSocket session.
    let mut wake = session.heartbeat_step();
    loop {
        let notified = session.writable.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Any packet queued (also by the polling side before the upgrade) goes out first.
        let packets = session.drain();
        if !packets.is_empty() {
            let write = async {
                for p in packets {
                    ws.feed(to_ws(p)).await?;
                }
                ws.flush().await
            };
            match tokio::time::timeout(write_timeout, write).await {
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
            let _ = tokio::time::timeout(write_timeout, ws.close(None)).await;
            return;
        }
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(WsMessage::Text(text))) => match decode_text(text.as_str()) {
                    Ok(packet) => engine.on_packet(&session, packet),
                    Err(e) => {
                        tracing::debug!(sid = %session.sid, error = %e, "bad WebSocket packet");
                        session.close(CloseReason::ParseError);
                    }
                },
                Some(Ok(WsMessage::Binary(bytes))) => engine.on_packet(&session, Packet::Binary(bytes)),
                Some(Ok(WsMessage::Close(_))) | None => session.close(CloseReason::TransportClose),
                Some(Ok(_)) => {} // ping/pong frames: tungstenite answers pings itself
                Some(Err(e)) => {
                    tracing::debug!(sid = %session.sid, error = %e, "WebSocket read failed");
                    let reason = match e {
                        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => CloseReason::TransportClose,
                        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => CloseReason::TransportClose,
                        tungstenite::Error::Io(_) => CloseReason::TransportClose,
                        _ => CloseReason::TransportError,
                    };
                    session.close(reason);
                    return;
                }
            },
            _ = &mut notified => {}
            _ = sleep_until_or_never(wake) => wake = session.heartbeat_step(),
        }
    }
}
