//! `shoal`: one node. Reads its configuration, serves Socket.IO and the chat demo (or,
//! configured as a gateway, the proxies to the app and the publish API), and drains on
//! SIGTERM/SIGINT: readiness turns to draining, the node leaves its cluster, and every
//! client is disconnected with a transport close, so it reconnects elsewhere.
//!
//! `shoal config check FILE` and `shoal config print [--config FILE] [flags]` look at a
//! configuration without starting a node.

use shoal_server::config::{file, listen, listen_on, run_node, shutdown_signal, Config};
use shoal_server::{demo, gateway};
use std::time::Duration;

/// jemalloc keeps RSS flat under connection churn, where glibc's arenas grow (feature
/// `jemalloc`, on by default; docs/reliability.md has the measurements).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "config") {
        std::process::exit(config_command(&args));
    }
    run_node(run).await
}

/// `shoal config check FILE` / `shoal config print [...]`: the exit status.
fn config_command(args: &[std::ffi::OsString]) -> i32 {
    const USAGE: &str = "usage: shoal config check FILE\n       shoal config print [--config FILE] [flags]";
    match args.get(2).and_then(|a| a.to_str()) {
        Some("check") => {
            let Some(path) = args.get(3) else {
                eprintln!("{USAGE}");
                return 2;
            };
            let loaded = file::read_file(std::path::Path::new(path)).map_err(file::LoadError::File).and_then(|_| {
                Config::load([std::ffi::OsString::from("shoal"), "--config".into(), path.clone()])
            });
            match loaded.map_err(|e| e.to_string()).and_then(|c| c.validate().map(|_| c)) {
                Ok(_) => {
                    println!("{}: ok", path.to_string_lossy());
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Some("print") => {
            let rest = std::iter::once(std::ffi::OsString::from("shoal")).chain(args[3..].iter().cloned());
            match Config::load(rest) {
                Ok(c) => {
                    print!("{}", c.to_toml());
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let (listener, local) = listen_on(&config)?;
    let io = config.start(local).await?;
    let site = if config.gateway.enabled() {
        let api = gateway::install(&io, &config.gateway)?;
        let own_listener = config.gateway.api.as_ref().and_then(|a| a.listen);
        match (api, own_listener) {
            (Some(api), Some(addr)) => {
                let api_listener = listen(addr).map_err(|e| format!("[api] cannot listen on {addr}: {e}"))?;
                tracing::info!("publish API on http://{}", api_listener.local_addr().map_err(|e| e.to_string())?);
                let options = shoal::ServeOptions { max_header_bytes: config.max_header_bytes as usize, ..io.serve_options() };
                tokio::spawn(async move {
                    let site = demo::ApiSite(api);
                    if let Err(e) = shoal::serve_with(api_listener, site, shutdown_signal(), options).await {
                        tracing::error!(error = %e, "the publish API's listener failed");
                    }
                });
                demo::Site::gateway(io.clone(), None)
            }
            (api, _) => {
                if let Some(a) = &config.gateway.api {
                    tracing::info!("publish API on http://{local}{}/", a.path);
                }
                demo::Site::gateway(io.clone(), api)
            }
        }
    } else {
        demo::install(&io);
        demo::Site::new(io.clone())
    };
    let site = match &config.admin_ui_static {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "admin UI files at http://{local}/admin-ui/");
            site.with_admin_ui_files(dir.clone())
        }
        None => site,
    };
    tracing::info!(
        node = %io.engine().config().node_id,
        path = %io.engine().config().path,
        members = io.cluster_members().len(),
        proxy_protocol = config.proxy_protocol,
        trusted_proxies = ?config.trusted_proxies,
        "listening on http://{local}{}",
        if config.gateway.enabled() { " (gateway)" } else { " (chat demo at /)" }
    );
    let options = config.serve_options(&io);
    shoal::serve_with(listener, site, shutdown_signal(), options).await.map_err(|e| e.to_string())?;
    io.drain(Duration::from_secs(2)).await;
    Ok(())
}
