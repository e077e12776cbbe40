import type { Queryable } from "./database.js";
import { isDuplicateKey } from "./errors.js";

/**
 * claimRequestId reserves (scope, requestId) inside the caller's transaction. It returns undefined
 * when the id is new (the caller goes on and calls completeRequestId), or the stored result of the
 * first call. A concurrent first call holds the key's row lock until it commits, so a retry racing
 * it waits and then reads its result.
 */
export async function claimRequestId(
  trx: Queryable,
  scope: string,
  requestId: string,
  now: number,
  expiresAt: number,
): Promise<string | undefined> {
  await trx("idempotency_keys").where({ scope, request_id: requestId }).andWhere("expires_at", "<=", now).delete();
  try {
    await trx("idempotency_keys").insert({ scope, request_id: requestId, result: "", expires_at: expiresAt });
    return undefined;
  } catch (e) {
    if (!isDuplicateKey(e)) throw e;
  }
  const row = (await trx("idempotency_keys").where({ scope, request_id: requestId }).first("result")) as { result: string } | undefined;
  if (row === undefined || row.result === "") throw new Error(`request id ${scope}/${requestId} is claimed but has no result`);
  return row.result;
}

/** completeRequestId stores the result of the first call under its request id, kept until expiresAt. */
export async function completeRequestId(trx: Queryable, scope: string, requestId: string, result: string, expiresAt: number): Promise<void> {
  await trx("idempotency_keys").where({ scope, request_id: requestId }).update({ result, expires_at: expiresAt });
}

/** sweepRequestIds deletes up to `batch` request ids whose time has passed. */
export async function sweepRequestIds(q: Queryable, now: number, batch: number): Promise<number> {
  const rows = (await q("idempotency_keys").where("expires_at", "<=", now).select("scope", "request_id").limit(batch)) as { scope: string; request_id: string }[];
  for (const r of rows) await q("idempotency_keys").where({ scope: r.scope, request_id: r.request_id }).andWhere("expires_at", "<=", now).delete();
  return rows.length;
}
