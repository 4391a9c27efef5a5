//! Typed handlers: event arguments and acks read and written with serde, binary
//! attachments as `Bytes`, shared state without globals, and errors as values.
//!
//! ```sh
//! cargo run --release -p shoal --example typed -- --port 3000
//! ```
//!
//! Events (each answers with an ack; tests/js/typed-handlers.test.mjs drives them):
//! - `chat` `{room, text}`: relayed to the room as `chat` `{seq, text}`; ack `{seq}`, the
//!   message's number from a counter kept in the server's state;
//! - `join` `room`: joins it; ack `true`;
//! - `upload` `{name}` with binary attachments: ack `{name, parts, bytes}`;
//! - `divide` `a, b`: ack `a / b`, or `{"error": "division by zero"}`;
//! - `ask` `event`: asks the client `event` and acks with its typed answer `{ok}`;
//! - `motd`: needs a state the server was never given: ack `{"error": ...}`.
//!
//! A catch-all listener reads every event's first argument as a number; for the events
//! it does not fit, it stays silent (the event's own handler answers).
//!
//! Prints `LISTENING <port>` once it listens.

use serde::{Deserialize, Serialize};
use shoal::extract::{AckSender, Bin, Data, State};
use shoal::{Event, Server, Socket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Deserialize)]
struct Chat {
    room: String,
    text: String,
}

#[derive(Serialize)]
struct Relayed<'a> {
    seq: u64,
    text: &'a str,
}

#[derive(Serialize)]
struct Receipt {
    seq: u64,
}

#[derive(Deserialize)]
struct UploadMeta {
    name: String,
}

#[derive(Serialize)]
struct Uploaded {
    name: String,
    parts: usize,
    bytes: usize,
}

#[derive(Deserialize, Serialize)]
struct Answer {
    ok: bool,
}

/// The server's shared state: a message counter.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

/// A state this example never gives the builder (the `motd` event shows the failure).
#[derive(Clone)]
struct Motd(String);

#[derive(Debug)]
struct DivisionByZero;

impl std::fmt::Display for DivisionByZero {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("division by zero")
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn on_connection(socket: Socket) {
    // A catch-all listener that only cares for events whose first argument is a number:
    // for the others its `Data` does not fit, which it logs without answering for them.
    socket.on_any(|Data(n): Data<f64>, event: Event| async move {
        eprintln!("event {:?} with the number {n}", event.name);
    });
    socket.on("chat", |socket: Socket, Data(chat): Data<Chat>, State(counter): State<Counter>, ack: AckSender| async move {
        let seq = counter.0.fetch_add(1, Ordering::Relaxed) + 1;
        let relayed = shoal::Value::from_serde(&Relayed { seq, text: &chat.text })?;
        socket.ns().to(chat.room.as_str()).emit("chat", relayed)?;
        ack.send(&Receipt { seq })?;
        Ok::<_, BoxError>(())
    });
    socket.on("join", |socket: Socket, Data(room): Data<String>, ack: AckSender| async move {
        socket.join(room);
        let _ = ack.send(&true);
    });
    socket.on("upload", |Data(meta): Data<UploadMeta>, Bin(parts): Bin, ack: AckSender| async move {
        let bytes = parts.iter().map(|p| p.len()).sum();
        let _ = ack.send(&Uploaded { name: meta.name, parts: parts.len(), bytes });
    });
    // Two arguments: a tuple reads the whole argument list. The error is the ack.
    socket.on("divide", |Data((a, b)): Data<(f64, f64)>, ack: AckSender| async move {
        if b == 0.0 {
            return Err(DivisionByZero);
        }
        let _ = ack.send(&(a / b));
        Ok(())
    });
    socket.on("ask", |socket: Socket, Data(event): Data<String>, ack: AckSender| async move {
        let answer: Answer = socket.timeout(Duration::from_secs(5)).emit_with_ack_as(&event, ()).await?;
        ack.send(&answer)?;
        Ok::<_, BoxError>(())
    });
    socket.on("motd", |socket: Socket, State(Motd(text)): State<Motd>| async move {
        let _ = socket.emit("motd", text);
    });
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().skip_while(|a| a != "--port").nth(1).and_then(|p| p.parse().ok()).unwrap_or(3000);
    let io = Server::builder().with_state(Counter::default()).build();
    io.on_connection(|socket: Socket| async move { on_connection(socket) });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("LISTENING {}", listener.local_addr()?.port());
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    shoal::serve(listener, io.service(), shutdown).await
}
