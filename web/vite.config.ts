/// <reference types="vitest" />
import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

// The SDK is consumed from source (the npm workspace links it); `vite dev` proxies the API to a
// server started with `cargo run -p tidings -- serve` on the default port.
const server = process.env.TIDINGS_DEV_SERVER ?? "http://127.0.0.1:8080";

export default defineConfig({
  esbuild: { jsx: "automatic" },
  resolve: {
    alias: { "@tidings/sdk": fileURLToPath(new URL("../sdk-ts/src/index.ts", import.meta.url)) },
  },
  build: {
    outDir: "dist",
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      "/api": server,
      "/oauth": server,
      "/ws": { target: server.replace(/^http/, "ws"), ws: true },
    },
  },
  test: { include: ["src/**/*.test.ts"] },
});
