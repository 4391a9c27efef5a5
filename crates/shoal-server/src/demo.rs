//! The chat demo: a page at `/` that uses the official socket.io-client, and the server
//! side of it on the main namespace. Every message is broadcast to everyone.

use shoal::{Event, Server, Socket, Value};

pub const INDEX_HTML: &str = include_str!("../demo/index.html");
pub const CLIENT_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/socket.io.min.js"));

const MAX_NAME: usize = 32;
const MAX_TEXT: usize = 1000;

pub fn install(io: &Server) {
    let io2 = io.clone();
    io.on_connection(move |socket: Socket| {
        let io = io2.clone();
        async move {
            let _ = io.emit("users", io.of("/").local_socket_count());
            socket.on("chat message", |socket: Socket, ev: Event| async move {
                // Accept only the shape the page sends, cut to sane lengths.
                let (Some(name), Some(text)) =
                    (ev.arg(0).get("name").and_then(Value::as_str), ev.arg(0).get("text").and_then(Value::as_str))
                else {
                    return;
                };
                let name: String = name.chars().take(MAX_NAME).collect();
                let text: String = text.chars().take(MAX_TEXT).collect();
                let msg = serde_json_object(&name, &text);
                let _ = socket.ns().emit("chat message", msg);
            });
            let io = io.clone();
            socket.on_disconnect(move |_socket, _reason| {
                let io = io.clone();
                async move {
                    let _ = io.emit("users", io.of("/").local_socket_count());
                }
            });
        }
    });
}

fn serde_json_object(name: &str, text: &str) -> Value {
    Value::Object([("name".to_owned(), Value::from(name)), ("text".to_owned(), Value::from(text))].into_iter().collect())
}
