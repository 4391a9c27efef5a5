//! A worker process: holds a share of the clients (a process may open at most 20,000
//! files), connects them with bounded concurrency, and obeys the parent's commands on
//! stdin, one per line: `GO` (echo clients start sending), `MARK` (the measured window
//! starts), `STOP` (stop sending, wait until quiet, print the result and exit).
//! It prints `CONNECTED <json>` once every client has connected or failed, and
//! `RESULT <json>` at the end. It exits by itself at its deadline or when stdin closes.

use crate::polling::PollClient;
use crate::procfs::self_cpu_secs;
use crate::stats::{encode, histogram, now_us, record};
use crate::ws::{io_err, is_join_ack, join_packet, number_after, payload, source_ip, tcp_connect, Frame, WsConn, JOIN_TRIES};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, watch, Semaphore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Connect, join the room if asked, count `tick`s (idle, fan-out, polling).
    Receive,
    /// Send `echo` with an ack at a steady rate after GO, measure the round trip.
    Echo,
    /// Connect with a tiny receive buffer, join the room, then never read again.
    Slow,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub role: Role,
    pub server: SocketAddr,
    pub host: String,
    pub path: String,
    pub count: usize,
    pub first_index: usize,
    pub concurrency: usize,
    pub polling: bool,
    pub join: Option<String>,
    pub echo_period_us: u64,
    pub payload: usize,
    pub deadline_s: u64,
    /// After the Engine.IO open (over polling on `server`), every request or the
    /// WebSocket upgrade goes to this address: the forwarding hop.
    pub via: Option<SocketAddr>,
    /// Receivers drop their transport every `churn_ms` on average (exponential) and
    /// reconnect with the connection state recovery handshake; 0: never.
    pub churn_ms: u64,
    /// Churn across nodes: reconnections alternate between `server` and this address.
    pub reconnect_to: Option<SocketAddr>,
    /// Rooms mode (fan-out `--rooms`): client `i` joins `r<i % rooms>` instead of `join`.
    #[serde(default)]
    pub rooms: usize,
}

/// The room client `i` of this worker joins, if any.
fn room_of(spec: &WorkerSpec, i: usize) -> Option<String> {
    if spec.rooms > 0 && spec.join.is_some() {
        return Some(format!("r{}", (spec.first_index + i) % spec.rooms));
    }
    spec.join.clone()
}

const PHASE_HOLD: u8 = 0;
const PHASE_GO: u8 = 1;
const PHASE_STOP: u8 = 2;

struct Stats {
    handshake: Histogram<u64>,
    latency: Histogram<u64>,
    rtt: Histogram<u64>,
    ok: u64,
    failed: u64,
    first_start_us: u64,
    last_done_us: u64,
    rx_measured: u64,
    rx_total: u64,
    last_rx: Instant,
    echo_sent: u64,
    echo_acked: u64,
    mark_us: u64,
    /// The measured window whose ticks count (the `m` of the payload).
    window: u64,
    closed: u64,
    slow_checked: u64,
    slow_dropped: u64,
    reconnects: u64,
    recovered: u64,
    /// Reconnections with no offset to send: the receiver got no event since it connected
    /// (the official client then sends no offset either, and no server can recover it).
    no_offset: u64,
    /// `join`s asked again because the first got no ack within a second.
    join_retries: u64,
    duplicates: u64,
    reconnect_failed: u64,
    errors: Vec<String>,
}

impl Stats {
    fn error(&mut self, e: impl std::fmt::Display) {
        if self.errors.len() < 5 {
            self.errors.push(e.to_string());
        }
    }
}

type Shared = Arc<Mutex<Stats>>;

/// Handles one Engine.IO text packet from the server.
fn on_text(t: &[u8], stats: &Shared) -> Option<&'static [u8]> {
    if t == b"2" {
        return Some(b"3");
    }
    if t.starts_with(b"42[\"tick\"") {
        let now = now_us();
        let mut s = stats.lock().unwrap();
        s.rx_total += 1;
        s.last_rx = Instant::now();
        if number_after(t, b"\"m\":") == Some(s.window) {
            s.rx_measured += 1;
            if let Some(sent) = number_after(t, b"\"t\":") {
                record(&mut s.latency, now.saturating_sub(sent));
            }
        }
    } else if t.starts_with(b"43") {
        let now = now_us();
        let mut s = stats.lock().unwrap();
        s.last_rx = Instant::now();
        if let Some(sent) = number_after(t, b"\"t\":") {
            if s.mark_us > 0 && sent >= s.mark_us {
                s.echo_acked += 1;
                record(&mut s.rtt, now.saturating_sub(sent));
            }
        }
    }
    None
}

async fn ws_client(i: usize, spec: Arc<WorkerSpec>, stats: Shared, sem: Arc<Semaphore>, done: mpsc::UnboundedSender<bool>, mut phase: watch::Receiver<u8>) {
    let permit = sem.acquire().await.expect("semaphore open");
    let start_us = now_us();
    let t0 = Instant::now();
    let rcvbuf = (spec.role == Role::Slow).then_some(4096);
    let connect = async {
        let src = source_ip(spec.first_index + i);
        if let Some(via) = spec.via {
            // Open over polling on `server`, upgrade through `via`.
            let sid = crate::polling::open_sid(spec.server, src, &spec.host, &spec.path).await?;
            let stream = tcp_connect(via, Some(src), rcvbuf).await?;
            let mut conn = WsConn::upgrade_sid(stream, &spec.host, &spec.path, Some(&sid)).await?;
            conn.probe_and_connect().await?;
            return Ok(conn);
        }
        let stream = tcp_connect(spec.server, Some(src), rcvbuf).await?;
        let mut conn = WsConn::upgrade(stream, &spec.host, &spec.path).await?;
        conn.socketio_handshake().await?;
        Ok::<_, std::io::Error>(conn)
    };
    let mut conn = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return fail(&stats, &done, e),
        Err(_) => return fail(&stats, &done, "connect timed out after 10 s"),
    };
    {
        let mut s = stats.lock().unwrap();
        record(&mut s.handshake, t0.elapsed().as_micros() as u64);
        s.ok += 1;
        s.first_start_us = s.first_start_us.min(start_us);
        s.last_done_us = s.last_done_us.max(now_us());
    }
    if let Some(room) = room_of(&spec, i) {
        match conn.join(&room).await {
            Ok(retries) => stats.lock().unwrap().join_retries += retries,
            Err(e) => return fail(&stats, &done, e),
        }
    }
    drop(permit);
    let _ = done.send(true);

    match spec.role {
        Role::Slow => {
            // Never read until STOP; then read until the server's close (it dropped us)
            // or 5 s of data keep coming (it did not).
            while *phase.borrow() != PHASE_STOP {
                if phase.changed().await.is_err() {
                    return;
                }
            }
            let mut buf = vec![0u8; 64 * 1024];
            let deadline = Instant::now() + Duration::from_secs(5);
            let dropped = loop {
                match tokio::time::timeout_at(deadline.into(), conn.stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break true,
                    Ok(Ok(_)) => continue,
                    Err(_) => break false,
                }
            };
            let mut s = stats.lock().unwrap();
            s.slow_checked += 1;
            s.slow_dropped += dropped as u64;
        }
        Role::Receive => loop {
            match conn.next().await {
                Ok(Frame::Text(t)) => {
                    if let Some(answer) = on_text(&t, &stats) {
                        if conn.send(answer).await.is_err() {
                            break closed(&stats, "write failed");
                        }
                    }
                    let _ = conn.flush().await;
                }
                Ok(Frame::Binary) => {}
                Ok(Frame::Closed) => break closed(&stats, "closed by server"),
                Err(e) => break closed(&stats, e),
            }
        },
        Role::Echo => {
            let period = Duration::from_micros(spec.echo_period_us.max(1));
            // Spread the clients' sends evenly over one period.
            let offset = Duration::from_micros((i as u64 * 7919) % spec.echo_period_us.max(1));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut id: u64 = 0;
            loop {
                let sending = *phase.borrow() == PHASE_GO;
                tokio::select! {
                    f = conn.next() => match f {
                        Ok(Frame::Text(t)) => {
                            if let Some(answer) = on_text(&t, &stats) {
                                if conn.send(answer).await.is_err() {
                                    break closed(&stats, "write failed");
                                }
                            }
                        }
                        Ok(Frame::Binary) => {}
                        Ok(Frame::Closed) => break closed(&stats, "closed by server"),
                        Err(e) => break closed(&stats, e),
                    },
                    _ = tick.tick(), if sending => {
                        let t = now_us();
                        let msg = format!("42{id}[\"echo\",{}]", payload(t, id, 1, spec.payload));
                        id += 1;
                        {
                            let mut s = stats.lock().unwrap();
                            if s.mark_us > 0 && t >= s.mark_us {
                                s.echo_sent += 1;
                            }
                        }
                        if conn.send(msg.as_bytes()).await.is_err() {
                            break closed(&stats, "write failed");
                        }
                    },
                    r = phase.changed() => if r.is_err() { return },
                }
            }
        }
    }
}

async fn polling_client(i: usize, spec: Arc<WorkerSpec>, stats: Shared, sem: Arc<Semaphore>, done: mpsc::UnboundedSender<bool>, phase: watch::Receiver<u8>) {
    let permit = sem.acquire().await.expect("semaphore open");
    let start_us = now_us();
    let t0 = Instant::now();
    let connect = PollClient::connect(spec.server, spec.via, source_ip(spec.first_index + i), &spec.host, &spec.path);
    let mut c = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return fail(&stats, &done, e),
        Err(_) => return fail(&stats, &done, "connect timed out after 10 s"),
    };
    {
        let mut s = stats.lock().unwrap();
        record(&mut s.handshake, t0.elapsed().as_micros() as u64);
        s.ok += 1;
        s.first_start_us = s.first_start_us.min(start_us);
        s.last_done_us = s.last_done_us.max(now_us());
    }
    if let Some(room) = room_of(&spec, i) {
        match polling_join(&mut c, &room).await {
            Ok(retries) => stats.lock().unwrap().join_retries += retries,
            Err(e) => return fail(&stats, &done, e),
        }
    }
    drop(permit);
    let _ = done.send(true);
    if spec.role == Role::Echo {
        return polling_echo(i, spec, stats, c, phase).await;
    }
    loop {
        let body = match c.poll().await {
            Ok(b) => b,
            Err(e) => return closed(&stats, e),
        };
        for p in body.split(|&b| b == 0x1e) {
            if p == b"1" {
                return closed(&stats, "closed by server");
            }
            if let Some(answer) = on_text(p, &stats) {
                if let Err(e) = c.post(Bytes::from_static(answer)).await {
                    return closed(&stats, e);
                }
            }
        }
    }
}

/// `join(room)` with an ack over polling (see `WsConn::join`): the answer comes in a
/// long-poll GET, or the server's next ping does and the join is asked again.
async fn polling_join(c: &mut PollClient, room: &str) -> std::io::Result<u64> {
    for attempt in 0..JOIN_TRIES {
        c.post(Bytes::from(join_packet(room, attempt))).await?;
        let body = c.poll().await?;
        let mut acked = false;
        for p in body.split(|&b| b == 0x1e) {
            if is_join_ack(p) {
                acked = true;
            } else if p == b"2" {
                c.post(Bytes::from_static(b"3")).await?;
            } else if p == b"1" {
                return Err(io_err("closed while joining"));
            }
        }
        if acked {
            return Ok(attempt);
        }
    }
    Err(io_err(format!("join not acknowledged after {JOIN_TRIES} tries")))
}

fn fail(stats: &Shared, done: &mpsc::UnboundedSender<bool>, e: impl std::fmt::Display) {
    let mut s = stats.lock().unwrap();
    s.failed += 1;
    s.error(format!("connect: {e}"));
    let _ = done.send(false);
}

fn closed(stats: &Shared, e: impl std::fmt::Display) {
    let mut s = stats.lock().unwrap();
    s.closed += 1;
    s.error(format!("after connect: {e}"));
}

pub fn run(spec: WorkerSpec) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let deadline = spec.deadline_s;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(deadline)).await;
            eprintln!("worker: deadline of {deadline} s reached, exiting");
            std::process::exit(4);
        });
        let spec = Arc::new(spec);
        let stats: Shared = Arc::new(Mutex::new(Stats {
            handshake: histogram(),
            latency: histogram(),
            rtt: histogram(),
            ok: 0,
            failed: 0,
            first_start_us: u64::MAX,
            last_done_us: 0,
            rx_measured: 0,
            rx_total: 0,
            last_rx: Instant::now(),
            echo_sent: 0,
            echo_acked: 0,
            mark_us: 0,
            window: 1,
            closed: 0,
            slow_checked: 0,
            slow_dropped: 0,
            reconnects: 0,
            recovered: 0,
            no_offset: 0,
            join_retries: 0,
            duplicates: 0,
            reconnect_failed: 0,
            errors: Vec::new(),
        }));
        let sem = Arc::new(Semaphore::new(spec.concurrency.max(1)));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let (phase_tx, phase_rx) = watch::channel(PHASE_HOLD);
        for i in 0..spec.count {
            let (spec, stats, sem, done) = (spec.clone(), stats.clone(), sem.clone(), done_tx.clone());
            if spec.polling {
                tokio::spawn(polling_client(i, spec, stats, sem, done, phase_rx.clone()));
            } else if spec.churn_ms > 0 && spec.role == Role::Receive {
                tokio::spawn(churn_client(i, spec, stats, sem, done, phase_rx.clone()));
            } else {
                tokio::spawn(ws_client(i, spec, stats, sem, done, phase_rx.clone()));
            }
        }
        for _ in 0..spec.count {
            done_rx.recv().await;
        }
        {
            let s = stats.lock().unwrap();
            let msg = json!({
                "ok": s.ok, "failed": s.failed, "first_start_us": s.first_start_us, "last_done_us": s.last_done_us,
                "handshake": encode(&s.handshake), "errors": s.errors, "join_retries": s.join_retries,
            });
            println!("CONNECTED {msg}");
        }
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut cpu_mark = self_cpu_secs();
        while let Ok(Some(line)) = lines.next_line().await {
            match line.trim() {
                "GO" => {
                    let _ = phase_tx.send(PHASE_GO);
                }
                "MARK" => {
                    cpu_mark = self_cpu_secs();
                    let mut s = stats.lock().unwrap();
                    s.mark_us = now_us();
                }
                // Saturation runs: `STEP n` starts counting the ticks of window n afresh;
                // `REPORT` waits until quiet and prints the window's RESULT, and goes on.
                cmd if cmd.starts_with("STEP ") => {
                    cpu_mark = self_cpu_secs();
                    let mut s = stats.lock().unwrap();
                    s.window = cmd[5..].trim().parse().unwrap_or(0);
                    s.rx_measured = 0;
                    s.rx_total = 0;
                    s.latency.reset();
                    s.errors.clear();
                }
                "REPORT" => {
                    drain(&spec, &stats).await;
                    let s = stats.lock().unwrap();
                    let msg = json!({
                        "ok": s.ok, "failed": s.failed, "closed": s.closed,
                        "rx_measured": s.rx_measured, "rx_total": s.rx_total, "latency": encode(&s.latency),
                        "cpu_s": self_cpu_secs() - cpu_mark, "errors": s.errors,
                    });
                    println!("RESULT {msg}");
                }
                "STOP" => {
                    let _ = phase_tx.send(PHASE_STOP);
                    drain(&spec, &stats).await;
                    let s = stats.lock().unwrap();
                    let msg = json!({
                        "ok": s.ok, "failed": s.failed, "closed": s.closed,
                        "rx_measured": s.rx_measured, "rx_total": s.rx_total, "latency": encode(&s.latency),
                        "echo_sent": s.echo_sent, "echo_acked": s.echo_acked, "rtt": encode(&s.rtt),
                        "slow_checked": s.slow_checked, "slow_dropped": s.slow_dropped,
                        "reconnects": s.reconnects, "recovered": s.recovered, "no_offset": s.no_offset, "join_retries": s.join_retries, "duplicates": s.duplicates,
                        "reconnect_failed": s.reconnect_failed,
                        "cpu_s": self_cpu_secs() - cpu_mark, "errors": s.errors,
                    });
                    println!("RESULT {msg}");
                    std::process::exit(0);
                }
                other => eprintln!("worker: unknown command {other:?}"),
            }
        }
        std::process::exit(0);
    })
}

/// After STOP: wait until nothing has arrived for a second (what was sent has been
/// delivered or is lost), at most 15 s; slow clients: until each has been checked.
async fn drain(spec: &WorkerSpec, stats: &Shared) {
    let stop = Instant::now();
    let quiet = Duration::from_millis(1000);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = stats.lock().unwrap();
        let waited = stop.elapsed();
        let done = match spec.role {
            Role::Slow => s.slow_checked >= s.ok || waited > Duration::from_secs(8),
            Role::Echo => (s.echo_acked >= s.echo_sent && waited > Duration::from_millis(200)) || s.last_rx.max(stop).elapsed() >= quiet,
            Role::Receive => s.last_rx.max(stop).elapsed() >= quiet,
        };
        if done || waited > Duration::from_secs(15) {
            return;
        }
    }
}


/// An echo client over polling: a task keeps one GET pending (acks and pings come back on
/// it), this one POSTs `echo` at a steady rate after GO, and the pongs.
async fn polling_echo(i: usize, spec: Arc<WorkerSpec>, stats: Shared, c: PollClient, mut phase: watch::Receiver<u8>) {
    let (mut getter, mut poster) = c.split();
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<&'static [u8]>();
    let stats2 = stats.clone();
    let reader = tokio::spawn(async move {
        loop {
            let body = match getter.poll().await {
                Ok(b) => b,
                Err(e) => return closed(&stats2, e),
            };
            for p in body.split(|&b| b == 0x1e) {
                if p == b"1" {
                    return closed(&stats2, "closed by server");
                }
                if let Some(answer) = on_text(p, &stats2) {
                    let _ = answers_tx.send(answer);
                }
            }
        }
    });
    let period = Duration::from_micros(spec.echo_period_us.max(1));
    let offset = Duration::from_micros((i as u64 * 7919) % spec.echo_period_us.max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut id: u64 = 0;
    loop {
        let sending = *phase.borrow() == PHASE_GO;
        tokio::select! {
            a = answers.recv() => match a {
                Some(a) => if let Err(e) = poster.post(Bytes::from_static(a)).await { closed(&stats, e); break },
                None => break,
            },
            _ = tick.tick(), if sending => {
                let t = now_us();
                let msg = format!("42{id}[\"echo\",{}]", payload(t, id, 1, spec.payload));
                id += 1;
                {
                    let mut s = stats.lock().unwrap();
                    if s.mark_us > 0 && t >= s.mark_us {
                        s.echo_sent += 1;
                    }
                }
                if let Err(e) = poster.post(Bytes::from(msg)).await {
                    closed(&stats, e);
                    break;
                }
            },
            r = phase.changed() => if r.is_err() { break },
        }
    }
    reader.abort();
}

/// The string value of `"key":"..."` in a JSON text.
fn string_after<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &text[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The recovery offset a server appends to a stored event: its last argument, a string.
fn last_string_arg(t: &[u8]) -> Option<&str> {
    let t = t.strip_suffix(b"\"]")?;
    let close = t.iter().rposition(|&b| b == b'}')?;
    let rest = t[close + 1..].strip_prefix(b",\"")?;
    std::str::from_utf8(rest).ok()
}

/// Tiny xorshift for the churn timings (no dependency).
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A receiver under churn: drops its TCP connection (no close frame, no Socket.IO
/// disconnect) after an exponentially distributed time of mean `churn_ms`, waits 100-500 ms,
/// and reconnects as the official client does with recovery: CONNECT auth `{pid, offset}`
/// (pid from the last CONNECT answer, offset = last string argument of the last `tick`).
/// Not recovered (another pid, or none): joins the room again. Each measured event id
/// counts once (duplicates are counted apart). Churn stops at STOP.
async fn churn_client(i: usize, spec: Arc<WorkerSpec>, stats: Shared, sem: Arc<Semaphore>, done: mpsc::UnboundedSender<bool>, phase: watch::Receiver<u8>) {
    let src = source_ip(spec.first_index + i);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((spec.first_index + i) as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut pid: Option<String> = None;
    let mut offset: Option<String> = None;
    let mut seen = std::collections::HashSet::<u64>::new();
    let mut first = true;
    let mut failures = 0;
    let mut attempt: u64 = 0;
    // Counts one `tick`; remembers its offset.
    let on_tick = |t: &[u8], seen: &mut std::collections::HashSet<u64>, offset: &mut Option<String>| {
        if let Some(o) = last_string_arg(t) {
            *offset = Some(o.to_owned());
        }
        let now = now_us();
        let mut s = stats.lock().unwrap();
        s.rx_total += 1;
        s.last_rx = Instant::now();
        if number_after(t, b"\"m\":") == Some(1) {
            if let Some(seq) = number_after(t, b"\"s\":") {
                if seen.insert(seq) {
                    s.rx_measured += 1;
                    if let Some(sent) = number_after(t, b"\"t\":") {
                        record(&mut s.latency, now.saturating_sub(sent));
                    }
                } else {
                    s.duplicates += 1;
                }
            }
        }
    };
    loop {
        let permit = if first { Some(sem.acquire().await.expect("semaphore open")) } else { None };
        let start_us = now_us();
        let t0 = Instant::now();
        let sent_no_offset = !first && offset.is_none();
        let auth = match (&pid, &offset) {
            (Some(p), Some(o)) => format!("40{{\"pid\":\"{p}\",\"offset\":\"{o}\"}}"),
            _ => "40".to_owned(),
        };
        // Connect (to the other node every second time with --reconnect-to); ticks
        // replayed before the CONNECT answer count.
        let server = match spec.reconnect_to {
            Some(alt) if attempt % 2 == 1 => alt,
            _ => spec.server,
        };
        attempt += 1;
        let connect = async {
            let stream = tcp_connect(server, Some(src), None).await?;
            let mut conn = WsConn::upgrade(stream, &spec.host, &spec.path).await?;
            match conn.next().await? {
                Frame::Text(t) if t.first() == Some(&b'0') => {}
                _ => return Err(crate::ws::io_err("no Engine.IO open packet")),
            }
            conn.send(auth.as_bytes()).await?;
            loop {
                match conn.next().await? {
                    Frame::Text(t) if t.starts_with(b"40") => return Ok((conn, string_after(&t, b"\"pid\":\"").map(str::to_owned))),
                    Frame::Text(t) if t.starts_with(b"44") => return Err(crate::ws::io_err("connect_error")),
                    Frame::Text(t) if t.as_ref() == b"2" => conn.send(b"3").await?,
                    Frame::Text(t) if t.starts_with(b"42[\"tick\"") => on_tick(&t, &mut seen, &mut offset),
                    Frame::Text(_) | Frame::Binary => {}
                    Frame::Closed => return Err(crate::ws::io_err("closed during Socket.IO connect")),
                }
            }
        };
        let (mut conn, new_pid) = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) if first => return fail(&stats, &done, e),
            Err(_) if first => return fail(&stats, &done, "connect timed out after 10 s"),
            Ok(Err(e)) => {
                {
                    let mut s = stats.lock().unwrap();
                    s.reconnect_failed += 1;
                    s.error(format!("reconnect: {e}"));
                }
                failures += 1;
                if failures > 20 { return; }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(_) => {
                stats.lock().unwrap().reconnect_failed += 1;
                failures += 1;
                if failures > 20 { return; }
                continue;
            }
        };
        let recovered = !first && pid.is_some() && new_pid == pid;
        {
            let mut s = stats.lock().unwrap();
            if first {
                record(&mut s.handshake, t0.elapsed().as_micros() as u64);
                s.ok += 1;
                s.first_start_us = s.first_start_us.min(start_us);
                s.last_done_us = s.last_done_us.max(now_us());
            } else {
                s.reconnects += 1;
                s.recovered += recovered as u64;
                s.no_offset += sent_no_offset as u64;
            }
        }
        if !recovered {
            offset = None;
        }
        pid = new_pid;
        if !recovered {
            if let Some(room) = &spec.join {
                if let Err(e) = conn.send(format!("42[\"join\",\"{room}\"]").as_bytes()).await {
                    if first { return fail(&stats, &done, e); }
                    continue;
                }
            }
        }
        if first {
            drop(permit);
            let _ = done.send(true);
            first = false;
        }
        // Hold the connection until the drop time (no drops once STOP came).
        let hold = Duration::from_secs_f64(-(1.0 - rng.unit()).ln() * spec.churn_ms as f64 / 1000.0);
        let drop_at = tokio::time::Instant::now() + hold;
        let mut ph = phase.clone();
        loop {
            let stopping = *ph.borrow() == PHASE_STOP;
            tokio::select! {
                f = conn.next() => match f {
                    Ok(Frame::Text(t)) => {
                        if t.as_ref() == b"2" {
                            if conn.send(b"3").await.is_err() { break; }
                        } else if t.starts_with(b"42[\"tick\"") {
                            on_tick(&t, &mut seen, &mut offset);
                        }
                    }
                    Ok(Frame::Binary) => {}
                    Ok(Frame::Closed) => { closed(&stats, "closed by server"); break }
                    Err(e) => { closed(&stats, e); break }
                },
                _ = tokio::time::sleep_until(drop_at), if !stopping => break,
                r = ph.changed() => if r.is_err() { return },
            }
        }
        // The drop: the TCP connection closes with nothing said.
        drop(conn);
        if *phase.borrow() == PHASE_STOP {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100 + (rng.unit() * 400.0) as u64)).await;
    }
}
