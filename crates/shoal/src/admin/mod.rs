//! The server side of the official Socket.IO admin UI (`@socket.io/admin-ui`, the
//! dashboard at <https://admin.socket.io>): what its `instrument(io, options)` does for a
//! Node.js server, for a shoal node.
//!
//! Attached to a [`Server`], it opens the admin namespace (`/admin` by default), checks
//! the UI's credentials (none, or a username and a bcrypt-hashed password), and serves
//! the protocol the UI speaks:
//! - every two seconds `server_stats` (this node: id, hostname, pid, uptime, session
//!   counts, sockets per namespace, connections and disconnections per second);
//! - on connect `config` (the features) and, in [`AdminMode::Development`],
//!   `all_sockets` (every socket of the cluster), then live updates: `socket_connected`,
//!   `socket_updated`, `room_joined`, `room_left`, `socket_disconnected`,
//!   `event_received`, `event_sent`;
//! - the UI's actions, unless read-only: `emit`, `join`, `leave`, `_disconnect`, each on
//!   a namespace and optionally filtered by a room (a socket id is a room).
//!
//! In a cluster every node reports itself and the UI aggregates them by server id: the
//! admin namespace's events travel through the adapter like any broadcast, and
//! `all_sockets` gathers the other nodes' sockets with a server-side emit.
//!
//! Files: `auth.rs` (credentials, the UI's session ids), `report.rs` (a socket as the UI
//! reads it, timestamps), `watch.rs` (the socket observer: live updates and counters),
//! `stats.rs` (the periodic `server_stats`), `actions.rs` (the UI's commands).
//!
//! ```no_run
//! use shoal::admin::{AdminAuth, AdminOptions, AdminUi};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let io = shoal::Server::builder().build();
//! let options = AdminOptions {
//!     auth: AdminAuth::Basic {
//!         username: "admin".into(),
//!         // bcrypt hash of the password (e.g. `htpasswd -nbBC 10 "" secret | cut -c2-`)
//!         password_hash: "$2b$10$heqvAkYMez.Va6Et2uXInOnkCT6/uQj1brkrbyG3LpopDklcq7ZOS".into(),
//!     },
//!     ..AdminOptions::default()
//! };
//! AdminUi::new(options)?.attach(&io)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! shoal::serve(listener, io.service(), std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod actions;
mod auth;
mod report;
mod stats;
mod watch;

use crate::io::{Namespace, Server};
use std::sync::Arc;
use std::time::Duration;

/// How the UI logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAuth {
    /// Anyone who reaches the admin namespace is let in. Use with care.
    None,
    /// A username and the bcrypt hash (`$2a$`, `$2b$`, `$2y$`) of the password. After a
    /// login the UI gets a session id (valid 24 hours, on the node that issued it) so
    /// that a page reload needs no password.
    Basic {
        /// The login name the UI's form must carry.
        username: String,
        /// The bcrypt hash of the password (never the password itself).
        password_hash: String,
    },
}

/// How much the UI is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminMode {
    /// Stats, every socket, and every lifecycle change and event as it happens (the
    /// official default when `NODE_ENV` is not `production`). Costs a broadcast to the
    /// admin namespace per event of every socket.
    Development,
    /// Stats only (socket counts per namespace, connections per second).
    Production,
}

/// The settings of the admin UI's server side, with their defaults.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    /// The admin namespace. Default `/admin`.
    pub namespace: String,
    /// How the UI logs in. Default [`AdminAuth::None`]; set it for any public node.
    pub auth: AdminAuth,
    /// If true, the UI may look but not act (no emit, join, leave, disconnect).
    /// Default false.
    pub readonly: bool,
    /// This node's id in the UI's server list. Default `<hostname>#<pid>` (unique per
    /// process even when several nodes share a host).
    pub server_id: Option<String>,
    /// Default [`AdminMode::Development`], as the official server without `NODE_ENV`.
    pub mode: AdminMode,
    /// How often `server_stats` is sent. Default 2 s (the UI marks a server unhealthy
    /// after 10 s without one).
    pub stats_interval: Duration,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            namespace: "/admin".to_owned(),
            auth: AdminAuth::None,
            readonly: false,
            server_id: None,
            mode: AdminMode::Development,
            stats_interval: Duration::from_secs(2),
        }
    }
}

/// Why the admin UI cannot be attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    /// The password hash is not a bcrypt hash.
    InvalidPasswordHash(String),
    /// The namespace name is empty or does not start with `/`.
    InvalidNamespace(String),
    /// Another observer (an admin UI) is already attached to this server.
    AlreadyAttached,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::InvalidPasswordHash(e) => write!(f, "the admin UI password must be a bcrypt hash: {e}"),
            AdminError::InvalidNamespace(n) => write!(f, "invalid admin namespace {n:?}: it must start with '/'"),
            AdminError::AlreadyAttached => f.write_str("an admin UI is already attached to this server"),
        }
    }
}
impl std::error::Error for AdminError {}

/// The admin UI's server side, ready to attach to a server.
pub struct AdminUi {
    options: AdminOptions,
}

impl AdminUi {
    /// Checks the options (the password hash must parse as bcrypt).
    pub fn new(options: AdminOptions) -> Result<AdminUi, AdminError> {
        if !options.namespace.starts_with('/') {
            return Err(AdminError::InvalidNamespace(options.namespace));
        }
        if let AdminAuth::Basic { password_hash, .. } = &options.auth {
            auth::check_hash(password_hash).map_err(AdminError::InvalidPasswordHash)?;
        }
        Ok(AdminUi { options })
    }

    /// Opens the admin namespace on `server`, watches its sockets and starts the stats
    /// timer. Call it inside a tokio runtime, before serving. The admin UI then lives as
    /// long as the process.
    pub fn attach(self, server: &Server) -> Result<(), AdminError> {
        let options = self.options;
        let admin = server.of(&options.namespace);
        let watch = Arc::new(watch::Watch::new(admin.downgrade(), options.mode == AdminMode::Development));
        if !server.set_observer(watch.clone()) {
            return Err(AdminError::AlreadyAttached);
        }
        let logins = Arc::new(auth::Logins::new(options.auth.clone()));
        auth::install(&admin, logins.clone());
        on_admin_connection(server, &admin, &options, logins);
        stats::start(server.clone(), admin, watch, options.server_id.clone(), options.stats_interval);
        tracing::info!(nsp = %options.namespace, mode = ?options.mode, readonly = options.readonly,
            auth = matches!(options.auth, AdminAuth::Basic { .. }), "admin UI attached");
        Ok(())
    }
}

/// What the UI gets when it connects: its session id, the features, the sockets; and
/// the handlers of its actions.
fn on_admin_connection(server: &Server, admin: &Namespace, options: &AdminOptions, logins: Arc<auth::Logins>) {
    let features = features(options);
    let development = options.mode == AdminMode::Development;
    let readonly = options.readonly;
    if development {
        report::answer_other_nodes(server, admin);
    }
    let server = server.clone();
    admin.on_connection(move |socket| {
        let (server, logins, features) = (server.clone(), logins.clone(), features.clone());
        async move {
            if let Some(session_id) = logins.take_issued(socket.id()) {
                let _ = socket.emit("session", session_id);
            }
            if !readonly {
                actions::listen(&server, &socket);
            }
            let mut config = indexmap::IndexMap::new();
            let features = features.iter().map(|f| crate::Value::from(*f)).collect();
            config.insert("supportedFeatures".to_owned(), crate::Value::Array(features));
            let _ = socket.emit("config", crate::Value::Object(config));
            if development {
                let sockets = report::all_sockets(&server, socket.ns()).await;
                let _ = socket.emit("all_sockets", crate::Value::Array(sockets));
            }
        }
    });
}

/// The features the UI may offer (names of the official server's `Feature` enum).
fn features(options: &AdminOptions) -> Arc<Vec<&'static str>> {
    let mut list = Vec::new();
    if !options.readonly {
        list.extend(["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]);
    }
    list.push("AGGREGATED_EVENTS");
    if options.mode == AdminMode::Development {
        list.push("ALL_EVENTS");
    }
    Arc::new(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let basic = |hash: &str| AdminOptions {
            auth: AdminAuth::Basic { username: "admin".into(), password_hash: hash.into() },
            ..AdminOptions::default()
        };
        assert!(matches!(AdminUi::new(basic("secret")), Err(AdminError::InvalidPasswordHash(_))));
        assert!(matches!(AdminUi::new(basic("")), Err(AdminError::InvalidPasswordHash(_))));
        let hash = bcrypt::hash("secret", 4).unwrap();
        assert!(AdminUi::new(basic(&hash)).is_ok());
        let other = AdminOptions { namespace: "admin".into(), ..AdminOptions::default() };
        assert_eq!(AdminUi::new(other).err(), Some(AdminError::InvalidNamespace("admin".into())));
    }

    #[test]
    fn features_follow_readonly_and_mode() {
        let all = features(&AdminOptions::default());
        assert_eq!(*all, ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"]);
        let quiet = features(&AdminOptions { readonly: true, mode: AdminMode::Production, ..AdminOptions::default() });
        assert_eq!(*quiet, ["AGGREGATED_EVENTS"]);
    }
}
