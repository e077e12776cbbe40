import type { Logger } from "pino";
import type { Database } from "./store/database.js";

/** HealthStatus is whether the server can serve: it cannot while the database is unreachable. */
export type HealthStatus = "serving" | "not_serving";

/** HealthMonitor probes the database and tells its listeners when the status changes. */
export interface HealthMonitor {
  readonly status: HealthStatus;
  /** onChange calls `listener` on every change until the returned function is called. */
  onChange(listener: (status: HealthStatus) => void): () => void;
  /** check probes now and returns the fresh status. */
  check(): Promise<HealthStatus>;
  /** stop ends probing and reports not_serving from then on (shutdown). */
  stop(): void;
}

/** HealthOptions tune the probe. */
export interface HealthOptions {
  intervalMs?: number;
  timeoutMs?: number;
}

/** createHealthMonitor probes the database with `SELECT 1` every intervalMs. */
export function createHealthMonitor(db: Database, log: Logger, options: HealthOptions = {}): HealthMonitor {
  const intervalMs = options.intervalMs ?? 2000;
  const timeoutMs = options.timeoutMs ?? 1500;
  let status: HealthStatus = "serving";
  let stopped = false;
  const listeners = new Set<(s: HealthStatus) => void>();

  const set = (next: HealthStatus) => {
    if (next === status) return;
    status = next;
    if (next === "not_serving") log.warn(stopped ? "health: NOT_SERVING (shutting down)" : "health: NOT_SERVING (database unreachable)");
    else log.info("health: SERVING");
    for (const l of listeners) l(next);
  };

  const probe = async (): Promise<HealthStatus> => {
    if (stopped) return "not_serving";
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        db.knex.raw("SELECT 1"),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("probe timed out")), timeoutMs);
        }),
      ]);
      if (!stopped) set("serving");
    } catch {
      set("not_serving");
    } finally {
      clearTimeout(timer);
    }
    return status;
  };

  const timer = setInterval(() => void probe(), intervalMs);
  timer.unref();

  return {
    get status() {
      return status;
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    check: probe,
    stop() {
      stopped = true;
      clearInterval(timer);
      set("not_serving");
    },
  };
}
