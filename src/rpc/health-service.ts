import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import type { HealthMonitor, HealthStatus } from "../health.js";
import type { StreamKeepalive } from "./keepalive.js";
import { connectStream, serverStream } from "./lean-rpc.js";

const toStatus = (s: HealthStatus) => (s === "serving" ? Status.SERVING : Status.NOT_SERVING);

/**
 * healthService is grpc.health.v1.Health: "" and every served service share one status, which is
 * NOT_SERVING while the database is unreachable or the server is shutting down. Watch, a long-lived
 * stream like a chat's, repeats its last status while quiet and ends at its maximum age
 * (`keepalive`: keepalive.ts); a client watches again, as the health protocol expects.
 */
export function healthService(monitor: HealthMonitor, services: readonly string[], keepalive?: StreamKeepalive): ServiceImpl<typeof Health> {
  const known = new Set(["", ...services]);
  const watch = serverStream(
    Health.method.watch,
    async (req, _caller, signal) => (known.has(req.service) ? statuses(monitor, signal) : unknown(signal)),
    (status: Status) => ({ status }),
    { keepalive, heartbeat: { repeat: (status) => ({ status }) } },
  );
  return {
    async check(req) {
      if (!known.has(req.service)) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      return { status: toStatus(await monitor.check()) };
    },
    async list() {
      const status = toStatus(await monitor.check());
      return { statuses: Object.fromEntries([...known].map((name) => [name, { status }])) };
    },
    watch: connectStream(watch),
  };
}

/**
 * unknown is the Watch of a service not served: SERVICE_UNKNOWN, and the call kept open, as the
 * health protocol says (the service might appear later; here it never does), until the client
 * leaves or the server shuts down.
 */
async function* unknown(signal: AbortSignal): AsyncGenerator<Status> {
  yield Status.SERVICE_UNKNOWN;
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** statuses yields the shared status now and whenever it changes, until `signal` aborts. */
async function* statuses(monitor: HealthMonitor, signal: AbortSignal): AsyncGenerator<Status> {
  const queue: HealthStatus[] = [];
  let wake: (() => void) | undefined;
  const off = monitor.onChange((s) => {
    queue.push(s);
    wake?.();
  });
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort);
  try {
    let last = monitor.status;
    yield toStatus(last);
    while (!signal.aborted) {
      const next = queue.shift();
      if (next === undefined) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      if (next !== last) {
        last = next;
        yield toStatus(next);
      }
    }
  } finally {
    off();
    signal.removeEventListener("abort", onAbort);
  }
}
