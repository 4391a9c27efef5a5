// The abuse limits, each seen firing from a client and counted in the node's metrics
// (`shoal_limit_hits_total{limit=...}`), and a 5 MB POST answered 413 so that an
// ordinary HTTP client reads the answer. The limits set only by the `shoal` binary's
// flags (--max-connections, --max-sessions, --request-body-timeout, --max-attachments)
// run on the binary and are read from its `/metrics`, as are the per-address limits
// behind a trusted proxy.

import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { startShoal, startTestapp } from "./lib/server.mjs";
import {
  Clients,
  TIMER_SLACK_MS,
  ack,
  ack1,
  ackWithin,
  eventually,
  waitConnect,
  waitConnectError,
  waitDisconnect,
  waitEvent,
} from "./lib/client.mjs";

/** The count of `shoal_limit_hits_total{limit="<limit>"}` in the node's metrics. */
async function limitHits(metricsSocket, limit) {
  const text = await ack1(metricsSocket, "metrics");
  const line = text.split("\n").find((l) => l.startsWith(`shoal_limit_hits_total{limit="${limit}"}`));
  assert.ok(line, `no series for ${limit} in:\n${text}`);
  return Number(line.split(" ")[1]);
}

/** The count of `shoal_limit_hits_total{limit="<limit>"}` in a metrics text. */
function hitsIn(text, limit) {
  const line = text.split("\n").find((l) => l.startsWith(`shoal_limit_hits_total{limit="${limit}"}`));
  assert.ok(line, `no series for ${limit} in:\n${text}`);
  return Number(line.split(" ")[1]);
}

/** The count of `limit` in the `shoal` binary's `/metrics`. */
async function binaryHits(url, limit) {
  const res = await request(`${url}/metrics`);
  assert.equal(res.status, 200, res.body);
  return hitsIn(res.body, limit);
}

/** One HTTP request with Node's own client; resolves with {status, body}, rejects on error. */
function request(url, { method = "GET", body, chunked = false, headers: extra = {} } = {}) {
  return new Promise((resolve, reject) => {
    const headers = { ...extra };
    if (body && !chunked) headers["content-length"] = body.length;
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (body && chunked) {
      // Several writes, as a streaming upload sends it (Transfer-Encoding: chunked).
      for (let at = 0; at < body.length; at += 256 * 1024) req.write(body.subarray(at, at + 256 * 1024));
      req.end();
    } else {
      req.end(body);
    }
  });
}

async function pollingHandshake(url, headers = {}) {
  const res = await request(`${url}/socket.io/?EIO=4&transport=polling`, { headers });
  assert.equal(res.status, 200, res.body);
  return JSON.parse(res.body.slice(1)).sid;
}

describe("a 5 MB polling POST (maxPayload 1 MB)", () => {
  let server;
  before(async () => {
    server = await startTestapp();
  });
  after(async () => {
    await server?.stop();
  });

  for (const chunked of [false, true]) {
    test(`is answered 413, read by Node's http client (${chunked ? "chunked" : "Content-Length"})`, async () => {
      const sid = await pollingHandshake(server.url);
      const url = `${server.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`;
      const res = await request(url, { method: "POST", body: Buffer.alloc(5 * 1024 * 1024, "a"), chunked });
      assert.equal(res.status, 413);
      // The session lives on, as with the reference server.
      const ok = await request(url, { method: "POST", body: Buffer.from("40") });
      assert.deepEqual([ok.status, ok.body], [200, "ok"]);
    });
  }
});

describe("inbound events per socket, dropped over the rate", () => {
  let server;
  let clients;
  before(async () => {
    server = await startTestapp({ extraArgs: ["--events-per-second", "10", "--event-burst", "20"] });
    clients = new Clients(server.url, { transports: ["websocket"] });
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("a burst of 100 events: the bucket's 20 (and what refilled meanwhile) run, the rest are dropped and counted", async () => {
    const metrics = await clients.connect("/metrics");
    const before = await limitHits(metrics, "event_rate_limit");
    const socket = await clients.connect("/");
    let echoed = 0;
    socket.on("echo", () => echoed++);
    const started = Date.now();
    for (let i = 0; i < 100; i++) socket.emit("echo", i);
    const burstSent = Date.now();
    // The node answers in order: once an ack arrives, every echo it ran is here. The
    // first tries may be dropped too (the bucket refills one event per 100 ms).
    let tries = 0;
    await eventually(async () => {
      tries += 1;
      assert.deepEqual(await ackWithin(1000, socket, "echo", "done"), ["done"]);
    }, 10_000);
    const refilled = Math.ceil(((burstSent - started) / 1000) * 10);
    assert.ok(echoed >= 20 && echoed <= 20 + refilled, `${echoed} echoes run of 100 (burst 20, ${refilled} refilled)`);
    assert.equal(socket.connected, true);
    // Every event over the rate is counted: the dropped echoes and the dropped "done"s.
    const hits = (await limitHits(metrics, "event_rate_limit")) - before;
    assert.equal(hits, 100 - echoed + (tries - 1));
  });
});

describe("inbound events per socket, disconnect over the rate", () => {
  let server;
  let clients;
  before(async () => {
    server = await startTestapp({
      extraArgs: ["--events-per-second", "1", "--event-burst", "5", "--disconnect-over-event-rate"],
    });
    clients = new Clients(server.url, { transports: ["websocket"] });
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("the sixth event of a burst disconnects the socket, counted once", async () => {
    const metrics = await clients.connect("/metrics");
    const socket = await clients.connect("/");
    let echoed = 0;
    socket.on("echo", () => echoed++);
    const reason = waitDisconnect(socket);
    for (let i = 0; i < 6; i++) socket.emit("echo", i);
    assert.equal(await reason, "io server disconnect");
    assert.equal(echoed, 5);
    assert.equal(await limitHits(metrics, "event_rate_limit"), 1);
  });
});

describe("rooms per socket and namespaces per session", () => {
  let server;
  let clients;
  before(async () => {
    server = await startTestapp({ extraArgs: ["--max-rooms-per-socket", "5", "--max-namespaces-per-session", "2"] });
    clients = new Clients(server.url, { transports: ["websocket"] });
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("a join past 5 rooms (its own included) is refused and counted", async () => {
    const metrics = await clients.connect("/metrics");
    const socket = await clients.connect("/");
    const four = ["r1", "r2", "r3", "r4"];
    assert.deepEqual(await ack1(socket, "join", four), [...four, socket.id].sort());
    assert.deepEqual(await ack1(socket, "join", "r5"), [...four, socket.id].sort());
    assert.deepEqual(await ack1(socket, "join", ["r1", "r2"]), [...four, socket.id].sort(), "rooms it is in may be joined again");
    assert.equal(await limitHits(metrics, "max_rooms_per_socket"), 1);
  });

  test("a third namespace on one session gets connect_error Too many namespaces, counted", async () => {
    const metrics = await clients.connect("/metrics");
    const manager = clients.manager();
    const main = manager.socket("/");
    const custom = manager.socket("/custom");
    await Promise.all([waitConnect(main), waitConnect(custom)]);
    const third = manager.socket("/dyn-third");
    const err = await waitConnectError(third);
    assert.equal(err.message, "Too many namespaces");
    assert.equal(main.connected && custom.connected, true);
    assert.equal(await limitHits(metrics, "max_namespaces_per_session"), 1);
    // Leaving one makes room for another.
    custom.disconnect();
    third.connect();
    await waitConnect(third, "the third namespace once another left");
  });
});

describe("sessions and handshakes per client address (loopback held to them)", () => {
  test("a fourth session from one address is refused 403 while three are open, counted", async () => {
    const server = await startTestapp({ extraArgs: ["--limit-loopback", "--max-sessions-per-address", "3"] });
    const clients = new Clients(server.url, { transports: ["websocket"] });
    try {
      const metrics = await clients.connect("/metrics");
      const a = await clients.connect("/");
      await clients.connect("/");
      const refused = await request(`${server.url}/socket.io/?EIO=4&transport=polling`);
      assert.deepEqual([refused.status, refused.body], [403, '{"code":4,"message":"Too many sessions from this address"}']);
      assert.equal(await limitHits(metrics, "max_sessions_per_address"), 1);
      // A session that closes frees its place.
      a.disconnect();
      await eventually(async () => assert.equal((await request(`${server.url}/socket.io/?EIO=4&transport=polling`)).status, 200));
    } finally {
      clients.closeAll();
      await server.stop();
    }
  });

  test("handshakes past 5 per second from one address are refused 403, counted", async () => {
    const server = await startTestapp({ extraArgs: ["--limit-loopback", "--handshakes-per-address-per-second", "5"] });
    const clients = new Clients(server.url, { transports: ["websocket"] });
    try {
      const url = `${server.url}/socket.io/?EIO=4&transport=polling`;
      const started = Date.now();
      const answers = await Promise.all(Array.from({ length: 20 }, () => request(url)));
      const elapsed = Date.now() - started;
      const ok = answers.filter((a) => a.status === 200).length;
      const refused = answers.filter(
        (a) => a.status === 403 && a.body === '{"code":4,"message":"Too many handshakes from this address"}',
      ).length;
      assert.equal(ok + refused, 20, JSON.stringify(answers.map((a) => [a.status, a.body])));
      // The 20 fit in `windows` one-second windows, each allowing 5.
      const windows = 1 + Math.ceil(elapsed / 1000);
      assert.ok(ok >= 5 && ok <= 5 * windows, `${ok} handshakes allowed in ${elapsed} ms`);
      // A new second, a new budget; the metrics connection is one handshake of it.
      await new Promise((r) => setTimeout(r, 1100));
      const metrics = await clients.connect("/metrics");
      assert.equal(await limitHits(metrics, "handshakes_per_address_per_second"), refused);
    } finally {
      clients.closeAll();
      await server.stop();
    }
  });
});

/**
 * One raw TCP connection speaking HTTP/1.1 keep-alive: `get(path)` sends a request and
 * resolves with {status, body} (Content-Length bodies only); `received` counts the bytes
 * the server sent, `text()` is all of them, `firstData` resolves with the
 * `performance.now()` of the first; `closed` resolves when the server (or the kernel)
 * ended the connection.
 */
function rawConnection(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: "127.0.0.1" });
    let buf = Buffer.alloc(0);
    let all = Buffer.alloc(0);
    let pending = null;
    let firstData;
    const conn = {
      received: 0,
      closed: new Promise((r) => sock.once("close", r)),
      firstData: new Promise((r) => (firstData = r)),
      text: () => all.toString(),
      write: (bytes) => sock.write(bytes),
      destroy: () => sock.destroy(),
      get(path) {
        return new Promise((res, rej) => {
          pending = { res, rej };
          sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
        });
      },
    };
    const parse = () => {
      const end = buf.indexOf("\r\n\r\n");
      if (!pending || end < 0) return;
      const head = buf.subarray(0, end).toString();
      const length = /\r\ncontent-length: *(\d+)/i.exec(head);
      assert.ok(length, `no content-length in\n${head}`);
      if (buf.length < end + 4 + Number(length[1])) return;
      const body = buf.subarray(end + 4, end + 4 + Number(length[1])).toString();
      buf = buf.subarray(end + 4 + Number(length[1]));
      const { res } = pending;
      pending = null;
      res({ status: Number(head.split(" ")[1]), body });
    };
    sock.on("data", (d) => {
      if (conn.received === 0) firstData(performance.now());
      conn.received += d.length;
      all = Buffer.concat([all, d]);
      buf = Buffer.concat([buf, d]);
      parse();
    });
    // A connection the node closes at once may end in a reset; `closed` says so.
    sock.on("error", () => {});
    sock.once("close", () => pending?.rej(new Error("connection closed before the answer")));
    sock.once("connect", () => resolve(conn));
    sock.once("error", reject);
  });
}

/** Resolves with what `promise` resolves to, or rejects after `ms` saying `what`. */
function within(ms, promise, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

describe("the shoal binary's --max-connections", () => {
  test("past 3 open connections a new one is closed unanswered, counted; a freed slot takes the next", async () => {
    const server = await startShoal({ extraArgs: ["--max-connections", "3"] });
    const open = [];
    try {
      // Each one answered, so the node has taken it (the accept loop is in order).
      for (let i = 0; i < 3; i++) {
        const conn = await rawConnection(server.port);
        open.push(conn);
        assert.equal((await conn.get("/health")).status, 200, `connection ${i + 1} of 3`);
      }
      const fourth = await rawConnection(server.port);
      fourth.write("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      await within(5000, fourth.closed, "the fourth connection closed");
      assert.equal(fourth.received, 0, "the fourth connection got an answer");
      // Read over a connection already in (a new one would be refused, and counted).
      assert.equal(hitsIn((await open[0].get("/metrics")).body, "max_connections"), 1);
      // A connection that ends frees its slot; until the node saw it end, tries are refused.
      open.pop().destroy();
      let refused = 0;
      await eventually(async () => {
        const conn = await rawConnection(server.port);
        try {
          assert.equal((await conn.get("/health")).status, 200);
          open.push(conn);
        } catch (e) {
          refused += 1;
          conn.destroy();
          throw e;
        }
      });
      assert.equal(hitsIn((await open[0].get("/metrics")).body, "max_connections"), 1 + refused);
    } finally {
      for (const conn of open) conn.destroy();
      await server.stop();
    }
  });
});

const BODY_TIMEOUT_MS = 400;

describe("the shoal binary's --max-sessions, --request-body-timeout and --max-attachments", () => {
  let server;
  let clients;
  before(async () => {
    server = await startShoal({
      extraArgs: ["--max-sessions", "3", "--request-body-timeout", String(BODY_TIMEOUT_MS), "--max-attachments", "2"],
    });
    clients = new Clients(server.url, { transports: ["websocket"] });
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("a handshake past 3 open sessions is refused 403 Too many sessions, counted", async () => {
    const sids = [await pollingHandshake(server.url), await pollingHandshake(server.url), await pollingHandshake(server.url)];
    const refused = await request(`${server.url}/socket.io/?EIO=4&transport=polling`);
    assert.deepEqual([refused.status, refused.body], [403, '{"code":4,"message":"Too many sessions"}']);
    assert.equal(await binaryHits(server.url, "max_sessions"), 1);
    // Closing them (a close packet each) makes room again.
    for (const sid of sids) {
      const res = await request(`${server.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, { method: "POST", body: Buffer.from("1") });
      assert.equal(res.status, 200, res.body);
    }
    await eventually(async () => assert.equal((await request(`${server.url}/socket.io/?EIO=4&transport=polling`)).status, 200));
  });

  test(`a polling POST body that stops arriving is answered 408 after ${BODY_TIMEOUT_MS} ms, counted`, async () => {
    const sid = await pollingHandshake(server.url);
    const conn = await rawConnection(server.port);
    const sent = performance.now();
    // 10 of the 100 bytes announced, then nothing.
    conn.write(`POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n4aaaaaaaaa`);
    const answered = await within(BODY_TIMEOUT_MS + 5000, conn.firstData, "the 408");
    await within(5000, conn.closed, "the connection closed after the 408");
    const elapsed = answered - sent;
    assert.equal(conn.text().split("\r\n")[0], "HTTP/1.1 408 Request Timeout");
    // The node's deadline starts once it has the request head, after `sent`; its timer
    // fires late by at most the slack of a loaded machine.
    assert.ok(elapsed >= BODY_TIMEOUT_MS && elapsed <= BODY_TIMEOUT_MS + TIMER_SLACK_MS, `408 after ${elapsed.toFixed(0)} ms`);
    assert.equal(await binaryHits(server.url, "request_body_timeout"), 1);
  });

  test("a packet announcing 3 binary attachments closes the session (2 allowed), counted", async () => {
    const socket = await clients.connect("/");
    const two = [Buffer.from([1]), Buffer.from([2])];
    const echoed = await ack(socket, "echo", ...two);
    assert.deepEqual(echoed.map((b) => [...b]), [[1], [2]], "two attachments are within the limit");
    const reason = waitDisconnect(socket);
    socket.emit("echo", Buffer.from([1]), Buffer.from([2]), Buffer.from([3]));
    assert.equal(await reason, "transport close");
    assert.equal(await binaryHits(server.url, "max_attachments"), 1);
  });
});

describe("the per-address limits behind a trusted proxy (X-Forwarded-For from 127.0.0.1)", () => {
  const A = "203.0.113.7";
  const B = "198.51.100.9";

  test("sessions count against the forwarded address, not the proxy's", async () => {
    // --limit-loopback holds the proxy's own address (127.0.0.1) to the limit too: if the
    // sessions counted against it, the third of them would be refused.
    const server = await startShoal({
      extraArgs: ["--trusted-proxies", "127.0.0.1", "--limit-loopback", "--max-sessions-per-address", "2", "--handshakes-per-address-per-second", "1000"],
    });
    try {
      for (const ip of [A, A, B, B]) await pollingHandshake(server.url, { "x-forwarded-for": ip });
      const refused = await request(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { "x-forwarded-for": A } });
      assert.deepEqual([refused.status, refused.body], [403, '{"code":4,"message":"Too many sessions from this address"}']);
      // The proxy itself holds no session.
      await pollingHandshake(server.url);
      await pollingHandshake(server.url);
      assert.equal(await binaryHits(server.url, "max_sessions_per_address"), 1);
    } finally {
      await server.stop();
    }
  });

  test("handshakes per second count against the forwarded address, not the proxy's", async () => {
    const server = await startShoal({
      extraArgs: ["--trusted-proxies", "127.0.0.1", "--limit-loopback", "--max-sessions-per-address", "1000", "--handshakes-per-address-per-second", "2"],
    });
    try {
      const started = performance.now();
      for (const ip of [A, A, B, B]) await pollingHandshake(server.url, { "x-forwarded-for": ip });
      const refused = await request(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { "x-forwarded-for": A } });
      await pollingHandshake(server.url);
      const elapsed = performance.now() - started;
      // All six in the node's first one-second window (it starts at the first handshake).
      assert.ok(elapsed < 1000, `six handshakes took ${elapsed.toFixed(0)} ms, longer than one window`);
      assert.deepEqual([refused.status, refused.body], [403, '{"code":4,"message":"Too many handshakes from this address"}']);
      assert.equal(await binaryHits(server.url, "handshakes_per_address_per_second"), 1);
    } finally {
      await server.stop();
    }
  });

  test("from a peer that is not a trusted proxy the header is ignored: every session is the peer's", async () => {
    const server = await startShoal({ extraArgs: ["--limit-loopback", "--max-sessions-per-address", "2", "--handshakes-per-address-per-second", "1000"] });
    try {
      await pollingHandshake(server.url, { "x-forwarded-for": A });
      await pollingHandshake(server.url, { "x-forwarded-for": B });
      const refused = await request(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { "x-forwarded-for": "192.0.2.1" } });
      assert.deepEqual([refused.status, refused.body], [403, '{"code":4,"message":"Too many sessions from this address"}']);
      assert.equal(await binaryHits(server.url, "max_sessions_per_address"), 1);
    } finally {
      await server.stop();
    }
  });
});
