// The official Socket.IO admin UI (@socket.io/admin-ui) against shoal nodes started with
// --admin-ui: first its protocol, spoken by the official socket.io-client as the UI
// speaks it (login, server_stats, all_sockets, live updates, the join / leave / emit /
// _disconnect commands), on one node and on a Redis cluster of two; then the UI itself,
// its built static files from the npm package served on a local port and opened in
// headless Chromium.

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { createRequire } from "node:module";
import bcrypt from "bcryptjs";
import { chromium } from "playwright-core";
import { startShoal, freePort, sleep } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";
import { Clients, ack1, waitConnect, waitConnectError, waitDisconnect, waitEvent } from "./lib/client.mjs";

const USERNAME = "admin";
const PASSWORD = "correct horse battery staple";
// Cost 4 keeps the test fast; the server reads the cost from the hash.
const PASSWORD_HASH = bcrypt.hashSync(PASSWORD, 4);
const WAIT_MS = 5000;

function adminArgs(extra = []) {
  return ["--admin-ui", "--admin-ui-username", USERNAME, "--admin-ui-password-hash", PASSWORD_HASH, ...extra];
}

/** Connects to /admin and records every event it receives, from the first packet on. */
function adminSocket(clients, auth, nsp = "/admin") {
  const socket = clients.socket(nsp, { auth });
  const seen = [];
  socket.onAny((event, ...args) => seen.push({ event, args }));
  socket.seen = seen;
  return socket;
}

/** The next recorded (or future) event matching `pred`, within `ms`. */
async function nextEvent(socket, event, pred = () => true, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let from = 0;
  while (Date.now() < deadline) {
    for (; from < socket.seen.length; from++) {
      const e = socket.seen[from];
      if (e.event === event && pred(...e.args)) return e.args;
    }
    await sleep(20);
  }
  throw new Error(`no "${event}" matching within ${ms} ms; got: ${socket.seen.map((e) => e.event).join(", ")}`);
}

function findSocket(list, id) {
  return list.find((s) => s.id === id);
}

describe("admin UI protocol, one node", () => {
  let server;
  let clients;

  before(async () => {
    server = await startShoal({ extraArgs: adminArgs() });
    clients = new Clients(server.url);
  });

  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("wrong or missing credentials are refused with connect_error 'invalid credentials'", async () => {
    for (const auth of [{ username: USERNAME, password: "wrong" }, { username: "root", password: PASSWORD }, {}, { sessionId: "made-up" }]) {
      const socket = clients.socket("/admin", { auth });
      const err = await waitConnectError(socket, `login with ${JSON.stringify(auth)}`);
      assert.equal(err.message, "invalid credentials");
    }
  });

  test("a login gets session, config, all_sockets and server_stats listing a socket and its rooms", async () => {
    const user = await clients.connect("/");
    assert.equal(await ack1(user, "join", "room-a"), true);

    const admin = adminSocket(clients, { username: USERNAME, password: PASSWORD });
    await waitConnect(admin, "admin login");

    const [sessionId] = await nextEvent(admin, "session");
    assert.match(sessionId, /^[A-Za-z0-9]{16,}$/);

    const [config] = await nextEvent(admin, "config");
    for (const f of ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"]) {
      assert.ok(config.supportedFeatures.includes(f), `feature ${f} in ${config.supportedFeatures}`);
    }

    const [sockets] = await nextEvent(admin, "all_sockets");
    const s = findSocket(sockets, user.id);
    assert.ok(s, `all_sockets lists ${user.id}: ${JSON.stringify(sockets.map((x) => x.id))}`);
    assert.equal(s.nsp, "/");
    assert.deepEqual([...s.rooms].sort(), [user.id, "room-a"].sort());
    assert.match(s.clientId, /^[0-9a-f]{12}$/);
    assert.ok(["polling", "websocket"].includes(s.transport), s.transport);
    assert.deepEqual(s.data, {});
    assert.equal(s.handshake.address, "127.0.0.1");
    assert.equal(s.handshake.query.EIO, "4");
    assert.equal(typeof s.handshake.issued, "number");
    assert.equal(typeof s.handshake.headers, "object");
    assert.equal(s.handshake.auth, undefined, "the handshake's auth is not shown");
    // The admin socket is a socket too; its password is nowhere in what the UI gets.
    assert.ok(findSocket(sockets, admin.id), "the admin socket is listed");
    assert.ok(!JSON.stringify(sockets).includes(PASSWORD), "the password is not in all_sockets");

    const [stats] = await nextEvent(admin, "server_stats");
    assert.equal(typeof stats.serverId, "string");
    assert.equal(typeof stats.hostname, "string");
    assert.equal(stats.pid, server.proc.child.pid);
    assert.equal(typeof stats.uptime, "number");
    assert.ok(stats.clientsCount >= 2, `clientsCount ${stats.clientsCount}`);
    assert.equal(typeof stats.pollingClientsCount, "number");
    assert.ok(Array.isArray(stats.aggregatedEvents));
    const main = stats.namespaces.find((n) => n.name === "/");
    assert.ok(main && main.socketsCount >= 1, JSON.stringify(stats.namespaces));
    assert.ok(stats.namespaces.find((n) => n.name === "/admin")?.socketsCount >= 1);
    // Connections are counted per second, as the dashboard's histogram reads them.
    const stats2 = await nextEvent(admin, "server_stats", (st) => st.aggregatedEvents.some((e) => e.type === "rawConnection"), 5000).catch(() => [stats]);
    const raw = [stats, stats2[0]].flatMap((st) => st.aggregatedEvents).filter((e) => e.type === "rawConnection");
    assert.ok(raw.length >= 1 && raw.every((e) => e.count >= 1 && e.timestamp % 1000 === 0), JSON.stringify(raw));

    // The session id alone lets the UI back in (a page reload).
    const again = adminSocket(clients, { sessionId });
    await waitConnect(again, "login with the session id");

    user.disconnect();
    admin.disconnect();
    again.disconnect();
  });

  test("live updates: socket_connected, room_joined, event_received, room_left, socket_disconnected", async () => {
    const admin = adminSocket(clients, { username: USERNAME, password: PASSWORD });
    await waitConnect(admin, "admin login");
    await nextEvent(admin, "all_sockets");

    const user = await clients.connect("/");
    const userId = user.id; // the client forgets it on disconnect
    const [connected, when] = await nextEvent(admin, "socket_connected", (s) => s.id === user.id);
    assert.equal(connected.nsp, "/");
    assert.deepEqual(connected.rooms, [user.id]);
    assert.ok(!Number.isNaN(Date.parse(when)), `timestamp ${when}`);

    assert.equal(await ack1(user, "join", "room-live"), true);
    const joined = await nextEvent(admin, "room_joined", (nsp, room, id) => id === user.id);
    assert.deepEqual(joined.slice(0, 3), ["/", "room-live", user.id]);

    const [nsp, id, args] = await nextEvent(admin, "event_received", (n, i) => i === user.id);
    assert.deepEqual([nsp, id, args], ["/", user.id, ["join", "room-live"]]);

    // The admin namespace's own traffic is not reported as events.
    assert.ok(!admin.seen.some((e) => e.event === "event_sent" && e.args[0] === "/admin"), "the admin namespace's own events are not reported");

    user.disconnect();
    const left = await nextEvent(admin, "room_left", (n, room, i) => i === userId && room === "room-live");
    assert.deepEqual(left.slice(0, 3), ["/", "room-live", userId]);
    const gone = await nextEvent(admin, "socket_disconnected", (n, i) => i === userId);
    assert.deepEqual(gone.slice(0, 3), ["/", userId, "client namespace disconnect"]);
    admin.disconnect();
  });

  test("the UI's commands: join, emit to a room, leave, _disconnect of one socket", async () => {
    const user = await clients.connect("/");
    const userId = user.id; // the client forgets it on disconnect
    const other = await clients.connect("/");
    const admin = adminSocket(clients, { username: USERNAME, password: PASSWORD });
    await waitConnect(admin, "admin login");
    await nextEvent(admin, "all_sockets");

    // join(nsp, room, filter): the filter is the socket's id (its own room).
    admin.emit("join", "/", "room-b", user.id);
    await nextEvent(admin, "room_joined", (n, room, i) => i === user.id && room === "room-b");
    assert.ok(!admin.seen.some((e) => e.event === "room_joined" && e.args[2] === other.id), "only the filtered socket joined");

    // emit(nsp, filter, event, ...args) reaches the sockets in the room, and only them.
    const otherGot = [];
    other.on("from-admin", (...a) => otherGot.push(a));
    const got = waitEvent(user, "from-admin");
    admin.emit("emit", "/", "room-b", "from-admin", "hello", 42);
    assert.deepEqual(await got, ["hello", 42]);

    // leave(nsp, room, filter)
    admin.emit("leave", "/", "room-b", user.id);
    await nextEvent(admin, "room_left", (n, room, i) => i === user.id && room === "room-b");
    const late = [];
    user.on("after-leave", (...a) => late.push(a));
    admin.emit("emit", "/", "room-b", "after-leave", 1);
    await sleep(300);
    assert.deepEqual(late, [], "a socket that left the room no longer gets its emits");
    assert.deepEqual(otherGot, [], "a socket outside the room got nothing");

    // A command on a namespace that does not exist creates nothing.
    admin.emit("join", "/nowhere", "room-c", user.id);

    // _disconnect(nsp, close, filter)
    const reason = waitDisconnect(user, "user disconnected by the admin");
    admin.emit("_disconnect", "/", false, user.id);
    assert.equal(await reason, "io server disconnect");
    const gone = await nextEvent(admin, "socket_disconnected", (n, i) => i === userId);
    assert.equal(gone[2], "server namespace disconnect");
    assert.ok(other.connected, "the other socket is still connected");

    const [stats] = await nextEvent(admin, "server_stats", () => true, 3000);
    assert.ok(!stats.namespaces.some((n) => n.name === "/nowhere"), "no namespace was created");
    other.disconnect();
    admin.disconnect();
  });
});

describe("admin UI protocol, read-only, no login, another namespace", () => {
  let server;
  let clients;

  before(async () => {
    server = await startShoal({ extraArgs: ["--admin-ui", "--admin-ui-readonly", "--admin-ui-namespace", "/watch"] });
    clients = new Clients(server.url);
  });

  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("the UI connects without credentials, is told it may not act, and its commands do nothing", async () => {
    const user = await clients.connect("/");
    const admin = adminSocket(clients, {}, "/watch");
    await waitConnect(admin, "admin without login");
    const [config] = await nextEvent(admin, "config");
    assert.deepEqual(config.supportedFeatures, ["AGGREGATED_EVENTS", "ALL_EVENTS"]);
    const [sockets] = await nextEvent(admin, "all_sockets");
    assert.ok(findSocket(sockets, user.id));
    admin.emit("_disconnect", "/", false, user.id);
    await sleep(300);
    assert.ok(user.connected, "a read-only UI cannot disconnect a socket");
    const refused = clients.socket("/admin");
    await waitConnectError(refused, "the default namespace is not the admin one");
  });
});

describe("admin UI protocol, a Redis cluster of two nodes", () => {
  let redis;
  let nodes = [];
  let clients = [];

  before(async () => {
    redis = await startRedis();
    for (const id of ["adm1", "adm2"]) {
      nodes.push(await startShoal({ extraArgs: adminArgs(["--redis", redis.url, "--node-id", id, "--requests-timeout", "2000"]) }));
    }
    clients = nodes.map((n) => new Clients(n.url));
  });

  after(async () => {
    clients.forEach((c) => c.closeAll());
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  test("a UI on one node sees both servers, the sockets of both, and acts on the other node's socket", async () => {
    const far = await clients[1].connect("/", { transports: ["websocket"] });
    const farId = far.id; // the client forgets it on disconnect
    assert.equal(await ack1(far, "join", "room-far"), true);
    const admin = adminSocket(clients[0], { username: USERNAME, password: PASSWORD });
    await waitConnect(admin, "admin login on node 1");

    const [sockets] = await nextEvent(admin, "all_sockets");
    const s = findSocket(sockets, far.id);
    assert.ok(s, "all_sockets on node 1 lists the socket of node 2");
    assert.deepEqual([...s.rooms].sort(), [far.id, "room-far"].sort());
    assert.equal(s.transport, "websocket");

    await nextEvent(admin, "server_stats", (st) => st.serverId === "adm1", 5000);
    await nextEvent(admin, "server_stats", (st) => st.serverId === "adm2", 5000);

    // Node 2's live updates reach the UI on node 1.
    const near = await clients[1].connect("/");
    await nextEvent(admin, "socket_connected", (sk) => sk.id === near.id);

    // A command given on node 1 reaches node 2's socket.
    admin.emit("join", "/", "room-x", far.id);
    await nextEvent(admin, "room_joined", (n, room, i) => i === far.id && room === "room-x");
    const reason = waitDisconnect(far, "node 2's socket disconnected from node 1's UI");
    admin.emit("_disconnect", "/", false, far.id);
    assert.equal(await reason, "io server disconnect");
    await nextEvent(admin, "socket_disconnected", (n, i) => i === farId);
    near.disconnect();
    admin.disconnect();
  });
});

// ---- the UI itself in Chromium ----------------------------------------------------------

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const UI_DIST = path.join(path.dirname(createRequire(import.meta.url).resolve("@socket.io/admin-ui/package.json")), "ui", "dist");
const TYPES = { ".html": "text/html", ".js": "application/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml", ".map": "application/json" };

/** A static file server for the UI's built files, on a free loopback port. */
async function serveUi() {
  const port = await freePort();
  const srv = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const file = path.join(UI_DIST, rel === "/" ? "index.html" : rel);
    if (!file.startsWith(UI_DIST) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise((resolve) => srv.listen(port, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => srv.close(r)) };
}

describe("the official admin UI in Chromium", () => {
  let ui;
  let server;
  let browser;
  let clients;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (scripts/test.sh does)`);
    assert.ok(existsSync(path.join(UI_DIST, "index.html")), `${UI_DIST}/index.html: npm ci in tests/js`);
    ui = await serveUi();
    // The UI is on another origin: its polling requests need CORS with credentials.
    server = await startShoal({ extraArgs: adminArgs(["--cors-origins", ui.url, "--cors-credentials"]) });
    clients = new Clients(server.url);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  });

  after(async () => {
    await browser?.close();
    clients?.closeAll();
    await server?.stop();
    await ui?.close();
  });

  test("logging in through the form shows the connected socket and its room", async () => {
    const user = await clients.connect("/");
    assert.equal(await ack1(user, "join", "room-browser"), true);

    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(`${ui.url}/`, { waitUntil: "load", timeout: 10_000 });

    // The connection form: server URL, username, password (the defaults for the rest).
    const dialog = page.locator(".v-dialog--active");
    await dialog.waitFor({ timeout: 10_000 });
    await dialog.locator("input").nth(0).fill(server.url);
    await dialog.getByLabel("Username").fill(USERNAME);
    await dialog.getByLabel("Password").fill(PASSWORD);
    await dialog.locator("button[type=submit]").click();
    await dialog.waitFor({ state: "hidden", timeout: 10_000 });

    await page.goto(`${ui.url}/#/sockets/`, { waitUntil: "load" });
    await page.getByText(user.id).first().waitFor({ timeout: 10_000 });
    await page.locator(".v-dialog").first().waitFor({ state: "hidden", timeout: 10_000 });
    await page.screenshot({ path: "/tmp/admin-ui-sockets.png" });

    // The socket's page lists its rooms; a room joined from the UI shows once the
    // server reports it (the UI updates its list from room_joined, not on its own).
    await page.goto(`${ui.url}/#/n/%2F/sockets/${encodeURIComponent(user.id)}`, { waitUntil: "load" });
    await page.getByText("room-browser").first().waitFor({ timeout: 10_000 });
    await page.getByLabel("Join a room").pressSequentially("room-from-ui");
    await page.locator("form:has(.select-room) button[type=submit]").click();
    await page.getByText("room-from-ui").first().waitFor({ timeout: 10_000 });
    await page.screenshot({ path: "/tmp/admin-ui-socket.png" });

    // The server list shows this node (serverId `<hostname>#<pid>`).
    await page.goto(`${ui.url}/#/servers/`, { waitUntil: "load" });
    await page.getByText(`#${server.proc.child.pid}`).first().waitFor({ timeout: 10_000 });
    await page.screenshot({ path: "/tmp/admin-ui-servers.png" });

    // The session id the server issued logs the UI back in after a reload, no form.
    assert.ok(await page.evaluate(() => localStorage.getItem("session_id")), "the UI saved its session id");
    await page.goto(`${ui.url}/#/sockets/`, { waitUntil: "load" });
    await page.reload({ waitUntil: "load" });
    await page.getByText(user.id).first().waitFor({ timeout: 10_000 });
    assert.equal(await page.locator(".v-dialog--active").count(), 0, "no login form after the reload");
    assert.deepEqual(errors, [], "no errors on the page");
    user.disconnect();
    await context.close();
  });
});

/** GET a raw path (no URL normalization) and resolve with the status code. */
function rawGet(port, rawPath) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: rawPath, method: "GET" }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("the admin UI served by the node itself (--admin-ui-static)", () => {
  let server;
  let browser;
  let clients;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (scripts/test.sh does)`);
    server = await startShoal({ extraArgs: adminArgs(["--admin-ui-static", UI_DIST]) });
    clients = new Clients(server.url);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  });

  after(async () => {
    await browser?.close();
    clients?.closeAll();
    await server?.stop();
  });

  test("only the folder's files are served", async () => {
    assert.equal(await rawGet(server.port, "/admin-ui/"), 200);
    assert.equal(await rawGet(server.port, "/admin-ui/favicon.png"), 200);
    for (const p of ["/admin-ui/../package.json", "/admin-ui/js/../../package.json", "/admin-ui/.hidden", "/admin-ui/nope.js", "/admin-ui//etc/passwd"]) {
      assert.equal(await rawGet(server.port, p), 404, p);
    }
  });

  test("the page at /admin-ui/ logs in to its own node and lists the socket", async () => {
    const user = await clients.connect("/");
    assert.equal(await ack1(user, "join", "room-same-origin"), true);
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(`${server.url}/admin-ui/`, { waitUntil: "load", timeout: 10_000 });
    const dialog = page.locator(".v-dialog--active");
    await dialog.waitFor({ timeout: 10_000 });
    await dialog.locator("input").nth(0).fill(server.url);
    await dialog.getByLabel("Username").fill(USERNAME);
    await dialog.getByLabel("Password").fill(PASSWORD);
    await dialog.locator("button[type=submit]").click();
    await dialog.waitFor({ state: "hidden", timeout: 10_000 });
    await page.goto(`${server.url}/admin-ui/#/n/%2F/sockets/${encodeURIComponent(user.id)}`, { waitUntil: "load" });
    await page.getByText("room-same-origin").first().waitFor({ timeout: 10_000 });
    assert.deepEqual(errors, []);
    user.disconnect();
    await context.close();
  });
});
