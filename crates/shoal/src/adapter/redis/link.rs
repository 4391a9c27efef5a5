//! A node's link to Redis: one publishing connection (with its own reconnection) fed by
//! a bounded queue, and one subscribing connection shared by every namespace, which
//! reconnects with backoff and resubscribes. While Redis is away, publishes wait in the
//! queue and go out, in order, when it is back; only a full queue drops (and counts)
//! messages. Local delivery goes on, and the outage is logged once, not per message.
//!
//! The same link speaks to a Redis Cluster (`redis+cluster://h1:p1,h2:p2`): commands
//! are routed to the primary of their key's slot, and subscriptions (classic and
//! sharded) go over RESP3 push messages (`cluster_link.rs`), watched for a failover.
//!
//! And to a primary that Redis Sentinel watches (`redis+sentinel://s1,s2/<master>`):
//! commands and the subscription follow the primary the sentinels name, across a
//! failover (`sentinel_link.rs`).

use super::sentinel_link::{primary_lost, Sentinel};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Receives the messages of the channels it subscribed to.
pub trait Subscriber: Send + Sync + 'static {
    /// A message arrived on `channel`.
    fn on_message(&self, channel: &str, payload: &[u8]);
    /// The subscription is back after an outage that began at `lost_at`: messages
    /// published meanwhile were not received.
    fn on_resubscribed(&self, _lost_at: std::time::SystemTime) {}
}

/// Counters of the link's health, for logs and metrics.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Messages published.
    pub published: AtomicU64,
    /// Publishes lost because the queue was full (a long outage) or Redis refused them.
    pub dropped: AtomicU64,
    /// Times the subscription connection was lost.
    pub outages: AtomicU64,
}

/// What the publishing task works through, in order.
pub(super) enum Queued {
    Cmd(redis::Cmd),
    /// Answered once everything queued before it was sent.
    Flush(tokio::sync::oneshot::Sender<()>),
}

pub(super) enum Command {
    Subscribe(Vec<String>),
    PSubscribe(String),
    /// Sharded channels (SSUBSCRIBE): Redis Cluster only.
    SSubscribe(Vec<String>),
    SUnsubscribe(Vec<String>),
}

pub(super) struct Routes {
    /// Exact channels (requests, responses) → subscriber.
    pub(super) channels: HashMap<String, Weak<dyn Subscriber>>,
    /// Patterns (`socket.io#/nsp#*`) → subscriber.
    pub(super) patterns: HashMap<String, Weak<dyn Subscriber>>,
    /// Sharded channels → subscriber.
    pub(super) sharded: HashMap<String, Weak<dyn Subscriber>>,
}

impl Routes {
    /// Every subscriber still alive, each once.
    pub(super) fn subscribers(&self) -> Vec<Arc<dyn Subscriber>> {
        let mut out: Vec<Arc<dyn Subscriber>> = Vec::new();
        for weak in self.patterns.values().chain(self.channels.values()).chain(self.sharded.values()) {
            if let Some(s) = weak.upgrade() {
                if !out.iter().any(|o| Arc::ptr_eq(o, &s)) {
                    out.push(s);
                }
            }
        }
        out
    }
}

/// The connection commands go over: one Redis, a Redis Cluster (whose connection
/// is replaced after a failover, hence the lock; each command takes a clone), or the
/// primary that Redis Sentinel names (replaced when it moves).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<Mutex<redis::cluster_async::ClusterConnection>>),
    Sentinel(Arc<Sentinel>),
}

/// What goes to Redis in one round trip: a command, or the publisher's batch of them.
#[derive(Clone, Copy)]
pub(super) enum Request<'a> {
    One(&'a redis::Cmd),
    Batch(&'a redis::Pipeline),
}

impl Request<'_> {
    async fn on<C: redis::aio::ConnectionLike + Send>(self, conn: &mut C) -> redis::RedisResult<redis::Value> {
        match self {
            Request::One(cmd) => cmd.query_async(conn).await,
            Request::Batch(pipe) => pipe.query_async(conn).await,
        }
    }
}

impl Conn {
    pub(super) async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let value = self.send(Request::One(cmd)).await?;
        Ok(T::from_redis_value(value)?)
    }

    /// Whether several publishes may go in one pipeline: on one connection, yes (Redis
    /// runs them in order); a Redis Cluster routes each command by its own channel.
    fn batches(&self) -> bool {
        !matches!(self, Conn::Cluster(_))
    }

    async fn send(&self, request: Request<'_>) -> redis::RedisResult<redis::Value> {
        match self {
            Conn::Single(manager) => request.on(&mut manager.clone()).await,
            Conn::Cluster(shared) => {
                let mut conn = shared.lock().unwrap().clone();
                request.on(&mut conn).await
            }
            Conn::Sentinel(sentinel) => {
                let (mut manager, generation) = sentinel.manager();
                // A command stuck on an old primary (unreachable, the manager reconnecting)
                // is abandoned when the primary moves, so the caller retries on the new one.
                let result = tokio::select! {
                    result = request.on(&mut manager) => result,
                    _ = sentinel.moved_from(generation) => Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the Redis primary moved during the command",
                    ))),
                };
                if let Err(e) = &result {
                    if primary_lost(e) {
                        sentinel.recheck(generation).await;
                    }
                }
                result
            }
        }
    }

    /// Which primary commands go to now (changes only with Sentinel).
    fn generation(&self) -> u64 {
        match self {
            Conn::Sentinel(sentinel) => sentinel.manager().1,
            _ => 0,
        }
    }

    /// Resolves when commands go to another primary than that of `generation`; never
    /// without Sentinel.
    async fn moved_from(&self, generation: u64) {
        match self {
            Conn::Sentinel(sentinel) => sentinel.moved_from(generation).await,
            _ => std::future::pending().await,
        }
    }

    /// True when a failure of `e`'s kind is worth retrying: the connection failed, or
    /// (with Sentinel) the primary was demoted and a new one is being found.
    fn retryable(&self, e: &redis::RedisError) -> bool {
        match self {
            Conn::Sentinel(_) => primary_lost(e),
            _ => e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout(),
        }
    }
}

/// Where the subscription connects: one fixed Redis, or wherever the sentinels say the
/// primary is now.
pub(super) enum PubSubSource {
    Fixed(redis::Client),
    Sentinel(Arc<Sentinel>),
}

impl PubSubSource {
    /// A client for the current primary, and its generation.
    fn client(&self) -> redis::RedisResult<(redis::Client, u64)> {
        match self {
            PubSubSource::Fixed(client) => Ok((client.clone(), 0)),
            PubSubSource::Sentinel(sentinel) => {
                let (url, generation) = sentinel.primary_url();
                Ok((redis::Client::open(url)?, generation))
            }
        }
    }

    /// The subscription to the primary of `generation` failed: maybe it moved.
    async fn failed(&self, generation: u64) {
        if let PubSubSource::Sentinel(sentinel) = self {
            sentinel.recheck(generation).await;
        }
    }

    async fn moved_from(&self, generation: u64) {
        match self {
            PubSubSource::Sentinel(sentinel) => sentinel.moved_from(generation).await,
            PubSubSource::Fixed(_) => std::future::pending().await,
        }
    }

    /// Waits `backoff`, or less if the primary moves meanwhile.
    async fn pause(&self, backoff: Duration, generation: u64) {
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = self.moved_from(generation) => {}
        }
    }
}

/// The connections of one process to Redis, shared by its namespaces: commands and
/// publishes (queued, so an outage never blocks a broadcast), and one subscription.
pub struct RedisLink {
    url: String,
    manager: Conn,
    publish_tx: mpsc::Sender<Queued>,
    commands: mpsc::UnboundedSender<Command>,
    routes: Arc<Mutex<Routes>>,
    subscribed: Arc<AtomicBool>,
    /// Its health counters.
    pub stats: Arc<LinkStats>,
    cluster: bool,
}

impl Default for Routes {
    fn default() -> Self {
        Routes { channels: HashMap::new(), patterns: HashMap::new(), sharded: HashMap::new() }
    }
}

/// The count in a `PUBSUB NUMSUB`/`SHARDNUMSUB` reply for one channel: a flat array
/// `[channel, n]` (RESP2), a map (RESP3), or the sum the cluster client made of them.
fn count_in_numsub(reply: &redis::Value) -> usize {
    use redis::Value as V;
    let number = |v: &V| match v {
        V::Int(n) => (*n).max(0) as usize,
        V::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        _ => 0,
    };
    match reply {
        V::Array(items) => items.chunks(2).filter_map(|pair| pair.get(1)).map(number).sum(),
        V::Map(pairs) => pairs.iter().map(|(_, v)| number(v)).sum(),
        _ => 0,
    }
}

const MASK: &str = "********";

/// A Redis URL fit for logs and error messages: `redis://user:secret@host` →
/// `redis://user:********@host`; a password among the parameters
/// (`redis+sentinel://.../m?sentinel_password=secret`) is masked too.
///
/// ```
/// use shoal::adapter::redis::masked_url;
/// assert_eq!(masked_url("redis://app:s3cret@10.0.0.5:6379/0"), "redis://app:********@10.0.0.5:6379/0");
/// ```
pub fn masked_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let query = query.map(|q| {
        let pairs = q.split('&').map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.contains("password") => format!("{key}={MASK}"),
            _ => pair.to_owned(),
        });
        format!("?{}", pairs.collect::<Vec<_>>().join("&"))
    });
    let query = query.unwrap_or_default();
    let Some((scheme, rest)) = base.split_once("://") else { return format!("{base}{query}") };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return format!("{base}{query}"),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{MASK}@{host}{query}"),
        None => format!("{scheme}://{MASK}@{host}{query}"),
    }
}

/// Messages that may wait to be published before new ones are dropped.
const PUBLISH_QUEUE: usize = 65_536;
/// How long the publisher waits, after the primary moved, before it sends what queued.
const SWITCH_GRACE: Duration = Duration::from_millis(300);

impl RedisLink {
    /// Connects to Redis at `url` (`redis://host:port/db`). Fails at once if Redis cannot
    /// be reached, so a misconfigured node does not start.
    ///
    /// `redis+cluster://host1:port1,host2:port2` (or `rediss+cluster://`) names seed
    /// nodes of a Redis Cluster; any one reachable node is enough to start.
    ///
    /// `redis+sentinel://[user:pass@]s1:26379,s2:26379/<master-name>[/<db>]` (or
    /// `rediss+sentinel://`) names the sentinels that watch a primary: the link asks
    /// them where the primary is, and follows it to a promoted replica after a
    /// failover. The userinfo is the data nodes' password; sentinels with a password of
    /// their own take `?sentinel_password=...` (and `sentinel_username=...`).
    pub async fn connect(url: &str) -> Result<Arc<RedisLink>, String> {
        if let Some(seeds) = super::cluster_link::cluster_seeds(url)? {
            return super::cluster_link::connect(url, seeds).await;
        }
        if let Some(target) = super::sentinel_link::sentinel_target(url)? {
            let label = target.label();
            let sentinel = Sentinel::connect(target).await?;
            tracing::info!(sentinels = %label, primary = %sentinel.address(), "connected to Redis through Sentinel");
            return Ok(Self::start(url, Conn::Sentinel(sentinel.clone()), PubSubSource::Sentinel(sentinel), label));
        }
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL {:?}: {e}", masked_url(url)))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        let manager = tokio::time::timeout(Duration::from_secs(5), client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| format!("cannot connect to Redis at {}: timed out", masked_url(url)))?
            .map_err(|e| format!("cannot connect to Redis at {}: {e}", masked_url(url)))?;
        Ok(Self::start(url, Conn::Single(manager), PubSubSource::Fixed(client), url.to_owned()))
    }

    /// Checks the form of a Redis URL (plain, `redis+cluster://`, `redis+sentinel://`)
    /// without connecting: what `shoal config check` runs.
    pub fn check_url(url: &str) -> Result<(), String> {
        if let Some(seeds) = super::cluster_link::cluster_seeds(url)? {
            return seeds.iter().try_for_each(|seed| redis::Client::open(seed.as_str()).map(|_| ()).map_err(|e| format!("invalid Redis Cluster URL: {e}")));
        }
        if let Some(target) = super::sentinel_link::sentinel_target(url)? {
            return target.check();
        }
        redis::Client::open(url).map(|_| ()).map_err(|e| format!("invalid Redis URL: {e}"))
    }

    /// The link over a connected primary: its publisher and subscriber started.
    fn start(url: &str, manager: Conn, source: PubSubSource, label: String) -> Arc<RedisLink> {
        let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(LinkStats::default());
        let routes = Arc::new(Mutex::new(Routes::default()));
        let subscribed = Arc::new(AtomicBool::new(false));
        tokio::spawn(publisher(manager.clone(), publish_rx, stats.clone()));
        // The label goes into logs: no password in it.
        tokio::spawn(subscriber(source, command_rx, routes.clone(), subscribed.clone(), stats.clone(), masked_url(&label)));
        Arc::new(RedisLink { url: url.to_owned(), manager, publish_tx, commands, routes, subscribed, stats, cluster: false })
    }

    /// A link over an already connected backend (used by the cluster connector).
    pub(super) fn from_parts(
        url: String,
        manager: Conn,
        publish_tx: mpsc::Sender<Queued>,
        commands: mpsc::UnboundedSender<Command>,
        routes: Arc<Mutex<Routes>>,
        subscribed: Arc<AtomicBool>,
        stats: Arc<LinkStats>,
    ) -> Arc<RedisLink> {
        Arc::new(RedisLink { url, manager, publish_tx, commands, routes, subscribed, stats, cluster: true })
    }

    /// True when the link speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Queues a sharded publish (`SPUBLISH`, Redis Cluster); never waits.
    pub fn spublish(&self, channel: String, payload: Vec<u8>) -> bool {
        let mut cmd = redis::cmd("SPUBLISH");
        cmd.arg(channel).arg(payload);
        self.send(cmd)
    }

    /// Subscribes `subscriber` to sharded channels (`SSUBSCRIBE`).
    pub fn ssubscribe(&self, subscriber: Weak<dyn Subscriber>, channels: Vec<String>) {
        if channels.is_empty() {
            return;
        }
        {
            let mut routes = self.routes.lock().unwrap();
            for channel in &channels {
                routes.sharded.insert(channel.clone(), subscriber.clone());
            }
        }
        // One command per channel: the channels of one SSUBSCRIBE must share a slot.
        for channel in channels {
            let _ = self.commands.send(Command::SSubscribe(vec![channel]));
        }
    }

    /// Unsubscribes sharded channels (`SUNSUBSCRIBE`).
    pub fn sunsubscribe(&self, channels: Vec<String>) {
        if channels.is_empty() {
            return;
        }
        {
            let mut routes = self.routes.lock().unwrap();
            for channel in &channels {
                routes.sharded.remove(channel);
            }
        }
        for channel in channels {
            let _ = self.commands.send(Command::SUnsubscribe(vec![channel]));
        }
    }

    /// `PUBSUB SHARDNUMSUB channel`, summed over the cluster's nodes.
    pub async fn shard_numsub(&self, channel: &str) -> Result<usize, String> {
        let reply: redis::Value = self.query(redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel), "PUBSUB SHARDNUMSUB").await?;
        Ok(count_in_numsub(&reply))
    }

    /// The Redis URL it connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True while the subscription connection is up.
    pub fn is_up(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    /// Queues a publish; never waits. Returns false if it had to be dropped.
    pub fn publish(&self, channel: String, payload: Vec<u8>) -> bool {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.send(cmd)
    }

    /// Queues any command whose answer nobody waits for (SET, XADD, ...), in order with
    /// the publishes. Never waits; returns false if it had to be dropped.
    pub fn send(&self, cmd: redis::Cmd) -> bool {
        match self.publish_tx.try_send(Queued::Cmd(cmd)) {
            Ok(()) => true,
            Err(_) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped % 10_000 == 1 {
                    tracing::warn!(dropped, "Redis publish queue full (Redis away too long), dropping cluster messages");
                }
                false
            }
        }
    }

    /// Subscribes `subscriber` to exact channels and to a pattern.
    pub fn subscribe(&self, subscriber: Weak<dyn Subscriber>, channels: Vec<String>, pattern: String) {
        {
            let mut routes = self.routes.lock().unwrap();
            for channel in &channels {
                routes.channels.insert(channel.clone(), subscriber.clone());
            }
            routes.patterns.insert(pattern.clone(), subscriber);
        }
        let _ = self.commands.send(Command::Subscribe(channels));
        let _ = self.commands.send(Command::PSubscribe(pattern));
    }

    /// Waits (at most `timeout`) until every command queued so far was sent, e.g. the
    /// session records written while a node shuts down.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.publish_tx.send(Queued::Flush(tx)).await.is_err() {
            return false;
        }
        tokio::time::timeout(timeout, rx).await.is_ok()
    }

    /// Runs a command and waits for its answer. A command that meets a connection the
    /// server closed (Redis restarted) is tried once more on a fresh one.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, what: &str) -> Result<T, String> {
        match self.manager.run(cmd).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.manager.run(cmd).await.map_err(|e| format!("{what} failed: {e}"))
            }
            Err(e) => Err(format!("{what} failed: {e}")),
        }
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.query(redis::cmd("GET").arg(key), "GET").await
    }

    /// `XREVRANGE stream end - COUNT n`: entries newest first, each as (id, fields).
    pub async fn xrevrange(&self, stream: &str, end: &str, count: usize) -> Result<Vec<(String, HashMap<String, Vec<u8>>)>, String> {
        self.query(redis::cmd("XREVRANGE").arg(stream).arg(end).arg("-").arg("COUNT").arg(count), "XREVRANGE").await
    }

    /// `XRANGE stream start + COUNT n`: entries oldest first, each as (id, fields).
    pub async fn xrange(&self, stream: &str, start: &str, count: usize) -> Result<Vec<(String, HashMap<String, Vec<u8>>)>, String> {
        self.query(redis::cmd("XRANGE").arg(stream).arg(start).arg("+").arg("COUNT").arg(count), "XRANGE").await
    }

    /// `PUBSUB NUMSUB channel`: how many nodes listen on a request channel.
    pub async fn numsub(&self, channel: &str) -> Result<usize, String> {
        let reply: redis::Value = self.query(redis::cmd("PUBSUB").arg("NUMSUB").arg(channel), "PUBSUB NUMSUB").await?;
        Ok(count_in_numsub(&reply))
    }
}

/// Publishes taken from the queue at once and sent in one pipeline (one round trip), so
/// the rate a node can publish at is not one per round trip to Redis.
const PUBLISH_BATCH: usize = 256;

pub(super) async fn publisher(conn: Conn, mut rx: mpsc::Receiver<Queued>, stats: Arc<LinkStats>) {
    let mut failing = false;
    let mut cmds: Vec<redis::Cmd> = Vec::with_capacity(PUBLISH_BATCH);
    while let Some(item) = rx.recv().await {
        let mut next = Some(item);
        // What queued meanwhile goes with it, in order; a flush marker answers once
        // everything before it was sent.
        while let Some(item) = next.take() {
            match item {
                Queued::Cmd(cmd) => cmds.push(cmd),
                Queued::Flush(done) => {
                    send_publishes(&conn, &mut cmds, &stats, &mut failing).await;
                    let _ = done.send(());
                }
            }
            if cmds.len() < PUBLISH_BATCH {
                next = rx.try_recv().ok();
            }
        }
        send_publishes(&conn, &mut cmds, &stats, &mut failing).await;
    }
}

/// Sends `cmds` (emptied), one pipeline where the connection allows it.
async fn send_publishes(conn: &Conn, cmds: &mut Vec<redis::Cmd>, stats: &LinkStats, failing: &mut bool) {
    if cmds.len() > 1 && conn.batches() {
        let mut pipe = redis::pipe();
        for cmd in cmds.iter() {
            pipe.add_command(cmd.clone());
        }
        send_retrying(conn, Request::Batch(&pipe), cmds.len() as u64, stats, failing).await;
    } else if cmds.len() > 1 {
        // A Redis Cluster pipeline must stay in one slot, and these go to many: they are
        // sent together instead (submitted in order, so each primary's connection gets
        // them in order), and any that failed go again one by one, in order.
        let sent = futures_util::future::join_all(cmds.iter().map(|cmd| conn.send(Request::One(cmd)))).await;
        let mut published = 0;
        for (cmd, result) in cmds.iter().zip(sent) {
            match result {
                Ok(_) => published += 1,
                Err(_) => send_retrying(conn, Request::One(cmd), 1, stats, failing).await,
            }
        }
        stats.published.fetch_add(published, Ordering::Relaxed);
    } else if let Some(cmd) = cmds.first() {
        send_retrying(conn, Request::One(cmd), 1, stats, failing).await;
    }
    cmds.clear();
}

/// Sends one request of `count` publishes. While Redis is unreachable it is retried, and
/// everything behind it waits in the bounded queue: nothing is lost or reordered unless
/// the queue fills. (A batch whose answer was lost with the connection is sent again
/// whole, as a single command would be: its subscribers may then get some twice.)
async fn send_retrying(conn: &Conn, request: Request<'_>, count: u64, stats: &LinkStats, failing: &mut bool) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let generation = conn.generation();
        match conn.send(request).await {
            Ok(_) => {
                stats.published.fetch_add(count, Ordering::Relaxed);
                if *failing {
                    tracing::info!("Redis reachable again: sending what queued meanwhile");
                    *failing = false;
                }
                return;
            }
            Err(e) if conn.retryable(&e) => {
                if !*failing {
                    tracing::error!(error = %e, "Redis unreachable: cluster messages queue until it is back (local delivery continues)");
                    *failing = true;
                }
                // A new primary (Sentinel) ends the wait; what queued meanwhile goes out
                // after a short grace, so that the other nodes, told of the switch at the
                // same moment, have subscribed there first (Pub/Sub keeps nothing).
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = conn.moved_from(generation) => tokio::time::sleep(SWITCH_GRACE).await,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                // Redis runs every command of a pipeline; an error answer to one of them
                // (none is expected for PUBLISH) fails the whole reply: counted as one.
                let dropped = stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(error = %e, dropped, "Redis refused a command; dropped");
                return;
            }
        }
    }
}

async fn subscriber(
    source: PubSubSource,
    mut commands: mpsc::UnboundedReceiver<Command>,
    routes: Arc<Mutex<Routes>>,
    subscribed: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    url: String,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    let mut lost_at: Option<std::time::SystemTime> = None;
    loop {
        let (client, generation) = match source.client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, %url, "invalid Redis address for the subscription");
                tokio::time::sleep(Duration::from_secs(3)).await;
                continue;
            }
        };
        let connected = tokio::time::timeout(Duration::from_secs(3), client.get_async_pubsub()).await;
        let pubsub = match connected {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, %url, "Redis subscription connection failed, retrying in {backoff:?}");
                source.failed(generation).await;
                source.pause(backoff, generation).await;
                backoff = (backoff * 2).min(Duration::from_secs(3));
                continue;
            }
            Err(_) => {
                tracing::warn!(%url, "Redis subscription connection timed out, retrying in {backoff:?}");
                source.failed(generation).await;
                source.pause(backoff, generation).await;
                backoff = (backoff * 2).min(Duration::from_secs(3));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // (Re)subscribe everything known so far; later commands arrive on the queue.
        let (channels, patterns): (Vec<String>, Vec<String>) = {
            let table = routes.lock().unwrap();
            (table.channels.keys().cloned().collect(), table.patterns.keys().cloned().collect())
        };
        let mut ok = channels.is_empty() || sink.subscribe(&channels).await.is_ok();
        for p in &patterns {
            ok = ok && sink.psubscribe(p).await.is_ok();
        }
        if !ok {
            source.pause(backoff, generation).await;
            continue;
        }
        backoff = Duration::from_millis(100);
        subscribed.store(true, Ordering::Release);
        if first {
            tracing::info!(%url, "subscribed to Redis");
            first = false;
        } else {
            tracing::info!(%url, "Redis is back: resubscribed; cross-node traffic resumes");
            if let Some(at) = lost_at.take() {
                let subscribers: Vec<Arc<dyn Subscriber>> = {
                    let table = routes.lock().unwrap();
                    table.subscribers()
                };
                for subscriber in subscribers {
                    subscriber.on_resubscribed(at);
                }
            }
        }
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    let result = match cmd {
                        Command::Subscribe(chs) => sink.subscribe(&chs).await,
                        Command::PSubscribe(p) => sink.psubscribe(&p).await,
                        Command::SSubscribe(_) | Command::SUnsubscribe(_) => {
                            tracing::error!("sharded Pub/Sub needs a Redis Cluster URL (redis+cluster://...)");
                            Ok(())
                        }
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "Redis subscribe failed");
                        break;
                    }
                }
                _ = source.moved_from(generation) => {
                    tracing::info!(%url, "the Redis primary moved: the subscription follows it");
                    break;
                }
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        source.failed(generation).await;
                        break;
                    };
                    let channel = msg.get_channel_name().to_owned();
                    let target = {
                        let table = routes.lock().unwrap();
                        let by_pattern = msg.get_pattern::<String>().ok().and_then(|p| table.patterns.get(&p).cloned());
                        by_pattern.or_else(|| table.channels.get(&channel).cloned())
                    };
                    if let Some(subscriber) = target.and_then(|w| w.upgrade()) {
                        subscriber.on_message(&channel, msg.get_payload_bytes());
                    }
                }
            }
        }
        subscribed.store(false, Ordering::Release);
        lost_at = Some(std::time::SystemTime::now());
        stats.outages.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%url, "lost the Redis subscription; reconnecting (local delivery continues)");
    }
}

#[cfg(test)]
mod tests {
    use super::{count_in_numsub, RedisLink};
    use redis::Value;

    #[test]
    fn urls_of_every_kind_are_checked_without_connecting() {
        for good in ["redis://127.0.0.1:6379/2", "redis+cluster://h1:7000,h2:7001", "redis+sentinel://s1:26379,s2/mymaster/1"] {
            RedisLink::check_url(good).unwrap();
        }
        assert!(RedisLink::check_url("http://127.0.0.1:6379").unwrap_err().contains("invalid Redis URL"));
        assert!(RedisLink::check_url("redis+sentinel://s1:26379").unwrap_err().contains("no master name"));
        assert!(RedisLink::check_url("redis+cluster://").unwrap_err().contains("no seed node"));
    }

    #[test]
    fn numsub_replies_of_every_shape_are_counted() {
        let name = || Value::BulkString(b"socket.io#/#".to_vec());
        assert_eq!(count_in_numsub(&Value::Array(vec![name(), Value::Int(3)])), 3);
        assert_eq!(count_in_numsub(&Value::Map(vec![(name(), Value::Int(2))])), 2);
        assert_eq!(count_in_numsub(&Value::Array(vec![])), 0);
        assert_eq!(count_in_numsub(&Value::Nil), 0);
    }
}
