// The metrics listener (server.metrics.listen): a second port, plain HTTP, that serves GET /metrics
// without a key and nothing else, for a Prometheus on a private network that should hold no API
// key. It is bounded as the main port is, by the same listen(): the server's timeouts (headers,
// first bytes, request, keep-alive, HTTP/2 idle), and a connection cap of its own, a quarter of it
// per peer address, loopback included (one scraper needs one connection). It serves no RPC and
// reads no configuration after start: changing it takes a restart (RESTART_SETTINGS).
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { listenerTimeouts, type Config } from "./config.js";
import { metricsOnly } from "./http/metrics.js";
import { listen, localUrl, type Listener, type RequestHandler } from "./listen.js";

/** MetricsListener is the bound metrics port. */
export interface MetricsListener extends Listener {
  /** url is where to scrape it, e.g. http://127.0.0.1:9464 (a wildcard host as 127.0.0.1). */
  readonly url: string;
}

/** STREAMS_PER_CONNECTION bounds an HTTP/2 connection's concurrent streams: a scrape is one request. */
const STREAMS_PER_CONNECTION = 8;

/** perPeer is the share of the listener's connections one peer address may hold. */
export function perPeer(maxConnections: number): number {
  return Math.max(1, Math.floor(maxConnections / 4));
}

/**
 * listenForMetrics starts the metrics listener that `server.metrics.listen` configures, serving
 * `registry`; undefined when it is not configured. The caller closes it (stopAccepting,
 * closeConnections) with the server.
 */
export async function listenForMetrics(config: Config, registry: Registry, log: Logger): Promise<MetricsListener | undefined> {
  const at = config.server.metrics.listen;
  if (at === undefined) return undefined;
  const { headersTimeoutMs, ...timeouts } = listenerTimeouts(config);
  // No key: whoever reaches this port may scrape. That is what the setting is for.
  const handler: RequestHandler = metricsOnly({ registry, admits: () => true }, log);
  const peerCap = perPeer(at.max_connections);
  const listener = await listen(handler, {
    host: at.host,
    port: at.port,
    headersTimeoutMs,
    limits: {
      ...timeouts,
      maxConnections: at.max_connections,
      maxConnectionsPerPeer: peerCap,
      maxStreamsPerConnection: STREAMS_PER_CONNECTION,
      maxStreamsPerPeer: peerCap * STREAMS_PER_CONNECTION,
      // Every peer is capped, the host's own too: on loopback every scraper is the host.
      unlimitedPeers: [],
    },
    log: log.child({ component: "metrics-listen" }),
    capNames: {
      maxConnections: "server.metrics.listen.max_connections",
      maxConnectionsPerPeer: "server.metrics.listen.max_connections (a quarter per peer)",
      maxStreamsPerPeer: "server.metrics.listen.max_connections (HTTP/2 streams per peer)",
    },
  });
  return { ...listener, url: localUrl("http", at.host, listener.port) };
}
