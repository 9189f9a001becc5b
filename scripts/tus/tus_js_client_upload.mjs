// A third-party tus client against a running Tidings server: tus-js-client, the tus project's
// JavaScript client, in Node.
//
// 1. Uploads a file in 1 MiB chunks, aborts it part-way, and resumes it from the server's
//    offset with a new Upload on the same URL.
// 2. Uploads a file as 4 parallel parts (tus-js-client's `parallelUploads`, which uses the
//    concatenation extension).
// Each stored file is downloaded and compared by SHA-256.
//
// Run by crates/tidings/tests/tus_clients.rs:
//   node tus_js_client_upload.mjs <base url> <access token> <size in MiB>
import { createHash, randomBytes } from "node:crypto";
import * as tus from "tus-js-client";

const [base, token, sizeMib = "20"] = process.argv.slice(2);
const size = Number(sizeMib) * 1024 * 1024;
const auth = { Authorization: `Bearer ${token}` };
const endpoint = `${base}/api/v1/uploads/`;
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

function run(options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(options.file, {
      endpoint,
      headers: auth,
      retryDelays: [0, 200, 500],
      ...options,
      onError: reject,
      onSuccess: () => resolve(upload),
    });
    if (options.abortAt) {
      upload.options.onProgress = (sent) => {
        if (sent >= options.abortAt) {
          upload.abort().then(() => resolve(upload));
        }
      };
    }
    upload.start();
  });
}

async function fileIdOf(url) {
  const head = await fetch(url, { method: "HEAD", headers: { ...auth, "Tus-Resumable": "1.0.0" } });
  if (head.status !== 200) throw new Error(`HEAD ${url}: ${head.status}`);
  return { offset: Number(head.headers.get("upload-offset")), fileId: head.headers.get("tidings-file-id") };
}

async function checkStored(fileId, expected) {
  const response = await fetch(`${base}/api/v1/files/${fileId}`, { headers: auth });
  if (response.status !== 200) throw new Error(`download: ${response.status}`);
  const got = sha256(Buffer.from(await response.arrayBuffer()));
  if (got !== expected) throw new Error(`sha256 ${got} != ${expected}`);
}

// 1. Abort and resume.
const first = randomBytes(size);
const aborted = await run({ file: first, chunkSize: 1024 * 1024, abortAt: Math.floor(size * 0.45), metadata: { filename: "tus-js.bin" } });
const cut = await fileIdOf(aborted.url);
if (!(cut.offset > 0 && cut.offset < size)) throw new Error(`offset after abort: ${cut.offset}`);
const resumed = await run({ file: first, chunkSize: 1024 * 1024, uploadUrl: aborted.url });
const done = await fileIdOf(resumed.url);
if (done.offset !== size || !done.fileId) throw new Error(`not complete: ${JSON.stringify(done)}`);
await checkStored(done.fileId, sha256(first));
console.log(`tus-js-client: ${size} bytes aborted at ${cut.offset}, resumed there; sha256 matches`);

// 2. Four parallel parts, concatenated by the server.
const second = randomBytes(size + 12345);
const parallel = await run({ file: second, parallelUploads: 4, metadata: { filename: "parallel.bin" } });
const joined = await fileIdOf(parallel.url);
if (!joined.fileId) throw new Error("the final upload did not become a file");
await checkStored(joined.fileId, sha256(second));
console.log(`tus-js-client: ${second.length} bytes in 4 parallel parts concatenated; sha256 matches`);
