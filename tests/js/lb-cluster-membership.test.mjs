// Cluster membership through Redis: every node sees the others; a node id that a live
// node holds cannot be used twice (the second node refuses to start); a node that shuts
// down leaves the view at once, one that dies when its registration expires; a node
// restarted right after a crash takes its stale registration over.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import net from "node:net";
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

// A node that just joined is not in its peers' views until their next refresh (every
// quarter of the registration's TTL): they look its address up in Redis. A burst of
// requests for its sessions (a balancer spreading the first requests of many new
// clients) must all be forwarded: the lookups of one owner share one Redis GET, so the
// budget that bounds lookups for forged sids is not spent by real ones.
function openConnection(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: "127.0.0.1" });
    sock.once("connect", () => resolve(sock));
    sock.once("error", reject);
  });
}

/** Writes `request` on `sock` and resolves with "<status> <body>" once the server closes. */
function rawExchange(sock, request) {
  return new Promise((resolve, reject) => {
    let data = "";
    sock.setEncoding("latin1");
    sock.on("data", (c) => (data += c));
    sock.once("error", reject);
    sock.once("close", () => {
      const [head, body = ""] = data.split("\r\n\r\n");
      resolve(`${head.split(" ")[1]} ${body}`);
    });
    sock.write(request);
  });
}

for (const kind of NODE_KINDS) {
  describe(`a burst of requests for a node that just joined (${kind.name})`, () => {
    const SESSIONS = 300;
    let cluster;
    before(async () => {
      // A long TTL: n1 does not refresh its view during the test, so it must look n2 up.
      cluster = await startCluster({ bin: kind.bin, count: 1, args: ["--membership-ttl", "60000"] });
    });
    after(async () => {
      await cluster?.stop();
    });

    test(`${SESSIONS} first POSTs for the new node's sessions, at once through an old node, are all forwarded`, async () => {
      const n1 = cluster.nodes[0];
      const n2 = await cluster.startNode("n2");
      cluster.nodes.push(n2);
      const engine = "/socket.io/?EIO=4&transport=polling";
      const sids = await Promise.all(
        Array.from({ length: SESSIONS }, async () => {
          const res = await fetch(`${n2.url}${engine}`);
          const body = await res.text();
          assert.equal(res.status, 200, body);
          return JSON.parse(body.slice(1)).sid;
        }),
      );
      for (const sid of sids) assert.match(sid, /^n2~/);
      // Every connection open first, then every request written in one go, so they reach
      // n1 together, as a balancer's do under load.
      const port = new URL(n1.url).port;
      const conns = await Promise.all(sids.map(() => openConnection(port)));
      const answers = await Promise.all(
        sids.map((sid, i) => {
          const path = `${engine}&sid=${encodeURIComponent(sid)}`;
          return rawExchange(conns[i], `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n40`);
        }),
      );
      const refused = answers.filter((a) => a !== "200 ok");
      assert.deepEqual(refused, [], `${refused.length} of ${SESSIONS} POSTs refused`);
      const m = await metrics(n1);
      assert.equal(m['shoal_forwarded_requests_total{transport="polling"}'], SESSIONS, "every POST went through n1 to n2");
      assert.equal(m.shoal_engine_errors_total ?? 0, 0, "n1 answered no request itself with an error");
    });
  });
}
