// What a company deploying opengms does first: build it, pack it, install the tarball without dev
// dependencies into an empty folder, migrate, serve, answer health — and stop it with SIGTERM
// through each way a supervisor starts it (`npm start`, the `opengms` bin, a container's PID 1),
// getting the graceful shutdown every time and no process left behind. The quick start and the
// Deploying section of README.md are the commands run here, as written (blocks marked
// `<!-- deploy: name -->`): in a copy of the checkout (its committed and untracked files, as a fresh
// clone has them) and in an empty folder. Only the paths (/path/to/, /etc/opengms/gms.yaml) and the
// port (GMS_PORT) differ.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { connectOutcome, freePort, waitFor } from "./helpers/calls.js";

const ROOT = join(import.meta.dirname, "..");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const INSTALL_TIMEOUT_MS = 300_000;

let work: string;
let checkout: string;
let tarball: string;
let installed: string;
let serverConfig: string;

/** deployBlocks are the README's ```sh blocks marked `<!-- deploy: name -->`, by name, as command lines. */
function deployBlocks(): Map<string, string[]> {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const blocks = new Map<string, string[]>();
  for (const m of readme.matchAll(/^<!-- deploy: ([a-z-]+) -->\n```sh\n([\s\S]*?)^```$/gm)) {
    const lines = (m[2] ?? "").split("\n").filter((l) => l.trim() !== "" && !l.trim().startsWith("#"));
    blocks.set(m[1] ?? "", lines);
  }
  return blocks;
}

const BLOCKS = deployBlocks();

/** block is one of the README's deploy blocks; a missing one fails the test that needs it. */
function block(name: string): string[] {
  const lines = BLOCKS.get(name);
  if (lines === undefined) throw new Error(`README.md has no block marked <!-- deploy: ${name} -->`);
  return lines;
}

/** SERVES tells the command line that starts a server (run in the background, until SIGTERM). */
const SERVES = /^(npm start|\.\/node_modules\/\.bin\/opengms serve|npx opengms serve)\b/;

/** localized is a README command line with its example paths replaced by this test's. */
function localized(line: string): string {
  return line.replaceAll("/path/to/", `${checkout}/`).replaceAll("/etc/opengms/gms.yaml", serverConfig);
}

/** runLine runs one README command line through bash, as a user types it; its output. */
function runLine(line: string, cwd: string): string {
  return run("bash", ["-c", localized(line)], { cwd, env: cleanEnv({}) });
}

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
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker) || readlinkSync(`/proc/${entry}/cwd`).startsWith(marker)) pids.push(Number(entry));
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

/** expectPages checks a server serves the chat widget and the agent console, and the widget's script. */
async function expectPages(port: number): Promise<void> {
  for (const page of ["chat", "agent"]) {
    const res = await fetch(`http://127.0.0.1:${port}/${page}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const html = await res.text();
    const script = /<script type="module" crossorigin src="\.\/(assets\/[^"]+\.js)"/.exec(html)?.[1];
    expect(script).toBeDefined();
    const js = await fetch(`http://127.0.0.1:${port}/${page}/${script}`);
    expect(js.status).toBe(200);
    expect(js.headers.get("cache-control")).toContain("immutable");
  }
}

/** configIn writes a configuration into `dir` whose path marks the processes started with it. */
function configIn(dir: string): string {
  const path = join(dir, "opengms-under-test.yaml");
  writeFileSync(path, toYaml({ server: { host: "127.0.0.1", port: 1, shutdown_grace_seconds: 5 }, database: { url: `sqlite:${join(dir, "gms.db")}` }, log: { level: "info" } }));
  return path;
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "opengms-deploy-"));
  // A fresh clone's files: the committed ones and those not ignored, without node_modules or dist/.
  checkout = join(work, "checkout");
  mkdirSync(checkout);
  execFileSync("bash", ["-c", `git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -xf - -C '${checkout}'`], { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
  serverConfig = join(work, "etc", "gms.yaml");
  mkdirSync(join(work, "etc"));
  writeFileSync(serverConfig, toYaml({ server: { host: "127.0.0.1", port: 8080, shutdown_grace_seconds: 5 }, database: { url: `sqlite:${join(work, "server-gms.db")}` }, log: { level: "info" } }));
  installed = join(work, "server");
  mkdirSync(installed);
}, INSTALL_TIMEOUT_MS);

afterAll(() => {
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

/** serverLine is a README line that starts a server, as bash runs it (its trailing comment left out, so that bash execs it). */
function serverLine(line: string): string[] {
  return ["-c", localized(line).replace(/\s+#.*$/, "")];
}

describe("the README's quick start and Deploying section, run as written", () => {
  it("quick start: in a fresh copy of the checkout `npm ci`, then `npm start` serves; SIGTERM to npm stops it gracefully", async () => {
    const lines = block("quick-start");
    expect(lines.filter((l) => SERVES.test(l))).toHaveLength(1);
    let s: Started | undefined;
    for (const line of lines) {
      if (SERVES.test(line)) s = await start("bash", serverLine(line), checkout, {});
      else runLine(line, checkout);
    }
    // `npm start` built the pages too, and the server serves them.
    await expectPages(s!.port);
    // bash execs the one command: the supervisor's child is npm, which gets the signal.
    s!.child.kill("SIGTERM");
    await expectGracefulStop(s!, checkout);
  }, INSTALL_TIMEOUT_MS + 120_000);

  it("pack: the tarball of this version, with the licence, the build and the example configuration, no sources or tests", () => {
    for (const line of block("pack")) runLine(line, checkout);
    tarball = join(checkout, `opengms-${VERSION}.tgz`);
    const files = run("tar", ["-tzf", tarball], { cwd: work })
      .split("\n")
      .filter((f) => f !== "")
      .map((f) => f.replace(/^package\//, ""));
    expect(files).toEqual(expect.arrayContaining(["LICENSE", "NOTICE", "README.md", "CHANGELOG.md", "dist/src/main.js", "config/gms.yaml", "package.json"]));
    // The pages it serves, built: the chat widget (with its loader) and the agent console, and their bundles.
    expect(files).toEqual(expect.arrayContaining(["dist/web/chat/index.html", "dist/web/chat/embed.js", "dist/web/agent/index.html"]));
    for (const page of ["chat", "agent"]) expect(files.some((f) => new RegExp(`^dist/web/${page}/assets/.+\\.js$`).test(f))).toBe(true);
    expect(files.some((f) => f.startsWith("web/"))).toBe(false);
    expect(files.some((f) => f.startsWith("src/") || f.startsWith("test/") || f.startsWith("bench/"))).toBe(false);
  }, INSTALL_TIMEOUT_MS);

  it("install: in an empty folder, without dev dependencies; version, check-config, migrate, then serve the configuration, naming it; SIGTERM to the bin stops it gracefully", async () => {
    const lines = block("install");
    // The README names the tarball of this version.
    expect(localized(lines[0] ?? "")).toContain(tarball);
    const outputs: string[] = [];
    let s: Started | undefined;
    for (const line of lines) {
      if (SERVES.test(line)) s = await start("bash", serverLine(line), installed, {});
      else outputs.push(runLine(line, installed));
    }
    const modules = readdirSync(join(installed, "node_modules"));
    for (const dev of ["typescript", "tsx", "vitest", "eslint"]) expect(modules).not.toContain(dev);
    expect(outputs.map((o) => o.trim())).toEqual(expect.arrayContaining([VERSION, "configuration is valid"]));
    expect(outputs.some((o) => /^applied /.test(o))).toBe(true);
    const startup = s!
      .output()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l["msg"] === "opengms starting");
    expect(startup).toMatchObject({ version: VERSION, config: serverConfig, database: `sqlite:${join(work, "server-gms.db")}` });
    s!.child.kill("SIGTERM");
    await expectGracefulStop(s!, installed);
  }, INSTALL_TIMEOUT_MS);
});

describe("the installed tarball", () => {
  const bin = () => join(installed, "node_modules", ".bin", "opengms");

  it("finds its example configuration wherever it starts (check-config), and migrates a database of its own", () => {
    const dir = mkdtempSync(join(work, "bare-"));
    expect(run(bin(), ["check-config"], { cwd: dir, env: cleanEnv({}) })).toContain("configuration is valid");
    const db = `sqlite:${join(dir, "gms.db")}`;
    expect(run(bin(), ["migrate"], { cwd: dir, env: cleanEnv({ GMS_DATABASE_URL: db }) })).toMatch(/^applied /);
    expect(run(bin(), ["migrate"], { cwd: dir, env: cleanEnv({ GMS_DATABASE_URL: db }) })).toBe("schema up to date\n");
  });

  it("serves on the bundled example configuration from an empty folder, naming it in its startup log", async () => {
    const dir = mkdtempSync(join(work, "bin-"));
    const db = `sqlite:${join(dir, "gms.db")}`;
    const s = await start(bin(), ["serve"], dir, { GMS_DATABASE_URL: db });
    const startup = s
      .output()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l["msg"] === "opengms starting");
    expect(startup).toMatchObject({ version: VERSION, config: join(installed, "node_modules", "opengms", "config", "gms.yaml"), database: db });
    await expectPages(s.port);
    s.child.kill("SIGTERM");
    await expectGracefulStop(s, dir);
  });

  it.runIf(process.getuid?.() === 0)("a container's PID 1 (a PID namespace of its own, as docker runs it) gets the graceful shutdown", async () => {
    const dir = mkdtempSync(join(work, "pid1-"));
    const s = await start("unshare", ["--pid", "--fork", "--mount-proc", bin(), "serve", "--config", configIn(dir)], dir, {});
    // unshare waits for its child, which is PID 1 in the new namespace: the container's init.
    const [init] = childrenOf(s.child.pid!);
    expect(init).toBeDefined();
    expect(readFileSync(`/proc/${init}/status`, "utf8")).toMatch(/^NSpid:\s+\d+\s+1$/m);
    process.kill(init!, "SIGTERM");
    await expectGracefulStop(s, dir);
  });
});
