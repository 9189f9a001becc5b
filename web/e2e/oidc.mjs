// Browser end-to-end test of single sign-on in the web client: the real `tidings` binary
// configured with one OpenID Connect provider, the real provider (`oidc-provider`, from
// scripts/oidc, installed by scripts/test), and Debian's Chromium. The sign-in page offers
// "Sign in with Example Corp" (in English and Chinese); clicking it goes through the provider's
// own sign-in and consent pages and back into the app, signed in as a new account; a user
// signed in with a password links an identity in settings and then signs in with it; an error
// the callback reports is shown. Screenshots go to target/web-screenshots/ (or SCREENSHOT_DIR).
//
// Run with `npm run e2e:oidc -w web` after building web/dist and the server binary.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../../sdk-ts/test/server.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const shots = process.env.SCREENSHOT_DIR || join(process.env.CARGO_TARGET_DIR || join(root, "target"), "web-screenshots");
mkdirSync(shots, { recursive: true });
const T = 15000;

// The provider first: the server's configuration names its issuer.
const idp = spawn("node", ["provider.mjs"], { cwd: join(root, "scripts/oidc"), stdio: ["pipe", "pipe", "ignore"] });
const lines = createInterface({ input: idp.stdout })[Symbol.asyncIterator]();
const nextLine = async () => {
  const timer = setTimeout(() => {
    console.error("the OpenID provider did not answer in time");
    process.exit(1);
  }, 30000);
  const { value } = await lines.next();
  clearTimeout(timer);
  return value ?? "";
};
const ready = await nextLine();
assert.match(ready, /^READY /);
const issuer = ready.slice("READY ".length);

const dir = mkdtempSync(join(tmpdir(), "tidings-oidc-e2e-"));
const config = join(dir, "tidings.toml");
writeFileSync(
  config,
  `[[oidc.providers]]
id = "corp"
display_name = "Example Corp"
issuer = "${issuer}"
client_id = "tidings-rs"
client_secret = "secret-of-tidings-rs"
allow_create = true
`,
);
const server = await startServer({ TIDINGS_CONFIG: config });
const base = server.baseUrl;
idp.stdin.write(`${base}/oauth/oidc/callback\n`);
assert.equal(await nextLine(), "CONFIGURED");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  // Chinese first: the button's label.
  const zh = await browser.newPage({ locale: "zh-CN", viewport: { width: 900, height: 800 } });
  await zh.goto(base + "/");
  await zh.getByTestId("oidc-corp").waitFor({ timeout: T });
  assert.equal((await zh.getByTestId("oidc-corp").textContent()).trim(), "使用 Example Corp 登录");
  await zh.screenshot({ path: join(shots, "oidc-sign-in-zh.png") });
  await zh.close();

  const page = await browser.newPage({ locale: "en-US", viewport: { width: 900, height: 800 } });
  await page.goto(base + "/");
  const button = page.getByTestId("oidc-corp");
  await button.waitFor({ timeout: T });
  assert.equal((await button.textContent()).trim(), "Sign in with Example Corp");
  await page.screenshot({ path: join(shots, "oidc-sign-in.png") });
  await button.click();
  // The provider's own pages: sign in as "dana", then consent.
  await page.locator('input[name="login"]').waitFor({ timeout: T });
  assert.ok(page.url().startsWith(issuer), `at the provider, not ${page.url()}`);
  await page.fill('input[name="login"]', "dana");
  await page.fill('input[name="password"]', "anything");
  await page.click('button[type="submit"]');
  await page.locator('input[name="prompt"][value="consent"]').waitFor({ state: "attached", timeout: T });
  await page.click('button[type="submit"]');
  // Back in the app, signed in; the one-time code is gone from the address bar.
  await page.getByTestId("nav-chats").waitFor({ timeout: T });
  assert.ok(!page.url().includes("oidc_code"), page.url());
  const stored = await page.evaluate(() => JSON.parse(localStorage.getItem("tidings.tokens") || "null"));
  assert.equal(stored?.username, "dana");
  await page.screenshot({ path: join(shots, "oidc-signed-in.png") });
  await page.close();

  // Linking: erin signs in with her password, links her identity "erin-at-corp" in settings
  // through the provider's pages, and then signs in with it as herself.
  const reg = await fetch(base + "/api/v1/accounts", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "erin", password: "correct horse battery" }),
  });
  assert.equal(reg.status, 201);
  const erin = await browser.newPage({ locale: "en-US", viewport: { width: 900, height: 800 } });
  await erin.goto(base + "/");
  await erin.fill('input[name="username"]', "erin");
  await erin.fill('input[name="password"]', "correct horse battery");
  await erin.getByTestId("auth-submit").click();
  await erin.getByTestId("nav-settings").click({ timeout: T });
  await erin.getByTestId("oidc-link-corp").click({ timeout: T });
  await erin.locator('input[name="login"]').waitFor({ timeout: T });
  await erin.fill('input[name="login"]', "erin-at-corp");
  await erin.fill('input[name="password"]', "anything");
  await erin.click('button[type="submit"]');
  await erin.locator('input[name="prompt"][value="consent"]').waitFor({ state: "attached", timeout: T });
  await erin.click('button[type="submit"]');
  const outcome = erin.getByTestId("oidc-link-outcome");
  await outcome.waitFor({ timeout: T });
  assert.equal((await outcome.textContent()).trim(), "The identity is linked to this account.");
  await erin.screenshot({ path: join(shots, "oidc-linked.png") });
  await erin.close();
  const again = await browser.newPage({ locale: "en-US" });
  await again.goto(base + "/");
  await again.getByTestId("oidc-corp").click({ timeout: T });
  await again.locator('input[name="login"]').waitFor({ timeout: T });
  await again.fill('input[name="login"]', "erin-at-corp");
  await again.fill('input[name="password"]', "anything");
  await again.click('button[type="submit"]');
  // The provider may ask for consent again (its development pages keep no grant across sessions).
  const consent = again.locator('input[name="prompt"][value="consent"]');
  await Promise.race([consent.waitFor({ state: "attached", timeout: T }), again.getByTestId("nav-chats").waitFor({ timeout: T })]);
  if (await consent.count()) await again.click('button[type="submit"]');
  await again.getByTestId("nav-chats").waitFor({ timeout: T });
  const erinTokens = await again.evaluate(() => JSON.parse(localStorage.getItem("tidings.tokens") || "null"));
  assert.equal(erinTokens?.username, "erin");
  await again.close();

  // An outcome the callback reports as an error is shown on the sign-in page.
  const refused = await browser.newPage({ locale: "en-US" });
  await refused.goto(base + "/#oidc_error=unlinked");
  await refused.getByText("No account is linked to that sign-in", { exact: false }).waitFor({ timeout: T });
  await refused.close();
  console.log("[oidc e2e] signed in through the provider; done");
} finally {
  await browser.close();
  await server.stop();
  idp.stdin.end();
  idp.kill();
  rmSync(dir, { recursive: true, force: true });
}
