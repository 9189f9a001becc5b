// The messages of one conversation as a client holds them: stored messages ordered by `seq`
// with no duplicates, plus the user's own messages that have no `ack` yet. Pure state logic, kept
// apart from the network so its ordering, dedupe and hole rules are unit-tested directly.

import type { Mentions, Message, MessageBody } from "./protocol.js";

/** Kinds that act on another message (`target`) instead of being shown as bubbles. */
export const ACTING_KINDS = new Set(["edit", "recall", "reaction", "pin"]);

/** Whether a message is shown as a bubble and counts as unread (protocol section 17). */
export function isShown(m: Message): boolean {
  return !ACTING_KINDS.has(m.body.kind);
}

export type PendingState = "pending" | "failed";

/** A message the user sent that the server has not acknowledged (or refused). */
export interface PendingMessage {
  client_msg_id: string;
  conversation_id: number;
  body: MessageBody;
  reply_to?: number;
  thread_root?: number;
  mentions?: Mentions;
  created_at: number;
  state: PendingState;
  attempts: number;
  /** The error code of a refused send (state `failed`). */
  error?: string;
}

export class Timeline {
  /** Stored messages, ascending by `seq`, each `seq` once. */
  messages: Message[] = [];
  /** Own messages waiting for an ack, in the order they were written. */
  pending: PendingMessage[] = [];
  /** Whether messages older than the first held one exist (unknown until history says). */
  hasOlder = true;
  /** Whether the newest page has been read from history. */
  loaded = false;

  /** The highest `seq` held, 0 for none. */
  get top(): number {
    return this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
  }

  /** The lowest `seq` held, 0 for none. */
  get bottom(): number {
    return this.messages.length ? this.messages[0].seq : 0;
  }

  has(seq: number): boolean {
    return this.indexOf(seq) >= 0;
  }

  private indexOf(seq: number): number {
    let lo = 0;
    let hi = this.messages.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.messages[mid].seq;
      if (s === seq) return mid;
      if (s < seq) lo = mid + 1;
      else hi = mid - 1;
    }
    return -(lo + 1);
  }

  /**
   * Inserts stored messages in `seq` order, ignoring any `seq` already held, and drops the
   * pending entry a message of `me` answers (same `client_msg_id`). New acting messages (edit,
   * recall, reaction, pin) are applied to their targets, unless `fromHistory`: history pages
   * already show their targets as they are now, and applying an old reaction removal again
   * could undo a later one. Returns the messages that were new.
   */
  insert(messages: Message[], me?: number, fromHistory = false): Message[] {
    const added: Message[] = [];
    for (const m of messages) {
      const i = this.indexOf(m.seq);
      if (i >= 0) continue;
      const at = -(i + 1);
      if (at === this.messages.length) this.messages.push(m);
      else this.messages.splice(at, 0, m);
      added.push(m);
      if (me !== undefined && m.sender_id === me) {
        this.pending = this.pending.filter((p) => p.client_msg_id !== m.client_msg_id);
      }
    }
    for (const m of added) {
      if (!isShown(m)) this.apply(m, fromHistory);
      else if (m.thread_root) this.countReply(m);
    }
    return added;
  }

  /** Applies an acting message to its target, if held. Edits and pins never go backwards. */
  apply(m: Message, fromHistory = false): void {
    const b = m.body;
    if (b.kind !== "edit" && b.kind !== "recall" && b.kind !== "reaction" && b.kind !== "pin") return;
    const i = this.indexOf(b.target);
    if (i < 0) return;
    const t = this.messages[i];
    if (t.body.kind === "deleted") return;
    let next: Message = t;
    switch (b.kind) {
      case "edit":
        if (m.ts >= (t.edited_at ?? 0)) next = { ...t, body: b.body, edited_at: m.ts };
        break;
      case "recall":
        next = { ...t, body: { kind: "deleted" }, reactions: [], pinned_at: null, edited_at: null };
        break;
      case "pin":
        if (b.unpin) {
          if ((t.pinned_at ?? 0) <= m.ts) next = { ...t, pinned_at: null };
        } else if (m.ts >= (t.pinned_at ?? 0)) next = { ...t, pinned_at: m.ts };
        break;
      case "reaction": {
        if (fromHistory) return;
        const reactions = (t.reactions ?? []).map((r) => ({ ...r, users: [...r.users] }));
        const r = reactions.find((x) => x.key === b.key);
        if (b.remove) {
          if (r && r.users.includes(m.sender_id)) {
            r.users = r.users.filter((u) => u !== m.sender_id);
            r.count -= 1;
          }
        } else if (!r) {
          reactions.push({ key: b.key, count: 1, users: [m.sender_id] });
        } else if (!r.users.includes(m.sender_id)) {
          r.users.push(m.sender_id);
          r.count += 1;
        }
        next = { ...t, reactions: reactions.filter((x) => x.count > 0) };
        break;
      }
    }
    this.messages[i] = next;
  }

  /** A new reply in a thread updates its root's summary (the sequence guard makes it once). */
  private countReply(m: Message): void {
    const i = this.indexOf(m.thread_root!);
    if (i < 0) return;
    const root = this.messages[i];
    const t = root.thread;
    if (t && t.last_seq >= m.seq) return;
    this.messages[i] = { ...root, thread: { replies: (t?.replies ?? 0) + 1, last_seq: m.seq, last_ts: m.ts } };
  }

  /** Forgets a message (deleted for this user only, on another device). */
  remove(seq: number): void {
    const i = this.indexOf(seq);
    if (i >= 0) this.messages.splice(i, 1);
  }

  /** The newest message shown as a bubble. */
  lastShown(): Message | undefined {
    for (let i = this.messages.length - 1; i >= 0; i--) if (isShown(this.messages[i])) return this.messages[i];
    return undefined;
  }

  /**
   * The runs of sequences missing between the lowest and the highest held message, as
   * inclusive `[from, to]` pairs, oldest first.
   */
  holes(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let i = 1; i < this.messages.length; i++) {
      const prev = this.messages[i - 1].seq;
      const cur = this.messages[i].seq;
      if (cur > prev + 1) out.push([prev + 1, cur - 1]);
    }
    return out;
  }

  /** Replaces the body of a held message (a moderator's deletion leaves a tombstone). */
  replaceBody(seq: number, body: MessageBody): void {
    const i = this.indexOf(seq);
    if (i >= 0) this.messages[i] = { ...this.messages[i], body };
  }

  addPending(p: PendingMessage): void {
    if (!this.pending.some((x) => x.client_msg_id === p.client_msg_id)) this.pending.push(p);
  }

  findPending(clientMsgId: string): PendingMessage | undefined {
    return this.pending.find((p) => p.client_msg_id === clientMsgId);
  }

  removePending(clientMsgId: string): void {
    this.pending = this.pending.filter((p) => p.client_msg_id !== clientMsgId);
  }
}

/** Exponential backoff with full jitter: a delay in `[min, min(max, min·2^attempt)]`. */
export function backoffDelay(attempt: number, minMs: number, maxMs: number, random = Math.random): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 20));
  return Math.round(minMs + random() * Math.max(0, ceiling - minMs));
}

/** A fresh idempotency key for a send (reused for every retry of that message). */
export function newClientMsgId(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}
