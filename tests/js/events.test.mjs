// Events, binary attachments, acknowledgements (both directions), the catch-all listener,
// socket data and the handshake, for each transport configuration.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startTestapp } from "./lib/server.mjs";
import {
  Clients,
  TRANSPORTS,
  ack,
  ack1,
  ackWithin,
  normalize,
  waitConnect,
  waitEvent,
} from "./lib/client.mjs";

// Every JSON type, each as a single argument.
const JSON_VALUES = [
  ["null", null],
  ["true", true],
  ["false", false],
  ["zero", 0],
  ["negative int", -42],
  ["max safe int", Number.MAX_SAFE_INTEGER],
  ["min safe int", Number.MIN_SAFE_INTEGER],
  ["float", 3.14159],
  ["negative float", -0.25],
  ["tiny float", 1e-7],
  ["huge float", 1.7976931348623157e308],
  ["empty string", ""],
  ["ascii string", "hello world"],
  ["unicode string", "héllo wörld ñ 日本語 中文 العربية"],
  ["emoji", "🎉 👨‍👩‍👧‍👦 🏳️‍🌈 𝄞"],
  ["escapes", 'quote " backslash \\ slash / newline \n tab \t cr \r'],
  ["control chars", "\u0000\u0001\u001e\u001f"], // \u001e is the polling packet separator
  ["lone-looking json", '["not","an","array"]'],
  ["empty array", []],
  ["empty object", {}],
  ["array of mixed", [1, "two", null, true, 2.5, [], {}]],
  [
    "nested object",
    { a: { b: { c: [1, { d: "deep", e: [null, false] }] } }, "key with space": "v", "ünï": "ü" },
  ],
  ["deep array", [[[[[["deep"]]]]]]],
  ["numeric-looking keys", { 0: "zero", 10: "ten", "-1": "minus" }],
  ["long string", "x".repeat(50_000)],
];

// Binary arguments: single, nested, several attachments, empty, larger.
const BINARY_CASES = [
  ["one buffer", [Buffer.from([0, 1, 2, 3, 254, 255])]],
  ["empty buffer", [Buffer.alloc(0)]],
  ["buffer in object", [{ file: Buffer.from("file contents"), name: "a.txt" }]],
  ["buffer in array", [[1, Buffer.from([9, 8, 7]), "x"]]],
  [
    "several attachments",
    [
      Buffer.from("first"),
      { second: Buffer.from([2]), list: [Buffer.from("third"), { fourth: Buffer.from([4, 4]) }] },
      "text between",
      Buffer.from("fifth"),
    ],
  ],
  ["same bytes twice", [Buffer.from("dup"), Buffer.from("dup")]],
  ["64 KiB random", [Buffer.from(Array.from({ length: 65536 }, (_, i) => (i * 7919 + 13) % 256))]],
];

for (const transport of TRANSPORTS) {
  describe(`events over ${transport.name}`, () => {
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

    test("every JSON type round-trips through an ack", async () => {
      const socket = await clients.connect();
      for (const [name, value] of JSON_VALUES) {
        assert.deepEqual(await ack(socket, "echo", value), [value], `ack of ${name}`);
      }
    });

    test("every JSON type round-trips as a server emit", async () => {
      const socket = await clients.connect();
      for (const [name, value] of JSON_VALUES) {
        const received = waitEvent(socket, "echo", `echo event of ${name}`);
        socket.emit("echo", value);
        assert.deepEqual(await received, [value], `echo event of ${name}`);
      }
    });

    test("several arguments keep their order and types", async () => {
      const socket = await clients.connect();
      const args = [1, "two", [3], { four: 4 }, null, true, 5.5, ""];
      assert.deepEqual(await ack(socket, "echo", ...args), args);
      const received = waitEvent(socket, "echo");
      socket.emit("echo", ...args);
      assert.deepEqual(await received, args);
    });

    test("an ack without arguments", async () => {
      const socket = await clients.connect();
      assert.deepEqual(await ack(socket, "echo"), []);
    });

    test("many acks in flight resolve to their own request", async () => {
      const socket = await clients.connect();
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) => ack(socket, "echo", i, `n${i}`)),
      );
      results.forEach((r, i) => assert.deepEqual(r, [i, `n${i}`], `ack #${i}`));
    });

    test("events from one socket arrive in order", async () => {
      const socket = await clients.connect();
      const got = [];
      const done = new Promise((resolve) =>
        socket.on("echo", (n) => {
          got.push(n);
          if (got.length === 200) resolve();
        }),
      );
      for (let i = 0; i < 200; i++) socket.emit("echo", i);
      await Promise.race([
        done,
        new Promise((_, rej) => setTimeout(() => rej(new Error(`only ${got.length}/200`)), 10000)),
      ]);
      assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => i));
    });

    for (const [name, args] of BINARY_CASES) {
      test(`binary client→server→client: ${name}`, async () => {
        const socket = await clients.connect();
        assert.deepEqual(await ack(socket, "echo", ...args), normalize(args), `ack of ${name}`);
        const received = waitEvent(socket, "echo", `echo event of ${name}`);
        socket.emit("echo", ...args);
        assert.deepEqual(normalize(await received), normalize(args), `echo event of ${name}`);
      });
    }

    test("binary server→client: emit-binary", async () => {
      const socket = await clients.connect();
      const received = waitEvent(socket, "binary");
      assert.deepEqual(await ack(socket, "emit-binary"), []);
      assert.deepEqual(normalize(await received), [
        Buffer.from("hello"),
        { nested: [Buffer.from([1, 2, 3]), "text"], n: 1 },
      ]);
    });

    test("server→client ack with several arguments, including binary", async () => {
      const socket = await clients.connect();
      socket.on("question", (a, b, callback) => callback(a, b + 1, Buffer.from([7, 7]), { ok: "é" }));
      const result = await ack1(socket, "emit-with-ack", {
        event: "question",
        args: ["x", 41],
        timeout: 3000,
      });
      assert.deepEqual(normalize(result), {
        ok: true,
        response: ["x", 42, Buffer.from([7, 7]), { ok: "é" }],
      });
    });

    test("server→client ack with binary arguments sent to the client", async () => {
      const socket = await clients.connect();
      socket.on("bin-question", (buf, obj, callback) => callback(Buffer.concat([buf, obj.more])));
      const result = await ack1(socket, "emit-with-ack", {
        event: "bin-question",
        args: [Buffer.from("ab"), { more: Buffer.from("cd") }],
        timeout: 3000,
      });
      assert.deepEqual(normalize(result), { ok: true, response: [Buffer.from("abcd")] });
    });

    test("server→client ack without arguments", async () => {
      const socket = await clients.connect();
      socket.on("nothing", (callback) => callback());
      const result = await ack1(socket, "emit-with-ack", { event: "nothing", args: [], timeout: 3000 });
      assert.deepEqual(result, { ok: true, response: [] });
    });

    test("server→client ack times out when the client never acks", async () => {
      const socket = await clients.connect();
      let called = 0;
      socket.on("ignored", () => {
        called += 1; // receives the event but never calls the ack function
      });
      const started = Date.now();
      const result = await ack1(socket, "emit-with-ack", { event: "ignored", args: [1], timeout: 300 });
      const elapsed = Date.now() - started;
      assert.deepEqual(result, { ok: false, error: "operation has timed out" });
      assert.equal(called, 1, "the client received the event once");
      // The node starts its 300 ms after the request left here, and answers at once.
      assert.ok(elapsed >= 300, `timed out too early: after ${elapsed} ms`);
      assert.ok(elapsed < 600, `timed out too late: after ${elapsed} ms`);
      // The session is still fine after a timed-out ack.
      assert.deepEqual(await ack(socket, "echo", "still here"), ["still here"]);
    });

    test("a late ack after the timeout is ignored, the session stays usable", async () => {
      const socket = await clients.connect();
      socket.on("slowpoke", (callback) => setTimeout(() => callback("late"), 400));
      const result = await ack1(socket, "emit-with-ack", { event: "slowpoke", args: [], timeout: 100 });
      assert.deepEqual(result, { ok: false, error: "operation has timed out" });
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(socket.connected, true, "late ack must not break the session");
      assert.deepEqual(await ack(socket, "echo", 1), [1]);
    });

    test("catch-all sees unhandled events in order, named events excluded", async () => {
      const socket = await clients.connect();
      socket.emit("foo", 1);
      socket.emit("bar", "x");
      socket.emit("baz", { a: [1, null] }, true);
      socket.emit("no-args");
      assert.deepEqual(await ack(socket, "echo", "handled"), ["handled"]);
      assert.deepEqual(await ack1(socket, "any-log"), [
        ["foo", 1],
        ["bar", "x"],
        ["baz", { a: [1, null] }, true],
        ["no-args"],
      ]);
    });

    test("socket data starts as null, can be set and read back", async () => {
      const socket = await clients.connect();
      assert.equal(await ack1(socket, "get-data"), null);
      const value = { user: "ana", roles: ["a", "b"], n: 1.5, nested: { ok: true } };
      assert.deepEqual(await ack(socket, "set-data", value), []);
      assert.deepEqual(await ack1(socket, "get-data"), value);
      await ack(socket, "set-data", "replaced");
      assert.equal(await ack1(socket, "get-data"), "replaced");
      // Data belongs to one socket only.
      const other = await clients.connect();
      assert.equal(await ack1(other, "get-data"), null);
    });

    test("handshake details", async () => {
      const before = Date.now();
      const socket = await clients.connect("/", {
        query: { foo: "bar", "with space": "a b&c=d" },
        auth: { token: "abc", n: 5, nested: { ok: true } },
        extraHeaders: { "X-Test-Header": "yes" },
      });
      const after = Date.now();
      const hs = await ack1(socket, "handshake");
      assert.equal(typeof hs, "object");
      assert.equal(hs.headers["x-test-header"], "yes", `headers: ${JSON.stringify(hs.headers)}`);
      assert.equal(hs.headers.host, `127.0.0.1:${server.port}`);
      for (const key of Object.keys(hs.headers)) {
        assert.equal(key, key.toLowerCase(), `header names are lower-case: ${key}`);
      }
      assert.equal(hs.query.foo, "bar");
      assert.equal(hs.query["with space"], "a b&c=d");
      assert.equal(hs.query.EIO, "4");
      for (const v of Object.values(hs.query)) assert.equal(typeof v, "string");
      assert.match(hs.address, /^(::ffff:)?127\.0\.0\.1$/);
      assert.deepEqual(hs.auth, { token: "abc", n: 5, nested: { ok: true } });
      assert.equal(typeof hs.issued, "number");
      assert.ok(
        hs.issued >= before - 2000 && hs.issued <= after + 2000,
        `issued ${hs.issued} not within [${before}, ${after}]`,
      );
      assert.equal(typeof hs.time, "string");
      const parsed = Date.parse(hs.time);
      assert.ok(!Number.isNaN(parsed), `time is not a date: ${hs.time}`);
      assert.ok(Math.abs(parsed - hs.issued) < 2000, `time ${hs.time} far from issued ${hs.issued}`);
      assert.equal(typeof hs.url, "string");
      assert.ok(hs.url.startsWith("/socket.io/"), `url: ${hs.url}`);
      assert.match(hs.url, /[?&]EIO=4(&|$)/);
    });

    test("handshake without auth gives an empty auth object", async () => {
      const socket = await clients.connect();
      const hs = await ack1(socket, "handshake");
      assert.deepEqual(hs.auth, {});
    });

    test("socket ids are distinct and the client knows its id", async () => {
      const a = await clients.connect();
      const b = await clients.connect();
      assert.equal(typeof a.id, "string");
      assert.ok(a.id.length > 0);
      assert.notEqual(a.id, b.id);
      // The socket's own room is its id.
      assert.deepEqual(await ack1(a, "join", []), [a.id]);
    });

    test("serverSideEmit on a single node gets no responses", async () => {
      const socket = await clients.connect();
      const spec = { event: "ping", args: ["alone"], timeout: 1000 };
      assert.deepEqual(await ack1(socket, "server-side-emit", { ...spec, ack: true }), { ok: true, responses: [] });
      assert.deepEqual(await ack1(socket, "server-side-emit", { ...spec, ack: false }), { ok: true, responses: [] });
      // Nobody else sent one, and a node does not receive its own.
      assert.deepEqual(await ack1(socket, "server-events"), []);
    });

    test("emits buffered before connect are delivered after connect", async () => {
      const socket = clients.socket();
      const acked = ackWithin(5000, socket, "echo", "early"); // sent while still connecting
      await waitConnect(socket);
      assert.deepEqual(await acked, ["early"]);
    });
  });
}
