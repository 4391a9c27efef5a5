//! The gateway: shoal holds the connections, the app keeps its logic behind plain HTTP.
//! - `connect.rs`: the connect proxy (a connect middleware asking the app);
//! - `events.rs`: the event proxy (each socket's events, in order) and the disconnect
//!   notification;
//! - `api.rs`: the HTTP publish API (emit, join, leave, disconnect, presence);
//! - `app.rs`: one bounded, signed request to the app; `sign.rs`: the signature;
//!   `wire.rs`: JSON (binary as base64) and MessagePack bodies; `metrics.rs`.
//!
//! All of it is library calls: middlewares, event handlers and broadcast operators of
//! `shoal::Server`. docs/gateway.md has the formats and the failure behaviour.

pub mod api;
pub mod app;
pub mod connect;
pub mod events;
pub mod metrics;
pub mod sign;
pub mod wire;

use crate::config::file::{Encoding, NamespaceConfig};
use crate::config::GatewayConfig;
use app::{AppShared, Proxy};
use connect::ConnectProxy;
use events::EventsProxy;
use shoal::{Namespace, Server, Socket};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The proxies of one `[[namespaces]]` entry.
struct NamespaceGateway {
    connect: Option<Arc<ConnectProxy>>,
    events: Option<Arc<EventsProxy>>,
    disconnect: Option<Proxy>,
    max_queued: usize,
}

impl NamespaceGateway {
    fn install(self: &Arc<Self>, ns: &Namespace) {
        // One middleware: the connect proxy, then the socket's event handlers. They are
        // set here, before the CONNECT answer goes out, because the client may send its
        // first event at once, before connection handlers would have run.
        let me = self.clone();
        ns.middleware(move |socket: Socket| {
            let me = me.clone();
            async move {
                if let Some(connect) = &me.connect {
                    connect.check(socket.clone()).await?;
                }
                events::attach(&socket, me.events.clone(), me.disconnect.clone(), me.connect.clone(), me.max_queued);
                Ok(())
            }
        });
        if let Some(connect) = self.connect.clone() {
            ns.on_connection(move |socket: Socket| {
                connect.connected(&socket);
                std::future::ready(())
            });
        }
    }
}

/// Sets up the configured proxies on `io` and returns the publish API, if configured.
pub fn install(io: &Server, config: &GatewayConfig) -> Result<Option<api::Api>, String> {
    let metrics = metrics::GatewayMetrics::new();
    io.register_metrics(|r| metrics.register(r));
    let p = &config.proxy;
    let node = io.engine().config().node_id.clone();
    let shared = AppShared::new(p.secret.as_deref().unwrap_or(""), node, p.max_in_flight, metrics.clone());
    let slots = |_: &str| Arc::new(Semaphore::new(p.max_in_flight));
    let (connect_slots, event_slots, disconnect_slots) = (slots("connect"), slots("event"), slots("disconnect"));
    let ms = |t: Option<u64>| Duration::from_millis(t.unwrap_or(p.timeout));

    // A name set twice would get two middlewares and two event handlers: every connect
    // and event would go to the app twice.
    let mut names = std::collections::HashSet::new();
    for (i, ns) in config.namespaces.iter().enumerate() {
        let at = |kind: &str, e: String| format!("namespaces[{i}].{kind}: {e}");
        if let Some(name) = &ns.name {
            if !names.insert(name.as_str()) {
                return Err(at("name", format!("{name:?} is configured twice")));
            }
        }
        let connect = match &ns.connect {
            Some(c) => {
                let proxy = Proxy::new("connect", &c.url, ms(c.timeout), c.max_body.unwrap_or(p.max_body), Encoding::Json, connect_slots.clone(), shared.clone())
                    .map_err(|e| at("connect", e))?;
                Some(Arc::new(ConnectProxy::new(proxy, c.headers.clone().unwrap_or_else(|| p.headers.clone()))))
            }
            None => None,
        };
        let events = match &ns.events {
            Some(e) => {
                let encoding = e.encoding.unwrap_or(p.encoding);
                let proxy = Proxy::new("event", &e.url, ms(e.timeout), e.max_body.unwrap_or(p.max_body), encoding, event_slots.clone(), shared.clone())
                    .map_err(|err| at("events", err))?;
                let names = if e.names.iter().any(|n| n == "*") { None } else { Some(e.names.iter().cloned().collect()) };
                Some(Arc::new(EventsProxy { proxy, names }))
            }
            None => None,
        };
        let disconnect = match &ns.disconnect {
            Some(d) => Some(
                Proxy::new("disconnect", &d.url, ms(d.timeout), p.max_body, Encoding::Json, disconnect_slots.clone(), shared.clone())
                    .map_err(|e| at("disconnect", e))?,
            ),
            None => None,
        };
        let gateway = Arc::new(NamespaceGateway { connect, events, disconnect, max_queued: p.max_queued_events });
        install_on(io, ns, gateway)?;
    }

    Ok(config.api.as_ref().map(|a| {
        let prefix = if a.listen.is_some() { String::new() } else { a.path.clone() };
        api::Api::new(io.clone(), prefix, a.tokens.clone(), a.max_body, Duration::from_millis(a.ack_timeout), metrics.clone())
    }))
}

fn install_on(io: &Server, ns: &NamespaceConfig, gateway: Arc<NamespaceGateway>) -> Result<(), String> {
    match (&ns.name, &ns.pattern) {
        (Some(name), _) => {
            gateway.install(&io.of(name));
            tracing::info!(namespace = %name, connect = gateway.connect.is_some(), events = gateway.events.is_some(), disconnect = gateway.disconnect.is_some(), "gateway on namespace");
        }
        (None, Some(pattern)) => {
            // Over the whole name (docs/gateway.md): `/org-[a-z]+` must not accept `/x/org-a`.
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
            tracing::info!(%pattern, "gateway on dynamic namespaces");
            io.dynamic_namespace(move |name, _auth| re.is_match(name), move |ns| gateway.install(ns));
        }
        (None, None) => return Err("a namespace needs `name` or `pattern`".into()),
    }
    Ok(())
}

/// Re-exported for the site.
pub use api::Api;

