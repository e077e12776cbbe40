import type { Clock } from "../clock.js";
import { sweepAccess } from "../store/access-store.js";
import { sweepExpiredChats } from "../store/chat-store.js";
import type { Database } from "../store/database.js";
import { sweepRequestIds } from "../store/idempotency-store.js";
import { sweepExpiredSessions } from "../store/session-store.js";
import type { Storage } from "./storage.js";

/** Ended reservations and code failures are kept this long (for inspection), then deleted. */
const KEEP_ENDED_MS = 24 * 3600 * 1000;

/** SweepCounts says how many rows one sweep deleted, by kind. */
export interface SweepCounts {
  data: number;
  sessions: number;
  chats: number;
  access: number;
  requestIds: number;
}

/** SweeperDeps are what the sweeper needs. */
export interface SweeperDeps {
  db: Database;
  clock: Clock;
  storage: Storage;
  batchSize: number;
}

/**
 * createSweeper deletes what has expired, in bounded batches. Expiry itself never waits for it:
 * every read already treats a lapsed row as gone. Its statements lock rows in key order, so
 * sweepers on several nodes run at once without deadlocks.
 */
export function createSweeper({ db, clock, storage, batchSize }: SweeperDeps): { sweep(): Promise<SweepCounts> } {
  return {
    async sweep() {
      const now = clock.now();
      return {
        data: await storage.sweep(batchSize),
        sessions: await sweepExpiredSessions(db.knex, now, batchSize),
        chats: await sweepExpiredChats(db.knex, now, batchSize),
        access: await sweepAccess(db.knex, now - KEEP_ENDED_MS, batchSize),
        requestIds: await sweepRequestIds(db.knex, now, batchSize),
      };
    },
  };
}
