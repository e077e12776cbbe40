// Prometheus metrics (prom-client), served at /metrics (src/http/metrics.ts). Every metric is
// registered on a registry of the server's own, never prom-client's global one, so that several
// servers in one process (the tests) each count their own. Labels are bounded: an RPC's method
// (only served methods reach the policy), its protocol and code; a configured resource group; a
// configured chat endpoint ("other" for any other); a match outcome and reason; a fixed set of
// kinds. Never a key, a number, a code, a phone number, a chat or a value.
//
// What is counted as it happens comes in through small interfaces in the domain's words
// (AccessEvents, ChatEvents) and the serving policy (one interceptor, every path); what is a state
// (occupancy, queues, the database pool, the bus, health) is read when Prometheus scrapes.
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Bus } from "./bus.js";
import type { Clock } from "./clock.js";
import { chatEndpoints, derived, type ConfigSource } from "./config.js";
import type { AccessEvents, MatchCounted } from "./domain/access.js";
import type { AccessStore, GroupOccupancy } from "./domain/access-store.js";
import type { ChatEvents } from "./domain/chat/index.js";
import type { ChatStore } from "./domain/chat/store.js";
import type { QueueLength } from "./domain/chat/vocabulary.js";
import type { SweepCounts } from "./domain/sweeper.js";
import type { HealthStatus } from "./health.js";
import type { ReloadOutcome } from "./reload.js";
import { codeName, methodName } from "./rpc/observe.js";
import { protocolOf } from "./rpc/policy.js";
import type { LimitName } from "./rpc/rate-limit.js";
import { tapStream, type StreamTap } from "./rpc/tap.js";
import type { Database } from "./store/database.js";
import { isDeadlock, isDuplicateKey, isUnavailable } from "./store/errors.js";

/** RPC_BUCKETS are the unary latency buckets, in seconds: a millisecond to the default 10 s query timeout. */
const RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** ACQUIRE_BUCKETS are the database pool's acquire-time buckets, in seconds (the default acquire timeout is 5 s). */
const ACQUIRE_BUCKETS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5];

/** SCRAPE_READ_MS bounds the store reads of a scrape: a database that does not answer leaves their series out, never hangs the scrape. */
const SCRAPE_READ_MS = 2_000;

/** OTHER_ENDPOINT is the label of a chat endpoint no configuration names (a transfer's target, say). */
const OTHER_ENDPOINT = "other";

/** ObservedApp is what the scrape-time metrics read: the stores' occupancy and queues, the database pool, the bus. */
export interface ObservedApp {
  /** config is the configuration in effect: its groups and endpoints label the gauges, as of each scrape. */
  config: ConfigSource;
  clock: Clock;
  db: Database;
  bus: Bus;
  access: Pick<AccessStore, "occupancy">;
  chats: Pick<ChatStore, "queueLengths">;
}

/** Metrics are a server's metrics: its registry, the policy and event interfaces that count, and what is read at scrape time. */
export interface Metrics {
  readonly registry: Registry;
  /** policy is the serving policy's metrics interceptor (createHandler adds it after auth): calls, latency, open streams. */
  readonly policy: Interceptor;
  /** access counts allocations, exhausted groups, matches and lockouts (the access rules' AccessEvents). */
  readonly access: AccessEvents;
  /** chat counts messages and streams caught up (the chat rules' ChatEvents). */
  readonly chat: ChatEvents;
  /** swept counts one sweep and the rows it deleted, or (undefined) a sweep that failed. */
  swept(counts: SweepCounts | undefined): void;
  /** rateLimited counts a call refused by a rate limit (the rate limit policy's and the chat stream cap's refusals). */
  readonly rateLimited: (limit: LimitName) => void;
  /** reloaded counts a reload of the configuration by its outcome; `loadedAt` (ms) is when the configuration in effect was loaded, when it changed. */
  readonly reloaded: (outcome: ReloadOutcome, loadedAt?: number) => void;
  /** observe reads the app's occupancy, queues, database pool and bus at every scrape, and counts its query errors. */
  observe(app: ObservedApp): void;
  /** observeHealth reports the health monitor's status at every scrape. */
  observeHealth(health: { readonly status: HealthStatus }): void;
}


/** LIMITS are the limits a refusal is counted under (opengms_rate_limited_total). */
const LIMITS: readonly LimitName[] = ["peer", "key", "chat_messages", "streams_per_chat"];

/** createMetrics builds a server's metrics on a registry of its own, with Node's process metrics. */
export function createMetrics(): Metrics {
  const registry = new Registry();
  // Process CPU, memory, file descriptors, GC, and the event loop's lag (nodejs_eventloop_lag_seconds and its percentiles).
  collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const calls = new Counter({
    name: "opengms_rpc_calls_total",
    help: "RPCs ended, by method, protocol and code (streams when they end), on every path: connect, the lean path and the GMS HTTP routes.",
    labelNames: ["method", "protocol", "code"] as const,
    registers,
  });
  const latency = new Histogram({
    name: "opengms_rpc_duration_seconds",
    help: "Unary RPC latency in seconds, by method, protocol and code (streams are counted in opengms_rpc_calls_total and opengms_rpc_streams_open).",
    labelNames: ["method", "protocol", "code"] as const,
    buckets: RPC_BUCKETS,
    registers,
  });
  const streams = new Gauge({ name: "opengms_rpc_streams_open", help: "Server streams open, by method.", labelNames: ["method"] as const, registers });

  const allocations = new Counter({ name: "opengms_access_allocations_total", help: "Access numbers handed out, by resource group.", labelNames: ["group"] as const, registers });
  const refused = new Counter({
    name: "opengms_access_allocations_refused_total",
    help: "Allocations refused because the resource group had no free number, by group.",
    labelNames: ["group"] as const,
    registers,
  });
  const matches = new Counter({
    name: "opengms_access_matches_total",
    help: "Call matches, by outcome (matched, no_match, locked) and reason (no_reservation, code_mismatch, phone_mismatch; none otherwise).",
    labelNames: ["outcome", "reason"] as const,
    registers,
  });
  const lockouts = new Counter({ name: "opengms_access_code_lockouts_total", help: "Access numbers locked against code guessing (the wrong code that reached the limit).", registers });
  const messages = new Counter({ name: "opengms_chat_messages_total", help: "Chat messages added to transcripts.", registers });
  const catchUps = new Counter({
    name: "opengms_chat_stream_catchups_total",
    help: "Open chat streams found behind the store by the node's periodic look, and made to fetch the rest (an announcement lost or late: the bus).",
    registers,
  });
  const sweeps = new Counter({ name: "opengms_sweeper_runs_total", help: "Sweeper runs, by result (ok, failed).", labelNames: ["result"] as const, registers });
  const swept = new Counter({
    name: "opengms_sweeper_deleted_rows_total",
    help: "Expired rows the sweeper deleted, by kind (data, sessions, chats, access, request_ids).",
    labelNames: ["kind"] as const,
    registers,
  });
  for (const result of ["ok", "failed"]) sweeps.inc({ result }, 0);
  const limited = new Counter({
    name: "opengms_rate_limited_total",
    help: "Calls refused by a rate limit (RESOURCE_EXHAUSTED), by limit: peer, key, chat_messages, streams_per_chat.",
    labelNames: ["limit"] as const,
    registers,
  });
  for (const limit of LIMITS) limited.inc({ limit }, 0);
  const reloads = new Counter({
    name: "opengms_config_reloads_total",
    help: "Reloads of the configuration file (ReloadConfig, SIGHUP), by outcome: applied, refused (the file is not valid), failed (the store could not take its numbers).",
    labelNames: ["outcome"] as const,
    registers,
  });
  for (const outcome of ["applied", "refused", "failed"]) reloads.inc({ outcome }, 0);
  const loaded = new Gauge({
    name: "opengms_config_loaded_timestamp_seconds",
    help: "When the configuration in effect was loaded (the start, or the last reload applied), in Unix seconds.",
    registers,
  });
  loaded.set(Date.now() / 1000);

  const policy: Interceptor = (next) => async (req) => {
    const started = performance.now();
    const method = methodName(req.method);
    const protocol = protocolOf(req);
    let res: UnaryResponse | StreamResponse;
    try {
      res = await next(req);
    } catch (e) {
      ended(req.method, method, protocol, started, e);
      throw e;
    }
    if (!res.stream) {
      ended(req.method, method, protocol, started, undefined);
      return res;
    }
    streams.inc({ method });
    return tapStream(res, new StreamMetrics(streams, calls, method, protocol, req.signal));
  };
  const ended = (desc: DescMethod, method: string, protocol: string, started: number, error: unknown) => {
    const code = codeOf(error);
    calls.inc({ method, protocol, code });
    // A stream refused before its first message is a call that ended: no lifetime to measure.
    if (desc.methodKind === "unary" || desc.methodKind === "client_streaming") latency.observe({ method, protocol, code }, (performance.now() - started) / 1000);
  };

  return {
    registry,
    policy,
    access: {
      allocated: (group) => allocations.inc({ group }),
      exhausted: (group) => refused.inc({ group }),
      matched: (m: MatchCounted) => matches.inc({ outcome: m.outcome, reason: m.outcome === "no_match" ? m.reason : "" }),
      lockedOut: () => lockouts.inc(),
    },
    chat: { messageSent: () => messages.inc(), caughtUp: () => catchUps.inc(), streamRefused: () => limited.inc({ limit: "streams_per_chat" }) },
    rateLimited: (limit) => limited.inc({ limit }),
    reloaded: (outcome, loadedAt) => {
      reloads.inc({ outcome });
      if (loadedAt !== undefined) loaded.set(loadedAt / 1000);
    },
    swept(counts) {
      sweeps.inc({ result: counts === undefined ? "failed" : "ok" });
      if (counts === undefined) return;
      swept.inc({ kind: "data" }, counts.data);
      swept.inc({ kind: "sessions" }, counts.sessions);
      swept.inc({ kind: "chats" }, counts.chats);
      swept.inc({ kind: "access" }, counts.access);
      swept.inc({ kind: "request_ids" }, counts.requestIds);
    },
    observe: (app) => observeApp(registry, app),
    observeHealth(health) {
      new Gauge({
        name: "opengms_health_serving",
        help: "1 while the health monitor finds the database serving, 0 while it does not (calls needing it are refused UNAVAILABLE).",
        registers,
        collect() {
          this.set(health.status === "serving" ? 1 : 0);
        },
      });
    },
  };
}

/** codeOf is a call's code label: "ok", or the error's code as the logs spell it ("not_found"...). */
function codeOf(error: unknown): string {
  return codeName(error === undefined ? undefined : ConnectError.from(error).code);
}

/**
 * StreamMetrics sees a stream end: one open stream fewer, one call counted with its code. No work
 * per message. A stream whose handler ended because the call's signal aborted (the client gone, its
 * deadline passed) ended for that reason, not "ok": a chat stream's handler returns quietly then.
 */
class StreamMetrics implements StreamTap {
  constructor(
    private readonly streams: Gauge<"method">,
    private readonly calls: Counter<"method" | "protocol" | "code">,
    private readonly method: string,
    private readonly protocol: string,
    private readonly signal: AbortSignal,
  ) {}

  done(): void {
    const reason: unknown = this.signal.reason;
    this.end(!this.signal.aborted ? undefined : reason instanceof ConnectError ? reason : new ConnectError("the call was cancelled", Code.Canceled));
  }

  failed(e: unknown): unknown {
    this.end(e);
    return e;
  }

  private end(error: unknown): void {
    this.streams.dec({ method: this.method });
    this.calls.inc({ method: this.method, protocol: this.protocol, code: codeOf(error) });
  }
}

/** QUERY_ERROR_KINDS are the kinds a failed statement is counted under. */
type QueryErrorKind = "unavailable" | "deadlock" | "duplicate_key" | "other";

/** queryErrorKind sorts a failed statement's error: the database unreachable or timing out, a deadlock, a duplicate key, or other. */
function queryErrorKind(e: unknown): QueryErrorKind {
  if (isUnavailable(e)) return "unavailable";
  if (isDeadlock(e)) return "deadlock";
  if (isDuplicateKey(e)) return "duplicate_key";
  return "other";
}

/** TarnPool is what the metrics read of knex's connection pool (tarn). */
interface TarnPool {
  numUsed(): number;
  numFree(): number;
  numPendingAcquires(): number;
  on(event: "acquireRequest" | "acquireSuccess" | "acquireFail", listener: (eventId: number) => void): void;
}

/**
 * shared makes one read serve every metric a scrape collects from it: prom-client collects the
 * metrics of a scrape at once, and a read in flight is joined, not repeated.
 */
function shared<T>(read: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => {
    pending ??= read().finally(() => {
      pending = undefined;
    });
    return pending;
  };
}

/** bounded settles as `p` does, or rejects after `ms`. */
function bounded<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the store did not answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** observeApp registers the metrics read at scrape time, and counts the database's query errors and pool waits. */
function observeApp(registry: Registry, app: ObservedApp): void {
  const registers = [registry];
  const occupancy = shared(() => bounded(app.access.occupancy(app.clock.now()), SCRAPE_READ_MS));
  const queues = shared(() => bounded(app.chats.queueLengths(app.clock.now()), SCRAPE_READ_MS));
  // The configuration in effect at each scrape: a reload adds and removes groups and endpoints.
  const configured = derived(app.config, (c) => new Set(Object.keys(c.resources)));
  const endpoints = derived(app.config, chatEndpoints);

  /** groups is the occupancy of the configured groups (a group removed from the configuration keeps its retired numbers in the store). */
  const groups = async (): Promise<GroupOccupancy[] | undefined> => {
    try {
      return (await occupancy()).filter((g) => configured().has(g.group));
    } catch {
      return undefined;
    }
  };
  new Gauge({
    name: "opengms_access_numbers",
    help: "Access numbers by resource group and state (reserved, cooling_down, free, retired), read from the store at scrape time.",
    labelNames: ["group", "state"] as const,
    registers,
    async collect() {
      this.reset();
      for (const g of (await groups()) ?? []) {
        this.set({ group: g.group, state: "reserved" }, g.reserved);
        this.set({ group: g.group, state: "cooling_down" }, g.coolingDown);
        this.set({ group: g.group, state: "free" }, g.free);
        this.set({ group: g.group, state: "retired" }, g.retired);
      }
    },
  });
  new Gauge({
    name: "opengms_access_pool_size",
    help: "Access numbers a resource group may hand out (configured, not retired).",
    labelNames: ["group"] as const,
    registers,
    async collect() {
      this.reset();
      for (const g of (await groups()) ?? []) this.set({ group: g.group }, g.reserved + g.coolingDown + g.free);
    },
  });
  new Gauge({
    name: "opengms_access_reservations",
    help: "Live reservations by resource group (a shared group's number holds several).",
    labelNames: ["group"] as const,
    registers,
    async collect() {
      this.reset();
      for (const g of (await groups()) ?? []) this.set({ group: g.group }, g.reservations);
    },
  });

  /** byEndpoint folds the queues of endpoints no configuration names into "other". */
  const byEndpoint = async (): Promise<Map<string, { waiting: number; oldestQueuedAt: number }> | undefined> => {
    let lengths: QueueLength[];
    try {
      lengths = await queues();
    } catch {
      return undefined;
    }
    const folded = new Map<string, { waiting: number; oldestQueuedAt: number }>();
    for (const q of lengths) {
      const endpoint = endpoints().has(q.endpoint) ? q.endpoint : OTHER_ENDPOINT;
      const was = folded.get(endpoint);
      folded.set(endpoint, was === undefined ? { waiting: q.waiting, oldestQueuedAt: q.oldestQueuedAt } : { waiting: was.waiting + q.waiting, oldestQueuedAt: Math.min(was.oldestQueuedAt, q.oldestQueuedAt) });
    }
    return folded;
  };
  /** eachEndpoint pairs every configured endpoint with its queue (none when nothing waits), then "other" when something waits there. */
  const eachEndpoint = function* (folded: Map<string, { waiting: number; oldestQueuedAt: number }>) {
    for (const endpoint of endpoints()) yield [endpoint, folded.get(endpoint)] as const;
    const other = folded.get(OTHER_ENDPOINT);
    if (other !== undefined) yield [OTHER_ENDPOINT, other] as const;
  };
  new Gauge({
    name: "opengms_chat_queue_waiting_chats",
    help: "Chats waiting for an agent, by endpoint (0 for a configured endpoint with none), read from the store at scrape time.",
    labelNames: ["endpoint"] as const,
    registers,
    async collect() {
      this.reset();
      const folded = await byEndpoint();
      if (folded === undefined) return;
      for (const [endpoint, q] of eachEndpoint(folded)) this.set({ endpoint }, q?.waiting ?? 0);
    },
  });
  new Gauge({
    name: "opengms_chat_queue_oldest_wait_seconds",
    help: "How long the oldest chat waiting on an endpoint has waited, in seconds (0 with none waiting).",
    labelNames: ["endpoint"] as const,
    registers,
    async collect() {
      this.reset();
      const folded = await byEndpoint();
      if (folded === undefined) return;
      const now = app.clock.now();
      const wait = (q: { oldestQueuedAt: number } | undefined) => (q === undefined ? 0 : Math.max(0, now - q.oldestQueuedAt) / 1000);
      for (const [endpoint, q] of eachEndpoint(folded)) this.set({ endpoint }, wait(q));
    },
  });

  observeDatabase(registry, app.db);

  new Gauge({
    name: "opengms_bus_connected",
    help: "1 while the bus reaches the other nodes (Redis connected both ways; always 1 on one node without Redis), else 0.",
    registers,
    collect() {
      this.set(app.bus.connected() ? 1 : 0);
    },
  });
}

/** observeDatabase reads knex's pool at scrape time, times its acquires and counts its failed statements by kind. */
function observeDatabase(registry: Registry, db: Database): void {
  const registers = [registry];
  const errors = new Counter({
    name: "opengms_db_query_errors_total",
    help: "Failed database statements, by kind (unavailable: unreachable, lost or timed out; deadlock; duplicate_key; other).",
    labelNames: ["kind"] as const,
    registers,
  });
  for (const kind of ["unavailable", "deadlock", "duplicate_key", "other"]) errors.inc({ kind }, 0);
  db.knex.on("query-error", (e: unknown) => errors.inc({ kind: queryErrorKind(e) }));

  const pool = (db.knex.client as { pool?: TarnPool }).pool;
  if (pool === undefined) return;
  const acquire = new Histogram({ name: "opengms_db_pool_acquire_seconds", help: "Time to get a pooled database connection, in seconds.", buckets: ACQUIRE_BUCKETS, registers });
  const acquireFailures = new Counter({ name: "opengms_db_pool_acquire_failures_total", help: "Pooled connections not got (the acquire timeout, or the database unreachable).", registers });
  const asked = new Map<number, number>();
  pool.on("acquireRequest", (id) => asked.set(id, performance.now()));
  pool.on("acquireSuccess", (id) => {
    const at = asked.get(id);
    asked.delete(id);
    if (at !== undefined) acquire.observe((performance.now() - at) / 1000);
  });
  pool.on("acquireFail", (id) => {
    asked.delete(id);
    acquireFailures.inc();
  });
  new Gauge({
    name: "opengms_db_pool_connections",
    help: "Pooled database connections, by state (used, free).",
    labelNames: ["state"] as const,
    registers,
    collect() {
      this.set({ state: "used" }, pool.numUsed());
      this.set({ state: "free" }, pool.numFree());
    },
  });
  new Gauge({
    name: "opengms_db_pool_waiting",
    help: "Callers waiting for a pooled database connection.",
    registers,
    collect() {
      this.set(pool.numPendingAcquires());
    },
  });
}
