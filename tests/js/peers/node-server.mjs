// A Node.js Socket.IO 4.8 server on the official Redis adapter (@socket.io/redis-adapter
// 8.3, `redis` client v4 with a duplicated subscriber): the Node side of a mixed cluster.
// It answers the same events as shoal's test app (crates/shoal/examples/testapp.rs), for
// the subset the mixed-cluster suite drives, so a test can ask either kind of node:
//
//   echo, join, leave, set-data, whoami            (ack)
//   broadcast {to, except, fromSocket, volatile, local, event, args}          (ack [])
//   broadcast-with-ack {to, except, timeout, event, args}   → {ok, responses}
//   fetch-sockets {to, except}       → [{id, rooms (sorted), data}] sorted by id
//   sockets-join / sockets-leave {to, except, rooms}, disconnect-sockets {to, close}
//   server-side-emit {event, args, ack}  → {ok, responses} | {ok: false, error}
//                                    (waits at most --requests-timeout for acks)
//   server-events                    → [[event, ...args]] received from other nodes
//
// Server-side events `ping` and `hello` from other nodes are logged; `ping` is answered
// with "pong from <node id>". Namespace /custom greets with `welcome`.
//
//   node peers/node-server.mjs --port 0 --redis redis://127.0.0.1:6379 [--node-id node]
//                              [--requests-timeout MS] [--parser msgpack]
// With `--parser msgpack` it speaks socket.io-msgpack-parser to its clients.
//   node peers/node-server.mjs --port 0 --redis-cluster 127.0.0.1:7000,127.0.0.1:7001
//                              --sharded dynamic      (createShardedAdapter on a Redis
//                              Cluster, `redis` v4 createCluster; static | dynamic |
//                              dynamic-private)
// Prints `LISTENING <port>` once ready; stops on SIGTERM.

import { createAdapter, createShardedAdapter } from "@socket.io/redis-adapter";
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { createClient, createCluster } from "redis";
import { Server } from "socket.io";
import msgpackParser from "socket.io-msgpack-parser";

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    redis: { type: "string" },
    "node-id": { type: "string", default: "node" },
    "requests-timeout": { type: "string", default: "5000" },
    parser: { type: "string", default: "json" },
    "redis-cluster": { type: "string" },
    sharded: { type: "string" },
  },
});
if (!args.redis && !args["redis-cluster"]) {
  console.error("--redis URL or --redis-cluster host:port,... is required");
  process.exit(2);
}
if (!["json", "msgpack"].includes(args.parser)) {
  console.error(`--parser ${args.parser}: use json or msgpack`);
  process.exit(2);
}
const nodeId = args["node-id"];

let pubClient;
let subClient;
if (args["redis-cluster"]) {
  const rootNodes = args["redis-cluster"].split(",").map((hostPort) => ({ url: `redis://${hostPort}` }));
  pubClient = createCluster({ rootNodes });
  subClient = pubClient.duplicate();
} else {
  pubClient = createClient({ url: args.redis });
  subClient = pubClient.duplicate();
}
// A lost connection is reported as an error event; without a listener it would crash.
for (const client of [pubClient, subClient]) {
  client.on("error", (err) => console.error(`[redis] ${err.message}`));
}
await Promise.all([pubClient.connect(), subClient.connect()]);

const adapter = args.sharded
  ? createShardedAdapter(pubClient, subClient, { subscriptionMode: args.sharded })
  : createAdapter(pubClient, subClient, { requestsTimeout: Number(args["requests-timeout"]) });
const httpServer = createServer();
const io = new Server(httpServer, {
  adapter,
  ...(args.parser === "msgpack" ? { parser: msgpackParser } : {}),
});

const serverLog = [];
for (const event of ["ping", "hello"]) {
  io.on(event, (...eventArgs) => {
    const callback = typeof eventArgs.at(-1) === "function" ? eventArgs.pop() : null;
    serverLog.push([event, ...eventArgs]);
    callback?.(`pong from ${nodeId}`);
  });
}

const list = (v) => (v == null ? [] : Array.isArray(v) ? v : [v]);

/** io.to(spec.to).except(spec.except), or from `socket` (sender excluded). */
function target(spec = {}, socket = null) {
  let op = socket && spec.fromSocket ? socket.broadcast : io;
  const to = list(spec.to);
  if (to.length) op = op.to(to);
  const except = list(spec.except);
  if (except.length) op = op.except(except);
  return op;
}

io.on("connection", (socket) => {
  socket.on("echo", (...a) => {
    const callback = typeof a.at(-1) === "function" ? a.pop() : null;
    if (callback) callback(...a);
    else socket.emit("echo", ...a);
  });
  socket.on("join", (rooms, callback) => {
    socket.join(list(rooms));
    callback([...socket.rooms].sort());
  });
  socket.on("leave", (rooms, callback) => {
    for (const r of list(rooms)) socket.leave(r);
    callback([...socket.rooms].sort());
  });
  socket.on("set-data", (data, callback) => {
    socket.data = data;
    callback();
  });
  socket.on("whoami", (callback) => callback(nodeId));
  socket.on("server-events", (callback) => callback(serverLog));

  socket.on("broadcast", (spec, callback) => {
    let op = target(spec, socket);
    if (spec.volatile) op = op.volatile;
    if (spec.local) op = op.local;
    op.emit(spec.event ?? "tick", ...list(spec.args));
    callback();
  });
  socket.on("broadcast-with-ack", (spec, callback) => {
    target(spec)
      .timeout(spec.timeout ?? 1000)
      .emit(spec.event ?? "tick", ...list(spec.args), (err, responses) => {
        if (err) callback({ ok: false, error: err.message, responses });
        else callback({ ok: true, responses });
      });
  });
  socket.on("fetch-sockets", async (spec, callback) => {
    const sockets = await target(spec).fetchSockets();
    const out = sockets.map((s) => ({ id: s.id, rooms: [...s.rooms].sort(), data: s.data ?? null }));
    out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    callback(out);
  });
  socket.on("sockets-join", (spec, callback) => {
    target(spec).socketsJoin(list(spec.rooms));
    callback();
  });
  socket.on("sockets-leave", (spec, callback) => {
    target(spec).socketsLeave(list(spec.rooms));
    callback();
  });
  socket.on("disconnect-sockets", (spec, callback) => {
    callback();
    target(spec).disconnectSockets(spec.close === true);
  });
  socket.on("server-side-emit", (spec, callback) => {
    const event = spec.event ?? "ping";
    const eventArgs = list(spec.args);
    if (spec.ack === false) {
      io.serverSideEmit(event, ...eventArgs);
      callback({ ok: true, responses: [] });
      return;
    }
    // Node's adapter waits at most its requestsTimeout (--requests-timeout), not spec.timeout.
    io.serverSideEmit(event, ...eventArgs, (err, responses) => {
      if (err) callback({ ok: false, error: err.message, responses });
      else callback({ ok: true, responses });
    });
  });
});

io.of("/custom").on("connection", (socket) => {
  socket.emit("welcome", "/custom");
});

httpServer.listen(Number(args.port), "127.0.0.1", () => {
  console.log(`LISTENING ${httpServer.address().port}`);
});

process.on("SIGTERM", async () => {
  io.close();
  await Promise.allSettled([pubClient.quit(), subClient.quit()]);
  process.exit(0);
});
