// The SQL stores of one database, built together: what src/server.ts hands the domain.
import type { AccessStore } from "../domain/access-store.js";
import type { ChatStore } from "../domain/chat/store.js";
import type { IdempotencyStore } from "../domain/idempotency-store.js";
import type { SessionStore } from "../domain/session-store.js";
import type { StorageStore } from "../domain/storage-store.js";
import type { Transactions } from "../domain/unit-of-work.js";
import { createAccessStore } from "./access-store.js";
import { createChatStore } from "./chat-store.js";
import type { Database } from "./database.js";
import { createIdempotencyStore } from "./idempotency-store.js";
import { createSessionStore } from "./session-store.js";
import { createStorageStore } from "./storage-store.js";
import { transactionsOf } from "./unit-of-work.js";

/** Stores are the stores of the domain's aggregates on one database, and the units of work that span them. */
export interface Stores {
  transactions: Transactions;
  access: AccessStore;
  sessions: SessionStore;
  storage: StorageStore;
  requestIds: IdempotencyStore;
  chats: ChatStore;
}

/** createStores builds every aggregate's store on a database. */
export function createStores(db: Database): Stores {
  return {
    transactions: transactionsOf(db),
    access: createAccessStore(db),
    sessions: createSessionStore(db),
    storage: createStorageStore(db),
    requestIds: createIdempotencyStore(db),
    chats: createChatStore(db),
  };
}
