import { defineConfig } from "vitest/config";

// The benchmark's checks of its own tools (bench/*.test.ts), apart from `npm test`: `npm run bench`
// runs them before it measures anything (bench/run.ts).
export default defineConfig({
  test: {
    include: ["bench/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    reporters: ["default"],
  },
});
