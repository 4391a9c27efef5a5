//! `shoal`: one node. Reads its configuration, serves Socket.IO and the chat demo, and
//! drains on SIGTERM/SIGINT: readiness turns to draining, the node leaves its cluster,
//! and every client is disconnected with a transport close, so it reconnects elsewhere.

use shoal_server::config::{listen_on, run_node, shutdown_signal, Config};
use shoal_server::demo;
use std::time::Duration;

#[tokio::main]
async fn main() {
    run_node(run).await
}

async fn run(config: Config) -> Result<(), String> {
    let (listener, local) = listen_on(&config)?;
    let io = config.start(local).await?;
    demo::install(&io);
    tracing::info!(
        node = %io.engine().config().node_id,
        path = %io.engine().config().path,
        members = io.cluster_members().len(),
        proxy_protocol = config.proxy_protocol,
        trusted_proxies = ?config.trusted_proxies,
        "listening on http://{local} (chat demo at /)"
    );
    let options = config.serve_options(&io);
    shoal::serve_with(listener, demo::Site::new(io.clone()), shutdown_signal(), options).await.map_err(|e| e.to_string())?;
    io.drain(Duration::from_secs(2)).await;
    Ok(())
}
