/**
 * UnitOfWork is an open transaction as the domain sees it: opaque. A rule that must change several
 * aggregates together (a session, its data and its reservations) opens one with Transactions.run
 * and hands it to each store it calls; only the store that made it knows what it is (on SQL, a
 * database transaction: see unit-of-work.ts under src/store). The domain never sees a statement,
 * a row or a COMMIT: a unit of work commits when the function given to `run` resolves and rolls
 * back when it throws.
 */
export interface UnitOfWork {
  /** brand keeps any other value from passing for a unit of work. */
  readonly __unitOfWork: unique symbol;
}

/** UnitOptions tune one unit of work. */
export interface UnitOptions {
  /**
   * retryConflicts runs the function again, in a new unit of work, when the database rolled the
   * unit back to break a conflict with a concurrent one (a deadlock, on MySQL): the function must
   * have no effect outside its unit of work. Cancelling or extending a session racing a match of
   * it may meet such a conflict; the one rolled back is safe to run again.
   */
  retryConflicts?: boolean;
}

/** Transactions opens units of work. */
export interface Transactions {
  /** run runs fn in a new unit of work: committed when fn resolves, rolled back when it throws. */
  run<T>(fn: (uow: UnitOfWork) => Promise<T>, options?: UnitOptions): Promise<T>;
}
