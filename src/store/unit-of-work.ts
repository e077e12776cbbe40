// The SQL side of the domain's UnitOfWork: a unit of work is a knex transaction, wrapped so that
// the domain cannot tell. Store modules unwrap it with trxOf; nothing outside src/store does.
import type { Knex } from "knex";
import type { Transactions, UnitOfWork } from "../domain/unit-of-work.js";
import type { Database } from "./database.js";
import { retryDeadlocks } from "./errors.js";

/** unitOf wraps a knex transaction as a UnitOfWork. */
export const unitOf = (trx: Knex.Transaction): UnitOfWork => trx as unknown as UnitOfWork;

/** trxOf is the knex transaction a UnitOfWork made by this module is. */
export const trxOf = (uow: UnitOfWork): Knex.Transaction => uow as unknown as Knex.Transaction;

/** transactionsOf opens units of work as knex transactions on the database's pool; a conflict is a deadlock (retryDeadlocks). */
export function transactionsOf(db: Database): Transactions {
  return {
    run(fn, options = {}) {
      const once = () => db.knex.transaction((trx) => fn(unitOf(trx)));
      return options.retryConflicts === true ? retryDeadlocks(once) : once();
    },
  };
}
