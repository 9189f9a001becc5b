// Browser end-to-end test of the web client served by the real `tidings` binary, driven by
// playwright-core in Debian's Chromium: three people register; alice and bob become friends,
// chat both ways, see typing and read ticks, react, reply, edit and answer in a thread, send a
// file and download it
// intact, chat in a
// group; the server goes down and comes back while alice writes (banner, pending, delivered
// once); bob blocks carol, whose next message is refused; alice switches to Chinese; dave turns
// on two-factor sign-in and signs in again with a TOTP code computed here. Screenshots of the main screens go
// to target/web-screenshots/ (or SCREENSHOT_DIR).
//
// Run with `npm run e2e -w web` after building web/dist and the server binary (scripts/test
// does both). CHROMIUM may name another browser binary.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync, rmSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../../sdk-ts/test/server.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const shots = process.env.SCREENSHOT_DIR || join(process.env.CARGO_TARGET_DIR || join(root, "target"), "web-screenshots");
mkdirSync(shots, { recursive: true });
const PASSWORD = "correct horse battery";
const T = 15000;

let server = await startServer();
const base = server.baseUrl;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const started = Date.now();
let step = "start";
const log = (s) => {
  step = s;
  console.log(`[e2e +${((Date.now() - started) / 1000).toFixed(1)}s] ${s}`);
};

const people = [];
// Every Content-Security-Policy violation Chromium reports; the run fails if there is any (the
// server's policy allows no inline script or style, and only its own origin to connect).
const cspViolations = [];
async function person(name, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport, locale: "en-US", acceptDownloads: true });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") console.error(`[${name}] console: ${m.text()}`);
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(`[${name}] ${m.text()}`);
  });
  const p = { name, context, page };
  people.push(p);
  return p;
}

async function register(p, username) {
  await p.page.goto(base + "/");
  await p.page.getByTestId("auth-toggle").click();
  await p.page.getByLabel("Username").fill(username);
  await p.page.getByLabel("Password").fill(PASSWORD);
  await p.page.getByTestId("auth-submit").click();
  await p.page.getByTestId("nav-chats").waitFor({ timeout: T });
  // Online: the connecting banner goes away once the first sync is done.
  await p.page.getByTestId("connection-banner").waitFor({ state: "detached", timeout: T });
}

/** RFC 4648 base32 to bytes. */
function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of text.replace(/=+$/, "").toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

/** The RFC 6238 code (HMAC-SHA-1, 6 digits, 30 s) of the step `offset` steps from now,
 * computed here independently of the server. */
function totp(secret, offset = 0) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000) + offset));
  const mac = createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const o = mac[19] & 0x0f;
  const n = ((mac[o] & 0x7f) << 24) | (mac[o + 1] << 16) | (mac[o + 2] << 8) | mac[o + 3];
  return String(n % 1_000_000).padStart(6, "0");
}

/** Waits until at least 12 s of the current 30 s step remain, so computed codes stay valid. */
async function waitForFreshStep() {
  const into = (Date.now() / 1000) % 30;
  if (into > 18) await new Promise((r) => setTimeout(r, (30 - into) * 1000 + 200));
}

async function searchPerson(p, q) {
  await p.page.getByTestId("nav-contacts").click();
  await p.page.getByTestId("user-search").fill(q);
}

// The mouse moves away first so hover toolbars do not cover the screen.
const shot = async (p, file) => {
  await p.page.mouse.move(1, 1).catch(() => undefined);
  await p.page.screenshot({ path: join(shots, file) });
};

try {
  // The app is what `/` serves (embedded in the binary), not the plain landing page.
  const index = await fetch(base + "/");
  const html = await index.text();
  assert.match(html, /<div id="root">/, "the binary serves the built web client at /");
  const csp = index.headers.get("content-security-policy") ?? "";
  assert.match(csp, /script-src 'self'/, "the app is served with the strict CSP");
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, "the CSP allows no inline code");

  const alice = await person("alice");
  const bob = await person("bob");
  const carol = await person("carol");
  const suffix = randomBytes(3).toString("hex");
  const names = { alice: `alice${suffix}`, bob: `bob${suffix}`, carol: `carol${suffix}` };

  log("sign-in screen");
  await alice.page.goto(base + "/");
  await alice.page.getByTestId("auth-submit").waitFor();
  await shot(alice, "01-sign-in.png");

  log("register three users");
  await register(alice, names.alice);
  await register(bob, names.bob);
  await register(carol, names.carol);

  log("alice asks bob to be friends; bob accepts");
  await searchPerson(alice, names.bob);
  await alice.page.getByTestId(`add-${names.bob}`).click();
  await alice.page.getByText("Sent requests").waitFor({ timeout: T });
  await bob.page.getByTestId("nav-contacts").click();
  await bob.page.getByTestId(`accept-${names.alice}`).click({ timeout: T });
  await bob.page.locator(".person-list", { hasText: "Friends" }).getByTestId(`person-${names.alice}`).waitFor({ timeout: T });
  await alice.page.getByTestId("user-search").fill("");
  await alice.page.locator(".person-list", { hasText: "Friends" }).getByTestId(`person-${names.bob}`).waitFor({ timeout: T });
  await shot(bob, "02-contacts.png");

  log("alice writes to bob");
  await alice.page.locator(".person-list", { hasText: "Friends" }).getByTestId(`message-${names.bob}`).click();
  await alice.page.getByRole("heading", { name: names.bob }).waitFor({ timeout: T });
  await alice.page.getByTestId("composer").fill("Hello Bob! Lunch at noon?");
  await alice.page.getByTestId("composer").press("Enter");
  await alice.page.locator(".row.mine .bubble", { hasText: "Hello Bob!" }).waitFor({ timeout: T });

  log("bob sees it with an unread badge, opens it; alice sees the read tick");
  await bob.page.getByTestId("nav-chats").click();
  const bobConv = bob.page.getByTestId(`conv-${names.alice}`);
  await bobConv.locator(".badge").waitFor({ timeout: T });
  await bobConv.click();
  await bob.page.locator(".row.theirs .bubble", { hasText: "Hello Bob!" }).waitFor({ timeout: T });
  await alice.page.getByTestId("tick-read").first().waitFor({ timeout: T });

  log("bob types; alice sees the typing indicator; bob answers");
  await bob.page.getByTestId("composer").pressSequentially("Sure, see y", { delay: 30 });
  await alice.page.getByTestId("chat-subtitle").filter({ hasText: "typing" }).waitFor({ timeout: T });
  await bob.page.getByTestId("composer").pressSequentially("ou there 🍜");
  await bob.page.getByTestId("composer").press("Enter");
  await alice.page.locator(".row.theirs .bubble", { hasText: "Sure, see you there" }).waitFor({ timeout: T });
  await bob.page.getByTestId("tick-read").first().waitFor({ timeout: T });
  // Presence: bob is online in alice's header.
  await alice.page.getByTestId("chat-subtitle").filter({ hasText: "online" }).waitFor({ timeout: T });

  log("rich messages: bob reacts and replies with a quote; alice edits her message");
  const helloRow = bob.page.locator(".row.theirs", { hasText: "Hello Bob!" });
  await helloRow.hover();
  await helloRow.getByRole("button", { name: "React with 👍" }).click();
  await alice.page.locator(".row.mine", { hasText: "Hello Bob!" }).getByTestId("reaction").filter({ hasText: "👍" }).waitFor({ timeout: T });
  await helloRow.hover();
  await helloRow.getByTestId("reply").click();
  await bob.page.getByTestId("compose-context").waitFor();
  await bob.page.getByTestId("composer").fill("Noon works 👌");
  await bob.page.getByTestId("composer").press("Enter");
  const quoted = alice.page.locator(".row.theirs", { hasText: "Noon works" }).locator(".quote");
  await quoted.filter({ hasText: "Hello Bob!" }).waitFor({ timeout: T });
  const mineHello = alice.page.locator(".row.mine", { hasText: "Hello Bob!" });
  await mineHello.hover();
  await mineHello.getByTestId("edit").click();
  await alice.page.getByTestId("composer").fill("Hello Bob! Lunch at 12:30?");
  await alice.page.getByTestId("composer").press("Enter");
  await bob.page.locator(".row.theirs", { hasText: "Lunch at 12:30?" }).locator(".edited").waitFor({ timeout: T });

  log("bob answers in a thread under alice's message; alice sees the thread count");
  const editedRow = bob.page.locator(".row.theirs", { hasText: "Lunch at 12:30?" });
  await editedRow.hover();
  await editedRow.getByTestId("reply-thread").click();
  await bob.page.getByTestId("composer").fill("12:30 is fine, I'll book a table");
  await bob.page.getByTestId("composer").press("Enter");
  await alice.page.locator(".row.mine", { hasText: "Lunch at 12:30?" }).getByTestId("thread-chip").filter({ hasText: "1" }).waitFor({ timeout: T });
  await alice.page.locator(".row.theirs", { hasText: "book a table" }).locator(".quote.thread").waitFor({ timeout: T });

  log("alice sends a file; bob downloads it intact");
  const bytes = randomBytes(256 * 1024 + 123);
  await alice.page.getByTestId("file-input").setInputFiles({ name: "report.bin", mimeType: "application/octet-stream", buffer: bytes });
  await alice.page.locator(".row.mine .file-name", { hasText: "report.bin" }).waitFor({ timeout: T });
  const fileRow = bob.page.locator(".row.theirs", { hasText: "report.bin" });
  await fileRow.waitFor({ timeout: T });
  const [download] = await Promise.all([bob.page.waitForEvent("download", { timeout: T }), fileRow.getByTestId("download").click()]);
  const dir = mkdtempSync(join(tmpdir(), "tidings-e2e-"));
  const saved = join(dir, "got.bin");
  await download.saveAs(saved);
  assert.equal(download.suggestedFilename(), "report.bin");
  const sha = (b) => createHash("sha256").update(b).digest("hex");
  assert.equal(sha(readFileSync(saved)), sha(bytes), "the downloaded file equals the uploaded one");
  rmSync(dir, { recursive: true, force: true });

  log("an image dropped on the chat shows as a preview on both sides");
  const png = readFileSync(join(root, "web/public/icon-192.png"));
  const dataTransfer = await alice.page.evaluateHandle((b64) => {
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], "tidings-icon.png", { type: "image/png" }));
    return dt;
  }, png.toString("base64"));
  await alice.page.dispatchEvent("section.chat", "drop", { dataTransfer });
  for (const p of [alice, bob]) {
    const img = p.page.locator("img.file-img[alt='tidings-icon.png']");
    await img.waitFor({ timeout: T });
    // Polled with evaluate: waitForFunction would need 'unsafe-eval', which the page's CSP refuses.
    for (const until = Date.now() + T; !(await img.evaluate((el) => el.complete && el.naturalWidth === 192)); ) {
      assert.ok(Date.now() < until, "the preview did not load");
      await p.page.waitForTimeout(100);
    }
    assert.match(await img.getAttribute("src"), /\/thumbnail\?.*size=320/, "the bubble shows the thumbnail");
  }

  log("a few more messages for the screenshots");
  for (const text of ["I'll bring the slides.", "Great — the report is above."]) {
    await alice.page.getByTestId("composer").fill(text);
    await alice.page.getByTestId("composer").press("Enter");
  }
  await bob.page.locator(".row.theirs .bubble", { hasText: "the report is above" }).waitFor({ timeout: T });
  await shot(alice, "03-chat-alice.png");
  await shot(bob, "04-chat-bob.png");

  log("bob's tab is hidden: a message raises a browser notification, a muted conversation does not");
  await bob.context.grantPermissions(["notifications"], { origin: base });
  await bob.page.evaluate(() => {
    // Record what the page shows (the real Notification still runs) and report the tab hidden.
    const Real = window.Notification;
    window.__shown = [];
    window.Notification = class extends Real {
      constructor(title, options) {
        super(title, options);
        window.__shown.push({ title, body: options?.body, tag: options?.tag });
      }
    };
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  });
  await alice.page.getByTestId("composer").fill("Are you still there?");
  await alice.page.getByTestId("composer").press("Enter");
  // Polled with evaluate: waitForFunction would need 'unsafe-eval', which the page's CSP refuses.
  for (const until = Date.now() + T; (await bob.page.evaluate(() => window.__shown.length)) < 1; ) {
    assert.ok(Date.now() < until, "no notification was shown");
    await bob.page.waitForTimeout(100);
  }
  const [shown] = await bob.page.evaluate(() => window.__shown);
  assert.ok(shown.title.includes(names.alice), shown.title);
  assert.equal(shown.body, "Are you still there?");
  assert.match(shown.tag, /^conv-\d+$/);
  await bob.page.evaluate(async (peer) => {
    const c = window.tidings;
    const conv = [...c.conversations.values()].find((s) => s.conversation.peer?.username === peer);
    await c.updateSettings(conv.conversation.id, { notify: "none" });
  }, names.alice);
  await alice.page.getByTestId("composer").fill("(muted, no notification)");
  await alice.page.getByTestId("composer").press("Enter");
  await bob.page.locator(".row.theirs .bubble", { hasText: "muted, no notification" }).waitFor({ timeout: T });
  assert.equal(await bob.page.evaluate(() => window.__shown.length), 1, "a muted conversation stays silent");
  await bob.page.evaluate(async (peer) => {
    const c = window.tidings;
    const conv = [...c.conversations.values()].find((s) => s.conversation.peer?.username === peer);
    await c.updateSettings(conv.conversation.id, { notify: "all" });
    delete document.hidden;
  }, names.alice);

  log("alice creates a group with bob; bob sees it and alice's role");
  await alice.page.getByTestId("nav-chats").click();
  await alice.page.getByTestId("new-group").click();
  await alice.page.getByTestId("group-title").fill("Lunch club");
  await alice.page.getByRole("dialog").getByLabel(names.bob).check();
  await alice.page.getByTestId("group-create").click();
  await alice.page.getByRole("heading", { name: "Lunch club" }).waitFor({ timeout: T });
  await alice.page.getByTestId("composer").fill("Welcome to the lunch club 🥗");
  await alice.page.getByTestId("composer").press("Enter");
  await bob.page.getByTestId("nav-chats").click();
  await bob.page.getByTestId("conv-Lunch club").click({ timeout: T });
  await bob.page.locator(".row.theirs .bubble", { hasText: "Welcome to the lunch club" }).waitFor({ timeout: T });

  log("alice mentions bob through the autocomplete list, in Markdown; bob sees it rendered and mentioned");
  const composerA = alice.page.getByTestId("composer");
  await composerA.fill("");
  await composerA.pressSequentially("@bo");
  const mentionList = alice.page.getByTestId("mention-list");
  await mentionList.getByRole("option", { name: `@${names.bob}` }).waitFor({ timeout: T });
  await composerA.press("Enter");
  assert.equal(await composerA.inputValue(), `@${names.bob} `, "the pick completes the name");
  await composerA.pressSequentially("the **plan** is `12:30` at [the park](https://example.org/park)");
  await composerA.press("Enter");
  const planBubble = bob.page.locator(".row.theirs .bubble", { hasText: "is 12:30" });
  await planBubble.locator("strong", { hasText: "plan" }).waitFor({ timeout: T });
  await planBubble.locator("code", { hasText: "12:30" }).waitFor();
  assert.equal(await planBubble.locator("a", { hasText: "the park" }).getAttribute("href"), "https://example.org/park");
  const planned = await bob.page.evaluate(async (title) => {
    const c = window.tidings;
    const conv = [...c.conversations.values()].find((s) => s.conversation.title === title);
    const last = (await c.rest.history(conv.conversation.id)).messages.at(-1);
    return { kind: last.body.kind, mentions: last.mentions?.users ?? [], me: c.me.user_id };
  }, "Lunch club");
  assert.equal(planned.kind, "markdown");
  assert.deepEqual(planned.mentions, [planned.me], "bob is mentioned");

  log("a location, a contact card and a forwarded message render as cards");
  await alice.page.evaluate(async (title) => {
    const c = window.tidings;
    const conv = [...c.conversations.values()].find((s) => s.conversation.title === title).conversation;
    c.send(conv.id, { kind: "location", latitude: 31.2304, longitude: 121.4737, name: "人民广场" });
    c.send(conv.id, { kind: "contact", user_id: c.me.user_id });
  }, "Lunch club");
  // The forward goes through the message's action bar and the conversation picker.
  const welcomeRow = alice.page.locator(".row", { hasText: "Welcome to the lunch club" }).first();
  await welcomeRow.hover();
  await welcomeRow.getByTestId("forward-btn").click();
  await alice.page.getByRole("dialog").getByTestId("forward-to-Lunch club").click({ timeout: T });
  await bob.page.getByTestId("location").filter({ hasText: "人民广场" }).waitFor({ timeout: T });
  assert.match(await bob.page.getByTestId("location").locator("a").getAttribute("href"), /^https:\/\/www\.openstreetmap\.org\/\?mlat=31\.23040&mlon=121\.47370/);
  await bob.page.getByTestId("contact-card").filter({ hasText: names.alice }).waitFor({ timeout: T });
  await bob.page.getByTestId("forward").filter({ hasText: "Welcome to the lunch club" }).waitFor({ timeout: T });
  await shot(bob, "05a-rich-bodies.png");

  log("bob archives the group: it leaves the list for the archived view, and comes back");
  await bob.page.getByTestId("archive-btn").click();
  await bob.page.getByTestId("conv-Lunch club").waitFor({ state: "detached", timeout: T });
  await bob.page.getByTestId("archived-toggle").filter({ hasText: "Archived (1)" }).click({ timeout: T });
  await bob.page.getByTestId("conv-Lunch club").waitFor({ timeout: T });
  await bob.page.getByTestId(`conv-${names.alice}`).waitFor({ state: "detached" });
  await bob.page.getByTestId("archive-btn").click();
  await bob.page.getByTestId("archived-toggle").click();
  await bob.page.getByTestId("conv-Lunch club").waitFor({ timeout: T });
  await bob.page.getByTestId(`conv-${names.alice}`).waitFor({ timeout: T });
  await bob.page.getByTestId("members-btn").click();
  const members = bob.page.getByRole("dialog");
  await members.getByText("Owner").waitFor({ timeout: T });
  await members.getByText(names.alice).waitFor();
  await shot(bob, "05-group-members.png");
  await bob.page.keyboard.press("Escape");
  await members.waitFor({ state: "detached" });

  log("carol joins the group with alice's invite link; alice (owner) removes her again");
  await alice.page.getByTestId("members-btn").click();
  const aliceMembers = alice.page.getByRole("dialog");
  await aliceMembers.getByRole("button", { name: "Create invite link" }).click();
  const link = (await aliceMembers.locator(".notice").textContent({ timeout: T })).replace(/^.*?(http\S+).*$/, "$1");
  assert.match(link, /\/join\//);
  await carol.page.goto(link);
  await carol.page.getByRole("heading", { name: "Lunch club" }).waitFor({ timeout: T });
  await carol.page.locator(".bubble", { hasText: "Welcome to the lunch club" }).first().waitFor({ timeout: T });
  await aliceMembers.getByRole("button", { name: "Close" }).click();
  await alice.page.getByTestId("members-btn").click();
  const carolRow = alice.page.getByRole("dialog").locator(".person", { hasText: names.carol });
  await carolRow.getByRole("button", { name: "Remove" }).click({ timeout: T });
  await carolRow.waitFor({ state: "detached", timeout: T });
  await alice.page.keyboard.press("Escape");

  log("the server goes away: banner, and a message written meanwhile stays pending");
  await bob.page.getByTestId(`conv-${names.alice}`).click();
  await alice.page.getByTestId(`conv-${names.bob}`).click();
  const port = new URL(base).port;
  await server.stop({ keepData: true });
  await alice.page.getByTestId("connection-banner").filter({ hasText: "Reconnecting" }).waitFor({ timeout: T });
  await alice.page.getByTestId("composer").fill("Written while the server was away");
  await alice.page.getByTestId("composer").press("Enter");
  await alice.page.getByTestId("pending-message").waitFor({ timeout: T });
  await shot(alice, "06-reconnecting.png");

  log("the server is back: reconnect, resync, the message is delivered exactly once");
  server = await startServer({}, { dataDir: server.dataDir, listen: `127.0.0.1:${port}` });
  await alice.page.getByRole("button", { name: "Retry now" }).click().catch(() => undefined);
  await alice.page.getByTestId("connection-banner").waitFor({ state: "detached", timeout: 40000 });
  await alice.page.getByTestId("pending-message").waitFor({ state: "detached", timeout: T });
  const away = bob.page.locator(".row.theirs .bubble", { hasText: "Written while the server was away" });
  await away.waitFor({ timeout: 40000 });
  await bob.page.waitForTimeout(500);
  assert.equal(await away.count(), 1, "delivered once");

  log("carol writes to bob; bob blocks carol; carol's next message is refused");
  await searchPerson(carol, names.bob);
  await carol.page.locator(".person-list", { hasText: "Search results" }).getByTestId(`message-${names.bob}`).click({ timeout: T });
  await carol.page.getByRole("heading", { name: names.bob }).waitFor({ timeout: T });
  await carol.page.getByTestId("composer").fill("Hi bob, it's carol");
  await carol.page.getByTestId("composer").press("Enter");
  await carol.page.locator(".row.mine .bubble", { hasText: "it's carol" }).waitFor({ timeout: T });
  await bob.page.getByTestId(`conv-${names.carol}`).waitFor({ timeout: T });
  await searchPerson(bob, names.carol);
  await bob.page.getByTestId(`block-${names.carol}`).click({ timeout: T });
  await bob.page.locator(".person-list", { hasText: "Blocked" }).getByTestId(`person-${names.carol}`).waitFor({ timeout: T });
  await carol.page.getByTestId("composer").fill("Are you there?");
  await carol.page.getByTestId("composer").press("Enter");
  await carol.page.getByTestId("failed-message").filter({ hasText: "does not accept messages" }).waitFor({ timeout: T });
  await shot(carol, "07-blocked.png");
  const history = await bob.page.evaluate(async (convs) => {
    const c = window.tidings;
    const conv = [...c.conversations.values()].find((s) => s.conversation.peer?.username === convs);
    return conv ? (await c.rest.history(conv.conversation.id)).messages.map((m) => m.body.text) : null;
  }, names.carol);
  assert.deepEqual(history, ["Hi bob, it's carol"], "bob never received the message sent after the block");

  log("alice switches to Chinese");
  await alice.page.getByTestId("nav-settings").click();
  await alice.page.getByTestId("lang-zh-CN").click();
  await alice.page.getByRole("heading", { name: "设置" }).waitFor({ timeout: T });
  await alice.page.getByRole("button", { name: "消息", exact: true }).waitFor();
  await alice.page.getByRole("button", { name: "联系人", exact: true }).waitFor();
  await alice.page.getByText("已登录的设备").waitFor();
  await alice.page.getByTestId("devices").getByText("本设备").waitFor();
  assert.equal(await alice.page.evaluate(() => document.documentElement.lang), "zh-CN");
  await shot(alice, "08-settings-zh.png");

  log("dark theme, and the phone layout");
  await alice.page.getByTestId("theme-dark").click();
  await alice.page.getByTestId("nav-chats").click();
  await alice.page.getByTestId(`conv-${names.bob}`).click();
  await alice.page.locator(".row.theirs .bubble", { hasText: "Sure, see you there" }).waitFor({ timeout: T });
  await shot(alice, "09-chat-dark-zh.png");
  await bob.page.setViewportSize({ width: 360, height: 740 });
  await bob.page.getByTestId("nav-chats").click();
  await bob.page.getByRole("button", { name: "Back to conversations" }).click();
  await shot(bob, "10-phone-list.png");
  await bob.page.getByTestId(`conv-${names.alice}`).click();
  await bob.page.locator(".row.theirs .bubble", { hasText: "the report is above" }).waitFor({ timeout: T });
  await shot(bob, "11-phone-chat.png");

  log("offline start: the service worker serves the app shell without the network");
  await alice.page.evaluate(async () => {
    await navigator.serviceWorker.ready;
  });
  await alice.context.setOffline(true);
  await alice.page.reload();
  await alice.page.getByTestId("nav-chats").waitFor({ timeout: T });
  await alice.page.getByTestId("connection-banner").waitFor({ timeout: T });
  await shot(alice, "12-offline-start.png");
  await alice.context.setOffline(false);

  log("sign out");
  await bob.page.setViewportSize({ width: 1280, height: 800 });
  await bob.page.getByTestId("nav-settings").click();
  await bob.page.getByTestId("sign-out").click();
  await bob.page.getByTestId("auth-submit").waitFor({ timeout: T });

  log("two-factor sign-in: dave enrols with the shown key and signs in with a computed code");
  const dave = await person("dave");
  await register(dave, "dave");
  await dave.page.getByTestId("nav-settings").click();
  await waitForFreshStep();
  await dave.page.getByTestId("totp-password").fill(PASSWORD);
  await dave.page.getByTestId("totp-begin").click();
  const secret = (await dave.page.getByTestId("totp-secret").textContent({ timeout: T })).trim();
  const uri = await dave.page.getByTestId("totp-uri").textContent();
  assert.match(uri, new RegExp(`^otpauth://totp/Tidings:dave\\?secret=${secret}&`), "the key URI names the key");
  // The previous step's code confirms, leaving the current one for the sign-in.
  await dave.page.getByTestId("totp-confirm-code").fill(totp(secret, -1));
  await dave.page.getByTestId("totp-confirm").click();
  await dave.page.getByTestId("recovery-codes").waitFor({ timeout: T });
  assert.equal(await dave.page.locator("[data-testid=recovery-codes] li").count(), 10, "ten recovery codes, shown once");
  await dave.page.getByTestId("two-factor-on").waitFor({ timeout: T });
  await shot(dave, "14-two-factor.png");
  await dave.page.getByTestId("sign-out").click();
  await dave.page.getByLabel("Username").fill("dave");
  await dave.page.getByLabel("Password").fill(PASSWORD);
  await dave.page.getByTestId("auth-submit").click();
  // The password alone is not enough now.
  await dave.page.getByTestId("auth-code").fill(totp(secret, 0));
  await dave.page.getByTestId("auth-code-submit").click();
  await dave.page.getByTestId("nav-chats").waitFor({ timeout: T });

  assert.deepEqual(cspViolations, [], "the web client runs under the server's CSP without violations");
  console.log(`[e2e] passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${shots}`);
  writeFileSync(join(shots, "RESULT"), "passed\n");
} catch (e) {
  console.error(`[e2e] FAILED at step "${step}": ${e.stack || e}`);
  process.exitCode = 1;
  // What each browser showed when it failed, for the CI log's reader.
  for (const p of people) await shot(p, `failed-${p.name}.png`).catch(() => undefined);
} finally {
  await browser.close().catch(() => undefined);
  await server.stop();
}
