// The app behind the shoal gateway in the gateway benchmark (bench/gateway.sh): the
// least a real app does for `echo(payload, ack)` through the event proxy. It reads the
// body (bounded), checks `x-shoal-signature` (HMAC-SHA256 of the raw body with the
// shared secret, docs/gateway.md), parses the JSON request and answers `{"ack": args}`,
// so the client's ack carries the same arguments. node:http with its defaults (keep-alive
// on), no dependencies.
//
//   node gateway-echo-app.mjs [--port 4000]     (SHOAL_SECRET: the [proxy] secret)
//
// Prints `LISTENING <port>` once it accepts requests. `GET /stats` answers what it saw:
// TCP connections accepted (shoal pools keep-alive connections, so this stays far below
// `requests`), requests answered, and requests refused (bad signature, bad body).

import { createHmac, timingSafeEqual } from "node:crypto";
import http from "node:http";

const i = process.argv.indexOf("--port");
const PORT = i > 0 ? Number(process.argv[i + 1]) : 4000;
const SECRET = process.env.SHOAL_SECRET ?? "change-me";
const MAX_BODY = 1 << 20;

const stats = { connections: 0, requests: 0, refused: 0, open: 0, max_open: 0 };

function signed(body, header) {
  if (typeof header !== "string") return false;
  const expected = Buffer.from("sha256=" + createHmac("sha256", SECRET).update(body).digest("hex"));
  const got = Buffer.from(header);
  return got.length === expected.length && timingSafeEqual(got, expected);
}

function send(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

function onEvent(req, body) {
  if (!signed(body, req.headers["x-shoal-signature"])) return [401, { error: "bad signature" }];
  let request;
  try {
    request = JSON.parse(body.toString("utf8"));
  } catch {
    return [400, { error: "not JSON" }];
  }
  if (request.event !== "echo" || !Array.isArray(request.args)) return [400, { error: "not an echo event" }];
  return [200, { ack: request.args }];
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/stats") return send(res, 200, stats);
  if (req.method !== "POST" || req.url !== "/socketio/event") {
    stats.refused++;
    return send(res, 404, { error: "not found" });
  }
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      stats.refused++;
      send(res, 413, { error: "too large" });
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on("end", () => {
    if (size > MAX_BODY) return;
    const [status, answer] = onEvent(req, Buffer.concat(chunks));
    if (status === 200) stats.requests++;
    else stats.refused++;
    send(res, status, answer);
  });
});

server.on("connection", (socket) => {
  stats.connections++;
  stats.open++;
  stats.max_open = Math.max(stats.max_open, stats.open);
  socket.on("close", () => stats.open--);
});

server.listen(PORT, "127.0.0.1", () => console.log(`LISTENING ${PORT}`));
process.on("SIGTERM", () => process.exit(0));
