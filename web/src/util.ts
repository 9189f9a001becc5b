// Small presentation helpers: dates, day separators, avatars, and message previews.

import type { Message, TidingsClient, ConversationState } from "@tidings/sdk";
import type { Lang, T } from "./i18n";

export function timeOf(ts: number, lang: Lang): string {
  return new Date(ts).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
}

export function dayKey(ts: number): string {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

export function dayLabel(ts: number, lang: Lang, t: T, now = Date.now()): string {
  if (dayKey(ts) === dayKey(now)) return t("chat.today");
  if (dayKey(ts) === dayKey(now - 86400000)) return t("chat.yesterday");
  return new Date(ts).toLocaleDateString(lang, { year: "numeric", month: "long", day: "numeric", weekday: "short" });
}

/** A short time for lists: the time today, otherwise the date. */
export function shortTime(ts: number, lang: Lang): string {
  if (dayKey(ts) === dayKey(Date.now())) return timeOf(ts, lang);
  return new Date(ts).toLocaleDateString(lang, { month: "short", day: "numeric" });
}

const PALETTE = ["#6366f1", "#0ea5e9", "#14b8a6", "#22c55e", "#f59e0b", "#ef4444", "#ec4899", "#8b5cf6"];

export function avatarColor(seed: string | number): string {
  const s = String(seed);
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

export function initials(name: string): string {
  const trimmed = name.trim();
  if (!trimmed) return "?";
  // Chinese names read best as their first character; Latin ones as one or two initials.
  if (/[\u3400-\u9fff]/.test(trimmed[0])) return trimmed[0];
  const parts = trimmed.split(/[\s._-]+/).filter(Boolean);
  return ((parts[0]?.[0] ?? "") + (parts[1]?.[0] ?? "")).toUpperCase() || trimmed[0].toUpperCase();
}

export function conversationName(c: ConversationState): string {
  return c.conversation.kind === "direct" ? (c.conversation.peer?.username ?? "…") : c.conversation.title;
}

export function preview(m: Message | undefined, t: T, client?: TidingsClient): string {
  if (!m) return t("list.noMessages");
  switch (m.body.kind) {
    case "text":
    case "markdown":
      return m.body.text;
    case "file":
      return m.body.content_type?.startsWith("image/") ? t("body.image") : t("body.file", { name: m.body.name ?? "" });
    case "deleted":
      return t("chat.deleted");
    case "encrypted":
      return t("chat.encrypted");
    case "location":
      return m.body.name ? `${t("msg.location")}: ${m.body.name}` : t("msg.location");
    case "contact":
      return t("msg.contactCard");
    case "forward":
      return t("msg.forwarded", { n: m.body.messages.length });
    case "system":
      return client ? systemText(m, nameOf(client, m.sender_id), t, (id) => nameOf(client, id)) : t("chat.system");
    default:
      return t("chat.unsupported");
  }
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

/** A name for user ids the client knows (peers, friends, members seen). */
export function nameOf(client: TidingsClient, userId: number, members?: Map<number, string>): string {
  if (userId === client.me?.user_id) return client.me.username;
  const m = members?.get(userId);
  if (m) return m;
  for (const c of client.conversations.values()) if (c.conversation.peer?.user_id === userId) return c.conversation.peer.username;
  const f = client.contacts.friends.find((x) => x.user_id === userId);
  return f?.username ?? `#${userId}`;
}

/** Messages of one sender within five minutes of each other form a group. */
export function startsGroup(prev: Message | undefined, m: Message): boolean {
  return !prev || prev.sender_id !== m.sender_id || m.ts - prev.ts > 5 * 60 * 1000 || dayKey(prev.ts) !== dayKey(m.ts) || prev.body.kind === "system";
}

/** A group event in words. */
export function systemText(m: Message, actor: string, t: T, name: (id: number) => string): string {
  if (m.body.kind !== "system") return "";
  const e = m.body.event;
  switch (e.type) {
    case "members_added":
      return t("sys.members_added", { actor, users: e.users.map(name).join(", ") });
    case "member_joined":
      return t("sys.member_joined", { user: name(e.user) });
    case "member_left":
      return t("sys.member_left", { actor });
    case "member_removed":
    case "member_banned":
    case "member_unbanned":
    case "member_muted":
    case "member_unmuted":
    case "ownership_transferred":
      return t(`sys.${e.type}`, { actor, user: name(e.user) });
    case "role_changed":
      return t("sys.role_changed", { actor, user: name(e.user), role: t(`group.role.${e.role}`) });
    case "info_changed":
      return e.title ? t("sys.title_changed", { actor, title: e.title }) : t("sys.info_changed", { actor });
    case "permissions_changed":
    case "message_deleted":
    case "group_dissolved":
      return t(`sys.${e.type}`, { actor });
    default:
      return t("chat.system");
  }
}
