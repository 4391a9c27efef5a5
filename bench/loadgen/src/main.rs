//! loadgen: many Socket.IO v4 clients against one server, one scenario per run, a JSON
//! report per run. The clients live in worker processes (this same binary, `worker`
//! subcommand), at most `--per-proc` each, with source addresses spread over
//! 127.0.0.2-127.0.0.254; this process coordinates them, publishes broadcasts, and reads
//! the server's CPU and memory from /proc.
//!
//! ```text
//! loadgen idle    --clients 10000 [--settle 10]
//! loadgen fanout  --clients 5000 --rate 20 [--payload 100] [--transport polling]
//! loadgen echo    --clients 1000 --rate 5000
//! loadgen slow    --clients 20 --slow 4 --rate 100 --payload 16384
//! common: --server 127.0.0.1:3000 --server-pid PID --label NAME --out FILE --check
//! ```
//! Every phase has a deadline, and the whole run ends by `--max-secs`.

mod polling;
mod procfs;
mod stats;
mod worker;
mod ws;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use worker::{Role, WorkerSpec};
use ws::{Frame, WsConn};

#[derive(Parser, Clone)]
struct Common {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:3000", global = true)]
    server: SocketAddr,
    /// Socket.IO path.
    #[arg(long, default_value = "/socket.io/", global = true)]
    path: String,
    /// The server's process id: its tree's CPU and RSS are read from /proc.
    #[arg(long, global = true)]
    server_pid: Option<i32>,
    /// A name for the server in the report.
    #[arg(long, default_value = "server", global = true)]
    label: String,
    /// Clients per worker process.
    #[arg(long, default_value_t = 2500, global = true)]
    per_proc: usize,
    /// Connection attempts in flight at once, over all workers.
    #[arg(long, default_value_t = 256, global = true)]
    concurrency: usize,
    /// Write the JSON here (it is printed to stdout too).
    #[arg(long, global = true)]
    out: Option<String>,
    /// Exit 2 unless every client connected, none was closed, and every message counted
    /// was delivered (fan-out) or acked (echo); saturation: the first step passed.
    #[arg(long, global = true)]
    check: bool,
    /// Before starting, wait up to this many seconds for the machine to be quiet (other
    /// processes using under 30% of a core), so that they do not skew the figures.
    #[arg(long, default_value_t = 0.0, global = true)]
    wait_quiet: f64,
    /// Hard limit on the whole run.
    #[arg(long, default_value_t = 240, global = true)]
    max_secs: u64,
    /// Cluster runs: the clients' worker processes are spread over these addresses
    /// (round robin by process; default: --server).
    #[arg(long, value_delimiter = ',', global = true)]
    receivers_on: Vec<SocketAddr>,
    /// Cluster runs: the publisher connects here (default: --server).
    #[arg(long, global = true)]
    publisher_server: Option<SocketAddr>,
    /// Cluster runs: a second server process (another node); its CPU is reported as `peer`.
    #[arg(long, global = true)]
    peer_pid: Option<i32>,
    /// The forwarding hop: each client opens its session over polling on --server, then
    /// sends every later request (polling) or its WebSocket upgrade to this address.
    #[arg(long, global = true)]
    via: Option<SocketAddr>,
    /// Churn across nodes: every other reconnection goes to this address.
    #[arg(long, global = true)]
    reconnect_to: Option<SocketAddr>,
}

#[derive(Parser)]
#[command(about = "Socket.IO v4 load generator for the shoal benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum Cmd {
    /// N idle WebSocket sessions: connect rate, handshake latency, server RSS per session.
    Idle {
        #[arg(long)]
        clients: usize,
        /// Seconds to hold the sessions before reading the server's RSS.
        #[arg(long, default_value_t = 10.0)]
        settle: f64,
        /// Open each session over polling, then upgrade it to WebSocket (the official
        /// client's default), instead of opening it over WebSocket.
        #[arg(long)]
        upgrade: bool,
    },
    /// N clients in room `bench`; a publisher emits `broadcast` at `rate`/s.
    Fanout {
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// websocket or polling (the publisher always uses WebSocket).
        #[arg(long, default_value = "websocket")]
        transport: String,
        /// Churn: every receiver drops its connection after this many seconds on average
        /// (exponential) and reconnects with the recovery handshake (WebSocket only).
        #[arg(long, default_value_t = 0.0)]
        churn: f64,
        /// Rooms instead of one: receiver i joins room `r<i % rooms>`, and the publisher
        /// emits `broadcast_to(room, payload)` to the rooms in turn, `rate`/s in all (so
        /// each room gets rate/rooms per second). 0: every receiver in room `bench`.
        #[arg(long, default_value_t = 0)]
        rooms: usize,
    },
    /// N clients emit `echo` with an ack, `rate` acks/s in all.
    Echo {
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// websocket or polling.
        #[arg(long, default_value = "websocket")]
        transport: String,
    },
    /// `slow` clients join the room and stop reading, beside `clients` normal ones, while
    /// the publisher sends `rate`/s of `payload` bytes: the server's RSS over time.
    Slow {
        #[arg(long, default_value_t = 20)]
        clients: usize,
        #[arg(long, default_value_t = 4)]
        slow: usize,
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 16384)]
        payload: usize,
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
    },
    /// Fan-out stepped up until it fails: `clients` in room `bench`, and for each rate of
    /// `rates` (broadcasts/s) `warmup` s, then `duration` s measured; stepping stops at the
    /// first step under 100% delivered or with p99 over `p99_limit_ms`. The figure is the
    /// highest deliveries/s of a passing step. Clients connect once for all steps.
    Saturate {
        #[arg(long)]
        clients: usize,
        #[arg(long, value_delimiter = ',', default_value = "10,20,30,40,60,80,100,120,160,200")]
        rates: Vec<f64>,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 250.0)]
        p99_limit_ms: f64,
        /// After a step that lost messages, keep stepping (for the record) while at least
        /// this share was delivered and p99 stays under the limit. The figure stays that of
        /// the last step before the first failure.
        #[arg(long, default_value_t = 0.99)]
        keep_stepping_above: f64,
    },
    #[command(hide = true)]
    Worker { spec: String },
}

struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    lines: Vec<Lines<BufReader<ChildStdout>>>,
}

impl Workers {
    fn spawn(specs: Vec<WorkerSpec>) -> std::io::Result<Workers> {
        let exe = std::env::current_exe()?;
        let mut w = Workers { children: vec![], stdins: vec![], lines: vec![] };
        for spec in specs {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .arg(serde_json::to_string(&spec).expect("spec serializes"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            w.stdins.push(child.stdin.take().expect("piped"));
            w.lines.push(BufReader::new(child.stdout.take().expect("piped")).lines());
            w.children.push(child);
        }
        Ok(w)
    }

    /// The JSON after `prefix` from every worker, in order.
    async fn collect(&mut self, prefix: &str) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        for (i, lines) in self.lines.iter_mut().enumerate() {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(rest) = line.strip_prefix(prefix) {
                            out.push(serde_json::from_str(rest.trim()).map_err(|e| format!("worker {i}: bad {prefix}: {e}"))?);
                            break;
                        }
                    }
                    Ok(None) => return Err(format!("worker {i} exited before {prefix}")),
                    Err(e) => return Err(format!("worker {i}: {e}")),
                }
            }
        }
        Ok(out)
    }

    async fn tell(&mut self, cmd: &str) {
        for stdin in &mut self.stdins {
            let _ = stdin.write_all(format!("{cmd}\n").as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }

    async fn wait(&mut self) {
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
        }
    }
}

fn specs(c: &Common, role: Role, count: usize, first_index: usize, polling: bool, join: Option<&str>, echo_period_us: u64, payload: usize) -> Vec<WorkerSpec> {
    let addrs = if c.receivers_on.is_empty() { vec![c.server] } else { c.receivers_on.clone() };
    let procs = count.div_ceil(c.per_proc.max(1)).max(addrs.len()).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    for p in 0..procs {
        let n = count / procs + usize::from(p < count % procs);
        out.push(WorkerSpec {
            role,
            server: addrs[p % addrs.len()],
            host: addrs[p % addrs.len()].to_string(),
            path: c.path.clone(),
            count: n,
            first_index: first_index + start,
            concurrency: (c.concurrency / procs).max(1),
            polling,
            join: join.map(str::to_owned),
            echo_period_us,
            payload,
            deadline_s: c.max_secs + 10,
            via: c.via,
            churn_ms: 0,
            reconnect_to: c.reconnect_to,
            rooms: 0,
        });
        start += n;
    }
    out
}

/// Sums what the workers said after connecting.
fn connect_summary(msgs: &[Value]) -> Value {
    let mut hs = stats::histogram();
    let (mut ok, mut failed, mut first, mut last, mut join_retries) = (0u64, 0u64, u64::MAX, 0u64, 0u64);
    let mut errors = Vec::new();
    for m in msgs {
        ok += m["ok"].as_u64().unwrap_or(0);
        failed += m["failed"].as_u64().unwrap_or(0);
        join_retries += m["join_retries"].as_u64().unwrap_or(0);
        if m["ok"].as_u64().unwrap_or(0) > 0 {
            first = first.min(m["first_start_us"].as_u64().unwrap_or(u64::MAX));
            last = last.max(m["last_done_us"].as_u64().unwrap_or(0));
        }
        if let Some(h) = m["handshake"].as_str().and_then(stats::decode) {
            hs.add(&h).expect("same bounds");
        }
        errors.extend(m["errors"].as_array().cloned().unwrap_or_default());
    }
    let secs = if last > first { (last - first) as f64 / 1e6 } else { 0.0 };
    json!({
        "attempted": ok + failed, "ok": ok, "failed": failed, "secs": round3(secs),
        "rate_per_s": if secs > 0.0 { (ok as f64 / secs).round() } else { 0.0 },
        "handshake": stats::summary(&hs), "errors": errors,
        // `join`s that got no ack within a second and were asked again (see ws::WsConn::join).
        "join_retries": join_retries,
    })
}

struct Results {
    ok: u64,
    closed: u64,
    rx_measured: u64,
    rx_total: u64,
    echo_sent: u64,
    echo_acked: u64,
    slow_checked: u64,
    slow_dropped: u64,
    reconnects: u64,
    recovered: u64,
    no_offset: u64,
    duplicates: u64,
    reconnect_failed: u64,
    cpu_s: f64,
    latency: Histogram<u64>,
    rtt: Histogram<u64>,
    errors: Vec<Value>,
}

fn results(msgs: &[Value]) -> Results {
    let mut r = Results {
        ok: 0, closed: 0, rx_measured: 0, rx_total: 0, echo_sent: 0, echo_acked: 0, slow_checked: 0, slow_dropped: 0, reconnects: 0, recovered: 0, no_offset: 0, duplicates: 0, reconnect_failed: 0, cpu_s: 0.0,
        latency: stats::histogram(), rtt: stats::histogram(), errors: vec![],
    };
    for m in msgs {
        let n = |k: &str| m[k].as_u64().unwrap_or(0);
        r.ok += n("ok");
        r.closed += n("closed");
        r.rx_measured += n("rx_measured");
        r.rx_total += n("rx_total");
        r.echo_sent += n("echo_sent");
        r.echo_acked += n("echo_acked");
        r.slow_checked += n("slow_checked");
        r.slow_dropped += n("slow_dropped");
        r.reconnects += n("reconnects");
        r.recovered += n("recovered");
        r.no_offset += n("no_offset");
        r.duplicates += n("duplicates");
        r.reconnect_failed += n("reconnect_failed");
        r.cpu_s += m["cpu_s"].as_f64().unwrap_or(0.0);
        if let Some(h) = m["latency"].as_str().and_then(stats::decode) {
            r.latency.add(&h).expect("same bounds");
        }
        if let Some(h) = m["rtt"].as_str().and_then(stats::decode) {
            r.rtt.add(&h).expect("same bounds");
        }
        r.errors.extend(m["errors"].as_array().cloned().unwrap_or_default());
    }
    r
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Samples the server's RSS and CPU every second until dropped.
struct Sampler {
    series: Arc<Mutex<Vec<(f64, u64, f64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: Option<i32>) -> Sampler {
        let series = Arc::new(Mutex::new(Vec::new()));
        let s2 = series.clone();
        let t0 = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let s = procfs::sample(pid);
                s2.lock().unwrap().push((round3(t0.elapsed().as_secs_f64()), s.rss_kib, round3(s.cpu_s)));
            }
        });
        Sampler { series, task }
    }

    fn stop(self) -> Value {
        self.task.abort();
        let v = self.series.lock().unwrap().clone();
        json!(v.iter().map(|(t, rss, cpu)| json!({"t": t, "rss_kib": rss, "cpu_s": cpu})).collect::<Vec<_>>())
    }
}

/// The publisher: one WebSocket client (from 127.0.0.1) that emits `broadcast`.
struct Publisher {
    conn: WsConn,
    seq: u64,
    /// Rooms mode: the size of each room `r<k>`; a broadcast goes to room `seq % len`.
    room_sizes: Vec<u64>,
    /// Rooms mode: deliveries owed by the measured broadcasts sent so far.
    owed: u64,
}

impl Publisher {
    async fn connect(c: &Common) -> std::io::Result<Publisher> {
        let server = c.publisher_server.unwrap_or(c.server);
        let stream = ws::tcp_connect(server, None, None).await?;
        let mut conn = WsConn::upgrade(stream, &server.to_string(), &c.path).await?;
        conn.socketio_handshake().await?;
        Ok(Publisher { conn, seq: 0, room_sizes: Vec::new(), owed: 0 })
    }

    /// Emits `rate`/s for `secs`; returns how many it sent.
    async fn publish(&mut self, rate: f64, secs: f64, measured: bool, size: usize) -> std::io::Result<u64> {
        self.publish_window(rate, secs, measured as u64, size).await
    }

    /// Emits `rate`/s for `secs`, its payloads marked as window `window` (0: none).
    async fn publish_window(&mut self, rate: f64, secs: f64, window: u64, size: usize) -> std::io::Result<u64> {
        if secs <= 0.0 {
            return Ok(0);
        }
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let target = (rate * secs).round() as u64;
        let mut sent = 0;
        while sent < target && Instant::now() < end + Duration::from_secs(1) {
            tokio::select! {
                _ = tick.tick() => {
                    let p = ws::payload(stats::now_us(), self.seq, window, size);
                    if self.room_sizes.is_empty() {
                        self.conn.send(format!("42[\"broadcast\",{p}]").as_bytes()).await?;
                    } else {
                        let room = (self.seq % self.room_sizes.len() as u64) as usize;
                        if window > 0 {
                            self.owed += self.room_sizes[room];
                        }
                        self.conn.send(format!("42[\"broadcast_to\",\"r{room}\",{p}]").as_bytes()).await?;
                    }
                    self.seq += 1;
                    sent += 1;
                }
                f = self.conn.next() => match f? {
                    Frame::Text(t) if t.as_ref() == b"2" => self.conn.send(b"3").await?,
                    Frame::Closed => return Err(ws::io_err("publisher closed by server")),
                    _ => {}
                },
            }
        }
        Ok(sent)
    }

    /// Keeps answering pings for `secs`.
    async fn idle(&mut self, secs: f64) -> std::io::Result<()> {
        let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => return Ok(()),
                f = self.conn.next() => match f? {
                    Frame::Text(t) if t.as_ref() == b"2" => self.conn.send(b"3").await?,
                    Frame::Closed => return Err(ws::io_err("publisher closed by server")),
                    _ => {}
                },
            }
        }
    }
}

fn cpu_pct(cpu_s: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        (cpu_s / secs * 1000.0).round() / 10.0
    } else {
        0.0
    }
}

/// Waits (at most `secs`) until the whole machine is busy under 30% of a core over 1 s;
/// returns the seconds waited and the last busy figure.
async fn wait_quiet(secs: f64) -> (f64, f64) {
    let t0 = Instant::now();
    loop {
        let a = procfs::machine_ticks();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = procfs::busy_pct_core(a, procfs::machine_ticks());
        if busy < 30.0 || t0.elapsed().as_secs_f64() >= secs {
            return (round3(t0.elapsed().as_secs_f64()), busy);
        }
    }
}

async fn run(cmd: Cmd, c: Common) -> Result<Value, String> {
    let quiet = if c.wait_quiet > 0.0 { Some(wait_quiet(c.wait_quiet).await) } else { None };
    let base = procfs::sample(c.server_pid);
    let self_cpu0 = procfs::self_cpu_secs();
    let sampler = Sampler::start(c.server_pid);
    let mut out = json!({
        "label": c.label, "server_pid": c.server_pid,
        "server_before": {"rss_kib": base.rss_kib, "cpu_s": round3(base.cpu_s)},
        "started_us": stats::now_us(),
    });
    if let Some((waited, busy)) = quiet {
        out["machine_before"] = json!({"quiet_wait_s": waited, "busy_pct_core": busy});
    }
    // The whole machine over the measured window: what else ran beside server and loadgen.
    let mut machine0 = procfs::machine_ticks();
    match cmd {
        Cmd::Idle { clients, settle, upgrade } => {
            out["scenario"] = json!("idle");
            out["params"] = json!({"clients": clients, "settle_s": settle, "upgrade": upgrade});
            let mut sp = specs(&c, Role::Receive, clients, 0, false, None, 0, 0);
            if upgrade {
                for s in &mut sp {
                    s.via = Some(s.server);
                }
            }
            let c0 = procfs::sample(c.server_pid).cpu_s;
            let mut w = Workers::spawn(sp).map_err(|e| e.to_string())?;
            let connected = w.collect("CONNECTED ").await?;
            let mut conn = connect_summary(&connected);
            let ok = conn["ok"].as_u64().unwrap_or(0);
            // The server's CPU from before the first connect to the last CONNECT answer.
            let connect_cpu = procfs::sample(c.server_pid).cpu_s - c0;
            conn["server_cpu_s"] = json!(round3(connect_cpu));
            conn["server_cpu_us_per_handshake"] = json!(if ok > 0 { (connect_cpu / ok as f64 * 1e7).round() / 10.0 } else { 0.0 });
            out["connect"] = conn;
            let t = Instant::now();
            let cpu0 = procfs::sample(c.server_pid).cpu_s;
            tokio::time::sleep(Duration::from_secs_f64(settle)).await;
            let after = procfs::sample(c.server_pid);
            w.tell("MARK").await;
            w.tell("STOP").await;
            let r = results(&w.collect("RESULT ").await?);
            w.wait().await;
            let growth = after.rss_kib.saturating_sub(base.rss_kib);
            out["server"] = json!({
                "rss_before_kib": base.rss_kib, "rss_after_kib": after.rss_kib, "rss_growth_kib": growth,
                "rss_per_session_bytes": if ok > 0 { (growth * 1024) / ok } else { 0 },
                "idle_cpu_pct": cpu_pct(after.cpu_s - cpu0, t.elapsed().as_secs_f64()),
            });
            out["sessions_closed_early"] = json!(r.closed);
            out["errors"] = json!(r.errors);
        }
        Cmd::Fanout { clients, rate, payload, warmup, duration, transport, churn, rooms } => {
            let polling = transport == "polling";
            out["scenario"] = json!(if polling { "polling" } else { "fanout" });
            out["params"] = json!({"clients": clients, "rate": rate, "payload": payload, "warmup_s": warmup, "duration_s": duration, "transport": transport,
                "churn_s": churn, "rooms": rooms, "receivers_on": c.receivers_on.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "publisher_server": c.publisher_server.map(|a| a.to_string()), "via": c.via.map(|a| a.to_string())});
            let mut sp = specs(&c, Role::Receive, clients, 0, polling, Some("bench"), 0, 0);
            for s in &mut sp {
                s.churn_ms = (churn * 1000.0) as u64;
                s.rooms = rooms;
            }
            let mut w = Workers::spawn(sp).map_err(|e| e.to_string())?;
            let connected = w.collect("CONNECTED ").await?;
            out["connect"] = connect_summary(&connected);
            let receivers = out["connect"]["ok"].as_u64().unwrap_or(0);
            let mut publisher = Publisher::connect(&c).await.map_err(|e| format!("publisher: {e}"))?;
            if rooms > 0 {
                // Receiver i is in room r<i % rooms> (worker::room_of).
                publisher.room_sizes = (0..rooms).map(|k| (clients / rooms + usize::from(k < clients % rooms)) as u64).collect();
            }
            // Let the joins land before the first broadcast.
            publisher.idle(1.0).await.map_err(|e| e.to_string())?;
            publisher.publish(rate, warmup, false, payload).await.map_err(|e| e.to_string())?;
            w.tell("MARK").await;
            let s0 = procfs::sample(c.server_pid);
            let p0 = procfs::sample(c.peer_pid);
            machine0 = procfs::machine_ticks();
            let me0 = procfs::self_cpu_secs();
            let t0 = Instant::now();
            let sent = publisher.publish(rate, duration, true, payload).await.map_err(|e| e.to_string())?;
            let window = t0.elapsed().as_secs_f64();
            w.tell("STOP").await;
            let r = results(&w.collect("RESULT ").await?);
            w.wait().await;
            let s1 = procfs::sample(c.server_pid);
            let p1 = procfs::sample(c.peer_pid);
            let me1 = procfs::self_cpu_secs();
            let expected = if rooms > 0 { publisher.owed } else { sent * receivers };
            let server_cpu = s1.cpu_s - s0.cpu_s;
            if c.peer_pid.is_some() {
                let pc = p1.cpu_s - p0.cpu_s;
                out["peer"] = json!({"cpu_s": round3(pc), "cpu_pct_core": cpu_pct(pc, window), "rss_kib": p1.rss_kib,
                    "both_cpu_s_per_million": if r.rx_measured > 0 { round3((server_cpu + pc) / (r.rx_measured as f64 / 1e6)) } else { 0.0 }});
            }
            if churn > 0.0 {
                out["churn"] = json!({"mean_s": churn, "reconnects": r.reconnects, "recovered": r.recovered, "no_offset": r.no_offset,
                    "duplicates": r.duplicates, "reconnect_failed": r.reconnect_failed});
            }
            out["delivery"] = json!({
                "published": sent, "receivers": receivers, "expected": expected, "delivered": r.rx_measured,
                "ratio": if expected > 0 { r.rx_measured as f64 / expected as f64 } else { 0.0 },
                "latency": stats::summary(&r.latency), "window_s": round3(window),
            });
            out["server"] = json!({
                "cpu_s": round3(server_cpu), "cpu_pct_core": cpu_pct(server_cpu, window),
                "cpu_s_per_million": if r.rx_measured > 0 { round3(server_cpu / (r.rx_measured as f64 / 1e6)) } else { 0.0 },
                "rss_kib": s1.rss_kib,
            });
            let lg = r.cpu_s + (me1 - me0);
            out["loadgen"] = json!({"cpu_s": round3(lg), "cpu_pct_core": cpu_pct(lg, window), "processes": w.children.len() + 1});
            out["sessions_closed_early"] = json!(r.closed);
            out["errors"] = json!(r.errors);
        }
        Cmd::Saturate { clients, rates, payload, warmup, duration, p99_limit_ms, keep_stepping_above } => {
            out["scenario"] = json!("saturate");
            out["params"] = json!({"clients": clients, "rates": rates, "payload": payload, "warmup_s": warmup, "duration_s": duration, "p99_limit_ms": p99_limit_ms,
                "keep_stepping_above": keep_stepping_above});
            let mut w = Workers::spawn(specs(&c, Role::Receive, clients, 0, false, Some("bench"), 0, 0)).map_err(|e| e.to_string())?;
            let connected = w.collect("CONNECTED ").await?;
            out["connect"] = connect_summary(&connected);
            let receivers = out["connect"]["ok"].as_u64().unwrap_or(0);
            let mut publisher = Publisher::connect(&c).await.map_err(|e| format!("publisher: {e}"))?;
            publisher.idle(1.0).await.map_err(|e| e.to_string())?;
            let (all0, all_me0, all_t0) = (procfs::sample(c.server_pid), procfs::self_cpu_secs(), Instant::now());
            machine0 = procfs::machine_ticks();
            let (mut steps, mut best, mut lg_all, mut closed) = (Vec::new(), Value::Null, 0.0, 0);
            let (mut failed, mut best_999) = (false, Value::Null);
            for (k, &rate) in rates.iter().enumerate() {
                let window = k as u64 + 1;
                w.tell(&format!("STEP {window}")).await;
                publisher.publish_window(rate, warmup, 0, payload).await.map_err(|e| e.to_string())?;
                let (s0, m0, me0, t0) = (procfs::sample(c.server_pid), procfs::machine_ticks(), procfs::self_cpu_secs(), Instant::now());
                let sent = publisher.publish_window(rate, duration, window, payload).await.map_err(|e| e.to_string())?;
                let window_s = t0.elapsed().as_secs_f64();
                // Until every client is quiet: a server that fell behind still works here,
                // and that work belongs to this step.
                w.tell("REPORT").await;
                let r = results(&w.collect("RESULT ").await?);
                let (s1, m1, me1, elapsed) = (procfs::sample(c.server_pid), procfs::machine_ticks(), procfs::self_cpu_secs(), t0.elapsed().as_secs_f64());
                let expected = sent * receivers;
                let p99_ms = if r.latency.is_empty() { f64::INFINITY } else { r.latency.value_at_quantile(0.99) as f64 / 1000.0 };
                let new_closed = r.closed - closed;
                closed = r.closed;
                let pass = r.rx_measured == expected && p99_ms <= p99_limit_ms && new_closed == 0;
                let server_cpu = s1.cpu_s - s0.cpu_s;
                let lg = r.cpu_s + (me1 - me0);
                lg_all += r.cpu_s;
                let busy = procfs::busy_pct_core(m0, m1);
                let server_pct = cpu_pct(server_cpu, elapsed);
                let lg_pct = cpu_pct(lg, elapsed);
                let step = json!({
                    "rate": rate, "published": sent, "expected": expected, "delivered": r.rx_measured,
                    "ratio": if expected > 0 { r.rx_measured as f64 / expected as f64 } else { 0.0 },
                    "deliveries_per_s": (r.rx_measured as f64 / window_s).round(),
                    "latency": stats::summary(&r.latency), "window_s": round3(window_s), "drained_s": round3(elapsed - window_s),
                    "closed": new_closed, "pass": pass,
                    "server": {"cpu_s": round3(server_cpu), "cpu_pct_core": server_pct,
                        "cpu_s_per_million": if r.rx_measured > 0 { round3(server_cpu / (r.rx_measured as f64 / 1e6)) } else { 0.0 }, "rss_kib": s1.rss_kib},
                    "loadgen": {"cpu_s": round3(lg), "cpu_pct_core": lg_pct},
                    "machine": {"busy_pct_core": busy, "other_pct_core": ((busy - server_pct - lg_pct).max(0.0) * 10.0).round() / 10.0},
                    "errors": r.errors,
                });
                let ratio = step["ratio"].as_f64().unwrap_or(0.0);
                let go_on = ratio >= keep_stepping_above && p99_ms <= p99_limit_ms && new_closed == 0;
                eprintln!("loadgen: {} saturate {rate}/s: {ratio:.5} delivered, p99 {p99_ms:.1} ms, {} deliveries/s, server {server_pct}% loadgen {lg_pct}% other {}%{}",
                    c.label, step["deliveries_per_s"], step["machine"]["other_pct_core"], if pass { "" } else if go_on { ": FAIL (stepping on for the record)" } else { ": FAIL, stop" });
                failed |= !pass;
                if pass && !failed {
                    best = step.clone();
                }
                if ratio >= 0.999 && p99_ms <= p99_limit_ms && new_closed == 0 {
                    best_999 = step.clone();
                }
                steps.push(step);
                if !go_on {
                    break;
                }
            }
            let all_s = all_t0.elapsed().as_secs_f64();
            let server_cpu = procfs::sample(c.server_pid).cpu_s - all0.cpu_s;
            let lg = lg_all + (procfs::self_cpu_secs() - all_me0);
            out["saturation"] = json!({
                "deliveries_per_s": best["deliveries_per_s"].as_f64().unwrap_or(0.0),
                "rate": best["rate"].as_f64().unwrap_or(0.0),
                "p99_ms": best["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
                "cpu_s_per_million": best["server"]["cpu_s_per_million"].as_f64().unwrap_or(0.0),
                "failed_at": steps.iter().find(|s| !s["pass"].as_bool().unwrap_or(false)).map(|s| s["rate"].clone()),
                "deliveries_per_s_999": best_999["deliveries_per_s"].as_f64().unwrap_or(0.0),
            });
            out["steps"] = json!(steps);
            out["server"] = json!({"cpu_s": round3(server_cpu), "cpu_pct_core": cpu_pct(server_cpu, all_s), "rss_kib": procfs::sample(c.server_pid).rss_kib});
            out["loadgen"] = json!({"cpu_s": round3(lg), "cpu_pct_core": cpu_pct(lg, all_s), "processes": w.children.len() + 1});
            w.tell("STOP").await;
            let r = results(&w.collect("RESULT ").await?);
            w.wait().await;
            out["sessions_closed_early"] = json!(r.closed);
            out["errors"] = json!(r.errors);
        }
        Cmd::Echo { clients, rate, payload, warmup, duration, transport } => {
            let polling = transport == "polling";
            out["scenario"] = json!("echo");
            out["params"] = json!({"clients": clients, "rate": rate, "payload": payload, "warmup_s": warmup, "duration_s": duration, "transport": transport,
                "via": c.via.map(|a| a.to_string())});
            let period_us = (clients as f64 / rate * 1e6) as u64;
            let mut w = Workers::spawn(specs(&c, Role::Echo, clients, 0, polling, None, period_us, payload)).map_err(|e| e.to_string())?;
            let connected = w.collect("CONNECTED ").await?;
            out["connect"] = connect_summary(&connected);
            w.tell("GO").await;
            tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
            w.tell("MARK").await;
            let s0 = procfs::sample(c.server_pid);
            let p0 = procfs::sample(c.peer_pid);
            machine0 = procfs::machine_ticks();
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs_f64(duration)).await;
            let window = t0.elapsed().as_secs_f64();
            let s1 = procfs::sample(c.server_pid);
            let p1 = procfs::sample(c.peer_pid);
            if c.peer_pid.is_some() {
                let pc = p1.cpu_s - p0.cpu_s;
                out["peer"] = json!({"cpu_s": round3(pc), "cpu_pct_core": cpu_pct(pc, window), "rss_kib": p1.rss_kib});
            }
            w.tell("STOP").await;
            let r = results(&w.collect("RESULT ").await?);
            w.wait().await;
            let server_cpu = s1.cpu_s - s0.cpu_s;
            out["echo"] = json!({
                "sent": r.echo_sent, "acked": r.echo_acked,
                "ratio": if r.echo_sent > 0 { r.echo_acked as f64 / r.echo_sent as f64 } else { 0.0 },
                "acks_per_s": (r.echo_acked as f64 / window).round(),
                "rtt": stats::summary(&r.rtt), "window_s": round3(window),
            });
            out["server"] = json!({"cpu_s": round3(server_cpu), "cpu_pct_core": cpu_pct(server_cpu, window), "rss_kib": s1.rss_kib});
            out["loadgen"] = json!({"cpu_s": round3(r.cpu_s), "cpu_pct_core": cpu_pct(r.cpu_s, window), "processes": w.children.len() + 1});
            out["sessions_closed_early"] = json!(r.closed);
            out["errors"] = json!(r.errors);
        }
        Cmd::Slow { clients, slow, rate, payload, duration } => {
            out["scenario"] = json!("slow");
            out["params"] = json!({"clients": clients, "slow": slow, "rate": rate, "payload": payload, "duration_s": duration});
            let mut all = specs(&c, Role::Receive, clients, 0, false, Some("bench"), 0, 0);
            all.extend(specs(&c, Role::Slow, slow, clients, false, Some("bench"), 0, 0));
            let mut w = Workers::spawn(all).map_err(|e| e.to_string())?;
            let connected = w.collect("CONNECTED ").await?;
            out["connect"] = connect_summary(&connected);
            let mut publisher = Publisher::connect(&c).await.map_err(|e| format!("publisher: {e}"))?;
            publisher.idle(1.0).await.map_err(|e| e.to_string())?;
            w.tell("MARK").await;
            let s0 = procfs::sample(c.server_pid);
            let t0 = Instant::now();
            let sent = publisher.publish(rate, duration, true, payload).await.map_err(|e| e.to_string())?;
            let window = t0.elapsed().as_secs_f64();
            let s1 = procfs::sample(c.server_pid);
            w.tell("STOP").await;
            let r = results(&w.collect("RESULT ").await?);
            w.wait().await;
            let expected = sent * clients as u64;
            out["delivery"] = json!({
                "published": sent, "receivers": clients, "expected": expected, "delivered": r.rx_measured,
                "ratio": if expected > 0 { r.rx_measured as f64 / expected as f64 } else { 0.0 },
                "latency": stats::summary(&r.latency), "window_s": round3(window),
            });
            out["slow"] = json!({"clients": slow, "checked": r.slow_checked, "dropped_by_server": r.slow_dropped,
                "offered_mib_per_client": round3(sent as f64 * payload as f64 / 1048576.0)});
            out["server"] = json!({"rss_start_kib": s0.rss_kib, "rss_end_kib": s1.rss_kib, "cpu_pct_core": cpu_pct(s1.cpu_s - s0.cpu_s, window)});
            out["sessions_closed_early"] = json!(r.closed);
            out["errors"] = json!(r.errors);
        }
        Cmd::Worker { .. } => unreachable!("handled in main"),
    }
    let busy = procfs::busy_pct_core(machine0, procfs::machine_ticks());
    let accounted = out["server"]["cpu_pct_core"].as_f64().unwrap_or(0.0)
        + out["peer"]["cpu_pct_core"].as_f64().unwrap_or(0.0)
        + out["loadgen"]["cpu_pct_core"].as_f64().unwrap_or(0.0);
    out["machine"] = json!({"busy_pct_core": busy, "other_pct_core": if accounted > 0.0 { ((busy - accounted).max(0.0) * 10.0).round() / 10.0 } else { busy }});
    let series = sampler.stop();
    if let Some(max) = series.as_array().and_then(|a| a.iter().filter_map(|s| s["rss_kib"].as_u64()).max()) {
        out["server_rss_max_kib"] = json!(max);
    }
    out["server_series"] = series;
    out["loadgen_total_cpu_s"] = json!(round3(procfs::self_cpu_secs() - self_cpu0));
    Ok(out)
}

/// What `--check` demands of a run.
fn healthy(v: &Value) -> Result<(), String> {
    let failed = v["connect"]["failed"].as_u64().unwrap_or(0);
    if failed > 0 {
        return Err(format!("{failed} clients failed to connect"));
    }
    if v["connect"]["ok"].as_u64().unwrap_or(0) == 0 {
        return Err("no client connected".into());
    }
    let closed = v["sessions_closed_early"].as_u64().unwrap_or(0);
    match v["scenario"].as_str() {
        Some("fanout") | Some("polling") | Some("slow") => {
            let (delivered, expected) = (v["delivery"]["delivered"].as_u64().unwrap_or(0), v["delivery"]["expected"].as_u64().unwrap_or(0));
            if expected == 0 || delivered != expected {
                return Err(format!("delivered {delivered} of {expected}"));
            }
        }
        Some("echo") => {
            let (acked, sent) = (v["echo"]["acked"].as_u64().unwrap_or(0), v["echo"]["sent"].as_u64().unwrap_or(0));
            if sent == 0 || acked != sent {
                return Err(format!("acked {acked} of {sent}"));
            }
        }
        Some("saturate") => {
            let first = &v["steps"][0];
            if !first["pass"].as_bool().unwrap_or(false) {
                return Err(format!("the first step ({} broadcasts/s) failed: {} of {} delivered, p99 {} ms", first["rate"], first["delivered"], first["expected"], first["latency"]["p99_ms"]));
            }
        }
        _ => {}
    }
    if closed > 0 && v["scenario"] != "slow" {
        return Err(format!("{closed} sessions closed during the run"));
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Cmd::Worker { spec } = &cli.cmd {
        worker::run(serde_json::from_str(spec).expect("worker spec"));
    }
    let c = cli.common.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let result = rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(c.max_secs), run(cli.cmd, c.clone())).await {
            Ok(r) => r,
            Err(_) => Err(format!("run exceeded --max-secs {}", c.max_secs)),
        }
    });
    let (value, code) = match result {
        Ok(v) => match (c.check, healthy(&v)) {
            (true, Err(e)) => {
                let mut v = v;
                v["check_failed"] = json!(e);
                (v, 2)
            }
            _ => (v, 0),
        },
        Err(e) => (json!({"label": c.label, "error": e}), 3),
    };
    let text = serde_json::to_string_pretty(&value).expect("json");
    if let Some(path) = &c.out {
        if let Err(e) = std::fs::write(path, &text) {
            eprintln!("loadgen: cannot write {path}: {e}");
        }
    }
    println!("{text}");
    if let Some(e) = value.get("check_failed").or(value.get("error")) {
        eprintln!("loadgen: {} {}: {e}", c.label, value["scenario"].as_str().unwrap_or(""));
    }
    // Workers are killed on drop (kill_on_drop) if still running.
    drop(rt);
    std::process::exit(code);
}
