// Starts and stops the Rust binaries that the end-to-end suites drive.
//
// `startTestapp()` spawns `target/release/examples/testapp` (the Socket.IO test app of
// crates/shoal/examples/testapp.rs) and resolves once it printed `LISTENING <port>`.
// `startNodePeer()` spawns the Node.js Socket.IO server of peers/node-server.mjs the same way.
// `startShoal()` spawns the `shoal` node binary (demo page) and resolves once its port
// accepts TCP connections. Both return a handle whose `stop()` sends SIGTERM, waits for
// the exit, and falls back to SIGKILL.
//
// A missing binary is an error, never a skip: scripts/test.sh builds them first.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const TARGET_DIR = process.env.CARGO_TARGET_DIR
  ? path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR)
  : path.join(REPO_ROOT, "target");

export const TESTAPP_BIN =
  process.env.SHOAL_TESTAPP ?? path.join(TARGET_DIR, "release", "examples", "testapp");
export const SHOAL_BIN = process.env.SHOAL_BIN ?? path.join(TARGET_DIR, "release", "shoal");
// The same node as an axum app embedding the library (crates/shoal-server/examples/axum_cluster.rs).
export const AXUM_CLUSTER_BIN =
  process.env.SHOAL_AXUM_CLUSTER ?? path.join(TARGET_DIR, "release", "examples", "axum_cluster");
const NODE_PEER_SCRIPT = path.join(REPO_ROOT, "tests", "js", "peers", "node-server.mjs");

const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;
// Kept for error messages: the last bytes a server wrote to stderr/stdout.
const LOG_TAIL_BYTES = 16 * 1024;

/** A TCP port that was free a moment ago (bind to 0, read it, close). */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function requireBinary(bin, buildHint) {
  if (!existsSync(bin)) {
    throw new Error(`binary not found: ${bin}\nbuild it first: ${buildHint}`);
  }
}

class ServerProcess {
  constructor(name, bin, args) {
    this.name = name;
    this.bin = bin;
    this.args = args;
    this.log = "";
    this.exited = false;
    this.exitInfo = null;
    this.child = spawn(bin, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { RUST_BACKTRACE: "1", ...process.env },
    });
    this.exitPromise = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => {
        this.exited = true;
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
    this.child.on("error", (err) => {
      this.log += `\n[spawn error] ${err.message}\n`;
    });
    const keep = (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-LOG_TAIL_BYTES);
      if (process.env.SHOAL_TEST_VERBOSE) process.stderr.write(`[${this.name}] ${chunk}`);
    };
    this.child.stderr.on("data", keep);
    this.child.stdout.on("data", keep);
  }

  describe() {
    return `${this.name} (${this.bin} ${this.args.join(" ")})`;
  }

  failure(msg) {
    const exit = this.exited ? ` exited with ${JSON.stringify(this.exitInfo)};` : "";
    return new Error(`${this.describe()}:${exit} ${msg}\n--- server output (tail) ---\n${this.log}`);
  }

  /** SIGTERM, then SIGKILL if it does not exit in time. Safe to call twice. */
  async stop() {
    if (this.exited) return this.exitInfo;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => {
      if (!this.exited) this.child.kill("SIGKILL");
    }, STOP_TIMEOUT_MS);
    const info = await this.exitPromise;
    clearTimeout(timer);
    return info;
  }

  /** SIGKILL: a crash, as far as clients can tell. */
  async kill() {
    if (this.exited) return this.exitInfo;
    this.child.kill("SIGKILL");
    return this.exitPromise;
  }
}

/**
 * Spawns the Socket.IO test app.
 * options: { port (default 0 = pick one), transports: "polling,websocket", maxPayload,
 *            pingInterval, pingTimeout, connectTimeout, extraArgs: string[],
 *            redis: "redis://127.0.0.1:PORT" (join a cluster), nodeId, requestsTimeout (ms),
 *            sharded: "dynamic" (the sharded adapter; redis is then a redis+cluster:// URL) }
 * Returns { port, url, proc, stop(), kill() }.
 */
export async function startTestapp(options = {}) {
  requireBinary(TESTAPP_BIN, "cargo build --release --example testapp -p shoal");
  const args = ["--port", String(options.port ?? 0)];
  if (options.transports) args.push("--transports", options.transports);
  if (options.maxPayload != null) args.push("--max-payload", String(options.maxPayload));
  if (options.pingInterval != null) args.push("--ping-interval", String(options.pingInterval));
  if (options.pingTimeout != null) args.push("--ping-timeout", String(options.pingTimeout));
  if (options.connectTimeout != null) args.push("--connect-timeout", String(options.connectTimeout));
  if (options.redis) args.push("--redis", options.redis);
  if (options.sharded) args.push("--sharded", options.sharded);
  if (options.nodeId) args.push("--node-id", options.nodeId);
  if (options.requestsTimeout != null) args.push("--requests-timeout", String(options.requestsTimeout));
  if (options.extraArgs) args.push(...options.extraArgs);
  return startListening(options.nodeId ? `testapp ${options.nodeId}` : "testapp", TESTAPP_BIN, args, options.port);
}

/**
 * Spawns another example of crates/shoal/examples that takes `--port` and prints
 * `LISTENING <port>` (e.g. "typed"). Returns what startTestapp returns.
 */
export async function startExample(name, options = {}) {
  const bin = path.join(TARGET_DIR, "release", "examples", name);
  requireBinary(bin, `cargo build --release --example ${name} -p shoal`);
  return startListening(name, bin, ["--port", String(options.port ?? 0)], options.port);
}

/**
 * Spawns the Node.js Socket.IO peer of tests/js/peers/node-server.mjs (socket.io with the
 * official Redis adapter, the same event contract as the test app) with this Node binary.
 * options: { port (default 0), redis (URL), nodeId, requestsTimeout, parser ("msgpack") } or, for
 * the sharded adapter on a Redis Cluster, { redisCluster: "host:port,host:port", sharded: "dynamic" }.
 */
export async function startNodePeer(options = {}) {
  const args = [NODE_PEER_SCRIPT, "--port", String(options.port ?? 0)];
  if (options.redisCluster) args.push("--redis-cluster", options.redisCluster, "--sharded", options.sharded ?? "dynamic");
  else args.push("--redis", options.redis);
  if (options.nodeId) args.push("--node-id", options.nodeId);
  if (options.requestsTimeout != null) args.push("--requests-timeout", String(options.requestsTimeout));
  if (options.parser) args.push("--parser", options.parser);
  return startListening(`node peer ${options.nodeId ?? ""}`.trim(), process.execPath, args, options.port);
}

async function startListening(name, bin, args, fixedPort) {
  // A fixed port may still be held for a moment by the previous process (restart test):
  // retry the spawn a few times in that case.
  const attempts = fixedPort ? 10 : 1;
  let lastError;
  for (let i = 0; i < attempts; i++) {
    const proc = new ServerProcess(name, bin, args);
    try {
      const port = await waitForListeningLine(proc);
      if (fixedPort && port !== fixedPort) {
        await proc.stop();
        throw proc.failure(`asked for port ${fixedPort} but it printed LISTENING ${port}`);
      }
      return handle(proc, port);
    } catch (err) {
      lastError = err;
      // Only a process that died by itself (e.g. port still in use) is worth another try.
      const diedByItself = proc.exited;
      await proc.kill();
      if (!diedByItself || i === attempts - 1) break;
      await sleep(300);
    }
  }
  throw lastError;
}

function waitForListeningLine(proc) {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(
      () => reject(proc.failure(`did not print "LISTENING <port>" within ${READY_TIMEOUT_MS} ms`)),
      READY_TIMEOUT_MS,
    );
    const onData = (chunk) => {
      buf += chunk.toString();
      const m = /^LISTENING (\d+)\s*$/m.exec(buf);
      if (m) {
        clearTimeout(timer);
        proc.child.stdout.off("data", onData);
        resolve(Number(m[1]));
      }
    };
    proc.child.stdout.on("data", onData);
    proc.exitPromise.then(() => {
      clearTimeout(timer);
      reject(proc.failure("exited before it was ready"));
    });
  });
}

/**
 * Spawns the shoal node binary listening on 127.0.0.1:<port> and waits until the port
 * accepts TCP connections (more robust than parsing its log).
 */
export async function startShoal(options = {}) {
  const bin = options.bin ?? SHOAL_BIN;
  requireBinary(bin, "cargo build --release --workspace --examples --bins");
  const port = options.port ?? (await freePort());
  const args = ["--listen", `127.0.0.1:${port}`, ...(options.extraArgs ?? [])];
  const proc = new ServerProcess(path.basename(bin), bin, args);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (true) {
    if (proc.exited) throw proc.failure("exited before it was ready");
    // Serving, not just bound: a node binds its listener before it joins the cluster (and
    // may still exit, e.g. on a node id clash), and the kernel accepts connections on a
    // bound listener meanwhile. An HTTP answer comes only once it serves.
    if ((await canConnect(port)) && (await answersHttp(port))) return handle(proc, port);
    if (Date.now() > deadline) {
      await proc.kill();
      throw proc.failure(`port ${port} did not accept connections within ${READY_TIMEOUT_MS} ms`);
    }
    await sleep(50);
  }
}

/** True if an HTTP GET /health on 127.0.0.1:port gets any answer within a second. */
function answersHttp(port) {
  return new Promise((resolve) => {
    // No keep-alive: the probe must not hold one of the node's connections (--max-connections).
    const req = http.get({ host: "127.0.0.1", port, path: "/health", timeout: 1000, agent: false, headers: { connection: "close" } }, (res) => {
      res.resume();
      resolve(true);
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => resolve(false));
  });
}

/** True if something accepts TCP connections on 127.0.0.1:port. */
export function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: "127.0.0.1" });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

function handle(proc, port) {
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    proc,
    stop: () => proc.stop(),
    kill: () => proc.kill(),
  };
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
