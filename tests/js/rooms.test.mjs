// Rooms and broadcasts: every operator (to one room, several rooms, except, from a socket,
// local, volatile), broadcasts with acks, fetchSockets, socketsJoin/Leave and
// disconnectSockets, per transport.
//
// "Did not receive" is checked without sleeping: after the broadcast under test, a marker
// is broadcast to a room every test socket is in. A connection delivers in order, so once
// a socket has seen the marker it has seen everything sent to it before.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startTestapp } from "./lib/server.mjs";
import {
  Clients,
  Recorder,
  TIMER_SLACK_MS,
  TRANSPORTS,
  ack,
  ack1,
  unique,
  waitConnect,
  waitDisconnect,
} from "./lib/client.mjs";

for (const transport of TRANSPORTS) {
  describe(`rooms and broadcasts over ${transport.name}`, () => {
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

    /**
     * Connects `n` sockets, all in one fresh "everyone" room, each with a Recorder.
     * Returns { sockets, recs, all, sync() }; sync() broadcasts a marker to "everyone" and
     * waits until every socket saw it.
     */
    async function group(n) {
      const all = unique("all");
      const sockets = await Promise.all(Array.from({ length: n }, () => clients.connect()));
      const recs = sockets.map((s, i) => new Recorder(s, `socket #${i} (${s.id})`));
      for (const s of sockets) await ack(s, "join", all);
      let markers = 0;
      const sync = async () => {
        markers += 1;
        const marker = markers;
        await ack(sockets[0], "broadcast", { to: [all], event: "marker", args: [marker] });
        await Promise.all(
          recs.map((r) =>
            r.until((evs) => evs.some((e) => e[0] === "marker" && e[1] === marker), `marker ${marker}`),
          ),
        );
      };
      return { sockets, recs, all, sync };
    }

    /** How many times each recorder got `event` with exactly `args`. */
    function counts(recs, event, args) {
      return recs.map((r) => r.named(event).filter((a) => isDeepEqual(a, args)).length);
    }

    test("join and leave answer with the sorted rooms, including the socket id", async () => {
      const socket = await clients.connect();
      assert.deepEqual(await ack1(socket, "join", "b-room"), ["b-room", socket.id].sort());
      assert.deepEqual(
        await ack1(socket, "join", ["c-room", "a-room", "b-room"]),
        ["a-room", "b-room", "c-room", socket.id].sort(),
      );
      assert.deepEqual(await ack1(socket, "leave", "b-room"), ["a-room", "c-room", socket.id].sort());
      assert.deepEqual(await ack1(socket, "leave", "never-joined"), ["a-room", "c-room", socket.id].sort());
      assert.deepEqual(await ack1(socket, "leave", "a-room"), ["c-room", socket.id].sort());
    });

    test("to one room reaches its members only, each once", async () => {
      const { sockets, recs, sync } = await group(3);
      const room = unique("r");
      await ack(sockets[0], "join", room);
      await ack(sockets[1], "join", room);
      const args = [1, { x: "y" }, "ü🎉"];
      // Sent from the namespace by the third socket, which is not in the room.
      assert.deepEqual(await ack(sockets[2], "broadcast", { to: [room], event: "news", args }), []);
      await sync();
      assert.deepEqual(counts(recs, "news", args), [1, 1, 0]);
    });

    test("to a room includes the sender when sent from the namespace", async () => {
      const { sockets, recs, sync } = await group(2);
      const room = unique("r");
      await ack(sockets[0], "join", room);
      await ack(sockets[1], "join", room);
      await ack(sockets[0], "broadcast", { to: [room], event: "news", args: ["nsp"] });
      await sync();
      assert.deepEqual(counts(recs, "news", ["nsp"]), [1, 1]);
    });

    test("to several rooms: a socket in two of them gets it exactly once", async () => {
      const { sockets, recs, sync } = await group(4);
      const [r1, r2, r3] = [unique("r1"), unique("r2"), unique("r3")];
      await ack(sockets[0], "join", r1);
      await ack(sockets[1], "join", r2);
      await ack(sockets[2], "join", [r1, r2, r3]);
      await ack(sockets[3], "join", r3); // r3 is not targeted
      await ack(sockets[3], "broadcast", { to: [r1, r2], event: "multi", args: ["once"] });
      await sync();
      assert.deepEqual(counts(recs, "multi", ["once"]), [1, 1, 1, 0]);
    });

    test("to a socket id reaches that socket only", async () => {
      const { sockets, recs, sync } = await group(3);
      await ack(sockets[0], "broadcast", { to: [sockets[1].id], event: "private", args: ["psst"] });
      await sync();
      assert.deepEqual(counts(recs, "private", ["psst"]), [0, 1, 0]);
    });

    test("to an empty room reaches nobody", async () => {
      const { sockets, recs, sync } = await group(2);
      await ack(sockets[0], "broadcast", { to: [unique("empty")], event: "void", args: [] });
      await sync();
      assert.deepEqual(counts(recs, "void", []), [0, 0]);
    });

    test("except excludes the members of a room", async () => {
      const { sockets, recs, all, sync } = await group(4);
      const [r1, r2] = [unique("r1"), unique("r2")];
      await ack(sockets[0], "join", r1);
      await ack(sockets[1], "join", r2);
      await ack(sockets[2], "join", [r1, r2]);
      // to r1 except r2: only socket 0 (socket 2 is in both, so excluded).
      await ack(sockets[3], "broadcast", { to: [r1], except: [r2], event: "ex1", args: [1] });
      // to everyone in the group except r1: sockets 1 and 3.
      await ack(sockets[3], "broadcast", { to: [all], except: [r1], event: "ex2", args: [2] });
      // except several rooms: only socket 3.
      await ack(sockets[3], "broadcast", { to: [all], except: [r1, r2], event: "ex3", args: [3] });
      // except a socket id.
      await ack(sockets[3], "broadcast", { to: [all], except: [sockets[0].id], event: "ex4", args: [4] });
      await sync();
      assert.deepEqual(counts(recs, "ex1", [1]), [1, 0, 0, 0], "to r1 except r2");
      assert.deepEqual(counts(recs, "ex2", [2]), [0, 1, 0, 1], "everyone except r1");
      assert.deepEqual(counts(recs, "ex3", [3]), [0, 0, 0, 1], "everyone except r1 and r2");
      assert.deepEqual(counts(recs, "ex4", [4]), [0, 1, 1, 1], "everyone except socket 0");
    });

    test("except without to: the whole namespace but the excluded room", async () => {
      const { sockets, recs, sync } = await group(3);
      const r = unique("r");
      await ack(sockets[1], "join", r);
      await ack(sockets[0], "broadcast", { except: [r], event: "nsp-except", args: ["e"] });
      await sync();
      assert.deepEqual(counts(recs, "nsp-except", ["e"]), [1, 0, 1]);
    });

    test("from a socket: the sender is excluded", async () => {
      const { sockets, recs, sync } = await group(3);
      const room = unique("r");
      for (const s of sockets) await ack(s, "join", room);
      await ack(sockets[0], "broadcast", { fromSocket: true, to: [room], event: "fs", args: ["r"] });
      await sync();
      assert.deepEqual(counts(recs, "fs", ["r"]), [0, 1, 1], "socket.to(room)");
    });

    test("from a socket without rooms: socket.broadcast reaches everyone else", async () => {
      const { sockets, recs, sync } = await group(3);
      await ack(sockets[1], "broadcast", { fromSocket: true, event: "bc", args: [{ all: true }] });
      await sync();
      assert.deepEqual(counts(recs, "bc", [{ all: true }]), [1, 0, 1]);
    });

    test("from a socket with except", async () => {
      const { sockets, recs, all, sync } = await group(4);
      const r = unique("r");
      await ack(sockets[2], "join", r);
      await ack(sockets[0], "broadcast", {
        fromSocket: true,
        to: [all],
        except: [r],
        event: "fsx",
        args: [],
      });
      await sync();
      assert.deepEqual(counts(recs, "fsx", []), [0, 1, 0, 1]);
    });

    test("local broadcast reaches the room on this node", async () => {
      const { sockets, recs, sync } = await group(3);
      const room = unique("r");
      await ack(sockets[0], "join", room);
      await ack(sockets[2], "join", room);
      await ack(sockets[1], "broadcast", { local: true, to: [room], event: "loc", args: ["l"] });
      await sync();
      assert.deepEqual(counts(recs, "loc", ["l"]), [1, 0, 1]);
    });

    test("volatile broadcast: at most once, only to the room", async () => {
      const { sockets, recs, sync } = await group(3);
      const room = unique("r");
      await ack(sockets[0], "join", room);
      await ack(sockets[1], "join", room);
      await ack(sockets[2], "broadcast", { volatile: true, to: [room], event: "vol", args: ["v"] });
      await sync();
      const got = counts(recs, "vol", ["v"]);
      assert.ok(got[0] <= 1 && got[1] <= 1, `volatile delivered more than once: ${got}`);
      assert.equal(got[2], 0, "volatile reached a socket outside the room");
      if (transport.name === "websocket") {
        // An idle WebSocket is always writable, so nothing should be dropped.
        assert.deepEqual(got, [1, 1, 0], "volatile on idle websockets");
      }
    });

    test("broadcast carries binary attachments to every recipient", async () => {
      const { sockets, recs, sync } = await group(3);
      const room = unique("r");
      await ack(sockets[0], "join", room);
      await ack(sockets[1], "join", room);
      const args = [Buffer.from([1, 2, 3]), { deep: [Buffer.from("x"), "y"] }];
      await ack(sockets[2], "broadcast", { to: [room], event: "bin", args });
      await sync();
      assert.deepEqual(counts(recs, "bin", args), [1, 1, 0]);
    });

    test("broadcast with acks collects the first ack argument of every recipient", async () => {
      const { sockets } = await group(4);
      const room = unique("r");
      for (const [i, s] of sockets.slice(0, 3).entries()) {
        await ack(s, "join", room);
        s.on("poll", (question, callback) => callback(`${question}:${i}`, "ignored second arg"));
      }
      let outsider = 0;
      sockets[3].on("poll", () => (outsider += 1));
      const result = await ack1(sockets[3], "broadcast-with-ack", {
        to: [room],
        timeout: 3000,
        event: "poll",
        args: ["q"],
      });
      assert.equal(result.ok, true, `broadcast-with-ack failed: ${JSON.stringify(result)}`);
      assert.deepEqual([...result.responses].sort(), ["q:0", "q:1", "q:2"]);
      assert.equal(outsider, 0);
    });

    test("broadcast with acks and except", async () => {
      const { sockets } = await group(3);
      const [room, no] = [unique("r"), unique("no")];
      for (const [i, s] of sockets.entries()) {
        await ack(s, "join", room);
        s.on("poll", (callback) => callback({ from: i }));
      }
      await ack(sockets[1], "join", no);
      const result = await ack1(sockets[0], "broadcast-with-ack", {
        to: [room],
        except: [no],
        timeout: 3000,
        event: "poll",
        args: [],
      });
      assert.equal(result.ok, true, JSON.stringify(result));
      assert.deepEqual(
        [...result.responses].sort((a, b) => a.from - b.from),
        [{ from: 0 }, { from: 2 }],
      );
    });

    test("broadcast with acks to nobody succeeds with no responses", async () => {
      const socket = await clients.connect();
      const result = await ack1(socket, "broadcast-with-ack", {
        to: [unique("empty")],
        timeout: 3000,
        event: "poll",
        args: [],
      });
      assert.deepEqual(result, { ok: true, responses: [] });
    });

    test("broadcast with acks times out when one recipient never acks", async () => {
      const { sockets } = await group(3);
      const room = unique("r");
      for (const s of sockets) await ack(s, "join", room);
      sockets[0].on("poll", (callback) => callback("a"));
      sockets[1].on("poll", (callback) => callback("b"));
      sockets[2].on("poll", () => {}); // never acks
      // The node starts the 400 ms timer when it gets the request, after `started`, and
      // answers when it fires: the answer comes in [400, 400 + TIMER_SLACK_MS] ms.
      const started = performance.now();
      const result = await ack1(sockets[0], "broadcast-with-ack", {
        to: [room],
        timeout: 400,
        event: "poll",
        args: [],
      });
      const elapsed = performance.now() - started;
      assert.equal(result.ok, false, JSON.stringify(result));
      assert.equal(result.error, "operation has timed out");
      assert.deepEqual([...result.responses].sort(), ["a", "b"]);
      assert.ok(
        elapsed >= 400 && elapsed <= 400 + TIMER_SLACK_MS,
        `timed out after ${elapsed.toFixed(1)} ms, expected [400, ${400 + TIMER_SLACK_MS}]`,
      );
    });

    test("fetch-sockets lists ids, sorted rooms and data of a room's sockets", async () => {
      const { sockets, all } = await group(3);
      const room = unique("r");
      await ack(sockets[0], "join", room);
      await ack(sockets[2], "join", [room, "zz-extra"]);
      await ack(sockets[0], "set-data", { name: "zero" });
      const expected = [
        { id: sockets[0].id, rooms: [all, room, sockets[0].id].sort(), data: { name: "zero" } },
        { id: sockets[2].id, rooms: [all, room, sockets[2].id, "zz-extra"].sort(), data: null },
      ].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      assert.deepEqual(await ack1(sockets[1], "fetch-sockets", { to: [room] }), expected);
      // Several rooms: union, each socket once.
      const union = await ack1(sockets[1], "fetch-sockets", { to: [room, all] });
      assert.deepEqual(
        union.map((s) => s.id),
        sockets.map((s) => s.id).sort(),
      );
      // No match.
      assert.deepEqual(await ack1(sockets[1], "fetch-sockets", { to: [unique("empty")] }), []);
    });

    test("fetch-sockets without rooms includes every connected socket of the namespace", async () => {
      const { sockets } = await group(2);
      const list = await ack1(sockets[0], "fetch-sockets", {});
      const ids = list.map((s) => s.id);
      for (const s of sockets) assert.ok(ids.includes(s.id), `${s.id} missing from ${ids}`);
      assert.deepEqual(ids, [...ids].sort(), "sorted by id");
    });

    test("sockets-join and sockets-leave act on the matching sockets only", async () => {
      const { sockets, all } = await group(3);
      const [src, dst] = [unique("src"), unique("dst")];
      await ack(sockets[0], "join", src);
      await ack(sockets[1], "join", src);
      assert.deepEqual(await ack(sockets[2], "sockets-join", { to: [src], rooms: [dst, "other"] }), []);
      const inDst = await ack1(sockets[2], "fetch-sockets", { to: [dst] });
      assert.deepEqual(
        inDst.map((s) => s.id),
        [sockets[0].id, sockets[1].id].sort(),
      );
      assert.deepEqual(
        inDst[0].rooms,
        [all, src, dst, "other", inDst[0].id].sort(),
        "rooms after sockets-join",
      );
      // The sockets themselves see their new rooms.
      assert.ok((await ack1(sockets[0], "join", [])).includes(dst));

      assert.deepEqual(await ack(sockets[2], "sockets-leave", { to: [src], rooms: [dst] }), []);
      assert.deepEqual(await ack1(sockets[2], "fetch-sockets", { to: [dst] }), []);
      assert.deepEqual(await ack1(sockets[0], "join", []), [all, src, "other", sockets[0].id].sort());
    });

    test("sockets-join without rooms acts on every socket of the namespace", async () => {
      const { sockets } = await group(2);
      const everyone = unique("everyone");
      await ack(sockets[0], "sockets-join", { rooms: [everyone] });
      const ids = (await ack1(sockets[0], "fetch-sockets", { to: [everyone] })).map((s) => s.id);
      for (const s of sockets) assert.ok(ids.includes(s.id), `${s.id} not joined`);
      await ack(sockets[0], "sockets-leave", { rooms: [everyone] });
      assert.deepEqual(await ack1(sockets[0], "fetch-sockets", { to: [everyone] }), []);
    });

    test("disconnect-sockets disconnects the matching sockets only", async () => {
      const { sockets } = await group(3);
      const room = unique("r");
      await ack(sockets[0], "join", room);
      await ack(sockets[1], "join", room);
      const reasons = [waitDisconnect(sockets[0]), waitDisconnect(sockets[1])];
      assert.deepEqual(await ack(sockets[2], "disconnect-sockets", { to: [room] }), []);
      assert.deepEqual(await Promise.all(reasons), ["io server disconnect", "io server disconnect"]);
      assert.equal(sockets[2].connected, true);
      assert.deepEqual(await ack(sockets[2], "echo", "survivor"), ["survivor"]);
      assert.deepEqual(await ack1(sockets[2], "fetch-sockets", { to: [room] }), []);
    });

    test("disconnect-sockets with close ends the whole session of each match", async () => {
      const manager = clients.manager();
      const main = manager.socket("/");
      const custom = manager.socket("/custom");
      await Promise.all([waitConnect(main), waitConnect(custom)]);
      const bystander = await clients.connect();
      const room = unique("r");
      await ack(main, "join", room);
      const engineClosed = new Promise((r) => manager.engine.once("close", r));
      const mainReason = waitDisconnect(main);
      const customReason = waitDisconnect(custom);
      await ack(bystander, "disconnect-sockets", { to: [room], close: true });
      assert.equal(await mainReason, "io server disconnect");
      const cr = await customReason;
      assert.ok(
        ["io server disconnect", "transport close"].includes(cr),
        `the other namespace of the closed session: unexpected reason ${cr}`,
      );
      await engineClosed;
      assert.deepEqual(await ack(bystander, "echo", "fine"), ["fine"]);
    });
  });
}

function isDeepEqual(a, b) {
  try {
    assert.deepEqual(a, b);
    return true;
  } catch {
    return false;
  }
}
