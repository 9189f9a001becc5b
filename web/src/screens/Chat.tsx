// The chat view: history that loads as you scroll up, day separators, sender grouping, optimistic
// sends with pending and failed states, ticks, typing and presence, and files (pick, drag and
// drop, paste) uploaded with tus, with progress, pause and resume.

import { Fragment, useCallback, useEffect, useLayoutEffect, useRef, useState, type ClipboardEvent, type DragEvent, type KeyboardEvent } from "react";
import { isShown, upload, type Message, type MessageBody, type MessageBodyFile, type MessageBodyLocation, type PendingMessage, type UploadHandle } from "@tidings/sdk";
import { Markdown, looksLikeMarkdown } from "../markdown";
import { applyMention, mentionCandidates, mentionQuery, mentionsIn } from "../mentions";
import { useClient } from "../state";
import { useI18n, type T } from "../i18n";
import { Avatar } from "../ui/Avatar";
import { Icon } from "../ui/Icon";
import { callText, conversationName, dayKey, dayLabel, formatBytes, nameOf, preview, startsGroup, systemText, timeOf } from "../util";
import { CallButtons } from "./Call";

const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉"];
import { Dialog, MembersPanel } from "./Groups";

interface Uploading {
  key: string;
  name: string;
  sent: number;
  total: number;
  paused: boolean;
  failed: boolean;
  handle: UploadHandle;
}

export function ChatView({ conversationId, focusSeq, onBack }: { conversationId: number; focusSeq?: number; onBack: () => void }) {
  const c = useClient();
  const { t, lang } = useI18n();
  const s = c.conversations.get(conversationId)!;
  const conv = s.conversation;
  const me = c.me!.user_id;
  const name = conversationName(s);
  const scroller = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [text, setText] = useState("");
  const [dragging, setDragging] = useState(false);
  const [uploads, setUploads] = useState<Uploading[]>([]);
  const [showMembers, setShowMembers] = useState(false);
  const [memberNames, setMemberNames] = useState<Map<number, string>>(new Map());
  const [myRole, setMyRole] = useState<string>("member");
  const [mention, setMention] = useState<{ start: number; query: string } | null>(null);
  const [mentionIndex, setMentionIndex] = useState(0);
  const [forwarding, setForwarding] = useState<Message | null>(null);
  // Where "new messages" starts: the read marker when the conversation was opened.
  const [firstUnreadSeq] = useState(() => (conv.unread > 0 ? conv.read_seq + 1 : null));
  const fileInput = useRef<HTMLInputElement>(null);
  // The message being answered, or edited, by the composer.
  const [replyTo, setReplyTo] = useState<Message | null>(null);
  const [editing, setEditing] = useState<Message | null>(null);
  const [threadRoot, setThreadRoot] = useState<Message | null>(null);
  const composer = useRef<HTMLTextAreaElement>(null);

  useEffect(() => {
    void c.open(conversationId).then(async () => {
      if (focusSeq === undefined) return;
      // Page back until the message is held, then bring it into view.
      const tl = c.conversations.get(conversationId)?.timeline;
      while (tl && tl.bottom > focusSeq && tl.hasOlder) {
        if (!(await c.loadOlder(conversationId, 200))) break;
      }
      atBottom.current = false;
      requestAnimationFrame(() => {
        const el = document.getElementById(`msg-${conversationId}-${focusSeq}`);
        el?.scrollIntoView({ block: "center" });
        el?.classList.add("flash");
      });
    });
    composer.current?.focus();
    if (conv.kind === "group") {
      c.rest
        .members(conversationId)
        .then((ms) => {
          setMemberNames(new Map(ms.map((m) => [m.user_id, m.username])));
          setMyRole(ms.find((m) => m.user_id === me)?.role ?? "member");
        })
        .catch(() => undefined);
    }
  }, [conversationId]);

  // Edits, reactions, recalls and pins change other messages; they are not bubbles.
  const messages = s.timeline.messages.filter(isShown);
  const pending = s.timeline.pending.filter((p) => isShown({ body: p.body } as Message));
  const lastKey = `${messages.at(-1)?.seq ?? 0}:${pending.length}`;

  // Stay at the bottom as messages arrive, if the reader was there; mark them read when visible.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && atBottom.current) el.scrollTop = el.scrollHeight;
    if (atBottom.current && document.visibilityState === "visible") c.markRead(conversationId);
  }, [lastKey, conversationId]);

  useEffect(() => {
    const onVisible = () => {
      if (document.visibilityState === "visible" && atBottom.current) c.markRead(conversationId);
    };
    document.addEventListener("visibilitychange", onVisible);
    window.addEventListener("focus", onVisible);
    return () => {
      document.removeEventListener("visibilitychange", onVisible);
      window.removeEventListener("focus", onVisible);
    };
  }, [conversationId]);

  const onScroll = useCallback(async () => {
    const el = scroller.current;
    if (!el) return;
    atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (atBottom.current && document.visibilityState === "visible") c.markRead(conversationId);
    if (el.scrollTop < 80 && !loadingOlder && s.timeline.hasOlder && s.timeline.loaded) {
      setLoadingOlder(true);
      const before = el.scrollHeight;
      try {
        await c.loadOlder(conversationId);
      } finally {
        setLoadingOlder(false);
        // Keep the message the reader was looking at in place.
        requestAnimationFrame(() => {
          if (scroller.current) scroller.current.scrollTop += scroller.current.scrollHeight - before;
        });
      }
    }
  }, [conversationId, loadingOlder]);

  // Mentions: direct conversations offer the peer, groups their members; `@all` only to the
  // roles that hold it by default (the server has the last word).
  const mentionable: [number, string][] = conv.kind === "group" ? [...memberNames] : conv.peer ? [[conv.peer.user_id, conv.peer.username]] : [];
  const allowAll = conv.kind === "group" && myRole !== "member";
  const candidates = mention ? mentionCandidates(mention.query, mentionable, me, allowAll) : [];
  const pickMention = (username: string) => {
    const el = composer.current;
    if (!mention || !el) return;
    const next = applyMention(text, mention.start, el.selectionStart ?? text.length, username);
    setText(next.text);
    setMention(null);
    requestAnimationFrame(() => {
      el.focus();
      el.setSelectionRange(next.caret, next.caret);
    });
  };

  const send = () => {
    const body = text.trim();
    if (!body) return;
    setMention(null);
    if (editing) {
      // An edit keeps the kind of the message it replaces (the server requires it).
      const kind = editing.body.kind;
      if ((kind === "text" || kind === "markdown") && editing.body.text !== body) c.edit(conversationId, editing.seq, { kind, text: body });
      setEditing(null);
      setText("");
      return;
    }
    atBottom.current = true;
    // @name mentions of members (or the peer) become the message's mentions.
    const names = new Map<string, number>(mentionable.map(([id, n]) => [n.toLowerCase(), id]));
    const mentions = mentionsIn(body, names, me, allowAll);
    const options = { replyTo: replyTo?.seq, threadRoot: threadRoot?.seq, mentions };
    if (looksLikeMarkdown(body)) c.send(conversationId, { kind: "markdown", text: body }, options);
    else c.sendText(conversationId, body, options);
    setReplyTo(null);
    setThreadRoot(null);
    setText("");
  };
  const startEdit = (m: Message) => {
    if (m.body.kind !== "text" && m.body.kind !== "markdown") return;
    setReplyTo(null);
    setEditing(m);
    setText(m.body.text);
    composer.current?.focus();
  };

  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (candidates.length && !e.nativeEvent.isComposing) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const step = e.key === "ArrowDown" ? 1 : candidates.length - 1;
        setMentionIndex((i) => (i + step) % candidates.length);
        return;
      }
      if (e.key === "Enter" || e.key === "Tab") {
        e.preventDefault();
        pickMention(candidates[Math.min(mentionIndex, candidates.length - 1)].username);
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        setMention(null);
        return;
      }
    }
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === "Escape" && (replyTo || editing || threadRoot)) {
      setReplyTo(null);
      setThreadRoot(null);
      if (editing) setText("");
      setEditing(null);
    } else if (e.key === "ArrowUp" && !text) {
      // Up in an empty composer edits one's last message, as in most chat apps.
      const last = [...messages].reverse().find((m) => m.sender_id === me && (m.body.kind === "text" || m.body.kind === "markdown"));
      if (last) {
        e.preventDefault();
        startEdit(last);
      }
    }
  };

  const startUploads = (files: FileList | File[]) => {
    for (const file of Array.from(files)) {
      const key = `${file.name}-${file.size}-${Date.now()}-${Math.random()}`;
      const update = (patch: Partial<Uploading>) => setUploads((u) => u.map((x) => (x.key === key ? { ...x, ...patch } : x)));
      const handle = upload(c, file, { name: file.name, type: file.type || undefined, onProgress: (sent, total) => update({ sent, total }) });
      setUploads((u) => [...u, { key, name: file.name, sent: 0, total: file.size, paused: false, failed: false, handle }]);
      handle.done
        .then(async (body) => {
          const sized = await imageSize(file, body);
          atBottom.current = true;
          c.send(conversationId, sized);
          setUploads((u) => u.filter((x) => x.key !== key));
        })
        .catch(() => update({ failed: true }));
    }
  };

  const onPaste = (e: ClipboardEvent) => {
    if (e.clipboardData.files.length) {
      e.preventDefault();
      startUploads(e.clipboardData.files);
    }
  };
  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    setDragging(false);
    if (e.dataTransfer.files.length) startUploads(e.dataTransfer.files);
  };

  const typers = [...s.typing.keys()];
  const peer = conv.peer?.user_id;
  const presence = peer !== undefined ? c.presence.get(peer) : undefined;
  let subtitle: string;
  if (typers.length === 1) subtitle = t("chat.typing", { name: nameOf(c, typers[0], memberNames) });
  else if (typers.length > 1) subtitle = t("chat.typingMany");
  else if (conv.kind === "group") subtitle = t("chat.membersCount", { n: conv.member_count });
  else if (presence?.status === "online") subtitle = t("chat.online");
  else if (presence?.last_seen) subtitle = t("chat.lastSeen", { time: `${dayLabel(presence.last_seen, lang, t)} ${timeOf(presence.last_seen, lang)}` });
  else subtitle = t("chat.offline");

  const jumpToUnread = async () => {
    if (firstUnreadSeq === null) return;
    // The first unread message may be older than what is loaded: page back to it first.
    const tl = c.conversations.get(conversationId)?.timeline;
    while (tl && tl.bottom > firstUnreadSeq && tl.hasOlder) {
      if (!(await c.loadOlder(conversationId, 200))) break;
    }
    atBottom.current = false;
    requestAnimationFrame(() => document.getElementById(`msg-${conversationId}-${firstUnreadSeq}`)?.scrollIntoView({ block: "center" }));
  };

  return (
    <section className="chat" aria-label={name} onDragOver={(e) => (e.preventDefault(), setDragging(true))} onDragLeave={() => setDragging(false)} onDrop={onDrop}>
      <header className="chat-head">
        <button className="icon-btn back" aria-label={t("chat.back")} onClick={onBack}>
          <Icon name="back" />
        </button>
        <Avatar name={name} seed={peer ?? `g${conv.id}`} size={40} online={peer !== undefined ? presence?.status === "online" : undefined} />
        <div className="chat-title">
          <h2>{name}</h2>
          <p className={typers.length ? "typing" : ""} data-testid="chat-subtitle" aria-live="polite">
            {subtitle}
          </p>
        </div>
        <button
          className={`icon-btn ${conv.settings?.pinned_at ? "on" : ""}`}
          aria-label={conv.settings?.pinned_at ? t("conv.unpin") : t("conv.pin")}
          title={conv.settings?.pinned_at ? t("conv.unpin") : t("conv.pin")}
          aria-pressed={!!conv.settings?.pinned_at}
          onClick={() => void c.updateSettings(conversationId, { pinned: !conv.settings?.pinned_at })}
        >
          <Icon name="pin" />
        </button>
        <button
          className={`icon-btn ${conv.settings?.notify === "none" ? "on" : ""}`}
          aria-label={conv.settings?.notify === "none" ? t("conv.unmute") : t("conv.mute")}
          title={conv.settings?.notify === "none" ? t("conv.unmute") : t("conv.mute")}
          aria-pressed={conv.settings?.notify === "none"}
          onClick={() => void c.updateSettings(conversationId, { notify: conv.settings?.notify === "none" ? "all" : "none" })}
        >
          <Icon name={conv.settings?.notify === "none" ? "bellOff" : "bell"} />
        </button>
        <button
          className="icon-btn"
          aria-label={conv.settings?.archived ? t("conv.unarchive") : t("conv.archive")}
          title={conv.settings?.archived ? t("conv.unarchive") : t("conv.archive")}
          aria-pressed={!!conv.settings?.archived}
          onClick={() => void c.updateSettings(conversationId, { archived: !conv.settings?.archived })}
          data-testid="archive-btn"
        >
          <Icon name="archive" />
        </button>
        {conv.kind === "direct" && peer !== undefined && <CallButtons conversationId={conversationId} peerId={peer} />}
        {conv.kind === "group" && (
          <button className="icon-btn" aria-label={t("chat.members")} title={t("chat.members")} onClick={() => setShowMembers(true)} data-testid="members-btn">
            <Icon name="users" />
          </button>
        )}
      </header>
      {firstUnreadSeq !== null && messages.length > 0 && messages[0].seq > firstUnreadSeq && (
        <button className="jump" onClick={() => void jumpToUnread()}>
          {t("chat.jumpUnread")}
        </button>
      )}
      <div className="messages" ref={scroller} onScroll={onScroll} role="log" aria-label={t("chat.messages")} aria-live="polite" tabIndex={0} data-testid="messages">
        {loadingOlder && <p className="muted center">{t("chat.loadingOlder")}</p>}
        {s.timeline.loaded && !s.timeline.hasOlder && <p className="muted center small">{t("chat.beginning")}</p>}
        {messages.map((m, i) => {
          const prev = messages[i - 1];
          const newDay = !prev || dayKey(prev.ts) !== dayKey(m.ts);
          const group = startsGroup(prev, m);
          return (
            <Fragment key={m.seq}>
              {newDay && (
                <div className="day" role="separator">
                  <span>{dayLabel(m.ts, lang, t)}</span>
                </div>
              )}
              {firstUnreadSeq === m.seq && (
                <div className="day unread-sep" role="separator">
                  <span>{t("chat.newMessages")}</span>
                </div>
              )}
              <MessageRow
                m={m}
                quoted={m.reply_to ? s.timeline.messages.find((x) => x.seq === m.reply_to) : undefined}
                root={m.thread_root ? s.timeline.messages.find((x) => x.seq === m.thread_root) : undefined}
                onThread={
                  m.thread_root
                    ? undefined
                    : () => {
                        setEditing(null);
                        setReplyTo(null);
                        setThreadRoot(m);
                        composer.current?.focus();
                      }
                }
                onReply={() => {
                  setEditing(null);
                  setReplyTo(m);
                  composer.current?.focus();
                }}
                onEdit={m.sender_id === me && (m.body.kind === "text" || m.body.kind === "markdown") ? () => startEdit(m) : undefined}
                onRecall={m.sender_id === me && m.body.kind !== "deleted" ? () => c.recall(conversationId, m.seq) : undefined}
                onReact={(key, remove) => c.react(conversationId, m.seq, key, remove)}
                onPin={() => c.pin(conversationId, m.seq, !!m.pinned_at)}
                onForward={() => setForwarding(m)}
                me={me}
                mine={m.sender_id === me} first={group} showName={conv.kind === "group"} senderName={nameOf(c, m.sender_id, memberNames)} tick={tickFor(m, me, conv)} t={t} nameFor={(id) => nameOf(c, id, memberNames)}
                onDelete={conv.kind === "group" && myRole !== "member" && m.body.kind !== "deleted" ? () => void c.rest.deleteMessage(conversationId, m.seq).catch(() => undefined) : undefined}
              />
            </Fragment>
          );
        })}
        {pending.map((p) => (
          <PendingRow key={p.client_msg_id} p={p} onRetry={() => c.retry(conversationId, p.client_msg_id)} onDiscard={() => c.discard(conversationId, p.client_msg_id)} />
        ))}
      </div>
      {uploads.length > 0 && (
        <ul className="uploads" aria-label={t("chat.attach")}>
          {uploads.map((u) => (
            <li key={u.key} className="upload">
              <Icon name="file" size={18} />
              <div className="upload-main">
                <span className="upload-name">{u.failed ? t("file.failed") : t("file.uploading", { name: u.name })}</span>
                <progress max={u.total || 1} value={u.sent} aria-label={u.name} />
                <span className="small muted">
                  {formatBytes(u.sent)} / {formatBytes(u.total)}
                </span>
              </div>
              {!u.failed && (
                <button
                  className="ghost small"
                  onClick={() => {
                    if (u.paused) u.handle.resume();
                    else u.handle.pause();
                    setUploads((list) => list.map((x) => (x.key === u.key ? { ...x, paused: !u.paused } : x)));
                  }}
                >
                  {u.paused ? t("file.resume") : t("file.pause")}
                </button>
              )}
              <button
                className="ghost small"
                onClick={() => {
                  void u.handle.cancel().catch(() => undefined);
                  setUploads((list) => list.filter((x) => x.key !== u.key));
                }}
              >
                {t("file.cancel")}
              </button>
            </li>
          ))}
        </ul>
      )}
      {(replyTo || editing || threadRoot) && (
        <div className="compose-context" data-testid="compose-context">
          <Icon name={editing ? "edit" : threadRoot ? "chat" : "reply"} size={16} />
          <div className="compose-context-text">
            <strong>
              {editing
                ? t("msg.editing")
                : threadRoot
                  ? t("msg.threadingTo", { name: nameOf(c, threadRoot.sender_id, memberNames) })
                  : t("msg.replyingTo", { name: nameOf(c, replyTo!.sender_id, memberNames) })}
            </strong>
            <span className="muted small">{preview(editing ?? threadRoot ?? replyTo!, t)}</span>
          </div>
          <button
            className="icon-btn"
            aria-label={t("common.cancel")}
            onClick={() => {
              setReplyTo(null);
              setThreadRoot(null);
              if (editing) setText("");
              setEditing(null);
            }}
          >
            <Icon name="x" size={16} />
          </button>
        </div>
      )}
      {candidates.length > 0 && (
        <ul className="mention-list" id="mention-list" role="listbox" aria-label={t("msg.mentionSomeone")} data-testid="mention-list">
          {candidates.map((cand, i) => (
            <li
              key={String(cand.id)}
              id={`mention-${i}`}
              role="option"
              aria-selected={i === mentionIndex}
              className={i === mentionIndex ? "active" : ""}
              onMouseDown={(e) => {
                e.preventDefault();
                pickMention(cand.username);
              }}
            >
              {cand.id === "all" ? (
                <>
                  <strong>{`@${cand.username}`}</strong> <span className="muted small">{t("msg.mentionAll")}</span>
                </>
              ) : (
                <>
                  <Avatar name={cand.username} seed={cand.id} size={22} /> <span>@{cand.username}</span>
                </>
              )}
            </li>
          ))}
        </ul>
      )}
      <form
        className="composer"
        onSubmit={(e) => {
          e.preventDefault();
          send();
        }}
      >
        <button type="button" className="icon-btn" aria-label={t("chat.attach")} title={t("chat.attach")} onClick={() => fileInput.current?.click()}>
          <Icon name="attach" />
        </button>
        <input
          ref={fileInput}
          type="file"
          multiple
          hidden
          data-testid="file-input"
          onChange={(e) => {
            if (e.target.files) startUploads(e.target.files);
            e.target.value = "";
          }}
        />
        <textarea
          ref={composer}
          rows={1}
          placeholder={t("chat.placeholder")}
          aria-label={t("chat.placeholder")}
          value={text}
          onChange={(e) => {
            setText(e.target.value);
            setMention(mentionQuery(e.target.value, e.target.selectionStart ?? e.target.value.length));
            setMentionIndex(0);
            c.setTyping(conversationId, e.target.value.length > 0);
          }}
          aria-autocomplete="list"
          aria-controls={candidates.length ? "mention-list" : undefined}
          aria-activedescendant={candidates.length ? `mention-${mentionIndex}` : undefined}
          onKeyDown={onKeyDown}
          onPaste={onPaste}
          data-testid="composer"
        />
        <button type="submit" className="send-btn" aria-label={t("chat.send")} disabled={!text.trim()} data-testid="send">
          <Icon name="send" />
        </button>
      </form>
      {forwarding && <ForwardDialog message={forwarding} onClose={() => setForwarding(null)} />}
      {dragging && (
        <div className="drop" aria-hidden="true">
          <Icon name="attach" size={32} />
          <span>{t("chat.dropHere")}</span>
        </div>
      )}
      {showMembers && <MembersPanel conversationId={conversationId} onClose={() => setShowMembers(false)} />}
    </section>
  );
}

type Tick = "sent" | "delivered" | "read" | null;

function tickFor(m: Message, me: number, conv: { kind: string; peer_delivered_seq?: number | null; peer_read_seq?: number | null }): Tick {
  if (m.sender_id !== me) return null;
  if (conv.kind !== "direct") return "sent";
  if ((conv.peer_read_seq ?? 0) >= m.seq) return "read";
  if ((conv.peer_delivered_seq ?? 0) >= m.seq) return "delivered";
  return "sent";
}

interface RowProps {
  m: Message;
  me: number;
  mine: boolean;
  first: boolean;
  showName: boolean;
  senderName: string;
  tick: Tick;
  t: T;
  nameFor: (id: number) => string;
  quoted?: Message;
  root?: Message;
  onThread?: () => void;
  onDelete?: () => void;
  onReply: () => void;
  onEdit?: () => void;
  onRecall?: () => void;
  onReact: (key: string, remove: boolean) => void;
  onPin: () => void;
  onForward: () => void;
}

function MessageRow({ m, me, mine, first, showName, senderName, tick, t, nameFor, quoted, root, onThread, onDelete, onReply, onEdit, onRecall, onReact, onPin, onForward }: RowProps) {
  const { lang } = useI18n();
  if (m.body.kind === "system") {
    return (
      <div className="system-msg" id={`msg-${m.conversation_id}-${m.seq}`}>
        {systemText(m, senderName, t, nameFor)}
      </div>
    );
  }
  return (
    <div className={`row ${mine ? "mine" : "theirs"} ${first ? "first" : ""}`} id={`msg-${m.conversation_id}-${m.seq}`} data-seq={m.seq}>
      {!mine && showName && <div className="avatar-slot">{first && <Avatar name={senderName} seed={m.sender_id} size={32} />}</div>}
      <div className="bubble" data-testid="bubble">
        {!mine && showName && first && <div className="sender">{senderName}</div>}
        {m.reply_to && (
          <button
            className="quote"
            aria-label={t("msg.original")}
            onClick={() => document.getElementById(`msg-${m.conversation_id}-${m.reply_to}`)?.scrollIntoView({ block: "center" })}
          >
            {quoted ? (
              <>
                <strong>{nameFor(quoted.sender_id)}</strong>
                <span>{preview(quoted, t)}</span>
              </>
            ) : (
              <span>{t("msg.original")}</span>
            )}
          </button>
        )}
        {m.thread_root && (
          <button className="quote thread" onClick={() => document.getElementById(`msg-${m.conversation_id}-${m.thread_root}`)?.scrollIntoView({ block: "center" })}>
            <span>
              {t("msg.inThread")} {root ? preview(root, t) : ""}
            </span>
          </button>
        )}
        <Body body={m.body} t={t} nameFor={nameFor} />
        {m.thread && m.thread.replies > 0 && (
          <button className="thread-chip" onClick={onThread} data-testid="thread-chip">
            <Icon name="chat" size={13} /> {t("msg.threadReplies", { n: m.thread.replies })}
          </button>
        )}
        <span className="meta">
          {m.pinned_at && (
            <span className="pinned" title={t("msg.pinned")} aria-label={t("msg.pinned")}>
              <Icon name="pin" size={12} />
            </span>
          )}
          {m.edited_at && m.body.kind !== "deleted" && <span className="edited">{t("msg.edited")}</span>}
          <time dateTime={new Date(m.ts).toISOString()}>{timeOf(m.ts, lang)}</time>
          {tick && (
            <span className={`tick ${tick}`} aria-label={t(`chat.${tick}`)} title={t(`chat.${tick}`)} data-testid={`tick-${tick}`}>
              <Icon name={tick === "sent" ? "check" : "checks"} size={14} />
            </span>
          )}
        </span>
      </div>
      {m.body.kind !== "deleted" && (
        <div className="msg-actions" role="toolbar" aria-label={t("msg.actions")}>
          {QUICK_REACTIONS.map((key) => (
            <button key={key} className="icon-btn emoji" aria-label={t("msg.react", { key })} title={t("msg.react", { key })} onClick={() => onReact(key, false)}>
              {key}
            </button>
          ))}
          <button className="icon-btn" aria-label={t("msg.reply")} title={t("msg.reply")} onClick={onReply} data-testid="reply">
            <Icon name="reply" size={16} />
          </button>
          {onThread && (
            <button className="icon-btn" aria-label={t("msg.replyInThread")} title={t("msg.replyInThread")} onClick={onThread} data-testid="reply-thread">
              <Icon name="chat" size={16} />
            </button>
          )}
          {onEdit && (
            <button className="icon-btn" aria-label={t("msg.edit")} title={t("msg.edit")} onClick={onEdit} data-testid="edit">
              <Icon name="edit" size={16} />
            </button>
          )}
          <button className="icon-btn" aria-label={t("msg.forward")} title={t("msg.forward")} onClick={onForward} data-testid="forward-btn">
            <Icon name="forward" size={16} />
          </button>
          <button className="icon-btn" aria-label={m.pinned_at ? t("msg.unpin") : t("msg.pin")} title={m.pinned_at ? t("msg.unpin") : t("msg.pin")} onClick={onPin}>
            <Icon name="pin" size={16} />
          </button>
          {(onRecall || onDelete) && (
            <button className="icon-btn danger" aria-label={onRecall ? t("msg.recall") : t("chat.delete")} title={onRecall ? t("msg.recall") : t("chat.delete")} onClick={onRecall ?? onDelete} data-testid="recall">
              <Icon name="trash" size={16} />
            </button>
          )}
        </div>
      )}
      {(m.reactions ?? []).length > 0 && (
        <div className="reactions">
          {m.reactions!.map((r) => {
            const reacted = r.users.includes(me);
            return (
              <button key={r.key} className={`reaction ${reacted ? "own" : ""}`} aria-pressed={reacted} aria-label={`${r.key} ${r.count}`} onClick={() => onReact(r.key, reacted)} data-testid="reaction">
                {r.key} <span>{r.count}</span>
              </button>
            );
          })}
        </div>
      )}
    </div>
  );
}

function Body({ body, t, nameFor }: { body: MessageBody; t: T; nameFor: (id: number) => string }) {
  switch (body.kind) {
    case "text":
      return <p className="text">{body.text}</p>;
    case "markdown":
      // Rendered to React elements, never to HTML: a message cannot inject markup (17.1).
      return <Markdown text={body.text} />;
    case "file":
      return <FileBody body={body} t={t} />;
    case "location":
      return <LocationBody body={body} t={t} />;
    case "contact":
      return <ContactBody userId={body.user_id} t={t} nameFor={nameFor} />;
    case "forward":
      return (
        <div className="forward" data-testid="forward">
          <div className="small muted">{t("msg.forwarded", { n: body.messages.length })}</div>
          {body.messages.map((f, i) => (
            <div className="forward-item" key={`${f.conversation_id}-${f.seq}-${i}`}>
              {f.sender_id != null && <strong className="small">{nameFor(f.sender_id)}</strong>}
              {f.body ? <Body body={f.body} t={t} nameFor={nameFor} /> : <p className="text muted italic">{t("chat.deleted")}</p>}
            </div>
          ))}
        </div>
      );
    case "deleted":
      return <p className="text muted italic">{t("chat.deleted")}</p>;
    case "encrypted":
      return <p className="text muted italic">{t("chat.encrypted")}</p>;
    case "call":
      return (
        <p className={`text call-record ${body.outcome}`} data-testid="call-record">
          <Icon name={body.video ? "video" : "phone"} size={16} /> {callText(body, t)}
        </p>
      );
    default:
      return <p className="text muted italic">{t("chat.unsupported")}</p>;
  }
}

/** Picks where to forward a message; the server copies the original's body and sender. */
function ForwardDialog({ message, onClose }: { message: Message; onClose: () => void }) {
  const c = useClient();
  const { t } = useI18n();
  const [q, setQ] = useState("");
  const needle = q.trim().toLowerCase();
  const targets = c.conversationList().filter((s) => !needle || conversationName(s).toLowerCase().includes(needle));
  const forward = (to: number) => {
    c.send(to, { kind: "forward", messages: [{ conversation_id: message.conversation_id, seq: message.seq }] });
    onClose();
  };
  return (
    <Dialog title={t("msg.forwardTo")} onClose={onClose}>
      <input type="search" placeholder={t("list.search")} aria-label={t("list.search")} value={q} onChange={(e) => setQ(e.target.value)} autoFocus />
      <ul className="pick" role="list">
        {targets.map((s) => (
          <li key={s.conversation.id}>
            <button className="ghost pick-row" onClick={() => forward(s.conversation.id)} data-testid={`forward-to-${conversationName(s)}`}>
              <Avatar name={conversationName(s)} seed={s.conversation.peer?.user_id ?? `g${s.conversation.id}`} size={28} /> {conversationName(s)}
            </button>
          </li>
        ))}
      </ul>
    </Dialog>
  );
}

function LocationBody({ body, t }: { body: MessageBodyLocation; t: T }) {
  const lat = body.latitude.toFixed(5);
  const lon = body.longitude.toFixed(5);
  // A link to the public map rather than an embedded one: the page's CSP loads nothing from
  // other origins, and the reader chooses whether to tell a map service where they look.
  const href = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=16/${lat}/${lon}`;
  return (
    <div className="file-card location" data-testid="location">
      <Icon name="pin" size={22} />
      <div className="file-info">
        <span className="file-name">{body.name || t("msg.location")}</span>
        <a className="small" href={href} target="_blank" rel="noopener noreferrer nofollow" aria-label={t("msg.openMap")}>
          {lat}, {lon}
        </a>
      </div>
    </div>
  );
}

function ContactBody({ userId, t, nameFor }: { userId: number; t: T; nameFor: (id: number) => string }) {
  const c = useClient();
  const [name, setName] = useState(() => nameFor(userId));
  useEffect(() => {
    c.rest.profile(userId).then((p) => setName(p.display_name || p.username), () => undefined);
  }, [userId]);
  return (
    <div className="file-card contact" data-testid="contact-card">
      <Avatar name={name} seed={userId} size={32} />
      <div className="file-info">
        <span className="file-name">{name}</span>
        <span className="small muted">{t("msg.contactCard")}</span>
      </div>
    </div>
  );
}

function FileBody({ body, t }: { body: MessageBodyFile; t: T }) {
  const c = useClient();
  const [urls, setUrls] = useState<{ full: string; small: string; large: string } | null>(null);
  const image = body.content_type?.startsWith("image/");
  useEffect(() => {
    // The bubble shows the 320 px thumbnail (800 px on dense screens); a click opens the image.
    if (image)
      c.imageUrls(body.file_id).then(
        (u) => setUrls({ full: u.full, small: u.thumbnail(320), large: u.thumbnail(800) }),
        () => undefined,
      );
  }, [body.file_id, image]);
  const download = async () => {
    const blob = await c.rest.download(body.file_id);
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = body.name || body.file_id;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  };
  return (
    <div className="file">
      {image && urls && (
        <a href={urls.full} target="_blank" rel="noopener noreferrer" aria-label={`${t("file.open")} ${body.name ?? ""}`}>
          <img className="file-img" src={urls.small} srcSet={`${urls.small} 1x, ${urls.large} 2x`} alt={body.name ?? ""} width={fit(body).width} height={fit(body).height} loading="lazy" />
        </a>
      )}
      <div className="file-card">
        <Icon name="file" size={22} />
        <div className="file-info">
          <span className="file-name">{body.name || body.file_id}</span>
          <span className="small muted">{formatBytes(body.size ?? 0)}</span>
        </div>
        <button className="icon-btn" aria-label={`${t("file.download")} ${body.name ?? ""}`} title={t("file.download")} onClick={() => void download()} data-testid="download">
          <Icon name="download" size={18} />
        </button>
      </div>
    </div>
  );
}

/** The size a 320 px thumbnail box gives an image, so the bubble keeps its place while loading. */
function fit(body: MessageBodyFile): { width?: number; height?: number } {
  const { width, height } = body;
  if (!width || !height) return {};
  const scale = Math.min(1, 320 / Math.max(width, height));
  return { width: Math.round(width * scale), height: Math.round(height * scale) };
}

function PendingRow({ p, onRetry, onDiscard }: { p: PendingMessage; onRetry: () => void; onDiscard: () => void }) {
  const { t } = useI18n();
  const failed = p.state === "failed";
  const reason = !failed ? "" : p.error === "forbidden" ? t("chat.refused.forbidden") : p.error === "not_found" ? t("chat.refused.not_found") : t("chat.refused.other", { code: p.error ?? "" });
  return (
    <div className={`row mine first ${failed ? "failed" : "pending"}`} data-testid={failed ? "failed-message" : "pending-message"}>
      <div className="bubble">
        {p.body.kind === "text" ? <p className="text">{p.body.text}</p> : <p className="text muted">{p.body.kind === "file" ? p.body.name : ""}</p>}
        <span className="meta">
          {failed ? (
            <span className="tick failed" aria-label={t("chat.failed")}>
              <Icon name="alert" size={14} />
            </span>
          ) : (
            <span className="tick pending" aria-label={t("chat.pending")} title={t("chat.pending")}>
              <Icon name="clock" size={14} />
            </span>
          )}
        </span>
      </div>
      {failed && (
        <div className="failed-actions" role="alert">
          <span>{reason}</span>
          <button className="link" onClick={onRetry}>
            {t("chat.retry")}
          </button>
          <button className="link" onClick={onDiscard}>
            {t("chat.discard")}
          </button>
        </div>
      )}
    </div>
  );
}

/** Adds an image's pixel size so others can lay it out before it loads. */
async function imageSize(file: File, body: MessageBodyFile): Promise<MessageBodyFile> {
  if (!file.type.startsWith("image/") || typeof createImageBitmap === "undefined") return body;
  try {
    const bmp = await createImageBitmap(file);
    const sized = { ...body, width: bmp.width, height: bmp.height };
    bmp.close();
    return sized;
  } catch {
    return body;
  }
}
