// A chat app behind the shoal gateway. shoal holds every Socket.IO connection (on as
// many nodes as you like, behind any load balancer); this app keeps the logic in three
// plain HTTP handlers that shoal calls, and publishes with shoal's HTTP API and with
// @socket.io/redis-emitter. No socket.io server, no sticky sessions, no cluster module.
//
//   POST /socketio/connect     a client connects: log it in by the token in its `auth`
//   POST /socketio/event       a client event: answer the ack, join rooms, emit to rooms
//   POST /socketio/disconnect  a client left (kept in a list, GET /disconnects shows it)
//
// Every request from shoal carries `x-shoal-signature: sha256=<hex>`, an HMAC-SHA256 of
// the body with the shared secret; anything else is refused with 401.
//
// Environment: PORT (4000), SHOAL_SECRET (the `[proxy] secret` of shoal.toml),
// SHOAL_API (e.g. http://127.0.0.1:3000/api), SHOAL_API_TOKEN (one of `[api] tokens`),
// REDIS_URL (the Redis of the shoal cluster, for the emitter; optional).
// Prints `LISTENING <port>` once it accepts requests.

import { Emitter } from "@socket.io/redis-emitter";
import { createHmac, timingSafeEqual } from "node:crypto";
import http from "node:http";
import { createClient } from "redis";

const PORT = Number(process.env.PORT ?? 4000);
const SECRET = process.env.SHOAL_SECRET ?? "change-me";
const API = process.env.SHOAL_API ?? "http://127.0.0.1:3000/api";
const API_TOKEN = process.env.SHOAL_API_TOKEN ?? "change-me-too";
const MAX_BODY = 1 << 20;

// The "user database": a login token per user.
const USERS = new Map([
  ["token-alice", "alice"],
  ["token-bob", "bob"],
  ["token-carol", "carol"],
  ["token-dave", "dave"],
  ["token-erin", "erin"],
  ["token-frank", "frank"],
]);

const disconnects = [];

// ---- publishing: shoal's HTTP API, and the Redis emitter ---------------------------------

async function api(method, body) {
  const res = await fetch(`${API}/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${API_TOKEN}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const answer = await res.json();
  if (!res.ok) throw new Error(`shoal API ${method}: ${res.status} ${answer.error}: ${answer.message}`);
  return answer;
}

let emitter = null;
if (process.env.REDIS_URL) {
  const redis = createClient({ url: process.env.REDIS_URL });
  redis.on("error", (err) => console.error("redis:", err.message));
  await redis.connect();
  emitter = new Emitter(redis);
}

// ---- the app's logic ----------------------------------------------------------------------

function validRoom(room) {
  return typeof room === "string" && /^[a-z0-9-]{1,64}$/.test(room);
}

/** A client connects: the token in `auth` says who it is. */
function onConnect({ auth }) {
  const user = USERS.get(auth?.token);
  if (!user) return { reject: { message: "invalid token", data: { code: "auth" } } };
  return { accept: { data: { user }, rooms: [`user:${user}`] } };
}

/** One client event; the answer tells shoal what to do. */
async function onEvent({ socket, node, event, args, data, rooms }) {
  const user = data?.user;
  switch (event) {
    case "whoami":
      return { ack: [{ user, node, rooms }] };
    case "echo":
      return { ack: args };
    case "join": {
      const [room] = args;
      if (!validRoom(room)) return { ack: [false] };
      return { join: [room], ack: [true] };
    }
    case "leave":
      return { leave: [args[0]], ack: [true] };
    case "chat message": {
      // To the room, through shoal's answer: every node delivers it.
      const [{ room, text } = {}] = args;
      if (!validRoom(room) || typeof text !== "string") return { ack: [false] };
      return {
        emit: [{ to: [room], event: "chat message", args: [{ from: user, room, text: text.slice(0, 1000) }] }],
        ack: [true],
      };
    }
    case "announce": {
      // To everyone, through the HTTP publish API.
      const [text] = args;
      await api("emit", { event: "announcement", args: [{ from: user, text: String(text) }] });
      return { ack: [true] };
    }
    case "shout": {
      // To a room, through @socket.io/redis-emitter.
      const [{ room, text } = {}] = args;
      if (!emitter) return { ack: [{ error: "no emitter (REDIS_URL unset)" }] };
      emitter.to(room).emit("shout", { from: user, text });
      return { ack: [true] };
    }
    case "presence": {
      // Who is in a room, cluster-wide, through the HTTP publish API.
      const [room] = args;
      const { sockets } = await api("sockets", { to: [room] });
      return { ack: [sockets.map((s) => s.data?.user).sort()] };
    }
    case "rename": {
      const [name] = args;
      return { data: { ...data, user: String(name) }, ack: [true] };
    }
    case "quit":
      return { ack: ["bye"], disconnect: true };
    default:
      return { ack: [{ error: `unknown event ${event}` }] };
  }
}

// ---- HTTP -----------------------------------------------------------------------------------

function signed(body, header) {
  if (typeof header !== "string" || !header.startsWith("sha256=")) return false;
  const expected = Buffer.from(createHmac("sha256", SECRET).update(body).digest("hex"));
  const got = Buffer.from(header.slice(7));
  return got.length === expected.length && timingSafeEqual(got, expected);
}

function send(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/disconnects") return send(res, 200, disconnects);
  if (req.method !== "POST") return send(res, 405, { error: "POST only" });
  const chunks = [];
  let size = 0;
  req.on("data", (c) => {
    size += c.length;
    if (size > MAX_BODY) req.destroy();
    else chunks.push(c);
  });
  req.on("end", async () => {
    const body = Buffer.concat(chunks);
    if (!signed(body, req.headers["x-shoal-signature"])) return send(res, 401, { error: "bad signature" });
    try {
      const request = JSON.parse(body);
      switch (req.url) {
        case "/socketio/connect":
          return send(res, 200, onConnect(request));
        case "/socketio/event":
          return send(res, 200, await onEvent(request));
        case "/socketio/disconnect":
          disconnects.push({ socket: request.socket, user: request.data?.user, reason: request.reason, rooms: request.rooms });
          if (disconnects.length > 1000) disconnects.shift();
          return send(res, 200, {});
        default:
          return send(res, 404, { error: "not found" });
      }
    } catch (err) {
      console.error(err);
      return send(res, 500, { error: err.message });
    }
  });
});

server.keepAliveTimeout = 60_000;
server.listen(PORT, "127.0.0.1", () => {
  console.log(`LISTENING ${server.address().port}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
