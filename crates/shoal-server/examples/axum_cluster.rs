//! The shoal node as an axum app: axum serves its own routes, shoal answers on
//! `/socket.io/`, and the cluster (Redis adapter, membership, forwarding to the owner
//! node, real client addresses) comes from one builder call inside `Config::start`
//! (`ServerBuilder::cluster`). Health and metrics are mounted where the app wants them.
//!
//! It takes the `shoal` binary's flags, so the load-balancer suites
//! (tests/js/lb-*.test.mjs) drive a cluster of these exactly as a cluster of binaries:
//!
//! ```text
//! cargo run --release -p shoal-server --example axum_cluster -- \
//!     --listen 127.0.0.1:3001 --redis redis://127.0.0.1:6379 --node-id a1
//! ```
//!
//! With `--proxy-protocol` the router is served by `shoal::serve_with` (which reads
//! PROXY headers); otherwise by `axum::serve`, with the peer address handed to shoal
//! as a `PeerAddr` extension.

use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::routing::get;
use axum::Router;
use shoal::engine::PeerAddr;
use shoal_server::config::{listen_on, run_node, shutdown_signal, Config};
use std::net::SocketAddr;
use std::time::Duration;

#[tokio::main]
async fn main() {
    run_node(run).await
}

async fn run(config: Config) -> Result<(), String> {
    let (listener, local) = listen_on(&config)?;
    let io = config.start(local).await?;
    // The app's handlers: here the demo's, which the suites talk to.
    shoal_server::demo::install(&io);

    let (health, metrics) = (io.clone(), io.clone());
    let app = Router::new()
        .route("/", get(|| async { "an axum app; Socket.IO lives on /socket.io/" }))
        .route("/health", get(move || async move { health.health_response() }))
        .route("/metrics", get(move || async move { metrics.metrics_response() }))
        .route_service("/socket.io/", io.service());
    tracing::info!(node = %io.engine().config().node_id, members = io.cluster_members().len(), "axum app listening on http://{local}");

    if config.proxy_protocol {
        shoal::serve_with(listener, app, shutdown_signal(), config.serve_options(&io)).await.map_err(|e| e.to_string())?;
        io.drain(Duration::from_secs(2)).await;
    } else {
        // shoal reads the client's address from a `PeerAddr` extension.
        let app = app.layer(middleware::from_fn(|ConnectInfo(peer): ConnectInfo<SocketAddr>, mut req: Request, next: Next| async move {
            req.extensions_mut().insert(PeerAddr(peer));
            next.run(req).await
        }));
        // axum waits for open connections once the signal came: the sessions are
        // closed first, so their clients go (and reconnect elsewhere).
        let draining = io.clone();
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                draining.drain(Duration::from_secs(2)).await;
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
