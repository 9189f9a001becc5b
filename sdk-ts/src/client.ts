// The SDK's heart: one signed-in user's live view of the server. It keeps a connection open
// (reconnecting with backoff), keeps the access token fresh, syncs after every connect and fills
// any hole from history, sends with retry under one `client_msg_id`, and exposes the state
// (conversations, timelines, presence, typing, contacts) with a change counter that UIs
// subscribe to. The rules it follows are docs/protocol.md sections 8 and 9.

import { Auth, type StoredTokens } from "./auth.js";
import { Connection, type WebSocketCtor } from "./connection.js";
import { TidingsError, type SecondFactorRequired } from "./errors.js";
import type {
  BlockedUser,
  Conversation,
  ConversationSettings,
  Mentions,
  Friend,
  FriendRequest,
  Message,
  MessageBody,
  Presence,
  ServerFrame,
  ServerFrameAck,
  ServerFrameHistory,
  ServerFramePresenceList,
  CallEvent,
  CallSignal,
  ServerFrameCallStarted,
} from "./protocol.js";
import { Rest, type Fetch } from "./rest.js";
import { defaultStorage, type KeyValueStorage } from "./storage.js";
import { Timeline, backoffDelay, isShown, newClientMsgId, type PendingMessage } from "./timeline.js";

/** What `send` may carry beside the body (protocol section 17.1). */
export interface SendOptions {
  /** The idempotency key; a fresh one by default. Reuse it only to retry the same message. */
  clientMsgId?: string;
  /** The sequence of the message this one answers. */
  replyTo?: number;
  /** Posts into the thread under this message (threads are one level deep). */
  threadRoot?: number;
  mentions?: Mentions;
}

export type ConnectionStatus = "signed_out" | "connecting" | "online" | "offline";

export interface ClientOptions {
  /** The server's base URL, e.g. `https://chat.example.org` (or `location.origin`). */
  baseUrl: string;
  /** Defaults to the base URL with `ws(s)://` and `/ws`. */
  wsUrl?: string;
  storage?: KeyValueStorage;
  fetch?: Fetch;
  WebSocket?: WebSocketCtor;
  /** The name shown in the device list for sign-ins from this client. */
  deviceName?: string;
  /** Reconnect backoff bounds (defaults 500 ms and 30 s). */
  minReconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  /** How long a request may wait for its answer (default 15 s). */
  requestTimeoutMs?: number;
  /** Newest messages per conversation a sync sends; older ones come from history (default 200). */
  syncLimit?: number;
}

export interface ConversationState {
  conversation: Conversation;
  timeline: Timeline;
  lastMessage?: Message;
  /** Users typing now, with when their indicator expires (ms). */
  typing: Map<number, number>;
}

export interface Contacts {
  friends: Friend[];
  incoming: FriendRequest[];
  outgoing: FriendRequest[];
  blocked: BlockedUser[];
}

/** A `call` event as the SDK hands it to the page, which owns the RTCPeerConnection. */
export interface CallEventInfo {
  callId: string;
  conversationId: number;
  /** Who caused the event. */
  userId: number;
  deviceId?: number;
  event: CallEvent;
}

type CallListener = (e: CallEventInfo) => void;
type Listener = () => void;
type MessageListener = (m: Message, c: ConversationState) => void;

const TYPING_TTL_MS = 6000;
const TYPING_RESEND_MS = 3000;
const TYPING_IDLE_MS = 4000;

export class TidingsClient {
  readonly auth: Auth;
  readonly rest: Rest;
  readonly baseUrl: string;
  status: ConnectionStatus = "signed_out";
  /** Bumped on every change; UIs re-read the state when it moves. */
  version = 0;
  readonly conversations = new Map<number, ConversationState>();
  readonly presence = new Map<number, Presence>();
  contacts: Contacts = { friends: [], incoming: [], outgoing: [], blocked: [] };
  /** How many reconnect attempts have failed in a row (0 while online). */
  failures = 0;
  /** The error that ended the last connection attempt, for display. */
  lastError?: TidingsError;

  private readonly storage: KeyValueStorage;
  private readonly WS: WebSocketCtor;
  private readonly opts: Required<Pick<ClientOptions, "minReconnectDelayMs" | "maxReconnectDelayMs" | "requestTimeoutMs" | "syncLimit">>;
  private conn: Connection | null = null;
  private running = false;
  private wake: (() => void) | null = null;
  private listeners = new Set<Listener>();
  private messageListeners = new Set<MessageListener>();
  private callListeners = new Set<CallListener>();
  private inFlight = new Set<string>();
  private retryTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private typingSent = new Map<number, { at: number; stop: ReturnType<typeof setTimeout> }>();
  private deliveredSent = new Map<number, number>();
  private housekeeping: ReturnType<typeof setInterval> | null = null;
  private loopDone: Promise<void> = Promise.resolve();

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/$/, "");
    this.storage = options.storage ?? defaultStorage();
    const f = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.auth = new Auth(this.baseUrl, this.storage, f, "tidings.tokens");
    this.rest = new Rest(this.baseUrl, this.auth, f);
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!WS) throw new Error("no WebSocket implementation: pass one in ClientOptions.WebSocket");
    this.WS = WS;
    this.wsUrl = options.wsUrl ?? this.baseUrl.replace(/^http/, "ws") + "/ws";
    this.deviceName = options.deviceName;
    this.opts = {
      minReconnectDelayMs: options.minReconnectDelayMs ?? 500,
      maxReconnectDelayMs: options.maxReconnectDelayMs ?? 30000,
      requestTimeoutMs: options.requestTimeoutMs ?? 15000,
      syncLimit: options.syncLimit ?? 200,
    };
    this.auth.onChange((t) => this.tokensChanged(t));
  }

  private readonly wsUrl: string;
  private readonly deviceName?: string;

  // ---- state and subscriptions -------------------------------------------------------------

  /** The signed-in user, or null. */
  get me(): StoredTokens | null {
    return this.auth.tokens;
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Called for every new message from someone else (live or from a sync). */
  onMessage(fn: MessageListener): () => void {
    this.messageListeners.add(fn);
    return () => this.messageListeners.delete(fn);
  }

  /** Called for every `call` event (docs/calls.md); returns the unsubscribe function. */
  onCall(fn: CallListener): () => void {
    this.callListeners.add(fn);
    return () => this.callListeners.delete(fn);
  }

  /**
   * Calls the other member of a direct conversation with an SDP offer. Resolves with the call's
   * id, and `busy` when either side was already in a call (then nothing rings).
   */
  async callInvite(conversationId: number, sdp: string, video: boolean): Promise<{ callId: string; busy: boolean }> {
    if (!this.conn) throw new TidingsError("disconnected", "not connected");
    const f = await this.conn.request<ServerFrameCallStarted>({ type: "call_invite", conversation_id: conversationId, sdp, video });
    return { callId: f.call_id, busy: f.busy ?? false };
  }

  /** Sends a signal about a call and waits for the server's answer. */
  async callSignal(callId: string, signal: CallSignal): Promise<void> {
    if (!this.conn) throw new TidingsError("disconnected", "not connected");
    await this.conn.request({ type: "call_signal", call_id: callId, signal });
  }

  /** Sends a signal without waiting (trickled ICE candidates); errors are not reported. */
  callNotify(callId: string, signal: CallSignal): void {
    this.conn?.notify({ type: "call_signal", call_id: callId, signal });
  }

  private changed(): void {
    this.version++;
    for (const fn of this.listeners) fn();
  }

  private setStatus(s: ConnectionStatus): void {
    if (this.status !== s) {
      this.status = s;
      this.changed();
    }
  }

  /** Conversations, newest activity first. */
  conversationList(): ConversationState[] {
    const key = (c: ConversationState) =>
      Math.max(c.lastMessage?.ts ?? 0, c.timeline.messages.at(-1)?.ts ?? 0, c.timeline.pending.at(-1)?.created_at ?? 0, c.conversation.created_at);
    // Pinned conversations first, most recently pinned first; then newest activity.
    const pin = (c: ConversationState) => c.conversation.settings?.pinned_at ?? 0;
    return [...this.conversations.values()].sort((a, b) => pin(b) - pin(a) || key(b) - key(a));
  }

  // ---- accounts ------------------------------------------------------------------------------

  async register(username: string, password: string, inviteCode?: string): Promise<void> {
    await this.auth.register(username, password, inviteCode);
    await this.signIn(username, password);
  }

  async signIn(username: string, password: string): Promise<void> {
    await this.auth.signIn(username, password, this.deviceName);
    this.start();
  }

  /** Completes a sign-in that threw `SecondFactorRequired`, with a TOTP or recovery code. */
  async completeSecondFactor(challenge: SecondFactorRequired, code: string): Promise<void> {
    await this.auth.completeSecondFactor(challenge, code, this.deviceName);
    this.start();
  }

  /** Deletes the account for good (docs/accounts.md), then forgets the local session. */
  async deleteAccount(password: string, code?: string): Promise<void> {
    await this.rest.deleteAccount(password, code);
    await this.stop();
    this.auth.forget();
    this.reset();
  }

  /** Single sign-on: finishes a sign-in whose callback left `#oidc_code=<code>` in the URL. */
  async signInWithOidcCode(code: string): Promise<void> {
    await this.auth.signInWithOidcCode(code);
    this.start();
  }

  /** Where a browser goes to sign in with the OpenID Connect provider `id`. */
  oidcStartUrl(id: string): string {
    return `${this.baseUrl}/api/v1/oidc/providers/${encodeURIComponent(id)}/start`;
  }

  async signOut(): Promise<void> {
    await this.stop();
    await this.auth.signOut();
    this.reset();
  }

  private reset(): void {
    this.conversations.clear();
    this.presence.clear();
    this.contacts = { friends: [], incoming: [], outgoing: [], blocked: [] };
    this.setStatus("signed_out");
    this.changed();
  }

  private tokensChanged(t: StoredTokens | null): void {
    if (!t) {
      // Signed out (here, in another tab, or by the server).
      void this.stop().then(() => this.reset());
      return;
    }
    // A refresh (possibly in another tab): extend the open connection with the new token.
    const conn = this.conn;
    if (conn && this.status === "online") {
      conn.request({ type: "auth", token: t.access_token }).catch(() => undefined);
    }
  }

  // ---- the connection loop -------------------------------------------------------------------

  /** Starts connecting (if signed in); safe to call more than once. */
  start(): void {
    if (this.running || !this.auth.tokens) return;
    this.running = true;
    this.loadOutbox();
    this.housekeeping = setInterval(() => this.tick(), 1000);
    this.loopDone = this.loop();
  }

  /** Closes the connection and stops reconnecting. Unsent messages stay in the outbox. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.housekeeping) clearInterval(this.housekeeping);
    this.housekeeping = null;
    for (const t of this.retryTimers.values()) clearTimeout(t);
    this.retryTimers.clear();
    this.conn?.close(1000, "client stopped");
    this.wake?.();
    await this.loopDone;
  }

  /** Skips the current backoff wait (e.g. when the browser says it is online again). */
  reconnectNow(): void {
    this.wake?.();
  }

  /** Drops the connection as a network failure would (for tests and "reconnect" buttons). */
  dropConnection(): void {
    this.conn?.close(4000, "dropped by client");
  }

  private async loop(): Promise<void> {
    while (this.running && this.auth.tokens) {
      this.setStatus(this.failures === 0 ? "connecting" : "offline");
      let immediate = false;
      try {
        const token = await this.auth.accessToken();
        const conn = await Connection.open(this.wsUrl, this.WS, this.opts.requestTimeoutMs);
        const closed = new Promise<number>((resolve) => {
          conn.onClose = (code) => resolve(code);
        });
        conn.onEvent = (f) => this.handleEvent(f);
        await conn.request({ type: "auth", token });
        this.conn = conn;
        await this.resync(conn);
        this.failures = 0;
        this.lastError = undefined;
        this.setStatus("online");
        this.flushOutbox();
        const code = await closed;
        this.conn = null;
        // What others' presence was is unknown while away; the next resync asks again.
        this.presence.clear();
        if (code === 4003) {
          // The device was signed out: its tokens will never work again.
          this.auth.forget();
          break;
        }
        immediate = code === 4008;
      } catch (e) {
        const err = e instanceof TidingsError ? e : new TidingsError("network", String(e));
        this.lastError = err;
        this.conn?.close(4000, "setup failed");
        this.conn = null;
        if (err.code === "signed_out" || err.code === "invalid_grant") {
          this.auth.forget();
          break;
        }
        if (err.code === "token_expired" || err.code === "unauthenticated") {
          await this.auth.refresh().catch(() => undefined);
        }
      }
      if (!this.running) break;
      this.failures++;
      this.setStatus("offline");
      const delay = immediate ? 0 : backoffDelay(this.failures - 1, this.opts.minReconnectDelayMs, this.opts.maxReconnectDelayMs);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
    }
    this.running = false;
    if (!this.auth.tokens) this.setStatus("signed_out");
    else this.setStatus("offline");
  }

  /** Refreshes the token before it lapses, expires typing indicators, retries stuck sends. */
  private tick(): void {
    const t = this.auth.tokens;
    if (t && this.conn && Date.now() >= t.expires_at - t.lifetime_ms * 0.2) {
      // accessToken() refreshes; tokensChanged() then re-authenticates the connection.
      this.auth.accessToken().catch(() => undefined);
    }
    const now = Date.now();
    let changed = false;
    for (const c of this.conversations.values()) {
      for (const [u, until] of c.typing) {
        if (until <= now) {
          c.typing.delete(u);
          changed = true;
        }
      }
    }
    if (changed) this.changed();
  }

  /**
   * After every connect: the conversation list over REST (last messages, unread counts, peer
   * markers), then a `sync` from what each timeline holds, then hole filling, contacts and
   * presence.
   */
  private async resync(conn: Connection): Promise<void> {
    const list = await this.rest.conversations();
    for (const c of list.conversations) this.upsertConversation(c, true);
    const cursors = [...this.conversations.values()].map((c) => {
      const seq = c.timeline.top || c.conversation.last_seq;
      const cursor: { conversation_id: number; seq: number; peer_read_seq?: number } = { conversation_id: c.conversation.id, seq };
      if (c.conversation.peer_read_seq != null) cursor.peer_read_seq = c.conversation.peer_read_seq;
      return cursor;
    });
    await conn.request({ type: "sync", cursors, limit_per_conversation: this.opts.syncLimit }, 60000);
    await Promise.all([...this.conversations.values()].map((c) => this.fillHoles(c.conversation.id, conn)));
    await this.refreshContacts().catch(() => undefined);
    await this.queryPresence(conn).catch(() => undefined);
    this.changed();
  }

  private upsertConversation(c: Conversation, fromList = false): ConversationState {
    let s = this.conversations.get(c.id);
    if (!s) {
      s = { conversation: c, timeline: new Timeline(), typing: new Map() };
      this.conversations.set(c.id, s);
      // Presence events only report changes; ask for the current state of a new peer.
      if (c.peer && !this.presence.has(c.peer.user_id)) this.askPresence([c.peer.user_id]);
    } else {
      // Keep the furthest markers: an event may be older than what receipts already told us.
      const prev = s.conversation;
      s.conversation = {
        ...prev,
        ...c,
        last_seq: Math.max(prev.last_seq, c.last_seq),
        peer_delivered_seq: Math.max(prev.peer_delivered_seq ?? 0, c.peer_delivered_seq ?? 0) || c.peer_delivered_seq,
        peer_read_seq: Math.max(prev.peer_read_seq ?? 0, c.peer_read_seq ?? 0) || c.peer_read_seq,
      };
    }
    if (fromList && c.last_message) {
      if (!s.lastMessage || s.lastMessage.seq < c.last_message.seq) s.lastMessage = c.last_message;
      s.timeline.insert([c.last_message], this.me?.user_id);
    }
    return s;
  }

  private async fillHoles(conversationId: number, conn: Connection | null = this.conn): Promise<void> {
    const s = this.conversations.get(conversationId);
    if (!s || !conn) return;
    for (const [from, to] of s.timeline.holes()) {
      let before = to + 1;
      while (before > from) {
        const limit = Math.min(500, before - from);
        const page = await conn.request<ServerFrameHistory>({ type: "history", conversation_id: conversationId, before_seq: before, limit });
        s.timeline.insert(page.messages, this.me?.user_id);
        if (!page.messages.length) break;
        before = page.messages[0].seq;
      }
    }
    this.changed();
  }

  private async queryPresence(conn: Connection): Promise<void> {
    const ids = new Set<number>();
    for (const c of this.conversations.values()) if (c.conversation.peer) ids.add(c.conversation.peer.user_id);
    for (const f of this.contacts.friends) ids.add(f.user_id);
    if (!ids.size) return;
    const list = await conn.request<ServerFramePresenceList>({ type: "presence_query", user_ids: [...ids].slice(0, 1000) });
    for (const p of list.users) this.presence.set(p.user_id, p);
  }

  async refreshContacts(): Promise<void> {
    const [friends, requests, blocks] = await Promise.all([this.rest.friends(), this.rest.friendRequests(), this.rest.blocks()]);
    this.contacts = { friends: friends.friends, incoming: requests.incoming, outgoing: requests.outgoing, blocked: blocks.users };
    const unknown = friends.friends.map((f) => f.user_id).filter((id) => !this.presence.has(id));
    if (unknown.length) this.askPresence(unknown);
    this.changed();
  }

  private presenceWanted = new Set<number>();
  private presenceTimer: ReturnType<typeof setTimeout> | null = null;

  /** Queries the presence of these users soon, batching the ids of several calls. */
  private askPresence(ids: number[]): void {
    for (const id of ids) this.presenceWanted.add(id);
    if (this.presenceTimer) return;
    this.presenceTimer = setTimeout(() => {
      this.presenceTimer = null;
      const user_ids = [...this.presenceWanted].slice(0, 1000);
      this.presenceWanted.clear();
      this.conn
        ?.request<ServerFramePresenceList>({ type: "presence_query", user_ids })
        .then((list) => {
          for (const p of list.users) this.presence.set(p.user_id, p);
          this.changed();
        })
        .catch(() => undefined);
    }, 50);
  }

  // ---- events --------------------------------------------------------------------------------

  private handleEvent(f: ServerFrame): void {
    switch (f.type) {
      case "message":
        this.receive(f.message);
        break;
      case "conversation":
        this.upsertConversation(f.conversation);
        break;
      case "gap":
        // The skipped messages become a hole between what we hold and what follows; the sync
        // fills holes when it is done.
        break;
      case "receipt": {
        const s = this.conversations.get(f.conversation_id);
        if (!s) break;
        const c = s.conversation;
        if (f.user_id === this.me?.user_id) {
          if (f.receipt === "read" && f.seq > c.read_seq) {
            s.conversation = { ...c, read_seq: f.seq, unread: this.countUnread(s, f.seq) };
          }
        } else if (c.kind === "direct") {
          if (f.receipt === "read") s.conversation = { ...c, peer_read_seq: Math.max(c.peer_read_seq ?? 0, f.seq) };
          else s.conversation = { ...c, peer_delivered_seq: Math.max(c.peer_delivered_seq ?? 0, f.seq) };
        }
        break;
      }
      case "typing": {
        const s = this.conversations.get(f.conversation_id);
        if (!s || f.user_id === this.me?.user_id) break;
        if (f.typing) s.typing.set(f.user_id, Date.now() + TYPING_TTL_MS);
        else s.typing.delete(f.user_id);
        break;
      }
      case "presence":
        this.presence.set(f.presence.user_id, f.presence);
        break;
      case "call": {
        const info: CallEventInfo = {
          callId: f.call_id,
          conversationId: f.conversation_id,
          userId: f.user_id,
          deviceId: f.device_id ?? undefined,
          event: f.event,
        };
        for (const fn of this.callListeners) fn(info);
        break;
      }
      case "conversation_settings": {
        const s = this.conversations.get(f.conversation_id);
        if (s) s.conversation = { ...s.conversation, settings: f.settings };
        break;
      }
      case "message_hidden": {
        // Deleted for this user on another device.
        const s = this.conversations.get(f.conversation_id);
        s?.timeline.remove(f.seq);
        if (s && s.lastMessage?.seq === f.seq) s.lastMessage = s.timeline.lastShown();
        break;
      }
      case "contact":
      case "contacts":
      // A block or unblock on any of the user's devices (the web, an XMPP client, ...).
      case "blocked":
        void this.refreshContacts().catch(() => undefined);
        break;
      default:
        // Unknown events are new features of a newer server: ignored (protocol section 1.4).
        break;
    }
    this.changed();
  }

  private countUnread(s: ConversationState, readSeq: number): number {
    const me = this.me?.user_id;
    const held = s.timeline.messages.filter((m) => m.seq > readSeq && m.sender_id !== me && isShown(m)).length;
    const unheld = Math.max(0, s.conversation.last_seq - Math.max(readSeq, s.timeline.top));
    return held + unheld;
  }

  private receive(m: Message): void {
    let s = this.conversations.get(m.conversation_id);
    if (!s) {
      // A conversation we have not heard of yet: fetch its header, then take the message.
      void this.rest
        .conversation(m.conversation_id)
        .then((c) => {
          this.upsertConversation(c);
          this.receive(m);
          this.changed();
        })
        .catch(() => undefined);
      return;
    }
    const hadTop = s.timeline.top;
    const added = s.timeline.insert([m], this.me?.user_id);
    if (!added.length) return;
    if (m.body.kind === "system" && m.body.event.type === "message_deleted") {
      // A moderator removed a message: what we hold of it becomes the tombstone history shows.
      s.timeline.replaceBody(m.body.event.seq, { kind: "deleted" });
    }
    const c = s.conversation;
    const mine = m.sender_id === this.me?.user_id;
    const shown = isShown(m);
    const me = this.me?.user_id;
    const mentionsMe = !!m.mentions && (m.mentions.all === true || (me !== undefined && (m.mentions.users ?? []).includes(me)));
    s.conversation = {
      ...c,
      last_seq: Math.max(c.last_seq, m.seq),
      // Edits, recalls, reactions and pins are not unread (protocol section 17).
      unread: shown && !mine && m.seq > c.read_seq ? c.unread + 1 : c.unread,
      mentions: shown && !mine && mentionsMe && m.seq > c.read_seq ? (c.mentions ?? 0) + 1 : c.mentions,
    };
    if (shown && (!s.lastMessage || s.lastMessage.seq < m.seq)) s.lastMessage = m;
    if (s.lastMessage && !shown && s.lastMessage.seq !== undefined) {
      // An edit or recall of the last message changes what the list shows.
      const fresh = s.timeline.messages.find((x) => x.seq === s!.lastMessage!.seq);
      if (fresh) s.lastMessage = fresh;
    }
    if (hadTop && m.seq > hadTop + 1) void this.fillHoles(m.conversation_id).catch(() => undefined);
    if (!mine) {
      this.markDelivered(m.conversation_id, m.seq);
      if (shown) for (const fn of this.messageListeners) fn(m, s);
    }
  }

  // ---- reading -------------------------------------------------------------------------------

  /** Reads the newest page of a conversation once (call when it is opened). */
  async open(conversationId: number): Promise<void> {
    const s = this.conversations.get(conversationId);
    if (!s || s.timeline.loaded) return;
    const page = this.conn
      ? await this.conn.request<ServerFrameHistory>({ type: "history", conversation_id: conversationId, limit: 50 })
      : await this.rest.history(conversationId, undefined, 50);
    s.timeline.insert(page.messages, this.me?.user_id, true);
    s.timeline.loaded = true;
    s.timeline.hasOlder = page.has_more;
    await this.fillHoles(conversationId).catch(() => undefined);
    this.changed();
  }

  /** Reads the page before the oldest held message; resolves false when there is none. */
  async loadOlder(conversationId: number, limit = 50): Promise<boolean> {
    const s = this.conversations.get(conversationId);
    if (!s || !s.timeline.hasOlder) return false;
    const before = s.timeline.bottom || undefined;
    if (before === 1) {
      s.timeline.hasOlder = false;
      return false;
    }
    const page = this.conn
      ? await this.conn.request<ServerFrameHistory>({ type: "history", conversation_id: conversationId, before_seq: before, limit })
      : await this.rest.history(conversationId, before, limit);
    s.timeline.insert(page.messages, this.me?.user_id, true);
    s.timeline.hasOlder = page.has_more;
    this.changed();
    return page.messages.length > 0;
  }

  /** Marks everything held in the conversation as read. */
  markRead(conversationId: number): void {
    const s = this.conversations.get(conversationId);
    if (!s) return;
    const seq = Math.max(s.timeline.top, s.conversation.last_seq);
    if (seq <= s.conversation.read_seq && s.conversation.unread === 0 && !s.conversation.settings?.marked_unread) return;
    const settings = s.conversation.settings ? { ...s.conversation.settings, marked_unread: false } : undefined;
    s.conversation = { ...s.conversation, read_seq: Math.max(seq, s.conversation.read_seq), unread: 0, mentions: 0, settings };
    this.conn?.request({ type: "receipt", conversation_id: conversationId, receipt: "read", seq }).catch(() => undefined);
    this.changed();
  }

  private deliveredDue = new Map<number, number>();
  private deliveredTimer: ReturnType<typeof setTimeout> | null = null;

  /**
   * Moves the delivered marker, batched: a burst of messages (a sync, a busy group) costs one
   * receipt per conversation, carrying the highest sequence.
   */
  private markDelivered(conversationId: number, seq: number): void {
    if ((this.deliveredSent.get(conversationId) ?? 0) >= seq) return;
    this.deliveredSent.set(conversationId, seq);
    this.deliveredDue.set(conversationId, seq);
    if (this.deliveredTimer) return;
    this.deliveredTimer = setTimeout(() => {
      this.deliveredTimer = null;
      for (const [conversation_id, s] of this.deliveredDue) {
        this.conn?.request({ type: "receipt", conversation_id, receipt: "delivered", seq: s }).catch(() => undefined);
      }
      this.deliveredDue.clear();
    }, 100);
  }

  /**
   * Tells the others the user is typing. Call on every keystroke: it sends `typing: true` at
   * most every few seconds and `typing: false` once the user pauses (or with `false` at once).
   */
  setTyping(conversationId: number, typing: boolean): void {
    const sent = this.typingSent.get(conversationId);
    if (!typing) {
      if (sent) {
        clearTimeout(sent.stop);
        this.typingSent.delete(conversationId);
        this.conn?.notify({ type: "typing", conversation_id: conversationId, typing: false });
      }
      return;
    }
    const now = Date.now();
    if (!sent || now - sent.at >= TYPING_RESEND_MS) {
      this.conn?.notify({ type: "typing", conversation_id: conversationId, typing: true });
    }
    if (sent) clearTimeout(sent.stop);
    this.typingSent.set(conversationId, {
      at: !sent || now - sent.at >= TYPING_RESEND_MS ? now : sent.at,
      stop: setTimeout(() => this.setTyping(conversationId, false), TYPING_IDLE_MS),
    });
  }

  // ---- sending -------------------------------------------------------------------------------

  /**
   * Sends a message: it appears at once as pending, is sent now or after the next connect,
   * and is retried with the same `client_msg_id` until the server acknowledges or refuses it.
   * Returns the `client_msg_id`.
   */
  send(conversationId: number, body: MessageBody, options: SendOptions | string = {}): string {
    const opts = typeof options === "string" ? { clientMsgId: options } : options;
    const clientMsgId = opts.clientMsgId ?? newClientMsgId();
    const s = this.conversations.get(conversationId);
    if (!s) throw new TidingsError("not_found", "unknown conversation");
    if (isShown({ body } as Message)) this.setTyping(conversationId, false);
    s.timeline.addPending({
      client_msg_id: clientMsgId,
      conversation_id: conversationId,
      body,
      reply_to: opts.replyTo,
      thread_root: opts.threadRoot,
      mentions: opts.mentions,
      created_at: Date.now(),
      state: "pending",
      attempts: 0,
    });
    this.saveOutbox();
    this.changed();
    this.sendOne(conversationId, clientMsgId);
    return clientMsgId;
  }

  sendText(conversationId: number, text: string, options: SendOptions = {}): string {
    return this.send(conversationId, { kind: "text", text }, options);
  }

  /** Adds (or with `remove`, takes back) the user's reaction to a message. */
  react(conversationId: number, seq: number, key: string, remove = false): string {
    return this.send(conversationId, remove ? { kind: "reaction", target: seq, key, remove: true } : { kind: "reaction", target: seq, key });
  }

  /** Replaces the body of one of the user's messages (same kind, within the edit window). */
  edit(conversationId: number, seq: number, body: MessageBody): string {
    return this.send(conversationId, { kind: "edit", target: seq, body });
  }

  /** Deletes a message for everyone (the sender within the recall window, or a moderator). */
  recall(conversationId: number, seq: number): string {
    return this.send(conversationId, { kind: "recall", target: seq });
  }

  pin(conversationId: number, seq: number, unpin = false): string {
    return this.send(conversationId, unpin ? { kind: "pin", target: seq, unpin: true } : { kind: "pin", target: seq });
  }

  /** Changes the user's own settings of a conversation (notify level, pinned, archived...). */
  async updateSettings(
    conversationId: number,
    patch: { notify?: ConversationSettings["notify"]; pinned?: boolean; archived?: boolean; marked_unread?: boolean },
    // (the REST request type, spelled out so callers need not import it)
  ): Promise<void> {
    const settings = await this.rest.updateConversationSettings(conversationId, patch);
    const s = this.conversations.get(conversationId);
    if (s) s.conversation = { ...s.conversation, settings };
    this.changed();
  }

  /** Tries a failed message again (same `client_msg_id`). */
  retry(conversationId: number, clientMsgId: string): void {
    const p = this.conversations.get(conversationId)?.timeline.findPending(clientMsgId);
    if (!p) return;
    p.state = "pending";
    p.error = undefined;
    this.changed();
    this.sendOne(conversationId, clientMsgId);
  }

  /** Gives up on a failed message. */
  discard(conversationId: number, clientMsgId: string): void {
    this.conversations.get(conversationId)?.timeline.removePending(clientMsgId);
    this.saveOutbox();
    this.changed();
  }

  /** Resolves with the ack of a pending message (for callers that want to wait). */
  whenSent(conversationId: number, clientMsgId: string, timeoutMs = 30000): Promise<Message> {
    return new Promise((resolve, reject) => {
      const started = Date.now();
      const check = () => {
        const s = this.conversations.get(conversationId);
        const m = s?.timeline.messages.find((x) => x.client_msg_id === clientMsgId && x.sender_id === this.me?.user_id);
        const p = s?.timeline.findPending(clientMsgId);
        if (m) {
          off();
          resolve(m);
        } else if (p?.state === "failed") {
          off();
          reject(new TidingsError(p.error ?? "internal", "send refused"));
        } else if (Date.now() - started > timeoutMs) {
          off();
          reject(new TidingsError("timeout", "not acknowledged in time"));
        }
      };
      const timer = setInterval(check, 200);
      const unsub = this.subscribe(check);
      const off = () => {
        clearInterval(timer);
        unsub();
      };
      check();
    });
  }

  private flushOutbox(): void {
    for (const s of this.conversations.values()) {
      for (const p of s.timeline.pending) if (p.state === "pending") this.sendOne(s.conversation.id, p.client_msg_id);
    }
  }

  private sendOne(conversationId: number, clientMsgId: string): void {
    const conn = this.conn;
    if (!conn || this.status !== "online" || this.inFlight.has(clientMsgId)) return;
    const s = this.conversations.get(conversationId);
    const p = s?.timeline.findPending(clientMsgId);
    if (!s || !p || p.state !== "pending") return;
    this.inFlight.add(clientMsgId);
    p.attempts++;
    conn
      .request<ServerFrameAck>({
        type: "send",
        conversation_id: conversationId,
        client_msg_id: clientMsgId,
        body: p.body,
        ...(p.reply_to !== undefined ? { reply_to: p.reply_to } : {}),
        ...(p.thread_root !== undefined ? { thread_root: p.thread_root } : {}),
        ...(p.mentions ? { mentions: p.mentions } : {}),
      })
      .then((ack) => {
        const me = this.me;
        const m: Message = {
          conversation_id: ack.conversation_id,
          seq: ack.seq,
          id: ack.message_id,
          sender_id: me?.user_id ?? 0,
          sender_device_id: me?.device_id ?? 0,
          client_msg_id: clientMsgId,
          ts: ack.ts,
          body: p.body,
          reply_to: p.reply_to ?? null,
          thread_root: p.thread_root ?? null,
          mentions: p.mentions ?? null,
        };
        const hadTop = s.timeline.top;
        s.timeline.insert([m], me?.user_id);
        s.timeline.removePending(clientMsgId);
        s.conversation = { ...s.conversation, last_seq: Math.max(s.conversation.last_seq, ack.seq), read_seq: Math.max(s.conversation.read_seq, ack.seq) };
        if (isShown(m) && (!s.lastMessage || s.lastMessage.seq < ack.seq)) s.lastMessage = m;
        else if (!isShown(m) && s.lastMessage) s.lastMessage = s.timeline.messages.find((x) => x.seq === s.lastMessage!.seq) ?? s.lastMessage;
        if (hadTop && ack.seq > hadTop + 1) void this.fillHoles(conversationId).catch(() => undefined);
        this.saveOutbox();
        this.changed();
      })
      .catch((e: TidingsError) => {
        if (e.retryable) {
          // Retried with the same client_msg_id: after the next connect if the connection
          // went, otherwise after a delay.
          if (e.code !== "disconnected") {
            const delay = e.retryAfterMs ?? backoffDelay(p.attempts, 1000, 30000);
            this.retryTimers.set(
              clientMsgId,
              setTimeout(() => {
                this.retryTimers.delete(clientMsgId);
                this.sendOne(conversationId, clientMsgId);
              }, delay),
            );
          }
        } else {
          p.state = "failed";
          p.error = e.code;
          this.saveOutbox();
        }
        this.changed();
      })
      .finally(() => this.inFlight.delete(clientMsgId));
  }

  private outboxKey(): string | null {
    const t = this.me;
    return t ? `tidings.outbox.${t.user_id}` : null;
  }

  private saveOutbox(): void {
    const key = this.outboxKey();
    if (!key) return;
    const all: PendingMessage[] = [];
    for (const s of this.conversations.values()) all.push(...s.timeline.pending);
    if (all.length) this.storage.set(key, JSON.stringify(all));
    else this.storage.remove(key);
  }

  /** Unsent messages of an earlier run (a reload, a crash) go back into their timelines. */
  private loadOutbox(): void {
    const key = this.outboxKey();
    const raw = key ? this.storage.get(key) : null;
    if (!raw) return;
    try {
      for (const p of JSON.parse(raw) as PendingMessage[]) {
        let s = this.conversations.get(p.conversation_id);
        if (!s) {
          const placeholder: Conversation = { id: p.conversation_id, kind: "direct", title: "", created_at: p.created_at, last_seq: 0, read_seq: 0, unread: 0, member_count: 0 };
          s = this.upsertConversation(placeholder);
        }
        s.timeline.addPending({ ...p, state: p.state === "failed" ? "failed" : "pending" });
      }
    } catch {
      // A corrupt outbox cannot be sent; leave it alone rather than crash.
    }
  }

  // ---- conversations -------------------------------------------------------------------------

  /** The direct conversation with a user (created on first use), known to the client at once. */
  async openDirect(userId: number): Promise<number> {
    const c = await this.rest.openDirect(userId);
    this.upsertConversation(c);
    this.changed();
    return c.id;
  }

  /** Creates a group owned by the user. */
  async createGroup(title: string, members: number[]): Promise<number> {
    const c = await this.rest.createGroup(title, members);
    this.upsertConversation(c);
    this.changed();
    return c.id;
  }

  /** Adds (or updates) a conversation read over REST, e.g. after joining a group. */
  addConversation(c: Conversation): void {
    this.upsertConversation(c);
    this.changed();
  }

  /** Forgets a conversation the user left or was removed from. */
  forgetConversation(conversationId: number): void {
    this.conversations.delete(conversationId);
    this.changed();
  }

  // ---- presence, files -----------------------------------------------------------------------

  isOnline(userId: number): boolean {
    if (userId === this.me?.user_id) return this.status === "online";
    return this.presence.get(userId)?.status === "online";
  }

  /** A short-lived URL for `<img src>` and download links (no token needed). */
  async fileUrl(fileId: string): Promise<string> {
    const link = await this.rest.fileLink(fileId);
    return this.baseUrl + link.url;
  }

  /**
   * Short-lived URLs of an image's thumbnails (96, 320 and 800 px boxes) and of the image
   * itself, from one signed link: the server accepts a file's signature on its thumbnails.
   */
  async imageUrls(fileId: string): Promise<{ full: string; thumbnail: (size: 96 | 320 | 800) => string }> {
    const full = await this.fileUrl(fileId);
    const url = new URL(full);
    url.pathname = `${url.pathname.replace(/\/+$/, "")}/thumbnail`;
    return {
      full,
      thumbnail: (size) => {
        const thumb = new URL(url);
        thumb.searchParams.set("size", String(size));
        return thumb.toString();
      },
    };
  }
}
