//! What the engine calls when a session opens, sends a message or closes: the Socket.IO
//! layer's side of the engine's [`EngineHandler`], and the deadline by which a new
//! session must join a namespace.

use super::client::Client;
use super::ServerShared;
use crate::engine::{CloseReason, EngineHandler, Message, Session};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

/// Sessions that must join a namespace before a deadline. One task serves them all
/// (every deadline is the same timeout after a handshake, so they come in order),
/// instead of a timer per session.
#[derive(Default)]
pub(super) struct ConnectDeadlines {
    queue: std::sync::Mutex<std::collections::VecDeque<(tokio::time::Instant, Weak<Session>)>>,
    running: std::sync::atomic::AtomicBool,
}

impl ConnectDeadlines {
    fn watch(server: &Arc<ServerShared>, session: &Arc<Session>) {
        let deadline = tokio::time::Instant::now() + server.config.connect_timeout;
        server.connect_deadlines.queue.lock().unwrap().push_back((deadline, Arc::downgrade(session)));
        if !server.connect_deadlines.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep_connect_deadlines(Arc::downgrade(server)));
        }
    }
}

/// Closes the sessions whose connect deadline passed without a namespace joined.
async fn sweep_connect_deadlines(server: Weak<ServerShared>) {
    loop {
        let next = {
            let Some(server) = server.upgrade() else { return };
            let now = tokio::time::Instant::now();
            let mut expired = Vec::new();
            let next = {
                let mut q = server.connect_deadlines.queue.lock().unwrap();
                while q.front().is_some_and(|(d, _)| *d <= now) {
                    expired.push(q.pop_front().unwrap().1);
                }
                q.front().map(|(d, _)| *d)
            };
            for session in expired.iter().filter_map(Weak::upgrade) {
                let joined = session.handler_state::<Client>().is_some_and(|c| c.connected_once.load(Ordering::Acquire));
                if !joined && !session.is_closed() {
                    tracing::debug!(sid = %session.sid, "no namespace joined within connect timeout");
                    server.config.limits.hits.hit(crate::metrics::Limit::ConnectTimeout);
                    session.close(CloseReason::ForcedClose);
                }
            }
            next
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => {
                // Nothing to watch: stop, unless a session arrived meanwhile.
                let Some(server) = server.upgrade() else { return };
                let d = &server.connect_deadlines;
                d.running.store(false, Ordering::Release);
                if d.queue.lock().unwrap().is_empty() || d.running.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        }
    }
}


/// The engine's view of the Socket.IO layer.
pub(super) struct Handler {
    pub(super) server: Weak<ServerShared>,
}

impl EngineHandler for Handler {
    fn on_open(&self, session: &Arc<Session>) {
        let Some(server) = self.server.upgrade() else { return };
        let client = Arc::new(Client::new(self.server.clone()));
        session.set_handler_state(client.clone());
        if let Some(observer) = server.observer() {
            observer.session_opened();
        }
        ConnectDeadlines::watch(&server, session);
        if session.protocol() == crate::engine::ProtocolVersion::V3 {
            client.connect_implicitly(session);
        }
    }

    fn on_message(&self, session: &Arc<Session>, message: Message) {
        if let Some(client) = session.handler_state::<Client>() {
            // Handlers catch their own panics (`run_handler`); this is the net under app
            // code that runs before one starts (a dynamic namespace's matcher or init), so
            // a panic there closes this session and never unwinds into the transport.
            let run = std::panic::AssertUnwindSafe(|| client.on_message(session, message));
            if let Err(payload) = std::panic::catch_unwind(run) {
                tracing::error!(sid = %session.sid, panic = %super::panic_message(payload.as_ref()), "panic while handling a message; closing this session");
                session.close(CloseReason::ForcedClose);
            }
        }
    }

    fn on_close(&self, session: &Session, reason: CloseReason) {
        if let Some(server) = self.server.upgrade() {
            if reason == CloseReason::SlowClient {
                server.config.limits.hits.hit(crate::metrics::Limit::MaxBufferedBytes);
            }
            if let Some(observer) = server.observer() {
                observer.session_closed(reason);
            }
        }
        if let Some(client) = session.handler_state::<Client>() {
            client.on_close(reason);
        }
    }
}

