// GET /metrics: the server's Prometheus metrics (src/metrics.ts), in the text exposition format.
// It is no RPC and calls none: it reads the registry createHandler passes in (HttpRouteDeps.metrics).
// A scrape needs a key with the admin role (`Authorization: Bearer <key>`, Prometheus's
// `authorization` setting), unless server.metrics.public; what it shows carries no key, number or
// value, but group and endpoint names and traffic are still nobody else's business.
import { pathOf, type HttpResponse, type HttpRouteFactory } from "./routes.js";

const PATH = "/metrics";

/** answer ends a refused or failed scrape with a short text body. */
function answer(res: HttpResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...headers });
  res.end(`${text}\n`);
}

/** metricsRoute serves GET (and HEAD) /metrics when metrics are enabled; with them disabled the path is not claimed (the RPC paths answer 404). */
export const metricsRoute: HttpRouteFactory = ({ metrics, log }) => {
  if (metrics === undefined) return () => false;
  const { registry, admits } = metrics;
  return (req, res) => {
    if (pathOf(req) !== PATH) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      answer(res, 405, "method not allowed: GET /metrics", { allow: "GET, HEAD" });
      return true;
    }
    const authorization = req.headers["authorization"];
    if (!admits(typeof authorization === "string" ? authorization : null)) {
      // The same answer for a missing key, a wrong one and one without the role: nothing to probe keys with.
      answer(res, 401, "/metrics needs an API key with the admin role", { "www-authenticate": 'Bearer realm="opengms"' });
      return true;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { "content-type": registry.contentType, "cache-control": "no-store" });
        res.end(req.method === "HEAD" ? "" : text);
      },
      (e: unknown) => {
        log.warn({ event: "metrics", error: e instanceof Error ? e.name : "unknown" }, "a metrics scrape failed");
        answer(res, 500, "the metrics could not be collected");
      },
    );
    return true;
  };
};
