// The serving policy: the one ordered list of interceptors every RPC goes through, whichever path
// serves it. connect runs it for the calls it serves (src/rpc/decode.ts: connectAdapter); the lean
// path runs the very same interceptors for the calls it serves (src/rpc/lean-path.ts), composed
// once per method. A policy written once as a connect Interceptor (metrics, a rate limit, tracing)
// therefore runs for every call: every service, every protocol, unary calls and streams alike.
import type { Validator } from "@bufbuild/protovalidate";
import type { Interceptor } from "@connectrpc/connect";
import { createValidateInterceptor } from "@connectrpc/validate";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { createAuthInterceptor, type Authorizer } from "./auth.js";
import { createAvailabilityInterceptor, createDeadlineInterceptor, createErrorInterceptor, createLogInterceptor, type Availability, type CallTracker } from "./observe.js";
import { createShutdownInterceptor } from "./shutdown.js";

/** PolicyDeps are what the serving policy is built from. */
export interface PolicyDeps {
  log: Logger;
  clock: Clock;
  /** tracker counts the unary calls in flight, which a graceful shutdown waits for. */
  tracker: CallTracker;
  authorize: Authorizer;
  /** shutdown aborts when the server shuts down: new calls are refused, open streams end. */
  shutdown: AbortSignal;
  /** health is read to fail fast while the store is down. */
  health: Availability;
  validator: Validator;
}

/**
 * servingPolicy builds the ordered list of interceptors (the first outermost) that every RPC goes
 * through, on either path:
 *
 * 1. log: one line when the call ends (method, code, duration, caller); counts unary calls in
 *    flight for the graceful shutdown;
 * 2. deadline: ends a call at its deadline with DEADLINE_EXCEEDED, even while its handler waits;
 * 3. auth: the caller's identity (identityKey), or UNAUTHENTICATED / PERMISSION_DENIED;
 * 4. the `added` policies, in their order (metrics, a rate limit, tracing...): they see the
 *    method, the protocol (protocolOf) and the caller's identity, and what they refuse is logged
 *    and answered like any other refusal;
 * 5. shutdown: refuses new calls once the server shuts down, ends open streams with UNAVAILABLE;
 * 6. availability: fails a call that needs the store at once while health says NOT_SERVING;
 * 7. validation: protovalidate's rules on every request message (INVALID_ARGUMENT);
 * 8. error mapping, closest to the handler: what a handler throws becomes the caller's
 *    ConnectError (toConnectError).
 *
 * An interceptor here keeps nothing per call in its outer function `(next) => ...`: connect
 * composes the list for each call, the lean path once per method at startup.
 */
export function servingPolicy(deps: PolicyDeps, added: readonly Interceptor[] = []): Interceptor[] {
  return [
    createLogInterceptor(deps.log, deps.tracker),
    createDeadlineInterceptor(),
    createAuthInterceptor(deps.authorize),
    ...added,
    createShutdownInterceptor(deps.shutdown),
    createAvailabilityInterceptor(deps.health),
    createValidateInterceptor({ validator: deps.validator }),
    createErrorInterceptor(deps.log, deps.clock),
  ];
}

/** CallFn is one call through the policy: what an Interceptor wraps, and what it returns. */
export type CallFn = Parameters<Interceptor>[0];

/**
 * applyPolicy wraps a handler's call in the interceptors, the first outermost, as connect does
 * (its applyInterceptors, run for every call); the lean path does it once per method.
 */
export function applyPolicy(handler: CallFn, policy: readonly Interceptor[]): CallFn {
  return policy.reduceRight((next, interceptor) => interceptor(next), handler);
}

/** Protocol is the wire protocol of a call: gRPC, gRPC-Web or Connect (POST or GET). */
export type Protocol = "grpc" | "grpc-web" | "connect";

/**
 * protocolOf tells a call's protocol from its request, as a policy sees it (its Content-Type: a
 * Connect GET has none). Both paths give policies the request's headers as they came.
 */
export function protocolOf(req: { readonly header: Headers }): Protocol {
  const type = (req.header.get("content-type") ?? "").toLowerCase();
  if (type.startsWith("application/grpc-web")) return "grpc-web";
  if (type.startsWith("application/grpc")) return "grpc";
  return "connect";
}
