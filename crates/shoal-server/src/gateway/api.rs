//! The HTTP publish API: what the app does to sockets from outside, on any node, through
//! the library's broadcast operators (so through the adapter: every node of the cluster).
//! `POST <path>/<method>` with a JSON (or MessagePack) body and `authorization: Bearer
//! <token>`; every answer is JSON.
//!
//! A target selects sockets: `namespace` (default `/`), `to` (rooms), `sockets` (ids),
//! `except` (rooms or ids); none of `to`/`sockets` means the whole namespace. A
//! namespace that is neither configured nor matched by a `pattern` is `404 not_found`.
//! - `emit`: target + `event`, `args`, `ack` (bool), `timeout` (ms) → `{ok}` or, with
//!   `ack`, `{ok, responses, expected, timed_out}` (acks collected cluster-wide);
//! - `join` / `leave`: target + `rooms` → `{ok}`;
//! - `disconnect`: target + `close` (bool) → `{ok}`;
//! - `sockets`: target → `{sockets: [{id, rooms, data, address}]}`;
//! - `rooms`: target → `{rooms: {"<room>": <sockets>}}` (socket ids left out).
//!
//! Errors: `{error: <code>, message}` with 400, 401, 404, 405, 413 or 502.

use super::connect::{names, rooms};
use super::metrics::GatewayMetrics;
use super::wire::{self, object, to_json};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use shoal::{BroadcastOperator, Server, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Rooms, ids or except entries one request may name.
const MAX_TARGETS: usize = 10_000;
/// Longest ack timeout a request may ask for.
const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Api {
    io: Server,
    /// `""` on its own listener, e.g. `/api` on the node's.
    prefix: String,
    tokens: Vec<String>,
    max_body: usize,
    ack_timeout: Duration,
    metrics: GatewayMetrics,
}

struct ApiError(StatusCode, &'static str, String);

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, "bad_request", message.into())
    }
}

type Answer = Result<Value, ApiError>;

impl Api {
    pub fn new(io: Server, prefix: String, tokens: Vec<String>, max_body: usize, ack_timeout: Duration, metrics: GatewayMetrics) -> Api {
        Api { io, prefix: prefix.trim_end_matches('/').to_owned(), tokens, max_body, ack_timeout, metrics }
    }

    /// True if `path` is one of the API's.
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix(&self.prefix).is_some_and(|rest| rest.starts_with('/'))
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let method = req.uri().path().strip_prefix(&self.prefix).unwrap_or("").trim_start_matches('/').to_owned();
        let known = match method.as_str() {
            "emit" => "emit",
            "join" => "join",
            "leave" => "leave",
            "disconnect" => "disconnect",
            "sockets" => "sockets",
            "rooms" => "rooms",
            _ => "unknown",
        };
        let result = self.handle_inner(known, req).await;
        let (status, body) = match result {
            Ok(v) => (StatusCode::OK, v),
            Err(ApiError(status, code, message)) => (status, object([("error", Value::from(code)), ("message", Value::from(message))])),
        };
        self.metrics.api_requests.get_or_create(&[("method", known), ("status", status_label(status))]).inc();
        self.metrics.api_latency.get_or_create(&[("method", known)]).observe(started.elapsed().as_secs_f64());
        let mut res = Response::new(Full::new(Bytes::from(to_json(&body).to_string())));
        *res.status_mut() = status;
        res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(wire::JSON));
        res
    }

    async fn handle_inner<B>(&self, method: &'static str, req: Request<B>) -> Answer
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !self.authorized(req.headers()) {
            return Err(ApiError(StatusCode::UNAUTHORIZED, "unauthorized", "a valid `authorization: Bearer <token>` is required".into()));
        }
        if method == "unknown" {
            return Err(ApiError(StatusCode::NOT_FOUND, "not_found", "methods: emit, join, leave, disconnect, sockets, rooms".into()));
        }
        if req.method() != http::Method::POST {
            return Err(ApiError(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST".into()));
        }
        let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = Limited::new(req.into_body(), self.max_body).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body is larger than {} bytes", self.max_body))
            } else {
                ApiError::bad(format!("cannot read the body: {e}"))
            }
        })?;
        let body = body.to_bytes();
        let request = if body.is_empty() { Value::Object(Default::default()) } else { wire::decode(&body, content_type.as_deref()).map_err(ApiError::bad)? };
        if !matches!(request, Value::Object(_)) {
            return Err(ApiError::bad("the body must be an object"));
        }
        let target = self.target(&request)?;
        let cluster = |e: shoal::adapter::AdapterError| ApiError(StatusCode::BAD_GATEWAY, "cluster", e.to_string());
        match method {
            "emit" => {
                let event = request.get("event").and_then(Value::as_str).filter(|e| !e.is_empty()).ok_or_else(|| ApiError::bad("`event`: a non-empty string"))?;
                let args = match request.get("args") {
                    None | Some(Value::Null) => vec![],
                    Some(Value::Array(a)) => a.clone(),
                    Some(_) => return Err(ApiError::bad("`args`: a list")),
                };
                if request.get("ack").and_then(Value::as_bool).unwrap_or(false) {
                    let timeout = match request.get("timeout") {
                        None | Some(Value::Null) => self.ack_timeout,
                        Some(t) => Duration::from_millis(t.as_u64().ok_or_else(|| ApiError::bad("`timeout`: milliseconds"))?),
                    }
                    .min(MAX_ACK_TIMEOUT);
                    let r = target.timeout(timeout).emit_with_ack_responses(event, args).await.map_err(|e| match e {
                        shoal::AckError::Emit(e) => ApiError::bad(e.to_string()),
                        other => ApiError(StatusCode::BAD_GATEWAY, "cluster", other.to_string()),
                    })?;
                    Ok(object([
                        ("ok", Value::Bool(true)),
                        ("responses", Value::Array(r.responses)),
                        ("expected", Value::from(r.expected as u64)),
                        ("timed_out", Value::Bool(r.timed_out)),
                    ]))
                } else {
                    target.emit(event, args).map_err(|e| ApiError::bad(e.to_string()))?;
                    Ok(ok())
                }
            }
            "join" | "leave" => {
                let list = request.get("rooms").ok_or_else(|| ApiError::bad("`rooms`: a list of room names"))?;
                let list = rooms(list).map_err(|e| ApiError::bad(format!("`rooms`: {e}")))?;
                if method == "join" {
                    target.sockets_join(list).await.map_err(cluster)?;
                } else {
                    target.sockets_leave(list).await.map_err(cluster)?;
                }
                Ok(ok())
            }
            "disconnect" => {
                let close = request.get("close").and_then(Value::as_bool).unwrap_or(false);
                target.disconnect_sockets(close).await.map_err(cluster)?;
                Ok(ok())
            }
            "sockets" => {
                let sockets = target.fetch_sockets().await.map_err(cluster)?;
                let list = sockets
                    .iter()
                    .map(|s| {
                        let id = s.id().to_string();
                        let rooms = s.rooms().iter().map(|r| r.to_string()).filter(|r| *r != id).map(Value::from).collect();
                        object([
                            ("id", Value::from(id)),
                            ("rooms", Value::Array(rooms)),
                            ("data", s.data().clone()),
                            ("address", Value::from(s.handshake().address.as_str())),
                        ])
                    })
                    .collect();
                Ok(object([("sockets", Value::Array(list))]))
            }
            "rooms" => {
                let sockets = target.fetch_sockets().await.map_err(cluster)?;
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                for s in &sockets {
                    let id = s.id().to_string();
                    for room in s.rooms() {
                        let room = room.to_string();
                        if room != id {
                            *counts.entry(room).or_default() += 1;
                        }
                    }
                }
                Ok(object([("rooms", Value::Object(counts.into_iter().map(|(k, n)| (k, Value::from(n))).collect()))]))
            }
            _ => unreachable!("methods are matched above"),
        }
    }

    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        // Compares every token in full, so the time says nothing about which one was close.
        self.tokens.iter().fold(false, |found, t| found | constant_time_eq(t.as_bytes(), token.trim().as_bytes()))
    }

    /// The broadcast operator of a request's target.
    fn target(&self, request: &Value) -> Result<BroadcastOperator, ApiError> {
        let namespace = match request.get("namespace") {
            None | Some(Value::Null) => "/",
            Some(Value::String(n)) if n.starts_with('/') && n.len() <= 256 => n.as_str(),
            Some(_) => return Err(ApiError::bad("`namespace`: a name starting with `/`")),
        };
        let list = |key: &str| -> Result<Vec<String>, ApiError> {
            match request.get(key) {
                None | Some(Value::Null) => Ok(vec![]),
                Some(v) => names(v, MAX_TARGETS).map_err(|e| ApiError::bad(format!("`{key}`: {e}"))),
            }
        };
        // Never `io.of`: that would create a namespace the gateway does not serve, one
        // clients could then join with no connect proxy. A dynamic one matching a
        // `pattern` is created as a client's CONNECT would create it, proxies installed.
        let ns = self.io.namespace(namespace).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not_found", format!("no namespace {namespace:?} on this gateway")))?;
        let mut op = ns.broadcast();
        for room in list("to")?.into_iter().chain(list("sockets")?) {
            op = op.to(room);
        }
        for room in list("except")? {
            op = op.except(room);
        }
        Ok(op)
    }
}

fn ok() -> Value {
    object([("ok", Value::Bool(true))])
}

fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        413 => "413",
        502 => "502",
        _ => "other",
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
