//! The app, as the proxies see it: one POST of a signed body to a URL, bounded in time,
//! in answer size and in requests in flight, with its metrics. Every failure is an
//! [`AppError`] value that the proxy turns into what the client sees.

use super::metrics::GatewayMetrics;
use super::sign::{sign, SIGNATURE_HEADER};
use super::wire;
use crate::config::file::Encoding;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use shoal::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Why the app gave no usable answer. `code()` is what clients and metrics see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppError {
    /// No connection (the app is down or the URL is wrong).
    Unavailable(String),
    /// No complete answer within the proxy's timeout.
    Timeout,
    /// Every slot of this proxy was busy for the whole timeout.
    Overloaded,
    /// An answer with a status other than 2xx.
    Status(u16),
    /// An answer body larger than the proxy's `max_body`.
    TooLarge(usize),
    /// A body that is not JSON/MessagePack, or not of the expected shape.
    BadAnswer(String),
}

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unavailable(_) => "app_unavailable",
            AppError::Timeout => "app_timeout",
            AppError::Overloaded => "app_overloaded",
            AppError::Status(_) => "app_error",
            AppError::TooLarge(_) => "app_answer_too_large",
            AppError::BadAnswer(_) => "app_bad_answer",
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Unavailable(e) => write!(f, "the app is unavailable ({e})"),
            AppError::Timeout => f.write_str("the app did not answer in time"),
            AppError::Overloaded => f.write_str("too many requests to the app in flight"),
            AppError::Status(s) => write!(f, "the app answered with status {s}"),
            AppError::TooLarge(max) => write!(f, "the app's answer is larger than {max} bytes"),
            AppError::BadAnswer(e) => write!(f, "the app's answer is malformed: {e}"),
        }
    }
}

/// What all proxies of a node share: the HTTP client (a pool of keep-alive
/// connections), the secret and the metrics.
pub struct AppShared {
    client: Client<HttpConnector, Full<Bytes>>,
    secret: Vec<u8>,
    node: String,
    pub metrics: GatewayMetrics,
}

impl AppShared {
    pub fn new(secret: &str, node: String, max_idle: usize, metrics: GatewayMetrics) -> Arc<AppShared> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Idle connections are dropped after 4 s: before the app does (Node's http server
        // closes idle keep-alive connections after 5 s by default, most others later), so
        // a request is never written on a connection the app is closing at that moment.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(max_idle)
            .build(connector);
        Arc::new(AppShared { client, secret: secret.as_bytes().to_vec(), node, metrics })
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}

/// One proxy (connect, event or disconnect) of one namespace configuration.
#[derive(Clone)]
pub struct Proxy {
    pub kind: &'static str,
    url: http::Uri,
    timeout: Duration,
    max_body: usize,
    encoding: Encoding,
    /// Shared by every proxy of this kind on the node.
    slots: Arc<Semaphore>,
    shared: Arc<AppShared>,
}

impl Proxy {
    pub fn new(
        kind: &'static str,
        url: &str,
        timeout: Duration,
        max_body: usize,
        encoding: Encoding,
        slots: Arc<Semaphore>,
        shared: Arc<AppShared>,
    ) -> Result<Proxy, String> {
        let url = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        Ok(Proxy { kind, url, timeout, max_body, encoding, slots, shared })
    }

    pub fn shared(&self) -> &Arc<AppShared> {
        &self.shared
    }

    /// POSTs `request` and returns the app's answer (`null` for an empty body).
    pub async fn call(&self, request: &Value) -> Result<Value, AppError> {
        let started = Instant::now();
        let result = self.call_inner(request).await;
        let m = &self.shared.metrics;
        // A request refused for want of a slot was never sent: an error, not a request
        // (like an event refused by a full queue), and no latency of the app's.
        if !matches!(result, Err(AppError::Overloaded)) {
            m.proxy_requests.get_or_create(&[("proxy", self.kind)]).inc();
            m.proxy_latency.get_or_create(&[("proxy", self.kind)]).observe(started.elapsed().as_secs_f64());
        }
        if let Err(e) = &result {
            m.proxy_errors.get_or_create(&[("proxy", self.kind), ("error", e.code())]).inc();
            tracing::warn!(proxy = self.kind, url = %self.url, error = %e, "request to the app failed");
        }
        result
    }

    async fn call_inner(&self, request: &Value) -> Result<Value, AppError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let _slot = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => return Err(AppError::Overloaded),
        };
        let (body, content_type) = wire::encode(request, self.encoding);
        let req = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::ACCEPT, "application/json, application/msgpack")
            .header(SIGNATURE_HEADER, sign(&self.shared.secret, &body))
            .header("x-shoal-node", self.shared.node.as_str())
            .body(Full::new(body))
            .map_err(|e| AppError::Unavailable(e.to_string()))?;
        let exchange = async {
            let res = self.shared.client.request(req).await.map_err(|e| AppError::Unavailable(error_chain(&e)))?;
            let status = res.status();
            let content_type = res.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let declared = res.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
            if declared.is_some_and(|n| n > self.max_body) {
                return Err(AppError::TooLarge(self.max_body));
            }
            // Read at most max_body bytes, whatever the app claims.
            let body = Limited::new(res.into_body(), self.max_body).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    AppError::TooLarge(self.max_body)
                } else {
                    AppError::Unavailable(format!("answer cut: {e}"))
                }
            })?;
            if !status.is_success() {
                return Err(AppError::Status(status.as_u16()));
            }
            Ok((body.to_bytes(), content_type))
        };
        let (body, content_type) = tokio::time::timeout_at(deadline, exchange).await.map_err(|_| AppError::Timeout)??;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        wire::decode(&body, content_type.as_deref()).map_err(AppError::BadAnswer)
    }
}

/// "connection refused" rather than hyper's "client error (Connect)".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out = s.to_string();
        source = s.source();
    }
    out
}
