//! The node's HTTP front: Socket.IO traffic on its path, the demo page and client
//! bundle, `/health` and `/metrics`. Everything else is 404.

use crate::demo;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use shoal::engine::ResponseBody;
use shoal::Server;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Clone)]
pub struct Routes {
    pub io: Server,
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

impl Routes {
    fn metrics(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP shoal_sessions Open Engine.IO sessions on this node.\n# TYPE shoal_sessions gauge\n");
        out.push_str(&format!("shoal_sessions {}\n", self.io.session_count()));
        out.push_str("# HELP shoal_sockets Connected sockets on this node, by namespace.\n# TYPE shoal_sockets gauge\n");
        for ns in self.io.namespaces() {
            out.push_str(&format!("shoal_sockets{{nsp=\"{}\"}} {}\n", ns.name().replace('"', "\\\""), ns.local_socket_count()));
        }
        out
    }

    async fn route<B>(self, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if self.io.engine().matches(&req) {
            return self.io.handle(req).await;
        }
        match (req.method().as_str(), req.uri().path()) {
            ("GET" | "HEAD", "/") | ("GET" | "HEAD", "/index.html") => respond(StatusCode::OK, "text/html; charset=utf-8", demo::INDEX_HTML),
            ("GET" | "HEAD", "/socket.io.min.js") => {
                let mut res = respond(StatusCode::OK, "application/javascript; charset=utf-8", Bytes::from_static(demo::CLIENT_JS));
                res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
                res
            }
            ("GET", "/health") => {
                let status = if self.io.engine().is_shutting_down() { "draining" } else { "ok" };
                let code = if status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                respond(code, "application/json", format!("{{\"status\":\"{status}\",\"sessions\":{}}}", self.io.session_count()))
            }
            ("GET", "/metrics") => respond(StatusCode::OK, "text/plain; version=0.0.4", self.metrics()),
            _ => respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "Not Found"),
        }
    }
}

impl<B> tower_service::Service<Request<B>> for Routes
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.route(req).await) })
    }
}
