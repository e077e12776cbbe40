// Long-lived streams kept alive for proxies (src/rpc/keepalive.ts, server.streams): a quiet stream
// gets heartbeats, a chat stream with nothing to replay one at once (its client sees it open), a
// stream past its maximum age ends cleanly and resumes by position with nothing
// lost or doubled, every stream's response tells proxies not to buffer it, on every protocol and
// both serving paths; in-process streams (CometD) get none of it. Time is the test's ManualClock:
// the heartbeats and the ends come when the clock is moved, never after a real wait.
import { ConnectError, createClient, type CallOptions, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { CometD, type Message } from "cometd";
import { adapt } from "cometd-nodejs-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentService, type QueueUpdate } from "../gen/gms/v1/agent_pb.js";
import { ChatEventType, type ChatEvent } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { ManualClock } from "../src/clock.js";
import { waitFor } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

adapt();

const AGENT = { name: "agent-kim", key: "keepalive-agent-key-0123" };
const HEARTBEAT_MS = 10_000;
const MAX_AGE_MS = 100_000;

const config = (streams: { heartbeat_seconds: number; max_age_seconds: number }) => ({
  server: { streams },
  auth: { api_keys: [{ name: AGENT.name, key: AGENT.key, roles: ["agent"] }], public_roles: ["app"] },
  services: { lobby: { service: "request-chat", endpoint: "lobby", ttl: 3600 }, desk: { service: "request-chat", endpoint: "desk", ttl: 3600 } },
});

/** Reader reads a stream in the background: what it received, its response headers, and how it ended. */
interface Reader<T> {
  readonly items: T[];
  readonly headers: Promise<Headers>;
  /** ended resolves when the stream ends: undefined when it ended cleanly (OK), else its error. */
  readonly ended: Promise<ConnectError | undefined>;
  stop(): Promise<void>;
}

function read<T>(open: (options: CallOptions) => AsyncIterable<T>): Reader<T> {
  const items: T[] = [];
  const abort = new AbortController();
  let gotHeaders: (h: Headers) => void = () => undefined;
  const headers = new Promise<Headers>((resolve) => (gotHeaders = resolve));
  const ended = (async () => {
    try {
      for await (const item of open({ signal: abort.signal, onHeader: gotHeaders })) items.push(item);
      return undefined;
    } catch (e) {
      return ConnectError.from(e);
    }
  })();
  return {
    items,
    headers,
    ended,
    async stop() {
      abort.abort();
      await ended;
    },
  };
}

const isHeartbeat = (e: ChatEvent) => e.type === ChatEventType.HEARTBEAT;
const stored = (events: readonly ChatEvent[]) => events.filter((e) => e.position > 0n).map((e) => Number(e.position));

/** The ways a client streams: gRPC takes the lean path, Connect and gRPC-Web connect's. */
const WAYS: { name: string; transport: (t: TestServer) => Transport }[] = [
  { name: "gRPC (lean path)", transport: (t) => t.grpc },
  { name: "Connect JSON over HTTP/1.1 (connect's path)", transport: (t) => t.connect },
  { name: "gRPC-Web over HTTP/1.1 (connect's path)", transport: (t) => createGrpcWebTransport({ baseUrl: t.server.url, httpVersion: "1.1" }) },
];

describe.each(DIALECTS)("stream heartbeats on %s", (dialect) => {
  let t: TestServer;
  let clock: ManualClock;
  beforeAll(async () => {
    clock = new ManualClock(Date.now());
    t = await startTestServer(dialect, { clock, config: config({ heartbeat_seconds: HEARTBEAT_MS / 1000, max_age_seconds: 0 }) });
  });
  afterAll(() => t.close());

  it.each(WAYS)("a quiet chat stream gets HEARTBEAT events, only once it has been quiet that long, over $name", async ({ transport }) => {
    const customer = createClient(ChatService, transport(t));
    const chat = await customer.requestChat({ service: "lobby", nickname: "Quiet" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const stream = read((o) => customer.subscribe({ ...key, fromPosition: 1n }, o));
    try {
      await waitFor("the replay", () => stream.items.length === 1);
      const headers = await stream.headers;
      expect(headers.get("cache-control")).toBe("no-cache, no-transform");
      expect(headers.get("x-accel-buffering")).toBe("no");

      // Quiet for less than the interval: the next thing on the stream is the message, no heartbeat.
      clock.advance(HEARTBEAT_MS - 1_000);
      await customer.sendMessage({ ...key, text: "one" });
      await waitFor("the first message", () => stream.items.some((e) => e.text === "one"));
      expect(stream.items.filter(isHeartbeat)).toEqual([]);

      // The message made the stream busy: quiet again for less than the interval, still nothing...
      clock.advance(HEARTBEAT_MS - 1_000);
      await customer.sendMessage({ ...key, text: "two" });
      await waitFor("the second message", () => stream.items.some((e) => e.text === "two"));
      expect(stream.items.filter(isHeartbeat)).toEqual([]);

      // ...then quiet for a whole interval and a quarter: a heartbeat, live only (position 0).
      clock.advance(HEARTBEAT_MS * 1.25);
      await waitFor("a heartbeat", () => stream.items.some(isHeartbeat));
      await customer.sendMessage({ ...key, text: "three" });
      await waitFor("the third message", () => stream.items.some((e) => e.text === "three"));
      const beats = stream.items.filter(isHeartbeat);
      expect(beats.length).toBe(1);
      expect(beats[0]?.position).toBe(0n);
      expect(stored(stream.items)).toEqual([1, 2, 3, 4]);
      expect(stream.items.indexOf(beats[0] as ChatEvent)).toBe(3);
      // The stream was not ended by anything: the heartbeats are all it got in between.
      expect(stream.items.length).toBe(5);
    } finally {
      await stream.stop();
    }
  });

  it.each(WAYS)("a chat stream with nothing to replay opens with one HEARTBEAT at once, the customer's and the agent's, over $name", async ({ transport }) => {
    const customer = createClient(ChatService, transport(t));
    const agent = createClient(AgentService, transport(t));
    const asAgent = { headers: { authorization: `Bearer ${AGENT.key}` } };
    const chat = await customer.requestChat({ service: "desk", nickname: "Early" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    expect((await agent.acceptChat({ endpoint: "desk", nickname: "Kim", waitSeconds: 5 }, asAgent)).chatId).toBe(chat.chatId);
    // Both joins are stored (positions 1 and 2): streams from 3 have nothing to replay.
    const customerStream = read((o) => customer.subscribe({ ...key, fromPosition: 3n }, o));
    const agentStream = read((o) => agent.subscribe({ chatId: chat.chatId, fromPosition: 3n }, { ...o, ...asAgent }));
    try {
      // The clock has not moved: this heartbeat is the opening one, and the headers came with it.
      await waitFor("the opening heartbeats", () => customerStream.items.length === 1 && agentStream.items.length === 1);
      for (const stream of [customerStream, agentStream]) {
        expect(stream.items[0]?.type).toBe(ChatEventType.HEARTBEAT);
        expect(stream.items[0]?.position).toBe(0n);
        expect((await stream.headers).get("x-accel-buffering")).toBe("no");
      }
      // Then the stream carries what comes, and the next heartbeat only after a whole quiet interval.
      await customer.sendMessage({ ...key, text: "hello" });
      await waitFor("the message on both", () => customerStream.items.length === 2 && agentStream.items.length === 2);
      clock.advance(HEARTBEAT_MS - 1_000);
      await customer.sendMessage({ ...key, text: "again" });
      await waitFor("the second message on both", () => customerStream.items.length === 3 && agentStream.items.length === 3);
      for (const stream of [customerStream, agentStream]) {
        expect(stream.items.map((e) => [Number(e.position), e.type])).toEqual([
          [0, ChatEventType.HEARTBEAT],
          [3, ChatEventType.MESSAGE],
          [4, ChatEventType.MESSAGE],
        ]);
      }
    } finally {
      await customerStream.stop();
      await agentStream.stop();
    }
  });

  it.each(WAYS)("a quiet WatchQueue repeats its last state, marked heartbeat, over $name", async ({ transport }) => {
    const customer = createClient(ChatService, t.grpc);
    await customer.requestChat({ service: "lobby", nickname: "Waiting" });
    const agent = createClient(AgentService, transport(t));
    const stream = read<QueueUpdate>((o) => agent.watchQueue({ endpoint: "lobby" }, { ...o, headers: { authorization: `Bearer ${AGENT.key}` } }));
    try {
      await waitFor("the queue's state", () => stream.items.length === 1);
      expect((await stream.headers).get("x-accel-buffering")).toBe("no");
      const first = stream.items[0] as QueueUpdate;
      expect(first.heartbeat).toBe(false);
      clock.advance(HEARTBEAT_MS * 1.25);
      await waitFor("a heartbeat", () => stream.items.length === 2);
      const beat = stream.items[1] as QueueUpdate;
      expect(beat.heartbeat).toBe(true);
      expect({ ...beat, heartbeat: false }).toEqual(first);
    } finally {
      await stream.stop();
    }
  });

  it("a quiet health Watch repeats its status", async () => {
    const health = createClient(Health, t.grpc);
    const stream = read((o) => health.watch({ service: "" }, o));
    try {
      await waitFor("the status", () => stream.items.length === 1);
      clock.advance(HEARTBEAT_MS * 1.25);
      await waitFor("a heartbeat", () => stream.items.length === 2);
      expect(stream.items.map((r) => r.status)).toEqual([Status.SERVING, Status.SERVING]);
    } finally {
      await stream.stop();
    }
  });
});

describe.each(DIALECTS)("the maximum stream age on %s", (dialect) => {
  let t: TestServer;
  let clock: ManualClock;
  beforeAll(async () => {
    clock = new ManualClock(Date.now());
    t = await startTestServer(dialect, { clock, config: config({ heartbeat_seconds: 0, max_age_seconds: MAX_AGE_MS / 1000 }) });
  });
  afterAll(() => t.close());

  it.each(WAYS)("a stream ends cleanly at its age (less up to a tenth) and resumes from its last position + 1, over $name", async ({ transport }) => {
    const customer = createClient(ChatService, transport(t));
    const chat = await customer.requestChat({ service: "lobby", nickname: "Ageing" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const listeners = t.server.app.bus.listenerCount();
    const first = read((o) => customer.subscribe({ ...key, fromPosition: 1n }, o));
    await waitFor("the replay", () => first.items.length === 1);

    // Younger than nine tenths of the age: open, and delivering.
    clock.advance(MAX_AGE_MS * 0.9 - 1_000);
    await customer.sendMessage({ ...key, text: "before" });
    await waitFor("the message", () => first.items.some((e) => e.text === "before"));

    // Past the age: the stream ends, OK, with no CHAT_ENDED, and the server lets go of it.
    clock.advance(MAX_AGE_MS * 0.1 + 1_000);
    expect(await first.ended).toBeUndefined();
    expect(first.items.map((e) => e.type)).not.toContain(ChatEventType.CHAT_ENDED);
    await waitFor("the server to let go of the stream", () => t.server.app.bus.listenerCount() === listeners);

    // What happens meanwhile is read by the resumed stream, once.
    await customer.sendMessage({ ...key, text: "between" });
    const last = Number(first.items.at(-1)?.position);
    const second = read((o) => customer.subscribe({ ...key, fromPosition: BigInt(last + 1) }, o));
    try {
      await waitFor("the message sent between", () => second.items.some((e) => e.text === "between"));
      await customer.sendMessage({ ...key, text: "after" });
      await waitFor("the message sent after", () => second.items.some((e) => e.text === "after"));
      expect([...stored(first.items), ...stored(second.items)]).toEqual([1, 2, 3, 4]);
    } finally {
      await second.stop();
    }
  });

  it("an in-process stream (CometD) gets no heartbeat and is not ended at the maximum age", async () => {
    const channel = "/service/chatV2/desk";
    const got: { chatId?: string; secureKey?: string; messages?: { type: string; text?: string; from: { type: string } }[] }[] = [];
    const client = new CometD();
    client.unregisterTransport("websocket");
    client.configure({ url: `${t.server.url}/genesys/cometd` });
    expect((await new Promise<Message>((resolve) => client.handshake(resolve))).successful).toBe(true);
    client.addListener(channel, (m) => got.push(m.data as (typeof got)[number]));
    const agent = createClient(AgentService, t.transport("grpc", AGENT.key));
    const messages = () => got.flatMap((r) => r.messages ?? []);
    try {
      client.publish(channel, { operation: "requestChat", nickname: "Bayeux" });
      const started = await waitFor("requestChat's reply", () => got.find((r) => r.secureKey !== undefined));
      const chatId = started.chatId ?? "";
      expect((await agent.acceptChat({ endpoint: "desk", nickname: "Kim", waitSeconds: 5 })).chatId).toBe(chatId);
      await waitFor("the agent joining", () => messages().some((m) => m.type === "ParticipantJoined" && m.from.type === "Agent"));
      clock.advance(MAX_AGE_MS * 2);
      await agent.sendMessage({ chatId, text: "still there?" });
      await waitFor("the agent's message, after the maximum age", () => got.some((r) => (r.messages ?? []).some((m) => m.text === "still there?")));
      expect(messages().map((m) => m.type)).not.toContain("Heartbeat");
    } finally {
      await new Promise<void>((resolve) => client.disconnect(() => resolve()));
    }
  });
});

describe("streams without keepalive", () => {
  let t: TestServer;
  let clock: ManualClock;
  beforeAll(async () => {
    clock = new ManualClock(Date.now());
    t = await startTestServer("sqlite", { clock, config: config({ heartbeat_seconds: 0, max_age_seconds: 0 }) });
  });
  afterAll(() => t.close());

  it("heartbeat_seconds 0 and max_age_seconds 0: a stream quiet for a day gets nothing and stays open", async () => {
    const customer: Client<typeof ChatService> = createClient(ChatService, t.grpc);
    const chat = await customer.requestChat({ service: "lobby", nickname: "Patient" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const stream = read((o) => customer.subscribe({ ...key, fromPosition: 1n }, o));
    try {
      await waitFor("the replay", () => stream.items.length === 1);
      // Within the chat's hour-long TTL, in steps the stream watch keeps up with.
      for (let i = 0; i < 30; i++) clock.advance(100_000);
      await customer.sendMessage({ ...key, text: "later" });
      await waitFor("the message", () => stream.items.some((e) => e.text === "later"));
      expect(stream.items.map((e) => Number(e.position))).toEqual([1, 2]);
      expect((await stream.headers).get("x-accel-buffering")).toBe("no");
    } finally {
      await stream.stop();
    }
  });

  it("heartbeat_seconds 0: a stream with nothing to replay gets no opening heartbeat, only what comes", async () => {
    const customer: Client<typeof ChatService> = createClient(ChatService, t.grpc);
    const chat = await customer.requestChat({ service: "lobby", nickname: "Plain" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const stream = read((o) => customer.subscribe({ ...key, fromPosition: 2n }, o));
    try {
      await customer.sendMessage({ ...key, text: "first" });
      await waitFor("the message", () => stream.items.length > 0);
      expect(stream.items.map((e) => [Number(e.position), e.type])).toEqual([[2, ChatEventType.MESSAGE]]);
    } finally {
      await stream.stop();
    }
  });
});
