//! Who may use the admin namespace: a connect middleware that checks the UI's username
//! and bcrypt-hashed password, or a session id this node issued at an earlier login
//! (the UI keeps it in localStorage and sends it alone after a page reload).

use super::AdminAuth;
use crate::adapter::SocketId;
use crate::io::{ConnectError, Namespace, Socket};
use crate::protocol::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a session id issued at login stays valid.
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Session ids kept at most; the oldest goes first.
const MAX_SESSIONS: usize = 1000;
/// Longest username or password read from a client (bcrypt reads 72 bytes anyway).
const MAX_CREDENTIAL_LEN: usize = 1024;
/// bcrypt checks running at once: each costs tens of milliseconds of CPU by design, so a
/// flood of logins must not take every core.
const CONCURRENT_CHECKS: usize = 2;

/// Checks that `hash` is a bcrypt hash (the options are refused otherwise).
pub(super) fn check_hash(hash: &str) -> Result<(), String> {
    hash.parse::<bcrypt::HashParts>().map(|_| ()).map_err(|e| e.to_string())
}

/// The logins of this node: the credentials to check, the session ids issued.
pub(super) struct Logins {
    auth: AdminAuth,
    sessions: Mutex<HashMap<String, Instant>>,
    /// Session ids issued to sockets that are connecting; sent as `session` once they are.
    issued: Mutex<HashMap<SocketId, String>>,
    checks: tokio::sync::Semaphore,
}

impl Logins {
    pub(super) fn new(auth: AdminAuth) -> Logins {
        Logins {
            auth,
            sessions: Mutex::new(HashMap::new()),
            issued: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
        }
    }

    /// The session id issued to this socket at its login, if any (taken once).
    pub(super) fn take_issued(&self, id: &SocketId) -> Option<String> {
        self.issued.lock().unwrap().remove(id)
    }

    /// Lets the socket in or says why not ("invalid credentials", as the official server,
    /// which the UI shows in its login form).
    async fn check(&self, socket: &Socket) -> Result<(), ConnectError> {
        let AdminAuth::Basic { username, password_hash } = &self.auth else { return Ok(()) };
        let auth = &socket.handshake().auth;
        if let Some(session_id) = auth.get("sessionId").and_then(Value::as_str) {
            if self.session_valid(session_id) {
                return Ok(());
            }
        }
        let given_user = auth.get("username").and_then(Value::as_str);
        let given_password = auth.get("password").and_then(Value::as_str);
        if let (Some(user), Some(password)) = (given_user, given_password) {
            if user == username && password.len() <= MAX_CREDENTIAL_LEN && self.password_matches(password, password_hash).await {
                let session_id = crate::adapter::random_id(22);
                self.save_session(session_id.clone());
                let mut issued = self.issued.lock().unwrap();
                if issued.len() >= MAX_SESSIONS {
                    issued.clear(); // sockets that never finished connecting
                }
                issued.insert(socket.id().clone(), session_id);
                return Ok(());
            }
        }
        tracing::debug!(nsp = %socket.ns().name(), "admin UI login refused: invalid credentials");
        Err(ConnectError::new("invalid credentials"))
    }

    async fn password_matches(&self, password: &str, hash: &str) -> bool {
        let Ok(_permit) = self.checks.acquire().await else { return false };
        let (password, hash) = (password.to_owned(), hash.to_owned());
        tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false)).await.unwrap_or(false)
    }

    fn session_valid(&self, session_id: &str) -> bool {
        let sessions = self.sessions.lock().unwrap();
        sessions.get(session_id).is_some_and(|created| created.elapsed() < SESSION_TTL)
    }

    fn save_session(&self, session_id: String) {
        let mut sessions = self.sessions.lock().unwrap();
        sessions.retain(|_, created| created.elapsed() < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, created)| **created).map(|(id, _)| id.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(session_id, Instant::now());
    }
}

/// Puts the login check before every connection to the admin namespace.
pub(super) fn install(admin: &Namespace, logins: Arc<Logins>) {
    admin.middleware(move |socket| {
        let logins = logins.clone();
        async move { logins.check(&socket).await }
    });
}
