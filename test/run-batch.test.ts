// runBatch sends a transaction's statements to MySQL in one round trip: results come back per
// statement, in order; a failing statement fails the batch, and the transaction around it undoes
// the statements before it. Also: values stay bound parameters (a quote in a value is data).
// batchTransaction (the hot paths' transaction, driving a pooled connection itself on MySQL) commits
// what its batches did, rolls all of it back when its function throws or a statement fails, and
// gives the connection back to the pool outside any transaction; a batch that commits does so in
// its own round trip. On MariaDB a batch is one compound statement (BEGIN NOT ATOMIC … END); the
// same tests run on the multi-statement queries MySQL gets. insertWhen stores rows only while its
// condition holds.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database } from "../src/store/database.js";
import { batcherOf, batchTransaction, insertWhen, runBatch, sqlText } from "../src/store/batch.js";
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

/**
 * BATCH_MODES are the ways batchTransaction sends a batch: on MySQL as the server allows (on MariaDB
 * one compound statement) and as a multi-statement query (what MySQL gets); on SQLite one statement
 * at a time.
 */
const BATCH_MODES: [string, boolean | undefined][] = DIALECTS.flatMap((d): [string, boolean | undefined][] =>
  d === "mysql" ? [["mysql", undefined], ["mysql, multi-statement queries", false]] : [["sqlite", undefined]],
);

describe.each(BATCH_MODES)("batchTransaction on %s", (mode, compound) => {
  const dialect = mode.startsWith("mysql") ? "mysql" : "sqlite";
  let db: TestDatabase;
  const row = (id: string) => ({ id, version: 1, created_at: 1, expires_at: 2 });
  const ids = async () => ((await db.knex("storage_data").orderBy("id").pluck("id")) as string[]).filter((id) => id.startsWith("bt-"));
  // One connection: every transaction reuses the one before it, so a leak would show.
  beforeAll(async () => {
    db = await createTestDatabase(dialect, { poolMax: 1, ...(compound === undefined ? {} : { compound }) });
  });
  afterAll(() => db.close());

  const notInTransaction = async () => {
    if (dialect !== "mysql") return;
    const [rows] = (await db.knex.raw("SELECT @@in_transaction AS t")) as [{ t: number }[]];
    expect(rows[0]?.t).toBe(0);
  };

  it("commits every batch of the function, and gives each batch's rows", async () => {
    const out = await batchTransaction(db, async (tx) => {
      await tx.run([tx.q("storage_data").insert(row("bt-1"))]);
      const [read] = await tx.run([tx.q("storage_data").where("id", "bt-1").select("id"), tx.q("storage_data").insert(row("bt-2"))]);
      return read;
    });
    expect(out).toEqual([{ id: "bt-1" }]);
    expect(await ids()).toEqual(["bt-1", "bt-2"]);
    await notInTransaction();
  });

  it("gives each statement of a batch its own rows, reads and writes mixed (empty for writes and for reads that found none)", async () => {
    const rows = await batchTransaction(db, (tx) =>
      tx.run([
        tx.q("storage_data").where("id", "bt-none").select("id"),
        tx.q("storage_data").where("id", "bt-1").update({ version: 7 }),
        tx.q("storage_data").where("id", "bt-1").select("version"),
        tx.q("storage_data").where("id", "bt-1").update({ version: 1 }),
        tx.q("storage_data").whereIn("id", ["bt-1", "bt-2"]).orderBy("id").select("id", "version"),
      ]),
    );
    expect(rows).toEqual([[], [], [{ version: 7 }], [], [{ id: "bt-1", version: 1 }, { id: "bt-2", version: 1 }]]);
    await notInTransaction();
  });

  it.skipIf(dialect !== "mysql")("sends a batch on MariaDB as one compound statement unless told not to", async () => {
    const [rows] = (await db.knex.raw("SELECT VERSION() AS v")) as [{ v: string }[]];
    expect(db.compound).toBe(compound ?? /mariadb/i.test(rows[0]!.v));
  });

  it("rolls back every batch when the function throws", async () => {
    await expect(
      batchTransaction(db, async (tx) => {
        await tx.run([tx.q("storage_data").insert(row("bt-3")), tx.q("storage_data").insert(row("bt-4"))]);
        await tx.run([tx.q("storage_data").insert(row("bt-5"))]);
        throw new Error("changed my mind");
      }),
    ).rejects.toThrow("changed my mind");
    expect(await ids()).toEqual(["bt-1", "bt-2"]);
    await notInTransaction();
  });

  it("rolls back when a statement fails mid-batch, and the connection serves the next transaction", async () => {
    await expect(
      batchTransaction(db, (tx) => tx.run([tx.q("storage_data").insert(row("bt-6")), tx.q("storage_data").insert(row("bt-1")), tx.q("storage_data").insert(row("bt-7"))])),
    ).rejects.toThrow(/duplicate|unique/i);
    expect(await ids()).toEqual(["bt-1", "bt-2"]);
    await notInTransaction();
    await batchTransaction(db, (tx) => tx.run([tx.q("storage_data").insert(row("bt-8"))]));
    expect(await ids()).toEqual(["bt-1", "bt-2", "bt-8"]);
  });

  /** countQueries counts the queries batchTransaction sends on the connections it borrows (MySQL; none counted on SQLite). */
  async function countQueries(d: Database, fn: () => Promise<unknown>): Promise<{ sent: string[] }> {
    if (d.dialect !== "mysql") {
      await fn();
      return { sent: [] };
    }
    const client = d.knex.client as { acquireConnection(): Promise<{ query: (...args: unknown[]) => unknown }> };
    const acquire = client.acquireConnection.bind(client);
    const sent: string[] = [];
    const wrapped: unknown[] = [];
    client.acquireConnection = async () => {
      const conn = await acquire();
      if (!wrapped.includes(conn)) {
        wrapped.push(conn);
        const query = conn.query.bind(conn);
        conn.query = (...args: unknown[]) => {
          sent.push((args[0] as { sql: string }).sql);
          return query(...args);
        };
      }
      return conn;
    };
    try {
      await fn();
      return { sent };
    } finally {
      client.acquireConnection = acquire;
      for (const conn of wrapped) delete (conn as { query?: unknown }).query;
    }
  }

  it("commits with a batch that says it is the last: one round trip on MySQL, and nothing may run after it", async () => {
    const { sent } = await countQueries(db, () =>
      batchTransaction(db, async (tx) => {
        await tx.run([tx.q("storage_data").insert(row("bt-9"))], { commit: true });
        await expect(tx.run([tx.q("storage_data").insert(row("bt-10"))])).rejects.toThrow(/after the one that committed/);
      }),
    );
    expect(await ids()).toEqual(["bt-1", "bt-2", "bt-8", "bt-9"]);
    if (dialect === "mysql") {
      expect(sent).toHaveLength(1);
      expect(sent[0]).toMatch(db.compound ? /^BEGIN NOT ATOMIC\nSTART TRANSACTION;[\s\S]*;\nCOMMIT;\nEND$/ : /^START TRANSACTION;[\s\S]*;\nCOMMIT$/);
    }
    await notInTransaction();
  });

  it("runs a committing batch's `after` reads once it has committed, in the same round trip, their rows last", async () => {
    const { sent } = await countQueries(db, () =>
      batchTransaction(db, async (tx) => {
        const statements = dialect === "mysql" ? [sqlText("SET @bt_after = ?", ["seen"]), tx.q("storage_data").insert(row("bt-after"))] : [tx.q("storage_data").insert(row("bt-after"))];
        const after = dialect === "mysql" ? [sqlText("SELECT @bt_after AS v")] : [tx.q("storage_data").where("id", "bt-after").select("id")];
        const rows = await tx.run(statements, { commit: true, after });
        expect(rows).toEqual([...statements.map(() => []), dialect === "mysql" ? [{ v: "seen" }] : [{ id: "bt-after" }]]);
      }),
    );
    if (dialect === "mysql") {
      expect(sent).toHaveLength(1);
      expect(sent[0]).toMatch(/COMMIT;\nSELECT @bt_after AS v(;\nEND)?$/);
    }
    await batchTransaction(db, (tx) => tx.run([tx.q("storage_data").where("id", "bt-after").delete()], { commit: true }));
    await notInTransaction();
  });

  it("rolls back a committing batch whose statement fails (the COMMIT after it never runs)", async () => {
    const { sent } = await countQueries(db, () =>
      expect(
        batchTransaction(db, (tx) => tx.run([tx.q("storage_data").insert(row("bt-11")), tx.q("storage_data").insert(row("bt-1"))], { commit: true })),
      ).rejects.toThrow(/duplicate|unique/i),
    );
    expect(await ids()).toEqual(["bt-1", "bt-2", "bt-8", "bt-9"]);
    if (dialect === "mysql") expect(sent).toEqual([expect.stringMatching(db.compound ? /COMMIT;\nEND$/ : /COMMIT$/), "ROLLBACK"]);
    await notInTransaction();
  });

  it("insertWhen stores its rows only while its condition holds (MySQL: a session variable set earlier in the batch)", async () => {
    if (dialect !== "mysql") return; // Only MySQL batches use it (FROM DUAL, session variables).
    const ins = { table: "storage_data", rows: [row("bt-12"), row("bt-13")] };
    await batchTransaction(db, (tx) => tx.run([sqlText("SET @bt_flag = NULL"), insertWhen(ins, "@bt_flag IS NOT NULL")], { commit: true }));
    expect(await ids()).toEqual(["bt-1", "bt-2", "bt-8", "bt-9"]);
    await batchTransaction(db, (tx) => tx.run([sqlText("SET @bt_flag = ?", ["x"]), insertWhen(ins, "@bt_flag IS NOT NULL")], { commit: true }));
    expect(await ids()).toEqual(["bt-1", "bt-12", "bt-13", "bt-2", "bt-8", "bt-9"]);
  });

  it("isolates: what a transaction wrote is invisible to others until it commits", async () => {
    if (dialect !== "mysql") return; // SQLite's one connection serialises transactions.
    const other = await createTestDatabase("mysql");
    try {
      await other.knex.schema.createTable("t", (t) => t.integer("id").primary());
      const seen: number[] = [];
      await batchTransaction(other, async (tx) => {
        await tx.run([tx.q("t").insert({ id: 1 })]);
        seen.push(((await other.knex("t").count({ n: "*" })) as { n: number }[])[0]?.n ?? -1);
      });
      seen.push(((await other.knex("t").count({ n: "*" })) as { n: number }[])[0]?.n ?? -1);
      expect(seen.map(Number)).toEqual([0, 1]);
    } finally {
      await other.close();
    }
  });
});

describe.skipIf(!DIALECTS.includes("mysql"))("batchTransaction's call on mysql (a prepared CALL of a procedure)", () => {
  let db: TestDatabase;
  const ids = async () => ((await db.knex("storage_data").orderBy("id").pluck("id")) as string[]).filter((id) => id.startsWith("pc-"));
  const notInTransaction = async () => {
    const [rows] = (await db.knex.raw("SELECT @@in_transaction AS t")) as [{ t: number }[]];
    expect(rows[0]?.t).toBe(0);
  };
  const handler = "DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;";
  const insert = "INSERT INTO storage_data (id, version, created_at, expires_at) VALUES (p_id, 1, 1, 2);";
  // One connection: what a call leaves on it is what the next transaction gets.
  beforeAll(async () => {
    db = await createTestDatabase("mysql", { poolMax: 1 });
    await db.knex.raw(`CREATE PROCEDURE pc_begin(IN p_id VARCHAR(36)) BEGIN ${handler} START TRANSACTION; ${insert} SELECT p_id AS a; SELECT 2 AS b; END`);
    await db.knex.raw(`CREATE PROCEDURE pc_commit(IN p_id VARCHAR(36)) BEGIN ${handler} ${insert} COMMIT; END`);
  });
  afterAll(() => db.close());

  it("gives the rows of each result set; a procedure that begins and one that commits make one transaction", async () => {
    const sets = await batchTransaction(db, async (tx) => {
      const out = await tx.call!(sqlText("CALL pc_begin(?)", ["pc-1"]), { begins: true });
      await tx.run([tx.q("storage_data").insert({ id: "pc-2", version: 1, created_at: 1, expires_at: 2 })]);
      await tx.call!(sqlText("CALL pc_commit(?)", ["pc-3"]), { commits: true });
      await expect(tx.run([sqlText("SELECT 1")])).rejects.toThrow("after the one that committed");
      return out;
    });
    expect(sets).toEqual([[{ a: "pc-1" }], [{ b: 2 }]]);
    expect(await ids()).toEqual(["pc-1", "pc-2", "pc-3"]);
    await notInTransaction();
  });

  it("rolls back what a procedure began when the function throws, or when the committing procedure fails", async () => {
    await expect(
      batchTransaction(db, async (tx) => {
        await tx.call!(sqlText("CALL pc_begin(?)", ["pc-4"]), { begins: true });
        throw new Error("no match");
      }),
    ).rejects.toThrow("no match");
    await notInTransaction();
    await expect(
      batchTransaction(db, async (tx) => {
        await tx.call!(sqlText("CALL pc_begin(?)", ["pc-5"]), { begins: true });
        await tx.call!(sqlText("CALL pc_commit(?)", ["pc-1"]), { commits: true });
      }),
    ).rejects.toThrow(/duplicate/i);
    expect(await ids()).toEqual(["pc-1", "pc-2", "pc-3"]);
    await notInTransaction();
  });

  it("refuses a procedure that begins once the transaction began, and any other before it began", async () => {
    await expect(
      batchTransaction(db, async (tx) => {
        await tx.run([tx.q("storage_data").insert({ id: "pc-6", version: 1, created_at: 1, expires_at: 2 })]);
        await tx.call!(sqlText("CALL pc_begin(?)", ["pc-7"]), { begins: true });
      }),
    ).rejects.toThrow("called after it began");
    await expect(batchTransaction(db, (tx) => tx.call!(sqlText("CALL pc_commit(?)", ["pc-8"]), { commits: true }))).rejects.toThrow("before the transaction began");
    expect(await ids()).toEqual(["pc-1", "pc-2", "pc-3"]);
    await notInTransaction();
  });

  it("is only where a procedure may begin the transaction: not on a knex transaction, not on SQLite", async () => {
    await db.knex.transaction(async (trx) => expect("call" in batcherOf(trx, "mysql")).toBe(false));
    const lite = await createTestDatabase("sqlite");
    try {
      await batchTransaction(lite, async (tx) => expect("call" in tx).toBe(false));
    } finally {
      await lite.close();
    }
  });
});
