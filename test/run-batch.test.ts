// runBatch sends a transaction's statements to MySQL in one round trip: results come back per
// statement, in order; a failing statement fails the batch, and the transaction around it undoes
// the statements before it. Also: values stay bound parameters (a quote in a value is data).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runBatch } from "../src/store/database.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";

describe.each(DIALECTS)("runBatch on %s", (dialect) => {
  let db: TestDatabase;
  const row = (id: string) => ({ id, version: 1, created_at: 1, expires_at: 2 });
  const ids = async () => ((await db.knex("storage_data").orderBy("id").pluck("id")) as string[]).filter((id) => id.startsWith("rb-"));

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
  });
  afterAll(() => db.close());

  it("runs statements in order and gives each one's rows (empty for writes)", async () => {
    const k = db.knex;
    const results = await runBatch(k, dialect, [
      k("storage_data").insert(row("rb-1")),
      k("storage_data").where("id", "rb-1").select("id", "version"),
      k("storage_data").where("id", "rb-1").update({ version: 2 }),
      k("storage_data").where("id", "rb-1").select("version"),
    ]);
    expect(results).toHaveLength(4);
    expect(results[0]).toEqual([]);
    expect(results[1]).toEqual([{ id: "rb-1", version: 1 }]);
    expect(results[2]).toEqual([]);
    expect(results[3]).toEqual([{ version: 2 }]);
  });

  it("is one query on MySQL, one per statement on SQLite", async () => {
    const sent: string[] = [];
    const onQuery = (q: { sql: string }) => sent.push(q.sql);
    db.knex.on("query", onQuery);
    try {
      const k = db.knex;
      await runBatch(k, dialect, [k("storage_data").where("id", "none").select("id"), k("storage_data").where("id", "none").count({ n: "*" }), k("storage_data").where("id", "none").delete()]);
    } finally {
      db.knex.off("query", onQuery);
    }
    expect(sent).toHaveLength(dialect === "mysql" ? 1 : 3);
  });

  it("fails at a failing statement, and the transaction undoes the statements before it", async () => {
    const k = db.knex;
    await expect(
      k.transaction((trx) => runBatch(trx, dialect, [trx("storage_data").insert(row("rb-2")), trx("storage_data").insert(row("rb-2")), trx("storage_data").insert(row("rb-3"))])),
    ).rejects.toThrow(/duplicate|unique/i);
    expect(await ids()).toEqual(["rb-1"]);
    // The connection is usable afterwards, outside any transaction.
    await runBatch(k, dialect, [k("storage_data").insert(row("rb-4")), k("storage_data").insert(row("rb-5"))]);
    expect(await ids()).toEqual(["rb-1", "rb-4", "rb-5"]);
  });

  it("keeps values bound: a value holding SQL is stored as text", async () => {
    const k = db.knex;
    const evil = "rb-6'; DELETE FROM storage_data; --";
    await runBatch(k, dialect, [k("storage_data").insert(row(evil.slice(0, 36))), k("storage_data").where("id", evil.slice(0, 36)).select("id")]);
    expect(await ids()).toContain(evil.slice(0, 36));
    expect((await ids()).length).toBe(4);
  });
});
