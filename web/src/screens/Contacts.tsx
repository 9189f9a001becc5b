// Contacts: find people, friend requests both ways, friends (message, remove, block) and the
// block list.

import { useEffect, useState } from "react";
import { TidingsError, type Profile } from "@tidings/sdk";
import { useClient } from "../state";
import { useI18n } from "../i18n";
import { Avatar } from "../ui/Avatar";
import { Icon } from "../ui/Icon";

export function ContactsPanel({ onOpen }: { onOpen: (conversationId: number) => void }) {
  const c = useClient();
  const { t } = useI18n();
  const [q, setQ] = useState("");
  const [results, setResults] = useState<Profile[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const needle = q.trim();
    if (needle.length < 2) {
      setResults(null);
      return;
    }
    const timer = setTimeout(() => {
      c.rest.searchUsers(needle).then(
        (r) => setResults(r.users.filter((u) => u.user_id !== c.me?.user_id)),
        (e: TidingsError) => setError(e.message),
      );
    }, 250);
    return () => clearTimeout(timer);
  }, [q]);

  const act = async (fn: () => Promise<unknown>) => {
    setError(null);
    try {
      await fn();
      await c.refreshContacts();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  };
  const message = async (userId: number) => {
    try {
      onOpen(await c.openDirect(userId));
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  };

  const { friends, incoming, outgoing, blocked } = c.contacts;
  const isFriend = (id: number) => friends.some((f) => f.user_id === id);
  const asked = (id: number) => outgoing.some((r) => r.to.user_id === id);
  const isBlocked = (id: number) => blocked.some((b) => b.user_id === id);

  return (
    <section className="panel" aria-label={t("contacts.title")}>
      <header className="panel-head">
        <h2>{t("contacts.title")}</h2>
      </header>
      <div className="search">
        <Icon name="search" size={16} />
        <input type="search" placeholder={t("contacts.search")} aria-label={t("contacts.search")} value={q} onChange={(e) => setQ(e.target.value)} data-testid="user-search" />
      </div>
      {error && (
        <p className="error pad" role="alert">
          {error}
        </p>
      )}
      <div className="scroll">
        {q.trim().length > 0 && (
          <PersonList title={t("contacts.results")}>
            {q.trim().length < 2 && <p className="muted pad">{t("contacts.searchHint")}</p>}
            {results?.length === 0 && <p className="muted pad">{t("contacts.noResults")}</p>}
            {results?.map((u) => (
              <Person key={u.user_id} id={u.user_id} name={u.username} sub={u.display_name || u.status_text}>
                <button className="ghost small" onClick={() => void message(u.user_id)} data-testid={`message-${u.username}`}>
                  {t("contacts.message")}
                </button>
                {isFriend(u.user_id) ? null : asked(u.user_id) ? (
                  <span className="small muted">{t("contacts.requested")}</span>
                ) : (
                  <button className="primary small" onClick={() => void act(() => c.rest.sendFriendRequest(u.user_id))} data-testid={`add-${u.username}`}>
                    {t("contacts.add")}
                  </button>
                )}
                {isBlocked(u.user_id) ? (
                  <button className="ghost small" onClick={() => void act(() => c.rest.unblock(u.user_id))}>
                    {t("contacts.unblock")}
                  </button>
                ) : (
                  <button className="ghost small danger" onClick={() => void act(() => c.rest.block(u.user_id))} data-testid={`block-${u.username}`}>
                    {t("contacts.block")}
                  </button>
                )}
              </Person>
            ))}
          </PersonList>
        )}
        {incoming.length > 0 && (
          <PersonList title={t("contacts.incoming")}>
            {incoming.map((r) => (
              <Person key={r.from.user_id} id={r.from.user_id} name={r.from.username} sub={r.note ?? ""}>
                <button className="primary small" onClick={() => void act(() => c.rest.acceptFriendRequest(r.from.user_id))} data-testid={`accept-${r.from.username}`}>
                  {t("contacts.accept")}
                </button>
                <button className="ghost small" onClick={() => void act(() => c.rest.declineFriendRequest(r.from.user_id))}>
                  {t("contacts.decline")}
                </button>
              </Person>
            ))}
          </PersonList>
        )}
        {outgoing.length > 0 && (
          <PersonList title={t("contacts.outgoing")}>
            {outgoing.map((r) => (
              <Person key={r.to.user_id} id={r.to.user_id} name={r.to.username} sub={r.note ?? ""}>
                <button className="ghost small" onClick={() => void act(() => c.rest.cancelFriendRequest(r.to.user_id))}>
                  {t("contacts.cancel")}
                </button>
              </Person>
            ))}
          </PersonList>
        )}
        <PersonList title={t("contacts.friends")}>
          {friends.length === 0 && <p className="muted pad">{t("contacts.noFriends")}</p>}
          {friends.map((f) => (
            <Person key={f.user_id} id={f.user_id} name={f.username} online={c.presence.has(f.user_id) ? c.isOnline(f.user_id) : undefined}>
              <button className="primary small" onClick={() => void message(f.user_id)} data-testid={`message-${f.username}`}>
                {t("contacts.message")}
              </button>
              <button className="ghost small" onClick={() => void act(() => c.rest.removeFriend(f.user_id))} aria-label={`${t("contacts.remove")} ${f.username}`}>
                {t("contacts.remove")}
              </button>
            </Person>
          ))}
        </PersonList>
        {blocked.length > 0 && (
          <PersonList title={t("contacts.blocked")}>
            {blocked.map((b) => (
              <Person key={b.user_id} id={b.user_id} name={b.username}>
                <button className="ghost small" onClick={() => void act(() => c.rest.unblock(b.user_id))} data-testid={`unblock-${b.username}`}>
                  {t("contacts.unblock")}
                </button>
              </Person>
            ))}
          </PersonList>
        )}
      </div>
    </section>
  );
}

function PersonList({ title, children }: { title: string; children: React.ReactNode }) {
  return (
    <div className="person-list">
      <h3>{title}</h3>
      <ul role="list">{children}</ul>
    </div>
  );
}

function Person({ id, name, sub, online, children }: { id: number; name: string; sub?: string; online?: boolean; children?: React.ReactNode }) {
  return (
    <li className="person" data-testid={`person-${name}`}>
      <Avatar name={name} seed={id} size={38} online={online} />
      <span className="person-text">
        <span className="person-name">{name}</span>
        {sub && <span className="small muted">{sub}</span>}
      </span>
      <span className="person-actions">{children}</span>
    </li>
  );
}
