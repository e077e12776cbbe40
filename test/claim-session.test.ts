// claimSession, RequestInteraction's transaction: on MySQL one prepared CALL of
// gms_claim_session_v1 for a record without entries, the batched claim otherwise; on SQLite a
// transaction. Run on both stores, on a pool of one connection, so that what a failed call leaves
// on its connection is what the next call gets.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DataEntries } from "../src/domain/value.js";
import { claimSession, syncNumbers, type ClaimOptions } from "../src/store/access-store.js";
import type { SessionRow } from "../src/store/session-store.js";
import { openDatabase } from "../src/store/database.js";
import type { DataRow } from "../src/store/storage-store.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";

const NUMBERS = ["+18005552000", "+18005552001"];
const CALLER = "+16505550100";

describe.each(DIALECTS)("claimSession on %s", (dialect) => {
  let db: TestDatabase;
  let now = 1_000_000;
  let ids = 0;

  /** fresh is a new session (with its record) to claim for, `ttl` ms from now. */
  const fresh = (ttl = 60_000) => {
    const n = ++ids;
    const id = `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;
    const dataId = `00000000-0000-4000-9000-${String(n).padStart(12, "0")}`;
    const session: SessionRow = { id, service: "iPhoneService", builtin: "request-interaction", state: "active", phoneNumber: CALLER, dataId, createdAt: now, expiresAt: now + ttl };
    const data: DataRow = { id: dataId, version: 1, createdAt: now, expiresAt: now + ttl };
    return { session, data };
  };
  const claim = (): ClaimOptions => ({ group: "g", locking: true, allocation: "round-robin", lanes: 1, now });
  const book = (s: SessionRow, code?: string) => ({ sessionId: s.id, phoneNumber: CALLER, expiresAt: now + 30_000, accessCode: code });
  const count = async (table: string) => Number(((await db.knex(table).count({ n: "*" })) as { n: number | string }[])[0]?.n ?? 0);
  const availableAt = async (number: string) => Number(((await db.knex("access_numbers").where({ resource_group: "g", number }).first("available_at")) as { available_at: number | string }).available_at);

  beforeAll(async () => {
    db = await createTestDatabase(dialect, { poolMax: 1 });
    await syncNumbers(db.knex, new Map([["g", NUMBERS]]));
  });
  afterAll(() => db.close());

  it("claims the number free the longest and stores the session, its empty record and the reservation, at the claim's time", async () => {
    const { session, data } = fresh();
    expect(await claimSession(db, claim(), book(session, "1234"), session, data, new Map())).toEqual({ accessNumber: NUMBERS[0] });
    const stored = (await db.knex("sessions").where("id", session.id).first()) as Record<string, unknown>;
    expect(stored).toMatchObject({ service: "iPhoneService", builtin: "request-interaction", state: "active", phone_number: CALLER, data_id: data.id });
    expect(Number(stored["created_at"])).toBe(now);
    expect(Number(stored["expires_at"])).toBe(now + 60_000);
    const record = (await db.knex("storage_data").where("id", data.id).first()) as Record<string, unknown>;
    expect([Number(record["version"]), Number(record["created_at"]), Number(record["expires_at"])]).toEqual([1, now, now + 60_000]);
    expect(await db.knex("storage_entries").where("data_id", data.id).count({ n: "*" })).toEqual([{ n: 0 }]);
    const reservation = (await db.knex("reservations").where("session_id", session.id).first()) as Record<string, unknown>;
    expect(reservation).toMatchObject({ resource_group: "g", access_number: NUMBERS[0], access_code: "1234", phone_number: CALLER });
    expect([Number(reservation["created_at"]), Number(reservation["expires_at"])]).toEqual([now, now + 30_000]);
    // Busy until its booking ends.
    expect(await availableAt(NUMBERS[0]!)).toBe(now + 30_000);
  });

  it("stores the record's entries with it, byte for byte: small ones inside the CALL (JSON), a large one as rows of its own", async () => {
    const bytes = new Uint8Array(256).map((_, i) => i);
    const small: DataEntries = new Map([
      ["reason", { kind: "text", text: "billing — facture, 請求 🧾" }],
      ["clé", { kind: "text", text: "" }],
      // The longest key storage.max_key_bytes allows (512 bytes) fits the key column.
      ["k".repeat(512), { kind: "text", text: "long key" }],
      ["photo", { kind: "file", filename: "reçu.png", contentType: "image/png", content: bytes }],
    ]);
    // Over CALL_ENTRIES_MAX_BYTES (64 KiB of values).
    const large: DataEntries = new Map([
      ["reason", { kind: "text", text: "x".repeat(40_000) }],
      ["é".repeat(256), { kind: "text", text: "long key" }],
      ["scan", { kind: "file", filename: "scan.pdf", contentType: "application/pdf", content: new Uint8Array(40_000).fill(7) }],
    ]);
    for (const entries of [small, large]) {
      now += 60_000;
      const { session, data } = fresh();
      expect(await claimSession(db, claim(), book(session), session, data, entries)).toBeDefined();
      const rows = (await db.knex("storage_entries").where("data_id", data.id).select("entry_key", "kind", "value", "filename", "content_type", "size")) as Record<string, unknown>[];
      const stored = new Map(rows.map((r) => [r["entry_key"] as string, r]));
      expect([...stored.keys()].sort()).toEqual([...entries.keys()].sort());
      for (const [key, value] of entries) {
        const row = stored.get(key)!;
        const content = value.kind === "text" ? Buffer.from(value.text, "utf8") : Buffer.from(value.content);
        expect(Buffer.from(row["value"] as Uint8Array).equals(content)).toBe(true);
        expect(row).toMatchObject(
          value.kind === "text"
            ? { kind: "text", filename: null, content_type: null, size: content.byteLength }
            : { kind: "file", filename: value.filename, content_type: value.contentType, size: content.byteLength },
        );
      }
    }
  });

  it("with no free number stores nothing and says so", async () => {
    // Take whatever number is still free.
    for (let held = 0; held < NUMBERS.length; held++) {
      const f = fresh();
      if ((await claimSession(db, claim(), book(f.session), f.session, f.data, new Map())) === undefined) break;
    }
    const before = await Promise.all(["sessions", "storage_data", "storage_entries", "reservations"].map(count));
    const { session, data } = fresh();
    expect(await claimSession(db, claim(), book(session), session, data, new Map())).toBeUndefined();
    const withEntries = fresh();
    expect(await claimSession(db, claim(), book(withEntries.session), withEntries.session, withEntries.data, new Map([["k", { kind: "text", text: "v" }]]))).toBeUndefined();
    expect(await Promise.all(["sessions", "storage_data", "storage_entries", "reservations"].map(count))).toEqual(before);
  });

  it("rolls back all of it when a write fails, and its connection serves the next call", async () => {
    now += 60_000; // Both bookings have ended: both numbers are free.
    const { session, data } = fresh();
    // A session with this id exists already: the session's INSERT fails after the claim and the record's.
    await db.knex("sessions").insert({ id: session.id, service: "x", builtin: "request-interaction", state: "active", phone_number: CALLER, data_id: "d", created_at: 0, expires_at: 0 });
    const before = await Promise.all(["sessions", "storage_data", "reservations"].map(count));
    const free = await availableAt(NUMBERS[0]!);
    await expect(claimSession(db, claim(), book(session), session, data, new Map())).rejects.toThrow(/duplicate|unique/i);
    expect(await Promise.all(["sessions", "storage_data", "reservations"].map(count))).toEqual(before);
    expect(await availableAt(NUMBERS[0]!)).toBe(free);
    if (dialect === "mysql") expect(((await db.knex.raw("SELECT @@in_transaction AS open")) as [unknown[]])[0]).toEqual([{ open: 0 }]);
    if (dialect === "mysql") {
      // The procedure rolls back by itself (its EXIT HANDLER), with no ROLLBACK from the caller.
      await expect(
        db.knex.raw("CALL gms_claim_session_v1('g', TRUE, FALSE, NULL, 0.5, ?, ?, NULL, ?, ?, 'x', 'request-interaction', ?, ?, NULL, NULL, NULL, NULL, NULL, NULL)", [now, session.id, CALLER, now + 1, data.id, now + 1]),
      ).rejects.toThrow(/duplicate/i);
      expect(((await db.knex.raw("SELECT @@in_transaction AS open")) as [unknown[]])[0]).toEqual([{ open: 0 }]);
      expect(await availableAt(NUMBERS[0]!)).toBe(free);
    }
    const next = fresh();
    expect(await claimSession(db, claim(), book(next.session), next.session, next.data, new Map())).toEqual({ accessNumber: NUMBERS[0] });
  });

  it("with a request id keeps the first result, the number put in, and a retry gets it back and claims nothing", async () => {
    now += 60_000;
    const keys = await count("idempotency_keys");
    const once = (requestId: string) => ({ scope: "RequestInteraction:app-1", requestId, keepUntil: now + 60_000, result: (n: string) => JSON.stringify({ access: { accessNumber: n }, all: [n, n] }) });
    const first = fresh();
    const claimed = await claimSession(db, claim(), book(first.session), first.session, first.data, new Map(), once("checkout-1"));
    expect(claimed?.accessNumber).toBeDefined();
    const kept = JSON.stringify({ access: { accessNumber: claimed!.accessNumber }, all: [claimed!.accessNumber, claimed!.accessNumber] });
    const stored = (await db.knex("idempotency_keys").where({ scope: "RequestInteraction:app-1", request_id: "checkout-1" }).first()) as Record<string, unknown>;
    expect(stored["result"]).toBe(kept);
    expect(Number(stored["expires_at"])).toBe(now + 60_000);
    const before = await Promise.all(["sessions", "storage_data", "reservations"].map(count));
    const retry = fresh();
    expect(await claimSession(db, claim(), book(retry.session), retry.session, retry.data, new Map(), once("checkout-1"))).toEqual({ prior: kept });
    expect(await Promise.all(["sessions", "storage_data", "reservations"].map(count))).toEqual(before);
    // Another request id claims on: the last number; then none is free, and that id is not kept.
    const second = fresh();
    expect((await claimSession(db, claim(), book(second.session), second.session, second.data, new Map(), once("checkout-2")))?.accessNumber).toBeDefined();
    const third = fresh();
    expect(await claimSession(db, claim(), book(third.session), third.session, third.data, new Map(), once("checkout-3"))).toBeUndefined();
    expect(await count("idempotency_keys")).toBe(keys + 2);
    // Once a number is free again, the same id claims as a first call.
    now += 60_000;
    const later = fresh();
    expect((await claimSession(db, claim(), book(later.session), later.session, later.data, new Map(), once("checkout-3")))?.accessNumber).toBeDefined();
  });

  it("with a request id and a record too large for the CALL, keeps the first result the same way", async () => {
    now += 60_000;
    const large: DataEntries = new Map([["scan", { kind: "file", filename: "scan.pdf", contentType: "application/pdf", content: new Uint8Array(70_000).fill(9) }]]);
    const once = { scope: "RequestInteraction:app-3", requestId: "large-1", keepUntil: now + 60_000, result: (n: string) => JSON.stringify({ n }) };
    const first = fresh();
    const claimed = await claimSession(db, claim(), book(first.session), first.session, first.data, large, once);
    expect(claimed?.accessNumber).toBeDefined();
    const before = await Promise.all(["sessions", "storage_data", "storage_entries", "reservations"].map(count));
    const retry = fresh();
    expect(await claimSession(db, claim(), book(retry.session), retry.session, retry.data, large, once)).toEqual({ prior: JSON.stringify({ n: claimed!.accessNumber }) });
    expect(await Promise.all(["sessions", "storage_data", "storage_entries", "reservations"].map(count))).toEqual(before);
  });

  it("with a request id, concurrent first calls claim once: the others wait and get its result", async () => {
    now += 60_000;
    const once = { scope: "RequestInteraction:app-2", requestId: "race-1", keepUntil: now + 60_000, result: (n: string) => JSON.stringify({ n }) };
    const before = await count("reservations");
    // A pool of its own with a connection per call (SQLite serialises them on its one).
    const wide = await openDatabase(db.url, { migrate: false, poolMax: 5 });
    const got = await Promise.all(Array.from({ length: 5 }, () => fresh()).map((f) => claimSession(wide, claim(), book(f.session), f.session, f.data, new Map(), once))).finally(() => wide.close());
    const claimed = got.filter((g) => g?.accessNumber !== undefined);
    expect(claimed).toHaveLength(1);
    expect(got.filter((g) => g?.prior !== undefined)).toEqual(Array.from({ length: 4 }, () => ({ prior: JSON.stringify({ n: claimed[0]!.accessNumber }) })));
    expect(await count("reservations")).toBe(before + 1);
  });

  it("refuses a session that is not the reservation's new active one", async () => {
    const { session, data } = fresh();
    await expect(claimSession(db, claim(), book(session), { ...session, state: "ended" }, data, new Map())).rejects.toThrow("new active one");
    await expect(claimSession(db, claim(), book(session), session, { ...data, expiresAt: 1 }, new Map())).rejects.toThrow("expires with it");
  });
});
