// The SessionStore contract (src/domain/session-store.ts), operation by operation, on every
// dialect: what each operation stores, read back through the store and from the sessions rows.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Session } from "../../src/domain/session-store.js";
import { openDatabase } from "../../src/store/database.js";
import { createStores, type Stores } from "../../src/store/stores.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";

describe.each(DIALECTS)("SessionStore on %s", (dialect) => {
  let db: TestDatabase;
  let stores: Stores;
  const now = 1_000_000;
  let ids = 0;

  const session = (o: Partial<Session> = {}): Session => {
    const n = ++ids;
    return {
      id: `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`,
      service: "iPhoneService",
      builtin: "request-interaction",
      state: "active",
      phoneNumber: "+16505550100",
      dataId: `00000000-0000-4000-9000-${String(n).padStart(12, "0")}`,
      createdAt: now,
      expiresAt: now + 60_000,
      ...o,
    };
  };
  const insert = (s: Session) => stores.transactions.run((uow) => stores.sessions.insert(uow, s));
  const row = async (id: string) => (await db.knex("sessions").where("id", id).first()) as Record<string, unknown> | undefined;

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    stores = createStores(db);
  });
  afterAll(() => db.close());

  describe("insert", () => {
    it("stores a session, every field in its column", async () => {
      const s = session({ phoneNumber: "" });
      await insert(s);
      const r = await row(s.id);
      expect(r).toMatchObject({ id: s.id, service: "iPhoneService", builtin: "request-interaction", state: "active", phone_number: "", data_id: s.dataId });
      expect([Number(r?.["created_at"]), Number(r?.["expires_at"])]).toEqual([now, now + 60_000]);
    });

    it("stores nothing when its unit of work rolls back", async () => {
      const s = session();
      await expect(
        stores.transactions.run(async (uow) => {
          await stores.sessions.insert(uow, s);
          throw new Error("rolled back");
        }),
      ).rejects.toThrow("rolled back");
      expect(await row(s.id)).toBeUndefined();
    });
  });

  describe("read", () => {
    it("is a session live at `now`, undefined once it expired or when there is none", async () => {
      const s = session();
      await insert(s);
      expect(await stores.sessions.read(s.id, now)).toEqual(s);
      expect(await stores.sessions.read(s.id, s.expiresAt - 1)).toEqual(s);
      expect(await stores.sessions.read(s.id, s.expiresAt)).toBeUndefined();
      expect(await stores.sessions.read("00000000-0000-4000-8000-999999999999", now)).toBeUndefined();
    });
  });

  describe("lock", () => {
    it("reads a live session in the unit of work", async () => {
      const s = session();
      await insert(s);
      expect(await stores.transactions.run((uow) => stores.sessions.lock(uow, s.id, now))).toEqual(s);
      expect(await stores.transactions.run((uow) => stores.sessions.lock(uow, s.id, s.expiresAt))).toBeUndefined();
    });

    it.skipIf(dialect !== "mysql")("holds the session: a second lock waits until the first unit of work ends", async () => {
      const s = session();
      await insert(s);
      const wide = await openDatabase(db.url, { migrate: false, poolMax: 3 });
      const other = createStores(wide);
      try {
        const order: string[] = [];
        let release = () => {};
        const held = new Promise<void>((r) => (release = r));
        const first = other.transactions.run(async (uow) => {
          await other.sessions.lock(uow, s.id, now);
          order.push("first locked");
          await held;
          await other.sessions.update(uow, s.id, { state: "ended" });
          order.push("first done");
        });
        while (order.length === 0) await new Promise((r) => setTimeout(r, 10));
        const second = other.transactions.run(async (uow) => {
          const seen = await other.sessions.lock(uow, s.id, now);
          order.push(`second saw ${seen?.state}`);
        });
        await new Promise((r) => setTimeout(r, 200));
        release();
        await Promise.all([first, second]);
        expect(order).toEqual(["first locked", "first done", "second saw ended"]);
      } finally {
        await wide.close();
      }
    });
  });

  describe("update", () => {
    it("sets the state, the expiry, or both", async () => {
      const s = session();
      await insert(s);
      await stores.transactions.run((uow) => stores.sessions.update(uow, s.id, { expiresAt: now + 90_000 }));
      expect(await row(s.id)).toMatchObject({ state: "active" });
      expect(Number((await row(s.id))?.["expires_at"])).toBe(now + 90_000);
      await stores.transactions.run((uow) => stores.sessions.update(uow, s.id, { state: "ended" }));
      expect(await stores.sessions.read(s.id, now)).toEqual({ ...s, state: "ended", expiresAt: now + 90_000 });
      await stores.transactions.run((uow) => stores.sessions.update(uow, s.id, { state: "active", expiresAt: now + 5_000 }));
      expect(await stores.sessions.read(s.id, now)).toEqual({ ...s, expiresAt: now + 5_000 });
    });
  });

  describe("sweep", () => {
    it("deletes sessions expired by `now` in batches, and keeps live ones", async () => {
      const later = now + 10 * 60_000;
      const expired = Array.from({ length: 7 }, () => session({ expiresAt: now + 1_000 }));
      const live = session({ expiresAt: later + 1 });
      for (const s of [...expired, live]) await insert(s);
      let total = 0;
      for (let n = -1; n !== 0; total += n) {
        n = await stores.sessions.sweep(later, 3);
        expect(n).toBeLessThanOrEqual(3);
      }
      expect(total).toBeGreaterThanOrEqual(expired.length);
      for (const s of expired) expect(await row(s.id)).toBeUndefined();
      expect(await stores.sessions.read(live.id, later)).toEqual(live);
      expect(Number(((await db.knex("sessions").where("expires_at", "<=", later).count({ n: "*" })) as { n: number | string }[])[0]?.n)).toBe(0);
    });
  });
});
