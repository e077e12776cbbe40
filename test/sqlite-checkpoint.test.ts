import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { openDatabase } from "../src/store/database.js";
import { startCheckpointer } from "../src/store/sqlite-checkpointer.js";

/**
 * The server's SQLite connection never checkpoints in a request; a worker thread does. Without it the
 * rows would stay in the write-ahead log and the database file would not grow.
 */
describe("SQLite checkpoints off the main thread", () => {
  it("moves committed pages from the WAL into the database file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "opengms-ckpt-"));
    const path = join(dir, "gms.db");
    const db = await openDatabase(`sqlite:${path}`);
    const checkpointer = startCheckpointer(path, 50);
    try {
      // openDatabase's own checkpointer (1 s) may already have run once; measure from here.
      await new Promise((r) => setTimeout(r, 200));
      const before = statSync(path).size;
      const rows = Array.from({ length: 400 }, (_, i) => ({ id: `id-${i}`, version: 1, created_at: 0, expires_at: 1e15 }));
      for (let i = 0; i < rows.length; i += 100) await db.knex("storage_data").insert(rows.slice(i, i + 100));
      await db.knex("storage_entries").insert(rows.map((r) => ({ data_id: r.id, entry_key: "k", kind: "text", value: Buffer.alloc(2000, 1), size: 2000 })));
      const done = checkpointer.checkpoints;
      // Wait for what is asserted (a checkpoint under load may move part of the log, the next the rest).
      const moved = () => statSync(path).size > before + 400 * 2000;
      for (let i = 0; i < 500 && (checkpointer.checkpoints < done + 2 || !moved()); i++) await new Promise((r) => setTimeout(r, 20));
      expect(checkpointer.checkpoints).toBeGreaterThanOrEqual(done + 2);
      expect(statSync(path).size).toBeGreaterThan(before + 400 * 2000);
    } finally {
      await checkpointer.stop();
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
