import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import knexFactory, { type Knex } from "knex";
import type { Dialect } from "./dialect.js";
import { migrationSource } from "./migrations.js";
import { describeError, looksLikeSql, QueryTimeoutError } from "./errors.js";
import { startCheckpointer } from "./sqlite-checkpointer.js";

export type { Dialect } from "./dialect.js";

/** Database is an open connection pool with its dialect. */
export interface Database {
  /** knex is the query builder bound to the pool. */
  readonly knex: Knex;
  /** dialect says which SQL the helpers below must write. */
  readonly dialect: Dialect;
  /**
   * compound says batchTransaction sends a batch of several statements as one compound statement
   * (MariaDB's `BEGIN NOT ATOMIC … END`), which the server answers once, with the rows of its reads
   * and one OK; a multi-statement query is answered statement by statement, a packet each (a send,
   * and a wakeup of the client, per statement). MySQL runs compound statements only in stored
   * programs: false there, and on SQLite.
   */
  readonly compound: boolean;
  /**
   * ping runs `SELECT 1`, failing when the database has not answered within timeoutMs. On MySQL it
   * has a connection of its own, so that it measures the database, not a pool busy with calls.
   */
  ping(timeoutMs: number): Promise<void>;
  /** close ends every connection. */
  close(): Promise<void>;
}

/** Queryable is the pool or a transaction: store functions run on either. */
export type Queryable = Knex | Knex.Transaction;

/** dialectOf tells the dialect of a database URL (`sqlite:<path>` or `mysql://...`). */
export function dialectOf(url: string): Dialect {
  if (url.startsWith("sqlite:")) return "sqlite";
  if (url.startsWith("mysql://")) return "mysql";
  throw new Error(`unsupported database url "${redactUrl(url)}": expected sqlite:<path> or mysql://...`);
}

/** redactUrl hides the password of a database URL, for logs and errors. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
}

/** DatabaseLog receives knex's own warnings, so they reach the JSON log instead of stderr. */
export interface DatabaseLog {
  warn(message: string): void;
  error(message: string): void;
  debug(message: string): void;
}

/**
 * knexText is what of one of knex's own messages may be logged ("Acquire connection error: …",
 * "Connection Error: …"): its first line, without a stack, an error's SQL or its values. knex writes
 * no statement into these, but an error it prints could carry one (a driver's message quoting a
 * value): then only the error's code is kept.
 */
function knexText(m: unknown): string {
  if (m instanceof Error) return describeError(m).summary;
  const line = (typeof m === "string" ? m : "(a non-text message)").split("\n", 1)[0] ?? "";
  return looksLikeSql(line) ? "(a message quoting SQL, left out)" : line.slice(0, 300);
}

/** stderrLog writes knex's warnings and errors to stderr (the CLI's `migrate`, tests), as knexText allows. */
const stderrLog: DatabaseLog = {
  warn: (m) => process.stderr.write(`${m}\n`),
  error: (m) => process.stderr.write(`${m}\n`),
  debug: () => {},
};

/** knexLog adapts a DatabaseLog (default: stderr) to knex's `log` option: every message through knexText. */
function knexLog(log: DatabaseLog = stderrLog): Knex.Config["log"] {
  const text = knexText;
  return {
    warn: (m: unknown) => log.warn(`knex: ${text(m)}`),
    error: (m: unknown) => log.error(`knex: ${text(m)}`),
    deprecate: (m: unknown) => log.warn(`knex: ${text(m)}`),
    debug: (m: unknown) => log.debug(`knex: ${text(m)}`),
  };
}

/** Timeouts are the store's bounds on waiting for the database (OpenDatabaseOptions). */
interface Timeouts {
  /** queryMs bounds each MySQL statement; 0: none (migrations run without it). */
  queryMs: number;
  acquireMs: number;
  connectMs: number;
  busyMs: number;
}

/** sqliteKnex opens a SQLite file (or `:memory:`) tuned for a small server: WAL, NORMAL sync. */
function sqliteKnex(path: string, timeouts: Timeouts, log?: DatabaseLog): Knex {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  return knexFactory({
    client: "better-sqlite3",
    connection: { filename: path },
    useNullAsDefault: true,
    // A failing statement's error message gets its SQL with `?`, never with the values spliced in.
    compileSqlOnError: false,
    acquireConnectionTimeout: timeouts.acquireMs,
    log: knexLog(log),
    pool: {
      min: 1,
      max: 1,
      afterCreate(conn: { pragma(s: string): unknown }, done: (err: Error | null, conn: unknown) => void) {
        conn.pragma("journal_mode = WAL");
        conn.pragma("synchronous = NORMAL");
        // Checkpoints run in a worker thread (sqlite-checkpointer.ts), not in a request's commit.
        if (path !== ":memory:") conn.pragma("wal_autocheckpoint = 0");
        // better-sqlite3 is synchronous: a statement waiting for another connection's lock holds
        // the event loop for up to this long, then fails SQLITE_BUSY (answered UNAVAILABLE).
        conn.pragma(`busy_timeout = ${Math.max(0, Math.round(timeouts.busyMs))}`);
        conn.pragma("foreign_keys = ON");
        done(null, conn);
      },
    },
  });
}

/**
 * mysqlKnex opens a MySQL/MariaDB pool. Sessions run READ COMMITTED: allocation locks the row it
 * claims and nothing else, and the store never relies on repeatable reads.
 */
function mysqlKnex(url: string, poolMax: number, timeouts: Timeouts, log?: DatabaseLog): Knex {
  return knexFactory({
    client: timedMysqlClient(timeouts) as unknown as typeof Knex.Client,
    log: knexLog(log),
    // A failing statement's error message gets its SQL with `?`, never with the values spliced in.
    compileSqlOnError: false,
    acquireConnectionTimeout: timeouts.acquireMs,
    // multipleStatements lets runBatch send a transaction's statements in one round trip. Every
    // value the store sends is a bound parameter, never spliced into SQL text, so a batch can only
    // hold the statements the store wrote.
    connection: {
      uri: url,
      charset: "utf8mb4",
      supportBigNumbers: true,
      bigNumberStrings: false,
      multipleStatements: true,
      connectTimeout: timeouts.connectMs,
    } as Knex.MySql2ConnectionConfig,
    pool: {
      min: 0,
      max: poolMax,
      afterCreate(conn: { query(sql: string, cb: (err: Error | null) => void): void }, done: (err: Error | null, conn: unknown) => void) {
        conn.query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", (err) => done(err, conn));
      },
    },
  });
}

/** ClosableConnection is the part of a mysql2 connection a timed-out statement closes. */
interface ClosableConnection {
  destroy(): void;
  stream?: { destroy?(): void };
}

/**
 * withQueryTimeout rejects with a QueryTimeoutError when `run` has not settled within ms, and closes
 * the connection it runs on (socket and all): mysql2's own `timeout` option answers the caller but
 * leaves the statement pending on the connection, which goes back to the pool with it.
 */
function withQueryTimeout<T>(run: Promise<T>, conn: ClosableConnection, ms: number): Promise<T> {
  if (!(ms > 0)) return run;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      try {
        conn.destroy();
        conn.stream?.destroy?.();
      } catch {
        // Closing a broken connection can throw; it is gone either way.
      }
      reject(new QueryTimeoutError(ms));
    }, ms);
    run.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e as Error);
      },
    );
  });
}

/** MysqlClientClass is knex's mysql2 client class, as far as timedMysqlClient uses it. */
type MysqlClientClass = new (config: Knex.Config) => { _query(connection: unknown, obj: unknown): Promise<unknown> };

/**
 * timedMysqlClient is knex's mysql2 client with a query timeout on every statement (the pool's and
 * every transaction's, whose client derives from the same class): see withQueryTimeout.
 */
function timedMysqlClient(timeouts: Timeouts): MysqlClientClass {
  const Base = createRequire(import.meta.url)("knex/lib/dialects/mysql2/index.js") as MysqlClientClass;
  return class TimedMysql2Client extends Base {
    override _query(connection: unknown, obj: unknown): Promise<unknown> {
      // A statement may bound itself more tightly: `.options({ queryTimeoutMs })` (the health probe).
      const query = obj as { options?: Record<string, unknown> } | undefined;
      let ms = timeouts.queryMs;
      if (typeof query?.options?.["queryTimeoutMs"] === "number") {
        const { queryTimeoutMs, ...rest } = query.options;
        ms = ms > 0 ? Math.min(ms, queryTimeoutMs as number) : (queryTimeoutMs as number);
        query.options = rest;
      }
      return withQueryTimeout(super._query(connection, obj), connection as ClosableConnection, ms);
    }
  };
}

/** ensureMysqlDatabase creates the URL's database when it does not exist yet. */
async function ensureMysqlDatabase(url: string, timeouts: Timeouts): Promise<void> {
  const parsed = new URL(url);
  const name = decodeURIComponent(parsed.pathname.replace(/^\//, ""));
  if (name === "") throw new Error(`database url "${redactUrl(url)}" names no database`);
  if (!/^[A-Za-z0-9_$-]+$/.test(name)) throw new Error(`database name "${name}" has characters opengms does not quote`);
  parsed.pathname = "/";
  const admin = mysqlKnex(parsed.toString(), 1, timeouts);
  try {
    await admin.raw(`CREATE DATABASE IF NOT EXISTS \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  } finally {
    await admin.destroy();
  }
}

/** OpenDatabaseOptions tune openDatabase. */
export interface OpenDatabaseOptions {
  /** migrate runs the migrations to the latest version (default true). */
  migrate?: boolean;
  /** poolMax is the largest MySQL pool (default 20). */
  poolMax?: number;
  /** log receives knex's warnings (default: knex writes them to the console). */
  log?: DatabaseLog;
  /** compound sends batches as compound statements (Database.compound; default: when the server is MariaDB). */
  compound?: boolean;
  /**
   * queryTimeoutMs ends a MySQL statement the database has not answered within it: the call fails
   * as unavailable and the connection that ran it is closed (default 10 s; 0: none). Migrations run without it.
   */
  queryTimeoutMs?: number;
  /** acquireTimeoutMs bounds the wait for a pooled connection (default 5 s). */
  acquireTimeoutMs?: number;
  /** connectTimeoutMs bounds opening a MySQL connection (default 5 s). */
  connectTimeoutMs?: number;
  /** busyTimeoutMs is SQLite's busy timeout (default 5 s). */
  busyTimeoutMs?: number;
}

/** openDatabase connects to the database at url, creating it (MySQL) and migrating it as needed. */
export async function openDatabase(url: string, options: OpenDatabaseOptions = {}): Promise<Database> {
  const dialect = dialectOf(url);
  // The query timeout applies once the schema is ready: a migration may take long.
  const timeouts: Timeouts = {
    queryMs: 0,
    acquireMs: options.acquireTimeoutMs ?? 5_000,
    connectMs: options.connectTimeoutMs ?? 5_000,
    busyMs: options.busyTimeoutMs ?? 5_000,
  };
  let knex: Knex;
  if (dialect === "sqlite") {
    knex = sqliteKnex(url.slice("sqlite:".length), timeouts, options.log);
  } else {
    await ensureMysqlDatabase(url, timeouts);
    knex = mysqlKnex(url, options.poolMax ?? 20, timeouts, options.log);
  }
  // The health probe's own connection (Database.ping).
  const probe = dialect === "mysql" ? mysqlKnex(url, 1, { ...timeouts }, options.log) : undefined;
  const path = url.slice("sqlite:".length);
  const checkpointer = dialect === "sqlite" && path !== ":memory:" ? startCheckpointer(path, 1_000) : undefined;
  let compound = false;
  try {
    if (dialect === "mysql") compound = options.compound ?? (await isMariadb(knex));
  } catch (e) {
    await probe?.destroy();
    await knex.destroy();
    throw e;
  }
  const db: Database = {
    knex,
    dialect,
    compound,
    async ping(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          (probe ?? knex).raw("SELECT 1").options({ queryTimeoutMs: timeoutMs }),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`the database did not answer a probe within ${timeoutMs} ms`)), timeoutMs);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      await checkpointer?.stop();
      await probe?.destroy();
      await knex.destroy();
    },
  };
  try {
    if (options.migrate ?? true) await migrateLatest(db);
  } catch (e) {
    await db.close();
    throw e;
  }
  timeouts.queryMs = options.queryTimeoutMs ?? 10_000;
  queryTimeouts.set(db, timeouts);
  return db;
}

/** isMariadb tells whether the server is MariaDB (its version says so). */
async function isMariadb(knex: Knex): Promise<boolean> {
  const [rows] = (await knex.raw("SELECT VERSION() AS version")) as [{ version: string }[]];
  return /mariadb/i.test(rows[0]?.version ?? "");
}

/**
 * isMigrationRace tells whether a migration failed only because another node is migrating the same
 * database: it holds knex's migration lock, or created knex's own tables a moment before us.
 */
function isMigrationRace(e: unknown): boolean {
  const err = e as { name?: string; code?: string; message?: string };
  if (err.name === "MigrationLocked") return true;
  if (err.code === "ER_LOCK_DEADLOCK") return true;
  return /knex_migrations/.test(err.message ?? "") && (err.code === "ER_TABLE_EXISTS_ERROR" || /already exists/i.test(err.message ?? ""));
}

/** LOCK_TABLE is knex's migration lock table (its default name). */
const LOCK_TABLE = "knex_migrations_lock";

/**
 * prepareLockTable creates knex's migration lock table and its one row before knex would. knex
 * checks for the row and then inserts it, so nodes starting together can insert one row each, and
 * knex, which expects to lock exactly one row, then finds the table "already locked" for ever. A
 * table left with extra unlocked rows by that race is repaired.
 */
async function prepareLockTable(knex: Knex): Promise<void> {
  try {
    await knex.schema.createTable(LOCK_TABLE, (t) => {
      t.increments("index").primary();
      t.integer("is_locked");
    });
  } catch (e) {
    if (!(await knex.schema.hasTable(LOCK_TABLE))) throw e;
  }
  await knex(LOCK_TABLE).insert({ index: 1, is_locked: 0 }).onConflict("index").ignore();
  await knex(LOCK_TABLE).where("index", ">", 1).andWhere("is_locked", 0).delete();
}

/** How long a node waits for another node's migrations before giving up. */
const MIGRATION_WAIT_MS = 60_000;

/**
 * migrateLatest brings the schema to the latest migration. Several nodes may call it at once: while
 * another holds the migration lock, it waits and tries again (then finds nothing left to apply).
 */
export async function migrateLatest(db: Database): Promise<string[]> {
  const deadline = Date.now() + MIGRATION_WAIT_MS;
  for (;;) {
    try {
      await prepareLockTable(db.knex);
      const [, names] = (await db.knex.migrate.latest({ migrationSource: migrationSource(db.dialect) })) as [number, string[]];
      return names;
    } catch (e) {
      if (!isMigrationRace(e)) throw e;
      if (Date.now() > deadline) {
        throw new Error(
          `migrations: the migration lock has been held for ${MIGRATION_WAIT_MS / 1000} s; if no node is migrating, a crashed one left it: set is_locked = 0 in knex_migrations_lock`,
          { cause: e },
        );
      }
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    }
  }
}

/** migrateDownAll undoes every migration (tests of the migrations themselves). */
export async function migrateDownAll(db: Database): Promise<void> {
  await db.knex.migrate.rollback({ migrationSource: migrationSource(db.dialect) }, true);
}

/**
 * lockForUpdate adds the row lock a claim needs: `FOR UPDATE` (with SKIP LOCKED when asked) on
 * MySQL; nothing on SQLite, whose single connection already serialises transactions.
 */
export function lockForUpdate<T extends Knex.QueryBuilder>(qb: T, dialect: Dialect, skipLocked = false): T {
  if (dialect === "sqlite") return qb;
  const locked = qb.forUpdate();
  return (skipLocked ? locked.skipLocked() : locked) as T;
}

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

/** queryTimeouts are the timeouts of each open database, for batchTransaction, which drives connections itself. */
const queryTimeouts = new WeakMap<Database, Timeouts>();

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
  const timeoutMs = queryTimeouts.get(db)?.queryMs ?? 0;
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
