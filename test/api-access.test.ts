import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService, type RequestInteractionRequest, type RequestInteractionResponse } from "../gen/gms/v1/access_pb.js";
import { LimitExceededSchema, NoMatchReason, NoMatchSchema, PoolExhaustedSchema } from "../gen/gms/v1/error_details_pb.js";
import { SessionService, SessionState } from "../gen/gms/v1/session_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import type { Value } from "../gen/gms/v1/value_pb.js";
import { ManualClock } from "../src/clock.js";
import { expandNumbers, loadConfig } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { claimQueries, codeFailuresQuery, lanesFor, liveOnNumberQuery, type ClaimOptions } from "../src/store/access-store.js";
import { errorOf } from "./helpers/calls.js";
import { DIALECTS, createTestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const text = (t: string): Value => ({ $typeName: "gms.v1.Value", kind: { case: "text", value: t } });
const texts = (o: Record<string, string>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, text(v)]));
const textOf = (v: Value | undefined) => (v?.kind.case === "text" ? v.kind.value : undefined);
/** phone is a distinct, valid customer number per index. */
const phone = (i: number) => `+1650555${String(i).padStart(4, "0")}`;
const UNKNOWN_ID = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";

/** POOL is the 50-number locking group the concurrency proof runs against, written as a range. */
const POOL = "+18005550100..+18005550149";
/** SHARED is a non-locking group of 3 numbers with 4-digit codes, so codes collide and must be redrawn. */
const SHARED = ["+18005550200", "+18005550201", "+18005550202"];

/** The resource groups and services of the main test server. */
const accessConfig = {
  storage: { max_value_bytes: 1024 },
  resources: {
    pool: { numbers: [POOL], allocation: "round-robin", locking: true },
    shared: { numbers: SHARED, allocation: "round-robin", locking: false, access_code_length: 4 },
    solo: { numbers: ["+18005550300"], locking: true },
    spare: { numbers: ["+18005550400..+18005550419"], allocation: "random", locking: true },
  },
  services: {
    "ivr-match": { service: "match-interaction" },
    "backend-access": { service: "request-access" },
  },
};

/** InteractionFields are the RequestInteraction fields a test sets beside the defaults. */
type InteractionFields = Partial<Omit<RequestInteractionRequest, "$typeName" | "$unknown">>;

type Outcome<T> = { ok: true; value: T } | { ok: false; error: ConnectError };

/** settle runs calls concurrently and sorts each outcome into a value or a ConnectError. */
async function settle<T>(calls: readonly Promise<T>[]): Promise<Outcome<T>[]> {
  return (await Promise.allSettled(calls)).map((r) => (r.status === "fulfilled" ? { ok: true, value: r.value } : { ok: false, error: ConnectError.from(r.reason) }));
}
const values = <T>(o: Outcome<T>[]) => o.flatMap((x) => (x.ok ? [x.value] : []));
const errors = <T>(o: Outcome<T>[]) => o.flatMap((x) => (x.ok ? [] : [x.error]));

/** access returns a reply's AccessInfo, failing the test when it is missing. */
function access(r: RequestInteractionResponse) {
  expect(r.access).toBeDefined();
  return r.access!;
}

/** TableCounts are the rows a request may create: a failed request must leave them all unchanged. */
interface TableCounts {
  sessions: number;
  data: number;
  entries: number;
  reservations: number;
}

/** storeProbe reads what a server has stored, straight from its database. */
function storeProbe(server: () => RunningServer) {
  const knex = () => server().app.db.knex;
  const count = async (table: string) => Number((await knex()(table).count<{ n: number | string }[]>({ n: "*" }))[0]?.n);
  return {
    async counts(): Promise<TableCounts> {
      return { sessions: await count("sessions"), data: await count("storage_data"), entries: await count("storage_entries"), reservations: await count("reservations") };
    },
    /** liveRows lists the reservations holding their number at `now` (unreleased, unexpired). */
    async liveRows(now: number, group?: string) {
      const qb = knex()("reservations").whereNull("released_at").andWhere("expires_at", ">", now);
      if (group !== undefined) qb.andWhere("resource_group", group);
      return qb.select<{ session_id: string; access_number: string; access_code: string | null }[]>("session_id", "access_number", "access_code");
    },
    /** doubleBooked lists the numbers of locking groups that carry more than one live reservation. */
    async doubleBooked(now: number) {
      return knex()("reservations")
        .whereNull("released_at")
        .andWhere("expires_at", ">", now)
        .andWhere("locking", true)
        .groupBy("access_number")
        .havingRaw("count(*) > 1")
        .select<{ access_number: string }[]>("access_number");
    },
    /** duplicateCodes lists (number, code) pairs held by more than one live reservation. */
    async duplicateCodes(now: number) {
      return knex()("reservations")
        .whereNull("released_at")
        .andWhere("expires_at", ">", now)
        .whereNotNull("access_code")
        .groupBy("access_number", "access_code")
        .havingRaw("count(*) > 1")
        .select<{ access_number: string; access_code: string }[]>("access_number", "access_code");
    },
  };
}

/** Request counts of the concurrency proof; SQLite serialises transactions and runs the same counts. */
const REQUESTS = 200;
const POOL_SIZE = 50;
const MATCHED = 25;

describe.each(DIALECTS)("AccessService over gRPC on %s", (dialect) => {
  let t: TestServer;
  let clock: ManualClock;
  let client: Client<typeof AccessService>;
  let sessions: Client<typeof SessionService>;
  let storage: Client<typeof StorageService>;
  const probe = storeProbe(() => t.server);

  beforeAll(async () => {
    clock = new ManualClock(Date.now());
    t = await startTestServer(dialect, { clock, config: accessConfig });
    client = createClient(AccessService, t.grpc);
    sessions = createClient(SessionService, t.grpc);
    storage = createClient(StorageService, t.grpc);
  });
  afterAll(() => t.close());

  /** ask is a RequestInteraction on the given group with a long session and a 120 s booking. */
  const ask = (i: number, group: string, extra: InteractionFields = {}) =>
    client.requestInteraction({ phoneNumber: phone(i), resourceGroup: group, ttlSeconds: 600n, bookingExpirationTimeoutSeconds: 120n, appData: texts({ i: String(i) }), ...extra });

  it(`${REQUESTS} concurrent RequestInteraction on a ${POOL_SIZE}-number locking group: ${POOL_SIZE} win, the rest learn when a number frees up, none is held twice`, async () => {
    const poolNumbers = expandNumbers([POOL]);
    expect(poolNumbers).toHaveLength(POOL_SIZE);
    const before = await probe.counts();
    const outcomes = await settle(Array.from({ length: REQUESTS }, (_, i) => ask(i, "pool")));
    const won = values(outcomes);
    const lost = errors(outcomes);
    expect(lost.map((e) => e.code).filter((c) => c !== Code.ResourceExhausted)).toEqual([]);
    expect(won).toHaveLength(POOL_SIZE);
    expect(lost).toHaveLength(REQUESTS - POOL_SIZE);

    // Each winner has its own number, and between them they hold the whole pool.
    const numbers = won.map((r) => access(r).accessNumber);
    expect(new Set(numbers).size).toBe(POOL_SIZE);
    expect([...numbers].sort()).toEqual(poolNumbers);
    for (const r of won) {
      expect(access(r).accessCode).toBe("");
      expect(access(r).expirationSeconds).toBe(120n);
      expect(timestampMs(access(r).expiresAt!)).toBe(clock.now() + 120_000);
    }

    // Each loser is told which group ran dry and when its earliest reservation lapses.
    const earliest = Math.min(...won.map((r) => timestampMs(access(r).expiresAt!)));
    for (const e of lost) {
      const [detail, ...more] = e.findDetails(PoolExhaustedSchema);
      expect(more).toEqual([]);
      expect(detail).toBeDefined();
      expect(detail.resourceGroup).toBe("pool");
      expect(detail.nextFreeAt, e.rawMessage).toBeDefined();
      expect(timestampMs(detail.nextFreeAt!)).toBe(earliest);
      expect(detail.retryAfterSeconds).toBe(120n);
    }

    // The database agrees: one live row per number, and the losers left nothing behind.
    expect(await probe.doubleBooked(clock.now())).toEqual([]);
    const live = await probe.liveRows(clock.now(), "pool");
    expect(live).toHaveLength(POOL_SIZE);
    expect(new Map(live.map((r) => [r.access_number, r.session_id]))).toEqual(new Map(won.map((r) => [access(r).accessNumber, r.session!.id])));
    const after = await probe.counts();
    expect(after).toEqual({ sessions: before.sessions + POOL_SIZE, data: before.data + POOL_SIZE, entries: before.entries + POOL_SIZE, reservations: before.reservations + POOL_SIZE });

    // The IVR matches half of them by the number alone; each match names the session holding it.
    const toMatch = won.slice(0, MATCHED);
    const matched = await settle(toMatch.map((r) => client.matchInteraction({ accessNumber: access(r).accessNumber, returnData: true })));
    expect(errors(matched)).toEqual([]);
    values(matched).forEach((m, k) => {
      expect(m.matches).toHaveLength(1);
      expect(m.matches[0]?.sessionId).toBe(toMatch[k]?.session?.id);
      expect(m.matches[0]?.dataId).toBe(toMatch[k]?.session?.dataId);
      expect(textOf(m.matches[0]?.data["i"])).toBeDefined();
    });
    expect(await probe.liveRows(clock.now(), "pool")).toHaveLength(POOL_SIZE - MATCHED);

    // A second burst gets exactly the released numbers, and still nothing is held twice.
    const released = new Set(toMatch.map((r) => access(r).accessNumber));
    const again = await settle(Array.from({ length: REQUESTS / 2 }, (_, i) => ask(REQUESTS + i, "pool")));
    const wonAgain = values(again);
    expect(errors(again).map((e) => e.code).filter((c) => c !== Code.ResourceExhausted)).toEqual([]);
    expect(wonAgain).toHaveLength(MATCHED);
    expect(new Set(wonAgain.map((r) => access(r).accessNumber))).toEqual(released);
    expect(await probe.doubleBooked(clock.now())).toEqual([]);
    expect(await probe.liveRows(clock.now(), "pool")).toHaveLength(POOL_SIZE);
    expect((await probe.counts()).sessions).toBe(after.sessions + MATCHED);
  });

  it("100 concurrent requests with codes over 3 shared numbers: codes are unique per number, and each (number, code) matches the session that got it", async () => {
    const outcomes = await settle(Array.from({ length: 100 }, (_, i) => ask(1000 + i, "shared", { provideCode: true })));
    expect(errors(outcomes)).toEqual([]);
    const replies = values(outcomes);
    expect(new Set(replies.map((r) => access(r).accessNumber))).toEqual(new Set(SHARED));
    for (const r of replies) {
      expect(r.provideCode).toBe(true);
      expect(access(r).accessCode).toMatch(/^[0-9]{4}$/);
    }
    const pairs = replies.map((r) => `${access(r).accessNumber}/${access(r).accessCode}`);
    expect(new Set(pairs).size).toBe(replies.length);
    expect(await probe.duplicateCodes(clock.now())).toEqual([]);
    expect(await probe.liveRows(clock.now(), "shared")).toHaveLength(100);

    // Matched concurrently, half asking for every match: still exactly one, the right one.
    const matched = await settle(
      replies.map((r, k) => client.matchInteraction({ accessNumber: access(r).accessNumber, accessCode: access(r).accessCode, returnMultipleMatches: k % 2 === 0 })),
    );
    expect(errors(matched)).toEqual([]);
    values(matched).forEach((m, k) => {
      expect(m.matches.map((x) => x.sessionId)).toEqual([replies[k]?.session?.id]);
      expect(m.matches[0]?.phoneNumber).toBe(phone(1000 + k));
    });
    expect(await probe.liveRows(clock.now(), "shared")).toEqual([]);
  });

  describe("bad input is refused with a clear error, and nothing is stored", () => {
    /** refused expects the call to fail with `code` and the store to be unchanged; returns the error. */
    async function refused(call: () => Promise<unknown>, code: Code): Promise<ConnectError> {
      const before = await probe.counts();
      const e = await errorOf(call());
      expect(e.code, e.rawMessage).toBe(code);
      expect(e.rawMessage).not.toMatch(/select|insert|update|sql/i);
      expect(await probe.counts()).toEqual(before);
      return e;
    }

    it("RequestInteraction: missing or garbage phone_number", async () => {
      for (const phoneNumber of ["", "abc", "+", "1", "+1 650 abc 9999", "+123456789012345678901"]) {
        const e = await refused(() => client.requestInteraction({ phoneNumber, resourceGroup: "spare" }), Code.InvalidArgument);
        expect(e.rawMessage, phoneNumber).toMatch(/phone_number/);
      }
    });

    it("RequestInteraction: a two-digit phone_number", async () => {
      await refused(() => client.requestInteraction({ phoneNumber: "12", resourceGroup: "spare" }), Code.InvalidArgument);
    });

    it("RequestInteraction: unknown service, a service of another kind, unknown or missing group", async () => {
      expect((await refused(() => client.requestInteraction({ service: "nope", phoneNumber: phone(1), resourceGroup: "spare" }), Code.NotFound)).rawMessage).toMatch(/nope/);
      await refused(() => client.requestInteraction({ service: "match-interaction", phoneNumber: phone(1), resourceGroup: "spare" }), Code.InvalidArgument);
      await refused(() => client.requestInteraction({ service: "ivr-match", phoneNumber: phone(1), resourceGroup: "spare" }), Code.InvalidArgument);
      expect((await refused(() => client.requestInteraction({ phoneNumber: phone(1), resourceGroup: "nope" }), Code.InvalidArgument)).rawMessage).toMatch(/resource_group/);
      expect((await refused(() => client.requestInteraction({ phoneNumber: phone(1) }), Code.FailedPrecondition)).rawMessage).toMatch(/no resource group/);
    });

    it("RequestInteraction: zero or negative ttl and booking timeouts", async () => {
      for (const v of [0n, -1n, -3600n]) {
        await refused(() => client.requestInteraction({ phoneNumber: phone(1), resourceGroup: "spare", ttlSeconds: v }), Code.InvalidArgument);
        await refused(() => client.requestInteraction({ phoneNumber: phone(1), resourceGroup: "spare", bookingExpirationTimeoutSeconds: v }), Code.InvalidArgument);
      }
    });

    it("RequestInteraction: access_code_length outside 4–12 (4 and 12 work)", async () => {
      for (const accessCodeLength of [0, 3, 13]) {
        const e = await refused(() => client.requestInteraction({ phoneNumber: phone(1), resourceGroup: "spare", provideCode: true, accessCodeLength }), Code.InvalidArgument);
        expect(e.rawMessage).toMatch(/access_code_length/);
      }
      for (const accessCodeLength of [4, 12]) {
        const r = await client.requestInteraction({ phoneNumber: phone(1), resourceGroup: "spare", provideCode: true, accessCodeLength });
        expect(access(r).accessCode).toMatch(new RegExp(`^[0-9]{${accessCodeLength}}$`));
        await sessions.cancelSession({ sessionId: r.session!.id });
      }
    });

    it("RequestInteraction: app data above storage.max_value_bytes, with a LimitExceeded detail", async () => {
      const e = await refused(() => client.requestInteraction({ phoneNumber: phone(1), resourceGroup: "spare", appData: texts({ ok: "small", big: "x".repeat(1025) }) }), Code.InvalidArgument);
      expect(e.findDetails(LimitExceededSchema)).toMatchObject([{ limit: "storage.max_value_bytes", max: 1024n, actual: 1025n }]);
    });

    it("MatchInteraction: missing or garbage access_number, and no match with its reason", async () => {
      await refused(() => client.matchInteraction({}), Code.InvalidArgument);
      await refused(() => client.matchInteraction({ accessNumber: "abc" }), Code.InvalidArgument);
      await refused(() => client.matchInteraction({ accessNumber: "+18005550300", service: "nope" }), Code.NotFound);
      await refused(() => client.matchInteraction({ accessNumber: "+18005550300", service: "request-interaction" }), Code.InvalidArgument);
      const reason = async (req: Parameters<typeof client.matchInteraction>[0]) => {
        const e = await errorOf(client.matchInteraction(req));
        expect(e.code).toBe(Code.NotFound);
        return e.findDetails(NoMatchSchema)[0]?.reason;
      };
      expect(await reason({ accessNumber: "+18005550300" })).toBe(NoMatchReason.NO_RESERVATION);
      const r = await ask(7, "solo", { provideCode: true });
      expect(await reason({ accessNumber: access(r).accessNumber, accessCode: access(r).accessCode === "0000" ? "1111" : "0000" })).toBe(NoMatchReason.CODE_MISMATCH);
      expect(await reason({ accessNumber: access(r).accessNumber, phoneNumber: phone(8) })).toBe(NoMatchReason.PHONE_MISMATCH);
      // The failed matches released nothing: the right caller still matches.
      const m = await client.matchInteraction({ accessNumber: access(r).accessNumber, phoneNumber: phone(7), accessCode: access(r).accessCode, service: "ivr-match" });
      expect(m.matches.map((x) => x.sessionId)).toEqual([r.session?.id]);
    });

    it("RequestAccess: unknown session is NOT_FOUND, a cancelled one FAILED_PRECONDITION, bad group or id INVALID_ARGUMENT", async () => {
      await refused(() => client.requestAccess({ sessionId: UNKNOWN_ID, resourceGroup: "spare" }), Code.NotFound);
      await refused(() => client.requestAccess({ sessionId: "not-a-uuid", resourceGroup: "spare" }), Code.InvalidArgument);
      const r = await ask(9, "spare");
      await refused(() => client.requestAccess({ sessionId: r.session!.id, resourceGroup: "nope" }), Code.InvalidArgument);
      await refused(() => client.requestAccess({ sessionId: r.session!.id }), Code.FailedPrecondition);
      await refused(() => client.requestAccess({ sessionId: r.session!.id, resourceGroup: "spare", accessCodeLength: 13, provideCode: true }), Code.InvalidArgument);
      await refused(() => client.requestAccess({ sessionId: r.session!.id, resourceGroup: "spare", service: "ivr-match" }), Code.InvalidArgument);
      await sessions.cancelSession({ sessionId: r.session!.id });
      await refused(() => client.requestAccess({ sessionId: r.session!.id, resourceGroup: "spare" }), Code.FailedPrecondition);
    });
  });

  describe("SessionService", () => {
    it("GetSession shows the session with each of its reservations", async () => {
      const r = await ask(20, "spare", { provideCode: true });
      const more = await client.requestAccess({ sessionId: r.session!.id, resourceGroup: "shared", provideCode: true, service: "backend-access" });
      const got = (await sessions.getSession({ sessionId: r.session!.id })).session!;
      expect(got).toMatchObject({ id: r.session!.id, state: SessionState.ACTIVE, phoneNumber: phone(20), builtin: "request-interaction", service: "request-interaction" });
      expect(timestampMs(got.expiresAt!)).toBe(clock.now() + 600_000);
      expect(got.access.map((a) => [a.resourceGroup, a.accessNumber, a.accessCode])).toEqual([
        ["spare", access(r).accessNumber, access(r).accessCode],
        ["shared", more.access!.accessNumber, more.access!.accessCode],
      ]);
      expect((await errorOf(sessions.getSession({ sessionId: UNKNOWN_ID }))).code).toBe(Code.NotFound);
    });

    it("CancelSession frees the number for the next request and deletes the data", async () => {
      const first = await ask(21, "solo");
      const e = await errorOf(ask(22, "solo"));
      expect(e.code).toBe(Code.ResourceExhausted);
      await sessions.cancelSession({ sessionId: first.session!.id });
      await sessions.cancelSession({ sessionId: first.session!.id }); // a retried cancel is harmless
      const ended = (await sessions.getSession({ sessionId: first.session!.id })).session!;
      expect(ended.state).toBe(SessionState.ENDED);
      expect(ended.access).toEqual([]);
      expect((await errorOf(storage.getData({ dataId: first.session!.dataId }))).code).toBe(Code.NotFound);
      expect((await errorOf(client.matchInteraction({ accessNumber: access(first).accessNumber, phoneNumber: phone(21) }))).code).toBe(Code.NotFound);
      const second = await ask(22, "solo");
      expect(access(second).accessNumber).toBe(access(first).accessNumber);
      expect((await client.matchInteraction({ accessNumber: access(second).accessNumber })).matches[0]?.sessionId).toBe(second.session!.id);
    });

    it("ExtendSession moves the session's, its data's and its reservations' expiry", async () => {
      const r = await ask(23, "spare", { ttlSeconds: 60n, bookingExpirationTimeoutSeconds: 30n });
      clock.advance(10_000);
      const extended = (await sessions.extendSession({ sessionId: r.session!.id, ttlSeconds: 1800n })).session!;
      expect(timestampMs(extended.expiresAt!)).toBe(clock.now() + 1_800_000);
      // The reservation is extended within the group's maximum (max_booking_expiration_timeout, 3600 s).
      expect(extended.access.map((a) => timestampMs(a.expiresAt!))).toEqual([clock.now() + 1_800_000]);
      const data = await storage.getData({ dataId: r.session!.dataId });
      expect(timestampMs(data.expiresAt!)).toBe(clock.now() + 1_800_000);
      clock.advance(120_000); // past the original session ttl and booking
      expect((await sessions.getSession({ sessionId: r.session!.id })).session?.access).toHaveLength(1);
      expect((await client.matchInteraction({ accessNumber: access(r).accessNumber })).matches[0]?.sessionId).toBe(r.session!.id);
      expect((await errorOf(sessions.extendSession({ sessionId: r.session!.id, ttlSeconds: 0n }))).code).toBe(Code.InvalidArgument);
    });
  });
});

describe.each(DIALECTS)("roles and request_id over gRPC on %s", (dialect) => {
  const keys = { app1: "app-one-key-0123456789", app2: "app-two-key-0123456789", ivr: "ivr-key-0123456789ab", backend: "backend-key-01234567", admin: "admin-key-0123456789" };
  let t: TestServer;
  const probe = storeProbe(() => t.server);
  const as = (key?: string) => ({ access: createClient(AccessService, t.transport("grpc", key)), sessions: createClient(SessionService, t.transport("grpc", key)) });
  const ask = (c: Client<typeof AccessService>, i: number, extra: InteractionFields = {}) =>
    c.requestInteraction({ phoneNumber: phone(i), resourceGroup: "desk", ttlSeconds: 600n, bookingExpirationTimeoutSeconds: 600n, ...extra });

  beforeAll(async () => {
    t = await startTestServer(dialect, {
      config: {
        auth: {
          api_keys: [
            { name: "app-1", key: keys.app1, roles: ["app"] },
            { name: "app-2", key: keys.app2, roles: ["app"] },
            { name: "ivr", key: keys.ivr, roles: ["ivr"] },
            { name: "backend", key: keys.backend, roles: ["backend"] },
            { name: "admin", key: keys.admin, roles: ["admin"] },
          ],
        },
        resources: { desk: { numbers: ["+18005550500..+18005550539"], locking: true } },
      },
    });
  });
  afterAll(() => t.close());

  it("RequestInteraction is for apps (public by default), MatchInteraction for the IVR, RequestAccess and SessionService for backends", async () => {
    const anonymous = as();
    const app = as(keys.app1);
    const ivr = as(keys.ivr);
    const backend = as(keys.backend);

    const r = await ask(anonymous.access, 1);
    const r2 = await ask(app.access, 2);
    expect((await errorOf(ask(ivr.access, 3))).code).toBe(Code.PermissionDenied);
    expect((await errorOf(ask(as("not-a-configured-key-123").access, 3))).code).toBe(Code.Unauthenticated);

    const sessionId = r.session!.id;
    for (const c of [anonymous, app, ivr]) {
      expect((await errorOf(c.access.requestAccess({ sessionId, resourceGroup: "desk" }))).code).toBe(c === anonymous ? Code.Unauthenticated : Code.PermissionDenied);
      expect((await errorOf(c.sessions.getSession({ sessionId }))).code).toBe(c === anonymous ? Code.Unauthenticated : Code.PermissionDenied);
      expect((await errorOf(c.sessions.extendSession({ sessionId, ttlSeconds: 60n }))).code).toBe(c === anonymous ? Code.Unauthenticated : Code.PermissionDenied);
      expect((await errorOf(c.sessions.cancelSession({ sessionId }))).code).toBe(c === anonymous ? Code.Unauthenticated : Code.PermissionDenied);
    }
    for (const c of [anonymous, app, backend]) {
      expect((await errorOf(c.access.matchInteraction({ accessNumber: access(r).accessNumber }))).code).toBe(c === anonymous ? Code.Unauthenticated : Code.PermissionDenied);
    }
    const extra = await backend.access.requestAccess({ sessionId, resourceGroup: "desk" });
    expect((await backend.sessions.getSession({ sessionId })).session?.access).toHaveLength(2);
    expect((await ivr.access.matchInteraction({ accessNumber: extra.access!.accessNumber })).matches[0]?.sessionId).toBe(sessionId);
    await backend.sessions.cancelSession({ sessionId });
    // Nothing the refused calls tried happened: r2 is untouched, r was cancelled by the backend only.
    expect((await backend.sessions.getSession({ sessionId: r2.session!.id })).session?.state).toBe(SessionState.ACTIVE);
  });

  it("admin may call everything", async () => {
    const admin = as(keys.admin);
    const r = await ask(admin.access, 10);
    const sessionId = r.session!.id;
    const more = await admin.access.requestAccess({ sessionId, resourceGroup: "desk" });
    expect((await admin.sessions.getSession({ sessionId })).session?.access).toHaveLength(2);
    await admin.sessions.extendSession({ sessionId, ttlSeconds: 900n });
    await admin.sessions.updateSessionData({ sessionId, entries: texts({ note: "vip" }) });
    expect((await admin.access.matchInteraction({ accessNumber: more.access!.accessNumber })).matches[0]?.sessionId).toBe(sessionId);
    await admin.sessions.cancelSession({ sessionId });
  });

  it("two concurrent RequestInteraction with one request_id make one session and take one number; another caller's same id is its own", async () => {
    const app1 = as(keys.app1);
    const app2 = as(keys.app2);
    const before = await probe.counts();
    const [a, b] = await Promise.all([ask(app1.access, 30, { requestId: "checkout-42" }), ask(app1.access, 30, { requestId: "checkout-42" })]);
    expect(b.session?.id).toBe(a.session?.id);
    expect(access(b).accessNumber).toBe(access(a).accessNumber);
    const mid = await probe.counts();
    expect(mid).toEqual({ ...before, sessions: before.sessions + 1, data: before.data + 1, reservations: before.reservations + 1 });
    const retry = await ask(app1.access, 30, { requestId: "checkout-42" });
    expect(retry.session?.id).toBe(a.session?.id);

    const other = await ask(app2.access, 30, { requestId: "checkout-42" });
    expect(other.session?.id).not.toBe(a.session?.id);
    expect(access(other).accessNumber).not.toBe(access(a).accessNumber);
    expect(await probe.counts()).toEqual({ ...mid, sessions: mid.sessions + 1, data: mid.data + 1, reservations: mid.reservations + 1 });

    const backend = as(keys.backend);
    const [x, y] = await Promise.all([
      backend.access.requestAccess({ sessionId: a.session!.id, resourceGroup: "desk", requestId: "more-1" }),
      backend.access.requestAccess({ sessionId: a.session!.id, resourceGroup: "desk", requestId: "more-1" }),
    ]);
    expect(y.access?.accessNumber).toBe(x.access?.accessNumber);
    expect((await backend.sessions.getSession({ sessionId: a.session!.id })).session?.access).toHaveLength(2);
  });
});

describe.each(DIALECTS)("the seed's iPhoneService from config/gms.yaml on %s", (dialect) => {
  let server: RunningServer;
  let client: Client<typeof AccessService>;
  const clock = new ManualClock(Date.now());

  beforeAll(async () => {
    const seed = loadConfig({ path: "config/gms.yaml", env: {} });
    const db = await createTestDatabase(dialect);
    const config = { ...seed, server: { ...seed.server, host: "127.0.0.1", port: 0, cors_origins: [] }, database: { ...seed.database, url: db.url } };
    server = await startServer({ config, db, log: pino({ level: "silent" }), clock, sweep: false });
    client = createClient(AccessService, createGrpcTransport({ baseUrl: server.url }));
  });
  afterAll(() => server.shutdown());

  it("works as written: ttl 7200, no code even when asked (configuration wins), numbers from its own group; the reply reports the effective values", async () => {
    const r = await client.requestInteraction({ service: "iPhoneService", phoneNumber: "+1 (650) 466-9999", provideCode: true, ttlSeconds: 60n, appData: texts({ device: "iPhone" }) });
    expect(r.ttlSeconds).toBe(7200n);
    expect(r.provideCode).toBe(false);
    expect(r.session).toMatchObject({ service: "iPhoneService", builtin: "request-interaction", phoneNumber: "+16504669999", state: SessionState.ACTIVE });
    expect(timestampMs(r.session!.expiresAt!)).toBe(clock.now() + 7_200_000);
    expect(access(r).accessCode).toBe("");
    expect(access(r).resourceGroup).toBe("iPhoneService");
    expect(expandNumbers(["+18005550200..+18005550219"])).toContain(access(r).accessNumber);
    // The group's booking_expiration_timeout (120 s) applies: the service configures none.
    expect(access(r).expirationSeconds).toBe(120n);
    // A resource group on the request is ignored too: the service configures its own.
    const other = await client.requestInteraction({ service: "iPhoneService", phoneNumber: "+16504669998", resourceGroup: "DNIS" });
    expect(access(other).resourceGroup).toBe("iPhoneService");
    // Non-locking: the IVR needs the caller's number to find the session.
    const m = await client.matchInteraction({ accessNumber: access(r).accessNumber, phoneNumber: "+16504669999", returnData: true });
    expect(m.matches.map((x) => [x.sessionId, x.service, textOf(x.data["device"])])).toEqual([[r.session!.id, "iPhoneService", "iPhone"]]);
  });
});

describe.skipIf(!DIALECTS.includes("mysql"))("the claim query on MySQL", () => {
  let t: TestServer;
  const GROUP_SIZE = 2000;

  beforeAll(async () => {
    t = await startTestServer("mysql", {
      config: {
        resources: {
          rr: { numbers: [`+1800600${"0".repeat(4)}..+1800600${String(GROUP_SIZE - 1).padStart(4, "0")}`], allocation: "round-robin", locking: true },
          rnd: { numbers: [`+1800700${"0".repeat(4)}..+1800700${String(GROUP_SIZE - 1).padStart(4, "0")}`], allocation: "random", locking: true },
          shared: { numbers: [`+1800800${"0".repeat(4)}..+1800800${String(GROUP_SIZE - 1).padStart(4, "0")}`], allocation: "round-robin", locking: false },
        },
      },
    });
    await t.server.app.db.knex.raw("ANALYZE TABLE access_numbers");
  });
  afterAll(() => t.close());

  /** explain runs EXPLAIN on exactly the SELECTs a claim runs (claimQueries). */
  async function explain(o: Omit<ClaimOptions, "now">) {
    const knex = t.server.app.db.knex;
    const plans = [];
    for (const { sql, bindings } of claimQueries("mysql", { ...o, now: Date.now() })) {
      expect(sql).toMatch(o.locking ? /for update skip locked$/i : /for update$/i);
      const [rows] = (await knex.raw(`EXPLAIN ${sql}`, bindings as never)) as [{ key: string | null; type: string; rows: number; Extra: string | null }[]];
      expect(rows).toHaveLength(1);
      plans.push(rows[0]);
    }
    return plans;
  }

  const MODES = [
    ["round-robin, locking", { group: "rr", allocation: "round-robin", locking: true, lanes: lanesFor(GROUP_SIZE) }, ["access_numbers_lane", "access_numbers_round_robin"]],
    ["round-robin, locking, one lane", { group: "rr", allocation: "round-robin", locking: true, lanes: 1 }, ["access_numbers_round_robin"]],
    ["random, locking", { group: "rnd", allocation: "random", locking: true, lanes: lanesFor(GROUP_SIZE) }, ["access_numbers_random", "access_numbers_random"]],
    ["random, shared", { group: "rnd", allocation: "random", locking: false, lanes: lanesFor(GROUP_SIZE) }, ["access_numbers_random", "access_numbers_random"]],
    ["round-robin, shared", { group: "shared", allocation: "round-robin", locking: false, lanes: lanesFor(GROUP_SIZE) }, ["access_numbers_least_used"]],
  ] as const;

  // The group's 2,000 numbers make 64 lanes: a locking round-robin claim looks in one lane, then in the whole group.
  it.each(MODES)("%s: walks its index in order and stops at the first row (no scan, no filesort)", async (_, o, indexes) => {
    const plans = await explain(o);
    expect(plans.map((p) => p.key)).toEqual(indexes);
    for (const plan of plans) {
      expect(plan.type).not.toBe("ALL");
      expect(plan.Extra ?? "").not.toMatch(/filesort|temporary/i);
    }
  });

  /** shape is a claim SELECT with its values and quoting taken out: what the procedure and claimQueries have in common. */
  const shape = (sql: string) =>
    sql
      .replace(/`/g, "")
      .replace(/ INTO v_number/i, "")
      .replace(/\bp_\w+/g, "?")
      .replace(/\s+/g, " ")
      .trim();

  it("the stored procedure every claim calls runs exactly these SELECTs", async () => {
    const knex = t.server.app.db.knex;
    const [routines] = (await knex.raw("SELECT routine_definition AS body FROM information_schema.routines WHERE routine_schema = DATABASE() AND routine_name = 'gms_claim_v2'")) as [
      { body: string }[],
    ];
    expect(routines).toHaveLength(1);
    const inProcedure = [...routines[0]!.body.matchAll(/SELECT number INTO v_number [^;]*/g)].map((m) => shape(m[0]));
    // Every branch of the procedure is one of the modes above (each SELECT once), and every mode's SELECTs are in it.
    const ofModes = new Set(MODES.flatMap(([, o]) => claimQueries("mysql", { ...o, now: 0 }).map((q) => shape(q.sql))));
    expect(inProcedure).toHaveLength(7);
    expect(new Set(inProcedure)).toEqual(ofModes);
  });

  it("the match's stored procedure runs exactly the SELECTs a match runs on SQLite, the count once the candidates are locked", async () => {
    const knex = t.server.app.db.knex;
    const [routines] = (await knex.raw("SELECT routine_definition AS body FROM information_schema.routines WHERE routine_schema = DATABASE() AND routine_name = 'gms_match_lock_v2'")) as [
      { body: string }[],
    ];
    expect(routines).toHaveLength(1);
    const inProcedure = [...routines[0]!.body.matchAll(/SELECT [^;]*/g)].map((m) => shape(m[0]));
    expect(inProcedure).toEqual([shape(liveOnNumberQuery("mysql", "+1", 0).sql), shape(codeFailuresQuery("+1", 0).sql)]);
  });
});
