// File uploads with tus-js-client against the server's tus endpoint (docs/protocol.md section
// 16): resumable, pausable, with progress, and in parallel parts (tus concatenation) for large
// files. The finished upload's file id comes back in the `Tidings-File-Id` header.

import * as tus from "tus-js-client";
import type { TidingsClient } from "./client.js";
import { TidingsError } from "./errors.js";
import type { MessageBodyFile } from "./protocol.js";

export interface UploadOptions {
  name: string;
  /** The type the client believes; the server sniffs its own from the bytes. */
  type?: string;
  onProgress?: (sent: number, total: number) => void;
  /** Parts uploaded at once; default 3 for files over 16 MiB, else 1. */
  parallel?: number;
  /** Bytes per PATCH request (default 4 MiB). */
  chunkSize?: number;
}

export interface UploadHandle {
  /** Resolves with the `file` body to send once the upload is complete. */
  readonly done: Promise<MessageBodyFile>;
  pause(): void;
  resume(): void;
  /** Stops and deletes the upload on the server. */
  cancel(): Promise<void>;
}

/** Bytes of a `File`, `Blob`, or (in Node) a `Buffer`/`Uint8Array`. */
export type UploadSource = Blob | Uint8Array;

function sizeOf(src: UploadSource): number {
  return src instanceof Uint8Array ? src.byteLength : src.size;
}

export function upload(client: TidingsClient, source: UploadSource, options: UploadOptions): UploadHandle {
  const size = sizeOf(source);
  let fileId: string | null = null;
  let resolve!: (b: MessageBodyFile) => void;
  let reject!: (e: Error) => void;
  const done = new Promise<MessageBodyFile>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const parallel = options.parallel ?? (size > 16 * 1024 * 1024 ? 3 : 1);
  // tus-js-client takes a Blob in browsers and a Buffer in Node.
  const NodeBuffer = (globalThis as { Buffer?: { from(b: ArrayBufferLike, o: number, l: number): Uint8Array } }).Buffer;
  const input = source instanceof Uint8Array && NodeBuffer ? NodeBuffer.from(source.buffer, source.byteOffset, source.byteLength) : source;
  const up = new tus.Upload(input as unknown as tus.Upload["file"], {
    endpoint: client.baseUrl + "/api/v1/uploads/",
    chunkSize: options.chunkSize ?? 4 * 1024 * 1024,
    retryDelays: [0, 1000, 3000, 5000, 10000],
    parallelUploads: parallel,
    removeFingerprintOnSuccess: true,
    metadata: { filename: options.name, filetype: options.type ?? "application/octet-stream" },
    onBeforeRequest: async (req) => {
      req.setHeader("Authorization", `Bearer ${await client.auth.accessToken()}`);
    },
    onAfterResponse: (_req, res) => {
      const id = res.getHeader("Tidings-File-Id") || res.getHeader("tidings-file-id");
      if (id) fileId = id;
    },
    onProgress: (sent, total) => options.onProgress?.(sent, total),
    onError: (e) => reject(new TidingsError("network", e.message)),
    onSuccess: () => {
      if (!fileId) {
        reject(new TidingsError("internal", "the server did not name the uploaded file"));
        return;
      }
      resolve({ kind: "file", file_id: fileId, name: options.name, size, content_type: options.type ?? "application/octet-stream" });
    },
  });
  up.start();
  return {
    done,
    pause: () => void up.abort(false),
    resume: () => up.start(),
    cancel: async () => {
      await up.abort(true);
      reject(new TidingsError("gone", "upload cancelled"));
    },
  };
}
