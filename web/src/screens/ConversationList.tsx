// The conversation list: search box, newest activity first, last message, unread badges and
// presence dots. Arrow keys move between conversations.

import { useEffect, useRef, useState, type KeyboardEvent } from "react";
import type { SearchHit } from "@tidings/sdk";
import { useClient } from "../state";
import { useI18n } from "../i18n";
import { Avatar } from "../ui/Avatar";
import { Icon } from "../ui/Icon";
import { conversationName, preview, shortTime } from "../util";
import { GroupCreateDialog } from "./Groups";

export function ConversationList({ selected, onSelect }: { selected: number | null; onSelect: (id: number, seq?: number) => void }) {
  const c = useClient();
  const { t, lang } = useI18n();
  const [q, setQ] = useState("");
  const [creating, setCreating] = useState(false);
  const [showArchived, setShowArchived] = useState(false);
  const listRef = useRef<HTMLUListElement>(null);
  const needle = q.trim().toLowerCase();
  const [hits, setHits] = useState<SearchHit[] | null>(null);

  // Message search on the server (full text, CJK included), after a pause in typing.
  useEffect(() => {
    if (needle.length < 2) {
      setHits(null);
      return;
    }
    const timer = setTimeout(() => {
      c.rest.search(needle).then(
        (r) => setHits(r.hits),
        () => setHits(null),
      );
    }, 300);
    return () => clearTimeout(timer);
  }, [needle]);
  const matching = c.conversationList().filter((s) => !needle || conversationName(s).toLowerCase().includes(needle) || preview(s.lastMessage, t).toLowerCase().includes(needle));
  // Archived conversations leave the main list for their own view (a search looks in both).
  const archived = matching.filter((s) => s.conversation.settings?.archived);
  const items = needle ? matching : matching.filter((s) => !!s.conversation.settings?.archived === showArchived);
  const archivedUnread = archived.reduce((n, s) => n + (s.conversation.unread ?? 0), 0);

  const onKey = (e: KeyboardEvent) => {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    e.preventDefault();
    const buttons = [...(listRef.current?.querySelectorAll<HTMLButtonElement>("button.conv") ?? [])];
    const i = buttons.indexOf(document.activeElement as HTMLButtonElement);
    const next = e.key === "ArrowDown" ? Math.min(buttons.length - 1, i + 1) : Math.max(0, i - 1);
    buttons[next]?.focus();
  };

  return (
    <section className="panel" aria-label={t("list.conversations")}>
      <header className="panel-head">
        <h2>{t("nav.chats")}</h2>
        <button className="icon-btn" aria-label={t("list.newGroup")} title={t("list.newGroup")} onClick={() => setCreating(true)} data-testid="new-group">
          <Icon name="plus" />
        </button>
      </header>
      <div className="search">
        <Icon name="search" size={16} />
        <input type="search" placeholder={t("list.search")} aria-label={t("list.search")} value={q} onChange={(e) => setQ(e.target.value)} />
      </div>
      {!needle && (archived.length > 0 || showArchived) && (
        <button className="ghost archived-toggle" onClick={() => setShowArchived((v) => !v)} aria-pressed={showArchived} data-testid="archived-toggle">
          <Icon name={showArchived ? "chat" : "archive"} size={16} />
          {showArchived ? t("list.backToChats") : t("list.archived", { n: archived.length })}
          {!showArchived && archivedUnread > 0 && <span className="badge muted">{archivedUnread > 99 ? "99+" : archivedUnread}</span>}
        </button>
      )}
      {items.length === 0 ? (
        <p className="muted pad">{showArchived ? t("list.noArchived") : t("list.empty")}</p>
      ) : (
        <ul className="conv-list" ref={listRef} onKeyDown={onKey} role="list">
          {items.map((s) => {
            const conv = s.conversation;
            const name = conversationName(s);
            const peer = conv.peer?.user_id;
            const last = s.lastMessage;
            const mine = last && last.sender_id === c.me?.user_id;
            const typing = s.typing.size > 0;
            return (
              <li key={conv.id}>
                <button
                  className={`conv ${selected === conv.id ? "selected" : ""}`}
                  onClick={() => onSelect(conv.id)}
                  aria-current={selected === conv.id ? "true" : undefined}
                  aria-label={`${name}${conv.unread ? `, ${t("list.unread", { n: conv.unread })}` : ""}`}
                  data-testid={`conv-${name}`}
                >
                  <Avatar name={name} seed={peer ?? `g${conv.id}`} size={46} online={peer !== undefined ? c.isOnline(peer) : undefined} />
                  <span className="conv-text">
                    <span className="conv-top">
                      <span className="conv-name">
                        {conv.kind === "group" && <Icon name="users" size={14} />} {name}
                      </span>
                      <span className="conv-flags">
                        {conv.settings?.pinned_at && (
                          <span title={t("conv.pinned")} aria-label={t("conv.pinned")}>
                            <Icon name="pin" size={13} />
                          </span>
                        )}
                        {conv.settings?.notify === "none" && (
                          <span title={t("conv.muted")} aria-label={t("conv.muted")}>
                            <Icon name="bellOff" size={13} />
                          </span>
                        )}
                        {last && <time className="conv-time">{shortTime(last.ts, lang)}</time>}
                      </span>
                    </span>
                    <span className="conv-bottom">
                      <span className={`conv-preview ${typing ? "typing" : ""}`}>
                        {typing
                          ? conv.kind === "direct"
                            ? t("chat.typing", { name })
                            : t("chat.typingMany")
                          : `${mine && last?.body.kind !== "system" ? t("list.you") : ""}${preview(last, t, c)}`}
                      </span>
                      {(conv.mentions ?? 0) > 0 && (
                        <span className="badge mention" title={t("list.mentioned")}>
                          @
                        </span>
                      )}
                      {(conv.unread > 0 || conv.settings?.marked_unread) && (
                        <span className={`badge ${conv.settings?.notify === "none" ? "muted" : ""}`} aria-hidden="true">
                          {conv.unread > 99 ? "99+" : conv.unread || ""}
                        </span>
                      )}
                    </span>
                  </span>
                </button>
              </li>
            );
          })}
        </ul>
      )}
      {hits !== null && (
        <div className="person-list search-hits">
          <h3>{t("search.messages")}</h3>
          {hits.length === 0 && <p className="muted pad small">{t("search.noHits")}</p>}
          <ul role="list">
            {hits.map((h) => {
              const conv = c.conversations.get(h.message.conversation_id);
              if (!conv) return null;
              return (
                <li key={`${h.message.conversation_id}-${h.message.seq}`}>
                  <button className="conv hit" onClick={() => onSelect(h.message.conversation_id, h.message.seq)} data-testid="search-hit">
                    <span className="conv-text">
                      <span className="conv-top">
                        <span className="conv-name">{conversationName(conv)}</span>
                        <time className="conv-time">{shortTime(h.message.ts, lang)}</time>
                      </span>
                      <span className="conv-preview">{preview(h.message, t)}</span>
                    </span>
                  </button>
                </li>
              );
            })}
          </ul>
        </div>
      )}
      {creating && <GroupCreateDialog onClose={() => setCreating(false)} onCreated={(id) => onSelect(id)} />}
    </section>
  );
}
