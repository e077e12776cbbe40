import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/clock.js";
import { createStorage } from "../src/domain/storage.js";
import { createStores } from "../src/store/stores.js";
import { migrateDownAll, migrateLatest, openDatabase, type Database, type Dialect } from "../src/store/database.js";
import { DATABASE_PREFIX, DIALECTS, MYSQL_URL, createTestDatabase, type TestDatabase } from "./helpers/databases.js";

const KNEX_TABLES = ["knex_migrations", "knex_migrations_lock"];

/** tables lists the database's tables, sorted, without SQLite's internal ones. */
async function tables(db: Database): Promise<string[]> {
  const names =
    db.dialect === "sqlite"
      ? ((await db.knex.raw("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")) as { name: string }[]).map((r) => r.name)
      : ((await db.knex.raw("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE()")) as [{ name: string }[]])[0].map((r) => r.name);
  return names.sort();
}

/** routines lists the database's stored procedures and functions (MySQL; SQLite has none). */
async function routines(db: Database): Promise<string[]> {
  if (db.dialect === "sqlite") return [];
  const [rows] = (await db.knex.raw("SELECT routine_name AS name FROM information_schema.routines WHERE routine_schema = DATABASE() ORDER BY routine_name")) as [{ name: string }[]];
  return rows.map((r) => r.name);
}

/** schema describes every table's columns, to compare a schema before and after a round trip. */
async function schema(db: Database): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const t of await tables(db)) if (!KNEX_TABLES.includes(t)) out[t] = await db.knex(t).columnInfo();
  return out;
}

/** appliedMigrations lists the migrations the database records as applied. */
async function appliedMigrations(db: Database): Promise<string[]> {
  return ((await db.knex("knex_migrations").orderBy("id").select("name")) as { name: string }[]).map((r) => r.name);
}

describe.each(DIALECTS)("migrations on %s", (dialect: Dialect) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase(dialect, { migrate: false });
  });
  afterAll(() => db.close());

  it("go up, down with data in the tables, and up again to the same schema", async () => {
    expect(await tables(db)).toEqual([]);

    const applied = await migrateLatest(db);
    expect(applied.length).toBeGreaterThan(0);
    expect(await appliedMigrations(db)).toEqual(applied);
    const created = (await tables(db)).filter((t) => !KNEX_TABLES.includes(t));
    expect(created).toEqual(expect.arrayContaining(["storage_data", "storage_entries"]));
    const first = await schema(db);
    expect(await routines(db)).toEqual(dialect === "mysql" ? ["gms_claim_session_v1", "gms_claim_session_v2", "gms_claim_v1", "gms_claim_v2", "gms_match_lock_v1", "gms_match_lock_v2", "gms_release_v1"] : []);
    expect(await migrateLatest(db)).toEqual([]);

    const stores = createStores(db);
    const storage = createStorage({ store: stores.storage, transactions: stores.transactions, requestIds: stores.requestIds, clock: new ManualClock(), limits: () => ({ defaultTtlSeconds: 30, maxEntries: 10, maxKeyBytes: 64, maxValueBytes: 1024, maxDataBytes: 4096 }) });
    await storage.create({ ttlSeconds: 60, entries: new Map([["k", { kind: "text", text: "v" }]]), request: { scope: "test", requestId: "r1", digest: "d" } });

    await migrateDownAll(db);
    expect(await tables(db)).toEqual(KNEX_TABLES);
    expect(await routines(db)).toEqual([]);
    expect(await appliedMigrations(db)).toEqual([]);

    expect(await migrateLatest(db)).toEqual(applied);
    expect(await schema(db)).toEqual(first);
    expect(await routines(db)).toEqual(dialect === "mysql" ? ["gms_claim_session_v1", "gms_claim_session_v2", "gms_claim_v1", "gms_claim_v2", "gms_match_lock_v1", "gms_match_lock_v2", "gms_release_v1"] : []);
    const { dataId } = await storage.create({ ttlSeconds: 60, entries: new Map([["k", { kind: "text", text: "again" }]]), request: { scope: "test", requestId: "r1", digest: "d" } });
    expect((await storage.get(dataId)).entries.get("k")).toEqual({ kind: "text", text: "again" });
  });
});

describe.each(DIALECTS)("a lock table left with two rows by an older race, on %s", (dialect: Dialect) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase(dialect, { migrate: false });
  });
  afterAll(() => db.close());

  it("is repaired, and the migrations run", async () => {
    // What knex's check-then-insert leaves when two nodes create the lock row at once.
    await db.knex.schema.createTable("knex_migrations_lock", (t) => {
      t.increments("index").primary();
      t.integer("is_locked");
    });
    await db.knex("knex_migrations_lock").insert([{ is_locked: 0 }, { is_locked: 0 }]);
    expect((await migrateLatest(db)).length).toBeGreaterThan(0);
    expect(await db.knex("knex_migrations_lock").select("index", "is_locked")).toEqual([{ index: 1, is_locked: 0 }]);
  });
});

describe.each(DIALECTS)("three nodes starting at once on a fresh %s database", (dialect: Dialect) => {
  let url: string;
  let cleanup: () => Promise<void>;
  beforeAll(() => {
    if (dialect === "mysql") {
      const name = `${DATABASE_PREFIX}race_${randomBytes(6).toString("hex")}`;
      url = `${MYSQL_URL}/${name}`;
      cleanup = async () => {
        const admin = await openDatabase(`${MYSQL_URL}/${name}`, { migrate: false, poolMax: 1 });
        await admin.knex.raw(`DROP DATABASE IF EXISTS \`${name}\``);
        await admin.close();
      };
    } else {
      const dir = mkdtempSync(join(tmpdir(), "opengms-race-"));
      url = `sqlite:${join(dir, "gms.db")}`;
      cleanup = async () => rmSync(dir, { recursive: true, force: true });
    }
  });
  afterAll(() => cleanup());

  it("all open the database, and every migration is applied once", async () => {
    const results = await Promise.allSettled([openDatabase(url), openDatabase(url), openDatabase(url)]);
    const opened = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    try {
      expect(results.map((r) => (r.status === "rejected" ? String(r.reason) : "ok"))).toEqual(["ok", "ok", "ok"]);
      const names = await appliedMigrations(opened[0]!);
      expect(new Set(names).size).toBe(names.length);
      expect(await migrateLatest(opened[1]!)).toEqual([]);
      const locks = (await opened[0]!.knex("knex_migrations_lock").select("is_locked")) as { is_locked: number }[];
      expect(locks.every((l) => Number(l.is_locked) === 0)).toBe(true);
    } finally {
      for (const db of opened) await db.close();
    }
  });
});
