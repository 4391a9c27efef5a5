// Cluster membership through Redis: every node sees the others; a node id that a live
// node holds cannot be used twice (the second node refuses to start); a node that shuts
// down leaves the view at once, one that dies when its registration expires; a node
// restarted right after a crash takes its stale registration over.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sleep } from "./lib/server.mjs";
import { metrics, startCluster, NODE_KINDS } from "./lib/lb.mjs";

const TTL_MS = 2000;

async function view(node) {
  return (await metrics(node)).shoal_cluster_nodes;
}

async function waitView(nodes, expected, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const seen = await Promise.all(nodes.map(view));
    if (seen.every((n) => n === expected)) return;
    if (Date.now() > deadline) assert.fail(`views ${JSON.stringify(seen)}, expected ${expected} after ${ms} ms`);
    await sleep(100);
  }
}

for (const kind of NODE_KINDS) {
  describe(`cluster membership (${kind.name})`, () => {
    let cluster;
    before(async () => {
      cluster = await startCluster({ bin: kind.bin, count: 3, args: ["--membership-ttl", String(TTL_MS)] });
    });
    after(async () => {
      await cluster?.stop();
    });

    test("every node sees the three", async () => {
      await waitView(cluster.nodes, 3, TTL_MS);
    });

    test("a node id held by a live node is refused at start-up", async () => {
      await assert.rejects(cluster.startNode("n1"), /node id "n1" is already in use in the cluster by a running node/);
      await waitView(cluster.nodes, 3, TTL_MS);
    });

    test("a node that shuts down leaves at once; one that dies, when its registration expires", async () => {
      const [n1, n2, n3] = cluster.nodes;
      await n3.stop();
      await waitView([n1, n2], 2, TTL_MS / 2 + 500);

      await n2.kill();
      // A restart right after the crash takes the stale registration over.
      const again = await cluster.startNode("n2");
      cluster.nodes.push(again);
      await waitView([n1, again], 2, TTL_MS);
      assert.match(again.proc.log, /took over the registration/);

      await again.kill();
      const killedAt = Date.now();
      await waitView([n1], 1, 2 * TTL_MS);
      assert.ok(Date.now() - killedAt >= TTL_MS / 2, "left only once its registration expired");
    });
  });
}
