import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import type { Value } from "../gen/gms/v1/value_pb.js";
import { openDatabase, type Dialect } from "../src/store/database.js";
import { bearer, connectOutcome, freePort, waitFor } from "./helpers/calls.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";

const API_KEY = "shutdown-test-key-5f1c0a9e7b";
const SECRET_VALUE = "s3cr3t-value-that-must-never-be-logged";
const text = (t: string): Value => ({ $typeName: "gms.v1.Value", kind: { case: "text", value: t } });

/** ServerProcess is `node --import tsx src/main.ts` running in a child process. */
interface ServerProcess {
  child: ChildProcess;
  url: string;
  port: number;
  stdout(): string;
  stderr(): string;
  /** exited resolves with the exit code and signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** startServerProcess writes a configuration file and starts the real server on a free port. */
async function startServerProcess(dir: string, databaseUrl: string): Promise<ServerProcess> {
  const port = await freePort();
  const configPath = join(dir, "gms.yaml");
  writeFileSync(
    configPath,
    toYaml({
      server: { host: "127.0.0.1", port: 1, shutdown_grace_seconds: 5 },
      database: { url: databaseUrl },
      log: { level: "info" },
      auth: { api_keys: [{ name: "crm", key: API_KEY, roles: ["backend"] }], public_roles: [] },
    }),
  );
  // GMS_PORT overrides the file's port: the environment wins, as in a container.
  const env: NodeJS.ProcessEnv = { ...process.env, GMS_PORT: String(port) };
  delete env["GMS_CONFIG"];
  delete env["GMS_DATABASE_URL"];
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts", "--config", configPath], { cwd: process.cwd(), env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  const health = createClient(Health, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
  let stopped = false;
  void exited.then(() => (stopped = true));
  await waitFor(
    "the server process to answer Health Check",
    async () => {
      if (stopped) throw new Error(`the server exited at start:\n${err}\n${out}`);
      return (await health.check({}).catch(() => undefined))?.status === Status.SERVING;
    },
    30_000,
  );
  return { child, url, port, stdout: () => out, stderr: () => err, exited };
}

/** RowLock is a MySQL transaction holding one storage_data row FOR UPDATE. */
interface RowLock {
  /** waiting tells whether another session of this database waits to lock the row. */
  waiting(): Promise<boolean>;
  release(): Promise<void>;
}

/** holdRowLock locks a record's row in a transaction of the test's own. */
async function holdRowLock(databaseUrl: string, dataId: string): Promise<RowLock> {
  const db = await openDatabase(databaseUrl, { migrate: false, poolMax: 2 });
  const name = new URL(databaseUrl).pathname.slice(1);
  const trx = await db.knex.transaction();
  await trx("storage_data").where("id", dataId).forUpdate().select("id");
  let released = false;
  return {
    async waiting() {
      // The server's locking read shows in the process list while it waits (INNODB_TRX does not always list it).
      const [rows] = (await db.knex.raw(
        "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID() AND INFO LIKE '%storage_data%for update%'",
        [name],
      )) as [{ n: number }[]];
      return Number(rows[0]?.n) > 0;
    },
    async release() {
      if (released) return;
      released = true;
      await trx.commit();
      await db.close();
    },
  };
}

describe.each(DIALECTS)("graceful shutdown of the server process on %s", (dialect: Dialect) => {
  let dir: string;
  let mysql: TestDatabase | undefined;
  let databaseUrl: string;
  let server: ServerProcess | undefined;
  let blocker: RowLock | undefined;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "opengms-shutdown-"));
    if (dialect === "mysql") {
      mysql = await createTestDatabase("mysql");
      databaseUrl = mysql.url;
    } else {
      databaseUrl = `sqlite:${join(dir, "gms.db")}`;
    }
    server = await startServerProcess(dir, databaseUrl);
  });
  afterEach(async () => {
    await blocker?.release();
    blocker = undefined;
    if (server !== undefined && server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill("SIGKILL");
      await server.exited;
    }
    server = undefined;
    await mysql?.close();
    mysql = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it("on SIGTERM: stops accepting, lets unary calls finish, ends streams with UNAVAILABLE, exits 0", async () => {
    const s = server!;
    const transport = createGrpcTransport({ baseUrl: s.url, interceptors: [bearer(API_KEY)] });
    const storage = createClient(StorageService, transport);
    const { dataId: secretId } = await storage.createData({ ttlSeconds: 600n, entries: { secret: text(SECRET_VALUE) } });

    // A long server stream: Health Watch.
    const statuses: Status[] = [];
    const streamEnd = (async () => {
      for await (const res of createClient(Health, transport).watch({})) statuses.push(res.status);
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    await waitFor("the stream's first status", () => statuses.length > 0);

    // On MySQL a unary call is held in flight for sure: the test holds the record's row lock, so
    // UpdateData waits inside the server until the test lets go, after the shutdown has begun.
    blocker = dialect === "mysql" ? await holdRowLock(databaseUrl, secretId) : undefined;
    const lock = blocker;
    const held = lock === undefined ? undefined : storage.updateData({ dataId: secretId, entries: { more: text("after SIGTERM") } });
    // Settled in the background too, so a failure before it is awaited is not an unhandled rejection.
    held?.catch(() => undefined);
    if (lock !== undefined) await waitFor("UpdateData to wait for the row lock", () => lock.waiting());

    // Unary calls in flight when the signal arrives: each must finish, or be refused as UNAVAILABLE.
    const calls = Array.from({ length: 20 }, (_, i) =>
      storage.createData({ ttlSeconds: 600n, requestId: `during-shutdown-${i}`, entries: { i: text(String(i)) } }).then(
        (r) => ({ ok: true as const, dataId: r.dataId }),
        (e: unknown) => ({ ok: false as const, code: ConnectError.from(e).code }),
      ),
    );
    await Promise.race(calls);
    s.child.kill("SIGTERM");

    const streamError = await streamEnd;
    expect(streamError?.code).toBe(Code.Unavailable);
    // Streams are ended after the port is closed: by now a new connection is refused.
    expect(await connectOutcome(s.port)).toBe("ECONNREFUSED");

    if (lock !== undefined) {
      expect(s.child.exitCode).toBeNull();
      await lock.release();
      expect((await held)?.version).toBe(2n);
    }

    const outcomes = await Promise.all(calls);
    for (const o of outcomes) if (!o.ok) expect(o.code).toBe(Code.Unavailable);
    expect(await s.exited).toEqual({ code: 0, signal: null });
    expect(await connectOutcome(s.port)).toBe("ECONNREFUSED");

    // Every call that was answered OK was stored, and the database was left consistent.
    const db = await openDatabase(databaseUrl, { migrate: false });
    try {
      const ids = new Set(((await db.knex("storage_data").select("id")) as { id: string }[]).map((r) => r.id));
      expect(ids.has(secretId)).toBe(true);
      for (const o of outcomes) if (o.ok) expect(ids.has(o.dataId)).toBe(true);
      expect(ids.size).toBe(1 + outcomes.filter((o) => o.ok).length);
    } finally {
      await db.close();
    }

    // The log: one JSON object a line; one line per RPC with method, code and duration; no secrets.
    const lines = s.stdout().trim().split("\n");
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const rpcs = records.filter((r) => r["msg"] === "rpc");
    expect(rpcs.length).toBeGreaterThanOrEqual(3);
    for (const r of rpcs) {
      expect(typeof r["method"]).toBe("string");
      expect(typeof r["code"]).toBe("string");
      expect(typeof r["ms"]).toBe("number");
    }
    expect(rpcs).toContainEqual(expect.objectContaining({ method: "grpc.health.v1.Health/Watch", code: "unavailable" }));
    expect(rpcs).toContainEqual(expect.objectContaining({ method: "gms.v1.StorageService/CreateData", code: "ok", caller: "crm" }));
    expect(records.map((r) => r["msg"])).toContain("stopped");
    for (const output of [s.stdout(), s.stderr()]) {
      expect(output).not.toContain(API_KEY);
      expect(output).not.toContain(SECRET_VALUE);
    }
  });

  it("on SIGINT: exits 0 and the port is closed", async () => {
    const s = server!;
    s.child.kill("SIGINT");
    expect(await s.exited).toEqual({ code: 0, signal: null });
    expect(await connectOutcome(s.port)).toBe("ECONNREFUSED");
    expect(s.stdout().trim().split("\n").map((l) => (JSON.parse(l) as { msg: string }).msg)).toContain("stopped");
  });
});
