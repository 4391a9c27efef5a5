// No sticky sessions: three shoal nodes behind nginx, then HAProxy, both in plain
// round-robin (the configs of deploy/). 200 polling-only clients and 200 on the default
// path (polling, then WebSocket) connect, send events with acks and receive room
// broadcasts for 20 seconds. Any request may reach any node; the node forwards it to the
// session's owner. Not one "Session ID unknown", not one unexpected disconnect, and the
// nodes' /metrics show that requests were spread over all nodes and forwarded.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { metrics, nginxStatuses, runLoad, startCluster, startHaproxy, startNginx, summary, NODE_KINDS } from "./lib/lb.mjs";

const CLIENTS_PER_KIND = 200;
const DURATION_MS = 20_000;

async function snapshot(nodes) {
  return Promise.all(nodes.map(metrics));
}

/** Per-node differences of the counters between two snapshots. */
function delta(beforeM, afterM, name) {
  return afterM.map((m, i) => (m[name] ?? 0) - (beforeM[i][name] ?? 0));
}

async function checkRoundRobin(cluster, balancer) {
  const nodes = cluster.nodes;
  const before = await snapshot(nodes);
  const r = await runLoad(balancer.url, { polling: CLIENTS_PER_KIND, upgrade: CLIENTS_PER_KIND, durationMs: DURATION_MS });
  // Read the counters while every client is still connected.
  const during = await snapshot(nodes);
  await r.close();

  const received = delta(before, during, "shoal_requests_received_total");
  const forwardedPolling = delta(before, during, 'shoal_forwarded_requests_total{transport="polling"}');
  const forwardedWs = delta(before, during, 'shoal_forwarded_requests_total{transport="websocket"}');
  const servedForPeers = delta(before, during, 'shoal_requests_served_total{from="peer"}');
  const failures = ["unknown_owner", "unreachable", "timeout", "broken"].map((reason) =>
    delta(before, during, `shoal_forward_failures_total{reason="${reason}"}`).reduce((a, b) => a + b, 0));
  const engineErrors = delta(before, during, "shoal_engine_errors_total");
  const pipes = during.map((m) => m.shoal_forwarded_websockets ?? 0);
  const stats = { received, forwardedPolling, forwardedWs, servedForPeers, pipes, failures, engineErrors };
  console.log(summary(balancer.name, r, stats));

  assert.equal(r.connectErrors.length, 0, `connect errors: ${r.connectErrors.slice(0, 5).join("; ")}`);
  assert.deepEqual(r.disconnects, [], "no client may be disconnected");
  assert.deepEqual(r.echoFailures.slice(0, 5), [], `${r.echoFailures.length} acks failed`);
  assert.equal(r.upgraded, CLIENTS_PER_KIND, "every default-path client upgraded to WebSocket");
  // Every echo sent was answered, and every client kept its session busy for the whole
  // run: the test's timers fire every 100 ms (echoes) and 1 s (rooms) and drift on a loaded
  // machine, so how many were sent is bounded loosely; what was sent is checked exactly.
  assert.equal(r.echoes, r.echoSent, `${r.echoSent - r.echoes} of ${r.echoSent} echoes unanswered`);
  const quiet = r.clients.filter((c) => (r.echoesOf.get(c.i) ?? 0) < (DURATION_MS / 2000) / 2);
  assert.deepEqual(quiet.map((c) => c.i).slice(0, 5), [], `${quiet.length} clients had under ${(DURATION_MS / 2000) / 2} echoes answered`);
  assert.ok(r.roomSent >= 10 * (DURATION_MS / 1000) * 0.5, `only ${r.roomSent} room broadcasts sent`);
  assert.equal(r.roomMissing, 0, "every room member got every room broadcast");
  assert.equal(engineErrors.reduce((a, b) => a + b, 0), 0, "no Engine.IO error answer (no Session ID unknown)");
  assert.deepEqual(failures, [0, 0, 0, 0], "no forwarding failed");

  // Spread: every node received a fair share of the balancer's requests...
  const total = received.reduce((a, b) => a + b, 0);
  for (const [i, n] of received.entries()) {
    assert.ok(n > total * 0.2, `node ${nodes[i].id} received ${n} of ${total} requests`);
  }
  // ...and, owning only a third of the sessions, forwarded most of them to the owners.
  const forwarded = forwardedPolling.reduce((a, b) => a + b, 0);
  assert.ok(forwarded > total * 0.4, `only ${forwarded} of ${total} requests forwarded`);
  for (const [i, n] of servedForPeers.entries()) assert.ok(n > 0, `node ${nodes[i].id} served nothing for its peers`);
  assert.ok(forwardedWs.reduce((a, b) => a + b, 0) > CLIENTS_PER_KIND / 3, `WebSocket upgrades forwarded: ${forwardedWs}`);
  assert.ok(pipes.reduce((a, b) => a + b, 0) > CLIENTS_PER_KIND / 3, `piped WebSockets open: ${pipes}`);
  for (const node of nodes) assert.ok(r.nodes[node.id] > 0, `no session on ${node.id}`);
  return r;
}

for (const kind of NODE_KINDS) {
  describe(`round-robin load balancing without sticky sessions (${kind.name})`, () => {
    let cluster;
    before(async () => {
      cluster = await startCluster({ bin: kind.bin, count: 3, args: ["--trusted-proxies", "127.0.0.1"] });
    });
    after(async () => {
      await cluster?.stop();
    });

    test("behind nginx: 200 polling + 200 upgrading clients for 20 s", { timeout: 90_000 }, async () => {
      const nginx = await startNginx("shoal-round-robin.conf", cluster.nodes);
      try {
        await checkRoundRobin(cluster, nginx);
        const statuses = nginxStatuses(nginx);
        const bad = Object.entries(statuses).filter(([s]) => !["200", "101"].includes(s));
        assert.deepEqual(bad, [], `nginx answered ${JSON.stringify(statuses)}`);
      } finally {
        await nginx.stop();
      }
    });

    test("behind HAProxy: 200 polling + 200 upgrading clients for 20 s", { timeout: 90_000 }, async () => {
      const haproxy = await startHaproxy("shoal-round-robin.cfg", cluster.nodes);
      try {
        await checkRoundRobin(cluster, haproxy);
      } finally {
        await haproxy.stop();
      }
    });
  });
}
