// Groups: creating one from friends, and the member panel with roles and the moderation actions
// the user's role allows (the server's policy decides; the panel only hides what cannot work).

import { useEffect, useRef, useState } from "react";
import type { GroupInfo, Member, Role } from "@tidings/sdk";
import { useClient } from "../state";
import { useI18n } from "../i18n";
import { Avatar } from "../ui/Avatar";
import { Icon } from "../ui/Icon";

const RANK: Record<Role, number> = { member: 0, admin: 1, owner: 2 };

export function GroupCreateDialog({ onClose, onCreated }: { onClose: () => void; onCreated: (id: number) => void }) {
  const c = useClient();
  const { t } = useI18n();
  const [title, setTitle] = useState("");
  const [picked, setPicked] = useState<Set<number>>(new Set());
  const [error, setError] = useState<string | null>(null);
  const [code, setCode] = useState("");

  const create = async () => {
    try {
      const id = await c.createGroup(title.trim(), [...picked]);
      onCreated(id);
      onClose();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  const join = async () => {
    try {
      // Accept a whole link as well as the bare code.
      const bare = decodeURIComponent(code.trim().replace(/^.*\/join\//, ""));
      const r = await c.rest.joinGroup(bare);
      if (r.status === "joined") {
        c.addConversation(await c.rest.conversation(r.conversation_id));
        onCreated(r.conversation_id);
      }
      onClose();
    } catch (e) {
      setError((e as Error).message);
    }
  };

  return (
    <Dialog title={t("group.create")} onClose={onClose}>
      <label className="field">
        <span>{t("group.title")}</span>
        <input value={title} maxLength={128} onChange={(e) => setTitle(e.target.value)} autoFocus data-testid="group-title" />
      </label>
      <fieldset className="pick">
        <legend>{t("group.pickMembers")}</legend>
        {c.contacts.friends.length === 0 && <p className="muted small">{t("contacts.noFriends")}</p>}
        {c.contacts.friends.map((f) => (
          <label key={f.user_id} className="pick-row">
            <input
              type="checkbox"
              checked={picked.has(f.user_id)}
              onChange={(e) => {
                const next = new Set(picked);
                if (e.target.checked) next.add(f.user_id);
                else next.delete(f.user_id);
                setPicked(next);
              }}
            />
            <Avatar name={f.username} seed={f.user_id} size={28} />
            <span>{f.username}</span>
          </label>
        ))}
      </fieldset>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <div className="dialog-actions">
        <button className="ghost" onClick={onClose}>
          {t("common.cancel")}
        </button>
        <button className="primary" disabled={!title.trim()} onClick={() => void create()} data-testid="group-create">
          {t("group.create")}
        </button>
      </div>
      <hr />
      <label className="field">
        <span>{t("group.joinByCode")}</span>
        <span className="inline">
          <input value={code} onChange={(e) => setCode(e.target.value)} />
          <button className="ghost" disabled={!code.trim()} onClick={() => void join()}>
            {t("group.join")}
          </button>
        </span>
      </label>
    </Dialog>
  );
}

export function MembersPanel({ conversationId, onClose }: { conversationId: number; onClose: () => void }) {
  const c = useClient();
  const { t } = useI18n();
  const [members, setMembers] = useState<Member[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [invite, setInvite] = useState<string | null>(null);
  const me = c.me!.user_id;

  const [info, setInfo] = useState<GroupInfo | null>(null);
  const [title, setTitle] = useState("");
  const [announcement, setAnnouncement] = useState("");
  const load = () =>
    Promise.all([
      c.rest.members(conversationId).then(setMembers),
      c.rest.groupInfo(conversationId).then((g) => {
        setInfo(g);
        setTitle(g.title);
        setAnnouncement(g.announcement);
      }),
    ]).catch((e: Error) => setError(e.message));
  useEffect(() => {
    void load();
  }, [conversationId]);

  const act = async (fn: () => Promise<unknown>) => {
    setError(null);
    try {
      await fn();
      await load();
    } catch (e) {
      setError((e as Error).message);
    }
  };

  const mine = members.find((m) => m.user_id === me)?.role ?? "member";
  const inGroup = new Set(members.map((m) => m.user_id));
  const candidates = c.contacts.friends.filter((f) => !inGroup.has(f.user_id));

  return (
    <Dialog title={t("group.members")} onClose={onClose}>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {info && mine !== "member" ? (
        <div className="group-settings">
          <label className="field">
            <span>{t("group.title")}</span>
            <input value={title} maxLength={128} onChange={(e) => setTitle(e.target.value)} />
          </label>
          <label className="field">
            <span>{t("group.announcement")}</span>
            <textarea className="textarea" rows={2} maxLength={2000} value={announcement} onChange={(e) => setAnnouncement(e.target.value)} />
          </label>
          <div className="dialog-actions">
            <button
              className="ghost"
              disabled={!title.trim() || (title === info.title && announcement === info.announcement)}
              onClick={() =>
                void act(async () => {
                  const g = await c.rest.updateGroup(conversationId, { title: title.trim(), announcement });
                  const s = c.conversations.get(conversationId);
                  if (s) c.addConversation({ ...s.conversation, title: g.title });
                })
              }
            >
              {t("group.save")}
            </button>
          </div>
        </div>
      ) : (
        info?.announcement && (
          <p className="notice">
            <strong>{t("group.announcement")}</strong>
            <br />
            {info.announcement}
          </p>
        )
      )}
      <h3 className="members-h">{t("group.members")}</h3>
      <ul className="members" role="list">
        {members.map((m) => {
          const above = RANK[mine] > RANK[m.role] && m.user_id !== me;
          const muted = (m.muted_until ?? 0) > Date.now();
          return (
            <li key={m.user_id} className="person">
              <Avatar name={m.username} seed={m.user_id} size={34} online={c.isOnline(m.user_id)} />
              <span className="person-text">
                <span className="person-name">
                  {m.username} {m.user_id === me && <span className="muted small">({t("common.me")})</span>}
                </span>
                <span className="small muted">
                  <span className={`role role-${m.role}`}>{t(`group.role.${m.role}`)}</span>
                  {muted && ` · ${t("group.muted")}`}
                </span>
              </span>
              {above && (
                <span className="person-actions wrap">
                  {mine === "owner" && (
                    <button className="ghost small" onClick={() => void act(() => c.rest.setRole(conversationId, m.user_id, m.role === "admin" ? "member" : "admin"))}>
                      {m.role === "admin" ? t("group.makeMember") : t("group.makeAdmin")}
                    </button>
                  )}
                  <button className="ghost small" onClick={() => void act(() => (muted ? c.rest.unmute(conversationId, m.user_id) : c.rest.mute(conversationId, m.user_id)))}>
                    {muted ? t("group.unmute") : t("group.mute")}
                  </button>
                  <button className="ghost small danger" onClick={() => void act(() => c.rest.removeMember(conversationId, m.user_id))}>
                    {t("group.removeMember")}
                  </button>
                  <button className="ghost small danger" onClick={() => void act(() => c.rest.ban(conversationId, m.user_id))}>
                    {t("group.ban")}
                  </button>
                </span>
              )}
            </li>
          );
        })}
      </ul>
      {candidates.length > 0 && (
        <div className="person-list">
          <h3>{t("group.invite")}</h3>
          <ul role="list">
            {candidates.map((f) => (
              <li key={f.user_id} className="person">
                <Avatar name={f.username} seed={f.user_id} size={30} />
                <span className="person-text">{f.username}</span>
                <button className="ghost small" aria-label={`${t("group.invite")}: ${f.username}`} onClick={() => void act(() => c.rest.addMembers(conversationId, [f.user_id]))}>
                  <Icon name="plus" size={16} />
                </button>
              </li>
            ))}
          </ul>
        </div>
      )}
      {invite && <p className="notice">{t("group.linkCopied", { code: invite })}</p>}
      <div className="dialog-actions wrap">
        <button className="ghost" onClick={() => void act(async () => setInvite(`${location.origin}/join/${encodeURIComponent((await c.rest.createInviteLink(conversationId)).code ?? "")}`))}>
          {t("group.inviteLink")}
        </button>
        {mine !== "owner" && (
          <button
            className="ghost danger"
            onClick={() =>
              void act(async () => {
                await c.rest.removeMember(conversationId, me);
                c.forgetConversation(conversationId);
                onClose();
              })
            }
          >
            {t("group.leave")}
          </button>
        )}
        {mine === "owner" && (
          <button
            className="ghost danger"
            onClick={() =>
              void act(async () => {
                await c.rest.dissolveGroup(conversationId);
                c.forgetConversation(conversationId);
                onClose();
              })
            }
          >
            {t("group.dissolve")}
          </button>
        )}
      </div>
    </Dialog>
  );
}

/** A modal dialog: focus moves in, Escape closes it. */
export function Dialog({ title, onClose, children }: { title: string; onClose: () => void; children: React.ReactNode }) {
  const { t } = useI18n();
  const box = useRef<HTMLDivElement>(null);
  // Focus moves into the dialog when it opens and back to where it was when it closes.
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    const first = box.current?.querySelector<HTMLElement>("input, textarea, button:not([disabled])");
    if (!box.current?.contains(document.activeElement)) first?.focus();
    return () => before?.focus?.();
  }, []);
  // Tab stays inside the dialog.
  const trap = (e: React.KeyboardEvent) => {
    if (e.key !== "Tab" || !box.current) return;
    const items = [...box.current.querySelectorAll<HTMLElement>("input, textarea, button:not([disabled]), [tabindex='0']")];
    if (!items.length) return;
    const [first, last] = [items[0], items[items.length - 1]];
    if (e.shiftKey && document.activeElement === first) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && document.activeElement === last) {
      e.preventDefault();
      first.focus();
    }
  };
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && onClose();
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onClose]);
  return (
    <div className="overlay" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <div className="dialog" role="dialog" aria-modal="true" aria-label={title} ref={box} onKeyDown={trap}>
        <header className="dialog-head">
          <h2>{title}</h2>
          <button className="icon-btn" aria-label={t("common.close")} onClick={onClose}>
            <Icon name="x" />
          </button>
        </header>
        <div className="dialog-body">{children}</div>
      </div>
    </div>
  );
}
