// Plain HTTP routes served beside the RPCs on the same port: GMS's own HTTP API (/genesys/...) and
// the IVR's matching endpoint. A route is an adapter, like the RPC services, and holds no rule of
// its own: it turns an HTTP request into calls of the served RPCs through `local` (an in-process
// transport that runs the serving policy: auth, validation, logs, error mapping, and whatever
// policy comes next), and their answers and errors into the HTTP shapes its clients expect.
import type * as http from "node:http";
import type * as http2 from "node:http2";
import type { Transport } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { Clock } from "../clock.js";
import type { ConfigSource } from "../config.js";

/** HttpRequest and HttpResponse are Node's, HTTP/1.1 or HTTP/2. */
export type HttpRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type HttpResponse = http.ServerResponse | http2.Http2ServerResponse;

/**
 * HttpRoute serves the requests it claims: it returns false, having done nothing, for a request
 * that is not its own (the next route, then the RPC paths, get it), or true when it has answered or
 * will answer it.
 */
export type HttpRoute = (req: HttpRequest, res: HttpResponse) => boolean;

/** HttpRouteDeps are what a route is built from. */
export interface HttpRouteDeps {
  /**
   * local calls the served RPCs in this process through the serving policy (createClient(Service,
   * local)); pass the HTTP caller's credentials on as the call's `authorization` header and its
   * `x-request-id`, and the request's signal, so that a caller gone away cancels the call.
   */
  local: Transport;
  /** config is the configuration in effect: read it per request (a reload replaces it). */
  config: ConfigSource;
  /**
   * requestTimeoutMs is server.request_timeout_seconds as the server started with it: a request's
   * deadline, as the listener's (a setting a reload does not change: RESTART_SETTINGS).
   */
  requestTimeoutMs: number;
  log: Logger;
  clock: Clock;
  /** shutdown aborts when the server shuts down: long waits end. */
  shutdown: AbortSignal;
  /**
   * metrics are what /metrics serves (src/http/metrics.ts), undefined when metrics are disabled. It
   * is no RPC: the registry is read directly, and `admits` says whether a request's `authorization`
   * may read it (the admin role, unless server.metrics.public).
   */
  metrics?: MetricsEndpoint | undefined;
}

/** MetricsEndpoint is what the /metrics route needs: the registry, and who may scrape it. */
export interface MetricsEndpoint {
  registry: Registry;
  admits: (authorization: string | null) => boolean;
}

/** HttpRouteFactory builds a route from its deps; HTTP_ROUTES in src/http/index.ts lists them. */
export type HttpRouteFactory = (deps: HttpRouteDeps) => HttpRoute;

/** pathOf is a request's path without its query string. */
export function pathOf(req: HttpRequest): string {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  return q < 0 ? url : url.slice(0, q);
}

/** queryOf is a request's query string, without its `?` ("" when it has none). */
export function queryOf(req: HttpRequest): string {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  return q < 0 ? "" : url.slice(q + 1);
}
