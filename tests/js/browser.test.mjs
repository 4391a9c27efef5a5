// The demo chat page in real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core): two separate browser contexts (two users with separate storage) chat
// through a shoal node.
//
// Page contract: <input id="name">, <input id="message">, <button id="send"> (Enter in
// #message sends too), <ul id="messages"> with one <li> per received message whose text
// contains "name: text". Event name "chat message".

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { chromium } from "playwright-core";
import { startShoal } from "./lib/server.mjs";
import { unique } from "./lib/client.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const WAIT_MS = 10_000;

// Playwright gives every launch() a fresh temporary user-data-dir of its own (it refuses
// --user-data-dir in args), so no profile state leaks between runs.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

describe("demo chat page in Chromium", () => {
  let server;
  let browser;
  const pageErrors = [];

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (scripts/test.sh does)`);
    server = await startShoal();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30_000,
    });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  async function openChat(label) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("pageerror", (err) => pageErrors.push(`${label}: ${err.message}`));
    const res = await page.goto(`${server.url}/`, { waitUntil: "load", timeout: WAIT_MS });
    assert.equal(res?.status(), 200, `GET / for ${label}`);
    for (const sel of ["#name", "#message", "#send", "#messages"]) {
      await page.waitForSelector(sel, { state: "attached", timeout: WAIT_MS });
    }
    return page;
  }

  /** Texts of the <li> items in #messages. */
  function messages(page) {
    return page.$$eval("#messages li", (lis) => lis.map((li) => li.textContent ?? ""));
  }

  async function send(page, name, text, { enter = false } = {}) {
    await page.fill("#name", name);
    await page.fill("#message", text);
    if (enter) await page.press("#message", "Enter");
    else await page.click("#send");
  }

  async function waitForMessage(page, expected, label) {
    try {
      await page.waitForFunction(
        (exp) =>
          [...document.querySelectorAll("#messages li")].some((li) => (li.textContent ?? "").includes(exp)),
        expected,
        { timeout: WAIT_MS, polling: 50 },
      );
    } catch {
      assert.fail(`${label}: "${expected}" not shown within ${WAIT_MS} ms; list: ${JSON.stringify(await messages(page))}`);
    }
  }

  test("a message sent in one browser appears in the other", async () => {
    const alice = await openChat("alice");
    const bob = await openChat("bob");

    // Both pages connect on their own schedule: Bob says hello until Alice sees one,
    // which proves both sockets are connected before the real check.
    let synced = false;
    const deadline = Date.now() + WAIT_MS;
    for (let i = 0; !synced && Date.now() < deadline; i++) {
      await send(bob, "bob", `sync-${i}`);
      synced = await alice
        .waitForFunction(
          () => [...document.querySelectorAll("#messages li")].some((li) => li.textContent.includes("bob: sync-")),
          null,
          { timeout: 500, polling: 50 },
        )
        .then(() => true, () => false);
    }
    assert.ok(synced, `alice never received bob's sync messages; alice sees ${JSON.stringify(await messages(alice))}`);

    const text = `hello from alice ${unique("msg")} – ünïcödé 🎉`;
    await send(alice, "alice", text);
    await waitForMessage(bob, `alice: ${text}`, "bob's page");

    // Enter in #message sends too, the other way round.
    const reply = `reply from bob ${unique("msg")}`;
    await send(bob, "bob", reply, { enter: true });
    await waitForMessage(alice, `bob: ${reply}`, "alice's page");

    // Each message appears once in the receiving page.
    const bobList = await messages(bob);
    assert.equal(bobList.filter((t) => t.includes(`alice: ${text}`)).length, 1, JSON.stringify(bobList));

    if (process.env.SHOAL_SCREENSHOT_DIR) {
      // For a person to look at: SHOAL_SCREENSHOT_DIR=/tmp/shots node --test browser.test.mjs
      await alice.screenshot({ path: `${process.env.SHOAL_SCREENSHOT_DIR}/demo-alice.png`, fullPage: true });
      await bob.screenshot({ path: `${process.env.SHOAL_SCREENSHOT_DIR}/demo-bob.png`, fullPage: true });
    }

    assert.deepEqual(pageErrors, [], "uncaught errors in the pages");
  });
});
