// Transitional, for src/domain/chat.ts alone: chat still runs its own knex transactions and calls
// runOnce on the database and Storage.createIn with a knex transaction, the way every aggregate
// did before the store contracts (issue 17). Until its store takes units of work, these adapters
// let those two calls run on the same contracts: a SQL unit of work is a knex transaction
// (src/store/unit-of-work.ts). Delete this module, and the overloads that name it in
// idempotency.ts and storage.ts, once chat.ts no longer makes those calls.
import type { Knex } from "knex";
import type { IdempotencyStore } from "./idempotency-store.js";
import type { Transactions, UnitOfWork } from "./unit-of-work.js";
import type { Database } from "../store/database.js";
import { createIdempotencyStore } from "../store/idempotency-store.js";
import { transactionsOf, trxOf, unitOf } from "../store/unit-of-work.js";

/** LegacyDatabase is the database chat.ts hands runOnce. */
export type LegacyDatabase = Database;

/** LegacyTransaction is the knex transaction chat.ts hands Storage.createIn. */
export type LegacyTransaction = Knex.Transaction;

/** isLegacyDatabase tells a database handed to runOnce from the units of work it is meant to get. */
export const isLegacyDatabase = (deps: object): deps is LegacyDatabase => "knex" in deps;

/** legacyOnce is what runOnce needs, on the database chat.ts hands it. */
export const legacyOnce = (db: LegacyDatabase): { transactions: Transactions; requestIds: IdempotencyStore } => ({
  transactions: transactionsOf(db),
  requestIds: createIdempotencyStore(db),
});

/** legacyTransactionOf is the knex transaction a SQL unit of work is. */
export const legacyTransactionOf = (uow: UnitOfWork): LegacyTransaction => trxOf(uow);

/** asUnit is a unit of work, or a knex transaction as the SQL unit of work it is (the same object). */
export const asUnit = (uow: UnitOfWork | LegacyTransaction): UnitOfWork => unitOf(uow as LegacyTransaction);
