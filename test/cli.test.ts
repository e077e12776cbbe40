// The operator's commands of the `opengms` bin, run as an operator runs them: the real program in a
// process of its own (node --import tsx src/main.ts), against a real server over real sockets, on
// MariaDB (and a few on SQLite). Each command's table and --json output, the exit statuses (not
// found, refused, unreachable, a usage error), one line on stderr for every failure, never a key,
// never an access code; `chat watch` printing the queue as chats arrive, resuming a lost stream, and
// ending on SIGINT.
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { createLocalBus } from "../src/bus.js";
import { systemClock } from "../src/clock.js";
import { connectOutcome, freePort, waitFor } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { makePki, type Pki } from "./helpers/pki.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";

const ROOT = resolve(import.meta.dirname, "..");
const KEYS = { admin: "cli-admin-key-0123456789", app: "cli-app-key-0123456789ab", ivr: "cli-ivr-key-0123456789ab" };
const LOBBY = ["+18005550100", "+18005550101"];
const SHARED = "+18005550200";

const config = {
  auth: {
    api_keys: [
      { name: "ops", key: KEYS.admin, roles: ["admin"] },
      { name: "app", key: KEYS.app, roles: ["app", "agent"] },
      { name: "ivr", key: KEYS.ivr, roles: ["ivr"] },
    ],
  },
  // Shown only (the test's database is what the server uses): its password must never be.
  database: { url: "mysql://gms:cli-db-secret@db.example:3306/gms" },
  resources: {
    lobby: { numbers: LOBBY, locking: true },
    shared: { numbers: [SHARED], locking: false },
  },
  services: {
    listed: { service: "request-interaction", resource_group: "shared", ttl: 600 },
    support: { service: "request-chat", endpoint: "support" },
    desk: { service: "request-chat", endpoint: "helpdesk" },
  },
};

/** Run is how a command ended. */
interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** baseEnv is this process's environment without anything that would choose a server or a key for the child. */
function baseEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const k of ["GMS_URL", "GMS_API_KEY", "GMS_CONFIG"]) if (!(k in extra)) delete env[k];
  return env;
}

/** opengms runs the bin with arguments and an environment, to its end. */
function opengms(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(process.execPath, ["--import", "tsx", "src/main.ts", ...args], { cwd: ROOT, env: baseEnv(env), timeout: 60_000 }, (error, stdout, stderr) => {
      const status = error === null ? 0 : typeof error.code === "number" ? error.code : null;
      done({ status, stdout, stderr });
    });
  });
}

/** expectFailure checks a failed command: its status, stdout empty, stderr one line starting so. */
function expectFailure(run: Run, status: number, line: RegExp): void {
  expect(run.status, `${run.stdout}${run.stderr}`).toBe(status);
  expect(run.stdout).toBe("");
  expect(run.stderr).toMatch(/^opengms: [^\n]*\n$/);
  expect(run.stderr).toMatch(line);
}

/** noSecrets checks an output carries no API key and none of the given codes. */
function expectNoSecrets(text: string, codes: readonly string[] = []): void {
  for (const s of [...Object.values(KEYS), ...codes, "cli-db-secret"]) expect(text).not.toContain(s);
}

const MAIN: "mysql" | "sqlite" = DIALECTS.includes("mysql") ? "mysql" : "sqlite";

// Every command is a node process of its own (a second or so each on a loaded machine): generous timeouts.
describe(`the opengms commands against a server on ${MAIN}`, { timeout: 120_000 }, () => {
  let t: TestServer;
  let admin: Record<string, string>;
  let app: Client<typeof AccessService>;
  let dir: string;

  beforeAll(async () => {
    t = await startTestServer(MAIN, { config, clock: systemClock, bus: createLocalBus() });
    admin = { GMS_URL: t.server.url, GMS_API_KEY: KEYS.admin };
    app = createClient(AccessService, t.transport("grpc", KEYS.app));
    dir = mkdtempSync(join(tmpdir(), "opengms-cli-"));
  });
  afterAll(async () => {
    await t?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("health: SERVING and 0, as text or JSON, without a key; an unknown service NOT_FOUND (2)", async () => {
    const [text, asJson, unknown] = await Promise.all([
      opengms(["health", "--url", t.server.url]),
      opengms(["health", "--json"], { GMS_URL: t.server.url }),
      opengms(["health", "gms.v1.NoSuchService", "--url", t.server.url]),
    ]);
    expect(text).toEqual({ status: 0, stdout: "SERVING\n", stderr: "" });
    expect(asJson.status).toBe(0);
    expect(JSON.parse(asJson.stdout)).toEqual({ status: "SERVING" });
    expectFailure(unknown, 2, /^opengms: not_found: /);
  });

  it("groups: a table of the pools, and their JSON", async () => {
    await app.requestInteraction({ phoneNumber: "+16505550001", resourceGroup: "lobby", ttlSeconds: 600n });
    const [text, asJson] = await Promise.all([opengms(["groups"], admin), opengms(["groups", "--json"], admin)]);
    expect(text.status).toBe(0);
    expect(text.stderr).toBe("");
    expect(text.stdout).toBe(
      [
        "GROUP   FREE  RESERVED  COOLING DOWN  RETIRED  RESERVATIONS",
        "lobby      1         1             0        0             1",
        "shared     1         0             0        0             0",
        "",
      ].join("\n"),
    );
    expect(JSON.parse(asJson.stdout)).toEqual({
      groups: [
        { name: "lobby", reserved: "1", coolingDown: "0", free: "1", retired: "0", reservations: "1" },
        { name: "shared", reserved: "0", coolingDown: "0", free: "1", retired: "0", reservations: "0" },
      ],
    });
  });

  it("reservations and release: the live reservations without their codes; a release, then NOT_FOUND (2); a malformed number a usage error (1)", async () => {
    const made = await app.requestInteraction({ phoneNumber: "+16505550011", resourceGroup: "shared", provideCode: true, ttlSeconds: 600n });
    const code = made.access!.accessCode;
    const [text, asJson] = await Promise.all([opengms(["reservations", "shared"], admin), opengms(["reservations", "shared", "--json"], admin)]);
    expect(text.status).toBe(0);
    const lines = text.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^NUMBER\s+GROUP\s+SESSION\s+PHONE\s+CREATED\s+EXPIRES IN$/);
    expect(lines.slice(1)).toHaveLength(1);
    expect(lines[1]).toMatch(new RegExp(`^\\${SHARED}\\s+shared\\s+${made.session!.id}\\s+\\+16505550011\\s+\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\\s+(\\d+m)?\\d+s$`));
    expect((JSON.parse(asJson.stdout) as { reservations: unknown[] }).reservations).toEqual([
      expect.objectContaining({ accessNumber: SHARED, resourceGroup: "shared", sessionId: made.session!.id, phoneNumber: "+16505550011" }),
    ]);
    expectNoSecrets(text.stdout + asJson.stdout, [code]);
    expect((await opengms(["reservations", "nowhere"], admin)).stdout).toBe("no live reservations in nowhere\n");

    const released = await opengms(["release", SHARED], admin);
    expect(released.status).toBe(0);
    expect(released.stdout).toMatch(new RegExp(`^released 1 reservation of \\${SHARED}\\nNUMBER.*\\n\\${SHARED}\\s+shared\\s+${made.session!.id}`));
    expectNoSecrets(released.stdout, [code]);
    const [again, malformed] = await Promise.all([opengms(["release", SHARED], admin), opengms(["release", "18OO-FLOWERS"], admin)]);
    expectFailure(again, 2, /^opengms: not_found: access number "\+18005550200" has no live reservation\n$/);
    expectFailure(malformed, 1, /^opengms: invalid_argument: access_number/);
  });

  it("sessions: newest first across pages, by service and state, up to --limit (saying so on stderr); session and cancel", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await app.requestInteraction({ service: "listed", phoneNumber: `+1650555020${i}` })).session!.id);
    const newest = [...ids].reverse();
    const [all, limited, asJson] = await Promise.all([
      opengms(["sessions", "--service", "listed", "--page-size", "3"], admin),
      opengms(["sessions", "--service", "listed", "--page-size", "2", "--limit", "5"], admin),
      opengms(["sessions", "--service", "listed", "--page-size", "3", "--json"], admin),
    ]);
    expect(all.status).toBe(0);
    expect(all.stderr).toBe("");
    const rows = all.stdout.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^SESSION\s+SERVICE\s+STATE\s+PHONE\s+CREATED\s+EXPIRES IN$/);
    expect(rows.slice(1).map((r) => r.split(/\s+/).slice(0, 4))).toEqual(newest.map((id, i) => [id, "listed", "active", `+1650555020${6 - i}`]));
    expect(limited.status).toBe(0);
    expect(limited.stdout.trimEnd().split("\n").slice(1).map((r) => r.split(/\s+/)[0])).toEqual(newest.slice(0, 5));
    expect(limited.stderr).toBe("more sessions than --limit 5: raise it, or --limit 0 for all\n");
    const parsed = JSON.parse(asJson.stdout) as { sessions: { id: string; state: string }[]; nextPageToken: string };
    expect(parsed.sessions.map((s) => s.id)).toEqual(newest);
    expect(parsed.sessions[0]?.state).toBe("SESSION_STATE_ACTIVE");
    expect(parsed.nextPageToken).toBe("");

    const shown = await opengms(["session", ids[0]!], admin);
    expect(shown.status).toBe(0);
    expect(shown.stdout).toMatch(new RegExp(`^session  ${ids[0]}\\nservice  listed \\(request-interaction\\)\\nstate    active\\nphone    \\+16505550200\\ndata     [0-9a-f-]{36}\\ncreated  \\S+Z\\nexpires  \\S+Z \\(in 9m\\d\\ds\\)\\n\\nNUMBER`));
    const cancelled = await opengms(["cancel", ids[0]!], admin);
    expect(cancelled).toEqual({ status: 0, stdout: `session ${ids[0]} ended\n`, stderr: "" });
    const [ended, endedJson, unknown, malformed] = await Promise.all([
      opengms(["sessions", "--service", "listed", "--state", "ended"], admin),
      opengms(["session", ids[0]!, "--json"], admin),
      opengms(["session", "0190a0b0-0000-7000-8000-000000000000"], admin),
      opengms(["cancel", "not-an-id"], admin),
    ]);
    expect(ended.stdout.trimEnd().split("\n").slice(1).map((r) => r.split(/\s+/).slice(0, 3))).toEqual([[ids[0], "listed", "ended"]]);
    expect(JSON.parse(endedJson.stdout)).toMatchObject({ session: { id: ids[0], state: "SESSION_STATE_ENDED" }, reservations: [] });
    expectFailure(unknown, 2, /^opengms: not_found: session 0190a0b0-0000-7000-8000-000000000000 not found\n$/);
    expectFailure(malformed, 1, /^opengms: invalid_argument: session_id/);
  });

  it("services and config: what the configuration fixes; the configuration as YAML or JSON, secrets redacted", async () => {
    const [services, text, asJson] = await Promise.all([opengms(["services"], admin), opengms(["config"], admin), opengms(["config", "--json"], admin)]);
    expect(services.status).toBe(0);
    const rows = services.stdout.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^SERVICE\s+BUILTIN\s+CONFIGURED\s+GROUP\s+CODE\s+CODE LENGTH\s+TTL\s+BOOKING\s+ENDPOINT$/);
    expect(rows.slice(1).map((r) => r.split(/\s+/))).toEqual([
      ["desk", "request-chat", "yes", "-", "-", "-", "-", "-", "helpdesk"],
      ["listed", "request-interaction", "yes", "shared", "-", "-", "10m00s", "-", "-"],
      ["support", "request-chat", "yes", "-", "-", "-", "-", "-", "support"],
      ["request-interaction", "request-interaction", "no", "-", "-", "-", "-", "-", "-"],
      ["request-access", "request-access", "no", "-", "-", "-", "-", "-", "-"],
      ["match-interaction", "match-interaction", "no", "-", "-", "-", "-", "-", "-"],
      ["request-chat", "request-chat", "no", "-", "-", "-", "-", "-", "default"],
    ]);
    expect(text.status).toBe(0);
    const yaml = parseYaml(text.stdout) as { auth: { api_keys: { name: string; key: string }[] }; database: { url: string }; resources: Record<string, unknown> };
    expect(yaml.auth.api_keys.map((k) => [k.name, k.key])).toEqual([
      ["ops", "<redacted>"],
      ["app", "<redacted>"],
      ["ivr", "<redacted>"],
    ]);
    expect(yaml.database.url).toBe("mysql://gms:***@db.example:3306/gms");
    expect(Object.keys(yaml.resources)).toEqual(["lobby", "shared"]);
    expect((JSON.parse(asJson.stdout) as { configuration: unknown }).configuration).toEqual(yaml);
    expectNoSecrets(services.stdout + text.stdout + asJson.stdout);
  });

  it("match: a real match (the reservation is used up), its data with --data; then no match (2) saying why", async () => {
    const made = await app.requestInteraction({ phoneNumber: "+16505550301", resourceGroup: "lobby", ttlSeconds: 600n, appData: { city: { kind: { case: "text", value: "Paris\u001b[2J" } } } });
    const number = made.access!.accessNumber;
    const matched = await opengms(["match", "--number", number, "--phone", "+16505550301", "--data"], admin);
    expect(matched.status).toBe(0);
    expect(matched.stdout).toBe(
      [
        "SESSION                               DATA                                  SERVICE              PHONE",
        `${made.session!.id}  ${made.session!.dataId}  request-interaction  +16505550301`,
        "",
        `data of session ${made.session!.id}`,
        "KEY   KIND  VALUE",
        // The terminal's escape sequence is shown, not sent.
        "city  text  Paris\\u001b[2J",
        "",
      ].join("\n"),
    );
    const [again, asJson, badCode] = await Promise.all([
      opengms(["match", "--number", number], { ...admin, GMS_API_KEY: KEYS.ivr }),
      opengms(["match", "--number", number, "--json"], admin),
      opengms(["match", "--number", number, "--code", "12"], admin),
    ]);
    expectFailure(again, 2, /^opengms: not_found: .* \(no match: no_reservation\)\n$/);
    expectFailure(asJson, 2, /no_reservation/);
    expectFailure(badCode, 1, /^opengms: invalid_argument: access_code/);
    const usage = await opengms(["match", "--phone", "123"], admin);
    expect(usage.status).toBe(1);
    expect(usage.stderr).toContain("--number");
  });

  it("storage get: a record's texts and files, escaped; its JSON whole; NOT_FOUND (2)", async () => {
    const made = await app.requestInteraction({
      phoneNumber: "+16505550401",
      resourceGroup: "shared",
      ttlSeconds: 600n,
      appData: {
        note: { kind: { case: "text", value: "line one\nline two" } },
        photo: { kind: { case: "file", value: { filename: "a.png", contentType: "image/png", content: new Uint8Array([137, 80, 78, 71]) } } },
      },
    });
    const dataId = made.session!.dataId;
    const [text, asJson, unknown] = await Promise.all([
      opengms(["storage", "get", dataId], admin),
      opengms(["storage", "get", dataId, "--json"], admin),
      opengms(["storage", "get", "0190a0b0-0000-7000-8000-000000000000"], admin),
    ]);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^data     ${dataId}\\nversion  1\\nexpires  \\S+Z \\(in 9m\\d\\ds\\)\\n\\n`));
    expect(text.stdout).toContain(["KEY    KIND  VALUE", "note   text  line one\\nline two", "photo  file  a.png image/png, 4 bytes", ""].join("\n"));
    expect(JSON.parse(asJson.stdout)).toMatchObject({
      dataId,
      version: "1",
      entries: { note: { text: "line one\nline two" }, photo: { file: { filename: "a.png", contentType: "image/png", content: "iVBORw==" } } },
    });
    expectFailure(unknown, 2, /^opengms: not_found: /);
  });

  it("endpoints and chat participants: the queues, a chat and who joined it", async () => {
    const customer = createClient(ChatService, t.transport("grpc", KEYS.app));
    const agent = createClient(AgentService, t.transport("grpc", KEYS.app));
    const chat = await customer.requestChat({ service: "support", nickname: "Ann" });
    const endpoints = await opengms(["endpoints"], admin);
    expect(endpoints.status).toBe(0);
    expect(endpoints.stdout.trimEnd().split("\n").map((r) => r.split(/\s+/).slice(0, 2))).toEqual([
      ["ENDPOINT", "WAITING"],
      ["default", "0"],
      ["helpdesk", "0"],
      ["support", "1"],
    ]);
    await agent.acceptChat({ endpoint: "support", nickname: "Bob" });
    const [text, asJson, unknown] = await Promise.all([
      opengms(["chat", "participants", chat.chatId], admin),
      opengms(["chat", "participants", chat.chatId, "--json"], admin),
      opengms(["chat", "participants", "0190a0b0-0000-7000-8000-000000000000"], admin),
    ]);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^chat      ${chat.chatId}\\nstate     active\\nservice   support\\nendpoint  support\\nsession   ${chat.sessionId}\\n`));
    const rows = text.stdout.trimEnd().split("\n\n")[1]!.split("\n");
    expect(rows.map((r) => r.split(/\s+/).slice(0, 4))).toEqual([
      ["PARTICIPANT", "TYPE", "NICKNAME", "IDENTITY"],
      [chat.participantId, "client", "Ann", "-"],
      [expect.stringMatching(/^[0-9a-f-]{36}$/), "agent", "Bob", "app"],
    ]);
    expect((JSON.parse(asJson.stdout) as { participants: unknown[] }).participants).toHaveLength(2);
    expect(text.stdout + asJson.stdout).not.toContain(chat.secureKey);
    expectFailure(unknown, 2, /^opengms: not_found: chat /);
  });

  it("refusals exit 3: a key not configured, a key without the role, no key at all; a key from a file or GMS_API_KEY works; the key is never printed", async () => {
    const keyFile = join(dir, "admin-key");
    writeFileSync(keyFile, `${KEYS.admin}\n`, { mode: 0o600 });
    const [unknownKey, appKey, noKey, fromFile, fromFlag, missingFile] = await Promise.all([
      opengms(["groups", "--key", "not-a-configured-key-0000"], { GMS_URL: t.server.url }),
      opengms(["groups"], { GMS_URL: t.server.url, GMS_API_KEY: KEYS.app }),
      opengms(["groups"], { GMS_URL: t.server.url }),
      opengms(["groups", "--key-file", keyFile, "--url", t.server.url]),
      opengms(["groups", "--key", KEYS.admin, "--url", t.server.url]),
      opengms(["groups", "--key-file", join(dir, "nowhere")], { GMS_URL: t.server.url }),
    ]);
    expectFailure(unknownKey, 3, /^opengms: unauthenticated: /);
    expect(unknownKey.stderr).not.toContain("not-a-configured-key-0000");
    expectFailure(appKey, 3, /^opengms: permission_denied: /);
    expectFailure(noKey, 3, /^opengms: unauthenticated: /);
    expect(fromFile.status).toBe(0);
    expect(fromFlag.status).toBe(0);
    expectFailure(missingFile, 1, /^opengms: cannot read the key file .*nowhere: ENOENT\n$/);
    for (const r of [unknownKey, appKey, noKey, fromFile, fromFlag]) expectNoSecrets(r.stdout + r.stderr);
  });

  it("a server that cannot be reached exits 4 with one line: refused, or silent past --timeout", async () => {
    const closed = await freePort();
    expect(await connectOutcome(closed)).toBe("ECONNREFUSED");
    // A server that takes the connection and never answers.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => (sockets.add(s), s.on("error", () => undefined)));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const silentUrl = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    try {
      const [refused, health, timedOut, watch] = await Promise.all([
        opengms(["groups", "--url", `http://127.0.0.1:${closed}`], { GMS_API_KEY: KEYS.admin }),
        opengms(["health"], { GMS_URL: `http://127.0.0.1:${closed}` }),
        opengms(["sessions", "--timeout", "1", "--url", silentUrl], { GMS_API_KEY: KEYS.admin }),
        opengms(["chat", "watch", "default", "--url", `http://127.0.0.1:${closed}`], { GMS_API_KEY: KEYS.admin }),
      ]);
      expectFailure(refused, 4, new RegExp(`^opengms: cannot reach http://127.0.0.1:${closed}: connection refused\\n$`));
      expectFailure(health, 4, /connection refused/);
      expectFailure(timedOut, 4, /^opengms: deadline_exceeded: /);
      expectFailure(watch, 4, /connection refused/);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it("usage errors exit 1: an unknown command, a missing argument, a bad option value, a URL that is not http", async () => {
    const runs = await Promise.all([
      opengms(["grups"], admin),
      opengms(["reservations"], admin),
      opengms(["sessions", "--limit", "many"], admin),
      opengms(["sessions", "--page-size", "5000"], admin),
      opengms(["groups", "--url", "ftp://127.0.0.1"], admin),
      opengms(["groups", "--timeout", "-3"], admin),
      opengms(["groups", "--url", `http://user:${KEYS.admin}@127.0.0.1:1`]),
      opengms(["sessions", "--state", "gone"], admin),
    ]);
    for (const r of runs) {
      expect(r.status, r.stderr).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).not.toMatch(/\n\s+at /); // never a stack trace
      expectNoSecrets(r.stderr);
    }
    expect(runs[0]?.stderr).toBe("error: unknown command 'grups' (opengms --help lists the commands)\n");
    expect(runs[1]?.stderr).toContain("missing required argument 'group'");
    expect(runs[2]?.stderr).toContain('--limit: "many" is not a whole number');
    expect(runs[4]?.stderr).toBe('opengms: --url: "ftp://127.0.0.1" is not an http:// or https:// URL\n');
    expect(runs[7]?.stderr).toContain("Allowed choices are active, ended");
  });

  it("chat watch: a line when the queue changes, JSON lines with --json, a lost stream resumed, exit 0 on SIGINT", async () => {
    // Through a proxy that can cut every connection, as a restarting node or a proxy's idle cut would.
    const proxy = new TcpProxy("127.0.0.1", t.server.port);
    await proxy.start();
    const customer = createClient(ChatService, t.transport("grpc", KEYS.app));
    const watch = (args: string[]) => {
      const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts", "chat", "watch", "helpdesk", ...args], {
        cwd: ROOT,
        env: baseEnv({ GMS_URL: `http://127.0.0.1:${proxy.port}`, GMS_API_KEY: KEYS.app }),
        stdio: ["ignore", "pipe", "pipe"],
      });
      const out = { stdout: "", stderr: "" };
      child.stdout.setEncoding("utf8").on("data", (s: string) => (out.stdout += s));
      child.stderr.setEncoding("utf8").on("data", (s: string) => (out.stderr += s));
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
      return { child, out, exited };
    };
    const text = watch([]);
    const lines = watch(["--json"]);
    const jsonLines = () => lines.out.stdout.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { endpoint: string; waiting: { nickname: string }[]; heartbeat: boolean });
    try {
      await waitFor("both watches to show the empty queue", () => text.out.stdout.includes("helpdesk: 0 waiting\n") && jsonLines().length > 0, 30_000);
      await customer.requestChat({ service: "desk", nickname: "Zoe" });
      await waitFor("a line for the chat", () => /helpdesk: 1 waiting, oldest \d+s: Zoe \(\d+s\)\n/.test(text.out.stdout) && jsonLines().some((u) => u.waiting.length === 1), 30_000);
      expect(jsonLines().at(-1)).toMatchObject({ endpoint: "helpdesk", waiting: [{ nickname: "Zoe" }], heartbeat: false });

      // The streams are cut; a chat arrives meanwhile; the watches open their streams again and show it.
      await proxy.cut();
      await waitFor("both watches to say they open the stream again", () => text.out.stderr.includes("opening the stream again") && lines.out.stderr.includes("opening the stream again"), 30_000);
      await customer.requestChat({ service: "desk", nickname: "Yan" });
      await proxy.reopen();
      await waitFor("the queue after the stream was opened again", () => /helpdesk: 2 waiting, oldest \d+s: Zoe \(\d+s\), Yan \(\d+s\)\n/.test(text.out.stdout) && jsonLines().some((u) => u.waiting.length === 2), 30_000);

      text.child.kill("SIGINT");
      lines.child.kill("SIGINT");
      expect(await text.exited).toBe(0);
      expect(await lines.exited).toBe(0);
      for (const line of text.out.stdout.trimEnd().split("\n")) expect(line).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ {2}helpdesk: \d waiting/);
      for (const u of jsonLines()) expect(u.endpoint).toBe("helpdesk");
      for (const err of [text.out.stderr, lines.out.stderr]) {
        for (const line of err.trimEnd().split("\n")) expect(line).toMatch(/^opengms: .*opening (it|the stream) again$/);
        expectNoSecrets(err);
      }
    } finally {
      text.child.kill("SIGKILL");
      lines.child.kill("SIGKILL");
      await proxy.close();
    }
  });
});

describe.skipIf(MAIN === "sqlite")("the opengms commands against a server on sqlite", { timeout: 120_000 }, () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer("sqlite", { config, clock: systemClock, bus: createLocalBus() });
  });
  afterAll(() => t?.close());

  it("groups, sessions and config work the same", async () => {
    const app = createClient(AccessService, t.transport("connect", KEYS.app));
    const made = await app.requestInteraction({ service: "listed", phoneNumber: "+16505550901" });
    const env = { GMS_URL: t.server.url, GMS_API_KEY: KEYS.admin };
    const [groups, sessions, cfg] = await Promise.all([opengms(["groups", "--json"], env), opengms(["sessions"], env), opengms(["config", "--json"], env)]);
    expect((JSON.parse(groups.stdout) as { groups: { name: string; reservations: string }[] }).groups.map((g) => [g.name, g.reservations])).toEqual([
      ["lobby", "0"],
      ["shared", "1"],
    ]);
    expect(sessions.stdout.split("\n")[1]).toMatch(new RegExp(`^${made.session!.id}\\s+listed\\s+active\\s+\\+16505550901`));
    expect(cfg.status).toBe(0);
    expectNoSecrets(cfg.stdout);
  });
});

describe("the opengms commands over mutual TLS", { timeout: 120_000 }, () => {
  let t: TestServer;
  let pki: Pki;
  beforeAll(async () => {
    pki = await makePki();
    t = await startTestServer("sqlite", {
      config: { ...config, server: { tls: { cert: pki.serverCert, key: pki.serverKey, client_ca: pki.caCert } } },
      clock: systemClock,
      bus: createLocalBus(),
    });
  });
  afterAll(async () => {
    await t?.close();
    if (pki !== undefined) rmSync(pki.dir, { recursive: true, force: true });
  });

  it("trusts the server with --ca and presents --cert and --cert-key; without them the handshake fails, exit 4", async () => {
    expect(t.server.url).toMatch(/^https:/);
    const trust = ["--ca", pki.caCert];
    const me = ["--cert", pki.clientCert, "--cert-key", pki.clientKey];
    const env = { GMS_URL: t.server.url, GMS_API_KEY: KEYS.admin };
    const [health, groups, untrusted, anonymous, stranger, half] = await Promise.all([
      opengms(["health", ...trust, ...me], env),
      opengms(["groups", "--json", ...trust, ...me], env),
      opengms(["health", ...me], env),
      opengms(["health", ...trust], env),
      opengms(["health", ...trust, "--cert", pki.strangerCert, "--cert-key", pki.strangerKey], env),
      opengms(["health", ...trust, "--cert", pki.clientCert], env),
    ]);
    expect(health).toEqual({ status: 0, stdout: "SERVING\n", stderr: "" });
    expect((JSON.parse(groups.stdout) as { groups: unknown[] }).groups).toHaveLength(2);
    expectFailure(untrusted, 4, new RegExp(`^opengms: cannot reach ${t.server.url}: the server's certificate`));
    expectFailure(anonymous, 4, /^opengms: cannot reach .*: (the server asks for a client certificate|connection reset)/);
    expectFailure(stranger, 4, /^opengms: cannot reach /);
    expectFailure(half, 1, /^opengms: --cert and --cert-key go together/);
  });
});
