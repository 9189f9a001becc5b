// Checks that both languages are complete and that components hold no hard-coded text: every
// visible string and accessible label must come from `t(...)`.

import { describe, expect, it } from "vitest";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { translate, type Key } from "./i18n";

const source = readFileSync(new URL("./i18n.tsx", import.meta.url), "utf8");
const block = (name: string) => source.slice(source.indexOf(`const ${name}`), source.indexOf("};", source.indexOf(`const ${name}`)));
const keysOf = (text: string) => [...text.matchAll(/^\s+"([a-zA-Z0-9_.-]+)":/gm)].map((m) => m[1]);

function tsxFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? tsxFiles(p) : p.endsWith(".tsx") && !p.endsWith("i18n.tsx") ? [p] : [];
  });
}

describe("translations", () => {
  it("have the same keys in English and Chinese, none empty", () => {
    const en = keysOf(block("en"));
    const zh = keysOf(block("zh"));
    expect(en.length).toBeGreaterThan(100);
    expect([...zh].sort()).toEqual([...en].sort());
    for (const k of en) {
      expect(translate("en", k as Key).trim(), k).not.toBe("");
      expect(translate("zh-CN", k as Key).trim(), k).not.toBe("");
    }
  });

  it("every key a component uses exists", () => {
    const known = new Set(keysOf(block("en")));
    const dir = new URL(".", import.meta.url).pathname;
    for (const file of tsxFiles(dir)) {
      for (const m of readFileSync(file, "utf8").matchAll(/\bt\("([^"]+)"/g)) {
        expect(known.has(m[1]), `${file}: ${m[1]}`).toBe(true);
      }
    }
  });

  it("components contain no hard-coded text or labels", () => {
    const dir = new URL(".", import.meta.url).pathname;
    const offenders: string[] = [];
    for (const file of tsxFiles(dir)) {
      readFileSync(file, "utf8")
        .split("\n")
        .forEach((line, i) => {
          const text = /(?<!=)>([^<>{}()=;&|?:]*[A-Za-z\u4e00-\u9fff][^<>{}()=;&|?:]*)</.exec(line);
          const attr = /\b(aria-label|placeholder|title|alt)="[^"]*[A-Za-z\u4e00-\u9fff]/.exec(line);
          if (text || attr) offenders.push(`${file}:${i + 1}: ${line.trim()}`);
        });
    }
    expect(offenders).toEqual([]);
  });
});
