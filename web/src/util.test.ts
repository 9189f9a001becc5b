// Unit tests of the presentation rules: initials, sender grouping, day labels, languages.

import { describe, expect, it } from "vitest";
import { initials, startsGroup, dayKey } from "./util";
import { browserLang, translate } from "./i18n";
import type { Message } from "@tidings/sdk";

const m = (sender: number, ts: number): Message => ({
  conversation_id: 1, seq: 1, id: 1, sender_id: sender, sender_device_id: 1, client_msg_id: "x", ts, body: { kind: "text", text: "a" },
});

describe("presentation rules", () => {
  it("makes initials for Latin and Chinese names", () => {
    expect(initials("alice")).toBe("A");
    expect(initials("mary_ann")).toBe("MA");
    expect(initials("王小明")).toBe("王");
  });

  it("groups consecutive messages of one sender within five minutes", () => {
    const t0 = new Date(2026, 0, 5, 10).getTime();
    expect(startsGroup(undefined, m(1, t0))).toBe(true);
    expect(startsGroup(m(1, t0), m(1, t0 + 60000))).toBe(false);
    expect(startsGroup(m(1, t0), m(2, t0 + 60000))).toBe(true);
    expect(startsGroup(m(1, t0), m(1, t0 + 6 * 60000))).toBe(true);
    expect(dayKey(t0)).not.toBe(dayKey(t0 + 86400000));
  });

  it("picks the language from the browser and translates with variables", () => {
    expect(browserLang(["zh-TW", "en"])).toBe("zh-CN");
    expect(browserLang(["fr", "en-GB"])).toBe("en");
    expect(browserLang(["fr"])).toBe("en");
    expect(translate("zh-CN", "chat.typing", { name: "bob" })).toBe("bob 正在输入…");
    expect(translate("en", "list.unread", { n: 3 })).toBe("3 unread");
  });
});
