import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import knexFactory from "knex";
import { openDatabase, type Database, type DatabaseLog, type Dialect, type OpenDatabaseOptions } from "../../src/store/database.js";

/** MYSQL_URL is the server the MySQL runs use; each test database is created on it and dropped. */
export const MYSQL_URL = (process.env["GMS_TEST_MYSQL_URL"] ?? "mysql://root@127.0.0.1:3306").replace(/\/+$/, "");

/**
 * DATABASE_PREFIX starts the name of every MySQL database the tests create (GMS_TEST_DB_PREFIX,
 * default "gms_t_"), so that test runs sharing a database server can be told apart, granted
 * CREATE/DROP on `prefix%` only, and cleaned up by name.
 */
export const DATABASE_PREFIX = databasePrefix(process.env["GMS_TEST_DB_PREFIX"]);

/** databasePrefix checks a prefix: letters, digits and underscores, at most 40 (a database name has 64). */
export function databasePrefix(raw: string | undefined): string {
  const prefix = raw === undefined || raw === "" ? "gms_t_" : raw;
  if (!/^[A-Za-z0-9_]{1,40}$/.test(prefix)) throw new Error(`GMS_TEST_DB_PREFIX must be 1 to 40 letters, digits or underscores, not "${prefix}"`);
  return prefix;
}

async function probeMysql(): Promise<string | undefined> {
  const knex = knexFactory({ client: "mysql2", connection: { uri: MYSQL_URL, connectTimeout: 3000 } as never, pool: { min: 0, max: 1 } });
  try {
    await knex.raw("SELECT 1");
    return undefined;
  } catch (e) {
    return (e as Error).message;
  } finally {
    await knex.destroy();
  }
}

const mysqlProblem = await probeMysql();
if (mysqlProblem !== undefined) {
  if (process.env["CI"]) throw new Error(`MySQL at ${MYSQL_URL} is unreachable (${mysqlProblem}); CI requires it`);
  process.stderr.write(`\n*** MySQL at ${MYSQL_URL} is unreachable (${mysqlProblem}): MySQL runs are SKIPPED ***\n\n`);
}

/** RecordingLog is a DatabaseLog that keeps knex's messages for a test to read instead of printing them. */
export interface RecordingLog extends DatabaseLog {
  readonly lines: string[];
}

/**
 * recordingLog keeps knex's own messages ("Acquire connection error", "Connection Error" when a test
 * cuts the database on purpose): a green run prints nothing that looks like a failure.
 */
export function recordingLog(): RecordingLog {
  const lines: string[] = [];
  return { lines, warn: (m) => lines.push(m), error: (m) => lines.push(m), debug: () => undefined };
}

/** DIALECTS are the stores every store test runs on; MySQL only when reachable (always in CI). */
export const DIALECTS: Dialect[] = mysqlProblem === undefined ? ["sqlite", "mysql"] : ["sqlite"];

/** TestDatabase is a fresh, migrated database of its own; close() drops it. */
export interface TestDatabase extends Database {
  url: string;
}

/**
 * createTestDatabase makes an empty database for one test file: a SQLite file in a temporary folder
 * or a MySQL database with a random name. Closing it deletes it.
 */
export async function createTestDatabase(dialect: Dialect, given: OpenDatabaseOptions = {}): Promise<TestDatabase> {
  const options = { log: recordingLog(), ...given };
  if (dialect === "sqlite") {
    const dir = mkdtempSync(join(tmpdir(), "opengms-test-"));
    const url = `sqlite:${join(dir, "gms.db")}`;
    const db = await openDatabase(url, options);
    return {
      ...db,
      url,
      async close() {
        await db.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const name = `${DATABASE_PREFIX}${randomBytes(6).toString("hex")}`;
  const url = `${MYSQL_URL}/${name}`;
  const db = await openDatabase(url, options);
  return {
    ...db,
    url,
    async close() {
      await db.knex.raw(`DROP DATABASE IF EXISTS \`${name}\``);
      await db.close();
    },
  };
}
