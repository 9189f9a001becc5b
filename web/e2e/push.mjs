// Browser test of the service worker's push handling, in Debian's Chromium driven by
// playwright-core against the real `tidings` binary (which serves web/dist and the worker).
// Chromium cannot hold a real push subscription here (that needs Google's service), so the test
// dispatches synthetic push events to the worker through the DevTools protocol
// (`ServiceWorker.deliverPushMessage`) and reads what the worker showed with
// `registration.getNotifications()`: sender and preview, one notification per conversation
// replaced by the newer push, "new message" only in privacy mode.
//
// Run with `npm run e2e:push -w web` after building web/dist and the server binary.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { startServer } from "../../sdk-ts/test/server.mjs";

const T = 15000;
const server = await startServer();
const base = server.baseUrl;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext();
  await context.grantPermissions(["notifications"], { origin: base });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  const registrations = [];
  const versions = new Map();
  cdp.on("ServiceWorker.workerRegistrationUpdated", (e) => registrations.push(...e.registrations));
  cdp.on("ServiceWorker.workerVersionUpdated", (e) => e.versions.forEach((v) => versions.set(v.versionId, v)));
  await cdp.send("ServiceWorker.enable");
  await page.goto(base + "/");
  await page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
  const deadline = Date.now() + T;
  let registrationId;
  while (!registrationId && Date.now() < deadline) {
    registrationId = registrations.find((r) => r.scopeURL.startsWith(base) && !r.isDeleted)?.registrationId;
    if (!registrationId) await page.waitForTimeout(50);
  }
  assert.ok(registrationId, "the service worker registered");
  // `ready` resolves while the worker may still be activating. A first push went unshown once
  // in CI (DevTools reports no delivery result, so the cause is not visible); pushing only to
  // an activated version removes the one difference from the runs that passed.
  while (![...versions.values()].some((v) => v.registrationId === registrationId && v.status === "activated") && Date.now() < deadline) {
    await page.waitForTimeout(50);
  }
  assert.ok([...versions.values()].some((v) => v.registrationId === registrationId && v.status === "activated"), "the service worker activated");

  const push = (payload) =>
    cdp.send("ServiceWorker.deliverPushMessage", { origin: base, registrationId, data: JSON.stringify(payload) });
  const shown = async (count, wait = T) => {
    const end = Date.now() + wait;
    for (;;) {
      const list = await page.evaluate(async () =>
        (await (await navigator.serviceWorker.ready).getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data })),
      );
      if (list.length >= count || Date.now() > end) return list;
      await page.waitForTimeout(50);
    }
  };

  // A synthetic push can still be lost between DevTools and a worker that is starting (the
  // delivery result is not reported back); the first one is offered up to three times. The
  // payloads are the same notification (one tag), so a repeat cannot add a second one.
  const first = { kind: "message", conversation_id: 7, sender: "alice", preview: "hello bob", count: 1, badge: 1, ts: Date.now() };
  let list = [];
  for (let attempt = 1; attempt <= 3 && list.length === 0; attempt++) {
    if (attempt > 1) console.log(`[push e2e] nothing shown yet; delivering the first push again (attempt ${attempt})`);
    await push(first);
    list = await shown(1, 5000);
  }
  assert.equal(list.length, 1, JSON.stringify(list));
  assert.deepEqual([list[0].title, list[0].body, list[0].tag, list[0].data.conversation_id], ["alice", "hello bob", "conv-7", 7]);

  // The same conversation: replaced, with the count.
  await push({ kind: "message", conversation_id: 7, sender: "alice", preview: "still there?", count: 2, badge: 2, ts: Date.now() });
  await page.waitForTimeout(300);
  list = await shown(1);
  assert.equal(list.length, 1, JSON.stringify(list));
  assert.equal(list[0].body, "still there? (+1)");

  // Another conversation in privacy mode: a second notification without sender or text.
  await push({ kind: "message", conversation_id: 9, count: 3, badge: 5, ts: Date.now() });
  list = await shown(2);
  const other = list.find((n) => n.tag === "conv-9");
  assert.ok(other, JSON.stringify(list));
  assert.deepEqual([other.title, other.body], ["Tidings", "3 new messages"]);
  console.log("[push e2e] the service worker showed pushed notifications per conversation");
} finally {
  await browser.close();
  await server.stop();
}
