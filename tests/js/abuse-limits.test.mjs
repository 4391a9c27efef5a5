// The abuse limits, each seen firing from a client and counted in the node's metrics
// (`shoal_limit_hits_total{limit=...}`), and a 5 MB POST answered 413 so that an
// ordinary HTTP client reads the answer.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { startTestapp } from "./lib/server.mjs";
import { Clients, ack, ack1, ackWithin, eventually, waitConnect, waitConnectError, waitDisconnect, waitEvent } from "./lib/client.mjs";

/** The count of `shoal_limit_hits_total{limit="<limit>"}` in the node's metrics. */
async function limitHits(metricsSocket, limit) {
  const text = await ack1(metricsSocket, "metrics");
  const line = text.split("\n").find((l) => l.startsWith(`shoal_limit_hits_total{limit="${limit}"}`));
  assert.ok(line, `no series for ${limit} in:\n${text}`);
  return Number(line.split(" ")[1]);
}

/** One HTTP request with Node's own client; resolves with {status, body}, rejects on error. */
function request(url, { method = "GET", body, chunked = false } = {}) {
  return new Promise((resolve, reject) => {
    const headers = {};
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

async function pollingHandshake(url) {
  const res = await request(`${url}/socket.io/?EIO=4&transport=polling`);
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
