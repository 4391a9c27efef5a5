// Connection state recovery across a cluster of three shoal nodes on one Redis, behind
// the test's own round-robin TCP balancer (lib/balancer.mjs: no sticky sessions), with
// 100 official clients over WebSocket and a publisher emitting 50 numbered events/s to
// their rooms:
// - kill -9 of the node the 100 clients are on: they reconnect through the balancer to
//   the two other nodes, all recover (same id, rooms, data) and each has every event
//   exactly once, in order;
// - rolling restart (SIGTERM, start again on the same port, next node): the same, for
//   every client, whichever nodes it went through.
//
// The publisher is never on the node being killed or restarted (a publisher's own
// emits in flight when its node dies are not the server's to recover).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Clients, ack, ack1, unique, waitConnect } from "./lib/client.mjs";
import { startBalancer } from "./lib/balancer.mjs";
import { startRedis } from "./lib/redis.mjs";
import { Publisher, RECONNECTING, assertEveryTickOnce, connectTracked, roomsOf, startRecoveryNodes } from "./lib/recovery.mjs";
import { sleep } from "./lib/server.mjs";

const RECOVERY_MS = 60_000;
const CLIENTS = 100;
const GROUPS = 10;

/** Joins client i to the shared room and to group room i % GROUPS; data {i}. */
async function prepare(tracked, all) {
  await Promise.all(
    tracked.map(async (t, i) => {
      await ack(t.socket, "join", [all, `${all}-g${i % GROUPS}`]);
      await ack(t.socket, "set-data", { i, label: t.label });
    }),
  );
  return Promise.all(tracked.map((t) => roomsOf(t.socket)));
}

/**
 * Even events to the shared room, odd ones to all GROUPS group rooms at once: each
 * client is in exactly one group, so it must get every event, each exactly once.
 */
function targets(all) {
  const groups = Array.from({ length: GROUPS }, (_, g) => `${all}-g${g}`);
  return (n) => (n % 2 === 0 ? [all] : groups);
}

/** Every client recovered on each reconnection, kept its id, rooms and data. */
async function assertRecovered(tracked, rooms) {
  const bad = tracked
    .filter((t) => t.connects.some((c, k) => c.id !== t.firstId || c.recovered !== (k > 0)))
    .map((t) => `${t.label}: ${JSON.stringify(t.connects)}`);
  assert.deepEqual(bad, [], "every reconnection recovered, with the same id");
  const after = await Promise.all(tracked.map((t) => roomsOf(t.socket)));
  const roomsChanged = tracked.filter((t, i) => JSON.stringify(after[i]) !== JSON.stringify(rooms[i])).map((t) => t.label);
  assert.deepEqual(roomsChanged, [], "same rooms");
  const data = await Promise.all(tracked.map((t) => ack1(t.socket, "get-data")));
  const dataChanged = tracked.filter((t, i) => data[i]?.i !== i || data[i]?.label !== t.label).map((t) => t.label);
  assert.deepEqual(dataChanged, [], "same data");
  const serverSide = await Promise.all(tracked.map((t) => ack1(t.socket, "recovered")));
  assert.ok(serverSide.every((r, i) => r === (tracked[i].connects.length > 1)), "socket.recovered on the server side");
}

describe("recovery across the cluster: kill -9 of the clients' node", () => {
  let redis;
  let nodes = [];
  let balancer;
  let clients;
  let pubClients;

  before(async () => {
    redis = await startRedis();
    nodes = await startRecoveryNodes(redis, ["A", "B", "C"], { recoveryMs: RECOVERY_MS });
  });

  after(async () => {
    clients?.closeAll();
    pubClients?.closeAll();
    await balancer?.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  test("100 clients on node A, 50 events/s from node B, A killed: all recover on B and C, every event once, in order", async () => {
    const [A, B, C] = nodes;
    // The balancer first sends every connection to A, then round-robins over all three.
    balancer = await startBalancer([A.port]);
    clients = new Clients(balancer.url);
    const tracked = await connectTracked(clients, CLIENTS, "client");
    const where = await Promise.all(tracked.map((t) => ack1(t.socket, "whoami")));
    assert.deepEqual(new Set(where), new Set(["A"]), "all 100 clients start on A");
    balancer.setBackends([A.port, B.port, C.port]);
    const all = unique("all");
    const rooms = await prepare(tracked, all);

    pubClients = new Clients(B.url, { transports: ["websocket"] });
    const pub = new Publisher([await pubClients.connect("/")], targets(all));
    pub.start();
    await sleep(600);
    await A.kill();
    await Promise.all(tracked.map((t) => t.connectedTimes(2)));
    await sleep(600);
    const n = await pub.stop();

    assert.ok(n >= 50, `events emitted: ${n}`);
    const now = await Promise.all(tracked.map((t) => ack1(t.socket, "whoami")));
    const onB = now.filter((w) => w === "B").length;
    const onC = now.filter((w) => w === "C").length;
    assert.equal(onB + onC, CLIENTS, `all on B or C now: ${JSON.stringify(now)}`);
    assert.ok(onB > 0 && onC > 0, `round-robin spread them over B (${onB}) and C (${onC})`);
    await assertRecovered(tracked, rooms);
    const replayed = tracked.reduce((sum, t) => sum + t.replayed, 0);
    assert.ok(replayed > 0, "some missed events were replayed on reconnection");
    await assertEveryTickOnce(tracked, n);
  });
});

describe("recovery across the cluster: rolling restart of all three nodes", () => {
  let redis;
  let nodes = [];
  let balancer;
  let clients;
  let pubClients = [];

  before(async () => {
    redis = await startRedis();
    nodes = await startRecoveryNodes(redis, ["A", "B", "C"], { recoveryMs: RECOVERY_MS });
  });

  after(async () => {
    clients?.closeAll();
    for (const c of pubClients) c.closeAll();
    await balancer?.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  test("SIGTERM, restart on the same port, next node, under 50 events/s: every client recovers, zero lost events", async () => {
    balancer = await startBalancer(nodes.map((n) => n.port));
    clients = new Clients(balancer.url);
    const tracked = await connectTracked(clients, CLIENTS, "client");
    const where = await Promise.all(tracked.map((t) => ack1(t.socket, "whoami")));
    for (const id of ["A", "B", "C"]) {
      assert.ok(where.filter((w) => w === id).length >= 30, `round-robin: ${where.filter((w) => w === id).length} on ${id}`);
    }
    const all = unique("all");
    const rooms = await prepare(tracked, all);

    // One publisher socket per node, straight to the node, reconnecting to it.
    pubClients = nodes.map((n) => new Clients(n.url, { transports: ["websocket"] }));
    const pubSockets = pubClients.map((c) => c.socket("/", RECONNECTING));
    await Promise.all(pubSockets.map((s) => waitConnect(s, "publisher")));
    const pub = new Publisher(pubSockets, targets(all));
    pub.current = 1;
    pub.start();
    await sleep(400);

    for (let i = 0; i < nodes.length; i++) {
      // Publish from another node while this one restarts.
      await pub.switchTo((i + 1) % nodes.length);
      const node = nodes[i];
      const exit = await node.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, `${node.id} drained and exited on SIGTERM`);
      const [restarted] = await startRecoveryNodes(redis, [node.id], {
        recoveryMs: RECOVERY_MS,
        ports: [node.port],
        peers: nodes.filter((n) => n !== node),
      });
      nodes[i] = restarted;
      await Promise.all(tracked.map((t) => t.connectedTimes(t.drops.length + 1)));
      await sleep(500);
    }
    const n = await pub.stop();

    assert.ok(n >= 100, `events emitted: ${n}`);
    const droppedNever = tracked.filter((t) => t.drops.length === 0).map((t) => t.label);
    assert.deepEqual(droppedNever, [], "every client was on a restarted node at least once");
    await assertRecovered(tracked, rooms);
    const replayed = tracked.reduce((sum, t) => sum + t.replayed, 0);
    assert.ok(replayed > 0, "some missed events were replayed on reconnection");
    await assertEveryTickOnce(tracked, n);
  });
});
