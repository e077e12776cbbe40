import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { callNext } from "./observe.js";
import { tapStream, type StreamTap } from "./tap.js";

/**
 * createShutdownInterceptor ends every open server stream with UNAVAILABLE once `signal` aborts
 * (graceful shutdown), and refuses new calls from then on. Ending the response aborts the handler's
 * own ctx.signal, so the handler's listeners and timers are cleaned up by its `finally`.
 */
export function createShutdownInterceptor(signal: AbortSignal): Interceptor {
  const unavailable = () => new ConnectError("the server is shutting down; reconnect", Code.Unavailable);
  const tap: StreamTap = { until: signal, reason: unavailable };
  return (next) => (req) => {
    if (signal.aborted) return Promise.reject(unavailable());
    // A unary call in flight is let finish: the graceful shutdown waits for it.
    if (!req.stream) return next(req);
    return callNext(next, req).then((res) => (res.stream ? tapStream(res, tap) : res));
  };
}
