//! The UI's commands, as the official server takes them from Socket.IO v4 on:
//! `emit(nsp, filter, event, ...args)`, `join(nsp, room, filter)`,
//! `leave(nsp, room, filter)` and `_disconnect(nsp, close, filter)`. Without a filter
//! they act on every socket of the namespace; with one, on the sockets in that room (a
//! socket's id is a room, which is how the UI names one socket). They work across the
//! cluster (through the adapter) and only on namespaces that exist: the UI never creates
//! one.

use crate::adapter::Room;
use crate::io::{BroadcastOperator, Event, Namespace, Server, Socket};
use crate::protocol::Value;

/// Longest namespace, room or event name taken from the UI.
const MAX_NAME_LEN: usize = 1024;

/// Listens to the UI's commands on one admin socket.
pub(super) fn listen(server: &Server, admin_socket: &Socket) {
    // The command and the place of its filter argument.
    for (command, filter_at) in [("emit", 1), ("join", 2), ("leave", 2), ("_disconnect", 2)] {
        let server = server.clone();
        admin_socket.on(command, move |_socket: Socket, event: Event| {
            let action = parse(&server, command, filter_at, &event.args);
            async move {
                match action {
                    Some(action) => action.run().await,
                    None => tracing::debug!(command, "admin UI command ignored: bad arguments or unknown namespace"),
                }
            }
        });
    }
}

/// One command, checked and ready to run.
enum Action {
    Emit(BroadcastOperator, String, Vec<Value>),
    Join(BroadcastOperator, Room),
    Leave(BroadcastOperator, Room),
    Disconnect(BroadcastOperator, bool),
}

impl Action {
    async fn run(self) {
        let result = match self {
            Action::Emit(operator, event, args) => operator.emit(&event, args).map_err(|e| e.to_string()),
            Action::Join(operator, room) => operator.sockets_join([room]).await.map_err(|e| e.to_string()),
            Action::Leave(operator, room) => operator.sockets_leave([room]).await.map_err(|e| e.to_string()),
            Action::Disconnect(operator, close) => operator.disconnect_sockets(close).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "admin UI command failed");
        }
    }
}

/// Reads a command: its namespace (first argument; it must exist), its filter (none,
/// `null` or `""` for every socket, as the official server), then its own arguments.
fn parse(server: &Server, command: &str, filter_at: usize, args: &[Value]) -> Option<Action> {
    let nsp = name_at(args, 0)?;
    let ns: Namespace = server.namespaces().into_iter().find(|ns| ns.name() == nsp)?;
    let operator = match args.get(filter_at) {
        None | Some(Value::Null) => ns.broadcast(),
        Some(Value::String(filter)) if filter.is_empty() => ns.broadcast(),
        Some(Value::String(filter)) if filter.len() <= MAX_NAME_LEN => ns.to(filter.as_str()),
        Some(_) => return None,
    };
    match command {
        "emit" => Some(Action::Emit(operator, name_at(args, 2)?.to_owned(), args.get(3..).unwrap_or_default().to_vec())),
        "join" => Some(Action::Join(operator, Room::from(name_at(args, 1)?))),
        "leave" => Some(Action::Leave(operator, Room::from(name_at(args, 1)?))),
        "_disconnect" => Some(Action::Disconnect(operator, args.get(1)?.as_bool()?)),
        _ => None,
    }
}

/// A non-empty string argument of bounded length.
fn name_at(args: &[Value], index: usize) -> Option<&str> {
    args.get(index).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= MAX_NAME_LEN)
}
