// bench/clock.ts: the fast clock a benchmark and the server processes it starts share.
import type { Clock } from "../src/clock.js";

/**
 * scaledClock runs `speed` times faster than real time from `anchor` (epoch ms): now = anchor +
 * (Date.now() - anchor) × speed. Processes given the same anchor and speed agree on the time, so a
 * benchmark and a server process it started can share a fast clock (GMS_BENCH_CLOCK=anchor:speed).
 * Only rows age faster: timers wait real time, so background work (the idle watch, the stream
 * watch) keeps its production pace instead of adding `speed` times its load to what is measured.
 */
export function scaledClock(anchor: number, speed: number): Clock {
  return {
    now: () => Math.floor(anchor + (Date.now() - anchor) * speed),
    setTimer(fn, ms) {
      const t = setTimeout(fn, Math.max(0, ms));
      t.unref();
      return () => clearTimeout(t);
    },
  };
}

/** clockFromEnv reads GMS_BENCH_CLOCK ("anchor:speed"); undefined when unset (the system clock). */
export function clockFromEnv(): Clock | undefined {
  const raw = process.env["GMS_BENCH_CLOCK"];
  if (raw === undefined || raw === "") return undefined;
  const [anchor, speed] = raw.split(":").map(Number);
  if (!Number.isFinite(anchor) || !Number.isFinite(speed) || speed === undefined || speed <= 0) throw new Error(`GMS_BENCH_CLOCK must be "anchor:speed", not "${raw}"`);
  return scaledClock(anchor as number, speed);
}
