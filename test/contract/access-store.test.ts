// The AccessStore contract (src/domain/access-store.ts), operation by operation, on every dialect:
// what each operation stores, read back through the store and from the rows themselves (on MySQL
// the procedures' writes: reservations, access_numbers.available_at and last_used_at, sessions,
// data, idempotency_keys, code_failures). A new dialect's store passes this suite unchanged. Run on
// a pool of one connection, so that what a failed call leaves on its connection is what the next
// call gets.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Booking, CodeChooser, LockedNumber, NewSessionClaim, Reservation, ResourceGroup, SessionClaim } from "../../src/domain/access-store.js";
import type { Session } from "../../src/domain/session-store.js";
import type { DataRecord } from "../../src/domain/storage-store.js";
import type { DataEntries } from "../../src/domain/value.js";
import { openDatabase } from "../../src/store/database.js";
import { createStores, type Stores } from "../../src/store/stores.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";

const NUMBERS = ["+18005552000", "+18005552001"];
const SHARED_NUMBER = "+18005553000";
const CALLER = "+16505550100";
/** LOCKED is a locking round-robin group of two numbers; SHARED a non-locking group of one. */
const LOCKED: ResourceGroup = { name: "g", locking: true, allocation: "round-robin", size: NUMBERS.length };
const SHARED: ResourceGroup = { name: "s", locking: false, allocation: "round-robin", size: 1 };
/** SPARE is a locking group with one number, for the operations that need a reservation of their own. */
const SPARE_NUMBERS = ["+18005554000", "+18005554001", "+18005554002", "+18005554003"];
const SPARE: ResourceGroup = { name: "spare", locking: true, allocation: "random", size: SPARE_NUMBERS.length };

describe.each(DIALECTS)("AccessStore on %s", (dialect) => {
  let db: TestDatabase;
  let stores: Stores;
  let now = 1_000_000;
  let ids = 0;

  /** fresh is a new session (with its record) to claim for, `ttl` ms from now. */
  const fresh = (ttl = 60_000, entries: DataEntries = new Map()) => {
    const n = ++ids;
    const id = `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;
    const dataId = `00000000-0000-4000-9000-${String(n).padStart(12, "0")}`;
    const session: Session = { id, service: "iPhoneService", builtin: "request-interaction", state: "active", phoneNumber: CALLER, dataId, createdAt: now, expiresAt: now + ttl };
    const record: DataRecord = { id: dataId, version: 1, createdAt: now, expiresAt: now + ttl, entries };
    return { session, record };
  };
  const open = (f: ReturnType<typeof fresh>, o: Partial<NewSessionClaim> = {}) =>
    stores.access.openSession({ group: LOCKED, now, session: f.session, record: f.record, bookedUntil: now + 30_000, ...o });
  /** stored opens a session for the SessionClaims to claim more for (on SPARE, briefly, so it takes no number of the groups under test). */
  const stored = async (ttl = 600_000) => {
    const f = fresh(ttl);
    expect(await open(f, { group: SPARE, bookedUntil: now + 1_000 })).toBeDefined();
    return f.session;
  };
  const booking = (s: Session | undefined): Booking => {
    if (s === undefined) throw new Error("no session");
    return { phoneNumber: s.phoneNumber, expiresAt: now + 30_000 };
  };
  const add = (sessionId: string, o: Partial<SessionClaim> = {}) => stores.access.addReservation({ sessionId, group: LOCKED, now, book: booking, ...o });
  const count = async (table: string) => Number(((await db.knex(table).count({ n: "*" })) as { n: number | string }[])[0]?.n ?? 0);
  const counts = (tables: string[]) => Promise.all(tables.map(count));
  const numberRow = async (group: string, number: string) => {
    const row = (await db.knex("access_numbers").where({ resource_group: group, number }).first("available_at", "last_used_at", "retired", "lane")) as Record<string, number | string | boolean>;
    return { availableAt: Number(row["available_at"]), lastUsedAt: Number(row["last_used_at"]), retired: Boolean(row["retired"]), lane: Number(row["lane"]) };
  };
  const reservationRows = async (where: Record<string, unknown>) =>
    ((await db.knex("reservations").where(where).orderBy("id")) as Record<string, unknown>[]).map((r) => ({
      sessionId: r["session_id"],
      group: r["resource_group"],
      number: r["access_number"],
      code: r["access_code"],
      phone: r["phone_number"],
      locking: Boolean(r["locking"]),
      createdAt: Number(r["created_at"]),
      expiresAt: Number(r["expires_at"]),
      releasedAt: r["released_at"] === null ? null : Number(r["released_at"]),
    }));
  /** freeLongest is the number of LOCKED a round-robin claim takes now: free the longest, then the lowest. */
  const freeLongest = async () => {
    const rows = await Promise.all(NUMBERS.map(async (n) => ({ n, at: (await numberRow("g", n)).availableAt })));
    return rows.filter((r) => r.at <= now).sort((x, y) => x.at - y.at || (x.n < y.n ? -1 : 1))[0]?.n;
  };
  /** inTransaction tells whether the pool's one connection was left inside a transaction (MySQL). */
  const inTransaction = async () => Number(((await db.knex.raw("SELECT @@in_transaction AS open")) as [{ open: number }[]])[0][0]?.open);
  /** chooser returns the codes given, in order, recording what it was shown. */
  const chooser = (...codes: string[]) => {
    const shown: { taken: string[]; number: string | undefined }[] = [];
    const choose: CodeChooser = (taken, number) => {
      shown.push({ taken: [...taken].sort(), number });
      const code = codes.find((c) => !taken.has(c));
      if (code === undefined) throw new Error("no code left");
      return code;
    };
    return { choose, shown };
  };

  beforeAll(async () => {
    db = await createTestDatabase(dialect, { poolMax: 1 });
    stores = createStores(db);
    await stores.access.syncNumbers(new Map([["g", NUMBERS], ["s", [SHARED_NUMBER]], ["spare", SPARE_NUMBERS]]));
  });
  afterAll(() => db.close());

  describe("syncNumbers", () => {
    it("adds the configured numbers in their lanes, retires the others, un-retires those configured again, and is idempotent", async () => {
      const numbers = Array.from({ length: 40 }, (_, i) => `+1800555${String(5000 + i)}`);
      expect(await stores.access.syncNumbers(new Map([["g", NUMBERS], ["s", [SHARED_NUMBER]], ["spare", SPARE_NUMBERS], ["big", numbers]]))).toEqual({ added: 40, retired: 0 });
      // 40 numbers: two lanes, the number at position i in lane i mod 2.
      expect(await Promise.all(numbers.map(async (n) => (await numberRow("big", n)).lane))).toEqual(numbers.map((_, i) => i % 2));
      expect(await stores.access.syncNumbers(new Map([["g", NUMBERS], ["s", [SHARED_NUMBER]], ["spare", SPARE_NUMBERS], ["big", numbers]]))).toEqual({ added: 0, retired: 0 });
      // Half of them go: retired, the rest in one lane; then back.
      expect(await stores.access.syncNumbers(new Map([["g", NUMBERS], ["s", [SHARED_NUMBER]], ["spare", SPARE_NUMBERS], ["big", numbers.slice(0, 20)]]))).toEqual({ added: 0, retired: 20 });
      expect((await numberRow("big", numbers[30]!)).retired).toBe(true);
      expect(await Promise.all(numbers.slice(0, 20).map(async (n) => (await numberRow("big", n)).lane))).toEqual(Array.from({ length: 20 }, () => 0));
      expect(await stores.access.hasNumbers("big")).toBe(true);
      // A group no longer configured at all is retired whole.
      expect(await stores.access.syncNumbers(new Map([["g", NUMBERS], ["s", [SHARED_NUMBER]], ["spare", SPARE_NUMBERS]]))).toEqual({ added: 0, retired: 20 });
      expect(await stores.access.hasNumbers("big")).toBe(false);
      expect(await stores.access.syncNumbers(new Map([["g", NUMBERS], ["s", [SHARED_NUMBER]], ["spare", SPARE_NUMBERS], ["big", numbers]]))).toEqual({ added: 0, retired: 0 });
      expect((await numberRow("big", numbers[30]!)).retired).toBe(false);
      await stores.access.syncNumbers(new Map([["g", NUMBERS], ["s", [SHARED_NUMBER]], ["spare", SPARE_NUMBERS]]));
    });
  });

  describe("openSession", () => {
    it("claims the number free the longest and stores the session, its empty record and the reservation, at the claim's time", async () => {
      const { session, record } = fresh();
      const { choose } = chooser("1234");
      expect(await open({ session, record }, { chooseCode: choose })).toEqual({ accessNumber: NUMBERS[0], accessCode: "1234" });
      const row = (await db.knex("sessions").where("id", session.id).first()) as Record<string, unknown>;
      expect(row).toMatchObject({ service: "iPhoneService", builtin: "request-interaction", state: "active", phone_number: CALLER, data_id: record.id });
      expect(Number(row["created_at"])).toBe(now);
      expect(Number(row["expires_at"])).toBe(now + 60_000);
      const data = (await db.knex("storage_data").where("id", record.id).first()) as Record<string, unknown>;
      expect([Number(data["version"]), Number(data["created_at"]), Number(data["expires_at"])]).toEqual([1, now, now + 60_000]);
      expect(await db.knex("storage_entries").where("data_id", record.id).count({ n: "*" })).toEqual([{ n: 0 }]);
      const reservation = (await db.knex("reservations").where("session_id", session.id).first()) as Record<string, unknown>;
      expect(reservation).toMatchObject({ resource_group: "g", access_number: NUMBERS[0], access_code: "1234", phone_number: CALLER });
      expect([Number(reservation["created_at"]), Number(reservation["expires_at"])]).toEqual([now, now + 30_000]);
      // Busy until its booking ends.
      expect((await numberRow("g", NUMBERS[0]!)).availableAt).toBe(now + 30_000);
      // Read back through the stores.
      expect(await stores.sessions.read(session.id, now)).toEqual(session);
      expect(await stores.storage.read(record.id, now)).toEqual(record);
      expect(await stores.access.liveReservations(session.id, now)).toEqual([
        { id: expect.any(Number) as number, sessionId: session.id, resourceGroup: "g", accessNumber: NUMBERS[0], accessCode: "1234", phoneNumber: CALLER, locking: true, createdAt: now, expiresAt: now + 30_000 },
      ]);
    });

    it("stores the record's entries with it, byte for byte, whatever their size (inside the CALL on MySQL, as JSON)", async () => {
      const bytes = new Uint8Array(256).map((_, i) => i);
      const small: DataEntries = new Map([
        ["reason", { kind: "text", text: "billing — facture, 請求 🧾" }],
        ["clé", { kind: "text", text: "" }],
        // The longest key storage.max_key_bytes allows (512 bytes) fits the key column.
        ["k".repeat(512), { kind: "text", text: "long key" }],
        ["photo", { kind: "file", filename: "reçu.png", contentType: "image/png", content: bytes }],
      ]);
      // Over 64 KiB of values: went as binary rows of their own before the paths were folded.
      const large: DataEntries = new Map([
        ["reason", { kind: "text", text: "x".repeat(40_000) }],
        ["é".repeat(256), { kind: "text", text: "long key" }],
        ["scan", { kind: "file", filename: "scan.pdf", contentType: "application/pdf", content: new Uint8Array(40_000).fill(7) }],
      ]);
      for (const entries of [small, large]) {
        now += 60_000;
        const f = fresh(60_000, entries);
        expect(await open(f)).toBeDefined();
        const rows = (await db.knex("storage_entries").where("data_id", f.record.id).select("entry_key", "kind", "value", "filename", "content_type", "size")) as Record<string, unknown>[];
        const byKey = new Map(rows.map((r) => [r["entry_key"] as string, r]));
        expect([...byKey.keys()].sort()).toEqual([...entries.keys()].sort());
        for (const [key, value] of entries) {
          const row = byKey.get(key)!;
          const content = value.kind === "text" ? Buffer.from(value.text, "utf8") : Buffer.from(value.content);
          expect(Buffer.from(row["value"] as Uint8Array).equals(content)).toBe(true);
          expect(row).toMatchObject(
            value.kind === "text"
              ? { kind: "text", filename: null, content_type: null, size: content.byteLength }
              : { kind: "file", filename: value.filename, content_type: value.contentType, size: content.byteLength },
          );
        }
        expect(await stores.storage.read(f.record.id, now)).toEqual(f.record);
      }
    });

    it("with no free number stores nothing and says so", async () => {
      // Take whatever number is still free.
      for (let held = 0; held < NUMBERS.length; held++) {
        if ((await open(fresh())) === undefined) break;
      }
      const before = await counts(["sessions", "storage_data", "storage_entries", "reservations"]);
      expect(await open(fresh())).toBeUndefined();
      expect(await open(fresh(60_000, new Map([["k", { kind: "text", text: "v" }]])))).toBeUndefined();
      expect(await counts(["sessions", "storage_data", "storage_entries", "reservations"])).toEqual(before);
    });

    it("rolls back all of it when a write fails, and its connection serves the next call", async () => {
      now += 60_000; // Both bookings have ended: both numbers are free.
      const { session, record } = fresh();
      // A session with this id exists already: the session's INSERT fails after the claim and the record's.
      await db.knex("sessions").insert({ id: session.id, service: "x", builtin: "request-interaction", state: "active", phone_number: CALLER, data_id: "d", created_at: 0, expires_at: 0 });
      const before = await counts(["sessions", "storage_data", "reservations"]);
      const free = (await numberRow("g", NUMBERS[0]!)).availableAt;
      await expect(open({ session, record })).rejects.toThrow(/duplicate|unique/i);
      expect(await counts(["sessions", "storage_data", "reservations"])).toEqual(before);
      expect((await numberRow("g", NUMBERS[0]!)).availableAt).toBe(free);
      if (dialect === "mysql") {
        expect(await inTransaction()).toBe(0);
        // The procedures roll back by themselves (their EXIT HANDLER), with no ROLLBACK from the caller.
        for (const procedure of ["gms_claim_session_v1", "gms_claim_session_v2"]) {
          await expect(
            db.knex.raw(`CALL ${procedure}('g', TRUE, FALSE, NULL, 0.5, ?, ?, NULL, ?, ?, 'x', 'request-interaction', ?, ?, NULL, NULL, NULL, NULL, NULL, NULL)`, [now, session.id, CALLER, now + 1, record.id, now + 1]),
          ).rejects.toThrow(/duplicate/i);
          expect(await inTransaction()).toBe(0);
          expect((await numberRow("g", NUMBERS[0]!)).availableAt).toBe(free);
        }
      }
      expect(await open(fresh())).toEqual({ accessNumber: NUMBERS[0], accessCode: undefined });
    });

    it("with a request id keeps the first reply, the number put in, and a retry gets it back and claims nothing", async () => {
      now += 60_000;
      const keys = await count("idempotency_keys");
      const once = (requestId: string) => ({
        id: { scope: "RequestInteraction:app-1", requestId },
        reply: (n: string, c: string | undefined) => ({ reply: JSON.stringify({ access: { accessNumber: n, accessCode: c }, all: [n, n] }), keepUntil: now + 60_000 }),
      });
      const first = await open(fresh(), { once: once("checkout-1") });
      expect(first?.accessNumber).toBeDefined();
      const kept = JSON.stringify({ access: { accessNumber: first!.accessNumber }, all: [first!.accessNumber, first!.accessNumber] });
      const row = (await db.knex("idempotency_keys").where({ scope: "RequestInteraction:app-1", request_id: "checkout-1" }).first()) as Record<string, unknown>;
      expect(row["result"]).toBe(kept);
      expect(Number(row["expires_at"])).toBe(now + 60_000);
      const before = await counts(["sessions", "storage_data", "reservations"]);
      expect(await open(fresh(), { once: once("checkout-1") })).toEqual({ prior: kept });
      expect(await counts(["sessions", "storage_data", "reservations"])).toEqual(before);
      // Another request id claims on: the last number; then none is free, and that id is not kept.
      expect((await open(fresh(), { once: once("checkout-2") }))?.accessNumber).toBeDefined();
      expect(await open(fresh(), { once: once("checkout-3") })).toBeUndefined();
      expect(await count("idempotency_keys")).toBe(keys + 2);
      // Once a number is free again, the same id claims as a first call.
      now += 60_000;
      expect((await open(fresh(), { once: once("checkout-3") }))?.accessNumber).toBeDefined();
    });

    it("with a request id and a large record, keeps the first result the same way", async () => {
      now += 60_000;
      const large: DataEntries = new Map([["scan", { kind: "file", filename: "scan.pdf", contentType: "application/pdf", content: new Uint8Array(70_000).fill(9) }]]);
      const once = { id: { scope: "RequestInteraction:app-3", requestId: "large-1" }, reply: (n: string) => ({ reply: JSON.stringify({ n }), keepUntil: now + 60_000 }) };
      const first = await open(fresh(60_000, large), { once });
      expect(first?.accessNumber).toBeDefined();
      const before = await counts(["sessions", "storage_data", "storage_entries", "reservations"]);
      expect(await open(fresh(60_000, large), { once })).toEqual({ prior: JSON.stringify({ n: first!.accessNumber }) });
      expect(await counts(["sessions", "storage_data", "storage_entries", "reservations"])).toEqual(before);
    });

    it("with a request id, concurrent first calls claim once: the others wait and get its result", async () => {
      now += 60_000;
      const once = { id: { scope: "RequestInteraction:app-2", requestId: "race-1" }, reply: (n: string) => ({ reply: JSON.stringify({ n }), keepUntil: now + 60_000 }) };
      const before = await count("reservations");
      // A pool of its own with a connection per call (SQLite serialises them on its one).
      const wide = await openDatabase(db.url, { migrate: false, poolMax: 5 });
      const access = createStores(wide).access;
      const got = await Promise.all(
        Array.from({ length: 5 }, () => fresh()).map((f) => access.openSession({ group: LOCKED, now, session: f.session, record: f.record, bookedUntil: now + 30_000, once })),
      ).finally(() => wide.close());
      const claimed = got.filter((g) => g?.accessNumber !== undefined);
      expect(claimed).toHaveLength(1);
      expect(got.filter((g) => g?.prior !== undefined)).toEqual(Array.from({ length: 4 }, () => ({ prior: JSON.stringify({ n: claimed[0]!.accessNumber }) })));
      expect(await count("reservations")).toBe(before + 1);
    });

    it("on a shared number: a code unique among its live reservations, drawn again when taken; the number marked used now", async () => {
      now += 60_000;
      const first = chooser("1111");
      expect(await open(fresh(), { group: SHARED, chooseCode: first.choose })).toEqual({ accessNumber: SHARED_NUMBER, accessCode: "1111" });
      expect((await numberRow("s", SHARED_NUMBER)).lastUsedAt).toBe(now);
      now += 1;
      // The second draws 1111 again: taken, it is shown the number's live codes and draws 2222.
      const second = chooser("1111", "2222");
      expect(await open(fresh(), { group: SHARED, chooseCode: second.choose })).toEqual({ accessNumber: SHARED_NUMBER, accessCode: "2222" });
      expect(second.shown.at(-1)).toEqual({ taken: ["1111"], number: SHARED_NUMBER });
      expect((await reservationRows({ access_number: SHARED_NUMBER })).map((r) => [r.code, r.locking, r.expiresAt])).toEqual([
        ["1111", false, now - 1 + 30_000],
        ["2222", false, now + 30_000],
      ]);
      // Shared: the number stays available, its use recorded.
      expect(await numberRow("s", SHARED_NUMBER)).toMatchObject({ availableAt: 0, lastUsedAt: now });
      // No code left for it: the chooser's refusal, and nothing stored.
      const before = await counts(["sessions", "storage_data", "reservations"]);
      await expect(open(fresh(), { group: SHARED, chooseCode: chooser("1111", "2222").choose })).rejects.toThrow("no code left");
      expect(await counts(["sessions", "storage_data", "reservations"])).toEqual(before);
      if (dialect === "mysql") expect(await inTransaction()).toBe(0);
    });

    it("refuses a session that is not the reservation's new active one", async () => {
      const { session, record } = fresh();
      await expect(open({ session: { ...session, state: "ended" }, record })).rejects.toThrow("new active one");
      await expect(open({ session, record: { ...record, expiresAt: 1 } })).rejects.toThrow("expires with it");
    });
  });

  describe("addReservation", () => {
    it("books the session as locked and stores the reservation on the number claimed", async () => {
      now += 60_000;
      const session = await stored();
      const seen: (Session | undefined)[] = [];
      const number = await freeLongest();
      const got = await add(session.id, {
        chooseCode: chooser("4321").choose,
        book: (s) => {
          seen.push(s);
          return { phoneNumber: "+15550000009", expiresAt: now + 45_000 };
        },
      });
      expect(got).toEqual({ accessNumber: number, accessCode: "4321" });
      expect(seen).toEqual([session]);
      expect(await reservationRows({ session_id: session.id, resource_group: "g" })).toEqual([
        { sessionId: session.id, group: "g", number, code: "4321", phone: "+15550000009", locking: true, createdAt: now, expiresAt: now + 45_000, releasedAt: null },
      ]);
      expect((await numberRow("g", number!)).availableAt).toBe(now + 45_000);
      expect((await stores.access.liveReservations(session.id, now)).map((r) => r.accessNumber)).toContain(number);
    });

    it("a booking refused (or no live session) stores nothing, and the connection serves the next call", async () => {
      now += 60_000;
      const session = await stored();
      const before = await counts(["reservations"]);
      const seen: (Session | undefined)[] = [];
      await expect(
        add("00000000-0000-4000-8000-999999999999", {
          book: (s) => {
            seen.push(s);
            throw new Error("refused");
          },
        }),
      ).rejects.toThrow("refused");
      expect(seen).toEqual([undefined]);
      await expect(
        add(session.id, {
          book: () => {
            throw new Error("refused");
          },
        }),
      ).rejects.toThrow("refused");
      expect(await counts(["reservations"])).toEqual(before);
      if (dialect === "mysql") expect(await inTransaction()).toBe(0);
      const next = await freeLongest();
      expect(await add(session.id)).toMatchObject({ accessNumber: next });
    });

    it("with no free number stores nothing and says so", async () => {
      now += 60_000;
      const session = await stored();
      for (let held = 0; held < NUMBERS.length; held++) expect(await add(session.id)).toBeDefined();
      const before = await counts(["reservations", "idempotency_keys"]);
      expect(await add(session.id)).toBeUndefined();
      expect(await add(session.id, { once: { id: { scope: "RequestAccess:b", requestId: "none-free" }, reply: (n) => ({ reply: n, keepUntil: now + 1000 }) } })).toBeUndefined();
      // Nothing kept, not the request id either.
      expect(await counts(["reservations", "idempotency_keys"])).toEqual(before);
      if (dialect === "mysql") expect(await inTransaction()).toBe(0);
    });

    it("with a request id keeps the first reply, and a retry gets it back before the session is looked at", async () => {
      now += 60_000;
      const session = await stored();
      const once = { id: { scope: "RequestAccess:backend", requestId: "more-1" }, reply: (n: string, c: string | undefined) => ({ reply: JSON.stringify({ n, c }), keepUntil: now + 45_000 }) };
      const first = await add(session.id, { once });
      expect(first?.accessNumber).toBeDefined();
      const kept = JSON.stringify({ n: first!.accessNumber });
      const row = (await db.knex("idempotency_keys").where({ scope: "RequestAccess:backend", request_id: "more-1" }).first()) as Record<string, unknown>;
      expect([row["result"], Number(row["expires_at"])]).toEqual([kept, now + 45_000]);
      const before = await counts(["reservations"]);
      let booked = 0;
      expect(
        await add(session.id, {
          once,
          book: (s) => {
            booked++;
            return booking(s);
          },
        }),
      ).toEqual({ prior: kept });
      expect(booked).toBe(0);
      expect(await counts(["reservations"])).toEqual(before);
    });

    it("with a request id, concurrent first calls claim once: the others wait and get its result", async () => {
      now += 60_000;
      const session = await stored();
      const once = { id: { scope: "RequestAccess:backend", requestId: "race-2" }, reply: (n: string) => ({ reply: JSON.stringify({ n }), keepUntil: now + 60_000 }) };
      const before = await count("reservations");
      const wide = await openDatabase(db.url, { migrate: false, poolMax: 5 });
      const access = createStores(wide).access;
      const got = await Promise.all(Array.from({ length: 5 }, () => access.addReservation({ sessionId: session.id, group: LOCKED, now, book: booking, once }))).finally(() => wide.close());
      const claimed = got.filter((g) => g?.accessNumber !== undefined);
      expect(claimed).toHaveLength(1);
      expect(got.filter((g) => g?.prior !== undefined)).toEqual(Array.from({ length: 4 }, () => ({ prior: JSON.stringify({ n: claimed[0]!.accessNumber }) })));
      expect(await count("reservations")).toBe(before + 1);
    });

    it("on a shared number: a code unique among its live reservations, drawn again when taken", async () => {
      now += 60_000;
      const session = await stored();
      expect(await add(session.id, { group: SHARED, chooseCode: chooser("5555").choose })).toEqual({ accessNumber: SHARED_NUMBER, accessCode: "5555" });
      const again = chooser("5555", "6666");
      expect(await add(session.id, { group: SHARED, chooseCode: again.choose })).toEqual({ accessNumber: SHARED_NUMBER, accessCode: "6666" });
      expect(again.shown.at(-1)).toEqual({ taken: ["5555"], number: SHARED_NUMBER });
      expect((await reservationRows({ session_id: session.id, resource_group: "s" })).map((r) => r.code)).toEqual(["5555", "6666"]);
      expect((await numberRow("s", SHARED_NUMBER)).lastUsedAt).toBe(now);
    });
  });

  describe("nextFreeAt and hasNumbers", () => {
    it("tell when a busy number of a locking group frees up, and whether a group has numbers", async () => {
      now += 60_000;
      expect(await stores.access.nextFreeAt("g", now)).toBeUndefined();
      await open(fresh(), { bookedUntil: now + 10_000 });
      await open(fresh(), { bookedUntil: now + 20_000 });
      expect(await stores.access.nextFreeAt("g", now)).toBe(now + 10_000);
      expect(await stores.access.hasNumbers("g")).toBe(true);
      expect(await stores.access.hasNumbers("nowhere")).toBe(false);
    });
  });

  describe("liveReservations, release and extend", () => {
    it("list a session's live reservations oldest first, release them (a locking number free at its freeAt), and extend them (its number busy as long)", async () => {
      now += 60_000;
      const session = await stored();
      await add(session.id);
      now += 1;
      await add(session.id, { group: SHARED, chooseCode: chooser("7777").choose });
      const live = (await stores.access.liveReservations(session.id, now)).filter((r) => r.resourceGroup !== "spare");
      expect(live.map((r) => [r.resourceGroup, r.accessCode])).toEqual([
        ["g", undefined],
        ["s", "7777"],
      ]);
      const [locked, shared] = live as [Reservation, Reservation];
      const sharedUse = (await numberRow("s", SHARED_NUMBER)).lastUsedAt;

      await stores.transactions.run((uow) =>
        stores.access.extend(uow, [
          { reservation: locked, until: now + 90_000 },
          { reservation: shared, until: now + 80_000 },
        ]),
      );
      expect((await reservationRows({ id: locked.id }))[0]?.expiresAt).toBe(now + 90_000);
      expect((await reservationRows({ id: shared.id }))[0]?.expiresAt).toBe(now + 80_000);
      expect((await numberRow("g", locked.accessNumber)).availableAt).toBe(now + 90_000);
      expect(await numberRow("s", SHARED_NUMBER)).toMatchObject({ availableAt: 0, lastUsedAt: sharedUse });

      // In a unit of work that rolls back, nothing is released.
      await expect(
        stores.transactions.run(async (uow) => {
          const inUnit = await stores.access.liveReservations(session.id, now, uow);
          await stores.access.release(uow, inUnit.filter((r) => r.resourceGroup !== "spare").map((r) => ({ reservation: r, freeAt: now + 5_000 })), now);
          throw new Error("rolled back");
        }),
      ).rejects.toThrow("rolled back");
      expect(await stores.access.liveReservations(session.id, now)).toHaveLength(3);

      await stores.transactions.run(async (uow) => {
        await stores.access.release(uow, [{ reservation: locked, freeAt: now + 5_000 }, { reservation: shared, freeAt: now + 5_000 }], now);
      });
      expect((await reservationRows({ session_id: session.id })).filter((r) => r.group !== "spare").map((r) => r.releasedAt)).toEqual([now, now]);
      expect((await numberRow("g", locked.accessNumber)).availableAt).toBe(now + 5_000);
      expect((await numberRow("s", SHARED_NUMBER)).availableAt).toBe(0);
      expect((await stores.access.liveReservations(session.id, now)).map((r) => r.resourceGroup)).toEqual(["spare"]);
      // Expired ones are not live either.
      expect(await stores.access.liveReservations(session.id, session.expiresAt)).toEqual([]);
    });
  });

  describe("groupReservations and numberReservations", () => {
    it("list a group's and a number's live reservations, oldest first, in or out of a unit of work, and leave out released and expired ones", async () => {
      now += 60_000;
      const [a, b] = [await stored(), await stored()];
      await add(a.id, { group: SHARED, chooseCode: chooser("1111").choose });
      now += 1;
      await add(b.id, { group: SHARED, chooseCode: chooser("2222").choose });
      const ours = (rs: Reservation[]) => rs.filter((r) => r.sessionId === a.id || r.sessionId === b.id);
      const inGroup = ours(await stores.access.groupReservations("s", now));
      expect(inGroup.map((r) => [r.sessionId, r.accessNumber, r.phoneNumber])).toEqual([
        [a.id, SHARED_NUMBER, CALLER],
        [b.id, SHARED_NUMBER, CALLER],
      ]);
      expect(ours(await stores.access.groupReservations("g", now))).toEqual([]);
      expect(ours(await stores.access.numberReservations(SHARED_NUMBER, now))).toEqual(inGroup);
      expect(await stores.access.numberReservations("+18009999999", now)).toEqual([]);

      await stores.transactions.run(async (uow) => {
        const held = ours(await stores.access.numberReservations(SHARED_NUMBER, now, uow));
        expect(held).toEqual(inGroup);
        await stores.access.release(uow, [{ reservation: held[0]!, freeAt: now }], now);
      });
      expect(ours(await stores.access.groupReservations("s", now)).map((r) => r.sessionId)).toEqual([b.id]);
      expect(ours(await stores.access.numberReservations(SHARED_NUMBER, inGroup[1]!.expiresAt))).toEqual([]);
      expect(ours(await stores.access.groupReservations("s", inGroup[1]!.expiresAt))).toEqual([]);
    });
  });

  describe("match", () => {
    /** reserve opens sessions on SHARED with the codes given, one millisecond apart, and gives them newest first. */
    const reserve = async (...codes: string[]) => {
      now += 60_000;
      const made = [];
      for (const code of codes) {
        const f = fresh();
        await open(f, { group: SHARED, chooseCode: chooser(code).choose });
        made.push(f.session);
        now += 1;
      }
      return made.reverse();
    };

    it("shows decide the number's live reservations of active sessions, newest first, with their sessions and the failures since `since`", async () => {
      const [d, c, b, a] = await reserve("0001", "0002", "0003", "0004");
      // One session ended, one reservation expired: neither is a candidate.
      await db.knex("sessions").where("id", b!.id).update({ state: "ended" });
      await db.knex("reservations").where("session_id", d!.id).update({ expires_at: now });
      await db.knex("code_failures").insert([
        { access_number: SHARED_NUMBER, failed_at: now - 5_000 },
        { access_number: SHARED_NUMBER, failed_at: now - 3_000 },
        { access_number: SHARED_NUMBER, failed_at: now - 20_000 },
        { access_number: "+10000000000", failed_at: now - 1_000 },
      ]);
      let seen: LockedNumber | undefined;
      const decided = await stores.access.match(SHARED_NUMBER, now, now - 10_000, (locked) => {
        seen = locked;
        return { countFailure: false };
      });
      expect(decided).toEqual({ countFailure: false });
      expect(seen?.failures).toEqual({ count: 2, oldest: now - 5_000 });
      expect(seen?.live.map((l) => [l.session.id, l.reservation.accessCode])).toEqual([
        [c!.id, "0003"],
        [a!.id, "0001"],
      ]);
      expect(seen?.live[0]?.session).toEqual(c);
      expect(seen?.live[0]?.reservation).toMatchObject({ sessionId: c!.id, resourceGroup: "s", accessNumber: SHARED_NUMBER, accessCode: "0003", phoneNumber: CALLER, locking: false });
      // A refusal that counts nothing writes nothing.
      expect(await count("code_failures")).toBe(4);
      const mine = new Set([a, b, c, d].map((s) => s!.id));
      expect((await reservationRows({ access_number: SHARED_NUMBER })).filter((r) => mine.has(r.sessionId as string) && r.releasedAt !== null)).toEqual([]);
    });

    it("releases one reservation (its locking number free at freeAt) and commits", async () => {
      now += 60_000;
      const f = fresh();
      const got = await open(f);
      const decided = await stores.access.match(got!.accessNumber!, now, now, (locked) => ({ release: locked.live.map((l) => ({ reservation: l.reservation, freeAt: now + 7_000 })) }));
      expect(decided.release).toHaveLength(1);
      expect((await reservationRows({ session_id: f.session.id }))[0]?.releasedAt).toBe(now);
      expect((await numberRow("g", got!.accessNumber!)).availableAt).toBe(now + 7_000);
      expect(await stores.access.liveReservations(f.session.id, now)).toEqual([]);
      if (dialect === "mysql") expect(await inTransaction()).toBe(0);
    });

    it("releases several reservations and commits", async () => {
      const sessions = await reserve("1001", "1002", "1003");
      const decided = await stores.access.match(SHARED_NUMBER, now, now, (locked) => ({ release: locked.live.slice(0, 2).map((l) => ({ reservation: l.reservation, freeAt: now + 7_000 })) }));
      expect(decided.release?.map((r) => r.reservation.sessionId)).toEqual([sessions[0]!.id, sessions[1]!.id]);
      const released = await Promise.all(sessions.map(async (s) => (await reservationRows({ session_id: s.id }))[0]?.releasedAt));
      expect(released).toEqual([now, now, null]);
      // A shared number is not made busy by a release.
      expect((await numberRow("s", SHARED_NUMBER)).availableAt).toBe(0);
      if (dialect === "mysql") expect(await inTransaction()).toBe(0);
    });

    it("counts a failed code at `now` and commits, releasing nothing", async () => {
      await reserve("2001");
      const before = await count("code_failures");
      expect(await stores.access.match(SHARED_NUMBER, now, now, () => ({ countFailure: true }))).toEqual({ countFailure: true });
      expect(await count("code_failures")).toBe(before + 1);
      expect(Number(((await db.knex("code_failures").where("access_number", SHARED_NUMBER).max({ at: "failed_at" })) as { at: number | string }[])[0]?.at)).toBe(now);
      const live = await stores.access.match(SHARED_NUMBER, now, now - 1, (locked) => ({ countFailure: false, live: locked.live.length, failures: locked.failures.count }));
      expect(live).toEqual({ countFailure: false, live: 1, failures: 1 });
    });

    it("a throw from decide rolls the match back, and the connection serves the next call", async () => {
      await reserve("3001");
      await expect(
        stores.access.match(SHARED_NUMBER, now, now, () => {
          throw new Error("refused");
        }),
      ).rejects.toThrow("refused");
      if (dialect === "mysql") expect(await inTransaction()).toBe(0);
      expect((await stores.access.match(SHARED_NUMBER, now, now, (locked) => ({ countFailure: false, n: locked.live.length }))).n).toBe(1);
    });

    it.skipIf(dialect !== "mysql")("counts the failures committed by a match it queued behind for the candidates' locks", async () => {
      await reserve("4001");
      const before = (await stores.access.match(SHARED_NUMBER, now, 0, (l) => ({ countFailure: false, count: l.failures.count }))).count;
      // Another connection holds the candidates, as a guess in flight does, and counts its failure.
      const other = await openDatabase(db.url, { migrate: false, poolMax: 2 });
      try {
        const trx = await other.knex.transaction();
        await trx.raw("SELECT id FROM reservations WHERE access_number = ? AND released_at IS NULL AND expires_at > ? FOR UPDATE", [SHARED_NUMBER, now]);
        await trx("code_failures").insert({ access_number: SHARED_NUMBER, failed_at: now });
        const queued = stores.access.match(SHARED_NUMBER, now, 0, (l) => ({ countFailure: false, count: l.failures.count }));
        // The match waits for the locks (it would have counted before them with gms_match_lock_v1).
        await new Promise((r) => setTimeout(r, 300));
        await trx.commit();
        expect((await queued).count).toBe(before + 1);
      } finally {
        await other.close();
      }
    });
  });

  describe("occupancy", () => {
    const OCC_NUMBERS = ["+18005556000", "+18005556001", "+18005556002", "+18005556003"];
    const OCC: ResourceGroup = { name: "occ", locking: true, allocation: "round-robin", size: 3 };
    const occupancyOf = async (group: string) => (await stores.access.occupancy(now)).find((g) => g.group === group);

    it("counts a group's numbers by state at `now` (retired, reserved, cooling down, free) and its live reservations", async () => {
      now += 60_000;
      const groups = (occ: string[]) => new Map([["g", NUMBERS], ["s", [SHARED_NUMBER]], ["spare", SPARE_NUMBERS], ["occ", occ]]);
      await stores.access.syncNumbers(groups(OCC_NUMBERS));
      expect(await occupancyOf("occ")).toEqual({ group: "occ", reserved: 0, coolingDown: 0, free: 4, retired: 0, reservations: 0 });
      // One number no longer configured: retired.
      await stores.access.syncNumbers(groups(OCC_NUMBERS.slice(0, 3)));
      expect(await open(fresh(), { group: OCC, bookedUntil: now + 10_000 })).toBeDefined();
      const released = fresh();
      expect(await open(released, { group: OCC, bookedUntil: now + 10_000 })).toBeDefined();
      await stores.transactions.run(async (uow) => {
        const [r] = await stores.access.liveReservations(released.session.id, now, uow);
        await stores.access.release(uow, [{ reservation: r!, freeAt: now + 5_000 }], now);
      });
      expect(await occupancyOf("occ")).toEqual({ group: "occ", reserved: 1, coolingDown: 1, free: 1, retired: 1, reservations: 1 });

      // Once the booking lapses and the cool-down ends, both numbers are free again, with no sweep.
      now += 10_000;
      expect(await occupancyOf("occ")).toEqual({ group: "occ", reserved: 0, coolingDown: 0, free: 3, retired: 1, reservations: 0 });
    });

    it("counts a shared number with several live reservations once, as reserved, and every reservation", async () => {
      now += 60_000;
      const before = (await occupancyOf("s"))!;
      expect(before).toMatchObject({ reserved: 0, free: 1, reservations: 0 });
      for (const code of ["1111", "2222"]) expect(await open(fresh(), { group: SHARED, chooseCode: chooser(code).choose })).toBeDefined();
      expect(await occupancyOf("s")).toEqual({ group: "s", reserved: 1, coolingDown: 0, free: 0, retired: 0, reservations: 2 });
      // The groups come sorted by name.
      const names = (await stores.access.occupancy(now)).map((g) => g.group);
      expect(names).toEqual([...names].sort());
    });
  });

  describe("sweep", () => {
    it("deletes reservations that ended, and failed codes counted, by `before`; keeps the rest", async () => {
      now += 60_000;
      const f = fresh();
      await open(f, { bookedUntil: now + 10_000 });
      await db.knex("code_failures").insert({ access_number: "+19999999999", failed_at: now + 5_000 });
      const before = await counts(["reservations", "code_failures"]);
      let swept = 0;
      for (let n = -1; n !== 0; swept += n) n = await stores.access.sweep(now, 3);
      const after = await counts(["reservations", "code_failures"]);
      expect(swept).toBe(before[0]! + before[1]! - after[0]! - after[1]!);
      // Reservations that ended after `before` are kept (live ones, the spare group's long bookings), as is the failure after it.
      expect(await stores.access.liveReservations(f.session.id, now)).toHaveLength(1);
      expect(await db.knex("code_failures").where("failed_at", "<=", now).first()).toBeUndefined();
      expect(await db.knex("code_failures").where("access_number", "+19999999999").first()).toBeDefined();
      expect(await db.knex("reservations").where("expires_at", "<=", now).orWhere("released_at", "<=", now).first()).toBeUndefined();
    });
  });
});
