import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import { createApp, createAppSweeper, type App } from "../src/server.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";

const config = parseConfig({ resources: { pool: { numbers: ["+18005550100..+18005550149"], locking: true, booking_expiration_timeout: 60 } } });

describe.each(DIALECTS)("sweeper on %s", (dialect) => {
  let db: TestDatabase;
  let clock: ManualClock;
  let app: App;
  const count = async (table: string) => Number(((await db.knex(table).count({ n: "*" })) as { n: number | string }[])[0]?.n);

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    clock = new ManualClock();
    app = createApp({ config, db, clock, log: pino({ level: "silent" }) });
    await app.access.syncNumbers();
  });
  afterAll(() => db.close());

  it("deletes expired sessions, data, chats, old reservations and request ids; keeps live ones", async () => {
    const request = (i: number) =>
      app.access.requestInteraction({ service: "", phoneNumber: "+15550000000", resourceGroup: "pool", ttlSeconds: 60, appData: new Map([["k", { kind: "text", text: String(i) }]]), request: { scope: "s", requestId: `r${i}`, digest: "d" } });
    for (let i = 0; i < 20; i++) await request(i);
    await app.chats.requestChat({ service: "", nickname: "Ann", firstName: "", lastName: "", subject: "", emailAddress: "", userData: {}, appData: new Map(), request: { scope: "c", requestId: "", digest: "" } });
    clock.advance(25 * 3600 * 1000);
    const live = await app.access.requestInteraction({ service: "", phoneNumber: "+15550000001", resourceGroup: "pool", ttlSeconds: 600, appData: new Map(), request: { scope: "s", requestId: "live", digest: "d" } });
    const sweeper = createAppSweeper(app, 7);
    let total = 0;
    for (let i = 0; i < 20; i++) {
      const c = await sweeper.sweep();
      const n = c.data + c.sessions + c.chats + c.access + c.requestIds;
      total += n;
      if (n === 0) break;
    }
    expect(total).toBeGreaterThan(0);
    expect(await count("sessions")).toBe(1);
    expect(await count("storage_data")).toBe(1);
    expect(await count("chats")).toBe(0);
    expect(await count("chat_events")).toBe(0);
    expect(await count("reservations")).toBe(1);
    expect(await count("idempotency_keys")).toBe(1);
    expect((await app.sessions.get(live.session.id)).access).toHaveLength(1);
  });

  it.skipIf(dialect !== "mysql")("several sweepers at once share the work without deadlocks", async () => {
    const rows = Array.from({ length: 3000 }, (_, i) => ({ id: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`, version: 1, created_at: 0, expires_at: 1 }));
    for (let i = 0; i < rows.length; i += 500) await db.knex("storage_data").insert(rows.slice(i, i + 500));
    const sweepers = [0, 1, 2].map(() => createAppSweeper(app, 100));
    const results = await Promise.all(sweepers.map((s) => s.sweep()));
    expect(results.reduce((n, r) => n + r.data, 0)).toBe(3000);
    expect(await count("storage_data")).toBe(1);
  });
});
