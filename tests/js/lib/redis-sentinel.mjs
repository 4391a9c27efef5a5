// A private Redis Sentinel setup for one test file: a primary, one replica of it
// (`--replicaof`), and one sentinel (`redis-server sentinel.conf --sentinel`) that
// monitors the primary as master "m" with a quorum of 1, in a temp dir, all on free
// ports. The primary can be killed with SIGKILL; the sentinel then promotes the replica
// (down-after-milliseconds 1000, failover-timeout 5000).
//
// A missing redis-server is an error, never a skip: scripts/test.sh installs it (Debian's
// redis-server runs as a sentinel with `--sentinel`).

import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { RedisServer, REDIS_BIN, requireRedis } from "./redis.mjs";
import { freePort, sleep } from "./server.mjs";

export const MASTER = "m";
export const DOWN_AFTER_MS = 1000;

/** A sentinel: a redis-server started with a config file (which it rewrites) and `--sentinel`. */
class SentinelNode extends RedisServer {
  constructor(port, dir, primaryPort) {
    super(port);
    this.conf = path.join(dir, `sentinel-${port}.conf`);
    fs.writeFileSync(
      this.conf,
      [
        `port ${port}`,
        "bind 127.0.0.1",
        `dir ${dir}`,
        `sentinel monitor ${MASTER} 127.0.0.1 ${primaryPort} 1`,
        `sentinel down-after-milliseconds ${MASTER} ${DOWN_AFTER_MS}`,
        `sentinel failover-timeout ${MASTER} 5000`,
        `sentinel parallel-syncs ${MASTER} 1`,
        "",
      ].join("\n"),
    );
  }

  spawnOnce() {
    this.exited = false;
    const child = spawn(REDIS_BIN, [this.conf, "--sentinel"], { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    this.exitPromise = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        if (this.child === child) this.exited = true;
        resolve({ code, signal });
      });
    });
    const keep = (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-8192);
      if (process.env.SHOAL_TEST_VERBOSE) process.stderr.write(`[sentinel:${this.port}] ${chunk}`);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
  }

  /** The port of the primary this sentinel names now (`SENTINEL get-master-addr-by-name`). */
  async primaryPort() {
    const reply = await this.command("SENTINEL", "get-master-addr-by-name", MASTER);
    return Number(reply[1]);
  }
}

/** Polls `check` (an async predicate) every 50 ms until true; throws `what` after `ms`. */
async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err.message;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not after ${ms} ms${last ? ` (${last})` : ""}`);
    await sleep(50);
  }
}

/**
 * Primary, replica (synced) and sentinel (which knows the replica), started.
 * Returns { primary, replica, sentinel, url(extraSentinels), waitPromoted(ms), stop() }.
 */
export async function startSentinelSetup() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shoal-sentinel-"));
  const setup = { dir, servers: [] };
  setup.stop = async () => {
    await Promise.all(setup.servers.map((s) => s.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    requireRedis();
    // In the temp dir: a replica's full sync writes dump.rdb in its working directory.
    const primary = new RedisServer(await freePort(), ["--dir", dir]);
    setup.servers.push(primary);
    await primary.start();
    const replica = new RedisServer(await freePort(), ["--dir", dir, "--replicaof", "127.0.0.1", String(primary.port)]);
    setup.servers.push(replica);
    await replica.start();
    // The sentinel learns the replicas from the primary's INFO at once, then every 10 s:
    // start it once the replica is attached.
    await until(async () => (await primary.command("INFO", "replication")).includes("connected_slaves:1"), 10_000, "replica attached");
    await until(async () => (await replica.command("INFO", "replication")).includes("master_link_status:up"), 10_000, "replica in sync");
    const sentinel = new SentinelNode(await freePort(), dir, primary.port);
    setup.servers.push(sentinel);
    await sentinel.start();
    await until(async () => {
      const replicas = await sentinel.command("SENTINEL", "replicas", MASTER);
      return replicas.length === 1 && !String(replicas[0]).includes("disconnected");
    }, 15_000, "sentinel knows the replica");
    Object.assign(setup, { primary, replica, sentinel });
    /** The URL shoal takes; `extra` sentinel addresses are listed before the real one. */
    setup.url = (extra = []) => `redis+sentinel://${[...extra, `127.0.0.1:${sentinel.port}`].join(",")}/${MASTER}`;
    /** Waits until the sentinel names the replica as the primary; returns when it did. */
    setup.waitPromoted = async (ms = 20_000) => {
      await until(async () => (await sentinel.primaryPort()) === replica.port, ms, "sentinel promotes the replica");
      return Date.now();
    };
    return setup;
  } catch (err) {
    await setup.stop();
    throw err;
  }
}
