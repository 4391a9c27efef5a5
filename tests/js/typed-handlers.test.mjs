// Typed event handlers (shoal::extract): arguments read with serde (`Data<T>`), binary
// attachments (`Bin`), shared state (`State<T>`), typed acks both ways, and what a client
// gets when its arguments do not fit or the handler fails: an ack `{error}`. Against
// crates/shoal/examples/typed.rs, then the chat demo of the `shoal` binary, which uses them.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startExample, startShoal } from "./lib/server.mjs";
import { Clients, TRANSPORTS, ack, ack1, waitEvent } from "./lib/client.mjs";

for (const transport of TRANSPORTS) {
  describe(`typed handlers (${transport.name})`, () => {
    let server;
    let clients;
    before(async () => {
      server = await startExample("typed");
      clients = new Clients(server.url, transport.opts);
    });
    after(async () => {
      clients?.closeAll();
      await server?.stop();
    });

    test("Data<Chat> + State<Counter>: relayed to the room, acked with the counter", async () => {
      const [a, b] = [await clients.connect(), await clients.connect()];
      assert.deepEqual(await ack(b, "join", "lobby"), [true]);
      const relayed = waitEvent(b, "chat");
      const first = await ack1(a, "chat", { room: "lobby", text: "hi", extra: "ignored" });
      assert.equal(typeof first.seq, "number");
      assert.deepEqual(await relayed, [{ seq: first.seq, text: "hi" }]);
      // The state is shared by every socket: the next message has the next number.
      assert.deepEqual(await ack1(b, "chat", { room: "elsewhere", text: "yo" }), { seq: first.seq + 1 });
    });

    test("arguments that do not fit Data<T>: the handler does not run, the ack says why", async () => {
      const socket = await clients.connect();
      const noText = await ack1(socket, "chat", { room: "lobby" });
      assert.match(noText.error, /^invalid event arguments: missing field `text`/);
      const wrongType = await ack1(socket, "join", 42);
      assert.match(wrongType.error, /^invalid event arguments: invalid type: integer `42`, expected a string/);
      // A tuple reads every argument: one too few is an error too.
      const oneOfTwo = await ack1(socket, "divide", 1);
      assert.match(oneOfTwo.error, /^invalid event arguments: /);
    });

    test("Bin: the binary attachments, in order, with the typed metadata", async () => {
      const socket = await clients.connect();
      const answer = await ack1(socket, "upload", { name: "a.bin", parts: [Buffer.from([1, 2, 3]), { x: Buffer.alloc(5) }] });
      assert.deepEqual(answer, { name: "a.bin", parts: 2, bytes: 8 });
      assert.deepEqual(await ack1(socket, "upload", { name: "none" }), { name: "none", parts: 0, bytes: 0 });
    });

    test("a handler returning Err: the error is the ack", async () => {
      const socket = await clients.connect();
      assert.deepEqual(await ack(socket, "divide", 9, 3), [3]);
      assert.deepEqual(await ack(socket, "divide", 1, 0), [{ error: "division by zero" }]);
    });

    test("emit_with_ack_as::<Answer>: the client's ack read as a type, or the reason it does not fit", async () => {
      const socket = await clients.connect();
      socket.on("question", (callback) => callback({ ok: true, more: 1 }));
      socket.on("bad-question", (callback) => callback("not an object"));
      assert.deepEqual(await ack1(socket, "ask", "question"), { ok: true });
      const bad = await ack1(socket, "ask", "bad-question");
      assert.match(bad.error, /^invalid ack arguments: invalid type: string "not an object"/);
    });

    test("a State<T> the server was never given: dropped, the ack says only that the server failed", async () => {
      const socket = await clients.connect();
      assert.deepEqual(await ack(socket, "motd"), [{ error: "internal server error" }]);
      // The socket goes on.
      assert.deepEqual(await ack(socket, "divide", 4, 2), [2]);
    });
  });
}

describe("the chat demo's typed handlers (shoal binary)", () => {
  let node;
  let clients;
  before(async () => {
    node = await startShoal();
    clients = new Clients(`http://127.0.0.1:${node.port}`, { transports: ["websocket"] });
  });
  after(async () => {
    clients?.closeAll();
    await node?.stop();
  });

  test("a chat message of the page's shape is relayed, cut to its limits; another shape is dropped", async () => {
    const [a, b] = [await clients.connect(), await clients.connect()];
    const seen = [];
    b.on("chat message", (msg) => seen.push(msg));
    a.emit("chat message", { name: "x", text: 5 });
    a.emit("chat message", "not an object");
    a.emit("chat message", { name: "n".repeat(40), text: "hello", extra: true });
    await waitEvent(b, "chat message");
    assert.deepEqual(seen, [{ name: "n".repeat(32), text: "hello" }]);
  });

  test("join and room message: typed arguments, acked; a wrong type is answered with an error", async () => {
    const [a, b] = [await clients.connect(), await clients.connect()];
    assert.deepEqual(await ack(b, "join", "r1"), [true]);
    const got = waitEvent(b, "room message");
    assert.deepEqual(await ack(a, "room message", "r1", { any: ["json", 1] }), [true]);
    assert.deepEqual(await got, ["r1", { any: ["json", 1] }]);
    const wrong = await ack1(a, "join", ["r1"]);
    assert.match(wrong.error, /^invalid event arguments: invalid type: sequence, expected a string/);
  });
});
