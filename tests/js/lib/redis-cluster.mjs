// A private Redis Cluster for one test file: `primaries` primaries and as many replicas
// (one per primary), each a redis-server on a free port with cluster mode on and no
// persistence, joined with `redis-cli --cluster create`. A primary can be killed with
// SIGKILL; its replica is then promoted by the cluster itself (cluster-node-timeout).
//
// A missing redis-server or redis-cli is an error, never a skip: scripts/test.sh installs them.

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { RedisServer, REDIS_BIN } from "./redis.mjs";
import { freePort, sleep } from "./server.mjs";

export const REDIS_CLI = process.env.REDIS_CLI ?? "redis-cli";
/** Milliseconds a primary may be silent before its replica takes over. */
export const NODE_TIMEOUT_MS = 1500;

/** One cluster-enabled redis-server: a RedisServer with the cluster flags, its files in `dir`. */
class ClusterNode extends RedisServer {
  constructor(port, dir) {
    super(port, [
      "--cluster-enabled", "yes", "--cluster-config-file", `nodes-${port}.conf`,
      "--cluster-node-timeout", String(NODE_TIMEOUT_MS), "--dir", dir,
    ]);
    this.dir = dir;
  }
}

export class RedisCluster {
  constructor(nodes, dir) {
    this.nodes = nodes;
    this.dir = dir;
  }

  /** `127.0.0.1:p1,127.0.0.1:p2,...` of every node (seeds). */
  get hosts() {
    return this.nodes.map((n) => `127.0.0.1:${n.port}`).join(",");
  }

  /** The URL shoal takes: `redis+cluster://127.0.0.1:p1,...`. */
  get url() {
    return `redis+cluster://${this.hosts}`;
  }

  /** The node serving `slot` as primary, from CLUSTER SLOTS asked of a live node. */
  async primaryOf(slot) {
    for (const node of this.nodes) {
      if (node.exited) continue;
      try {
        const ranges = await node.command("CLUSTER", "SLOTS");
        for (const [start, end, primary] of ranges) {
          if (slot >= start && slot <= end) return this.nodes.find((n) => n.port === Number(primary[1]));
        }
      } catch {
        // try another node
      }
    }
    throw new Error(`no live node knows who serves slot ${slot}`);
  }

  /** The slot of a key or channel (CLUSTER KEYSLOT). */
  async slotOf(key) {
    const node = this.nodes.find((n) => !n.exited);
    return node.command("CLUSTER", "KEYSLOT", key);
  }

  /** Waits until every live node reports cluster_state:ok and all slots served. */
  async waitHealthy(ms = 20_000) {
    const deadline = Date.now() + ms;
    let last = "";
    for (;;) {
      let ok = true;
      for (const node of this.nodes) {
        if (node.exited) continue;
        try {
          const info = await node.command("CLUSTER", "INFO");
          last = `${node.port}: ${info.split("\r\n").filter((l) => /state|slots_ok|slots_fail/.test(l)).join(" ")}`;
          if (!/cluster_state:ok/.test(info) || !/cluster_slots_ok:16384/.test(info)) ok = false;
        } catch (err) {
          ok = false;
          last = `${node.port}: ${err.message}`;
        }
      }
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`Redis Cluster not healthy after ${ms} ms (${last})`);
      await sleep(100);
    }
  }

  /** Sum of `PUBSUB SHARDNUMSUB channel` over every live node. */
  async shardNumsub(channel) {
    let total = 0;
    for (const node of this.nodes) {
      if (node.exited) continue;
      const reply = await node.command("PUBSUB", "SHARDNUMSUB", channel);
      total += Number(reply[1]);
    }
    return total;
  }

  /** Waits until exactly `n` connections subscribe to the sharded `channel`. */
  async waitShardSubscribers(channel, n, ms = 15_000) {
    const deadline = Date.now() + ms;
    let last;
    for (;;) {
      try {
        last = await this.shardNumsub(channel);
        if (last === n) return;
      } catch (err) {
        last = err.message;
      }
      if (Date.now() > deadline) throw new Error(`SHARDNUMSUB ${channel}: expected ${n}, still ${last} after ${ms} ms`);
      await sleep(100);
    }
  }

  async stop() {
    await Promise.all(this.nodes.map((n) => n.stop()));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Starts `primaries` primaries and `primaries * replicasPerPrimary` replicas on free
 * ports and creates the cluster. Resolves once every slot is served.
 */
export async function startRedisCluster({ primaries = 3, replicasPerPrimary = 1 } = {}) {
  for (const bin of [REDIS_BIN, REDIS_CLI]) {
    const probe = spawnSync(bin, ["--version"], { encoding: "utf8" });
    if (probe.error || probe.status !== 0) {
      throw new Error(`${bin} not runnable (${probe.error?.message ?? probe.stderr}); install redis-server and redis-tools`);
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shoal-redis-cluster-"));
  const count = primaries * (1 + replicasPerPrimary);
  const nodes = [];
  for (let i = 0; i < count; i++) nodes.push(new ClusterNode(await freePort(), dir));
  const cluster = new RedisCluster(nodes, dir);
  try {
    await Promise.all(nodes.map((n) => n.start()));
    const create = spawnSync(
      REDIS_CLI,
      ["--cluster", "create", ...nodes.map((n) => `127.0.0.1:${n.port}`), "--cluster-replicas", String(replicasPerPrimary), "--cluster-yes"],
      { encoding: "utf8", timeout: 60_000 },
    );
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed:\n${create.stdout}\n${create.stderr}`);
    await cluster.waitHealthy();
    // Replicas must have synced before a failover can promote them.
    await waitReplicasSynced(cluster, replicasPerPrimary * primaries);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

async function waitReplicasSynced(cluster, expected, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    let synced = 0;
    for (const node of cluster.nodes) {
      const info = await node.command("INFO", "replication");
      if (/role:slave/.test(info) && /master_link_status:up/.test(info)) synced++;
    }
    if (synced >= expected) return;
    if (Date.now() > deadline) throw new Error(`only ${synced} of ${expected} replicas in sync after ${ms} ms`);
    await sleep(100);
  }
}
