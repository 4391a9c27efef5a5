// The gateway: the example app of examples/gateway-node (its logic in plain HTTP
// handlers, no socket.io server) behind three shoal nodes behind round-robin nginx, driven
// by the official client. Login by token through the connect proxy, events acked by the
// app, room broadcasts from the app (its answers, the HTTP API, @socket.io/redis-emitter)
// reaching clients on every node, presence, the disconnect notification, and the app
// killed and restarted.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { ack, ack1, Clients, eventually, Recorder, unique, waitConnectError, waitDisconnect } from "./lib/client.mjs";
import { httpGet, startCluster, startNginx } from "./lib/lb.mjs";
import { freePort, REPO_ROOT } from "./lib/server.mjs";

const APP = path.join(REPO_ROOT, "examples", "gateway-node", "server.mjs");
const SECRET = "gateway-test-secret";
const TOKEN = "gateway-test-token";
const WS = { transports: ["websocket"] };

/** The example app on `port`; resolves once it printed LISTENING. */
function startApp(port, env) {
  const child = spawn(process.execPath, [APP], {
    env: { ...process.env, PORT: String(port), SHOAL_SECRET: SECRET, SHOAL_API_TOKEN: TOKEN, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const exited = new Promise((resolve) => child.on("exit", resolve));
  child.stderr.on("data", (c) => {
    log += c;
    if (process.env.SHOAL_TEST_VERBOSE) process.stderr.write(`[app] ${c}`);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the app did not start:\n${log}`)), 10_000);
    child.stdout.on("data", (c) => {
      if (/^LISTENING \d+/m.test(String(c))) {
        clearTimeout(timer);
        resolve({ child, kill: async () => { child.kill("SIGKILL"); await exited; } });
      }
    });
    exited.then(() => reject(new Error(`the app exited:\n${log}`)));
  });
}

async function postJson(url, body, token = TOKEN) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, body: await res.json() };
}

describe("gateway: a Node.js app behind three shoal nodes and round-robin nginx", () => {
  let cluster, nginx, app, appPort, dir, clients;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "shoal-gateway-"));
    appPort = await freePort();
    const appUrl = `http://127.0.0.1:${appPort}`;
    const config = path.join(dir, "shoal.toml");
    writeFileSync(
      config,
      `[proxy]
secret = "${SECRET}"
timeout = 3000

[[namespaces]]
name = "/"
connect = { url = "${appUrl}/socketio/connect" }
events = { url = "${appUrl}/socketio/event" }
disconnect = { url = "${appUrl}/socketio/disconnect" }

[api]
path = "/api"
tokens = ["${TOKEN}"]
`,
    );
    cluster = await startCluster({ count: 3, args: ["--config", config, "--trusted-proxies", "127.0.0.1"] });
    nginx = await startNginx("shoal-round-robin.conf", cluster.nodes);
    app = await startApp(appPort, { SHOAL_API: `${nginx.url}/api`, REDIS_URL: cluster.redis.url });
    clients = new Clients(nginx.url, WS);
  });

  after(async () => {
    clients?.closeAll();
    await app?.kill();
    await nginx?.stop();
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Connected sockets (one per token) until every node holds at least one. */
  async function onEveryNode(tokens) {
    const sockets = [];
    const nodes = new Set();
    for (const token of tokens) {
      const s = await clients.connect("/", { auth: { token } });
      const me = await ack1(s, "whoami");
      sockets.push({ socket: s, user: me.user, node: me.node, rec: new Recorder(s, `${me.user} on ${me.node}`) });
      nodes.add(me.node);
    }
    assert.deepEqual([...nodes].sort(), ["n1", "n2", "n3"], "websocket clients through round-robin nginx land on every node");
    return sockets;
  }

  test("the connect proxy refuses a bad token and no token with the app's message and data", async () => {
    for (const auth of [{ token: "nope" }, {}]) {
      const err = await waitConnectError(clients.socket("/", { auth }));
      assert.equal(err.message, "invalid token");
      assert.deepEqual(err.data, { code: "auth" });
    }
  });

  test("an accepted socket has the app's data and rooms; its events are acked by the app", async () => {
    const s = await clients.connect("/", { auth: { token: "token-alice" } });
    const me = await ack1(s, "whoami");
    assert.equal(me.user, "alice");
    assert.deepEqual(me.rooms, ["user:alice"]);
    assert.ok(["n1", "n2", "n3"].includes(me.node), me.node);
    assert.deepEqual(await ack(s, "echo", 1, "two", { three: [3] }, Buffer.from([1, 2, 3])), [1, "two", { three: [3] }, Buffer.from([1, 2, 3])]);
    assert.equal(await ack1(s, "rename", "alice2"), true);
    assert.equal((await ack1(s, "whoami")).user, "alice2");
    // A socket's events reach the app in order: each sees the previous one's effect.
    const room = unique("order");
    const acks = await Promise.all([ack1(s, "join", room), ack1(s, "whoami")]);
    assert.deepEqual(acks[1].rooms.sort(), [room, "user:alice"].sort());
    s.disconnect();
  });

  test("room broadcasts from the app reach the room on every node: its answer, the HTTP API, the redis-emitter", async () => {
    const tokens = ["token-alice", "token-bob", "token-carol", "token-dave", "token-erin", "token-frank"];
    const all = await onEveryNode(tokens);
    const room = unique("room");
    const members = all.filter((_, i) => i % 2 === 0 || i === 1);
    const others = all.filter((m) => !members.includes(m));
    for (const m of members) assert.equal(await ack1(m.socket, "join", room), true);

    // 1. The event proxy's answer: emit to the room.
    assert.equal(await ack1(members[0].socket, "chat message", { room, text: "hello" }), true);
    const msg = { from: members[0].user, room, text: "hello" };
    await Promise.all(members.map((m) => m.rec.until((evs) => evs.some((e) => e[0] === "chat message" && e[1].text === "hello"), "chat message")));

    // 2. The HTTP API (the app calls it while handling an event): to everyone.
    assert.equal(await ack1(members[1].socket, "announce", "news"), true);
    await Promise.all(all.map((m) => m.rec.until((evs) => evs.some((e) => e[0] === "announcement"), "announcement")));

    // 3. @socket.io/redis-emitter: to the room. Then a marker to everyone through the
    // same emitter connection is seen by all, so whatever was sent before has arrived.
    assert.equal(await ack1(members[2].socket, "shout", { room, text: "loud" }), true);
    await Promise.all(members.map((m) => m.rec.until((evs) => evs.some((e) => e[0] === "shout"), "shout")));
    const marker = unique("marker");
    await postJson(`${nginx.url}/api/emit`, { event: "marker", args: [marker] });
    await Promise.all(all.map((m) => m.rec.until((evs) => evs.some((e) => e[0] === "marker" && e[1] === marker), "marker")));

    for (const m of members) {
      assert.deepEqual(m.rec.named("chat message"), [[msg]], m.rec.label);
      assert.deepEqual(m.rec.named("shout"), [[{ from: members[2].user, text: "loud" }]], m.rec.label);
    }
    for (const m of others) {
      assert.deepEqual(m.rec.named("chat message"), [], m.rec.label);
      assert.deepEqual(m.rec.named("shout"), [], m.rec.label);
    }
    for (const m of all) assert.deepEqual(m.rec.named("announcement"), [[{ from: members[1].user, text: "news" }]], m.rec.label);

    // Presence, cluster-wide: through the app (which asks the API) and the API itself.
    const users = members.map((m) => m.user).sort();
    assert.deepEqual(await ack1(others[0].socket, "presence", room), users);
    const { status, body } = await postJson(`${nginx.url}/api/sockets`, { to: [room] });
    assert.equal(status, 200);
    assert.deepEqual(body.sockets.map((s) => s.id).sort(), members.map((m) => m.socket.id).sort());
    for (const s of body.sockets) assert.deepEqual(s.rooms.sort(), [room, `user:${s.data.user}`].sort());
    const rooms = await postJson(`${nginx.url}/api/rooms`, {});
    assert.equal(rooms.body.rooms[room], members.length);

    // Emit with acks through the API, collected from every node.
    for (const m of all) m.socket.on("question", (q, cb) => cb(`${m.user}:${q}`));
    const asked = await postJson(`${nginx.url}/api/emit`, { to: [room], event: "question", args: ["q1"], ack: true, timeout: 3000 });
    assert.equal(asked.status, 200);
    assert.deepEqual(asked.body.responses.sort(), users.map((u) => `${u}:q1`).sort());
    assert.equal(asked.body.timed_out, false);

    // Join and leave by the API, except one socket.
    const room2 = unique("room2");
    await postJson(`${nginx.url}/api/join`, { to: [room], except: [members[0].socket.id], rooms: [room2] });
    const inRoom2 = await postJson(`${nginx.url}/api/sockets`, { to: [room2] });
    assert.deepEqual(inRoom2.body.sockets.map((s) => s.id).sort(), members.slice(1).map((m) => m.socket.id).sort());
    await postJson(`${nginx.url}/api/leave`, { to: [room2], rooms: [room2] });
    assert.deepEqual((await postJson(`${nginx.url}/api/sockets`, { to: [room2] })).body.sockets, []);

    // Disconnect one socket by id through the API; the app is told, with the reason.
    const victim = others[0];
    const victimId = victim.socket.id;
    const gone = waitDisconnect(victim.socket);
    assert.deepEqual((await postJson(`${nginx.url}/api/disconnect`, { sockets: [victimId] })).body, { ok: true });
    assert.equal(await gone, "io server disconnect");
    const leaver = members[1];
    const leaverId = leaver.socket.id;
    leaver.socket.disconnect();
    await eventually(async () => {
      const notes = JSON.parse(await httpGet(`http://127.0.0.1:${appPort}/disconnects`));
      const left = notes.find((n) => n.socket === leaverId);
      left.rooms.sort();
      assert.deepEqual(left, { socket: leaverId, user: leaver.user, reason: "client namespace disconnect", rooms: [room, `user:${leaver.user}`].sort() });
      assert.equal(notes.find((n) => n.socket === victimId)?.reason, "server namespace disconnect");
    });
    for (const m of all) m.socket.disconnect();
  });

  test("the API refuses a wrong token, an unknown method and a bad body", async () => {
    assert.equal((await postJson(`${nginx.url}/api/emit`, { event: "x" }, "wrong")).status, 401);
    assert.equal((await postJson(`${nginx.url}/api/nope`, {})).status, 404);
    const bad = await postJson(`${nginx.url}/api/emit`, { args: [] });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error, "bad_request");
  });

  test("the app refuses requests that shoal did not sign", async () => {
    const res = await fetch(`http://127.0.0.1:${appPort}/socketio/connect`, { method: "POST", body: JSON.stringify({ auth: { token: "token-alice" } }) });
    assert.equal(res.status, 401);
  });

  test("the app killed: clients get errors, no node crashes; restarted: everything works again", async () => {
    const s = await clients.connect("/", { auth: { token: "token-bob" } });
    assert.equal((await ack1(s, "whoami")).user, "bob");
    await app.kill();

    assert.deepEqual(await ack1(s, "whoami"), { error: "app_unavailable", message: "the app is unavailable" });
    const err = await waitConnectError(clients.socket("/", { auth: { token: "token-bob" } }));
    assert.equal(err.message, "the app is unavailable");
    assert.deepEqual(err.data, { code: "app_unavailable" });

    app = await startApp(appPort, { SHOAL_API: `${nginx.url}/api`, REDIS_URL: cluster.redis.url });
    assert.equal((await ack1(s, "whoami")).user, "bob", "the same socket works again");
    const s2 = await clients.connect("/", { auth: { token: "token-carol" } });
    assert.equal((await ack1(s2, "whoami")).user, "carol");

    for (const node of cluster.nodes) {
      assert.equal(node.proc.exited, false, `${node.id} is running`);
      const metrics = await httpGet(`${node.url}/metrics`);
      assert.match(metrics, /shoal_gateway_proxy_requests_total\{proxy="event"\} \d+/);
    }
    const errors = await Promise.all(cluster.nodes.map(async (n) => {
      const text = await httpGet(`${n.url}/metrics`);
      return [...text.matchAll(/shoal_gateway_proxy_errors_total\{proxy="(\w+)",error="app_unavailable"\} (\d+)/g)].map((m) => [m[1], Number(m[2])]);
    }));
    const total = (kind) => errors.flat().filter(([k]) => k === kind).reduce((a, [, n]) => a + n, 0);
    assert.equal(total("event"), 1, "one event failed");
    assert.equal(total("connect"), 1, "one connect failed");
    s.disconnect();
    s2.disconnect();
  });
});
