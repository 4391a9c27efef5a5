// The test's own load balancer: a tiny round-robin TCP proxy (Node's `net`), no sticky
// sessions, no knowledge of Engine.IO. Each new client connection goes to the next
// backend port in turn; a backend that refuses the connection (a node that is down) is
// skipped for the next one, and if none accepts, the client connection is closed, as a
// real balancer with health checks would do. When either side of a pair closes, the other
// is destroyed at once, so a node crash reaches the client as a dropped transport.

import net from "node:net";

export class Balancer {
  constructor(backends) {
    this.backends = [...backends];
    this.next = 0;
    /** Connections handed to each backend port so far. */
    this.counts = new Map();
    this.sockets = new Set();
    this.server = net.createServer((client) => this.accept(client));
  }

  /** Listens on a free port of 127.0.0.1. */
  async listen() {
    await new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, "127.0.0.1", resolve);
    });
    this.port = this.server.address().port;
    this.url = `http://127.0.0.1:${this.port}`;
    return this;
  }

  /** Replaces the backend ports (applies to new connections only). */
  setBackends(backends) {
    this.backends = [...backends];
  }

  accept(client) {
    this.sockets.add(client);
    client.pause();
    client.on("error", () => {});
    client.on("close", () => this.sockets.delete(client));
    this.connectUpstream(client, this.backends.length);
  }

  connectUpstream(client, triesLeft) {
    if (triesLeft <= 0 || this.backends.length === 0 || client.destroyed) {
      client.destroy();
      return;
    }
    const port = this.backends[this.next++ % this.backends.length];
    const upstream = net.connect({ port, host: "127.0.0.1" });
    this.sockets.add(upstream);
    upstream.on("close", () => this.sockets.delete(upstream));
    let connected = false;
    upstream.on("error", () => {
      // Refused or unreachable: the next backend gets this client. Errors after the
      // connection was made end in "close", handled below.
      if (!connected) this.connectUpstream(client, triesLeft - 1);
    });
    upstream.once("connect", () => {
      connected = true;
      this.counts.set(port, (this.counts.get(port) ?? 0) + 1);
      const closeBoth = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on("close", closeBoth);
      upstream.on("close", closeBoth);
      if (client.destroyed) return closeBoth();
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  }

  /** Drops every proxied connection now (a network cut, as far as both ends can tell). */
  dropAll() {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  /** Stops listening and drops every proxied connection. */
  async close() {
    this.dropAll();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** A round-robin balancer over `backends` (ports), listening on a free port. */
export function startBalancer(backends) {
  return new Balancer(backends).listen();
}
