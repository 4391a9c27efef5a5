// Connection state recovery when Redis is killed (kill -9) and restarted empty on the
// same port (`--save ""`: session records and the Redis Stream log are gone) under a
// two-node cluster, while a publisher on node A emits 50 numbered events/s to a room.
// No node crashes, and every recovery is either complete or visibly refused:
// - where the log survived (in a node's memory), the client recovers with every event
//   exactly once, in order: on its own node A, or on node B once Redis is back;
// - where it cannot (the session record was only in the wiped Redis and its node died;
//   or the client was away during the outage and comes back to a node that missed
//   events then), the client gets either a complete recovery or `recovered === false`
//   and a fresh socket: never `recovered === true` with a gap.
//
// Each client reaches the cluster through its own round-robin balancer (lib/balancer.mjs)
// whose backends the test switches, so "reconnects to the other node" is a balancer
// decision, and "away" is a network cut (the balancer drops and refuses connections).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Clients, ack, ack1, unique } from "./lib/client.mjs";
import { startBalancer } from "./lib/balancer.mjs";
import { requestChannel, startRedis } from "./lib/redis.mjs";
import { waitMesh } from "./lib/cluster.mjs";
import { Publisher, around, connectTracked, roomsOf, sequenceProblem, startRecoveryNodes } from "./lib/recovery.mjs";
import { sleep } from "./lib/server.mjs";

const RECOVERY_MS = 60_000;

describe("recovery when Redis is killed and restarted empty", () => {
  let redis;
  let nodes = [];
  const balancers = [];
  const allClients = [];

  before(async () => {
    redis = await startRedis();
    nodes = await startRecoveryNodes(redis, ["A", "B"], { recoveryMs: RECOVERY_MS });
  });

  after(async () => {
    for (const c of allClients) c.closeAll();
    for (const b of balancers) await b.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  /** One tracked client in `room`, behind its own balancer (initially to `node`). */
  async function client(label, node, room) {
    const balancer = await startBalancer([node.port]);
    balancers.push(balancer);
    const clients = new Clients(balancer.url);
    allClients.push(clients);
    const [t] = await connectTracked(clients, 1, label);
    await ack(t.socket, "join", room);
    await ack(t.socket, "set-data", { label });
    t.balancer = balancer;
    t.data = { label };
    t.rooms = await roomsOf(t.socket);
    assert.equal(await ack1(t.socket, "whoami"), node.id, `${label} starts on ${node.id}`);
    return t;
  }

  /** Waits (bounded) until `t` has `count` ticks, then describes the sequence problem. */
  async function problem(t, n) {
    const deadline = Date.now() + 5000;
    while (t.ticks.length < n && Date.now() < deadline) await sleep(50);
    const p = sequenceProblem(t.ticks, n);
    return p && `${p}; around it: ${around(t, n)}`;
  }

  /** Recovered with everything, or visibly not: a new id, no old room, no old data. */
  async function assertCompleteOrFresh(t, n) {
    const socket = t.socket;
    if (socket.recovered) {
      assert.equal(socket.id, t.firstId, `${t.label}: recovered with the same id`);
      assert.deepEqual(await roomsOf(socket), t.rooms, `${t.label}: recovered with its rooms`);
      assert.deepEqual(await ack1(socket, "get-data"), t.data, `${t.label}: recovered with its data`);
      assert.equal(await problem(t, n), null, `${t.label}: recovered === true, so every event exactly once, in order`);
      return "recovered";
    }
    assert.notEqual(socket.id, t.firstId, `${t.label}: not recovered, so a new id`);
    assert.deepEqual(await roomsOf(socket), [socket.id], `${t.label}: not recovered, so none of the old rooms`);
    assert.equal(await ack1(socket, "get-data"), null, `${t.label}: not recovered, so no old data`);
    assert.equal(await ack1(socket, "recovered"), false, `${t.label}: not recovered on the server side either`);
    return "fresh";
  }

  test("no node crashes; recovery after the restart is complete where the log survived, a fresh session where it did not", async () => {
    const [A, B] = nodes;
    const room = unique("room");
    const sameNode = await client("on A, back to A", A, room);
    const otherNode = await client("on A, then to B", A, room);
    const awayOnB = await client("on B, away during the outage, back to B", B, room);
    const crashed = await client("on A, A killed after the restart", A, room);
    const stayOnB = await client("on B, connected throughout", B, room);

    const redisKilledAt = { tick: -1 };
    const redisBackAt = { tick: -1 };
    const pubClients = new Clients(A.url, { transports: ["websocket"] });
    allClients.push(pubClients);
    const pub = new Publisher([await pubClients.connect("/")], [room]);
    pub.start();
    await sleep(400);

    // awayOnB loses its network before the outage and gets it back after.
    awayOnB.balancer.setBackends([]);
    awayOnB.balancer.dropAll();
    // Events before this were emitted 200 ms before Redis dies: every node has them.
    const deliveredBeforeKill = pub.n;
    await sleep(200);

    redisKilledAt.tick = pub.n;
    await redis.kill();
    await sleep(800);
    redisBackAt.tick = pub.n;
    for (const node of nodes) assert.equal(node.proc.exited, false, `${node.id} survived the Redis kill`);
    await redis.start();
    await redis.waitSubscribers(requestChannel("/"), 2, 15_000);
    await waitMesh(nodes, 15_000);
    await sleep(300);
    // Events from here on cross the cluster again.
    const meshBackAt = pub.n;

    // Transports drop after Redis is back: sameNode reconnects to A, otherNode to B,
    // awayOnB gets its network back (to B).
    sameNode.balancer.dropAll();
    otherNode.balancer.setBackends([B.port]);
    otherNode.balancer.dropAll();
    awayOnB.balancer.setBackends([B.port]);
    await Promise.all([sameNode, otherNode, awayOnB].map((t) => t.connectedTimes(2)));
    assert.equal(await ack1(sameNode.socket, "whoami"), "A");
    assert.equal(await ack1(otherNode.socket, "whoami"), "B");
    assert.equal(await ack1(awayOnB.socket, "whoami"), "B");
    await sleep(300);
    const n = await pub.stop();
    assert.ok(n > 80, `events emitted: ${n}`);

    // The log survived in A's memory (the publisher is on A) and, for what was
    // broadcast once Redis was back, in B's: complete recoveries.
    for (const t of [sameNode, otherNode]) {
      assert.equal(t.socket.recovered, true, `${t.label}: recovered`);
      assert.equal(t.socket.id, t.firstId, `${t.label}: same id`);
      assert.deepEqual(await roomsOf(t.socket), t.rooms, `${t.label}: same rooms`);
      assert.deepEqual(await ack1(t.socket, "get-data"), t.data, `${t.label}: same data`);
      assert.equal(await problem(t, n), null, `${t.label}: every event exactly once, in order`);
    }
    // Redis restarted empty, so the session record of `crashed` is gone until its
    // node rewrites it; its node dies first. Recovery on B is complete or refused.
    crashed.balancer.setBackends([B.port]);
    await A.kill();
    await crashed.connectedTimes(2);
    assert.equal(await ack1(crashed.socket, "whoami"), "B");
    const crashedOutcome = await assertCompleteOrFresh(crashed, n);
    assert.equal(B.proc.exited, false, "B is still running");
    // Redis restarted empty and A died without a goodbye: no record of `crashed` is
    // anywhere, so B cannot recover it.
    assert.equal(crashedOutcome, "fresh", `${crashed.label}: ${around(crashed, n)}`);

    // A client connected to B throughout: what A broadcast while Redis was down never
    // reached B, so it may miss events between the two marks, and only those; nothing
    // twice, nothing out of order.
    const got = stayOnB.ticks;
    assert.ok(got.every((v, i) => i === 0 || v > got[i - 1]), `${stayOnB.label}: in order, once each: ${around(stayOnB, n)}`);
    const have = new Set(got);
    const missing = [];
    for (let i = 0; i < n; i++) if (!have.has(i) && (i < deliveredBeforeKill || i >= meshBackAt)) missing.push(i);
    assert.deepEqual(missing, [], `${stayOnB.label}: missed events outside the outage (${deliveredBeforeKill}..${meshBackAt})`);
    assert.equal(stayOnB.drops.length, 0, `${stayOnB.label}: never disconnected`);

    // What A broadcast during the outage waited in A's publish queue and reached B once
    // Redis was back, in order; B's memory holds awayOnB's session and every event since
    // it left: the recovery on B is complete (assertCompleteOrFresh checked each event).
    const awayOutcome = await assertCompleteOrFresh(awayOnB, n);
    assert.equal(awayOutcome, "recovered", `${awayOnB.label}: ${around(awayOnB, n)}`);
  });
});
