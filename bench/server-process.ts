// bench/server-process.ts starts opengms as a separate server process (bench/node-process.ts) and
// measures processes from /proc: what a benchmark needs to measure a server that does not share its
// process, its event loop or its garbage collector with the load it is under.
import { execFileSync, fork, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify as toYaml } from "yaml";
import type { NodeMessage, NodeRequest, NodeStats } from "./node-process.js";

const NODE_ENTRY = join(dirname(fileURLToPath(import.meta.url)), "node-process.ts");

/** CLK_TCK is the unit of /proc/<pid>/stat's CPU times. */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** freePort asks the system for a port nobody listens on. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** cpuSecondsOf is a process's CPU time so far (user + system, every thread), from /proc/<pid>/stat. */
export function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces) start at field 3, the state.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[14 - 3]) + Number(fields[15 - 3])) / CLK_TCK;
}

/** MachineTimes are the whole machine's CPU times so far (/proc/stat, in ticks): all, idle (with I/O wait) and stolen by the hypervisor. */
export interface MachineTimes {
  total: number;
  idle: number;
  steal: number;
}

/** machineTimes reads the first line of /proc/stat: user nice system idle iowait irq softirq steal ... */
export function machineTimes(): MachineTimes {
  const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const [, , , idle = 0, iowait = 0, , , steal = 0] = fields;
  return { total: fields.reduce((a, b) => a + b, 0), idle: idle + iowait, steal };
}

/** rssOf is a process's resident memory in bytes, from /proc/<pid>/status. */
export function rssOf(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for process ${pid}`);
  return Number(kb) * 1024;
}

/** mysqldPid finds the database server's process on this machine, when it runs here (for its CPU). */
export function mysqldPid(): number | undefined {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const comm = readFileSync(`/proc/${entry}/comm`, "utf8").trim();
      if (comm === "mariadbd" || comm === "mysqld") return Number(entry);
    } catch {
      // The process ended while we looked.
    }
  }
  return undefined;
}

/** cpuMeter measures the CPU of this process ("clients") and of other processes over a stretch of wall time, in cores. */
export function cpuMeter(pids: Record<string, number | undefined>) {
  const t0 = performance.now();
  const self0 = process.cpuUsage();
  const start = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, pid === undefined ? NaN : cpuSecondsOf(pid)]));
  return () => {
    const seconds = (performance.now() - t0) / 1000;
    const self = process.cpuUsage(self0);
    const cores: Record<string, number> = { clients: (self.user + self.system) / 1e6 / seconds };
    for (const [k, pid] of Object.entries(pids)) cores[k] = pid === undefined ? NaN : (cpuSecondsOf(pid) - start[k]) / seconds;
    return { seconds, cores };
  };
}

/** ServerProcess is an opengms server process. */
export interface ServerProcess {
  name: string;
  pid: number;
  /** startedAt is when the process was forked (performance.now()). */
  startedAt: number;
  url: string;
  stats(gc?: boolean): Promise<NodeStats>;
  stop(): Promise<void>;
}

/** ServerProcessOptions start a server process beside its configuration. */
export interface ServerProcessOptions {
  /** dir is a folder for the configuration file. */
  dir: string;
  config: Record<string, unknown>;
  log: (line: string) => void;
  /** args follow the configuration path (e.g. "bare"). */
  args?: string[];
  /** env is added to this process's environment. */
  env?: Record<string, string>;
}

/** startServerProcess forks bench/node-process.ts on a free port with the configuration and waits until it serves. */
export async function startServerProcess(name: string, o: ServerProcessOptions): Promise<ServerProcess> {
  const path = join(o.dir, `${name.replace(/\W+/g, "-")}.yaml`);
  writeFileSync(path, toYaml(o.config));
  const port = await freePort();
  const startedAt = performance.now();
  const child: ChildProcess = fork(NODE_ENTRY, [path, ...(o.args ?? [])], {
    // GMS_BENCH_SERVER_FLAGS adds Node flags to server processes, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
    execArgv: ["--import", "tsx", "--expose-gc", ...(process.env["GMS_BENCH_SERVER_FLAGS"] ?? "").split(" ").filter((f) => f !== "")],
    env: { ...process.env, ...o.env, GMS_PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  // The server's own log lines (warnings and worse) go to stderr, beside the progress lines.
  child.stdout?.on("data", (b: Buffer) => process.stderr.write(`   [${name}] ${b.toString("utf8")}`));
  child.stderr?.on("data", (b: Buffer) => process.stderr.write(`   [${name}] ${b.toString("utf8")}`));
  const waiting = new Map<number, (m: NodeMessage & { type: "reply" }) => void>();
  let nextId = 1;
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 60 s`)), 60_000);
    child.once("exit", (code) => reject(new Error(`${name} exited with ${code} before serving`)));
    child.on("message", (m: NodeMessage) => {
      if (m.type === "ready") {
        clearTimeout(timer);
        resolve(m.url);
      } else waiting.get(m.id)?.(m);
    });
  });
  const ask = (req: { type: "stats"; gc: boolean } | { type: "stop" }) =>
    new Promise<NodeMessage & { type: "reply" }>((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(() => reject(new Error(`${name} did not answer ${req.type}`)), 30_000);
      waiting.set(id, (m) => {
        clearTimeout(timer);
        waiting.delete(id);
        resolve(m);
      });
      child.send({ ...req, id } as NodeRequest);
    });
  o.log(`${name}: pid ${child.pid} serving ${url}`);
  return {
    name,
    pid: child.pid!,
    startedAt,
    url,
    async stats(gc = false) {
      const r = await ask({ type: "stats", gc });
      if (r.stats === undefined) throw new Error(`${name} sent no stats`);
      return r.stats;
    },
    async stop() {
      if (child.exitCode !== null) return;
      const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      // The process answers, then exits: give it time to (e.g. write its CPU profile) before killing it.
      await Promise.race([ask({ type: "stop" }).then(() => gone, () => undefined), sleep(15_000)]);
      if (child.exitCode === null) child.kill("SIGKILL");
      await gone;
    },
  };
}
