import { describe, expect, it } from "vitest";
import { preferCodecs } from "./call";
import { callText } from "./util";
import { translate } from "./i18n";

describe("calls", () => {
  it("puts H.264 first, then VP8, keeping the rest in order", () => {
    const codecs = ["video/VP9", "video/VP8", "video/rtx", "video/H264", "video/AV1"].map((mimeType) => ({ mimeType }));
    expect(preferCodecs(codecs, ["video/h264", "video/vp8"]).map((c) => c.mimeType)).toEqual(["video/H264", "video/VP8", "video/VP9", "video/rtx", "video/AV1"]);
  });

  it("describes call records in both languages", () => {
    const en = (k: Parameters<typeof translate>[1], v?: Record<string, string | number>) => translate("en", k, v);
    const zh = (k: Parameters<typeof translate>[1], v?: Record<string, string | number>) => translate("zh-CN", k, v);
    expect(callText({ outcome: "answered", video: true, duration_ms: 65_400 }, en)).toBe("video call · 1:05");
    expect(callText({ outcome: "missed", video: false, duration_ms: 0 }, en)).toBe("Missed voice call");
    expect(callText({ outcome: "missed", video: false, duration_ms: 0 }, zh)).toBe("未接语音通话");
  });
});
