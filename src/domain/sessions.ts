import type { Clock } from "../clock.js";
import type { Access, SessionView } from "./access.js";
import { GmsError, notFound } from "./errors.js";
import type { SessionStore } from "./session-store.js";
import type { Storage } from "./storage.js";
import type { Transactions, UnitOfWork } from "./unit-of-work.js";
import type { DataEntries } from "./value.js";

/**
 * SessionChats is what the session rules need of chats: a session's chats (and their files) live
 * as long as it does, so extending it extends them, in the same unit of work.
 */
export interface SessionChats {
  extendChatsOfSession(uow: UnitOfWork, sessionId: string, expiresAt: number): Promise<void>;
}

/** SessionsDeps are what the session rules need. */
export interface SessionsDeps {
  store: SessionStore;
  transactions: Transactions;
  clock: Clock;
  storage: Storage;
  access: Access;
  chats: SessionChats;
}

/** Sessions manages service instances: read, cancel, update their data, extend their life. */
export interface Sessions {
  get(sessionId: string): Promise<SessionView>;
  cancel(sessionId: string): Promise<void>;
  updateData(sessionId: string, entries: DataEntries, removeKeys: readonly string[]): Promise<{ version: number }>;
  extend(sessionId: string, ttlSeconds: number): Promise<SessionView>;
}

/** createSessions builds the session rules. */
export function createSessions({ store, transactions, clock, storage, access, chats }: SessionsDeps): Sessions {
  async function view(sessionId: string, now: number): Promise<SessionView> {
    const session = await store.read(sessionId, now);
    if (session === undefined) throw notFound(`session ${sessionId}`);
    return { ...session, access: await access.grants(sessionId, now) };
  }

  const inactive = (id: string) => new GmsError("failed_precondition", `session ${id} is not active`);

  return {
    get: (sessionId) => view(sessionId, clock.now()),

    async cancel(sessionId) {
      const now = clock.now();
      // A match on one of its numbers may deadlock with it: the loser is rolled back and runs again.
      await transactions.run(
        async (uow) => {
          const session = await store.lock(uow, sessionId, now);
          if (session === undefined) throw notFound(`session ${sessionId}`);
          if (session.state === "ended") return; // cancelling twice is harmless, so retries are safe
          await access.releaseSessionIn(uow, sessionId, now);
          await storage.deleteIn(uow, session.dataId);
          await store.update(uow, sessionId, { state: "ended" });
        },
        { retryConflicts: true },
      );
    },

    async updateData(sessionId, entries, removeKeys) {
      const now = clock.now();
      return transactions.run(async (uow) => {
        const session = await store.lock(uow, sessionId, now);
        if (session === undefined) throw notFound(`session ${sessionId}`);
        if (session.state !== "active") throw inactive(sessionId);
        const r = await storage.updateIn(uow, { dataId: session.dataId, entries, removeKeys });
        return { version: r.version };
      });
    },

    async extend(sessionId, ttlSeconds) {
      const now = clock.now();
      const expiresAt = now + ttlSeconds * 1000;
      // As cancel: a deadlock with a match is run again.
      await transactions.run(
        async (uow) => {
          const session = await store.lock(uow, sessionId, now);
          if (session === undefined) throw notFound(`session ${sessionId}`);
          if (session.state !== "active") throw inactive(sessionId);
          await store.update(uow, sessionId, { expiresAt });
          await storage.updateIn(uow, { dataId: session.dataId, entries: new Map(), removeKeys: [], ttlSeconds });
          await chats.extendChatsOfSession(uow, sessionId, expiresAt);
          // Each reservation is extended as far as its group allows, never past the session.
          await access.extendSessionIn(uow, sessionId, now, expiresAt);
        },
        { retryConflicts: true },
      );
      return view(sessionId, now);
    },
  };
}
