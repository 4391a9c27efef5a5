//! HTTP long-polling: a GET waits for queued packets and returns them joined by `\x1e`
//! (protocol 3: length-prefixed, or as a binary payload);
//! a POST carries the client's packets and is answered `ok`. One GET and one POST at a
//! time per session: a second concurrent one is a protocol violation that closes it.

use super::http::{add_cors, error_response, ErrorCode, ResponseBody};
use super::session::{CloseReason, ProtocolVersion, Session, TransportKind};
use super::EngineShared;
use crate::protocol::engine_packet::{decode_payload, encode_payload, OutPacket, PacketType};
use crate::protocol::engine_packet_v3;
use bytes::{Buf, BufMut, Bytes};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;

/// Clears a session's in-flight flag even when the request future is dropped.
struct PollInFlight<'a> {
    session: &'a Session,
    get: bool,
}

impl Drop for PollInFlight<'_> {
    fn drop(&mut self) {
        let mut st = self.session.state.lock().unwrap();
        if self.get {
            st.get_active = false;
            drop(st);
            // A GET may be waiting for this one to end (see `claim_get`).
            self.session.writable.notify_waiters();
        } else {
            st.post_active = false;
        }
    }
}

pub(crate) fn payload_response(engine: &EngineShared, session: &Session, req_headers: &HeaderMap, packets: &[OutPacket]) -> Response<ResponseBody> {
    let (body, binary) = match session.protocol() {
        ProtocolVersion::V4 => (encode_payload(packets), false),
        ProtocolVersion::V3 => engine_packet_v3::encode_payload(packets, session.polling_base64()),
    };
    let content_type = if binary { "application/octet-stream" } else { "text/plain; charset=UTF-8" };
    let mut res = Response::new(Full::new(body));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    add_cors(engine, req_headers, res.headers_mut());
    res
}

pub(crate) async fn get(engine: &Arc<EngineShared>, session: Arc<Session>, headers: &HeaderMap, relayed: bool) -> Response<ResponseBody> {
    if !claim_get(&session, relayed).await {
        tracing::debug!(sid = %session.sid, "overlapping polling GET");
        session.close(CloseReason::TransportError);
        return error_response(engine, headers, ErrorCode::BadRequest, None);
    }
    let _in_flight = PollInFlight { session: &session, get: true };
    loop {
        let notified = session.writable.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut st = session.state.lock().unwrap();
            if st.transport == TransportKind::WebSocket {
                // This transport was replaced: the request is one too many.
                drop(st);
                return error_response(engine, headers, ErrorCode::BadRequest, None);
            }
            if st.upgrading {
                drop(st);
                break;
            }
            if let Some(reason) = st.closed {
                // The last answers of a closed session: what was still queued, then (in
                // the next answer) the close packet, or a noop when the client itself
                // closed. Then the session goes.
                if !st.outbox.is_empty() {
                    let packets = st.take_outbox();
                    drop(st);
                    return payload_response(engine, &session, headers, &packets);
                }
                drop(st);
                let last = if reason == CloseReason::TransportClose { PacketType::Noop } else { PacketType::Close };
                engine.remove(&session.sid);
                return payload_response(engine, &session, headers, &[OutPacket::control(last)]);
            }
            if !st.outbox.is_empty() {
                let packets = st.take_outbox();
                drop(st);
                return payload_response(engine, &session, headers, &packets);
            }
        }
        notified.await;
    }
    release_for_upgrade(engine, &session, headers).await
}

/// How long a GET waits for the session's previous GET to end before it is taken for
/// an overlap, when that previous GET was relayed by another node. A client never
/// overlaps its own GETs, but a GET retried after the node carrying the first one died (a
/// balancer retrying on another node, which forwards it here) may arrive a moment before
/// this node has seen the dead node's connection close and dropped the first GET. Such a
/// GET goes on. A GET that overlaps one the client sent here directly is refused at once,
/// as the reference server does. One second: noticing a closed connection takes a
/// scheduling round of the connection's task, which a loaded node can delay by hundreds
/// of milliseconds, and a real overlap only costs a client bug one second.
const RELAYED_OVERLAP_GRACE: std::time::Duration = std::time::Duration::from_millis(1000);

/// Marks the session's GET as in flight, once the previous one (if any) has ended. False
/// for an overlap.
async fn claim_get(session: &Session, relayed: bool) -> bool {
    let deadline = tokio::time::Instant::now() + RELAYED_OVERLAP_GRACE;
    loop {
        let ended = session.writable.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        {
            let mut st = session.state.lock().unwrap();
            if !st.get_active {
                st.get_active = true;
                st.get_relayed = relayed;
                return true;
            }
            if st.closed.is_some() || !st.get_relayed {
                return false;
            }
        }
        if tokio::time::timeout_at(deadline, ended).await.is_err() {
            return false;
        }
    }
}

/// The probe succeeded, so the client will pause polling once this GET completes,
/// then send `5`. The GET is released with a noop after a short grace period (the
/// reference server waits 100 ms); if the upgrade completes during it, this GET came
/// from a client that did not pause, and is refused like any request on a replaced
/// transport.
async fn release_for_upgrade(engine: &Arc<EngineShared>, session: &Session, headers: &HeaderMap) -> Response<ResponseBody> {
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        if session.transport() == TransportKind::WebSocket {
            return error_response(engine, headers, ErrorCode::BadRequest, None);
        }
    }
    payload_response(engine, session, headers, &[OutPacket::control(PacketType::Noop)])
}

pub(crate) async fn post<B>(engine: &Arc<EngineShared>, session: Arc<Session>, req: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let headers = req.headers().clone();
    {
        let mut st = session.state.lock().unwrap();
        if st.closed.is_some() {
            drop(st);
            return error_response(engine, &headers, ErrorCode::UnknownSid, None);
        }
        if st.post_active {
            drop(st);
            tracing::debug!(sid = %session.sid, "overlapping polling POST");
            session.close(CloseReason::TransportError);
            return error_response(engine, &headers, ErrorCode::BadRequest, None);
        }
        st.post_active = true;
    }
    let _in_flight = PollInFlight { session: &session, get: false };
    let binary_body = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    let max = engine.config.max_payload;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = Box::pin(req.into_body());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large(engine, &session, &headers, body);
    }
    let deadline = tokio::time::Instant::now() + engine.config.request_body_timeout;
    let body = match tokio::time::timeout_at(deadline, read_body(body, max)).await {
        Err(_) => {
            tracing::debug!(sid = %session.sid, "polling POST body too slow");
            engine.limit_hit(crate::metrics::Limit::RequestBodyTimeout);
            let mut res = Response::new(Full::new(Bytes::new()));
            *res.status_mut() = StatusCode::REQUEST_TIMEOUT;
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            add_cors(engine, &headers, res.headers_mut());
            return res;
        }
        Ok(BodyRead::Done(body)) => body,
        Ok(BodyRead::TooLarge(rest)) => return too_large(engine, &session, &headers, rest),
        Ok(BodyRead::Failed(e)) => {
            tracing::debug!(sid = %session.sid, error = %e, "polling POST body failed");
            session.close(CloseReason::TransportError);
            return error_response(engine, &headers, ErrorCode::BadRequest, None);
        }
    };
    let packets = match session.protocol() {
        ProtocolVersion::V4 => decode_payload(&body),
        // Protocol 3: a client that takes binary may send a binary payload.
        ProtocolVersion::V3 => engine_packet_v3::decode_payload(&body, binary_body),
    };
    let packets = match packets {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(sid = %session.sid, error = %e, "bad polling payload");
            session.close(CloseReason::ParseError);
            return error_response(engine, &headers, ErrorCode::BadRequest, None);
        }
    };
    for packet in packets {
        if session.is_closed() {
            break; // packets after a close packet are ignored
        }
        engine.on_packet(&session, packet);
    }
    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    add_cors(engine, &headers, res.headers_mut());
    res
}

/// What reading a POST body within `max_payload` gave.
enum BodyRead<B> {
    Done(Bytes),
    /// Over the limit: the body, still unread past that point.
    TooLarge(B),
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

async fn read_body<B>(mut body: std::pin::Pin<Box<B>>, max: usize) -> BodyRead<std::pin::Pin<Box<B>>>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.remaining() > max {
                        return BodyRead::TooLarge(body);
                    }
                    buf.put(data);
                }
            }
            Err(e) => return BodyRead::Failed(e.into()),
        }
    }
    BodyRead::Done(buf.freeze())
}

/// The most bytes of an oversized body read (and thrown away) after its 413, so that the
/// client, which is usually still writing, can finish and read the answer.
const DRAIN_MAX_BYTES: usize = 16 << 20;

/// The 413 of a POST over `max_payload`. The answer goes out at once; the rest of the
/// body is read and thrown away in the background (at most `DRAIN_MAX_BYTES`, within
/// `request_body_timeout`), and only then does the connection close. Closing with the
/// body unread would make the kernel reset the connection, and a client still writing
/// would see EPIPE or "socket hang up" instead of the 413.
fn too_large<B>(engine: &EngineShared, session: &Session, headers: &HeaderMap, body: B) -> Response<ResponseBody>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    // As the reference server: the request is refused, the session lives on.
    tracing::debug!(sid = %session.sid, "polling POST over maxPayload");
    engine.limit_hit(crate::metrics::Limit::MaxPayload);
    let timeout = engine.config.request_body_timeout;
    tokio::spawn(async move {
        let drain = async {
            let mut body = std::pin::pin!(body);
            let mut read = 0usize;
            while let Some(Ok(frame)) = body.as_mut().frame().await {
                read += frame.data_ref().map_or(0, |d| d.remaining());
                if read > DRAIN_MAX_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, drain).await;
    });
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    add_cors(engine, headers, res.headers_mut());
    res
}
