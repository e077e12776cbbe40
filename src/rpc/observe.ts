import type { DescMethod } from "@bufbuild/protobuf";
import { randomUUID } from "node:crypto";
import { Code, ConnectError, createContextKey, type Interceptor, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { HealthStatus } from "../health.js";
import { identityKey } from "./auth.js";
import { toConnectError } from "./errors.js";
import { tapStream, type StreamTap } from "./tap.js";

/** CallTracker counts the unary calls in flight, so a shutdown can wait for them, and the streams open on the lean path. */
export interface CallTracker {
  readonly inFlight: number;
  enter(): void;
  leave(): void;
  /** idle resolves once no unary call is in flight. */
  idle(): Promise<void>;
  /**
   * streams is the number of server streams open on the lean path (lean-path.ts): what an operator
   * (or a test) reads to see streams let go.
   */
  readonly streams: number;
  streamOpened(): void;
  streamClosed(): void;
  /** leanCalls counts the calls the lean path (lean-path.ts) has taken, streams and unary alike. */
  readonly leanCalls: number;
  tookLeanPath(): void;
}

/** createCallTracker makes an empty CallTracker. */
export function createCallTracker(): CallTracker {
  let inFlight = 0;
  let streams = 0;
  let leanCalls = 0;
  let waiters: (() => void)[] = [];
  return {
    get inFlight() {
      return inFlight;
    },
    enter() {
      inFlight++;
    },
    leave() {
      inFlight--;
      if (inFlight === 0) {
        for (const w of waiters) w();
        waiters = [];
      }
    },
    idle() {
      return inFlight === 0 ? Promise.resolve() : new Promise((resolve) => waiters.push(resolve));
    },
    get streams() {
      return streams;
    },
    streamOpened() {
      streams++;
    },
    streamClosed() {
      streams--;
    },
    get leanCalls() {
      return leanCalls;
    },
    tookLeanPath() {
      leanCalls++;
    },
  };
}

/**
 * callNext calls the next step of a call: what it throws at once becomes a rejection, so an
 * interceptor's `.then` sees every failure. (Interceptors here chain promises rather than await
 * them: the lean path's hot calls run the whole list, and each async layer costs its own promises.)
 */
export function callNext(next: Parameters<Interceptor>[0], req: Parameters<Parameters<Interceptor>[0]>[0]): Promise<UnaryResponse | StreamResponse> {
  try {
    return next(req);
  } catch (e) {
    return Promise.reject(e as Error);
  }
}

/**
 * createErrorInterceptor turns every error a handler throws, in a unary call or while streaming,
 * into the ConnectError the caller should see (see toConnectError).
 */
export function createErrorInterceptor(log: Logger, clock: Clock): Interceptor {
  return (next) => (req) => {
    const tap = new ErrorTap(log, clock, req.contextValues.get(requestIdKey));
    return callNext(next, req).then(
      (res) => (res.stream ? tapStream(res, tap) : res),
      (e: unknown) => {
        throw tap.failed(e);
      },
    );
  };
}

/** ErrorTap maps what a call fails with onto its ConnectError: an object, not a closure, as an open stream keeps it. */
class ErrorTap implements StreamTap {
  constructor(
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly requestId: string | undefined,
  ) {}

  failed(e: unknown): ConnectError {
    return toConnectError(e, this.log, this.clock.now(), this.requestId);
  }
}

/** CODE_NAMES are how logs spell codes: as the Connect protocol does ("ok", "not_found", "invalid_argument"). */
const CODE_NAMES = new Map<Code, string>(
  Object.values(Code)
    .filter((c): c is Code => typeof c === "number")
    .map((c) => [c, Code[c].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase()]),
);

/** codeName is a code as every log line spells it (CODE_NAMES); "ok" for none. */
export function codeName(code: Code | undefined): string {
  return code === undefined ? "ok" : (CODE_NAMES.get(code) ?? String(code));
}

/** requestIdKey carries a call's request id (x-request-id) from the log policy to the policies and handlers inside it. */
export const requestIdKey = createContextKey<string | undefined>(undefined, { description: "request id" });

/** REQUEST_ID is what an incoming x-request-id may be to be kept: 1 to 128 printable ASCII characters. */
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

/**
 * requestIdOf is the call's request id: the caller's (or its proxy's) `x-request-id` when it is a
 * plausible one (REQUEST_ID), else a new UUID.
 */
function requestIdOf(header: Headers): string {
  const given = header.get("x-request-id");
  return given !== null && REQUEST_ID.test(given) ? given : newRequestId();
}

/**
 * newRequestId is a new UUID, as one flat string: randomUUID builds its text by concatenation, a
 * chain of cons strings (some 450 bytes of heap) that an open stream's log line would keep for as
 * long as the stream lives, where the same 36 characters flat take 56.
 */
function newRequestId(): string {
  return Buffer.from(randomUUID(), "latin1").toString("latin1");
}

/**
 * logCall writes the one JSON line an RPC gets when it ends: method, code (ok, or the error's),
 * duration since `started` (performance.now()) and caller name; never keys, message contents or
 * files. INTERNAL is a warning. The log interceptor writes it, for every call on either path.
 */
export function logCall(log: Logger, method: DescMethod, started: number, caller: string, error: unknown, requestId?: string): void {
  const code = error === undefined ? undefined : ConnectError.from(error).code;
  // A busy server logging at warn builds no line for every call.
  if (!log.isLevelEnabled(code === Code.Internal ? "warn" : "info")) return;
  const fields = { method: methodName(method), code: codeName(code), ms: Math.round((performance.now() - started) * 10) / 10, caller, requestId };
  if (code !== Code.Internal) log.info(fields, "rpc");
  else log.warn(fields, "rpc");
}

/**
 * createLogInterceptor writes one line per RPC (logCall). Streams are logged when they end. It
 * also counts unary calls in flight for the graceful shutdown.
 */
export function createLogInterceptor(log: Logger, tracker: CallTracker): Interceptor {
  return (next) => (req) => {
    const started = performance.now();
    const requestId = requestIdOf(req.header);
    req.contextValues.set(requestIdKey, requestId);
    const unary = req.method.methodKind === "unary" || req.method.methodKind === "client_streaming";
    if (unary) tracker.enter();
    return callNext(next, req).then(
      (res) => {
        if (unary) tracker.leave();
        res.header.set("x-request-id", requestId);
        if (!res.stream) {
          logCall(log, req.method, started, req.contextValues.get(identityKey).name, undefined, requestId);
          return res;
        }
        return tapStream(res, new LogTap(log, req.method, started, req.contextValues.get(identityKey).name, requestId));
      },
      (e: unknown) => {
        if (unary) tracker.leave();
        logCall(log, req.method, started, req.contextValues.get(identityKey).name, e, requestId);
        // The caller gets the id with the error too (headers, or gRPC trailers), to quote it.
        if (e instanceof ConnectError) e.metadata.set("x-request-id", requestId);
        throw e;
      },
    );
  };
}

/** LogTap writes a stream's line when it ends. */
class LogTap implements StreamTap {
  constructor(
    private readonly log: Logger,
    private readonly method: DescMethod,
    private readonly started: number,
    private readonly caller: string,
    private readonly requestId: string,
  ) {}

  done(): void {
    logCall(this.log, this.method, this.started, this.caller, undefined, this.requestId);
  }

  failed(e: unknown): unknown {
    logCall(this.log, this.method, this.started, this.caller, e, this.requestId);
    return e;
  }
}

/** methodName is how logs name an RPC: "gms.v1.StorageService/CreateData". */
export function methodName(method: DescMethod): string {
  return `${method.parent.typeName}/${method.name}`;
}

/** needsStore tells whether a method needs the database: every opengms service; health and reflection do not. */
export function needsStore(method: DescMethod): boolean {
  return method.parent.typeName.startsWith("gms.");
}

/** storeDown is the refusal of a call while health says the database is not serving. */
const storeDown = () => new ConnectError("the store is unavailable; retry later", Code.Unavailable);

/** Availability is what a call reads to fail fast: the health monitor's status. */
export interface Availability {
  readonly status: HealthStatus;
}

/**
 * createAvailabilityInterceptor fails a call that needs the store with UNAVAILABLE at once while
 * health says NOT_SERVING (the database unreachable or unresponsive), instead of letting it wait for
 * a connection or a query timeout.
 */
export function createAvailabilityInterceptor(health: Availability): Interceptor {
  return (next) => (req) => {
    if (health.status === "not_serving" && needsStore(req.method)) return Promise.reject(storeDown());
    return next(req);
  };
}

/** abortError is the error a call ends with once its signal aborts: DEADLINE_EXCEEDED at its deadline, CANCELED when the client left. */
function abortError(signal: AbortSignal): ConnectError {
  const reason: unknown = signal.reason;
  return reason instanceof ConnectError ? reason : new ConnectError("the call was cancelled", Code.Canceled, undefined, undefined, reason);
}

/** untilAborted settles as `p` does, or rejects with abortError once `signal` aborts, whichever comes first. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(abortError(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e as Error);
      },
    );
  });
}

/**
 * hasDeadline tells whether a call came with a deadline (gRPC and gRPC-Web: grpc-timeout; Connect:
 * Connect-Timeout-Ms).
 */
function hasDeadline(header: Headers): boolean {
  return header.has("grpc-timeout") || header.has("connect-timeout-ms");
}

/**
 * createDeadlineInterceptor ends a call at its deadline (`grpc-timeout`, `Connect-Timeout-Ms`) with
 * DEADLINE_EXCEEDED, on either path: connect-node aborts the call's signal then but answers only
 * when the handler returns, which a database that stopped answering delays for as long as it is
 * gone. A unary call and a stream's every read are raced against the signal; the handler's own
 * work, left behind, ends at the query timeout (its result dropped; a write may still commit, which
 * a retry with the same request_id / client_message_id finds). A call without a deadline has nothing
 * to race: it ends when its handler does, which ends when the call's signal aborts (its client gone).
 */
export function createDeadlineInterceptor(): Interceptor {
  return (next) => (req) => {
    if (!hasDeadline(req.header)) return next(req);
    const signal = req.signal;
    return untilAborted(callNext(next, req), signal).then((res) => (res.stream ? tapStream(res, { until: signal, reason: () => abortError(signal) }) : res));
  };
}
