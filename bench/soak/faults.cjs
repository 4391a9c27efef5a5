// Faults on a small shoal cluster, measured with the official socket.io-client.
//
//   node bench/soak/faults.cjs --shoal bench/target/release/bench-shoal [--nodes 3]
//        [--clients 300] [--rate 10] [--pause 30] [--out FILE]
//
// Starts its own redis-server (no persistence, a free port) and N bench-shoal nodes on it
// (Redis adapter, connection state recovery 120 s), spreads the clients over the nodes
// (WebSocket only, so no sticky routing is needed), and has one publisher emit
// `broadcast({seq, t})` every 1/rate s; every node relays it to room `bench` as `tick`.
// Then, one phase after the other, each with a fault:
//   node-kill      kill -9 of the last node; its clients reconnect to the others
//   redis-kill     kill -9 of redis-server, restarted 5 s later (empty: no persistence)
//   redis-pause    SIGSTOP on redis-server for --pause s, then SIGCONT
//   node-kill-2    kill -9 of another node, after the Redis faults
// For each phase: published, expected (= published x clients: recovery must bring every
// event to every client, connected or reconnected), delivered (distinct), duplicates,
// disconnects, reconnects recovered / not recovered, clients left without a session,
// and the time to resume: from the fault (and from its end) to the first event that
// reached every client live (within 1 s). Prints one JSON object; exits 1 if the cluster
// could not start. Every wait is bounded; the whole run ends within --max-secs.
"use strict";

const path = require("node:path");
const fs = require("node:fs");
const net = require("node:net");
const { spawn } = require("node:child_process");
const { io } = require(path.join(__dirname, "../../tests/js/node_modules/socket.io-client"));

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const SHOAL = arg("--shoal", path.join(__dirname, "../target/release/bench-shoal"));
const REDIS = arg("--redis-server", "redis-server");
const NODES = Number(arg("--nodes", "3"));
const CLIENTS = Number(arg("--clients", "300"));
const RATE = Number(arg("--rate", "10"));
const PAUSE_S = Number(arg("--pause", "30"));
const OUT = arg("--out", null);
const MAX_SECS = Number(arg("--max-secs", "600"));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Date.now();
const children = new Set();

function stopAll() {
  for (const c of children) {
    try {
      process.kill(c.pid, "SIGCONT");
      c.kill("SIGKILL");
    } catch {}
  }
}
process.on("exit", stopAll);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));
setTimeout(() => {
  console.error(`faults: exceeded --max-secs ${MAX_SECS}`);
  process.exit(3);
}, MAX_SECS * 1000).unref();

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
    s.on("error", reject);
  });
}

/// Spawns a process and waits (bounded) until a line of its stdout matches.
function start(cmd, args, ready, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    child.on("exit", () => children.delete(child));
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`${cmd} not ready in ${timeoutMs} ms: ${buf.slice(-500)}`)), timeoutMs);
    const onData = (d) => {
      buf += d;
      if (ready.test(buf)) {
        clearTimeout(timer);
        resolve(child);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", (d) => (buf += d));
    child.on("exit", (code) => reject(new Error(`${cmd} exited (${code}): ${buf.slice(-500)}`)));
  });
}

function startRedis(port) {
  return start(REDIS, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], /Ready to accept connections/);
}

async function startNode(port, redisPort) {
  return start(SHOAL, ["--port", String(port), "--threads", "1", "--redis", `redis://127.0.0.1:${redisPort}`, "--recovery", "120000"], /LISTENING/);
}

async function main() {
  const redisPort = await freePort();
  let redis = await startRedis(redisPort);
  const ports = [];
  const nodes = [];
  for (let i = 0; i < NODES; i++) {
    const p = await freePort();
    ports.push(p);
    nodes.push(await startNode(p, redisPort));
  }
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const alive = new Set(urls);

  // Clients: each keeps every seq it got (live or recovered), and when each arrived.
  const clients = [];
  for (let i = 0; i < CLIENTS; i++) {
    const home = urls[i % urls.length];
    const socket = io(home, {
      transports: ["websocket"],
      reconnectionDelay: 200,
      reconnectionDelayMax: 1000,
      randomizationFactor: 0.2,
      timeout: 5000,
    });
    const c = { socket, got: new Map(), dups: 0, disconnects: [], connects: [], home };
    // The official client reconnects to its URL; a killed node's clients move to a live one.
    socket.io.on("reconnect_attempt", () => {
      if (!alive.has(socket.io.uri)) {
        const live = [...alive];
        socket.io.uri = live[i % live.length];
      }
    });
    socket.on("connect", () => {
      c.connects.push({ t: now(), recovered: socket.recovered });
      if (!socket.recovered) socket.emit("join", "bench");
    });
    socket.on("disconnect", (reason) => c.disconnects.push({ t: now(), reason }));
    socket.on("tick", (payload) => {
      if (!payload || typeof payload.seq !== "number") return;
      if (c.got.has(payload.seq)) c.dups++;
      else c.got.set(payload.seq, now());
    });
    clients.push(c);
  }
  const deadline = now() + 60000;
  while (clients.some((c) => !c.socket.connected) && now() < deadline) await sleep(100);
  const connected = clients.filter((c) => c.socket.connected).length;
  if (connected !== CLIENTS) throw new Error(`only ${connected}/${CLIENTS} clients connected`);
  await sleep(1000); // the joins land

  // The publisher: one more client, on the first node (never killed).
  const publisher = io(urls[0], { transports: ["websocket"] });
  const published = new Map(); // seq -> publish time
  let seq = 0;
  await new Promise((r, j) => {
    publisher.on("connect", r);
    setTimeout(() => j(new Error("publisher did not connect")), 10000);
  });
  const timer = setInterval(() => {
    if (!publisher.connected) return; // never buffered: only what was sent counts
    seq++;
    published.set(seq, now());
    publisher.emit("broadcast", { seq, t: now() });
  }, 1000 / RATE);

  const phases = [];
  async function phase(name, fault, observeMs) {
    const start = now();
    const firstSeq = seq + 1;
    const disc0 = clients.map((c) => c.disconnects.length);
    const conn0 = clients.map((c) => c.connects.length);
    await sleep(3000); // before the fault
    const faultStart = now();
    const faultEnd = await fault();
    await sleep(observeMs);
    const lastSeq = seq;
    const end = now();
    await sleep(5000); // late arrivals and recoveries
    const seqs = [];
    for (let s = firstSeq; s <= lastSeq; s++) if (published.has(s)) seqs.push(s);
    let delivered = 0;
    let dups = 0;
    for (const c of clients) for (const s of seqs) if (c.got.has(s)) delivered++;
    for (const c of clients) dups += c.dups;
    // Live: an event that reached every client within 1 s of being sent.
    const live = (s) => clients.every((c) => c.got.has(s) && c.got.get(s) - published.get(s) <= 1000);
    const firstLiveAfter = seqs.find((s) => published.get(s) >= faultStart && live(s));
    const missedLive = seqs.filter((s) => published.get(s) >= faultStart && !live(s)).length;
    let disconnects = 0, recovered = 0, notRecovered = 0;
    clients.forEach((c, i) => {
      disconnects += c.disconnects.length - disc0[i];
      for (const k of c.connects.slice(conn0[i])) k.recovered ? recovered++ : notRecovered++;
    });
    const r = {
      phase: name,
      window_s: (end - start) / 1000,
      fault_s: (faultEnd - faultStart) / 1000,
      published: seqs.length,
      expected: seqs.length * CLIENTS,
      delivered,
      ratio: seqs.length ? delivered / (seqs.length * CLIENTS) : null,
      dropped: seqs.length * CLIENTS - delivered,
      duplicates_total: dups,
      disconnects,
      reconnects_recovered: recovered,
      reconnects_not_recovered: notRecovered,
      clients_disconnected_at_end: clients.filter((c) => !c.socket.connected).length,
      events_not_live_everywhere: missedLive,
      resume_from_fault_start_s: firstLiveAfter ? (published.get(firstLiveAfter) - faultStart) / 1000 : null,
      resume_from_fault_end_s: firstLiveAfter ? Math.max(0, published.get(firstLiveAfter) - faultEnd) / 1000 : null,
    };
    phases.push(r);
    console.error(JSON.stringify(r));
  }

  await phase("baseline", async () => now(), 5000);
  await phase("node-kill", async () => {
    const victim = NODES - 1;
    alive.delete(urls[victim]);
    nodes[victim].kill("SIGKILL");
    return now();
  }, 20000);
  await phase("redis-kill", async () => {
    redis.kill("SIGKILL");
    await sleep(5000);
    redis = await startRedis(redisPort);
    return now();
  }, 20000);
  await phase("redis-pause", async () => {
    process.kill(redis.pid, "SIGSTOP");
    await sleep(PAUSE_S * 1000);
    process.kill(redis.pid, "SIGCONT");
    return now();
  }, 20000);
  if (NODES >= 3) {
    await phase("node-kill-2", async () => {
      const victim = NODES - 2;
      alive.delete(urls[victim]);
      nodes[victim].kill("SIGKILL");
      return now();
    }, 20000);
  }

  clearInterval(timer);
  const result = { params: { nodes: NODES, clients: CLIENTS, rate_per_s: RATE, pause_s: PAUSE_S, recovery_ms: 120000, redis_persistence: false }, phases };
  const text = JSON.stringify(result, null, 2);
  if (OUT) fs.writeFileSync(OUT, text + "\n");
  console.log(text);
  publisher.close();
  for (const c of clients) c.socket.close();
  process.exit(0);
}

main().catch((e) => {
  console.error(`faults: ${e.stack || e}`);
  process.exit(1);
});
