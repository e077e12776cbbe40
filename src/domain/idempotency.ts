import { GmsError } from "./errors.js";
import type { IdempotencyStore } from "./idempotency-store.js";
import type { Transactions, UnitOfWork } from "./unit-of-work.js";

/**
 * RequestKey identifies a create-like call for retries: who called, what, and the caller's id. A
 * stored reply is handed back only to a retry under the same scope and request id whose request
 * has the same digest: the same caller, asking the same thing.
 */
export interface RequestKey {
  /**
   * scope is the operation and the caller, e.g. "CreateData:backend-1". For callers without a key
   * of their own it holds the request's digest too (see src/rpc/request-key.ts), so only a caller
   * that sends the very same request under the very same id finds the reply.
   */
  scope: string;
  /** requestId is the caller's id for the call; empty means the call is not idempotent. */
  requestId: string;
  /** digest is the request's canonical digest, kept beside the reply and compared on a retry. */
  digest: string;
}

/** NO_REQUEST is the key of a call without a request id: run as is, nothing kept. */
export const NO_REQUEST: RequestKey = { scope: "", requestId: "", digest: "" };

/** keptReply is what is stored under a request id: the request's digest beside the reply. */
export function keptReply(key: RequestKey, reply: unknown): string {
  return JSON.stringify({ request: key.digest, reply });
}

/**
 * priorReply is the stored reply for a retry, as JSON round-trips it. A different request under an
 * id already used by the same caller is ALREADY_EXISTS: it gets nothing of the first call.
 */
export function priorReply<T>(key: RequestKey, stored: string): T {
  const kept = JSON.parse(stored) as { request?: unknown; reply?: unknown };
  if (kept.request !== key.digest) {
    throw new GmsError("already_exists", `request_id "${key.requestId}" was already used for a different request; use a new request_id for a new request`);
  }
  return kept.reply as T;
}

/** PROVISIONAL_KEEP_MS is how long a request id is held while its first call runs, until the reply says how long to keep it. */
const PROVISIONAL_KEEP_MS = 24 * 3600 * 1000;

/** Once is what runOnce needs: units of work, and where request ids are kept. */
export interface Once {
  transactions: Transactions;
  requestIds: IdempotencyStore;
}

/**
 * runOnce runs `create` in a unit of work, once per request key: a retry with the same key and the
 * same request gets the first result back (as JSON round-trips it) and creates nothing. The key is
 * remembered until `keepUntil(result)`.
 */
export async function runOnce<T>({ transactions, requestIds }: Once, key: RequestKey, now: number, create: (uow: UnitOfWork) => Promise<T>, keepUntil: (result: T) => number): Promise<T> {
  if (key.requestId === "") return transactions.run(create);
  const id = { scope: key.scope, requestId: key.requestId };
  return transactions.run(async (uow) => {
    // Claimed with a provisional expiry; the real one is known once the result is.
    const prior = await requestIds.claim(uow, id, now, now + PROVISIONAL_KEEP_MS);
    if (prior !== undefined) return priorReply<T>(key, prior);
    const result = await create(uow);
    await requestIds.complete(uow, id, keptReply(key, result), keepUntil(result));
    return result;
  });
}
