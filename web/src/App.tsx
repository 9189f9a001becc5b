// The page: the sign-in screen, or the shell (navigation rail, side panel, chat) once signed in.
// On narrow screens the side panel and the chat take turns.

import { useEffect, useState } from "react";
import { client, useClient, useTheme } from "./state";
import { useI18n } from "./i18n";
import { AuthScreen } from "./screens/Auth";
import { ConversationList } from "./screens/ConversationList";
import { ChatView } from "./screens/Chat";
import { ContactsPanel } from "./screens/Contacts";
import { SettingsPanel } from "./screens/Settings";
import { CallOverlay } from "./screens/Call";
import { Avatar } from "./ui/Avatar";
import { Icon } from "./ui/Icon";
import { conversationName, preview } from "./util";

export type Tab = "chats" | "contacts" | "settings";

export function App() {
  const c = useClient();
  const { t } = useI18n();
  const [theme, setTheme] = useTheme();
  // Back from linking a single sign-on identity ("#oidc_linked=..."): settings shows the outcome.
  const [tab, setTab] = useState<Tab>(() => (/(^#|&)oidc_(linked|error)=/.test(window.location.hash) ? "settings" : "chats"));
  const [open, setOpen] = useState<number | null>(null);
  // A message to show when the chat opens (a search hit).
  const [focusSeq, setFocusSeq] = useState<number | undefined>(undefined);

  // Notifications for messages that arrive while the page is hidden.
  useEffect(
    () =>
      client.onMessage((m, conv) => {
        if (!document.hidden || typeof Notification === "undefined" || Notification.permission !== "granted") return;
        // The user's per-conversation setting: everything, mentions of them only, or nothing.
        const notify = conv.conversation.settings?.notify ?? "all";
        const me = client.me?.user_id;
        const mentioned = !!m.mentions && (m.mentions.all === true || (me !== undefined && (m.mentions.users ?? []).includes(me)));
        if (notify === "none" || (notify === "mentions" && !mentioned)) return;
        const name = conv.conversation.kind === "direct" ? conversationName(conv) : `${conversationName(conv)}`;
        const n = new Notification(t("notify.newMessage", { name }), { body: preview(m, t), tag: `conv-${m.conversation_id}`, icon: "/icon-192.png" });
        n.onclick = () => {
          window.focus();
          setTab("chats");
          setOpen(m.conversation_id);
          n.close();
        };
      }),
    [t],
  );

  // A clicked push notification: the service worker names the conversation, by message to an
  // open window or as `#c=<id>` in a new one.
  useEffect(() => {
    const m = /^#c=(\d+)$/.exec(location.hash);
    if (m) {
      setTab("chats");
      setOpen(Number(m[1]));
      history.replaceState(null, "", location.pathname);
    }
    if (!("serviceWorker" in navigator)) return;
    const onMessage = (e: MessageEvent) => {
      if (e.data?.type === "open-conversation" && typeof e.data.conversation_id === "number") {
        setTab("chats");
        setOpen(e.data.conversation_id);
      }
    };
    navigator.serviceWorker.addEventListener("message", onMessage);
    return () => navigator.serviceWorker.removeEventListener("message", onMessage);
  }, []);

  // An invite link (`/join/<code>`): remembered through sign-in, then used once.
  useEffect(() => {
    const m = /^\/join\/([^/]+)$/.exec(location.pathname);
    if (m) {
      sessionStorage.setItem("tidings.join", decodeURIComponent(m[1]));
      history.replaceState(null, "", "/");
    }
  }, []);
  useEffect(() => {
    const code = sessionStorage.getItem("tidings.join");
    if (!code || c.status !== "online") return;
    sessionStorage.removeItem("tidings.join");
    c.rest
      .joinGroup(code)
      .then(async (r) => {
        if (r.status !== "joined") return;
        c.addConversation(await c.rest.conversation(r.conversation_id));
        setOpen(r.conversation_id);
        setTab("chats");
      })
      .catch(() => undefined);
  }, [c.status]);

  // The unread total in the tab title.
  const unread = [...c.conversations.values()].reduce((n, s) => n + (s.conversation.settings?.notify === "none" ? 0 : s.conversation.unread), 0);
  useEffect(() => {
    document.title = unread ? `(${unread}) ${t("app.name")}` : t("app.name");
  }, [unread, t]);

  if (c.status === "signed_out" || !c.me) return <AuthScreen />;

  const me = c.me;
  const openConversation = (id: number, seq?: number) => {
    setOpen(id);
    setFocusSeq(seq);
    setTab("chats");
  };

  const tabs: Array<{ id: Tab; icon: string; label: string; badge?: number }> = [
    { id: "chats", icon: "chat", label: t("nav.chats"), badge: unread },
    { id: "contacts", icon: "contacts", label: t("nav.contacts"), badge: c.contacts.incoming.length },
    { id: "settings", icon: "settings", label: t("nav.settings") },
  ];

  return (
    <div className={`shell ${open !== null && tab === "chats" ? "has-open" : ""}`}>
      <nav className="rail" aria-label={t("nav.main")}>
        <div className="rail-me" title={me.username}>
          <Avatar name={me.username} seed={me.user_id} size={36} />
        </div>
        {tabs.map((x) => (
          <button
            key={x.id}
            className={`rail-btn ${tab === x.id ? "active" : ""}`}
            aria-label={x.label}
            aria-current={tab === x.id ? "page" : undefined}
            onClick={() => setTab(x.id)}
            data-testid={`nav-${x.id}`}
          >
            <Icon name={x.icon} size={22} />
            <span className="rail-label">{x.label}</span>
            {!!x.badge && <span className="badge rail-badge">{x.badge > 99 ? "99+" : x.badge}</span>}
          </button>
        ))}
      </nav>
      <aside className="side">
        {tab === "chats" && <ConversationList selected={open} onSelect={openConversation} />}
        {tab === "contacts" && <ContactsPanel onOpen={openConversation} />}
        {tab === "settings" && <SettingsPanel theme={theme} setTheme={setTheme} />}
      </aside>
      <main className="main">
        <ConnectionBanner />
        {open !== null && c.conversations.has(open) ? (
          <ChatView key={`${open}-${focusSeq ?? ""}`} conversationId={open} focusSeq={focusSeq} onBack={() => setOpen(null)} />
        ) : (
          <div className="empty-main">
            <div className="empty-logo" aria-hidden="true">
              <img src="/icon.svg" alt="" width={72} height={72} />
            </div>
            <p>{t("chat.pick")}</p>
          </div>
        )}
      </main>
      <CallOverlay />
    </div>
  );
}

function ConnectionBanner() {
  const c = useClient();
  const { t } = useI18n();
  if (c.status === "online") return null;
  const offline = c.status === "offline" || c.failures > 0;
  return (
    <div className={`banner ${offline ? "warn" : ""}`} role="status" aria-live="polite" data-testid="connection-banner">
      <Icon name={offline ? "wifi" : "clock"} size={16} />
      <span>{offline ? t("banner.offline") : t("banner.connecting")}</span>
      {offline && (
        <button className="link" onClick={() => c.reconnectNow()}>
          {t("banner.retryNow")}
        </button>
      )}
    </div>
  );
}
