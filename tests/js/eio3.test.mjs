// Engine.IO protocol 3 clients (socket.io-client 2.x, Socket.IO protocol 4) with
// `--allow-eio3`: the real socket.io-client 2.5.0 from npm (installed as
// `socket.io-client-v2`) over polling, WebSocket and polling+upgrade; the v3 polling
// payloads read and written by the official engine.io-parser 2.x that client ships with;
// the heartbeat in the v3 direction (the client pings); and the refusal without the option.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { after, afterEach, before, describe, test } from "node:test";
import ioV2 from "socket.io-client-v2";
import { startTestapp, sleep } from "./lib/server.mjs";
import { requestChannel, startRedis } from "./lib/redis.mjs";
import { waitMesh, withClients } from "./lib/cluster.mjs";
import { Clients, ack1 as ack1V4, normalize, waitConnect as waitConnectV4, waitEvent } from "./lib/client.mjs";

// The engine.io-parser 2.x (protocol 3) that socket.io-client 2.5.0 itself uses.
const requireV2 = createRequire(createRequire(import.meta.url).resolve("socket.io-client-v2/package.json"));
const parserV3 = createRequire(requireV2.resolve("engine.io-client/package.json"))("engine.io-parser");
assert.equal(parserV3.protocol, 3, "the v2 client's engine.io-parser speaks protocol 3");

const WAIT_MS = 5000;

const TRANSPORTS_V2 = [
  { name: "polling", opts: { transports: ["polling"] } },
  { name: "websocket", opts: { transports: ["websocket"] } },
  // The 2.x client's default: polling first, then the upgrade to WebSocket.
  { name: "upgrade", opts: {} },
];

/** socket.io-client 2.x sockets of one test, all closed by closeAll(). */
class ClientsV2 {
  constructor(url, opts = {}) {
    this.url = url;
    this.opts = opts;
    this.open = new Set();
  }
  socket(nsp = "/", opts = {}) {
    const socket = ioV2(this.url + nsp, { forceNew: true, reconnection: false, ...this.opts, ...opts });
    this.open.add(socket);
    return socket;
  }
  async connect(nsp = "/", opts = {}) {
    const socket = this.socket(nsp, opts);
    await waitConnect(socket, `v2 connect to ${nsp}`);
    return socket;
  }
  closeAll() {
    for (const socket of this.open) {
      socket.close();
      socket.io?.engine?.close();
    }
    this.open.clear();
  }
}

/** Resolves once a 2.x socket is connected; rejects on connect_error, error or after WAIT_MS. */
function waitConnect(socket, what) {
  if (socket.connected) return Promise.resolve(socket);
  return new Promise((resolve, reject) => {
    const done = (fn, value) => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      socket.off("error", onError);
      fn(value);
    };
    const onConnect = () => done(resolve, socket);
    const onError = (err) => done(reject, new Error(`${what}: ${err?.message ?? JSON.stringify(err)}`));
    const timer = setTimeout(() => done(reject, new Error(`${what}: not connected after ${WAIT_MS} ms`)), WAIT_MS);
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
    socket.on("error", onError);
  });
}

/** Emits with an ack callback (2.x has no timeout()); resolves with the acked arguments. */
function ack(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for "${event}" within ${WAIT_MS} ms`)), WAIT_MS);
    socket.emit(event, ...args, (...response) => {
      clearTimeout(timer);
      resolve(normalize(response));
    });
  });
}

async function ack1(socket, event, ...args) {
  return (await ack(socket, event, ...args))[0];
}

/** Resolves once `predicate()` is true; rejects after `ms`. */
async function eventually(predicate, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(25);
  }
  throw new Error(`${what}: still not true after ${ms} ms`);
}

describe("socket.io-client 2.x with --allow-eio3", () => {
  let server;
  before(async () => {
    server = await startTestapp({ extraArgs: ["--allow-eio3"] });
  });
  after(async () => {
    await server?.stop();
  });

  for (const { name, opts } of TRANSPORTS_V2) {
    describe(`over ${name}`, () => {
      let clients;
      let clientsV4;
      before(() => {
        clients = new ClientsV2(server.url, opts);
        clientsV4 = new Clients(server.url);
      });
      afterEach(() => {
        clients.closeAll();
        clientsV4.closeAll();
      });

      test("connects to / without a CONNECT of its own, its id the session id", async () => {
        const socket = await clients.connect("/");
        assert.equal(socket.id, socket.io.engine.id, "2.x names its / socket after the session");
        const sockets = await ack1(socket, "fetch-sockets", {});
        assert.ok(sockets.some((s) => s.id === socket.id), `the server knows ${socket.id}: ${JSON.stringify(sockets)}`);
        if (name === "upgrade") {
          await eventually(() => socket.io.engine.transport.name === "websocket", "upgraded to WebSocket");
          assert.deepEqual(await ack(socket, "echo", "after upgrade"), ["after upgrade"]);
        }
      });

      test("connects to a custom namespace as <nsp>#<session id>", async () => {
        const socket = clients.socket("/custom");
        const welcome = waitEvent(socket, "welcome");
        await waitConnect(socket, "connect to /custom");
        assert.deepEqual(await welcome, ["/custom"]);
        assert.equal(socket.id, `/custom#${socket.io.engine.id}`);
        assert.deepEqual(await ack(socket, "echo", 1, "two"), [1, "two"]);
      });

      test("the namespace query is its auth; a middleware error arrives as `error` with its data", async () => {
        const admitted = await clients.connect("/admin", { query: { token: "secret" } });
        assert.deepEqual(await ack(admitted, "echo", "in"), ["in"]);
        const refused = clients.socket("/admin", { query: { token: "wrong" } });
        const [error] = await waitEvent(refused, "error", "middleware refusal", WAIT_MS);
        assert.deepEqual(error, { code: 401 }, "err.data, as the reference server sends it to 2.x clients");
        assert.equal(refused.connected, false);
      });

      test("emits with acks both ways, text and non-ASCII", async () => {
        const socket = await clients.connect("/");
        assert.deepEqual(await ack(socket, "echo", "héllo 日本 😀", { n: 1 }), ["héllo 日本 😀", { n: 1 }]);
        socket.on("ask", (question, cb) => cb(`answer to ${question} ✓`));
        const answer = await ack1(socket, "emit-with-ack", { event: "ask", args: ["q1"], timeout: 2000 });
        assert.deepEqual(answer, { ok: true, response: ["answer to q1 ✓"] });
      });

      test("binary both ways: events, acks and attachments nested in objects", async () => {
        const socket = await clients.connect("/");
        const payload = Buffer.from([0, 1, 2, 250, 255]);
        const echoed = await ack(socket, "echo", payload, { deep: [Buffer.from("x")] });
        assert.deepEqual(echoed, [payload, { deep: [Buffer.from("x")] }]);
        const binary = waitEvent(socket, "binary");
        await ack(socket, "emit-binary");
        assert.deepEqual(normalize(await binary), [Buffer.from("hello"), { nested: [Buffer.from([1, 2, 3]), "text"], n: 1 }]);
        socket.on("ask-binary", (data, cb) => cb(Buffer.concat([Buffer.from(data), Buffer.from([9])])));
        const answer = await ack1(socket, "emit-with-ack", { event: "ask-binary", args: [Buffer.from([7, 8])], timeout: 2000 });
        assert.equal(answer.ok, true, JSON.stringify(answer));
        assert.deepEqual(answer.response, [Buffer.from([7, 8, 9])]);
      });

      test("a room broadcast reaches 2.x and 4.x clients alike (text and binary)", async () => {
        const v2 = await clients.connect("/");
        const v4 = await clientsV4.connect("/");
        assert.ok((await ack1(v2, "join", "mixed")).includes("mixed"));
        assert.ok((await ack1V4(v4, "join", "mixed")).includes("mixed"));
        const gotV2 = waitEvent(v2, "news", "2.x client gets the broadcast");
        const gotV4 = waitEvent(v4, "news", "4.x client gets the broadcast");
        const args = ["hi", Buffer.from([1, 2, 3])];
        await ack1V4(v4, "broadcast", { to: "mixed", event: "news", args });
        assert.deepEqual(normalize(await gotV2), args);
        assert.deepEqual(normalize(await gotV4), args);
        // And the other way round: a 2.x client asks for the broadcast.
        const againV2 = waitEvent(v2, "news", "2.x client gets the second broadcast");
        const againV4 = waitEvent(v4, "news", "4.x client gets the second broadcast");
        await ack1(v2, "broadcast", { to: "mixed", event: "news", args: ["again"] });
        assert.deepEqual(await againV2, ["again"]);
        assert.deepEqual(await againV4, ["again"]);
      });

      test("disconnects: by the client, and by the server", async () => {
        const watcher = await clientsV4.connect("/");
        const leaving = await clients.connect("/");
        const id = leaving.id;
        leaving.disconnect();
        await eventually(async () => {
          const log = await ack1V4(watcher, "disconnect-log");
          return log.some((e) => e.id === id && e.reason === "client namespace disconnect");
        }, "the server saw the 2.x client leave");
        const kicked = await clients.connect("/");
        const reason = waitEvent(kicked, "disconnect");
        kicked.emit("disconnect-me", true);
        assert.deepEqual(await reason, ["io server disconnect"]);
      });
    });
  }

  test("the v3 handshake: length-prefixed payload, no maxPayload, / connected at once", async () => {
    const res = await fetch(`${server.url}/socket.io/?EIO=3&transport=polling&b64=1`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type"), /^text\/plain/);
    const packets = [];
    parserV3.decodePayload(await res.text(), (packet) => {
      packets.push(packet);
    });
    assert.equal(packets[0].type, "open", JSON.stringify(packets));
    const open = JSON.parse(packets[0].data);
    assert.deepEqual(Object.keys(open).sort(), ["pingInterval", "pingTimeout", "sid", "upgrades"]);
    assert.deepEqual(open.upgrades, ["websocket"]);
    // The implicit CONNECT answer of `/`: no body (Socket.IO protocol 4).
    let rest = packets.slice(1);
    if (rest.length === 0) {
      const next = await fetch(`${server.url}/socket.io/?EIO=3&transport=polling&sid=${open.sid}`);
      parserV3.decodePayload(await next.text(), (packet) => {
        rest.push(packet);
      });
    }
    assert.deepEqual(rest[0], { type: "message", data: "0" });
  });

  test("binary polling payloads both ways, as engine.io-parser 2.x writes and reads them", async () => {
    // No b64: this client takes binary payloads.
    const base = `${server.url}/socket.io/?EIO=3&transport=polling`;
    const handshake = await (await fetch(base)).text();
    const sid = /"sid":"([^"]+)"/.exec(handshake)[1];
    const url = `${base}&sid=${sid}`;
    const encoded = await new Promise((resolve) =>
      parserV3.encodePayloadAsBinary(
        [
          { type: "message", data: '51-7["echo",{"_placeholder":true,"num":0},"é"]' },
          { type: "message", data: Buffer.from([0xde, 0xad, 0xbe, 0xef]) },
        ],
        resolve,
      ),
    );
    const post = await fetch(url, { method: "POST", body: encoded, headers: { "content-type": "application/octet-stream" } });
    assert.equal(post.status, 200);
    assert.equal(await post.text(), "ok");
    const packets = [];
    const deadline = Date.now() + WAIT_MS;
    while (!packets.some((p) => Buffer.isBuffer(p.data)) && Date.now() < deadline) {
      const res = await fetch(url);
      assert.equal(res.status, 200);
      const body = Buffer.from(await res.arrayBuffer());
      if (res.headers.get("content-type") === "application/octet-stream") {
        parserV3.decodePayloadAsBinary(body, (packet) => {
          packets.push(packet);
        });
      } else {
        parserV3.decodePayload(body.toString("utf8"), (packet) => {
          packets.push(packet);
        });
      }
    }
    const ackIndex = packets.findIndex((p) => p.type === "message" && typeof p.data === "string" && p.data.startsWith("61-7"));
    assert.ok(ackIndex >= 0, `a binary ack for id 7: ${JSON.stringify(packets)}`);
    assert.equal(packets[ackIndex].data, '61-7[{"_placeholder":true,"num":0},"é"]');
    assert.deepEqual(packets[ackIndex + 1], { type: "message", data: Buffer.from([0xde, 0xad, 0xbe, 0xef]) });
  });

  test("a text polling payload with non-ASCII text, as the 2.x client counts its lengths", async () => {
    const base = `${server.url}/socket.io/?EIO=3&transport=polling&b64=1`;
    const handshake = await (await fetch(base)).text();
    const sid = /"sid":"([^"]+)"/.exec(handshake)[1];
    const url = `${server.url}/socket.io/?EIO=3&transport=polling&sid=${sid}`;
    const body = await new Promise((resolve) =>
      parserV3.encodePayload(
        [
          { type: "message", data: '23["echo","😀 日本 é"]' },
          { type: "message", data: "51-4[\"echo\",{\"_placeholder\":true,\"num\":0}]" },
          { type: "message", data: Buffer.from([1, 2, 3]) },
        ],
        false,
        resolve,
      ),
    );
    assert.ok(body.includes("b4AQID"), `binary as base64 with its type: ${body}`);
    const post = await fetch(url, { method: "POST", body, headers: { "content-type": "text/plain;charset=UTF-8" } });
    assert.equal(await post.text(), "ok");
    const packets = [];
    const deadline = Date.now() + WAIT_MS;
    while (!packets.some((p) => Buffer.isBuffer(p.data)) && Date.now() < deadline) {
      const res = await fetch(url);
      assert.match(res.headers.get("content-type"), /^text\/plain/, "b64=1: always text");
      let ok = true;
      parserV3.decodePayload(await res.text(), (packet) => {
        if (packet.type === "error") ok = false;
        packets.push(packet);
      });
      assert.ok(ok, `the 2.x parser reads the payload: ${JSON.stringify(packets)}`);
    }
    const data = packets.filter((p) => p.type === "message").map((p) => p.data);
    assert.ok(data.includes('33["😀 日本 é"]'), JSON.stringify(data));
    assert.ok(data.includes('61-4[{"_placeholder":true,"num":0}]'), JSON.stringify(data));
    assert.deepEqual(packets.at(-1), { type: "message", data: Buffer.from([1, 2, 3]) });
  });
});

describe("a cluster of two nodes with --allow-eio3 (Redis adapter)", () => {
  let redis;
  let nodes = [];
  before(async () => {
    redis = await startRedis();
    nodes = await Promise.all(
      ["n1", "n2"].map((nodeId) => startTestapp({ redis: redis.url, nodeId, extraArgs: ["--allow-eio3"] })),
    );
    await redis.waitSubscribers(requestChannel("/"), 2);
    nodes = nodes.map((node, i) => withClients(node, ["n1", "n2"][i]));
    await waitMesh(nodes);
  });
  after(async () => {
    for (const node of nodes) node.closeClients?.();
    await Promise.all(nodes.map((node) => node.stop()));
    await redis?.stop();
  });

  for (const { name, opts } of TRANSPORTS_V2) {
    test(`a broadcast from a 4.x client on n2 reaches a 2.x client (${name}) on n1, binary included`, async () => {
      const clients = new ClientsV2(nodes[0].url, opts);
      const clientsV4 = new Clients(nodes[1].url);
      try {
        const v2 = await clients.connect("/");
        const v4 = await clientsV4.connect("/");
        const room = `cross-${name}`;
        await ack1(v2, "join", room);
        await ack1V4(v4, "join", room);
        const gotV2 = waitEvent(v2, "news", "the 2.x client on n1 gets it");
        const args = ["from n2", Buffer.from([4, 5, 6]), { nested: Buffer.from("é") }];
        await ack1V4(v4, "broadcast", { to: room, event: "news", args });
        assert.deepEqual(normalize(await gotV2), args);
        // fetchSockets across the cluster lists the 2.x socket under its id.
        const sockets = await ack1V4(v4, "fetch-sockets", { to: room });
        assert.deepEqual(sockets.map((s) => s.id).sort(), [v2.id, v4.id].sort());
      } finally {
        clients.closeAll();
        clientsV4.closeAll();
      }
    });
  }
});

describe("the v3 heartbeat: the client pings, the server times out a silent one", () => {
  let server;
  before(async () => {
    server = await startTestapp({ extraArgs: ["--allow-eio3"], pingInterval: 300, pingTimeout: 200 });
  });
  after(async () => {
    await server?.stop();
  });

  for (const { name, opts } of TRANSPORTS_V2.slice(0, 2)) {
    test(`over ${name}: a pinging client stays, one that stops is dropped with "ping timeout"`, async () => {
      const clients = new ClientsV2(server.url, opts);
      const clientsV4 = new Clients(server.url);
      try {
        const watcher = await clientsV4.connect("/");
        const alive = await clients.connect("/");
        const silent = await clients.connect("/");
        let pongs = 0;
        alive.io.engine.on("pong", () => pongs++);
        // Stop the silent client's pings and its own timeout: only the server can end it.
        const engine = silent.io.engine;
        engine.removeListener("heartbeat", engine.onHeartbeat);
        engine.setPing = () => {};
        engine.onHeartbeat = () => {};
        clearTimeout(engine.pingIntervalTimer);
        clearTimeout(engine.pingTimeoutTimer);
        const silentId = silent.id;
        const dropped = waitEvent(silent, "disconnect", "the silent client is dropped", 3000);
        const started = Date.now();
        await dropped;
        const elapsed = Date.now() - started;
        // Its last ping was at most one interval before; the server waits interval + timeout.
        assert.ok(elapsed <= 1500, `dropped after ${elapsed} ms`);
        await eventually(async () => {
          const log = await ack1V4(watcher, "disconnect-log");
          return log.some((e) => e.id === silentId && e.reason === "ping timeout");
        }, "the server logged a ping timeout");
        // Meanwhile, well past interval + timeout, the pinging client is still there.
        await sleep(600);
        assert.equal(alive.connected, true);
        assert.ok(pongs >= 2, `the server answered its pings (${pongs} pongs)`);
        assert.deepEqual(await ack(alive, "echo", "still here"), ["still here"]);
      } finally {
        clients.closeAll();
        clientsV4.closeAll();
      }
    });
  }
});

describe("without --allow-eio3", () => {
  let server;
  before(async () => {
    server = await startTestapp();
  });
  after(async () => {
    await server?.stop();
  });

  test("EIO=3 is refused with 400 Unsupported protocol version", async () => {
    const res = await fetch(`${server.url}/socket.io/?EIO=3&transport=polling`);
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), { code: 5, message: "Unsupported protocol version" });
  });

  for (const { name, opts } of TRANSPORTS_V2.slice(0, 2)) {
    test(`a socket.io-client 2.x over ${name} gets connect_error and never connects`, async () => {
      const clients = new ClientsV2(server.url, opts);
      try {
        const socket = clients.socket("/");
        let connected = false;
        socket.on("connect", () => {
          connected = true;
        });
        const [err] = await waitEvent(socket, "connect_error");
        assert.ok(err instanceof Error, String(err));
        await sleep(200);
        assert.equal(connected, false);
      } finally {
        clients.closeAll();
      }
    });
  }
});

describe("4.x clients on a server with --allow-eio3", () => {
  let server;
  before(async () => {
    server = await startTestapp({ extraArgs: ["--allow-eio3"] });
  });
  after(async () => {
    await server?.stop();
  });

  test("are unchanged: random socket ids, maxPayload in the handshake, explicit CONNECT", async () => {
    const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
    const open = JSON.parse((await res.text()).slice(1));
    assert.equal(open.maxPayload, 1000000);
    const clients = new Clients(server.url);
    try {
      const socket = await clients.connect("/");
      await waitConnectV4(socket);
      assert.notEqual(socket.id, socket.io.engine.id, "a 4.x socket id is not its session id");
    } finally {
      clients.closeAll();
    }
  });
});
