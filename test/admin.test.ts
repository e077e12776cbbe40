// AdminService over the wire, on a real server and every dialect: each RPC against what the access
// and chat services did, the admin role alone let in, and no access code or key in any reply.
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { toJsonString } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { AdminService, ListReservationsResponseSchema, ReleaseReservationResponseSchema } from "../gen/gms/v1/admin_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { ManualClock } from "../src/clock.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const KEYS = { admin: "admin-key-0123456789ab", backend: "backend-key-0123456789", ivr: "ivr-key-0123456789abcd", app: "app-key-0123456789abcd" };
const LOCKED = ["+18005550100", "+18005550101"];
const SHARED = "+18005550200";

const config = {
  auth: {
    api_keys: [
      { name: "ops", key: KEYS.admin, roles: ["admin"] },
      { name: "backend", key: KEYS.backend, roles: ["backend"] },
      { name: "ivr", key: KEYS.ivr, roles: ["ivr"] },
      { name: "app", key: KEYS.app, roles: ["app", "agent"] },
    ],
  },
  resources: {
    locked: { numbers: LOCKED, locking: true, allocation: "round-robin", cooldown_seconds: 5 },
    shared: { numbers: [SHARED], locking: false, access_code_length: 6 },
  },
  services: {
    support: { service: "request-chat", endpoint: "support", ttl: 600 },
  },
};

/** secretsIn lists the access codes and API keys a reply's JSON carries (none may). */
const secretsIn = (json: string, codes: readonly string[]) => [...codes, ...Object.values(KEYS)].filter((s) => json.includes(s));

describe.each(DIALECTS)("AdminService on %s", (dialect) => {
  let t: TestServer;
  let clock: ManualClock;
  let admin: Client<typeof AdminService>;
  let adminConnect: Client<typeof AdminService>;
  let access: Client<typeof AccessService>;
  let ivr: Client<typeof AccessService>;
  const codes: string[] = [];

  beforeAll(async () => {
    clock = new ManualClock(Date.now());
    t = await startTestServer(dialect, { config, clock });
    admin = createClient(AdminService, t.transport("grpc", KEYS.admin));
    adminConnect = createClient(AdminService, t.transport("connect", KEYS.admin));
    access = createClient(AccessService, t.transport("grpc", KEYS.app));
    ivr = createClient(AccessService, t.transport("grpc", KEYS.ivr));
  });
  afterAll(() => t.close());

  it("lists the resource groups with their numbers by state", async () => {
    const before = await admin.listResourceGroups({});
    expect(before.groups.map((g) => [g.name, g.free, g.reserved, g.reservations])).toEqual([
      ["locked", 2n, 0n, 0n],
      ["shared", 1n, 0n, 0n],
    ]);
    await access.requestInteraction({ phoneNumber: "+16505550001", resourceGroup: "locked", ttlSeconds: 600n });
    const after = await adminConnect.listResourceGroups({});
    expect(after.groups.find((g) => g.name === "locked")).toMatchObject({ reserved: 1n, free: 1n, coolingDown: 0n, retired: 0n, reservations: 1n });
  });

  it("lists a group's live reservations without their access codes", async () => {
    const phones = ["+16505550011", "+16505550012"];
    const got = [];
    for (const phoneNumber of phones) {
      const r = await access.requestInteraction({ phoneNumber, resourceGroup: "shared", provideCode: true, ttlSeconds: 600n });
      expect(r.access?.accessCode).toMatch(/^[0-9]{6}$/);
      codes.push(r.access!.accessCode);
      got.push(r);
    }
    const listed = await admin.listReservations({ resourceGroup: "shared" });
    expect(listed.reservations.map((r) => [r.accessNumber, r.resourceGroup, r.sessionId, r.phoneNumber])).toEqual(
      got.map((r, i) => [SHARED, "shared", r.session!.id, phones[i]]),
    );
    expect(listed.reservations[0]?.expiresAt).toEqual(got[0]!.access!.expiresAt);
    expect(secretsIn(toJsonString(ListReservationsResponseSchema, listed), codes)).toEqual([]);
    expect((await admin.listReservations({ resourceGroup: "nowhere" })).reservations).toEqual([]);
  });

  it("releases a number's live reservations: a match finds nothing after, a locking number cools down", async () => {
    const r = await access.requestInteraction({ phoneNumber: "+16505550021", resourceGroup: "locked", ttlSeconds: 600n });
    const number = r.access!.accessNumber;
    const released = await admin.releaseReservation({ accessNumber: number });
    expect(released.released.map((x) => [x.accessNumber, x.sessionId])).toEqual([[number, r.session!.id]]);
    expect(secretsIn(toJsonString(ReleaseReservationResponseSchema, released), codes)).toEqual([]);
    const matched = await ivr.matchInteraction({ accessNumber: number }).catch((e: unknown) => ConnectError.from(e));
    expect((matched as ConnectError).code).toBe(Code.NotFound);
    expect((await admin.listResourceGroups({})).groups.find((g) => g.name === "locked")).toMatchObject({ reserved: 1n, coolingDown: 1n, free: 0n });
    // Nothing live on it any more: NOT_FOUND, and nothing changes.
    const again = await admin.releaseReservation({ accessNumber: number }).catch((e: unknown) => ConnectError.from(e));
    expect(again).toBeInstanceOf(ConnectError);
    expect((again as ConnectError).code).toBe(Code.NotFound);
    // The shared number's two reservations go at once.
    const shared = await admin.releaseReservation({ accessNumber: SHARED });
    expect(shared.released).toHaveLength(2);
    expect((await admin.listReservations({ resourceGroup: "shared" })).reservations).toEqual([]);
  });

  it("refuses a malformed number with INVALID_ARGUMENT", async () => {
    for (const accessNumber of ["", "1800 555", "+1-800", "x".repeat(41)]) {
      const e = await admin.releaseReservation({ accessNumber }).catch((err: unknown) => ConnectError.from(err));
      expect((e as ConnectError).code, accessNumber).toBe(Code.InvalidArgument);
    }
    const e = await admin.listReservations({ resourceGroup: "" }).catch((err: unknown) => ConnectError.from(err));
    expect((e as ConnectError).code).toBe(Code.InvalidArgument);
  });

  it("lists the chat endpoints, configured or with chats waiting, with their queue depth and oldest wait", async () => {
    const empty = await admin.listChatEndpoints({});
    expect(empty.endpoints.map((e) => [e.endpoint, e.waiting, e.oldestQueuedAt])).toEqual([
      ["default", 0n, undefined],
      ["support", 0n, undefined],
    ]);
    const customer = createClient(ChatService, t.transport("grpc", KEYS.app));
    const first = clock.now();
    await customer.requestChat({ service: "support", nickname: "Ann" });
    clock.advance(1_000);
    await customer.requestChat({ service: "support", nickname: "Bea" });
    const support = (await admin.listChatEndpoints({})).endpoints.find((e) => e.endpoint === "support");
    expect(support?.waiting).toBe(2n);
    expect(Number(support?.oldestQueuedAt?.seconds) * 1000 + Math.floor((support?.oldestQueuedAt?.nanos ?? 0) / 1e6)).toBe(first);
  });

  it("refuses every other role PERMISSION_DENIED, and no key UNAUTHENTICATED", async () => {
    for (const key of [KEYS.backend, KEYS.ivr, KEYS.app, undefined]) {
      for (const kind of ["grpc", "connect"] as const) {
        const c = createClient(AdminService, t.transport(kind, key));
        const calls = [c.listResourceGroups({}), c.listReservations({ resourceGroup: "shared" }), c.releaseReservation({ accessNumber: SHARED }), c.listChatEndpoints({})];
        for (const call of calls) {
          const e = await call.then(
            () => undefined,
            (err: unknown) => ConnectError.from(err),
          );
          expect(e?.code, `${key ?? "no key"} over ${kind}`).toBe(key === undefined ? Code.Unauthenticated : Code.PermissionDenied);
        }
      }
    }
  });
});
