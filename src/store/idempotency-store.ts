// The request ids' store on SQL (the contract: src/domain/idempotency-store.ts). One path for both
// dialects: plain knex in the caller's transaction. The allocations' own transactions claim and
// complete request ids with the same statements (claimRequestId, completeRequestId; on MySQL inside
// gms_claim_session_v2 and the RequestAccess batch, see access-store.ts).
import type { IdempotencyStore, RequestId } from "../domain/idempotency-store.js";
import type { Database, Queryable } from "./database.js";
import { isDuplicateKey } from "./errors.js";
import { trxOf } from "./unit-of-work.js";

/**
 * claimRequestId reserves (scope, requestId) inside the caller's transaction. It returns undefined
 * when the id is new (the caller goes on and calls completeRequestId), or the stored result of the
 * first call. A concurrent first call holds the key's row lock until it commits, so a retry racing
 * it waits and then reads its result.
 */
export async function claimRequestId(trx: Queryable, id: RequestId, now: number, expiresAt: number): Promise<string | undefined> {
  const key = { scope: id.scope, request_id: id.requestId };
  await trx("idempotency_keys").where(key).andWhere("expires_at", "<=", now).delete();
  try {
    await trx("idempotency_keys").insert({ ...key, result: "", expires_at: expiresAt });
    return undefined;
  } catch (e) {
    if (!isDuplicateKey(e)) throw e;
  }
  const row = (await trx("idempotency_keys").where(key).first("result")) as { result: string } | undefined;
  if (row === undefined || row.result === "") throw new Error(`request id ${id.scope}/${id.requestId} is claimed but has no result`);
  return row.result;
}

/** completeRequestId stores the result of the first call under its request id, kept until expiresAt. */
export async function completeRequestId(trx: Queryable, id: RequestId, result: string, expiresAt: number): Promise<void> {
  await trx("idempotency_keys").where({ scope: id.scope, request_id: id.requestId }).update({ result, expires_at: expiresAt });
}

/** sweepRequestIds deletes up to `batch` request ids whose time has passed. */
async function sweepRequestIds(q: Queryable, now: number, batch: number): Promise<number> {
  const rows = (await q("idempotency_keys").where("expires_at", "<=", now).select("scope", "request_id").limit(batch)) as { scope: string; request_id: string }[];
  for (const r of rows) await q("idempotency_keys").where({ scope: r.scope, request_id: r.request_id }).andWhere("expires_at", "<=", now).delete();
  return rows.length;
}

/** createIdempotencyStore keeps request ids in the database's idempotency_keys table. */
export function createIdempotencyStore(db: Database): IdempotencyStore {
  return {
    claim: (uow, id, now, keepUntil) => claimRequestId(trxOf(uow), id, now, keepUntil),
    complete: (uow, id, reply, keepUntil) => completeRequestId(trxOf(uow), id, reply, keepUntil),
    sweep: (now, batch) => sweepRequestIds(db.knex, now, batch),
  };
}
