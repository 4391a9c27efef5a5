// Crash isolation: a handler that panics (inline, in the app's closure, after an await,
// once an ack arrives, or in a connect middleware) closes that one socket, with the
// panic in the node's log; the session's other namespace, the same namespace connected
// again, and every other client go on, so no lock of the node is left poisoned.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startTestapp } from "./lib/server.mjs";
import {
  Clients,
  TRANSPORTS,
  ack,
  ack1,
  eventually,
  unique,
  waitConnect,
  waitConnectError,
  waitDisconnect,
  waitEvent,
} from "./lib/client.mjs";

// The panic message each event raises (see panicking_events in testapp.rs).
const PANICS = {
  "panic-now": "panic-now asked by the client",
  "panic-in-closure": "panic-in-closure asked by the client",
  "panic-later": "panic-later asked by the client",
  "panic-on-ack": "panic-on-ack: the client answered Ok",
};

for (const transport of TRANSPORTS) {
  describe(`crash isolation over ${transport.name}`, () => {
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

    for (const [event, message] of Object.entries(PANICS)) {
      test(`a handler that panics (${event}) closes only its socket`, async () => {
        const room = unique("room");
        const bystander = await clients.connect("/");
        await ack(bystander, "join", room);
        const manager = clients.manager();
        const victim = manager.socket("/");
        const sibling = manager.socket("/custom");
        await Promise.all([waitConnect(victim, "victim /"), waitConnect(sibling, "victim /custom")]);
        const victimId = victim.id;
        victim.on("question", (_text, answer) => answer("yes"));

        const reason = waitDisconnect(victim, `disconnect after ${event}`);
        victim.emit(event);
        assert.equal(await reason, "io server disconnect");

        // The panic is in the node's log with the socket it closed.
        await eventually(() => {
          assert.ok(server.proc.log.includes(message), `the panic message in the log:\n${server.proc.log}`);
          const line = server.proc.log.split("\n").find((l) => l.includes(`socket=${victimId}`));
          assert.ok(line, `a log line for socket ${victimId}:\n${server.proc.log}`);
          assert.ok(line.includes("panicked; disconnecting this socket"), line);
          assert.ok(line.includes(`panic=${message}`), line);
        });
        // The node saw a server-side disconnect of that socket, and of no other.
        const log = await ack1(bystander, "disconnect-log");
        assert.deepEqual(
          log.filter((e) => e.id === victimId),
          [{ id: victimId, nsp: "/", reason: "server namespace disconnect" }],
        );
        assert.equal(bystander.connected, true);
        assert.equal(sibling.connected, true);

        // The same session's other namespace, the bystander and its room work.
        assert.deepEqual(await ack(sibling, "echo", "sibling"), ["sibling"]);
        assert.deepEqual(await ack(bystander, "echo", "bystander"), ["bystander"]);
        // The victim's namespace can be joined again on the same session and works,
        // rooms included.
        victim.connect();
        await waitConnect(victim, "victim reconnects to /");
        assert.notEqual(victim.id, victimId);
        await ack(victim, "join", room);
        const got = waitEvent(victim, "news", "broadcast to the room after the panic");
        await ack(bystander, "broadcast", { to: room, event: "news", args: ["after"] });
        assert.deepEqual(await got, ["after"]);
        assert.equal(manager.engine.id != null, true);
        for (const s of [victim, sibling, bystander]) s.disconnect();
      });
    }

    test("a connect middleware that panics refuses that connection only", async () => {
      const manager = clients.manager();
      const main = manager.socket("/");
      await waitConnect(main, "main namespace");
      const sid = manager.engine.id;
      const panicky = manager.socket("/panicky", { auth: { panic: true } });
      const err = await waitConnectError(panicky, "connect to /panicky with a panic");
      assert.equal(err.message, "server error");
      await eventually(() => assert.ok(server.proc.log.includes("connect middleware panic asked by the client"), server.proc.log));
      assert.match(server.proc.log, /connect middleware panicked; refusing this connection/);
      // The session lives on, and the namespace may be asked again on it.
      assert.equal(main.connected, true);
      assert.equal(manager.engine.id, sid);
      assert.deepEqual(await ack(main, "echo", 1), [1]);
      panicky.auth = {};
      const welcome = waitEvent(panicky, "welcome", "welcome on /panicky");
      panicky.connect();
      await waitConnect(panicky, "connect to /panicky without a panic");
      assert.deepEqual(await welcome, ["/panicky"]);
      assert.equal(manager.engine.id, sid);
      assert.deepEqual(await ack(panicky, "echo", 2), [2]);
      // Another client never noticed.
      const other = await clients.connect("/");
      assert.deepEqual(await ack(other, "echo", 3), [3]);
    });
  });
}
