// bench/nodes.ts measures opengms as separate server processes (bench/node-process.ts) on MySQL and
// Redis: the memory an idle open stream costs, the CPU of customers polling every second, and chat
// latency from a customer on node A to an agent's stream on node B beside the same on one node.
import { randomBytes } from "node:crypto";
import { setMaxListeners } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { Histogram } from "hdr-histogram-js";
import { Redis } from "ioredis";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatEventType } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService, RefreshRequestSchema, RefreshResponseSchema, type RequestChatResponse } from "../gen/gms/v1/chat_pb.js";
import { openDatabase, redactUrl } from "../src/store/database.js";
import { bearer, envInt, grpcTransports, median, MYSQL_URL, newHistogram, pool, Tracker, type BenchContext, type BenchModule, type Report, type Row } from "./lib.js";
import { createGrpcLoadClient } from "./grpc-load.js";
import { cpuMeter, mysqldPid, rssOf, sleep, startServerProcess, type ServerProcess } from "./server-process.js";

/** REDIS_URL is the Redis the nodes announce on (GMS_BENCH_REDIS_URL). */
const REDIS_URL = process.env["GMS_BENCH_REDIS_URL"] ?? "redis://127.0.0.1:6379";

/** IDLE_STREAMS is the number of customers' open Subscribe streams whose memory is measured (GMS_BENCH_NODES_IDLE_STREAMS). */
const IDLE_STREAMS = envInt("GMS_BENCH_NODES_IDLE_STREAMS", 5000);
/** IDLE_CONNECTIONS is the number of HTTP/2 connections those streams share. */
const IDLE_CONNECTIONS = 20;
/** MEMORY_BUDGET is the issue's target: at most 20 kB of server memory per idle open stream. */
const MEMORY_BUDGET = 20_000;
/** POLLERS is the number of customers polling Refresh once a second (GMS_BENCH_NODES_POLLERS). */
const POLLERS = envInt("GMS_BENCH_NODES_POLLERS", 1000);
/** POLL_SECONDS is how long the polling is measured (GMS_BENCH_NODES_POLL_SECONDS), after a warm-up. */
const POLL_SECONDS = envInt("GMS_BENCH_NODES_POLL_SECONDS", 20);
const POLL_CONNECTIONS = 20;
/** CPU_BUDGET is the issue's target: the server's CPU for the pollers at most half a core. */
const CPU_BUDGET = 0.5;
/** LATENCY_STREAMS and LATENCY_RATE size the latency scenario (GMS_BENCH_NODES_STREAMS, GMS_BENCH_NODES_RATE). */
const LATENCY_STREAMS = envInt("GMS_BENCH_NODES_STREAMS", 1000);
const LATENCY_RATE = envInt("GMS_BENCH_NODES_RATE", 200);
/** LATENCY_SECONDS is how long each subject is measured, split into the shared rounds (GMS_BENCH_NODES_SECONDS). */
const LATENCY_SECONDS = envInt("GMS_BENCH_NODES_SECONDS", 20);
/** As bench/chat.ts: agents' streams over 4 HTTP/2 connections, customers' sends over 2. */
const STREAM_CONNECTIONS = 4;
const SENDER_CONNECTIONS = 2;
/** SETUP_CONCURRENCY is how many setup calls (RequestChat, AcceptChat, Subscribe) run at once. */
const SETUP_CONCURRENCY = 32;

const AGENT_KEY = `bench-agent-${randomBytes(12).toString("hex")}`;
const ENDPOINT = "bench";

/** nodeConfig is the configuration every node runs with: MySQL, Redis, one agent key, customers without a key, limits that never refuse. */
const nodeConfig = (databaseUrl: string) => ({
  server: { host: "127.0.0.1", shutdown_grace_seconds: 2 },
  log: { level: process.env["GMS_BENCH_LOG"] ?? "warn" },
  database: { url: databaseUrl },
  auth: { api_keys: [{ name: "bench-agent", key: AGENT_KEY, roles: ["agent"] }], public_roles: ["app"] },
  bus: { redis_url: REDIS_URL },
  services: { bench: { service: "request-chat", endpoint: ENDPOINT, ttl: 24 * 3600 } },
  // The rate limits stay in the path (every call takes its tokens) but never refuse: the one agent
  // key sends the messages of every chat, and a chat's sender more than 2 a second.
  rate_limits: { roles: { agent: { rate_per_second: 1_000_000, burst: 1_000_000 } }, chat_messages: { rate_per_second: 1_000_000, burst: 1_000_000 } },
});

/** Scene is a scenario's fresh database, its nodes, and a temporary folder for their configuration. */
interface Scene {
  url: string;
  dir: string;
  nodes: ServerProcess[];
  close(): Promise<void>;
}

/**
 * scene creates and migrates a fresh MySQL database and starts `names.length` nodes on it, with
 * nodeConfig and, over its top-level sections, `config`.
 */
async function scene(ctx: BenchContext, names: readonly string[], config: Record<string, unknown> = {}): Promise<Scene> {
  const dbName = `gms_bench_${randomBytes(4).toString("hex")}`;
  const url = `${MYSQL_URL}/${dbName}`;
  const db = await openDatabase(url, { poolMax: 1 });
  const dir = mkdtempSync(join(tmpdir(), "opengms-bench-nodes-"));
  const nodes: ServerProcess[] = [];
  const close = async () => {
    for (const n of nodes) await n.stop().catch((e: unknown) => ctx.log(`stopping ${n.name}: ${String(e)}`));
    await db.knex.raw(`DROP DATABASE IF EXISTS \`${dbName}\``).catch((e: unknown) => ctx.log(`could not drop ${dbName}: ${String(e)}`));
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const name of names) nodes.push(await startServerProcess(name, { dir, config: { ...nodeConfig(url), ...config }, log: (line) => ctx.log(line) }));
  } catch (e) {
    await close();
    throw e;
  }
  ctx.log(`database ${redactUrl(url)}`);
  return { url, dir, nodes, close };
}

/** requestChats has `n` customers request a chat, over the given clients in turn. */
function requestChats(customers: Client<typeof ChatService>[], n: number): Promise<RequestChatResponse[]> {
  return pool(n, SETUP_CONCURRENCY, (i) => customers[i % customers.length].requestChat({ service: "bench", nickname: `customer ${i}` }));
}

/** waitUntil polls `probe` until it holds, for at most `ms`. */
async function waitUntil(what: string, probe: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await probe())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/**
 * settledStats samples a node's memory after a full GC, a second apart, until the resident size
 * has settled (8 samples within 1 % of each other, or 40 s), and keeps the medians of the last 5.
 * A new process gives back tens of MiB in steps over its first ~20 s (seen here: 143, 113, then
 * 98 MiB for an idle bare server), so none is measured before it is 25 s old.
 */
async function settledStats(node: ServerProcess): Promise<{ rss: number; heapUsed: number; external: number }> {
  const rss: number[] = [];
  const heap: number[] = [];
  const external: number[] = [];
  const young = node.startedAt + 25_000 - performance.now();
  if (young > 0) await sleep(young);
  const deadline = performance.now() + 40_000;
  for (;;) {
    const s = await node.stats(true);
    rss.push(rssOf(node.pid));
    heap.push(s.heapUsed);
    external.push(s.external);
    const last = rss.slice(-8);
    if ((last.length === 8 && Math.max(...last) - Math.min(...last) <= Math.min(...last) * 0.01) || performance.now() > deadline) break;
    await sleep(1000);
  }
  return { rss: median(rss.slice(-5)), heapUsed: median(heap.slice(-5)), external: median(external.slice(-5)) };
}

const MiB = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;
const kB = (b: number) => `${(b / 1000).toFixed(1)} kB`;

/** infoRow is a row that reports a measurement without a throughput or latency. */
const infoRow = (scenario: string, subject: string, more: Partial<Row> = {}): Row => ({
  scenario,
  subject,
  opsPerSec: NaN,
  p50Ms: NaN,
  p99Ms: NaN,
  cpuUsPerOp: NaN,
  roundsOpsPerSec: [],
  ...more,
});

/** StreamMemory is what idle open streams cost a server process. */
interface StreamMemory {
  idle: { rss: number; heapUsed: number; external: number };
  open: { rss: number; heapUsed: number; external: number };
  rssPerStream: number;
  heapPerStream: number;
  /** cores is the CPU the server (and MySQL) spent while the streams were open and idle. */
  cores: Record<string, number>;
}

/**
 * streamMemory measures a server's memory (after a full GC) before and after IDLE_STREAMS streams
 * are opened with `open` over IDLE_CONNECTIONS HTTP/2 connections, each counted once it has
 * delivered its first event and the server has registered it; then closes them and waits until the
 * server has let go of every one.
 */
async function streamMemory(ctx: BenchContext, label: string, node: ServerProcess, open: (i: number, client: Client<typeof ChatService>, signal: AbortSignal) => AsyncIterable<unknown>, clients: Client<typeof ChatService>[]): Promise<StreamMemory> {
  const stop = new AbortController();
  setMaxListeners(0, stop.signal);
  const running: Promise<void>[] = [];
  const failures: unknown[] = [];
  const before = (await node.stats()).listeners;
  // A few streams opened and closed first, so the code they run is loaded and compiled before the idle measurement.
  const warm = new AbortController();
  await Promise.all(
    Array.from({ length: 20 }, async (_, i) => {
      for await (const e of open(i, clients[i % clients.length], warm.signal)) {
        void e;
        break;
      }
    }),
  );
  warm.abort();
  await waitUntil(`${label}: the warm-up streams closed`, async () => (await node.stats()).listeners <= before);
  const idle = await settledStats(node);
  ctx.log(`${label}: idle server ${MiB(idle.rss)} RSS, ${MiB(idle.heapUsed)} heap`);
  try {
    const t0 = performance.now();
    await pool(IDLE_STREAMS, SETUP_CONCURRENCY, (i) => {
      let ready: () => void = () => undefined;
      const first = new Promise<void>((resolve) => (ready = resolve));
      running.push(
        (async () => {
          try {
            for await (const e of open(i, clients[i % clients.length], stop.signal)) {
              void e;
              ready();
            }
          } catch (e) {
            if (!stop.signal.aborted) failures.push(e);
          } finally {
            ready();
          }
        })(),
      );
      return first;
    });
    if (failures.length > 0) throw new Error(`${label}: opening the streams failed: ${String(failures[0])}`);
    await waitUntil(`${label}: every stream registered on the server`, async () => (await node.stats()).listeners - before >= IDLE_STREAMS);
    ctx.log(`${label}: ${IDLE_STREAMS} streams open in ${((performance.now() - t0) / 1000).toFixed(1)} s; settling`);
    // Past two rounds of the node's periodic look at the streams' chats (every 5 s), measuring the CPU meanwhile.
    await sleep(3000);
    const cpu = cpuMeter({ server: node.pid, mysqld: mysqldPid() });
    await sleep(10_000);
    const { cores } = cpu();
    const opened = await settledStats(node);
    if (failures.length > 0) throw new Error(`${label}: a stream failed: ${String(failures[0])}`);
    const m: StreamMemory = {
      idle,
      open: opened,
      rssPerStream: (opened.rss - idle.rss) / IDLE_STREAMS,
      heapPerStream: (opened.heapUsed - idle.heapUsed) / IDLE_STREAMS,
      cores,
    };
    ctx.log(`${label}: ${MiB(opened.rss)} RSS with the streams open: ${kB(m.rssPerStream)} per stream (heap ${kB(m.heapPerStream)}); CPU meanwhile: server ${cores["server"].toFixed(3)} core, MySQL ${cores["mysqld"].toFixed(3)} core`);
    return m;
  } finally {
    stop.abort();
    await Promise.all(running);
    // Stopped only once it has let go of every stream, so no stream is cut mid-query by the shutdown.
    await waitUntil(`${label}: the server to let go of the streams`, async () => (await node.stats()).listeners <= before).catch((e: unknown) => ctx.log(String(e)));
  }
}

/**
 * idleStreams measures what an idle open customer stream costs opengms: the customers' chats are
 * requested first, then the memory is measured with no stream and with every customer's Subscribe
 * open. Beside it, as references, the same number of streams on connect-node alone serving a
 * do-nothing Subscribe (no interceptors, no database, no bus), and the floor: listen() alone holding
 * each HTTP/2 stream open after its headers and one event.
 */
async function idleStreams(ctx: BenchContext, details: Record<string, unknown>): Promise<Row[]> {
  const scenario = `${IDLE_STREAMS.toLocaleString("en")} idle customer streams, ${IDLE_CONNECTIONS} HTTP/2 connections`;
  const dir = mkdtempSync(join(tmpdir(), "opengms-bench-bare-"));
  /** reference measures a server process of bench/node-process.ts started in `mode`, answering any Subscribe. */
  const reference = async (name: string, mode: string): Promise<StreamMemory> => {
    const node = await startServerProcess(name, { dir, config: {}, log: (line) => ctx.log(line), args: [mode] });
    try {
      const clients = grpcTransports(node.url, IDLE_CONNECTIONS).map((t) => createClient(ChatService, t));
      const chatId = "00000000-0000-4000-8000-000000000000";
      return await streamMemory(ctx, name, node, (_i, client, signal) => client.subscribe({ chatId, secureKey: "-", fromPosition: 1n }, { signal }), clients);
    } finally {
      await node.stop();
    }
  };
  let floor: StreamMemory;
  let bare: StreamMemory;
  try {
    floor = await reference("raw node:http2 stream", "floor");
    bare = await reference("bare connect-node", "bare");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  // Customers idle for chat.idle_timeout_seconds (45 s) are disconnected, which ends their stream: on
  // a busy machine, requesting 5,000 chats and settling the idle server can take longer than that
  // before the first stream opens. The measurement needs every chat open, so they idle for an hour.
  const s = await scene(ctx, ["idle node"], { chat: { idle_timeout_seconds: 3600 } });
  let mine: StreamMemory;
  try {
    const node = s.nodes[0];
    const clients = grpcTransports(node.url, IDLE_CONNECTIONS).map((t) => createClient(ChatService, t));
    const t0 = performance.now();
    const chats = await requestChats(clients, IDLE_STREAMS);
    ctx.log(`idle streams: ${IDLE_STREAMS} chats requested in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    await sleep(2000);
    mine = await streamMemory(
      ctx,
      "opengms",
      node,
      (i, client, signal) => client.subscribe({ chatId: chats[i].chatId, secureKey: chats[i].secureKey, fromPosition: chats[i].nextPosition - 1n }, { signal }),
      clients,
    );
  } finally {
    await s.close();
  }
  details["idleStreams"] = { streams: IDLE_STREAMS, connections: IDLE_CONNECTIONS, budgetBytesPerStream: MEMORY_BUDGET, opengms: mine, bareConnectNode: bare, rawStream: floor };
  return [
    infoRow(scenario, `raw node:http2 stream via listen(), headers and one event (the floor): ${kB(floor.rssPerStream)} RSS (heap ${kB(floor.heapPerStream)}) per stream`),
    infoRow(scenario, `connect-node alone, do-nothing Subscribe: ${kB(bare.rssPerStream)} RSS (heap ${kB(bare.heapPerStream)}) per stream`),
    // cpu µs/op here: the server's CPU per open stream per second while they idle.
    infoRow(
      scenario,
      `opengms (idle: ${MiB(mine.idle.rss)} RSS, ${IDLE_STREAMS} chats): ${kB(mine.rssPerStream)} RSS (heap ${kB(mine.heapPerStream)}) per stream; idle, they cost ${mine.cores["server"].toFixed(2)} core`,
      // A delta lost in the noise (at a few streams) is no pass.
      { cpuUsPerOp: (mine.cores["server"] * 1e6) / IDLE_STREAMS, ratio: MEMORY_BUDGET / mine.rssPerStream, target: 1, pass: mine.rssPerStream > 0 && mine.rssPerStream <= MEMORY_BUDGET },
    ),
  ];
}

/**
 * polling has POLLERS customers call Refresh (not waiting) once a second each, spread evenly over
 * the second, and measures the server process's CPU, the database's and the clients' own.
 */
async function polling(ctx: BenchContext, details: Record<string, unknown>, protocol: PollProtocol): Promise<Row[]> {
  const scenario = `${POLLERS.toLocaleString("en")} customers polling Refresh every 1 s`;
  const s = await scene(ctx, [`polled node (${protocol.name})`]);
  try {
    const node = s.nodes[0];
    const customers = protocol.transports(node.url).map((t) => createClient(ChatService, t));
    const chats = await requestChats(customers, POLLERS);
    const poller = protocol.poller?.(node.url);
    const next = chats.map((c) => c.nextPosition);
    ctx.log(`polling over ${protocol.name}: ${POLLERS} chats requested`);
    await sleep(2000);
    // What the server spends with nobody polling (health checks, sweepers), for comparison.
    const quiet = cpuMeter({ server: node.pid });
    await sleep(5000);
    const idleCores = quiet().cores["server"];
    const failures: unknown[] = [];
    let histogram: Histogram | undefined;
    let done = 0;
    let late = 0;
    const poll = async (i: number) => {
      const chat = chats[i];
      const s0 = performance.now();
      const r = poller === undefined ? await customers[i % customers.length].refresh({ chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: next[i], waitSeconds: 0 }) : await poller.poll({ chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: next[i] });
      next[i] = r.nextPosition;
      histogram?.recordValue(Math.max(1, Math.round((performance.now() - s0) * 1000)));
      done++;
    };
    // Open loop: poll i is due at (i / POLLERS) s into every second, whatever the replies.
    const t0 = performance.now();
    let issued = 0;
    const inFlight = new Set<number>();
    const tick = setInterval(() => {
      const due = Math.floor(((performance.now() - t0) * POLLERS) / 1000);
      for (; issued < due; issued++) {
        const i = issued % POLLERS;
        // A customer whose last poll has not come back yet skips this one, as a polling client would.
        if (inFlight.has(i)) {
          late++;
          continue;
        }
        inFlight.add(i);
        poll(i)
          .catch((e: unknown) => failures.push(e))
          .finally(() => inFlight.delete(i));
      }
    }, 2);
    try {
      await sleep(3000);
      histogram = newHistogram();
      const done0 = done;
      const late0 = late;
      const cpu = cpuMeter({ server: node.pid, mysqld: mysqldPid() });
      await sleep(POLL_SECONDS * 1000);
      const used = cpu();
      const polls = done - done0;
      const rate = polls / used.seconds;
      if (failures.length > 0) throw new Error(`a poll failed: ${String(failures[0])}`);
      const { server, clients, mysqld } = used.cores;
      const skipped = late - late0;
      ctx.log(`polling over ${protocol.name}: ${rate.toFixed(0)} polls/s; server ${server.toFixed(3)} core, clients ${clients.toFixed(3)} core, MySQL ${mysqld.toFixed(3)} core; ${skipped} polls skipped (previous one still out)`);
      const h = histogram;
      details[`polling ${protocol.name}`] = {
        pollers: POLLERS,
        protocol: protocol.name,
        seconds: used.seconds,
        pollsPerSecond: rate,
        skipped,
        cores: used.cores,
        serverIdleCores: idleCores,
        serverCpuUsPerPoll: (server * 1e6) / rate,
        clientCpuUsPerPoll: (clients * 1e6) / rate,
        p50Ms: h.getValueAtPercentile(50) / 1000,
        p99Ms: h.getValueAtPercentile(99) / 1000,
        budgetCores: CPU_BUDGET,
      };
      // Judged only if the server kept up: a saturated server shows a low CPU for fewer polls than asked.
      const keptUp = rate >= POLLERS * 0.95;
      const rows: Row[] = [
        {
          scenario,
          subject: `${protocol.name}: server ${server.toFixed(2)} core${keptUp ? "" : ` for ${rate.toFixed(0)} of ${POLLERS} polls/s (saturated)`} (${idleCores.toFixed(2)} unpolled); clients ${clients.toFixed(2)}, MySQL ${mysqld.toFixed(2)}`,
          opsPerSec: rate,
          p50Ms: h.getValueAtPercentile(50) / 1000,
          p99Ms: h.getValueAtPercentile(99) / 1000,
          cpuUsPerOp: (server * 1e6) / rate,
          ratio: CPU_BUDGET / server,
          target: 1,
          pass: keptUp && server <= CPU_BUDGET,
          roundsOpsPerSec: [Math.round(rate * 10) / 10],
        },
      ];
      h.destroy();
      return rows;
    } finally {
      clearInterval(tick);
      await waitUntil("the last polls", () => Promise.resolve(inFlight.size === 0), 10_000).catch(() => undefined);
      poller?.close();
    }
  } finally {
    await s.close();
  }
}

/** Poll is one customer's Refresh (not waiting). */
type Poll = (req: { chatId: string; secureKey: string; fromPosition: bigint }) => Promise<{ nextPosition: bigint }>;

/** PollProtocol is how the polling customers reach the server. */
interface PollProtocol {
  name: string;
  /** transports are the customers' connect clients: they request the chats, and poll unless `poller` is given. */
  transports(url: string): Transport[];
  /** poller, when given, makes the polls instead: a lean load generator, so the clients' CPU does not crowd the server's. */
  poller?(url: string): { poll: Poll; close(): void };
}

/** POLL_PROTOCOLS: apps over gRPC (HTTP/2, shared connections), web widgets over Connect JSON (HTTP/1.1 keep-alive). */
const POLL_PROTOCOLS: PollProtocol[] = [
  {
    name: `gRPC, ${POLL_CONNECTIONS} HTTP/2 connections`,
    transports: (url) => grpcTransports(url, POLL_CONNECTIONS),
    poller(url) {
      const client = createGrpcLoadClient(url, POLL_CONNECTIONS);
      return {
        poll: (req) => client.unary("/gms.v1.ChatService/Refresh", RefreshRequestSchema, RefreshResponseSchema, create(RefreshRequestSchema, { ...req, waitSeconds: 0 })),
        close: () => client.close(),
      };
    },
  },
  { name: "Connect JSON, HTTP/1.1 keep-alive", transports: (url) => [createConnectTransport({ baseUrl: url, httpVersion: "1.1" })] },
];

/**
 * latency sends LATENCY_RATE customer messages a second on node A to LATENCY_STREAMS chats whose
 * agents hold a Subscribe stream, in alternating rounds: on node A too (one node), or on node B
 * (two nodes: the announcement crosses Redis). The agents' streams are open only in their rounds.
 */
async function latency(ctx: BenchContext, details: Record<string, unknown>): Promise<Row[]> {
  const scenario = `chat latency, ${LATENCY_STREAMS.toLocaleString("en")} agent streams, ${LATENCY_RATE} msg/s`;
  const s = await scene(ctx, ["node A", "node B"]);
  const [a, b] = s.nodes;
  try {
    const customers = grpcTransports(a.url, SENDER_CONNECTIONS).map((t) => createClient(ChatService, t));
    const chats = await requestChats(customers, LATENCY_STREAMS);
    const keys = new Map(chats.map((c) => [c.chatId, c.secureKey]));
    const agentsOn = (node: ServerProcess) => grpcTransports(node.url, STREAM_CONNECTIONS, [bearer(AGENT_KEY)]).map((t) => createClient(AgentService, t));
    const agentsB = agentsOn(b);
    const accepted = await pool(LATENCY_STREAMS, SETUP_CONCURRENCY, (i) => agentsB[i % STREAM_CONNECTIONS].acceptChat({ endpoint: ENDPOINT, nickname: `agent ${i}`, waitSeconds: 0 }));
    if (new Set(accepted.map((x) => x.chatId)).size !== LATENCY_STREAMS) throw new Error("AcceptChat handed out a chat twice");
    const chatIds = accepted.map((x) => x.chatId);
    const seen = accepted.map((x) => x.nextPosition - 1n);
    ctx.log(`latency: ${LATENCY_STREAMS} chats requested on A, accepted on B`);

    const failures: unknown[] = [];
    const subjects = [
      { name: "one node (customer and agent on A)", node: a, agents: agentsOn(a), tracker: new Tracker() },
      { name: "two nodes (customer on A, agent on B, Redis)", node: b, agents: agentsB, tracker: new Tracker() },
    ];
    type Subject = (typeof subjects)[number];

    const openStreams = async (subject: Subject) => {
      const stop = new AbortController();
      setMaxListeners(0, stop.signal);
      const before = (await subject.node.stats()).listeners;
      const running: Promise<void>[] = [];
      await pool(LATENCY_STREAMS, SETUP_CONCURRENCY, (i) => {
        let ready: () => void = () => undefined;
        const first = new Promise<void>((resolve) => (ready = resolve));
        running.push(
          (async () => {
            try {
              let replay = true;
              for await (const e of subject.agents[i % STREAM_CONNECTIONS].subscribe({ chatId: chatIds[i], fromPosition: seen[i] }, { signal: stop.signal })) {
                seen[i] = e.position;
                ready();
                if (e.type === ChatEventType.MESSAGE && !replay) subject.tracker.arrived(e.text);
                replay = false;
              }
            } catch (e) {
              if (!stop.signal.aborted) failures.push(e);
            } finally {
              ready();
            }
          })(),
        );
        return first;
      });
      if (failures.length > 0) throw new Error(`opening the streams failed: ${String(failures[0])}`);
      await waitUntil(`${subject.node.name}'s streams registered`, async () => (await subject.node.stats()).listeners - before >= LATENCY_STREAMS);
      return async () => {
        stop.abort();
        await Promise.all(running);
        await waitUntil(`${subject.node.name} to let go of the streams`, async () => (await subject.node.stats()).listeners <= before);
      };
    };

    const seq = { n: 0 };
    const drive = async (subject: Subject, ms: number, histogram: Histogram | undefined) => {
      const { tracker } = subject;
      tracker.histogram = histogram;
      const delivered0 = tracker.delivered;
      const cpu = cpuMeter({ a: a.pid, b: b.pid, mysqld: mysqldPid() });
      const t0 = performance.now();
      let sent = 0;
      await new Promise<void>((resolve) => {
        const tick = setInterval(() => {
          const elapsed = performance.now() - t0;
          const due = Math.min(Math.floor((elapsed * LATENCY_RATE) / 1000), Math.floor((ms * LATENCY_RATE) / 1000));
          for (; sent < due; sent++) {
            const n = seq.n++;
            const i = n % LATENCY_STREAMS;
            const text = `m${n}`;
            tracker.sent(text);
            customers[i % SENDER_CONNECTIONS].sendMessage({ chatId: chatIds[i], secureKey: keys.get(chatIds[i]) ?? "", text }).catch((e: unknown) => failures.push(e));
          }
          if (elapsed >= ms) {
            clearInterval(tick);
            resolve();
          }
        }, 1);
      });
      const deadline = performance.now() + 15_000;
      while (tracker.inFlight > 0 && failures.length === 0 && performance.now() < deadline) await sleep(5);
      const used = cpu();
      if (failures.length > 0) throw new Error(`${subject.name}: a call failed: ${String(failures[0])}`);
      if (tracker.inFlight > 0) throw new Error(`${subject.name}: ${tracker.inFlight} messages never arrived`);
      if (tracker.unexpected > 0) throw new Error(`${subject.name}: ${tracker.unexpected} messages arrived that were not sent`);
      tracker.histogram = undefined;
      const delivered = tracker.delivered - delivered0;
      return { rate: delivered / used.seconds, serversUsPerMsg: ((used.cores["a"] + used.cores["b"]) * used.seconds * 1e6) / delivered, cores: used.cores };
    };

    const rounds = Math.max(1, ctx.options.rounds);
    const roundMs = (LATENCY_SECONDS * 1000) / rounds;
    const warmupMs = Math.max(ctx.options.warmupMs, 2000);
    const histograms = subjects.map(() => newHistogram());
    const rates: number[][] = subjects.map(() => []);
    const cpus: number[][] = subjects.map(() => []);
    const cores: Record<string, number>[][] = subjects.map(() => []);
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? [0, 1] : [1, 0];
      for (const i of order) {
        const subject = subjects[i];
        const close = await openStreams(subject);
        await drive(subject, warmupMs, undefined);
        const r = await drive(subject, roundMs, histograms[i]);
        await close();
        rates[i].push(r.rate);
        cpus[i].push(r.serversUsPerMsg);
        cores[i].push(r.cores);
        const h = histograms[i];
        ctx.log(`latency: round ${round + 1}/${rounds} ${subject.name}: ${Math.round(r.rate)} msg/s, p50 ${(h.getValueAtPercentile(50) / 1000).toFixed(2)} ms, p99 ${(h.getValueAtPercentile(99) / 1000).toFixed(2)} ms so far`);
      }
    }
    const ms = (h: Histogram, p: number) => h.getValueAtPercentile(p) / 1000;
    const [one, two] = histograms;
    const row = (subject: string, i: number): Row => ({
      scenario,
      subject,
      opsPerSec: median(rates[i]),
      p50Ms: ms(histograms[i], 50),
      p99Ms: ms(histograms[i], 99),
      cpuUsPerOp: median(cpus[i]),
      roundsOpsPerSec: rates[i].map((x) => Math.round(x * 10) / 10),
    });
    const summary = (h: Histogram) => ({ count: h.totalCount, p50Ms: ms(h, 50), p90Ms: ms(h, 90), p99Ms: ms(h, 99), p999Ms: ms(h, 99.9), maxMs: h.maxValue / 1000 });
    details["latency"] = {
      streams: LATENCY_STREAMS,
      rate: LATENCY_RATE,
      seconds: LATENCY_SECONDS,
      rounds,
      oneNode: { ...summary(one), cores: cores[0] },
      twoNodes: { ...summary(two), cores: cores[1] },
    };
    // The ratio is "higher is better", as bench/chat.ts: one node's latency over two nodes'.
    const rows: Row[] = [
      row(subjects[0].name, 0),
      { ...row(`${subjects[1].name}, p50`, 1), ratio: ms(one, 50) / ms(two, 50) },
      { ...row(`${subjects[1].name}, p99`, 1), ratio: ms(one, 99) / ms(two, 99) },
    ];
    one.destroy();
    two.destroy();
    return rows;
  } finally {
    await s.close();
  }
}

async function redisReachable(): Promise<void> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  redis.on("error", () => undefined);
  try {
    await redis.connect();
    await redis.ping();
  } catch (e) {
    throw new Error(`Redis at ${REDIS_URL} is unreachable (${(e as Error).message}); the nodes benchmark needs it`, { cause: e });
  } finally {
    redis.disconnect();
  }
}

async function run(ctx: BenchContext): Promise<Report> {
  await redisReachable();
  const rows: Row[] = [];
  const details: Record<string, unknown> = {};
  if (ctx.wants("idle streams")) rows.push(...(await idleStreams(ctx, details)));
  for (const protocol of POLL_PROTOCOLS) if (ctx.wants("polling")) rows.push(...(await polling(ctx, details, protocol)));
  if (ctx.wants("latency")) rows.push(...(await latency(ctx, details)));
  return {
    module: "nodes",
    title:
      `opengms as server processes of their own on MySQL, announcing on Redis, clients in the benchmark's process, all on this machine's cores. ` +
      `Budget rows: ratio = budget / measured (>= 1.00x meets it): ${kB(MEMORY_BUDGET)} of RSS per idle stream above the idle server (cpu = its CPU per stream per second), ${CPU_BUDGET} core for the pollers (cpu = server CPU per poll). ` +
      `Latency rows: ops/s = messages delivered per second, cpu = both servers' CPU per message, ratio = one node's latency / two nodes' (${LATENCY_SECONDS} s per subject in ${ctx.options.rounds} alternating rounds)`,
    rows,
    environment: {
      node: process.version,
      mysqlUrl: redactUrl(MYSQL_URL),
      redisUrl: redactUrl(REDIS_URL),
      options: ctx.options,
      bare: "the memory reference: bench/node-process.ts bare, a connect-node handler (no interceptors) whose Subscribe yields one event and stays open, on src/listen.ts",
      servers: "bench/node-process.ts: loadConfig + openDatabase + startServer as src/main.ts serve, sweepers on, forked with --expose-gc; configuration: MySQL, bus.redis_url, defaults otherwise (chat.idle_timeout_seconds 45)",
      memory: "RSS from /proc/<pid>/status after two full GCs in the server, median of 5 samples a second apart; heap from process.memoryUsage() in the server after the same GCs",
      cpu: "server and MySQL from /proc/<pid>/stat (utime + stime) over wall time; clients from process.cpuUsage() of the benchmark process",
      latency: "from just before the customer's SendMessage call (gRPC, to node A) to the MESSAGE event's arrival on the agent's Subscribe stream (gRPC, node A or B)",
      results: details,
    },
  };
}

/** nodesBench is the nodes module of the benchmark. */
const nodesBench: BenchModule = { run };
export default nodesBench;
