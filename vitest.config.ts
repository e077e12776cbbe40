import { defineConfig } from "vitest/config";

// Two tiers: `unit` (test/unit/: the rules as plain functions, no database, no server, seconds) and
// `server` (everything else: the stores on SQLite and MariaDB, the real server over real sockets).
// `npm test` runs both; `npm run test:unit` the first alone. Each server-tier test file gets its own
// database (test/helpers/databases.ts), so files run in parallel.
export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    maxWorkers: 2,
    reporters: ["default"],
    projects: [
      { extends: true, test: { name: "unit", include: ["test/unit/**/*.test.ts"] } },
      { extends: true, test: { name: "server", include: ["test/**/*.test.ts"], exclude: ["test/unit/**"] } },
    ],
  },
});
