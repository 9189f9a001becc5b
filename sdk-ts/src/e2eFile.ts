// End-to-end-encrypted attachments, scheme `tidings.file.v1` (docs/protocol.md, 16.3), with
// WebCrypto, so browsers and Node open what the Rust SDK seals and the other way round.
//
// The file is sealed in fixed-size chunks with AES-256-GCM under a fresh key. Chunk `i` uses
// the nonce `nonce_prefix (8 bytes) || i (4 bytes, big-endian)` and the associated data
// `"tidings.file.v1" || i (4 bytes, big-endian) || last (1 byte)`: the index stops
// reordering, the `last` flag stops truncation and appending. Only ciphertext is uploaded; the
// key travels inside the sender's end-to-end-encrypted message, never to the server in clear.

/** The scheme's name, in `FileKey.scheme` and in every chunk's associated data. */
export const FILE_SCHEME = "tidings.file.v1";
/** Plaintext bytes per chunk. */
export const FILE_CHUNK_BYTES = 64 * 1024;
const TAG_BYTES = 16;

import type { FileKey } from "./protocol.js";

/** Why an attachment could not be opened; the message never includes key material. */
export class FileCryptoError extends Error {
  constructor(what: string) {
    super(`encrypted attachment: ${what}`);
    this.name = "FileCryptoError";
  }
}

const subtle = (): SubtleCrypto => {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new FileCryptoError("WebCrypto is not available (pages must be served over https or from localhost)");
  return s;
};

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(text: string, what: string): Uint8Array {
  try {
    return Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
  } catch {
    throw new FileCryptoError(`bad ${what}`);
  }
}

function nonce(prefix: Uint8Array, index: number): Uint8Array {
  const n = new Uint8Array(12);
  n.set(prefix, 0);
  new DataView(n.buffer).setUint32(8, index, false);
  return n;
}

const schemeBytes = new TextEncoder().encode(FILE_SCHEME);
function associatedData(index: number, last: boolean): Uint8Array {
  const aad = new Uint8Array(schemeBytes.length + 5);
  aad.set(schemeBytes, 0);
  new DataView(aad.buffer).setUint32(schemeBytes.length, index, false);
  aad[schemeBytes.length + 4] = last ? 1 : 0;
  return aad;
}

async function bytesOf(data: Uint8Array | Blob): Promise<Uint8Array> {
  return data instanceof Uint8Array ? data : new Uint8Array(await data.arrayBuffer());
}

/**
 * Encrypts a file with a fresh key. Returns the ciphertext to upload (a Blob, ready for
 * `upload()`) and the key to put inside the end-to-end-encrypted message. Chunks are read from
 * the Blob one at a time; WebCrypto has no incremental SHA-256, so the plaintext hash reads the
 * whole file once more.
 */
export async function encryptFile(data: Uint8Array | Blob): Promise<{ ciphertext: Blob; key: FileKey }> {
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const prefix = crypto.getRandomValues(new Uint8Array(8));
  const aesKey = await subtle().importKey("raw", raw, "AES-GCM", false, ["encrypt"]);
  const size = data instanceof Uint8Array ? data.length : data.size;
  const count = Math.max(1, Math.ceil(size / FILE_CHUNK_BYTES));
  const parts: ArrayBuffer[] = [];
  for (let i = 0; i < count; i++) {
    const chunk = await bytesOf(data.slice(i * FILE_CHUNK_BYTES, (i + 1) * FILE_CHUNK_BYTES));
    parts.push(await subtle().encrypt({ name: "AES-GCM", iv: nonce(prefix, i), additionalData: associatedData(i, i + 1 === count), tagLength: 128 }, aesKey, chunk));
  }
  const digest = new Uint8Array(await subtle().digest("SHA-256", await bytesOf(data)));
  return {
    ciphertext: new Blob(parts, { type: "application/octet-stream" }),
    key: { scheme: FILE_SCHEME, key: toBase64(raw), nonce_prefix: toBase64(prefix), chunk_bytes: FILE_CHUNK_BYTES, plaintext_sha256: toBase64(digest) },
  };
}

/**
 * Opens every chunk and checks the plaintext's SHA-256. Fails with `FileCryptoError` on any
 * tampering, reordering, truncation or appended data.
 */
export async function decryptFile(ciphertext: Uint8Array | Blob, fileKey: FileKey): Promise<Uint8Array> {
  if (fileKey.scheme !== FILE_SCHEME) throw new FileCryptoError("unknown scheme");
  const raw = fromBase64(fileKey.key, "key");
  const prefix = fromBase64(fileKey.nonce_prefix, "nonce prefix");
  if (raw.length !== 32) throw new FileCryptoError("bad key");
  if (prefix.length !== 8) throw new FileCryptoError("bad nonce prefix");
  if (!Number.isInteger(fileKey.chunk_bytes) || fileKey.chunk_bytes <= 0 || fileKey.chunk_bytes > 1 << 26) throw new FileCryptoError("bad chunk size");
  const sealed = await bytesOf(ciphertext);
  if (sealed.length < TAG_BYTES) throw new FileCryptoError("too short");
  const aesKey = await subtle().importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
  const record = fileKey.chunk_bytes + TAG_BYTES;
  const count = Math.ceil(sealed.length / record);
  const plain = new Uint8Array(sealed.length - count * TAG_BYTES);
  let at = 0;
  for (let i = 0; i < count; i++) {
    let opened: ArrayBuffer;
    try {
      opened = await subtle().decrypt(
        { name: "AES-GCM", iv: nonce(prefix, i), additionalData: associatedData(i, i + 1 === count), tagLength: 128 },
        aesKey,
        sealed.subarray(i * record, Math.min(sealed.length, (i + 1) * record)),
      );
    } catch {
      throw new FileCryptoError("a chunk does not authenticate (tampered, reordered or cut)");
    }
    plain.set(new Uint8Array(opened), at);
    at += opened.byteLength;
  }
  const digest = new Uint8Array(await subtle().digest("SHA-256", plain));
  if (toBase64(digest) !== fileKey.plaintext_sha256) throw new FileCryptoError("the plaintext does not match its SHA-256");
  return plain;
}
