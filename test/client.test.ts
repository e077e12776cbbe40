// @opengms/client (clients/js) against the real server over real sockets, on MariaDB: each
// transport from Node (Connect and gRPC-Web over fetch, gRPC over HTTP/2), a customer and an agent
// talking through the chat helpers, every event once and in order through connections the network
// kills (a TCP proxy cut and reopened), the long-poll fallback where streams do not get through
// (and not where the server is out of reach), the state a page shows (live as soon as a stream
// opens, reconnecting while nothing is answered), the queue watch resumed, and the typed errors
// decoded on every protocol.
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AgentChat,
  ChatEventType,
  Code,
  ConnectError,
  CustomerChat,
  GmsError,
  LimitExceeded,
  NoMatch,
  PoolExhausted,
  RateLimited,
  createClient,
  type ChatEvent,
  type GmsClient,
  type Interceptor,
  type Participant,
  type QueueUpdate,
  type SubscriptionState,
  type TransportKind,
} from "../clients/js/src/node.js";
import { systemClock } from "../src/clock.js";
import { DIALECTS } from "./helpers/databases.js";
import { waitFor } from "./helpers/calls.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";

const DESK_KEY = "desk-key-0123456789abcdef";
const IVR_KEY = "ivr-key-0123456789abcdef";
const ADMIN_KEY = "admin-key-0123456789abcdef";
const TRANSPORTS: TransportKind[] = ["connect", "grpc-web", "grpc"];

/** Endpoints of their own per test, so that an agent accepts the chat its test started. */
const ENDPOINTS = [
  ...["basics", "cut", "quiet"].flatMap((e) => TRANSPORTS.map((kind) => `${e}-${kind}`)),
  ...["fallback", "poll", "queue", "leave", "silent", "outage-poll", "outage-stream", "cut-short", "retry"],
];

const config = {
  auth: {
    api_keys: [
      { name: "desk", key: DESK_KEY, roles: ["agent"], acts_for_agents: true },
      { name: "ivr", key: IVR_KEY, roles: ["ivr"] },
      { name: "ops", key: ADMIN_KEY, roles: ["admin"] },
    ],
    public_roles: ["app"],
  },
  // The ivr key's bucket holds one call and, on the test's manual clock, never refills.
  rate_limits: { roles: { ivr: { rate_per_second: 1, burst: 1 } } },
  storage: { max_value_bytes: 64 },
  chat: { files: { require_agent: false } },
  resources: { tiny: { numbers: ["+18005550900"], locking: true, booking_expiration_timeout: 600 }, spare: { numbers: ["+18005550901"], locking: true } },
  services: Object.fromEntries(ENDPOINTS.map((e) => [e, { type: "builtin", service: "request-chat", endpoint: e, ttl: 3600 }])),
};

/** Seen is what a subscription delivered, as its handlers saw it. */
interface Seen {
  events: ChatEvent[];
  states: SubscriptionState[];
  typing: string[];
  files: ChatEvent[];
  ended: boolean;
  errors: GmsError[];
  stop: () => void;
}

/** follow subscribes a chat and records everything its handlers receive. */
function follow(chat: CustomerChat | AgentChat, options?: Parameters<CustomerChat["subscribe"]>[1]): Seen {
  const seen: Seen = { events: [], states: [], typing: [], files: [], ended: false, errors: [], stop: () => undefined };
  seen.stop = chat.subscribe(
    {
      event: (e) => seen.events.push(e),
      file: (e) => seen.files.push(e),
      typing: (who: Participant, on) => seen.typing.push(`${who.nickname}:${on ? "on" : "off"}`),
      ended: () => (seen.ended = true),
      state: (s) => seen.states.push(s),
      error: (e) => seen.errors.push(e),
    },
    { backoffMs: 50, maxBackoffMs: 500, ...options },
  );
  return seen;
}

/** positions are the delivered events' positions: 1..n with no gap and no duplicate when all is well. */
const positions = (s: Seen) => s.events.map((e) => Number(e.position));
const upTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);
const texts = (s: Seen) => s.events.filter((e) => e.type === ChatEventType.MESSAGE).map((e) => e.text);

/** Calls counts a client's calls by method name: started, and failed before an answer began (a refused connection). */
interface Calls {
  interceptor: Interceptor;
  started(method: string): number;
  failed(method: string): number;
}

function countCalls(): Calls {
  const started = new Map<string, number>();
  const failed = new Map<string, number>();
  const bump = (m: Map<string, number>, name: string) => m.set(name, (m.get(name) ?? 0) + 1);
  return {
    interceptor: (next) => async (req) => {
      bump(started, req.method.name);
      try {
        return await next(req);
      } catch (e) {
        bump(failed, req.method.name);
        throw e;
      }
    },
    started: (name) => started.get(name) ?? 0,
    failed: (name) => failed.get(name) ?? 0,
  };
}

/** reach waits until a subscription has delivered position n. */
const reach = (s: Seen, n: number, what = `position ${n}`) => waitFor(what, () => Number(s.events.at(-1)?.position ?? 0) >= n, 20_000);

/**
 * StreamBlocker is a TCP proxy that passes everything but streams: a connection that carries a
 * Subscribe request is destroyed as soon as the request goes by, as a proxy that cannot pass
 * streams would fail it — or, with `cutOnAnswer`, passed on and ended once the server's first
 * bytes have gone back (the stream's opening), as a proxy with a short timeout on responses would.
 * Unary calls (Refresh, the long-poll) go through.
 */
class StreamBlocker {
  private readonly sockets = new Set<net.Socket>();
  private server: net.Server | undefined;
  port = 0;
  /** streams counts the Subscribe requests that came by, blocked those it destroyed. */
  streams = 0;
  blocked = 0;
  /** passStreams lets streams through from now on (the network changed). */
  passStreams = false;
  /** cutOnAnswer passes streams' requests and ends them after their first answer (counted in `blocked`). */
  cutOnAnswer = false;

  constructor(private readonly target: number) {}

  async start(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target, "127.0.0.1");
      this.sockets.add(client).add(upstream);
      const end = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on("error", end).on("close", end);
      upstream.on("error", end).on("close", end);
      let answering = false;
      client.on("data", (chunk: Buffer) => {
        if (chunk.includes("/Subscribe")) this.streams++;
        if (!this.passStreams && chunk.includes("/Subscribe")) {
          if (!this.cutOnAnswer) {
            this.blocked++;
            return end();
          }
          answering = true;
        }
        upstream.write(chunk);
      });
      upstream.on("data", (chunk: Buffer) => {
        client.write(chunk);
        if (!answering) return;
        // What the server sent goes out first; then the response is cut short.
        this.blocked++;
        upstream.destroy();
        client.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }
}

describe.each(DIALECTS.filter((d) => d === "mysql"))("@opengms/client against the server on %s", (dialect) => {
  let t: TestServer;
  /** live is a server on the system clock: its long-polls end after their wait, as in production (the manual clock's never would). */
  let live: TestServer;
  let desk: (kind: TransportKind, agent: string) => GmsClient;
  let customer: (kind: TransportKind, baseUrl?: string) => GmsClient;

  beforeAll(async () => {
    t = await startTestServer(dialect, { config });
    live = await startTestServer(dialect, { config, clock: systemClock });
    desk = (kind, agent) => createClient({ baseUrl: t.server.url, apiKey: DESK_KEY, agent: { id: agent }, transport: kind });
    customer = (kind, baseUrl = t.server.url) => createClient({ baseUrl, transport: kind });
  });
  afterAll(async () => {
    await t?.close();
    await live?.close();
  });

  describe.each(TRANSPORTS)("over %s", (kind) => {
    it("a customer and an agent exchange messages, typing and a file through the helpers, every event once, and both see the end", async () => {
      const endpoint = `basics-${kind}`;
      const ann = await CustomerChat.start(customer(kind), { nickname: "Ann", subject: "Order 42", service: endpoint, userData: { tier: "gold" } });
      const annSeen = follow(ann);
      const bob = await AgentChat.accept(desk(kind, "bob"), { endpoint, nickname: "Bob", waitSeconds: 5 });
      expect(bob.chatId).toBe(ann.chatId);
      expect(bob.subject).toBe("Order 42");
      expect(bob.userData).toEqual({ tier: "gold" });
      const bobSeen = follow(bob);
      await reach(annSeen, 2, "both joins on the customer's side");
      await reach(bobSeen, 2, "both joins on the agent's side");
      await waitFor("the customer's stream to be live", () => annSeen.states.includes("live"));

      await ann.typing(true);
      await waitFor("the agent to see the customer typing", () => bobSeen.typing.includes("Ann:on"));
      expect(await ann.send("Where is my parcel?")).toBe(3);
      await waitFor("the agent to see the typing stop with the message", () => bobSeen.typing.includes("Ann:off"));
      await bob.send("It left this morning.");
      const limits = await ann.fileLimits();
      expect(Number(limits?.maxFileBytes)).toBeGreaterThan(0);
      const { fileId } = await bob.upload("label.txt", "text/plain", new TextEncoder().encode("parcel 42"));
      await reach(annSeen, 5, "the file on the customer's side");
      expect(annSeen.files.map((f) => f.fileId)).toEqual([fileId]);
      const file = await ann.download(fileId);
      expect(new TextDecoder().decode(file?.file?.content)).toBe("parcel 42");
      expect(file?.file?.filename).toBe("label.txt");

      await ann.leave();
      await waitFor("both sides to see the end", () => annSeen.ended && bobSeen.ended);
      expect(positions(annSeen)).toEqual(upTo(7));
      expect(positions(bobSeen)).toEqual(upTo(7));
      expect(texts(annSeen)).toEqual(["Where is my parcel?", "It left this morning."]);
      expect(annSeen.events.at(-1)?.type).toBe(ChatEventType.CHAT_ENDED);
      expect(annSeen.states.at(-1)).toBe("ended");
      expect(annSeen.errors).toEqual([]);
      expect(ann.position).toBe(7);
    });

    it("resumes from the last position when the network kills its connections, with no duplicate and no gap", async () => {
      const endpoint = `cut-${kind}`;
      const proxy = new TcpProxy("127.0.0.1", t.server.port);
      await proxy.start();
      try {
        const ann = await CustomerChat.start(customer(kind, `http://127.0.0.1:${proxy.port}`), { nickname: "Ann", service: endpoint });
        const seen = follow(ann);
        const bob = await AgentChat.accept(desk("grpc", "carl"), { endpoint, nickname: "Carl", waitSeconds: 5 });
        let sent = 0;
        const burst = async (n: number) => {
          for (let i = 0; i < n; i++) await bob.send(`m${++sent}`);
        };
        await burst(3);
        await reach(seen, 5);
        for (let round = 0; round < 3; round++) {
          // Every connection destroyed and the port closed while the agent keeps talking, then open again.
          await proxy.cut();
          await burst(4);
          await waitFor("the customer to notice the break", () => seen.states.at(-1) !== "live");
          await proxy.reopen();
          await burst(2);
          await reach(seen, 2 + sent, `all ${sent} messages after break ${round + 1}`);
        }
        // Connections destroyed with the listener kept (a restarting proxy): the same.
        await proxy.cut();
        await proxy.reopen();
        await burst(3);
        await reach(seen, 2 + sent);
        await ann.leave();
        await waitFor("the end", () => seen.ended);
        expect(positions(seen)).toEqual(upTo(2 + sent + 2));
        expect(texts(seen)).toEqual(Array.from({ length: sent }, (_, i) => `m${i + 1}`));
        expect(seen.states).toContain("reconnecting");
        expect(seen.errors).toEqual([]);
      } finally {
        await proxy.close();
      }
    });

    it("a resumed subscription of a quiet chat is live as soon as its stream opens, the customer's and the agent's", async () => {
      const endpoint = `quiet-${kind}`;
      const ann = await CustomerChat.start(customer(kind), { nickname: "Ann", service: endpoint });
      const quinn = await AgentChat.accept(desk(kind, "quinn"), { endpoint, nickname: "Quinn", waitSeconds: 5 });
      // Both pages reloaded once both joins were shown: nothing to replay, and nobody says anything.
      // (On the test server's manual clock no heartbeat ever comes: only the stream's opening shows.)
      const annAgain = follow(CustomerChat.resume(customer(kind), { ...ann.saved(), position: 2 }));
      const quinnAgain = follow(AgentChat.resume(desk(kind, "quinn"), { chatId: quinn.chatId, position: 2 }));
      await waitFor("both streams live", () => annAgain.states.at(-1) === "live" && quinnAgain.states.at(-1) === "live");
      for (const seen of [annAgain, quinnAgain]) {
        expect(seen.states).toEqual(["connecting", "live"]);
        expect(seen.events).toEqual([]);
      }
      await quinn.send("Still here.");
      await reach(annAgain, 3, "the agent's message");
      await reach(quinnAgain, 3, "the agent's own message");
      expect(annAgain.states).toEqual(["connecting", "live"]);
      await ann.leave();
      await waitFor("the end", () => annAgain.ended && quinnAgain.ended);
      expect(positions(annAgain)).toEqual([3, 4, 5]);
    });

    it("decodes the typed errors from the error details", async () => {
      const ops = createClient({ baseUrl: t.server.url, apiKey: ADMIN_KEY, transport: kind });
      // The one number of `tiny` is reserved by the first caller (whichever transport ran first).
      await ops.access.requestInteraction({ resourceGroup: "tiny", phoneNumber: "6504660000" }).catch(() => undefined);
      const pool = await ops.access.requestInteraction({ resourceGroup: "tiny", phoneNumber: "6504660001" }).catch((e: unknown) => e);
      expect(pool).toBeInstanceOf(PoolExhausted);
      expect(pool).toBeInstanceOf(GmsError);
      expect(pool).toBeInstanceOf(ConnectError);
      const p = pool as PoolExhausted;
      expect(p.code).toBe(Code.ResourceExhausted);
      expect(p.resourceGroup).toBe("tiny");
      expect(p.nextFreeAt).toBeInstanceOf(Date);
      expect(p.retryAfterMs).toBeGreaterThan(0);
      expect(ConnectError.from(p)).toBe(p);

      const none = await ops.access.matchInteraction({ accessNumber: "+18005550901", phoneNumber: "6504660000" }).catch((e: unknown) => e);
      expect(none).toBeInstanceOf(NoMatch);
      expect(none).not.toBeInstanceOf(PoolExhausted);
      expect((none as NoMatch).code).toBe(Code.NotFound);
      expect((none as NoMatch).reasonName).toBe("NO_RESERVATION");

      const big = await ops.storage.createData({ entries: { note: { kind: { case: "text", value: "x".repeat(100) } } } }).catch((e: unknown) => e);
      expect(big).toBeInstanceOf(LimitExceeded);
      expect(big).toMatchObject({ code: Code.InvalidArgument, limit: "storage.max_value_bytes", max: 64 });

      // The ivr key holds one call, never refilled: at most one more match is answered, then every one is refused.
      const ivr = createClient({ baseUrl: t.server.url, apiKey: IVR_KEY, transport: kind });
      const match = () => ivr.access.matchInteraction({ accessNumber: "+18005550901", phoneNumber: "6504660000" }).catch((e: unknown) => e);
      let refused = await match();
      if (!(refused instanceof RateLimited)) refused = await match();
      expect(refused).toBeInstanceOf(RateLimited);
      expect((refused as RateLimited).code).toBe(Code.ResourceExhausted);
      expect((refused as RateLimited).retryAfterMs).toBe(1000);
      expect((refused as RateLimited).until).toBeInstanceOf(Date);

      // Any other failure is a GmsError with its code, on the stream too (a wrong secure key), and not retried.
      const gone = await ops.session.getSession({ sessionId: "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b" }).catch((e: unknown) => e);
      expect(gone).toBeInstanceOf(GmsError);
      expect(gone).not.toBeInstanceOf(NoMatch);
      expect((gone as GmsError).code).toBe(Code.NotFound);
      const real = await CustomerChat.start(customer(kind), { nickname: "Eve", service: "poll" });
      const wrong = follow(CustomerChat.resume(customer(kind), { chatId: real.chatId, secureKey: "not-the-key" }));
      await waitFor("the refusal", () => wrong.errors.length > 0);
      expect(wrong.errors[0]).toBeInstanceOf(GmsError);
      expect(wrong.errors[0]?.code).toBe(Code.PermissionDenied);
      expect(wrong.ended).toBe(false);
      await real.leave();
    });
  });

  it("falls back to long-polling Refresh where streams do not get through, delivering what a stream delivers, typing too", async () => {
    const blocker = new StreamBlocker(live.server.port);
    await blocker.start();
    try {
      const ann = await CustomerChat.start(customer("connect", `http://127.0.0.1:${blocker.port}`), { nickname: "Ann", service: "fallback" });
      const polled = follow(ann, { fallbackAfter: 2, waitSeconds: 1 });
      const bob = await AgentChat.accept(createClient({ baseUrl: live.server.url, apiKey: DESK_KEY, agent: { id: "dora" }, transport: "grpc" }), { endpoint: "fallback", nickname: "Dora", waitSeconds: 5 });
      const streamed = follow(bob);
      await waitFor("the customer to poll", () => polled.states.includes("polling"));
      expect(blocker.blocked).toBeGreaterThanOrEqual(2);
      await bob.typing(true);
      await waitFor("the customer to see the agent typing by polling", () => polled.typing.includes("Dora:on"));
      for (let i = 1; i <= 5; i++) await bob.send(`p${i}`);
      await ann.send("thanks");
      await bob.end();
      await waitFor("both to see the end", () => polled.ended && streamed.ended);
      expect(polled.typing).toContain("Dora:off");
      expect(positions(polled)).toEqual(upTo(streamed.events.length));
      expect(polled.events.map((e) => [e.position, e.type, e.text])).toEqual(streamed.events.map((e) => [e.position, e.type, e.text]));
      expect(texts(polled)).toEqual(["p1", "p2", "p3", "p4", "p5", "thanks"]);
    } finally {
      await blocker.close();
    }
  });

  it("goes back to streaming after polling for a while, once streams get through again", async () => {
    const blocker = new StreamBlocker(t.server.port);
    await blocker.start();
    try {
      const ann = await CustomerChat.start(customer("grpc-web", `http://127.0.0.1:${blocker.port}`), { nickname: "Ann", service: "fallback" });
      const seen = follow(ann, { fallbackAfter: 1, waitSeconds: 1, retryStreamAfterMs: 0 });
      const bob = await AgentChat.accept(desk("grpc", "hugo"), { endpoint: "fallback", nickname: "Hugo", waitSeconds: 5 });
      await waitFor("the customer to poll", () => seen.states.includes("polling"));
      await bob.send("while polling");
      await reach(seen, 3);
      blocker.passStreams = true;
      const blockedSoFar = blocker.blocked;
      // (On the test server's manual clock a long-poll waits for the next event: this one ends it.)
      await bob.send("one more poll");
      await reach(seen, 4);
      await waitFor("the customer to try a stream again", () => blocker.streams > blocker.blocked);
      await bob.send("while streaming");
      await reach(seen, 5);
      await waitFor("the customer's stream to be live", () => seen.states.at(-1) === "live");
      expect(blocker.blocked).toBe(blockedSoFar);
      await bob.end();
      await waitFor("the end", () => seen.ended);
      expect(positions(seen)).toEqual(upTo(6));
      expect(seen.events.at(-1)?.type).toBe(ChatEventType.CHAT_ENDED);
      expect(texts(seen)).toEqual(["while polling", "one more poll", "while streaming"]);
      expect(() => ann.subscribe({})).not.toThrow();
    } finally {
      await blocker.close();
    }
  });

  it("while polling, tries one stream now and then, and keeps polling without a break when it does not get through", async () => {
    const blocker = new StreamBlocker(live.server.port);
    await blocker.start();
    try {
      const ann = await CustomerChat.start(customer("connect", `http://127.0.0.1:${blocker.port}`), { nickname: "Ann", service: "retry" });
      const seen = follow(ann, { fallbackAfter: 2, waitSeconds: 1, retryStreamAfterMs: 0 });
      await waitFor("the customer to poll", () => seen.states.at(-1) === "polling");
      const polledFrom = seen.states.length;
      const blocked = blocker.blocked;
      await waitFor("three more streams tried", () => blocker.blocked >= blocked + 3);
      // Each try was one stream, and the polls went on: the page never showed the chat offline.
      expect(seen.states.slice(polledFrom)).toEqual([]);
      await ann.leave();
      await waitFor("the end", () => seen.ended);
    } finally {
      await blocker.close();
    }
  });

  it("falls back to polling where streams are cut as soon as they open: the opening heartbeat is not taken for streams getting through", async () => {
    const blocker = new StreamBlocker(live.server.port);
    blocker.cutOnAnswer = true;
    await blocker.start();
    try {
      const ann = await CustomerChat.start(customer("connect", live.server.url), { nickname: "Ann", service: "cut-short" });
      const paul = await AgentChat.accept(createClient({ baseUrl: live.server.url, apiKey: DESK_KEY, agent: { id: "paul" }, transport: "grpc" }), { endpoint: "cut-short", nickname: "Paul", waitSeconds: 5 });
      // A reload once both joins were shown: every stream has nothing to replay, and opens with a heartbeat.
      const seen = follow(CustomerChat.resume(customer("connect", `http://127.0.0.1:${blocker.port}`), { ...ann.saved(), position: 2 }), { fallbackAfter: 2, waitSeconds: 1 });
      await waitFor("the customer to poll", () => seen.states.at(-1) === "polling");
      expect(seen.states).toContain("live");
      expect(blocker.blocked).toBeGreaterThanOrEqual(2);
      await paul.send("by polling");
      await reach(seen, 3, "the agent's message");
      await paul.end();
      await waitFor("the end", () => seen.ended);
      expect(positions(seen)).toEqual([3, 4]);
      expect(texts(seen)).toEqual(["by polling"]);
    } finally {
      await blocker.close();
    }
  });

  it("while it polls, says it is reconnecting as long as polls fail, and polling once one is answered", async () => {
    // Streams do not get through the blocker; the proxy in front of it is the customer's network.
    const blocker = new StreamBlocker(live.server.port);
    await blocker.start();
    const proxy = new TcpProxy("127.0.0.1", blocker.port);
    await proxy.start();
    try {
      const calls = countCalls();
      const ann = await CustomerChat.start(createClient({ baseUrl: `http://127.0.0.1:${proxy.port}`, transport: "connect", interceptors: [calls.interceptor] }), {
        nickname: "Ann",
        service: "outage-poll",
      });
      const seen = follow(ann, { fallbackAfter: 1, waitSeconds: 1 });
      const olga = await AgentChat.accept(createClient({ baseUrl: live.server.url, apiKey: DESK_KEY, agent: { id: "olga" }, transport: "grpc" }), { endpoint: "outage-poll", nickname: "Olga", waitSeconds: 5 });
      await reach(seen, 2, "both joins, by polling");
      expect(seen.states.at(-1)).toBe("polling");
      await proxy.cut();
      const cutAt = seen.states.length;
      const failed = calls.failed("Refresh");
      await waitFor("the customer to say it is reconnecting", () => seen.states.at(-1) === "reconnecting");
      await waitFor("three more polls to fail", () => calls.failed("Refresh") >= failed + 3);
      // Every poll failed, and the state said so all along.
      expect(seen.states.slice(cutAt)).toEqual(["reconnecting"]);
      await olga.send("during the outage");
      await proxy.reopen();
      await reach(seen, 3, "the message sent during the outage");
      await waitFor("the customer to say it is polling again", () => seen.states.at(-1) === "polling");
      expect(seen.states.slice(cutAt)).toEqual(["reconnecting", "polling"]);
      await olga.end();
      await waitFor("the end", () => seen.ended);
      expect(positions(seen)).toEqual(upTo(4));
      expect(seen.errors).toEqual([]);
    } finally {
      await proxy.close();
      await blocker.close();
    }
  });

  it("takes a server out of reach for an outage, not for streams that do not get through: it retries the stream, and streams again once the server is back", async () => {
    const proxy = new TcpProxy("127.0.0.1", t.server.port);
    await proxy.start();
    try {
      const calls = countCalls();
      const ann = await CustomerChat.start(createClient({ baseUrl: `http://127.0.0.1:${proxy.port}`, transport: "connect", interceptors: [calls.interceptor] }), {
        nickname: "Ann",
        service: "outage-stream",
      });
      const seen = follow(ann, { fallbackAfter: 2 });
      const otto = await AgentChat.accept(desk("grpc", "otto"), { endpoint: "outage-stream", nickname: "Otto", waitSeconds: 5 });
      await reach(seen, 2, "both joins");
      await waitFor("the stream live", () => seen.states.at(-1) === "live");
      await proxy.cut();
      const refused = calls.failed("Subscribe");
      await waitFor("the customer to say it is reconnecting", () => seen.states.at(-1) === "reconnecting");
      // Twice as many streams refused as would make it poll, had the server been answering.
      await waitFor("four streams refused", () => calls.failed("Subscribe") >= refused + 4);
      await otto.send("during the outage");
      await proxy.reopen();
      await reach(seen, 3, "the message sent during the outage");
      await waitFor("the stream live again", () => seen.states.at(-1) === "live");
      await otto.send("after it");
      await reach(seen, 4, "the message sent after");
      expect(seen.states).not.toContain("polling");
      expect(seen.states.at(-1)).toBe("live");
      await otto.end();
      await waitFor("the end", () => seen.ended);
      expect(texts(seen)).toEqual(["during the outage", "after it"]);
      expect(positions(seen)).toEqual(upTo(5));
    } finally {
      await proxy.close();
    }
  });

  it("abandons a stream and a poll that go silent (a half-open connection) and resumes when the network is back", async () => {
    const proxy = new TcpProxy("127.0.0.1", live.server.port);
    await proxy.start();
    try {
      const ann = await CustomerChat.start(customer("connect", `http://127.0.0.1:${proxy.port}`), { nickname: "Ann", service: "silent" });
      const seen = follow(ann, { idleTimeoutMs: 400, waitSeconds: 1 });
      const bob = await AgentChat.accept(createClient({ baseUrl: live.server.url, apiKey: DESK_KEY, agent: { id: "ivy" }, transport: "grpc" }), { endpoint: "silent", nickname: "Ivy", waitSeconds: 5 });
      await reach(seen, 2);
      // Bytes stop both ways, every socket stays open: nothing tells the client but silence.
      proxy.blackHole();
      for (let i = 1; i <= 3; i++) await bob.send(`s${i}`);
      await waitFor("the customer to give up on the silent stream", () => seen.states.at(-1) !== "live");
      proxy.restore();
      await reach(seen, 5, "the messages sent during the silence");
      await bob.end();
      await waitFor("the end", () => seen.ended);
      expect(positions(seen)).toEqual(upTo(6));
      expect(texts(seen)).toEqual(["s1", "s2", "s3"]);
      expect(seen.errors).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it("refuses a second subscription on the same chat while the first runs", async () => {
    const ann = await CustomerChat.start(customer("connect"), { nickname: "Ann", service: "poll" });
    const first = follow(ann);
    expect(() => ann.subscribe({})).toThrow(/already has a subscription/);
    first.stop();
    const second = follow(ann);
    await reach(second, 1);
    second.stop();
    await ann.leave();
  });

  it('polls from the start with mode "poll", and a resumed chat delivers only what comes after its position', async () => {
    const ann = await CustomerChat.start(customer("grpc"), { nickname: "Ann", service: "poll" });
    const bob = await AgentChat.accept(desk("connect", "erin"), { endpoint: "poll", nickname: "Erin", waitSeconds: 5 });
    const first = follow(ann, { mode: "poll", waitSeconds: 5 });
    await bob.send("one");
    await reach(first, 3);
    expect(first.states).not.toContain("live");
    first.stop();
    // A page reload: the position kept, a new client, the transcript after it only.
    const again = CustomerChat.resume(customer("grpc-web"), ann.saved());
    expect(again.position).toBe(3);
    const second = follow(again);
    await bob.send("two");
    await reach(second, 4);
    await again.leave();
    await waitFor("the end", () => second.ended);
    expect(positions(second)).toEqual([4, 5, 6]);
    expect(texts(second)).toEqual(["two"]);
  });

  it("ends an agent's subscription at their own leaving, and a resumed one on a chat already over at once", async () => {
    const ann = await CustomerChat.start(customer("connect"), { nickname: "Ann", service: "leave" });
    const fay = await AgentChat.accept(desk("grpc", "fay"), { endpoint: "leave", nickname: "Fay", waitSeconds: 5 });
    const seen = follow(fay);
    await reach(seen, 2);
    await fay.leave();
    await waitFor("the agent's subscription to end", () => seen.ended);
    expect(seen.events.at(-1)?.type).toBe(ChatEventType.PARTICIPANT_LEFT);
    await ann.leave();
    // A page reload after the customer saw the agent leave (position 3): the rest, and the end.
    const after = follow(CustomerChat.resume(customer("grpc"), { ...ann.saved(), position: 3 }));
    await waitFor("the resumed customer to see the end", () => after.ended);
    expect(positions(seen)).toEqual([1, 2, 3]);
    expect(positions(after)).toEqual([4, 5]);
    // Resumed past the end (a reload after the end was shown): ended at once, nothing delivered.
    const late = follow(CustomerChat.resume(customer("connect"), { ...ann.saved(), position: 5 }));
    await waitFor("the late customer to see the end", () => late.ended);
    expect(late.events).toEqual([]);
  });

  it("watches a queue, resumed after the network kills the stream, without heartbeats among the updates", async () => {
    const proxy = new TcpProxy("127.0.0.1", t.server.port);
    await proxy.start();
    try {
      const updates: QueueUpdate[] = [];
      const states: string[] = [];
      const watcher = createClient({ baseUrl: `http://127.0.0.1:${proxy.port}`, apiKey: DESK_KEY, agent: { id: "gus" }, transport: "connect" });
      const stop = AgentChat.watchQueue(watcher, "queue", { update: (q) => updates.push(q), state: (s) => states.push(s) }, { backoffMs: 50, maxBackoffMs: 500 });
      const waiting = () => updates.at(-1)?.waiting.map((w) => w.nickname) ?? [];
      await waitFor("the first update", () => updates.length > 0);
      expect(waiting()).toEqual([]);
      await CustomerChat.start(customer("grpc"), { nickname: "Hal", service: "queue" });
      await waitFor("Hal waiting", () => waiting().includes("Hal"));
      await proxy.cut();
      await CustomerChat.start(customer("grpc"), { nickname: "Ida", service: "queue" });
      await waitFor("the watch to notice the break", () => states.at(-1) === "reconnecting");
      await proxy.reopen();
      await waitFor("Hal and Ida waiting", () => waiting().join() === "Hal,Ida");
      stop();
      expect(updates.every((q) => !q.heartbeat)).toBe(true);
      expect(states.filter((s) => s === "live").length).toBeGreaterThanOrEqual(2);
      const gus = desk("grpc", "gus");
      for (const name of ["Hal", "Ida"]) expect((await AgentChat.accept(gus, { endpoint: "queue", nickname: "Gus" })).accepted?.customer?.nickname).toBe(name);
    } finally {
      await proxy.close();
    }
  });
});
