import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { build, type Histogram } from "hdr-histogram-js";
import type { Knex } from "knex";
import { cpuSecondsOf, machineTimes, mysqldPid } from "./server-process.js";

export { clockFromEnv, scaledClock } from "./clock.js";

/** MYSQL_URL is the server the benchmarks create their databases on (GMS_BENCH_MYSQL_URL). */
export const MYSQL_URL = (process.env["GMS_BENCH_MYSQL_URL"] ?? "mysql://root@127.0.0.1:3306").replace(/\/+$/, "");

/** mysqlVersion is the database server's version, for a report's title and environment. */
export async function mysqlVersion(knex: Knex): Promise<string | undefined> {
  const [rows] = (await knex.raw("select version() as v")) as [{ v: string }[]];
  return rows[0]?.v;
}

/** bearer is a client interceptor sending an API key. */
export const bearer =
  (key: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };

/** RESULTS_DIR is where every benchmark module writes its JSON report. */
export const RESULTS_DIR = join(dirname(fileURLToPath(import.meta.url)), "results");

/** BenchOptions are the knobs every scenario shares, read from the environment by benchOptions. */
export interface BenchOptions {
  /** concurrency is the number of operations kept in flight. */
  concurrency: number;
  /** warmupMs is how long each subject runs, unmeasured, before the measured rounds. */
  warmupMs: number;
  /** roundMs is how long each subject runs in one measured round. */
  roundMs: number;
  /** rounds is the number of measured rounds; the medians over them are reported. */
  rounds: number;
}

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, not "${raw}"`);
  return n;
}

/**
 * benchOptions reads the shared knobs: GMS_BENCH_CONCURRENCY (16), GMS_BENCH_WARMUP_SECONDS (1),
 * GMS_BENCH_ROUND_SECONDS (1.2) and GMS_BENCH_ROUNDS (5).
 */
export function benchOptions(): BenchOptions {
  return {
    concurrency: Math.round(envNumber("GMS_BENCH_CONCURRENCY", 16)),
    warmupMs: envNumber("GMS_BENCH_WARMUP_SECONDS", 1) * 1000,
    roundMs: envNumber("GMS_BENCH_ROUND_SECONDS", 1.2) * 1000,
    rounds: Math.round(envNumber("GMS_BENCH_ROUNDS", 5)),
  };
}

/** newHistogram makes a latency histogram in microseconds (1 µs to 1 min, 3 significant digits). */
export function newHistogram(): Histogram {
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
}

/** Op is one operation of a load; `n` counts the operations started so far in this run. */
export type Op = (n: number) => Promise<void>;

/** RunSample is what one timed run of an operation measured. */
export interface RunSample {
  ops: number;
  seconds: number;
  opsPerSec: number;
  /**
   * cpuUsPerOp is this process's CPU time (user + system) per operation, in microseconds: what an
   * operation costs in Node, which a busy machine disturbs far less than it disturbs throughput.
   */
  cpuUsPerOp: number;
  /** dbCpuUsPerOp is the database server's CPU time per operation (µs), when it runs on this machine (else NaN). */
  dbCpuUsPerOp: number;
  /** idle is the share of the machine's CPU time left idle during the run (0..1), steal the share the hypervisor gave others. */
  idle: number;
  steal: number;
  /** latency holds each operation's latency in microseconds. */
  latency: Histogram;
}

/** DB_PID is the local database server's process, read once (undefined when it runs elsewhere). */
const DB_PID = mysqldPid();
const dbCpuSeconds = () => (DB_PID === undefined ? NaN : cpuSecondsOf(DB_PID));

/** Driven is what a load did: the operations it completed and their latencies (µs). */
export interface Driven {
  ops: number;
  latency: Histogram;
  /**
   * seconds, when given, is how long the operations themselves took, from the first one's start to
   * the last one's end: a load generator of its own (h2load) knows it, where the time around the
   * load also holds its process start, connections and log parsing, which are not the subject's.
   */
  seconds?: number;
}

/**
 * Load keeps `concurrency` operations in flight for `durationMs`: opLoad's loop in this process, or
 * a load generator of its own (bench/h2load.ts).
 */
export type Load = (concurrency: number, durationMs: number) => Promise<Driven>;

/**
 * readCallLog reads a load generator's log of calls, a line each: start (µs since the epoch),
 * status, latency (µs). A status other than `ok` fails the run with `failed(status)`. Throughput is
 * over the calls' own span, from the first one's start to the last one's end: the generator's
 * start, its connections and this parsing are not the server's time.
 */
export function readCallLog(text: string, ok: string, failed: (status: string) => string): Driven {
  const latency = newHistogram();
  let ops = 0;
  let first = Infinity;
  let last = -Infinity;
  for (const line of text.split("\n")) {
    const [start, status, us] = line.split("\t");
    if (start === undefined || status === undefined || us === undefined) continue;
    if (status !== ok) throw new Error(failed(status));
    latency.recordValue(Math.max(1, Number(us)));
    first = Math.min(first, Number(start));
    last = Math.max(last, Number(start) + Number(us));
    ops++;
  }
  return { ops, latency, seconds: ops === 0 ? 0 : (last - first) / 1e6 };
}

/** opLoad runs `op` in `concurrency` loops. The first failing operation fails the run: a benchmark that errors measures nothing. */
export const opLoad =
  (op: Op): Load =>
  async (concurrency, durationMs) => {
    const latency = newHistogram();
    let started = 0;
    let ops = 0;
    const end = performance.now() + durationMs;
    const worker = async () => {
      while (performance.now() < end) {
        const n = started++;
        const s = performance.now();
        await op(n);
        latency.recordValue(Math.max(1, Math.round((performance.now() - s) * 1000)));
        ops++;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return { ops, latency };
  };

/** runLoad runs a load for `durationMs` and measures throughput, latency and CPU. */
export async function runLoad(load: Load, concurrency: number, durationMs: number, cpuSeconds?: () => number): Promise<RunSample> {
  const cpu0 = process.cpuUsage();
  const other0 = cpuSeconds?.();
  const db0 = dbCpuSeconds();
  const machine0 = machineTimes();
  const t0 = performance.now();
  const driven = await load(concurrency, durationMs);
  const { ops, latency } = driven;
  const seconds = driven.seconds ?? (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuUs = other0 === undefined || cpuSeconds === undefined ? cpu.user + cpu.system : (cpuSeconds() - other0) * 1e6;
  const machine = machineTimes();
  const ticks = machine.total - machine0.total;
  return {
    ops,
    seconds,
    opsPerSec: ops / seconds,
    cpuUsPerOp: cpuUs / ops,
    dbCpuUsPerOp: ((dbCpuSeconds() - db0) * 1e6) / ops,
    idle: ticks > 0 ? (machine.idle - machine0.idle) / ticks : NaN,
    steal: ticks > 0 ? (machine.steal - machine0.steal) / ticks : NaN,
    latency,
  };
}

/** Subject is one contender of a comparison: the baseline or something measured against it. */
export interface Subject {
  /** name labels the subject in the table, e.g. "raw knex". */
  name: string;
  op: Op;
  /** load, when given, drives the subject instead of `op` in this process (e.g. an external load generator). */
  load?: Load;
  /**
   * cpuSeconds reads the CPU time so far of the process that does the work, when that is not this
   * one (a server process); cpuUsPerOp is then that process's.
   */
  cpuSeconds?: () => number;
}

/** SubjectResult is a subject's measurements over every round of a comparison. */
export interface SubjectResult {
  name: string;
  /** opsPerSec is each round's throughput, in round order. */
  opsPerSec: number[];
  /** cpuUsPerOp is each round's CPU time per operation (µs), in round order. */
  cpuUsPerOp: number[];
  /** dbCpuUsPerOp, idle and steal are each round's (see RunSample), in round order. */
  dbCpuUsPerOp: number[];
  idle: number[];
  steal: number[];
  /** latency merges every round's latencies (µs). */
  latency: Histogram;
}

/** CompareOptions tune compare beside the shared knobs. */
export interface CompareOptions extends BenchOptions {
  /** afterRun runs, untimed, after every run of every subject (e.g. to delete what puts inserted). */
  afterRun?: () => Promise<void>;
  /** progress is told about each finished run. */
  progress?: (line: string) => void;
}

/**
 * compare measures subjects side by side on a shared, noisy machine: each is warmed up, then the
 * subjects take turns for `rounds` rounds, the order reversed every other round so that neither
 * always runs first (after the other's writes, purges or GC debt).
 */
export async function compare(subjects: readonly Subject[], options: CompareOptions): Promise<SubjectResult[]> {
  const results: SubjectResult[] = subjects.map((s) => ({ name: s.name, opsPerSec: [], cpuUsPerOp: [], dbCpuUsPerOp: [], idle: [], steal: [], latency: newHistogram() }));
  for (const s of subjects) {
    await runLoad(s.load ?? opLoad(s.op), options.concurrency, options.warmupMs);
    await options.afterRun?.();
  }
  for (let round = 0; round < options.rounds; round++) {
    const order = subjects.map((_, i) => i);
    if (round % 2 === 1) order.reverse();
    for (const i of order) {
      const subject = subjects[i];
      const sample = await runLoad(subject.load ?? opLoad(subject.op), options.concurrency, options.roundMs, subject.cpuSeconds);
      const result = results[i];
      result.opsPerSec.push(sample.opsPerSec);
      result.cpuUsPerOp.push(sample.cpuUsPerOp);
      result.dbCpuUsPerOp.push(sample.dbCpuUsPerOp);
      result.idle.push(sample.idle);
      result.steal.push(sample.steal);
      result.latency.add(sample.latency);
      sample.latency.destroy();
      await options.afterRun?.();
      options.progress?.(`round ${round + 1}/${options.rounds} ${subject.name}: ${Math.round(sample.opsPerSec)} ops/s`);
    }
  }
  return results;
}

/** median is the middle value (the mean of the two middle ones for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Row is one line of a report: a subject in a scenario, with its ratio to the baseline. */
export interface Row {
  scenario: string;
  subject: string;
  /** opsPerSec is the median of the rounds' throughputs. */
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** cpuUsPerOp is the median over rounds of the Node process's CPU time per operation (µs). */
  cpuUsPerOp: number;
  /** dbCpuUsPerOp is the median over rounds of the database server's CPU time per operation (µs), when measured. */
  dbCpuUsPerOp?: number | undefined;
  /** idle and steal are the medians over rounds of the machine's idle and stolen shares of CPU time (0..1), when measured. */
  idle?: number | undefined;
  steal?: number | undefined;
  /** ratio is the median over rounds of this subject's throughput over the baseline's in that round. */
  ratio?: number | undefined;
  /** target is the lowest acceptable ratio, when the scenario sets one. */
  target?: number | undefined;
  pass?: boolean | undefined;
  /** roundsOpsPerSec are the rounds' throughputs, for the JSON report. */
  roundsOpsPerSec: number[];
}

/**
 * rowsOf turns a comparison into report rows. The first result is the baseline; `targets` gives the
 * target ratio of the other subjects by name (subjects without one are reported for information).
 */
export function rowsOf(scenario: string, results: readonly SubjectResult[], targets: Record<string, number> = {}): Row[] {
  const baseline = results[0];
  return results.map((r, i) => {
    const row: Row = {
      scenario,
      subject: r.name,
      opsPerSec: median(r.opsPerSec),
      p50Ms: r.latency.getValueAtPercentile(50) / 1000,
      p99Ms: r.latency.getValueAtPercentile(99) / 1000,
      cpuUsPerOp: median(r.cpuUsPerOp),
      dbCpuUsPerOp: median(r.dbCpuUsPerOp),
      idle: median(r.idle),
      steal: median(r.steal),
      roundsOpsPerSec: r.opsPerSec.map((x) => Math.round(x * 10) / 10),
    };
    if (i > 0) {
      row.ratio = median(r.opsPerSec.map((x, round) => x / baseline.opsPerSec[round]));
      const target = targets[r.name];
      if (target !== undefined) {
        row.target = target;
        row.pass = row.ratio >= target;
      }
    }
    return row;
  });
}

/** Report is what a benchmark module hands back: its rows and what they were measured on. */
export interface Report {
  /** module names the results file: bench/results/<module>-<time>.json. */
  module: string;
  title: string;
  rows: Row[];
  /** environment describes the run (versions, options, sizes) for the JSON report. */
  environment: Record<string, unknown>;
}

const fmt = (n: number, digits: number) => (Number.isFinite(n) ? n.toFixed(digits) : "-");

/** formatTable renders rows as a fixed-width text table. */
export function formatTable(rows: readonly Row[]): string {
  const header = ["scenario", "subject", "ops/s", "p50 ms", "p99 ms", "cpu µs/op", "db µs/op", "idle %", "ratio", "target", "result"];
  const lines = rows.map((r) => [
    r.scenario,
    r.subject,
    fmt(r.opsPerSec, 0),
    fmt(r.p50Ms, 2),
    fmt(r.p99Ms, 2),
    fmt(r.cpuUsPerOp, 0),
    fmt(r.dbCpuUsPerOp ?? NaN, 0),
    fmt((r.idle ?? NaN) * 100, 0),
    r.ratio === undefined ? "baseline" : `${fmt(r.ratio, 2)}x`,
    r.target === undefined ? "" : `>= ${fmt(r.target, 2)}x`,
    r.pass === undefined ? "" : r.pass ? "pass" : "FAIL",
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...lines.map((l) => l[c].length)));
  const numeric = new Set([2, 3, 4, 5, 6, 7, 8, 9]);
  const render = (cells: readonly string[]) =>
    cells
      .map((cell, c) => (numeric.has(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join("  ")
      .trimEnd();
  const out = [render(header), widths.map((w) => "-".repeat(w)).join("  ")];
  let last: string | undefined;
  for (const [i, l] of lines.entries()) {
    // A blank line between scenarios keeps each baseline with its contenders.
    if (last !== undefined && rows[i].scenario !== last) out.push("");
    last = rows[i].scenario;
    out.push(render(l));
  }
  return out.join("\n");
}

/** rounded is `x` rounded to 1/scale, or undefined when it was not measured (undefined or NaN). */
const rounded = (x: number | undefined, scale: number) => (x === undefined || !Number.isFinite(x) ? undefined : Math.round(x * scale) / scale);

/** writeReport writes a report as JSON to bench/results/<module>-<UTC time>.json and returns the path. */
export function writeReport(report: Report, startedAt: Date): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  // ISO 8601 without the characters some file systems refuse, e.g. 2025-11-25T13-40-05Z.
  const stamp = startedAt.toISOString().replace(/\.\d+Z$/, "Z").replaceAll(":", "-");
  const path = join(RESULTS_DIR, `${report.module}-${stamp}.json`);
  const rows = report.rows.map((r) => ({
    ...r,
    opsPerSec: Math.round(r.opsPerSec * 10) / 10,
    p50Ms: Math.round(r.p50Ms * 1000) / 1000,
    p99Ms: Math.round(r.p99Ms * 1000) / 1000,
    cpuUsPerOp: Math.round(r.cpuUsPerOp),
    dbCpuUsPerOp: rounded(r.dbCpuUsPerOp, 1),
    idle: rounded(r.idle, 1000),
    steal: rounded(r.steal, 1000),
    ratio: r.ratio === undefined ? undefined : Math.round(r.ratio * 1000) / 1000,
  }));
  const body = { module: report.module, title: report.title, startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(), environment: report.environment, rows };
  writeFileSync(path, `${JSON.stringify(body, null, 2)}\n`);
  return path;
}

/** BenchContext is what bench/run.ts hands each module. */
export interface BenchContext {
  options: BenchOptions;
  /** wants tells whether a scenario passed the command line's filter. */
  wants(scenario: string): boolean;
  /** log prints a progress line (to stderr, so the table on stdout stays clean). */
  log(line: string): void;
}

/** BenchModule is a scenario module bench/run.ts runs: it measures and returns its report. */
export interface BenchModule {
  run(ctx: BenchContext): Promise<Report>;
}

/** envInt reads a positive integer from the environment, or gives the fallback. */
export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, not "${raw}"`);
  return n;
}

/** pool runs `fn` for 0..n-1 with at most `concurrency` calls in flight. */
export async function pool<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(n);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) out[i] = await fn(i);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out;
}

/** grpcTransports makes `n` gRPC transports, each its own HTTP/2 connection. */
export const grpcTransports = (url: string, n: number, interceptors: Interceptor[] = []): Transport[] =>
  Array.from({ length: n }, () => createGrpcTransport({ baseUrl: url, interceptors }));

/**
 * Tracker matches each message sent with its arrival on a stream, by the message's text, and
 * records the latency (µs) into the histogram of the round being measured.
 */
export class Tracker {
  private readonly sentAt = new Map<string, number>();
  histogram: Histogram | undefined;
  delivered = 0;
  unexpected = 0;

  sent(text: string): void {
    this.sentAt.set(text, performance.now());
  }

  arrived(text: string): void {
    const at = this.sentAt.get(text);
    if (at === undefined) {
      this.unexpected++;
      return;
    }
    this.sentAt.delete(text);
    this.delivered++;
    this.histogram?.recordValue(Math.max(1, Math.round((performance.now() - at) * 1000)));
  }

  get inFlight(): number {
    return this.sentAt.size;
  }
}
