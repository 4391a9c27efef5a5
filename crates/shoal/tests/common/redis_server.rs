//! A private `redis-server` on a free port, started by a test and killed when dropped,
//! so a test can also kill or restart it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct RedisServer {
    child: Child,
    pub url: String,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server is installed");
        // Redis says when it listens; its log goes on being drained so it never blocks.
        let mut log = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let read = log.read_line(&mut line).unwrap();
            assert!(read > 0, "redis-server on port {port} exited before it was ready");
            if line.contains("Ready to accept connections") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        RedisServer { child, url: format!("redis://127.0.0.1:{port}") }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
