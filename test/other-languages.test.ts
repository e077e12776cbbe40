// The other-language clients of the README ("Other languages"), run as a user runs them, against
// the real server on the shipped configuration (config/gms.yaml) on MariaDB: the Python example on
// code generated from contract/ by examples/python/generate.sh (generated Python is not committed),
// and the plain @grpc/grpc-js + @grpc/proto-loader example reading contract/ at run time. The
// README's blocks run as written, with bash, in a copy of the checkout's contract/ and examples/
// (only the address differs: GMS); then each script runs again as a customer only, with this test
// as the agent, so the events it prints come from another process.
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createClient } from "@connectrpc/connect";
import { parse as parseYaml } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/gms/v1/admin_pb.js";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatEventType } from "../gen/gms/v1/chat_event_pb.js";
import { systemClock } from "../src/clock.js";
import { waitFor } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const ROOT = resolve(import.meta.dirname, "..");
/** PYTHON is Debian's python3, where python3-grpcio and python3-protobuf are installed (a pyenv's python3 may come first on PATH). */
const PYTHON = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
const DIALECT = DIALECTS.includes("mysql") ? "mysql" : "sqlite";

/** Run is a child process being run: its output lines so far, and how it ended. */
interface Run {
  readonly lines: string[];
  readonly done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** run starts a command in the checkout and collects its output; it is killed after two minutes. */
function run(command: string, args: string[], env: Record<string, string> = {}, cwd = ROOT): Run {
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => {
    stdout += d.toString();
    lines.splice(0, lines.length, ...stdout.split("\n").filter((l) => l !== ""));
  });
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
  return { lines, done };
}

/** EXAMPLES are the two clients: the README's block for each, and its script. */
const EXAMPLES = [
  { name: "Python (grpcio, code generated from contract/)", block: "python", command: PYTHON, script: "examples/python/gms_example.py" },
  { name: "Node (@grpc/grpc-js + @grpc/proto-loader over contract/)", block: "node-grpc", command: process.execPath, script: "examples/node-grpc/gms-example.mjs" },
];

/** readmeBlock is the ```sh block of the README marked `<!-- other-languages: <name> -->`. */
function readmeBlock(name: string): string {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const block = new RegExp(`^<!-- other-languages: ${name} -->\n\`\`\`sh\n([\\s\\S]*?)^\`\`\`$`, "m").exec(readme)?.[1];
  if (block === undefined) throw new Error(`the README has no block marked <!-- other-languages: ${name} -->`);
  return block;
}

describe(`the other-language examples against the server on config/gms.yaml on ${DIALECT}`, () => {
  let t: TestServer;
  let gen: string;
  /** checkout has copies of contract/ and examples/ (and node_modules), where the README's blocks run. */
  let checkout: string;
  /** bin holds `python3` (Debian's, where python3-grpcio is), first on the blocks' PATH. */
  let bin: string;
  beforeAll(async () => {
    const config = parseYaml(readFileSync(join(ROOT, "config", "gms.yaml"), "utf8")) as Record<string, Record<string, unknown>>;
    config["server"] = { ...config["server"], host: "127.0.0.1", port: 0 };
    t = await startTestServer(DIALECT, { config, clock: systemClock });
    gen = mkdtempSync(join(tmpdir(), "opengms-python-"));
    const generated = await run("sh", ["examples/python/generate.sh", gen]).done;
    expect(generated.stderr).toBe("");
    expect(generated.code).toBe(0);
    checkout = mkdtempSync(join(tmpdir(), "opengms-checkout-"));
    for (const dir of ["contract", "examples"]) {
      cpSync(join(ROOT, dir), join(checkout, dir), { recursive: true, filter: (path) => !/\/(gen|__pycache__)(\/|$)/.test(path) });
    }
    symlinkSync(join(ROOT, "node_modules"), join(checkout, "node_modules"));
    bin = join(checkout, ".bin");
    mkdirSync(bin);
    if (PYTHON !== "python3") symlinkSync(PYTHON, join(bin, "python3"));
  });
  afterAll(async () => {
    await t?.close();
    for (const dir of [gen, checkout]) if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it.each(EXAMPLES)("$name: access, a match, NoMatch and PoolExhausted decoded, a whole chat, the README's block as written", async ({ block }) => {
    // The example exhausts DNIS and gives its numbers back, which rest 5 s (cooldown_seconds) before the next run can take them.
    const admin = createClient(AdminService, t.grpc);
    await waitFor("DNIS's ten numbers free", async () => (await admin.listResourceGroups({})).groups.find((g) => g.name === "DNIS")?.free === 10n, 30_000);
    const { code, stdout, stderr } = await run("bash", ["-euo", "pipefail", "-c", readmeBlock(block)], { GMS: t.server.url, PATH: `${bin}:${process.env["PATH"] ?? ""}` }, checkout).done;
    expect(stderr).toBe("");
    expect(code).toBe(0);
    // The Python block generates its code first.
    const lines = stdout.trim().split("\n").filter((l) => !l.startsWith("generated into "));
    expect(lines[0]).toMatch(/^RequestInteraction: session [0-9a-f-]{36}, call \+180055502[0-9]{2} \(group iPhoneService\)$/);
    expect(lines[1]).toBe(`MatchInteraction: matched session ${/session ([0-9a-f-]{36})/.exec(lines[0] ?? "")?.[1]}`);
    expect(lines[2]).toBe("MatchInteraction again: NOT_FOUND, NoMatch NO_MATCH_REASON_NO_RESERVATION");
    // DNIS has ten numbers; the sessions live 30 s (storage.default_ttl_seconds), and so do their reservations.
    expect(lines[3]).toMatch(/^RequestInteraction on DNIS: 10 reserved, then RESOURCE_EXHAUSTED, PoolExhausted group DNIS, next number free at \d{4}-\d\d-\d\dT[\d:.]+Z \(retry after (29|30) s\)$/);
    expect(lines[4]).toBe("cancelled 10 sessions");
    expect(lines[5]).toMatch(/^RequestChat: chat [0-9a-f-]{36}$/);
    expect(lines.slice(6)).toEqual([
      "event 1 CHAT_EVENT_TYPE_PARTICIPANT_JOINED Ann",
      "event 2 CHAT_EVENT_TYPE_PARTICIPANT_JOINED Bob",
      "event 3 CHAT_EVENT_TYPE_MESSAGE Bob: Hello from the agent",
      "event 4 CHAT_EVENT_TYPE_MESSAGE Ann: Thank you!",
      "event 5 CHAT_EVENT_TYPE_CHAT_ENDED Bob",
      "done",
    ]);
    // The cancelled sessions gave their numbers back.
    const dnis = (await admin.listResourceGroups({})).groups.find((g) => g.name === "DNIS");
    expect(dnis?.reserved).toBe(0n);
  });

  it.each(EXAMPLES)("$name: a customer's stream prints what an agent in another process sends, live", async ({ command, script }) => {
    const customer = run(command, [script, t.server.url, "--no-agent"], { GMS_PYTHON_GEN: gen });
    const chatLine = await waitFor("the example's chat", () => customer.lines.find((l) => l.startsWith("RequestChat: chat ")), 30_000);
    const chatId = chatLine.slice("RequestChat: chat ".length);
    await waitFor("the example to wait for an agent", () => customer.lines.some((l) => l.startsWith("waiting for an agent")), 30_000);
    const agent = createClient(AgentService, t.grpc);
    expect((await agent.acceptChat({ endpoint: "default", nickname: "Tess", waitSeconds: 10 })).chatId).toBe(chatId);
    await agent.sendMessage({ chatId, text: "Hello from TypeScript" });
    await waitFor("the customer's thanks", async () => (await agent.refresh({ chatId, fromPosition: 1n })).events.some((e) => e.text === "Thank you!"), 30_000);
    await agent.endChat({ chatId });
    const { code, stderr } = await customer.done;
    expect(stderr).toBe("");
    expect(code).toBe(0);
    const stored = (await agent.refresh({ chatId, fromPosition: 1n })).events.map((e) => `event ${e.position} CHAT_EVENT_TYPE_${ChatEventType[e.type]} ${e.from?.nickname}${e.text ? `: ${e.text}` : ""}`);
    expect(stored).toEqual([
      "event 1 CHAT_EVENT_TYPE_PARTICIPANT_JOINED Ann",
      "event 2 CHAT_EVENT_TYPE_PARTICIPANT_JOINED Tess",
      "event 3 CHAT_EVENT_TYPE_MESSAGE Tess: Hello from TypeScript",
      "event 4 CHAT_EVENT_TYPE_MESSAGE Ann: Thank you!",
      "event 5 CHAT_EVENT_TYPE_CHAT_ENDED Tess",
    ]);
    // What the example printed is the transcript, each event once, in order.
    expect(customer.lines.filter((l) => l.startsWith("event "))).toEqual(stored);
  });
});
