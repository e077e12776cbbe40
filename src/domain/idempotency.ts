import type { Knex } from "knex";
import type { Database } from "../store/database.js";
import { claimRequestId, completeRequestId } from "../store/idempotency-store.js";

/** RequestKey identifies a create-like call for retries: who called, what, and the caller's id. */
export interface RequestKey {
  /** scope is the operation and the caller, e.g. "CreateData:backend-1". */
  scope: string;
  /** requestId is the caller's id for the call; empty means the call is not idempotent. */
  requestId: string;
}

/**
 * runOnce runs `create` in a transaction, once per request key: a retry with the same key gets the
 * first result back (as JSON round-trips it) and creates nothing. The key is remembered until
 * `keepUntil(result)`.
 */
export async function runOnce<T>(
  db: Database,
  key: RequestKey,
  now: number,
  create: (trx: Knex.Transaction) => Promise<T>,
  keepUntil: (result: T) => number,
): Promise<T> {
  if (key.requestId === "") return db.knex.transaction(create);
  return db.knex.transaction(async (trx) => {
    // Claimed with a provisional expiry; the real one is known once the result is.
    const prior = await claimRequestId(trx, key.scope, key.requestId, now, now + 24 * 3600 * 1000);
    if (prior !== undefined) return JSON.parse(prior) as T;
    const result = await create(trx);
    await completeRequestId(trx, key.scope, key.requestId, JSON.stringify(result), keepUntil(result));
    return result;
  });
}
