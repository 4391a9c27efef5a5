//! `server_stats`: what this node tells the UI every couple of seconds (the UI lists
//! servers by `serverId` and marks one unhealthy after 10 s of silence).

use super::report;
use super::watch::Watch;
use crate::io::{Namespace, Server};
use crate::protocol::Value;
use indexmap::IndexMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sends `server_stats` now and then every `interval`, for as long as the process lives.
pub(super) fn start(server: Server, admin: Namespace, watch: Arc<Watch>, server_id: Option<String>, interval: Duration) {
    let hostname = hostname();
    let server_id = server_id.unwrap_or_else(|| format!("{hostname}#{}", std::process::id()));
    let started = Instant::now();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(100)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let stats = stats(&server, &watch, &server_id, &hostname, started);
            let _ = admin.emit("server_stats", stats);
        }
    });
}

/// `{serverId, hostname, pid, uptime, clientsCount, pollingClientsCount,
/// aggregatedEvents, namespaces: [{name, socketsCount}]}`, for this node.
fn stats(server: &Server, watch: &Watch, server_id: &str, hostname: &str, started: Instant) -> Value {
    let namespaces = server.namespaces();
    let mut polling = HashSet::new();
    let mut list = Vec::with_capacity(namespaces.len());
    for ns in &namespaces {
        let sockets = ns.local_sockets();
        for socket in &sockets {
            if report::transport(socket.session()) == "polling" {
                polling.insert(socket.session().sid.clone());
            }
            watch.check_transport(socket);
        }
        let mut obj = IndexMap::new();
        obj.insert("name".to_owned(), Value::String(ns.name().to_owned()));
        obj.insert("socketsCount".to_owned(), Value::from(sockets.len() as u64));
        list.push(Value::Object(obj));
    }
    let mut obj = IndexMap::new();
    obj.insert("serverId".to_owned(), Value::from(server_id));
    obj.insert("hostname".to_owned(), Value::from(hostname));
    obj.insert("pid".to_owned(), Value::from(u64::from(std::process::id())));
    obj.insert("uptime".to_owned(), Value::from(started.elapsed().as_secs_f64()));
    obj.insert("clientsCount".to_owned(), Value::from(server.session_count() as u64));
    obj.insert("pollingClientsCount".to_owned(), Value::from(polling.len() as u64));
    obj.insert("aggregatedEvents".to_owned(), watch.take_counts());
    obj.insert("namespaces".to_owned(), Value::Array(list));
    Value::Object(obj)
}

/// The machine's name (Linux), else `HOSTNAME`, else `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}
