// The customer's CometD session on node A, the agent on gRPC on node B: two servers on one MySQL
// database and one Redis. The Bayeux session stays on A (as a sticky load balancer keeps it); the
// events B stores reach it through ChatService.Subscribe on A, fed by the Redis bus, as they reach
// any gRPC stream on A.
import { randomBytes } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CometD, type Message } from "cometd";
import { adapt } from "cometd-nodejs-client";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { systemClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { openDatabase } from "../src/store/database.js";
import { bearer, waitFor } from "./helpers/calls.js";
import { createTestDatabase, DIALECTS } from "./helpers/databases.js";

adapt();

const REDIS_URL = process.env["GMS_TEST_REDIS_URL"] ?? "redis://127.0.0.1:6379";

async function redisReachable(): Promise<boolean> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  redis.on("error", () => undefined);
  try {
    await redis.connect();
    await redis.ping();
    return true;
  } catch {
    if (process.env["CI"]) throw new Error(`Redis at ${REDIS_URL} is unreachable; CI requires it`);
    process.stderr.write(`\n*** Redis at ${REDIS_URL} is unreachable: the CometD multi-node test is SKIPPED ***\n\n`);
    return false;
  } finally {
    redis.disconnect();
  }
}

const runnable = (await redisReachable()) && DIALECTS.includes("mysql");
const AGENT = { name: "agent-bob", key: "cometd-nodes-agent-key-01" };
/** ENDPOINT is this run's own queue, so a concurrent run on the same Redis never takes our chat. */
const ENDPOINT = `cometd-${randomBytes(4).toString("hex")}`;

interface Reply {
  statusCode: number;
  chatId?: string;
  secureKey?: string;
  userId?: string;
  chatEnded?: boolean;
  messages?: { index?: number; type: string; text?: string; from: { type: string } }[];
}

describe.runIf(runnable)("a CometD customer on one node, a gRPC agent on another (MySQL + Redis)", () => {
  let a: RunningServer;
  let b: RunningServer;

  beforeAll(async () => {
    const config = parseConfig(
      {
        server: { host: "127.0.0.1", port: 0, shutdown_grace_seconds: 1 },
        auth: { api_keys: [{ name: AGENT.name, key: AGENT.key, roles: ["agent"] }], public_roles: ["app"] },
        bus: { redis_url: REDIS_URL },
        services: { support: { service: "request-chat", endpoint: ENDPOINT, ttl: 600 } },
      },
      "test",
    );
    const log = pino({ level: "silent" });
    const dbA = await createTestDatabase("mysql");
    a = await startServer({ config, db: dbA, log, clock: systemClock, sweep: false });
    b = await startServer({ config, db: await openDatabase(dbA.url), log, clock: systemClock, sweep: false });
  });
  afterAll(async () => {
    // B first: A's database is dropped when A closes it.
    await b?.shutdown();
    await a?.shutdown();
  });

  it("streams what the agent on B says to the Bayeux session on A, and A's customer's words to B", async () => {
    const channel = "/service/chatV2/support";
    const got: Reply[] = [];
    const client = new CometD();
    client.unregisterTransport("websocket");
    client.configure({ url: `${a.url}/genesys/cometd` });
    expect((await new Promise<Message>((resolve) => client.handshake(resolve))).successful).toBe(true);
    client.addListener(channel, (m) => got.push(m.data as Reply));
    const agent = createClient(AgentService, createGrpcTransport({ baseUrl: b.url, interceptors: [bearer(AGENT.key)] }));
    const has = (type: string, text?: string) => () => got.find((r) => (r.messages ?? []).some((m) => m.type === type && (text === undefined || m.text === text)));
    try {
      client.publish(channel, { operation: "requestChat", nickname: "Nora", subject: "two nodes" });
      const started = await waitFor("requestChat's reply on A", () => got.find((r) => r.secureKey !== undefined));
      const chatId = started.chatId ?? "";

      const accepted = await agent.acceptChat({ endpoint: ENDPOINT, nickname: "Bob", waitSeconds: 10 });
      expect(accepted.chatId).toBe(chatId);
      await waitFor("B's agent joining, on A", has("ParticipantJoined"));
      await agent.sendTyping({ chatId, typing: true });
      await waitFor("B's agent typing, on A", has("TypingStarted"));
      await agent.sendMessage({ chatId, text: "Hello from node B" });
      await waitFor("B's message, on A", has("Message", "Hello from node B"));

      client.publish(channel, { operation: "sendMessage", message: "Hello from node A" });
      await waitFor("A's message, at B", async () => (await agent.refresh({ chatId, fromPosition: 1n })).events.some((e) => e.text === "Hello from node A"));

      await agent.endChat({ chatId });
      const ended = await waitFor("the end, on A", () => got.find((r) => r.chatEnded === true));
      expect(ended.statusCode).toBe(0);
      const indexes = got.flatMap((r) => (r.messages ?? []).flatMap((m) => (m.index === undefined ? [] : [m.index])));
      const stored = (await agent.refresh({ chatId, fromPosition: 1n })).events.map((e) => Number(e.position));
      expect([...new Set(indexes)]).toEqual(stored);
    } finally {
      await new Promise<void>((resolve) => client.disconnect(() => resolve()));
    }
  });
});
