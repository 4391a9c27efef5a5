//! The admin UI's live events over a raw Socket.IO client: what a socket receives and
//! what it is sent with `socket.emit` reach the admin namespace in development mode,
//! and nothing of it in production mode. (tests/js/admin-ui.test.mjs drives the rest
//! with the official client and the UI itself.)

mod common;

use common::*;
use shoal::admin::{AdminMode, AdminOptions, AdminUi};
use shoal::{Event, Server, Socket};
use std::time::Duration;

/// A server whose sockets answer `echo` with a direct `socket.emit`, with the admin UI
/// attached in `mode`, and an admin client connected to `/admin`.
async fn setup(mode: AdminMode) -> (std::net::SocketAddr, Ws) {
    let io = Server::builder().build();
    io.on_connection(|socket: Socket| async move {
        socket.on("echo", |socket: Socket, ev: Event| async move {
            let _ = socket.emit("echo", ev.args.clone());
        });
    });
    let options = AdminOptions { mode, stats_interval: Duration::from_millis(200), ..AdminOptions::default() };
    AdminUi::new(options).unwrap().attach(&io).unwrap();
    let addr = serve_io(&io).await;
    let mut admin = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await;
    assert!(next_text(&mut admin).await.unwrap().starts_with("0{"));
    send_text(&mut admin, "40/admin,").await;
    loop {
        let frame = next_non_ping(&mut admin).await.unwrap();
        if frame.starts_with("40/admin,{") {
            break;
        }
    }
    (addr, admin)
}

/// The admin frames received within `within` (pings skipped).
async fn frames_for(admin: &mut Ws, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, next_non_ping(admin)).await {
        frames.push(frame);
    }
    frames
}

#[tokio::test]
async fn development_mode_reports_events_received_and_sent() {
    let (addr, mut admin) = setup(AdminMode::Development).await;
    let mut user = sio_connect(addr).await;
    send_text(&mut user, r#"42["echo","hi",1]"#).await;
    assert_eq!(next_non_ping(&mut user).await.unwrap(), r#"42["echo","hi",1]"#);
    let frames = frames_for(&mut admin, Duration::from_millis(1500)).await;
    let has = |prefix: &str| frames.iter().any(|f| f.starts_with(prefix) && f.contains(r#"["echo","hi",1]"#));
    assert!(has(r#"42/admin,["event_received","/","#), "{frames:#?}");
    assert!(has(r#"42/admin,["event_sent","/","#), "{frames:#?}");
    assert!(frames.iter().any(|f| f.starts_with(r#"42/admin,["socket_connected",{"id":"#)), "{frames:#?}");
}

#[tokio::test]
async fn production_mode_reports_stats_only() {
    let (addr, mut admin) = setup(AdminMode::Production).await;
    let mut user = sio_connect(addr).await;
    send_text(&mut user, r#"42["echo","hi",1]"#).await;
    assert_eq!(next_non_ping(&mut user).await.unwrap(), r#"42["echo","hi",1]"#);
    let frames = frames_for(&mut admin, Duration::from_millis(1000)).await;
    assert!(frames.iter().any(|f| f.starts_with(r#"42/admin,["server_stats",{"serverId":"#)), "{frames:#?}");
    let live = ["event_received", "event_sent", "socket_connected", "room_joined", "all_sockets"];
    for f in &frames {
        assert!(!live.iter().any(|e| f.contains(&format!(r#"["{e}""#))), "{f}");
    }
}
