import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import knexFactory from "knex";
import { openDatabase, type Database, type Dialect, type OpenDatabaseOptions } from "../../src/store/database.js";

/** MYSQL_URL is the server the MySQL runs use; each test database is created on it and dropped. */
export const MYSQL_URL = (process.env["GMS_TEST_MYSQL_URL"] ?? "mysql://root@127.0.0.1:3306").replace(/\/+$/, "");

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
export async function createTestDatabase(dialect: Dialect, options: OpenDatabaseOptions = {}): Promise<TestDatabase> {
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
  const name = `gms_t_${randomBytes(6).toString("hex")}`;
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
