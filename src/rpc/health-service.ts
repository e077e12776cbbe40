import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import type { HealthMonitor, HealthStatus } from "../health.js";

const toStatus = (s: HealthStatus) => (s === "serving" ? Status.SERVING : Status.NOT_SERVING);

/**
 * healthService is grpc.health.v1.Health: "" and every served service share one status, which is
 * NOT_SERVING while the database is unreachable or the server is shutting down.
 */
export function healthService(monitor: HealthMonitor, services: readonly string[]): ServiceImpl<typeof Health> {
  const known = new Set(["", ...services]);
  return {
    async check(req) {
      if (!known.has(req.service)) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      return { status: toStatus(await monitor.check()) };
    },
    async list() {
      const status = toStatus(await monitor.check());
      return { statuses: Object.fromEntries([...known].map((name) => [name, { status }])) };
    },
    async *watch(req, ctx) {
      if (!known.has(req.service)) {
        yield { status: Status.SERVICE_UNKNOWN };
        // The health protocol keeps this call open (the service might appear later; here it never
        // does): wait for the client to leave or the server to shut down.
        await new Promise<void>((resolve) => {
          if (ctx.signal.aborted) resolve();
          else ctx.signal.addEventListener("abort", () => resolve(), { once: true });
        });
        return;
      }
      const queue: HealthStatus[] = [];
      let wake: (() => void) | undefined;
      const off = monitor.onChange((s) => {
        queue.push(s);
        wake?.();
      });
      const onAbort = () => wake?.();
      ctx.signal.addEventListener("abort", onAbort);
      try {
        let last = monitor.status;
        yield { status: toStatus(last) };
        while (!ctx.signal.aborted) {
          const next = queue.shift();
          if (next === undefined) {
            await new Promise<void>((resolve) => (wake = resolve));
            wake = undefined;
            continue;
          }
          if (next !== last) {
            last = next;
            yield { status: toStatus(next) };
          }
        }
      } finally {
        off();
        ctx.signal.removeEventListener("abort", onAbort);
      }
    },
  };
}
