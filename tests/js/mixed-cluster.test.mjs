// A mixed cluster on one Redis: a Node.js socket.io 4.8 server on the official
// @socket.io/redis-adapter 8.3 (tests/js/peers/node-server.mjs) beside two shoal nodes.
// Broadcasts (binary included), rooms, except, fetch-sockets, sockets-join,
// disconnect-sockets, broadcasts with acks and server-side-emit work both ways, and
// @socket.io/redis-emitter 5.1 reaches shoal clients in rooms and namespaces.
//
// Sockets: #0 #1 on the Node server ("node"), #2 #3 on shoal "s1", #4 #5 on shoal "s2".

import { Emitter } from "@socket.io/redis-emitter";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createClient } from "redis";
import { TRANSPORTS, Recorder, ack, ack1, eventually, unique, waitDisconnect } from "./lib/client.mjs";
import { bySocketId, counts, spread, startShoalNodes, waitMesh, withClients } from "./lib/cluster.mjs";
import { requestChannel, startRedis } from "./lib/redis.mjs";
import { startNodePeer } from "./lib/server.mjs";

const REQUESTS_TIMEOUT_MS = 3000;
const NODE = [0, 1];
const SHOAL = [2, 3, 4, 5];

describe("mixed cluster: a Node.js socket.io server and two shoal nodes", () => {
  let redis;
  let nodes = [];
  let emitterClient;
  let emitter;

  before(async () => {
    redis = await startRedis();
    const peer = withClients(
      await startNodePeer({ redis: redis.url, nodeId: "node", requestsTimeout: REQUESTS_TIMEOUT_MS }),
      "node",
    );
    nodes.push(peer);
    nodes.push(
      ...(await startShoalNodes(redis, ["s1", "s2"], {
        requestsTimeout: REQUESTS_TIMEOUT_MS,
        expectedSubscribers: 3,
        peers: [peer],
      })),
    );
    emitterClient = createClient({ url: redis.url });
    emitterClient.on("error", () => {});
    await emitterClient.connect();
    emitter = new Emitter(emitterClient);
  });

  after(async () => {
    for (const node of nodes) node.closeClients();
    await Promise.all(nodes.map((node) => node.stop()));
    await emitterClient?.quit().catch(() => {});
    await redis?.stop();
  });

  const group = () => spread(nodes, 2, unique);

  test("the sockets are on the Node server and on both shoal nodes", async () => {
    const { sockets } = await group();
    assert.deepEqual(await Promise.all(sockets.map((s) => ack1(s, "whoami"))), ["node", "node", "s1", "s1", "s2", "s2"]);
  });

  test("broadcasts both ways reach every socket once, binary arriving as binary", async () => {
    const { sockets, recs, sync } = await group();
    const fromShoal = ["shoal", Buffer.from([0xde, 0xad, 0xbe, 0xef]), { nested: [Buffer.from("x"), 1.5, -7, null] }];
    const fromNode = ["node", Buffer.from([1, 2, 3]), { nested: { deep: Buffer.alloc(300, 7) }, big: 2 ** 40 }];
    await ack(sockets[3], "broadcast", { event: "bin", args: fromShoal });
    await ack(sockets[1], "broadcast", { event: "bin", args: fromNode });
    await Promise.all([sync(3), sync(1)]);
    assert.deepEqual(counts(recs, "bin", fromShoal), [1, 1, 1, 1, 1, 1], "from shoal s1");
    assert.deepEqual(counts(recs, "bin", fromNode), [1, 1, 1, 1, 1, 1], "from the Node server");
    for (const r of recs) {
      for (const args of r.named("bin")) assert.ok(Buffer.isBuffer(args[1]), `${r.label}: not binary: ${args[1]}`);
    }
  });

  test("rooms, several rooms, except and from-a-socket, both ways", async () => {
    const { sockets, recs, all, sync } = await group();
    const [r1, r2, no] = [unique("r1"), unique("r2"), unique("no")];
    for (const i of [0, 2, 4]) await ack(sockets[i], "join", r1);
    for (const i of [1, 2, 5]) await ack(sockets[i], "join", r2);
    for (const i of [4, 1]) await ack(sockets[i], "join", no);

    // From the Node server.
    await ack(sockets[1], "broadcast", { to: [r1], event: "n-room", args: [] });
    await ack(sockets[1], "broadcast", { to: [r1, r2], event: "n-multi", args: [] });
    await ack(sockets[1], "broadcast", { to: [all], except: [no], event: "n-except", args: [] });
    await ack(sockets[0], "broadcast", { fromSocket: true, to: [r1], event: "n-from", args: [] });
    // From shoal s2.
    await ack(sockets[5], "broadcast", { to: [r1], event: "s-room", args: [] });
    await ack(sockets[5], "broadcast", { to: [r1, r2], event: "s-multi", args: [] });
    await ack(sockets[5], "broadcast", { to: [all], except: [no], event: "s-except", args: [] });
    await ack(sockets[4], "broadcast", { fromSocket: true, to: [r1], event: "s-from", args: [] });
    await Promise.all([sync(0), sync(1), sync(4), sync(5)]);

    for (const side of ["n", "s"]) {
      assert.deepEqual(counts(recs, `${side}-room`, []), [1, 0, 1, 0, 1, 0], `${side}: to r1`);
      assert.deepEqual(counts(recs, `${side}-multi`, []), [1, 1, 1, 0, 1, 1], `${side}: to r1 and r2, once each`);
      assert.deepEqual(counts(recs, `${side}-except`, []), [1, 0, 1, 1, 0, 1], `${side}: except`);
    }
    assert.deepEqual(counts(recs, "n-from", []), [0, 0, 1, 0, 1, 0], "Node socket.to(r1): sender excluded");
    assert.deepEqual(counts(recs, "s-from", []), [1, 0, 1, 0, 0, 0], "shoal socket.to(r1): sender excluded");
  });

  test("fetch-sockets both ways: each kind sees the other's sockets with rooms and data", async () => {
    const { sockets, all } = await group();
    const room = unique("r");
    const data = [{ who: "node-0" }, { who: "node-1", list: [1, 2] }, "s1-2", { who: "s1-3" }, { n: 4 }, null];
    for (const [i, s] of sockets.entries()) {
      await ack(s, "set-data", data[i]);
      if (i % 2 === 1) await ack(s, "join", room);
    }
    await ack(sockets[1], "join", "node-extra");
    await ack(sockets[3], "join", "shoal-extra");
    const expected = bySocketId(
      [1, 3, 5].map((i) => ({
        id: sockets[i].id,
        rooms: [all, room, sockets[i].id, ...(i === 1 ? ["node-extra"] : i === 3 ? ["shoal-extra"] : [])],
        data: data[i],
      })),
    );
    for (const asker of [0, 2, 4]) {
      const got = await ack1(sockets[asker], "fetch-sockets", { to: [room] });
      assert.deepEqual(bySocketId(got), expected, `asked on socket #${asker}`);
      const others = await ack1(sockets[asker], "fetch-sockets", { to: [all], except: [room] });
      assert.deepEqual(
        bySocketId(others),
        bySocketId([0, 2, 4].map((i) => ({ id: sockets[i].id, rooms: [all, sockets[i].id], data: data[i] }))),
        `asked on socket #${asker}, except the room`,
      );
    }
  });

  test("sockets-join and disconnect-sockets both ways", async () => {
    const { sockets, all } = await group();
    const [src, fromNode, fromShoal] = [unique("src"), unique("by-node"), unique("by-shoal")];
    for (const i of [1, 3, 4]) await ack(sockets[i], "join", src);
    await ack(sockets[0], "sockets-join", { to: [src], rooms: [fromNode] });
    await ack(sockets[5], "sockets-join", { to: [src], rooms: [fromShoal] });
    await eventually(async () => {
      for (const i of [1, 3, 4]) {
        assert.deepEqual(await ack1(sockets[i], "join", []), [all, src, fromNode, fromShoal, sockets[i].id].sort());
      }
    });
    for (const i of [0, 2, 5]) {
      assert.deepEqual(await ack1(sockets[i], "join", []), [all, sockets[i].id].sort(), `socket #${i} untouched`);
    }

    // The Node server disconnects a shoal socket; shoal disconnects a Node socket.
    const [gone1, gone2] = [unique("gone"), unique("gone")];
    await ack(sockets[2], "join", gone1);
    await ack(sockets[1], "join", gone2);
    const reasons = [waitDisconnect(sockets[2]), waitDisconnect(sockets[1])];
    await ack(sockets[0], "disconnect-sockets", { to: [gone1] });
    await ack(sockets[5], "disconnect-sockets", { to: [gone2] });
    assert.deepEqual(await Promise.all(reasons), ["io server disconnect", "io server disconnect"]);
    for (const i of [0, 3, 4, 5]) assert.equal(sockets[i].connected, true, `socket #${i} still connected`);
  });

  test("broadcast with acks across kinds collects every socket's ack", async () => {
    const { sockets } = await group();
    const room = unique("r");
    for (const [i, s] of sockets.entries()) {
      await ack(s, "join", room);
      s.on("poll", (q, callback) => callback(`${q}${i}`));
    }
    for (const asker of [0, 2]) {
      const result = await ack1(sockets[asker], "broadcast-with-ack", { to: [room], timeout: 2500, event: "poll", args: ["a"] });
      assert.equal(result.ok, true, `asked on socket #${asker}: ${JSON.stringify(result)}`);
      assert.deepEqual([...result.responses].sort(), ["a0", "a1", "a2", "a3", "a4", "a5"], `asked on socket #${asker}`);
    }
  });

  test("server-side-emit with acks both ways", async () => {
    const { sockets } = await group();
    const expectations = [
      [0, ["pong from s1", "pong from s2"]],
      [2, ["pong from node", "pong from s2"]],
      [5, ["pong from node", "pong from s1"]],
    ];
    for (const [i, expected] of expectations) {
      const result = await ack1(sockets[i], "server-side-emit", { event: "ping", args: [unique("p"), 42], ack: true, timeout: 2500 });
      assert.equal(result.ok, true, `asked on socket #${i}: ${JSON.stringify(result)}`);
      assert.deepEqual([...result.responses].sort(), expected, `asked on socket #${i}`);
    }
  });

  test("server-side-emit without ack both ways: the other nodes log it", async () => {
    const { sockets } = await group();
    const [fromNode, fromShoal] = [unique("from-node"), unique("from-shoal")];
    await ack(sockets[0], "server-side-emit", { event: "hello", args: [fromNode, { a: [1, "b"] }], ack: false });
    await ack(sockets[3], "server-side-emit", { event: "hello", args: [fromShoal, { a: [1, "b"] }], ack: false });
    const seen = async (i, tag) =>
      (await ack1(sockets[i], "server-events")).filter((e) => e[0] === "hello" && e[1] === tag);
    await eventually(async () => {
      assert.deepEqual(await seen(2, fromNode), [["hello", fromNode, { a: [1, "b"] }]], "s1 got the Node server's");
      assert.deepEqual(await seen(4, fromNode), [["hello", fromNode, { a: [1, "b"] }]], "s2 got the Node server's");
      assert.deepEqual(await seen(0, fromShoal), [["hello", fromShoal, { a: [1, "b"] }]], "the Node server got s1's");
      assert.deepEqual(await seen(4, fromShoal), [["hello", fromShoal, { a: [1, "b"] }]], "s2 got s1's");
    });
    assert.deepEqual(await seen(0, fromNode), [], "not back to the Node server itself");
    assert.deepEqual(await seen(2, fromShoal), [], "not back to s1 itself");
  });

  describe("@socket.io/redis-emitter", () => {
    /** Emits a marker through the emitter (same connection, so in order) and waits for it. */
    async function emitterSync(ns, recs) {
      const marker = unique("emitter-marker");
      ns.emit("marker", marker);
      await Promise.all(recs.map((r) => r.until((evs) => evs.some((e) => e[0] === "marker" && e[1] === marker), marker)));
    }

    test("to(room).emit reaches the room's sockets on shoal and Node, once each, with binary", async () => {
      const { sockets, recs, all } = await group();
      const [room, no] = [unique("r"), unique("no")];
      for (const i of [0, 2, 3, 5]) await ack(sockets[i], "join", room);
      await ack(sockets[3], "join", no);
      const args = ["from emitter", Buffer.from([9, 8, 7]), { n: 1, deep: [Buffer.from("z")] }];
      emitter.to(room).emit("emitted", ...args);
      emitter.to(room).except(no).emit("emitted-except", 1);
      emitter.to([room, all]).emit("emitted-multi", 2);
      emitter.emit("emitted-all", 3);
      await emitterSync(emitter.to(all), recs);
      assert.deepEqual(counts(recs, "emitted", args), [1, 0, 1, 1, 0, 1], "to(room)");
      assert.deepEqual(counts(recs, "emitted-except", [1]), [1, 0, 1, 0, 0, 1], "to(room).except(no)");
      assert.deepEqual(counts(recs, "emitted-multi", [2]), [1, 1, 1, 1, 1, 1], "to([room, all])");
      assert.deepEqual(counts(recs, "emitted-all", [3]), [1, 1, 1, 1, 1, 1], "emit to the namespace");
      for (const i of SHOAL.concat(NODE)) {
        for (const a of recs[i].named("emitted")) assert.ok(Buffer.isBuffer(a[1]), `${recs[i].label}: binary lost`);
      }
    });

    test('of("/custom") reaches the /custom sockets only, to(id) one of them', async () => {
      const main = await group();
      const custom = await Promise.all(
        nodes.flatMap((node, n) =>
          [0, 1].map((j) => node.clients(TRANSPORTS[(2 * n + j) % TRANSPORTS.length]).connect("/custom")),
        ),
      );
      const recs = custom.map((s, i) => new Recorder(s, `/custom socket #${i} on ${nodes[i >> 1].id}`));
      // The /custom subscriptions of every node are in place once a probe reaches everyone.
      await redis.waitSubscribers(requestChannel("/custom"), 3);
      await eventually(async () => {
        await emitterSync(emitter.of("/custom"), recs);
      }, 10_000, 0);

      const customNs = emitter.of("/custom");
      customNs.emit("ns-news", "for /custom", Buffer.from([1]));
      customNs.to(custom[3].id).emit("ns-private", "to s1's second");
      customNs.to(custom[1].id).emit("ns-private", "to node's second");
      await emitterSync(customNs, recs);
      await emitterSync(emitter.to(main.all), main.recs);
      assert.deepEqual(counts(recs, "ns-news", ["for /custom", Buffer.from([1])]), [1, 1, 1, 1, 1, 1]);
      assert.deepEqual(counts(recs, "ns-private", ["to s1's second"]), [0, 0, 0, 1, 0, 0]);
      assert.deepEqual(counts(recs, "ns-private", ["to node's second"]), [0, 1, 0, 0, 0, 0]);
      assert.deepEqual(counts(main.recs, "ns-news", ["for /custom", Buffer.from([1])]), [0, 0, 0, 0, 0, 0], "main namespace");
    });

    test("of(a dynamic namespace created at run time) reaches its sockets on both shoal nodes", async () => {
      // Matches the test app's /^\/dyn-[a-z0-9]+$/; the namespace (and its adapter and
      // subscriptions) exists only once a client connected to it.
      const nsp = `/dyn-${process.pid}x${Date.now().toString(36)}`;
      const shoalNodes = nodes.slice(1);
      const dyn = await Promise.all(shoalNodes.map((node, i) => node.clients(TRANSPORTS[i]).connect(nsp)));
      const recs = dyn.map((s, i) => new Recorder(s, `${nsp} socket on ${shoalNodes[i].id}`));
      await redis.waitSubscribers(requestChannel(nsp), 2);
      const ns = emitter.of(nsp);
      await eventually(() => emitterSync(ns, recs), 10_000, 0);
      ns.emit("dyn-news", { nsp });
      ns.to(dyn[1].id).emit("dyn-private", 1);
      await emitterSync(ns, recs);
      assert.deepEqual(counts(recs, "dyn-news", [{ nsp }]), [1, 1]);
      assert.deepEqual(counts(recs, "dyn-private", [1]), [0, 1]);
    });

    test("serverSideEmit from the emitter reaches every node", async () => {
      const { sockets } = await group();
      const tag = unique("emitter-hello");
      emitter.serverSideEmit("hello", tag, { x: 1 });
      await eventually(async () => {
        for (const i of [0, 2, 4]) {
          const got = (await ack1(sockets[i], "server-events")).filter((e) => e[0] === "hello" && e[1] === tag);
          assert.deepEqual(got, [["hello", tag, { x: 1 }]], `on the node of socket #${i}`);
        }
      });
    });
  });
});
