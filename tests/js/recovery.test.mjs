// Connection state recovery on one node (no Redis), with the official client: a socket
// whose transport drops while the server keeps emitting to its rooms comes back with
// the same id, rooms and data, `recovered === true`, and every event exactly once, in
// order (the missed ones replayed before the CONNECT answer). Where recovery is not
// possible (offline longer than max_disconnection_duration, or the node restarted),
// the client gets `recovered === false` and a fresh socket: never a silent gap.
//
// Events are numbered `tick`s from a publisher socket (lib/recovery.mjs).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Clients, ack, ack1, unique, waitEvent } from "./lib/client.mjs";
import { Publisher, Tracked, RECONNECTING, assertEveryTickOnce, connectTracked, roomsOf } from "./lib/recovery.mjs";
import { sleep, startTestapp } from "./lib/server.mjs";

describe("connection state recovery on one node", () => {
  let server;
  let clients;

  before(async () => {
    server = await startTestapp({ extraArgs: ["--recovery", "60000"] });
    clients = new Clients(server.url, { transports: ["websocket"] });
  });

  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test("transport dropped three times under a stream of events: recovered, same id, rooms, data; every event once, in order", async () => {
    // Reconnects after 300 ms, so each drop misses ~15 events.
    const [t] = await connectTracked(clients, 1, "recovering", { reconnectionDelay: 300, reconnectionDelayMax: 300, randomizationFactor: 0 });
    const socket = t.socket;
    assert.equal(socket.recovered, false, "a first connection is not a recovered one");
    const [news, alerts, other] = [unique("news"), unique("alerts"), unique("other")];
    await ack(socket, "join", [news, alerts]);
    await ack(socket, "set-data", { user: "ada", tags: ["x", 1] });
    const rooms = await roomsOf(socket);
    assert.deepEqual(rooms, [alerts, news, socket.id].sort());
    const outsider = new Tracked(await clients.connect("/"), "outsider");
    await ack(outsider.socket, "join", other);

    // Every target the socket can be reached by: each room, both rooms at once (one
    // copy), and its own id (a direct message). Every 5th tick goes to a room it is
    // not in and must never reach it.
    const id = socket.id; // socket.id is undefined on the client while it is away
    const targets = (n) => [[news], [alerts], [news, alerts], [id], [other]][n % 5];
    const pub = new Publisher([await clients.connect("/")], targets);
    pub.start();
    const echoes = [];
    socket.on("echo", (...args) => echoes.push(args));
    for (let drop = 1; drop <= 3; drop++) {
      await sleep(250);
      // A direct socket.emit (the echo) is answered as the transport goes: it is stored
      // like a broadcast, so it arrives exactly once, now or replayed.
      socket.emit("echo", `direct-${drop}`);
      socket.io.engine.close();
      await t.connectedTimes(drop + 1);
      assert.equal(socket.recovered, true, `recovered after drop ${drop}`);
      assert.equal(socket.id, t.firstId, `same id after drop ${drop}`);
    }
    await sleep(250);
    const n = await pub.stop();

    assert.equal(t.drops.length, 3, `drops: ${t.drops}`);
    assert.deepEqual(t.connects.map((c) => [c.recovered, c.id]), [[false, t.firstId], ...Array(3).fill([true, t.firstId])]);
    assert.deepEqual(await roomsOf(socket), rooms, "same rooms");
    assert.deepEqual(await ack1(socket, "get-data"), { user: "ada", tags: ["x", 1] }, "same data");
    assert.equal(await ack1(socket, "recovered"), true, "socket.recovered on the server side");
    // Only the ticks meant for it: every n with n % 5 != 4.
    const mine = [];
    for (let i = 0; i < n; i++) if (i % 5 !== 4) mine.push(i);
    const deadline = Date.now() + 5000;
    while (t.ticks.length < mine.length && Date.now() < deadline) await sleep(50);
    assert.deepEqual(t.ticks, mine, `every event to its rooms and id exactly once, in order (${n} emitted)`);
    assert.ok(t.replayed >= 10, `missed events were replayed on reconnection (replayed ${t.replayed})`);
    assert.deepEqual(t.noOffset, [], "every stored event carries its offset");
    const theirs = [];
    for (let i = 4; i < n; i += 5) theirs.push(i);
    while (outsider.ticks.length < theirs.length && Date.now() < deadline) await sleep(50);
    assert.deepEqual(outsider.ticks, theirs, "the room it is not in reached only the outsider");
    assert.deepEqual(echoes.map((e) => e[0]), ["direct-1", "direct-2", "direct-3"], "each direct emit exactly once, in order");
    assert.ok(echoes.every((e) => e.length === 2 && typeof e[1] === "string"), `direct emits carry an offset: ${JSON.stringify(echoes)}`);
  });

  test("a socket in no room but its own still gets what was sent to its id while it was away", async () => {
    const [t] = await connectTracked(clients, 1, "lonely", { reconnectionDelay: 300, reconnectionDelayMax: 300, randomizationFactor: 0 });
    const pub = new Publisher([await clients.connect("/")], [t.socket.id]);
    pub.start();
    await sleep(200);
    t.socket.io.engine.close();
    await t.connectedTimes(2);
    await sleep(200);
    const n = await pub.stop();
    assert.deepEqual(t.connects.map((c) => c.recovered), [false, true]);
    assert.equal(t.socket.id, t.firstId);
    assert.ok(t.replayed > 0, `replayed ${t.replayed}`);
    await assertEveryTickOnce([t], n);
  });
});

describe("connection state recovery that is no longer possible", () => {
  let server;
  let clients;

  before(async () => {
    server = await startTestapp({ extraArgs: ["--recovery", "1000"] });
    clients = new Clients(server.url, { transports: ["websocket"] });
  });

  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  /** Checks a fresh socket: new id, only its own room, no data, not recovered anywhere. */
  async function assertFresh(t, oldId) {
    const socket = t.socket;
    assert.equal(socket.recovered, false, "recovered");
    assert.notEqual(socket.id, oldId, "a new socket id");
    assert.deepEqual(await roomsOf(socket), [socket.id], "no room of the old socket");
    assert.equal(await ack1(socket, "get-data"), null, "no data of the old socket");
    assert.equal(await ack1(socket, "recovered"), false, "socket.recovered on the server side");
  }

  test("offline longer than max_disconnection_duration (1 s): recovered === false, a fresh socket, nothing replayed", async () => {
    // Reconnects 1.5 s after the drop, half a second after its session expired.
    const [t] = await connectTracked(clients, 1, "late", { reconnectionDelay: 1500, reconnectionDelayMax: 1500, randomizationFactor: 0 });
    const room = unique("room");
    await ack(t.socket, "join", room);
    await ack(t.socket, "set-data", { user: "bob" });
    const pub = new Publisher([await clients.connect("/")], [room]);
    pub.start();
    await sleep(200);
    const before = t.ticks.length;
    assert.ok(before > 0, "got events before the drop");
    const droppedAt = Date.now();
    t.socket.io.engine.close();
    await t.connectedTimes(2, 5000);
    assert.ok(Date.now() - droppedAt >= 1400, "was offline for the whole reconnection delay");
    await sleep(200);
    const n = await pub.stop();
    await assertFresh(t, t.firstId);
    // What it got is exactly the events before the drop; the ones it missed were not
    // replayed in part, and the fresh socket, in no room, gets no more.
    assert.equal(t.replayed, 0, "nothing replayed");
    assert.deepEqual(t.ticks, [...Array(before).keys()], `only the ${before} events before the drop`);
    assert.ok(n > before + 50, `events were emitted while it was away (${n - before})`);
  });

  test("the node restarted (memory gone): recovered === false and a fresh socket", async () => {
    const [t] = await connectTracked(clients, 1, "restarted");
    await ack(t.socket, "join", unique("room"));
    await ack(t.socket, "set-data", { user: "eve" });
    const disconnected = waitEvent(t.socket, "disconnect", "disconnect on restart");
    const port = server.port;
    await server.stop();
    await disconnected;
    server = await startTestapp({ port, extraArgs: ["--recovery", "1000"] });
    await t.connectedTimes(2);
    await assertFresh(t, t.firstId);
  });
});
