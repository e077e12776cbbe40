import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { parseConfig } from "../src/config.js";
import { GMS_SERVICES, startServer, type RunningServer } from "../src/server.js";
import { openDatabase } from "../src/store/database.js";
import { errorOf, waitFor } from "./helpers/calls.js";
import { DIALECTS, MYSQL_URL, createTestDatabase, recordingLog, type TestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";

/** WatchRecording is a Health Watch stream being read in the background. */
interface WatchRecording {
  statuses: Status[];
  /** isOpen tells whether the stream has not ended yet. */
  isOpen(): boolean;
  /** ended resolves when the stream ends: undefined when it ended cleanly, else its error. */
  ended: Promise<ConnectError | undefined>;
  stop(): Promise<void>;
}

/** recordWatch opens a Health Watch stream and records every status it receives. */
function recordWatch(health: Client<typeof Health>, service: string): WatchRecording {
  const abort = new AbortController();
  const statuses: Status[] = [];
  let open = true;
  const ended = (async () => {
    try {
      for await (const res of health.watch({ service }, { signal: abort.signal })) statuses.push(res.status);
      return undefined;
    } catch (e) {
      return ConnectError.from(e);
    } finally {
      open = false;
    }
  })();
  return {
    statuses,
    isOpen: () => open,
    ended,
    async stop() {
      abort.abort();
      await ended;
    },
  };
}

describe.each(DIALECTS)("health on %s", (dialect) => {
  let t: TestServer;
  let health: Client<typeof Health>;
  beforeAll(async () => {
    t = await startTestServer(dialect);
    health = createClient(Health, t.grpc);
  });
  afterAll(() => t.close());

  it("Check answers SERVING for the server and every served service, over gRPC and Connect", async () => {
    for (const client of [health, createClient(Health, t.connect)]) {
      expect((await client.check({})).status).toBe(Status.SERVING);
      for (const s of GMS_SERVICES) expect((await client.check({ service: s.typeName })).status).toBe(Status.SERVING);
    }
  });

  it("Check of an unknown service is NOT_FOUND", async () => {
    expect((await errorOf(health.check({ service: "gms.v1.NoSuchService" }))).code).toBe(Code.NotFound);
  });

  it("List gives every served service and the server itself", async () => {
    const { statuses } = await health.list({});
    expect(Object.keys(statuses).sort()).toEqual(["", ...GMS_SERVICES.map((s) => s.typeName)].sort());
    for (const s of Object.values(statuses)) expect(s.status).toBe(Status.SERVING);
  });

  it("Watch sends the current status first and stays open until the client leaves", async () => {
    const watch = recordWatch(health, "gms.v1.StorageService");
    await waitFor("the first status", () => watch.statuses.length > 0);
    expect(watch.statuses).toEqual([Status.SERVING]);
    await watch.stop();
    expect((await watch.ended)?.code).toBe(Code.Canceled);
  });

  it("Watch of an unknown service sends SERVICE_UNKNOWN and keeps the call open (gRPC health spec)", async () => {
    const watch = recordWatch(health, "gms.v1.NoSuchService");
    await waitFor("the first status", () => watch.statuses.length > 0);
    expect(watch.statuses).toEqual([Status.SERVICE_UNKNOWN]);
    // A server that ended the call would have sent its trailers with that message; a round trip later, the call is still open.
    await health.check({});
    expect(watch.isOpen()).toBe(true);
    await watch.stop();
    expect((await watch.ended)?.code).toBe(Code.Canceled);
  });
});

describe.runIf(DIALECTS.includes("mysql"))("health while MySQL becomes unreachable", () => {
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
    const db = await openDatabase(proxied.toString(), { log: recordingLog() });
    const config = parseConfig({ server: { host: "127.0.0.1", port: 0 }, database: { url: proxied.toString() } });
    server = await startServer({ config, db, log: pino({ level: process.env["GMS_TEST_LOG"] ?? "silent" }), sweep: false });
  });
  afterAll(async () => {
    await server?.shutdown();
    await proxy?.close();
    await testDb?.close();
  });

  it("Watch goes SERVING → NOT_SERVING while the database is unreachable → SERVING when it is back", async () => {
    const transport = createGrpcTransport({ baseUrl: server.url });
    const health = createClient(Health, transport);
    const storage = createClient(StorageService, transport);
    const watch = recordWatch(health, "");
    try {
      await waitFor("the first status", () => watch.statuses.length > 0);
      expect(watch.statuses).toEqual([Status.SERVING]);
      const { dataId } = await storage.createData({ ttlSeconds: 600n });

      await proxy.cut();
      // The monitor probes on its own every few seconds; no call is needed for the stream to learn.
      await waitFor("NOT_SERVING on the stream", () => watch.statuses.includes(Status.NOT_SERVING));
      expect((await health.check({})).status).toBe(Status.NOT_SERVING);
      // A call that needs the store says so with a code a client retries, not INTERNAL.
      expect((await errorOf(storage.getData({ dataId }))).code).toBe(Code.Unavailable);

      await proxy.reopen();
      await waitFor("SERVING again on the stream", () => watch.statuses.length >= 3);
      expect(watch.statuses).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]);
      expect((await health.check({})).status).toBe(Status.SERVING);
      expect((await storage.getData({ dataId })).dataId).toBe(dataId);
    } finally {
      await watch.stop();
    }
  });
});
