// The client's real address behind a balancer. Clients bound to distinct 127.0.0.x
// source addresses see themselves in `handshake.address` (the demo's `whoami` event)
// through nginx (X-Forwarded-For) and HAProxy (PROXY protocol v2), and over a raw PROXY
// v1 connection; forged headers from peers that are not trusted proxies are ignored.
// The nodes trust 127.0.0.1 only, where the balancers connect from.

import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { io } from "socket.io-client";
import { agentFrom, startCluster, startHaproxy, startNginx, whoami, NODE_KINDS } from "./lib/lb.mjs";

const TRANSPORTS = [
  { name: "polling", opts: { transports: ["polling"] } },
  { name: "websocket", opts: { transports: ["websocket"] } },
  { name: "upgrade", opts: {} },
];

/** Connects from `localAddress` to `url` and asks the server who it is. */
async function addressSeen(url, localAddress, opts = {}) {
  const agent = agentFrom(localAddress);
  const socket = io(url, { forceNew: true, reconnection: false, agent, ...opts });
  try {
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    });
    return await whoami(socket);
  } finally {
    socket.disconnect();
    agent.destroy();
  }
}

/** Raw HTTP over a fresh TCP connection from `localAddress`, `prefix` sent first. */
function rawRequest(port, localAddress, prefix, request) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: "127.0.0.1", localAddress });
    let data = "";
    sock.on("connect", () => sock.write(Buffer.concat([prefix, Buffer.from(request)])));
    sock.on("data", (c) => {
      data += c;
      const [head, body] = data.split("\r\n\r\n");
      const len = /content-length: (\d+)/i.exec(head ?? "");
      if (len && body !== undefined && Buffer.byteLength(body) >= Number(len[1])) {
        sock.destroy();
        resolve({ head, body });
      }
    });
    sock.on("error", reject);
    sock.setTimeout(5000, () => sock.destroy(new Error("raw request timed out")));
  });
}

function post(url, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", headers: { "content-type": "text/plain" } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("error", reject);
    req.end(body);
  });
}

function get(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}

/** Opens a session with `prefix` (a PROXY header) before the handshake; returns handshake.address. */
async function addressOverRawHandshake(node, localAddress, prefix, headers = "") {
  const { body } = await rawRequest(
    node.port,
    localAddress,
    prefix,
    `GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}Connection: close\r\n\r\n`,
  );
  const sid = /"sid":"([^"]+)"/.exec(body)[1];
  const base = `${node.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`;
  assert.equal(await post(base, "40"), 200);
  assert.match(await get(base), /^40/);
  assert.equal(await post(base, '421["whoami"]'), 200);
  const answer = await get(base);
  const m = /431\[(\{.*?\})\]/.exec(answer);
  assert.ok(m, `no whoami answer in ${answer}`);
  await post(base, "1");
  return JSON.parse(m[1]).address;
}

for (const kind of NODE_KINDS) {
  describe(`client addresses (${kind.name})`, () => {
    let cluster;
    before(async () => {
      cluster = await startCluster({ bin: kind.bin, count: 3, args: ["--trusted-proxies", "127.0.0.1", "--proxy-protocol"] });
    });
    after(async () => {
      await cluster?.stop();
    });

    test("through nginx (X-Forwarded-For), every transport", async () => {
      const nginx = await startNginx("shoal-round-robin.conf", cluster.nodes);
      try {
        let host = 10;
        for (const t of TRANSPORTS) {
          for (let k = 0; k < 3; k++) {
            const ip = `127.0.0.${host++}`;
            const me = await addressSeen(nginx.url, ip, t.opts);
            assert.equal(me.address, ip, `${t.name} client from ${ip} seen as ${me.address} (on ${me.node})`);
          }
        }
        // A client that forges X-Forwarded-For through the balancer: nginx appends the
        // real address, and that is the one the node takes.
        const me = await addressSeen(nginx.url, "127.0.0.30", { transports: ["polling"], extraHeaders: { "X-Forwarded-For": "6.6.6.6" } });
        assert.equal(me.address, "127.0.0.30");
      } finally {
        await nginx.stop();
      }
    });

    test("through HAProxy with the PROXY protocol v2, every transport", async () => {
      // No X-Forwarded-For at all: the address comes from the PROXY header only.
      const haproxy = await startHaproxy("shoal-round-robin.cfg", cluster.nodes, (c) =>
        c.replace(/^\s*option forwardfor\s*$/m, "").replace(/(server n\d .*)$/gm, "$1 send-proxy-v2"));
      try {
        let host = 40;
        for (const t of TRANSPORTS) {
          for (let k = 0; k < 3; k++) {
            const ip = `127.0.0.${host++}`;
            const me = await addressSeen(haproxy.url, ip, t.opts);
            assert.equal(me.address, ip, `${t.name} client from ${ip} seen as ${me.address} (on ${me.node})`);
          }
        }
      } finally {
        await haproxy.stop();
      }
    });

    test("PROXY protocol v1 from a trusted proxy is believed, from anyone else ignored", async () => {
      const node = cluster.nodes[0];
      const v1 = (src) => Buffer.from(`PROXY TCP4 ${src} 127.0.0.1 40000 ${node.port}\r\n`);
      assert.equal(await addressOverRawHandshake(node, "127.0.0.1", v1("203.0.113.7")), "203.0.113.7");
      assert.equal(await addressOverRawHandshake(node, "127.0.0.60", v1("203.0.113.8")), "127.0.0.60");
      // Without a PROXY header the same listener serves plain HTTP.
      assert.equal(await addressOverRawHandshake(node, "127.0.0.61", Buffer.alloc(0)), "127.0.0.61");
    });

    test("forged forwarding headers from an untrusted peer are ignored", async () => {
      for (const t of TRANSPORTS) {
        const me = await addressSeen(cluster.nodes[1].url, "127.0.0.70", {
          ...t.opts,
          extraHeaders: {
            "X-Forwarded-For": "6.6.6.6",
            Forwarded: "for=6.6.6.7",
            "X-Shoal-Forwarded": "n1",
            "X-Shoal-Client": "6.6.6.8:1234",
          },
        });
        assert.equal(me.address, "127.0.0.70", `${t.name}: seen as ${me.address}`);
      }
      // Even from a trusted proxy's address, the address a node vouches for needs the
      // cluster's secret: a balancer that passes the headers through cannot be abused.
      const forged = "X-Shoal-Forwarded: n1 not-the-secret\r\nX-Shoal-Client: 6.6.6.8:1234\r\n";
      assert.equal(await addressOverRawHandshake(cluster.nodes[2], "127.0.0.1", Buffer.alloc(0), forged), "127.0.0.1");
    });
  });
}
