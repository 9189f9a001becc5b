// Property-based fuzzing of the Markdown renderer with fast-check: for any message text (random
// Unicode, and strings built from the subset's own syntax, HTML and URL pieces), parsing and
// rendering never throw, the output holds only the elements and attributes the renderer chooses
// (no raw HTML, no script, links only to http/https with a safe rel), and rendering time grows
// linearly with the message's length, so no sender can freeze a recipient's tab.

import fc from "fast-check";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { Markdown, looksLikeMarkdown, parseBlocks, parseInline } from "./markdown";

/** The server's default `limits.max_message_bytes`. */
const MAX_MESSAGE_BYTES = 64 * 1024;

/** Runs per property; FUZZ_RUNS raises it for a long local run. */
const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);

const html = (text: string) => renderToStaticMarkup(Markdown({ text }));

/** Pieces of the syntax the parser reacts to, and of what an attacker would try to smuggle. */
const PIECES = [
  "*", "**", "_", "__", "~~", "`", "```", "\\", "[", "]", "(", ")", "](", ">", "> ", "- ", "* ",
  "+ ", "1. ", "9) ", "\n", "\r\n", "\r", " ", "  ", "\t", "a", "word", "snake_case", "é", "😀",
  "\u0000", "\u202e", "<", ">", "&", "\"", "'", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
  "http://", "https://", "https://example.org/a?b=1&c=<x>", "javascript:alert(1)", "data:text/html,<b>",
  "HTTPS://EXAMPLE.ORG", "//evil.example", "[x](javascript:alert(1))", "[y](https://ok.example)",
];

const syntaxText = fc.array(fc.constantFrom(...PIECES), { maxLength: 80 }).map((parts) => parts.join(""));
const anyText = fc.oneof(syntaxText, fc.string({ unit: "binary", maxLength: 200 }), fc.string({ maxLength: 200 }));

const ELEMENTS = new Set(["div", "p", "strong", "em", "s", "code", "pre", "blockquote", "ul", "ol", "li", "a", "br"]);
const TAG = /<(\/?)([a-z]+)((?: [a-z]+="[^"<>]*")*)(\/?)>/y;

/** Checks that rendered HTML is made only of the renderer's own elements and attributes. */
function checkMarkup(out: string): void {
  let i = out.indexOf("<");
  while (i !== -1) {
    // Matched in place (sticky), not on a slice, so the check is linear in the output too.
    TAG.lastIndex = i;
    const tag = TAG.exec(out);
    expect(tag, `raw markup at ${i}: ${out.slice(i, i + 60)}`).not.toBeNull();
    const [whole, , name, attrs] = tag!;
    expect(ELEMENTS.has(name), `element <${name}>`).toBe(true);
    const names = [...attrs.matchAll(/ ([a-z]+)="([^"]*)"/g)];
    for (const [, attr, value] of names) {
      if (name === "div") expect(attr).toBe("class");
      else if (name === "a") {
        expect(["href", "target", "rel"]).toContain(attr);
        if (attr === "href") expect(value).toMatch(/^https?:\/\//);
        if (attr === "rel") expect(value).toBe("noopener noreferrer nofollow");
      } else expect.fail(`attribute ${attr} on <${name}>`);
    }
    i = out.indexOf("<", i + whole.length);
  }
  // A `>` in text is escaped too, so nothing outside tags can close or open one.
  expect(out.replace(/<[^>]*>/g, "")).not.toMatch(/[<>]/);
}

describe("markdown fuzzing (fast-check)", () => {
  it("parses and renders any text without throwing, into its own markup only", () => {
    fc.assert(
      fc.property(anyText, (text) => {
        parseBlocks(text);
        parseInline(text);
        looksLikeMarkdown(text);
        checkMarkup(html(text));
      }),
      { numRuns: RUNS },
    );
  });

  // Digits followed by "." or ")" start an ordered list, so "." is left out of the alphabet.
  it("keeps every character of plain text (nothing is swallowed as markup)", () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[a-zA-Z0-9 ,?]{0,200}$/), (text) => {
        const visible = html(text).replace(/<[^>]*>/g, "");
        expect(visible.replace(/\s+/g, "")).toBe(text.replace(/\s+/g, ""));
      }),
      { numRuns: RUNS },
    );
  });

  // Time grows linearly with the length, whatever the message repeats: a quarter of the
  // largest message must take about a quarter of the time (a quadratic parser takes 16 times
  // as long for 4 times the text). Compared within one run, so a loaded machine slows both.
  it("renders the largest message the server accepts in time linear in its length", () => {
    const unit = fc.array(fc.constantFrom(...PIECES), { minLength: 1, maxLength: 6 }).map((p) => p.join(""));
    const timed = (text: string) => {
      const started = performance.now();
      // Only rendering: `looksLikeMarkdown` runs on the sender's own draft, not on what others send.
      checkMarkup(html(text));
      return performance.now() - started;
    };
    fc.assert(
      fc.property(unit, (piece) => {
        const full = piece.repeat(Math.ceil(MAX_MESSAGE_BYTES / piece.length)).slice(0, MAX_MESSAGE_BYTES);
        const quarter = full.slice(0, MAX_MESSAGE_BYTES / 4);
        // A warm-up, the best of three runs each, and a fixed allowance keep compilation, a
        // garbage collection or a busy machine from failing a fast render; a quadratic one is
        // off by seconds (`[` repeated took 8.1 s for 64 KiB, 16 times its quarter).
        timed(quarter);
        const small = Math.min(timed(quarter), timed(quarter), timed(quarter));
        const large = Math.min(timed(full), timed(full), timed(full));
        expect(large, `${JSON.stringify(piece)}: ${small.toFixed(0)} ms for 16 KiB, ${large.toFixed(0)} ms for 64 KiB`).toBeLessThan(
          10 * small + 1000,
        );
      }),
      { numRuns: Math.max(20, Math.floor(RUNS / 50)) },
    );
  });
});
