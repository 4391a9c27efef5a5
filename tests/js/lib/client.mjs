// Client-side helpers shared by the suites: the three transport configurations, a tracker
// that closes every socket a test opened, promise helpers with bounded waits, and a
// recorder of received events.

import { io, Manager } from "socket.io-client";

/** The configurations every suite loops over. */
export const TRANSPORTS = [
  { name: "polling", opts: { transports: ["polling"] } },
  { name: "websocket", opts: { transports: ["websocket"] } },
  // The client's default: HTTP long-polling first, then upgrade to WebSocket.
  { name: "upgrade", opts: {} },
];

export const WAIT_MS = 5000;

/**
 * How late, at most, the answer to one of the node's timers (an ack timeout, the connect
 * timeout, the request body timeout) may arrive after the timer's due time, as seen by a
 * client on the same loaded 2-core machine: tokio's timer fires within its 1 ms slot, the
 * rest is scheduling of the node's and the test's threads and a loopback round trip.
 * Timing tests assert [timeout, timeout + TIMER_SLACK_MS]; a lower bound needs the start
 * taken before the node could start its timer, the upper one after (see each test).
 * Measured on this machine (2 cores), each test run 5-10 times: idle (load 2-4) at most
 * 11 ms late; with four busy loops beside them (load 5) at most 22 ms; with six (load 8)
 * the 400 ms ack timeout answered at most 33.5 ms late, the 300 ms connect timeout
 * closed at most 25 ms late, the 400 ms body timeout at most 22 ms. 150 ms is 4.5 times
 * the worst.
 */
export const TIMER_SLACK_MS = 150;

/**
 * Creates sockets and managers for one server and one transport configuration, and
 * remembers them so that `closeAll()` (call it in `after`/`afterEach`) closes them all.
 */
export class Clients {
  constructor(url, transportOpts = {}) {
    this.url = url;
    this.transportOpts = transportOpts;
    this.open = new Set();
  }

  /** A new socket on its own Manager; no reconnection unless asked. */
  socket(nsp = "/", opts = {}) {
    const socket = io(this.url + nsp, {
      forceNew: true,
      reconnection: false,
      ...this.transportOpts,
      ...opts,
    });
    this.open.add(socket.io);
    return socket;
  }

  /** `socket()` and wait until it is connected. */
  async connect(nsp = "/", opts = {}) {
    const socket = this.socket(nsp, opts);
    await waitConnect(socket, `connect to ${nsp}`);
    return socket;
  }

  /** A Manager whose `.socket(nsp)` multiplexes namespaces over one session. */
  manager(opts = {}) {
    const manager = new Manager(this.url, {
      reconnection: false,
      ...this.transportOpts,
      ...opts,
    });
    this.open.add(manager);
    return manager;
  }

  closeAll() {
    for (const manager of this.open) {
      for (const socket of Object.values(manager.nsps)) socket.disconnect();
      manager._close?.();
      manager.engine?.close();
    }
    this.open.clear();
  }
}

/** Resolves when `socket` is connected; rejects on connect_error or after `ms`. */
export function waitConnect(socket, what = "connect", ms = WAIT_MS) {
  if (socket.connected) return Promise.resolve(socket);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${what}: not connected after ${ms} ms`));
    }, ms);
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err) => {
      cleanup();
      reject(new Error(`${what}: connect_error ${err?.message} ${JSON.stringify(err?.data)}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    };
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/** Resolves with the connect_error; rejects if the socket connects instead. */
export function waitConnectError(socket, what = "connect_error", ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${what}: no connect_error after ${ms} ms`));
    }, ms);
    const onConnect = () => {
      cleanup();
      reject(new Error(`${what}: expected connect_error, but the socket connected`));
    };
    const onError = (err) => {
      cleanup();
      resolve(err);
    };
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    };
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/** Resolves with the arguments of the next `event` on `emitter` (as an array). */
export function waitEvent(emitter, event, what = event, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`${what}: no "${event}" within ${ms} ms`));
    }, ms);
    const listener = (...args) => {
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(args);
    };
    emitter.on(event, listener);
  });
}

/** Resolves with the disconnect reason of `socket`. */
export async function waitDisconnect(socket, what = "disconnect", ms = WAIT_MS) {
  const [reason] = await waitEvent(socket, "disconnect", what, ms);
  return reason;
}

/**
 * Emits `event` with `args` and an ack callback; resolves with ALL the arguments the
 * server acked with (normalized: binary as Buffer). Rejects after `ms`.
 */
export function ack(socket, event, ...args) {
  return ackWithin(WAIT_MS, socket, event, ...args);
}

export function ackWithin(ms, socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(ms).emit(event, ...args, (err, ...response) => {
      if (err) reject(new Error(`no ack for "${event}" within ${ms} ms (${err.message})`));
      else resolve(normalize(response));
    });
  });
}

/** Like `ack` but resolves with the first acked argument only. */
export async function ack1(socket, event, ...args) {
  const response = await ack(socket, event, ...args);
  return response[0];
}

/** Binary values of any kind (Buffer, ArrayBuffer, typed arrays) become Buffers, deeply. */
export function normalize(value) {
  if (value === null || typeof value !== "object") return value;
  if (Buffer.isBuffer(value)) return Buffer.from(value);
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (Array.isArray(value)) return value.map(normalize);
  const out = {};
  for (const [k, v] of Object.entries(value)) out[k] = normalize(v);
  return out;
}

/** Records every event a socket receives, as `[event, ...args]` (normalized). */
export class Recorder {
  constructor(socket, label = socket.id ?? "socket") {
    this.label = label;
    this.events = [];
    this.waiters = new Set();
    socket.onAny((event, ...args) => {
      this.events.push([event, ...normalize(args)]);
      for (const w of this.waiters) w();
    });
  }

  /** The argument lists of every received `event`. */
  named(event) {
    return this.events.filter((e) => e[0] === event).map((e) => e.slice(1));
  }

  /** Resolves once `predicate(this.events)` holds; rejects after `ms`. */
  until(predicate, what, ms = WAIT_MS) {
    if (predicate(this.events)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (predicate(this.events)) {
          this.waiters.delete(check);
          clearTimeout(timer);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(
          new Error(
            `${this.label}: ${what} not seen within ${ms} ms; got ${JSON.stringify(this.events)}`,
          ),
        );
      }, ms);
      this.waiters.add(check);
    });
  }
}

/** Retries `fn` until it stops throwing; rethrows its last error after `ms`. */
export async function eventually(fn, ms = WAIT_MS, intervalMs = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }
}

let counter = 0;
/** A name nobody else in this test process uses (rooms, messages). */
export function unique(prefix = "u") {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}`;
}
