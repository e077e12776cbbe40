// bench/ivr.ts measures matching as an IVR sees it: SIPp places calls through Kamailio, whose route
// (test/sip/kamailio.cfg, the README's recipe) asks a separate opengms server process over
// http_client (GET /ivr/match) and forwards each matched call to a SIPp IVR. The latency is what
// Kamailio itself timed around http_client_query ($TV before and after, logged per call): the
// HTTP exchange, the serving policy, the match's transaction and its commit. Every call must match.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { IVR_MATCH_PATH } from "../src/http/ivr.js";
import { openDatabase } from "../src/store/database.js";
import { KAMAILIO, SIPP, matchTimes, placeCalls, sipToolsMissing, startKamailio, startUas, type Call, type Proc } from "../test/sip/harness.js";
import { bearer, envInt, MYSQL_URL, pool, type BenchContext, type BenchModule, type Report, type Row } from "./lib.js";
import { cpuSecondsOf, freePort, machineTimes, startServerProcess, type ServerProcess } from "./server-process.js";

const IVR_KEY = "bench-ivr-key-0123456789";
const APP_KEY = "bench-app-key-0123456789";

/** CALLS and RATE are the calls placed per subject and their rate (calls per second). */
const CALLS = envInt("GMS_BENCH_IVR_CALLS", 1000);
const RATE = envInt("GMS_BENCH_IVR_RATE", 100);

/** numberOf and callerOf are the i-th access number of the bench's locking group and the caller who reserved it. */
const numberOf = (i: number) => `+1802${String(i).padStart(7, "0")}`;
const callerOf = (i: number) => `+1650${String(i).padStart(7, "0")}`;

/** percentile is the p-th percentile (nearest rank) of sorted values. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}

/** versionOf is a program's first line of `-v` output. */
const versionOf = (program: string | undefined) => (program === undefined ? undefined : spawnSync(program, ["-v"], { encoding: "utf8" }).stdout.split("\n").find((l) => l.trim() !== "")?.trim());

/** measure reserves CALLS numbers on a fresh server process over `database`, calls each through Kamailio, and reads Kamailio's timings. */
async function measure(ctx: BenchContext, subject: string, database: string, dir: string): Promise<Row> {
  const raw = {
    server: { host: "127.0.0.1", port: 0 },
    log: { level: process.env["GMS_BENCH_LOG"] ?? "warn" },
    database: { url: database },
    auth: {
      public_roles: [],
      api_keys: [
        { name: "ivr", key: IVR_KEY, roles: ["ivr"] },
        { name: "app", key: APP_KEY, roles: ["app"] },
      ],
    },
    storage: { sweep_interval_seconds: 24 * 3600 },
    access: { booking_expiration_timeout: 3600 },
    resources: { bench: { numbers: [`${numberOf(0)}..${numberOf(CALLS - 1)}`], locking: true } },
  };
  let server: ServerProcess | undefined;
  let uas: Proc | undefined;
  let kamailio: Proc | undefined;
  // The server process migrates nothing: the database is made and migrated here first.
  const db = await openDatabase(database);
  try {
    server = await startServerProcess(`opengms-${subject}`, { dir, config: raw, log: (line) => ctx.log(line) });
    const app = createClient(AccessService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors: [bearer(APP_KEY)] }));
    const calls: Call[] = await pool(CALLS, 16, async (i) => {
      const r = await app.requestInteraction({ phoneNumber: callerOf(i), resourceGroup: "bench", ttlSeconds: 3600n });
      return { accessNumber: r.access!.accessNumber, caller: callerOf(i) };
    });
    ctx.log(`${subject}: ${calls.length} numbers reserved`);
    const uasPort = await freePort();
    const kamailioPort = await freePort();
    uas = await startUas(uasPort, dir, join(dir, `uas-${subject}.log`));
    kamailio = await startKamailio({ port: kamailioPort, gmsMatchUrl: `${server.url}${IVR_MATCH_PATH}`, authHeader: `Authorization: Bearer ${IVR_KEY}`, ivrUri: `sip:127.0.0.1:${uasPort}`, dir });
    const cpu0 = cpuSecondsOf(server.pid);
    const machine0 = machineTimes();
    const t0 = performance.now();
    const placed = await placeCalls({ kamailioPort, calls, rate: RATE, dir });
    const seconds = (performance.now() - t0) / 1000;
    const cpu = cpuSecondsOf(server.pid) - cpu0;
    const machine1 = machineTimes();
    const idle = (machine1.idle - machine0.idle) / Math.max(1, machine1.total - machine0.total);
    const answered = placed.outcomes.filter((o) => o.status === 200).length;
    if (placed.exitCode !== 0 || answered !== CALLS) throw new Error(`${subject}: ${answered} of ${CALLS} calls answered (SIPp exit ${placed.exitCode}):\n${placed.output.slice(-2000)}`);
    const times = matchTimes(kamailio.output()).filter((m) => m.answer.startsWith("matched "));
    if (times.length !== CALLS) throw new Error(`${subject}: Kamailio logged ${times.length} matches for ${CALLS} calls`);
    const us = times.map((m) => m.us).sort((a, b) => a - b);
    ctx.log(`${subject}: median ${us[Math.floor(us.length / 2)]} µs, p99 ${percentile(us, 99)} µs, max ${us[us.length - 1]} µs`);
    const opsPerSec = CALLS / seconds;
    return {
      scenario: "kamailio-match",
      subject,
      opsPerSec,
      p50Ms: percentile(us, 50) / 1000,
      p99Ms: percentile(us, 99) / 1000,
      cpuUsPerOp: (cpu / CALLS) * 1e6,
      idle,
      roundsOpsPerSec: [Math.round(opsPerSec * 10) / 10],
    };
  } finally {
    await kamailio?.stop();
    await uas?.stop();
    await server?.stop();
    // A MariaDB database of the run's own is dropped (its name is the URL's path).
    const name = db.dialect === "mysql" ? new URL(database).pathname.slice(1) : undefined;
    if (name !== undefined) await db.knex.raw(`DROP DATABASE IF EXISTS \`${name}\``).catch((e: unknown) => ctx.log(`could not drop ${name}: ${String(e)}`));
    await db.close();
  }
}

async function run(ctx: BenchContext): Promise<Report> {
  const missing = sipToolsMissing();
  if (missing !== undefined) throw new Error(`the ivr benchmark needs Kamailio and SIPp: ${missing}`);
  const dir = mkdtempSync(join(tmpdir(), "gms-bench-ivr-"));
  const name = `gms_bench_${randomBytes(4).toString("hex")}`;
  const rows: Row[] = [];
  try {
    if (ctx.wants("kamailio-match")) {
      rows.push(await measure(ctx, "MariaDB", `${MYSQL_URL}/${name}`, dir));
      rows.push(await measure(ctx, "SQLite", `sqlite:${join(dir, "gms.db")}`, dir));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    module: "ivr",
    title: `IVR matching through Kamailio: ${CALLS} calls at ${RATE}/s placed by SIPp, each matched by Kamailio's http_client_query to GET ${IVR_MATCH_PATH}; p50/p99 as Kamailio timed the query; cpu is the opengms process's`,
    rows,
    environment: { calls: CALLS, rate: RATE, kamailio: versionOf(KAMAILIO), sipp: versionOf(SIPP) },
  };
}

const module: BenchModule = { run };
export default module;
