// bench/node-process.ts is an opengms server process for bench/nodes.ts: what `src/main.ts serve`
// does (configuration file, database, startServer), plus answers to its parent over IPC, so the
// parent can measure a server that does not share its process. Run with --expose-gc.
import { pino } from "pino";
import { loadConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { openDatabase } from "../src/store/database.js";

/** NodeRequest is what the parent asks, by id. */
export type NodeRequest = { id: number; type: "stats"; gc: boolean } | { id: number; type: "stop" };

/** NodeStats is the answer to "stats": this process's memory (after a full GC when asked) and its bus. */
export interface NodeStats {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** listeners is the bus's live subscriptions: every open stream and waiting call holds one. */
  listeners: number;
}

/** NodeMessage is what this process tells its parent. */
export type NodeMessage = { type: "ready"; url: string } | { type: "reply"; id: number; stats?: NodeStats };

const send = (m: NodeMessage) => process.send?.(m);

const config = loadConfig({ path: process.argv[2] });
const log = pino({ level: config.log.level, base: { service: "opengms-bench-node" } });
// The parent migrated the database before starting its nodes.
const db = await openDatabase(config.database.url, { migrate: false });
const server = await startServer({ config, db, log });
const gc = (globalThis as { gc?: () => void }).gc;

process.on("message", (m: NodeRequest) => {
  if (m.type === "stop") {
    void server.shutdown().finally(() => {
      send({ type: "reply", id: m.id });
      process.exit(0);
    });
    return;
  }
  if (m.gc) {
    if (gc === undefined) throw new Error("run this process with --expose-gc");
    // Twice: the first full collection's finalizers free more for the second.
    gc();
    gc();
  }
  const mem = process.memoryUsage();
  send({ type: "reply", id: m.id, stats: { rss: mem.rss, heapUsed: mem.heapUsed, external: mem.external, arrayBuffers: mem.arrayBuffers, listeners: server.app.bus.listenerCount() } });
});
// The parent gone (even killed), this process goes too.
process.on("disconnect", () => process.exit(0));
send({ type: "ready", url: server.url });
