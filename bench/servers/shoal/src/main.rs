//! shoal serving the benchmark contract on namespace `/`:
//! `join(room, ack?)` joins the room (acked when asked), `broadcast(payload)` emits `tick` with the payload to
//! room `bench`, `echo(payload, ack)` acks the payload; `broadcast_to(room, payload)` emits `tick` to `room` (the cluster scale run).
//!
//! ```text
//! bench-shoal [--port 3000] [--threads 2] [--redis redis://127.0.0.1:6379] [--recovery MS]
//!             [--sharded dynamic]
//! ```
//! `--sharded MODE` uses the sharded adapter (mode static, dynamic or dynamic-private);
//! `--redis` is then a Redis Cluster: `redis+cluster://127.0.0.1:7000,127.0.0.1:7001`.
//! `--threads` is the number of tokio worker threads (the core-scaling scenario runs 1 and 2).
//! `--redis` puts the node in a cluster on the Redis adapter (the cross-node fan-out);
//! `--recovery` turns on connection state recovery for MS milliseconds (the churn scenario).
//! `--heap-log SECS` prints, every SECS seconds, what the allocator holds: `HEAP <unix
//! time> in_use=<bytes handed out> free=<bytes kept in the arenas, not in use>
//! mmap=<bytes in large mapped blocks> sessions=<n>` (glibc's `mallinfo2`, summed over its
//! arenas). Set beside the process's RSS, it tells a leak (in_use grows) from memory the
//! allocator keeps (free grows). The soak (`bench/soak.sh`) records it. Built with
//! `--features jemalloc`, the server allocates with jemalloc and the line carries jemalloc's
//! counters: in_use = allocated, free = active pages not allocated, mmap = resident pages
//! beyond the active ones (dirty pages not yet returned).
//! Prints `LISTENING <port>` once ready; stops on SIGTERM or Ctrl-C.

use shoal::adapter::redis::{factory, sharded_factory, RedisLink, RedisOptions, ShardedOptions};
use shoal::adapter::RecoveryOptions;
use shoal::{Event, Server, Socket};
use std::time::Duration;

fn flag(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} wants a number")))
        .unwrap_or(default)
}

fn text_flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> std::io::Result<()> {
    let port = flag("--port", 3000) as u16;
    let threads = flag("--threads", 2);
    let recovery_ms = flag("--recovery", 0);
    let redis = text_flag("--redis");
    let sharded = text_flag("--sharded");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    runtime.block_on(async move {
        // The contract's publisher sends up to hundreds of `broadcast` events a second from
        // one socket: it is the app's trusted backend, so the per-socket event rate limit
        // (100/s by default, against abusive clients) is off here.
        let mut builder = Server::builder().event_rate_limit(shoal::io::EventRateLimit { per_second: 0, ..Default::default() });
        if let Some(url) = redis {
            let link = RedisLink::connect(&url).await.map_err(std::io::Error::other)?;
            builder = match &sharded {
                Some(mode) => {
                    let subscription_mode = mode.parse().map_err(std::io::Error::other)?;
                    builder.adapter(sharded_factory(link, ShardedOptions { subscription_mode, ..Default::default() }))
                }
                None => builder.adapter(factory(link, RedisOptions::default())),
            };
        }
        if recovery_ms > 0 {
            builder = builder.connection_state_recovery(RecoveryOptions {
                max_disconnection_duration: Duration::from_millis(recovery_ms as u64),
                ..Default::default()
            });
        }
        let io = builder.build();
        let heap_log = flag("--heap-log", 0);
        if heap_log > 0 {
            let io = io.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(heap_log as u64));
                loop {
                    every.tick().await;
                    let (in_use, free, mmap) = heap();
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    println!("HEAP {now} in_use={in_use} free={free} mmap={mmap} sessions={}", io.health().sessions);
                }
            });
        }
        io.on_connection(|socket: Socket| async move {
            socket.on("join", |socket: Socket, ev: Event| async move {
                if let Some(room) = ev.arg(0).as_str() {
                    socket.join(room.to_owned());
                }
                // Acked when the client asked for an ack (the load generator waits for it).
                ev.ack(());
            });
            socket.on("broadcast", |socket: Socket, ev: Event| async move {
                let _ = socket.ns().to("bench").emit("tick", ev.args.clone());
            });
            // The cluster scale run's rooms mode (loadgen fanout --rooms): `tick` to one room.
            socket.on("broadcast_to", |socket: Socket, ev: Event| async move {
                if let Some(room) = ev.arg(0).as_str() {
                    let _ = socket.ns().to(room.to_owned()).emit("tick", ev.args[1..].to_vec());
                }
            });
            socket.on("echo", |_socket: Socket, ev: Event| async move {
                ev.ack(ev.args.clone());
            });
        });
        // A listen backlog of 1024 for both Rust servers (tokio's `bind` gives 128, which
        // overflows under the load generator's 256 connects in flight; Node uses 511).
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(([127, 0, 0, 1], port).into())?;
        let listener = socket.listen(1024)?;
        println!("LISTENING {}", listener.local_addr()?.port());
        // `BENCH_EXIT_AT_ONCE=1`: exit on the signal without closing anything, so a heap
        // profiler (valgrind --tool=dhat) sees every session still live at the end
        // (bench/issue10/idle-dhat.sh).
        let exit_at_once = std::env::var_os("BENCH_EXIT_AT_ONCE").is_some();
        let shutdown = async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if exit_at_once {
                std::process::exit(0);
            }
        };
        shoal::serve(listener, io.service(), shutdown).await
    })
}

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What jemalloc holds: (bytes allocated, bytes in its active pages not allocated, bytes it
/// keeps mapped beyond its active pages: resident - active, dirty pages not yet purged).
#[cfg(feature = "jemalloc")]
fn heap() -> (usize, usize, usize) {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return (0, 0, 0);
    }
    let allocated = stats::allocated::read().unwrap_or(0);
    let active = stats::active::read().unwrap_or(0);
    let resident = stats::resident::read().unwrap_or(0);
    (allocated, active.saturating_sub(allocated), resident.saturating_sub(active))
}

/// What glibc's allocator holds: (bytes in use, bytes free in its arenas, bytes in mmapped
/// blocks), summed over every arena.
#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
fn heap() -> (usize, usize, usize) {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks, m.fordblks, m.hblkhd)
}

#[cfg(not(any(all(target_os = "linux", target_env = "gnu"), feature = "jemalloc")))]
fn heap() -> (usize, usize, usize) {
    (0, 0, 0)
}
