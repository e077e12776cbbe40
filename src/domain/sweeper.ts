import type { Clock } from "../clock.js";
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

/** Sweepable is a store that deletes, in batches of at most `batch`, what ended by `before`, and says how many it deleted. */
export interface Sweepable {
  sweep(before: number, batch: number): Promise<number>;
}

/** SweeperDeps are what the sweeper needs: the data's rules, which sweep in batches of their own, and each store. */
export interface SweeperDeps {
  clock: Clock;
  storage: Storage;
  sessions: Sweepable;
  chats: Sweepable;
  access: Sweepable;
  requestIds: Sweepable;
  batchSize: number;
}

/**
 * createSweeper deletes what has expired, in bounded batches. Expiry itself never waits for it:
 * every read already treats a lapsed row as gone. Its statements lock rows in key order, so
 * sweepers on several nodes run at once without deadlocks.
 */
export function createSweeper({ clock, storage, sessions, chats, access, requestIds, batchSize }: SweeperDeps): { sweep(): Promise<SweepCounts> } {
  return {
    async sweep() {
      const now = clock.now();
      return {
        data: await storage.sweep(batchSize),
        sessions: await sessions.sweep(now, batchSize),
        chats: await chats.sweep(now, batchSize),
        access: await access.sweep(now - KEEP_ENDED_MS, batchSize),
        requestIds: await requestIds.sweep(now, batchSize),
      };
    },
  };
}
