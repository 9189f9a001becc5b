// Boots the real `tidings serve` binary on a free loopback port with a temporary data directory,
// for the SDK's integration tests and the browser tests. The binary is SERVER_BIN, or
// $CARGO_TARGET_DIR/debug/tidings, or target/debug/tidings at the repository root. (Variables
// the child sees must not start with TIDINGS_ unless they are server settings.)

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export function serverBinary() {
  if (process.env.SERVER_BIN) return process.env.SERVER_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(root, "target");
  for (const profile of ["debug", "release"]) {
    const p = join(target, profile, "tidings");
    if (existsSync(p)) return p;
  }
  throw new Error(`no tidings binary under ${target}; run cargo build -p tidings (or set SERVER_BIN)`);
}

/**
 * Starts a server; resolves with `{ baseUrl, dataDir, stop }`. `env` adds TIDINGS_* settings;
 * `dataDir` and `listen` restart a stopped server on its data and address.
 * @param {Record<string, string>} [env]
 * @param {{ dataDir?: string, listen?: string }} [at]
 */
export async function startServer(env = {}, at = {}) {
  const dataDir = at.dataDir ?? mkdtempSync(join(tmpdir(), "tidings-js-test-"));
  const child = spawn(serverBinary(), ["serve", "--listen", at.listen ?? "127.0.0.1:0", "--data-dir", dataDir], {
    env: {
      ...process.env,
      TIDINGS_ACCOUNTS_ARGON2_MEMORY_KIB: "256",
      TIDINGS_ACCOUNTS_ARGON2_ITERATIONS: "1",
      TIDINGS_LIMITS_MESSAGES_PER_MINUTE: "0",
      TIDINGS_LIMITS_SIGN_IN_ATTEMPTS_PER_ADDRESS_PER_MINUTE: "0",
      TIDINGS_LOG_LEVEL: "warn",
      TIDINGS_ADMIN_LISTEN: "127.0.0.1:0",
      // The embedded TURN server on a free loopback port, so servers can run side by side.
      TIDINGS_RTC_TURN_LISTEN: "127.0.0.1:0",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  const baseUrl = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 30000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const m = /Tidings is running at (\S+)\r?\n/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1].replace(/\/$/, ""));
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${log}`));
    });
  });
  return {
    baseUrl,
    dataDir,
    log: () => log,
    /** Stops the server; `keepData` leaves the data directory for a restart. */
    async stop({ keepData = false } = {}) {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
      if (!keepData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
