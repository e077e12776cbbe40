// bench/run.ts runs the benchmark modules in sequence: `npm run bench` runs them all,
// `npm run bench -- storage` one module, `npm run bench -- storage:put` its scenarios naming "put".
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { benchOptions, formatTable, writeReport, type BenchModule } from "./lib.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * checkTools runs the benchmark's checks of its own load generators against a real server
 * (bench/*.test.ts, apart from `npm test`) before anything is measured: a generator that miscounts
 * would make every figure after it wrong. GMS_BENCH_SKIP_TOOL_CHECK=1 skips it.
 */
function checkTools(): void {
  if (process.env["GMS_BENCH_SKIP_TOOL_CHECK"] === "1") return;
  process.stderr.write("\n== checking the benchmark's tools (bench/tools.test.ts)\n");
  const vitest = join(ROOT, "node_modules", ".bin", "vitest");
  const r = spawnSync(vitest, ["run", "--config", join(ROOT, "bench", "vitest.config.ts")], { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"] });
  if (r.status !== 0) throw new UsageError("the benchmark's tools failed their check (bench/tools.test.ts): nothing measured");
}

/** MODULES are the benchmark modules by name, in the order they run: add a module with one line. */
const MODULES: Record<string, () => Promise<BenchModule>> = {
  storage: async () => (await import("./storage.js")).default,
  access: async () => (await import("./access.js")).default,
  chat: async () => (await import("./chat.js")).default,
  nodes: async () => (await import("./nodes.js")).default,
  ivr: async () => (await import("./ivr.js")).default,
};

/** UsageError is a mistake on the command line: reported without a stack trace. */
class UsageError extends Error {}

interface Filter {
  module: string;
  scenario: string | undefined;
}

function parseFilters(args: readonly string[]): Filter[] {
  return args.map((arg) => {
    const [module = "", scenario] = arg.split(":", 2);
    if (!(module in MODULES)) {
      throw new UsageError(`unknown benchmark "${module}"; the benchmarks are: ${Object.keys(MODULES).join(", ")}`);
    }
    return { module, scenario: scenario === "" ? undefined : scenario };
  });
}

async function main(): Promise<number> {
  const filters = parseFilters(process.argv.slice(2));
  const options = benchOptions();
  checkTools();
  let failed = 0;
  for (const [name, load] of Object.entries(MODULES)) {
    const mine = filters.filter((f) => f.module === name);
    if (filters.length > 0 && mine.length === 0) continue;
    const wants = (scenario: string) => mine.length === 0 || mine.some((f) => f.scenario === undefined || scenario.includes(f.scenario));
    const startedAt = new Date();
    process.stderr.write(`\n== ${name}: concurrency ${options.concurrency}, warm-up ${options.warmupMs / 1000} s, ${options.rounds} rounds of ${options.roundMs / 1000} s per subject\n`);
    const report = await (await load()).run({ options, wants, log: (line) => process.stderr.write(`   ${line}\n`) });
    const path = writeReport(report, startedAt);
    process.stdout.write(`\n${report.title}\n\n${formatTable(report.rows)}\n\nwritten to ${path}\n`);
    failed += report.rows.filter((r) => r.pass === false).length;
  }
  if (failed > 0) process.stdout.write(`\n${failed} target(s) missed\n`);
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    const message = e instanceof UsageError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e);
    process.stderr.write(`bench: ${message}\n`);
    process.exit(2);
  },
);
