//! Routing of one HTTP request to the engine: query checks (the protocol revision
//! among them: 4, or 3 with `allow_eio3`), the error answers of the
//! protocol, CORS, and the handshake. Polling GET/POST go to `polling.rs`, upgrades to
//! `websocket.rs`.

use super::session::{HandshakeRequest, ProtocolVersion, Session, TransportKind};
use super::limits::Refusal;
use super::{polling, websocket, EngineShared};
use crate::metrics::Limit;
use crate::protocol::engine_packet::{OutPacket, PacketType};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// The body of every answer of the engine.
pub type ResponseBody = Full<Bytes>;

/// The peer address of the TCP connection a request came on, as a request extension.
/// shoal's own listener sets it; an app that mounts the engine elsewhere should too.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Marks a request that reached the engine through an intermediary that can fail on its
/// own while the client lives (another node of a cluster forwarding it), as a request
/// extension. A polling GET that overlaps a relayed GET waits a moment for it to end
/// (its carrier may have died and the client retried) before it is taken for an overlap.
#[derive(Clone, Copy, Debug)]
pub struct Relayed;

/// The error codes of the Engine.IO protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The `transport` query parameter is missing or not allowed.
    UnknownTransport = 0,
    /// No session has this `sid`.
    UnknownSid = 1,
    /// A handshake must be a GET.
    BadHandshakeMethod = 2,
    /// The request is malformed.
    BadRequest = 3,
    /// The handshake was refused by `allow_request`.
    Forbidden = 4,
    /// The `EIO` query parameter is not 4.
    UnsupportedProtocolVersion = 5,
}

impl ErrorCode {
    /// The official server's message for this code.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::UnknownTransport => "Transport unknown",
            ErrorCode::UnknownSid => "Session ID unknown",
            ErrorCode::BadHandshakeMethod => "Bad handshake method",
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }
}

/// The query parameters the protocol reads, percent-decoded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// `EIO`: the protocol version.
    pub eio: Option<String>,
    /// `transport`: `polling` or `websocket`.
    pub transport: Option<String>,
    /// `sid`: the session id, on every request after the handshake.
    pub sid: Option<String>,
    /// One of the three was given more than once: the request is ambiguous, and every
    /// layer (the engine, the cluster ingress) must read it the same way, so it is refused.
    pub repeated: bool,
}

impl Query {
    /// Parses a request's query string (`EIO=4&transport=polling&sid=...`).
    pub fn parse(query: &str) -> Query {
        let mut q = Query::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*k {
                "EIO" => &mut q.eio,
                "transport" => &mut q.transport,
                "sid" => &mut q.sid,
                _ => continue,
            };
            q.repeated |= slot.is_some();
            *slot = Some(v.into_owned());
        }
        q
    }

    /// The query of a request's URI.
    pub fn of<B>(req: &Request<B>) -> Query {
        Query::parse(req.uri().query().unwrap_or(""))
    }
}

/// The JSON error answer of the protocol, with CORS headers when configured.
pub(crate) fn error_response(engine: &EngineShared, req_headers: &HeaderMap, code: ErrorCode, message: Option<&str>) -> Response<ResponseBody> {
    let status = if code == ErrorCode::Forbidden { StatusCode::FORBIDDEN } else { StatusCode::BAD_REQUEST };
    let mut text = String::new();
    crate::protocol::value::write_json_string(message.unwrap_or(code.message()), &mut text);
    let body = format!("{{\"code\":{},\"message\":{}}}", code as u8, text);
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_cors(engine, req_headers, res.headers_mut());
    res
}

pub(crate) fn plain_response(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=UTF-8"));
    res
}

/// Adds the CORS headers of the engine's configuration to a response.
pub(crate) fn add_cors(engine: &EngineShared, req_headers: &HeaderMap, headers: &mut HeaderMap) {
    let Some(cors) = &engine.config.cors else { return };
    let origin = req_headers.get(header::ORIGIN);
    let allowed = match origin {
        _ if cors.origins.is_empty() => {
            if cors.credentials {
                origin.cloned()
            } else {
                Some(HeaderValue::from_static("*"))
            }
        }
        Some(o) => cors.origins.iter().any(|a| a.as_bytes() == o.as_bytes()).then(|| o.clone()),
        None => None,
    };
    if let Some(value) = allowed {
        let star = value == "*";
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if !star {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if cors.credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }
}

fn preflight(engine: &EngineShared, req_headers: &HeaderMap) -> Response<ResponseBody> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    add_cors(engine, req_headers, h);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"));
    if let Some(asked) = req_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        h.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}

/// True if the request asks to upgrade to WebSocket.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

pub(crate) async fn handle<B>(engine: &Arc<EngineShared>, mut req: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let headers = req.headers().clone();
    if req.method() == Method::OPTIONS && engine.config.cors.is_some() {
        return preflight(engine, &headers);
    }
    let q = Query::of(&req);
    if q.repeated {
        return error_response(engine, &headers, ErrorCode::BadRequest, None);
    }
    // The checks run in the reference server's order, so clients see the same codes.
    let transport = match q.transport.as_deref() {
        Some("polling") if engine.config.transports.polling => TransportKind::Polling,
        Some("websocket") if engine.config.transports.websocket => TransportKind::WebSocket,
        _ => return error_response(engine, &headers, ErrorCode::UnknownTransport, None),
    };
    let upgrade = is_websocket_upgrade(&headers);

    if let Some(sid) = &q.sid {
        let Some(session) = engine.get(sid) else {
            return error_response(engine, &headers, ErrorCode::UnknownSid, None);
        };
        if session.check_expired() && session.close_reason() == Some(super::CloseReason::PingTimeout) {
            return error_response(engine, &headers, ErrorCode::UnknownSid, None);
        }
        if transport == TransportKind::WebSocket {
            if !upgrade || req.method() != Method::GET {
                return error_response(engine, &headers, ErrorCode::BadRequest, None);
            }
            return websocket::upgrade(engine, session, req);
        }
        if session.transport() != TransportKind::Polling {
            return error_response(engine, &headers, ErrorCode::BadRequest, None);
        }
        return match *req.method() {
            Method::GET => polling::get(engine, session, &headers, req.extensions().get::<Relayed>().is_some()).await,
            Method::POST => polling::post(engine, session, req).await,
            _ => {
                let mut res = plain_response(StatusCode::INTERNAL_SERVER_ERROR, "");
                add_cors(engine, &headers, res.headers_mut());
                res
            }
        };
    }

    // A new session.
    if req.method() != Method::GET {
        return error_response(engine, &headers, ErrorCode::BadHandshakeMethod, None);
    }
    if transport == TransportKind::WebSocket && !upgrade {
        return error_response(engine, &headers, ErrorCode::BadRequest, None);
    }
    if let Some(allow) = &engine.config.allow_request {
        let (parts, body) = req.into_parts();
        if let Err(message) = allow(&parts) {
            return error_response(engine, &headers, ErrorCode::Forbidden, Some(&message));
        }
        req = Request::from_parts(parts, body);
    }
    let protocol = match q.eio.as_deref() {
        Some("4") => ProtocolVersion::V4,
        Some("3") if engine.config.allow_eio3 => ProtocolVersion::V3,
        _ => return error_response(engine, &headers, ErrorCode::UnsupportedProtocolVersion, None),
    };
    if engine.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
        return error_response(engine, &headers, ErrorCode::Forbidden, Some("Server is shutting down"));
    }
    if engine.session_count() >= engine.config.max_sessions {
        tracing::warn!(limit = engine.config.max_sessions, "session limit reached, refusing a handshake");
        engine.limit_hit(Limit::MaxSessions);
        return error_response(engine, &headers, ErrorCode::Forbidden, Some("Too many sessions"));
    }
    if let Some(PeerAddr(peer)) = req.extensions().get::<PeerAddr>() {
        let ip = peer.ip().to_canonical();
        // An unknown address (an embedding that sets none) is not one client.
        let limited = !ip.is_unspecified() && (engine.config.limit_loopback || !ip.is_loopback());
        if limited {
            let config = &engine.config;
            match engine.per_address.check(ip, config.max_sessions_per_address, config.handshakes_per_address_per_second) {
                Ok(()) => {}
                Err(Refusal::Sessions) => {
                    tracing::debug!(%ip, limit = config.max_sessions_per_address, "sessions per address reached, refusing a handshake");
                    engine.limit_hit(Limit::SessionsPerAddress);
                    return error_response(engine, &headers, ErrorCode::Forbidden, Some("Too many sessions from this address"));
                }
                Err(Refusal::Rate) => {
                    tracing::debug!(%ip, limit = config.handshakes_per_address_per_second, "handshakes per second from an address reached, refusing one");
                    engine.limit_hit(Limit::HandshakeRate);
                    return error_response(engine, &headers, ErrorCode::Forbidden, Some("Too many handshakes from this address"));
                }
            }
        }
    }
    handshake(engine, transport, protocol, req)
}

/// True if a handshake's query asks for binary data as base64 (`b64=1`, protocol 3).
fn asks_base64(uri: &http::Uri) -> bool {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).any(|(k, v)| k == "b64" && !v.is_empty())
}

fn handshake<B>(engine: &Arc<EngineShared>, transport: TransportKind, protocol: ProtocolVersion, req: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body + Send + 'static,
{
    let address = req
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let secure = req.uri().scheme_str() == Some("https");
    let info = HandshakeRequest {
        headers: req.headers().clone(),
        uri: req.uri().clone(),
        address,
        issued: SystemTime::now(),
        secure,
    };
    let sid = super::sid::new_sid(&engine.config.node_id);
    let base64 = protocol == ProtocolVersion::V3 && asks_base64(&info.uri);
    let session = Arc::new(Session::new(sid, transport, info, Arc::downgrade(engine), protocol, base64));
    let upgrades = if transport == TransportKind::Polling && engine.config.transports.websocket {
        "[\"websocket\"]"
    } else {
        "[]"
    };
    let mut open = format!(
        "{{\"sid\":\"{}\",\"upgrades\":{},\"pingInterval\":{},\"pingTimeout\":{}",
        session.sid,
        upgrades,
        engine.config.ping_interval.as_millis(),
        engine.config.ping_timeout.as_millis(),
    );
    // Protocol 3 has no maxPayload in its handshake.
    if protocol == ProtocolVersion::V4 {
        open.push_str(&format!(",\"maxPayload\":{}", engine.config.max_payload));
    }
    open.push('}');
    tracing::debug!(sid = %session.sid, ?transport, peer = %address, "handshake");
    match transport {
        TransportKind::Polling => {
            engine.insert(session.clone());
            engine.handler.on_open(&session);
            tokio::spawn(session.clone().heartbeat());
            let mut packets = vec![OutPacket::text(PacketType::Open, &open)];
            packets.extend(session.drain());
            let headers = session.handshake.headers.clone();
            polling::payload_response(engine, &session, &headers, &packets)
        }
        TransportKind::WebSocket => {
            let _ = session.send(OutPacket::text(PacketType::Open, &open));
            websocket::open(engine, session, req)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn query_is_percent_decoded() {
        let q = Query::parse("EIO=4&transport=polling&sid=a%7Eb&t=x");
        assert_eq!(q, Query { eio: Some("4".into()), transport: Some("polling".into()), sid: Some("a~b".into()), repeated: false });
        assert_eq!(Query::parse("sid=%").sid.as_deref(), Some("%"));
        assert_eq!(Query::parse("sid=a%2").sid.as_deref(), Some("a%2"));
        assert_eq!(Query::parse("sid=%zz").sid.as_deref(), Some("%zz"));
        assert_eq!(Query::parse("").sid, None);
    }

    #[test]
    fn a_repeated_parameter_is_flagged() {
        let q = Query::parse("EIO=4&transport=polling&sid=n1~a&sid=n2~b");
        assert!(q.repeated);
        assert!(!Query::parse("EIO=4&transport=polling&sid=n1~a&t=1&t=2").repeated);
    }
}
