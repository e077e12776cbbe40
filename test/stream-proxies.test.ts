// Streams through real proxies (issue 20, "streams that survive the internet"): Debian's nginx and
// HAProxy, run by the test on loopback with the README's configurations (test/helpers/proxies.ts:
// as written, with their own ports and short idle timeouts),
// between @opengms/client's chat helpers (clients/js) and the real server on MariaDB. nginx on
// HTTP/1.1 buffers proxied responses and gzips them, as many do; HAProxy and nginx cut a response
// that carries nothing for `IDLE_S`. The helpers deliver every event exactly once, in order:
// - with heartbeats, a stream quiet for three idle timeouts is never cut (one stream, no resume);
// - without them, the proxy cuts it and the helper resumes (the control: the proxy really cuts);
// - with a maximum age, streams end and the helper resumes from its last position + 1.
// Real time passes here (the proxies' own timers), but nothing is asserted about how long
// anything takes: only what was delivered, and how many streams the client had to open.
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { AgentChat, ChatEventType, CustomerChat, createClient, type ChatEvent, type GmsClient, type Interceptor, type SubscriptionState, type TransportKind } from "../clients/js/src/node.js";
import { systemClock } from "../src/clock.js";
import { waitFor } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startHaproxy, startNginx, type RunningProxy } from "./helpers/proxies.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const AGENT_KEY = "proxy-agent-key-0123456789";
/** IDLE_S is how long the proxies let a response carry nothing. */
const IDLE_S = 1;
const HEARTBEAT_S = 0.25;
const ENDPOINTS = Array.from({ length: 16 }, (_, i) => `proxied-${i}`);

const config = (streams: { heartbeat_seconds: number; max_age_seconds: number }) => ({
  server: { streams },
  auth: { api_keys: [{ name: "agent-pat", key: AGENT_KEY, roles: ["agent"] }], public_roles: ["app"] },
  services: Object.fromEntries(ENDPOINTS.map((e) => [e, { service: "request-chat", endpoint: e, ttl: 3600 }])),
});

/** Way is a proxy and a protocol through it. */
interface Way {
  name: string;
  transport: TransportKind;
  start(serverPort: number): Promise<RunningProxy>;
}

const WAYS: Way[] = [
  { name: "nginx (HTTP/1.1, buffering and gzip on), Connect", transport: "connect", start: (port) => startNginx(port, IDLE_S) },
  { name: "nginx (HTTP/1.1, buffering and gzip on), gRPC-Web", transport: "grpc-web", start: (port) => startNginx(port, IDLE_S) },
  { name: "nginx (grpc_pass), gRPC", transport: "grpc", start: (port) => startNginx(port, IDLE_S) },
  { name: "HAProxy, Connect over HTTP/1.1", transport: "connect", start: (port) => startHaproxy(port, IDLE_S) },
  { name: "HAProxy, gRPC over HTTP/2", transport: "grpc", start: (port) => startHaproxy(port, IDLE_S) },
];

/** Side is one chat helper's subscription as the test sees it, and the streams its client opened. */
interface Side {
  events: ChatEvent[];
  states: SubscriptionState[];
  streams: number;
  stop: () => void;
}

/** counting is a client interceptor that counts the streams a client opens. */
function counting(side: { streams: number }): Interceptor {
  return (next) => (req) => {
    if (req.stream) side.streams++;
    return next(req);
  };
}

const positions = (s: Side) => s.events.map((e) => Number(e.position));
const upTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);
const texts = (s: Side) => s.events.filter((e) => e.type === ChatEventType.MESSAGE).map((e) => e.text);
const reach = (s: Side, n: number, what: string) => waitFor(what, () => Number(s.events.at(-1)?.position ?? 0) >= n, 20_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Chat is a customer and an agent talking through the proxy, both following the chat with the
 * helpers' subscribe(), each client counting the streams it opens.
 */
interface Chat {
  customer: CustomerChat;
  agent: AgentChat;
  ann: Side;
  pat: Side;
  stop(): void;
}

/** DIALECT is MariaDB when it is reachable (always in CI). */
const DIALECT = DIALECTS.includes("mysql") ? "mysql" : "sqlite";

describe(`streams through real proxies, on ${DIALECT}`, () => {
  let withHeartbeats: TestServer;
  let withoutHeartbeats: TestServer;
  let ageing: TestServer;
  let endpoint = 0;

  beforeAll(async () => {
    // The proxies keep real time, so the servers do too.
    withHeartbeats = await startTestServer(DIALECT, { clock: systemClock, config: config({ heartbeat_seconds: HEARTBEAT_S, max_age_seconds: 0 }) });
    withoutHeartbeats = await startTestServer(DIALECT, { clock: systemClock, config: config({ heartbeat_seconds: 0, max_age_seconds: 0 }) });
    ageing = await startTestServer(DIALECT, { clock: systemClock, config: config({ heartbeat_seconds: HEARTBEAT_S, max_age_seconds: 1.5 }) });
  });
  afterAll(async () => {
    await withHeartbeats?.close();
    await withoutHeartbeats?.close();
    await ageing?.close();
  });

  /** talk starts a chat through the proxy: the customer asks, the agent accepts, both subscribe. */
  async function talk(proxy: RunningProxy, transport: TransportKind): Promise<Chat> {
    const service = ENDPOINTS[endpoint++ % ENDPOINTS.length] as string;
    const ann: Side = { events: [], states: [], streams: 0, stop: () => undefined };
    const pat: Side = { events: [], states: [], streams: 0, stop: () => undefined };
    const baseUrl = transport === "grpc" ? proxy.grpcUrl : proxy.url;
    const annClient: GmsClient = createClient({ baseUrl, transport, interceptors: [counting(ann)] });
    const patClient: GmsClient = createClient({ baseUrl, transport, apiKey: AGENT_KEY, interceptors: [counting(pat)] });
    const customer = await CustomerChat.start(annClient, { nickname: "Ann", service });
    const agent = await AgentChat.accept(patClient, { endpoint: service, nickname: "Pat", waitSeconds: 5 });
    expect(agent.chatId).toBe(customer.chatId);
    // The helpers' own watchdog (idleTimeoutMs) stays off the way: only the proxy may cut a stream.
    const options = { backoffMs: 50, maxBackoffMs: 200, idleTimeoutMs: 0 };
    ann.stop = customer.subscribe({ event: (e) => ann.events.push(e), state: (s) => ann.states.push(s) }, options);
    pat.stop = agent.subscribe({ event: (e) => pat.events.push(e), state: (s) => pat.states.push(s) }, options);
    // Stopped however the test ends (a failure included), before its proxy.
    onTestFinished(() => {
      ann.stop();
      pat.stop();
    });
    await reach(ann, 2, "both joins, on the customer's side");
    await reach(pat, 2, "both joins, on the agent's side");
    return {
      customer,
      agent,
      ann,
      pat,
      stop() {
        ann.stop();
        pat.stop();
      },
    };
  }

  describe.each(WAYS)("$name", (way) => {
    it("with heartbeats, a stream quiet for three idle timeouts is not cut: one stream each, every event once", async () => {
      const proxy = await way.start(withHeartbeats.server.port);
      onTestFinished(() => proxy.stop());
      const chat = await talk(proxy, way.transport);
      // An agent's queue watch through the same proxy, quiet as well.
      const queue = { updates: 0, states: [] as string[], streams: 0 };
      const watcher = createClient({ baseUrl: way.transport === "grpc" ? proxy.grpcUrl : proxy.url, transport: way.transport, apiKey: AGENT_KEY, interceptors: [counting(queue)] });
      const unwatch = AgentChat.watchQueue(watcher, "proxied-idle", { update: () => queue.updates++, state: (s) => queue.states.push(s) }, { backoffMs: 50, idleTimeoutMs: 0 });
      try {
        await chat.agent.send("Hello, how can I help?");
        await reach(chat.ann, 3, "the agent's greeting");
        await waitFor("the queue's first state", () => queue.updates === 1);
        await sleep(3 * IDLE_S * 1000);
        await chat.customer.send("My parcel is late.");
        await chat.agent.send("Let me look.");
        await reach(chat.ann, 5, "both messages, on the customer's side");
        await reach(chat.pat, 5, "both messages, on the agent's side");
        expect(positions(chat.ann)).toEqual(upTo(5));
        expect(positions(chat.pat)).toEqual(upTo(5));
        expect(texts(chat.ann)).toEqual(["Hello, how can I help?", "My parcel is late.", "Let me look."]);
        // Heartbeats kept every stream open: none was resumed, and the queue's were not passed on as updates.
        expect(chat.ann.streams).toBe(1);
        expect(chat.pat.streams).toBe(1);
        expect(chat.ann.states).toEqual(["connecting", "live"]);
        expect(queue.streams).toBe(1);
        expect(queue.updates).toBe(1);
        expect(queue.states).toEqual(["connecting", "live"]);
      } finally {
        unwatch();
        chat.stop();
      }
    });

    it("without heartbeats, the proxy cuts a quiet stream and the helper resumes: every event once", async () => {
      const proxy = await way.start(withoutHeartbeats.server.port);
      onTestFinished(() => proxy.stop());
      const chat = await talk(proxy, way.transport);
      try {
        await chat.agent.send("Hello?");
        await reach(chat.ann, 3, "the agent's message");
        await waitFor("the proxy to cut the customer's quiet stream, and the helper to open another", () => chat.ann.streams >= 2, 20_000);
        await chat.agent.send("Still there?");
        await chat.customer.send("Yes!");
        await reach(chat.ann, 5, "both messages, on the customer's side");
        await reach(chat.pat, 5, "both messages, on the agent's side");
        expect(positions(chat.ann)).toEqual(upTo(5));
        expect(positions(chat.pat)).toEqual(upTo(5));
        expect(texts(chat.ann)).toEqual(["Hello?", "Still there?", "Yes!"]);
      } finally {
        chat.stop();
      }
    });

    it("with a maximum age, streams end cleanly and the helper resumes from its last position + 1: every event once", async () => {
      const proxy = await way.start(ageing.server.port);
      onTestFinished(() => proxy.stop());
      const chat = await talk(proxy, way.transport);
      try {
        const sent: string[] = [];
        for (let i = 1; i <= 8; i++) {
          const text = `update ${i}`;
          await (i % 2 === 0 ? chat.customer.send(text) : chat.agent.send(text));
          sent.push(text);
          await sleep(400);
        }
        await reach(chat.ann, 10, "every message, on the customer's side");
        await reach(chat.pat, 10, "every message, on the agent's side");
        expect(positions(chat.ann)).toEqual(upTo(10));
        expect(positions(chat.pat)).toEqual(upTo(10));
        expect(texts(chat.ann)).toEqual(sent);
        expect(texts(chat.pat)).toEqual(sent);
        // 3.2 s of a chat on streams that live at most 1.5 s: each side resumed at least once.
        expect(chat.ann.streams).toBeGreaterThanOrEqual(2);
        expect(chat.pat.streams).toBeGreaterThanOrEqual(2);
      } finally {
        chat.stop();
      }
    });
  });
});
