// What retries by request id need of a database (the contract); the SQL store keeps it
// (idempotency-store.ts under src/store). The store keeps a reply as an opaque string: what it holds (the request's digest
// beside the reply) is the domain's (src/domain/idempotency.ts).
import type { UnitOfWork } from "./unit-of-work.js";

/** RequestId is a call's retry key: the scope (operation and caller) and the caller's id for the call. */
export interface RequestId {
  scope: string;
  requestId: string;
}

/** IdempotencyStore keeps the replies of first calls under their request ids. */
export interface IdempotencyStore {
  /**
   * claim reserves a request id in the unit of work: undefined when it is new (the caller goes on
   * and completes it), else the reply kept for the first call. A concurrent first call holds the id
   * until its unit of work ends, so a retry racing it waits and then reads its reply. `keepUntil`
   * is how long the id is held until complete says otherwise; an id kept past its time is new again.
   */
  claim(uow: UnitOfWork, id: RequestId, now: number, keepUntil: number): Promise<string | undefined>;
  /** complete keeps the first call's reply under its id until `keepUntil`. */
  complete(uow: UnitOfWork, id: RequestId, reply: string, keepUntil: number): Promise<void>;
  /** sweep deletes up to `batch` request ids whose time passed by `now`, and says how many. */
  sweep(now: number, batch: number): Promise<number>;
}
