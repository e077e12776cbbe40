import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import type { RequestInteractionInput } from "../src/domain/access.js";
import type { DataValue } from "../src/domain/value.js";
import { createApp, type App } from "../src/server.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { failure } from "./helpers/failure.js";

const config = parseConfig({
  access: { booking_expiration_timeout: 30, code_attempts: { max_failures: 3, window_seconds: 60 } },
  resources: {
    locked: { numbers: ["+18005550100..+18005550102"], allocation: "round-robin", locking: true, booking_expiration_timeout: 60, cooldown_seconds: 5 },
    shared: { numbers: ["+18005550200"], locking: false, access_code_length: 4 },
    single: { numbers: ["+18005550300"], locking: true },
    extendable: { numbers: ["+18005550400"], locking: true, booking_expiration_timeout: 60, max_booking_expiration_timeout: 600 },
    // 64 numbers: four lanes (lanesFor).
    lanes: { numbers: ["+18005551000..+18005551063"], allocation: "round-robin", locking: true, booking_expiration_timeout: 60 },
  },
  services: {
    iPhoneService: { type: "builtin", name: "request-interaction", ttl: 7200, provide_code: false, resource_group: "locked" },
    codes: { type: "builtin", service: "request-interaction", provide_code: true, access_code_length: 8, resource_group: "shared", booking_expiration_timeout: 20 },
    matcher: { type: "builtin", service: "match-interaction" },
  },
});

const text = (t: string): DataValue => ({ kind: "text", text: t });
let requestIds = 0;


describe.each(DIALECTS)("access numbers on %s", (dialect) => {
  let db: TestDatabase;
  let clock: ManualClock;
  let app: App;

  const request = (o: Partial<RequestInteractionInput> = {}) =>
    app.access.requestInteraction({ service: "", phoneNumber: "+16504669999", appData: new Map(), request: { scope: "t", requestId: "", digest: "" }, ...o });
  const match = (accessNumber: string, o: { phoneNumber?: string; accessCode?: string; returnMultiple?: boolean; returnData?: boolean } = {}) =>
    app.access.matchInteraction({ service: "", accessNumber, returnMultiple: false, returnData: false, ...o });
  /** drain matches every live reservation of a group's numbers, so each test starts with a free pool. */
  const drain = async () => {
    clock.advance(24 * 3600 * 1000);
  };

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    clock = new ManualClock();
    app = createApp({ config, db, clock, log: pino({ level: "silent" }) });
    await app.access.syncNumbers();
  });
  afterAll(() => db.close());

  describe("locking group", () => {
    it("DNIS only: the number alone finds the session, with its data, and releases the number", async () => {
      await drain();
      const r = await request({ resourceGroup: "locked", appData: new Map([["lat", text("48.8583")]]) });
      expect(r.access.accessCode).toBeUndefined();
      expect(r.session.state).toBe("active");
      const [m] = await match(r.access.accessNumber, { returnData: true });
      expect(m?.sessionId).toBe(r.session.id);
      expect(m?.dataId).toBe(r.session.dataId);
      expect(m?.data?.get("lat")).toEqual(text("48.8583"));
      expect((await app.sessions.get(r.session.id)).access).toEqual([]);
      expect((await failure(match(r.access.accessNumber))).detail).toEqual({ type: "no_match", reason: "no_reservation" });
    });

    it("DNIS + ANI: a matching caller number matches; another is a phone mismatch", async () => {
      await drain();
      const r = await request({ resourceGroup: "locked", phoneNumber: "+1 (650) 466-9999" });
      expect(r.session.phoneNumber).toBe("+16504669999");
      expect((await failure(match(r.access.accessNumber, { phoneNumber: "+15550000000" }))).detail).toEqual({ type: "no_match", reason: "phone_mismatch" });
      const [m] = await match(r.access.accessNumber, { phoneNumber: "+1-650-466-9999" });
      expect(m?.sessionId).toBe(r.session.id);
    });

    it("DNIS + access code: the right code matches, a wrong one is a code mismatch", async () => {
      await drain();
      const r = await request({ resourceGroup: "locked", provideCode: true, codeLength: 6 });
      expect(r.access.accessCode).toMatch(/^[0-9]{6}$/);
      const wrong = r.access.accessCode === "000000" ? "111111" : "000000";
      expect((await failure(match(r.access.accessNumber, { accessCode: wrong }))).detail).toEqual({ type: "no_match", reason: "code_mismatch" });
      const [m] = await match(r.access.accessNumber, { accessCode: r.access.accessCode });
      expect(m?.sessionId).toBe(r.session.id);
    });

    it("no match on a number nobody holds", async () => {
      await drain();
      const e = await failure(match("+18005550101"));
      expect(e.kind).toBe("not_found");
      expect(e.detail).toEqual({ type: "no_match", reason: "no_reservation" });
    });

    it("hands each number to one session at a time, round-robin, then reports when one frees up", async () => {
      await drain();
      const got = [];
      for (let i = 0; i < 3; i++) got.push(await request({ resourceGroup: "locked" }));
      expect(new Set(got.map((g) => g.access.accessNumber)).size).toBe(3);
      const e = await failure(request({ resourceGroup: "locked" }));
      expect(e.kind).toBe("resource_exhausted");
      expect(e.detail).toEqual({ type: "pool_exhausted", resourceGroup: "locked", nextFreeAt: Math.min(...got.map((g) => g.access.expiresAt)) });
      // Nothing half-created: no session, no data for the refused request.
      const sessions = Number(((await db.knex("sessions").where("expires_at", ">", clock.now()).count({ n: "*" })) as { n: number }[])[0]?.n);
      expect(sessions).toBe(3);
    });

    it("round-robin hands out the number free the longest", async () => {
      await drain();
      const held = [await request({ resourceGroup: "locked" }), await request({ resourceGroup: "locked" }), await request({ resourceGroup: "locked" })];
      const numbers = held.map((h) => h.access.accessNumber);
      // Released in the order 2, 0, 1: after the cool-down they come back in that order.
      for (const i of [2, 0, 1]) {
        await match(numbers[i]!);
        clock.advance(1);
      }
      clock.advance(5_000);
      const again = [];
      for (let i = 0; i < 3; i++) again.push((await request({ resourceGroup: "locked" })).access.accessNumber);
      expect(again).toEqual([numbers[2], numbers[0], numbers[1]]);
    });

    it("a large round-robin group is split into lanes: each lane hands out its number free the longest, and a claim finds a free number in any lane", async () => {
      await drain();
      const laneOf = new Map(
        ((await db.knex("access_numbers").where("resource_group", "lanes").select("number", "lane")) as { number: string; lane: number | string }[]).map((r) => [r.number, Number(r.lane)]),
      );
      // Consecutive numbers in consecutive lanes, 0 to 3.
      const configured = config.resources["lanes"]!.numbers;
      expect(configured.map((n) => laneOf.get(n))).toEqual(configured.map((_, i) => i % 4));
      const take = async (n: number) => {
        const got: string[] = [];
        for (let i = 0; i < n; i++) got.push((await request({ resourceGroup: "lanes" })).access.accessNumber);
        return got;
      };
      // Every number is handed out, the last ones from whichever lanes still have one, then none.
      const first = await take(64);
      expect(new Set(first).size).toBe(64);
      // Claims start in a random lane: 64 of them all in one lane would be a (1/4)^63 chance.
      expect(new Set(first.slice(0, 16).map((n) => laneOf.get(n))).size).toBeGreaterThan(1);
      expect((await failure(request({ resourceGroup: "lanes" }))).kind).toBe("resource_exhausted");
      // Released in a shuffled order, one millisecond apart: within each lane they come back in that order.
      const released = [...first].sort(() => Math.random() - 0.5);
      for (const n of released) {
        await match(n);
        clock.advance(1);
      }
      const second = await take(64);
      expect(new Set(second).size).toBe(64);
      // Not the whole group's order (that is one lane's behaviour): each claim started in a random lane.
      expect(second).not.toEqual(released);
      for (let lane = 0; lane < 4; lane++) {
        const inLane = (list: string[]) => list.filter((n) => laneOf.get(n) === lane);
        expect(inLane(second)).toEqual(inLane(released));
      }
    });

    it("expiry frees the number and the session at the moment it lapses", async () => {
      await drain();
      const r = await request({ resourceGroup: "single", ttlSeconds: 600, bookingSeconds: 45 });
      expect(r.access.expirationSeconds).toBe(45);
      expect((await failure(request({ resourceGroup: "single" }))).kind).toBe("resource_exhausted");
      clock.advance(45_000);
      expect((await failure(match(r.access.accessNumber))).kind).toBe("not_found");
      const again = await request({ resourceGroup: "single", ttlSeconds: 10 });
      expect(again.access.accessNumber).toBe(r.access.accessNumber);
      clock.advance(10_000);
      expect((await failure(app.sessions.get(again.session.id))).kind).toBe("not_found");
      expect((await failure(app.storage.get(again.session.dataId))).kind).toBe("not_found");
    });

    it("a released number rests for the cool-down before it is handed out again", async () => {
      await drain();
      const held = [await request({ resourceGroup: "locked" }), await request({ resourceGroup: "locked" }), await request({ resourceGroup: "locked" })];
      await match(held[0]!.access.accessNumber);
      expect((await failure(request({ resourceGroup: "locked" }))).detail).toMatchObject({ nextFreeAt: clock.now() + 5_000 });
      clock.advance(5_000);
      const next = await request({ resourceGroup: "locked" });
      expect(next.access.accessNumber).toBe(held[0]!.access.accessNumber);
    });
  });

  describe("non-locking group", () => {
    it("shares a number between sessions told apart by access code", async () => {
      await drain();
      const a = await request({ service: "codes", phoneNumber: "+15550000001" });
      const b = await request({ service: "codes", phoneNumber: "+15550000002" });
      expect(a.access.accessNumber).toBe(b.access.accessNumber);
      expect(a.access.accessCode).toMatch(/^[0-9]{8}$/);
      expect(a.access.accessCode).not.toBe(b.access.accessCode);
      expect((await match(a.access.accessNumber, { accessCode: b.access.accessCode }))[0]?.sessionId).toBe(b.session.id);
      expect((await match(a.access.accessNumber, { accessCode: a.access.accessCode }))[0]?.sessionId).toBe(a.session.id);
    });

    it("DNIS + ANI tells sessions apart by the caller's number", async () => {
      await drain();
      const a = await request({ resourceGroup: "shared", phoneNumber: "+15550000001" });
      const b = await request({ resourceGroup: "shared", phoneNumber: "+15550000002" });
      expect((await match(a.access.accessNumber, { phoneNumber: "+15550000001" }))[0]?.sessionId).toBe(a.session.id);
      expect((await match(b.access.accessNumber, { phoneNumber: "+15550000002" }))[0]?.sessionId).toBe(b.session.id);
      expect((await failure(match(a.access.accessNumber, { phoneNumber: "+15550000003" }))).detail).toMatchObject({ reason: "no_reservation" });
    });

    it("DNIS only: the most recent, or every candidate with return_multiple_matches", async () => {
      await drain();
      const a = await request({ resourceGroup: "shared" });
      clock.advance(1);
      const b = await request({ resourceGroup: "shared" });
      clock.advance(1);
      const c = await request({ resourceGroup: "shared" });
      expect((await match(a.access.accessNumber)).map((m) => m.sessionId)).toEqual([c.session.id]);
      expect((await match(a.access.accessNumber, { returnMultiple: true })).map((m) => m.sessionId)).toEqual([b.session.id, a.session.id]);
      expect((await failure(match(a.access.accessNumber))).kind).toBe("not_found");
    });

    it("no match: code and phone mismatches are told apart", async () => {
      await drain();
      const a = await request({ service: "codes", phoneNumber: "+15550000001" });
      expect((await failure(match(a.access.accessNumber, { accessCode: "00000000" === a.access.accessCode ? "11111111" : "00000000" }))).detail).toMatchObject({
        reason: "code_mismatch",
      });
      expect((await failure(match(a.access.accessNumber, { accessCode: a.access.accessCode, phoneNumber: "+15559999999" }))).detail).toMatchObject({
        reason: "phone_mismatch",
      });
    });
  });

  describe("services and precedence", () => {
    it("the seed's iPhoneService: configuration wins over the request", async () => {
      await drain();
      const r = await request({ service: "iPhoneService", provideCode: true, ttlSeconds: 5, resourceGroup: "shared" });
      expect(r.ttlSeconds).toBe(7200);
      expect(r.provideCode).toBe(false);
      expect(r.access.accessCode).toBeUndefined();
      expect(r.access.resourceGroup).toBe("locked");
      expect(r.session.service).toBe("iPhoneService");
      expect(r.session.builtin).toBe("request-interaction");
      expect(r.session.expiresAt).toBe(clock.now() + 7_200_000);
    });

    it("booking time: request > group > global default, unless the service fixes it", async () => {
      await drain();
      expect((await request({ resourceGroup: "locked", ttlSeconds: 3600 })).access.expirationSeconds).toBe(60);
      expect((await request({ resourceGroup: "locked", ttlSeconds: 3600, bookingSeconds: 90 })).access.expirationSeconds).toBe(90);
      expect((await request({ resourceGroup: "shared", ttlSeconds: 3600 })).access.expirationSeconds).toBe(30);
      expect((await request({ service: "codes", ttlSeconds: 3600, bookingSeconds: 90 })).access.expirationSeconds).toBe(20);
    });

    it("unknown services, wrong builtins and missing groups are refused", async () => {
      expect((await failure(request({ service: "nope", resourceGroup: "locked" }))).kind).toBe("not_found");
      expect((await failure(request({ service: "matcher", resourceGroup: "locked" }))).kind).toBe("invalid_argument");
      expect((await failure(request({ service: "request-chat", resourceGroup: "locked" }))).kind).toBe("invalid_argument");
      expect((await failure(request({}))).kind).toBe("failed_precondition");
      expect((await failure(request({ resourceGroup: "nowhere" }))).kind).toBe("invalid_argument");
      expect((await failure(request({ resourceGroup: "locked", phoneNumber: "call me" }))).kind).toBe("invalid_argument");
      expect((await failure(match("+18005550100", { returnMultiple: false, phoneNumber: "x" }))).kind).toBe("invalid_argument");
    });
  });

  describe("retries and guessing", () => {
    it("a retried request with the same request id returns the first reply and allocates nothing", async () => {
      await drain();
      const key = { scope: "RequestInteraction:tester", requestId: `retry-${++requestIds}`, digest: "d" };
      const first = await request({ resourceGroup: "locked", request: key });
      const again = await request({ resourceGroup: "locked", request: key });
      expect(again).toEqual(first);
      const live = await db.knex("reservations").where("session_id", first.session.id).count({ n: "*" });
      expect(Number((live as { n: number }[])[0]?.n)).toBe(1);
      const other = await request({ resourceGroup: "locked", request: { ...key, scope: "RequestInteraction:someone-else" } });
      expect(other.session.id).not.toBe(first.session.id);
    });

    it("too many wrong codes lock the number for the rest of the window, even for the right code", async () => {
      await drain();
      const r = await request({ service: "codes" });
      const wrong = r.access.accessCode === "00000000" ? "11111111" : "00000000";
      for (let i = 0; i < 3; i++) expect((await failure(match(r.access.accessNumber, { accessCode: wrong }))).kind).toBe("not_found");
      const locked = await failure(match(r.access.accessNumber, { accessCode: r.access.accessCode }));
      expect(locked.kind).toBe("resource_exhausted");
      expect(locked.detail).toEqual({ type: "rate_limited", until: clock.now() + 60_000 });
      clock.advance(60_000);
      // The window has passed; the reservation (20 s booking) has too, so the match now finds nothing.
      expect((await failure(match(r.access.accessNumber, { accessCode: r.access.accessCode }))).detail).toMatchObject({ type: "no_match" });
    });
  });

  describe("sessions", () => {
    it("request-access adds a reservation to an active session; a session holds several", async () => {
      await drain();
      const r = await request({ resourceGroup: "locked", ttlSeconds: 600 });
      const more = await app.access.requestAccess({ service: "", sessionId: r.session.id, resourceGroup: "shared", provideCode: true, request: { scope: "t", requestId: "", digest: "" } });
      expect(more.accessCode).toMatch(/^[0-9]{4}$/);
      expect((await app.sessions.get(r.session.id)).access.map((a) => a.resourceGroup).sort()).toEqual(["locked", "shared"]);
      const m = await match(more.accessNumber, { accessCode: more.accessCode });
      expect(m[0]?.sessionId).toBe(r.session.id);
      expect((await failure(app.access.requestAccess({ service: "", sessionId: "00000000-0000-4000-8000-000000000000", resourceGroup: "shared", request: { scope: "t", requestId: "", digest: "" } }))).kind).toBe(
        "not_found",
      );
    });

    it("cancel releases every reservation, deletes the data and ends the session", async () => {
      await drain();
      const r = await request({ resourceGroup: "single", ttlSeconds: 600 });
      await app.sessions.cancel(r.session.id);
      await app.sessions.cancel(r.session.id);
      expect((await app.sessions.get(r.session.id)).state).toBe("ended");
      expect((await failure(app.storage.get(r.session.dataId))).kind).toBe("not_found");
      expect((await failure(match(r.access.accessNumber))).kind).toBe("not_found");
      expect((await failure(app.access.requestAccess({ service: "", sessionId: r.session.id, resourceGroup: "locked", request: { scope: "t", requestId: "", digest: "" } }))).kind).toBe(
        "failed_precondition",
      );
      expect((await request({ resourceGroup: "single" })).access.accessNumber).toBe(r.access.accessNumber);
    });

    it("update adds and removes data entries of an active session", async () => {
      await drain();
      const r = await request({ resourceGroup: "locked", ttlSeconds: 600, appData: new Map([["a", text("1")]]) });
      const { version } = await app.sessions.updateData(r.session.id, new Map([["b", text("2")]]), ["a"]);
      expect(version).toBe(2);
      expect([...(await app.storage.get(r.session.dataId)).entries.keys()]).toEqual(["b"]);
    });

    it("extend gives the session, its data and (within the group's maximum) its reservations a new life", async () => {
      await drain();
      const r = await request({ resourceGroup: "extendable", ttlSeconds: 120 });
      expect(r.access.expirationSeconds).toBe(60);
      const extended = await app.sessions.extend(r.session.id, 3600);
      expect(extended.expiresAt).toBe(clock.now() + 3_600_000);
      expect((await app.storage.get(r.session.dataId)).expiresAt).toBe(clock.now() + 3_600_000);
      expect(extended.access[0]?.expiresAt).toBe(clock.now() + 600_000);
      clock.advance(300_000);
      expect((await match(r.access.accessNumber))[0]?.sessionId).toBe(r.session.id);
    });
  });

  it("synchronising numbers retires removed ones and is idempotent", async () => {
    const first = await app.access.syncNumbers();
    expect(first).toEqual({ added: 0, retired: 0 });
    await db.knex("access_numbers").insert({ resource_group: "locked", number: "+18005559999", retired: false, available_at: 0, last_used_at: 0, rand_key: 0.5 });
    expect((await app.access.syncNumbers()).retired).toBe(1);
    const row = (await db.knex("access_numbers").where({ number: "+18005559999" }).first()) as { retired: number | boolean };
    expect(Boolean(row.retired)).toBe(true);
  });

  it("synchronising numbers puts them in lanes by the configured group's size, and moves them when it changes", async () => {
    const lanesOf = async () =>
      ((await db.knex("access_numbers").where({ resource_group: "growing", retired: false }).orderBy("number").select("lane")) as { lane: number | string }[]).map((r) => Number(r.lane));
    const sync = (last: number) =>
      createApp({
        config: parseConfig({ resources: { growing: { numbers: [`+18005552000..+1800555${2000 + last}`], allocation: "round-robin", locking: true } } }),
        db,
        clock,
        log: pino({ level: "silent" }),
      }).access.syncNumbers();
    // 31 numbers: one lane. 40: two. 80: five. Back to 40: two again, the other 40 retired.
    await sync(30);
    expect(await lanesOf()).toEqual(Array.from({ length: 31 }, () => 0));
    await sync(39);
    expect(await lanesOf()).toEqual(Array.from({ length: 40 }, (_, i) => i % 2));
    await sync(79);
    expect(await lanesOf()).toEqual(Array.from({ length: 80 }, (_, i) => i % 5));
    expect(await sync(39)).toMatchObject({ retired: 40 });
    expect(await lanesOf()).toEqual(Array.from({ length: 40 }, (_, i) => i % 2));
    // That configuration knew only "growing": the file's own groups come back.
    await app.access.syncNumbers();
  });
});
