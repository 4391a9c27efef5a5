//! The app the official protocol test suites expect, on 127.0.0.1:3000 (or `PORT`):
//! - `/engine.io/`: a raw Engine.IO server that echoes every message;
//! - `/socket.io/`: a Socket.IO server that emits `auth` on connect, answers `message`
//!   with `message-back`, acks `message-with-ack` with its arguments, and has `/custom`.
//!
//! Both use pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1000000, CORS `*`.
//!
//! ```text
//! cargo run --release --example conformance
//! ```

use shoal::engine::{CloseReason, Cors, Engine, EngineConfig, EngineHandler, Message, Session};
use shoal::protocol::engine_packet::{OutPacket, PacketType};
use shoal::{Event, Server, Socket};
use std::sync::Arc;
use std::time::Duration;

/// Echoes each message back on the session it came from.
struct Echo;

impl EngineHandler for Echo {
    fn on_open(&self, _session: &Arc<Session>) {}
    fn on_message(&self, session: &Arc<Session>, message: Message) {
        let packet = match message {
            Message::Text(text) => OutPacket::text(PacketType::Message, &text),
            Message::Binary(bytes) => OutPacket::Binary(bytes),
        };
        let _ = session.send(packet);
    }
    fn on_close(&self, _session: &Session, _reason: CloseReason) {}
}

async fn setup_namespace(socket: Socket) {
    socket.on("message", |socket: Socket, ev: Event| async move {
        let _ = socket.emit("message-back", ev.args.clone());
    });
    socket.on("message-with-ack", |_socket: Socket, ev: Event| async move {
        ev.ack(ev.args.clone());
    });
    // The Socket.IO suite's client (ws 8.5) drops a frame that arrives in the same TCP
    // read as the CONNECT answer (a known harness race): send `auth` a moment later.
    tokio::time::sleep(Duration::from_millis(15)).await;
    let _ = socket.emit("auth", socket.handshake().auth.clone());
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())).init();
    let ping_interval = Duration::from_millis(300);
    let ping_timeout = Duration::from_millis(200);
    let cors = Cors { origins: vec![], credentials: false };

    let engine = Engine::new(
        EngineConfig {
            path: "/engine.io/".into(),
            ping_interval,
            ping_timeout,
            max_payload: 1_000_000,
            cors: Some(cors.clone()),
            ..EngineConfig::default()
        },
        Arc::new(Echo),
    );

    let io = Server::builder()
        .ping_interval(ping_interval)
        .ping_timeout(ping_timeout)
        .max_payload(1_000_000)
        .connect_timeout(Duration::from_millis(1000))
        .cors(cors)
        .build();
    io.on_connection(setup_namespace);
    io.of("/custom").on_connection(setup_namespace);

    let service = tower_service_fn(engine, io);
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000u16);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("conformance app listening on http://127.0.0.1:{port} (/engine.io/ and /socket.io/)");
    shoal::serve(listener, service, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// Routes by path: the raw engine or the Socket.IO server.
fn tower_service_fn(engine: Engine, io: Server) -> Router {
    Router { engine, io }
}

#[derive(Clone)]
struct Router {
    engine: Engine,
    io: Server,
}

impl<B> tower_service::Service<http::Request<B>> for Router
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<shoal::engine::ResponseBody>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if this.engine.matches(&req) {
                Ok(this.engine.handle(req).await)
            } else {
                Ok(this.io.handle(req).await)
            }
        })
    }
}
