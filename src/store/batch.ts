// The batching driver: a transaction's statements sent to MySQL in one round trip (runBatch,
// batchTransaction, Batcher), and the statement helpers it runs. On SQLite the same calls run
// statement by statement on its single connection.
import type { Knex } from "knex";
import type { Dialect } from "./dialect.js";
import { queryTimeoutOf, withQueryTimeout, type ClosableConnection, type Database, type Queryable } from "./database.js";

/**
 * SqlText is a statement written as SQL text with `?` placeholders and its bound values: what the
 * hot paths (allocation, matching) send, built without knex's query builder, whose compilation cost
 * more CPU than the statements' own round trip. Values are always bound, never spliced into the text.
 */
export interface SqlText {
  readonly sql: string;
  readonly bindings: readonly unknown[];
}

/** Statement is a query built but not yet run: a knex builder, a knex raw query, or SQL text. */
export type Statement = Knex.QueryBuilder | Knex.Raw | SqlText;

/** sqlText types a SqlText. */
export const sqlText = (sql: string, bindings: readonly unknown[] = []): SqlText => ({ sql, bindings });

/** nativeOf is a statement's SQL with `?` placeholders and its values. */
function nativeOf(st: Statement): SqlText {
  return "toSQL" in st ? (st.toSQL().toNative() as SqlText) : st;
}

/** runOne runs one statement on the pool or a transaction, as knex answers it. */
function runOne(q: Queryable, st: Statement): Promise<unknown> {
  return "toSQL" in st ? Promise.resolve(st) : Promise.resolve(q.raw(st.sql, st.bindings as Knex.RawBinding[]));
}

/** InsertRows are rows to insert into one table, all with the same columns. */
export interface InsertRows {
  readonly table: string;
  readonly rows: readonly Record<string, unknown>[];
}

/** insertStatement is the INSERT of `ins` as a knex builder. */
export function insertStatement(q: Queryable, ins: InsertRows): Knex.QueryBuilder {
  return q(ins.table).insert(ins.rows as Record<string, unknown>[]);
}

/**
 * insertWhen is the INSERT of `ins` that stores its rows only while `condition` (SQL without
 * values, e.g. on a session variable a statement before it in the batch set) holds:
 * `INSERT INTO t (cols) SELECT ?, … FROM DUAL WHERE condition`, one SELECT per row.
 */
export function insertWhen(ins: InsertRows, condition: string): SqlText {
  const columns = Object.keys(ins.rows[0] ?? {});
  if (columns.length === 0) throw new Error(`insertWhen: no rows for ${ins.table}`);
  const select = `SELECT ${columns.map(() => "?").join(", ")} FROM DUAL WHERE ${condition}`;
  return {
    sql: `INSERT INTO \`${ins.table}\` (${columns.map((c) => `\`${c}\``).join(", ")}) ${ins.rows.map(() => select).join(" UNION ALL ")}`,
    bindings: ins.rows.flatMap((r) => columns.map((c) => r[c])),
  };
}

/** isRead tells whether a statement answers with rows (SELECT or WITH). */
const isRead = (st: Statement | string) => /^\s*(select|with)\b/i.test(typeof st === "string" ? st : nativeOf(st).sql);

/**
 * runBatch runs statements in order and returns each one's result rows (empty for writes). On
 * MySQL they go to the server in one round trip (multi-statement query), which is most of what a
 * short transaction costs; the server stops at the first failing statement and the error rejects
 * the batch, so run it inside a transaction to undo the ones before. On SQLite, in process, they
 * simply run one after the other.
 */
export async function runBatch(q: Queryable, dialect: Dialect, statements: readonly Statement[]): Promise<unknown[][]> {
  if (statements.length === 0) return [];
  if (dialect === "sqlite") {
    const out: unknown[][] = [];
    for (const st of statements) {
      const r: unknown = await runOne(q, st);
      // Writes answer with ids or counts here; as on MySQL, only a read's rows are kept.
      out.push(Array.isArray(r) && isRead(st) ? (r as unknown[]) : []);
    }
    return out;
  }
  const batch = compileBatch(statements);
  const [result] = (await q.raw(batch.sql, batch.bindings as Knex.RawBinding[])) as [unknown];
  return rowsOfBatch(result, batch);
}

/** Batch is statements joined into one query; `own` are the positions, among its statements, of the ones whose rows the caller gets. */
interface Batch {
  sql: string;
  bindings: unknown[];
  /** count is how many statements the query holds, with the lead and the trailer. */
  count: number;
  own: number[];
  /** reads, for a compound statement, tells which of the query's statements answer with rows. */
  reads?: boolean[];
}

/**
 * compileBatch joins statements, between a `lead` and a `trailer` statement without bindings, and
 * then `after`, into one multi-statement query, or with `compound` (and more than one statement)
 * into one compound statement. The rows are the statements' and then after's.
 */
function compileBatch(statements: readonly Statement[], lead?: string, trailer?: string, compound = false, after: readonly Statement[] = []): Batch {
  const own = statements.map(nativeOf);
  const then = after.map(nativeOf);
  const sql = [...(lead === undefined ? [] : [lead]), ...own.map((c) => c.sql), ...(trailer === undefined ? [] : [trailer]), ...then.map((c) => c.sql)];
  const first = lead === undefined ? 0 : 1;
  const afterFirst = first + own.length + (trailer === undefined ? 0 : 1);
  const batch = {
    bindings: [...own, ...then].flatMap((c) => c.bindings),
    count: sql.length,
    own: [...own.map((_, k) => first + k), ...then.map((_, k) => afterFirst + k)],
  };
  if (!compound || sql.length === 1) return { ...batch, sql: sql.join(";\n") };
  return { ...batch, sql: `BEGIN NOT ATOMIC\n${sql.join(";\n")};\nEND`, reads: sql.map((q) => isRead(q)) };
}

/**
 * rowsOfBatch is the rows of a batch's own statements. mysql2 answers a multi-statement query with
 * one result per statement (rows for a read, a header object for a write), a compound statement
 * with the rows of each of its reads and then its OK (a header object), and a single statement
 * with its result alone.
 */
function rowsOfBatch(result: unknown, batch: Batch): unknown[][] {
  let rows: unknown[][];
  if (batch.reads !== undefined) {
    const sets = batch.reads.some((r) => r) ? (result as unknown[]) : [];
    const reads = batch.reads.filter((r) => r).length;
    if (sets.length !== (reads === 0 ? 0 : reads + 1)) throw new Error(`compound statement of ${reads} reads answered with ${sets.length} results`);
    let next = 0;
    rows = batch.reads.map((read) => (read ? (sets[next++] as unknown[]) : []));
  } else {
    const results = batch.count === 1 ? [result] : (result as unknown[]);
    rows = results.map((r) => (Array.isArray(r) ? (r as unknown[]) : []));
  }
  return batch.own.map((k) => rows[k] ?? []);
}

/** RunOptions tune one batch of a transaction. */
export interface RunOptions {
  /**
   * commit says the batch is the transaction's last: on batchTransaction over MySQL the COMMIT rides
   * with it (one round trip fewer), and nothing may run in the transaction after it. Elsewhere the
   * transaction commits as usual when its function returns.
   */
  commit?: boolean;
  /**
   * after are reads that need not see the transaction, only what its statements left in session
   * variables: on batchTransaction over MySQL they follow the COMMIT in the same round trip, so the
   * reply comes in one piece once the commit is durable (a read before it is sent on its own while
   * the commit waits for the disk); elsewhere they follow the batch's statements. Their rows come
   * after the statements'.
   */
  after?: readonly Statement[];
}

/**
 * Batcher builds statements with `q` and runs them in batches (see runBatch) inside one
 * transaction. Store functions that take a Batcher run every statement through `run`.
 */
export interface Batcher {
  /** q builds statements; on a batchTransaction over MySQL it is the pool: never run a statement on it directly. */
  readonly q: Queryable;
  readonly dialect: Dialect;
  /** run runs a batch: the rows of each statement (empty for writes), then of each of options.after. */
  run(statements: readonly Statement[], options?: RunOptions): Promise<unknown[][]>;
  /**
   * call, where the Batcher has it (batchTransaction over MySQL), runs one CALL of a stored
   * procedure as a prepared statement (parsed once per connection) and gives the rows of each of
   * its result sets. `effect` says what the procedure does to the transaction: it begins it (the
   * first thing the transaction runs) or ends it with its COMMIT (nothing may run after); such a
   * procedure must roll back by itself on an error.
   */
  call?(statement: SqlText, effect?: CallEffect): Promise<unknown[][]>;
}

/** CallEffect is what a procedure run by Batcher.call does to its transaction. */
export interface CallEffect {
  begins?: boolean;
  commits?: boolean;
}

/** resultSetsOf is the rows of each result set of a CALL, whose answer ends with its OK. */
function resultSetsOf(result: unknown): unknown[][] {
  return Array.isArray(result) ? (result as unknown[]).filter((r): r is unknown[] => Array.isArray(r)) : [];
}

/** afterCommit refuses a batch after the one that said it was the last (RunOptions.commit). */
const afterCommit = () => new Error("batchTransaction: a batch after the one that committed");

/**
 * batcherOf runs batches on a knex transaction (or the pool), which commits when its function
 * returns; it refuses a batch after one that said it was the last, as batchTransaction does.
 */
export function batcherOf(q: Queryable, dialect: Dialect): Batcher {
  let committed = false;
  return {
    q,
    dialect,
    run(statements, options = {}) {
      if (committed) return Promise.reject(afterCommit());
      committed = options.commit === true;
      return runBatch(q, dialect, [...statements, ...(options.after ?? [])]);
    },
  };
}

/** MysqlConnection is the part of a mysql2 connection (callback API) batchTransaction drives. */
interface MysqlConnection extends ClosableConnection {
  query(options: { sql: string; values: readonly unknown[] }, cb: (err: Error | null, result: unknown) => void): void;
  execute(options: { sql: string; values: readonly unknown[] }, cb: (err: Error | null, result: unknown) => void): void;
}


/** PoolClient is the part of knex's client that lends and takes back its pooled connections. */
interface PoolClient {
  acquireConnection(): Promise<unknown>;
  releaseConnection(conn: unknown): Promise<unknown>;
}

/**
 * batchTransaction runs fn in a transaction whose statements all go through the Batcher it is given.
 * On MySQL it drives a connection of knex's pool itself: BEGIN rides with the first batch, COMMIT
 * with the last when fn says so (RunOptions.commit), else it is one more round trip; ROLLBACK when
 * fn throws. On MariaDB a batch is one compound statement (Database.compound): a statement that
 * fails ends it there, as it ends a multi-statement query. A transaction of one committing batch
 * is one round trip. A knex transaction costs several times the statements of a short transaction
 * in CPU (it builds a client and a knex instance per transaction) and a round trip for its BEGIN;
 * this is for the hot paths (allocation, matching). On SQLite it is a knex transaction, which costs little there.
 */
export async function batchTransaction<T>(db: Database, fn: (tx: Batcher) => Promise<T>): Promise<T> {
  if (db.dialect === "sqlite") return db.knex.transaction((trx) => fn(batcherOf(trx, "sqlite")));
  const client = db.knex.client as PoolClient;
  const conn = (await client.acquireConnection()) as MysqlConnection;
  const timeoutMs = queryTimeoutOf(db);
  const query = (sql: string, values: readonly unknown[]) =>
    withQueryTimeout(new Promise<unknown>((resolve, reject) => conn.query({ sql, values }, (err, result) => (err === null ? resolve(result) : reject(err)))), conn, timeoutMs);
  const execute = (sql: string, values: readonly unknown[]) =>
    withQueryTimeout(new Promise<unknown>((resolve, reject) => conn.execute({ sql, values }, (err, result) => (err === null ? resolve(result) : reject(err)))), conn, timeoutMs);
  let begun = false;
  let committed = false;
  const tx: Batcher = {
    async call(statement, effect = {}) {
      if (committed) throw afterCommit();
      if (effect.begins === true && begun) throw new Error("batchTransaction: a procedure that begins the transaction, called after it began");
      // As for a batch: set before sending, so that a failure is followed by a ROLLBACK (a no-op
      // when the procedure rolled back by itself).
      if (effect.begins === true) begun = true;
      if (!begun) throw new Error("batchTransaction: a procedure called before the transaction began");
      const result = await execute(statement.sql, statement.bindings);
      committed = effect.commits === true;
      return resultSetsOf(result);
    },
    q: db.knex,
    dialect: "mysql",
    async run(statements, options = {}) {
      if (committed) throw afterCommit();
      const after = options.after ?? [];
      if (statements.length === 0 && after.length === 0 && options.commit !== true) return [];
      const batch = compileBatch(statements, begun ? undefined : "START TRANSACTION", options.commit === true ? "COMMIT" : undefined, db.compound, after);
      // Set before sending: if the batch fails after its BEGIN ran, the ROLLBACK must follow (the
      // server stops at the failing statement, so a COMMIT after it has not run).
      begun = true;
      const result = await query(batch.sql, batch.bindings);
      committed = options.commit === true;
      return rowsOfBatch(result, batch);
    },
  };
  try {
    const out = await fn(tx);
    if (begun && !committed) await query("COMMIT", []);
    return out;
  } catch (e) {
    // A connection that cannot roll back is broken: destroyed, the pool replaces it.
    if (begun && !committed) await query("ROLLBACK", []).catch(() => conn.destroy());
    throw e;
  } finally {
    await client.releaseConnection(conn);
  }
}
