import http from "node:http";
import net from "node:net";
import { Code, createClient, type ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { RateLimitedSchema } from "../gen/gms/v1/error_details_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import type { ManualClock } from "../src/clock.js";
import { Buckets } from "../src/rpc/rate-limit.js";
import { bearer, errorOf } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const APP_KEY = "app-key-0123456789abcdef";
const BACKEND_KEY = "backend-key-0123456789abcdef";
const UNKNOWN_ID = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";

/** The limits are tight so a test reaches them in a few calls; each test calls from a loopback address of its own (its own peer). */
const config = {
  auth: {
    api_keys: [
      { name: "web", key: APP_KEY, roles: ["app"] },
      { name: "crm", key: BACKEND_KEY, roles: ["backend"] },
    ],
  },
  rate_limits: {
    exempt_peers: [],
    roles: { app: { rate_per_second: 1, burst: 3 }, backend: { rate_per_second: 100, burst: 100 } },
    peer: { rate_per_second: 1, burst: 20 },
    chat_messages: { rate_per_second: 2, burst: 3 },
  },
  services: { support: { service: "request-chat", endpoint: "support", ttl: 600 } },
};

/** rateLimited checks a refusal is RESOURCE_EXHAUSTED with a RateLimited detail and returns its retry_after_seconds. */
function rateLimited(err: ConnectError): number {
  expect(err.code).toBe(Code.ResourceExhausted);
  const [detail] = err.findDetails(RateLimitedSchema);
  expect(detail).toBeDefined();
  return Number(detail?.retryAfterSeconds);
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

  /** transport calls the server from `from` (a loopback address), over gRPC (HTTP/2) or Connect (HTTP/1.1), with a key or anonymously. */
  function transport(kind: "grpc" | "connect", from: string, key?: string): Transport {
    const interceptors: Interceptor[] = key === undefined ? [] : [bearer(key)];
    return kind === "grpc"
      ? createGrpcTransport({ baseUrl: t.server.url, interceptors, nodeOptions: { createConnection: () => net.connect({ host: "127.0.0.1", port, localAddress: from }) } })
      : createConnectTransport({ baseUrl: t.server.url, httpVersion: "1.1", interceptors, nodeOptions: { localAddress: from, agent: false } });
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
