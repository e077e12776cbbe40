// /metrics (src/metrics.ts, src/http/metrics.ts) scraped over a real socket while real traffic
// drives a real server on each dialect: RPC counts by method, protocol and code on every path (gRPC
// on the lean path, Connect, the GMS HTTP routes' in-process calls), open streams, allocations and
// an exhausted pool, the pool's occupancy through a cool-down, matches with and without a match, a
// code lockout, a chat queue and a message, the sweeper, the database pool, health and the bus.
// Each assertion compares a scrape before and after the traffic that must move it.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import type { ChatEvent } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { ManualClock } from "../src/clock.js";
import { databaseOptions, parseConfig } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { openDatabase } from "../src/store/database.js";
import { DIALECTS, MYSQL_URL, createTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";

const ADMIN = "admin-key-0123456789";
const IVR = "ivr-key-0123456789ab";
const AGENT = "agent-key-0123456789";
const TINY = "+18005550700";
const SHARED = "+18005550800";
const CALLER = "+16505550123";
const MESSAGE = "my card number is 4111";

const config = {
  auth: {
    api_keys: [
      { name: "ops", key: ADMIN, roles: ["admin"] },
      { name: "ivr", key: IVR, roles: ["ivr"] },
      { name: "agent", key: AGENT, roles: ["agent"] },
    ],
    public_roles: ["app"],
  },
  access: { code_attempts: { max_failures: 3, window_seconds: 60 } },
  resources: {
    tiny: { numbers: [TINY], locking: true, cooldown_seconds: 30 },
    shared: { numbers: [SHARED], locking: false, access_code_length: 6 },
  },
  services: {
    "ivr-match": { service: "match-interaction" },
    support: { service: "request-chat", endpoint: "support", ttl: 600 },
  },
};

/** Sample is one series of a scrape: its name, labels and value. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** parse reads Prometheus's text format (the lines a registry writes: no escapes in our label values). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) labels[l[1] as string] = l[2] as string;
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

/** Scrape is one scrape, read by series. */
class Scrape {
  constructor(
    readonly text: string,
    private readonly samples: Sample[],
  ) {}

  /** value is a series' value, undefined when the scrape has none. */
  value(name: string, labels: Record<string, string> = {}): number | undefined {
    const s = this.samples.find((x) => x.name === name && Object.keys(labels).length === Object.keys(x.labels).filter((k) => k !== "le" || "le" in labels).length && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    return s?.value;
  }

  /** of is a series' value, 0 when absent (a counter not yet incremented). */
  of(name: string, labels: Record<string, string> = {}): number {
    return this.value(name, labels) ?? 0;
  }

  has(name: string): boolean {
    return this.samples.some((s) => s.name === name);
  }
}

async function scrape(url: string, key: string | undefined = ADMIN): Promise<Scrape> {
  const res = await fetch(`${url}/metrics`, { headers: key === undefined ? {} : { authorization: `Bearer ${key}` } });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return new Scrape(text, parse(text));
}

/** eventually scrapes until `ok` holds (a stream's end reaches the server after the client has gone), bounded by tries, not by time. */
async function eventually(url: string, ok: (s: Scrape) => boolean): Promise<Scrape> {
  let s = await scrape(url);
  for (let i = 0; i < 200 && !ok(s); i++) {
    await new Promise((r) => setTimeout(r, 25));
    s = await scrape(url);
  }
  return s;
}

const codeOf = (e: unknown) => ConnectError.from(e).code;

describe.each(DIALECTS)("/metrics on %s", (dialect) => {
  let t: TestServer;
  let clock: ManualClock;
  const calls = (method: string, protocol: string, code: string) => ({ method, protocol, code });

  beforeAll(async () => {
    clock = new ManualClock(Date.now());
    t = await startTestServer(dialect, { config, clock });
  });
  afterAll(() => t?.close());

  it("needs a key with the admin role, answers GET and HEAD only, and shows no key, number, code or message", async () => {
    const url = t.server.url;
    for (const authorization of [undefined, "Bearer not-a-key-at-all-xyz", `Bearer ${IVR}`]) {
      const res = await fetch(`${url}/metrics`, { headers: authorization === undefined ? {} : { authorization } });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe('Bearer realm="opengms"');
      expect(await res.text()).not.toContain("opengms_");
    }
    const post = await fetch(`${url}/metrics`, { method: "POST", headers: { authorization: `Bearer ${ADMIN}` } });
    expect(post.status).toBe(405);
    const head = await fetch(`${url}/metrics`, { method: "HEAD", headers: { authorization: `Bearer ${ADMIN}` } });
    expect(head.status).toBe(200);

    // Traffic carrying secrets and personal data, then a scrape that must show none of it.
    const chat = createClient(ChatService, t.grpc);
    const started = await chat.requestChat({ service: "support", nickname: "Ann", subject: "billing" });
    await chat.sendMessage({ chatId: started.chatId, secureKey: started.secureKey, text: MESSAGE });
    const access = createClient(AccessService, t.grpc);
    const granted = await access.requestInteraction({ phoneNumber: CALLER, resourceGroup: "shared", provideCode: true });
    const s = await scrape(url);
    for (const secret of [ADMIN, IVR, AGENT, CALLER, SHARED, granted.access?.accessCode ?? "-", MESSAGE, started.secureKey, started.chatId]) expect(s.text).not.toContain(secret);
    // Process metrics and the event loop's lag (prom-client's default metrics).
    expect(s.has("process_cpu_user_seconds_total")).toBe(true);
    expect(s.has("nodejs_eventloop_lag_seconds")).toBe(true);
    expect(s.value("opengms_health_serving")).toBe(1);
    expect(s.value("opengms_bus_connected")).toBe(1);
  });

  it("counts RPCs by method, protocol and code on every path: gRPC (lean), Connect, and the GMS HTTP routes", async () => {
    const url = t.server.url;
    const match = "gms.v1.AccessService/MatchInteraction";
    const getData = "gms.v1.StorageService/GetData";
    const before = await scrape(url);
    const ivrGrpc = createClient(AccessService, t.transport("grpc", IVR));
    const ivrConnect = createClient(AccessService, t.transport("connect", IVR));
    await expect(ivrGrpc.matchInteraction({ accessNumber: "+18005559999" })).rejects.toSatisfy((e) => codeOf(e) === Code.NotFound);
    await expect(ivrConnect.matchInteraction({ accessNumber: "+18005559999" })).rejects.toSatisfy((e) => codeOf(e) === Code.NotFound);
    await expect(createClient(StorageService, t.connect).getData({ dataId: "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b" })).rejects.toSatisfy((e) => codeOf(e) === Code.NotFound);
    // GMS's Storage API: the route calls GetData in process, through the same policy.
    const gms = await fetch(`${url}/genesys/1/storage/0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b`);
    expect(gms.status).toBe(404);
    const after = await scrape(url);
    const moved = (labels: Record<string, string>) => after.of("opengms_rpc_calls_total", labels) - before.of("opengms_rpc_calls_total", labels);
    expect(moved(calls(match, "grpc", "not_found"))).toBe(1);
    expect(moved(calls(match, "connect", "not_found"))).toBe(1);
    // One from the Connect client, one from the GMS route's in-process call.
    expect(moved(calls(getData, "connect", "not_found"))).toBe(2);
    const latency = (s: Scrape) => s.of("opengms_rpc_duration_seconds_count", calls(match, "grpc", "not_found"));
    expect(latency(after) - latency(before)).toBe(1);
    expect(after.of("opengms_rpc_duration_seconds_bucket", { ...calls(match, "grpc", "not_found"), le: "+Inf" })).toBe(latency(after));
    // The database pool served those calls.
    expect(after.of("opengms_db_pool_acquire_seconds_count")).toBeGreaterThan(before.of("opengms_db_pool_acquire_seconds_count"));
    expect(after.value("opengms_db_pool_connections", { state: "used" })).toBeDefined();
    expect(after.value("opengms_db_pool_waiting")).toBe(0);
    expect(after.value("opengms_db_query_errors_total", { kind: "unavailable" })).toBe(0);
  });

  it("shows a stream open while it is, and counts it with its code once it ends", async () => {
    const url = t.server.url;
    const subscribe = "gms.v1.ChatService/Subscribe";
    const chat = createClient(ChatService, t.grpc);
    const started = await chat.requestChat({ service: "support", nickname: "Ann", subject: "stream" });
    const before = await scrape(url);
    const leave = new AbortController();
    const stream = chat.subscribe({ chatId: started.chatId, secureKey: started.secureKey, fromPosition: 1n }, { signal: leave.signal });
    const first = await stream[Symbol.asyncIterator]().next();
    expect(first.done).toBe(false);
    const open = await scrape(url);
    expect(open.of("opengms_rpc_streams_open", { method: subscribe })).toBe(before.of("opengms_rpc_streams_open", { method: subscribe }) + 1);
    leave.abort();
    const ended = await eventually(url, (s) => s.of("opengms_rpc_streams_open", { method: subscribe }) === before.of("opengms_rpc_streams_open", { method: subscribe }));
    expect(ended.of("opengms_rpc_streams_open", { method: subscribe })).toBe(before.of("opengms_rpc_streams_open", { method: subscribe }));
    expect(ended.of("opengms_rpc_calls_total", calls(subscribe, "grpc", "canceled")) - before.of("opengms_rpc_calls_total", calls(subscribe, "grpc", "canceled"))).toBe(1);
  });

  it("sees a stream served by connect (Connect over HTTP/1.1) open and end the same way", async () => {
    const url = t.server.url;
    const subscribe = "gms.v1.ChatService/Subscribe";
    const chat = createClient(ChatService, t.connect);
    const started = await chat.requestChat({ service: "support", nickname: "Ann", subject: "stream" });
    const open = (s: Scrape) => s.of("opengms_rpc_streams_open", { method: subscribe });
    const canceled = (s: Scrape) => s.of("opengms_rpc_calls_total", calls(subscribe, "connect", "canceled"));
    const before = await scrape(url);
    const leave = new AbortController();
    const stream = chat.subscribe({ chatId: started.chatId, secureKey: started.secureKey, fromPosition: 1n }, { signal: leave.signal });
    expect((await stream[Symbol.asyncIterator]().next()).done).toBe(false);
    expect(open(await scrape(url))).toBe(open(before) + 1);
    leave.abort();
    const ended = await eventually(url, (s) => open(s) === open(before));
    expect(open(ended)).toBe(open(before));
    expect(canceled(ended) - canceled(before)).toBe(1);
  });

  it("counts a failed statement by kind", async () => {
    const before = await scrape(t.server.url);
    await expect(t.server.app.db.knex.raw("SELECT no_such_column FROM sessions")).rejects.toThrow();
    const after = await scrape(t.server.url);
    expect(after.of("opengms_db_query_errors_total", { kind: "other" }) - before.of("opengms_db_query_errors_total", { kind: "other" })).toBe(1);
    expect(after.of("opengms_db_query_errors_total", { kind: "unavailable" })).toBe(before.of("opengms_db_query_errors_total", { kind: "unavailable" }));
  });

  it("shows a pool's occupancy through an allocation, an exhausted pool, a match and the cool-down", async () => {
    const url = t.server.url;
    const app = createClient(AccessService, t.grpc);
    const ivr = createClient(AccessService, t.transport("grpc", IVR));
    const numbers = (s: Scrape, state: string) => s.value("opengms_access_numbers", { group: "tiny", state });
    const before = await scrape(url);
    expect([numbers(before, "free"), numbers(before, "reserved"), numbers(before, "cooling_down"), numbers(before, "retired")]).toEqual([1, 0, 0, 0]);
    expect(before.value("opengms_access_pool_size", { group: "tiny" })).toBe(1);

    await app.requestInteraction({ phoneNumber: CALLER, resourceGroup: "tiny" });
    await expect(app.requestInteraction({ phoneNumber: CALLER, resourceGroup: "tiny" })).rejects.toSatisfy((e) => codeOf(e) === Code.ResourceExhausted);
    const held = await scrape(url);
    expect([numbers(held, "free"), numbers(held, "reserved"), numbers(held, "cooling_down")]).toEqual([0, 1, 0]);
    expect(held.value("opengms_access_reservations", { group: "tiny" })).toBe(1);
    expect(held.of("opengms_access_allocations_total", { group: "tiny" }) - before.of("opengms_access_allocations_total", { group: "tiny" })).toBe(1);
    expect(held.of("opengms_access_allocations_refused_total", { group: "tiny" }) - before.of("opengms_access_allocations_refused_total", { group: "tiny" })).toBe(1);

    // A match releases the number: it cools down for 30 s, then is free.
    await ivr.matchInteraction({ accessNumber: TINY });
    await expect(ivr.matchInteraction({ accessNumber: TINY })).rejects.toSatisfy((e) => codeOf(e) === Code.NotFound);
    const cooling = await scrape(url);
    expect([numbers(cooling, "free"), numbers(cooling, "reserved"), numbers(cooling, "cooling_down")]).toEqual([0, 0, 1]);
    const matches = (s: Scrape, outcome: string, reason: string) => s.of("opengms_access_matches_total", { outcome, reason });
    expect(matches(cooling, "matched", "") - matches(before, "matched", "")).toBe(1);
    expect(matches(cooling, "no_match", "no_reservation") - matches(before, "no_match", "no_reservation")).toBe(1);
    clock.advance(31_000);
    const free = await scrape(url);
    expect([numbers(free, "free"), numbers(free, "reserved"), numbers(free, "cooling_down")]).toEqual([1, 0, 0]);
  });

  it("counts wrong codes, the lockout they cause, and the calls refused while the number is locked", async () => {
    const url = t.server.url;
    const app = createClient(AccessService, t.grpc);
    const ivr = createClient(AccessService, t.transport("grpc", IVR));
    const granted = await app.requestInteraction({ phoneNumber: CALLER, resourceGroup: "shared", provideCode: true });
    const code = granted.access?.accessCode ?? "";
    const wrong = code === "000000" ? "111111" : "000000";
    const before = await scrape(url);
    for (let i = 0; i < 3; i++) await expect(ivr.matchInteraction({ accessNumber: SHARED, accessCode: wrong })).rejects.toSatisfy((e) => codeOf(e) === Code.NotFound);
    await expect(ivr.matchInteraction({ accessNumber: SHARED, accessCode: code })).rejects.toSatisfy((e) => codeOf(e) === Code.ResourceExhausted);
    const after = await scrape(url);
    const moved = (outcome: string, reason: string) => after.of("opengms_access_matches_total", { outcome, reason }) - before.of("opengms_access_matches_total", { outcome, reason });
    expect(moved("no_match", "code_mismatch")).toBe(3);
    expect(moved("locked", "")).toBe(1);
    expect(after.of("opengms_access_code_lockouts_total") - before.of("opengms_access_code_lockouts_total")).toBe(1);
    // A shared number holds several reservations: it is reserved, and the reservations say how many.
    expect(after.value("opengms_access_numbers", { group: "shared", state: "reserved" })).toBe(1);
    expect(after.value("opengms_access_reservations", { group: "shared" })).toBeGreaterThanOrEqual(1);
  });

  it("shows a chat queue's depth and oldest wait by endpoint, and counts messages", async () => {
    const url = t.server.url;
    const chat = createClient(ChatService, t.grpc);
    const agent = createClient(AgentService, t.transport("grpc", AGENT));
    // Empty the queue the earlier tests left chats in.
    const drained = async (): Promise<boolean> => agent.acceptChat({ endpoint: "support", nickname: "Bob", waitSeconds: 0 }).then(() => false, (e: unknown) => codeOf(e) === Code.NotFound);
    while (!(await drained()));
    const empty = await scrape(url);
    expect(empty.value("opengms_chat_queue_waiting_chats", { endpoint: "support" })).toBe(0);
    expect(empty.value("opengms_chat_queue_oldest_wait_seconds", { endpoint: "support" })).toBe(0);

    const started = await chat.requestChat({ service: "support", nickname: "Ann", subject: "queue" });
    clock.advance(5_000);
    await chat.requestChat({ service: "support", nickname: "Cy", subject: "queue" });
    await chat.sendMessage({ chatId: started.chatId, secureKey: started.secureKey, text: "hello" });
    await chat.sendMessage({ chatId: started.chatId, secureKey: started.secureKey, text: "again", clientMessageId: "m1" });
    // A retry of a message already added is not a new message.
    await chat.sendMessage({ chatId: started.chatId, secureKey: started.secureKey, text: "again", clientMessageId: "m1" });
    const waiting = await scrape(url);
    expect(waiting.value("opengms_chat_queue_waiting_chats", { endpoint: "support" })).toBe(2);
    expect(waiting.value("opengms_chat_queue_oldest_wait_seconds", { endpoint: "support" })).toBe(5);
    expect(waiting.of("opengms_chat_messages_total") - empty.of("opengms_chat_messages_total")).toBe(2);
    // The default endpoint is configured too: shown empty.
    expect(waiting.value("opengms_chat_queue_waiting_chats", { endpoint: "default" })).toBe(0);

    await agent.acceptChat({ endpoint: "support", nickname: "Bob", waitSeconds: 0 });
    const one = await scrape(url);
    expect(one.value("opengms_chat_queue_waiting_chats", { endpoint: "support" })).toBe(1);
    expect(one.value("opengms_chat_queue_oldest_wait_seconds", { endpoint: "support" })).toBe(0);
  });
});

describe.each(DIALECTS)("/metrics of the sweeper, and metrics switched off, on %s", (dialect) => {
  let server: RunningServer | undefined;
  afterAll(() => server?.shutdown());

  it("counts sweeper runs and the rows they delete", async () => {
    const clock = new ManualClock(Date.now());
    const db = await createTestDatabase(dialect);
    const cfg = parseConfig({ server: { host: "127.0.0.1", port: 0, metrics: { public: true } }, storage: { sweep_interval_seconds: 0.05 } }, "test");
    server = await startServer({ config: cfg, db, log: pino({ level: "silent" }), clock });
    const url = server.url;
    const storage = createClient(StorageService, createGrpcTransport({ baseUrl: url }));
    await storage.createData({ entries: { k: { kind: { case: "text", value: "v" } } }, ttlSeconds: 1n });
    // public: a scrape needs no key.
    const before = await scrape(url, undefined);
    clock.advance(2_000);
    const after = await eventually(url, (s) => s.of("opengms_sweeper_deleted_rows_total", { kind: "data" }) > before.of("opengms_sweeper_deleted_rows_total", { kind: "data" }));
    expect(after.of("opengms_sweeper_deleted_rows_total", { kind: "data" }) - before.of("opengms_sweeper_deleted_rows_total", { kind: "data" })).toBe(1);
    expect(after.of("opengms_sweeper_runs_total", { result: "ok" })).toBeGreaterThan(0);
    expect(after.value("opengms_sweeper_runs_total", { result: "failed" })).toBe(0);
  });

  it("with server.metrics.enabled false, /metrics is not served", async () => {
    const db = await createTestDatabase(dialect);
    const cfg = parseConfig({ server: { host: "127.0.0.1", port: 0, metrics: { enabled: false } } }, "test");
    const off = await startServer({ config: cfg, db, log: pino({ level: "silent" }), clock: new ManualClock(Date.now()), sweep: false });
    try {
      expect(off.app.metrics).toBeUndefined();
      const res = await fetch(`${off.url}/metrics`);
      expect(res.status).toBe(404);
    } finally {
      await off.shutdown();
    }
  });
});

describe.runIf(DIALECTS.includes("mysql"))("/metrics while the MySQL database is down", () => {
  let testDb: TestDatabase;
  let proxy: TcpProxy;
  let server: RunningServer;

  beforeAll(async () => {
    testDb = await createTestDatabase("mysql");
    const target = new URL(MYSQL_URL);
    proxy = new TcpProxy(target.hostname, Number(target.port || 3306));
    await proxy.start();
    const proxied = new URL(testDb.url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    const cfg = parseConfig(
      {
        server: { host: "127.0.0.1", port: 0, metrics: { public: true } },
        database: { url: proxied.toString(), query_timeout_seconds: 1, acquire_timeout_seconds: 1, connect_timeout_seconds: 1 },
        resources: { pool: { numbers: ["+18005550100..+18005550109"] } },
      },
      "test",
    );
    const log = pino({ level: "silent" });
    const db = await openDatabase(cfg.database.url, { ...databaseOptions(cfg), log });
    server = await startServer({ config: cfg, db, log, sweep: false });
  });
  afterAll(async () => {
    await server?.shutdown();
    await proxy?.close();
    await testDb?.close();
  });

  it("says so (health 0, connections not got, occupancy left out), and recovers", async () => {
    const url = server.url;
    const up = await scrape(url, undefined);
    expect(up.value("opengms_health_serving")).toBe(1);
    expect(up.value("opengms_access_numbers", { group: "pool", state: "free" })).toBe(10);
    const failures = (s: Scrape) => s.of("opengms_db_pool_acquire_failures_total") + s.of("opengms_db_query_errors_total", { kind: "unavailable" });

    await proxy.cut();
    const storage = createClient(StorageService, createGrpcTransport({ baseUrl: url }));
    await expect(storage.createData({ entries: {}, ttlSeconds: 60n })).rejects.toSatisfy((e) => codeOf(e) === Code.Unavailable);
    const down = await eventually(url, (s) => s.value("opengms_health_serving") === 0);
    expect(down.value("opengms_health_serving")).toBe(0);
    expect(failures(down)).toBeGreaterThan(failures(up));
    // The occupancy could not be read: left out, not shown as zero.
    expect(down.value("opengms_access_numbers", { group: "pool", state: "free" })).toBeUndefined();
    expect(down.of("opengms_rpc_calls_total", { method: "gms.v1.StorageService/CreateData", protocol: "grpc", code: "unavailable" })).toBe(1);

    await proxy.reopen();
    const again = await eventually(url, (s) => s.value("opengms_health_serving") === 1 && s.value("opengms_access_numbers", { group: "pool", state: "free" }) === 10);
    expect(again.value("opengms_health_serving")).toBe(1);
    expect(again.value("opengms_access_numbers", { group: "pool", state: "free" })).toBe(10);
  });
});

describe.runIf(DIALECTS.includes("mysql"))("/metrics of two nodes without a working bus", () => {
  let testDb: TestDatabase;
  const servers: RunningServer[] = [];
  afterAll(async () => {
    // B's shutdown ends too, its Redis unreachable (its bus drops the link rather than wait to QUIT).
    for (const s of servers) await s.shutdown();
    await testDb?.close();
  });

  it("counts the streams the periodic look catches up, and shows the bus down", async () => {
    testDb = await createTestDatabase("mysql");
    const clock = new ManualClock(Date.now());
    const log = pino({ level: "silent" });
    const raw = (redis: string | undefined) => ({
      server: { host: "127.0.0.1", port: 0, metrics: { public: true } },
      database: { url: testDb.url },
      services: { support: { service: "request-chat", endpoint: "support", ttl: 600 } },
      ...(redis === undefined ? {} : { bus: { redis_url: redis } }),
    });
    // Node A on the in-process bus; node B's Redis is a port nobody listens on: neither hears the other.
    const a = await startServer({ config: parseConfig(raw(undefined), "a"), db: await openDatabase(testDb.url), log, clock, sweep: false });
    servers.push(a);
    const b = await startServer({ config: parseConfig(raw("redis://127.0.0.1:1"), "b"), db: await openDatabase(testDb.url), log, clock, sweep: false });
    servers.push(b);
    expect((await scrape(b.url, undefined)).value("opengms_bus_connected")).toBe(0);
    expect((await scrape(a.url, undefined)).value("opengms_bus_connected")).toBe(1);

    const onA = createClient(ChatService, createGrpcTransport({ baseUrl: a.url }));
    const onB = createClient(ChatService, createGrpcTransport({ baseUrl: b.url }));
    const started = await onA.requestChat({ service: "support", nickname: "Ann" });
    const key = { chatId: started.chatId, secureKey: started.secureKey };
    const leave = new AbortController();
    const stream = onB.subscribe({ ...key, fromPosition: 1n }, { signal: leave.signal })[Symbol.asyncIterator]();
    const event = (r: IteratorResult<ChatEvent>): ChatEvent | undefined => (r.done === true ? undefined : r.value);
    try {
      expect(event(await stream.next())?.position).toBe(1n);
      const before = await scrape(b.url, undefined);
      await onA.sendMessage({ ...key, text: "hello" });
      // B hears of the message only from its periodic look at the store.
      const next = stream.next();
      clock.advance(5_000);
      expect(event(await next)?.text).toBe("hello");
      const after = await scrape(b.url, undefined);
      expect(after.of("opengms_chat_stream_catchups_total") - before.of("opengms_chat_stream_catchups_total")).toBe(1);
      // The message is counted where it was sent.
      expect((await scrape(a.url, undefined)).of("opengms_chat_messages_total")).toBe(1);
    } finally {
      leave.abort();
    }
  });
});
