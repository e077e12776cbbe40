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
  /** intervalMs is the pause between probes while serving (default 2 s). */
  intervalMs?: number;
  /** downIntervalMs is the pause between probes while not serving, so calls resume soon after the database does (default 250 ms). */
  downIntervalMs?: number;
  /** timeoutMs is how long a probe may take before the database counts as unresponsive (default 1.5 s). */
  timeoutMs?: number;
}

/**
 * createHealthMonitor probes the database with `SELECT 1`: every intervalMs while it answers, every
 * downIntervalMs while it does not; one probe at a time, on a connection of its own (Database.ping:
 * a pool busy with calls is not a database down). A probe unanswered within timeoutMs (a frozen
 * database, a network black hole) counts as a failure, as a refused connection does; its statement
 * is bounded by the same time (on MySQL its connection is then closed).
 */
export function createHealthMonitor(db: Database, log: Logger, options: HealthOptions = {}): HealthMonitor {
  const intervalMs = options.intervalMs ?? 2000;
  const downIntervalMs = options.downIntervalMs ?? 250;
  const timeoutMs = options.timeoutMs ?? 1500;
  let status: HealthStatus = "serving";
  let stopped = false;
  let running: Promise<HealthStatus> | undefined;
  let next: NodeJS.Timeout | undefined;
  const listeners = new Set<(s: HealthStatus) => void>();

  const set = (to: HealthStatus) => {
    if (to === status) return;
    status = to;
    if (to === "not_serving") log.warn(stopped ? "health: NOT_SERVING (shutting down)" : "health: NOT_SERVING (database unreachable or unresponsive)");
    else log.info("health: SERVING");
    for (const l of listeners) l(to);
  };

  const probeOnce = async (): Promise<HealthStatus> => {
    if (stopped) return "not_serving";
    try {
      await db.ping(timeoutMs);
      if (!stopped) set("serving");
    } catch {
      // Why is not logged here: the failing calls log it, described without values.
      set("not_serving");
    }
    return status;
  };

  /** probe runs one probe, or joins the one running, and schedules the next. */
  const probe = (): Promise<HealthStatus> => {
    running ??= probeOnce().finally(() => {
      running = undefined;
      clearTimeout(next);
      if (stopped) return;
      next = setTimeout(() => void probe(), status === "serving" ? intervalMs : downIntervalMs);
      next.unref();
    });
    return running;
  };

  next = setTimeout(() => void probe(), intervalMs);
  next.unref();

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
      clearTimeout(next);
      set("not_serving");
    },
  };
}
