import http from "node:http";
import net from "node:net";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { LimitExceededSchema, PoolExhaustedSchema, RateLimitedSchema } from "../gen/gms/v1/error_details_pb.js";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import type { ManualClock } from "../src/clock.js";
import { Buckets } from "../src/rpc/rate-limit.js";
import { bearer, errorOf, waitFor } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const APP_KEY = "app-key-0123456789abcdef";
const BACKEND_KEY = "backend-key-0123456789abcdef";
const ADMIN_KEY = "admin-key-0123456789abcdef";
const AGENT_KEY = "agent-key-0123456789abcdef";
const UNKNOWN_ID = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";

const errorCode = (e: unknown) => ConnectError.from(e).code;

/** The limits are tight so a test reaches them in a few calls; each test calls from a loopback address of its own (its own peer). */
const config = {
  auth: {
    api_keys: [
      { name: "web", key: APP_KEY, roles: ["app"] },
      { name: "crm", key: BACKEND_KEY, roles: ["backend"] },
      { name: "ops", key: ADMIN_KEY, roles: ["admin"] },
      { name: "desk", key: AGENT_KEY, roles: ["agent"] },
    ],
  },
  resources: { one: { numbers: ["+18005550100"], locking: true } },
  rate_limits: {
    exempt_peers: [],
    roles: { app: { rate_per_second: 1, burst: 3 }, backend: { rate_per_second: 100, burst: 100 } },
    peer: { rate_per_second: 1, burst: 20 },
    chat_messages: { rate_per_second: 2, burst: 3 },
    streams_per_chat: 2,
  },
  services: { support: { service: "request-chat", endpoint: "support", ttl: 600 }, watched: { service: "request-chat", endpoint: "watched", ttl: 600 } },
};

/**
 * rateLimited checks a refusal is RESOURCE_EXHAUSTED with a RateLimited detail and a
 * google.rpc.RetryInfo saying the same wait (to the millisecond, RateLimited rounding it up to whole
 * seconds), and returns RateLimited's retry_after_seconds.
 */
function rateLimited(err: ConnectError): number {
  expect(err.code).toBe(Code.ResourceExhausted);
  const [detail] = err.findDetails(RateLimitedSchema);
  expect(detail).toBeDefined();
  const seconds = Number(detail?.retryAfterSeconds);
  expect(Math.max(1, Math.ceil(retryDelayMs(err) / 1000))).toBe(seconds);
  return seconds;
}

/** retryDelayMs is an error's google.rpc.RetryInfo retry_delay in milliseconds (the detail must be there). */
function retryDelayMs(err: ConnectError): number {
  const [info] = err.findDetails(RetryInfoSchema);
  expect(info?.retryDelay, "a google.rpc.RetryInfo detail").toBeDefined();
  return info?.retryDelay === undefined ? Number.NaN : durationMs(info.retryDelay);
}

/** rateLimitedTotal reads opengms_rate_limited_total{limit} from a scrape of /metrics (the admin key). */
async function rateLimitedTotal(url: string, limit: string): Promise<number> {
  const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  expect(res.status).toBe(200);
  const line = (await res.text()).split("\n").find((l) => l.startsWith(`opengms_rate_limited_total{limit="${limit}"} `));
  expect(line, `opengms_rate_limited_total{limit="${limit}"}`).toBeDefined();
  return Number(line?.split(" ")[1]);
}

describe.each(DIALECTS)("rate limits (%s)", (dialect) => {
  let t: TestServer;
  let clock: ManualClock;
  let port: number;

  beforeAll(async () => {
    t = await startTestServer(dialect, { config });
    clock = t.clock as ManualClock;
    port = t.server.port;
  });
  afterAll(() => t.close());

  /** transport calls the server from `from` (a loopback address), over gRPC (HTTP/2), Connect or gRPC-Web (HTTP/1.1), with a key or anonymously. */
  function transport(kind: "grpc" | "connect" | "grpc-web", from: string, key?: string): Transport {
    const interceptors: Interceptor[] = key === undefined ? [] : [bearer(key)];
    if (kind === "grpc") return createGrpcTransport({ baseUrl: t.server.url, interceptors, nodeOptions: { createConnection: () => net.connect({ host: "127.0.0.1", port, localAddress: from }) } });
    const options = { baseUrl: t.server.url, httpVersion: "1.1" as const, interceptors, nodeOptions: { localAddress: from, agent: false } };
    return kind === "connect" ? createConnectTransport(options) : createGrpcWebTransport(options);
  }

  /** get asks GMS's HTTP API from `from`: its status, Retry-After and body. */
  function get(path: string, from: string): Promise<{ status: number; retryAfter: string | undefined; body: string }> {
    return new Promise((resolve, reject) => {
      const req = http.get({ host: "127.0.0.1", port, path, localAddress: from, agent: false }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"], body }));
      });
      req.on("error", reject);
    });
  }

  const getData = (tr: Transport) => errorOf(createClient(StorageService, tr).getData({ dataId: UNKNOWN_ID }));

  it("refuses an API key over its burst on gRPC and Connect alike, spares another key, and refills with time", async () => {
    const grpc = transport("grpc", "127.0.0.2", APP_KEY);
    const connect = transport("connect", "127.0.0.2", APP_KEY);
    for (let i = 0; i < 3; i++) expect((await getData(i % 2 === 0 ? grpc : connect)).code).toBe(Code.NotFound);
    expect(rateLimited(await getData(grpc))).toBe(1);
    expect(rateLimited(await getData(connect))).toBe(1);
    // Another key from the same address is unaffected.
    expect((await getData(transport("grpc", "127.0.0.2", BACKEND_KEY))).code).toBe(Code.NotFound);
    // One second on the server's clock buys the app key one call (1 per second), not more.
    clock.advance(1000);
    expect((await getData(connect)).code).toBe(Code.NotFound);
    expect(rateLimited(await getData(grpc))).toBe(1);
  });

  it("refuses a peer address over its burst, whatever the key, and spares another address", async () => {
    const first = transport("connect", "127.0.0.3", BACKEND_KEY);
    for (let i = 0; i < 20; i++) expect((await getData(first)).code).toBe(Code.NotFound);
    expect(rateLimited(await getData(first))).toBe(1);
    expect(rateLimited(await getData(transport("grpc", "127.0.0.3", BACKEND_KEY)))).toBe(1);
    expect((await getData(transport("grpc", "127.0.0.4", BACKEND_KEY))).code).toBe(Code.NotFound);
    // RequestAccess over gRPC is the lean path's: the same policy, the same peer (its request is refused by validation, after the limit).
    const access = createClient(AccessService, transport("grpc", "127.0.0.8", BACKEND_KEY));
    for (let i = 0; i < 20; i++) expect((await errorOf(access.requestAccess({}))).code).not.toBe(Code.ResourceExhausted);
    expect(rateLimited(await errorOf(access.requestAccess({})))).toBe(1);
  });

  it("answers GMS's HTTP API over the limit with 429 and Retry-After, counting the HTTP caller's address", async () => {
    for (let i = 0; i < 20; i++) expect((await get(`/genesys/1/storage/${UNKNOWN_ID}`, "127.0.0.5")).status).toBe(404);
    const refused = await get(`/genesys/1/storage/${UNKNOWN_ID}`, "127.0.0.5");
    expect(refused.status).toBe(429);
    expect(refused.retryAfter).toBe("1");
    expect(JSON.parse(refused.body)).toMatchObject({ code: "resource_exhausted", retryAfterSeconds: 1 });
    // The in-process calls spent the HTTP caller's own bucket: the same address is refused over gRPC, another is not.
    expect(rateLimited(await getData(transport("grpc", "127.0.0.5", BACKEND_KEY)))).toBe(1);
    expect((await get(`/genesys/1/storage/${UNKNOWN_ID}`, "127.0.0.6")).status).toBe(404);
  });

  it("limits a chat's messages to its rate, bursts allowed, without touching another chat", async () => {
    const customer = createClient(ChatService, transport("grpc", "127.0.0.7"));
    const chat = await customer.requestChat({ service: "support", nickname: "Ann" });
    const other = await customer.requestChat({ service: "support", nickname: "Bo" });
    const send = (c: typeof chat, text: string) => customer.sendMessage({ chatId: c.chatId, secureKey: c.secureKey, text });
    for (let i = 0; i < 3; i++) await send(chat, `m${i}`);
    expect(rateLimited(await errorOf(send(chat, "one too many")))).toBe(1);
    await send(other, "another chat is unaffected");
    // Half a second refills one message at 2 per second.
    clock.advance(500);
    await send(chat, "after the wait");
    expect(rateLimited(await errorOf(send(chat, "again too many")))).toBe(1);
  });

  it("gives each sender its own bucket in a chat: another address knowing the chat's id cannot spend the customer's messages", async () => {
    const customer = createClient(ChatService, transport("grpc", "127.0.0.9"));
    const stranger = createClient(ChatService, transport("grpc", "127.0.0.10"));
    const chat = await customer.requestChat({ service: "support", nickname: "Cy" });
    // Wrong key: every send is refused by the chat rules, after the limit has taken its token.
    for (let i = 0; i < 3; i++) expect((await errorOf(stranger.sendMessage({ chatId: chat.chatId, secureKey: "not-the-key", text: "x" }))).code).not.toBe(Code.ResourceExhausted);
    expect(rateLimited(await errorOf(stranger.sendMessage({ chatId: chat.chatId, secureKey: "not-the-key", text: "x" })))).toBe(1);
    for (let i = 0; i < 3; i++) await customer.sendMessage({ chatId: chat.chatId, secureKey: chat.secureKey, text: `mine ${i}` });
  });

  it("says when to retry in google.rpc.RetryInfo beside RateLimited on gRPC, Connect and gRPC-Web, and counts each refusal by its limit", async () => {
    // The app key's bucket, spent by the tests before, refills.
    clock.advance(10_000);
    const keyBefore = await rateLimitedTotal(t.server.url, "key");
    const peerBefore = await rateLimitedTotal(t.server.url, "peer");
    const kinds = ["grpc", "connect", "grpc-web"] as const;
    for (let i = 0; i < 3; i++) expect((await getData(transport(kinds[i] ?? "grpc", "127.0.0.12", APP_KEY))).code).toBe(Code.NotFound);
    for (const kind of kinds) {
      const err = await getData(transport(kind, "127.0.0.12", APP_KEY));
      expect(rateLimited(err)).toBe(1);
      // The app key refills 1 token a second, and the clock has not moved: exactly one second.
      expect(retryDelayMs(err)).toBe(1000);
    }
    expect(await rateLimitedTotal(t.server.url, "key")).toBe(keyBefore + 3);
    expect(await rateLimitedTotal(t.server.url, "peer")).toBe(peerBefore);
    // A peer's refusal is counted under its own limit.
    const peer = transport("grpc-web", "127.0.0.13", BACKEND_KEY);
    for (let i = 0; i < 20; i++) expect((await getData(peer)).code).toBe(Code.NotFound);
    expect(rateLimited(await getData(peer))).toBe(1);
    expect(await rateLimitedTotal(t.server.url, "peer")).toBe(peerBefore + 1);
  });

  it("answers GMS's chat API over the message rate with 429 and Retry-After, and counts it", async () => {
    const post = (path: string, body: string) =>
      new Promise<{ status: number; retryAfter: string | undefined; body: string }>((resolve, reject) => {
        const req = http.request({ host: "127.0.0.1", port, path, method: "POST", localAddress: "127.0.0.14", agent: false, headers: { "content-type": "application/x-www-form-urlencoded" } }, (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (text += c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"], body: text }));
        });
        req.on("error", reject);
        req.end(body);
      });
    const before = await rateLimitedTotal(t.server.url, "chat_messages");
    const started = JSON.parse((await post("/genesys/2/chat/support", "nickname=Di")).body) as { chatId: string; userId: string; secureKey: string };
    const me = `userId=${started.userId}&secureKey=${encodeURIComponent(started.secureKey)}&alias=0`;
    for (let i = 0; i < 3; i++) expect((await post(`/genesys/2/chat/support/${started.chatId}/send`, `${me}&message=m${i}`)).status).toBe(200);
    const refused = await post(`/genesys/2/chat/support/${started.chatId}/send`, `${me}&message=again`);
    expect(refused.status).toBe(429);
    // 2 messages a second: half a second to wait, a whole second in Retry-After.
    expect(refused.retryAfter).toBe("1");
    expect(JSON.parse(refused.body)).toMatchObject({ statusCode: 2 });
    expect(await rateLimitedTotal(t.server.url, "chat_messages")).toBe(before + 1);
  });

  it("puts a RetryInfo on an exhausted locking pool's refusal: when its number frees up", async () => {
    clock.advance(10_000);
    const access = createClient(AccessService, transport("grpc", "127.0.0.15", APP_KEY));
    const first = await access.requestInteraction({ resourceGroup: "one", phoneNumber: "6505550001", bookingExpirationTimeoutSeconds: 20n });
    const err = await errorOf(access.requestInteraction({ resourceGroup: "one", phoneNumber: "6505550002" }));
    expect(err.code).toBe(Code.ResourceExhausted);
    const [pool] = err.findDetails(PoolExhaustedSchema);
    expect(pool?.nextFreeAt).toBeDefined();
    // The number frees up when its reservation lapses, 20 s on the server's clock from now.
    expect(retryDelayMs(err)).toBe(Number(first.access?.expiresAt?.seconds) * 1000 + Math.floor((first.access?.expiresAt?.nanos ?? 0) / 1e6) - clock.now());
    expect(Number(pool?.retryAfterSeconds)).toBe(20);
  });

  it("caps a chat's open Subscribe streams (rate_limits.streams_per_chat), customer's and agent's together, and frees a place when one closes", async () => {
    const customer = createClient(ChatService, transport("grpc", "127.0.0.16"));
    const agent = createClient(AgentService, transport("connect", "127.0.0.16", AGENT_KEY));
    const chat = await customer.requestChat({ service: "watched", nickname: "Ed" });
    expect((await agent.acceptChat({ endpoint: "watched", nickname: "Flo", waitSeconds: 5 })).chatId).toBe(chat.chatId);
    const before = await rateLimitedTotal(t.server.url, "streams_per_chat");
    const opened: AbortController[] = [];
    /** open starts a stream and reads its first event, so the server holds it open. */
    const open = async (who: "customer" | "agent") => {
      const abort = new AbortController();
      const stream =
        who === "customer"
          ? customer.subscribe({ chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n }, { signal: abort.signal })
          : agent.subscribe({ chatId: chat.chatId, fromPosition: 1n }, { signal: abort.signal });
      const it = stream[Symbol.asyncIterator]();
      try {
        await it.next();
      } catch (e) {
        abort.abort();
        throw e;
      }
      opened.push(abort);
    };
    try {
      await open("customer");
      await open("agent");
      const err = await errorOf(open("customer"));
      expect(err.code).toBe(Code.ResourceExhausted);
      expect(err.findDetails(LimitExceededSchema)[0]).toMatchObject({ limit: "rate_limits.streams_per_chat", max: 2n });
      expect(await rateLimitedTotal(t.server.url, "streams_per_chat")).toBe(before + 1);
      // Another chat has places of its own.
      const other = await customer.requestChat({ service: "support", nickname: "Gil" });
      const abort = new AbortController();
      opened.push(abort);
      await customer.subscribe({ chatId: other.chatId, secureKey: other.secureKey, fromPosition: 1n }, { signal: abort.signal })[Symbol.asyncIterator]().next();
      // Closing one of the chat's streams makes room, once the server has seen it close.
      opened.shift()?.abort();
      await waitFor("a place on the chat", () =>
        open("agent").then(
          () => true,
          (e: unknown) => {
            expect(errorCode(e)).toBe(Code.ResourceExhausted);
            return false;
          },
        ),
      );
    } finally {
      for (const a of opened) a.abort();
    }
  });
});

describe("Buckets", () => {
  it("holds at most its bound: a flood of distinct keys drops the least recently used, which comes back full", () => {
    const buckets = new Buckets(3);
    const rate = { rate_per_second: 1, burst: 1 };
    expect(buckets.take("a", rate, 0)).toBe(0);
    expect(buckets.take("a", rate, 0)).toBe(1000);
    for (let i = 0; i < 1000; i++) buckets.take(`flood-${i}`, rate, 0);
    expect(buckets.size).toBe(3);
    expect(buckets.take("a", rate, 0)).toBe(0);
  });
});
