// The built package (dist/, as `npm run build` makes it) works from plain Node without a
// bundler: a child `node` process imports it, registers, signs in, sends and reads back.

import { afterAll, beforeAll, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
// @ts-expect-error a plain JavaScript helper shared with the browser tests
import { startServer } from "./server.mjs";

let server: { baseUrl: string; stop(): Promise<void> };
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => server?.stop());

const script = `
import { TidingsClient, MemoryStorage } from "@tidings/sdk";
const base = process.argv[1];
const a = new TidingsClient({ baseUrl: base, storage: new MemoryStorage() });
const b = new TidingsClient({ baseUrl: base, storage: new MemoryStorage() });
await a.register("nodeuser_a", "correct horse battery");
await b.register("nodeuser_b", "correct horse battery");
const id = await a.openDirect(b.me.user_id);
const cmid = a.sendText(id, "from plain node");
const m = await a.whenSent(id, cmid);
const page = await b.rest.history(id);
console.log(JSON.stringify({ seq: m.seq, text: page.messages[0].body.text }));
await a.stop(); await b.stop();
`;

it("runs from the built package in plain Node", async () => {
  const cwd = fileURLToPath(new URL("..", import.meta.url));
  const out = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, ["--experimental-websocket", "--no-warnings", "--input-type=module", "-e", script, server.baseUrl], { cwd, timeout: 30000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
  expect(JSON.parse(out.trim().split("\n").pop()!)).toEqual({ seq: 1, text: "from plain node" });
});
