// The msgpack parser (`--parser msgpack`): the official socket.io-client 4.8.3 built with
// socket.io-msgpack-parser 3.0.2 against shoal's test app, over polling, WebSocket and the
// upgrade: events, acks and binary both ways, namespaces, room broadcasts, connect_error
// with data, and connection state recovery; the wire by hand (each packet one binary
// message, MessagePack as notepack writes it; anything else closes that session only);
// and a mixed cluster where a Node.js socket.io 4.8.3 node with the same parser and shoal
// exchange room broadcasts through the Redis adapter.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import msgpackParser from "socket.io-msgpack-parser";
import { Clients, TRANSPORTS, ack, ack1, unique, waitConnect, waitConnectError, waitEvent } from "./lib/client.mjs";
import { waitMesh } from "./lib/cluster.mjs";
import { requestChannel, startRedis } from "./lib/redis.mjs";
import { sleep, startNodePeer, startShoal, startTestapp } from "./lib/server.mjs";

const MSGPACK = ["--parser", "msgpack"];

/** A packet as the official parser writes it: one binary message. */
function encodePacket(packet) {
  const out = new msgpackParser.Encoder().encode(packet);
  assert.equal(out.length, 1);
  return out[0];
}

/** A binary message as the official parser reads it (throws what it throws). */
function decodePacket(bytes) {
  const decoder = new msgpackParser.Decoder();
  let packet;
  decoder.on("decoded", (p) => (packet = p));
  decoder.add(bytes);
  return packet;
}

/** Emits with an ack callback; resolves with the acked arguments exactly as the client got them. */
function rawAck(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5000).emit(event, ...args, (err, ...response) => (err ? reject(err) : resolve(response)));
  });
}

/** A node handle whose clients all use the msgpack parser (the shape lib/cluster.mjs uses). */
function withMsgpackClients(node, id) {
  const byTransport = new Map();
  node.id = id;
  node.clients = (transport) => {
    if (!byTransport.has(transport.name)) byTransport.set(transport.name, new Clients(node.url, { ...transport.opts, parser: msgpackParser }));
    return byTransport.get(transport.name);
  };
  node.closeClients = () => {
    for (const c of byTransport.values()) c.closeAll();
  };
  return node;
}

/** Connects `n` sockets and waits until each has its connection. */
async function connectAll(clients, n, nsp = "/", opts = {}) {
  return Promise.all(Array.from({ length: n }, () => clients.connect(nsp, opts)));
}

for (const transport of TRANSPORTS) {
  describe(`the msgpack parser over ${transport.name}`, () => {
    let server;
    let clients;

    before(async () => {
      server = await startTestapp({ extraArgs: MSGPACK });
      clients = new Clients(server.url, { ...transport.opts, parser: msgpackParser });
    });

    after(async () => {
      clients?.closeAll();
      await server?.stop();
    });

    test("events both ways: the client emits, the server emits back", async () => {
      const socket = await clients.connect();
      const args = ["hello", 1, -2.5, null, true, { nested: ["é", 2 ** 40, -(2 ** 40)] }, []];
      const echoed = waitEvent(socket, "echo");
      socket.emit("echo", ...args);
      assert.deepEqual(await echoed, args);
    });

    test("acks both ways: the server acks the client, the client acks the server", async () => {
      const socket = await clients.connect();
      assert.deepEqual(await ack(socket, "echo", "a", { b: [1, 2] }), ["a", { b: [1, 2] }]);
      socket.on("ask", (question, callback) => callback({ answer: question * 2 }, "second"));
      const answer = await ack1(socket, "emit-with-ack", { event: "ask", args: [21], timeout: 2000 });
      assert.deepEqual(answer, { ok: true, response: [{ answer: 42 }, "second"] });
    });

    test("binary both ways arrives as Buffers, nested and empty ones included", async () => {
      const socket = await clients.connect();
      const payload = [Buffer.from([0, 1, 254, 255]), { file: Buffer.alloc(70_000, 7), list: [Buffer.alloc(0), "x"] }];
      const [first, second] = await rawAck(socket, "echo", ...payload);
      assert.ok(Buffer.isBuffer(first), `not a Buffer: ${first}`);
      assert.deepEqual(first, payload[0]);
      assert.ok(Buffer.isBuffer(second.file) && Buffer.isBuffer(second.list[0]));
      assert.deepEqual(second, payload[1]);
      const binary = waitEvent(socket, "binary");
      await ack(socket, "emit-binary");
      const [hello, nested] = await binary;
      assert.ok(Buffer.isBuffer(hello));
      assert.equal(hello.toString(), "hello");
      assert.deepEqual(nested, { nested: [Buffer.from([1, 2, 3]), "text"], n: 1 });
    });

    test("namespaces: static, with auth, dynamic, several on one connection", async () => {
      const manager = clients.manager();
      const main = manager.socket("/");
      const custom = manager.socket("/custom");
      const admin = manager.socket("/admin", { auth: { token: "secret" } });
      const dynamic = manager.socket("/dyn-abc1");
      const welcomes = [custom, admin, dynamic].map((s) => waitEvent(s, "welcome"));
      await Promise.all([main, custom, admin, dynamic].map((s) => waitConnect(s)));
      assert.deepEqual(await Promise.all(welcomes), [["/custom"], ["/admin"], ["/dyn-abc1"]]);
      assert.deepEqual(await ack(custom, "echo", "in /custom"), ["in /custom"]);
      custom.disconnect();
      assert.deepEqual(await ack(main, "echo", "main goes on"), ["main goes on"]);
    });

    test("a room broadcast reaches the room's sockets once and no other", async () => {
      const [a, b, outsider, sender] = await connectAll(clients, 4);
      const room = unique("room");
      await ack(a, "join", room);
      await ack(b, "join", room);
      const got = { a: [], b: [], outsider: [], sender: [] };
      for (const [name, s] of Object.entries({ a, b, outsider, sender })) s.on("news", (...args) => got[name].push(args));
      const args = ["for the room", Buffer.from([9, 9]), { n: 1 }];
      await ack(sender, "broadcast", { to: room, event: "news", args });
      await ack(sender, "broadcast", { to: room, event: "news", args: ["second"] });
      // Each connection delivers in order: the ack of an echo sent after the broadcasts
      // arrives after them.
      await Promise.all([a, b, outsider].map((s) => ack(s, "echo", "sync")));
      assert.deepEqual(got.a, [args, ["second"]]);
      assert.deepEqual(got.b, [args, ["second"]]);
      assert.deepEqual(got.outsider, []);
      assert.deepEqual(got.sender, []);
    });

    test("connect_error carries the middleware's message and data", async () => {
      const rejected = clients.socket("/", { auth: { reject: true } });
      const err = await waitConnectError(rejected);
      assert.equal(err.message, "rejected");
      assert.deepEqual(err.data, { reason: "auth.reject" });
      const admin = clients.socket("/admin", { auth: { token: "wrong" } });
      const adminErr = await waitConnectError(admin);
      assert.equal(adminErr.message, "unauthorized");
      assert.deepEqual(adminErr.data, { code: 401 });
      const nowhere = clients.socket("/nowhere");
      assert.equal((await waitConnectError(nowhere)).message, "Invalid namespace");
    });
  });
}

describe("the shoal binary with --parser msgpack", () => {
  let servers = [];
  let clients = [];
  after(async () => {
    for (const c of clients) c.closeAll();
    await Promise.all(servers.map((s) => s.stop()));
  });

  test("serves msgpack clients, binary included; a default-parser client cannot connect", async () => {
    const server = await startShoal({ extraArgs: ["--parser", "msgpack"] });
    servers.push(server);
    const msgpackClients = new Clients(server.url, { transports: ["websocket"], parser: msgpackParser });
    const jsonClients = new Clients(server.url, { transports: ["websocket"] });
    clients.push(msgpackClients, jsonClients);
    const socket = await msgpackClients.connect();
    const [bytes, text] = await rawAck(socket, "echo", Buffer.from([1, 2, 3]), "é");
    assert.ok(Buffer.isBuffer(bytes));
    assert.deepEqual([...bytes], [1, 2, 3]);
    assert.equal(text, "é");
    const json = jsonClients.socket("/");
    await assert.rejects(waitConnect(json, "default-parser client", 1500));
    assert.equal(json.connected, false);
  });
});

describe("the msgpack parser on the wire (raw polling)", () => {
  let server;
  before(async () => {
    server = await startTestapp({ extraArgs: MSGPACK });
  });
  after(async () => {
    await server?.stop();
  });

  async function handshake() {
    const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
    const body = await res.text();
    assert.equal(body[0], "0", body);
    const { sid } = JSON.parse(body.slice(1));
    return `${server.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`;
  }
  /** POSTs packets: binary ones as `b<base64>`, as engine.io-client does over polling. */
  async function post(base, ...packets) {
    const body = packets.map((p) => (typeof p === "string" ? p : "b" + Buffer.from(p).toString("base64"))).join("\x1e");
    const res = await fetch(base, { method: "POST", body });
    return { status: res.status, text: await res.text() };
  }
  /** GETs one payload and decodes each `b<base64>` packet with the official parser. */
  async function get(base) {
    const res = await fetch(base);
    const text = await res.text();
    return { status: res.status, text, packets: text.split("\x1e").map((p) => (p[0] === "b" ? decodePacket(Buffer.from(p.slice(1), "base64")) : p)) };
  }

  test("each packet is one binary message holding the packet object", async () => {
    const base = await handshake();
    assert.equal((await post(base, encodePacket({ type: 0, nsp: "/" }))).text, "ok");
    const [connect] = (await get(base)).packets;
    assert.equal(connect.type, 0);
    assert.equal(connect.nsp, "/");
    assert.equal(typeof connect.data.sid, "string");
    const ask = { type: 2, data: ["echo", Buffer.from([1, 2]), { k: "v" }], options: { compress: true }, id: 7, nsp: "/" };
    assert.equal((await post(base, encodePacket(ask))).text, "ok");
    const [answer] = (await get(base)).packets;
    assert.deepEqual(answer, { type: 3, data: [Buffer.from([1, 2]), { k: "v" }], nsp: "/", id: 7 });
  });

  test("a text packet, a malformed one or a hostile one closes that session only", async () => {
    const bystander = await handshake();
    await post(bystander, encodePacket({ type: 0, nsp: "/" }));
    await get(bystander);
    const hostile = [
      "40", // the default parser's CONNECT
      Buffer.from([0xc1]), // not MessagePack
      encodePacket({ type: 9, nsp: "/" }),
      encodePacket({ type: 2, nsp: "/", data: "not an array" }),
      Buffer.concat([Buffer.from([0x81, 0xa4]), Buffer.from("data"), Buffer.alloc(2000, 0x91), Buffer.from([0xc0])]), // 2000 levels deep
      Buffer.from([0x83, 0xa4, ...Buffer.from("type"), 0x02, 0xa4, ...Buffer.from("data"), 0xdd, 0xff, 0xff, 0xff, 0xff]), // 4G items promised
    ];
    for (const packet of hostile) {
      const base = await handshake();
      assert.equal((await post(base, encodePacket({ type: 0, nsp: "/" }))).text, "ok");
      await get(base);
      await post(base, packet);
      // The session is closed: its next poll is refused or answered with a close packet.
      const after = await get(base);
      assert.ok(after.status === 400 || after.text === "1", `session still open after ${Buffer.from(packet).toString("hex").slice(0, 40)}: ${after.status} ${after.text}`);
    }
    assert.equal((await post(bystander, encodePacket({ type: 2, data: ["echo", "still here"], id: 1, nsp: "/" }))).text, "ok");
    assert.deepEqual((await get(bystander)).packets, [{ type: 3, data: ["still here"], nsp: "/", id: 1 }]);
  });
});

describe("the msgpack parser with connection state recovery", () => {
  let server;
  let clients;
  before(async () => {
    server = await startTestapp({ extraArgs: [...MSGPACK, "--recovery", "60000"] });
    clients = new Clients(server.url, { transports: ["websocket"], parser: msgpackParser });
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("a dropped client comes back recovered and gets the missed events, each once, with their offsets", async () => {
    const socket = clients.socket("/", { reconnection: true, reconnectionDelay: 300, reconnectionDelayMax: 300, randomizationFactor: 0 });
    await waitConnect(socket);
    assert.equal(socket.recovered, false);
    const id = socket.id;
    const room = unique("room");
    await ack(socket, "join", room);
    const got = [];
    socket.on("tick", (...args) => got.push(args));
    const sender = await clients.connect();
    // The client must hold an offset (that of tick 0) before its transport drops.
    const first = waitEvent(socket, "tick");
    await ack(sender, "broadcast", { to: room, event: "tick", args: [0, Buffer.from([0])] });
    await first;
    const reconnected = waitEvent(socket, "connect", "reconnect", 5000);
    socket.io.engine.close();
    for (let n = 1; n <= 3; n++) await ack(sender, "broadcast", { to: room, event: "tick", args: [n, Buffer.from([n])] });
    await reconnected;
    assert.equal(socket.recovered, true);
    assert.equal(socket.id, id);
    await ack(sender, "broadcast", { to: room, event: "tick", args: [4, Buffer.from([4])] });
    await ack(socket, "echo", "sync");
    assert.deepEqual(got.map((args) => args[0]), [0, 1, 2, 3, 4], "every tick once, in order");
    for (const args of got) {
      assert.equal(args.length, 3, `${JSON.stringify(args)}: the offset is the last argument`);
      assert.ok(Buffer.isBuffer(args[1]) && args[1][0] === args[0]);
      assert.equal(typeof args[2], "string");
    }
    assert.equal(new Set(got.map((args) => args[2])).size, got.length, "offsets differ");
  });
});

describe("a mixed cluster with the msgpack parser: Node.js socket.io and shoal", () => {
  let redis;
  let nodes = [];

  before(async () => {
    redis = await startRedis();
    const peer = withMsgpackClients(await startNodePeer({ redis: redis.url, nodeId: "node", parser: "msgpack" }), "node");
    nodes.push(peer);
    const shoal = withMsgpackClients(await startTestapp({ redis: redis.url, nodeId: "s1", extraArgs: MSGPACK }), "s1");
    nodes.push(shoal);
    await redis.waitSubscribers(requestChannel("/"), 2);
    await waitMesh(nodes);
  });

  after(async () => {
    for (const node of nodes) node.closeClients();
    await Promise.all(nodes.map((node) => node.stop()));
    await redis?.stop();
  });

  test("room broadcasts both ways reach the room's sockets on both nodes, binary as binary", async () => {
    const transport = { name: "websocket-msgpack", opts: { transports: ["websocket"], parser: msgpackParser } };
    const sockets = [];
    for (const node of nodes) sockets.push(...(await connectAll(node.clients(transport), 2)));
    // #0 #1 on Node, #2 #3 on shoal.
    assert.deepEqual(await Promise.all(sockets.map((s) => ack1(s, "whoami"))), ["node", "node", "s1", "s1"]);
    const room = unique("room");
    for (const i of [0, 2, 3]) await ack(sockets[i], "join", room);
    const got = sockets.map(() => []);
    sockets.forEach((s, i) => s.on("news", (...args) => got[i].push(args)));
    const fromShoal = ["from shoal", Buffer.from([0xde, 0xad]), { deep: [Buffer.alloc(300, 1), 1.5, -7] }];
    const fromNode = ["from node", Buffer.from([1, 2, 3]), { big: 2 ** 40 }];
    await ack(sockets[3], "broadcast", { to: room, event: "news", args: fromShoal });
    await ack(sockets[1], "broadcast", { to: room, event: "news", args: fromNode });
    const deadline = Date.now() + 5000;
    while ([0, 2, 3].some((i) => got[i].length < 2) && Date.now() < deadline) await sleep(20);
    await sleep(200); // nothing more arrives
    for (const i of [0, 2, 3]) {
      const sorted = [...got[i]].sort((a, b) => a[0].localeCompare(b[0]));
      assert.deepEqual(sorted, [fromNode, fromShoal], `socket #${i}`);
      for (const args of got[i]) assert.ok(Buffer.isBuffer(args[1]), `socket #${i}: not binary`);
    }
    assert.deepEqual(got[1], [], "socket #1 is not in the room");
  });
});
