// Helpers for the cluster suites: shoal test-app nodes joined through one Redis, clients
// spread over them (mixing the three transport configurations), and delivery counting.

import assert from "node:assert/strict";
import { Clients, Recorder, TRANSPORTS, ack } from "./client.mjs";
import { requestChannel } from "./redis.mjs";
import { startTestapp } from "./server.mjs";

/**
 * Starts one shoal test app per id on `redis` (a RedisServer) and waits until the main
 * namespace of each has subscribed to the request channel (`expectedSubscribers` in all,
 * counting nodes already there), and until broadcasts flow between them and `peers` (the
 * nodes already running). Returns the handles, each with `id` and `clients(t)`.
 */
export async function startShoalNodes(redis, ids, { requestsTimeout, expectedSubscribers, peers = [] } = {}) {
  const nodes = await Promise.all(
    ids.map((nodeId) => startTestapp({ redis: redis.url, nodeId, requestsTimeout })),
  );
  await redis.waitSubscribers(requestChannel("/"), expectedSubscribers ?? ids.length);
  const handles = nodes.map((node, i) => withClients(node, ids[i]));
  await waitMesh([...peers, ...handles]);
  return handles;
}

/** Adds `id` and per-transport `Clients` (created on demand) to a server handle. */
export function withClients(node, id) {
  const byTransport = new Map();
  node.id = id;
  node.clients = (transport) => {
    if (!byTransport.has(transport.name)) byTransport.set(transport.name, new Clients(node.url, transport.opts));
    return byTransport.get(transport.name);
  };
  node.closeClients = () => {
    for (const c of byTransport.values()) c.closeAll();
  };
  return node;
}

/**
 * Connects `perNode` sockets to each node, cycling through the transports (polling,
 * websocket, upgrade), all in one fresh room `all`, each with a Recorder.
 * Returns { sockets, recs, nodeOf, all, sync(from) }.
 *
 * sync(from) broadcasts a marker to `all` from socket #from and waits until every socket
 * saw it. Messages that one node publishes reach every other node in order, and each
 * connection delivers in order, so once a socket has seen a marker sent by the same
 * socket as an earlier broadcast, it has seen that broadcast (if it was meant to).
 */
export async function spread(nodes, perNode, unique) {
  const all = unique("all");
  const placed = [];
  let k = 0;
  for (const node of nodes) {
    for (let j = 0; j < perNode; j++, k++) {
      const transport = TRANSPORTS[k % TRANSPORTS.length];
      placed.push({ node, transport });
    }
  }
  const sockets = await Promise.all(placed.map(({ node, transport }) => node.clients(transport).connect()));
  const recs = sockets.map(
    (s, i) => new Recorder(s, `socket #${i} on ${placed[i].node.id} over ${placed[i].transport.name} (${s.id})`),
  );
  for (const s of sockets) await ack(s, "join", all);
  let markers = 0;
  const sync = async (from = 0) => {
    markers += 1;
    const marker = `${all}:${markers}`;
    await ack(sockets[from], "broadcast", { to: [all], event: "marker", args: [marker] });
    await Promise.all(
      recs.map((r) => r.until((evs) => evs.some((e) => e[0] === "marker" && e[1] === marker), `marker ${marker}`)),
    );
  };
  return { sockets, recs, nodeOf: placed.map((p) => p.node), all, sync };
}

/** How many times each recorder got `event` with exactly `args`. */
export function counts(recs, event, args) {
  return recs.map((r) => r.named(event).filter((a) => isDeepEqual(a, args)).length);
}

export function isDeepEqual(a, b) {
  try {
    assert.deepEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

/** Sorts by `id` (what fetch-sockets answers with), rooms sorted: rooms are a set. */
export function bySocketId(list) {
  return list
    .map((s) => ({ ...s, rooms: [...s.rooms].sort() }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Waits until every node delivers the broadcasts of every other node in the main
 * namespace (each node has subscribed its broadcast pattern, not only its request
 * channel): one probe socket per node broadcasts until each probe socket has heard
 * from every node. Bounded by `ms`.
 */
export async function waitMesh(nodes, ms = 10_000) {
  const probes = await Promise.all(nodes.map((node) => node.clients(TRANSPORTS[1]).connect()));
  const heard = probes.map(() => new Set());
  probes.forEach((s, i) => s.on("mesh-probe", (from) => heard[i].add(from)));
  const deadline = Date.now() + ms;
  try {
    for (;;) {
      await Promise.all(probes.map((s, i) => ack(s, "broadcast", { event: "mesh-probe", args: [i] })));
      await new Promise((r) => setTimeout(r, 100));
      if (heard.every((h) => h.size === nodes.length)) return;
      if (Date.now() > deadline) {
        throw new Error(`cluster not meshed after ${ms} ms: heard ${JSON.stringify(heard.map((h) => [...h]))}`);
      }
    }
  } finally {
    for (const s of probes) s.disconnect();
  }
}
