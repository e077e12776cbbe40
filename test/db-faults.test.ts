// Database faults, for real: a TCP proxy this process controls sits between the server and the
// shared MariaDB and is turned into a black hole (bytes stop, sockets stay open: a frozen database
// or a network dropping packets); a second SQLite connection holds the write lock; a MariaDB
// session kills the server's query or connection. Never is the shared database itself stopped.
import { setMaxListeners } from "node:events";
import Sqlite from "better-sqlite3";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import knexFactory, { type Knex } from "knex";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import type { Value } from "../gen/gms/v1/value_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { databaseOptions, parseConfig, type Config } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { openDatabase, type Database } from "../src/store/database.js";
import { describeError, isDuplicateKey } from "../src/store/errors.js";
import { errorOf, waitFor } from "./helpers/calls.js";
import { DIALECTS, MYSQL_URL, createTestDatabase, recordingLog, type TestDatabase } from "./helpers/databases.js";
import { captureLog, type LogCapture } from "./helpers/log-capture.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";

const text = (t: string): Value => ({ $typeName: "gms.v1.Value", kind: { case: "text", value: t } });


/** timed runs a call and says how it ended and after how many milliseconds. */
async function timed(call: Promise<unknown>): Promise<{ code: Code | "ok"; ms: number }> {
  const started = performance.now();
  const code = await call.then(
    () => "ok" as const,
    (e: unknown) => ConnectError.from(e).code,
  );
  return { code, ms: performance.now() - started };
}

/**
 * serverDeadline sends a deadline of `ms` in the protocol's header without the client enforcing it
 * (connect's clients end a call with `timeoutMs` themselves): what the server answers is measured.
 */
const serverDeadline =
  (header: "connect-timeout-ms" | "grpc-timeout", ms: number): Interceptor =>
  (next) =>
  (req) => {
    req.header.set(header, header === "grpc-timeout" ? `${ms}m` : String(ms));
    return next(req);
  };

/** transports are a client of each protocol, sending a server-side deadline of deadlineMs when given. */
const transports = (baseUrl: string, deadlineMs?: number): Record<string, Transport> => {
  const deadline = (header: "connect-timeout-ms" | "grpc-timeout") => (deadlineMs === undefined ? [] : [serverDeadline(header, deadlineMs)]);
  return {
    "Connect JSON": createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: deadline("connect-timeout-ms") }),
    gRPC: createGrpcTransport({ baseUrl, interceptors: deadline("grpc-timeout") }),
    "gRPC-Web": createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors: deadline("grpc-timeout") }),
  };
};

/** Timeouts of the server under the black hole: short, so that the test waits little. */
const QUERY_TIMEOUT_S = 3;
const ACQUIRE_TIMEOUT_S = 2;
const CONNECT_TIMEOUT_S = 2;

describe("database.* timeouts in the configuration", () => {
  it("have defaults, reach openDatabase in milliseconds, and refuse a bad value naming the key", () => {
    expect(databaseOptions(parseConfig({}))).toEqual({ queryTimeoutMs: 10_000, acquireTimeoutMs: 5_000, connectTimeoutMs: 5_000, busyTimeoutMs: 5_000, poolMax: 20 });
    const set = parseConfig({ database: { query_timeout_seconds: 2.5, acquire_timeout_seconds: 1, connect_timeout_seconds: 3, sqlite_busy_timeout_seconds: 0, pool_max: 4 } });
    expect(databaseOptions(set)).toEqual({ queryTimeoutMs: 2_500, acquireTimeoutMs: 1_000, connectTimeoutMs: 3_000, busyTimeoutMs: 0, poolMax: 4 });
    for (const [key, value] of [["query_timeout_seconds", 0], ["acquire_timeout_seconds", -1], ["connect_timeout_seconds", "5"], ["pool_max", 1.5]] as const) {
      expect(() => parseConfig({ database: { [key]: value } })).toThrow(`database.${key}`);
    }
  });
});

describe.runIf(DIALECTS.includes("mysql"))("a MySQL database that stops answering (black-holed, TCP up)", () => {
  let testDb: TestDatabase;
  let proxy: TcpProxy;
  let server: RunningServer;
  let config: Config;
  let clients: ReturnType<typeof transports>;

  beforeAll(async () => {
    testDb = await createTestDatabase("mysql");
    const target = new URL(MYSQL_URL);
    proxy = new TcpProxy(target.hostname, Number(target.port || 3306));
    await proxy.start();
    const proxied = new URL(testDb.url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    config = parseConfig({
      server: { host: "127.0.0.1", port: 0 },
      database: {
        url: proxied.toString(),
        query_timeout_seconds: QUERY_TIMEOUT_S,
        acquire_timeout_seconds: ACQUIRE_TIMEOUT_S,
        connect_timeout_seconds: CONNECT_TIMEOUT_S,
      },
      resources: { pool: { numbers: ["+18005550100..+18005550119"] } },
      services: { app: { service: "request-interaction", resource_group: "pool" }, support: { service: "request-chat" } },
    });
    const log = pino({ level: process.env["GMS_TEST_LOG"] ?? "silent" });
    const db = await openDatabase(config.database.url, { ...databaseOptions(config), log });
    server = await startServer({ config, db, log, sweep: false });
    clients = transports(server.url);
  });
  afterAll(async () => {
    proxy?.restore();
    await server?.shutdown();
    await proxy?.close();
    await testDb?.close();
  });

  const backToServing = async () => {
    proxy.restore();
    const health = createClient(Health, clients["gRPC"] as Transport);
    await waitFor("SERVING again", async () => (await health.check({})).status === Status.SERVING, 30_000);
  };

  it("a call with a 1 s deadline ends with DEADLINE_EXCEEDED near 1 s on every path", async () => {
    const chat = await createClient(ChatService, clients["gRPC"] as Transport).requestChat({ service: "support", nickname: "Ann" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    proxy.blackHole();
    try {
      const calls: Record<string, Promise<unknown>> = {};
      // The client gives up (CANCELED) only well after the deadline it sent.
      // One signal shared by every call of the matrix (a dozen listeners on it: not a leak).
      const signal = AbortSignal.timeout(10_000);
      setMaxListeners(0, signal);
      const options = { signal };
      for (const [name, transport] of Object.entries(transports(server.url, 1000))) {
        const storage = createClient(StorageService, transport);
        calls[`CreateData over ${name}`] = storage.createData({ ttlSeconds: 60n, entries: { a: text("x") } }, options);
        // The hot calls take the lean path over gRPC and Connect (lean-path.ts), connect-node's over gRPC-Web.
        calls[`RequestInteraction over ${name}`] = createClient(AccessService, transport).requestInteraction({ service: "app", phoneNumber: "6504669999" }, options);
        const chats = createClient(ChatService, transport);
        calls[`Subscribe over ${name}`] = (async () => {
          for await (const _ of chats.subscribe({ ...key, fromPosition: 1n }, options)) {
            // the replay needs the database: nothing comes
          }
        })();
        calls[`SendMessage over ${name}`] = chats.sendMessage({ ...key, text: "hello" }, options);
      }
      const outcomes = Object.fromEntries(await Promise.all(Object.entries(calls).map(async ([name, call]) => [name, await timed(call)] as const)));
      for (const [name, { code, ms }] of Object.entries(outcomes)) {
        expect({ name, code: code === "ok" ? "ok" : Code[code] }).toEqual({ name, code: "DeadlineExceeded" });
        // Generous: the deadline is 1 s, the database never answers.
        expect(ms, name).toBeLessThan(3000);
      }
    } finally {
      await backToServing();
    }
    // Retried once the database is back, the calls succeed.
    const storage = createClient(StorageService, clients["Connect JSON"] as Transport);
    const { dataId } = await storage.createData({ ttlSeconds: 60n, entries: { a: text("x") } }, { timeoutMs: 5000 });
    expect((await storage.getData({ dataId })).entries["a"]).toEqual(text("x"));
  }, 60_000);

  it("without a deadline a call fails UNAVAILABLE within the configured bound, then at once while health says NOT_SERVING, and succeeds once the database is back", async () => {
    const storage = createClient(StorageService, clients["gRPC"] as Transport);
    const health = createClient(Health, clients["gRPC"] as Transport);
    const { dataId } = await storage.createData({ ttlSeconds: 600n, entries: { kept: text("before") } });
    proxy.blackHole();
    try {
      const bound = (QUERY_TIMEOUT_S + ACQUIRE_TIMEOUT_S) * 1000 + 2000;
      const first = await Promise.all(
        Object.values(clients).flatMap((t) => [
          timed(createClient(StorageService, t).createData({ ttlSeconds: 60n, entries: { a: text("x") } })),
          timed(createClient(StorageService, t).getData({ dataId })),
          timed(createClient(AccessService, t).requestInteraction({ service: "app", phoneNumber: "6504669999" })),
        ]),
      );
      for (const { code, ms } of first) {
        expect(code).toBe(Code.Unavailable);
        expect(ms).toBeLessThan(bound);
      }
      await waitFor("NOT_SERVING", async () => (await health.check({})).status === Status.NOT_SERVING, 15_000);
      // Health knows: a call is refused at once, without waiting for a query or a connection.
      const fast = await Promise.all(
        Object.values(clients).flatMap((t) => [
          timed(createClient(StorageService, t).createData({ ttlSeconds: 60n })),
          timed(createClient(AccessService, t).requestInteraction({ service: "app", phoneNumber: "6504669999" })),
        ]),
      );
      for (const { code, ms } of fast) {
        expect(code).toBe(Code.Unavailable);
        expect(ms).toBeLessThan(ACQUIRE_TIMEOUT_S * 1000);
      }
    } finally {
      await backToServing();
    }
    expect((await storage.getData({ dataId })).entries["kept"]).toEqual(text("before"));
    for (const t of Object.values(clients)) {
      const made = await createClient(StorageService, t).createData({ ttlSeconds: 60n, entries: { a: text("after") } });
      expect((await storage.getData({ dataId: made.dataId })).entries["a"]).toEqual(text("after"));
      expect((await createClient(AccessService, t).requestInteraction({ service: "app", phoneNumber: "6504669999" })).access?.accessNumber).toMatch(/^\+1800555/);
    }
  }, 90_000);
});

describe.runIf(DIALECTS.includes("mysql"))("a timed-out MySQL query", () => {
  let testDb: TestDatabase;
  let proxy: TcpProxy;
  let db: Database;

  beforeAll(async () => {
    testDb = await createTestDatabase("mysql");
    const target = new URL(MYSQL_URL);
    proxy = new TcpProxy(target.hostname, Number(target.port || 3306));
    await proxy.start();
    const proxied = new URL(testDb.url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    db = await openDatabase(proxied.toString(), { migrate: false, poolMax: 1, queryTimeoutMs: 500, acquireTimeoutMs: 1000, connectTimeoutMs: 1000, log: recordingLog() });
  });
  afterAll(async () => {
    proxy?.restore();
    await db?.close();
    await proxy?.close();
    await testDb?.close();
  });

  const connectionId = async () => ((await db.knex.raw("SELECT CONNECTION_ID() AS id")) as [{ id: number }[]])[0][0]?.id;

  it("fails as unavailable and its connection is closed, never reused mid-query", async () => {
    const before = await connectionId();
    expect(proxy.connections).toBe(1);
    proxy.blackHole();
    const e = await db.knex.raw("SELECT 1").then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeDefined();
    const { isUnavailable } = await import("../src/store/errors.js");
    expect(isUnavailable(e)).toBe(true);
    proxy.restore();
    // The connection that ran it was closed, not put back in the pool with the statement pending:
    // the next statement runs on a new one.
    const after = await connectionId();
    expect(after).toBeDefined();
    expect(after).not.toBe(before);
    await waitFor("the old connection gone", () => proxy.connections === 1, 5_000);
  });
});

describe.each(DIALECTS)("failing queries on %s", (dialect) => {
  let testDb: TestDatabase;
  let server: RunningServer;
  let capture: LogCapture;
  let storage: ReturnType<typeof createClient<typeof StorageService>>;

  beforeAll(async () => {
    capture = captureLog();
    testDb = await createTestDatabase(dialect);
    const config = parseConfig({ server: { host: "127.0.0.1", port: 0 }, database: { url: testDb.url, sqlite_busy_timeout_seconds: 0.2 } });
    // The server's own pool (its shutdown closes it), logging into the capture as the server does.
    const db = await openDatabase(testDb.url, { ...databaseOptions(config), log: capture.log.child({ component: "database" }) });
    server = await startServer({ config, db, log: capture.log, sweep: false });
    storage = createClient(StorageService, createGrpcTransport({ baseUrl: server.url }));
  });
  afterAll(async () => {
    await server?.shutdown();
    await testDb?.close();
  });

  it("describeError keeps a database error's code and statement kind, never its SQL, values or message", async () => {
    const secret = `SECRET-dup-${dialect}-0a9b`;
    await testDb.knex("storage_data").insert({ id: "dup-1", version: 1, expires_at: Date.now() + 60_000, created_at: Date.now() });
    const dup: unknown = await testDb.knex
      .raw("INSERT INTO storage_entries (data_id, entry_key, kind, value, size) VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)", ["dup-1", secret, "text", secret, 1, "dup-1", secret, "text", secret, 1])
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    // The database's own message quotes the duplicate key ("Duplicate entry 'dup-1-SECRET…'"), knex's the statement.
    expect(isDuplicateKey(dup)).toBe(true);
    const described = describeError(dup);
    expect(JSON.stringify(described)).not.toContain(secret);
    expect(JSON.stringify(described)).not.toContain("dup-1");
    expect(described.code).toMatch(/^(ER_DUP_ENTRY|SQLITE_CONSTRAINT)/);
    expect(described.operation).toBe("insert storage_entries");
  });

  it.runIf(dialect === "sqlite")("a busy SQLite database answers UNAVAILABLE, and the log holds no value", async () => {
    const secret = "SECRET-sqlite-4f1d9a";
    const other = new Sqlite(testDb.url.slice("sqlite:".length));
    try {
      other.exec("BEGIN IMMEDIATE");
      const e = await errorOf(storage.createData({ ttlSeconds: 60n, entries: { note: text(secret) }, requestId: secret }));
      expect(Code[e.code]).toBe("Unavailable");
      expect(e.message).not.toContain(secret);
    } finally {
      other.exec("ROLLBACK");
      other.close();
    }
    expect(capture.text()).toContain("SQLITE_BUSY");
    expect(capture.text()).not.toContain(secret);
    // The lock gone, the same call succeeds.
    expect((await storage.createData({ ttlSeconds: 60n, entries: { note: text(secret) } })).dataId).not.toBe("");
  });

  const killed = async (kind: "QUERY" | "CONNECTION") => {
    const name = new URL(testDb.url).pathname.slice(1);
    const secret = `SECRET-${kind.toLowerCase()}-7c2e51`;
    const { dataId } = await storage.createData({ ttlSeconds: 600n, entries: { [secret]: text("old") } });
    const admin: Knex = knexFactory({ client: "mysql2", connection: { uri: MYSQL_URL } as never, pool: { min: 1, max: 2 } });
    try {
      await admin.transaction(async (trx) => {
        // Holds the entry's row: the server's update waits on it, inside its transaction.
        await trx.raw("SELECT * FROM ??.storage_entries WHERE data_id = ? FOR UPDATE", [name, dataId]);
        const update = errorOf(storage.updateData({ dataId, entries: { [secret]: text(secret) } }));
        const id = await waitFor("the server's statement waiting on the lock", async () => {
          const [rows] = (await admin.raw("SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ? AND INFO LIKE ?", [name, "%storage_entries%"])) as [{ id: number }[]];
          return rows[0]?.id;
        });
        await admin.raw(`KILL ${kind} ${Number(id)}`);
        const e = await update;
        expect(Code[e.code]).toBe("Unavailable");
        expect(e.message).not.toContain(secret);
      });
    } finally {
      await admin.destroy();
    }
    expect(capture.text()).not.toContain(secret);
    // Nothing was changed, and the store serves again.
    expect((await storage.getData({ dataId })).entries[secret]).toEqual(text("old"));
  };

  it.runIf(dialect === "mysql")("a query killed inside a transaction answers UNAVAILABLE, and the log holds no value", () => killed("QUERY"));

  it.runIf(dialect === "mysql")("a connection lost inside a transaction answers UNAVAILABLE, and the log holds no value", () => killed("CONNECTION"));
});
