// Live reload (src/reload.ts): AdminService.ReloadConfig on a real server over real sockets, with
// chat streams open and calls in flight, and SIGHUP to the real process. The configuration file is
// rewritten between reloads, as an operator would.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { AdminService } from "../gen/gms/v1/admin_pb.js";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatEventType, type ChatEvent } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { NoMatchReason, NoMatchSchema } from "../gen/gms/v1/error_details_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import type { Value } from "../gen/gms/v1/value_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { ManualClock } from "../src/clock.js";
import { loadConfig } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { bearer, connectOutcome, errorOf, freePort, waitFor } from "./helpers/calls.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { captureLog, type LogCapture } from "./helpers/log-capture.js";

const ADMIN_KEY = "reload-admin-key-5b0d1e2f3a";
const OLD_KEY = "reload-old-backend-key-9c8b7a";
const NEW_KEY = "reload-new-backend-key-1f2e3d";
const AGENT_KEY = "reload-agent-key-4a5b6c7d8e";
const IVR_KEY = "reload-ivr-key-0f1e2d3c4b5a";
const text = (t: string): Value => ({ $typeName: "gms.v1.Value", kind: { case: "text", value: t } });

/** baseConfig is the file the server starts with: two numbers in a locking group, a chat service, a backend key. */
function baseConfig(): Record<string, unknown> {
  return {
    server: { host: "127.0.0.1", port: 0 },
    log: { level: "info" },
    auth: {
      api_keys: [
        { name: "ops", key: ADMIN_KEY, roles: ["admin"] },
        { name: "crm", key: OLD_KEY, roles: ["backend"] },
        { name: "desk", key: AGENT_KEY, roles: ["agent"] },
        { name: "pbx", key: IVR_KEY, roles: ["ivr"] },
      ],
      public_roles: ["app"],
    },
    storage: { max_entries: 100 },
    resources: { pool: { numbers: ["+18005550100", "+18005550101"], locking: true, booking_expiration_timeout: 60 } },
    services: { support: { service: "request-chat", endpoint: "support", ttl: 600 } },
  };
}

/** events reads a server stream one event at a time, as a client that keeps it open does. */
function reader<T>(stream: AsyncIterable<T>): () => Promise<T> {
  const it = stream[Symbol.asyncIterator]();
  return async () => {
    const r = await it.next();
    if (r.done === true) throw new Error("the stream ended");
    return r.value;
  };
}

describe.each(DIALECTS)("live reload (%s)", (dialect) => {
  let dir: string;
  let file: string;
  let db: TestDatabase;
  let server: RunningServer;
  let clock: ManualClock;
  let logs: LogCapture;
  let grpc: (key?: string) => Transport;
  let connect: (key?: string) => Transport;

  /** write replaces the configuration file. */
  const write = (config: Record<string, unknown>) => writeFileSync(file, toYaml(config));
  const admin = () => createClient(AdminService, grpc(ADMIN_KEY));

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "opengms-reload-"));
    file = join(dir, "gms.yaml");
    write(baseConfig());
    db = await createTestDatabase(dialect);
    clock = new ManualClock(Date.now());
    logs = captureLog("info");
    const load = () => loadConfig({ path: file, env: {} });
    server = await startServer({ config: load(), db, log: logs.log, clock, sweep: false, load });
    grpc = (key) => createGrpcTransport({ baseUrl: server.url, interceptors: key === undefined ? [] : [bearer(key)] });
    connect = (key) => createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors: key === undefined ? [] : [bearer(key)] });
  });

  afterEach(async () => {
    await server.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it("puts a valid file in effect with a chat stream and a queue watch open and calls in flight: both keep delivering, every call succeeds", async () => {
    const customer = createClient(ChatService, grpc());
    const agents = createClient(AgentService, connect(AGENT_KEY));
    const chat = await customer.requestChat({ service: "support", nickname: "Ann" });
    const abort = new AbortController();
    try {
      // The customer's stream (gRPC, the lean path) and an agent's queue watch (Connect).
      const events = reader<ChatEvent>(customer.subscribe({ chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n }, { signal: abort.signal }));
      expect((await events()).type).toBe(ChatEventType.PARTICIPANT_JOINED);
      const queue = reader(agents.watchQueue({ endpoint: "support" }, { signal: abort.signal }));
      expect((await queue()).waiting.map((w) => w.chatId)).toEqual([chat.chatId]);

      // Calls in flight while the reload runs: storage writes and reads with the old key (within
      // the old limits and the new ones: a call reads the limits when it checks them).
      const storage = createClient(StorageService, grpc(OLD_KEY));
      const inFlight = Array.from({ length: 40 }, (_, i) => storage.createData({ ttlSeconds: 60n, entries: { a: text(`v${i}`) } }).then((r) => storage.getData({ dataId: r.dataId })));
      const next = baseConfig();
      (next["auth"] as { api_keys: unknown[] }).api_keys.push({ name: "crm2", key: NEW_KEY, roles: ["backend"] });
      next["resources"] = { ...(next["resources"] as object), extra: { numbers: ["+18005550200"], locking: false } };
      next["storage"] = { max_entries: 2 };
      next["rate_limits"] = { chat_messages: { rate_per_second: 5, burst: 50 } };
      write(next);
      const reloading = admin().reloadConfig({});
      const [report, results] = await Promise.all([reloading, Promise.all(inFlight)]);
      expect(results).toHaveLength(40);

      expect(report.groupsAdded).toEqual(["extra"]);
      expect(report.groupsRemoved).toEqual([]);
      expect(Number(report.numbersAdded)).toBe(1);
      expect(Number(report.apiKeysAdded)).toBe(1);
      expect(Number(report.apiKeysRemoved)).toBe(0);
      expect(report.changedSections).toEqual(expect.arrayContaining(["auth", "rate_limits", "resources", "storage"]));
      expect(report.changedSettings).toEqual(expect.arrayContaining(["auth.api_keys", "storage.max_entries", "rate_limits.chat_messages.burst", "resources.extra"]));
      expect(report.restartRequired).toEqual([]);
      expect(report.loadedAt).toBeDefined();

      // The stream and the watch still deliver, on their connections of before.
      await customer.sendMessage({ chatId: chat.chatId, secureKey: chat.secureKey, text: "still here?" });
      const message = await events();
      expect(message).toMatchObject({ type: ChatEventType.MESSAGE, text: "still here?" });
      const second = await customer.requestChat({ service: "support", nickname: "Bo" });
      await waitFor("the queue watch to show the second chat", async () => (await queue()).waiting.some((w) => w.chatId === second.chatId));

      // What changed is in effect: the new group hands out its number, the new key calls, the new limit holds.
      const access = createClient(AccessService, grpc());
      expect((await access.requestInteraction({ resourceGroup: "extra", phoneNumber: "6505550100" })).access?.accessNumber).toBe("+18005550200");
      expect((await createClient(StorageService, grpc(NEW_KEY)).createData({ ttlSeconds: 60n, entries: { a: text("1") } })).dataId).not.toBe("");
      const tooMany = await errorOf(storage.createData({ ttlSeconds: 60n, entries: { a: text("1"), b: text("2"), c: text("3") } }));
      expect(tooMany.code).toBe(Code.ResourceExhausted);
      expect(tooMany.rawMessage).toContain("storage.max_entries is 2");

      // The log names what changed, never a key.
      const line = logs.records().find((r) => r["msg"] === "configuration reloaded");
      expect(line).toMatchObject({ event: "config", groupsAdded: ["extra"], apiKeysAdded: 1 });
      expect(logs.text()).not.toContain(NEW_KEY);
    } finally {
      abort.abort();
    }
  });

  it("is what the admin views show from the next call: services, chat endpoints, groups and the configuration, added and removed", async () => {
    const ops = admin();
    const names = async () => ({
      services: (await ops.listServices({})).services.filter((x) => x.configured).map((x) => [x.name, x.builtin, x.endpoint ?? x.resourceGroup]),
      endpoints: (await ops.listChatEndpoints({})).endpoints.map((e) => [e.endpoint, Number(e.waiting)]),
      groups: (await ops.listResourceGroups({})).groups.map((g) => [g.name, Number(g.free)]),
      configuration: (await ops.getConfiguration({})).configuration as { services: Record<string, unknown>; resources: Record<string, unknown> },
    });

    const before = await names();
    expect(before.services).toEqual([["support", "request-chat", "support"]]);
    expect(before.endpoints).toEqual([["default", 0], ["support", 0]]);
    expect(before.groups).toEqual([["pool", 2]]);
    expect(Object.keys(before.configuration.services)).toEqual(["support"]);

    const next = baseConfig();
    next["resources"] = { ...(next["resources"] as object), extra: { numbers: ["+18005550200"], locking: false } };
    next["services"] = {
      ...(next["services"] as object),
      billing: { service: "request-chat", endpoint: "billing", ttl: 600 },
      dial: { service: "request-interaction", resource_group: "extra" },
    };
    write(next);
    const report = await ops.reloadConfig({});
    expect(report.servicesAdded).toEqual(["billing", "dial"]);

    const after = await names();
    expect(after.services).toEqual([
      ["billing", "request-chat", "billing"],
      ["dial", "request-interaction", "extra"],
      ["support", "request-chat", "support"],
    ]);
    expect(after.endpoints).toEqual([["billing", 0], ["default", 0], ["support", 0]]);
    expect(after.groups).toEqual([["extra", 1], ["pool", 2]]);
    expect(Object.keys(after.configuration.services).sort()).toEqual(["billing", "dial", "support"]);
    expect(Object.keys(after.configuration.resources).sort()).toEqual(["extra", "pool"]);
    // The metrics label the new endpoint and group at the next scrape too.
    expect(await metric(server.url, 'opengms_chat_queue_waiting_chats{endpoint="billing"}')).toBe(0);
    expect(await metric(server.url, 'opengms_access_numbers{group="extra",state="free"}')).toBe(1);

    // A chat waits on the new endpoint; then the service goes: its endpoint stays listed while a chat waits there.
    await createClient(ChatService, grpc()).requestChat({ service: "billing", nickname: "Di" });
    expect((await names()).endpoints).toEqual([["billing", 1], ["default", 0], ["support", 0]]);
    write(baseConfig());
    expect((await ops.reloadConfig({})).servicesRemoved).toEqual(["billing", "dial"]);
    const removed = await names();
    expect(removed.services).toEqual([["support", "request-chat", "support"]]);
    expect(removed.endpoints).toEqual([["billing", 1], ["default", 0], ["support", 0]]);
    expect(Object.keys(removed.configuration.services)).toEqual(["support"]);
    expect(Object.keys(removed.configuration.resources)).toEqual(["pool"]);
  });

  it("refuses an invalid file with its reasons, and keeps the running configuration entirely", async () => {
    const before = await metric(server.url, 'opengms_config_reloads_total{outcome="refused"}');
    const next = baseConfig();
    (next["auth"] as { api_keys: unknown[] }).api_keys = [{ name: "ops", key: ADMIN_KEY, roles: ["admin"] }];
    next["resources"] = { pool: { numbers: ["+18005550100"], locking: true }, extra: { numbers: ["+18005550200"] } };
    next["storage"] = { max_entries: -1 };
    next["unknown_section"] = { a: 1 };
    write(next);
    const err = await errorOf(admin().reloadConfig({}));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toContain("storage.max_entries");
    expect(err.rawMessage).toContain('unknown key(s) "unknown_section"');
    expect(err.rawMessage).toContain("the running configuration stays");
    expect(await metric(server.url, 'opengms_config_reloads_total{outcome="refused"}')).toBe(before + 1);

    // Nothing of the file was taken: the removed key still calls, the new group is unknown, the
    // number stays in its group.
    expect((await createClient(StorageService, grpc(OLD_KEY)).createData({ ttlSeconds: 60n, entries: { a: text("1") } })).dataId).not.toBe("");
    const access = createClient(AccessService, grpc());
    expect((await errorOf(access.requestInteraction({ resourceGroup: "extra", phoneNumber: "6505550100" }))).code).toBe(Code.InvalidArgument);
    const groups = (await admin().listResourceGroups({})).groups;
    expect(groups.find((g) => g.name === "pool")).toMatchObject({ free: 2n, retired: 0n });
    const refused = logs.records().find((r) => r["msg"] === "configuration reload refused; the running configuration stays");
    expect(refused).toMatchObject({ level: 50, event: "config" });
    expect((refused?.["reasons"] as string[]).some((l) => l.includes("storage.max_entries"))).toBe(true);

    // A file that is not YAML is refused too; its text (here an API key) is not repeated anywhere.
    writeFileSync(file, `auth:\n  api_keys:\n    - { name: crm, key: ${NEW_KEY}, roles: [backend]\n  bad: [\n`);
    const broken = await errorOf(admin().reloadConfig({}));
    expect(broken.code).toBe(Code.FailedPrecondition);
    expect(broken.rawMessage).toContain("not valid YAML");
    expect(broken.rawMessage).not.toContain(NEW_KEY);
    expect(logs.text()).not.toContain(NEW_KEY);
  });

  it("retires a number removed from its group: its live reservation still matches until it lapses, and it is never handed out again", async () => {
    const access = createClient(AccessService, grpc());
    const ivr = createClient(AccessService, grpc(IVR_KEY));
    const a = await access.requestInteraction({ resourceGroup: "pool", phoneNumber: "6505550001" });
    const b = await access.requestInteraction({ resourceGroup: "pool", phoneNumber: "6505550002" });
    const retiredNumber = a.access?.accessNumber ?? "";
    const kept = b.access?.accessNumber ?? "";
    const next = baseConfig();
    next["resources"] = { pool: { numbers: [kept], locking: true, booking_expiration_timeout: 60 } };
    write(next);
    const report = await admin().reloadConfig({});
    expect(report.groupsChanged).toEqual(["pool"]);
    expect(Number(report.numbersRetired)).toBe(1);
    expect((await admin().listResourceGroups({})).groups.find((g) => g.name === "pool")).toMatchObject({ retired: 1n, reserved: 1n });

    // The live reservation on the retired number still matches (and is released by it).
    const [match] = (await ivr.matchInteraction({ accessNumber: retiredNumber, phoneNumber: "6505550001" })).matches;
    expect(match?.sessionId).toBe(a.session?.id);
    // Never handed out again: the group has one number left, reserved: the pool is exhausted.
    expect((await errorOf(access.requestInteraction({ resourceGroup: "pool", phoneNumber: "6505550003" }))).code).toBe(Code.ResourceExhausted);
    await ivr.matchInteraction({ accessNumber: kept, phoneNumber: "6505550002" });
    for (let i = 0; i < 4; i++) {
      const r = await access.requestInteraction({ resourceGroup: "pool", phoneNumber: `650555001${i}` });
      expect(r.access?.accessNumber).toBe(kept);
      await ivr.matchInteraction({ accessNumber: kept, phoneNumber: `650555001${i}` });
    }

    // A reservation on a number retired while it was live lapses like any other.
    const c = await access.requestInteraction({ resourceGroup: "pool", phoneNumber: "6505550020" });
    write(baseConfig());
    await admin().reloadConfig({});
    write({ ...baseConfig(), resources: { pool: { numbers: [retiredNumber], locking: true, booking_expiration_timeout: 60 } } });
    expect(Number((await admin().reloadConfig({})).numbersRetired)).toBe(1);
    clock.advance(61_000);
    const lapsed = await errorOf(ivr.matchInteraction({ accessNumber: c.access?.accessNumber ?? "", phoneNumber: "6505550020" }));
    expect(lapsed.code).toBe(Code.NotFound);
    expect(lapsed.findDetails(NoMatchSchema)[0]?.reason).toBe(NoMatchReason.NO_RESERVATION);
  });

  it("lets a new API key call and refuses a removed one at once; a key's new roles hold", async () => {
    const oldStorage = createClient(StorageService, grpc(OLD_KEY));
    expect((await errorOf(createClient(StorageService, grpc(NEW_KEY)).getData({ dataId: "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b" }))).code).toBe(Code.Unauthenticated);
    expect((await errorOf(createClient(AccessService, grpc(AGENT_KEY)).requestAccess({ sessionId: "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b", resourceGroup: "pool" }))).code).toBe(Code.PermissionDenied);
    const next = baseConfig();
    (next["auth"] as { api_keys: unknown[] }).api_keys = [
      { name: "ops", key: ADMIN_KEY, roles: ["admin"] },
      { name: "crm2", key: NEW_KEY, roles: ["backend"] },
      { name: "desk", key: AGENT_KEY, roles: ["agent", "backend"] },
      { name: "pbx", key: IVR_KEY, roles: ["ivr"] },
    ];
    write(next);
    const report = await admin().reloadConfig({});
    expect([report.apiKeysAdded, report.apiKeysRemoved, report.apiKeysChanged].map(Number)).toEqual([1, 1, 1]);
    expect((await errorOf(oldStorage.getData({ dataId: "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b" }))).code).toBe(Code.Unauthenticated);
    expect((await errorOf(createClient(StorageService, grpc(NEW_KEY)).getData({ dataId: "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b" }))).code).toBe(Code.NotFound);
    // The agent key now holds backend too: RequestAccess gets past auth (to an unknown session).
    expect((await errorOf(createClient(AccessService, grpc(AGENT_KEY)).requestAccess({ sessionId: "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b", resourceGroup: "pool" }))).code).toBe(Code.NotFound);
    // /metrics follows the keys too.
    expect((await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status).toBe(200);
  });

  it("applies what it can and names the settings that need a restart; the listener keeps serving as it started", async () => {
    const before = await metric(server.url, 'opengms_config_reloads_total{outcome="applied"}');
    const metricsPort = await freePort();
    write({
      ...baseConfig(),
      server: { host: "127.0.0.1", port: 18099, max_streams_per_peer: 10, metrics: { listen: { port: metricsPort } } },
      database: { url: "sqlite:elsewhere.db" },
      chat: { max_message_length: 10 },
    });
    const report = await admin().reloadConfig({});
    expect(report.restartRequired).toEqual(["database", "server.max_streams_per_peer", "server.metrics.listen", "server.port"]);
    // No metrics listener was started by the reload.
    expect(await connectOutcome(metricsPort)).toBe("ECONNREFUSED");
    expect(report.changedSections).toEqual(expect.arrayContaining(["chat", "database", "server"]));
    // The message limit took effect; the port did not move.
    const customer = createClient(ChatService, grpc());
    const chat = await customer.requestChat({ service: "support", nickname: "Cy" });
    expect((await errorOf(customer.sendMessage({ chatId: chat.chatId, secureKey: chat.secureKey, text: "more than ten bytes" }))).code).toBe(Code.InvalidArgument);
    expect(await metric(server.url, 'opengms_config_reloads_total{outcome="applied"}')).toBe(before + 1);
    expect(await metric(server.url, "opengms_config_loaded_timestamp_seconds")).toBeGreaterThan(0);
    const warned = logs.records().find((r) => r["msg"] === "configuration reloaded; these settings take effect only at the next restart");
    expect(warned).toMatchObject({ restartRequired: ["database", "server.max_streams_per_peer", "server.metrics.listen", "server.port"] });
    expect(logs.text()).not.toContain("elsewhere.db");
  });

  it("is for admins only, and is refused on a server started without a file", async () => {
    expect((await errorOf(createClient(AdminService, grpc(OLD_KEY)).reloadConfig({}))).code).toBe(Code.PermissionDenied);
    const other = await createTestDatabase(dialect);
    const bare = await startServer({ config: loadConfig({ path: file, env: {} }), db: other, log: logs.log, clock, sweep: false });
    try {
      const err = await errorOf(createClient(AdminService, createGrpcTransport({ baseUrl: bare.url, interceptors: [bearer(ADMIN_KEY)] })).reloadConfig({}));
      expect(err.code).toBe(Code.FailedPrecondition);
    } finally {
      await bare.shutdown();
    }
  });
});

/** metric reads one series of /metrics (with the admin key). */
async function metric(url: string, series: string): Promise<number> {
  const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  const line = (await res.text()).split("\n").find((l) => l.startsWith(`${series} `));
  expect(line, series).toBeDefined();
  return Number(line?.split(" ")[1]);
}

describe("SIGHUP to the real process", () => {
  let dir: string;
  let mysql: TestDatabase | undefined;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "opengms-sighup-"));
    if (DIALECTS.includes("mysql")) mysql = await createTestDatabase("mysql");
  });
  afterAll(async () => {
    if (child !== undefined && child.exitCode === null) {
      const exited = new Promise((r) => child?.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
    await mysql?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("reloads the file it was started with: a valid one is taken, an invalid one refused with its reasons in the log", async () => {
    const port = await freePort();
    const file = join(dir, "gms.yaml");
    const config: Record<string, unknown> = { ...baseConfig(), server: { host: "127.0.0.1", port }, database: { url: mysql?.url ?? `sqlite:${join(dir, "gms.db")}` } };
    writeFileSync(file, toYaml(config));
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env["GMS_CONFIG"];
    delete env["GMS_PORT"];
    delete env["GMS_DATABASE_URL"];
    const proc = spawn(process.execPath, ["--import", "tsx", "src/main.ts", "--config", file], { cwd: process.cwd(), env, stdio: ["ignore", "pipe", "pipe"] });
    child = proc;
    let out = "";
    let err = "";
    proc.stdout?.on("data", (b: Buffer) => (out += b.toString()));
    proc.stderr?.on("data", (b: Buffer) => (err += b.toString()));
    const url = `http://127.0.0.1:${port}`;
    const health = createClient(Health, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
    await waitFor(
      "the server process to serve",
      async () => {
        if (proc.exitCode !== null) throw new Error(`the server exited at start:\n${err}\n${out}`);
        return (await health.check({}).catch(() => undefined))?.status === Status.SERVING;
      },
      30_000,
    );
    const newKeyCall = () => createClient(StorageService, createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors: [bearer(NEW_KEY)] })).createData({ ttlSeconds: 60n, entries: {} });
    expect(ConnectError.from(await newKeyCall().catch((e: unknown) => e)).code).toBe(Code.Unauthenticated);

    const auth = config["auth"] as { api_keys: unknown[] };
    const next = { ...config, auth: { ...auth, api_keys: [...auth.api_keys, { name: "crm2", key: NEW_KEY, roles: ["backend"] }] } };
    writeFileSync(file, toYaml(next));
    proc.kill("SIGHUP");
    await waitFor("the reload's log line", () => out.includes('"msg":"configuration reloaded"'));
    expect((await newKeyCall()).dataId).not.toBe("");

    writeFileSync(file, toYaml({ ...next, rate_limits: { peer: { rate_per_second: 0 } } }));
    proc.kill("SIGHUP");
    await waitFor("the refusal's log line", () => out.includes("configuration reload refused"));
    const refusal = out
      .split("\n")
      .filter((l) => l.includes("configuration reload refused"))
      .map((l) => JSON.parse(l) as { level: number; reasons: string[] })[0];
    expect(refusal?.level).toBe(50);
    expect(refusal?.reasons.some((r) => r.includes("rate_limits.peer.rate_per_second"))).toBe(true);
    // Still serving, with the configuration of before the refused file; no key in the log.
    expect((await newKeyCall()).dataId).not.toBe("");
    expect(proc.exitCode).toBeNull();
    expect(out).not.toContain(NEW_KEY);
    expect(out).not.toContain(ADMIN_KEY);

    // The operator's command does the same through ReloadConfig: the refused file is exit 5 with
    // the reasons on one line; a valid one is exit 0 with what changed.
    const refused = await opengms(["reload", "--url", url, "--key", ADMIN_KEY]);
    expect(refused.status, refused.stderr).toBe(5);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toMatch(/^opengms: .* is not valid: rate_limits\.peer\.rate_per_second[^\n]*\n$/);
    writeFileSync(file, toYaml({ ...next, rate_limits: { peer: { rate_per_second: 500, burst: 1000 } } }));
    const text = await opengms(["reload", "--url", url, "--key", ADMIN_KEY]);
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^reloaded: 2 settings changed\nchanged: rate_limits\.peer\.burst, rate_limits\.peer\.rate_per_second\n$/);
    const json = await opengms(["reload", "--json", "--url", url, "--key", ADMIN_KEY]);
    expect(json.status, json.stderr).toBe(0);
    expect(typeof (JSON.parse(json.stdout) as { loadedAt?: unknown }).loadedAt).toBe("string");
    expect(JSON.parse(json.stdout)).toMatchObject({ changedSettings: [], restartRequired: [] });
  }, 90_000);
});

/** opengms runs the operator's command (this checkout's bin) to its end. */
function opengms(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ["GMS_URL", "GMS_API_KEY", "GMS_CONFIG"]) delete env[k];
  return new Promise((done) => {
    execFile(process.execPath, ["--import", "tsx", "src/main.ts", ...args], { cwd: process.cwd(), env, timeout: 60_000 }, (error, stdout, stderr) => {
      done({ status: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr });
    });
  });
}
