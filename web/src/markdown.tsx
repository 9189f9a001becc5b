// Renders the Markdown subset of protocol section 17.1 into React elements, never into HTML.
//
// Messages come from other people, so nothing here produces markup from text: every piece of
// the input ends up as a React text node (escaped by React) inside elements this file chooses.
// Links keep only http and https targets and open in a new tab without an opener.
import type { ReactNode } from "react";

/** A block of a message: a paragraph, a fenced code block, a quote or a list. */
export type Block =
  | { kind: "paragraph"; lines: string[] }
  | { kind: "code"; text: string }
  | { kind: "quote"; blocks: Block[] }
  | { kind: "list"; ordered: boolean; items: string[] };

/** An inline piece of a paragraph or list item. */
export type Inline =
  | { kind: "text"; text: string }
  | { kind: "strong"; children: Inline[] }
  | { kind: "em"; children: Inline[] }
  | { kind: "strike"; children: Inline[] }
  | { kind: "code"; text: string }
  | { kind: "link"; href: string; children: Inline[] }
  | { kind: "break" };

const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^\s{0,3}\d{1,9}[.)]\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const FENCE = /^\s{0,3}```/;

/** Splits text into blocks. Nesting is limited to quotes inside quotes, a few levels deep. */
export function parseBlocks(text: string, depth = 0): Block[] {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const blocks: Block[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (FENCE.test(line)) {
      const body: string[] = [];
      i++;
      while (i < lines.length && !FENCE.test(lines[i])) body.push(lines[i++]);
      i++; // The closing fence, or the end of the message.
      blocks.push({ kind: "code", text: body.join("\n") });
    } else if (QUOTE.test(line) && depth < 4) {
      const body: string[] = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(lines[i++].replace(QUOTE, "$1"));
      blocks.push({ kind: "quote", blocks: parseBlocks(body.join("\n"), depth + 1) });
    } else if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = !BULLET.test(line);
      const pattern = ordered ? NUMBERED : BULLET;
      const items: string[] = [];
      while (i < lines.length && pattern.test(lines[i])) items.push(lines[i++].replace(pattern, "$1"));
      blocks.push({ kind: "list", ordered, items });
    } else if (line.trim() === "") {
      i++;
    } else {
      // The first line is taken whatever it looks like: a quote line past the nesting limit
      // lands here, and a loop that refused it would never move on (a message of `>>>>>>`
      // once filled the recipient's memory until the tab died).
      const body: string[] = [lines[i++]];
      const quotes = depth < 4;
      while (i < lines.length && lines[i].trim() !== "" && !FENCE.test(lines[i]) && !(quotes && QUOTE.test(lines[i])) && !BULLET.test(lines[i]) && !NUMBERED.test(lines[i])) {
        body.push(lines[i++]);
      }
      blocks.push({ kind: "paragraph", lines: body });
    }
  }
  return blocks;
}

/** Only web links survive; anything else (javascript:, data:, relative paths) stays text. */
export function safeHref(href: string): string | null {
  try {
    const url = new URL(href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

const DELIMITERS: { open: string; kind: "strong" | "em" | "strike" }[] = [
  { open: "**", kind: "strong" },
  { open: "__", kind: "strong" },
  { open: "~~", kind: "strike" },
  { open: "*", kind: "em" },
  { open: "_", kind: "em" },
];

// Sticky patterns, matched at a position of the whole line: slicing the rest of the line at
// every character and running a pattern on it copies that rest each time (the engine flattens
// the slice), which made a 64 KiB line of links take seconds to render.
const LINK_TARGET = /\(([^)\s]+)\)/y;
const BARE_URL = /https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"]/y;
const ESCAPABLE = /[\\`*_~[\]()>#+\-.!]/;

/** Parses one line's inline syntax. Unclosed delimiters stay literal text. */
export function parseInline(text: string, depth = 0): Inline[] {
  const out: Inline[] = [];
  let plain = "";
  const flush = () => {
    if (plain) out.push({ kind: "text", text: plain });
    plain = "";
  };
  // A link's text ends at the first "]" after its "[", so every "[" before that "]" shares it
  // and its target: both are found once, and the search only moves forward ("[[[[…" and
  // "[*[*…" without a "]" stay linear).
  let close = -1;
  let target = null as { at: number; href: string | null; end: number } | null;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && ESCAPABLE.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      const end = text.indexOf("`", i + 1);
      if (end > i + 1) {
        flush();
        out.push({ kind: "code", text: text.slice(i + 1, end) });
        i = end + 1;
        continue;
      }
    }
    if (c === "[" && depth < 3) {
      if (close !== text.length && close <= i) {
        close = text.indexOf("]", i + 1);
        if (close === -1) close = text.length;
      }
      if (close < text.length && close > i + 1 && text[close + 1] === "(") {
        if (target?.at !== close) {
          LINK_TARGET.lastIndex = close + 1;
          const found = LINK_TARGET.exec(text);
          target = { at: close, href: found ? safeHref(found[1]) : null, end: found ? close + 1 + found[0].length : 0 };
        }
        if (target.href) {
          flush();
          out.push({ kind: "link", href: target.href, children: parseInline(text.slice(i + 1, close), depth + 1) });
          i = target.end;
          continue;
        }
      }
    }
    if (c === "h" && (i === 0 || /\s|\(/.test(text[i - 1]))) {
      BARE_URL.lastIndex = i;
      const bare = BARE_URL.exec(text);
      const href = bare ? safeHref(bare[0]) : null;
      if (bare && href) {
        flush();
        out.push({ kind: "link", href, children: [{ kind: "text", text: bare[0] }] });
        i += bare[0].length;
        continue;
      }
    }
    const delimiter = depth < 3 ? DELIMITERS.find((d) => text.startsWith(d.open, i)) : undefined;
    if (delimiter) {
      const start = i + delimiter.open.length;
      const close = text.indexOf(delimiter.open, start);
      const end = close - start;
      // Emphasis needs text right inside its delimiters ("2 * 3 * 4" stays as it is), and
      // underscores inside words (snake_case) are not emphasis.
      const opensWord = close !== -1 && end > 0 && !/\s/.test(text[start]) && !/\s/.test(text[close - 1]);
      const wordInside = delimiter.open[0] === "_" && i > 0 && /\w/.test(text[i - 1]);
      if (opensWord && !wordInside) {
        flush();
        out.push({ kind: delimiter.kind, children: parseInline(text.slice(start, close), depth + 1) });
        i = close + delimiter.open.length;
        continue;
      }
    }
    plain += c;
    i++;
  }
  flush();
  return out;
}

function renderInline(nodes: Inline[], key: string): ReactNode[] {
  return nodes.map((n, i) => {
    const k = `${key}.${i}`;
    switch (n.kind) {
      case "text":
        return n.text;
      case "strong":
        return <strong key={k}>{renderInline(n.children, k)}</strong>;
      case "em":
        return <em key={k}>{renderInline(n.children, k)}</em>;
      case "strike":
        return <s key={k}>{renderInline(n.children, k)}</s>;
      case "code":
        return <code key={k}>{n.text}</code>;
      case "link":
        return (
          <a key={k} href={n.href} target="_blank" rel="noopener noreferrer nofollow">
            {renderInline(n.children, k)}
          </a>
        );
      case "break":
        return <br key={k} />;
    }
  });
}

function lineInlines(lines: string[]): Inline[] {
  const out: Inline[] = [];
  lines.forEach((line, i) => {
    if (i > 0) out.push({ kind: "break" });
    out.push(...parseInline(line));
  });
  return out;
}

function renderBlocks(blocks: Block[], key: string): ReactNode[] {
  return blocks.map((b, i) => {
    const k = `${key}.${i}`;
    switch (b.kind) {
      case "paragraph":
        return <p key={k}>{renderInline(lineInlines(b.lines), k)}</p>;
      case "code":
        return (
          <pre key={k}>
            <code>{b.text}</code>
          </pre>
        );
      case "quote":
        return <blockquote key={k}>{renderBlocks(b.blocks, k)}</blockquote>;
      case "list": {
        const items = b.items.map((item, j) => <li key={`${k}.${j}`}>{renderInline(parseInline(item), `${k}.${j}`)}</li>);
        return b.ordered ? <ol key={k}>{items}</ol> : <ul key={k}>{items}</ul>;
      }
    }
  });
}

/** A Markdown message body as React elements. */
export function Markdown({ text }: { text: string }) {
  return <div className="text markdown">{renderBlocks(parseBlocks(text), "md")}</div>;
}

/**
 * Whether text a user typed uses any of the subset's syntax, so the composer can send it as
 * `markdown` and plain sentences stay `text`.
 */
export function looksLikeMarkdown(text: string): boolean {
  return (
    /(\*\*|__|~~)\S[\s\S]*?\S?\1/.test(text) ||
    /(^|\s)[*_]\S[^*_\n]*[*_](\s|$|[.,!?])/.test(text) ||
    /`[^`\n]+`/.test(text) ||
    /\[[^\]]+\]\(https?:\/\/[^)\s]+\)/.test(text) ||
    /^\s{0,3}(>|[-*+]\s|\d{1,9}[.)]\s|```)/m.test(text)
  );
}
