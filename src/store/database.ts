import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import knexFactory, { type Knex } from "knex";
import { migrationSource } from "./migrations.js";
import { startCheckpointer } from "./sqlite-checkpointer.js";

/** Dialect is the kind of database behind the store. */
export type Dialect = "sqlite" | "mysql";

/** Database is an open connection pool with its dialect. */
export interface Database {
  /** knex is the query builder bound to the pool. */
  readonly knex: Knex;
  /** dialect says which SQL the helpers below must write. */
  readonly dialect: Dialect;
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

/** knexLog adapts a DatabaseLog to knex's `log` option. */
function knexLog(log: DatabaseLog | undefined): Knex.Config["log"] {
  if (log === undefined) return undefined;
  const text = (m: unknown) => (typeof m === "string" ? m : m instanceof Error ? m.message : JSON.stringify(m));
  return {
    warn: (m: unknown) => log.warn(`knex: ${text(m)}`),
    error: (m: unknown) => log.error(`knex: ${text(m)}`),
    deprecate: (m: unknown) => log.warn(`knex: ${text(m)}`),
    debug: (m: unknown) => log.debug(`knex: ${text(m)}`),
  };
}

/** sqliteKnex opens a SQLite file (or `:memory:`) tuned for a small server: WAL, NORMAL sync. */
function sqliteKnex(path: string, log?: DatabaseLog): Knex {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  return knexFactory({
    client: "better-sqlite3",
    connection: { filename: path },
    useNullAsDefault: true,
    log: knexLog(log),
    pool: {
      min: 1,
      max: 1,
      afterCreate(conn: { pragma(s: string): unknown }, done: (err: Error | null, conn: unknown) => void) {
        conn.pragma("journal_mode = WAL");
        conn.pragma("synchronous = NORMAL");
        // Checkpoints run in a worker thread (sqlite-checkpointer.ts), not in a request's commit.
        if (path !== ":memory:") conn.pragma("wal_autocheckpoint = 0");
        conn.pragma("busy_timeout = 5000");
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
function mysqlKnex(url: string, poolMax: number, log?: DatabaseLog): Knex {
  return knexFactory({
    client: "mysql2",
    log: knexLog(log),
    // multipleStatements lets runBatch send a transaction's statements in one round trip. Every
    // value the store sends is a bound parameter, never spliced into SQL text, so a batch can only
    // hold the statements the store wrote.
    connection: { uri: url, charset: "utf8mb4", supportBigNumbers: true, bigNumberStrings: false, multipleStatements: true } as Knex.MySql2ConnectionConfig,
    pool: {
      min: 0,
      max: poolMax,
      afterCreate(conn: { query(sql: string, cb: (err: Error | null) => void): void }, done: (err: Error | null, conn: unknown) => void) {
        conn.query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", (err) => done(err, conn));
      },
    },
  });
}

/** ensureMysqlDatabase creates the URL's database when it does not exist yet. */
async function ensureMysqlDatabase(url: string): Promise<void> {
  const parsed = new URL(url);
  const name = decodeURIComponent(parsed.pathname.replace(/^\//, ""));
  if (name === "") throw new Error(`database url "${redactUrl(url)}" names no database`);
  if (!/^[A-Za-z0-9_$-]+$/.test(name)) throw new Error(`database name "${name}" has characters opengms does not quote`);
  parsed.pathname = "/";
  const admin = mysqlKnex(parsed.toString(), 1);
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
}

/** openDatabase connects to the database at url, creating it (MySQL) and migrating it as needed. */
export async function openDatabase(url: string, options: OpenDatabaseOptions = {}): Promise<Database> {
  const dialect = dialectOf(url);
  let knex: Knex;
  if (dialect === "sqlite") {
    knex = sqliteKnex(url.slice("sqlite:".length), options.log);
  } else {
    await ensureMysqlDatabase(url);
    knex = mysqlKnex(url, options.poolMax ?? 20, options.log);
  }
  const path = url.slice("sqlite:".length);
  const checkpointer = dialect === "sqlite" && path !== ":memory:" ? startCheckpointer(path, 1_000) : undefined;
  const db: Database = {
    knex,
    dialect,
    async close() {
      await checkpointer?.stop();
      await knex.destroy();
    },
  };
  try {
    if (options.migrate ?? true) await migrateLatest(db);
  } catch (e) {
    await db.close();
    throw e;
  }
  return db;
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

/** isDuplicateKey tells whether an error is a unique-key violation on either dialect. */
export function isDuplicateKey(e: unknown): boolean {
  const err = e as { code?: string; errno?: number };
  return err.code === "ER_DUP_ENTRY" || err.code === "SQLITE_CONSTRAINT_PRIMARYKEY" || err.code === "SQLITE_CONSTRAINT_UNIQUE";
}

/** isUnavailable tells whether an error means the database cannot be reached. */
export function isUnavailable(e: unknown): boolean {
  const err = e as { code?: string; name?: string; message?: string };
  return (
    err.name === "KnexTimeoutError" ||
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "PROTOCOL_CONNECTION_LOST", "ER_CON_COUNT_ERROR", "EPIPE"].includes(err.code ?? "") ||
    /Connection lost|connect ECONNREFUSED/.test(err.message ?? "")
  );
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

/** Statement is a query built but not yet run (a knex builder or raw query). */
export type Statement = Knex.QueryBuilder | Knex.Raw;

/**
 * runBatch runs statements in order and returns each one's result rows (empty for writes). On
 * MySQL they go to the server in one round trip (multi-statement query), which is most of what a
 * short transaction costs; the server stops at the first failing statement and the error rejects
 * the batch, so run it inside a transaction to undo the ones before. On SQLite, in process, they
 * simply run one after the other.
 */
export async function runBatch(q: Queryable, dialect: Dialect, statements: readonly Statement[]): Promise<unknown[][]> {
  if (statements.length === 0) return [];
  if (dialect === "sqlite" || statements.length === 1) {
    const out: unknown[][] = [];
    for (const st of statements) {
      const r: unknown = await st;
      // Writes answer with ids or counts here; as on MySQL, only a read's rows are kept.
      out.push(Array.isArray(r) && /^\s*(select|with)\b/i.test(st.toSQL().sql) ? (r as unknown[]) : []);
    }
    return out;
  }
  const batch = compileBatch(statements);
  const [result] = (await q.raw(batch.sql, batch.bindings as Knex.RawBinding[])) as [unknown];
  return rowsOfBatch(result, batch.count, statements.length);
}

/** compileBatch joins statements, after a `lead` statement without bindings, into one multi-statement query. */
function compileBatch(statements: readonly Statement[], lead?: string): { sql: string; bindings: unknown[]; count: number } {
  const compiled = statements.map((st) => st.toSQL().toNative());
  const sql = [...(lead === undefined ? [] : [lead]), ...compiled.map((c) => c.sql)];
  return { sql: sql.join(";\n"), bindings: compiled.flatMap((c) => c.bindings as readonly unknown[]), count: sql.length };
}

/**
 * rowsOfBatch is the rows of the last `last` of a batch's `count` statements. mysql2 answers a
 * multi-statement query with one result per statement (rows for a read, a header object for a
 * write), and a single statement with its result alone.
 */
function rowsOfBatch(result: unknown, count: number, last: number): unknown[][] {
  const results = count === 1 ? [result] : (result as unknown[]);
  return results.slice(count - last).map((r) => (Array.isArray(r) ? (r as unknown[]) : []));
}

/**
 * Batcher builds statements with `q` and runs them in batches (see runBatch) inside one
 * transaction. Store functions that take a Batcher run every statement through `run`.
 */
export interface Batcher {
  /** q builds statements; on a batchTransaction over MySQL it is the pool: never run a statement on it directly. */
  readonly q: Queryable;
  readonly dialect: Dialect;
  run(statements: readonly Statement[]): Promise<unknown[][]>;
}

/** batcherOf runs batches on a knex transaction (or the pool). */
export const batcherOf = (q: Queryable, dialect: Dialect): Batcher => ({ q, dialect, run: (statements) => runBatch(q, dialect, statements) });

/** MysqlConnection is the part of a mysql2 connection (callback API) batchTransaction drives. */
interface MysqlConnection {
  query(options: { sql: string; values: readonly unknown[] }, cb: (err: Error | null, result: unknown) => void): void;
  destroy(): void;
}

/** PoolClient is the part of knex's client that lends and takes back its pooled connections. */
interface PoolClient {
  acquireConnection(): Promise<unknown>;
  releaseConnection(conn: unknown): Promise<unknown>;
}

/**
 * batchTransaction runs fn in a transaction whose statements all go through the Batcher it is given.
 * On MySQL it drives a connection of knex's pool itself: BEGIN rides with the first batch, COMMIT
 * (or ROLLBACK when fn throws) is one more round trip, so a transaction of one batch is two round
 * trips. A knex transaction costs several times the statements of a short transaction in CPU (it
 * builds a client and a knex instance per transaction) and a round trip for its BEGIN; this is for
 * the hot paths (allocation, matching). On SQLite it is a knex transaction, which costs little there.
 */
export async function batchTransaction<T>(db: Database, fn: (tx: Batcher) => Promise<T>): Promise<T> {
  if (db.dialect === "sqlite") return db.knex.transaction((trx) => fn(batcherOf(trx, "sqlite")));
  const client = db.knex.client as PoolClient;
  const conn = (await client.acquireConnection()) as MysqlConnection;
  const query = (sql: string, values: readonly unknown[]) =>
    new Promise<unknown>((resolve, reject) => conn.query({ sql, values }, (err, result) => (err === null ? resolve(result) : reject(err))));
  let begun = false;
  const tx: Batcher = {
    q: db.knex,
    dialect: "mysql",
    async run(statements) {
      if (statements.length === 0) return [];
      const batch = compileBatch(statements, begun ? undefined : "START TRANSACTION");
      // Set before sending: if the batch fails after its BEGIN ran, the ROLLBACK must follow.
      begun = true;
      return rowsOfBatch(await query(batch.sql, batch.bindings), batch.count, statements.length);
    },
  };
  try {
    const out = await fn(tx);
    if (begun) await query("COMMIT", []);
    return out;
  } catch (e) {
    // A connection that cannot roll back is broken: destroyed, the pool replaces it.
    if (begun) await query("ROLLBACK", []).catch(() => conn.destroy());
    throw e;
  } finally {
    await client.releaseConnection(conn);
  }
}
