//! The tower `Service` an app mounts (axum's `route_service`, or [`crate::serve`]):
//! every request goes through the cluster ingress (client address, forwarding to the
//! owner node) and then to the engine.

use super::Server;
use crate::cluster::ServiceBody;
use bytes::Bytes;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The Socket.IO service of a [`Server`]. Cheap to clone.
#[derive(Clone)]
pub struct SocketIoService {
    server: Server,
}

impl SocketIoService {
    pub(super) fn new(server: Server) -> SocketIoService {
        SocketIoService { server }
    }
}

impl<B> tower_service::Service<http::Request<B>> for SocketIoService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<ServiceBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let server = self.server.clone();
        Box::pin(async move {
            let ingress = server.ingress().clone();
            if !server.engine().matches(&req) {
                let mut res = http::Response::new(http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                    http_body_util::Full::new(Bytes::from_static(b"Not Found")),
                    |e| match e {},
                )));
                *res.status_mut() = http::StatusCode::NOT_FOUND;
                return Ok(res);
            }
            Ok(ingress.handle(req).await)
        })
    }
}

