import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/**
 * The checkpointer's code, run in a worker thread with its own connection. better-sqlite3 is
 * synchronous: a checkpoint on the main thread would stop the event loop for its fsync (tens of
 * milliseconds on a busy disk), which showed up as the p99 of every request. PASSIVE never waits
 * for the server's connection and never makes it wait.
 */
const WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driver);
const db = new Database(workerData.path);
db.pragma("busy_timeout = 1000");
const timer = setInterval(() => {
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
    parentPort.postMessage("checkpoint");
  } catch {}
}, workerData.intervalMs);
parentPort.on("message", () => {
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

/** Checkpointer copies a SQLite file's write-ahead log into the database, off the main thread. */
export interface Checkpointer {
  /** checkpoints counts the checkpoints run so far. */
  readonly checkpoints: number;
  stop(): Promise<void>;
}

/**
 * startCheckpointer runs `PRAGMA wal_checkpoint(PASSIVE)` on the file every intervalMs in a worker
 * thread. The server's own connection has automatic checkpoints turned off.
 */
export function startCheckpointer(path: string, intervalMs: number): Checkpointer {
  const driver = createRequire(import.meta.url).resolve("better-sqlite3");
  const worker = new Worker(WORKER, { eval: true, workerData: { path, intervalMs, driver } });
  let checkpoints = 0;
  worker.on("message", () => checkpoints++);
  worker.on("error", () => undefined);
  worker.unref();
  let stopping: Promise<void> | undefined;
  return {
    get checkpoints() {
      return checkpoints;
    },
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        worker.once("exit", () => resolve());
        worker.postMessage("stop");
        // A worker stuck in a long checkpoint is not waited for.
        setTimeout(() => void worker.terminate().then(() => resolve()), 2_000).unref();
      });
      return stopping;
    },
  };
}
