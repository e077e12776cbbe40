// AdminService over the wire, on a real server and every dialect: each RPC against what the access
// and chat services did, the admin role alone let in, and no access code or key in any reply.
import { createHash } from "node:crypto";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { toJsonString } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import {
  AdminService,
  AdminServiceGetSessionResponseSchema,
  ChatState,
  GetChatParticipantsResponseSchema,
  GetConfigurationResponseSchema,
  ListReservationsResponseSchema,
  ListSessionsResponseSchema,
  ReleaseReservationResponseSchema,
} from "../gen/gms/v1/admin_pb.js";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ParticipantType } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { SessionService, SessionState } from "../gen/gms/v1/session_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { createLocalBus } from "../src/bus.js";
import { ManualClock } from "../src/clock.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const KEYS = { admin: "admin-key-0123456789ab", backend: "backend-key-0123456789", ivr: "ivr-key-0123456789abcd", app: "app-key-0123456789abcd" };
const LOCKED = ["+18005550100", "+18005550101"];
const SHARED = "+18005550200";
const COOL = "+18005550300";
/** HASHED_KEY is configured by its SHA-256 only; neither it nor its digest may show anywhere. */
const HASHED_KEY = "hashed-key-0123456789abcdef";
const HASHED_DIGEST = createHash("sha256").update(HASHED_KEY).digest("hex");
/** SECRETS are configured below where a secret goes; GetConfiguration must show none of them. */
const SECRETS = ["db-secret-pw", "db-param-secret", "redis-secret-pw", HASHED_DIGEST];

const config = {
  auth: {
    api_keys: [
      { name: "ops", key: KEYS.admin, roles: ["admin"] },
      { name: "backend", key: KEYS.backend, roles: ["backend"] },
      { name: "ivr", key: KEYS.ivr, roles: ["ivr"] },
      { name: "app", key: KEYS.app, roles: ["app", "agent"] },
      { name: "hashed", key_sha256: HASHED_DIGEST, roles: ["backend"] },
    ],
  },
  // Shown only (the test's database and an in-process bus are what the server uses): their passwords must never be.
  database: { url: "mysql://gms:db-secret-pw@db.example:3306/gms?password=db-param-secret&charset=utf8mb4" },
  bus: { redis_url: "redis://:redis-secret-pw@redis.example:6379/2" },
  resources: {
    locked: { numbers: LOCKED, locking: true, allocation: "round-robin", cooldown_seconds: 5 },
    shared: { numbers: [SHARED], locking: false, access_code_length: 6 },
    cool: { numbers: [COOL], locking: true, cooldown_seconds: 30 },
  },
  services: {
    support: { service: "request-chat", endpoint: "support", ttl: 600 },
    helpdesk: { service: "request-chat", endpoint: "helpdesk" },
    listed: { service: "request-interaction", resource_group: "shared", ttl: 600, provide_code: true },
    "cool-line": { name: "request-interaction", resource_group: "cool", booking_expiration_timeout: 120, access_code_length: 4 },
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
    t = await startTestServer(dialect, { config, clock, bus: createLocalBus() });
    admin = createClient(AdminService, t.transport("grpc", KEYS.admin));
    adminConnect = createClient(AdminService, t.transport("connect", KEYS.admin));
    access = createClient(AccessService, t.transport("grpc", KEYS.app));
    ivr = createClient(AccessService, t.transport("grpc", KEYS.ivr));
  });
  afterAll(() => t.close());

  it("lists the resource groups with their numbers by state", async () => {
    const before = await admin.listResourceGroups({});
    expect(before.groups.map((g) => [g.name, g.free, g.reserved, g.reservations])).toEqual([
      ["cool", 1n, 0n, 0n],
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
      ["helpdesk", 0n, undefined],
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
        const id = "0190a0b0-0000-7000-8000-000000000000";
        const calls = [
          c.listResourceGroups({}),
          c.listReservations({ resourceGroup: "shared" }),
          c.releaseReservation({ accessNumber: SHARED }),
          c.listChatEndpoints({}),
          c.listSessions({}),
          c.getSession({ sessionId: id }),
          c.cancelSession({ sessionId: id }),
          c.listServices({}),
          c.getChatParticipants({ chatId: id }),
          c.getConfiguration({}),
        ];
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
  /** failure is the error a call ends with (undefined when it succeeds). */
  const failure = (call: Promise<unknown>) =>
    call.then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );

  it("lists live sessions newest first a page at a time, by service and state, never their data or codes; later pages do not move for new sessions", async () => {
    const made: { id: string; code: string }[] = [];
    for (let i = 0; i < 5; i++) {
      clock.advance(1);
      const r = await access.requestInteraction({ service: "listed", phoneNumber: `+1650555010${i}`, appData: { note: { kind: { case: "text", value: `app-data-value-${i}` } } } });
      made.push({ id: r.session!.id, code: r.access!.accessCode });
    }
    const newestFirst = made.map((m) => m.id).reverse();
    const page1 = await admin.listSessions({ service: "listed", pageSize: 2 });
    expect(page1.sessions.map((s) => s.id)).toEqual(newestFirst.slice(0, 2));
    expect(page1.sessions[0]).toMatchObject({ service: "listed", builtin: "request-interaction", state: SessionState.ACTIVE, phoneNumber: "+16505550104" });
    expect(page1.nextPageToken).not.toBe("");
    // A session created between pages is newer than every listed one: it does not shift the pages after.
    clock.advance(1);
    const late = await access.requestInteraction({ service: "listed", phoneNumber: "+16505550199" });
    const page2 = await adminConnect.listSessions({ service: "listed", pageSize: 2, pageToken: page1.nextPageToken });
    expect(page2.sessions.map((s) => s.id)).toEqual(newestFirst.slice(2, 4));
    const page3 = await admin.listSessions({ service: "listed", pageSize: 2, pageToken: page2.nextPageToken });
    expect(page3.sessions.map((s) => s.id)).toEqual(newestFirst.slice(4));
    expect(page3.nextPageToken).toBe("");
    // A fresh listing starts with the newest; the default page holds them all.
    expect((await admin.listSessions({ service: "listed" })).sessions.map((s) => s.id)).toEqual([late.session!.id, ...newestFirst]);
    // By state: one cancelled.
    await admin.cancelSession({ sessionId: made[0]!.id });
    expect((await admin.listSessions({ service: "listed", state: SessionState.ENDED })).sessions.map((s) => [s.id, s.state])).toEqual([[made[0]!.id, SessionState.ENDED]]);
    expect((await admin.listSessions({ service: "listed", state: SessionState.ACTIVE })).sessions.map((s) => s.id)).toEqual([late.session!.id, ...newestFirst.slice(0, 4)]);
    expect((await admin.listSessions({ service: "nobody" })).sessions).toEqual([]);
    // Every service: the chat sessions of the earlier test too.
    const all = await admin.listSessions({ pageSize: 1000 });
    expect(all.sessions.some((s) => s.service === "support")).toBe(true);
    const json = toJsonString(ListSessionsResponseSchema, all);
    expect(json).not.toContain("app-data-value");
    expect(secretsIn(json, made.map((m) => m.code))).toEqual([]);
  });

  it("refuses a page token it did not make, or made for other filters, and a bad page size or state, INVALID_ARGUMENT", async () => {
    const first = await admin.listSessions({ service: "listed", pageSize: 1 });
    const token = first.nextPageToken;
    expect(token).not.toBe("");
    const flipped = (i: number) => token.slice(0, i) + (token[i] === "A" ? "B" : "A") + token.slice(i + 1);
    const bad = [
      { service: "listed", pageToken: flipped(3) },
      { service: "listed", pageToken: flipped(token.length - 2) },
      { service: "listed", pageToken: token.slice(0, -1) },
      { service: "listed", pageToken: `${token}.x` },
      { service: "listed", pageToken: "not-a-token" },
      { service: "listed", pageToken: "%%%" },
      { service: "support", pageToken: token },
      { service: "listed", state: SessionState.ENDED, pageToken: token },
      { pageToken: token },
      { pageSize: 1001 },
      { pageSize: -1 },
      { state: 7 as SessionState },
      { service: "x".repeat(129) },
      { pageToken: "x".repeat(513) },
    ];
    for (const req of bad) {
      const e = await failure(admin.listSessions(req));
      expect(e?.code, JSON.stringify(req)).toBe(Code.InvalidArgument);
    }
    // The token still works with its own filters.
    expect((await admin.listSessions({ service: "listed", pageSize: 1, pageToken: token })).sessions).toHaveLength(1);
  });

  it("gets any session with its live reservations, never an access code; NOT_FOUND for none, INVALID_ARGUMENT for a bad id", async () => {
    const r = await access.requestInteraction({ phoneNumber: "+16505550301", resourceGroup: "shared", provideCode: true, ttlSeconds: 600n });
    const got = await admin.getSession({ sessionId: r.session!.id });
    expect(got.session).toMatchObject({ id: r.session!.id, service: "request-interaction", state: SessionState.ACTIVE, phoneNumber: "+16505550301", dataId: r.session!.dataId });
    expect(got.reservations.map((x) => [x.accessNumber, x.resourceGroup, x.sessionId, x.phoneNumber])).toEqual([[SHARED, "shared", r.session!.id, "+16505550301"]]);
    expect(got.reservations[0]?.expiresAt).toEqual(r.access!.expiresAt);
    expect(secretsIn(toJsonString(AdminServiceGetSessionResponseSchema, got), [r.access!.accessCode])).toEqual([]);
    expect((await failure(admin.getSession({ sessionId: "0190a0b0-0000-7000-8000-000000000000" })))?.code).toBe(Code.NotFound);
    expect((await failure(admin.getSession({ sessionId: "not-a-uuid" })))?.code).toBe(Code.InvalidArgument);
    expect((await failure(admin.cancelSession({ sessionId: "0190a0b0-0000-7000-8000-000000000000" })))?.code).toBe(Code.NotFound);
    expect((await failure(admin.cancelSession({ sessionId: "" })))?.code).toBe(Code.InvalidArgument);
  });

  it("cancels any session as SessionService does: reservations released (a locking number cools down), data deleted, ENDED; twice is harmless", async () => {
    const r = await access.requestInteraction({ service: "cool-line", phoneNumber: "+16505550401", provideCode: true, appData: { k: { kind: { case: "text", value: "v" } } } });
    expect(r.access?.accessNumber).toBe(COOL);
    const cancelled = await admin.cancelSession({ sessionId: r.session!.id });
    expect(cancelled.session).toMatchObject({ id: r.session!.id, state: SessionState.ENDED });
    expect((await admin.getSession({ sessionId: r.session!.id })).reservations).toEqual([]);
    expect((await failure(ivr.matchInteraction({ accessNumber: COOL, accessCode: r.access!.accessCode })))?.code).toBe(Code.NotFound);
    expect((await admin.listResourceGroups({})).groups.find((g) => g.name === "cool")).toMatchObject({ reserved: 0n, coolingDown: 1n, free: 0n, reservations: 0n });
    const storage = createClient(StorageService, t.transport("grpc", KEYS.backend));
    expect((await failure(storage.getData({ dataId: r.session!.dataId })))?.code).toBe(Code.NotFound);
    expect((await admin.cancelSession({ sessionId: r.session!.id })).session?.state).toBe(SessionState.ENDED);
    // The same as the backend's own cancel, step for step: after the cool-down, another session the same way.
    clock.advance(31_000);
    const other = await access.requestInteraction({ service: "cool-line", phoneNumber: "+16505550402" });
    await createClient(SessionService, t.transport("grpc", KEYS.backend)).cancelSession({ sessionId: other.session!.id });
    expect((await admin.listResourceGroups({})).groups.find((g) => g.name === "cool")).toMatchObject({ reserved: 0n, coolingDown: 1n, free: 0n, reservations: 0n });
    expect((await admin.getSession({ sessionId: other.session!.id })).session?.state).toBe(SessionState.ENDED);
  });

  it("lists the services: the configured ones with what their configuration fixes, then the builtins", async () => {
    const { services } = await adminConnect.listServices({});
    expect(services.map((s) => [s.name, s.builtin, s.configured])).toEqual([
      ["cool-line", "request-interaction", true],
      ["helpdesk", "request-chat", true],
      ["listed", "request-interaction", true],
      ["support", "request-chat", true],
      ["request-interaction", "request-interaction", false],
      ["request-access", "request-access", false],
      ["match-interaction", "match-interaction", false],
      ["request-chat", "request-chat", false],
    ]);
    // What each fixes, unset where the configuration leaves it to the request.
    const fixed = (name: string) => {
      const s = services.find((x) => x.name === name)!;
      return [s.ttlSeconds, s.resourceGroup, s.provideCode, s.accessCodeLength, s.bookingExpirationTimeoutSeconds, s.endpoint];
    };
    expect(fixed("cool-line")).toEqual([undefined, "cool", undefined, 4, 120n, undefined]);
    expect(fixed("listed")).toEqual([600n, "shared", true, undefined, undefined, undefined]);
    expect(fixed("support")).toEqual([600n, undefined, undefined, undefined, undefined, "support"]);
    expect(fixed("helpdesk")).toEqual([undefined, undefined, undefined, undefined, undefined, "helpdesk"]);
    expect(fixed("request-chat")).toEqual([undefined, undefined, undefined, undefined, undefined, "default"]);
    expect(fixed("match-interaction")).toEqual([undefined, undefined, undefined, undefined, undefined, undefined]);
  });

  it("gets a chat's participants, the customer then the agents, with when they joined and left; never the secure key", async () => {
    const customer = createClient(ChatService, t.transport("grpc", KEYS.app));
    const agent = createClient(AgentService, t.transport("grpc", KEYS.app));
    const chat = await customer.requestChat({ service: "helpdesk", nickname: "Cleo" });
    const waiting = await admin.getChatParticipants({ chatId: chat.chatId });
    expect(waiting.chat).toMatchObject({ chatId: chat.chatId, sessionId: chat.sessionId, service: "helpdesk", endpoint: "helpdesk", state: ChatState.WAITING });
    expect(waiting.participants.map((p) => [p.participantId, p.nickname, p.type, p.identity, p.leftAt])).toEqual([[chat.participantId, "Cleo", ParticipantType.CLIENT, "", undefined]]);
    clock.advance(2_000);
    const accepted = await agent.acceptChat({ endpoint: "helpdesk", nickname: "Bob" });
    expect(accepted.chatId).toBe(chat.chatId);
    const joined = await adminConnect.getChatParticipants({ chatId: chat.chatId });
    expect(joined.chat?.state).toBe(ChatState.ACTIVE);
    expect(joined.participants.map((p) => [p.nickname, p.type, p.identity])).toEqual([
      ["Cleo", ParticipantType.CLIENT, ""],
      ["Bob", ParticipantType.AGENT, "app"],
    ]);
    const ms = (ts: { seconds: bigint; nanos: number } | undefined) => Number(ts?.seconds) * 1000 + Math.floor((ts?.nanos ?? 0) / 1e6);
    expect(ms(joined.participants[1]?.joinedAt) - ms(joined.participants[0]?.joinedAt)).toBe(2_000);
    clock.advance(1_000);
    await agent.leaveChat({ chatId: chat.chatId });
    const left = await admin.getChatParticipants({ chatId: chat.chatId });
    expect(left.chat?.state).toBe(ChatState.WAITING);
    expect(ms(left.participants[1]?.leftAt)).toBe(ms(joined.participants[1]?.joinedAt) + 1_000);
    expect(left.participants[0]?.leftAt).toBeUndefined();
    expect(toJsonString(GetChatParticipantsResponseSchema, left)).not.toContain(chat.secureKey);
    expect((await failure(admin.getChatParticipants({ chatId: "0190a0b0-0000-7000-8000-000000000000" })))?.code).toBe(Code.NotFound);
    expect((await failure(admin.getChatParticipants({ chatId: "chat" })))?.code).toBe(Code.InvalidArgument);
  });

  it("gets the configuration in effect with every secret redacted", async () => {
    for (const c of [admin, adminConnect]) {
      const got = await c.getConfiguration({});
      const json = toJsonString(GetConfigurationResponseSchema, got);
      expect(secretsIn(json, [...SECRETS, HASHED_KEY])).toEqual([]);
      const cfg = got.configuration as { auth: { api_keys: Record<string, unknown>[] }; database: { url: string }; bus: { redis_url: string }; resources: Record<string, unknown>; server: { port: number } };
      expect(cfg.auth.api_keys.map((k) => [k["name"], k["key"], k["key_sha256"], k["roles"]])).toEqual([
        ["ops", "<redacted>", undefined, ["admin"]],
        ["backend", "<redacted>", undefined, ["backend"]],
        ["ivr", "<redacted>", undefined, ["ivr"]],
        ["app", "<redacted>", undefined, ["app", "agent"]],
        ["hashed", undefined, "<redacted>", ["backend"]],
      ]);
      expect(cfg.database.url).toBe("mysql://gms:***@db.example:3306/gms?password=***&charset=utf8mb4");
      expect(cfg.bus.redis_url).toBe("redis://:***@redis.example:6379/2");
      expect(Object.keys(cfg.resources).sort()).toEqual(["cool", "locked", "shared"]);
      expect(cfg.server.port).toBe(0);
    }
  });
});
