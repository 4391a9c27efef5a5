//! The chat demo: a page at `/` that uses the official socket.io-client, and the server
//! side of it on the main namespace. Every message is broadcast to everyone.
//!
//! A few more events on the same namespace let a script check a cluster behind a load
//! balancer (tests/js/lb-*.test.mjs use them), each answering with an ack:
//! - `whoami` → `{address, node}`: the client's `handshake.address` and the owner node;
//! - `echo` (any args) → the same args;
//! - `join` (room) → `true`; a socket may be in a few rooms only;
//! - `room message` (room, payload) → `true`, and `room message` (room, payload) to
//!   everyone in that room, across the cluster.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use shoal::cluster::ServiceBody;
use serde::{Deserialize, Serialize};
use shoal::extract::{AckSender, Data};
use shoal::{Event, Server, Socket, SocketIoService, Value};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The node's HTTP site: the demo page and its client bundle, `/health` (readiness),
/// `/metrics` (Prometheus text), and Socket.IO on its path; as a gateway, the publish
/// API on its path instead of the demo page. Everything else is 404.
#[derive(Clone)]
pub struct Site {
    io: Server,
    socket_io: SocketIoService,
    demo: bool,
    api: Option<crate::gateway::Api>,
    /// The admin UI's static files, served at /admin-ui/ (`--admin-ui-static`).
    admin_ui_files: Option<std::sync::Arc<std::path::PathBuf>>,
}

impl Site {
    /// The demo's site.
    pub fn new(io: Server) -> Site {
        Site { socket_io: io.service(), io, demo: true, api: None, admin_ui_files: None }
    }

    /// A gateway's site: no demo page; the publish API if it lives on this listener.
    pub fn gateway(io: Server, api: Option<crate::gateway::Api>) -> Site {
        Site { socket_io: io.service(), io, demo: false, api, admin_ui_files: None }
    }

    /// Also serves the admin UI's static files (the `ui/dist` folder of the
    /// `@socket.io/admin-ui` npm package) from `dir` at `/admin-ui/`.
    pub fn with_admin_ui_files(mut self, dir: std::path::PathBuf) -> Site {
        self.admin_ui_files = Some(std::sync::Arc::new(dir));
        self
    }
}

/// The URL prefix of the admin UI's static files.
const ADMIN_UI_PREFIX: &str = "/admin-ui/";

/// One static file of the admin UI: `rel` is the path under the prefix. Only plain names
/// (no `..`, no hidden files, no backslashes) inside the folder; 404 otherwise.
async fn admin_ui_file(dir: &std::path::Path, rel: &str) -> Response<ServiceBody> {
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let plain = rel.split('/').all(|part| !part.is_empty() && !part.starts_with('.') && !part.contains('\\') && !part.contains('\0'));
    let content_type = match rel.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "application/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("map") | Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    if !plain {
        return not_found();
    }
    let file = dir.join(rel);
    match tokio::task::spawn_blocking(move || std::fs::read(file)).await {
        Ok(Ok(bytes)) => page(content_type, Bytes::from(bytes)),
        _ => not_found(),
    }
}

fn not_found() -> Response<ServiceBody> {
    let mut res = page("text/plain; charset=utf-8", Bytes::from_static(b"not found"));
    *res.status_mut() = http::StatusCode::NOT_FOUND;
    res
}

/// The publish API alone, on its own listener (`[api] listen`).
#[derive(Clone)]
pub struct ApiSite(pub crate::gateway::Api);

impl<B> tower_service::Service<Request<B>> for ApiSite
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ServiceBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ServiceBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { Ok(boxed(api.handle(req).await)) })
    }
}

fn boxed(res: Response<Full<Bytes>>) -> Response<ServiceBody> {
    res.map(|b| b.map_err(|e| match e {}).boxed_unsync())
}

fn page(content_type: &'static str, body: Bytes) -> Response<ServiceBody> {
    let mut res = Response::new(Full::new(body));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    boxed(res)
}

impl<B> tower_service::Service<Request<B>> for Site
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ServiceBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ServiceBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(api) = self.api.as_ref().filter(|api| api.matches(req.uri().path())) {
            let api = api.clone();
            return Box::pin(async move { Ok(boxed(api.handle(req).await)) });
        }
        let read = matches!(req.method().as_str(), "GET" | "HEAD");
        if let Some(dir) = self.admin_ui_files.as_ref().filter(|_| read) {
            if let Some(rel) = req.uri().path().strip_prefix(ADMIN_UI_PREFIX) {
                let (dir, rel) = (dir.clone(), rel.to_owned());
                return Box::pin(async move { Ok(admin_ui_file(&dir, &rel).await) });
            }
        }
        let res = match (read && self.demo, read, req.uri().path()) {
            (true, _, "/" | "/index.html") => page("text/html; charset=utf-8", Bytes::from_static(INDEX_HTML.as_bytes())),
            (true, _, "/socket.io.min.js") => {
                let mut res = page("application/javascript; charset=utf-8", Bytes::from_static(CLIENT_JS));
                res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
                res
            }
            (_, true, "/health") => boxed(self.io.health_response()),
            (_, true, "/metrics") => boxed(self.io.metrics_response()),
            _ => return self.socket_io.call(req),
        };
        Box::pin(async move { Ok(res) })
    }
}

pub const INDEX_HTML: &str = include_str!("../demo/index.html");
pub const CLIENT_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/socket.io.min.js"));

const MAX_NAME: usize = 32;
const MAX_TEXT: usize = 1000;

const MAX_ROOM: usize = 64;
const MAX_ROOMS_PER_SOCKET: usize = 8;

pub fn install(io: &Server) {
    let io2 = io.clone();
    io.on_connection(move |socket: Socket| {
        let io = io2.clone();
        async move {
            let _ = io.emit("users", io.of("/").local_socket_count());
            // Only the shape the page sends is accepted (anything else is dropped by
            // `Data`), cut to sane lengths.
            socket.on("chat message", |socket: Socket, Data(msg): Data<ChatMessage>| async move {
                let msg = ChatMessage { name: msg.name.chars().take(MAX_NAME).collect(), text: msg.text.chars().take(MAX_TEXT).collect() };
                socket.ns().emit("chat message", Value::from_serde(&msg)?)?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            });
            install_checks(&socket, &io);
            let io = io.clone();
            socket.on_disconnect(move |_socket, _reason| {
                let io = io.clone();
                async move {
                    let _ = io.emit("users", io.of("/").local_socket_count());
                }
            });
        }
    });
}

/// The events of the load-balancer checks (see the module docs).
fn install_checks(socket: &Socket, io: &Server) {
    let node = io.engine().config().node_id.clone();
    socket.on("whoami", move |socket: Socket, ev: Event| {
        let node = node.clone();
        async move {
            let me = [("address".to_owned(), Value::from(socket.handshake().address.as_str())), ("node".to_owned(), Value::from(node.as_str()))];
            ev.ack(Value::Object(me.into_iter().collect()));
        }
    });
    socket.on("echo", |_socket: Socket, ev: Event| async move {
        ev.ack(ev.args.clone());
    });
    socket.on("join", |socket: Socket, Data(room): Data<String>, ack: AckSender| async move {
        if !valid_room(&room) {
            return;
        }
        let joined = socket.rooms().len() <= MAX_ROOMS_PER_SOCKET;
        if joined {
            socket.join(room);
        }
        let _ = ack.send(&joined);
    });
    // The payload is relayed as it came (any JSON, binary included): a `Value`.
    socket.on("room message", |socket: Socket, Data((room, payload)): Data<(String, Value)>, ack: AckSender| async move {
        if !valid_room(&room) {
            return;
        }
        let _ = socket.ns().to(room.as_str()).emit("room message", (room.as_str(), payload));
        let _ = ack.send(&true);
    });
}

/// A chat line, as the page sends it and as it is relayed.
#[derive(Serialize, Deserialize)]
struct ChatMessage {
    name: String,
    text: String,
}

fn valid_room(room: &str) -> bool {
    !room.is_empty() && room.len() <= MAX_ROOM
}
