// Unit tests of the Markdown subset: what renders, and that nothing a sender types becomes markup.

import { describe, expect, it } from "vitest";
import { renderToStaticMarkup } from "react-dom/server";
import { Markdown, looksLikeMarkdown, parseBlocks, parseInline, safeHref } from "./markdown";

const html = (text: string) => renderToStaticMarkup(Markdown({ text }));

describe("markdown", () => {
  it("renders emphasis, code, strike and links", () => {
    expect(html("**bold** and *it* and ~~gone~~ and `x<y`")).toBe(
      '<div class="text markdown"><p><strong>bold</strong> and <em>it</em> and <s>gone</s> and <code>x&lt;y</code></p></div>',
    );
    expect(html("see [docs](https://example.org/a?b=1)")).toBe(
      '<div class="text markdown"><p>see <a href="https://example.org/a?b=1" target="_blank" rel="noopener noreferrer nofollow">docs</a></p></div>',
    );
    expect(html("go to https://example.org/x.")).toContain('<a href="https://example.org/x"');
  });

  it("renders blocks: code fences, quotes, lists and line breaks", () => {
    expect(html("```\n<b>raw</b>\n**no**\n```")).toBe('<div class="text markdown"><pre><code>&lt;b&gt;raw&lt;/b&gt;\n**no**</code></pre></div>');
    expect(html("> quoted\n> more\n\nafter")).toBe('<div class="text markdown"><blockquote><p>quoted<br/>more</p></blockquote><p>after</p></div>');
    expect(html("- a\n- **b**\n1. one\n2. two")).toBe(
      '<div class="text markdown"><ul><li>a</li><li><strong>b</strong></li></ul><ol><li>one</li><li>two</li></ol></div>',
    );
    expect(html("line one\nline two")).toBe('<div class="text markdown"><p>line one<br/>line two</p></div>');
  });

  it("never lets a sender inject markup or script links", () => {
    const hostile = html('<img src=x onerror=alert(1)> [click](javascript:alert(1)) [d](data:text/html,hi) <script>x</script>');
    expect(hostile).not.toContain("<img");
    expect(hostile).not.toContain("<script");
    expect(hostile).not.toContain("href");
    expect(hostile).toContain("&lt;img src=x onerror=alert(1)&gt;");
    expect(safeHref("javascript:alert(1)")).toBeNull();
    expect(safeHref("/relative")).toBeNull();
    expect(safeHref("HTTPS://Example.org")).toBe("https://example.org/");
  });

  it("leaves what is not markdown alone", () => {
    expect(html("2 * 3 * 4 and snake_case_name")).toBe('<div class="text markdown"><p>2 * 3 * 4 and snake_case_name</p></div>');
    expect(html("**unclosed and `open")).toBe('<div class="text markdown"><p>**unclosed and `open</p></div>');
    expect(html("\\*not em\\*")).toBe('<div class="text markdown"><p>*not em*</p></div>');
    expect(parseInline("中文**加粗**文本")).toEqual([
      { kind: "text", text: "中文" },
      { kind: "strong", children: [{ kind: "text", text: "加粗" }] },
      { kind: "text", text: "文本" },
    ]);
  });

  it("tells markdown from plain sentences", () => {
    for (const yes of ["**bold**", "use `code`", "> quote", "- item", "1. first", "[a](https://x.org)", "an *emphasised* word", "```\ncode\n```"]) {
      expect(looksLikeMarkdown(yes), yes).toBe(true);
    }
    for (const no of ["hello", "2 * 3 = 6", "snake_case", "see https://x.org", "a - b", "你好，世界"]) {
      expect(looksLikeMarkdown(no), no).toBe(false);
    }
  });
  it("finds links with the linear-time scan (regressions of the fast-check run)", () => {
    // A "[" shares its "]" and target with every "[" before it; the first one wins, as before.
    expect(html("[[x](https://z.example)")).toBe(
      '<div class="text markdown"><p><a href="https://z.example/" target="_blank" rel="noopener noreferrer nofollow">[x</a></p></div>',
    );
    expect(html("[a](https://x.example) [b](javascript:1) [c](https://y.example)")).toBe(
      '<div class="text markdown"><p><a href="https://x.example/" target="_blank" rel="noopener noreferrer nofollow">a</a> [b](javascript:1) <a href="https://y.example/" target="_blank" rel="noopener noreferrer nofollow">c</a></p></div>',
    );
    // 64 KiB of links, or of unclosed brackets, once took seconds (quadratic rescans).
    const links = "[y](https://ok.example)".repeat(2850);
    expect(parseInline(links).filter((n) => n.kind === "link")).toHaveLength(2850);
    expect(parseInline("[*".repeat(32768)).length).toBeGreaterThan(0);
  });

  it("keeps quotes nested past the limit as text instead of looping (a regression of the fast-check run)", () => {
    // Four levels of quote, then the rest of the line is a paragraph: the parser used to
    // refuse that line in the paragraph branch too and push empty paragraphs for ever.
    const blocks = parseBlocks(">>>>>>> deep\n>>>>>>> deeper\nplain");
    let level = blocks;
    for (let depth = 0; depth < 4; depth++) {
      expect(level[0].kind).toBe("quote");
      level = (level[0] as { kind: "quote"; blocks: typeof blocks }).blocks;
    }
    expect(level).toEqual([{ kind: "paragraph", lines: [">>> deep", ">>> deeper"] }]);
    expect(html(">".repeat(65536))).toContain("&gt;&gt;&gt;");
  });
});
