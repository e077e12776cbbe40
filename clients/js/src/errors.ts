/**
 * Typed errors: every failed call of a client made by createClient is a GmsError (a ConnectError:
 * code, message, metadata, details), or one of its subclasses when the server attached a gms.v1
 * error detail. The details are decoded the same way whatever the protocol carried them (Connect's
 * JSON error body, gRPC's grpc-status-details-bin, gRPC-Web's trailers).
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  LimitExceededSchema,
  NoMatchReason,
  NoMatchSchema,
  PoolExhaustedSchema,
  RateLimitedSchema,
} from "./gen/gms/v1/error_details_pb.js";

/** RETRY_INFO is the type name of google.rpc.RetryInfo, read from the details when a server sends it. */
const RETRY_INFO = "google.rpc.RetryInfo";

/**
 * GmsError is a failed call to opengms: a ConnectError with the gRPC code, the server's message and
 * its details, and the retry delay the server suggested, if any (google.rpc.RetryInfo, or a
 * detail's retry_after_seconds).
 *
 * Its `name` stays "ConnectError", so `ConnectError.from(e)` and `instanceof ConnectError` (any
 * copy of @connectrpc/connect) accept it unchanged; test for the typed cases with `instanceof
 * PoolExhausted` and friends.
 */
export class GmsError extends ConnectError {
  /** retryAfterMs is how long the server asked the caller to wait before trying again, if it said. */
  readonly retryAfterMs: number | undefined;

  constructor(from: ConnectError, retryAfterMs?: number) {
    super(from.rawMessage, from.code, from.metadata, undefined, from.cause ?? from);
    this.details = from.details;
    this.retryAfterMs = retryAfterMs ?? retryInfoMs(from);
  }

  // ConnectError's own instanceof test accepts any ConnectError for any subclass: put the ordinary
  // prototype chain test back, so that `e instanceof PoolExhausted` means what it says.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }
}

/** PoolExhausted is RESOURCE_EXHAUSTED with gms.v1.PoolExhausted: no free access number in a resource group. */
export class PoolExhausted extends GmsError {
  /** resourceGroup is the group that has no free number. */
  readonly resourceGroup: string;
  /** nextFreeAt is the earliest moment a number is expected to free up, when known. */
  readonly nextFreeAt: Date | undefined;

  constructor(from: ConnectError, detail: { resourceGroup: string; nextFreeAt?: Timestamp; retryAfterSeconds: bigint }) {
    super(from, secondsMs(detail.retryAfterSeconds));
    this.resourceGroup = detail.resourceGroup;
    this.nextFreeAt = detail.nextFreeAt === undefined ? undefined : timestampDate(detail.nextFreeAt);
  }
}

/** NoMatch is NOT_FOUND with gms.v1.NoMatch: no reservation matched the call. */
export class NoMatch extends GmsError {
  /** reason says why nothing matched (no reservation on the number, code mismatch, phone mismatch). */
  readonly reason: NoMatchReason;
  /** reasonName is the reason's name without its prefix: "NO_RESERVATION", "CODE_MISMATCH", "PHONE_MISMATCH" or "UNSPECIFIED". */
  readonly reasonName: string;

  constructor(from: ConnectError, detail: { reason: NoMatchReason }) {
    super(from);
    this.reason = detail.reason;
    this.reasonName = NO_MATCH_REASONS[detail.reason] ?? "UNSPECIFIED";
  }
}

const NO_MATCH_REASONS: Record<number, string> = {
  [NoMatchReason.NO_RESERVATION]: "NO_RESERVATION",
  [NoMatchReason.CODE_MISMATCH]: "CODE_MISMATCH",
  [NoMatchReason.PHONE_MISMATCH]: "PHONE_MISMATCH",
};

/** LimitExceeded is a request over a configured limit (gms.v1.LimitExceeded): which limit, its value, what the request needed. */
export class LimitExceeded extends GmsError {
  /** limit is the configuration key of the limit, e.g. "storage.max_value_bytes". */
  readonly limit: string;
  /** max is the limit's value. */
  readonly max: number;
  /** actual is what the request needed. */
  readonly actual: number;

  constructor(from: ConnectError, detail: { limit: string; max: bigint; actual: bigint }) {
    super(from);
    this.limit = detail.limit;
    this.max = Number(detail.max);
    this.actual = Number(detail.actual);
  }
}

/** RateLimited is RESOURCE_EXHAUSTED with gms.v1.RateLimited: a rate limit or the code-guessing lockout. */
export class RateLimited extends GmsError {
  /** until is when the caller may try again, when the server said. */
  readonly until: Date | undefined;

  constructor(from: ConnectError, detail: { until?: Timestamp; retryAfterSeconds: bigint }) {
    super(from, secondsMs(detail.retryAfterSeconds));
    this.until = detail.until === undefined ? undefined : timestampDate(detail.until);
  }
}

/**
 * toGmsError turns whatever a call threw into a GmsError, typed by the first gms.v1 detail it
 * carries. A GmsError is returned as it is.
 */
export function toGmsError(reason: unknown): GmsError {
  if (reason instanceof GmsError) return reason;
  const e = ConnectError.from(reason);
  const pool = e.findDetails(PoolExhaustedSchema)[0];
  if (pool !== undefined) return new PoolExhausted(e, pool);
  const rate = e.findDetails(RateLimitedSchema)[0];
  if (rate !== undefined) return new RateLimited(e, rate);
  const noMatch = e.findDetails(NoMatchSchema)[0];
  if (noMatch !== undefined) return new NoMatch(e, noMatch);
  const limit = e.findDetails(LimitExceededSchema)[0];
  if (limit !== undefined) return new LimitExceeded(e, limit);
  return new GmsError(e);
}

/** secondsMs is a whole number of seconds as milliseconds; 0 or less is "not said". */
function secondsMs(seconds: bigint): number | undefined {
  return seconds > 0n ? Number(seconds) * 1000 : undefined;
}

/**
 * retryInfoMs reads google.rpc.RetryInfo's retry_delay (a google.protobuf.Duration) from the
 * details, by its type name, so the client works whether or not a server sends it and needs no
 * generated code for it: RetryInfo { Duration retry_delay = 1 }, Duration { int64 seconds = 1;
 * int32 nanos = 2 }.
 */
function retryInfoMs(e: ConnectError): number | undefined {
  for (const d of e.details) {
    if (!("type" in d) || d.type !== RETRY_INFO) continue;
    try {
      const info = new BinaryReader(d.value);
      while (info.pos < info.len) {
        const [field, wire] = info.tag();
        if (field !== 1 || wire !== WireType.LengthDelimited) {
          info.skip(wire);
          continue;
        }
        const duration = new BinaryReader(info.bytes());
        let seconds = 0;
        let nanos = 0;
        while (duration.pos < duration.len) {
          const [f, w] = duration.tag();
          if (f === 1 && w === WireType.Varint) seconds = Number(duration.int64());
          else if (f === 2 && w === WireType.Varint) nanos = duration.int32();
          else duration.skip(w);
        }
        const ms = seconds * 1000 + Math.ceil(nanos / 1e6);
        return ms > 0 ? ms : undefined;
      }
    } catch {
      // A detail that cannot be read is ignored, as connect's findDetails does.
    }
  }
  return undefined;
}

/**
 * isRetryable tells whether a failure may go away by itself (the network, a restarting or busy
 * server, a rate limit): the chat helpers retry those and stop on the rest (a wrong key, an
 * unknown chat, a bad request).
 */
export function isRetryable(e: GmsError): boolean {
  switch (e.code) {
    case Code.Unavailable:
    case Code.Unknown:
    case Code.Internal:
    case Code.DeadlineExceeded:
    case Code.ResourceExhausted:
    case Code.Aborted:
    case Code.Canceled:
      return true;
    default:
      return false;
  }
}
