import { Code, ConnectError, type Interceptor, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { identityKey } from "./auth.js";
import { toConnectError } from "./errors.js";

/** CallTracker counts the unary calls in flight, so a shutdown can wait for them. */
export interface CallTracker {
  readonly inFlight: number;
  enter(): void;
  leave(): void;
  /** idle resolves once no unary call is in flight. */
  idle(): Promise<void>;
}

/** createCallTracker makes an empty CallTracker. */
export function createCallTracker(): CallTracker {
  let inFlight = 0;
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
 * createLogInterceptor writes one JSON line per RPC: method, code, duration and caller (never
 * keys, message contents or files). Streams are logged when they end. It also counts unary calls
 * in flight for the graceful shutdown.
 */
export function createLogInterceptor(log: Logger, tracker: CallTracker): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const method = `${req.service.typeName}/${req.method.name}`;
    const line = (e: unknown) => {
      const code = e === undefined ? "ok" : Code[ConnectError.from(e).code];
      const fields = { method, code, ms: Math.round((performance.now() - started) * 10) / 10, caller: req.contextValues.get(identityKey).name };
      if (e === undefined || ConnectError.from(e).code !== Code.Internal) log.info(fields, "rpc");
      else log.warn(fields, "rpc");
    };
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
