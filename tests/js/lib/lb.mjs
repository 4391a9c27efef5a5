// A shoal cluster behind a real load balancer, for the lb-*.test.mjs suites:
// - `startCluster()`: a private redis-server and N `shoal` nodes (ids n1..nN) joined
//   through it, each on a free loopback port;
// - `startNginx()` / `startHaproxy()`: the balancer, from one of the configs in deploy/
//   with its example addresses replaced by the nodes' ports, as a foreground child
//   process with its files in a temp dir;
// - `metrics()`: a node's /metrics as numbers;
// - `runLoad()`: many socket.io-client clients that join rooms, send events with acks and
//   receive room broadcasts for a while, counting every failure.
//
// Missing nginx/haproxy/redis-server is an error, never a skip: scripts/test.sh installs them.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { io } from "socket.io-client";
import { startRedis } from "./redis.mjs";
import { AXUM_CLUSTER_BIN, canConnect, freePort, REPO_ROOT, SHOAL_BIN, sleep, startShoal } from "./server.mjs";

/**
 * What a node can be: the `shoal` binary, or an axum app that embeds the library and
 * turns the cluster on with one builder call. Every lb suite runs against both, with
 * the same expectations.
 */
export const NODE_KINDS = [
  { name: "shoal binary", bin: SHOAL_BIN },
  { name: "axum embedding", bin: AXUM_CLUSTER_BIN },
];

export const DEPLOY = path.join(REPO_ROOT, "deploy");
const LOG_TAIL_BYTES = 16 * 1024;

/** Example node addresses used by the deploy configs, in node order. */
const EXAMPLE_NODES = ["10.0.0.1:3000", "10.0.0.2:3000", "10.0.0.3:3000"];

function findBinary(name) {
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    const p = path.join(dir, name);
    if (spawnSync("test", ["-x", p]).status === 0) return p;
  }
  throw new Error(`${name} not found; install it (Debian: apt-get install ${name}; scripts/test.sh does)`);
}

/**
 * Redis plus `count` shoal nodes n1..n<count>.
 * options: { count = 3, args: extra flags for every node, pingInterval, pingTimeout,
 *            bin: the node program (default the shoal binary; see NODE_KINDS) }
 * Returns { redis, nodes: [{ id, port, url, proc, stop, kill }], stop() }.
 */
export async function startCluster(options = {}) {
  const redis = await startRedis();
  const cluster = { redis, nodes: [] };
  cluster.startNode = async (id, extra = []) => {
    const node = await startShoal({
      bin: options.bin,
      extraArgs: [
        "--redis", redis.url,
        "--node-id", id,
        "--ping-interval", String(options.pingInterval ?? 5000),
        "--ping-timeout", String(options.pingTimeout ?? 5000),
        "--log", process.env.SHOAL_TEST_VERBOSE ? "info,shoal=debug" : "warn",
        ...(options.args ?? []),
        ...extra,
      ],
    });
    node.id = id;
    return node;
  };
  cluster.stop = async () => {
    await Promise.all(cluster.nodes.map((n) => n.stop()));
    await redis.stop();
  };
  try {
    // One after the other: each registers before the next one starts.
    for (let i = 1; i <= (options.count ?? 3); i++) cluster.nodes.push(await cluster.startNode(`n${i}`));
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** A node's /metrics as { "name{labels}": number }. */
export async function metrics(node) {
  const text = await httpGet(`${node.url}/metrics`);
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

/** The sum of one metric over nodes. */
export async function metricSum(nodes, name) {
  const all = await Promise.all(nodes.map(metrics));
  return all.reduce((sum, m) => sum + (m[name] ?? 0), 0);
}

export function httpGet(url, options = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, options, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve(body));
    });
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${url}: timed out`)));
    req.on("error", reject);
  });
}

/** Replaces the deploy configs' example node addresses with the cluster's ports. */
function pointAtNodes(config, nodes) {
  EXAMPLE_NODES.forEach((example, i) => {
    if (nodes[i]) config = config.replaceAll(example, `127.0.0.1:${nodes[i].port}`);
  });
  return config;
}

class Balancer {
  constructor(name, port, dir, bin, args) {
    this.name = name;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.dir = dir;
    this.log = "";
    this.exited = false;
    this.child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.exitPromise = new Promise((resolve) => this.child.on("exit", (code, signal) => {
      this.exited = true;
      resolve({ code, signal });
    }));
    const keep = (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-LOG_TAIL_BYTES);
      if (process.env.SHOAL_TEST_VERBOSE) process.stderr.write(`[${name}] ${chunk}`);
    };
    this.child.stdout.on("data", keep);
    this.child.stderr.on("data", keep);
  }

  async ready() {
    const deadline = Date.now() + 10_000;
    while (!(await canConnect(this.port))) {
      if (this.exited) throw new Error(`${this.name} exited before it was ready:\n${this.log}`);
      if (Date.now() > deadline) throw new Error(`${this.name} not listening on ${this.port} after 10 s:\n${this.log}`);
      await sleep(50);
    }
    return this;
  }

  async stop() {
    if (!this.exited) {
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), 3000);
      await this.exitPromise;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}


/**
 * nginx with deploy/nginx/<file> (http-context config) in front of `nodes`.
 * Its access log (status and upstream of each request) is at `balancer.accessLog`.
 */
export async function startNginx(file, nodes) {
  const bin = findBinary("nginx");
  const dir = mkdtempSync(path.join(os.tmpdir(), "shoal-nginx-"));
  const port = await freePort();
  let site = readFileSync(path.join(DEPLOY, "nginx", file), "utf8");
  site = pointAtNodes(site, nodes).replace(/listen 80;/, `listen 127.0.0.1:${port};`);
  writeFileSync(path.join(dir, "site.conf"), site);
  const accessLog = path.join(dir, "access.log");
  const root = process.getuid?.() === 0;
  writeFileSync(
    path.join(dir, "nginx.conf"),
    `${root ? "user root;\n" : ""}worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 8192; }
http {
    client_body_temp_path ${dir}/body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    log_format shoal '$status $request_method $upstream_addr $upstream_status "$request_uri"';
    access_log ${accessLog} shoal;
    include ${dir}/site.conf;
}
`,
  );
  const b = new Balancer("nginx", port, dir, bin, ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-g", "daemon off;"]);
  b.accessLog = accessLog;
  b.errorLog = path.join(dir, "error.log");
  return b.ready();
}

/**
 * HAProxy with deploy/haproxy/<file> in front of `nodes`. `edit(config)` may change the
 * config text further (e.g. to send the PROXY protocol).
 */
export async function startHaproxy(file, nodes, edit = (c) => c) {
  const bin = findBinary("haproxy");
  const dir = mkdtempSync(path.join(os.tmpdir(), "shoal-haproxy-"));
  const port = await freePort();
  let config = readFileSync(path.join(DEPLOY, "haproxy", file), "utf8");
  config = pointAtNodes(config, nodes)
    .replace(/bind :80\b/, `bind 127.0.0.1:${port}`)
    // No syslog, and fewer file descriptors than a production box, in a test; the rest
    // of the file is used as it is.
    .replace(/^\s*log .*$/gm, "")
    .replace(/maxconn \d+/, "maxconn 5000");
  config = edit(config);
  writeFileSync(path.join(dir, "haproxy.cfg"), config);
  const check = spawnSync(bin, ["-c", "-f", path.join(dir, "haproxy.cfg")], { encoding: "utf8" });
  if (check.status !== 0) throw new Error(`haproxy -c failed:\n${check.stdout}${check.stderr}\n${config}`);
  const b = new Balancer("haproxy", port, dir, bin, ["-db", "-f", path.join(dir, "haproxy.cfg")]);
  return b.ready();
}

/** Counts nginx access-log lines by status, for Engine.IO requests. */
export function nginxStatuses(balancer) {
  const counts = {};
  for (const line of readFileSync(balancer.accessLog, "utf8").split("\n")) {
    if (!line.includes("/socket.io/")) continue;
    const status = line.split(" ")[0];
    counts[status] = (counts[status] ?? 0) + 1;
  }
  return counts;
}

/** An http.Agent whose connections leave from `localAddress` (e.g. 127.0.0.7). */
export function agentFrom(localAddress) {
  return new http.Agent({ keepAlive: true, localAddress });
}

/** `whoami` through the socket: `{ address, node }`. */
export function whoami(socket, ms = 5000) {
  return socket.timeout(ms).emitWithAck("whoami");
}

/**
 * Connects `polling` polling-only clients and `upgrade` clients on the default path
 * (polling, then WebSocket) to `url`, puts them in `rooms` rooms, and for `durationMs`
 * has every client send an `echo` with an ack every `echoEveryMs`, and one member of
 * each room send a `room message` every second. Resolves with what happened:
 * { clients, echoes, echoFailures, roomSent, roomMissing, disconnects, connectErrors,
 *   upgraded, nodes: {nodeId: clientCount}, close() }.
 * Failures are counted, not thrown, so the test can assert on all of them at once.
 */
export async function runLoad(url, options = {}) {
  const { polling = 200, upgrade = 200, rooms = 10, durationMs = 20_000, echoEveryMs = 2000, agent } = options;
  const r = {
    clients: [],
    echoes: 0,
    echoSent: 0,
    /** Acked echoes per client index. */
    echoesOf: new Map(),
    echoFailures: [],
    roomSent: 0,
    roomMissing: 0,
    disconnects: [],
    connectErrors: [],
    upgraded: 0,
    nodes: {},
  };
  let stopping = false;
  const make = (i, transports) => {
    const socket = io(url, {
      forceNew: true,
      reconnection: false,
      ...(transports ? { transports } : {}),
      ...(agent ? { agent } : {}),
    });
    const c = { i, socket, room: `room-${i % rooms}`, kind: transports ? "polling" : "upgrade", received: new Map() };
    socket.on("connect_error", (err) => r.connectErrors.push(`${c.kind} #${i}: ${err.message} ${err.description?.message ?? err.description ?? ""}`.trim()));
    socket.on("disconnect", (reason, details) => {
      if (!stopping) r.disconnects.push(`${c.kind} #${i} (${c.node}): ${reason} ${details?.description?.message ?? details?.message ?? ""}`);
    });
    socket.on("room message", (room, payload) => {
      c.received.set(`${room}/${payload.seq}`, true);
    });
    return c;
  };

  // Connect, learn the owner node, join the room: in batches, as real clients trickle in.
  const setup = async (c) => {
    if (!c.socket.connected) {
      await new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`client #${c.i}: not connected after 15 s`)), 15_000);
        c.socket.once("connect", () => {
          clearTimeout(t);
          resolve();
        });
        c.socket.once("connect_error", (e) => {
          clearTimeout(t);
          // What the transport saw (an HTTP status, or the socket error), not only "xhr post error".
          const seen = e.description?.message ?? e.description ?? "";
          reject(new Error(`client #${c.i} (${c.kind}): ${e.message} ${seen}`.trim(), { cause: e }));
        });
      });
    }
    const me = await whoami(c.socket);
    c.node = me.node;
    r.nodes[me.node] = (r.nodes[me.node] ?? 0) + 1;
    const joined = await c.socket.timeout(5000).emitWithAck("join", c.room);
    if (joined !== true) throw new Error(`client #${c.i}: join answered ${joined}`);
  };
  // Interleaved, so both kinds arrive during the whole ramp.
  const total = polling + upgrade;
  const kinds = [];
  for (let p = 0, u = 0; p < polling || u < upgrade; ) {
    if (p < polling) kinds.push(["polling"]), p++;
    if (u < upgrade) kinds.push(null), u++;
  }
  for (let i = 0; i < total; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(total, i + 50); j++) batch.push(make(j, kinds[j]));
    r.clients.push(...batch);
    await Promise.all(batch.map(setup));
  }
  // The upgrade clients move to WebSocket shortly after connecting.
  const upgradeDeadline = Date.now() + 10_000;
  const isUpgraded = (c) => c.socket.io.engine?.transport?.name === "websocket";
  while (r.clients.some((c) => c.kind === "upgrade" && !isUpgraded(c)) && Date.now() < upgradeDeadline) await sleep(100);
  r.upgraded = r.clients.filter((c) => c.kind === "upgrade" && isUpgraded(c)).length;

  const byRoom = new Map();
  for (const c of r.clients) {
    if (!byRoom.has(c.room)) byRoom.set(c.room, []);
    byRoom.get(c.room).push(c);
  }
  const sent = [];
  const pending = [];
  const started = Date.now();
  let tick = 0;
  const echoTimer = setInterval(() => {
    // Spread the echoes over the interval: a slice of the clients every 100 ms.
    const slices = Math.max(1, Math.round(echoEveryMs / 100));
    const slice = tick++ % slices;
    for (const c of r.clients) {
      if (c.i % slices !== slice || !c.socket.connected) continue;
      const payload = { i: c.i, t: Date.now(), s: "x".repeat(32) };
      r.echoSent++;
      pending.push(
        c.socket
          .timeout(10_000)
          .emitWithAck("echo", payload)
          .then((back) => {
            if (back?.i === payload.i && back.t === payload.t) {
              r.echoes++;
              r.echoesOf.set(c.i, (r.echoesOf.get(c.i) ?? 0) + 1);
            } else r.echoFailures.push(`#${c.i}: echo answered ${JSON.stringify(back)}`);
          })
          .catch((e) => r.echoFailures.push(`#${c.i}: ${e.message}`)),
      );
    }
  }, 100);
  let seq = 0;
  const roomTimer = setInterval(() => {
    seq++;
    for (const [room, members] of byRoom) {
      const sender = members[seq % members.length];
      if (!sender.socket.connected) continue;
      sent.push({ room, seq, members });
      pending.push(
        sender.socket
          .timeout(10_000)
          .emitWithAck("room message", room, { seq, from: sender.i })
          .catch((e) => r.echoFailures.push(`room message from #${sender.i}: ${e.message}`)),
      );
    }
  }, 1000);
  await sleep(durationMs - (Date.now() - started));
  clearInterval(echoTimer);
  clearInterval(roomTimer);
  await Promise.all(pending);
  await sleep(1500); // the last broadcasts on their way
  r.roomSent = sent.length;
  for (const { room, seq, members } of sent) {
    for (const m of members) if (!m.received.has(`${room}/${seq}`)) r.roomMissing++;
  }
  r.durationMs = Date.now() - started;
  r.close = async () => {
    stopping = true;
    for (const c of r.clients) c.socket.disconnect();
    await sleep(200);
  };
  return r;
}

/** One line on what a run did, for the test log. */
export function summary(name, r, extra = {}) {
  return `${name}: ${r.clients.length} clients (${r.upgraded} upgraded to WebSocket) on ${JSON.stringify(r.nodes)}, ` +
    `${r.echoes} echoes, ${r.roomSent} room broadcasts (${r.roomMissing} deliveries missing), ` +
    `${r.disconnects.length} disconnects, ${r.connectErrors.length} connect errors, ${r.echoFailures.length} failed acks in ${r.durationMs} ms ` +
    JSON.stringify(extra);
}
