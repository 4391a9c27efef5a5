// The gateway's proxies and publish API, one feature at a time, against a scriptable app
// that records what shoal sends it: the event proxy's MessagePack encoding, the `names`
// filter, dynamic namespaces by `pattern`, and the publish API on its own listener
// (disconnect by room, with and without `close`, and its metrics).

import assert from "node:assert/strict";
import notepack from "notepack.io";
import { after, before, describe, test } from "node:test";
import { ack, ack1, ackWithin, eventually, waitConnect, waitConnectError, waitDisconnect } from "./lib/client.mjs";
import { gatewayNode, postApi, replyJson, startApp, stopGatewayNode } from "./lib/gateway.mjs";
import { httpGet, metrics } from "./lib/lb.mjs";
import { freePort } from "./lib/server.mjs";

const SECRET = "proxies-secret";
const TOKEN = "proxies-token";
const NODE_ID = "gw1";

/** The app: accepts every connect but `auth.token = "bad"`; events are echoed. */
function app() {
  return startApp(SECRET, (req, res) => {
    const body = req.body;
    switch (req.url) {
      case "/connect":
        if (body.auth?.token === "bad") return replyJson(res, { reject: { message: "bad token", data: { code: "auth" } } });
        return replyJson(res, { accept: { data: { ns: body.namespace }, rooms: body.auth?.rooms ?? [] } });
      case "/event":
        if (body.event === "join") return replyJson(res, { join: [body.args[0]], ack: [true] });
        if (body.event === "whoami") return replyJson(res, { ack: [{ namespace: body.namespace, rooms: body.rooms, data: body.data }] });
        return replyJson(res, { ack: body.args });
      case "/event-mp": {
        // A MessagePack answer: binary as `bin`, and a room to join.
        res.writeHead(200, { "content-type": "application/msgpack" });
        return res.end(notepack.encode({ ack: ["got", Buffer.from([9, 8, 7])], join: ["mp-room"] }));
      }
      default:
        return replyJson(res, null);
    }
  });
}

describe("gateway: encodings, names, patterns and the publish API on its own listener", () => {
  let gw, apiPort, api;

  before(async () => {
    apiPort = await freePort();
    api = `http://127.0.0.1:${apiPort}`;
    gw = await gatewayNode("shoal-proxies-", await app(), (url) => `[node]
log = "error"
node_id = "${NODE_ID}"

[proxy]
secret = "${SECRET}"
timeout = 2000

[[namespaces]]
name = "/"
connect = { url = "${url}/connect" }
events = { url = "${url}/event", names = ["echo", "join", "whoami"] }

[[namespaces]]
name = "/mp"
events = { url = "${url}/event-mp", encoding = "msgpack" }

[[namespaces]]
pattern = "^/org-[a-z0-9]+$"
connect = { url = "${url}/connect" }
events = { url = "${url}/event" }

[[namespaces]]
pattern = "/team-[a-z]+"
connect = { url = "${url}/connect" }

[api]
listen = "127.0.0.1:${apiPort}"
tokens = ["${TOKEN}"]
`);
    // The API's listener is up once it answers (it starts with the node, on its own task).
    for (const deadline = Date.now() + 5000; ; ) {
      try {
        if ((await postApi(`${api}/rooms`, TOKEN, {})).status === 200) break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  after(() => stopGatewayNode(gw ?? {}));

  const requests = (url, pred = () => true) => gw.app.requests.filter((r) => r.url === url && pred(r.body));

  test("encoding = msgpack: the event request is signed MessagePack with binary as bin; a MessagePack answer is applied", async () => {
    const s = await gw.clients.connect("/mp");
    const response = await ack(s, "upload", "hi", Buffer.from([1, 2, 3]), { n: 1.5, list: [null, true] });
    assert.deepEqual(response, ["got", Buffer.from([9, 8, 7])], "the ack of the MessagePack answer, binary included");

    const [req] = requests("/event-mp");
    assert.equal(req.headers["content-type"], "application/msgpack");
    assert.equal(req.headers["x-shoal-node"], NODE_ID);
    assert.equal(req.signed, true, "x-shoal-signature is the HMAC of the MessagePack bytes");
    assert.throws(() => JSON.parse(req.raw), "the body is not JSON");
    assert.deepEqual(req.body, {
      namespace: "/mp",
      socket: s.id,
      node: NODE_ID,
      rooms: [],
      data: null,
      event: "upload",
      args: ["hi", Buffer.from([1, 2, 3]), { n: 1.5, list: [null, true] }],
      ack: true,
    });
    assert.ok(Buffer.isBuffer(req.body.args[1]), "binary is MessagePack bin, not base64");

    // The answer's `join` was applied before the next event: its request lists the room.
    await ack(s, "again");
    assert.deepEqual(requests("/event-mp")[1].body.rooms, ["mp-room"]);
  });

  test("names = [...]: only the listed events reach the app; another gets no ack and no request, the socket goes on", async () => {
    const s = await gw.clients.connect("/");
    await assert.rejects(ackWithin(300, s, "unlisted", 1), /no ack for "unlisted" within 300 ms/);
    s.emit("unlisted-no-ack", 2);
    assert.deepEqual(await ack(s, "echo", "listed"), ["listed"]);
    assert.equal(s.connected, true);
    const mine = requests("/event", (b) => b.socket === s.id);
    assert.deepEqual(mine.map((r) => r.body.event), ["echo"], "the unlisted events, sent before the echo, were not proxied");
  });

  test("pattern: dynamic namespaces each get their own proxies; a name the pattern does not match over its whole length is refused", async () => {
    const acme = await gw.clients.connect("/org-acme", { auth: { rooms: ["team"] } });
    const beta = await gw.clients.connect("/org-beta");
    assert.deepEqual(await ack1(acme, "whoami"), { namespace: "/org-acme", rooms: ["team"], data: { ns: "/org-acme" } });
    assert.deepEqual(await ack1(beta, "whoami"), { namespace: "/org-beta", rooms: [], data: { ns: "/org-beta" } });
    const connects = requests("/connect", (b) => b.namespace.startsWith("/org-"));
    assert.deepEqual(connects.map((r) => r.body.namespace), ["/org-acme", "/org-beta"]);
    assert.ok(connects.every((r) => r.signed));
    const bad = await waitConnectError(gw.clients.socket("/org-gamma", { auth: { token: "bad" } }));
    assert.equal(bad.message, "bad token", "the connect proxy decides for a dynamic namespace too");

    // `/team-[a-z]+` has no anchors, yet matches whole names only.
    await gw.clients.connect("/team-abc");
    for (const name of ["/org-ACME", "/x/team-abc", "/team-abc/x", "/org-acme/x"]) {
      const err = await waitConnectError(gw.clients.socket(name), name);
      assert.equal(err.message, "Invalid namespace", name);
    }
    assert.deepEqual(requests("/connect", (b) => /ACME|\/x/.test(b.namespace)), [], "refused names never reach the app");
  });

  test("the API reaches a dynamic namespace no client opened yet without bypassing its connect proxy; an unserved one is 404", async () => {
    const emitted = await postApi(`${api}/emit`, TOKEN, { namespace: "/org-fresh", event: "hello", args: [] });
    assert.deepEqual(emitted, { status: 200, body: { ok: true } });
    const err = await waitConnectError(gw.clients.socket("/org-fresh", { auth: { token: "bad" } }));
    assert.equal(err.message, "bad token", "the namespace the API created still asks the app");
    const s = await gw.clients.connect("/org-fresh");
    assert.deepEqual(await ack(s, "echo", 1), [1], "and proxies events");

    const unserved = await postApi(`${api}/emit`, TOKEN, { namespace: "/nowhere", event: "hello" });
    assert.equal(unserved.status, 404);
    assert.equal(unserved.body.error, "not_found");
    const refused = await waitConnectError(gw.clients.socket("/nowhere"));
    assert.equal(refused.message, "Invalid namespace", "the API did not open /nowhere to clients");
  });

  test("the API on its own listener: disconnect by room, without and with close; not served on the node's listener", async () => {
    const room = "doomed";
    // a: in the room, with a sibling socket on /org-side over the same connection.
    const manager = gw.clients.manager();
    const a = manager.socket("/", { auth: { rooms: [room] } });
    const aSibling = manager.socket("/org-side");
    await Promise.all([waitConnect(a, "a"), waitConnect(aSibling, "a's sibling")]);
    const b = await gw.clients.connect("/", { auth: { rooms: [room] } });
    const c = await gw.clients.connect("/", { auth: { rooms: ["safe"] } });

    const listed = await postApi(`${api}/sockets`, TOKEN, { to: [room] });
    assert.deepEqual(listed.body.sockets.map((s) => s.id).sort(), [a.id, b.id].sort());

    const gone = [waitDisconnect(a, "a"), waitDisconnect(b, "b")];
    assert.deepEqual(await postApi(`${api}/disconnect`, TOKEN, { to: [room] }), { status: 200, body: { ok: true } });
    assert.deepEqual(await Promise.all(gone), ["io server disconnect", "io server disconnect"]);
    assert.deepEqual(await ack(c, "echo", "c"), ["c"], "a socket outside the room stays");
    assert.equal(aSibling.connected, true, "without close, the connection and its other namespaces stay");
    assert.deepEqual(await ack(aSibling, "echo", "sibling"), ["sibling"]);

    // With close: the whole connection of each socket in the room goes.
    const d = manager.socket("/", { auth: { rooms: [room] } });
    await waitConnect(d, "d");
    const closed = [waitDisconnect(d, "d"), waitDisconnect(aSibling, "a's sibling")];
    assert.deepEqual(await postApi(`${api}/disconnect`, TOKEN, { to: [room], close: true }), { status: 200, body: { ok: true } });
    // As socket.io's disconnectSockets(true): every socket of the connection is told, then it closes.
    assert.deepEqual(await Promise.all(closed), ["io server disconnect", "io server disconnect"]);
    await eventually(() => assert.equal(manager.engine.readyState, "closed", "the connection itself is closed"));
    assert.deepEqual(await ack(c, "echo", "still"), ["still"]);

    // The node's listener does not serve the API when it has its own.
    const onNode = await postApi(`${gw.node.url}/api/emit`, TOKEN, { event: "x" });
    assert.equal(onNode.status, 404);
    const onNodeRoot = await postApi(`${gw.node.url}/emit`, TOKEN, { event: "x" });
    assert.equal(onNodeRoot.status, 404);
  });

  test("API metrics count each request by method and status, with a latency per method", async () => {
    const before = await metrics(gw.node);
    assert.equal((await postApi(`${api}/emit`, TOKEN, { event: "m", args: [1] })).status, 200);
    assert.equal((await postApi(`${api}/emit`, TOKEN, { to: ["r"], event: "m" })).status, 200);
    assert.equal((await postApi(`${api}/emit`, "wrong", { event: "m" })).status, 401);
    assert.equal((await postApi(`${api}/emit`, TOKEN, { args: [] })).status, 400);
    assert.equal((await postApi(`${api}/rooms`, TOKEN, {})).status, 200);
    assert.equal((await postApi(`${api}/nope`, TOKEN, {})).status, 404);
    const big = "x".repeat(1 << 20);
    assert.equal((await postApi(`${api}/emit`, TOKEN, { event: "m", args: [big] })).status, 413);
    const after = await metrics(gw.node);
    const delta = (name) => (after[name] ?? 0) - (before[name] ?? 0);
    const expected = {
      'shoal_gateway_api_requests_total{method="emit",status="200"}': 2,
      'shoal_gateway_api_requests_total{method="emit",status="401"}': 1,
      'shoal_gateway_api_requests_total{method="emit",status="400"}': 1,
      'shoal_gateway_api_requests_total{method="emit",status="413"}': 1,
      'shoal_gateway_api_requests_total{method="rooms",status="200"}': 1,
      'shoal_gateway_api_requests_total{method="unknown",status="404"}': 1,
      'shoal_gateway_api_latency_seconds_count{method="emit"}': 5,
      'shoal_gateway_api_latency_seconds_count{method="rooms"}': 1,
      'shoal_gateway_api_latency_seconds_count{method="unknown"}': 1,
    };
    for (const [name, n] of Object.entries(expected)) assert.equal(delta(name), n, name);
    assert.match(await httpGet(`${gw.node.url}/metrics`), /# TYPE shoal_gateway_api_latency_seconds histogram/);
  });
});
