// The gateway against a hostile app and a hostile configuration. The app here answers
// garbage, too slowly, with a huge body or a 500, on request: every client gets a clear
// error, the node's memory stays bounded, other sockets (and the same socket's next
// events) are not held up, and /metrics counts each failure. A malformed configuration
// file is refused with its line and key.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { ack, ack1, ackWithin, waitConnect, waitConnectError } from "./lib/client.mjs";
import { gatewayNode, replyJson, startApp, stopGatewayNode } from "./lib/gateway.mjs";
import { metrics } from "./lib/lb.mjs";
import { SHOAL_BIN, startShoal } from "./lib/server.mjs";

const TIMEOUT_MS = 1000;
const MAX_BODY = 65536;
const MAX_QUEUED = 4;
const HUGE_BYTES = 200 * 1024 * 1024;

/** The hostile app: what it does depends on `auth.mode` (connect) or the event name. */
function hostileApp() {
  const open = new Set();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks));
      const mode = req.url === "/connect" ? body.auth?.mode ?? "ok" : body.event;
      switch (mode) {
        case "garbage":
          res.writeHead(200, { "content-type": "text/html" });
          return res.end("<html>502 Bad Gateway</html>");
        case "slow":
          open.add(res); // never answered
          return;
        case "huge": {
          // 200 MB, streamed without a length: shoal must stop reading at max_body.
          res.writeHead(200, { "content-type": "application/json" });
          const chunk = Buffer.alloc(1 << 20, 0x20);
          let sent = 0;
          const pump = () => {
            while (sent < HUGE_BYTES) {
              sent += chunk.length;
              if (!res.write(chunk)) return res.once("drain", pump);
            }
            res.end();
          };
          res.on("error", () => {});
          return pump();
        }
        case "status":
          res.writeHead(500, { "content-type": "application/json" });
          return res.end('{"error":"boom"}');
        case "ok":
          res.writeHead(200, { "content-type": "application/json" });
          return res.end(req.url === "/connect" ? '{"accept":{}}' : JSON.stringify({ ack: body.args }));
        default:
          res.writeHead(200, { "content-type": "application/json" });
          return res.end(JSON.stringify({ ack: body.args }));
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: server.address().port,
        url: `http://127.0.0.1:${server.address().port}`,
        close: () => {
          for (const r of open) r.destroy();
          server.closeAllConnections();
          return new Promise((r) => server.close(r));
        },
      }),
    ),
  );
}

function rssBytes(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
}

describe("gateway: a hostile app", () => {
  let app, node, dir, clients;

  before(async () => {
    ({ app, node, dir, clients } = await gatewayNode(
      "shoal-hostile-",
      await hostileApp(),
      (url) => `[node]
log = "error"

[proxy]
secret = "s"
timeout = ${TIMEOUT_MS}
max_body = ${MAX_BODY}

[[namespaces]]
name = "/"
connect = { url = "${url}/connect" }
events = { url = "${url}/event" }
`,
    ));
  });

  after(() => stopGatewayNode({ app, node, dir, clients }));

  test("connect: garbage, slow, huge and 500 answers each give a clear connect_error", async () => {
    const expected = {
      garbage: ["the app answered something invalid", "app_bad_answer"],
      slow: ["the app did not answer in time", "app_timeout"],
      huge: ["the app answered something invalid", "app_answer_too_large"],
      status: ["the app failed", "app_error"],
    };
    for (const [mode, [message, code]] of Object.entries(expected)) {
      const err = await waitConnectError(clients.socket("/", { auth: { mode } }), mode);
      assert.equal(err.message, message, mode);
      assert.deepEqual(err.data, { code }, mode);
    }
    await clients.connect("/", { auth: { mode: "ok" } });
  });

  test("events: each failure acks a clear error; other sockets and later events are not held up", async () => {
    const a = await clients.connect("/");
    const b = await clients.connect("/");
    const before = await metrics(node);

    // A slow answer on `a` does not delay `b`.
    let slowSettled = false;
    const slow = ackWithin(TIMEOUT_MS * 3, a, "slow").then((r) => {
      slowSettled = true;
      return r;
    });
    assert.deepEqual(await ack(b, "echo", "b"), ["b"]);
    assert.equal(slowSettled, false, "b's echo came back while a's slow event was still waiting");
    // `a`'s next event waits for its turn (order is kept), then works.
    const next = ack(a, "echo", "after slow");
    assert.deepEqual(await slow, [{ error: "app_timeout", message: "the app did not answer in time" }]);
    assert.deepEqual(await next, ["after slow"]);

    assert.deepEqual(await ack1(a, "garbage"), { error: "app_bad_answer", message: "the app answered something invalid" });
    assert.deepEqual(await ack1(a, "status"), { error: "app_error", message: "the app failed" });

    const rssBefore = rssBytes(node.proc.child.pid);
    assert.deepEqual(await ack1(a, "huge"), { error: "app_answer_too_large", message: "the app answered something invalid" });
    const grown = rssBytes(node.proc.child.pid) - rssBefore;
    assert.ok(grown < 16 * 1024 * 1024, `a 200 MB answer grew the node by ${grown} bytes (it reads at most ${MAX_BODY})`);
    assert.deepEqual(await ack(b, "echo", "still fine"), ["still fine"]);

    const after = await metrics(node);
    const d = (name) => (after[name] ?? 0) - (before[name] ?? 0);
    for (const code of ["app_timeout", "app_bad_answer", "app_error", "app_answer_too_large"]) {
      assert.equal(d(`shoal_gateway_proxy_errors_total{proxy="event",error="${code}"}`), 1, code);
    }
    assert.equal(d('shoal_gateway_proxy_requests_total{proxy="event"}'), 7);
    assert.equal(d('shoal_gateway_proxy_latency_seconds_count{proxy="event"}'), 7);
  });
});

describe("gateway: a socket whose queue is full", () => {
  let app, node, dir, clients;

  before(async () => {
    ({ app, node, dir, clients } = await gatewayNode(
      "shoal-queue-",
      await hostileApp(),
      (url) => `[node]
log = "error"

[proxy]
secret = "s"
timeout = ${TIMEOUT_MS}
max_queued_events = ${MAX_QUEUED}

[[namespaces]]
name = "/"
events = { url = "${url}/event" }
`,
    ));
  });

  after(() => stopGatewayNode({ app, node, dir, clients }));

  test("events beyond max_queued_events are acked app_overloaded at once and counted as queue_full", async () => {
    const a = await clients.connect("/");
    const b = await clients.connect("/");
    const before = await metrics(node);
    // The app never answers `slow`: a's task waits on it for the whole timeout.
    const slow = ackWithin(TIMEOUT_MS * 3, a, "slow");
    // Until the app has the request in hand, the slow event still sits in the queue.
    await new Promise((r) => setTimeout(r, 200));
    const extra = 3;
    const started = Date.now();
    const echoes = [];
    for (let i = 0; i < MAX_QUEUED + extra; i++) echoes.push(ackWithin(TIMEOUT_MS * 3, a, "echo", i));
    const refused = echoes.slice(MAX_QUEUED);
    for (const r of refused) {
      assert.deepEqual(await r, [{ error: "app_overloaded", message: "too many events of this socket wait for the app" }]);
    }
    assert.ok(Date.now() - started < TIMEOUT_MS / 2, "the refusals came before the slow event's timeout");
    assert.deepEqual(await ack(b, "echo", "b"), ["b"], "another socket is not held up");
    assert.deepEqual(await slow, [{ error: "app_timeout", message: "the app did not answer in time" }]);
    for (let i = 0; i < MAX_QUEUED; i++) assert.deepEqual(await echoes[i], [i], `queued echo ${i}, in order after the slow one`);

    const after = await metrics(node);
    const d = (name) => (after[name] ?? 0) - (before[name] ?? 0);
    assert.equal(d('shoal_gateway_proxy_errors_total{proxy="event",error="queue_full"}'), extra);
    assert.equal(d('shoal_gateway_proxy_errors_total{proxy="event",error="app_timeout"}'), 1);
    // The refused events never reached the app: the slow one, the queued echoes and b's echo did.
    assert.equal(d('shoal_gateway_proxy_requests_total{proxy="event"}'), 1 + MAX_QUEUED + 1);
  });
});

describe("gateway: max_in_flight, with the app slow", () => {
  // Two slots per kind. /slow's proxies wait up to 10 s for their turn and the app's
  // answer; /'s only IN_FLIGHT_TIMEOUT_MS. The slots of a kind are shared by every
  // namespace of the node, so /slow's held requests fill them for /.
  const MAX_IN_FLIGHT = 2;
  const IN_FLIGHT_TIMEOUT_MS = 600;
  let app, node, dir, clients;
  const held = [];
  const release = () => {
    for (const [res, answer] of held.splice(0)) replyJson(res, answer);
  };

  before(async () => {
    const slowApp = await startApp("s", (req, res) => {
      if (req.url === "/connect") {
        if (req.body.auth?.hold) return held.push([res, { accept: {} }]);
        return replyJson(res, { accept: {} });
      }
      if (req.body.event === "hold") return held.push([res, { ack: req.body.args }]);
      replyJson(res, { ack: req.body.args });
    });
    ({ app, node, dir, clients } = await gatewayNode(
      "shoal-inflight-",
      slowApp,
      (url) => `[node]
log = "error"

[proxy]
secret = "s"
timeout = ${IN_FLIGHT_TIMEOUT_MS}
max_in_flight = ${MAX_IN_FLIGHT}

[[namespaces]]
name = "/slow"
connect = { url = "${url}/connect", timeout = 10000 }
events = { url = "${url}/event", timeout = 10000 }

[[namespaces]]
name = "/"
connect = { url = "${url}/connect" }
events = { url = "${url}/event" }
`,
    ));
  });

  after(async () => {
    release();
    await stopGatewayNode({ app, node, dir, clients });
  });

  const events = (name) => app.requests.filter((r) => r.url === "/event" && r.body.event === name);

  test("events: beyond max_in_flight an event waits for a slot; none free within its timeout: app_overloaded, counted, never sent", async () => {
    const [s1, s2, s3] = await Promise.all([clients.connect("/slow"), clients.connect("/slow"), clients.connect("/slow")]);
    const [c, d] = await Promise.all([clients.connect("/"), clients.connect("/")]);
    const before = await metrics(node);

    // Two held events (one per socket: a socket's events go one at a time) fill the slots.
    const holds = [ackWithin(5000, s1, "hold", 1), ackWithin(5000, s2, "hold", 2)];
    await app.until(() => events("hold").length === MAX_IN_FLIGHT, "both held events");
    // s3's event may wait 10 s: it is queued for a slot. c's may wait 600 ms: refused.
    const queued = ackWithin(5000, s3, "echo", "queued");
    const started = Date.now();
    const refused = await ackWithin(3000, c, "echo", "refused");
    const waited = Date.now() - started;
    assert.deepEqual(refused, [{ error: "app_overloaded", message: "the app is overloaded" }]);
    assert.ok(waited >= IN_FLIGHT_TIMEOUT_MS - 50, `refused after ${waited} ms, before its ${IN_FLIGHT_TIMEOUT_MS} ms timeout`);
    assert.deepEqual(events("echo"), [], "neither the refused nor the queued event reached the app while the slots were busy");

    // Other kinds have their own slots: a socket connects through the connect proxy now.
    const e = await clients.connect("/");

    release();
    assert.deepEqual(await Promise.all(holds), [[1], [2]]);
    assert.deepEqual(await queued, ["queued"], "the queued event went out once a slot was free");
    assert.deepEqual(await ack(c, "echo", "again"), ["again"], "the refused socket works again");
    assert.deepEqual(await ack(d, "echo", "d"), ["d"]);
    assert.deepEqual(await ack(e, "echo", "e"), ["e"]);
    assert.equal(app.maxInFlight["/event"], MAX_IN_FLIGHT, "the app never had more event requests in flight than the bound");
    assert.deepEqual(events("echo").map((r) => r.body.args[0]), ["queued", "again", "d", "e"]);

    const after = await metrics(node);
    const delta = (name) => (after[name] ?? 0) - (before[name] ?? 0);
    assert.equal(delta('shoal_gateway_proxy_errors_total{proxy="event",error="app_overloaded"}'), 1);
    // Requests are those sent to the app: two holds, four echoes; not the refused one.
    assert.equal(delta('shoal_gateway_proxy_requests_total{proxy="event"}'), 6);
    assert.equal(delta('shoal_gateway_proxy_latency_seconds_count{proxy="event"}'), 6);
  });

  test("connect: beyond max_in_flight a connect gets connect_error app_overloaded; events and connected sockets are not held up", async () => {
    const connected = await clients.connect("/");
    const before = await metrics(node);
    const connects = () => app.requests.filter((r) => r.url === "/connect").length;
    const base = connects();
    const slow = [clients.socket("/slow", { auth: { hold: true } }), clients.socket("/slow", { auth: { hold: true } })];
    await app.until(() => connects() === base + MAX_IN_FLIGHT, "both held connects");

    const err = await waitConnectError(clients.socket("/", { auth: {} }));
    assert.equal(err.message, "the app is overloaded");
    assert.deepEqual(err.data, { code: "app_overloaded" });
    assert.equal(connects(), base + MAX_IN_FLIGHT, "the refused connect never reached the app");
    assert.deepEqual(await ack(connected, "echo", "fine"), ["fine"], "events have their own slots");

    release();
    await Promise.all(slow.map((s) => waitConnect(s, "held connect")));
    await clients.connect("/");
    assert.equal(app.maxInFlight["/connect"], MAX_IN_FLIGHT);

    const after = await metrics(node);
    const delta = (name) => (after[name] ?? 0) - (before[name] ?? 0);
    assert.equal(delta('shoal_gateway_proxy_errors_total{proxy="connect",error="app_overloaded"}'), 1);
    assert.equal(delta('shoal_gateway_proxy_requests_total{proxy="connect"}'), MAX_IN_FLIGHT + 1);
  });
});

describe("gateway: a hostile configuration", () => {
  let dir;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "shoal-config-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function check(text) {
    const file = path.join(dir, `c${Math.random().toString(36).slice(2)}.toml`);
    writeFileSync(file, text);
    return spawnSync(SHOAL_BIN, ["config", "check", file], { encoding: "utf8" });
  }

  test("malformed TOML: `shoal config check` fails with the line and the key", () => {
    const r = check('[node]\nlisten = "127.0.0.1:3000"\nping_interval = = 25000\n');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /line 3, key node\.ping_interval/);
  });

  test("an unknown key, a wrong type, a value out of range: each named with its line", () => {
    let r = check("[node]\nping_interval = 1000\npong_interval = 5\n");
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /line 3, key node\.pong_interval/);
    assert.match(r.stderr, /unknown field `pong_interval`/);
    r = check('[proxy]\nsecret = "s"\ntimeout = "soon"\n');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /line 3, key proxy\.timeout/);
    r = check("[node]\nmembership_ttl = 10\n");
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /line 2, key node\.membership_ttl/);
  });

  test("a proxy without the signing secret is refused; a good file passes", () => {
    const ns = '[[namespaces]]\nname = "/"\nevents = { url = "http://127.0.0.1:4000/e" }\n';
    let r = check(ns);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /\[proxy\]\.secret/);
    r = check(`[proxy]\nsecret = "s"\n${ns}`);
    assert.equal(r.status, 0, r.stderr);
  });

  test("a node started with a malformed file exits with the error", () => {
    const file = path.join(dir, "bad.toml");
    writeFileSync(file, "[node\n");
    const r = spawnSync(SHOAL_BIN, ["--config", file, "--listen", "127.0.0.1:0"], { encoding: "utf8", timeout: 10_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /line 1/);
  });

  test("a namespace configured twice: the node exits with the error instead of proxying everything twice", () => {
    const file = path.join(dir, "twice.toml");
    const ns = '[[namespaces]]\nname = "/chat"\nevents = { url = "http://127.0.0.1:9/e" }\n';
    writeFileSync(file, `[node]\nlog = "error"\n[proxy]\nsecret = "s"\n${ns}${ns}`);
    const r = spawnSync(SHOAL_BIN, ["--config", file, "--listen", "127.0.0.1:0"], { encoding: "utf8", timeout: 10_000 });
    assert.equal(r.error, undefined, "the node exited by itself");
    assert.notEqual(r.status, 0);
    assert.match(r.stdout + r.stderr, /namespaces\[1\]\.name: "\/chat" is configured twice/, "logged at error");
  });
});
