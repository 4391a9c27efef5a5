// Disconnections, seen from both sides (client reasons, and the server's reasons through
// the test app's disconnect-log), and automatic reconnection after a server restart.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { freePort, startTestapp } from "./lib/server.mjs";
import {
  Clients,
  TRANSPORTS,
  ack,
  ack1,
  ackWithin,
  eventually,
  waitConnect,
  waitDisconnect,
  waitEvent,
} from "./lib/client.mjs";

/** Waits until the server's disconnect-log has an entry for `id`; returns that entry. */
async function serverSawDisconnect(observer, id, nsp = "/") {
  let entry;
  await eventually(async () => {
    const log = await ack1(observer, "disconnect-log");
    assert.ok(Array.isArray(log), `disconnect-log is not an array: ${JSON.stringify(log)}`);
    entry = log.find((e) => e.id === id && e.nsp === nsp);
    assert.ok(entry, `no disconnect-log entry for ${id} on ${nsp}: ${JSON.stringify(log)}`);
  });
  return entry;
}

for (const transport of TRANSPORTS) {
  describe(`disconnect reasons over ${transport.name}`, () => {
    let server;
    let clients;
    let observer;

    before(async () => {
      server = await startTestapp();
      clients = new Clients(server.url, transport.opts);
      observer = await clients.connect();
    });

    after(async () => {
      clients?.closeAll();
      await server?.stop();
    });

    test("client socket.disconnect(): io client disconnect / client namespace disconnect", async () => {
      const socket = await clients.connect();
      const id = socket.id;
      const reason = waitDisconnect(socket);
      socket.disconnect();
      assert.equal(await reason, "io client disconnect");
      const entry = await serverSawDisconnect(observer, id);
      assert.equal(entry.reason, "client namespace disconnect");
    });

    test("client closes its engine: transport close on the server", async () => {
      const socket = await clients.connect();
      const id = socket.id;
      const reason = waitDisconnect(socket);
      socket.io.engine.close();
      await reason;
      const entry = await serverSawDisconnect(observer, id);
      assert.equal(entry.reason, "transport close");
    });

    test("disconnect-me(false): io server disconnect / server namespace disconnect, session stays", async () => {
      const manager = clients.manager();
      const main = manager.socket("/");
      const custom = manager.socket("/custom");
      await Promise.all([waitConnect(main), waitConnect(custom)]);
      const id = main.id;
      const reason = waitDisconnect(main);
      main.emit("disconnect-me", false);
      assert.equal(await reason, "io server disconnect");
      const entry = await serverSawDisconnect(observer, id);
      assert.equal(entry.reason, "server namespace disconnect");
      assert.equal(manager.engine.readyState, "open");
      assert.deepEqual(await ack(custom, "echo", "alive"), ["alive"]);
      // A server-side disconnect is final: the client does not reconnect by itself.
      assert.equal(main.connected, false);
      assert.equal(main.active, false);
    });

    test("disconnect-me(true): io server disconnect, and the whole session closes", async () => {
      const manager = clients.manager();
      const main = manager.socket("/");
      const custom = manager.socket("/custom");
      await Promise.all([waitConnect(main), waitConnect(custom)]);
      const id = main.id;
      const engineClosed = waitEvent(manager.engine, "close", "engine close");
      const mainReason = waitDisconnect(main);
      const customReason = waitDisconnect(custom, "disconnect of /custom");
      main.emit("disconnect-me", true);
      assert.equal(await mainReason, "io server disconnect");
      const cr = await customReason;
      assert.ok(["io server disconnect", "transport close"].includes(cr), `/custom reason: ${cr}`);
      await engineClosed;
      const entry = await serverSawDisconnect(observer, id);
      assert.equal(entry.reason, "server namespace disconnect");
    });

    test("disconnect-log entries carry id, nsp and reason for other namespaces too", async () => {
      const socket = await clients.connect("/custom");
      const id = socket.id;
      socket.disconnect();
      const entry = await serverSawDisconnect(observer, id, "/custom");
      assert.deepEqual(entry, { id, nsp: "/custom", reason: "client namespace disconnect" });
    });

    test("a disconnected socket is gone from fetch-sockets", async () => {
      const socket = await clients.connect();
      const id = socket.id;
      await ack(socket, "join", "leaving-room");
      socket.disconnect();
      await serverSawDisconnect(observer, id);
      const list = await ack1(observer, "fetch-sockets", { to: ["leaving-room"] });
      assert.deepEqual(list, []);
    });
  });

  describe(`reconnection after a server restart over ${transport.name}`, () => {
    let server;
    let clients;

    afterEach(async () => {
      clients?.closeAll();
      await server?.stop();
    });

    for (const how of ["stop", "kill"]) {
      test(`the client reconnects by itself after the server was ${how === "stop" ? "stopped (SIGTERM)" : "killed (SIGKILL)"}`, async () => {
        const port = await freePort();
        server = await startTestapp({ port });
        clients = new Clients(server.url, transport.opts);
        const socket = clients.socket("/", {
          reconnection: true,
          reconnectionDelay: 100,
          reconnectionDelayMax: 300,
          randomizationFactor: 0,
          timeout: 2000,
        });
        await waitConnect(socket);
        assert.deepEqual(await ack(socket, "echo", "before"), ["before"]);

        const disconnected = waitDisconnect(socket, "disconnect when the server goes away");
        await (how === "stop" ? server.stop() : server.kill());
        await disconnected;

        // Emitted while the server is down: buffered by the client, sent after reconnecting.
        const buffered = ackWithin(15_000, socket, "echo", "while down");
        const reconnected = waitEvent(socket.io, "reconnect", "Manager reconnect", 15_000);
        const connected = waitEvent(socket, "connect", "socket connect after restart", 15_000);
        server = await startTestapp({ port });
        await reconnected;
        await connected;
        assert.equal(socket.connected, true);
        assert.deepEqual(await buffered, ["while down"]);
        assert.deepEqual(await ack(socket, "echo", "after", Buffer.from("bin")), ["after", Buffer.from("bin")]);
      });
    }
  });
}
