// Redis Sentinel: two shoal nodes join through `--redis redis+sentinel://.../m` (a dead
// sentinel listed first, so "any reachable sentinel is enough" is shown too), with a real
// primary, its replica and a sentinel started here (lib/redis-sentinel.mjs). Room
// broadcasts cross the nodes; then the primary is killed (kill -9), the sentinel promotes
// the replica, and the nodes follow it: broadcasts sent after traffic resumed all arrive
// (counted exactly, both ways), the publisher's queue kept its order, membership renewals
// land on the new primary, each node logs the switch once, and the time from the kill to
// resumed traffic is printed.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { io } from "socket.io-client";
import { eventually, unique } from "./lib/client.mjs";
import { DOWN_AFTER_MS, MASTER, startSentinelSetup } from "./lib/redis-sentinel.mjs";
import { freePort, SHOAL_BIN, sleep, startShoal } from "./lib/server.mjs";

/** Broadcasts counted each way once traffic is back. */
const N = 50;
/** Pause after the last delivery before counting again: long enough for a duplicate to show. */
const SETTLE_MS = 300;
const SWITCH_LOG = "the primary moved";

function startNode(url, id) {
  return startShoal({
    extraArgs: [
      "--redis", url,
      "--node-id", id,
      // Longer than a switch (about 3 s here), so no registration expires meanwhile.
      "--membership-ttl", "6000",
      "--log", process.env.SHOAL_TEST_VERBOSE ? "info,shoal=debug" : "warn,shoal::adapter::redis::sentinel_link=info,shoal::adapter::redis::link=info",
    ],
  });
}

/** A websocket client on `node` in `room`, recording the "room message" payloads it gets. */
async function member(node, room) {
  const socket = io(node.url, { forceNew: true, reconnection: false, transports: ["websocket"] });
  const got = [];
  socket.on("room message", (r, payload) => {
    if (r === room) got.push(payload);
  });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no connection to ${node.url} in 5 s`)), 5000);
    socket.once("connect", () => (clearTimeout(t), resolve()));
    socket.once("connect_error", (e) => (clearTimeout(t), reject(e)));
  });
  assert.equal(await socket.timeout(5000).emitWithAck("join", room), true);
  return { socket, got, named: (phase) => got.filter((p) => p.phase === phase) };
}

function send(from, room, payload) {
  return from.socket.timeout(5000).emitWithAck("room message", room, payload);
}

describe("Redis Sentinel: two shoal nodes follow the primary through a failover", () => {
  let setup;
  let deadSentinel;
  let nodes = [];
  let a;
  let b;
  const room = unique("room");

  before(async () => {
    setup = await startSentinelSetup();
    deadSentinel = `127.0.0.1:${await freePort()}`;
    const url = setup.url([deadSentinel]);
    nodes = [await startNode(url, "n1"), await startNode(url, "n2")];
    a = await member(nodes[0], room);
    b = await member(nodes[1], room);
  });

  after(async () => {
    a?.socket.close();
    b?.socket.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await setup?.stop();
  });

  test("an unknown master name stops the node at start, naming the master and every sentinel tried", async () => {
    const url = `redis+sentinel://${deadSentinel},127.0.0.1:${setup.sentinel.port}/nosuch`;
    // Spawned directly: the node listens before it connects to Redis, so "accepts
    // connections" (startShoal) would race with its exit.
    const args = ["--listen", "127.0.0.1:0", "--redis", url, "--node-id", "bad", "--log", "warn"];
    const { code, output } = await new Promise((resolve, reject) => {
      const child = spawn(SHOAL_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (c) => (output += c));
      child.stderr.on("data", (c) => (output += c));
      const timer = setTimeout(() => (child.kill("SIGKILL"), reject(new Error(`still running after 10 s:\n${output}`))), 10_000);
      child.on("exit", (code) => (clearTimeout(timer), resolve({ code, output })));
    });
    assert.equal(code, 1, output);
    assert.match(output, /no sentinel named the primary of master "nosuch"/);
    assert.ok(output.includes(`${deadSentinel}: `), output);
    assert.ok(output.includes(`127.0.0.1:${setup.sentinel.port}: does not know this master name`), output);
  });

  test("room broadcasts cross the nodes through the primary", async () => {
    for (let i = 0; i < 5; i++) {
      assert.equal(await send(a, room, { phase: "before-ab", i }), true);
      assert.equal(await send(b, room, { phase: "before-ba", i }), true);
    }
    await eventually(() => {
      assert.equal(b.named("before-ab").length, 5);
      assert.equal(a.named("before-ba").length, 5);
    }, 5000);
  });

  test("kill -9 the primary: the replica is promoted and traffic resumes, nothing sent afterwards lost", async () => {
    const killedAt = Date.now();
    await setup.primary.kill();
    const promoted = setup.waitPromoted(20_000);

    // Probes every 100 ms each way from the kill on, until each side hears the other
    // again. Probes sent while no primary answered wait in the publisher's queue and go
    // out in order to the new one, but any that reach it before the other node
    // resubscribed are lost (Pub/Sub keeps nothing).
    let seq = 0;
    const resumed = {};
    const deadline = Date.now() + 20_000;
    while (!(resumed.ab && resumed.ba)) {
      assert.ok(Date.now() < deadline, `traffic did not resume within 20 s (a→b ${b.named("probe-ab").length}, b→a ${a.named("probe-ba").length})`);
      seq++;
      // Not awaited: the ack waits for nothing remote, but a stalled node must not stall the loop.
      send(a, room, { phase: "probe-ab", seq }).catch(() => {});
      send(b, room, { phase: "probe-ba", seq }).catch(() => {});
      await sleep(100);
      if (!resumed.ab && b.named("probe-ab").length > 0) resumed.ab = Date.now();
      if (!resumed.ba && a.named("probe-ba").length > 0) resumed.ba = Date.now();
    }
    for (const [who, got] of [["a→b", b.named("probe-ab")], ["b→a", a.named("probe-ba")]]) {
      const seqs = got.map((p) => p.seq);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), `${who}: probes out of order: ${seqs}`);
      assert.equal(new Set(seqs).size, seqs.length, `${who}: a probe arrived twice: ${seqs}`);
    }
    const promotedAt = await promoted;
    const resumedAt = Math.max(resumed.ab, resumed.ba);
    console.log(
      `sentinel failover (down-after ${DOWN_AFTER_MS} ms): kill → replica promoted ${promotedAt - killedAt} ms, ` +
        `kill → traffic resumed ${resumedAt - killedAt} ms (a→b ${resumed.ab - killedAt} ms, b→a ${resumed.ba - killedAt} ms), ` +
        `probes heard a→b ${b.named("probe-ab").length}/${seq}, b→a ${a.named("probe-ba").length}/${seq}`,
    );

    // Every broadcast sent after traffic resumed arrives, once.
    for (let i = 0; i < N; i++) {
      assert.equal(await send(a, room, { phase: "after-ab", i }), true);
      assert.equal(await send(b, room, { phase: "after-ba", i }), true);
    }
    await eventually(() => {
      assert.equal(b.named("after-ab").length, N, "a→b after the switch");
      assert.equal(a.named("after-ba").length, N, "b→a after the switch");
    }, 5000);
    await sleep(SETTLE_MS);
    assert.deepEqual(b.named("after-ab").map((p) => p.i), [...Array(N).keys()]);
    assert.deepEqual(a.named("after-ba").map((p) => p.i), [...Array(N).keys()]);

    // Commands go to the new primary: each node's membership key, replicated before
    // the kill, is renewed there (TTL 6000 ms, renewed every 1500 ms: its PTTL goes up).
    for (const id of ["n1", "n2"]) {
      const key = `socket.io#shoal#node:${id}`;
      const first = Number(await setup.replica.command("PTTL", key));
      assert.ok(first > 0, `${key}: PTTL ${first} on the new primary (expired during the switch)`);
      let last = first;
      await eventually(async () => {
        const now = Number(await setup.replica.command("PTTL", key));
        const before = last;
        last = now;
        assert.ok(now > before, `${key}: PTTL ${first} ... ${before} then ${now}, not renewed on the new primary`);
      }, 5000);
    }

    // Both nodes alive, and each logged the switch once, old → new.
    for (const [i, node] of nodes.entries()) {
      assert.equal(node.proc.exited, false, `n${i + 1} exited`);
      const switches = node.proc.log.split("\n").filter((l) => l.includes(SWITCH_LOG));
      assert.equal(switches.length, 1, `n${i + 1}: switch logged ${switches.length} times\n${node.proc.log}`);
      assert.ok(
        switches[0].includes(`127.0.0.1:${setup.primary.port}`) && switches[0].includes(`127.0.0.1:${setup.replica.port}`),
        switches[0],
      );
      // The subscription was made again on the new primary (and its subscribers told).
      const after = node.proc.log.slice(node.proc.log.indexOf(SWITCH_LOG));
      assert.match(after, /Redis is back: resubscribed/, `n${i + 1}\n${node.proc.log}`);
    }
    assert.equal(await setup.sentinel.primaryPort(), setup.replica.port, `sentinel still names ${MASTER} at the replica`);
  });
});
