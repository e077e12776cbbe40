import type { Knex } from "knex";
import type { Dialect } from "./database.js";

/** Migration is one step of the schema, written as code so it runs the same on both dialects. */
interface Migration {
  name: string;
  up(knex: Knex, dialect: Dialect): Promise<void>;
  down(knex: Knex, dialect: Dialect): Promise<void>;
}

/** binaryCollation makes a MySQL table compare strings byte for byte: ids and keys are case-sensitive. */
function binaryCollation(t: Knex.CreateTableBuilder, dialect: Dialect): void {
  if (dialect === "mysql") {
    t.charset("utf8mb4");
    t.collate("utf8mb4_bin");
    t.engine("InnoDB");
  }
}

const migrations: Migration[] = [
  {
    name: "001_storage",
    async up(knex, dialect) {
      await knex.schema.createTable("storage_data", (t) => {
        binaryCollation(t, dialect);
        t.string("id", 36).primary();
        t.bigInteger("version").notNullable();
        t.bigInteger("created_at").notNullable();
        t.bigInteger("expires_at").notNullable().index("storage_data_expires_at");
      });
      await knex.schema.createTable("storage_entries", (t) => {
        binaryCollation(t, dialect);
        t.string("data_id", 36).notNullable().references("id").inTable("storage_data").onDelete("CASCADE");
        t.string("entry_key", 512).notNullable();
        t.string("kind", 8).notNullable();
        t.specificType("value", dialect === "mysql" ? "longblob" : "blob").notNullable();
        t.string("filename", 255);
        t.string("content_type", 255);
        t.integer("size").notNullable();
        t.primary(["data_id", "entry_key"]);
      });
      await knex.schema.createTable("idempotency_keys", (t) => {
        binaryCollation(t, dialect);
        t.string("scope", 200).notNullable();
        t.string("request_id", 128).notNullable();
        t.text("result", "mediumtext").notNullable();
        t.bigInteger("expires_at").notNullable().index("idempotency_keys_expires_at");
        t.primary(["scope", "request_id"]);
      });
    },
    async down(knex) {
      await knex.schema.dropTable("idempotency_keys");
      await knex.schema.dropTable("storage_entries");
      await knex.schema.dropTable("storage_data");
    },
  },
];

/** migrationSource hands knex the migrations above, bound to a dialect. */
export function migrationSource(dialect: Dialect): Knex.MigrationSource<Migration> {
  return {
    getMigrations: () => Promise.resolve(migrations),
    getMigrationName: (m) => m.name,
    getMigration: (m) => Promise.resolve({ ...m, up: (knex: Knex) => m.up(knex, dialect), down: (knex: Knex) => m.down(knex, dialect) }),
  };
}
