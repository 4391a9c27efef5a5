//! The cluster: what makes many nodes one server behind any load balancer.
//!
//! - `client_addr.rs`: the client's real address from trusted proxies (`X-Forwarded-For`,
//!   `Forwarded`; the PROXY protocol is read by [`crate::serve`]), with CIDR lists;
//! - `membership.rs` (feature `redis`): which nodes exist and where they listen, kept in
//!   Redis through the adapter's link: registration with a TTL, renewal, id clash
//!   refusal, the cluster secret, graceful leave;
//! - `forward.rs` (feature `redis`): a polling request or WebSocket upgrade for a session
//!   another node owns goes to that owner (streamed bodies, byte pipes, a deadline on
//!   every hop, a loop marker, the client address carried);
//! - `ingress.rs`: the door every request of the service passes: address, forward or
//!   serve here, liveness probe, counters.
//!
//! An app turns all of it on with one builder call, [`crate::ServerBuilder::cluster`],
//! then `start().await`; the service it mounts (`io.service()`) does the rest.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal::cluster::{ClusterOptions, TrustedProxies};
//! let redis = shoal::adapter::redis::RedisLink::connect("redis://127.0.0.1:6379").await?;
//! let io = shoal::Server::builder()
//!     .node_id("n1")
//!     .trusted_proxies(TrustedProxies::parse(&["10.0.0.0/8"])?)
//!     .cluster(ClusterOptions::new(redis, "10.0.0.5:3000"))
//!     .start()
//!     .await?;
//! # let _ = io; Ok(()) }
//! ```

mod client_addr;
#[cfg(feature = "redis")]
mod forward;
mod ingress;
#[cfg(feature = "redis")]
mod membership;

pub use client_addr::{resolve as resolve_client_addr, TrustedProxies, FORWARDED_BY, FORWARDED_CLIENT};
pub(crate) use ingress::Ingress;
pub use ingress::{probe_answer, ServiceBody, PROBE_HEADER};
#[cfg(feature = "redis")]
pub use forward::Failure as ForwardFailure;
#[cfg(feature = "redis")]
pub use membership::{default_advertise, Membership};

#[cfg(feature = "redis")]
use std::sync::Arc;
#[cfg(feature = "redis")]
use std::time::Duration;

/// How a node joins its cluster, for [`crate::ServerBuilder::cluster`].
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use shoal::cluster::ClusterOptions;
/// use std::time::Duration;
///
/// let redis = shoal::adapter::redis::RedisLink::connect("redis://redis:6379").await?;
/// let mut options = ClusterOptions::new(redis, "10.0.0.5:3000");
/// options.key = "chat".into();
/// options.requests_timeout = Duration::from_secs(2);
/// let io = shoal::Server::builder().node_id("n1").cluster(options).start().await?;
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
/// shoal::serve(listener, io.service(), async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// io.drain(Duration::from_secs(2)).await;
/// # Ok(()) }
/// ```
#[cfg(feature = "redis")]
#[derive(Clone)]
pub struct ClusterOptions {
    /// The node's link to Redis. The adapter and the membership share it: one set of
    /// Redis connections per node.
    pub redis: Arc<crate::adapter::redis::RedisLink>,
    /// `host:port` at which the other nodes reach this node's Socket.IO service (its
    /// internal address). [`default_advertise`] derives one from a listen address.
    pub advertise: String,
    /// Prefix of every Redis channel and key (the `key` option of
    /// `@socket.io/redis-adapter`). Default `socket.io`.
    pub key: String,
    /// Time this node's registration lives without renewal (renewed every quarter of
    /// it): a node that dies drops out of the others' view after this long. Default 10 s.
    pub membership_ttl: Duration,
    /// How long a cluster request (fetch_sockets, server_side_emit with acks) waits for
    /// the other nodes. Default 5 s.
    pub requests_timeout: Duration,
    /// Which Redis adapter carries the cluster's messages. Default classic Pub/Sub.
    pub adapter: ClusterAdapter,
}

/// The Redis adapter of a cluster node.
#[cfg(feature = "redis")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClusterAdapter {
    /// Classic Pub/Sub (`PUBLISH`/`PSUBSCRIBE`), as `createAdapter` of
    /// `@socket.io/redis-adapter`: one Redis, or a Redis Cluster (where every message
    /// reaches every Redis node).
    #[default]
    Classic,
    /// Sharded Pub/Sub (`SPUBLISH`/`SSUBSCRIBE`), as `createShardedAdapter`: needs a
    /// Redis Cluster link; the channels spread over its primaries.
    Sharded(crate::adapter::redis::SubscriptionMode),
}

#[cfg(feature = "redis")]
impl ClusterOptions {
    /// The defaults, with the two settings that have none.
    pub fn new(redis: Arc<crate::adapter::redis::RedisLink>, advertise: impl Into<String>) -> ClusterOptions {
        ClusterOptions {
            redis,
            advertise: advertise.into(),
            key: "socket.io".into(),
            membership_ttl: Duration::from_secs(10),
            requests_timeout: Duration::from_secs(5),
            adapter: ClusterAdapter::Classic,
        }
    }
}

#[cfg(feature = "redis")]
impl std::fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("redis", &self.redis.url())
            .field("advertise", &self.advertise)
            .field("key", &self.key)
            .field("membership_ttl", &self.membership_ttl)
            .field("requests_timeout", &self.requests_timeout)
            .field("adapter", &self.adapter)
            .finish()
    }
}

/// Joins the cluster (registers this node, or fails on an id clash) and makes the
/// forwarder for the ingress.
#[cfg(feature = "redis")]
pub(crate) async fn join(options: &ClusterOptions, engine: &crate::engine::EngineConfig, metrics: Arc<crate::metrics::NodeMetrics>) -> Result<ingress::ClusterIngress, String> {
    let request = membership::JoinRequest { key: &options.key, node_id: &engine.node_id, advertise: &options.advertise, ttl: options.membership_ttl, path: &engine.path };
    let membership = Membership::join(options.redis.clone(), request).await?;
    // A forwarded long-polling GET is answered within a ping interval.
    let polling_timeout = engine.ping_interval + engine.ping_timeout + Duration::from_secs(5);
    let forwarder = forward::Forwarder::new(membership.clone(), polling_timeout, metrics);
    Ok(ingress::ClusterIngress { membership, forwarder })
}
