// bench/chat.ts measures chat delivery end to end, customer SendMessage → the agent's Subscribe
// stream, with 1,000 open chat streams and 200 messages/s, beside a bare connect-node echo: the
// same RPCs (ChatService.SendMessage → AgentService.Subscribe) served through the same listen() and
// interceptor stack, with the domain replaced by an in-memory map from chat to open stream.
import { randomBytes, randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client, type ConnectRouter, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createValidateInterceptor } from "@connectrpc/validate";
import type { Histogram } from "hdr-histogram-js";
import { pino, type Logger } from "pino";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatEventType, type ChatEvent, type ChatEventSchema } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { systemClock } from "../src/clock.js";
import { parseConfig, type Config } from "../src/config.js";
import { listen, type RequestHandler } from "../src/listen.js";
import { createAuthInterceptor, type Access } from "../src/rpc/auth.js";
import { createCallTracker, createErrorInterceptor, createLogInterceptor } from "../src/rpc/observe.js";
import { createShutdownInterceptor } from "../src/rpc/shutdown.js";
import { startServer, type RunningServer } from "../src/server.js";
import { openDatabase, redactUrl, type Database, type Dialect } from "../src/store/database.js";
import { bearer, envInt, grpcTransports, median, MYSQL_URL, mysqlVersion, newHistogram, pool, Tracker, type BenchContext, type BenchModule, type Report, type Row } from "./lib.js";

/** STREAMS is the number of open chats, each with its agent's stream open (GMS_BENCH_CHAT_STREAMS). */
const STREAMS = envInt("GMS_BENCH_CHAT_STREAMS", 1000);
/** RATE is the customers' messages per second, all chats together (GMS_BENCH_CHAT_RATE). */
const RATE = envInt("GMS_BENCH_CHAT_RATE", 200);
/** MEASURE_SECONDS is how long each subject is measured, split into the shared rounds (GMS_BENCH_CHAT_SECONDS). */
const MEASURE_SECONDS = envInt("GMS_BENCH_CHAT_SECONDS", 21);
/** The streams are spread over this many HTTP/2 connections (agent desktops behind a few gateways). */
const STREAM_CONNECTIONS = 4;
/** The customers' sends go over this many HTTP/2 connections. */
const SENDER_CONNECTIONS = 2;
/** SETUP_CONCURRENCY is how many setup calls (RequestChat, AcceptChat, Subscribe) run at once. */
const SETUP_CONCURRENCY = 32;
/** The targets: the chat's latency at most these multiples of the baseline's. */
const TARGET_P50 = 3;
const TARGET_P99 = 5;

const AGENT_KEY = `bench-agent-${randomBytes(12).toString("hex")}`;
const ENDPOINT = "bench";

const BASELINE = "connect-node echo (baseline)";
const CHAT_P50 = "chat, p50 vs baseline";
const CHAT_P99 = "chat, p99 vs baseline";

/** serverConfig is the configuration both servers run with: one agent key, customers without a key. */
function serverConfig(): Config {
  return parseConfig(
    {
      server: { host: "127.0.0.1", port: 0 },
      auth: { api_keys: [{ name: "bench-agent", key: AGENT_KEY, roles: ["agent"] }], public_roles: ["app"] },
      services: { bench: { service: "request-chat", endpoint: ENDPOINT, ttl: 24 * 3600 } },
    },
    "benchmark configuration",
  );
}

/**
 * Subject is one side of the comparison. Its streams are opened for each of its rounds and closed
 * after it, so neither side's open streams (and their timers) run while the other is measured.
 */
interface Subject {
  name: string;
  tracker: Tracker;
  /** openStreams opens one stream per chat and resolves once every one is registered on the server. */
  openStreams(): Promise<void>;
  /** closeStreams cancels the streams and resolves once the server has let go of them. */
  closeStreams(): Promise<void>;
  /** send sends `text` as a customer message in chat number `i`. */
  send(i: number, text: string): Promise<unknown>;
  /** close stops what the subject started beside the streams. */
  close(): Promise<void>;
}

/**
 * StreamSet opens one stream per chat, each consumed in the background: messages go to the tracker
 * by their text, and `seen` is each stream's last position. A stream counts as open once it has
 * delivered its first event, the replay of the chat's last one.
 */
function streamSet(tracker: Tracker, open: (i: number, signal: AbortSignal) => AsyncIterable<ChatEvent>, failures: unknown[]) {
  const seen: bigint[] = [];
  let stop = new AbortController();
  let running: Promise<void>[] = [];
  return {
    seen,
    async open() {
      stop = new AbortController();
      // One signal for every stream of the set: its listeners are the streams, not a leak.
      setMaxListeners(0, stop.signal);
      const { signal } = stop;
      running = [];
      await pool(STREAMS, SETUP_CONCURRENCY, (i) => {
        let ready: () => void = () => undefined;
        const first = new Promise<void>((resolve) => (ready = resolve));
        running.push(
          (async () => {
            try {
              let replay = true;
              for await (const e of open(i, signal)) {
                seen[i] = e.position;
                ready();
                // The first event is the replay of one seen before: not a message of this round.
                if (e.type === ChatEventType.MESSAGE && !replay) tracker.arrived(e.text);
                replay = false;
              }
            } catch (e) {
              if (!signal.aborted) failures.push(e);
            } finally {
              ready();
            }
          })(),
        );
        return first;
      });
      if (failures.length > 0) throw new Error(`opening the streams failed: ${String(failures[0])}`);
    },
    async close() {
      stop.abort();
      await Promise.all(running);
    },
  };
}

/** settle waits (bounded) until `done` holds: the server letting go of cancelled streams. */
async function settle(what: string, done: () => boolean): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * chatSubject makes STREAMS real chats on the opengms server, each requested by a customer and
 * accepted by the agent, whose Subscribe streams are the ones measured. The caller shuts the server
 * down.
 */
async function chatSubject(server: RunningServer, failures: unknown[]): Promise<Subject> {
  const tracker = new Tracker();
  const customers = grpcTransports(server.url, SENDER_CONNECTIONS).map((t) => createClient(ChatService, t));
  const agents = grpcTransports(server.url, STREAM_CONNECTIONS, [bearer(AGENT_KEY)]).map((t) => createClient(AgentService, t));
  const chats = await pool(STREAMS, SETUP_CONCURRENCY, (i) => customers[i % SENDER_CONNECTIONS].requestChat({ service: "bench", nickname: `customer ${i}` }));
  const keys = new Map(chats.map((c) => [c.chatId, c.secureKey]));
  const accepted = await pool(STREAMS, SETUP_CONCURRENCY, (i) => agents[i % STREAM_CONNECTIONS].acceptChat({ endpoint: ENDPOINT, nickname: `agent ${i}`, waitSeconds: 0 }));
  if (new Set(accepted.map((a) => a.chatId)).size !== STREAMS) throw new Error("AcceptChat handed out a chat twice");
  const chatIds = accepted.map((a) => a.chatId);
  // Each stream resumes from the last event it saw (at first the agent's PARTICIPANT_JOINED):
  // that replay proves the stream is registered.
  const streams = streamSet(tracker, (i, signal) => agents[i % STREAM_CONNECTIONS].subscribe({ chatId: chatIds[i], fromPosition: streams.seen[i] ?? 1n }, { signal }), failures);
  accepted.forEach((a, i) => (streams.seen[i] = a.nextPosition - 1n));
  const bus = server.app.bus;
  const idle = bus.listenerCount();
  return {
    name: "chat",
    tracker,
    openStreams: () => streams.open(),
    async closeStreams() {
      await streams.close();
      await settle("the chat server to let go of the streams", () => bus.listenerCount() === idle);
    },
    send: (i, text) => customers[i % SENDER_CONNECTIONS].sendMessage({ chatId: chatIds[i], secureKey: keys.get(chatIds[i]) ?? "", text }),
    close: () => Promise.resolve(),
  };
}

/** Echo is the baseline's service: ChatService.SendMessage hands the message to the chat's open stream. */
interface Echo {
  routes(router: ConnectRouter): void;
  openStreams(): number;
}

/**
 * echo hands ChatService.SendMessage to the chat's open AgentService.Subscribe stream, kept in a
 * map: nothing is stored or looked up, which is all the chat adds.
 */
function echo(): Echo {
  const streams = new Map<string, (e: MessageInitShape<typeof ChatEventSchema>) => void>();
  const positions = new Map<string, bigint>();
  return {
    openStreams: () => streams.size,
    routes(router) {
      router.service(ChatService, {
        sendMessage(req) {
          const position = (positions.get(req.chatId) ?? 1n) + 1n;
          positions.set(req.chatId, position);
          streams.get(req.chatId)?.({ position, type: ChatEventType.MESSAGE, text: req.text, messageType: req.messageType, clientMessageId: req.clientMessageId });
          return { position };
        },
      });
      router.service(AgentService, {
        async *subscribe(req, ctx: HandlerContext) {
          const queue: MessageInitShape<typeof ChatEventSchema>[] = [{ position: positions.get(req.chatId) ?? 1n, type: ChatEventType.PARTICIPANT_JOINED }];
          let wake: (() => void) | undefined;
          const push = (e: MessageInitShape<typeof ChatEventSchema>) => {
            queue.push(e);
            wake?.();
          };
          streams.set(req.chatId, push);
          const onAbort = () => wake?.();
          ctx.signal.addEventListener("abort", onAbort);
          try {
            while (!ctx.signal.aborted) {
              const e = queue.shift();
              if (e !== undefined) {
                yield e;
                continue;
              }
              await new Promise<void>((resolve) => (wake = resolve));
              wake = undefined;
            }
          } finally {
            if (streams.get(req.chatId) === push) streams.delete(req.chatId);
            ctx.signal.removeEventListener("abort", onAbort);
          }
        },
      });
    },
  };
}

/**
 * baselineSubject serves the echo on a second port through the same listen() and the same
 * interceptors as createHandler in src/server.ts (log, auth, shutdown, validation, errors), with
 * the same clients, connections and number of streams.
 */
async function baselineSubject(config: Config, log: Logger, failures: unknown[]): Promise<Subject> {
  const shutdown = new AbortController();
  setMaxListeners(0, shutdown.signal);
  const policy = new Map<string, Access>([
    [`/${ChatService.typeName}/${ChatService.method.sendMessage.name}`, ["app"]],
    [`/${AgentService.typeName}/${AgentService.method.subscribe.name}`, ["agent"]],
  ]);
  const interceptors: Interceptor[] = [
    createLogInterceptor(log, createCallTracker()),
    createAuthInterceptor({ apiKeys: config.auth.api_keys, publicRoles: config.auth.public_roles, policy }),
    createShutdownInterceptor(shutdown.signal),
    createValidateInterceptor(),
    createErrorInterceptor(log, systemClock),
  ];
  const service = echo();
  const handler = connectNodeAdapter({
    routes: (router) => service.routes(router),
    interceptors,
    // As createHandler does: compression is opt-in.
    compressMinBytes: config.server.compress_min_bytes ?? Number.POSITIVE_INFINITY,
  }) as RequestHandler;
  const listener = await listen(handler, { host: "127.0.0.1", port: 0 });
  const url = `http://127.0.0.1:${listener.port}`;
  const tracker = new Tracker();
  const customers = grpcTransports(url, SENDER_CONNECTIONS).map((t) => createClient(ChatService, t));
  const agents: Client<typeof AgentService>[] = grpcTransports(url, STREAM_CONNECTIONS, [bearer(AGENT_KEY)]).map((t) => createClient(AgentService, t));
  const chatIds = Array.from({ length: STREAMS }, () => randomUUID());
  const streams = streamSet(tracker, (i, signal) => agents[i % STREAM_CONNECTIONS].subscribe({ chatId: chatIds[i], fromPosition: 1n }, { signal }), failures);
  return {
    name: "baseline",
    tracker,
    openStreams: () => streams.open(),
    async closeStreams() {
      await streams.close();
      await settle("the echo server to let go of the streams", () => service.openStreams() === 0);
    },
    send: (i, text) => customers[i % SENDER_CONNECTIONS].sendMessage({ chatId: chatIds[i], secureKey: "bench", text }),
    async close() {
      await listener.stopAccepting();
      shutdown.abort();
      await listener.closeConnections(1000);
    },
  };
}

/**
 * drive sends RATE messages a second for `ms`, open loop (on schedule, whatever the replies), each
 * to the next chat in turn, then waits for every message to arrive. It returns the delivered rate
 * and this process's CPU time per message (client and server together: they share the process).
 */
async function drive(subject: Subject, ms: number, histogram: Histogram | undefined, seq: { n: number }, failures: unknown[]): Promise<{ rate: number; cpuUsPerOp: number }> {
  const { tracker } = subject;
  tracker.histogram = histogram;
  const deliveredBefore = tracker.delivered;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  let sent = 0;
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const elapsed = performance.now() - t0;
      const due = Math.min(Math.floor((elapsed * RATE) / 1000), Math.floor((ms * RATE) / 1000));
      for (; sent < due; sent++) {
        const n = seq.n++;
        const text = `m${n}`;
        tracker.sent(text);
        subject.send(n % STREAMS, text).catch((e: unknown) => failures.push(e));
      }
      if (elapsed >= ms) {
        clearInterval(tick);
        resolve();
      }
    }, 1);
  });
  const deadline = performance.now() + 10_000;
  while (tracker.inFlight > 0 && failures.length === 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  if (failures.length > 0) throw new Error(`${subject.name}: a call failed: ${String(failures[0])}`);
  if (tracker.inFlight > 0) throw new Error(`${subject.name}: ${tracker.inFlight} messages never arrived`);
  if (tracker.unexpected > 0) throw new Error(`${subject.name}: ${tracker.unexpected} messages arrived that were not sent`);
  tracker.histogram = undefined;
  const cpu = process.cpuUsage(cpu0);
  const delivered = tracker.delivered - deliveredBefore;
  return { rate: delivered / ((performance.now() - t0) / 1000), cpuUsPerOp: (cpu.user + cpu.system) / delivered };
}

/** Database is opened fresh for a run and removed after it. */
interface RunDatabase {
  db: Database;
  label: string;
  drop(): Promise<void>;
}

async function freshDatabase(dialect: Dialect): Promise<RunDatabase> {
  if (dialect === "sqlite") {
    const dir = mkdtempSync(join(tmpdir(), "opengms-bench-"));
    const db = await openDatabase(`sqlite:${join(dir, "gms.db")}`);
    return { db, label: "SQLite (WAL)", drop: () => Promise.resolve(rmSync(dir, { recursive: true, force: true })) };
  }
  const name = `gms_bench_${randomBytes(4).toString("hex")}`;
  const db = await openDatabase(`${MYSQL_URL}/${name}`);
  const version = await mysqlVersion(db.knex);
  const admin = await openDatabase(`${MYSQL_URL}/${name}`, { migrate: false, poolMax: 1 });
  return {
    db,
    label: `MySQL (${version ?? "?"})`,
    async drop() {
      await admin.knex.raw(`DROP DATABASE IF EXISTS \`${name}\``);
      await admin.close();
    },
  };
}

/** warmupPerRound is how long each round runs unmeasured after its streams open (at least 2 s). */
const warmupPerRound = (ctx: BenchContext) => Math.max(ctx.options.warmupMs, 2000);

/** Measured is one dialect's comparison. */
interface Measured {
  rows: Row[];
  detail: Record<string, unknown>;
}

const ms = (h: Histogram, p: number) => h.getValueAtPercentile(p) / 1000;

async function measure(ctx: BenchContext, dialect: Dialect): Promise<Measured> {
  const log = pino({ level: process.env["GMS_BENCH_LOG"] ?? "silent" });
  const config = serverConfig();
  const store = await freshDatabase(dialect);
  const scenario = `${STREAMS} streams, ${RATE} msg/s: ${store.label}`;
  const say = (line: string) => ctx.log(`${dialect}: ${line}`);
  const failures: unknown[] = [];
  const subjects: Subject[] = [];
  let server: RunningServer | undefined;
  try {
    subjects.push(await baselineSubject(config, log, failures));
    say("baseline: echo server up");
    server = await startServer({ config, db: store.db, log, sweep: false });
    subjects.push(await chatSubject(server, failures));
    say(`chat: ${STREAMS} chats requested and accepted`);

    const seq = { n: 0 };
    const warmupMs = warmupPerRound(ctx);
    const rounds = Math.max(1, ctx.options.rounds);
    const roundMs = (MEASURE_SECONDS * 1000) / rounds;
    const histograms = subjects.map(() => newHistogram());
    const rates: number[][] = subjects.map(() => []);
    const cpus: number[][] = subjects.map(() => []);
    for (let round = 0; round < rounds; round++) {
      // Alternate the order, so neither always runs right after the other's writes.
      const order = round % 2 === 0 ? [0, 1] : [1, 0];
      for (const i of order) {
        const subject = subjects[i];
        await subject.openStreams();
        await drive(subject, warmupMs, undefined, seq, failures);
        const { rate, cpuUsPerOp } = await drive(subject, roundMs, histograms[i], seq, failures);
        await subject.closeStreams();
        rates[i].push(rate);
        cpus[i].push(cpuUsPerOp);
        say(`round ${round + 1}/${rounds} ${subject.name}: ${Math.round(rate)} msg/s delivered, p50 ${ms(histograms[i], 50).toFixed(2)} ms, p99 ${ms(histograms[i], 99).toFixed(2)} ms so far`);
      }
    }
    const [base, chat] = histograms;
    const p50x = ms(chat, 50) / ms(base, 50);
    const p99x = ms(chat, 99) / ms(base, 99);
    say(`chat p50 = ${p50x.toFixed(2)}x baseline (target <= ${TARGET_P50}x), p99 = ${p99x.toFixed(2)}x (target <= ${TARGET_P99}x)`);
    const row = (subject: string, h: Histogram, r: number[], cpu: number[]): Row => ({
      scenario,
      subject,
      opsPerSec: median(r),
      cpuUsPerOp: median(cpu),
      p50Ms: ms(h, 50),
      p99Ms: ms(h, 99),
      roundsOpsPerSec: r.map((x) => Math.round(x * 10) / 10),
    });
    // The table's ratio is "higher is better": baseline latency over chat latency, so a chat p50
    // at most 3x the baseline's is a ratio of at least 1/3.
    const rows: Row[] = [
      row(BASELINE, base, rates[0], cpus[0]),
      { ...row(CHAT_P50, chat, rates[1], cpus[1]), ratio: 1 / p50x, target: 1 / TARGET_P50, pass: p50x <= TARGET_P50 },
      { ...row(CHAT_P99, chat, rates[1], cpus[1]), ratio: 1 / p99x, target: 1 / TARGET_P99, pass: p99x <= TARGET_P99 },
    ];
    const summary = (h: Histogram) => ({ count: h.totalCount, p50Ms: ms(h, 50), p90Ms: ms(h, 90), p99Ms: ms(h, 99), p999Ms: ms(h, 99.9), maxMs: h.maxValue / 1000 });
    const detail = { database: store.label, baseline: summary(base), chat: summary(chat), p50Multiple: p50x, p99Multiple: p99x };
    base.destroy();
    chat.destroy();
    return { rows, detail };
  } finally {
    for (const s of subjects) await s.close().catch((e: unknown) => say(`closing ${s.name}: ${String(e)}`));
    // Shutting the server down closes its database too.
    if (server !== undefined) await server.shutdown();
    else await store.db.close();
    await store.drop().catch((e: unknown) => say(`could not drop the database: ${String(e)}`));
  }
}

async function run(ctx: BenchContext): Promise<Report> {
  const rows: Row[] = [];
  const details: Record<string, unknown> = {};
  for (const dialect of ["mysql", "sqlite"] as const) {
    if (!ctx.wants(dialect)) continue;
    const m = await measure(ctx, dialect);
    rows.push(...m.rows);
    details[dialect] = m.detail;
  }
  return {
    module: "chat",
    title:
      `Chat delivery, customer SendMessage → agent's Subscribe, ${STREAMS} open streams, ${RATE} msg/s open loop, ` +
      `${MEASURE_SECONDS} s per subject in ${ctx.options.rounds} alternating rounds (each subject's ${STREAMS} streams open only during its own rounds): ops/s = messages delivered per second; cpu = this process (clients and servers) per message; ` +
      `ratio = baseline latency / chat latency at that row's percentile (target: chat p50 <= ${TARGET_P50}x, p99 <= ${TARGET_P99}x the baseline's)`,
    rows,
    environment: {
      node: process.version,
      mysqlUrl: redactUrl(MYSQL_URL),
      options: ctx.options,
      streams: STREAMS,
      rate: RATE,
      measureSeconds: MEASURE_SECONDS,
      warmupMsPerRound: warmupPerRound(ctx),
      streamConnections: STREAM_CONNECTIONS,
      senderConnections: SENDER_CONNECTIONS,
      baseline:
        "ChatService.SendMessage → AgentService.Subscribe on a second server: same listen(), same interceptors (log, auth, shutdown, protovalidate, errors), same clients and connections; the handler hands the message to the chat's open stream through a Map",
      chat: "startServer on a fresh database: RequestChat and AcceptChat per chat, the agent's Subscribe open; customers' SendMessage over gRPC, latency until the MESSAGE event arrives on the agent's stream",
      latency: "from just before the SendMessage call to the event's arrival at the agent's client; client and servers share this process and the machine's cores",
      results: details,
    },
  };
}

/** chatBench is the chat module of the benchmark. */
const chatBench: BenchModule = { run };
export default chatBench;
