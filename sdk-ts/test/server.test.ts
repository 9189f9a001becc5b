// The SDK against the real server (the `tidings` binary on a free port): ordering, dedupe,
// retry after a lost ack, resync with gap filling after time away, token refresh on a live
// connection, and a tus upload downloaded intact.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { MemoryStorage, TidingsClient, upload } from "../src";
// @ts-expect-error a plain JavaScript helper shared with the browser tests
import { startServer } from "./server.mjs";

let server: { baseUrl: string; stop(): Promise<void> };
const clients: TidingsClient[] = [];
let counter = 0;

beforeAll(async () => {
  // Short-lived access tokens, so the refresh test does not wait long.
  server = await startServer({ TIDINGS_TOKENS_ACCESS_TTL_SECS: "10" });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.stop()));
  await server?.stop();
});

async function user(opts: { syncLimit?: number } = {}): Promise<TidingsClient> {
  const c = new TidingsClient({ baseUrl: server.baseUrl, storage: new MemoryStorage(), minReconnectDelayMs: 50, maxReconnectDelayMs: 300, ...opts });
  clients.push(c);
  await c.register(`user${process.pid % 1000}x${++counter}`, "correct horse battery");
  await until(() => c.status === "online");
  return c;
}

async function until(cond: () => boolean, timeoutMs = 20000, what = "condition"): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A direct conversation between two clients, known to both. */
async function direct(a: TidingsClient, b: TidingsClient): Promise<number> {
  const conv = await a.rest.openDirect(b.me!.user_id);
  await until(() => a.conversations.has(conv.id) && b.conversations.has(conv.id), 20000, "conversation on both sides");
  await a.open(conv.id);
  await b.open(conv.id);
  return conv.id;
}

// Deep equality of megabytes is slow in the matcher; digests compare the same bytes at once.
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

const seqs = (c: TidingsClient, id: number) => c.conversations.get(id)!.timeline.messages.map((m) => m.seq);
const texts = (c: TidingsClient, id: number) =>
  c.conversations.get(id)!.timeline.messages.map((m) => (m.body.kind === "text" ? m.body.text : m.body.kind));

describe("TidingsClient against the real server", () => {
  it("carries call signalling both ways and records the call", async () => {
    const [a, b] = [await user(), await user()];
    const id = await direct(a, b);
    const seenByB: string[] = [];
    const seenByA: string[] = [];
    b.onCall((e) => seenByB.push(e.event.kind));
    a.onCall((e) => seenByA.push(e.event.kind));
    const { callId, busy } = await a.callInvite(id, "v=0 offer", false);
    expect(busy).toBe(false);
    await until(() => seenByB.includes("invite"), 20000, "the invite");
    await b.callSignal(callId, { kind: "accept", sdp: "v=0 answer" });
    await until(() => seenByA.includes("accepted"), 20000, "the answer");
    a.callNotify(callId, { kind: "ice", candidate: { candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host", sdpMid: "0" } });
    await until(() => seenByB.includes("ice"), 20000, "the candidate");
    await b.callSignal(callId, { kind: "hangup" });
    await until(() => seenByA.includes("ended"), 20000, "the end");
    await until(() => a.conversations.get(id)!.timeline.messages.some((m) => m.body.kind === "call" && m.body.outcome === "answered"), 20000, "the call record");
    const servers = await a.rest.iceServers();
    expect(servers.ice_servers.some((s) => s.username?.endsWith(`:${a.me!.user_id}`))).toBe(true);
  });

  it("delivers pipelined sends in order, once each, to the other side", async () => {
    const [a, b] = [await user(), await user()];
    const id = await direct(a, b);
    for (let i = 0; i < 40; i++) a.sendText(id, `n${i}`);
    await until(() => a.conversations.get(id)!.timeline.pending.length === 0, 20000, "acks");
    await until(() => b.conversations.get(id)!.timeline.messages.length === 40, 20000, "delivery");
    const expected = Array.from({ length: 40 }, (_, i) => i + 1);
    expect(seqs(a, id)).toEqual(expected);
    expect(seqs(b, id)).toEqual(expected);
    // The server sequences one connection's pipelined sends in the order they were sent.
    expect(texts(b, id)).toEqual(Array.from({ length: 40 }, (_, i) => `n${i}`));
    expect(b.conversations.get(id)!.conversation.unread).toBe(40);
    // Receiving moved bob's delivered marker (one batched receipt), which alice hears of.
    await until(() => (a.conversations.get(id)!.conversation.peer_delivered_seq ?? 0) === 40, 20000, "delivered receipt");
    b.markRead(id);
    await until(() => (a.conversations.get(id)!.conversation.peer_read_seq ?? 0) === 40, 20000, "read receipt");
  });

  it("follows blocks made on any device through the blocked event", async () => {
    const [a, b] = [await user(), await user()];
    const peer = b.me!.user_id;
    // Through the REST API, as another device would: only the server's event tells this client.
    await a.rest.block(peer);
    await until(() => a.contacts.blocked.some((u) => u.user_id === peer), 20000, "the block in the contacts");
    await a.rest.unblock(peer);
    await until(() => a.contacts.blocked.length === 0, 20000, "the unblock in the contacts");
  });

  it("stores a message once when the same client_msg_id is sent twice", async () => {
    const [a, b] = [await user(), await user()];
    const id = await direct(a, b);
    a.send(id, { kind: "text", text: "once" }, "fixed-key-1");
    await a.whenSent(id, "fixed-key-1");
    a.send(id, { kind: "text", text: "twice?" }, "fixed-key-1");
    await a.whenSent(id, "fixed-key-1");
    const again = await a.rest.sendRest(id, "fixed-key-1", { kind: "text", text: "thrice?" });
    expect(again.duplicate).toBe(true);
    expect(again.seq).toBe(1);
    await until(() => b.conversations.get(id)!.timeline.messages.length === 1);
    const history = await b.rest.history(id);
    expect(history.messages.map((m) => m.body)).toEqual([{ kind: "text", text: "once" }]);
    expect(seqs(a, id)).toEqual([1]);
  });

  it("retries a send whose ack was lost, without a duplicate, and sends what was written offline", async () => {
    const [a, b] = [await user(), await user()];
    const id = await direct(a, b);
    // The frame is written, then the connection drops before the ack can come back.
    const lost = a.sendText(id, "ack lost");
    a.dropConnection();
    // Written while the client is reconnecting: pending until the next connect.
    const offline = a.sendText(id, "written offline");
    expect(a.conversations.get(id)!.timeline.pending.map((p) => p.client_msg_id)).toContain(offline);
    await until(() => a.status === "online" && a.conversations.get(id)!.timeline.pending.length === 0, 20000, "resend");
    await until(() => b.conversations.get(id)!.timeline.messages.length >= 2, 20000, "delivery");
    await new Promise((r) => setTimeout(r, 300));
    const history = await b.rest.history(id);
    const keys = history.messages.map((m) => m.client_msg_id);
    expect(keys.filter((k) => k === lost)).toHaveLength(1);
    expect(keys.filter((k) => k === offline)).toHaveLength(1);
    expect(history.messages).toHaveLength(2);
    expect(seqs(a, id)).toEqual([1, 2]);
    expect(seqs(b, id)).toEqual([1, 2]);
  });

  it("resyncs after time away and fills the gap a limited sync leaves", async () => {
    const a = await user();
    const b = await user({ syncLimit: 10 });
    const id = await direct(a, b);
    a.sendText(id, "before");
    await until(() => b.conversations.get(id)!.timeline.messages.length === 1);
    await b.stop();
    for (let i = 0; i < 75; i++) a.sendText(id, `away ${i}`);
    await until(() => a.conversations.get(id)!.timeline.pending.length === 0, 20000, "acks");
    b.start();
    await until(() => b.status === "online", 20000, "reconnect");
    await until(() => b.conversations.get(id)!.timeline.messages.length === 76, 20000, "gap filled");
    expect(seqs(b, id)).toEqual(Array.from({ length: 76 }, (_, i) => i + 1));
    expect(b.conversations.get(id)!.timeline.holes()).toEqual([]);
    expect(b.conversations.get(id)!.conversation.unread).toBe(76);
  });

  it("refreshes the access token before it expires without dropping the connection", async () => {
    const [a, b] = [await user(), await user()];
    const id = await direct(a, b);
    const first = a.me!.access_token;
    // Tokens live 10 s here (the minimum); after 12 s the first one has expired.
    await new Promise((r) => setTimeout(r, 12000));
    expect(a.me!.access_token).not.toBe(first);
    expect(a.status).toBe("online");
    expect(a.failures).toBe(0);
    a.sendText(id, "still here");
    await until(() => b.conversations.get(id)!.timeline.messages.length === 1, 10000, "delivery after refresh");
  });

  it("uploads a file with tus and the other member downloads it intact", async () => {
    const [a, b] = [await user(), await user()];
    const id = await direct(a, b);
    const bytes = new Uint8Array(300_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff;
    let progress = 0;
    const handle = upload(a, bytes, { name: "pattern.bin", chunkSize: 100_000, onProgress: (sent) => (progress = sent) });
    const body = await handle.done;
    expect(progress).toBe(bytes.length);
    expect(body.file_id).toMatch(/^[0-9a-f]{32}$/);
    const cmid = a.send(id, body);
    await a.whenSent(id, cmid);
    await until(() => b.conversations.get(id)!.timeline.messages.length === 1);
    const got = b.conversations.get(id)!.timeline.messages[0].body;
    expect(got.kind).toBe("file");
    const blob = await b.rest.download((got as { file_id: string }).file_id);
    expect(sha256(new Uint8Array(await blob.arrayBuffer()))).toBe(sha256(bytes));
  });

  it("uploads in parallel parts (tus concatenation) and resumes after a pause", async () => {
    const [a, b] = [await user(), await user()];
    const id = await direct(a, b);
    const bytes = new Uint8Array(3 * 1024 * 1024 + 17);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + (i >> 10)) & 0xff;
    const parallel = upload(a, bytes, { name: "parts.bin", parallel: 3, chunkSize: 256 * 1024 });
    const parts = await parallel.done;
    const pausedAt: number[] = [];
    let paused = false;
    const handle = upload(a, bytes, {
      name: "paused.bin",
      chunkSize: 256 * 1024,
      onProgress: (sent) => {
        if (!paused && sent >= 512 * 1024) {
          paused = true;
          handle.pause();
          pausedAt.push(sent);
          setTimeout(() => handle.resume(), 300);
        }
      },
    });
    const resumed = await handle.done;
    expect(pausedAt.length).toBe(1);
    // Same bytes, same content: both uploads name files whose downloads equal the source.
    for (const body of [parts, resumed]) {
      const cmid = a.send(id, body);
      await a.whenSent(id, cmid);
    }
    await until(() => b.conversations.get(id)!.timeline.messages.length === 2);
    for (const m of b.conversations.get(id)!.timeline.messages) {
      const blob = await b.rest.download((m.body as { file_id: string }).file_id);
      expect(blob.size).toBe(bytes.length);
      expect(sha256(new Uint8Array(await blob.arrayBuffer()))).toBe(sha256(bytes));
    }
  });

  it("applies replies, edits, reactions, pins and recalls to the messages both sides hold", async () => {
    const [a, b] = [await user(), await user()];
    const id = await direct(a, b);
    const first = await a.whenSent(id, a.sendText(id, "lunch at noon?"));
    const answer = await b.whenSent(id, b.sendText(id, "yes!", { replyTo: first.seq, mentions: { users: [a.me!.user_id] } }));
    await until(() => a.conversations.get(id)!.timeline.has(answer.seq));
    const got = a.conversations.get(id)!.timeline.messages.find((m) => m.seq === answer.seq)!;
    expect(got.reply_to).toBe(first.seq);
    expect(a.conversations.get(id)!.conversation.mentions).toBe(1);

    b.react(id, first.seq, "👍");
    a.edit(id, first.seq, { kind: "text", text: "lunch at 12:30?" });
    a.pin(id, first.seq);
    const target = (c: TidingsClient) => c.conversations.get(id)!.timeline.messages.find((m) => m.seq === first.seq)!;
    for (const c of [a, b]) {
      await until(() => {
        const t = target(c);
        return t.body.kind === "text" && t.body.text === "lunch at 12:30?" && !!t.edited_at && !!t.pinned_at && (t.reactions ?? []).some((r) => r.key === "👍" && r.count === 1);
      }, 10000, "edit, reaction and pin applied");
    }
    // Acting messages are neither unread nor the conversation's last message.
    expect(b.conversations.get(id)!.lastMessage?.seq).toBe(answer.seq);
    // A fresh client reading history sees the same state the live events produced.
    const fresh = (await b.rest.history(id)).messages.find((m) => m.seq === first.seq)!;
    expect({ body: fresh.body, reactions: fresh.reactions?.map((r) => [r.key, r.count]) }).toEqual({
      body: target(b).body,
      reactions: target(b).reactions?.map((r) => [r.key, r.count]),
    });
    // A reply in the thread under bob's answer: both sides count it on the root, as the server does.
    const inThread = await a.whenSent(id, a.sendText(id, "in the thread", { threadRoot: answer.seq }));
    expect(inThread.thread_root).toBe(answer.seq);
    const root = (c: TidingsClient) => c.conversations.get(id)!.timeline.messages.find((m) => m.seq === answer.seq)!;
    for (const c of [a, b]) await until(() => root(c).thread?.replies === 1, 10000, "thread summary");
    const serverRoot = (await b.rest.history(id)).messages.find((m) => m.seq === answer.seq)!;
    expect(serverRoot.thread).toEqual(root(b).thread);
    b.react(id, first.seq, "👍", true);
    a.recall(id, first.seq);
    for (const c of [a, b]) await until(() => target(c).body.kind === "deleted" && (target(c).reactions ?? []).length === 0, 10000, "recall");

    await a.updateSettings(id, { pinned: true, notify: "mentions" });
    expect(a.conversations.get(id)!.conversation.settings?.notify).toBe("mentions");
    expect(a.conversationList()[0].conversation.id).toBe(id);
  });
});
