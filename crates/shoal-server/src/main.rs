//! `shoal`: one node. Parses its configuration, serves Socket.IO and the chat demo,
//! and shuts down cleanly on SIGTERM/SIGINT: new sessions are refused and every client
//! is disconnected with a transport close, so it reconnects (elsewhere, in a cluster).

mod client_addr;
mod cluster;
mod config;
mod demo;
mod forward;
mod routes;

use clap::Parser;
use config::Config;
use shoal::engine::{Cors, Transports};
use shoal::Server;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let config = Config::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).init();
    if let Err(e) = run(config).await {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

async fn run(config: Config) -> Result<(), String> {
    let transports = Transports::parse(&config.transports).map_err(|e| format!("--transports: {e}"))?;
    let mut builder = Server::builder()
        .path(&config.path)
        .ping_interval(Duration::from_millis(config.ping_interval))
        .ping_timeout(Duration::from_millis(config.ping_timeout))
        .max_payload(config.max_payload)
        .connect_timeout(Duration::from_millis(config.connect_timeout))
        .max_buffered_bytes(config.max_buffered_bytes)
        .transports(transports);
    if !config.cors_origins.is_empty() {
        let any = config.cors_origins.iter().any(|o| o == "*");
        let origins = if any { vec![] } else { config.cors_origins.clone() };
        builder = builder.cors(Cors { origins, credentials: config.cors_credentials });
    }
    if let Some(id) = &config.node_id {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("--node-id {id:?}: use letters, digits, '-' and '_' only"));
        }
        builder = builder.node_id(id);
    }
    if let Some(url) = &config.redis {
        let link = shoal::adapter::redis::RedisLink::connect(url).await?;
        let options = shoal::adapter::redis::RedisOptions {
            key: config.redis_key.clone(),
            requests_timeout: Duration::from_millis(config.requests_timeout),
            ..Default::default()
        };
        builder = builder.adapter(shoal::adapter::redis::factory(link, options));
        tracing::info!(%url, key = %config.redis_key, "clustering through Redis");
    }
    let trusted = client_addr::TrustedProxies::parse(&config.trusted_proxies).map_err(|e| format!("--trusted-proxies: {e}"))?;
    if config.recovery > 0 {
        builder = builder.connection_state_recovery(shoal::adapter::RecoveryOptions {
            max_disconnection_duration: Duration::from_millis(config.recovery),
            ..Default::default()
        });
    }
    let io = builder.build();
    demo::install(&io);

    let listener = listen(config.listen).map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let node_id = io.engine().config().node_id.to_string();

    // In a cluster: register (refusing a clashing id) and forward foreign sessions' requests.
    let (cluster, forwarder) = match &config.redis {
        Some(url) => {
            let advertise = config.advertise.clone().unwrap_or_else(|| cluster::default_advertise(local));
            let ttl = Duration::from_millis(config.membership_ttl.max(1000));
            let cluster = cluster::Cluster::join(url, &config.redis_key, &node_id, &advertise, ttl).await?;
            // A forwarded long-polling GET is answered within a ping interval.
            let polling_timeout = Duration::from_millis(config.ping_interval + config.ping_timeout) + Duration::from_secs(5);
            let forwarder = forward::Forwarder::new(&node_id, cluster.clone(), polling_timeout);
            (Some(cluster), Some(forwarder))
        }
        None => (None, None),
    };
    tracing::info!(
        node = %node_id,
        path = %io.engine().config().path,
        advertise = cluster.as_ref().map(|c| c.advertise()).unwrap_or("-"),
        proxy_protocol = config.proxy_protocol,
        trusted_proxies = ?config.trusted_proxies,
        "listening on http://{local} (chat demo at /)"
    );

    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        }
    };
    let front = Arc::new(routes::Front::new(trusted.clone(), cluster.clone(), forwarder));
    let routes = routes::Routes { io: io.clone(), front };
    let options = shoal::ServeOptions {
        proxy_protocol: config.proxy_protocol,
        trust_proxy: Some(Arc::new(move |ip| trusted.contains(ip))),
        ..Default::default()
    };
    shoal::serve_with(listener, routes, shutdown, options).await.map_err(|e| e.to_string())?;
    // Leave first, so peers stop forwarding here; then close the sessions.
    if let Some(cluster) = &cluster {
        cluster.leave().await;
    }
    let sessions = io.session_count();
    io.close().await;
    // Give the close frames and the last polling answers a moment to leave.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tracing::info!(sessions, "stopped");
    Ok(())
}

/// A listener with a backlog of 1024 (tokio's `bind` asks for 128, which overflows when
/// thousands of clients reconnect at once, e.g. after another node went down).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
