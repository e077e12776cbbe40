import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/clock.js";
import { createStorage, type Storage, type StorageLimits } from "../src/domain/storage.js";
import { createStores } from "../src/store/stores.js";
import type { DataEntries, DataValue } from "../src/domain/value.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { failure } from "./helpers/failure.js";

const limits: StorageLimits = { defaultTtlSeconds: 30, maxEntries: 5, maxKeyBytes: 16, maxValueBytes: 1024, maxDataBytes: 2048 };
const text = (t: string): DataValue => ({ kind: "text", text: t });
const entries = (o: Record<string, string>): DataEntries => new Map(Object.entries(o).map(([k, v]) => [k, text(v)]));
const noRequest = { scope: "test", requestId: "", digest: "" };

/** storageStoresOf are the stores createStorage needs, on a database. */
const storageStoresOf = (db: TestDatabase) => {
  const stores = createStores(db);
  return { store: stores.storage, transactions: stores.transactions, requestIds: stores.requestIds };
};


describe.each(DIALECTS)("storage on %s", (dialect) => {
  let db: TestDatabase;
  let clock: ManualClock;
  let storage: Storage;
  const rowCount = async () => Number(((await db.knex("storage_data").count({ n: "*" })) as { n: number }[])[0]?.n);

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    clock = new ManualClock();
    storage = createStorage({ ...storageStoresOf(db), clock, limits: () => limits });
  });
  afterAll(() => db.close());

  it("stores texts and files and reads them back whole and by key", async () => {
    const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 255]);
    const created = await storage.create({
      ttlSeconds: 60,
      entries: new Map([
        ["name", text("Zoë ✓")],
        ["photo", { kind: "file", filename: "me.png", contentType: "image/png", content: png }],
      ]),
      request: noRequest,
    });
    expect(created.version).toBe(1);
    expect(created.expiresAt).toBe(clock.now() + 60_000);
    const record = await storage.get(created.dataId);
    expect(record.entries.get("name")).toEqual(text("Zoë ✓"));
    const photo = record.entries.get("photo");
    expect(photo?.kind === "file" && [...photo.content]).toEqual([...png]);
    expect(await storage.getEntry(created.dataId, "name")).toEqual(text("Zoë ✓"));
    expect((await failure(storage.getEntry(created.dataId, "nope"))).kind).toBe("not_found");
  });

  it("keys are case-sensitive", async () => {
    const { dataId } = await storage.create({ ttlSeconds: 60, entries: entries({ a: "lower", A: "upper" }), request: noRequest });
    expect((await storage.get(dataId)).entries.size).toBe(2);
    expect(await storage.getEntry(dataId, "A")).toEqual(text("upper"));
  });

  it("uses the default TTL and is NOT_FOUND from the moment it expires, sweeper or not", async () => {
    const { dataId, expiresAt } = await storage.create({ ttlSeconds: undefined, entries: entries({ k: "v" }), request: noRequest });
    expect(expiresAt - clock.now()).toBe(30_000);
    clock.advance(29_999);
    await storage.get(dataId);
    clock.advance(1);
    expect((await failure(storage.get(dataId))).kind).toBe("not_found");
    expect((await failure(storage.getEntry(dataId, "k"))).kind).toBe("not_found");
    expect((await failure(storage.update({ dataId, entries: entries({ x: "y" }), removeKeys: [] }))).kind).toBe("not_found");
    expect((await failure(storage.delete(dataId))).kind).toBe("not_found");
  });

  it("sweeps expired rows in batches and leaves live ones", async () => {
    const live = await storage.create({ ttlSeconds: 3600, entries: entries({ k: "v" }), request: noRequest });
    for (let i = 0; i < 7; i++) await storage.create({ ttlSeconds: 1, entries: entries({ k: String(i) }), request: noRequest });
    clock.advance(2_000);
    const before = await rowCount();
    const swept = await storage.sweep(3);
    expect(swept).toBeGreaterThanOrEqual(7);
    expect(await rowCount()).toBe(before - swept);
    await storage.get(live.dataId);
    const orphans = await db.knex("storage_entries").whereNotIn("data_id", db.knex("storage_data").select("id")).count({ n: "*" });
    expect(Number((orphans as { n: number }[])[0]?.n)).toBe(0);
  });

  it("refuses a bad TTL", async () => {
    expect((await failure(storage.create({ ttlSeconds: 0, entries: entries({}), request: noRequest }))).kind).toBe("invalid_argument");
    expect((await failure(storage.create({ ttlSeconds: -5, entries: entries({}), request: noRequest }))).kind).toBe("invalid_argument");
  });

  it("enforces every limit, naming it, and stores nothing", async () => {
    const before = await rowCount();
    const cases: [DataEntries, string, string][] = [
      [entries({ "a-key-longer-than-16": "v" }), "invalid_argument", "storage.max_key_bytes"],
      [entries({ big: "x".repeat(1025) }), "invalid_argument", "storage.max_value_bytes"],
      [entries({ a: "1", b: "2", c: "3", d: "4", e: "5", f: "6" }), "resource_exhausted", "storage.max_entries"],
      [entries({ a: "x".repeat(1000), b: "x".repeat(1000), c: "x".repeat(100) }), "resource_exhausted", "storage.max_data_bytes"],
    ];
    for (const [e, kind, limit] of cases) {
      const err = await failure(storage.create({ ttlSeconds: 60, entries: e, request: noRequest }));
      expect(err.kind).toBe(kind);
      expect(err.message).toContain(limit);
      expect(err.detail).toMatchObject({ type: "limit", limit });
    }
    expect(await rowCount()).toBe(before);
  });

  it("updates atomically: adds, replaces, removes, extends, counts versions", async () => {
    const { dataId } = await storage.create({ ttlSeconds: 60, entries: entries({ a: "1", b: "2" }), request: noRequest });
    const r = await storage.update({ dataId, entries: entries({ b: "two", c: "3" }), removeKeys: ["a", "missing"], ttlSeconds: 600 });
    expect(r.version).toBe(2);
    expect(r.expiresAt).toBe(clock.now() + 600_000);
    const record = await storage.get(dataId);
    expect(Object.fromEntries([...record.entries].map(([k, v]) => [k, v.kind === "text" ? v.text : ""]))).toEqual({ b: "two", c: "3" });
    expect(record.version).toBe(2);
  });

  it("refuses an update that breaks a limit and leaves the record as it was", async () => {
    const { dataId } = await storage.create({ ttlSeconds: 60, entries: entries({ a: "1", b: "2", c: "3", d: "4" }), request: noRequest });
    const err = await failure(storage.update({ dataId, entries: entries({ e: "5", f: "6" }), removeKeys: [] }));
    expect(err.detail).toMatchObject({ limit: "storage.max_entries" });
    const bytes = await failure(storage.update({ dataId, entries: entries({ a: "x".repeat(1000), b: "x".repeat(1000), c: "x".repeat(100) }), removeKeys: [] }));
    expect(bytes.detail).toMatchObject({ limit: "storage.max_data_bytes" });
    const record = await storage.get(dataId);
    expect(record.version).toBe(1);
    expect([...record.entries.keys()].sort()).toEqual(["a", "b", "c", "d"]);
    // Removing makes room: the count is checked on the record's final shape.
    await storage.update({ dataId, entries: entries({ e: "5" }), removeKeys: ["a"] });
  });

  it("refuses a key both set and removed", async () => {
    const { dataId } = await storage.create({ ttlSeconds: 60, entries: entries({ a: "1" }), request: noRequest });
    expect((await failure(storage.update({ dataId, entries: entries({ a: "2" }), removeKeys: ["a"] }))).kind).toBe("invalid_argument");
  });

  it("compare-and-set: a stale expected_version is FAILED_PRECONDITION and changes nothing", async () => {
    const { dataId } = await storage.create({ ttlSeconds: 60, entries: entries({ a: "1" }), request: noRequest });
    await storage.update({ dataId, entries: entries({ a: "2" }), removeKeys: [], expectedVersion: 1 });
    const err = await failure(storage.update({ dataId, entries: entries({ a: "3" }), removeKeys: [], expectedVersion: 1 }));
    expect(err.kind).toBe("failed_precondition");
    expect(await storage.getEntry(dataId, "a")).toEqual(text("2"));
  });

  it("50 concurrent updates each adding its own key lose no key", async () => {
    const wide = createStorage({ ...storageStoresOf(db), clock, limits: () => ({ ...limits, maxEntries: 100 }) });
    const { dataId } = await wide.create({ ttlSeconds: 600, entries: entries({}), request: noRequest });
    await Promise.all(Array.from({ length: 50 }, (_, i) => wide.update({ dataId, entries: entries({ [`k${i}`]: String(i) }), removeKeys: [] })));
    const record = await wide.get(dataId);
    expect(record.entries.size).toBe(50);
    expect(record.version).toBe(51);
  });

  it("concurrent compare-and-set: exactly one of the racers at a version wins", async () => {
    const { dataId } = await storage.create({ ttlSeconds: 600, entries: entries({ n: "0" }), request: noRequest });
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) => storage.update({ dataId, entries: entries({ n: String(i + 1) }), removeKeys: [], expectedVersion: 1 })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect((await storage.get(dataId)).version).toBe(2);
  });

  it("a retried create with the same request id stores once and returns the first result", async () => {
    const request = { scope: "CreateData:test", requestId: `req-${dialect}`, digest: "d" };
    const before = await rowCount();
    const results = await Promise.all([1, 2, 3].map(() => storage.create({ ttlSeconds: 60, entries: entries({ a: "1" }), request })));
    expect(new Set(results.map((r) => r.dataId)).size).toBe(1);
    expect(await rowCount()).toBe(before + 1);
    const other = await storage.create({ ttlSeconds: 60, entries: entries({ a: "1" }), request: { ...request, scope: "CreateData:someone-else" } });
    expect(other.dataId).not.toBe(results[0]?.dataId);
  });

  it("deletes", async () => {
    const { dataId } = await storage.create({ ttlSeconds: 60, entries: entries({ a: "1" }), request: noRequest });
    await storage.delete(dataId);
    expect((await failure(storage.get(dataId))).kind).toBe("not_found");
    expect(await db.knex("storage_entries").where("data_id", dataId).first()).toBeUndefined();
  });
});
