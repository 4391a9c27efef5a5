//! socketioxide 0.18 (crates.io, default configuration) serving the benchmark contract on
//! namespace `/`: `join(room)`, `broadcast(payload)` → `tick` to room `bench`,
//! `echo(payload, ack)`. Served with hyper's HTTP/1 server with upgrades, as its docs show.
//!
//! ```text
//! bench-socketioxide [--port 3000] [--threads 2]
//! ```

use hyper_util::rt::TokioIo;
use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::SocketIo;

fn flag(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} wants a number")))
        .unwrap_or(default)
}

fn main() -> std::io::Result<()> {
    let port = flag("--port", 3000) as u16;
    let threads = flag("--threads", 2);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    runtime.block_on(async move {
        let (svc, io) = SocketIo::new_svc();
        io.ns("/", async |s: SocketRef| {
            // `join` acks when asked to (the load generator waits for it and asks again
            // if it never comes: an event that arrives before this connect handler ran,
            // in its spawned task, has no handler yet and is dropped by socketioxide).
            s.on("join", async |s: SocketRef, Data(room): Data<String>, ack: AckSender| {
                s.join(room);
                let _ = ack.send(&());
            });
            s.on("broadcast", async |s: SocketRef, Data(payload): Data<Value>| {
                let _ = s.within("bench").emit("tick", &payload).await;
            });
            s.on("echo", async |Data(payload): Data<Value>, ack: AckSender| {
                let _ = ack.send(&payload);
            });
        });
        // A listen backlog of 1024 for both Rust servers (tokio's `bind` gives 128, which
        // overflows under the load generator's 256 connects in flight; Node uses 511).
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(([127, 0, 0, 1], port).into())?;
        let listener = socket.listen(1024)?;
        println!("LISTENING {}", listener.local_addr()?.port());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let (stream, _) = tokio::select! {
                _ = term.recv() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let svc = svc.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades().await;
            });
        }
    })
}
