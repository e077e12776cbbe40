// The IdempotencyStore contract (src/domain/idempotency-store.ts), operation by operation, on every
// dialect: what each operation stores, read back through the store and from the idempotency_keys
// rows.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RequestId } from "../../src/domain/idempotency-store.js";
import { openDatabase } from "../../src/store/database.js";
import { createStores, type Stores } from "../../src/store/stores.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";

describe.each(DIALECTS)("IdempotencyStore on %s", (dialect) => {
  let db: TestDatabase;
  let stores: Stores;
  const now = 1_000_000;
  let ids = 0;

  const fresh = (): RequestId => ({ scope: "CreateData:app-1", requestId: `request-${++ids}` });
  const row = async (id: RequestId) => {
    const r = (await db.knex("idempotency_keys").where({ scope: id.scope, request_id: id.requestId }).first()) as Record<string, unknown> | undefined;
    return r === undefined ? undefined : { result: r["result"], expiresAt: Number(r["expires_at"]) };
  };
  /** firstCall claims an id and completes it with `reply`, in one unit of work, as a first call does. */
  const firstCall = (id: RequestId, reply: string, keepUntil = now + 60_000) =>
    stores.transactions.run(async (uow) => {
      expect(await stores.requestIds.claim(uow, id, now, now + 3_600_000)).toBeUndefined();
      await stores.requestIds.complete(uow, id, reply, keepUntil);
    });

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    stores = createStores(db);
  });
  afterAll(() => db.close());

  describe("claim and complete", () => {
    it("claim holds a new id (undefined) until complete keeps the reply; a later claim gets the reply", async () => {
      const id = fresh();
      await stores.transactions.run(async (uow) => {
        expect(await stores.requestIds.claim(uow, id, now, now + 3_600_000)).toBeUndefined();
        // Not committed yet (SQLite's one connection is this unit of work's).
        if (dialect === "mysql") expect(await row(id)).toBeUndefined();
        await stores.requestIds.complete(uow, id, "the reply", now + 60_000);
      });
      expect(await row(id)).toEqual({ result: "the reply", expiresAt: now + 60_000 });
      expect(await stores.transactions.run((uow) => stores.requestIds.claim(uow, id, now, now + 1))).toBe("the reply");
      // The same id in another scope is another id.
      expect(await stores.transactions.run((uow) => stores.requestIds.claim(uow, { ...id, scope: "CreateData:app-2" }, now, now + 1))).toBeUndefined();
    });

    it("keeps nothing when the unit of work rolls back", async () => {
      const id = fresh();
      await expect(
        stores.transactions.run(async (uow) => {
          await stores.requestIds.claim(uow, id, now, now + 3_600_000);
          await stores.requestIds.complete(uow, id, "r", now + 60_000);
          throw new Error("rolled back");
        }),
      ).rejects.toThrow("rolled back");
      expect(await row(id)).toBeUndefined();
    });

    it("an id kept past its time is new again", async () => {
      const id = fresh();
      await firstCall(id, "old", now + 1_000);
      await stores.transactions.run(async (uow) => {
        expect(await stores.requestIds.claim(uow, id, now + 1_000, now + 3_600_000)).toBeUndefined();
        await stores.requestIds.complete(uow, id, "new", now + 90_000);
      });
      expect(await row(id)).toEqual({ result: "new", expiresAt: now + 90_000 });
    });

    it("a retry racing the first call waits for it and gets its reply", async () => {
      const id = fresh();
      const wide = await openDatabase(db.url, { migrate: false, poolMax: 3 });
      const other = createStores(wide);
      try {
        let release = () => {};
        const held = new Promise<void>((r) => (release = r));
        let claimed = false;
        const first = other.transactions.run(async (uow) => {
          expect(await other.requestIds.claim(uow, id, now, now + 3_600_000)).toBeUndefined();
          claimed = true;
          await held;
          await other.requestIds.complete(uow, id, "first", now + 60_000);
        });
        while (!claimed) await new Promise((r) => setTimeout(r, 10));
        const retry = other.transactions.run((uow) => other.requestIds.claim(uow, id, now, now + 3_600_000));
        await new Promise((r) => setTimeout(r, 200));
        release();
        await first;
        expect(await retry).toBe("first");
      } finally {
        await wide.close();
      }
    });
  });

  describe("sweep", () => {
    it("deletes ids whose time passed by `now`, in batches, and keeps the others", async () => {
      const later = now + 10 * 60_000;
      const old = Array.from({ length: 5 }, () => fresh());
      for (const id of old) await firstCall(id, "r", now + 1_000);
      const kept = fresh();
      await firstCall(kept, "kept", later + 1);
      let total = 0;
      for (let n = -1; n !== 0; total += n) {
        n = await stores.requestIds.sweep(later, 2);
        expect(n).toBeLessThanOrEqual(2);
      }
      expect(total).toBeGreaterThanOrEqual(old.length);
      for (const id of old) expect(await row(id)).toBeUndefined();
      expect(await row(kept)).toEqual({ result: "kept", expiresAt: later + 1 });
    });
  });
});
