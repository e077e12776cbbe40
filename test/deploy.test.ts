// What a company deploying opengms does first: build it, pack it, install the tarball without dev
// dependencies into an empty folder, migrate, serve, answer health — and stop it with SIGTERM
// through each way a supervisor starts it (`npm start`, the `opengms` bin, a container's PID 1),
// getting the graceful shutdown every time and no process left behind.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { connectOutcome, freePort, waitFor } from "./helpers/calls.js";

const ROOT = join(import.meta.dirname, "..");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const NPM = "npm";
const INSTALL_TIMEOUT_MS = 300_000;

let work: string;
let tarball: string;
let installed: string;

/** run runs a command to its end and gives its stdout; a failure throws with its stderr. */
function run(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): string {
  return execFileSync(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: INSTALL_TIMEOUT_MS });
}

/** cleanEnv is the environment without the variables that would change which config or database a child uses. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const k of ["GMS_CONFIG", "GMS_DATABASE_URL", "GMS_PORT", "npm_config_prefix"]) if (!(k in extra)) delete env[k];
  return env;
}

/** Started is a server started by one of the start paths, with what it printed. */
interface Started {
  child: ChildProcess;
  port: number;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** start spawns `cmd args` (which must start the server on GMS_PORT) and waits until Health answers SERVING. */
async function start(cmd: string, args: string[], cwd: string, env: Record<string, string>): Promise<Started> {
  const port = await freePort();
  const child = spawn(cmd, args, { cwd, env: cleanEnv({ ...env, GMS_PORT: String(port) }), stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (out += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  let gone = false;
  void exited.then(() => (gone = true));
  await waitFor(
    `the server started by ${cmd} to answer Health Check`,
    async () => {
      if (gone) throw new Error(`${cmd} exited before serving:\n${out}`);
      const r = await fetch(`http://127.0.0.1:${port}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }).catch(() => undefined);
      return r !== undefined && r.ok && ((await r.json()) as { status?: string }).status === "SERVING";
    },
    60_000,
  );
  return { child, port, output: () => out, exited };
}

/** processesWith lists the pids whose command line contains `marker` (a path unique to one test). */
function processesWith(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

/** childrenOf are the pids of a process's children. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const text = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim();
    if (text !== "") out.push(...text.split(/\s+/).map(Number));
  }
  return out;
}

/** expectGracefulStop checks a SIGTERM was handled as a shutdown: a clean exit, the log, the port closed, nothing left over. */
async function expectGracefulStop(s: Started, marker: string): Promise<void> {
  const { code, signal } = await Promise.race([
    s.exited,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`did not exit within 20 s of SIGTERM:\n${s.output()}`)), 20_000)),
  ]);
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  const lines = s
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { msg?: string; signal?: string });
  expect(lines.some((l) => l.msg === "signal received" && l.signal === "SIGTERM")).toBe(true);
  expect(lines.some((l) => l.msg === "stopped")).toBe(true);
  expect(await connectOutcome(s.port)).toBe("ECONNREFUSED");
  expect(processesWith(marker)).toEqual([]);
}

/** configIn writes a configuration into `dir` whose path marks the processes started with it. */
function configIn(dir: string): string {
  const path = join(dir, "opengms-under-test.yaml");
  writeFileSync(path, toYaml({ server: { host: "127.0.0.1", port: 1, shutdown_grace_seconds: 5 }, database: { url: `sqlite:${join(dir, "gms.db")}` }, log: { level: "info" } }));
  return path;
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "opengms-deploy-"));
  // npm pack builds dist/ first (prepack), as a release does.
  const packed = JSON.parse(run(NPM, ["pack", "--json", "--pack-destination", work], { cwd: ROOT, env: cleanEnv({}) })) as { filename: string; files: { path: string }[] }[];
  const first = packed[0]!;
  tarball = join(work, first.filename);
  const files = first.files.map((f) => f.path);
  expect(files).toEqual(expect.arrayContaining(["LICENSE", "NOTICE", "README.md", "dist/src/main.js", "config/gms.yaml", "package.json"]));
  expect(files.some((f) => f.startsWith("src/") || f.startsWith("test/") || f.startsWith("bench/"))).toBe(false);
  installed = join(work, "app");
  mkdirSync(installed);
  writeFileSync(join(installed, "package.json"), JSON.stringify({ name: "opengms-deploy-probe", private: true }));
  run(NPM, ["install", "--omit=dev", "--no-audit", "--no-fund", "--prefer-offline", tarball], { cwd: installed, env: cleanEnv({}) });
}, INSTALL_TIMEOUT_MS);

afterAll(() => {
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

describe("the packed tarball, installed with --omit=dev into an empty folder", () => {
  const bin = () => join(installed, "node_modules", ".bin", "opengms");

  it("has no dev dependency installed, and `opengms --version` prints the version", () => {
    const modules = readdirSync(join(installed, "node_modules"));
    for (const dev of ["typescript", "tsx", "vitest", "eslint"]) expect(modules).not.toContain(dev);
    expect(run(bin(), ["--version"], { cwd: installed }).trim()).toBe(VERSION);
  });

  it("finds its example configuration wherever it starts (check-config)", () => {
    expect(run(bin(), ["check-config"], { cwd: installed, env: cleanEnv({}) })).toContain("configuration is valid");
  });

  it("migrates, then serves, answers health, names version, config and store in its startup log, and stops on SIGTERM", async () => {
    const dir = mkdtempSync(join(work, "bin-"));
    const db = `sqlite:${join(dir, "gms.db")}`;
    expect(run(bin(), ["migrate"], { cwd: dir, env: cleanEnv({ GMS_DATABASE_URL: db }) })).toMatch(/^applied /);
    expect(run(bin(), ["migrate"], { cwd: dir, env: cleanEnv({ GMS_DATABASE_URL: db }) })).toBe("schema up to date\n");
    // No configuration in the working directory: the bundled example is used; the marker is the database path.
    const s = await start(bin(), ["serve"], dir, { GMS_DATABASE_URL: db });
    const startup = s
      .output()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l["msg"] === "opengms starting");
    expect(startup).toMatchObject({ version: VERSION, config: join(installed, "node_modules", "opengms", "config", "gms.yaml"), database: db });
    s.child.kill("SIGTERM");
    await expectGracefulStop(s, dir);
  });
});

describe("SIGTERM to the process a supervisor started gives the graceful shutdown", () => {
  it("`npm start` (npm, not the node it runs, gets the signal)", async () => {
    const dir = mkdtempSync(join(work, "npm-"));
    const s = await start(NPM, ["start", "--", "--config", configIn(dir)], ROOT, {});
    s.child.kill("SIGTERM");
    await expectGracefulStop(s, dir);
  });

  it.runIf(process.getuid?.() === 0)("a container's PID 1 (a PID namespace of its own, as docker runs it)", async () => {
    const dir = mkdtempSync(join(work, "pid1-"));
    const bin = join(installed, "node_modules", ".bin", "opengms");
    const s = await start("unshare", ["--pid", "--fork", "--mount-proc", bin, "serve", "--config", configIn(dir)], dir, {});
    // unshare waits for its child, which is PID 1 in the new namespace: the container's init.
    const [init] = childrenOf(s.child.pid!);
    expect(init).toBeDefined();
    expect(readFileSync(`/proc/${init}/status`, "utf8")).toMatch(/^NSpid:\s+\d+\s+1$/m);
    process.kill(init!, "SIGTERM");
    await expectGracefulStop(s, dir);
  });
});
