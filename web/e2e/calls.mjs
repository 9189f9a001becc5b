// A real call between two Chromium contexts through the web client and the real `tidings`
// binary: alice calls bob with video, bob accepts, both reach ICE "connected" and getStats()
// shows inbound audio and video bytes growing on both sides, alice hangs up, bob sees it end and
// the call appears in the history with its duration. Then the same call forced through TURN
// (`iceTransportPolicy: "relay"`) on the embedded TURN server, and once on coturn.
//
// Everything runs inside a network namespace that has only loopback (the script re-runs itself
// under `unshare --net` and brings `lo` up; this needs root, as in CI): Chromium then cannot send
// ICE checks to any address of the machine's real networks.
//
// Run with `npm run e2e:calls -w web` after building web/dist and the server binary
// (scripts/test does both). CHROMIUM may name another browser binary; TURNSERVER coturn's.

import { spawn, spawnSync } from "node:child_process";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

if (!process.env.CALLS_E2E_IN_NETNS) {
  // Re-run in a fresh network namespace with only loopback.
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync("unshare", ["--net", "--", "sh", "-c", `ip link set lo up && exec "${process.execPath}" "${self}"`], {
    stdio: "inherit",
    env: { ...process.env, CALLS_E2E_IN_NETNS: "1" },
  });
  if (r.error) throw r.error;
  process.exit(r.status ?? 1);
}

const { chromium } = await import("playwright-core");
const { startServer } = await import("../../sdk-ts/test/server.mjs");

const PASSWORD = "correct horse battery";
const T = 20000;
const started = Date.now();
const log = (s) => console.log(`[calls +${((Date.now() - started) / 1000).toFixed(1)}s] ${s}`);

// Nothing but loopback may exist here; otherwise the test could reach real networks.
const ifaces = spawnSync("ip", ["-o", "link", "show"], { encoding: "utf8" }).stdout.trim().split("\n");
assert.equal(ifaces.length, 1, `only loopback in the namespace, found:\n${ifaces.join("\n")}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
  ],
});

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

async function person(base, name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 750 }, locale: "en-US" });
  await context.grantPermissions(["camera", "microphone"], { origin: base });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && console.error(`[${name}] console: ${m.text()}`));
  await page.goto(base + "/");
  await page.getByTestId("auth-toggle").click();
  await page.getByLabel("Username").fill(name);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByTestId("auth-submit").click();
  await page.getByTestId("nav-chats").waitFor({ timeout: T });
  await page.getByTestId("connection-banner").waitFor({ state: "detached", timeout: T });
  return { name, context, page };
}

/** Inbound bytes per media kind, and the selected candidate pair's local candidate type. */
async function stats(p) {
  return p.page.evaluate(async () => {
    const pc = window.tidingsCalls.peerConnection;
    if (!pc) return null;
    const report = await pc.getStats();
    const h264 = (RTCRtpReceiver.getCapabilities("video")?.codecs ?? []).some((c) => c.mimeType.toLowerCase() === "video/h264");
    const out = { ice: pc.iceConnectionState, audio: 0, video: 0, audioPackets: 0, videoFrames: 0, localType: null, remoteType: null, audioCodec: null, videoCodec: null, h264 };
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        out.audioCodec = byId.get(s.codecId)?.mimeType ?? null;
        out.audio += s.bytesReceived ?? 0;
        out.audioPackets += s.packetsReceived ?? 0;
      }
      if (s.type === "inbound-rtp" && s.kind === "video") {
        out.videoCodec = byId.get(s.codecId)?.mimeType ?? null;
        out.video += s.bytesReceived ?? 0;
        out.videoFrames += s.framesDecoded ?? 0;
      }
      if (s.type === "transport" && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        out.localType = byId.get(pair?.localCandidateId)?.candidateType ?? null;
        out.remoteType = byId.get(pair?.remoteCandidateId)?.candidateType ?? null;
      }
    });
    return out;
  });
}

async function waitFor(what, fn, ms = T) {
  const until = Date.now() + ms;
  let last;
  while (Date.now() < until) {
    last = await fn();
    if (last?.ok) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`);
}

/** One full call; `relay` forces TURN candidates on both sides. */
async function call(label, alice, bob, convId, relay) {
  for (const p of [alice, bob]) await p.page.evaluate((r) => (window.tidingsCalls.relayOnly = r), relay);
  log(`${label}: alice calls bob with video`);
  await alice.page.getByTestId("call-video").click();
  await bob.page.locator('[data-testid="call-overlay"][data-phase="incoming"]').waitFor({ timeout: T });
  await alice.page.getByTestId("call-status").filter({ hasText: "Ringing" }).waitFor({ timeout: T });
  await bob.page.getByTestId("call-accept").click();
  for (const p of [alice, bob]) {
    await waitFor(`${p.name} ICE connected (${label})`, async () => {
      const s = await stats(p);
      return { ok: s && (s.ice === "connected" || s.ice === "completed"), s };
    });
    await p.page.locator('[data-testid="call-overlay"][data-phase="active"]').waitFor({ timeout: T });
  }
  // Media flows both ways: inbound audio and video bytes grow on both sides.
  const before = { alice: await stats(alice), bob: await stats(bob) };
  await new Promise((r) => setTimeout(r, 3000));
  for (const p of [alice, bob]) {
    const after = await waitFor(`${p.name} media growing (${label})`, async () => {
      const s = await stats(p);
      const b = before[p.name];
      return { ok: s.audio > b.audio && s.video > b.video && s.audioPackets > 0 && s.videoFrames > 0, s, b };
    });
    log(`${label}: ${p.name} receives audio ${after.s.audio} B (${after.s.audioPackets} packets), video ${after.s.video} B (${after.s.videoFrames} frames) over ${after.s.localType}/${after.s.remoteType}`);
    if (relay) assert.equal(after.s.localType, "relay", `${p.name} uses a relayed candidate`);
    // Opus for audio; H.264 when this Chromium offers it, VP8 otherwise (setCodecPreferences).
    assert.equal(after.s.audioCodec?.toLowerCase(), "audio/opus", `${p.name} audio codec`);
    assert.equal(after.s.videoCodec?.toLowerCase(), after.s.h264 ? "video/h264" : "video/vp8", `${p.name} video codec`);
    log(`${label}: ${p.name} decodes ${after.s.audioCodec} and ${after.s.videoCodec} (H.264 offered: ${after.s.h264})`);
  }
  // The quality indicator reads getStats too.
  await alice.page.getByTestId("call-quality").waitFor({ timeout: T });
  // Data saver caps the video sender's bitrate with RTCRtpSender.setParameters.
  await alice.page.getByTestId("call-devices").click();
  await alice.page.getByTestId("call-data-saver").check();
  const cap = await waitFor("the data-saver cap", async () => {
    const maxBitrate = await alice.page.evaluate(() => {
      const sender = window.tidingsCalls.peerConnection.getSenders().find((x) => x.track?.kind === "video");
      return sender?.getParameters().encodings?.[0]?.maxBitrate ?? null;
    });
    return { ok: maxBitrate === 150000, maxBitrate };
  });
  log(`${label}: data saver caps alice's video at ${cap.maxBitrate} bit/s`);
  await alice.page.getByTestId("call-data-saver").uncheck();
  log(`${label}: alice hangs up`);
  await alice.page.getByTestId("call-hangup").click();
  await bob.page.getByTestId("call-status").filter({ hasText: "Call ended" }).waitFor({ timeout: T });
  // The call is in the history with its duration, on both sides.
  for (const p of [alice, bob]) {
    const record = await waitFor(`${p.name} sees the call record (${label})`, async () => {
      const page = await p.page.evaluate((id) => window.tidings.rest.history(id, undefined, 20), convId);
      const calls = page.messages.filter((m) => m.body.kind === "call");
      const last = calls[calls.length - 1];
      return { ok: calls.length >= 1 && last.body.outcome === "answered" && last.body.duration_ms > 2000, last, n: calls.length };
    });
    log(`${label}: ${p.name}'s history has the call (${record.last.body.duration_ms} ms, ${record.n} so far)`);
  }
  await alice.page.getByTestId("call-record").last().waitFor({ timeout: T });
  await alice.page.locator('[data-testid="call-overlay"]').waitFor({ state: "detached", timeout: T });
  await bob.page.locator('[data-testid="call-overlay"]').waitFor({ state: "detached", timeout: T });
}

async function scenario(label, env, relay) {
  const server = await startServer({ TIDINGS_RTC_TURN_ALLOW_LOOPBACK_PEERS: "true", ...env });
  const base = server.baseUrl;
  const people = [];
  try {
    const alice = await person(base, "alice");
    const bob = await person(base, "bob");
    people.push(alice, bob);
    const bobId = await bob.page.evaluate(() => window.tidings.me.user_id);
    const convId = await alice.page.evaluate(async (id) => {
      const c = await window.tidings.rest.openDirect(id);
      window.tidings.addConversation(c);
      return c.id;
    }, bobId);
    await alice.page.getByTestId("conv-bob").click();
    await call(label, alice, bob, convId, relay);
  } finally {
    for (const p of people) await p.context.close().catch(() => undefined);
    await server.stop();
  }
}

let coturn = null;
try {
  await scenario("direct", {}, false);
  await scenario("embedded TURN", {}, true);

  const turnserver = process.env.TURNSERVER || "/usr/bin/turnserver";
  assert.ok(existsSync(turnserver), "coturn's turnserver is installed (scripts/test installs the coturn package)");
  const port = await freePort();
  const secret = "e2e-" + Math.random().toString(36).slice(2);
  const dir = mkdtempSync(join(tmpdir(), "tidings-coturn-"));
  coturn = spawn(
    turnserver,
    ["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", `--listening-port=${port}`, "--use-auth-secret", `--static-auth-secret=${secret}`, "--realm=tidings.test", "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls", "--min-port=44000", "--max-port=44999", `--pidfile=${join(dir, "pid")}`, "--log-file=stdout"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let coturnLog = "";
  coturn.stdout.on("data", (d) => (coturnLog += d));
  coturn.stderr.on("data", (d) => (coturnLog += d));
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(coturn.exitCode, null, `coturn is running:\n${coturnLog}`);
  await scenario(
    "coturn",
    {
      TIDINGS_RTC_TURN_ENABLED: "false",
      TIDINGS_RTC_TURN_URLS: `["turn:127.0.0.1:${port}?transport=udp"]`,
      TIDINGS_RTC_SHARED_SECRET: secret,
    },
    true,
  );
  rmSync(dir, { recursive: true, force: true });
  log("all calls passed");
} catch (e) {
  console.error(`[calls] FAILED: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  coturn?.kill("SIGTERM");
  await browser.close();
}
