//! The Socket.IO app that the end-to-end suite (`tests/js/`) drives with the official
//! client. Every feature of the socket layer is reachable through an event, so a test
//! reads as "the client asks for X, sees Y".
//!
//! ```text
//! testapp --port 0 [--transports polling,websocket] [--max-payload N]
//!         [--ping-interval MS] [--ping-timeout MS] [--connect-timeout MS] [--allow-eio3] [--parser json|msgpack]
//! ```
//! Prints `LISTENING <port>` once ready; stops on SIGTERM or Ctrl-C.

use clap::Parser;
use shoal::engine::Transports;
use shoal::{ConnectError, Event, Namespace, Server, Socket, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value = "polling,websocket")]
    transports: String,
    #[arg(long, default_value_t = 1_000_000)]
    max_payload: usize,
    #[arg(long, default_value_t = 25_000)]
    ping_interval: u64,
    #[arg(long, default_value_t = 20_000)]
    ping_timeout: u64,
    #[arg(long, default_value_t = 45_000)]
    connect_timeout: u64,
    /// Join a cluster through Redis (e.g. redis://127.0.0.1:6379, or
    /// redis+cluster://127.0.0.1:7000,127.0.0.1:7001 for a Redis Cluster).
    #[arg(long)]
    redis: Option<String>,
    /// Use the sharded adapter with this subscription mode (static, dynamic,
    /// dynamic-private) instead of the classic one; needs a redis+cluster:// URL.
    #[arg(long)]
    sharded: Option<String>,
    /// This node's id (answers `whoami`, prefixes session ids).
    #[arg(long)]
    node_id: Option<String>,
    /// Connection state recovery: how long (ms) a disconnected session can be recovered
    /// (0: recovery off).
    #[arg(long, default_value_t = 0)]
    recovery: u64,
    /// How long cluster requests wait for other nodes, in ms.
    #[arg(long, default_value_t = 5000)]
    requests_timeout: u64,
    // The abuse limits (defaults: the library's).
    #[arg(long)]
    max_sessions_per_address: Option<usize>,
    #[arg(long)]
    handshakes_per_address_per_second: Option<u32>,
    /// Hold loopback clients (every test client) to the per-address limits.
    #[arg(long)]
    limit_loopback: bool,
    #[arg(long)]
    events_per_second: Option<u32>,
    #[arg(long)]
    event_burst: Option<u32>,
    /// Disconnect a socket over the event rate (default: drop the event).
    #[arg(long)]
    disconnect_over_event_rate: bool,
    #[arg(long)]
    max_rooms_per_socket: Option<usize>,
    #[arg(long)]
    max_namespaces_per_session: Option<usize>,
    /// Accept Engine.IO protocol 3 clients (socket.io-client 2.x).
    #[arg(long)]
    allow_eio3: bool,
    /// The packet format: json (the default parser) or msgpack (socket.io-msgpack-parser).
    #[arg(long, default_value = "json")]
    parser: shoal::Parser,
}

/// Disconnections seen by the server, in order: `{id, nsp, reason}`.
type DisconnectLog = Arc<Mutex<Vec<Value>>>;

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => vec![],
    }
}

fn rooms_value(socket: &Socket) -> Value {
    Value::Array(socket.rooms().iter().map(|r| Value::from(r.to_string())).collect())
}

/// `echo`, and the disconnect log: what every namespace of the app has.
fn common(socket: &Socket, log: &DisconnectLog) {
    socket.on("echo", |socket: Socket, ev: Event| async move {
        if ev.wants_ack() {
            ev.ack(ev.args.clone());
        } else {
            let _ = socket.emit("echo", ev.args.clone());
        }
    });
    let log = log.clone();
    socket.on_disconnect(move |socket: Socket, reason| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(obj(vec![
                ("id", Value::from(socket.id().to_string())),
                ("nsp", Value::from(socket.ns().name())),
                ("reason", Value::from(reason.as_str())),
            ]));
        }
    });
}

fn welcome(ns: &Namespace, log: &DisconnectLog) {
    let log = log.clone();
    ns.on_connection(move |socket: Socket| {
        let log = log.clone();
        async move {
            common(&socket, &log);
            let _ = socket.emit("welcome", socket.ns().name());
        }
    });
}

/// Targets of a namespace-level operation: `spec.to` rooms, `spec.except` rooms.
fn target(ns: &Namespace, spec: &Value) -> shoal::BroadcastOperator {
    let mut op = ns.broadcast();
    for room in strings(spec.get("to").unwrap_or(&Value::Null)) {
        op = op.to(room);
    }
    for room in strings(spec.get("except").unwrap_or(&Value::Null)) {
        op = op.except(room);
    }
    op
}

fn main_namespace(io: &Server, log: &DisconnectLog, server_log: &Arc<Mutex<Vec<Value>>>) {
    let ns = io.of("/");
    ns.middleware(|socket: Socket| async move {
        if socket.handshake().auth.get("reject") == Some(&Value::Bool(true)) {
            return Err(ConnectError::with_data("rejected", obj(vec![("reason", Value::from("auth.reject"))])));
        }
        Ok(())
    });
    let log = log.clone();
    let server_log = server_log.clone();
    ns.on_connection(move |socket: Socket| {
        let log = log.clone();
        let server_log = server_log.clone();
        async move {
            socket.on("server-events", move |_s: Socket, ev: Event| {
                let server_log = server_log.clone();
                async move {
                    let entries = server_log.lock().unwrap().clone();
                    ev.ack(Value::Array(entries));
                }
            });
            setup_main(socket, log)
        }
    });
}

fn setup_main(socket: Socket, log: DisconnectLog) {
    common(&socket, &log);
    let any_log: Arc<Mutex<Vec<Value>>> = Arc::default();
    const NAMED: &[&str] = &[
        "echo", "join", "leave", "broadcast", "broadcast-with-ack", "emit-with-ack", "fetch-sockets", "sockets-join",
        "sockets-leave", "disconnect-sockets", "disconnect-me", "handshake", "set-data", "get-data", "any-log",
        "disconnect-log", "emit-binary", "server-side-emit", "whoami", "server-events", "recovered",
    ];
    {
        let any_log = any_log.clone();
        socket.on_any(move |_socket: Socket, ev: Event| {
            let any_log = any_log.clone();
            async move {
                if !NAMED.contains(&ev.name.as_str()) {
                    let mut entry = vec![Value::from(ev.name.clone())];
                    entry.extend(ev.args.iter().cloned());
                    any_log.lock().unwrap().push(Value::Array(entry));
                }
            }
        });
    }
    socket.on("any-log", move |_s: Socket, ev: Event| {
        let any_log = any_log.clone();
        async move {
            let entries = any_log.lock().unwrap().clone();
            ev.ack(Value::Array(entries));
        }
    });
    socket.on("disconnect-log", move |_s: Socket, ev: Event| {
        let log = log.clone();
        async move {
            let entries = log.lock().unwrap().clone();
            ev.ack(Value::Array(entries));
        }
    });
    socket.on("join", |socket: Socket, ev: Event| async move {
        socket.join_all(strings(ev.arg(0)));
        ev.ack(rooms_value(&socket));
    });
    socket.on("leave", |socket: Socket, ev: Event| async move {
        for room in strings(ev.arg(0)) {
            socket.leave(room);
        }
        ev.ack(rooms_value(&socket));
    });
    socket.on("broadcast", |socket: Socket, ev: Event| async move {
        let spec = ev.arg(0).clone();
        let mut op = if spec.get("fromSocket") == Some(&Value::Bool(true)) { socket.broadcast() } else { socket.ns().broadcast() };
        for room in strings(spec.get("to").unwrap_or(&Value::Null)) {
            op = op.to(room);
        }
        for room in strings(spec.get("except").unwrap_or(&Value::Null)) {
            op = op.except(room);
        }
        if spec.get("volatile") == Some(&Value::Bool(true)) {
            op = op.volatile();
        }
        if spec.get("local") == Some(&Value::Bool(true)) {
            op = op.local();
        }
        let event = spec.get("event").and_then(Value::as_str).unwrap_or("tick").to_owned();
        let args = spec.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
        let _ = op.emit(&event, args);
        ev.ack(());
    });
    socket.on("broadcast-with-ack", |socket: Socket, ev: Event| async move {
        let spec = ev.arg(0).clone();
        let timeout = spec.get("timeout").and_then(Value::as_u64).unwrap_or(1000);
        let op = target(socket.ns(), &spec).timeout(Duration::from_millis(timeout));
        let event = spec.get("event").and_then(Value::as_str).unwrap_or("tick").to_owned();
        let args = spec.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
        let answer = match op.emit_with_ack_responses(&event, args).await {
            Ok(r) if !r.timed_out => obj(vec![("ok", true.into()), ("responses", Value::Array(r.responses))]),
            Ok(r) => obj(vec![("ok", false.into()), ("error", "operation has timed out".into()), ("responses", Value::Array(r.responses))]),
            Err(e) => obj(vec![("ok", false.into()), ("error", e.to_string().into())]),
        };
        ev.ack(answer);
    });
    socket.on("emit-with-ack", |socket: Socket, ev: Event| async move {
        let spec = ev.arg(0).clone();
        let timeout = spec.get("timeout").and_then(Value::as_u64).unwrap_or(1000);
        let event = spec.get("event").and_then(Value::as_str).unwrap_or("ask").to_owned();
        let args = spec.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
        let answer = match socket.timeout(Duration::from_millis(timeout)).emit_with_ack(&event, args).await {
            Ok(response) => obj(vec![("ok", true.into()), ("response", Value::Array(response))]),
            Err(e) => obj(vec![("ok", false.into()), ("error", e.to_string().into())]),
        };
        ev.ack(answer);
    });
    socket.on("fetch-sockets", |socket: Socket, ev: Event| async move {
        let sockets = target(socket.ns(), ev.arg(0)).fetch_sockets().await.unwrap_or_default();
        let mut list: Vec<Value> = sockets
            .iter()
            .map(|s| {
                obj(vec![
                    ("id", Value::from(s.id().to_string())),
                    ("rooms", Value::Array(s.rooms().iter().map(|r| Value::from(r.to_string())).collect())),
                    ("data", s.data().clone()),
                ])
            })
            .collect();
        list.sort_by(|a, b| a.get("id").and_then(Value::as_str).cmp(&b.get("id").and_then(Value::as_str)));
        ev.ack(Value::Array(list));
    });
    socket.on("sockets-join", |socket: Socket, ev: Event| async move {
        let rooms = strings(ev.arg(0).get("rooms").unwrap_or(&Value::Null));
        let _ = target(socket.ns(), ev.arg(0)).sockets_join(rooms).await;
        ev.ack(());
    });
    socket.on("sockets-leave", |socket: Socket, ev: Event| async move {
        let rooms = strings(ev.arg(0).get("rooms").unwrap_or(&Value::Null));
        let _ = target(socket.ns(), ev.arg(0)).sockets_leave(rooms).await;
        ev.ack(());
    });
    socket.on("disconnect-sockets", |socket: Socket, ev: Event| async move {
        let close = ev.arg(0).get("close") == Some(&Value::Bool(true));
        // Ack first: the asking socket may be one of those disconnected.
        ev.ack(());
        let _ = target(socket.ns(), ev.arg(0)).disconnect_sockets(close).await;
    });
    socket.on("disconnect-me", |socket: Socket, ev: Event| async move {
        socket.disconnect(ev.arg(0).as_bool().unwrap_or(false));
    });
    socket.on("handshake", |socket: Socket, ev: Event| async move {
        ev.ack(socket.handshake().to_value());
    });
    socket.on("set-data", |socket: Socket, ev: Event| async move {
        socket.set_data(ev.arg(0).clone());
        ev.ack(());
    });
    socket.on("get-data", |socket: Socket, ev: Event| async move {
        ev.ack(socket.data());
    });
    socket.on("emit-binary", |socket: Socket, ev: Event| async move {
        let nested = obj(vec![
            ("nested", Value::Array(vec![Value::from(vec![1u8, 2, 3]), Value::from("text")])),
            ("n", Value::from(1)),
        ]);
        let _ = socket.emit("binary", (Value::from(b"hello".to_vec()), nested));
        ev.ack(());
    });
    socket.on("server-side-emit", |socket: Socket, ev: Event| async move {
        // spec: {event, args, ack: bool, timeout}; answers {ok, responses} or {ok: false, error}.
        let spec = ev.arg(0).clone();
        let event = spec.get("event").and_then(Value::as_str).unwrap_or("ping").to_owned();
        let args = spec.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
        let answer = if spec.get("ack") == Some(&Value::Bool(false)) {
            match socket.ns().server_side_emit(&event, args).await {
                Ok(()) => obj(vec![("ok", true.into()), ("responses", Value::Array(vec![]))]),
                Err(e) => obj(vec![("ok", false.into()), ("error", e.to_string().into())]),
            }
        } else {
            let timeout = Duration::from_millis(spec.get("timeout").and_then(Value::as_u64).unwrap_or(2000));
            match socket.ns().server_side_emit_with_ack(&event, args, timeout).await {
                Ok(r) => obj(vec![("ok", true.into()), ("responses", Value::Array(r))]),
                Err(e) => obj(vec![("ok", false.into()), ("error", e.to_string().into())]),
            }
        };
        ev.ack(answer);
    });
    socket.on("recovered", |socket: Socket, ev: Event| async move {
        ev.ack(socket.recovered());
    });
    socket.on("whoami", |socket: Socket, ev: Event| async move {
        ev.ack(socket.session().sid.split('~').next().unwrap_or_default().to_owned());
    });
    panicking_events(&socket);
}

/// Handlers that panic, for the crash isolation tests: each must close only its socket.
fn panicking_events(socket: &Socket) {
    // In the handler's synchronous part (run inline, on the connection's task).
    socket.on("panic-now", |socket: Socket, _ev: Event| async move {
        socket.join("panicked");
        fail("panic-now asked by the client");
    });
    // In the app's closure itself, before it even returns a future.
    socket.on("panic-in-closure", |_socket: Socket, _ev: Event| {
        if std::hint::black_box(true) {
            panic!("panic-in-closure asked by the client");
        }
        async {}
    });
    // After an await (the handler runs as a spawned task by then).
    socket.on("panic-later", |_socket: Socket, _ev: Event| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        fail("panic-later asked by the client");
    });
    // In the code that runs once the client's ack arrives.
    socket.on("panic-on-ack", |socket: Socket, _ev: Event| async move {
        let answer = socket.timeout(Duration::from_secs(5)).emit_with_ack("question", "ready?").await;
        fail(&format!("panic-on-ack: the client answered {answer:?}"));
    });
}

/// Panics with `why`. A function returning `()`, so that a handler whose body only
/// panics still has a result type (`()`) for `Socket::on`.
fn fail(why: &str) {
    panic!("{why}")
}

/// Server-side events from other nodes: `ping` is answered with this node's id, and
/// every event is logged for `server-events`.
fn server_events(io: &Server, node: &str, log: &Arc<Mutex<Vec<Value>>>) {
    let ns = io.of("/");
    for event in ["ping", "hello"] {
        let node = node.to_owned();
        let log = log.clone();
        ns.on_server_event(event, move |args: Vec<Value>, ack| {
            let node = node.clone();
            let log = log.clone();
            async move {
                let mut entry = vec![Value::from(event)];
                entry.extend(args);
                log.lock().unwrap().push(Value::Array(entry));
                if let Some(ack) = ack {
                    ack.send(format!("pong from {node}"));
                }
            }
        });
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    // One line per panic (the crash tests make handlers panic on purpose, and read the
    // log): shoal logs which socket it closed for it.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let args = Args::parse();
    let transports = Transports::parse(&args.transports).map_err(std::io::Error::other)?;
    let mut builder = Server::builder();
    if let Some(url) = &args.redis {
        let link = shoal::adapter::redis::RedisLink::connect(url).await.map_err(std::io::Error::other)?;
        if let Some(mode) = &args.sharded {
            let options = shoal::adapter::redis::ShardedOptions {
                subscription_mode: mode.parse().map_err(std::io::Error::other)?,
                requests_timeout: Duration::from_millis(args.requests_timeout),
                ..Default::default()
            };
            builder = builder.adapter(shoal::adapter::redis::sharded_factory(link, options));
        } else {
            let options = shoal::adapter::redis::RedisOptions {
                requests_timeout: Duration::from_millis(args.requests_timeout),
                ..Default::default()
            };
            builder = builder.adapter(shoal::adapter::redis::factory(link, options));
        }
    }
    if let Some(id) = &args.node_id {
        builder = builder.node_id(id);
    }
    if args.recovery > 0 {
        builder = builder.connection_state_recovery(shoal::adapter::RecoveryOptions {
            max_disconnection_duration: Duration::from_millis(args.recovery),
            ..Default::default()
        });
    }
    if let Some(n) = args.max_sessions_per_address {
        builder = builder.max_sessions_per_address(n);
    }
    if let Some(n) = args.handshakes_per_address_per_second {
        builder = builder.handshakes_per_address_per_second(n);
    }
    if let Some(n) = args.max_rooms_per_socket {
        builder = builder.max_rooms_per_socket(n);
    }
    if let Some(n) = args.max_namespaces_per_session {
        builder = builder.max_namespaces_per_session(n);
    }
    let mut rate = shoal::io::EventRateLimit::default();
    rate.per_second = args.events_per_second.unwrap_or(rate.per_second);
    rate.burst = args.event_burst.unwrap_or(rate.burst);
    if args.disconnect_over_event_rate {
        rate.over = shoal::io::OverLimit::Disconnect;
    }
    let io = builder
        .limit_loopback(args.limit_loopback)
        .allow_eio3(args.allow_eio3)
        .event_rate_limit(rate)
        .transports(transports)
        .max_payload(args.max_payload)
        .ping_interval(Duration::from_millis(args.ping_interval))
        .ping_timeout(Duration::from_millis(args.ping_timeout))
        .connect_timeout(Duration::from_millis(args.connect_timeout))
        .parser(args.parser)
        .build();
    let log: DisconnectLog = Arc::default();

    let node = io.engine().config().node_id.clone();
    let server_log: Arc<Mutex<Vec<Value>>> = Arc::default();
    server_events(&io, &node, &server_log);
    main_namespace(&io, &log, &server_log);
    {
        // The node's metrics text, for the limit tests.
        let metrics = io.clone();
        io.of("/metrics").on_connection(move |socket: Socket| {
            let metrics = metrics.clone();
            async move {
                socket.on("metrics", move |_s: Socket, ev: Event| {
                    let metrics = metrics.clone();
                    async move {
                        ev.ack(metrics.metrics_text());
                    }
                });
            }
        });
    }
    welcome(&io.of("/custom"), &log);
    {
        let log = log.clone();
        let pattern = regex::Regex::new(r"^/dyn-[a-z0-9]+$").expect("valid regex");
        io.dynamic_namespace(move |name, _auth| pattern.is_match(name), move |ns| welcome(ns, &log));
    }
    let admin = io.of("/admin");
    admin.middleware(|socket: Socket| async move {
        if socket.handshake().auth.get("token").and_then(Value::as_str) == Some("secret") {
            Ok(())
        } else {
            Err(ConnectError::with_data("unauthorized", obj(vec![("code", Value::from(401))])))
        }
    });
    welcome(&admin, &log);
    let slow = io.of("/slow");
    slow.middleware(|_socket: Socket| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    });
    welcome(&slow, &log);
    // A connect middleware that panics when the client asks for it.
    let panicky = io.of("/panicky");
    panicky.middleware(|socket: Socket| async move {
        if socket.handshake().auth.get("panic") == Some(&Value::Bool(true)) {
            panic!("connect middleware panic asked by the client");
        }
        Ok(())
    });
    welcome(&panicky, &log);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!("LISTENING {}", listener.local_addr()?.port());
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    shoal::serve(listener, io.service(), shutdown).await?;
    io.close().await;
    // Let the close packets reach the clients before the process goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
