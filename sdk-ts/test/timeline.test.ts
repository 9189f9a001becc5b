// Unit tests of the timeline rules: order by seq, no duplicates, pending entries answered by
// their own message, holes, and the reconnect backoff.

import { describe, expect, it } from "vitest";
import { Timeline, backoffDelay } from "../src/timeline";
import type { Message } from "../src/protocol";

const msg = (seq: number, sender = 2, cmid = `c${seq}`): Message => ({
  conversation_id: 1,
  seq,
  id: 100 + seq,
  sender_id: sender,
  sender_device_id: 1,
  client_msg_id: cmid,
  ts: 1000 + seq,
  body: { kind: "text", text: `m${seq}` },
});

describe("Timeline", () => {
  it("keeps messages in seq order whatever order they arrive in", () => {
    const t = new Timeline();
    t.insert([msg(5), msg(2), msg(9)]);
    t.insert([msg(1), msg(7)]);
    expect(t.messages.map((m) => m.seq)).toEqual([1, 2, 5, 7, 9]);
    expect(t.top).toBe(9);
    expect(t.bottom).toBe(1);
  });

  it("ignores a seq it already holds and reports only new messages", () => {
    const t = new Timeline();
    expect(t.insert([msg(1), msg(2)])).toHaveLength(2);
    const added = t.insert([msg(2), msg(3), msg(1)]);
    expect(added.map((m) => m.seq)).toEqual([3]);
    expect(t.messages).toHaveLength(3);
  });

  it("drops the pending entry its own message answers, and only that one", () => {
    const t = new Timeline();
    const body = { kind: "text" as const, text: "x" };
    t.addPending({ client_msg_id: "a", conversation_id: 1, body, created_at: 0, state: "pending", attempts: 1 });
    t.addPending({ client_msg_id: "b", conversation_id: 1, body, created_at: 0, state: "pending", attempts: 1 });
    t.addPending({ client_msg_id: "a", conversation_id: 1, body, created_at: 0, state: "pending", attempts: 1 });
    expect(t.pending).toHaveLength(2);
    // Another user's message with the same key is not ours.
    t.insert([msg(1, 3, "a")], 7);
    expect(t.pending.map((p) => p.client_msg_id)).toEqual(["a", "b"]);
    t.insert([msg(2, 7, "a")], 7);
    expect(t.pending.map((p) => p.client_msg_id)).toEqual(["b"]);
  });

  it("turns a held message into a tombstone in place", () => {
    const t = new Timeline();
    t.insert([msg(1), msg(2)]);
    t.replaceBody(2, { kind: "deleted" });
    t.replaceBody(7, { kind: "deleted" });
    expect(t.messages.map((m) => m.body.kind)).toEqual(["text", "deleted"]);
  });

  it("applies edits, reactions, pins and recalls to held targets, never backwards", () => {
    const t = new Timeline();
    const act = (seq: number, sender: number, ts: number, body: Message["body"]): Message => ({ ...msg(seq, sender), ts, body });
    t.insert([msg(1)]);
    t.insert([act(2, 2, 2000, { kind: "edit", target: 1, body: { kind: "text", text: "v2" } })]);
    // An older edit arriving late (a filled hole) does not undo the newer one.
    t.insert([act(3, 2, 1500, { kind: "edit", target: 1, body: { kind: "text", text: "v1" } })]);
    t.insert([act(4, 3, 2100, { kind: "reaction", target: 1, key: "👍" }), act(5, 3, 2200, { kind: "reaction", target: 1, key: "👍" })]);
    t.insert([act(6, 4, 2300, { kind: "reaction", target: 1, key: "👍" }), act(7, 3, 2400, { kind: "reaction", target: 1, key: "👍", remove: true })]);
    t.insert([act(8, 2, 2500, { kind: "pin", target: 1 })]);
    const m1 = () => t.messages.find((m) => m.seq === 1)!;
    expect(m1().body).toEqual({ kind: "text", text: "v2" });
    expect(m1().edited_at).toBe(2000);
    expect(m1().reactions).toEqual([{ key: "👍", count: 1, users: [4] }]);
    expect(m1().pinned_at).toBe(2500);
    // Reactions from history pages are already counted in their targets.
    t.insert([act(9, 5, 2600, { kind: "reaction", target: 1, key: "🎉" })], undefined, true);
    expect(m1().reactions).toHaveLength(1);
    t.insert([act(10, 2, 2700, { kind: "recall", target: 1 })]);
    expect(m1()).toMatchObject({ body: { kind: "deleted" }, reactions: [], pinned_at: null });
  });

  it("counts thread replies on their root once", () => {
    const t = new Timeline();
    t.insert([msg(1)]);
    const reply = { ...msg(2), thread_root: 1 };
    t.insert([reply]);
    t.insert([reply]);
    t.insert([{ ...msg(3), thread_root: 1 }]);
    expect(t.messages[0].thread).toEqual({ replies: 2, last_seq: 3, last_ts: 1003 });
  });

  it("finds the holes between held messages", () => {
    const t = new Timeline();
    t.insert([msg(3), msg(4), msg(8), msg(10)]);
    expect(t.holes()).toEqual([
      [5, 7],
      [9, 9],
    ]);
    t.insert([msg(5), msg(6), msg(7), msg(9)]);
    expect(t.holes()).toEqual([]);
  });
});

describe("backoffDelay", () => {
  it("grows exponentially within its bounds", () => {
    expect(backoffDelay(0, 500, 30000, () => 1)).toBe(500);
    expect(backoffDelay(3, 500, 30000, () => 1)).toBe(4000);
    expect(backoffDelay(30, 500, 30000, () => 1)).toBe(30000);
    expect(backoffDelay(30, 500, 30000, () => 0)).toBe(500);
  });
});
