import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/**
 * createShutdownInterceptor ends every open server stream with UNAVAILABLE once `signal` aborts
 * (graceful shutdown), and refuses new calls from then on. Ending the response aborts the handler's
 * own ctx.signal, so the handler's listeners and timers are cleaned up by its `finally`.
 */
export function createShutdownInterceptor(signal: AbortSignal): Interceptor {
  const unavailable = () => new ConnectError("the server is shutting down; reconnect", Code.Unavailable);
  return (next) => async (req) => {
    if (signal.aborted) throw unavailable();
    const res = await next(req);
    if (!res.stream) return res;
    const messages = res.message[Symbol.asyncIterator]();
    return {
      ...res,
      message: (async function* () {
        let onAbort: (() => void) | undefined;
        const aborted = new Promise<"aborted">((resolve) => {
          onAbort = () => resolve("aborted");
          signal.addEventListener("abort", onAbort, { once: true });
        });
        try {
          for (;;) {
            const step = await Promise.race([messages.next(), aborted]);
            if (step === "aborted") throw unavailable();
            if (step.done === true) return;
            yield step.value;
          }
        } finally {
          if (onAbort !== undefined) signal.removeEventListener("abort", onAbort);
          void messages.return?.();
        }
      })(),
    };
  };
}
