import { create, type DescMessage, type Message } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import {
  LimitExceededSchema,
  NoMatchReason,
  NoMatchSchema,
  PoolExhaustedSchema,
  RateLimitedSchema,
} from "../../gen/gms/v1/error_details_pb.js";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { GmsError, type FailureDetail, type FailureKind } from "../domain/errors.js";
import { describeError, isUnavailable } from "../store/errors.js";

const codes: Record<FailureKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  failed_precondition: Code.FailedPrecondition,
  resource_exhausted: Code.ResourceExhausted,
  permission_denied: Code.PermissionDenied,
  already_exists: Code.AlreadyExists,
  unavailable: Code.Unavailable,
};

const noMatchReasons = {
  no_reservation: NoMatchReason.NO_RESERVATION,
  code_mismatch: NoMatchReason.CODE_MISMATCH,
  phone_mismatch: NoMatchReason.PHONE_MISMATCH,
} as const;

function retryAfter(at: number, now: number): bigint {
  return BigInt(Math.max(0, Math.ceil((at - now) / 1000)));
}

/** Detail is one error detail as ConnectError takes it. */
type Detail = { desc: DescMessage; value: Message };

/**
 * retryInfo is the standard `google.rpc.RetryInfo` detail: how long to wait before retrying, to the
 * millisecond. gRPC clients and libraries that know no gms.v1 detail read it (a client's retry
 * policy, Google's API client libraries), so every refusal that knows when a retry helps carries it.
 */
export function retryInfo(delayMs: number): Detail {
  return { desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: durationFromMs(Math.max(0, Math.ceil(delayMs))) }) };
}

/** rateLimitedDetails are a rate limit's refusal details until `until`: gms.v1.RateLimited and google.rpc.RetryInfo. */
export function rateLimitedDetails(until: number, now: number): Detail[] {
  return [{ desc: RateLimitedSchema, value: create(RateLimitedSchema, { until: timestampFromMs(until), retryAfterSeconds: retryAfter(until, now) }) }, retryInfo(until - now)];
}

function detailsOf(detail: FailureDetail, now: number): Detail[] {
  switch (detail.type) {
    case "limit":
      return [{ desc: LimitExceededSchema, value: create(LimitExceededSchema, { limit: detail.limit, max: BigInt(detail.max), actual: BigInt(detail.actual) }) }];
    case "pool_exhausted": {
      const pool = {
        desc: PoolExhaustedSchema,
        value: create(PoolExhaustedSchema, {
          resourceGroup: detail.resourceGroup,
          ...(detail.nextFreeAt === undefined ? {} : { nextFreeAt: timestampFromMs(detail.nextFreeAt), retryAfterSeconds: retryAfter(detail.nextFreeAt, now) }),
        }),
      };
      // Only a pool that knows when a number frees up says when to retry.
      return detail.nextFreeAt === undefined ? [pool] : [pool, retryInfo(detail.nextFreeAt - now)];
    }
    case "no_match":
      return [{ desc: NoMatchSchema, value: create(NoMatchSchema, { reason: noMatchReasons[detail.reason] }) }];
    case "rate_limited":
      return rateLimitedDetails(detail.until, now);
  }
}

/**
 * toConnectError turns whatever a handler threw into the error a caller sees: a domain refusal
 * keeps its message and detail under its gRPC code; a database that cannot serve now (unreachable,
 * a connection lost, a timeout, a lock wait, a busy SQLite file: isUnavailable) is UNAVAILABLE;
 * anything else is answered INTERNAL. Both are logged, described without SQL, values or the
 * database's message (describeError); the caller gets neither SQL nor stack.
 */
export function toConnectError(e: unknown, log: Logger, now = Date.now(), requestId?: string): ConnectError {
  if (e instanceof ConnectError) return e;
  // A wait or a read ended because the client went away (or its deadline passed): no fault here.
  if (isAbort(e)) return new ConnectError("the call was cancelled", e.name === "TimeoutError" ? Code.DeadlineExceeded : Code.Canceled, undefined, undefined, e);
  if (e instanceof GmsError) {
    const details = e.detail === undefined ? [] : detailsOf(e.detail, now);
    return new ConnectError(e.message, codes[e.kind], undefined, details, e);
  }
  if (isUnavailable(e)) {
    log.error({ err: describeError(e), requestId }, "database unavailable");
    return new ConnectError("the store is unavailable; retry later", Code.Unavailable, undefined, undefined, e);
  }
  log.error({ err: describeError(e), requestId }, "internal error");
  return new ConnectError("internal error", Code.Internal, undefined, undefined, e);
}

/** isAbort tells an AbortSignal's reason (an AbortError or TimeoutError DOMException, or an Error so named) from a fault. */
function isAbort(e: unknown): e is Error {
  return (e instanceof Error || (typeof DOMException !== "undefined" && e instanceof DOMException)) && (e.name === "AbortError" || e.name === "TimeoutError");
}
