// Unit tests of @mention autocomplete and of the mentions a sent message carries.

import { describe, expect, it } from "vitest";
import { applyMention, mentionCandidates, mentionQuery, mentionsIn } from "./mentions";

const members: [number, string][] = [
  [1, "alice"],
  [2, "bob"],
  [3, "albert"],
  [4, "carol_al"],
];

describe("mentions", () => {
  it("finds the @word at the caret", () => {
    expect(mentionQuery("hi @al", 6)).toEqual({ start: 3, query: "al" });
    expect(mentionQuery("@", 1)).toEqual({ start: 0, query: "" });
    expect(mentionQuery("mail me at a@b", 14)).toBeNull();
    expect(mentionQuery("hi @al there", 12)).toBeNull();
    expect(mentionQuery("你好 @Bo", 6)).toEqual({ start: 3, query: "bo" });
  });

  it("ranks prefix matches first, skips the writer, offers @all only when allowed", () => {
    expect(mentionCandidates("al", members, 2, false).map((c) => c.username)).toEqual(["albert", "alice", "carol_al"]);
    expect(mentionCandidates("al", members, 1, true).map((c) => c.username)).toEqual(["all", "albert", "carol_al"]);
    expect(mentionCandidates("", members, 1, false, 2).map((c) => c.username)).toEqual(["albert", "bob"]);
    expect(mentionCandidates("zz", members, 1, true)).toEqual([]);
  });

  it("replaces the typed word with the chosen name", () => {
    expect(applyMention("hi @al and", 3, 6, "alice")).toEqual({ text: "hi @alice  and", caret: 10 });
  });

  it("collects the mentions of a finished message", () => {
    const names = new Map(members.map(([id, n]) => [n, id]));
    expect(mentionsIn("@alice and @Bob, not a@bob or @nobody", names, 3, false)).toEqual({ users: [1, 2] });
    expect(mentionsIn("@all meeting now", names, 1, true)).toEqual({ all: true });
    expect(mentionsIn("@all meeting now", names, 1, false)).toBeUndefined();
    expect(mentionsIn("@albert is me", names, 3, false)).toBeUndefined();
  });
});
