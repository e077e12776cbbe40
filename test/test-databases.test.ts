// The tests' own databases on a shared MySQL server: named with a configurable prefix
// (GMS_TEST_DB_PREFIX) and dropped when closed.
import knexFactory from "knex";
import { describe, expect, it } from "vitest";
import { DATABASE_PREFIX, DIALECTS, MYSQL_URL, createTestDatabase, databasePrefix } from "./helpers/databases.js";

describe("test databases on a shared server", () => {
  it("take their prefix from GMS_TEST_DB_PREFIX (gms_t_ by default) and refuse one that is not a plain name", () => {
    expect(databasePrefix(undefined)).toBe("gms_t_");
    expect(databasePrefix("")).toBe("gms_t_");
    expect(databasePrefix("ci_42_")).toBe("ci_42_");
    for (const bad of ["a-b", "x`; DROP DATABASE y; --", "é", "a".repeat(41)]) expect(() => databasePrefix(bad)).toThrow(/GMS_TEST_DB_PREFIX/);
    expect(DATABASE_PREFIX).toBe(databasePrefix(process.env["GMS_TEST_DB_PREFIX"]));
  });

  it.runIf(DIALECTS.includes("mysql"))("are created under the prefix and dropped on close", async () => {
    const db = await createTestDatabase("mysql");
    const name = new URL(db.url).pathname.slice(1);
    expect(name.startsWith(DATABASE_PREFIX)).toBe(true);
    await db.close();
    const admin = knexFactory({ client: "mysql2", connection: { uri: MYSQL_URL } as never, pool: { min: 0, max: 1 } });
    try {
      const [rows] = (await admin.raw("SHOW DATABASES LIKE ?", [name])) as [unknown[]];
      expect(rows).toEqual([]);
    } finally {
      await admin.destroy();
    }
  });
});
