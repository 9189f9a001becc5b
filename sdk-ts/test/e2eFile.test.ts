// Encrypted attachments (tidings.file.v1): round trips at chunk boundaries, tamper detection,
// and the fixtures shared with the Rust SDK, so both implementations open each other's files.

import { describe, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { FILE_CHUNK_BYTES, FileCryptoError, decryptFile, encryptFile } from "../src/e2eFile.js";
import type { FileKey } from "../src/protocol.js";

/** The same deterministic plaintext as the Rust tests' `text(len)`. */
const text = (len: number) => Uint8Array.from({ length: len }, (_, i) => i % 253);
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");

describe("encrypted attachments", () => {
  it("round-trip at every chunk boundary, from bytes and from Blobs", async () => {
    for (const len of [0, 1, FILE_CHUNK_BYTES - 1, FILE_CHUNK_BYTES, FILE_CHUNK_BYTES + 1, 3 * FILE_CHUNK_BYTES + 7]) {
      const plain = text(len);
      const { ciphertext, key } = await encryptFile(len % 2 ? new Blob([plain]) : plain);
      const chunks = Math.max(1, Math.ceil(len / FILE_CHUNK_BYTES));
      expect(ciphertext.size, `${len}`).toBe(len + chunks * 16);
      expect(key.scheme).toBe("tidings.file.v1");
      expect(await decryptFile(ciphertext, key)).toEqual(plain);
    }
  });

  it("refuse tampering, reordering, truncation, appending and a wrong key", async () => {
    const plain = text(2 * FILE_CHUNK_BYTES + 5);
    const { ciphertext, key } = await encryptFile(plain);
    const sealed = new Uint8Array(await ciphertext.arrayBuffer());
    const record = FILE_CHUNK_BYTES + 16;
    const flipped = sealed.slice();
    flipped[10] ^= 1;
    const swapped = new Uint8Array([...sealed.subarray(record, 2 * record), ...sealed.subarray(0, record), ...sealed.subarray(2 * record)]);
    const cut = sealed.subarray(0, 2 * record);
    const longer = new Uint8Array([...sealed, ...sealed.subarray(0, 20)]);
    const other = (await encryptFile(plain)).key;
    for (const [what, bytes, k] of [
      ["flipped", flipped, key],
      ["swapped", swapped, key],
      ["cut", cut, key],
      ["appended", longer, key],
      ["other key", sealed, other],
    ] as [string, Uint8Array, FileKey][]) {
      await expect(decryptFile(bytes, k), what).rejects.toBeInstanceOf(FileCryptoError);
    }
    await expect(decryptFile(sealed, { ...key, scheme: "x" })).rejects.toThrow("unknown scheme");
    await expect(decryptFile(sealed, { ...key, key: "!!" })).rejects.toThrow("bad key");
  });

  it("open what the Rust SDK sealed, and seal what it opens", async () => {
    const rust = JSON.parse(readFileSync(fixture("file-v1-from-rust.json"), "utf8"));
    const opened = await decryptFile(Buffer.from(rust.ciphertext, "base64"), rust.key);
    expect(opened).toEqual(text(rust.length));
    // Our own sealing of the same shape; crates/sdk opens it in
    // `both_sdks_open_each_others_attachments`. UPDATE_FIXTURES=1 writes a fresh one.
    if (process.env.UPDATE_FIXTURES) {
      const length = FILE_CHUNK_BYTES + 1000;
      const { ciphertext, key } = await encryptFile(text(length));
      writeFileSync(fixture("file-v1-from-ts.json"), JSON.stringify({ key, length, ciphertext: b64(new Uint8Array(await ciphertext.arrayBuffer())) }, null, 2));
    }
    const ts = JSON.parse(readFileSync(fixture("file-v1-from-ts.json"), "utf8"));
    expect(await decryptFile(Buffer.from(ts.ciphertext, "base64"), ts.key)).toEqual(text(ts.length));
  });
});
