//! Dynamic namespaces: a namespace made on its first CONNECT is reachable only once its
//! `init` has set it up, so a CONNECT that races the first one cannot skip its middlewares.

mod common;

use common::*;
use shoal::{ConnectError, Server, Socket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A raw WebSocket session that sends CONNECT to `nsp` and returns the answer.
async fn connect_to(addr: std::net::SocketAddr, nsp: String) -> String {
    let mut ws = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await;
    let open = next_text(&mut ws).await.unwrap();
    assert!(open.starts_with("0{"), "{open}");
    send_text(&mut ws, &format!("40{nsp},")).await;
    next_non_ping(&mut ws).await.expect("an answer to CONNECT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connect_racing_the_first_one_waits_for_the_namespace_setup() {
    let io = Server::builder().build();
    let inits = Arc::new(AtomicUsize::new(0));
    let counted = inits.clone();
    io.dynamic_namespace(
        |name, _auth| name.starts_with("/org-"),
        move |ns| {
            counted.fetch_add(1, Ordering::SeqCst);
            // A slow setup (the gateway's reads its configuration; an app may do more):
            // the window in which a namespace published before its setup was open.
            std::thread::sleep(Duration::from_millis(300));
            ns.middleware(|_socket: Socket| async move { Err(ConnectError::new("refused by the middleware")) });
        },
    );
    let addr = serve_io(&io).await;
    for round in 0..3 {
        let nsp = format!("/org-{round}");
        let first = tokio::spawn(connect_to(addr, nsp.clone()));
        // The second CONNECT arrives while the first one's init is still running.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = connect_to(addr, nsp.clone()).await;
        let first = first.await.unwrap();
        let refused = format!("44{nsp},{{\"message\":\"refused by the middleware\"}}");
        assert_eq!(first, refused, "round {round}: the first CONNECT");
        assert_eq!(second, refused, "round {round}: the CONNECT that raced it");
    }
    assert_eq!(inits.load(Ordering::SeqCst), 3, "init runs once per namespace");
}
