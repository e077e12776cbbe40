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

  describe("list", () => {
    // Sessions of a listing of their own: a service name no other test uses, created at times of their own.
    const listed = (o: Partial<Session>) => session({ service: "listed", ...o });

    it("is the live sessions newest first, by creation then id, up to the limit, after the cursor", async () => {
      const t0 = now + 500_000;
      // Three created in the same millisecond (ordered by id among themselves), one earlier, one later; one expired.
      const same = [listed({ createdAt: t0 }), listed({ createdAt: t0 }), listed({ createdAt: t0 })];
      const older = listed({ createdAt: t0 - 1 });
      const newer = listed({ createdAt: t0 + 1 });
      const expired = listed({ createdAt: t0 + 2, expiresAt: now + 1 });
      for (const s of [older, ...same, newer, expired]) await insert(s);
      const order = [newer, ...[...same].sort((a, b) => (a.id < b.id ? 1 : -1)), older];
      const filter = { service: "listed" };
      expect(await stores.sessions.list(filter, now + 10, 10)).toEqual(order);
      expect(await stores.sessions.list(filter, now + 10, 2)).toEqual(order.slice(0, 2));
      // Page after page by the last one's (createdAt, id): every session once, in order.
      const pages: Session[] = [];
      for (let after: Session | undefined; ; ) {
        const page = await stores.sessions.list(filter, now + 10, 2, after === undefined ? undefined : { createdAt: after.createdAt, id: after.id });
        pages.push(...page);
        if (page.length < 2) break;
        after = page[page.length - 1];
      }
      expect(pages).toEqual(order);
      // The expired one is listed while it lives.
      expect((await stores.sessions.list(filter, now, 10))[0]).toEqual(expired);
    });

    it("keeps one service and/or one state when asked", async () => {
      const t0 = now + 600_000;
      const a1 = session({ service: "svc-a", createdAt: t0 });
      const a2 = session({ service: "svc-a", createdAt: t0 + 1, state: "ended" });
      const b1 = session({ service: "svc-b", createdAt: t0 + 2, state: "ended" });
      for (const s of [a1, a2, b1]) await insert(s);
      expect(await stores.sessions.list({ service: "svc-a" }, now, 10)).toEqual([a2, a1]);
      expect(await stores.sessions.list({ service: "svc-a", state: "active" }, now, 10)).toEqual([a1]);
      expect(await stores.sessions.list({ service: "svc-b", state: "active" }, now, 10)).toEqual([]);
      const ended = await stores.sessions.list({ state: "ended" }, now, 1000);
      expect(ended.map((s) => s.id)).toEqual(expect.arrayContaining([a2.id, b1.id]));
      expect(ended.every((s) => s.state === "ended")).toBe(true);
      expect(ended.slice(0, 2)).toEqual([b1, a2]);
      // Without a filter, every live session.
      const all = await stores.sessions.list({}, now, 1000);
      expect(all.slice(0, 3)).toEqual([b1, a2, a1]);
      expect(await stores.sessions.list({ service: "nobody" }, now, 10)).toEqual([]);
    });

    it("does not move later pages when sessions are created between pages", async () => {
      const t0 = now + 700_000;
      const first = Array.from({ length: 4 }, (_, i) => session({ service: "paged", createdAt: t0 + i }));
      for (const s of first) await insert(s);
      const page1 = await stores.sessions.list({ service: "paged" }, now, 2);
      expect(page1).toEqual([first[3], first[2]]);
      // Created since: newer than the cursor, so never on a later page.
      await insert(session({ service: "paged", createdAt: t0 + 10 }));
      const last = page1[1]!;
      expect(await stores.sessions.list({ service: "paged" }, now, 2, { createdAt: last.createdAt, id: last.id })).toEqual([first[1], first[0]]);
    });

    it("has the listing indexes of migration 011", async () => {
      const indexes =
        dialect === "sqlite"
          ? ((await db.knex.raw("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions'")) as { name: string }[]).map((r) => r.name)
          : ((await db.knex.raw("SELECT DISTINCT index_name AS name FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = 'sessions'")) as [{ name: string }[]])[0].map((r) => r.name);
      expect(indexes).toEqual(expect.arrayContaining(["sessions_listing", "sessions_by_service"]));
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
