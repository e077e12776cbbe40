// GET /metrics: the server's Prometheus metrics (src/metrics.ts), in the text exposition format.
// It is no RPC and calls none: it reads the registry createHandler passes in (HttpRouteDeps.metrics).
// A scrape needs a key with the admin role (`Authorization: Bearer <key>`, Prometheus's
// `authorization` setting), unless server.metrics.public; what it shows carries no key, number or
// value, but group and endpoint names and traffic are still nobody else's business.
// The same route, without the key, is all the metrics listener serves (server.metrics.listen:
// metricsOnly, src/metrics-listener.ts).
import type { Logger } from "pino";
import { pathOf, type HttpRequest, type HttpResponse, type HttpRoute, type HttpRouteFactory, type MetricsEndpoint } from "./routes.js";

const PATH = "/metrics";

/** answer ends a refused or failed scrape with a short text body. */
function answer(res: HttpResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...headers });
  res.end(`${text}\n`);
}

/** metricsRoute serves GET (and HEAD) /metrics when metrics are enabled; with them disabled the path is not claimed (the RPC paths answer 404). */
export const metricsRoute: HttpRouteFactory = ({ metrics, log }) => (metrics === undefined ? () => false : serveMetrics(metrics, log));

/** serveMetrics answers GET and HEAD /metrics with the registry's metrics to the requests `admits` lets in; it claims no other path. */
export function serveMetrics({ registry, admits }: MetricsEndpoint, log: Pick<Logger, "warn">): HttpRoute {
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
}

/**
 * metricsOnly serves /metrics as serveMetrics does and answers every other request 404: the whole
 * of the metrics listener (src/metrics-listener.ts), which serves nothing else.
 */
export function metricsOnly(endpoint: MetricsEndpoint, log: Pick<Logger, "warn">): (req: HttpRequest, res: HttpResponse) => void {
  const metrics = serveMetrics(endpoint, log);
  return (req, res) => {
    if (!metrics(req, res)) answer(res, 404, "not found: this listener serves GET /metrics only");
  };
}
