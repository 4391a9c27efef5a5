//! Cluster membership through Redis: which nodes exist and where each one listens for
//! its peers, so a node can forward a request to the owner of its session.
//!
//! Each node holds one key, `<prefix>node:<id>` = `<address> <token>`, written with
//! `SET NX` and a TTL and renewed well before it runs out; the token is random per
//! process, so a node only ever renews or deletes its own registration. The ids are also
//! kept in the set `<prefix>nodes`, which every node reads on each renewal to refresh its
//! view. A node that shuts down deletes its key; one that dies drops out when its key
//! expires. An id that is already held by a live node is a clash: the new node refuses to
//! start. A registration whose holder does not answer is what a crashed run leaves
//! behind, and is taken over.
//!
//! The cluster also shares a random secret, `<prefix>secret`, created by the first node:
//! a forwarded request carries it, so a node believes the client address in it only
//! when another node sent it, whatever the network looks like.

use crate::adapter::redis::RedisLink;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// This node's place in the cluster and its view of the other nodes, kept current from
/// Redis through the adapter's link (one set of Redis connections per node).
pub struct Membership {
    node_id: String,
    advertise: String,
    /// This process's registration value: `<address> <token>`.
    registration: String,
    prefix: String,
    ttl: Duration,
    redis: Arc<RedisLink>,
    /// Node id -> internal address.
    view: RwLock<HashMap<String, String>>,
    secret: String,
    /// Owner ids looked up in Redis and not found, so a stale sid costs no Redis trip
    /// per request. Bounded: a flood of made-up ids cannot grow it without limit.
    misses: Mutex<HashMap<String, Instant>>,
    /// Direct Redis lookups in the current second, for owners not in the view. A node
    /// that joined since the last refresh is rare; a flood of forged sids is not, and
    /// must not turn into Redis load.
    lookups: Mutex<(Instant, u32)>,
    /// Lookups on their way, by owner id: a burst of requests for a node that just
    /// joined (every client of its first sessions at once) waits on one Redis GET and
    /// spends one unit of the budget, not one each. An entry lives while its GET does.
    in_flight: Lookups,
    /// Set by `leave`: the renewal stops, so a node that left stays out.
    left: AtomicBool,
}

/// How long a "no such node" answer is believed.
const MISS_TTL: Duration = Duration::from_secs(1);
/// Most owner ids remembered as missing.
const MAX_MISSES: usize = 4096;
/// Most Redis lookups of unknown owners per second; past that an unknown owner is
/// answered "Session ID unknown" until the next view refresh.
const MAX_LOOKUPS_PER_SEC: u32 = 20;

type Lookups = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Option<String>>>>>;

/// One caller's share of a lookup on its way; the last one to leave removes the entry,
/// whether the lookup finished or every caller was dropped before it did.
struct InFlight<'a> {
    map: &'a Lookups,
    id: &'a str,
    cell: Option<Arc<tokio::sync::OnceCell<Option<String>>>>,
}

impl<'a> InFlight<'a> {
    fn join(map: &'a Lookups, id: &'a str) -> InFlight<'a> {
        let cell = map.lock().unwrap().entry(id.to_owned()).or_default().clone();
        InFlight { map, id, cell: Some(cell) }
    }

    fn cell(&self) -> &tokio::sync::OnceCell<Option<String>> {
        self.cell.as_ref().expect("held until drop")
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Clones and drops of the entry happen under the lock, so the count is exact.
        let mut map = self.map.lock().unwrap();
        drop(self.cell.take());
        if map.get(self.id).is_some_and(|c| Arc::strong_count(c) == 1) {
            map.remove(self.id);
        }
    }
}

/// Renews only this process's own registration; re-creates it if it expired meanwhile.
/// Returns 1 (renewed), 2 (re-created), 0 (held by another process).
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0";

/// Replaces a registration only if it still holds the value seen (a stale one).
const TAKE_OVER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0";

/// Deletes only this process's own registration.
const LEAVE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a node is and how it proves it is itself, for [`Membership::join`].
pub(crate) struct JoinRequest<'a> {
    pub key: &'a str,
    pub node_id: &'a str,
    pub advertise: &'a str,
    pub ttl: Duration,
    /// The engine's path, where a registered node answers a liveness probe.
    pub path: &'a str,
}

impl Membership {
    /// Registers this node, or fails if its id is in use by a live node.
    pub(crate) async fn join(redis: Arc<RedisLink>, req: JoinRequest<'_>) -> Result<Arc<Membership>, String> {
        let JoinRequest { key, node_id, advertise, ttl, path } = req;
        let token = crate::engine::sid::new_socket_id();
        let secret = shared_secret(&redis, &format!("{key}#shoal#secret")).await?;
        let cluster = Arc::new(Membership {
            node_id: node_id.to_owned(),
            advertise: advertise.to_owned(),
            registration: format!("{advertise} {token}"),
            prefix: format!("{key}#shoal#"),
            ttl,
            redis,
            view: RwLock::new(HashMap::new()),
            secret,
            misses: Mutex::new(HashMap::new()),
            lookups: Mutex::new((Instant::now(), 0)),
            in_flight: Mutex::new(HashMap::new()),
            left: AtomicBool::new(false),
        });
        cluster.register(path).await?;
        cluster.refresh().await.map_err(|e| format!("cluster membership: {e}"))?;
        let renewing = Arc::downgrade(&cluster);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let Some(cluster) = renewing.upgrade() else { return };
                let pause = cluster.ttl / 4;
                drop(cluster);
                tokio::time::sleep(pause).await;
                let Some(cluster) = renewing.upgrade() else { return };
                if cluster.left.load(Ordering::Acquire) {
                    return;
                }
                let renewed = cluster.renew().await;
                if cluster.left.load(Ordering::Acquire) {
                    // `leave` ran while this renewal was on its way: it may have written
                    // the registration back, so it goes again.
                    cluster.remove().await;
                    return;
                }
                match renewed.and(cluster.refresh().await) {
                    Ok(()) if failing => {
                        tracing::info!("cluster membership: Redis is reachable again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        // The view is kept as it was: a Redis outage does not make peers disappear.
                        tracing::error!(error = %e, "cluster membership: cannot renew the registration or refresh the view");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        });
        tracing::info!(node = node_id, advertise, members = cluster.view.read().unwrap().len(), "joined the cluster");
        Ok(cluster)
    }

    fn node_key(&self, id: &str) -> String {
        format!("{}node:{id}", self.prefix)
    }

    fn set_key(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, what: &str) -> Result<T, String> {
        self.redis.query(cmd, what).await
    }

    async fn register(&self, path: &str) -> Result<(), String> {
        let key = self.node_key(&self.node_id);
        let ttl_ms = self.ttl.as_millis() as u64;
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(&self.registration).arg("NX").arg("PX").arg(ttl_ms);
        for _ in 0..3 {
            let created: Option<String> = self.query(&set, "cluster membership: SET").await?;
            if created.is_some() {
                let _: i64 = self.query(redis::cmd("SADD").arg(self.set_key()).arg(&self.node_id), "cluster membership: SADD").await?;
                return Ok(());
            }
            let held: Option<String> = self.query(redis::cmd("GET").arg(&key), "cluster membership: GET").await?;
            // Expired between SET and GET: try again.
            let Some(held) = held else { continue };
            let address = held.split(' ').next().unwrap_or_default().to_owned();
            if holder_is_alive(&address, &self.node_id, path).await {
                return Err(format!(
                    "node id {:?} is already in use in the cluster by a running node at {address}; give every node a unique node id",
                    self.node_id
                ));
            }
            let mut take = redis::cmd("EVAL");
            take.arg(TAKE_OVER).arg(1).arg(&key).arg(&held).arg(&self.registration).arg(ttl_ms);
            let taken: i64 = self.query(&take, "cluster membership: take over").await?;
            if taken != 1 {
                return Err(format!("node id {:?} was registered by another node just now; give every node a unique node id", self.node_id));
            }
            tracing::warn!(node = %self.node_id, previous = %address, "took over the registration of a previous run that no longer answers");
            let _: i64 = self.query(redis::cmd("SADD").arg(self.set_key()).arg(&self.node_id), "cluster membership: SADD").await?;
            return Ok(());
        }
        Err(format!("node id {:?}: the registration keeps expiring between two commands; is Redis evicting keys?", self.node_id))
    }

    async fn renew(&self) -> Result<(), String> {
        let mut renew = redis::cmd("EVAL");
        renew.arg(RENEW).arg(1).arg(self.node_key(&self.node_id)).arg(&self.registration).arg(self.ttl.as_millis() as u64);
        let renewed: i64 = self.query(&renew, "renew").await?;
        match renewed {
            0 => tracing::error!(node = %self.node_id, "another process registered this node id; two nodes share an id"),
            2 => tracing::warn!(node = %self.node_id, "the registration had expired (Redis unreachable for a while?); registered again"),
            _ => {}
        }
        // Also re-add to the set: a peer may have pruned the id while the key was missing.
        let _: i64 = self.query(redis::cmd("SADD").arg(self.set_key()).arg(&self.node_id), "SADD").await?;
        Ok(())
    }

    /// Reads every member's address; prunes ids whose registration expired.
    async fn refresh(&self) -> Result<(), String> {
        let ids: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(self.set_key()), "SMEMBERS").await?;
        let mut view = HashMap::new();
        if !ids.is_empty() {
            let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
            let values: Vec<Option<String>> = self.query(redis::cmd("MGET").arg(&keys), "MGET").await?;
            let mut gone = Vec::new();
            for (id, value) in ids.into_iter().zip(values) {
                match value.as_deref().and_then(|v| v.split(' ').next()) {
                    Some(addr) => {
                        view.insert(id, addr.to_owned());
                    }
                    None => gone.push(id),
                }
            }
            if !gone.is_empty() {
                let _: i64 = self.query(redis::cmd("SREM").arg(self.set_key()).arg(&gone), "SREM").await?;
            }
        }
        {
            let old = self.view.read().unwrap();
            for (id, addr) in &view {
                if old.get(id) != Some(addr) && *id != self.node_id {
                    tracing::info!(node = %id, %addr, "cluster: node joined");
                }
            }
            for id in old.keys().filter(|id| !view.contains_key(*id)) {
                tracing::info!(node = %id, "cluster: node left");
            }
        }
        *self.view.write().unwrap() = view;
        Ok(())
    }

    /// The internal address of node `id`: from the view, else straight from Redis (a node
    /// that joined since the last refresh), within a budget of lookups per second. None if
    /// it is not (or no longer) registered, or the budget is spent.
    pub async fn address_of(&self, id: &str) -> Option<String> {
        if let Some(addr) = self.view.read().unwrap().get(id) {
            return Some(addr.clone());
        }
        if !crate::engine::sid::is_valid_node_id(id) {
            return None;
        }
        {
            let mut misses = self.misses.lock().unwrap();
            if misses.get(id).is_some_and(|at| at.elapsed() < MISS_TTL) {
                return None;
            }
            if misses.len() >= MAX_MISSES {
                misses.retain(|_, at| at.elapsed() < MISS_TTL);
            }
        }
        let waiter = InFlight::join(&self.in_flight, id);
        // One caller runs the lookup; the others wait for its answer (if it is dropped
        // midway, one of them takes over).
        waiter.cell().get_or_init(|| self.look_up(id)).await.clone()
    }

    /// One Redis GET for the address of `id`, within the budget; the answer goes into the
    /// view, or the miss into the miss cache.
    async fn look_up(&self, id: &str) -> Option<String> {
        {
            let mut lookups = self.lookups.lock().unwrap();
            if lookups.0.elapsed() >= Duration::from_secs(1) {
                *lookups = (Instant::now(), 0);
            }
            if lookups.1 >= MAX_LOOKUPS_PER_SEC {
                tracing::debug!(node = %id, "owner lookup budget spent; answered as unknown");
                return None;
            }
            lookups.1 += 1;
        }
        let mut get = redis::cmd("GET");
        get.arg(self.node_key(id));
        let lookup = self.query::<Option<String>>(&get, "GET");
        let found = match tokio::time::timeout(REDIS_TIMEOUT, lookup).await {
            Ok(Ok(v)) => v.and_then(|v| v.split(' ').next().map(str::to_owned)),
            _ => None,
        };
        match &found {
            Some(addr) => {
                self.view.write().unwrap().insert(id.to_owned(), addr.clone());
            }
            None => {
                let mut misses = self.misses.lock().unwrap();
                if misses.len() < MAX_MISSES {
                    misses.insert(id.to_owned(), Instant::now());
                }
            }
        }
        found
    }

    /// The cluster's shared secret, which forwarded requests carry.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Nodes in this node's view (itself included).
    pub fn member_count(&self) -> usize {
        self.view.read().unwrap().len()
    }

    /// The ids and internal addresses of the nodes in this node's view.
    pub fn members(&self) -> Vec<(String, String)> {
        let mut members: Vec<_> = self.view.read().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        members.sort();
        members
    }

    /// The address the other nodes use to reach this one.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// Deletes this node's registration, so peers stop forwarding to it at once.
    pub async fn leave(&self) {
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        self.remove().await;
    }

    async fn remove(&self) {
        let key = self.node_key(&self.node_id);
        let left = async {
            let _: i64 = self.query(redis::cmd("EVAL").arg(LEAVE).arg(1).arg(&key).arg(&self.registration), "leave").await?;
            let _: i64 = self.query(redis::cmd("SREM").arg(self.set_key()).arg(&self.node_id), "SREM").await?;
            Ok::<_, String>(())
        };
        match tokio::time::timeout(REDIS_TIMEOUT, left).await {
            Ok(Ok(())) => tracing::info!(node = %self.node_id, "left the cluster"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not leave the cluster cleanly; the registration will expire"),
            Err(_) => tracing::warn!("leaving the cluster timed out; the registration will expire"),
        }
    }
}

/// The cluster's secret: created once by whichever node comes first, read by the others.
/// It travels in a header, so anything else found there is refused, not trusted.
async fn shared_secret(redis: &RedisLink, key: &str) -> Result<String, String> {
    let fresh = format!("{}{}", crate::engine::sid::new_socket_id(), crate::engine::sid::new_socket_id());
    let _: Option<String> = redis.query(redis::cmd("SET").arg(key).arg(&fresh).arg("NX"), "cluster membership: SET").await?;
    let secret: Option<String> = redis.query(redis::cmd("GET").arg(key), "cluster membership: GET").await?;
    let secret = secret.ok_or_else(|| "cluster membership: the cluster secret vanished from Redis".to_owned())?;
    check_secret(&secret).map_err(|why| format!("cluster membership: the cluster secret in Redis key {key:?} {why}; delete the key so that a node creates a new one"))?;
    Ok(secret)
}

/// A secret is 16 to 256 URL-safe characters (what nodes create: 40 of them).
fn check_secret(secret: &str) -> Result<(), &'static str> {
    if secret.len() < 16 {
        return Err("is shorter than 16 characters");
    }
    if secret.len() > 256 {
        return Err("is longer than 256 characters");
    }
    if !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err("holds characters other than letters, digits, '-' and '_'");
    }
    Ok(())
}

/// Asks the holder of a registration whether it is a live node with that id: a node
/// answers a probe on its engine path with its id. No answer within a second means it
/// is gone.
async fn holder_is_alive(address: &str, node_id: &str, path: &str) -> bool {
    use http_body_util::BodyExt;
    let probe = async {
        let uri: http::Uri = format!("http://{address}{path}").parse().ok()?;
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let req = http::Request::get(uri).header(super::ingress::PROBE_HEADER, "1").body(http_body_util::Empty::new()).ok()?;
        let res = client.request(req).await.ok()?;
        let body = http_body_util::Limited::new(res.into_body(), 4096).collect().await.ok()?.to_bytes();
        Some(body == super::ingress::probe_answer(node_id))
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten().unwrap_or(false)
}

/// The address to advertise for a node listening on `listen`: `listen` itself, with an
/// unspecified IP (`0.0.0.0`, `::`) replaced by the address this machine uses to reach
/// others (falling back to 127.0.0.1, with a warning).
pub fn default_advertise(listen: SocketAddr) -> String {
    if !listen.ip().is_unspecified() {
        return listen.to_string();
    }
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    let probe = std::net::UdpSocket::bind((listen.ip(), 0)).and_then(|s| {
        let target: SocketAddr = if listen.is_ipv4() { SocketAddr::from(([192, 0, 2, 1], 9)) } else { SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 9)) };
        s.connect(target)?;
        s.local_addr()
    });
    match probe {
        Ok(local) if !local.ip().is_unspecified() => SocketAddr::new(local.ip(), listen.port()).to_string(),
        _ => {
            tracing::warn!("cannot tell this machine's address; advertising 127.0.0.1 (set the advertise address)");
            SocketAddr::new([127, 0, 0, 1].into(), listen.port()).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_header_safe_secrets_are_accepted() {
        assert!(check_secret(&format!("{}{}", crate::engine::sid::new_socket_id(), crate::engine::sid::new_socket_id())).is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret(&"x".repeat(257)).is_err());
        assert!(check_secret("0123456789abcdef\r\nx-evil: 1").is_err());
        assert!(check_secret("0123456789abcdef 0123").is_err(), "a space would split the forwarding mark");
    }

    #[test]
    fn advertise_keeps_a_specific_address_and_replaces_an_unspecified_one() {
        assert_eq!(default_advertise("10.1.2.3:3000".parse().unwrap()), "10.1.2.3:3000");
        let derived: SocketAddr = default_advertise("0.0.0.0:3000".parse().unwrap()).parse().unwrap();
        assert_eq!(derived.port(), 3000);
        assert!(!derived.ip().is_unspecified());
    }
}
