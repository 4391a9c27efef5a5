// An owner node dies (SIGKILL) behind a round-robin nginx. Its clients' next requests
// reach the other nodes, which cannot forward them to the dead owner and answer
// "Session ID unknown" (or the client's WebSocket drops), so the clients get a clean
// error, reconnect, and land on the surviving nodes, where they work as before.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { io } from "socket.io-client";
import { sleep } from "./lib/server.mjs";
import { metrics, startCluster, startNginx, whoami, NODE_KINDS } from "./lib/lb.mjs";

const PER_KIND = 30;

for (const kind of NODE_KINDS) {
  describe(`owner node killed (${kind.name})`, () => {
    let cluster;
    let nginx;
    const clients = [];
    before(async () => {
      cluster = await startCluster({ bin: kind.bin, count: 3, args: ["--trusted-proxies", "127.0.0.1"], pingInterval: 60000, pingTimeout: 5000 });
      nginx = await startNginx("shoal-round-robin.conf", cluster.nodes);
    });
    after(async () => {
      for (const c of clients) c.socket.disconnect();
      await nginx?.stop();
      await cluster?.stop();
    });

    test("its clients get an error, reconnect to the other nodes and work there", { timeout: 60_000 }, async () => {
      for (let i = 0; i < 2 * PER_KIND; i++) {
        const polling = i % 2 === 0;
        const socket = io(nginx.url, {
          forceNew: true,
          reconnectionDelay: 100,
          reconnectionDelayMax: 1000,
          randomizationFactor: 0,
          ...(polling ? { transports: ["polling"] } : {}),
        });
        const c = { i, kind: polling ? "polling" : "upgrade", socket, owners: [], disconnects: [], connectErrors: 0 };
        socket.on("connect", async () => {
          try {
            c.owners.push((await whoami(socket)).node);
          } catch (e) {
            c.owners.push(`whoami failed: ${e.message}`);
          }
        });
        socket.on("disconnect", (reason) => c.disconnects.push(reason));
        socket.on("connect_error", () => c.connectErrors++);
        clients.push(c);
      }
      const deadline = Date.now() + 15_000;
      while (clients.some((c) => c.owners.length === 0) && Date.now() < deadline) await sleep(50);
      assert.ok(clients.every((c) => c.owners.length === 1), "every client connected once");
      await sleep(1000); // the upgrades
      const victim = cluster.nodes[1];
      const survivors = cluster.nodes.filter((n) => n !== victim);
      const victims = clients.filter((c) => c.owners[0] === victim.id);
      assert.ok(victims.some((c) => c.kind === "polling") && victims.some((c) => c.kind === "upgrade"), `sessions on ${victim.id}: ${victims.length}`);

      // WebSockets of the survivors' sessions that the victim pipes to their owner: they
      // break with it, and those only.
      const pipedThroughVictim = (await metrics(victim)).shoal_forwarded_websockets;
      const killedAt = Date.now();
      await victim.kill();

      // Every client ends up connected to a surviving node.
      const settled = () => clients.every((c) => c.socket.connected && c.owners.length > 0 && c.owners.at(-1) !== victim.id && !c.owners.at(-1).startsWith("whoami"));
      while (!settled() && Date.now() - killedAt < 20_000) await sleep(100);
      const back = Date.now() - killedAt;
      const stuck = clients.filter((c) => !c.socket.connected || c.owners.at(-1) === victim.id);
      assert.ok(settled(), `not back after 20 s: ${stuck.map((c) => `${c.kind} #${c.i} owners=${c.owners}`).join("; ")}`);

      for (const c of victims) {
        assert.ok(c.disconnects.length >= 1, `${c.kind} #${c.i} on ${victim.id} never noticed`);
        assert.ok(["transport error", "transport close", "ping timeout"].includes(c.disconnects[0]), `${c.kind} #${c.i}: ${c.disconnects[0]}`);
        assert.ok(survivors.some((n) => n.id === c.owners.at(-1)), `${c.kind} #${c.i} now on ${c.owners.at(-1)}`);
      }
      // The clean error: the survivors answered the dead owner's sessions "Session ID unknown".
      const m = await Promise.all(survivors.map(metrics));
      const failed = m.reduce((s, x) => s + ["unknown_owner", "unreachable", "broken"].reduce((a, r) => a + (x[`shoal_forward_failures_total{reason="${r}"}`] ?? 0), 0), 0);
      assert.ok(failed > 0, "the survivors could not forward to the dead owner and said so");
      // And everyone works: an echo from every client.
      const echoes = await Promise.all(clients.map((c) => c.socket.timeout(5000).emitWithAck("echo", c.i)));
      assert.deepEqual(echoes, clients.map((c) => c.i));

      const others = clients.filter((c) => c.owners[0] !== victim.id);
      const othersReconnected = others.filter((c) => c.disconnects.length > 0);
      console.log(
        `killed ${victim.id} with ${victims.length} of ${clients.length} sessions; all back in ${back} ms; ` +
          `${othersReconnected.length} clients of other nodes reconnected too: ` +
          othersReconnected.map((c) => `${c.kind}:${c.disconnects[0]}`).join(", "),
      );
      // A WebSocket of a surviving node's session breaks exactly when the victim was the
      // node piping it (the gauge read just before the kill).
      const upgradeOthersDropped = othersReconnected.filter((c) => c.kind === "upgrade");
      assert.equal(upgradeOthersDropped.length, pipedThroughVictim, `upgrade clients of live nodes dropped: ${upgradeOthersDropped.map((c) => `#${c.i}:${c.disconnects}`)}`);
      // A polling client of a surviving node never drops. Its GET may have been carried by
      // the victim at the kill: nginx retries it on another node, which forwards it to the
      // owner, possibly a moment before the owner saw the victim's connection close; the
      // owner waits for the first GET to end rather than take the retry for an overlap.
      // (A POST carried by the victim would not be retried: 502, a transport error. No
      // POST is in flight here: the ping interval, 60 s, is longer than the test, and the
      // clients emit nothing between their first `whoami` and the final echo.)
      const pollingOthersDropped = othersReconnected.filter((c) => c.kind === "polling");
      assert.deepEqual(pollingOthersDropped.map((c) => `#${c.i}:${c.disconnects}`), [], "polling clients of live nodes dropped");
    });
  });
}
