import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { HealthStatus } from "../health.js";
import { identityKey } from "./auth.js";
import { toConnectError } from "./errors.js";

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
 * createErrorInterceptor turns every error a handler throws, in a unary call or while streaming,
 * into the ConnectError the caller should see (see toConnectError).
 */
export function createErrorInterceptor(log: Logger, clock: Clock): Interceptor {
  return (next) => async (req) => {
    let res: UnaryResponse | StreamResponse;
    try {
      res = await next(req);
    } catch (e) {
      throw toConnectError(e, log, clock.now());
    }
    if (!res.stream) return res;
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
        } catch (e) {
          throw toConnectError(e, log, clock.now());
        }
      })(),
    };
  };
}

/**
 * logCall writes the one JSON line an RPC gets when it ends: method, code (ok, or the error's),
 * duration since `started` (performance.now()) and caller name; never keys, message contents or
 * files. INTERNAL is a warning. The log interceptor and the lean path both write it here,
 * so a call logs the same whichever path served it.
 */
export function logCall(log: Logger, method: DescMethod, started: number, caller: string, error: unknown): void {
  const code = error === undefined ? undefined : ConnectError.from(error).code;
  // A busy server logging at warn builds no line for every call.
  if (!log.isLevelEnabled(code === Code.Internal ? "warn" : "info")) return;
  const fields = { method: methodName(method), code: code === undefined ? "ok" : Code[code], ms: Math.round((performance.now() - started) * 10) / 10, caller };
  if (code !== Code.Internal) log.info(fields, "rpc");
  else log.warn(fields, "rpc");
}

/**
 * createLogInterceptor writes one line per RPC (logCall). Streams are logged when they end. It
 * also counts unary calls in flight for the graceful shutdown.
 */
export function createLogInterceptor(log: Logger, tracker: CallTracker): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const line = (e: unknown) => logCall(log, req.method, started, req.contextValues.get(identityKey).name, e);
    const unary = req.method.methodKind === "unary" || req.method.methodKind === "client_streaming";
    if (unary) tracker.enter();
    let res: UnaryResponse | StreamResponse;
    try {
      res = await next(req);
    } catch (e) {
      line(e);
      throw e;
    } finally {
      if (unary) tracker.leave();
    }
    if (!res.stream) {
      line(undefined);
      return res;
    }
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
          line(undefined);
        } catch (e) {
          line(e);
          throw e;
        }
      })(),
    };
  };
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
 * refuseWhileStoreDown fails a call that needs the store with UNAVAILABLE at once while health
 * says NOT_SERVING (the database unreachable or unresponsive), instead of letting it wait for a
 * connection or a query timeout. Every path applies it (the interceptor below, lean-path.ts).
 */
export function refuseWhileStoreDown(health: Availability, method: DescMethod): void {
  if (health.status === "not_serving" && needsStore(method)) throw storeDown();
}

/** createAvailabilityInterceptor applies refuseWhileStoreDown on the connect path. */
export function createAvailabilityInterceptor(health: Availability): Interceptor {
  return (next) => (req) => {
    refuseWhileStoreDown(health, req.method);
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
 * createDeadlineInterceptor ends a call at its deadline (`grpc-timeout`, `Connect-Timeout-Ms`) with
 * DEADLINE_EXCEEDED, as the lean path does: connect-node aborts the call's signal then but
 * answers only when the handler returns, which a database that stopped answering delays for as long
 * as it is gone. A unary call and a stream's opening and every message are raced against the
 * signal; the handler's own work, left behind, ends at the query timeout (its result dropped; a
 * write may still commit, which a retry with the same request_id / client_message_id finds).
 */
export function createDeadlineInterceptor(): Interceptor {
  return (next) => async (req) => {
    const signal = req.signal;
    const res = await untilAborted(next(req), signal);
    if (!res.stream) return res;
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        const it = messages[Symbol.asyncIterator]();
        let done = false;
        try {
          for (;;) {
            const step = await untilAborted(it.next(), signal);
            if (step.done === true) {
              done = true;
              return;
            }
            yield step.value;
          }
        } finally {
          // A stream left at its deadline ends on the same signal; its cleanup runs once it returns.
          if (!done) void it.return?.(undefined)?.catch(() => undefined);
        }
      })(),
    };
  };
}
