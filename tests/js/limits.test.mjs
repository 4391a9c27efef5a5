// maxPayload: a message at the limit round-trips; one clearly over it ends the sender's
// session, and a well-behaved client on the same server is not affected.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startTestapp } from "./lib/server.mjs";
import { Clients, TRANSPORTS, ack, waitDisconnect, waitEvent } from "./lib/client.mjs";

const MAX_PAYLOAD = 10_000;

/**
 * A string s such that the Engine.IO message carrying `socket.emit("echo", s)` on the
 * main namespace, `4` + `2` + `["echo","<s>"]`, is exactly `bytes` long.
 */
function echoStringForMessageSize(bytes) {
  const overhead = Buffer.byteLength(`42${JSON.stringify(["echo", ""])}`);
  return "a".repeat(bytes - overhead);
}

for (const transport of TRANSPORTS) {
  describe(`maxPayload ${MAX_PAYLOAD} over ${transport.name}`, () => {
    let server;
    let clients;

    before(async () => {
      server = await startTestapp({ maxPayload: MAX_PAYLOAD });
      clients = new Clients(server.url, transport.opts);
    });

    after(async () => {
      clients?.closeAll();
      await server?.stop();
    });

    test("the client is told the limit", async () => {
      const socket = clients.socket();
      const [handshake] = await waitEvent(socket.io.engine, "handshake");
      assert.equal(handshake.maxPayload, MAX_PAYLOAD);
    });

    test("a message of exactly maxPayload bytes round-trips", async () => {
      const socket = await clients.connect();
      const s = echoStringForMessageSize(MAX_PAYLOAD);
      assert.equal(Buffer.byteLength(`42${JSON.stringify(["echo", s])}`), MAX_PAYLOAD);
      const received = waitEvent(socket, "echo", "echo of a message at the limit");
      socket.emit("echo", s);
      const [got] = await received;
      assert.equal(got.length, s.length);
      assert.equal(got, s);
      assert.equal(socket.connected, true);
    });

    test("a message just under the limit round-trips with an ack", async () => {
      const socket = await clients.connect();
      const s = "b".repeat(MAX_PAYLOAD - 100);
      const [got] = await ack(socket, "echo", s);
      assert.equal(got, s);
    });

    for (const [what, makeArgs] of [
      ["text", () => ["c".repeat(MAX_PAYLOAD * 2)]],
      ["binary", () => [Buffer.alloc(MAX_PAYLOAD * 2, 7)]],
    ]) {
      test(`a ${what} message clearly over the limit closes the sender's session only`, async () => {
        const bystander = await clients.connect();
        const sender = await clients.connect();
        const disconnected = waitDisconnect(sender, "disconnect of the oversized sender");
        let echoed = false;
        sender.on("echo", () => (echoed = true));
        sender.emit("echo", ...makeArgs());
        const reason = await disconnected;
        assert.equal(typeof reason, "string");
        assert.equal(echoed, false, "the oversized message must not be delivered");
        assert.equal(bystander.connected, true, "bystander got disconnected");
        assert.deepEqual(await ack(bystander, "echo", "unaffected"), ["unaffected"]);
        // The server still accepts new sessions.
        const fresh = await clients.connect();
        assert.deepEqual(await ack(fresh, "echo", "new"), ["new"]);
      });
    }
  });
}
