// Helpers for the connection state recovery suites (recovery*.test.mjs): sockets that
// reconnect on their own and remember what recovery must preserve, a publisher that
// numbers its events, and an exactly-once-in-order check of what each socket received.
//
// Every stored event carries its offset as an extra last argument (recovery on); the
// numbered events are `tick` events whose first argument is the number.

import assert from "node:assert/strict";
import { ack, ack1, waitConnect } from "./client.mjs";
import { requestChannel } from "./redis.mjs";
import { sleep, startTestapp } from "./server.mjs";
import { waitMesh, withClients } from "./cluster.mjs";

/** How the clients of these suites connect: WebSocket only, quick reconnection. */
export const RECONNECTING = {
  transports: ["websocket"],
  reconnection: true,
  reconnectionDelay: 100,
  reconnectionDelayMax: 500,
};

/**
 * A socket and what it saw: every `tick` number in arrival order, each (re)connection
 * with its `recovered` flag and id, and how many ticks came in while it was
 * reconnecting (the missed events the server sends before its CONNECT answer).
 */
export class Tracked {
  constructor(socket, label) {
    this.socket = socket;
    this.label = label;
    this.ticks = [];
    this.noOffset = [];
    this.connects = [];
    this.drops = [];
    this.replayed = 0;
    this.reconnecting = false;
    // Ticks and (re)connections in arrival order, for failure messages.
    this.timeline = [];
    // The node a session is on: the prefix of its sid (remembered, the sid is gone at disconnect).
    let node = "?";
    socket.on("tick", (...args) => {
      const [n, offset] = args;
      this.ticks.push(n);
      this.timeline.push(this.reconnecting ? `${n}(replayed)` : n);
      if (this.reconnecting) this.replayed += 1;
      if (args.length !== 2 || typeof offset !== "string" || offset === "") this.noOffset.push(args);
    });
    socket.on("connect", () => {
      this.reconnecting = false;
      this.connects.push({ recovered: socket.recovered, id: socket.id });
      node = String(socket.io.engine?.id ?? "?").split("~")[0];
      this.timeline.push(`[connect to ${node} recovered=${socket.recovered}]`);
    });
    socket.on("disconnect", (reason) => {
      this.reconnecting = true;
      this.drops.push(reason);
      this.timeline.push(`[${reason} from ${node}]`);
    });
    if (socket.connected) this.connects.push({ recovered: socket.recovered, id: socket.id });
  }

  get firstId() {
    return this.connects[0]?.id;
  }

  /** Resolves once the socket has connected `count` times in all (bounded). */
  async connectedTimes(count, ms = 15_000) {
    const deadline = Date.now() + ms;
    while (this.connects.length < count || !this.socket.connected) {
      if (Date.now() > deadline) {
        throw new Error(
          `${this.label}: ${this.connects.length} connections (wanted ${count}), connected=${this.socket.connected}, ` +
            `drops ${JSON.stringify(this.drops)} after ${ms} ms`,
        );
      }
      await sleep(20);
    }
  }
}

/** Opens `count` reconnecting sockets on `url`, waits until all are connected, tracks them. */
export async function connectTracked(clients, count, label, opts = {}) {
  const sockets = Array.from({ length: count }, () => clients.socket("/", { ...RECONNECTING, ...opts }));
  await Promise.all(sockets.map((s, i) => waitConnect(s, `${label} #${i}`, 15_000)));
  return sockets.map((s, i) => new Tracked(s, `${label} #${i} (${s.id})`));
}

/**
 * Emits `broadcast` {to: targets(n), event: "tick", args: [n]} every `everyMs` through
 * one of `sockets` (the current one), n = 0, 1, 2, ... A publisher socket that is not
 * connected when its turn comes is an error of the test setup, reported by `stop()`.
 */
export class Publisher {
  constructor(sockets, targets, everyMs = 20) {
    this.sockets = sockets;
    this.targets = typeof targets === "function" ? targets : () => targets;
    this.everyMs = everyMs;
    this.current = 0;
    this.n = 0;
    this.errors = [];
    this.timer = null;
  }

  start() {
    if (this.timer) return;
    this.timer = setInterval(() => {
      const socket = this.sockets[this.current];
      if (!socket.connected) {
        this.errors.push(`publisher #${this.current} not connected at tick ${this.n}`);
        return;
      }
      socket.emit("broadcast", { to: this.targets(this.n), event: "tick", args: [this.n] });
      this.n += 1;
    }, this.everyMs);
  }

  /**
   * Stops emitting; resolves once the server has handled every broadcast sent so far
   * (an acked echo on the same socket comes after them) and, across nodes, a moment
   * later, so a switch of publisher node cannot reorder the numbered events.
   */
  async pause() {
    clearInterval(this.timer);
    this.timer = null;
    await ack(this.sockets[this.current], "echo", "sync");
    await sleep(150);
  }

  /** Goes on through publisher socket `i` (waits until it is connected). */
  async switchTo(i) {
    await this.pause();
    await waitConnect(this.sockets[i], `publisher #${i}`, 15_000);
    this.current = i;
    this.start();
  }

  /** Stops for good; returns how many events were emitted. */
  async stop() {
    await this.pause();
    assert.deepEqual(this.errors, [], "publisher");
    return this.n;
  }
}

/** Null if `ticks` is exactly 0..n-1, else what is wrong with it. */
export function sequenceProblem(ticks, n) {
  if (ticks.length === n && ticks.every((v, i) => v === i)) return null;
  const seen = new Map();
  for (const t of ticks) seen.set(t, (seen.get(t) ?? 0) + 1);
  const missing = [];
  for (let i = 0; i < n; i++) if (!seen.has(i)) missing.push(i);
  const duplicated = [...seen].filter(([, c]) => c > 1).map(([t, c]) => `${t}x${c}`);
  const inversion = ticks.findIndex((v, i) => i > 0 && v <= ticks[i - 1]);
  const unexpected = ticks.filter((t) => !(Number.isInteger(t) && t >= 0 && t < n));
  return (
    `got ${ticks.length} of ${n} events; missing ${missing.length} [${missing.slice(0, 20)}]; ` +
    `duplicated [${duplicated.slice(0, 20)}]; unexpected [${unexpected.slice(0, 10)}]; ` +
    (inversion > 0 ? `first out of order at #${inversion}: ${ticks[inversion]} after ${ticks[inversion - 1]}` : "in order")
  );
}

/**
 * Waits (bounded) until every tracked socket has as many ticks as were emitted, then
 * asserts each got every event exactly once, in order, each with its offset.
 */
export async function assertEveryTickOnce(tracked, n, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (tracked.some((t) => t.ticks.length < n) && Date.now() < deadline) await sleep(50);
  const problems = tracked
    .map((t) => [t, sequenceProblem(t.ticks, n)])
    .filter(([, p]) => p !== null)
    .map(([t, p]) => `${t.label}: ${p}; around it: ${around(t, n)}`);
  assert.deepEqual(problems, [], `${problems.length} of ${tracked.length} sockets did not get every event exactly once in order`);
  const noOffset = tracked.filter((t) => t.noOffset.length > 0).map((t) => `${t.label}: ${JSON.stringify(t.noOffset.slice(0, 3))}`);
  assert.deepEqual(noOffset, [], "stored events carry their offset as last argument");
}

/** The part of a socket's timeline around its first missing, repeated or misplaced tick. */
export function around(t, n) {
  let expected = 0;
  let at = t.timeline.length;
  for (const [i, e] of t.timeline.entries()) {
    if (typeof e === "string" && !e.endsWith("(replayed)")) continue;
    if (parseInt(e, 10) !== expected) {
      at = i;
      break;
    }
    expected += 1;
  }
  if (at === t.timeline.length && expected < n) return `ends after ${expected - 1}: ${JSON.stringify(t.timeline.slice(-8))}`;
  return JSON.stringify(t.timeline.slice(Math.max(0, at - 6), at + 6));
}

/** The socket's rooms (a `join` of nothing answers them), sorted. */
export async function roomsOf(socket) {
  return [...(await ack1(socket, "join", []))].sort();
}

/**
 * Starts one recovery-enabled test app per id on `redis` (recovery window `recoveryMs`),
 * on the given ports (0: any), and waits until the cluster is meshed with `peers`.
 */
export async function startRecoveryNodes(redis, ids, { recoveryMs, ports = [], peers = [] }) {
  const nodes = await Promise.all(
    ids.map((nodeId, i) =>
      startTestapp({ redis: redis.url, nodeId, port: ports[i] ?? 0, extraArgs: ["--recovery", String(recoveryMs)] }),
    ),
  );
  await redis.waitSubscribers(requestChannel("/"), peers.length + ids.length);
  const handles = nodes.map((node, i) => withClients(node, ids[i]));
  await waitMesh([...peers, ...handles]);
  return handles;
}
