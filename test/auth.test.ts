import { createHash } from "node:crypto";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { SessionService } from "../gen/gms/v1/session_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../gen/grpc/reflection/v1/reflection_pb.js";
import type { Value } from "../gen/gms/v1/value_pb.js";
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { errorOf } from "./helpers/calls.js";
import { DIALECTS, createTestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const IVR_KEY = "ivr-key-0123456789abcdef";
const BACKEND_KEY = "backend-key-0123456789abcdef";
const ADMIN_KEY = "admin-key-0123456789abcdef";
const WRONG_KEY = "not-a-key-0123456789abcdef";
const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex");

/** apiKeys are a plain key (ivr), a key given only by its SHA-256 (backend) and an admin key. */
const apiKeys = [
  { name: "ivr-box", key: IVR_KEY, roles: ["ivr"] },
  { name: "crm", key_sha256: sha256(BACKEND_KEY), roles: ["backend"] },
  { name: "ops", key: ADMIN_KEY, roles: ["admin"] },
];

const text = (t: string): Value => ({ $typeName: "gms.v1.Value", kind: { case: "text", value: t } });
const UNKNOWN_ID = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";
const KINDS = ["grpc", "connect"] as const;

/** storageWorks proves a caller may use storage: it stores a record and reads it back. */
async function storageWorks(transport: Transport): Promise<void> {
  const storage = createClient(StorageService, transport);
  const { dataId } = await storage.createData({ ttlSeconds: 60n, entries: { k: text("v") } });
  expect((await storage.getData({ dataId })).entries["k"]).toEqual(text("v"));
}

/** storageCode is the code a caller gets from CreateData. */
async function storageCode(transport: Transport): Promise<Code> {
  return (await errorOf(createClient(StorageService, transport).createData({ ttlSeconds: 60n, entries: { k: text("v") } }))).code;
}

/**
 * publicServicesWork proves health and reflection answer the transport's caller. Reflection is a
 * bidirectional stream, which needs HTTP/2: it is asked over gRPC only.
 */
async function publicServicesWork(transport: Transport, kind: (typeof KINDS)[number]): Promise<void> {
  expect((await createClient(Health, transport).check({})).status).toBe(Status.SERVING);
  if (kind !== "grpc") return;
  const reflection = createClient(ServerReflection, transport);
  async function* ask() {
    yield { messageRequest: { case: "listServices" as const, value: "" } };
  }
  for await (const res of reflection.serverReflectionInfo(ask())) {
    expect(res.messageResponse.case).toBe("listServicesResponse");
  }
}

describe.each(DIALECTS)("auth on %s", (dialect) => {
  describe("with API keys and the default public_roles [app]", () => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer(dialect, { config: { auth: { api_keys: apiKeys } } });
    });
    afterAll(() => t.close());

    it.each(KINDS)("an anonymous caller holds the app role: storage works, backend RPCs need a key (%s)", async (kind) => {
      await storageWorks(t.transport(kind));
      const sessions = createClient(SessionService, t.transport(kind));
      expect((await errorOf(sessions.getSession({ sessionId: UNKNOWN_ID }))).code).toBe(Code.Unauthenticated);
    });

    it.each(KINDS)("a wrong key is UNAUTHENTICATED, even where no key is needed (%s)", async (kind) => {
      expect(await storageCode(t.transport(kind, WRONG_KEY))).toBe(Code.Unauthenticated);
      const sessions = createClient(SessionService, t.transport(kind, WRONG_KEY));
      expect((await errorOf(sessions.getSession({ sessionId: UNKNOWN_ID }))).code).toBe(Code.Unauthenticated);
    });

    it("a malformed Authorization header is UNAUTHENTICATED", async () => {
      for (const authorization of ["Basic aXZyOmtleQ==", "Bearer", `Bearer ${IVR_KEY} extra`, IVR_KEY]) {
        const res = await fetch(`${t.server.url}/gms.v1.StorageService/CreateData`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization },
          body: JSON.stringify({ ttlSeconds: "60" }),
        });
        expect(res.status, authorization).toBe(401);
        expect(((await res.json()) as { code: string }).code).toBe("unauthenticated");
      }
    });

    it("HTTP Basic presents a key as the password, with the key's name as the user, on every path", async () => {
      const basic = (user: string, key: string) => `Basic ${Buffer.from(`${user}:${key}`, "utf8").toString("base64")}`;
      const call = async (authorization: string, path = "/gms.v1.StorageService/CreateData", body: unknown = { ttlSeconds: "60" }) => {
        const res = await fetch(`${t.server.url}${path}`, { method: "POST", headers: { "content-type": "application/json", authorization }, body: JSON.stringify(body) });
        return { status: res.status, body: (await res.json()) as { code?: string } };
      };
      expect((await call(basic("ivr-box", IVR_KEY))).status).toBe(200);
      // The SHA-256-configured key and a lower-case scheme work alike; the same key keeps its roles.
      expect((await call(basic("crm", BACKEND_KEY).replace("Basic", "basic"))).status).toBe(200);
      expect((await call(basic("ivr-box", IVR_KEY), "/gms.v1.SessionService/GetSession", { sessionId: UNKNOWN_ID })).body.code).toBe("permission_denied");
      expect((await call(basic("crm", BACKEND_KEY), "/gms.v1.SessionService/GetSession", { sessionId: UNKNOWN_ID })).body.code).toBe("not_found");
      // Over gRPC (the lean path's and connect's) the same header is the same caller.
      const grpcStorage = createClient(StorageService, t.transport("grpc"));
      const { dataId } = await grpcStorage.createData({ entries: { k: text("v") } }, { headers: { authorization: basic("ops", ADMIN_KEY) } });
      expect(dataId).toMatch(/^[0-9a-f-]{36}$/);
      const refused = [
        basic("crm", IVR_KEY), // another key's name
        basic("", IVR_KEY),
        basic("ivr-box", WRONG_KEY),
        basic("ivr-box", ""),
        `Basic ${Buffer.from(IVR_KEY).toString("base64")}`, // no colon
        "Basic !!!not-base64!!!",
        `Basic ${Buffer.from([0x69, 0x3a, 0xff, 0xfe]).toString("base64")}`, // not UTF-8
        "Basic",
      ];
      for (const authorization of refused) expect((await call(authorization)).body.code, authorization).toBe("unauthenticated");
    });

    it.each(KINDS)("a key without the RPC's role is PERMISSION_DENIED (%s)", async (kind) => {
      const sessions = createClient(SessionService, t.transport(kind, IVR_KEY));
      // Auth runs before validation: even an invalid request learns only that it may not call.
      expect((await errorOf(sessions.getSession({ sessionId: UNKNOWN_ID }))).code).toBe(Code.PermissionDenied);
      expect((await errorOf(sessions.getSession({ sessionId: "not-a-uuid" }))).code).toBe(Code.PermissionDenied);
      const access = createClient(AccessService, t.transport(kind, BACKEND_KEY));
      expect((await errorOf(access.matchInteraction({}))).code).toBe(Code.PermissionDenied);
    });

    it.each(KINDS)("a key with the role passes, also one configured by its SHA-256 (%s)", async (kind) => {
      await storageWorks(t.transport(kind, IVR_KEY));
      await storageWorks(t.transport(kind, BACKEND_KEY));
      const sessions = createClient(SessionService, t.transport(kind, BACKEND_KEY));
      // Past auth, the request reaches the handler: an unknown session is NOT_FOUND.
      expect((await errorOf(sessions.getSession({ sessionId: UNKNOWN_ID }))).code).toBe(Code.NotFound);
    });

    it.each(KINDS)("admin may call anything (%s)", async (kind) => {
      await storageWorks(t.transport(kind, ADMIN_KEY));
      const sessions = createClient(SessionService, t.transport(kind, ADMIN_KEY));
      expect((await errorOf(sessions.getSession({ sessionId: UNKNOWN_ID }))).code).toBe(Code.NotFound);
      const access = createClient(AccessService, t.transport(kind, ADMIN_KEY));
      const code = (await errorOf(access.matchInteraction({}))).code;
      expect([Code.Unauthenticated, Code.PermissionDenied]).not.toContain(code);
    });

    it.each(KINDS)("health and reflection need no key (%s)", async (kind) => {
      await publicServicesWork(t.transport(kind), kind);
    });

    it("the caller's identity reaches the handlers: one request_id from two callers is two records", async () => {
      const requestId = `same-id-${dialect}`;
      const ivr = createClient(StorageService, t.transport("grpc", IVR_KEY));
      const backend = createClient(StorageService, t.transport("grpc", BACKEND_KEY));
      const a = await ivr.createData({ ttlSeconds: 60n, requestId });
      const b = await backend.createData({ ttlSeconds: 60n, requestId });
      expect(b.dataId).not.toBe(a.dataId);
      expect((await ivr.createData({ ttlSeconds: 60n, requestId })).dataId).toBe(a.dataId);
    });
  });

  describe("with API keys and public_roles []", () => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer(dialect, { config: { auth: { api_keys: apiKeys, public_roles: [] } } });
    });
    afterAll(() => t.close());

    it.each(KINDS)("an anonymous caller is UNAUTHENTICATED on storage; a key holder is served (%s)", async (kind) => {
      const rows = async () => Number(((await t.server.app.db.knex("storage_data").count({ n: "*" })) as { n: number }[])[0]?.n);
      const before = await rows();
      expect(await storageCode(t.transport(kind))).toBe(Code.Unauthenticated);
      expect(await rows()).toBe(before);
      await storageWorks(t.transport(kind, IVR_KEY));
    });

    it.each(KINDS)("health and reflection still need no key (%s)", async (kind) => {
      await publicServicesWork(t.transport(kind), kind);
    });
  });

  it("warns at start when no api_keys are configured, and not when some are", async () => {
    const warnings = async (auth: Record<string, unknown>) => {
      const lines: string[] = [];
      const log = pino({ level: "warn" }, { write: (line: string) => lines.push(line) });
      const db = await createTestDatabase(dialect);
      const server = await startServer({ config: parseConfig({ server: { host: "127.0.0.1", port: 0 }, auth }), db, log, sweep: false });
      await server.shutdown(); // closes (and drops) the test database too
      return lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    };
    expect((await warnings({})).some((m) => /no api_keys/.test(m))).toBe(true);
    expect((await warnings({ api_keys: apiKeys })).some((m) => /no api_keys/.test(m))).toBe(false);
  });

  describe("open mode (no api_keys)", () => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer(dialect, { config: { auth: { api_keys: [], public_roles: [] } } });
    });
    afterAll(() => t.close());

    it.each(KINDS)("lets every caller call everything, with or without a key (%s)", async (kind) => {
      for (const key of [undefined, WRONG_KEY]) {
        await storageWorks(t.transport(kind, key));
        const sessions = createClient(SessionService, t.transport(kind, key));
        expect((await errorOf(sessions.getSession({ sessionId: UNKNOWN_ID }))).code).toBe(Code.NotFound);
        await publicServicesWork(t.transport(kind, key), kind);
      }
    });
  });
});
