//! The link's Redis Sentinel side: which Redis is the primary, asked of the sentinels,
//! and the switch to a new primary after a failover.
//!
//! URL: `redis+sentinel://[user:pass@]host1:26379,host2:26379/<master-name>[/<db>]`
//! (`rediss+sentinel://` for TLS to the sentinels and the data nodes). The userinfo is
//! the data nodes' credentials; sentinels are asked without a password unless the URL
//! adds `?sentinel_password=...` (and `sentinel_username=...`), since a sentinel has its
//! own `requirepass` and rejects an AUTH it does not expect.
//!
//! A connection manager alone would reconnect to the old address forever, so the
//! address is asked of the sentinels again when a command meets a dead or read-only
//! connection, when a sentinel announces `+switch-master`, and every second as a
//! backstop (a demoted primary still accepts PUBLISH, silently). On a new address the
//! commands' connection is replaced (in place: the publisher's queue keeps its order
//! and drains to the new primary) and the subscriber is told to reconnect there.

use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The port a sentinel listens on when the URL names none.
const SENTINEL_PORT: u16 = 26379;
/// How long one sentinel may take to answer (connect included).
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// The least time between two lookups triggered by failing commands.
const RECHECK_EVERY: Duration = Duration::from_millis(150);
/// How often the sentinels are asked, whatever happens.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often they are asked while the primary fails: every node learns of the new one
/// within about this long of the sentinels naming it (see `SWITCH_GRACE` in link.rs).
const POLL_IN_TROUBLE: Duration = Duration::from_millis(200);

/// A parsed `redis+sentinel://` URL.
#[derive(Debug, PartialEq)]
pub(super) struct SentinelTarget {
    /// `redis` or `rediss`.
    scheme: &'static str,
    /// The sentinels, `host:port`.
    sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under.
    master: String,
    db: u32,
    /// `user:pass@` of the data nodes, or empty.
    auth: String,
    /// `user:pass@` of the sentinels, or empty.
    sentinel_auth: String,
}

/// The sentinels and master of a `redis+sentinel://` or `rediss+sentinel://` URL, or
/// None for any other URL.
pub(super) fn sentinel_target(url: &str) -> Result<Option<SentinelTarget>, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("redis+sentinel", rest)) => ("redis", rest),
        Some(("rediss+sentinel", rest)) => ("rediss", rest),
        _ => return Ok(None),
    };
    const FORM: &str = "expected redis+sentinel://[user:pass@]host:port[,host:port...]/<master-name>[/<db>]";
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (auth, hosts) = match authority.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), authority),
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',').map(str::trim) {
        if host.is_empty() {
            return Err(format!("Redis Sentinel URL {}: an empty sentinel address; {FORM}", super::link::masked_url(url)));
        }
        sentinels.push(sentinel_address(host).map_err(|e| format!("Redis Sentinel URL {}: {e}; {FORM}", super::link::masked_url(url)))?);
    }
    let mut segments = path.trim_end_matches('/').split('/');
    let master = segments.next().unwrap_or("").to_owned();
    if master.is_empty() {
        return Err(format!("Redis Sentinel URL {}: no master name; {FORM}", super::link::masked_url(url)));
    }
    let db = match segments.next() {
        None => 0,
        Some(db) => db.parse::<u32>().map_err(|_| format!("Redis Sentinel URL {}: database {db:?} is not a number; {FORM}", super::link::masked_url(url)))?,
    };
    if segments.next().is_some() {
        return Err(format!("Redis Sentinel URL {}: too many path segments; {FORM}", super::link::masked_url(url)));
    }
    let (mut user, mut password) = (String::new(), None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sentinel_username", v)) => user = v.to_owned(),
            Some(("sentinel_password", v)) => password = Some(v.to_owned()),
            _ => {
                let key = pair.split('=').next().unwrap_or(pair);
                return Err(format!(
                    "Redis Sentinel URL {}: unknown parameter {key:?} (known: sentinel_username, sentinel_password)",
                    super::link::masked_url(url)
                ));
            }
        }
    }
    let sentinel_auth = match (user.is_empty(), password) {
        (true, None) => String::new(),
        (_, Some(password)) => format!("{user}:{password}@"),
        (false, None) => return Err(format!("Redis Sentinel URL {}: sentinel_username without sentinel_password", super::link::masked_url(url))),
    };
    Ok(Some(SentinelTarget { scheme, sentinels, master, db, auth, sentinel_auth }))
}

/// `host[:port]` (or `[v6]:port`) with the port checked and defaulted.
fn sentinel_address(host: &str) -> Result<String, String> {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (name, after) = v6.split_once(']').ok_or_else(|| format!("bad sentinel address {host:?}"))?;
        (format!("[{name}]"), after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name.to_owned(), Some(port)),
            None => (host.to_owned(), None),
        }
    };
    if name.is_empty() || name == "[]" || name.contains(['/', '@', ' ']) {
        return Err(format!("bad sentinel address {host:?}"));
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("bad port in sentinel address {host:?}"))?,
    };
    Ok(format!("{name}:{port}"))
}


/// `host:port` from the sentinels' answer (an IPv6 address gets its brackets).
fn address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

struct Primary {
    addr: String,
    url: String,
    manager: ConnectionManager,
    generation: u64,
}

/// The current primary of a master that sentinels watch, and the means to follow it.
pub(super) struct Sentinel {
    target: SentinelTarget,
    current: Mutex<Primary>,
    /// The primary's generation: bumped on every switch.
    moved: watch::Sender<u64>,
    /// When the sentinels were last asked after a failing command; one lookup at a time.
    rechecking: tokio::sync::Mutex<Option<Instant>>,
    /// The sentinel that answered last, asked first next time.
    last_good: AtomicUsize,
    /// Set when a command or the subscription failed on the current primary; cleared
    /// by a switch. The sentinels are then asked more often.
    trouble: AtomicBool,
}

impl SentinelTarget {
    fn data_url(&self, addr: &str) -> String {
        format!("{}://{}{addr}/{}", self.scheme, self.auth, self.db)
    }

    fn sentinel_url(&self, addr: &str) -> String {
        format!("{}://{}{addr}/", self.scheme, self.sentinel_auth)
    }

    /// Checks what the URL parser cannot: that the Redis client takes the addresses it
    /// builds (a `rediss` one needs a TLS build of it).
    pub(super) fn check(&self) -> Result<(), String> {
        let sentinel = self.sentinel_url(&self.sentinels[0]);
        redis::Client::open(sentinel).map_err(|e| format!("Redis Sentinel URL: {e}"))?;
        redis::Client::open(self.data_url("127.0.0.1:6379")).map_err(|e| format!("Redis Sentinel URL: {e}"))?;
        Ok(())
    }

    /// For logs: the master and its sentinels, no secrets.
    pub(super) fn label(&self) -> String {
        format!("master {:?} via sentinels {}", self.master, self.sentinels.join(","))
    }

    /// The primary's address as one sentinel reports it.
    async fn ask(&self, sentinel: &str) -> Result<String, String> {
        let client = redis::Client::open(self.sentinel_url(sentinel)).map_err(|e| e.to_string())?;
        let asked = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(ASK_TIMEOUT, asked).await {
            Err(_) => Err(format!("no answer within {ASK_TIMEOUT:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(None)) => Err("does not know this master name".to_owned()),
            Ok(Ok(Some((host, port)))) => Ok(address(&host, port)),
        }
    }

    /// The primary's address, from the first sentinel that knows it (starting with
    /// `first`), and that sentinel's index; or what each sentinel said.
    async fn resolve(&self, first: usize) -> Result<(String, usize), String> {
        let n = self.sentinels.len();
        let mut failures = Vec::new();
        for i in (0..n).map(|k| (first + k) % n) {
            match self.ask(&self.sentinels[i]).await {
                Ok(addr) => return Ok((addr, i)),
                Err(e) => failures.push(format!("{}: {e}", self.sentinels[i])),
            }
        }
        Err(format!("no sentinel named the primary of master {:?} ({})", self.master, failures.join("; ")))
    }

    /// A connection manager to `addr`, checked to be a primary (a replica being promoted
    /// still answers `ROLE` with `slave`).
    async fn open(&self, addr: &str) -> Result<ConnectionManager, String> {
        let url = self.data_url(addr);
        let client = redis::Client::open(url).map_err(|e| format!("{addr}: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(2);
        let mut manager = tokio::time::timeout(Duration::from_secs(3), client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| format!("{addr}: timed out"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let role: redis::Value = redis::cmd("ROLE").query_async(&mut manager).await.map_err(|e| format!("{addr}: ROLE failed: {e}"))?;
        match role {
            redis::Value::Array(parts) => match parts.first() {
                Some(redis::Value::BulkString(b)) if b == b"master" => Ok(manager),
                Some(redis::Value::BulkString(b)) => Err(format!("{addr} is not a primary (role {})", String::from_utf8_lossy(b))),
                _ => Err(format!("{addr}: unexpected ROLE reply")),
            },
            _ => Err(format!("{addr}: unexpected ROLE reply")),
        }
    }
}

impl Sentinel {
    /// Asks the sentinels for the primary and connects to it; fails with what each
    /// sentinel said when none names a reachable primary.
    pub(super) async fn connect(target: SentinelTarget) -> Result<Arc<Sentinel>, String> {
        target.check()?;
        let (addr, good) = target.resolve(0).await.map_err(|e| format!("cannot connect through Redis Sentinel: {e}"))?;
        let manager = target
            .open(&addr)
            .await
            .map_err(|e| format!("cannot connect through Redis Sentinel: the sentinels name {addr} the primary of master {:?}, but {e}", target.master))?;
        let url = target.data_url(&addr);
        let (moved, _) = watch::channel(0);
        let sentinel = Arc::new(Sentinel {
            target,
            current: Mutex::new(Primary { addr, url, manager, generation: 0 }),
            moved,
            rechecking: tokio::sync::Mutex::new(None),
            last_good: AtomicUsize::new(good),
            trouble: AtomicBool::new(false),
        });
        tokio::spawn(watch_sentinels(Arc::downgrade(&sentinel)));
        Ok(sentinel)
    }

    /// The primary's address now.
    pub(super) fn address(&self) -> String {
        self.current.lock().unwrap().addr.clone()
    }

    /// The commands' connection to the current primary, and its generation.
    pub(super) fn manager(&self) -> (ConnectionManager, u64) {
        let current = self.current.lock().unwrap();
        (current.manager.clone(), current.generation)
    }

    /// The current primary's URL (credentials included), and its generation.
    pub(super) fn primary_url(&self) -> (String, u64) {
        let current = self.current.lock().unwrap();
        (current.url.clone(), current.generation)
    }

    /// Resolves once the primary is no longer the one of generation `seen`.
    pub(super) async fn moved_from(&self, seen: u64) {
        let mut rx = self.moved.subscribe();
        if *rx.borrow_and_update() != seen {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// A command on the primary of generation `seen` failed as if it were gone or
    /// demoted: asks the sentinels (unless another lookup runs, or ran a moment ago).
    pub(super) async fn recheck(&self, seen: u64) {
        self.trouble.store(true, Ordering::Relaxed);
        self.poll(seen).await;
    }

    /// Asks the sentinels unless another lookup runs or ran a moment ago.
    async fn poll(&self, seen: u64) {
        let Ok(mut last) = self.rechecking.try_lock() else { return };
        if last.is_some_and(|at| at.elapsed() < RECHECK_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.follow(seen).await;
    }

    /// Asks the sentinels for the primary; switches to it if it moved since `seen`.
    async fn follow(&self, seen: u64) {
        let (current, generation) = {
            let c = self.current.lock().unwrap();
            (c.addr.clone(), c.generation)
        };
        if generation != seen {
            return;
        }
        let (addr, good) = match self.target.resolve(self.last_good.load(Ordering::Relaxed)).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e, "Redis Sentinel lookup failed");
                return;
            }
        };
        self.last_good.store(good, Ordering::Relaxed);
        if addr == current {
            return;
        }
        let manager = match self.target.open(&addr).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "the new Redis primary is not ready yet");
                return;
            }
        };
        let generation = {
            let mut c = self.current.lock().unwrap();
            if c.generation != seen {
                return;
            }
            c.generation += 1;
            self.trouble.store(false, Ordering::Relaxed);
            c.url = self.target.data_url(&addr);
            c.addr = addr.clone();
            c.manager = manager;
            c.generation
        };
        self.moved.send_replace(generation);
        tracing::info!(master = %self.target.master, from = %current, to = %addr, "Redis Sentinel: the primary moved; commands and subscriptions follow it");
    }
}

/// Follows the sentinels' `+switch-master` announcements (from one sentinel at a time,
/// the next one if it goes away) and asks them every [`POLL_EVERY`] as a backstop,
/// every [`POLL_IN_TROUBLE`] while the primary fails.
/// Ends when the link is gone.
async fn watch_sentinels(sentinel: Weak<Sentinel>) {
    use futures_util::StreamExt;
    let mut next = 0usize;
    let every_second = (POLL_EVERY.as_millis() / POLL_IN_TROUBLE.as_millis()).max(1) as u32;
    loop {
        let (url, master, count) = {
            let Some(s) = sentinel.upgrade() else { return };
            let n = s.target.sentinels.len();
            (s.target.sentinel_url(&s.target.sentinels[next % n]), s.target.master.clone(), n)
        };
        next = (next + 1) % count;
        let pubsub = async {
            let mut pubsub = redis::Client::open(url)?.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut poll = tokio::time::interval(POLL_IN_TROUBLE);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        match tokio::time::timeout(ASK_TIMEOUT, pubsub).await {
            Ok(Ok(pubsub)) => {
                let mut stream = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            // "<master> <old-ip> <old-port> <new-ip> <new-port>"
                            let text: String = msg.get_payload().unwrap_or_default();
                            if text.split(' ').next() != Some(master.as_str()) {
                                continue;
                            }
                            let Some(s) = sentinel.upgrade() else { return };
                            tracing::debug!(announcement = %text, "Redis Sentinel: +switch-master");
                            let seen = s.manager().1;
                            let _guard = s.rechecking.lock().await;
                            s.follow(seen).await;
                        }
                        _ = poll.tick() => {
                            let Some(s) = sentinel.upgrade() else { return };
                            ticks = ticks.wrapping_add(1);
                            if s.trouble.load(Ordering::Relaxed) || ticks % every_second == 0 {
                                let seen = s.manager().1;
                                s.poll(seen).await;
                            }
                        }
                    }
                }
            }
            _ => {
                // No sentinel to listen to for now: poll for a second, then the next one.
                for _ in 0..every_second {
                    poll.tick().await;
                    let Some(s) = sentinel.upgrade() else { return };
                    let seen = s.manager().1;
                    s.poll(seen).await;
                }
            }
        }
    }
}

/// True for a failure that may mean the primary is gone or demoted.
pub(super) fn primary_lost(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> SentinelTarget {
        sentinel_target(url).unwrap().unwrap()
    }

    #[test]
    fn sentinel_urls_name_sentinels_master_and_db() {
        assert_eq!(sentinel_target("redis://127.0.0.1:6379").unwrap(), None);
        assert_eq!(sentinel_target("redis+cluster://h:7000").unwrap(), None);
        let t = target("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster");
        assert_eq!(t.sentinels, ["10.0.0.1:26379", "10.0.0.2:26380"]);
        assert_eq!((t.master.as_str(), t.db, t.scheme), ("mymaster", 0, "redis"));
        assert_eq!(t.data_url("10.0.0.9:6379"), "redis://10.0.0.9:6379/0");
        assert_eq!(t.sentinel_url("10.0.0.1:26379"), "redis://10.0.0.1:26379/");
        // Default port, db, trailing slash, TLS, IPv6.
        let t = target("rediss+sentinel://user:p%40ss@s1,[::1]:26390/m/3/");
        assert_eq!(t.sentinels, ["s1:26379", "[::1]:26390"]);
        assert_eq!((t.master.as_str(), t.db, t.scheme), ("m", 3, "rediss"));
        assert_eq!(t.data_url("[fe80::1]:6379"), "rediss://user:p%40ss@[fe80::1]:6379/3");
        // The data nodes' password is not sent to the sentinels.
        assert_eq!(t.sentinel_url("s1:26379"), "rediss://s1:26379/");
        assert_eq!(address("fe80::1", 6379), "[fe80::1]:6379");
        assert_eq!(address("10.0.0.9", 6379), "10.0.0.9:6379");
    }

    #[test]
    fn sentinels_get_their_own_password() {
        let t = target("redis+sentinel://:data@s1:26379/m?sentinel_password=sent");
        assert_eq!(t.sentinel_url("s1:26379"), "redis://:sent@s1:26379/");
        assert_eq!(t.data_url("h:6379"), "redis://:data@h:6379/0");
        let t = target("redis+sentinel://s1/m?sentinel_username=admin&sentinel_password=sent");
        assert_eq!(t.sentinel_url("s1:26379"), "redis://admin:sent@s1:26379/");
    }

    #[test]
    fn bad_sentinel_urls_say_what_is_wrong() {
        let err = |url: &str| sentinel_target(url).unwrap_err();
        assert!(err("redis+sentinel://s1:26379").contains("no master name"), "{}", err("redis+sentinel://s1:26379"));
        assert!(err("redis+sentinel://s1:26379/").contains("no master name"));
        assert!(err("redis+sentinel:///m").contains("empty sentinel address"));
        assert!(err("redis+sentinel://s1,,s2/m").contains("empty sentinel address"));
        assert!(err("redis+sentinel://s1:port/m").contains("bad port"));
        assert!(err("redis+sentinel://s1:0/m").contains("bad port"));
        assert!(err("redis+sentinel://s1:70000/m").contains("bad port"));
        assert!(err("redis+sentinel://s1/m/x").contains("database \"x\" is not a number"));
        assert!(err("redis+sentinel://s1/m/1/2").contains("too many path segments"));
        assert!(err("redis+sentinel://s1/m?password=x").contains("unknown parameter \"password\""));
        assert!(err("redis+sentinel://s1/m?sentinel_username=u").contains("without sentinel_password"));
        // Every message shows the expected form, never a password.
        let e = err("redis+sentinel://u:secret@s1:x/m?sentinel_password=secret2");
        assert!(e.contains("redis+sentinel://[user:pass@]host:port"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
