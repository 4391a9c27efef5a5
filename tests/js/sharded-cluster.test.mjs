// The sharded adapter on a real Redis Cluster (three primaries, three replicas, started
// here): two shoal nodes (`--sharded dynamic`, `redis+cluster://...`) and a Node.js
// socket.io 4.8 server on the official `createShardedAdapter` of @socket.io/redis-adapter
// 8.3 (redis 4.7 `createCluster`). Broadcasts to all and to rooms (room channels in
// `dynamic` mode), acks from every node, fetch-sockets, server-side-emit, sockets-join and
// disconnect-sockets work both ways; then the primary that holds the namespace's main
// channel is killed (kill -9), its replica is promoted, and traffic between the shoal nodes
// resumes, counted; a Node.js server started afterwards meshes with them again (node-redis
// 4.7 itself does not resubscribe a sharded channel whose primary failed).
//
// Messages on different channels live on different Redis primaries and are not ordered
// with each other, so deliveries are awaited with `eventually`, then counted again after a
// pause (a duplicate would show).
//
// @socket.io/redis-emitter 5.1 publishes with classic PUBLISH only: it has no sharded
// mode, so it cannot reach a sharded cluster and is not tested here.
//
// Sockets: #0 #1 on the Node server ("node"), #2 #3 on shoal "s1", #4 #5 on shoal "s2".

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ack, ack1, eventually, unique, waitDisconnect } from "./lib/client.mjs";
import { bySocketId, counts, spread, waitMesh, withClients } from "./lib/cluster.mjs";
import { startRedisCluster } from "./lib/redis-cluster.mjs";
import { sleep, startNodePeer, startShoal, startTestapp } from "./lib/server.mjs";

const REQUESTS_TIMEOUT_MS = 3000;
const MAIN_CHANNEL = "socket.io#/#";
/** Pause after a delivery before counting again: long enough for a duplicate to show. */
const SETTLE_MS = 300;

/** Waits until `counts(recs, event, args)` is `expected`, then checks it stays so. */
async function deliveredExactly(recs, event, args, expected, what) {
  await eventually(async () => assert.deepEqual(counts(recs, event, args), expected, what), 10_000);
  await sleep(SETTLE_MS);
  assert.deepEqual(counts(recs, event, args), expected, `${what} (after a pause)`);
}

describe("sharded adapter on a Redis Cluster: two shoal nodes and a Node.js server", () => {
  let cluster;
  let nodes = [];

  before(async () => {
    cluster = await startRedisCluster({ primaries: 3, replicasPerPrimary: 1 });
    const peer = withClients(
      await startNodePeer({ redisCluster: cluster.hosts, sharded: "dynamic", nodeId: "node", requestsTimeout: REQUESTS_TIMEOUT_MS }),
      "node",
    );
    const shoal = await Promise.all(
      ["s1", "s2"].map((nodeId) => startTestapp({ redis: cluster.url, sharded: "dynamic", nodeId, requestsTimeout: REQUESTS_TIMEOUT_MS })),
    );
    nodes = [peer, withClients(shoal[0], "s1"), withClients(shoal[1], "s2")];
    await cluster.waitShardSubscribers(MAIN_CHANNEL, 3);
    await waitMesh(nodes, 15_000);
  });

  after(async () => {
    for (const node of nodes) node.closeClients();
    await Promise.all(nodes.map((node) => node.stop()));
    await cluster?.stop();
  });

  const group = () => spread(nodes, 2, unique);

  test("every node subscribes to the namespace's main channel with SSUBSCRIBE", async () => {
    assert.equal(await cluster.shardNumsub(MAIN_CHANNEL), 3);
    const { sockets } = await group();
    assert.deepEqual(await Promise.all(sockets.map((s) => ack1(s, "whoami"))), ["node", "node", "s1", "s1", "s2", "s2"]);
  });

  test("broadcasts to all, to one room, to several rooms, with except, both ways, binary kept", async () => {
    const { sockets, recs, all } = await group();
    const [r1, r2, no] = [unique("r1"), unique("r2"), unique("no")];
    for (const i of [0, 2, 4]) await ack(sockets[i], "join", r1);
    for (const i of [1, 2, 5]) await ack(sockets[i], "join", r2);
    for (const i of [4, 1]) await ack(sockets[i], "join", no);
    const bin = ["x", Buffer.from([0xde, 0xad]), { deep: [Buffer.from("z"), 1.5, -7, null] }];
    for (const [side, from] of [["n", 1], ["s", 5]]) {
      await ack(sockets[from], "broadcast", { event: `${side}-everyone`, args: bin });
      await ack(sockets[from], "broadcast", { to: [r1], event: `${side}-room`, args: [] });
      await ack(sockets[from], "broadcast", { to: [r1, r2], event: `${side}-multi`, args: [] });
      await ack(sockets[from], "broadcast", { to: [all], except: [no], event: `${side}-except`, args: [] });
    }
    for (const side of ["n", "s"]) {
      // To everyone: every socket of the namespace, the probes of earlier tests gone.
      await deliveredExactly(recs, `${side}-everyone`, bin, [1, 1, 1, 1, 1, 1], `${side}: to everyone`);
      await deliveredExactly(recs, `${side}-room`, [], [1, 0, 1, 0, 1, 0], `${side}: to r1`);
      await deliveredExactly(recs, `${side}-multi`, [], [1, 1, 1, 0, 1, 1], `${side}: to r1 and r2, once each`);
      await deliveredExactly(recs, `${side}-except`, [], [1, 0, 1, 1, 0, 1], `${side}: except`);
    }
    for (const r of recs) {
      for (const args of r.named("s-everyone")) assert.ok(Buffer.isBuffer(args[1]), `${r.label}: not binary`);
    }
  });

  test("dynamic mode: a node subscribes to a room's channel while it has sockets in the room", async () => {
    const { sockets } = await group();
    const room = unique("room");
    const channel = `${MAIN_CHANNEL}${room}#`;
    assert.equal(await cluster.shardNumsub(channel), 0);
    await ack(sockets[2], "join", room); // s1
    await ack(sockets[3], "join", room); // s1 again: still one subscription
    await ack(sockets[0], "join", room); // node
    await cluster.waitShardSubscribers(channel, 2);
    await ack(sockets[2], "leave", room);
    await ack(sockets[3], "leave", room);
    await cluster.waitShardSubscribers(channel, 1);
    await ack(sockets[0], "leave", room);
    await cluster.waitShardSubscribers(channel, 0);
    // A socket's own room is not a channel in dynamic mode (it looks like a socket id).
    assert.equal(await cluster.shardNumsub(`${MAIN_CHANNEL}${sockets[2].id}#`), 0);
  });

  test("to(socket id) reaches that one socket, from either kind", async () => {
    const { sockets, recs } = await group();
    await ack(sockets[0], "broadcast", { to: [sockets[3].id], event: "private", args: ["from node"] });
    await ack(sockets[4], "broadcast", { to: [sockets[1].id], event: "private", args: ["from s2"] });
    await deliveredExactly(recs, "private", ["from node"], [0, 0, 0, 1, 0, 0], "node → s1's socket");
    await deliveredExactly(recs, "private", ["from s2"], [0, 1, 0, 0, 0, 0], "s2 → node's socket");
  });

  test("fetch-sockets both ways: each kind sees the other's sockets with rooms and data", async () => {
    const { sockets, all } = await group();
    const room = unique("r");
    const data = [{ who: "node-0" }, { who: "node-1", list: [1, 2] }, "s1-2", { who: "s1-3" }, { n: 4 }, null];
    for (const [i, s] of sockets.entries()) {
      await ack(s, "set-data", data[i]);
      if (i % 2 === 1) await ack(s, "join", room);
    }
    const expected = bySocketId([1, 3, 5].map((i) => ({ id: sockets[i].id, rooms: [all, room, sockets[i].id], data: data[i] })));
    for (const asker of [0, 2, 4]) {
      const got = await ack1(sockets[asker], "fetch-sockets", { to: [room] });
      assert.deepEqual(bySocketId(got), expected, `asked on socket #${asker}`);
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
    const [gone1, gone2] = [unique("gone"), unique("gone")];
    await ack(sockets[2], "join", gone1);
    await ack(sockets[1], "join", gone2);
    const reasons = [waitDisconnect(sockets[2]), waitDisconnect(sockets[1])];
    await ack(sockets[0], "disconnect-sockets", { to: [gone1] });
    await ack(sockets[5], "disconnect-sockets", { to: [gone2] });
    assert.deepEqual(await Promise.all(reasons), ["io server disconnect", "io server disconnect"]);
    for (const i of [0, 3, 4, 5]) assert.equal(sockets[i].connected, true, `socket #${i} still connected`);
  });

  test("broadcast with acks collects every socket's ack, asked on either kind", async () => {
    const { sockets } = await group();
    const room = unique("r");
    for (const [i, s] of sockets.entries()) {
      await ack(s, "join", room);
      s.on("poll", (q, callback) => callback(`${q}${i}`));
    }
    for (const asker of [0, 2, 4]) {
      const result = await ack1(sockets[asker], "broadcast-with-ack", { to: [room], timeout: 2500, event: "poll", args: ["a"] });
      assert.equal(result.ok, true, `asked on socket #${asker}: ${JSON.stringify(result)}`);
      assert.deepEqual([...result.responses].sort(), ["a0", "a1", "a2", "a3", "a4", "a5"], `asked on socket #${asker}`);
    }
  });

  test("server-side-emit with acks both ways, and without ack", async () => {
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
    const tag = unique("hello");
    await ack(sockets[3], "server-side-emit", { event: "hello", args: [tag, { a: [1, "b"] }], ack: false });
    const seen = async (i) => (await ack1(sockets[i], "server-events")).filter((e) => e[0] === "hello" && e[1] === tag);
    await eventually(async () => {
      assert.deepEqual(await seen(0), [["hello", tag, { a: [1, "b"] }]], "the Node server got s1's");
      assert.deepEqual(await seen(4), [["hello", tag, { a: [1, "b"] }]], "s2 got s1's");
    });
    assert.deepEqual(await seen(2), [], "not back to s1 itself");
  });

  test("a primary is killed (kill -9) and its replica promoted: traffic resumes, counted", async () => {
    const { sockets, recs, all } = await group();
    const room = unique("after");
    for (const i of [3, 5]) await ack(sockets[i], "join", room);
    const mainSlot = await cluster.slotOf(MAIN_CHANNEL);
    const victim = await cluster.primaryOf(mainSlot);
    await victim.kill();
    // The replica takes over after the node timeout; the cluster is whole again.
    await eventually(async () => {
      const primary = await cluster.primaryOf(mainSlot);
      assert.notEqual(primary.port, victim.port, "a replica serves the main channel's slot");
    }, 30_000, 200);
    await cluster.waitHealthy(30_000);

    // Both shoal nodes subscribe again on the promoted primary. (node-redis 4.7, under the
    // Node.js server, does not resubscribe a sharded channel whose primary failed: the Node
    // server is restarted below.)
    await cluster.waitShardSubscribers(MAIN_CHANNEL, 2, 30_000);
    await waitMesh(nodes.slice(1), 30_000);
    // The room channels are subscribed again after the main one, Pub/Sub keeps nothing
    // for a subscription not yet made, and a node's publisher may still be finding the
    // new primary: wait until each path used below carries a probe, both ways (s1 to
    // each room, heard on s2; s2 to everyone, heard on s1). Probes have their own event,
    // not counted below.
    const paths = [
      { from: 2, to: [all], receiver: 4, what: "s1 → all, heard on s2" },
      { from: 2, to: [room], receiver: 5, what: "s1 → room, heard on s2" },
      { from: 4, to: [], receiver: 2, what: "s2 → everyone, heard on s1" },
    ];
    // A node may rebuild its cluster connection once more after the first resubscription
    // (its watch runs every second and a dead node's connection can drop again): what is
    // published during a rebuild is lost, as documented. So the paths must carry every
    // probe over three rounds spanning more than two watch periods before counting.
    let n = 0;
    let clean = 0;
    const settleDeadline = Date.now() + 30_000;
    while (clean < 3) {
      assert.ok(Date.now() < settleDeadline, `paths not steady after 30 s (${clean} clean rounds)`);
      n += 1;
      for (const path of paths) {
        await ack(sockets[path.from], "broadcast", { ...(path.to.length ? { to: path.to } : {}), event: "ready-probe", args: [path.what, n] });
      }
      await sleep(800);
      const heard = paths.every((path) => recs[path.receiver].named("ready-probe").some((a) => a[0] === path.what && a[1] === n));
      clean = heard ? clean + 1 : 0;
    }

    const ROUNDS = 20;
    for (let k = 0; k < ROUNDS; k++) {
      await ack(sockets[2], "broadcast", { to: [all], event: "after-s1", args: [k] });
      await ack(sockets[4], "broadcast", { event: "after-s2", args: [k] });
      await ack(sockets[2], "broadcast", { to: [room], event: "after-room", args: [k] });
    }
    const SHOAL = [2, 3, 4, 5];
    const shoalRecs = SHOAL.map((i) => recs[i]);
    for (let k = 0; k < ROUNDS; k++) {
      await eventually(async () => assert.deepEqual(counts(shoalRecs, "after-s1", [k]), [1, 1, 1, 1], `s1 → all, round ${k}`));
      await eventually(async () => assert.deepEqual(counts(shoalRecs, "after-s2", [k]), [1, 1, 1, 1], `s2 → everyone, round ${k}`));
      await eventually(async () => assert.deepEqual(counts(shoalRecs, "after-room", [k]), [0, 1, 0, 1], `s1 → room, round ${k}`));
    }
    await sleep(SETTLE_MS);
    const total = (event) => shoalRecs.map((r) => r.named(event).length);
    assert.deepEqual(total("after-s1"), Array(4).fill(ROUNDS), "s1 → all, every round once");
    assert.deepEqual(total("after-s2"), Array(4).fill(ROUNDS), "s2 → everyone, every round once");
    assert.deepEqual(total("after-room"), [0, ROUNDS, 0, ROUNDS], "s1 → room, every round once");
    // Requests work again: fetch-sockets from s1 sees the room's sockets on both nodes.
    const got = await ack1(sockets[2], "fetch-sockets", { to: [room] });
    assert.deepEqual(got.map((s) => s.id).sort(), [sockets[3].id, sockets[5].id].sort());

    // A fresh Node.js server joins the healed cluster; the three nodes mesh again.
    nodes[0].closeClients();
    await nodes[0].stop();
    nodes[0] = withClients(
      await startNodePeer({ redisCluster: cluster.hosts, sharded: "dynamic", nodeId: "node", requestsTimeout: REQUESTS_TIMEOUT_MS }),
      "node",
    );
    await cluster.waitShardSubscribers(MAIN_CHANNEL, 3, 30_000);
    await waitMesh(nodes, 30_000);
    const fresh = await group();
    for (let k = 0; k < 10; k++) {
      await ack(fresh.sockets[1], "broadcast", { to: [fresh.all], event: "healed-node", args: [k] });
      await ack(fresh.sockets[3], "broadcast", { event: "healed-s1", args: [k] });
    }
    for (let k = 0; k < 10; k++) {
      await eventually(async () => assert.deepEqual(counts(fresh.recs, "healed-node", [k]), Array(6).fill(1), `node → all, round ${k}`));
      await eventually(async () => assert.deepEqual(counts(fresh.recs, "healed-s1", [k]), Array(6).fill(1), `s1 → everyone, round ${k}`));
    }
    await sleep(SETTLE_MS);
    assert.deepEqual(fresh.recs.map((r) => r.named("healed-node").length), Array(6).fill(10));
    assert.deepEqual(fresh.recs.map((r) => r.named("healed-s1").length), Array(6).fill(10));
  });
});

// The shoal binary on a Redis Cluster: membership (keys on several slots) and the
// forwarding it enables, with the sharded adapter.
describe("the shoal binary on a Redis Cluster (--adapter sharded): membership and forwarding", () => {
  let cluster;
  let a;
  let b;

  before(async () => {
    cluster = await startRedisCluster({ primaries: 3, replicasPerPrimary: 0 });
    const args = (id) => ["--redis", cluster.url, "--adapter", "sharded", "--sharded-mode", "dynamic", "--node-id", id, "--log", "warn"];
    [a, b] = await Promise.all([startShoal({ extraArgs: args("node-a") }), startShoal({ extraArgs: args("node-b") })]);
    await cluster.waitShardSubscribers(MAIN_CHANNEL, 2);
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await cluster?.stop();
  });

  test("both nodes are registered; a session opened on one is served through the other", async () => {
    const key = "socket.io#shoal#nodes";
    const holder = await cluster.primaryOf(await cluster.slotOf(key));
    await eventually(async () => assert.deepEqual((await holder.command("SMEMBERS", key)).sort(), ["node-a", "node-b"]), 10_000);

    const base = (port) => `http://127.0.0.1:${port}/socket.io/?EIO=4&transport=polling`;
    const open = await fetch(base(a.port));
    assert.equal(open.status, 200);
    const { sid } = JSON.parse((await open.text()).slice(1));
    // The CONNECT goes to node b, which forwards it to node a, the session's owner.
    const post = await fetch(`${base(b.port)}&sid=${sid}`, { method: "POST", body: "40" });
    assert.equal(post.status, 200, await post.text().catch(() => ""));
    const poll = await fetch(`${base(b.port)}&sid=${sid}`);
    assert.equal(poll.status, 200);
    assert.match(await poll.text(), /^40\{"sid":"[^"]+"\}/);
  });

  test("the classic adapter works over the same Redis Cluster (PUBLISH reaches every node)", async () => {
    const classic = await Promise.all(
      ["c1", "c2"].map((nodeId) => startTestapp({ redis: cluster.url, nodeId, requestsTimeout: REQUESTS_TIMEOUT_MS })),
    );
    const nodes = classic.map((node, i) => withClients(node, `c${i + 1}`));
    try {
      await waitMesh(nodes, 15_000);
      const { sockets, recs } = await spread(nodes, 2, unique);
      await ack(sockets[0], "broadcast", { event: "classic", args: [1] });
      await deliveredExactly(recs, "classic", [1], [1, 1, 1, 1], "c1 → everyone");
      const result = await ack1(sockets[3], "server-side-emit", { event: "ping", args: [], ack: true, timeout: 2500 });
      assert.deepEqual(result, { ok: true, responses: ["pong from c1"] });
      const got = await ack1(sockets[0], "fetch-sockets", {});
      for (const s of sockets) assert.ok(got.some((g) => g.id === s.id), `fetch-sockets sees ${s.id}`);
    } finally {
      for (const node of nodes) node.closeClients();
      await Promise.all(nodes.map((node) => node.stop()));
    }
  });
});
