// A cluster of three shoal nodes on one Redis (the official @socket.io/redis-adapter
// protocol), with socket.io-client sockets on every node over polling, WebSocket and
// upgrade: every broadcast operator reaches exactly the right sockets on all nodes, each
// exactly once; acks, fetch-sockets, sockets-join/leave, disconnect-sockets and
// server-side-emit work across nodes; a node that leaves is no longer waited for.
//
// Deliveries are counted per socket; "did not receive" is checked with a marker sent
// after the broadcast under test by the same socket (see lib/cluster.mjs).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { TRANSPORTS, ack, ack1, eventually, unique, waitDisconnect } from "./lib/client.mjs";
import { bySocketId, counts, spread, startShoalNodes } from "./lib/cluster.mjs";
import { requestChannel, startRedis } from "./lib/redis.mjs";

const REQUESTS_TIMEOUT_MS = 5000;

describe("cluster of three shoal nodes over Redis", () => {
  let redis;
  let nodes = [];

  before(async () => {
    redis = await startRedis();
    nodes = await startShoalNodes(redis, ["n1", "n2", "n3"], { requestsTimeout: REQUESTS_TIMEOUT_MS });
  });

  after(async () => {
    for (const node of nodes) node.closeClients();
    await Promise.all(nodes.map((node) => node.stop()));
    await redis?.stop();
  });

  /** Two sockets on each node: #0 #1 on n1, #2 #3 on n2, #4 #5 on n3. */
  const group = () => spread(nodes, 2, unique);

  test("sockets are spread over the three nodes, over every transport", async () => {
    const { sockets } = await group();
    const ids = await Promise.all(sockets.map((s) => ack1(s, "whoami")));
    assert.deepEqual(ids, ["n1", "n1", "n2", "n2", "n3", "n3"]);
    const transports = sockets.map((s) => s.io.engine.transport.name);
    assert.ok(transports.includes("polling") && transports.includes("websocket"), `transports: ${transports}`);
  });

  test("broadcast to the whole namespace reaches every socket on every node once, binary included", async () => {
    const { sockets, recs, sync } = await group();
    const args = ["hi", Buffer.from([0, 1, 255]), { nested: [Buffer.from("deep"), 3.5, null, true] }];
    assert.deepEqual(await ack(sockets[2], "broadcast", { event: "everyone", args }), []);
    await sync(2);
    assert.deepEqual(counts(recs, "everyone", args), [1, 1, 1, 1, 1, 1]);
  });

  test("to one room: its members on every node, each once, nobody else", async () => {
    const { sockets, recs, sync } = await group();
    const room = unique("r");
    for (const i of [0, 3, 5]) await ack(sockets[i], "join", room);
    // From n1, by a socket that is not in the room.
    await ack(sockets[1], "broadcast", { to: [room], event: "news", args: [1, { x: "y" }, "ü🎉"] });
    await sync(1);
    assert.deepEqual(counts(recs, "news", [1, { x: "y" }, "ü🎉"]), [1, 0, 0, 1, 0, 1]);
  });

  test("to several rooms: a socket in two of them gets it exactly once", async () => {
    const { sockets, recs, sync } = await group();
    const [r1, r2, r3] = [unique("r1"), unique("r2"), unique("r3")];
    await ack(sockets[0], "join", r1);
    await ack(sockets[2], "join", [r1, r2]);
    await ack(sockets[4], "join", r2);
    await ack(sockets[5], "join", r3); // not targeted
    await ack(sockets[3], "broadcast", { to: [r1, r2], event: "multi", args: ["once"] });
    await sync(3);
    assert.deepEqual(counts(recs, "multi", ["once"]), [1, 0, 1, 0, 1, 0]);
  });

  test("to a socket id on another node reaches that socket only", async () => {
    const { sockets, recs, sync } = await group();
    await ack(sockets[0], "broadcast", { to: [sockets[5].id], event: "private", args: ["psst"] });
    await sync(0);
    assert.deepEqual(counts(recs, "private", ["psst"]), [0, 0, 0, 0, 0, 1]);
  });

  test("except excludes the members of a room on every node", async () => {
    const { sockets, recs, all, sync } = await group();
    const [r1, r2] = [unique("r1"), unique("r2")];
    for (const i of [0, 2, 4]) await ack(sockets[i], "join", r1);
    for (const i of [2, 3]) await ack(sockets[i], "join", r2);
    // to r1 except r2: sockets 0 and 4 (socket 2 is in both).
    await ack(sockets[5], "broadcast", { to: [r1], except: [r2], event: "ex1", args: [1] });
    // to the group except r1.
    await ack(sockets[5], "broadcast", { to: [all], except: [r1], event: "ex2", args: [2] });
    // to the group except a socket id on another node.
    await ack(sockets[5], "broadcast", { to: [all], except: [sockets[3].id], event: "ex3", args: [3] });
    // the whole namespace except r2 (no `to`).
    await ack(sockets[5], "broadcast", { except: [r2], event: "ex4", args: [4] });
    await sync(5);
    assert.deepEqual(counts(recs, "ex1", [1]), [1, 0, 0, 0, 1, 0], "to r1 except r2");
    assert.deepEqual(counts(recs, "ex2", [2]), [0, 1, 0, 1, 0, 1], "to the group except r1");
    assert.deepEqual(counts(recs, "ex3", [3]), [1, 1, 1, 0, 1, 1], "except a remote socket id");
    assert.deepEqual(counts(recs, "ex4", [4]), [1, 1, 0, 0, 1, 1], "namespace except r2");
  });

  test("from a socket: the sender is excluded, everyone else on every node gets it once", async () => {
    const { sockets, recs, all, sync } = await group();
    const [room, no] = [unique("r"), unique("no")];
    for (const s of sockets) await ack(s, "join", room);
    await ack(sockets[4], "join", no);
    await ack(sockets[0], "broadcast", { fromSocket: true, to: [room], event: "fs", args: ["room"] });
    // socket.broadcast (no rooms) from n2.
    await ack(sockets[3], "broadcast", { fromSocket: true, event: "fs", args: ["nsp"] });
    // socket.to(all).except(no) from n3.
    await ack(sockets[5], "broadcast", { fromSocket: true, to: [all], except: [no], event: "fs", args: ["ex"] });
    await Promise.all([sync(0), sync(3), sync(5)]);
    assert.deepEqual(counts(recs, "fs", ["room"]), [0, 1, 1, 1, 1, 1], "socket.to(room)");
    assert.deepEqual(counts(recs, "fs", ["nsp"]), [1, 1, 1, 0, 1, 1], "socket.broadcast");
    assert.deepEqual(counts(recs, "fs", ["ex"]), [1, 1, 1, 1, 0, 0], "socket.to(all).except(no)");
  });

  test("local broadcast stays on its node", async () => {
    const { sockets, recs, sync } = await group();
    const room = unique("r");
    for (const s of sockets) await ack(s, "join", room);
    await ack(sockets[2], "broadcast", { local: true, to: [room], event: "loc", args: ["n2 only"] });
    await sync(2);
    assert.deepEqual(counts(recs, "loc", ["n2 only"]), [0, 0, 1, 1, 0, 0]);
  });

  test("broadcast with acks collects an ack from every socket on every node", async () => {
    const { sockets } = await group();
    const [room, no] = [unique("r"), unique("no")];
    for (const [i, s] of sockets.entries()) {
      await ack(s, "join", room);
      s.on("poll", (question, callback) => callback(`${question}:${i}`));
    }
    const started = Date.now();
    const result = await ack1(sockets[2], "broadcast-with-ack", {
      to: [room],
      timeout: 3000,
      event: "poll",
      args: ["q"],
    });
    assert.equal(result.ok, true, JSON.stringify(result));
    assert.deepEqual([...result.responses].sort(), ["q:0", "q:1", "q:2", "q:3", "q:4", "q:5"]);
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms: waited past the last ack`);

    // With except, from n3: the excluded sockets (one on n1, one on n2) are not asked.
    await ack(sockets[1], "join", no);
    await ack(sockets[3], "join", no);
    const partial = await ack1(sockets[4], "broadcast-with-ack", {
      to: [room],
      except: [no],
      timeout: 3000,
      event: "poll",
      args: ["p"],
    });
    assert.equal(partial.ok, true, JSON.stringify(partial));
    assert.deepEqual([...partial.responses].sort(), ["p:0", "p:2", "p:4", "p:5"]);
  });

  test("broadcast with acks times out when a socket on another node never acks", async () => {
    const { sockets } = await group();
    const room = unique("r");
    for (const [i, s] of sockets.entries()) {
      await ack(s, "join", room);
      if (i === 5) s.on("poll", () => {}); // on n3: never acks
      else s.on("poll", (callback) => callback(i));
    }
    const started = Date.now();
    const result = await ack1(sockets[0], "broadcast-with-ack", { to: [room], timeout: 700, event: "poll", args: [] });
    const elapsed = Date.now() - started;
    assert.equal(result.ok, false, JSON.stringify(result));
    assert.equal(result.error, "operation has timed out");
    assert.deepEqual([...result.responses].sort(), [0, 1, 2, 3, 4]);
    // The asking node's 700 ms start after the request left here; it answers at once.
    assert.ok(elapsed >= 700 && elapsed < 1000, `timed out after ${elapsed} ms, expected 700 plus a round trip`);
  });

  test("fetch-sockets from any node lists the sockets of every node with rooms and data", async () => {
    const { sockets, all } = await group();
    const room = unique("r");
    for (const i of [1, 3, 4]) await ack(sockets[i], "join", room);
    await ack(sockets[3], "join", "zz-extra");
    await ack(sockets[1], "set-data", { name: "one", n: 1 });
    await ack(sockets[3], "set-data", { name: "three", tags: ["a", "b"] });
    await ack(sockets[4], "set-data", "four");
    const expected = bySocketId([
      { id: sockets[1].id, rooms: [all, room, sockets[1].id], data: { name: "one", n: 1 } },
      { id: sockets[3].id, rooms: [all, room, sockets[3].id, "zz-extra"], data: { name: "three", tags: ["a", "b"] } },
      { id: sockets[4].id, rooms: [all, room, sockets[4].id], data: "four" },
    ]);
    for (const asker of [0, 2, 5]) {
      const got = await ack1(sockets[asker], "fetch-sockets", { to: [room] });
      assert.deepEqual(bySocketId(got), expected, `asked on socket #${asker}`);
      assert.deepEqual(got.map((s) => s.id), expected.map((s) => s.id), "sorted by id");
    }
    // The whole group, from n2, except a room.
    const group6 = await ack1(sockets[2], "fetch-sockets", { to: [all], except: [room] });
    assert.deepEqual(
      group6.map((s) => s.id),
      [0, 2, 5].map((i) => sockets[i].id).sort(),
    );
    assert.deepEqual(await ack1(sockets[0], "fetch-sockets", { to: [unique("empty")] }), []);
  });

  test("sockets-join and sockets-leave act on the matching sockets of every node", async () => {
    const { sockets, recs, all, sync } = await group();
    const [src, dst] = [unique("src"), unique("dst")];
    for (const i of [1, 3, 5]) await ack(sockets[i], "join", src);
    assert.deepEqual(await ack(sockets[2], "sockets-join", { to: [src], rooms: [dst, "other"] }), []);
    const inDst = [1, 3, 5].map((i) => sockets[i].id).sort();
    await eventually(async () => {
      for (const asker of [0, 2, 4]) {
        const got = await ack1(sockets[asker], "fetch-sockets", { to: [dst] });
        assert.deepEqual(got.map((s) => s.id), inDst, `dst seen from socket #${asker}`);
      }
    });
    // Each socket sees its new rooms on its own node.
    for (const i of [1, 3, 5]) {
      assert.deepEqual(await ack1(sockets[i], "join", []), [all, src, dst, "other", sockets[i].id].sort());
    }
    await ack(sockets[0], "broadcast", { to: [dst], event: "in-dst", args: [] });
    await sync(0);
    assert.deepEqual(counts(recs, "in-dst", []), [0, 1, 0, 1, 0, 1]);

    assert.deepEqual(await ack(sockets[4], "sockets-leave", { to: [src], rooms: [dst] }), []);
    await eventually(async () => {
      for (const i of [1, 3, 5]) {
        assert.deepEqual(await ack1(sockets[i], "join", []), [all, src, "other", sockets[i].id].sort());
      }
    });
    assert.deepEqual(await ack1(sockets[0], "fetch-sockets", { to: [dst] }), []);
  });

  test("disconnect-sockets disconnects the matching sockets on other nodes only", async () => {
    const { sockets } = await group();
    const room = unique("r");
    for (const i of [2, 5]) await ack(sockets[i], "join", room);
    const reasons = [waitDisconnect(sockets[2]), waitDisconnect(sockets[5])];
    assert.deepEqual(await ack(sockets[0], "disconnect-sockets", { to: [room] }), []);
    assert.deepEqual(await Promise.all(reasons), ["io server disconnect", "io server disconnect"]);
    for (const i of [0, 1, 3, 4]) {
      assert.equal(sockets[i].connected, true, `socket #${i} should still be connected`);
      assert.deepEqual(await ack(sockets[i], "echo", i), [i]);
    }
    assert.deepEqual(await ack1(sockets[3], "fetch-sockets", { to: [room] }), []);

    // close: true ends the remote socket's whole session.
    const closed = unique("closed");
    await ack(sockets[4], "join", closed);
    const engineClosed = new Promise((resolve) => sockets[4].io.engine.once("close", resolve));
    const reason = waitDisconnect(sockets[4]);
    await ack(sockets[1], "disconnect-sockets", { to: [closed], close: true });
    assert.equal(await reason, "io server disconnect");
    await engineClosed;
    assert.deepEqual(await ack(sockets[3], "echo", "still here"), ["still here"]);
  });

  test("server-side-emit with acks gets one answer from each other node", async () => {
    const { sockets } = await group();
    const asks = [
      [0, ["pong from n2", "pong from n3"]],
      [3, ["pong from n1", "pong from n3"]],
      [4, ["pong from n1", "pong from n2"]],
    ];
    for (const [i, expected] of asks) {
      const tag = unique("ping");
      const result = await ack1(sockets[i], "server-side-emit", {
        event: "ping",
        args: [tag, { n: 1 }],
        ack: true,
        timeout: 3000,
      });
      assert.equal(result.ok, true, JSON.stringify(result));
      assert.deepEqual([...result.responses].sort(), expected, `asked on socket #${i}`);
    }
  });

  test("server-side-emit without ack: every other node receives the event, the sender does not", async () => {
    const { sockets } = await group();
    const tag = unique("hello");
    const args = [tag, { list: [1, "two", null] }, 3];
    const result = await ack1(sockets[4], "server-side-emit", { event: "hello", args, ack: false });
    assert.deepEqual(result, { ok: true, responses: [] });
    const has = (log) => log.filter((e) => e[0] === "hello" && e[1] === tag);
    await eventually(async () => {
      for (const i of [0, 2]) {
        assert.deepEqual(has(await ack1(sockets[i], "server-events")), [["hello", ...args]], `on ${i === 0 ? "n1" : "n2"}`);
      }
    });
    assert.deepEqual(has(await ack1(sockets[5], "server-events")), [], "the sending node n3");
  });

  // Stops nodes: keep it last.
  test("a node that leaves (killed, or stopped with SIGTERM) is no longer waited for", async () => {
    const [n4] = await startShoalNodes(redis, ["n4"], {
      requestsTimeout: REQUESTS_TIMEOUT_MS,
      expectedSubscribers: 4,
      peers: nodes,
    });
    nodes.push(n4);
    const asker = await nodes[0].clients(TRANSPORTS[1]).connect();
    const onN4 = await n4.clients(TRANSPORTS[0]).connect();
    const room = unique("r");
    await ack(asker, "join", room);
    await ack(onN4, "join", room);

    const ping = () => ack1(asker, "server-side-emit", { event: "ping", args: [], ack: true, timeout: REQUESTS_TIMEOUT_MS });
    const timed = async (fn) => {
      const started = Date.now();
      const value = await fn();
      return [value, Date.now() - started];
    };
    let [result] = await timed(ping);
    assert.deepEqual(result.ok && [...result.responses].sort(), ["pong from n2", "pong from n3", "pong from n4"]);

    // kill -9: no goodbye; Redis drops its subscriptions when the connection closes.
    await n4.kill();
    await redis.waitSubscribers(requestChannel("/"), 3, 5000);
    let elapsed;
    [result, elapsed] = await timed(ping);
    // Exactly the two live nodes answered, and the request did not report a timeout.
    assert.deepEqual({ ...result, responses: [...(result.responses ?? [])].sort() }, { ok: true, responses: ["pong from n2", "pong from n3"] });
    assert.ok(elapsed < 1500, `server-side-emit after a node was killed took ${elapsed} ms`);

    // The other cluster requests do not wait for it either.
    let list;
    [list, elapsed] = await timed(() => ack1(asker, "fetch-sockets", { to: [room] }));
    assert.deepEqual(list.map((s) => s.id), [asker.id]);
    assert.ok(elapsed < 1500, `fetch-sockets after a node was killed took ${elapsed} ms`);
    asker.on("poll", (callback) => callback("asker"));
    let acks;
    [acks, elapsed] = await timed(() =>
      ack1(asker, "broadcast-with-ack", { to: [room], timeout: REQUESTS_TIMEOUT_MS, event: "poll", args: [] }),
    );
    assert.deepEqual(acks, { ok: true, responses: ["asker"] });
    assert.ok(elapsed < 1500, `broadcast-with-ack after a node was killed took ${elapsed} ms`);

    // SIGTERM: n3 shuts down.
    const exit = await nodes[2].stop();
    assert.deepEqual(exit, { code: 0, signal: null }, "n3 exits cleanly on SIGTERM");
    await redis.waitSubscribers(requestChannel("/"), 2, 5000);
    [result, elapsed] = await timed(ping);
    assert.deepEqual(result, { ok: true, responses: ["pong from n2"] });
    assert.ok(elapsed < 1500, `server-side-emit after a node stopped took ${elapsed} ms`);
  });
});
