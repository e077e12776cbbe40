import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import knexFactory, { type Knex } from "knex";
import type { Dialect } from "./dialect.js";
import { migrationSource } from "./migrations.js";
import { describeError, looksLikeSql, QueryTimeoutError } from "./errors.js";
import { redactUrl } from "../redact.js";
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

export { redactUrl };

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
export interface ClosableConnection {
  destroy(): void;
  stream?: { destroy?(): void };
}

/**
 * withQueryTimeout rejects with a QueryTimeoutError when `run` has not settled within ms, and closes
 * the connection it runs on (socket and all): mysql2's own `timeout` option answers the caller but
 * leaves the statement pending on the connection, which goes back to the pool with it.
 */
export function withQueryTimeout<T>(run: Promise<T>, conn: ClosableConnection, ms: number): Promise<T> {
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

/** queryTimeouts are the timeouts of each open database, for batchTransaction, which drives connections itself. */
const queryTimeouts = new WeakMap<Database, Timeouts>();

/** queryTimeoutOf is the query timeout of an open database, in ms (0: none), for drivers that run statements on a connection themselves. */
export function queryTimeoutOf(db: Database): number {
  return queryTimeouts.get(db)?.queryMs ?? 0;
}
