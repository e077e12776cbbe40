// The plain HTTP routes this server serves beside its RPCs (src/http/routes.ts says what a route is).
import { cometdRoute } from "./cometd.js";
import { gmsChatRoute } from "./gms-chat.js";
import { gmsServiceRoute } from "./gms-services.js";
import { gmsStorageRoute } from "./gms-storage.js";
import { ivrMatchRoute } from "./ivr.js";
import { metricsRoute } from "./metrics.js";
import { webRoute } from "./web.js";
import type { HttpRoute, HttpRouteDeps, HttpRouteFactory } from "./routes.js";

/** HTTP_ROUTES are the plain HTTP routes, asked in this order before the RPC paths. */
export const HTTP_ROUTES: readonly HttpRouteFactory[] = [metricsRoute, webRoute, gmsServiceRoute, gmsStorageRoute, gmsChatRoute, cometdRoute, ivrMatchRoute];

/**
 * httpRoutes builds the routes, as one route: the first that claims a request serves it. A request
 * no route claims is the RPC paths' (false).
 */
export function httpRoutes(deps: HttpRouteDeps, factories: readonly HttpRouteFactory[] = HTTP_ROUTES): HttpRoute {
  const routes = factories.map((f) => f(deps));
  if (routes.length === 0) return () => false;
  return (req, res) => {
    for (const route of routes) if (route(req, res)) return true;
    return false;
  };
}
