// Engine.IO level behaviour seen through the official client and plain HTTP: the open
// packet, upgrade from polling to WebSocket, heartbeats and ping timeouts, transport
// restrictions (--transports), the connect timeout, and errors for bad requests.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Manager } from "socket.io-client";
import { startTestapp } from "./lib/server.mjs";
import {
  Clients,
  TIMER_SLACK_MS,
  TRANSPORTS,
  ack,
  ack1,
  eventually,
  waitConnect,
  waitConnectError,
  waitEvent,
} from "./lib/client.mjs";

/** GETs a polling handshake and returns the parsed open packet. */
async function rawHandshake(url) {
  const res = await fetch(`${url}/socket.io/?EIO=4&transport=polling`);
  const body = await res.text();
  assert.equal(res.status, 200, `handshake status ${res.status}: ${body}`);
  assert.equal(body[0], "0", `open packet expected, got ${body}`);
  return JSON.parse(body.slice(1));
}

describe("raw Engine.IO requests", () => {
  let server;
  before(async () => {
    server = await startTestapp();
  });
  after(async () => {
    await server?.stop();
  });

  test("the open packet carries sid, upgrades and the default limits", async () => {
    const open = await rawHandshake(server.url);
    assert.equal(typeof open.sid, "string");
    // `<node id>~<22 chars of URL-safe base64>`: 128 random bits, the node's id before them.
    assert.match(open.sid, /^[A-Za-z0-9_-]{1,64}~[A-Za-z0-9_-]{22}$/);
    assert.deepEqual(open.upgrades, ["websocket"]);
    assert.equal(open.pingInterval, 25000);
    assert.equal(open.pingTimeout, 20000);
    assert.equal(open.maxPayload, 1000000);
    const other = await rawHandshake(server.url);
    assert.notEqual(other.sid, open.sid, "every handshake gets a new sid");
  });

  test("sids carry at least 96 random bits: every bit of the random part varies", async () => {
    // 200 handshakes: a bit that is random is the same in all of them with probability
    // 2^-199; a counter, a clock or a constant leaves most bits fixed.
    const sids = [];
    for (let i = 0; i < 200; i++) sids.push((await rawHandshake(server.url)).sid);
    const [node] = sids[0].split("~");
    const randoms = sids.map((sid) => {
      const [owner, random] = sid.split("~");
      assert.equal(owner, node, "every sid names the same owner node");
      const bytes = Buffer.from(random, "base64url");
      assert.equal(bytes.length, 16, `${random}: 128 bits`);
      return bytes;
    });
    assert.equal(new Set(sids).size, sids.length, "no sid twice");
    const varying = [];
    for (let bit = 0; bit < 128; bit++) {
      const values = new Set(randoms.map((b) => (b[bit >> 3] >> (7 - (bit & 7))) & 1));
      if (values.size === 2) varying.push(bit);
    }
    assert.equal(varying.length, 128, `only ${varying.length} of 128 bits vary across 200 sids`);
  });

  test("an unknown sid is refused with 400 Session ID unknown", async () => {
    const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling&sid=doesnotexist`);
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), { code: 1, message: "Session ID unknown" });
    const post = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling&sid=doesnotexist`, {
      method: "POST",
      body: "40",
    });
    assert.equal(post.status, 400);
    assert.deepEqual(await post.json(), { code: 1, message: "Session ID unknown" });
  });

  test("an unknown transport is refused with 400 Transport unknown", async () => {
    const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=carrier-pigeon`);
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), { code: 0, message: "Transport unknown" });
  });

  test("Engine.IO protocol 3 is refused with 400 Unsupported protocol version", async () => {
    const res = await fetch(`${server.url}/socket.io/?EIO=3&transport=polling`);
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), { code: 5, message: "Unsupported protocol version" });
  });

  test("a polling session works by hand: connect, emit with ack, read the ack", async () => {
    const { sid } = await rawHandshake(server.url);
    const base = `${server.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`;
    let res = await fetch(base, { method: "POST", body: "40" });
    assert.equal(res.status, 200, await res.text());
    res = await fetch(base);
    const connect = await res.text();
    assert.match(connect, /^40\{"sid":"[^"]+"/, `CONNECT answer: ${connect}`);
    // Two packets in one payload, separated by \x1e.
    res = await fetch(base, { method: "POST", body: '421["echo","a"]\x1e422["echo",{"b":[1]}]' });
    assert.equal(res.status, 200, await res.text());
    const acks = [];
    while (acks.length < 2) {
      res = await fetch(base);
      acks.push(...(await res.text()).split("\x1e"));
    }
    assert.deepEqual(acks, ['431["a"]', '432[{"b":[1]}]']);
  });
});

for (const transport of TRANSPORTS) {
  describe(`heartbeat over ${transport.name}`, () => {
    let server;
    let clients;
    before(async () => {
      server = await startTestapp({ pingInterval: 300, pingTimeout: 200 });
      clients = new Clients(server.url, transport.opts);
    });
    after(async () => {
      clients?.closeAll();
      await server?.stop();
    });

    test("the client learns the configured ping interval and timeout", async () => {
      const socket = clients.socket();
      const [handshake] = await waitEvent(socket.io.engine, "handshake");
      await waitConnect(socket);
      assert.equal(handshake.pingInterval, 300);
      assert.equal(handshake.pingTimeout, 200);
      assert.equal(handshake.maxPayload, 1000000);
    });

    test("a live client stays connected over many ping cycles", async () => {
      const socket = await clients.connect();
      let pings = 0;
      socket.io.engine.on("ping", () => (pings += 1));
      let disconnected = null;
      socket.on("disconnect", (reason) => (disconnected = reason));
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(disconnected, null, `disconnected during pings: ${disconnected}`);
      assert.ok(pings >= 3, `expected ≥3 pings in 2 s at a 300 ms interval, got ${pings}`);
      assert.deepEqual(await ack(socket, "echo", "alive"), ["alive"]);
    });

    if (transport.name !== "upgrade") {
      test("a client that stops answering pings is dropped with ping timeout", async () => {
        const observer = await clients.connect();
        const socket = await clients.connect();
        const id = socket.id;
        const engine = socket.io.engine;
        const send = engine._sendPacket.bind(engine);
        assert.equal(typeof send, "function", "engine.io-client internals changed");
        // Swallow pongs: the engine still receives pings but never answers them.
        engine._sendPacket = (type, ...rest) => (type === "pong" ? undefined : send(type, ...rest));
        const started = Date.now();
        let entry;
        await eventually(async () => {
          const log = await ack1(observer, "disconnect-log");
          entry = log.find((e) => e.id === id);
          assert.ok(entry, `server did not drop ${id} yet: ${JSON.stringify(log)}`);
        }, 4000);
        const elapsed = Date.now() - started;
        assert.equal(entry.reason, "ping timeout");
        assert.ok(elapsed < 2000, `detected after ${elapsed} ms; interval+timeout is 500 ms`);
        await eventually(() => assert.equal(socket.connected, false, "client still connected"), 3000);
      });
    }
  });
}

describe("the default client upgrades from polling to WebSocket", () => {
  let server;
  let clients;
  before(async () => {
    server = await startTestapp();
    clients = new Clients(server.url, {});
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("upgrade happens and nothing sent during it is lost", async () => {
    const socket = clients.socket();
    const engine = socket.io.engine;
    let firstTransport;
    engine.once("open", () => (firstTransport = engine.transport.name));
    const upgraded = waitEvent(engine, "upgrade", "engine upgrade");
    const pending = [];
    // Sent before the socket is connected (buffered by the client) ...
    for (let i = 0; i < 25; i++) pending.push(ack(socket, "echo", i, Buffer.from([i])));
    // ... and while the WebSocket probe is in flight.
    engine.once("upgrading", () => {
      for (let i = 25; i < 50; i++) pending.push(ack(socket, "echo", i, Buffer.from([i])));
    });
    await waitConnect(socket);
    await upgraded;
    assert.equal(firstTransport, "polling", "starts on polling");
    assert.equal(engine.transport.name, "websocket");
    assert.equal(pending.length, 50, "the upgrading event fired");
    const results = await Promise.all(pending);
    results.forEach((r, i) => assert.deepEqual(r, [i, Buffer.from([i])], `ack #${i}`));
    // Events sent by the server keep flowing after the upgrade.
    const received = waitEvent(socket, "echo");
    socket.emit("echo", "after upgrade");
    assert.deepEqual(await received, ["after upgrade"]);
  });
});

describe("--transports polling", () => {
  let server;
  let clients;
  before(async () => {
    server = await startTestapp({ transports: "polling" });
    clients = new Clients(server.url, {});
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("the open packet offers no upgrade", async () => {
    const open = await rawHandshake(server.url);
    assert.deepEqual(open.upgrades, []);
  });

  test("a websocket-only client cannot connect", async () => {
    const socket = clients.socket("/", { transports: ["websocket"] });
    await waitConnectError(socket);
    assert.equal(socket.connected, false);
  });

  test("a default client connects and stays on polling", async () => {
    const socket = await clients.connect();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(socket.io.engine.transport.name, "polling");
    assert.deepEqual(await ack(socket, "echo", "p"), ["p"]);
  });
});

describe("--transports websocket", () => {
  let server;
  let clients;
  before(async () => {
    server = await startTestapp({ transports: "websocket" });
    clients = new Clients(server.url, {});
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("a polling-only client cannot connect", async () => {
    const socket = clients.socket("/", { transports: ["polling"] });
    await waitConnectError(socket);
    assert.equal(socket.connected, false);
  });

  test("a websocket-only client connects", async () => {
    const socket = await clients.connect("/", { transports: ["websocket"] });
    assert.deepEqual(await ack(socket, "echo", "w"), ["w"]);
  });
});

describe("--connect-timeout", () => {
  let server;
  let clients;
  before(async () => {
    server = await startTestapp({ connectTimeout: 300 });
    clients = new Clients(server.url, {});
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  for (const t of TRANSPORTS.filter((t) => t.name !== "upgrade")) {
    test(`a session that joins no namespace is closed (${t.name})`, async () => {
      // A Manager opens the Engine.IO session at once, but no socket ever sends CONNECT.
      // The node starts the 300 ms deadline when it opens the session: after `asked` (the
      // handshake is sent then), before `opened` (the open packet comes after it). So the
      // close comes at least 300 ms after `asked` and at most 300 + TIMER_SLACK_MS after
      // `opened`.
      const asked = performance.now();
      const manager = new Manager(server.url, { reconnection: false, ...t.opts });
      clients.open.add(manager);
      await waitEvent(manager, "open", "engine open");
      const opened = performance.now();
      await waitEvent(manager.engine, "close", "engine close after connect timeout", 3000);
      const closed = performance.now();
      assert.ok(closed - asked >= 300, `closed ${(closed - asked).toFixed(1)} ms after the handshake was sent, before the 300 ms connect timeout`);
      assert.ok(
        closed - opened <= 300 + TIMER_SLACK_MS,
        `closed ${(closed - opened).toFixed(1)} ms after the session opened, later than 300 + ${TIMER_SLACK_MS} ms`,
      );
    });
  }

  test("a socket that joins in time is not affected", async () => {
    const socket = await clients.connect();
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(socket.connected, true);
    assert.deepEqual(await ack(socket, "echo", 1), [1]);
  });
});
