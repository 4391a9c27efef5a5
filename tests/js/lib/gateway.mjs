// Helpers of the gateway suites: a scriptable app that records every request shoal sends
// it (raw body, headers, decoded body, whether the signature holds), and a shoal node
// started from a config file that points at an app.

import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import notepack from "notepack.io";
import { Clients, WAIT_MS } from "./client.mjs";
import { startShoal } from "./server.mjs";

/** `sha256=<hex>` of `raw` with `secret`, as shoal's x-shoal-signature header. */
export function signature(secret, raw) {
  return "sha256=" + createHmac("sha256", secret).update(raw).digest("hex");
}

/**
 * An app on a free port of 127.0.0.1. `handle(request, res)` answers; `request` is
 * `{ url, headers, raw, body, signed }` (body decoded as MessagePack when the content type
 * says so, as JSON otherwise; `signed`: the signature matches `secret`). Every request is
 * kept in `app.requests`; `app.until(predicate)` resolves once `predicate(app.requests)`
 * holds. `app.inFlight[url]`/`app.maxInFlight[url]`: requests to `url` received and not
 * yet answered, now and at most.
 */
export function startApp(secret, handle) {
  const app = { requests: [], inFlight: {}, maxInFlight: {}, waiters: new Set() };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks);
      const msgpack = String(req.headers["content-type"]).includes("msgpack");
      const request = {
        url: req.url,
        headers: req.headers,
        raw,
        body: msgpack ? notepack.decode(raw) : JSON.parse(raw),
        signed: req.headers["x-shoal-signature"] === signature(secret, raw),
      };
      const url = req.url;
      app.inFlight[url] = (app.inFlight[url] ?? 0) + 1;
      app.maxInFlight[url] = Math.max(app.maxInFlight[url] ?? 0, app.inFlight[url]);
      res.on("close", () => (app.inFlight[url] -= 1));
      app.requests.push(request);
      for (const w of app.waiters) w();
      handle(request, res);
    });
  });
  app.until = (predicate, what, ms = WAIT_MS) => {
    if (predicate(app.requests)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!predicate(app.requests)) return;
        app.waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        app.waiters.delete(check);
        reject(new Error(`the app: ${what} not seen within ${ms} ms; got ${JSON.stringify(app.requests.map((r) => [r.url, r.body?.event ?? r.body?.namespace]))}`));
      }, ms);
      app.waiters.add(check);
    });
  };
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      app.port = server.address().port;
      app.url = `http://127.0.0.1:${app.port}`;
      app.close = () => {
        server.closeAllConnections();
        return new Promise((r) => server.close(r));
      };
      resolve(app);
    }),
  );
}

/** Answers `value` as JSON (status 200). */
export function replyJson(res, value) {
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify(value));
}

/**
 * A shoal node whose config file is `config(app.url)` (the app is closed if the node
 * fails to start). Returns `{ app, node, dir, clients }` (websocket clients).
 */
export async function gatewayNode(prefix, app, config) {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  try {
    writeFileSync(path.join(dir, "shoal.toml"), config(app.url));
    const node = await startShoal({ extraArgs: ["--config", path.join(dir, "shoal.toml")] });
    return { app, node, dir, clients: new Clients(node.url, { transports: ["websocket"] }) };
  } catch (err) {
    await stopGatewayNode({ app, dir });
    throw err;
  }
}

export async function stopGatewayNode({ app, node, dir, clients }) {
  clients?.closeAll();
  await node?.stop();
  await app?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
}

/** POSTs `body` as JSON to the publish API; resolves with `{ status, body }`. */
export async function postApi(url, token, body) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}
