/**
 * FailureKind is why a domain operation refused: each maps to one gRPC code at the RPC edge
 * (src/rpc/errors.ts), so the rules here never speak RPC.
 */
export type FailureKind =
  | "invalid_argument"
  | "not_found"
  | "failed_precondition"
  | "resource_exhausted"
  | "permission_denied"
  | "already_exists"
  | "unavailable";

/** LimitDetail names a configured limit that a request broke. */
export interface LimitDetail {
  type: "limit";
  /** limit is the configuration key, e.g. "storage.max_value_bytes". */
  limit: string;
  /** max is the configured value. */
  max: number;
  /** actual is what the request needed. */
  actual: number;
}

/** PoolExhaustedDetail says when a resource group will next have a free number. */
export interface PoolExhaustedDetail {
  type: "pool_exhausted";
  resourceGroup: string;
  /** nextFreeAt is the epoch ms at which the earliest number frees up; undefined when unknown. */
  nextFreeAt: number | undefined;
}

/** NoMatchDetail says why MatchInteraction found nothing. */
export interface NoMatchDetail {
  type: "no_match";
  reason: "no_reservation" | "code_mismatch" | "phone_mismatch";
}

/** RateLimitedDetail says until when a guarded action is refused. */
export interface RateLimitedDetail {
  type: "rate_limited";
  /** until is the epoch ms at which the refusal ends. */
  until: number;
}

/** FailureDetail is the machine-readable detail attached to a failure. */
export type FailureDetail = LimitDetail | PoolExhaustedDetail | NoMatchDetail | RateLimitedDetail;

/** GmsError is a refusal by a domain rule: a caller's mistake or a state that forbids the action. */
export class GmsError extends Error {
  override name = "GmsError";
  constructor(
    readonly kind: FailureKind,
    message: string,
    readonly detail?: FailureDetail,
  ) {
    super(message);
  }
}

/** notFound is the refusal for an unknown or expired id. */
export const notFound = (what: string) => new GmsError("not_found", `${what} not found`);
/** invalid is the refusal for a bad field. */
export const invalid = (message: string) => new GmsError("invalid_argument", message);
