// Namespaces (static, dynamic, invalid), multiplexing over one session, and connect
// middleware (rejections with message and data, async middleware), per transport.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startTestapp } from "./lib/server.mjs";
import {
  Clients,
  TRANSPORTS,
  ack,
  ack1,
  eventually,
  waitConnect,
  waitConnectError,
  waitDisconnect,
  waitEvent,
} from "./lib/client.mjs";

for (const transport of TRANSPORTS) {
  describe(`namespaces over ${transport.name}`, () => {
    let server;
    let clients;

    before(async () => {
      server = await startTestapp();
      clients = new Clients(server.url, transport.opts);
    });

    after(async () => {
      clients?.closeAll();
      await server?.stop();
    });

    test("static namespace /custom: welcome and echo", async () => {
      const socket = clients.socket("/custom");
      const welcome = waitEvent(socket, "welcome", "welcome on /custom");
      await waitConnect(socket);
      assert.deepEqual(await welcome, ["/custom"]);
      assert.deepEqual(await ack(socket, "echo", { in: "custom" }, [1]), [{ in: "custom" }, [1]]);
    });

    test("dynamic namespace /dyn-xyz: welcome with its own name and echo", async () => {
      for (const nsp of ["/dyn-xyz", "/dyn-abc123"]) {
        const socket = clients.socket(nsp);
        const welcome = waitEvent(socket, "welcome", `welcome on ${nsp}`);
        await waitConnect(socket, `connect to ${nsp}`);
        assert.deepEqual(await welcome, [nsp]);
        assert.deepEqual(await ack(socket, "echo", nsp, Buffer.from(nsp)), [nsp, Buffer.from(nsp)]);
      }
    });

    test("unknown namespace /nope: connect_error Invalid namespace", async () => {
      const socket = clients.socket("/nope");
      const err = await waitConnectError(socket, "connect to /nope");
      assert.equal(err.message, "Invalid namespace");
      assert.equal(socket.connected, false);
    });

    test("names that do not match the dynamic pattern are invalid", async () => {
      for (const nsp of ["/dyn-", "/dyn-ABC", "/dyn-a/b", "/dyn-a_b", "/xdyn-abc"]) {
        const socket = clients.socket(nsp);
        const err = await waitConnectError(socket, `connect to ${nsp}`);
        assert.equal(err.message, "Invalid namespace", `namespace ${nsp}`);
      }
    });

    test("several namespaces share one session on one Manager", async () => {
      const manager = clients.manager();
      const main = manager.socket("/");
      const custom = manager.socket("/custom");
      const dyn = manager.socket("/dyn-shared1");
      const dynWelcome = waitEvent(dyn, "welcome", "welcome on /dyn-shared1");
      await Promise.all([waitConnect(main), waitConnect(custom), waitConnect(dyn)]);
      assert.deepEqual(await dynWelcome, ["/dyn-shared1"]);

      assert.equal(manager.engine.id, main.io.engine.id);
      assert.equal(custom.io.engine.id, main.io.engine.id);
      assert.equal(typeof main.io.engine.id, "string");
      assert.equal(new Set([main.id, custom.id, dyn.id]).size, 3, "socket ids differ per namespace");

      // Each namespace answers on its own channel, even when interleaved.
      const [a, b, c] = await Promise.all([
        ack(main, "echo", "main"),
        ack(custom, "echo", "custom"),
        ack(dyn, "echo", "dyn"),
      ]);
      assert.deepEqual([a, b, c], [["main"], ["custom"], ["dyn"]]);
      // A plain emit on /custom comes back on /custom only.
      const mainEchoes = [];
      main.on("echo", (...args) => mainEchoes.push(args));
      const customEcho = waitEvent(custom, "echo");
      custom.emit("echo", "only custom");
      assert.deepEqual(await customEcho, ["only custom"]);
      await ack(main, "echo", "sync");
      assert.deepEqual(mainEchoes, []);
    });

    test("leaving one namespace keeps the others and the session", async () => {
      const observer = await clients.connect();
      const manager = clients.manager();
      const main = manager.socket("/");
      const custom = manager.socket("/custom");
      await Promise.all([waitConnect(main), waitConnect(custom)]);
      const engineId = manager.engine.id;
      const customId = custom.id;

      custom.disconnect();
      assert.deepEqual(await ack(main, "echo", "still"), ["still"]);
      assert.equal(manager.engine.id, engineId);
      assert.equal(manager.engine.readyState, "open");

      await eventually(async () => {
        const log = await ack1(observer, "disconnect-log");
        assert.ok(
          log.some((e) => e.id === customId && e.nsp === "/custom" && e.reason === "client namespace disconnect"),
          `disconnect-log lacks ${customId} on /custom: ${JSON.stringify(log)}`,
        );
      });

      // Rejoin the namespace on the same session (Manager.socket() reconnects it).
      const again = manager.socket("/custom");
      assert.equal(again, custom, "the Manager reuses the socket object");
      await waitConnect(again, "reconnect to /custom");
      assert.equal(manager.engine.id, engineId, "same session");
      assert.deepEqual(await ack(again, "echo", "back"), ["back"]);
    });

    test("middleware on / rejects with message and data", async () => {
      const socket = clients.socket("/", { auth: { reject: true } });
      const err = await waitConnectError(socket, "connect with auth.reject");
      assert.equal(err.message, "rejected");
      assert.deepEqual(err.data, { reason: "auth.reject" });
      assert.equal(socket.connected, false);
    });

    test("middleware lets other auth values through", async () => {
      const socket = await clients.connect("/", { auth: { reject: false } });
      assert.deepEqual(await ack(socket, "echo", 1), [1]);
    });

    test("/admin rejects a wrong or missing token with code 401", async () => {
      for (const auth of [{ token: "wrong" }, {}, { token: "SECRET" }]) {
        const socket = clients.socket("/admin", { auth });
        const err = await waitConnectError(socket, `connect /admin with ${JSON.stringify(auth)}`);
        assert.equal(err.message, "unauthorized");
        assert.deepEqual(err.data, { code: 401 });
      }
    });

    test("/admin accepts the right token", async () => {
      const socket = await clients.connect("/admin", { auth: { token: "secret" } });
      assert.equal(socket.connected, true);
      assert.equal(typeof socket.id, "string");
    });

    test("a rejected namespace does not disturb others on the same session, and can retry", async () => {
      const manager = clients.manager();
      const custom = manager.socket("/custom");
      const admin = manager.socket("/admin", { auth: { token: "wrong" } });
      // Both waits start now: the connect_error may arrive before /custom's connect.
      const rejected = waitConnectError(admin);
      await waitConnect(custom);
      const err = await rejected;
      assert.equal(err.message, "unauthorized");
      assert.deepEqual(await ack(custom, "echo", "ok"), ["ok"]);
      assert.equal(manager.engine.readyState, "open");

      // Retry with the right token over the same session.
      const engineId = manager.engine.id;
      admin.auth = { token: "secret" };
      admin.connect();
      await waitConnect(admin, "retry /admin");
      assert.equal(manager.engine.id, engineId);
    });

    test("/slow: async middleware delays the connection, then accepts", async () => {
      const started = Date.now();
      const socket = await clients.connect("/slow");
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 90, `connected after ${elapsed} ms, middleware sleeps 100 ms`);
      assert.deepEqual(await ack(socket, "echo", "slow"), ["slow"]);
    });

    test("/slow and / on one session: / is not held up by /slow's middleware", async () => {
      const manager = clients.manager();
      const slow = manager.socket("/slow");
      const main = manager.socket("/");
      await Promise.all([waitConnect(slow), waitConnect(main)]);
      assert.deepEqual(await ack(slow, "echo", "s"), ["s"]);
      assert.deepEqual(await ack(main, "echo", "m"), ["m"]);
    });

    test("server disconnecting / leaves /custom on the same session connected", async () => {
      const manager = clients.manager();
      const main = manager.socket("/");
      const custom = manager.socket("/custom");
      await Promise.all([waitConnect(main), waitConnect(custom)]);
      const reason = waitDisconnect(main);
      main.emit("disconnect-me", false);
      assert.equal(await reason, "io server disconnect");
      assert.deepEqual(await ack(custom, "echo", "alive"), ["alive"]);
      assert.equal(custom.connected, true);
    });
  });
}
