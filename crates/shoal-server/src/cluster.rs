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

use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A view of the other nodes, kept current from Redis.
pub struct Cluster {
    node_id: String,
    advertise: String,
    /// This process's registration value: `<address> <token>`.
    value: String,
    prefix: String,
    ttl: Duration,
    redis: ConnectionManager,
    view: RwLock<HashMap<String, String>>,
    secret: String,
    /// Ids recently looked up and not found, so a stale sid does not cost a Redis trip per request.
    misses: Mutex<HashMap<String, Instant>>,
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

impl Cluster {
    /// Registers this node, or fails if its id is in use by a live node.
    pub async fn join(url: &str, key: &str, node_id: &str, advertise: &str, ttl: Duration) -> Result<Arc<Cluster>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL {url:?}: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        let redis = tokio::time::timeout(Duration::from_secs(5), client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| format!("cannot connect to Redis at {url}: timed out"))?
            .map_err(|e| format!("cannot connect to Redis at {url}: {e}"))?;
        let token = shoal::engine::sid::new_socket_id();
        let secret = shared_secret(&redis, &format!("{key}#shoal#secret")).await?;
        let cluster = Arc::new(Cluster {
            node_id: node_id.to_owned(),
            advertise: advertise.to_owned(),
            value: format!("{advertise} {token}"),
            prefix: format!("{key}#shoal#"),
            ttl,
            redis,
            view: RwLock::new(HashMap::new()),
            secret,
            misses: Mutex::new(HashMap::new()),
        });
        cluster.register().await?;
        cluster.refresh().await.map_err(|e| format!("cluster membership: {e}"))?;
        let renewing = Arc::downgrade(&cluster);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let Some(cluster) = renewing.upgrade() else { return };
                tokio::time::sleep(cluster.ttl / 4).await;
                match cluster.renew().await.and(cluster.refresh().await) {
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

    async fn register(&self) -> Result<(), String> {
        let mut conn = self.redis.clone();
        let key = self.node_key(&self.node_id);
        let ttl_ms = self.ttl.as_millis() as u64;
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&self.value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("cluster membership: {e}"))?;
        if set.is_none() {
            let held: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.map_err(|e| format!("cluster membership: {e}"))?;
            if let Some(held) = held {
                let address = held.split(' ').next().unwrap_or_default().to_owned();
                if holder_is_alive(&address, &self.node_id).await {
                    return Err(format!(
                        "node id {:?} is already in use in the cluster by a running node at {address}; \
                         give every node a unique --node-id",
                        self.node_id
                    ));
                }
                let taken: i64 = redis::cmd("EVAL")
                    .arg(TAKE_OVER)
                    .arg(1)
                    .arg(&key)
                    .arg(&held)
                    .arg(&self.value)
                    .arg(ttl_ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("cluster membership: {e}"))?;
                if taken != 1 {
                    return Err(format!("node id {:?} was registered by another node just now; give every node a unique --node-id", self.node_id));
                }
                tracing::warn!(node = %self.node_id, previous = %address, "took over the registration of a previous run that no longer answers");
            } else {
                // Expired between SET and GET: try once more.
                return Box::pin(self.register()).await;
            }
        }
        let _: i64 = redis::cmd("SADD").arg(self.set_key()).arg(&self.node_id).query_async(&mut conn).await.map_err(|e| format!("cluster membership: {e}"))?;
        Ok(())
    }

    async fn renew(&self) -> Result<(), String> {
        let mut conn = self.redis.clone();
        let renewed: i64 = redis::cmd("EVAL")
            .arg(RENEW)
            .arg(1)
            .arg(self.node_key(&self.node_id))
            .arg(&self.value)
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        match renewed {
            0 => tracing::error!(node = %self.node_id, "another process registered this node id; two nodes share an id"),
            2 => tracing::warn!(node = %self.node_id, "the registration had expired (Redis unreachable for a while?); registered again"),
            _ => {}
        }
        // Also re-add to the set: a peer may have pruned the id while the key was missing.
        let _: i64 = redis::cmd("SADD").arg(self.set_key()).arg(&self.node_id).query_async(&mut conn).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Reads every member's address; prunes ids whose registration expired.
    async fn refresh(&self) -> Result<(), String> {
        let mut conn = self.redis.clone();
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.set_key()).query_async(&mut conn).await.map_err(|e| e.to_string())?;
        let mut view = HashMap::new();
        if !ids.is_empty() {
            let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
            let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(|e| e.to_string())?;
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
                let _: i64 = redis::cmd("SREM").arg(self.set_key()).arg(&gone).query_async(&mut conn).await.map_err(|e| e.to_string())?;
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
    /// that joined since the last refresh). None if it is not (or no longer) registered.
    pub async fn address_of(&self, id: &str) -> Option<String> {
        if let Some(addr) = self.view.read().unwrap().get(id) {
            return Some(addr.clone());
        }
        {
            let mut misses = self.misses.lock().unwrap();
            if misses.get(id).is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return None;
            }
            misses.retain(|_, at| at.elapsed() < Duration::from_secs(1));
        }
        let mut conn = self.redis.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.node_key(id));
        let lookup = get.query_async::<Option<String>>(&mut conn);
        let found = match tokio::time::timeout(REDIS_TIMEOUT, lookup).await {
            Ok(Ok(v)) => v.and_then(|v| v.split(' ').next().map(str::to_owned)),
            _ => None,
        };
        match &found {
            Some(addr) => {
                self.view.write().unwrap().insert(id.to_owned(), addr.clone());
            }
            None => {
                self.misses.lock().unwrap().insert(id.to_owned(), Instant::now());
            }
        }
        found
    }

    /// The cluster's shared secret, which forwarded requests carry.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn member_count(&self) -> usize {
        self.view.read().unwrap().len()
    }

    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// Deletes this node's registration, so peers stop forwarding to it at once.
    pub async fn leave(&self) {
        let mut conn = self.redis.clone();
        let key = self.node_key(&self.node_id);
        let left = async {
            let _: i64 = redis::cmd("EVAL").arg(LEAVE).arg(1).arg(&key).arg(&self.value).query_async(&mut conn).await?;
            let _: i64 = redis::cmd("SREM").arg(self.set_key()).arg(&self.node_id).query_async(&mut conn).await?;
            Ok::<_, redis::RedisError>(())
        };
        match tokio::time::timeout(REDIS_TIMEOUT, left).await {
            Ok(Ok(())) => tracing::info!(node = %self.node_id, "left the cluster"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not leave the cluster cleanly; the registration will expire"),
            Err(_) => tracing::warn!("leaving the cluster timed out; the registration will expire"),
        }
    }
}

/// The cluster's secret: created once by whichever node comes first, read by the others.
async fn shared_secret(redis: &ConnectionManager, key: &str) -> Result<String, String> {
    let mut conn = redis.clone();
    let fresh = format!("{}{}", shoal::engine::sid::new_socket_id(), shoal::engine::sid::new_socket_id());
    let _: Option<String> = redis::cmd("SET").arg(key).arg(&fresh).arg("NX").query_async(&mut conn).await.map_err(|e| format!("cluster membership: {e}"))?;
    let secret: Option<String> = redis::cmd("GET").arg(key).query_async(&mut conn).await.map_err(|e| format!("cluster membership: {e}"))?;
    secret.ok_or_else(|| "cluster membership: the cluster secret vanished from Redis".to_owned())
}

/// Asks the holder of a registration whether it is a live node with that id (its
/// `/health` names it). No answer within a second means it is gone.
async fn holder_is_alive(address: &str, node_id: &str) -> bool {
    let probe = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request = format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).contains(&format!("\"node\":\"{node_id}\"")))
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten().unwrap_or(false)
}

/// The default `--advertise`: the listen address, with an unspecified IP (`0.0.0.0`,
/// `::`) replaced by the address this machine uses to reach others.
pub fn default_advertise(listen: SocketAddr) -> String {
    if !listen.ip().is_unspecified() {
        return listen.to_string();
    }
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    let probe = std::net::UdpSocket::bind((listen.ip(), 0)).and_then(|s| {
        let target: SocketAddr = if listen.is_ipv4() { "192.0.2.1:9".parse().unwrap() } else { "[2001:db8::1]:9".parse().unwrap() };
        s.connect(target)?;
        s.local_addr()
    });
    match probe {
        Ok(local) if !local.ip().is_unspecified() => SocketAddr::new(local.ip(), listen.port()).to_string(),
        _ => {
            tracing::warn!("cannot tell this machine's address; advertising 127.0.0.1 (set --advertise)");
            SocketAddr::new([127, 0, 0, 1].into(), listen.port()).to_string()
        }
    }
}
