// A private redis-server for one test file: started on a free port with no persistence,
// killed with SIGKILL (an outage, as far as its clients can tell) and restarted on the
// same port. Also a few one-shot commands over a raw RESP connection (PING, PUBSUB
// NUMSUB), so the helpers need no Redis client library.
//
// A missing redis-server is an error, never a skip: scripts/test.sh installs it.

import { spawn, spawnSync } from "node:child_process";
import net from "node:net";
import { freePort, sleep } from "./server.mjs";

export const REDIS_BIN = process.env.REDIS_SERVER ?? "redis-server";

const READY_TIMEOUT_MS = 10_000;
const LOG_TAIL_BYTES = 8 * 1024;

/** Throws, with how to install it, when redis-server cannot run. */
export function requireRedis() {
  const probe = spawnSync(REDIS_BIN, ["--version"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      `${REDIS_BIN} not runnable (${probe.error?.message ?? probe.stderr}); ` +
        "install it (Debian: apt-get install redis-server; scripts/test.sh does)",
    );
  }
}

export class RedisServer {
  /** `extraArgs`: more redis-server flags, e.g. `["--replicaof", "127.0.0.1", "6379"]`. */
  constructor(port, extraArgs = []) {
    this.port = port;
    this.extraArgs = extraArgs;
    this.url = `redis://127.0.0.1:${port}`;
    this.child = null;
    this.log = "";
  }

  /** Spawns redis-server on this.port and waits until it answers PING. */
  async start() {
    if (this.child && !this.exited) throw new Error(`redis-server on ${this.port} is already running`);
    // The port of a just-killed server may be held for a moment: retry a few times.
    let lastError;
    for (let attempt = 0; attempt < 10; attempt++) {
      this.spawnOnce();
      try {
        await this.waitReady();
        return this;
      } catch (err) {
        lastError = err;
        if (!this.exited) {
          await this.kill();
          break;
        }
        await sleep(200);
      }
    }
    throw lastError;
  }

  spawnOnce() {
    this.exited = false;
    const child = spawn(
      REDIS_BIN,
      ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", ...this.extraArgs],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.child = child;
    this.exitPromise = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        if (this.child === child) this.exited = true;
        resolve({ code, signal });
      });
    });
    const keep = (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-LOG_TAIL_BYTES);
      if (process.env.SHOAL_TEST_VERBOSE) process.stderr.write(`[redis:${this.port}] ${chunk}`);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
  }

  async waitReady() {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (this.exited) throw new Error(`redis-server on port ${this.port} exited\n${this.log}`);
      try {
        if ((await this.command("PING")) === "PONG") return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) {
        throw new Error(`redis-server on port ${this.port} not ready after ${READY_TIMEOUT_MS} ms\n${this.log}`);
      }
      await sleep(50);
    }
  }

  /** SIGKILL (kill -9): every client connection drops at once. */
  async kill() {
    if (!this.child || this.exited) return;
    this.child.kill("SIGKILL");
    await this.exitPromise;
  }

  /** Starts it again on the same port (after kill()). */
  async restart() {
    await this.kill();
    return this.start();
  }

  /** SIGTERM, then SIGKILL. Safe to call twice. */
  async stop() {
    if (!this.child || this.exited) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 3000);
    await this.exitPromise;
    clearTimeout(timer);
  }

  /** One command on a fresh connection; resolves with the decoded reply. */
  command(...args) {
    return redisCommand(this.port, args);
  }

  /** `PUBSUB NUMSUB channel` as a number. */
  async numsub(channel) {
    const reply = await this.command("PUBSUB", "NUMSUB", channel);
    return Number(reply[1]);
  }

  /** Waits until exactly `n` connections subscribe to `channel` (bounded). */
  async waitSubscribers(channel, n, ms = 10_000) {
    const deadline = Date.now() + ms;
    let last;
    for (;;) {
      try {
        last = await this.numsub(channel);
        if (last === n) return;
      } catch (err) {
        last = err.message;
      }
      if (Date.now() > deadline) {
        throw new Error(`PUBSUB NUMSUB ${channel}: expected ${n} subscribers, still ${last} after ${ms} ms`);
      }
      await sleep(50);
    }
  }
}

/** Starts a fresh redis-server on a free port. */
export async function startRedis() {
  requireRedis();
  const server = new RedisServer(await freePort());
  return server.start();
}

/** The request channel of a namespace, as the official adapter names it. */
export function requestChannel(nsp = "/", key = "socket.io") {
  return `${key}-request#${nsp}#`;
}

// ---- a minimal RESP client (one command per connection) ------------------------------

function encodeCommand(args) {
  let out = `*${args.length}\r\n`;
  for (const a of args) {
    const s = String(a);
    out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
  }
  return out;
}

/** Parses one RESP reply from `buf` at `pos`; returns [value, nextPos] or null if incomplete. */
function parseReply(buf, pos = 0) {
  const eol = buf.indexOf("\r\n", pos);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString("utf8", pos + 1, eol);
  const next = eol + 2;
  switch (type) {
    case "+":
      return [line, next];
    case "-":
      return [new Error(line), next];
    case ":":
      return [Number(line), next];
    case "$": {
      const len = Number(line);
      if (len < 0) return [null, next];
      if (buf.length < next + len + 2) return null;
      return [buf.toString("utf8", next, next + len), next + len + 2];
    }
    case "*": {
      const n = Number(line);
      if (n < 0) return [null, next];
      const items = [];
      let p = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, p);
        if (!r) return null;
        items.push(r[0]);
        p = r[1];
      }
      return [items, p];
    }
    default:
      throw new Error(`unexpected RESP reply type ${JSON.stringify(type)}`);
  }
}

function redisCommand(port, args, ms = 2000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: "127.0.0.1" });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`redis ${args[0]}: no reply within ${ms} ms`));
    }, ms);
    const done = (fn, v) => {
      clearTimeout(timer);
      sock.destroy();
      fn(v);
    };
    sock.on("connect", () => sock.write(encodeCommand(args)));
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      let parsed;
      try {
        parsed = parseReply(buf);
      } catch (err) {
        return done(reject, err);
      }
      if (!parsed) return;
      if (parsed[0] instanceof Error) done(reject, parsed[0]);
      else done(resolve, parsed[0]);
    });
    sock.on("error", (err) => done(reject, err));
  });
}
