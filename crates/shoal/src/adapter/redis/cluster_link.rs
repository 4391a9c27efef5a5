//! The link's Redis Cluster side: seed nodes from a `redis+cluster://` URL, one cluster
//! connection (the `redis` crate routes each command to its slot's primary, and
//! `SSUBSCRIBE` to the primary of the channel's slot), and subscriptions received as
//! RESP3 push messages.
//!
//! Failover: the crate reconnects a dropped node by itself, but a primary that died
//! and was replaced by its replica is only found by a topology refresh. So a watch
//! asks the cluster for its slot map every second; when the map changed, or when a
//! node dropped and every primary answers again, the connection is rebuilt from the
//! seeds and every subscription is made again on it. Pushes of the old connection are
//! dropped with its channel, so nothing is delivered twice; what was published while
//! a shard had no primary is lost (as with the official adapter), and the subscribers
//! are told when it began (`on_resubscribed`), so a recovery log can catch up.

use super::link::{publisher, Command, Conn, LinkStats, Queued, RedisLink, Routes};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo};
use redis::{PushInfo, PushKind, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// The seed node URLs of a `redis+cluster://` or `rediss+cluster://` URL, or None for a
/// plain Redis URL. `redis+cluster://user:pass@h1:6379,h2:6379/` gives each seed the
/// credentials.
pub(super) fn cluster_seeds(url: &str) -> Result<Option<Vec<String>>, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s @ ("redis+cluster" | "rediss+cluster"), rest)) => (s.trim_end_matches("+cluster"), rest),
        _ => return Ok(None),
    };
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let seeds: Vec<String> = hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(|h| format!("{scheme}://{auth}{h}/")).collect();
    if seeds.is_empty() {
        return Err(format!("no seed node in Redis Cluster URL {url:?}"));
    }
    Ok(Some(seeds))
}

const PUBLISH_QUEUE: usize = 65_536;
/// How often the slot map is compared with the last one seen.
const WATCH_EVERY: Duration = Duration::from_millis(1000);

struct Shared {
    seeds: Vec<String>,
    conn: Arc<Mutex<ClusterConnection>>,
    routes: Arc<Mutex<Routes>>,
    subscribed: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
}

async fn open(seeds: &[String], pushes: mpsc::UnboundedSender<PushInfo>) -> Result<ClusterConnection, String> {
    let client = ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(pushes)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .retries(3)
        .build()
        .map_err(|e| format!("invalid Redis Cluster seeds {seeds:?}: {e}"))?;
    tokio::time::timeout(Duration::from_secs(5), client.get_async_connection())
        .await
        .map_err(|_| format!("cannot connect to the Redis Cluster at {seeds:?}: timed out"))?
        .map_err(|e| format!("cannot connect to the Redis Cluster at {seeds:?}: {e}"))
}

pub(super) async fn connect(url: &str, seeds: Vec<String>) -> Result<Arc<RedisLink>, String> {
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let conn = open(&seeds, push_tx).await?;
    let topology = slot_map(&conn).await.map_err(|e| format!("Redis Cluster at {}: {e}", super::link::masked_url(url)))?;
    let shared = Arc::new(Shared {
        seeds,
        conn: Arc::new(Mutex::new(conn)),
        routes: Arc::new(Mutex::new(Routes::default())),
        subscribed: Arc::new(AtomicBool::new(true)),
        stats: Arc::new(LinkStats::default()),
    });
    let (publish_tx, publish_rx) = mpsc::channel::<Queued>(PUBLISH_QUEUE);
    let (commands, command_rx) = mpsc::unbounded_channel();
    let link_conn = Conn::Cluster(shared.conn.clone());
    tokio::spawn(publisher(link_conn.clone(), publish_rx, shared.stats.clone()));
    tokio::spawn(subscriber(shared.clone(), command_rx, push_rx, topology));
    tracing::info!(url = %super::link::masked_url(url), "connected to the Redis Cluster");
    Ok(RedisLink::from_parts(
        url.to_owned(),
        link_conn,
        publish_tx,
        commands,
        shared.routes.clone(),
        shared.subscribed.clone(),
        shared.stats.clone(),
    ))
}

/// The slot ranges and their primaries, as text to compare: `start-end host:port;...`.
async fn slot_map(conn: &ClusterConnection) -> Result<String, String> {
    let mut conn = conn.clone();
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        conn.route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)),
    )
    .await
    .map_err(|_| "CLUSTER SLOTS timed out".to_owned())?
    .map_err(|e| format!("CLUSTER SLOTS failed: {e}"))?;
    let Value::Array(ranges) = reply else { return Err("CLUSTER SLOTS: unexpected reply".into()) };
    let mut entries: Vec<String> = ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(parts) = range else { return None };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) = (parts.first(), parts.get(1), parts.get(2)) else {
                return None;
            };
            let host = match primary.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => return None,
            };
            let port = match primary.get(1) {
                Some(Value::Int(p)) => *p,
                _ => return None,
            };
            Some(format!("{start}-{end} {host}:{port}"))
        })
        .collect();
    entries.sort();
    Ok(entries.join(";"))
}

/// True when every primary answers a PING.
async fn all_primaries_answer(conn: &ClusterConnection) -> bool {
    let mut conn = conn.clone();
    let ping = conn.route_command(
        redis::cmd("PING"),
        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded))),
    );
    matches!(tokio::time::timeout(Duration::from_secs(2), ping).await, Ok(Ok(_)))
}

async fn apply(conn: &ClusterConnection, cmd: Command) -> redis::RedisResult<()> {
    let mut conn = conn.clone();
    match cmd {
        Command::Subscribe(chs) => conn.subscribe(chs).await,
        Command::PSubscribe(p) => conn.psubscribe(p).await,
        Command::SSubscribe(chs) => conn.ssubscribe(chs).await,
        Command::SUnsubscribe(chs) => conn.sunsubscribe(chs).await,
    }
}

/// Every subscription known, made again on a fresh connection.
async fn subscribe_all(shared: &Shared, conn: &ClusterConnection) -> redis::RedisResult<()> {
    let (channels, patterns, sharded) = {
        let routes = shared.routes.lock().unwrap();
        (
            routes.channels.keys().cloned().collect::<Vec<_>>(),
            routes.patterns.keys().cloned().collect::<Vec<_>>(),
            routes.sharded.keys().cloned().collect::<Vec<_>>(),
        )
    };
    if !channels.is_empty() {
        apply(conn, Command::Subscribe(channels)).await?;
    }
    for p in patterns {
        apply(conn, Command::PSubscribe(p)).await?;
    }
    // One slot per SSUBSCRIBE: channels of a command must share a slot.
    for channel in sharded {
        apply(conn, Command::SSubscribe(vec![channel])).await?;
    }
    Ok(())
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn deliver(routes: &Mutex<Routes>, push: PushInfo) {
    let (channel, payload, target) = {
        let table = routes.lock().unwrap();
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                let Some(channel) = text(push.data.first()) else { return };
                let map = if push.kind == PushKind::SMessage { &table.sharded } else { &table.channels };
                let target = map.get(&channel).cloned();
                (channel, push.data.get(1).cloned(), target)
            }
            PushKind::PMessage => {
                let (Some(pattern), Some(channel)) = (text(push.data.first()), text(push.data.get(1))) else { return };
                let target = table.patterns.get(&pattern).cloned();
                (channel, push.data.get(2).cloned(), target)
            }
            _ => return,
        }
    };
    let payload = match payload {
        Some(Value::BulkString(b)) => b,
        _ => return,
    };
    if let Some(subscriber) = target.and_then(|w| w.upgrade()) {
        subscriber.on_message(&channel, &payload);
    }
}

async fn subscriber(
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    mut topology: String,
) {
    let mut lost_at: Option<SystemTime> = None;
    let mut watch = tokio::time::interval(WATCH_EVERY);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                let conn = shared.conn.lock().unwrap().clone();
                if let Err(e) = apply(&conn, cmd).await {
                    // The subscription is in the routes: the next rebuild makes it.
                    tracing::warn!(error = %e, "Redis Cluster subscribe failed; retrying after the next reconnection");
                    lost_at.get_or_insert_with(SystemTime::now);
                    shared.subscribed.store(false, Ordering::Release);
                }
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                if push.kind == PushKind::Disconnection {
                    if lost_at.is_none() {
                        tracing::error!("lost a Redis Cluster node; reconnecting (local delivery continues)");
                        shared.stats.outages.fetch_add(1, Ordering::Relaxed);
                        lost_at = Some(SystemTime::now());
                    }
                    shared.subscribed.store(false, Ordering::Release);
                    continue;
                }
                deliver(&shared.routes, push);
            }
            _ = watch.tick() => {
                let conn = shared.conn.lock().unwrap().clone();
                let current = match slot_map(&conn).await {
                    Ok(map) => map,
                    Err(e) => {
                        tracing::debug!(error = %e, "Redis Cluster topology unknown for now");
                        continue;
                    }
                };
                let moved = current != topology;
                if !moved && (lost_at.is_none() || !all_primaries_answer(&conn).await) {
                    continue;
                }
                if moved {
                    tracing::warn!(from = %topology, to = %current, "Redis Cluster topology changed; reconnecting");
                    lost_at.get_or_insert_with(SystemTime::now);
                }
                if let Some(fresh) = rebuild(&shared, &mut pushes).await {
                    topology = fresh;
                    shared.subscribed.store(true, Ordering::Release);
                    let since = lost_at.take().unwrap_or_else(SystemTime::now);
                    tracing::info!("Redis Cluster connection rebuilt and resubscribed; cross-node traffic resumes");
                    let subscribers = shared.routes.lock().unwrap().subscribers();
                    for s in subscribers {
                        s.on_resubscribed(since);
                    }
                }
            }
        }
    }
}

/// Opens a fresh connection from the seeds, subscribes everything on it, and puts it
/// in place of the old one, whose pushes are dropped from now on. Returns its slot map.
async fn rebuild(shared: &Shared, pushes: &mut mpsc::UnboundedReceiver<PushInfo>) -> Option<String> {
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let conn = match open(&shared.seeds, push_tx).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "Redis Cluster reconnection failed; retrying");
            return None;
        }
    };
    let topology = slot_map(&conn).await.ok()?;
    if let Err(e) = subscribe_all(shared, &conn).await {
        tracing::warn!(error = %e, "Redis Cluster resubscription failed; retrying");
        return None;
    }
    *pushes = push_rx;
    *shared.conn.lock().unwrap() = conn;
    Some(topology)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seeds() {
        assert_eq!(cluster_seeds("redis://127.0.0.1:6379").unwrap(), None);
        assert_eq!(
            cluster_seeds("redis+cluster://h1:7000,h2:7001").unwrap(),
            Some(vec!["redis://h1:7000/".to_owned(), "redis://h2:7001/".to_owned()])
        );
        assert_eq!(cluster_seeds("rediss+cluster://u:p@h1:7000/").unwrap(), Some(vec!["rediss://u:p@h1:7000/".to_owned()]));
        assert!(cluster_seeds("redis+cluster://").is_err());
    }
}
