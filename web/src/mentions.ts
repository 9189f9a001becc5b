// The composer's @mentions: which word the caret is in, who matches it, and what picking one
// does to the text. Pure functions, so the rules are unit tested without a browser.

/** The `@word` being typed at the caret: where its `@` is and the letters after it. */
export function mentionQuery(text: string, caret: number): { start: number; query: string } | null {
  const before = text.slice(0, caret);
  const match = /(^|\s)@([a-z0-9_.-]{0,32})$/i.exec(before);
  if (!match) return null;
  return { start: caret - match[2].length - 1, query: match[2].toLowerCase() };
}

export interface MentionCandidate {
  /** A member's id, or "all" for everyone. */
  id: number | "all";
  username: string;
}

/**
 * Members whose username starts with the query (then those containing it), without the
 * writer, at most `limit`; `@all` first when the writer may use it and it matches.
 */
export function mentionCandidates(query: string, members: Iterable<[number, string]>, me: number, allowAll: boolean, limit = 6): MentionCandidate[] {
  const starts: MentionCandidate[] = [];
  const contains: MentionCandidate[] = [];
  for (const [id, username] of members) {
    if (id === me) continue;
    const name = username.toLowerCase();
    if (name.startsWith(query)) starts.push({ id, username });
    else if (query && name.includes(query)) contains.push({ id, username });
  }
  const byName = (a: MentionCandidate, b: MentionCandidate) => a.username.localeCompare(b.username);
  const all: MentionCandidate[] = allowAll && "all".startsWith(query) ? [{ id: "all", username: "all" }] : [];
  return [...all, ...starts.sort(byName), ...contains.sort(byName)].slice(0, limit);
}

/** Replaces the `@word` at `start` with the chosen username and a space; returns the new caret. */
export function applyMention(text: string, start: number, caret: number, username: string): { text: string; caret: number } {
  const inserted = `@${username} `;
  return { text: text.slice(0, start) + inserted + text.slice(caret), caret: start + inserted.length };
}

/** The mentions a finished message carries: known usernames after `@`, and `@all` if allowed. */
export function mentionsIn(text: string, usernames: Map<string, number>, me: number, allowAll: boolean): { users?: number[]; all?: boolean } | undefined {
  const words = [...text.matchAll(/(?:^|[^\w@])@([a-z][a-z0-9_.-]{1,31})/gi)].map((m) => m[1].toLowerCase());
  const all = allowAll && words.includes("all");
  const users = [...new Set(words.map((w) => usernames.get(w)).filter((id): id is number => id !== undefined && id !== me))];
  if (!users.length && !all) return undefined;
  return { ...(users.length ? { users } : {}), ...(all ? { all: true } : {}) };
}
