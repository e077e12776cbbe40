// Two real server processes on one MySQL database and one Redis: a customer on node A, an agent on
// node B, everything between them carried by the database and the Redis bus.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatEventType, ParticipantType, type ChatEvent } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { bearer, freePort, waitFor } from "./helpers/calls.js";
import { createTestDatabase, DIALECTS, type TestDatabase } from "./helpers/databases.js";

/** REDIS_URL is the Redis both nodes share (GMS_TEST_REDIS_URL). */
const REDIS_URL = process.env["GMS_TEST_REDIS_URL"] ?? "redis://127.0.0.1:6379";
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

async function probeRedis(): Promise<string | undefined> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  redis.on("error", () => undefined);
  try {
    await redis.connect();
    await redis.ping();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  } finally {
    redis.disconnect();
  }
}

const redisProblem = await probeRedis();
if (redisProblem !== undefined) {
  if (process.env["CI"]) throw new Error(`Redis at ${REDIS_URL} is unreachable (${redisProblem}); CI requires it`);
  process.stderr.write(`\n*** Redis at ${REDIS_URL} is unreachable (${redisProblem}): the multi-node test is SKIPPED ***\n\n`);
}
// databases.ts has already failed the run in CI, or said loudly that MySQL is skipped.
const runnable = redisProblem === undefined && DIALECTS.includes("mysql");

const AGENT = { name: "agent-bob", key: "multi-node-agent-key-0123" };
const ADMIN = { name: "ops", key: "multi-node-admin-key-0123" };
/**
 * B_USER is node B's own Redis user, made for this run: B can then be cut off Redis without touching
 * A (which logs in as the URL's user): its connections killed, its logins refused until restored.
 */
const B_USER = `opengms-test-node-b-${randomBytes(4).toString("hex")}`;
const B_PASSWORD = randomBytes(12).toString("hex");
/** ENDPOINT is this run's own queue, so a concurrent run on the same Redis never takes our chat. */
const ENDPOINT = `mn-${randomBytes(4).toString("hex")}`;

/** Node is one opengms server process. */
interface Node {
  name: string;
  child: ChildProcess;
  url: string;
  /** output is what the process printed, for a failure's message. */
  output: () => string;
}

/** startNode runs `node --import tsx src/main.ts --config <file>` on a free port. */
async function startNode(name: string, configPath: string): Promise<Node> {
  const port = await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts", "--config", configPath], {
    cwd: ROOT,
    env: { ...process.env, GMS_PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let printed = "";
  const keep = (chunk: Buffer) => {
    printed = (printed + chunk.toString("utf8")).slice(-20_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  return { name, child, url: `http://127.0.0.1:${port}`, output: () => printed };
}

/** serving waits (bounded) until the node answers Health Check with SERVING. */
async function serving(node: Node): Promise<void> {
  const health = createClient(Health, createGrpcTransport({ baseUrl: node.url }));
  await waitFor(
    `${node.name} to answer Health Check (output so far: ${node.output().slice(-2000)})`,
    async () => {
      if (node.child.exitCode !== null) throw new Error(`${node.name} exited with ${node.child.exitCode}: ${node.output().slice(-4000)}`);
      const res = await health.check({ service: "" }, { timeoutMs: 1000 }).catch(() => undefined);
      return res?.status === HealthCheckResponse_ServingStatus.SERVING;
    },
    30_000,
  );
}

/** stopNode ends a server process: SIGTERM, then SIGKILL if it has not gone within 3 s. */
async function stopNode(node: Node | undefined): Promise<void> {
  if (node === undefined || node.child.exitCode !== null || node.child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => node.child.once("exit", () => resolve()));
  node.child.kill("SIGTERM");
  const timer = setTimeout(() => node.child.kill("SIGKILL"), 3000);
  await gone;
  clearTimeout(timer);
}

/** redisClientsOf lists the ids of the connections of one Redis user, from CLIENT LIST. */
async function redisClientsOf(admin: Redis, user: string): Promise<string[]> {
  const list = (await admin.call("CLIENT", "LIST")) as string;
  return list
    .split("\n")
    .filter((line) => line.includes(` user=${user} `))
    .map((line) => /(?:^| )id=(\d+)/.exec(line)?.[1])
    .filter((id): id is string => id !== undefined);
}

/** refusedLogins counts the failed logins of a Redis user in the ACL log. */
async function refusedLogins(admin: Redis, user: string): Promise<number> {
  const log = (await admin.call("ACL", "LOG", "128")) as unknown[][];
  let n = 0;
  for (const entry of log) {
    const fields = new Map<string, unknown>();
    for (let i = 0; i + 1 < entry.length; i += 2) fields.set(String(entry[i]), entry[i + 1]);
    if (fields.get("username") === user && fields.get("reason") === "auth") n += Number(fields.get("count"));
  }
  return n;
}

/** Reader collects a server stream's events in the background until it ends or fails. */
interface Reader {
  readonly events: ChatEvent[];
  /** arrivals holds when (Date.now()) each event arrived, index for index. */
  readonly arrivals: number[];
  readonly ended: Promise<ConnectError | undefined>;
  until(what: string, pred: (e: ChatEvent) => boolean, timeoutMs?: number): Promise<void>;
}

function read(stream: AsyncIterable<ChatEvent>): Reader {
  const events: ChatEvent[] = [];
  const arrivals: number[] = [];
  const ended = (async () => {
    try {
      for await (const e of stream) {
        events.push(e);
        arrivals.push(Date.now());
      }
      return undefined;
    } catch (e) {
      return ConnectError.from(e);
    }
  })();
  return {
    events,
    arrivals,
    ended,
    async until(what, pred, timeoutMs = 10_000) {
      await waitFor(what, () => events.some(pred), timeoutMs);
    },
  };
}

/** durable renders the stored events (position > 0) of a stream or poll, for comparison. */
const durable = (events: readonly ChatEvent[]) =>
  events.filter((e) => e.position > 0n).map((e) => `${e.position}:${ChatEventType[e.type]}:${ParticipantType[e.from?.type ?? 0]}:${e.text}${e.fileId === "" ? "" : `:${e.fileName}`}`);
const isText = (text: string) => (e: ChatEvent) => e.type === ChatEventType.MESSAGE && e.text === text;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.runIf(runnable)("two server processes on one MySQL and one Redis", () => {
  let db: TestDatabase;
  let dir: string;
  let a: Node | undefined;
  let b: Node | undefined;
  let redisAdmin: Redis;
  let customer: Client<typeof ChatService>;
  let agent: Client<typeof AgentService>;
  let agentGrpc: Client<typeof AgentService>;
  let adminOnA: Client<typeof AgentService>;
  /** aborts cancel the streams the test opened, at the end, whatever happened. */
  const aborts: AbortController[] = [];
  const stream = () => {
    const c = new AbortController();
    aborts.push(c);
    return c.signal;
  };

  beforeAll(async () => {
    redisAdmin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    await redisAdmin.call("ACL", "SETUSER", B_USER, "on", `>${B_PASSWORD}`, "~*", "&*", "+@all");
    // Migrated here, once, so the two nodes start on an up-to-date schema side by side.
    db = await createTestDatabase("mysql");
    dir = mkdtempSync(join(tmpdir(), "opengms-nodes-"));
    const config = {
      server: { host: "127.0.0.1", shutdown_grace_seconds: 1 },
      log: { level: "warn" },
      database: { url: db.url },
      auth: {
        api_keys: [
          { name: AGENT.name, key: AGENT.key, roles: ["agent"] },
          { name: ADMIN.name, key: ADMIN.key, roles: ["admin"] },
        ],
        public_roles: ["app"],
      },
      chat: { files: { max_files: 3, max_file_bytes: 256 * 1024, max_total_bytes: 512 * 1024, allowed_extensions: ["png", "pdf"], require_agent: true } },
      bus: { redis_url: REDIS_URL },
      services: { support: { service: "request-chat", endpoint: ENDPOINT, ttl: 600 } },
    };
    const urlB = new URL(REDIS_URL);
    urlB.username = B_USER;
    urlB.password = B_PASSWORD;
    const pathA = join(dir, "node-a.yaml");
    const pathB = join(dir, "node-b.yaml");
    writeFileSync(pathA, toYaml(config));
    writeFileSync(pathB, toYaml({ ...config, bus: { redis_url: urlB.toString() } }));
    a = await startNode("node A", pathA);
    b = await startNode("node B", pathB);
    // Should this worker die without running afterAll, the nodes die with it.
    process.once("exit", () => {
      for (const n of [a, b]) if (n?.child.exitCode === null) n.child.kill("SIGKILL");
    });
    await Promise.all([serving(a), serving(b)]);
    customer = createClient(ChatService, createGrpcTransport({ baseUrl: a.url }));
    agent = createClient(AgentService, createConnectTransport({ baseUrl: b.url, httpVersion: "1.1", interceptors: [bearer(AGENT.key)] }));
    agentGrpc = createClient(AgentService, createGrpcTransport({ baseUrl: b.url, interceptors: [bearer(AGENT.key)] }));
    adminOnA = createClient(AgentService, createGrpcTransport({ baseUrl: a.url, interceptors: [bearer(ADMIN.key)] }));
  }, 60_000);

  afterAll(async () => {
    for (const c of aborts) c.abort();
    await Promise.all([stopNode(a), stopNode(b)]);
    await redisAdmin?.call("ACL", "DELUSER", B_USER).catch(() => undefined);
    redisAdmin?.disconnect();
    await db?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  it("a whole conversation crosses the nodes, and cutting node B off Redis mid-chat loses no event", async () => {
    const nodeA = a!;
    const nodeB = b!;
    try {
      // ---- The agent waits on B before there is any chat; the chat requested on A wakes it through Redis.
      const acceptStarted = Date.now();
      const accepting = agent.acceptChat({ endpoint: ENDPOINT, nickname: "Bob", waitSeconds: 30 });
      let acceptDone = 0;
      void accepting.then(() => (acceptDone = Date.now()), () => undefined);
      // Only node B listens on the queue: its subscription in Redis shows the wait has begun.
      await waitFor("B's AcceptChat to listen on the queue", async () => {
        const [, n] = (await redisAdmin.call("PUBSUB", "NUMSUB", `opengms:queue:${ENDPOINT}`)) as [string, number];
        return Number(n) >= 1;
      });
      await sleep(200);
      expect(acceptDone, "AcceptChat must still be waiting").toBe(0);
      const chat = await customer.requestChat({ service: "support", nickname: "Ann", subject: "billing", userData: { tier: "gold" } });
      const accepted = await accepting;
      expect(accepted.chatId).toBe(chat.chatId);
      expect(accepted.customer?.participantId).toBe(chat.participantId);
      // AcceptChat looks at the database on its own only every 2 s: an earlier wake came through Redis.
      expect(acceptDone - acceptStarted, "AcceptChat woken by the announcement, before its 2 s re-look").toBeLessThan(2000);

      // ---- Both sides on streams: the customer's on A (gRPC), the agent's on B (Connect, HTTP/1.1).
      const key = { chatId: chat.chatId, secureKey: chat.secureKey };
      const customerStream = read(customer.subscribe({ ...key, fromPosition: 1n }, { signal: stream() }));
      const agentStream = read(agent.subscribe({ chatId: chat.chatId, fromPosition: 1n }, { signal: stream() }));
      await customerStream.until("the customer's replay", (e) => e.position === 2n);
      await agentStream.until("the agent's replay", (e) => e.position === 2n);

      // ---- Typing crosses the nodes, live (the state itself lives in the database).
      await customer.sendTyping({ ...key, typing: true, text: "I ha" });
      await agentStream.until("the customer typing, on B", (e) => e.type === ChatEventType.TYPING_STARTED && e.from?.participantId === chat.participantId);
      const typingOnB = await agentGrpc.refresh({ chatId: chat.chatId, fromPosition: 3n });
      expect(typingOnB.typing.map((p) => p.participantId)).toEqual([chat.participantId]);
      await agent.sendTyping({ chatId: chat.chatId, typing: true });
      await customerStream.until("the agent typing, on A", (e) => e.type === ChatEventType.TYPING_STARTED && e.from?.participantId === accepted.participantId);

      // ---- A conversation both ways.
      const lines: [who: "customer" | "agent", text: string][] = [
        ["customer", "I have a question about my bill"],
        ["agent", "Hello Ann, I can help with that"],
        ["customer", "I was charged twice"],
        ["agent", "Let me look"],
        ["customer", "thanks"],
      ];
      for (const [who, text] of lines) {
        if (who === "customer") await customer.sendMessage({ ...key, text });
        else await agent.sendMessage({ chatId: chat.chatId, text });
        const other = who === "customer" ? agentStream : customerStream;
        await other.until(`"${text}" on the other node`, isText(text));
      }
      // The customer's message ended the customer's typing on B's stream, and the agent's on A's.
      await agentStream.until("the customer's typing stopped, on B", (e) => e.type === ChatEventType.TYPING_STOPPED && e.from?.participantId === chat.participantId);
      await customerStream.until("the agent's typing stopped, on A", (e) => e.type === ChatEventType.TYPING_STOPPED && e.from?.participantId === accepted.participantId);

      // ---- A file uploaded on A, announced on B, downloaded on B byte for byte.
      const bytes = new Uint8Array(randomBytes(100 * 1024));
      const uploaded = await customer.uploadFile({ ...key, file: { filename: "invoice.pdf", contentType: "application/pdf", content: bytes } });
      await agentStream.until("FILE_UPLOADED on B", (e) => e.type === ChatEventType.FILE_UPLOADED && e.fileId === uploaded.fileId);
      const announced = agentStream.events.find((e) => e.fileId === uploaded.fileId)!;
      expect([announced.fileName, announced.fileSize, announced.fileContentType]).toEqual(["invoice.pdf", BigInt(bytes.byteLength), "application/pdf"]);
      const downloaded = await agentGrpc.downloadFile({ chatId: chat.chatId, fileId: uploaded.fileId });
      expect(downloaded.file?.file?.filename).toBe("invoice.pdf");
      expect(downloaded.file?.uploadedBy?.participantId).toBe(chat.participantId);
      expect(Buffer.from(downloaded.file?.file?.content ?? new Uint8Array()).equals(Buffer.from(bytes))).toBe(true);
      expect((await agentGrpc.getFileLimits({ chatId: chat.chatId })).limits).toMatchObject({ usedFiles: 1, usedBytes: BigInt(bytes.byteLength) });

      // ---- A long-poll on B, woken by a message sent on A.
      const from = BigInt(uploaded.position) + 1n;
      const pollStarted = Date.now();
      let pollDone = 0;
      const polling = agent.refresh({ chatId: chat.chatId, fromPosition: from, waitSeconds: 20 });
      void polling.then(() => (pollDone = Date.now()), () => undefined);
      await sleep(500);
      expect(pollDone, "the long-poll must still be waiting").toBe(0);
      const woke = await customer.sendMessage({ ...key, text: "are you there?" });
      const polled = await polling;
      expect(durable(polled.events)).toEqual([`${woke.position}:MESSAGE:CLIENT:are you there?`]);
      // Had the wake been lost, the poll would have answered only at its 20 s deadline.
      expect(pollDone - pollStarted).toBeLessThan(5000);
      await agentStream.until("the poll's message on the stream", isText("are you there?"));

      // ---- The customer polls on A too: A keeps a view of the chat and answers polls from memory.
      await customer.refresh({ ...key, fromPosition: 1n });

      // ---- Node B cut off Redis: its login disabled, its connections found in CLIENT LIST and killed.
      // Its reconnection attempts are refused at login, so it stays deaf (and mute) until restored.
      const before = agentStream.events.length;
      const refusedBefore = await refusedLogins(redisAdmin, B_USER);
      const ofB = await redisClientsOf(redisAdmin, B_USER);
      expect(ofB.length, "node B's Redis connections (publisher and subscriber)").toBeGreaterThanOrEqual(2);
      await redisAdmin.call("ACL", "SETUSER", B_USER, "off");
      let killed = 0;
      for (const id of ofB) killed += Number(await redisAdmin.call("CLIENT", "KILL", "ID", id));
      expect(killed).toBe(ofB.length);
      // Kept swept while cut: any connection of B's that did get in is killed and counted.
      let cutting = true;
      let sneakedIn = 0;
      const sweeper = (async () => {
        while (cutting) {
          for (const id of await redisClientsOf(redisAdmin, B_USER)) sneakedIn += Number(await redisAdmin.call("CLIENT", "KILL", "ID", id).catch(() => 0));
          await sleep(10);
        }
      })();
      try {
        await waitFor("node B's reconnection attempt to be refused", async () => (await refusedLogins(redisAdmin, B_USER)) > refusedBefore, 5000);
        const sent: { text: string; position: bigint }[] = [];
        for (let i = 1; i <= 10; i++) {
          const text = `while B is cut off #${i}`;
          const r = await customer.sendMessage({ ...key, text });
          sent.push({ text, position: r.position });
        }
        // Announced on Redis by A, unheard by B: B's stream finds them in the database at its periodic look (every 5 s).
        await agentStream.until("all 10 messages on B's stream", isText(sent[9].text), 12_000);
        const got = agentStream.events.slice(before).filter((e) => e.position > 0n);
        expect(got.map((e) => `${e.position}:${e.text}`)).toEqual(sent.map((s) => `${s.position}:${s.text}`));
        // The agent's reply, which B cannot announce, reaches A's stream through the database too.
        const reply = await agent.sendMessage({ chatId: chat.chatId, text: "sorry, I was away" });
        await customerStream.until("B's reply on A, without Redis", isText("sorry, I was away"), 12_000);
        // And in a poll on A, whose view of the chat heard nothing: A's periodic look finds it.
        await waitFor(
          "B's reply in a poll on A, without Redis",
          async () => (await customer.refresh({ ...key, fromPosition: reply.position })).events.some(isText("sorry, I was away")),
          12_000,
        );
        expect(await refusedLogins(redisAdmin, B_USER), "node B kept trying to reconnect, and was refused").toBeGreaterThan(refusedBefore);
      } finally {
        cutting = false;
        await sweeper;
      }
      expect(sneakedIn, "no connection of node B's got in while it was cut off").toBe(0);

      // ---- Redis restored: B logs in again at its next attempt, resubscribes, and live delivery is back.
      await redisAdmin.call("ACL", "SETUSER", B_USER, "on");
      await waitFor("node B back on Redis", async () => (await redisClientsOf(redisAdmin, B_USER)).length >= 2, 10_000);
      await waitFor(
        "node B resubscribed to the chat",
        async () => {
          const [, n] = (await redisAdmin.call("PUBSUB", "NUMSUB", `opengms:chat:${chat.chatId}`)) as [string, number];
          return Number(n) >= 2;
        },
        10_000,
      );
      for (let i = 1; i <= 3; i++) {
        const text = `after the cut #${i}`;
        const at = Date.now();
        await customer.sendMessage({ ...key, text });
        await agentStream.until(`"${text}" on B`, isText(text), 10_000);
        const arrived = agentStream.arrivals[agentStream.events.findIndex(isText(text))];
        // Live again: well before the 5 s periodic look.
        expect(arrived - at, `"${text}" delivered live`).toBeLessThan(2500);
      }
      await agent.sendMessage({ chatId: chat.chatId, text: "all sorted" });
      await customerStream.until("the agent's last line on A", isText("all sorted"));

      // ---- The customer leaves on A; both streams end by themselves after CHAT_ENDED.
      await customer.disconnect(key);
      expect(await customerStream.ended).toBeUndefined();
      expect(await agentStream.ended).toBeUndefined();

      // What was stored, read by a supervisor on A, is what both streams delivered: gapless, in order, once.
      const stored = await adminOnA.refresh({ chatId: chat.chatId, fromPosition: 1n });
      expect(stored.chatEnded).toBe(true);
      const transcript = durable(stored.events);
      expect(stored.events.map((e) => Number(e.position))).toEqual(Array.from({ length: stored.events.length }, (_, i) => i + 1));
      expect(transcript.at(-1)).toMatch(/:CHAT_ENDED:/);
      expect(durable(customerStream.events)).toEqual(transcript);
      expect(durable(agentStream.events)).toEqual(transcript);
      expect(transcript.filter((l) => l.includes(":MESSAGE:"))).toHaveLength(lines.length + 1 + 10 + 1 + 3 + 1);
    } catch (e) {
      // The nodes' own words help more than a timeout.
      process.stderr.write(`\n--- node A output ---\n${nodeA.output().slice(-4000)}\n--- node B output ---\n${nodeB.output().slice(-4000)}\n`);
      throw e;
    }
  }, 60_000);
});
