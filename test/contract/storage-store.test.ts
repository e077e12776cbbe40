// The StorageStore contract (src/domain/storage-store.ts), operation by operation, on every
// dialect: what each operation stores, read back through the store and from the storage_data and
// storage_entries rows (and storage_custom_ids').
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DataRecord } from "../../src/domain/storage-store.js";
import type { DataEntries, DataValue } from "../../src/domain/value.js";
import { createStores, type Stores } from "../../src/store/stores.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";

const text = (t: string): DataValue => ({ kind: "text", text: t });

describe.each(DIALECTS)("StorageStore on %s", (dialect) => {
  let db: TestDatabase;
  let stores: Stores;
  const now = 1_000_000;
  let ids = 0;

  const record = (entries: DataEntries = new Map(), o: Partial<DataRecord> = {}): DataRecord => ({
    id: `00000000-0000-4000-9000-${String(++ids).padStart(12, "0")}`,
    version: 1,
    createdAt: now,
    expiresAt: now + 60_000,
    entries,
    ...o,
  });
  const insert = (r: DataRecord) => stores.transactions.run((uow) => stores.storage.insert(uow, r));
  const entryRows = async (id: string) =>
    (await db.knex("storage_entries").where("data_id", id).orderBy("entry_key").select("entry_key", "kind", "value", "filename", "content_type", "size")) as Record<string, unknown>[];
  const head = async (id: string) => {
    const r = (await db.knex("storage_data").where("id", id).first()) as Record<string, unknown> | undefined;
    return r === undefined ? undefined : { version: Number(r["version"]), createdAt: Number(r["created_at"]), expiresAt: Number(r["expires_at"]) };
  };

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    stores = createStores(db);
  });
  afterAll(() => db.close());

  describe("insert", () => {
    it("stores the record and its entries, texts and files byte for byte", async () => {
      const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 255]);
      const r = record(
        new Map([
          ["name", text("Zoë ✓")],
          ["empty", text("")],
          ["photo", { kind: "file", filename: "me.png", contentType: "image/png", content: png }],
        ]),
      );
      await insert(r);
      expect(await head(r.id)).toEqual({ version: 1, createdAt: now, expiresAt: now + 60_000 });
      const rows = await entryRows(r.id);
      expect(rows.map((e) => [e["entry_key"], e["kind"], e["filename"], e["content_type"], Number(e["size"])])).toEqual([
        ["empty", "text", null, null, 0],
        ["name", "text", null, null, Buffer.byteLength("Zoë ✓")],
        ["photo", "file", "me.png", "image/png", 6],
      ]);
      expect(Buffer.from(rows[1]!["value"] as Uint8Array).toString("utf8")).toBe("Zoë ✓");
      expect([...Buffer.from(rows[2]!["value"] as Uint8Array)]).toEqual([...png]);
      expect(await stores.storage.read(r.id, now)).toEqual(r);
    });

    it("stores entries larger than one INSERT's chunk (4 MiB)", async () => {
      const size = 2.5 * 1024 * 1024;
      const big = (n: number) => ({ kind: "file" as const, filename: `f${n}`, contentType: "application/octet-stream", content: new Uint8Array(size).fill(n) });
      const r = record(new Map([["a", big(1)], ["b", big(2)]]));
      await insert(r);
      const rows = await entryRows(r.id);
      expect(rows.map((e) => [e["entry_key"], Number(e["size"])])).toEqual([
        ["a", size],
        ["b", size],
      ]);
      const read = await stores.storage.read(r.id, now);
      for (const [key, n] of [["a", 1], ["b", 2]] as const) {
        const value = read?.entries.get(key);
        // Compared as buffers: a deep equality of megabytes, element by element, takes seconds.
        expect(value?.kind === "file" && Buffer.from(value.content).equals(Buffer.alloc(size, n))).toBe(true);
        expect(Buffer.from(rows.find((e) => e["entry_key"] === key)!["value"] as Uint8Array).equals(Buffer.alloc(size, n))).toBe(true);
      }
    });
  });

  describe("read and readEntry", () => {
    it("read a record live at `now`, with every entry or one; keys are case-sensitive", async () => {
      const r = record(new Map([["a", text("lower")], ["A", text("upper")]]));
      await insert(r);
      expect((await stores.storage.read(r.id, now))?.entries).toEqual(r.entries);
      expect(await stores.storage.readEntry(r.id, "A", now)).toEqual({ value: text("upper") });
      expect(await stores.storage.readEntry(r.id, "nope", now)).toEqual({ value: undefined });
      expect(await stores.storage.read(r.id, r.expiresAt)).toBeUndefined();
      expect(await stores.storage.readEntry(r.id, "a", r.expiresAt)).toBeUndefined();
      expect(await stores.storage.read("00000000-0000-4000-9000-999999999999", now)).toBeUndefined();
      const empty = record();
      await insert(empty);
      expect(await stores.storage.read(empty.id, now)).toEqual(empty);
    });
  });

  describe("lock and change", () => {
    it("lock gives the head and each entry's size; change removes, sets (replacing), and records version and expiry", async () => {
      const r = record(new Map([["a", text("1")], ["b", text("22")], ["c", text("333")]]));
      await insert(r);
      const locked = await stores.transactions.run(async (uow) => {
        const got = await stores.storage.lock(uow, r.id, now);
        await stores.storage.change(uow, r.id, { remove: ["a", "missing"], set: new Map([["b", text("two")], ["d", text("4")]]), version: 2, expiresAt: now + 90_000 });
        return got;
      });
      expect(locked).toEqual({ id: r.id, version: 1, createdAt: now, expiresAt: now + 60_000, sizes: new Map([["a", 1], ["b", 2], ["c", 3]]) });
      expect(await head(r.id)).toEqual({ version: 2, createdAt: now, expiresAt: now + 90_000 });
      expect((await entryRows(r.id)).map((e) => [e["entry_key"], Buffer.from(e["value"] as Uint8Array).toString()])).toEqual([
        ["b", "two"],
        ["c", "333"],
        ["d", "4"],
      ]);
      expect(await stores.transactions.run((uow) => stores.storage.lock(uow, r.id, now + 90_000))).toBeUndefined();
    });

    it("changes nothing when its unit of work rolls back", async () => {
      const r = record(new Map([["a", text("1")]]));
      await insert(r);
      await expect(
        stores.transactions.run(async (uow) => {
          await stores.storage.lock(uow, r.id, now);
          await stores.storage.change(uow, r.id, { remove: ["a"], set: new Map([["b", text("2")]]), version: 2, expiresAt: now + 1 });
          throw new Error("rolled back");
        }),
      ).rejects.toThrow("rolled back");
      expect(await stores.storage.read(r.id, now)).toEqual(r);
    });

    it.skipIf(dialect !== "mysql")("lock holds the record: concurrent changes, each locking first, lose nothing", async () => {
      const r = record();
      await insert(r);
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          stores.transactions.run(async (uow) => {
            const got = await stores.storage.lock(uow, r.id, now);
            await stores.storage.change(uow, r.id, { remove: [], set: new Map([[`k${i}`, text(String(i))]]), version: got!.version + 1, expiresAt: got!.expiresAt });
          }),
        ),
      );
      expect((await stores.storage.read(r.id, now))?.version).toBe(11);
      expect((await entryRows(r.id)).length).toBe(10);
    });
  });

  describe("delete", () => {
    it("deletes a record and its entries: true when it was live, false when it had expired or never was", async () => {
      const r = record(new Map([["a", text("1")]]));
      const old = record(new Map([["a", text("1")]]), { expiresAt: now - 1 });
      await insert(r);
      await insert(old);
      expect(await stores.transactions.run((uow) => stores.storage.delete(uow, r.id, now))).toBe(true);
      expect(await stores.transactions.run((uow) => stores.storage.delete(uow, old.id, now))).toBe(false);
      expect(await stores.transactions.run((uow) => stores.storage.delete(uow, r.id, now))).toBe(false);
      for (const id of [r.id, old.id]) {
        expect(await head(id)).toBeUndefined();
        expect(await entryRows(id)).toEqual([]);
      }
    });
  });

  describe("bindCustom and findCustom", () => {
    const bind = (user: string, customId: string, dataId: string) => stores.transactions.run((uow) => stores.storage.bindCustom(uow, user, customId, dataId));
    const customRows = async (user: string) =>
      ((await db.knex("storage_custom_ids").where("owner", user).orderBy("custom_id").select("custom_id", "data_id")) as { custom_id: string; data_id: string }[]).map((r) => [r.custom_id, r.data_id]);

    it("binds a user's custom id to a record, found only by that user, exactly (case-sensitive), while the record lives", async () => {
      const r = record(new Map([["a", text("1")]]));
      await insert(r);
      expect(await bind("alice@example.com", "cart", r.id)).toBeUndefined();
      expect(await customRows("alice@example.com")).toEqual([["cart", r.id]]);
      expect(await stores.storage.findCustom("alice@example.com", "cart", now)).toBe(r.id);
      expect(await stores.storage.findCustom("bob@example.com", "cart", now)).toBeUndefined();
      expect(await stores.storage.findCustom("alice@example.com", "Cart", now)).toBeUndefined();
      expect(await stores.storage.findCustom("Alice@example.com", "cart", now)).toBeUndefined();
      expect(await stores.storage.findCustom("alice@example.com", "cart", r.expiresAt)).toBeUndefined();
    });

    it("rebinding returns the record named before and names the new one; a rolled back bind changes nothing", async () => {
      const first = record();
      const second = record();
      for (const r of [first, second]) await insert(r);
      await bind("carol", "slot", first.id);
      expect(await bind("carol", "slot", second.id)).toBe(first.id);
      expect(await stores.storage.findCustom("carol", "slot", now)).toBe(second.id);
      await expect(
        stores.transactions.run(async (uow) => {
          await stores.storage.bindCustom(uow, "carol", "slot", first.id);
          throw new Error("rolled back");
        }),
      ).rejects.toThrow("rolled back");
      expect(await customRows("carol")).toEqual([["slot", second.id]]);
    });

    it("delete and sweep remove a record's custom id with it", async () => {
      const deleted = record();
      const swept = record(new Map(), { expiresAt: now + 1_000 });
      for (const r of [deleted, swept]) await insert(r);
      await bind("dave", "d", deleted.id);
      await bind("dave", "s", swept.id);
      await stores.transactions.run((uow) => stores.storage.delete(uow, deleted.id, now));
      expect(await customRows("dave")).toEqual([["s", swept.id]]);
      while ((await stores.storage.sweep(now + 2_000, 100)) > 0);
      expect(await customRows("dave")).toEqual([]);
    });
  });

  describe("sweep", () => {
    it("deletes records expired by `now` with their entries, in batches, and keeps live ones", async () => {
      const later = now + 10 * 60_000;
      const expired = Array.from({ length: 7 }, (_, i) => record(new Map([["k", text(String(i))]]), { expiresAt: now + 1_000 }));
      const live = record(new Map([["k", text("live")]]), { expiresAt: later + 1 });
      for (const r of [...expired, live]) await insert(r);
      let total = 0;
      for (let n = -1; n !== 0; total += n) {
        n = await stores.storage.sweep(later, 3);
        expect(n).toBeLessThanOrEqual(3);
      }
      expect(total).toBeGreaterThanOrEqual(expired.length);
      for (const r of expired) expect(await head(r.id)).toBeUndefined();
      expect(await stores.storage.read(live.id, later)).toEqual(live);
      const orphans = await db.knex("storage_entries").whereNotIn("data_id", db.knex("storage_data").select("id")).count({ n: "*" });
      expect(Number((orphans as { n: number }[])[0]?.n)).toBe(0);
    });
  });
});
