// Redis goes away mid-test (kill -9 of the test's own redis-server) and comes back on the
// same port: no shoal node crashes, traffic local to a node goes on during the outage,
// a cluster request in flight ends at its timeout, new ones fail with an error instead of
// hanging, and after the restart every subscription is back and cross-node broadcasts
// and requests work again.
//
// Sockets: #0 (polling) and #1 (websocket) on node A, #2 (upgrade) and #3 (polling) on B.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { TRANSPORTS, Recorder, ack, ack1, eventually, unique } from "./lib/client.mjs";
import { counts, startShoalNodes } from "./lib/cluster.mjs";
import { requestChannel, startRedis } from "./lib/redis.mjs";
import { sleep } from "./lib/server.mjs";

const REQUESTS_TIMEOUT_MS = 2000;
const RESUME_WITHIN_MS = 15_000;

describe("Redis killed and restarted under a two-node shoal cluster", () => {
  let redis;
  let nodes = [];

  before(async () => {
    redis = await startRedis();
    nodes = await startShoalNodes(redis, ["A", "B"], { requestsTimeout: REQUESTS_TIMEOUT_MS });
  });

  after(async () => {
    for (const node of nodes) node.closeClients();
    await Promise.all(nodes.map((node) => node.stop()));
    await redis?.stop();
  });

  test("no node crashes, local traffic goes on, cross-node traffic resumes after the restart", async () => {
    const [A, B] = nodes;
    const placed = [
      [A, TRANSPORTS[0]],
      [A, TRANSPORTS[1]],
      [B, TRANSPORTS[2]],
      [B, TRANSPORTS[0]],
    ];
    const sockets = await Promise.all(placed.map(([node, t]) => node.clients(t).connect()));
    const recs = sockets.map((s, i) => new Recorder(s, `socket #${i} on ${placed[i][0].id} (${s.id})`));
    const all = unique("all");
    for (const s of sockets) await ack(s, "join", all);
    const sawMarker = (marker) => (evs) => evs.some((e) => e[0] === "marker" && e[1] === marker);

    // Before: a broadcast from A reaches B.
    await ack(sockets[0], "broadcast", { to: [all], event: "marker", args: ["before"] });
    await Promise.all(recs.map((r) => r.until(sawMarker("before"), "marker before the outage")));

    // What the nodes subscribed to (every namespace's channels and patterns), to compare
    // after the restart.
    const subscriptions = async () => {
      const channels = (await redis.command("PUBSUB", "CHANNELS")).sort();
      return {
        channels,
        numsub: await redis.command("PUBSUB", "NUMSUB", ...channels),
        patterns: await redis.command("PUBSUB", "NUMPAT"),
      };
    };
    const subscribedBefore = await subscriptions();
    assert.ok(subscribedBefore.channels.includes(requestChannel("/custom")), JSON.stringify(subscribedBefore));

    // A cluster request in flight when Redis goes: a broadcast with acks from A reaches
    // a socket on B, which acks too late to get back.
    const pendingRoom = unique("pending");
    await ack(sockets[0], "join", pendingRoom);
    await ack(sockets[2], "join", pendingRoom);
    sockets[0].on("slow", (callback) => callback("A at once"));
    const askedOnB = new Promise((resolve) =>
      sockets[2].on("slow", (callback) => {
        resolve();
        setTimeout(() => callback("B too late"), 500);
      }),
    );
    const pendingStarted = Date.now();
    const pending = ack1(sockets[1], "broadcast-with-ack", { to: [pendingRoom], timeout: 1500, event: "slow", args: [] });
    await askedOnB;

    // kill -9: every Redis connection of both nodes drops at once. The outage lasts a few
    // seconds, long enough for several failed reconnection attempts.
    await redis.kill();
    const downSince = Date.now();
    await sleep(300);

    for (const node of nodes) assert.equal(node.proc.exited, false, `${node.id} died: ${JSON.stringify(node.proc.exitInfo)}`);
    for (const [i, s] of sockets.entries()) {
      assert.deepEqual(await ack(s, "echo", "alive", i), ["alive", i], `echo on socket #${i} during the outage`);
    }

    // The request in flight ends at its timeout, with what it got.
    const pendingResult = await pending;
    const pendingElapsed = Date.now() - pendingStarted;
    assert.deepEqual(
      pendingResult,
      { ok: false, error: "operation has timed out", responses: ["A at once"] },
      "a broadcast with acks in flight when Redis went away",
    );
    assert.ok(pendingElapsed >= 1400 && pendingElapsed < 4000, `it answered after ${pendingElapsed} ms, expected ~1500`);

    // Local broadcasts still reach the sockets of the sending node, exactly once.
    await ack(sockets[0], "broadcast", { to: [all], event: "during", args: ["from A"] });
    await ack(sockets[0], "broadcast", { to: [all], event: "marker", args: ["during A"] });
    await ack(sockets[3], "broadcast", { to: [all], event: "during", args: ["from B"] });
    await ack(sockets[3], "broadcast", { to: [all], event: "marker", args: ["during B"] });
    await Promise.all([
      recs[0].until(sawMarker("during A"), "A's marker during the outage"),
      recs[1].until(sawMarker("during A"), "A's marker during the outage"),
      recs[2].until(sawMarker("during B"), "B's marker during the outage"),
      recs[3].until(sawMarker("during B"), "B's marker during the outage"),
    ]);
    assert.deepEqual(counts(recs.slice(0, 2), "during", ["from A"]), [1, 1], "A's sockets got A's broadcast");
    assert.deepEqual(counts(recs.slice(2), "during", ["from B"]), [1, 1], "B's sockets got B's broadcast");

    // Acks from local sockets are still collected.
    const room = unique("r");
    for (const i of [0, 1]) {
      await ack(sockets[i], "join", room);
      sockets[i].on("poll", (callback) => callback(`a${i}`));
    }
    const local = await ack1(sockets[1], "broadcast-with-ack", { to: [room], timeout: 1500, event: "poll", args: [] });
    assert.deepEqual(local.responses && [...local.responses].sort(), ["a0", "a1"], JSON.stringify(local));

    // A cluster request cannot be answered: it fails with an error instead of hanging.
    const started = Date.now();
    const failed = await ack1(sockets[2], "server-side-emit", { event: "ping", args: [], ack: true, timeout: REQUESTS_TIMEOUT_MS });
    const elapsed = Date.now() - started;
    assert.equal(failed.ok, false, `server-side-emit with Redis down: ${JSON.stringify(failed)}`);
    assert.equal(typeof failed.error, "string");
    assert.ok(failed.error.length > 0, "an error message");
    assert.ok(elapsed < REQUESTS_TIMEOUT_MS + 3000, `server-side-emit with Redis down answered after ${elapsed} ms`);

    // Redis comes back on the same port.
    await sleep(Math.max(0, 3000 - (Date.now() - downSince)));
    for (const [i, s] of sockets.entries()) assert.equal(s.connected, true, `socket #${i} lost during the outage`);
    await redis.restart();
    for (const node of nodes) assert.equal(node.proc.exited, false, `${node.id} died during the outage`);

    // Poll until a broadcast from A reaches B's sockets and one from B reaches A's.
    const deadline = Date.now() + RESUME_WITHIN_MS;
    let attempt = 0;
    const heardFrom = (rec, tag) => rec.named("resume").some((a) => a[0] === tag);
    let resumed = false;
    while (!resumed && Date.now() < deadline) {
      attempt += 1;
      await ack(sockets[1], "broadcast", { to: [all], event: "resume", args: ["A", attempt] });
      await ack(sockets[2], "broadcast", { to: [all], event: "resume", args: ["B", attempt] });
      await sleep(250);
      resumed = heardFrom(recs[2], "A") && heardFrom(recs[3], "A") && heardFrom(recs[0], "B") && heardFrom(recs[1], "B");
    }
    assert.ok(
      resumed,
      `cross-node broadcasts did not resume within ${RESUME_WITHIN_MS} ms of the restart ` +
        `(${attempt} attempts); B's sockets heard A: ${heardFrom(recs[2], "A")}/${heardFrom(recs[3], "A")}, ` +
        `A's sockets heard B: ${heardFrom(recs[0], "B")}/${heardFrom(recs[1], "B")}\n` +
        `--- A ---\n${A.proc.log.slice(-3000)}\n--- B ---\n${B.proc.log.slice(-3000)}`,
    );

    // Back to normal: every socket gets a broadcast from either node exactly once...
    await ack(sockets[0], "broadcast", { to: [all], event: "after", args: ["from A"] });
    await ack(sockets[0], "broadcast", { to: [all], event: "marker", args: ["after A"] });
    await ack(sockets[3], "broadcast", { to: [all], event: "after", args: ["from B"] });
    await ack(sockets[3], "broadcast", { to: [all], event: "marker", args: ["after B"] });
    await Promise.all(
      recs.flatMap((r) => [r.until(sawMarker("after A"), "marker after A"), r.until(sawMarker("after B"), "marker after B")]),
    );
    assert.deepEqual(counts(recs, "after", ["from A"]), [1, 1, 1, 1]);
    assert.deepEqual(counts(recs, "after", ["from B"]), [1, 1, 1, 1]);

    // ...every namespace is subscribed again, as before the outage...
    let subscribedAfter;
    await eventually(async () => {
      subscribedAfter = await subscriptions();
      assert.deepEqual(subscribedAfter, subscribedBefore, "the same subscriptions as before the outage");
    });

    // ...and cluster requests are answered again.
    const pong = await ack1(sockets[0], "server-side-emit", { event: "ping", args: [], ack: true, timeout: REQUESTS_TIMEOUT_MS });
    assert.deepEqual(pong, { ok: true, responses: ["pong from B"] });
    const fetched = await ack1(sockets[3], "fetch-sockets", { to: [all] });
    assert.deepEqual(fetched.map((s) => s.id), sockets.map((s) => s.id).sort());

    for (const node of nodes) assert.equal(node.proc.exited, false, `${node.id} died`);
  });
});
