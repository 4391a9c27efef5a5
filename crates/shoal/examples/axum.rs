//! shoal mounted in an axum app: axum serves its own routes, shoal answers on
//! `/socket.io/`.
//!
//! ```text
//! cargo run --release --example axum     # then open http://127.0.0.1:3001/
//! ```

use axum::routing::get;
use axum::Router;
use shoal::engine::PeerAddr;
use shoal::{Event, Server, Socket};
use std::net::SocketAddr;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let io = Server::builder().build();
    io.on_connection(|socket: Socket| async move {
        tracing::info!(id = %socket.id(), address = %socket.handshake().address, "connected");
        socket.on("hello", |_socket: Socket, ev: Event| async move {
            ev.ack(format!("hello, {}", ev.arg(0).as_str().unwrap_or("stranger")));
        });
    });

    let app = Router::new()
        .route("/", get(|| async { "axum here; Socket.IO lives on /socket.io/" }))
        .route_service("/socket.io/", io.service())
        // shoal reads the client's address from a `PeerAddr` extension.
        .layer(axum::middleware::from_fn(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
             mut req: axum::extract::Request,
             next: axum::middleware::Next| async move {
                req.extensions_mut().insert(PeerAddr(peer));
                next.run(req).await
            },
        ));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    tracing::info!("listening on http://127.0.0.1:3001");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}
