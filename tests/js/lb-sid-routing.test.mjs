// The balancer configs that route on the sid's node prefix (deploy/*/shoal-sid-routing.*)
// send every request of a session straight to its owner: clients work as behind plain
// round-robin, new sessions are still spread over all nodes, and no request needs the
// forwarding hop.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { metrics, runLoad, startCluster, startHaproxy, startNginx, summary, NODE_KINDS } from "./lib/lb.mjs";

async function forwardedTotal(nodes) {
  const all = await Promise.all(nodes.map(metrics));
  return all.reduce((s, m) => s + m['shoal_forwarded_requests_total{transport="polling"}'] + m['shoal_forwarded_requests_total{transport="websocket"}'], 0);
}

for (const kind of NODE_KINDS) {
  describe(`routing on the sid's node prefix (${kind.name})`, () => {
    let cluster;
    before(async () => {
      cluster = await startCluster({ bin: kind.bin, count: 3, args: ["--trusted-proxies", "127.0.0.1"] });
    });
    after(async () => {
      await cluster?.stop();
    });

    for (const [name, start] of [
      ["nginx", () => startNginx("shoal-sid-routing.conf", cluster.nodes)],
      ["HAProxy", () => startHaproxy("shoal-sid-routing.cfg", cluster.nodes)],
    ]) {
      test(`${name}: every request goes to its owner, none is forwarded`, { timeout: 60_000 }, async () => {
        const balancer = await start();
        try {
          const before = await forwardedTotal(cluster.nodes);
          const r = await runLoad(balancer.url, { polling: 30, upgrade: 30, rooms: 3, durationMs: 5000, echoEveryMs: 1000 });
          const forwarded = (await forwardedTotal(cluster.nodes)) - before;
          await r.close();
          console.log(summary(balancer.name, r, { forwarded }));
          assert.deepEqual(r.disconnects, []);
          assert.deepEqual(r.connectErrors, []);
          assert.deepEqual(r.echoFailures, []);
          assert.equal(r.roomMissing, 0);
          assert.equal(r.upgraded, 30);
          for (const node of cluster.nodes) assert.ok(r.nodes[node.id] > 0, `no session on ${node.id}`);
          assert.equal(forwarded, 0, "no request needed forwarding");
        } finally {
          await balancer.stop();
        }
      });
    }
  });
}
