import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    testTimeout: 60000,
    hookTimeout: 60000,
    // The integration tests each boot a server; running files one at a time keeps the shared
    // 2-core CI machine responsive.
    fileParallelism: false,
  },
});
