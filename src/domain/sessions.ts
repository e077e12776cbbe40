import type { Clock } from "../clock.js";
import type { Config } from "../config.js";
import { liveReservationsOfSession, retryDeadlocks, setNumbersAvailableAt, setReservationExpiry } from "../store/access-store.js";
import type { Database } from "../store/database.js";
import { extendChatsOfSession } from "../store/chat-store.js";
import { readSession, updateSession } from "../store/session-store.js";
import { deleteData } from "../store/storage-store.js";
import { grantOf, type Access, type SessionView } from "./access.js";
import { GmsError, notFound } from "./errors.js";
import type { Storage } from "./storage.js";
import type { DataEntries } from "./value.js";

/** SessionsDeps are what the session rules need. */
export interface SessionsDeps {
  db: Database;
  clock: Clock;
  config: Config;
  storage: Storage;
  access: Access;
}

/** Sessions manages service instances: read, cancel, update their data, extend their life. */
export interface Sessions {
  get(sessionId: string): Promise<SessionView>;
  cancel(sessionId: string): Promise<void>;
  updateData(sessionId: string, entries: DataEntries, removeKeys: readonly string[]): Promise<{ version: number }>;
  extend(sessionId: string, ttlSeconds: number): Promise<SessionView>;
}

/** createSessions builds the session rules. */
export function createSessions({ db, clock, config, storage, access }: SessionsDeps): Sessions {
  async function view(sessionId: string, now: number): Promise<SessionView> {
    const session = await readSession(db.knex, sessionId, now);
    if (session === undefined) throw notFound(`session ${sessionId}`);
    const reservations = await liveReservationsOfSession(db.knex, sessionId, now);
    return { ...session, access: reservations.map(grantOf) };
  }

  const inactive = (id: string) => new GmsError("failed_precondition", `session ${id} is not active`);

  return {
    get: (sessionId) => view(sessionId, clock.now()),

    async cancel(sessionId) {
      const now = clock.now();
      // A match on one of its numbers may deadlock with it: the loser is rolled back and runs again.
      await retryDeadlocks(() =>
        db.knex.transaction(async (trx) => {
          const session = await readSession(trx, sessionId, now, db.dialect);
          if (session === undefined) throw notFound(`session ${sessionId}`);
          if (session.state === "ended") return; // cancelling twice is harmless, so retries are safe
          await access.release(trx, await liveReservationsOfSession(trx, sessionId, now), now);
          await deleteData(trx, session.dataId, now);
          await updateSession(trx, sessionId, { state: "ended" });
        }),
      );
    },

    async updateData(sessionId, entries, removeKeys) {
      const now = clock.now();
      return db.knex.transaction(async (trx) => {
        const session = await readSession(trx, sessionId, now, db.dialect);
        if (session === undefined) throw notFound(`session ${sessionId}`);
        if (session.state !== "active") throw inactive(sessionId);
        const r = await storage.updateIn(trx, { dataId: session.dataId, entries, removeKeys });
        return { version: r.version };
      });
    },

    async extend(sessionId, ttlSeconds) {
      const now = clock.now();
      const expiresAt = now + ttlSeconds * 1000;
      // As cancel: a deadlock with a match is run again.
      await retryDeadlocks(() =>
        db.knex.transaction(async (trx) => {
          const session = await readSession(trx, sessionId, now, db.dialect);
          if (session === undefined) throw notFound(`session ${sessionId}`);
          if (session.state !== "active") throw inactive(sessionId);
          await updateSession(trx, sessionId, { expiresAt });
          await storage.updateIn(trx, { dataId: session.dataId, entries: new Map(), removeKeys: [], ttlSeconds });
          await extendChatsOfSession(trx, sessionId, expiresAt);
          // Each reservation is extended as far as its group allows, never past the session.
          for (const r of await liveReservationsOfSession(trx, sessionId, now)) {
            const max = config.resources[r.resourceGroup]?.max_booking_expiration_timeout ?? 0;
            const until = Math.min(expiresAt, Math.max(r.expiresAt, now + max * 1000));
            if (until === r.expiresAt) continue;
            await setReservationExpiry(trx, [r.id], until);
            if (r.locking) await setNumbersAvailableAt(trx, [{ group: r.resourceGroup, number: r.accessNumber }], until);
          }
        }),
      );
      return view(sessionId, now);
    },
  };
}
