// The lean path (src/rpc/lean-path.ts): gRPC calls of the chat streams served without
// connect-node's handler. Real servers on port 0, real sockets; each behaviour is checked against
// what the connect path answers, and, byte for byte, against a server whose handler leaves every
// call to connect.
import * as http from "node:http";
import * as http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { create, fromBinary, fromJsonString, toBinary, toJsonString, type MessageInitShape, type DescMessage, type DescService, type MessageShape } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentService, AgentServiceSubscribeRequestSchema, WatchQueueRequestSchema } from "../gen/gms/v1/agent_pb.js";
import { ChatEventSchema, ChatEventType, type ChatEvent } from "../gen/gms/v1/chat_event_pb.js";
import { MatchInteractionRequestSchema, MatchInteractionResponseSchema, RequestInteractionRequestSchema, RequestInteractionResponseSchema } from "../gen/gms/v1/access_pb.js";
import { ChatService, RefreshRequestSchema, RefreshResponseSchema, SubscribeRequestSchema, type RequestChatResponse } from "../gen/gms/v1/chat_pb.js";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import { createHealthMonitor } from "../src/health.js";
import { listen, type Listener } from "../src/listen.js";
import { createCallTracker, type CallTracker } from "../src/rpc/observe.js";
import { createApp, createHandler } from "../src/server.js";
import { grpcMessage } from "../src/rpc/connect-internals.js";
import { errorOf, waitFor } from "./helpers/calls.js";
import { createTestDatabase, DIALECTS, type TestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const AGENT = { name: "agent-a", key: "agent-a-key-0123456789" };
const OTHER_AGENT = { name: "agent-b", key: "agent-b-key-0123456789" };
const BACKEND = { name: "crm", key: "backend-key-0123456789" };
const IVR = { name: "ivr", key: "ivr-key-0123456789abcd" };
const UNKNOWN_CHAT = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";

/** Customers need no key; "support" chats are accepted by the tests, "lobby" chats stay waiting. */
const config = {
  auth: {
    api_keys: [
      { name: AGENT.name, key: AGENT.key, roles: ["agent"] },
      { name: OTHER_AGENT.name, key: OTHER_AGENT.key, roles: ["agent"] },
      { name: BACKEND.name, key: BACKEND.key, roles: ["backend"] },
      { name: IVR.name, key: IVR.key, roles: ["ivr"] },
    ],
    public_roles: ["app"],
  },
  services: {
    support: { service: "request-chat", endpoint: "support", ttl: 600 },
    lobby: { service: "request-chat", endpoint: "lobby", ttl: 600 },
  },
  resources: { ivr: { numbers: ["+18005550100..+18005550109"], locking: true } },
};

/** durable renders a stream's stored events (position > 0) for comparison. */
const durable = (events: readonly ChatEvent[]) => events.filter((e) => e.position > 0n).map((e) => `${e.position}:${ChatEventType[e.type]}:${e.from?.participantId}:${e.text}`);

/** Reader collects a server stream's items in the background until it ends or fails. */
interface Reader<T> {
  readonly items: T[];
  /** ended resolves when the stream ends, with its error if it failed. */
  readonly ended: Promise<ConnectError | undefined>;
}

function read<T>(stream: AsyncIterable<T>): Reader<T> {
  const items: T[] = [];
  const ended = (async () => {
    try {
      for await (const e of stream) items.push(e);
      return undefined;
    } catch (e) {
      return ConnectError.from(e);
    }
  })();
  return { items, ended };
}

/** GrpcJsReader is a @grpc/grpc-js server stream's messages and its final status. */
interface GrpcJsReader {
  readonly items: ChatEvent[];
  /** status resolves with the stream's final status (code, details, trailing metadata). */
  readonly status: Promise<grpc.StatusObject>;
  cancel(): void;
}

/** GrpcJsClient is a plain @grpc/grpc-js client of one service. */
interface GrpcJsClient {
  /** stream starts a server stream of the named method. */
  stream(method: string, req: unknown): GrpcJsReader;
  close(): void;
}

/** grpcJsClient builds a plain @grpc/grpc-js client of a service from the generated descriptors, sending `key` if given. */
function grpcJsClient(service: DescService, port: number, key?: string): GrpcJsClient {
  const definition: grpc.ServiceDefinition = Object.fromEntries(
    service.methods.map((m) => [
      m.name,
      {
        path: `/${service.typeName}/${m.name}`,
        requestStream: false,
        responseStream: m.methodKind === "server_streaming",
        requestSerialize: (msg: MessageShape<DescMessage>) => Buffer.from(toBinary(m.input, msg)),
        requestDeserialize: (bytes: Buffer) => fromBinary(m.input, bytes),
        responseSerialize: (msg: MessageShape<DescMessage>) => Buffer.from(toBinary(m.output, msg)),
        responseDeserialize: (bytes: Buffer) => fromBinary(m.output, bytes),
      },
    ]),
  );
  const Ctor = grpc.makeGenericClientConstructor(definition, service.name);
  const client = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (key !== undefined) metadata.set("authorization", `Bearer ${key}`);
  type Start = (req: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<ChatEvent>;
  return {
    stream: (method, req) => grpcJsRead((client as unknown as Record<string, Start>)[method]!.call(client, req, metadata)),
    close: () => client.close(),
  };
}

/** grpcJsRead collects a @grpc/grpc-js server stream. */
function grpcJsRead(stream: grpc.ClientReadableStream<ChatEvent>): GrpcJsReader {
  const items: ChatEvent[] = [];
  stream.on("data", (e: ChatEvent) => items.push(e));
  // The error event carries the same status; the status event always comes.
  stream.on("error", () => undefined);
  const status = new Promise<grpc.StatusObject>((resolve) => stream.on("status", resolve));
  return { items, status, cancel: () => stream.cancel() };
}

/** RawResponse is a gRPC response as it went over the wire: headers (without date), body bytes, trailers. */
interface RawResponse {
  headers: Record<string, unknown>;
  body: string;
  trailers: Record<string, unknown> | undefined;
  rstCode: number;
}

/** envelope frames one request message as gRPC does (flag byte, 4-byte length). */
function envelope(bytes: Uint8Array, flags = 0): Buffer {
  const b = Buffer.alloc(5 + bytes.length);
  b[0] = flags;
  b.writeUInt32BE(bytes.length, 1);
  b.set(bytes, 5);
  return b;
}

/** messagesIn splits a response body into its envelopes' payloads. */
function messagesIn(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at + 5 <= body.length; at += 5 + body.readUInt32BE(at + 1)) out.push(body.subarray(at + 5, at + 5 + body.readUInt32BE(at + 1)));
  return out;
}

/**
 * rawCall makes one gRPC call with node:http2 on a connection of its own and returns what came
 * back; `whileOpen` runs once the first response message has arrived, with the stream.
 */
function rawCall(url: string, path: string, body: Uint8Array, headers: Record<string, string> = {}, whileOpen?: (stream: http2.ClientHttp2Stream) => void): Promise<RawResponse> {
  const session = http2.connect(url);
  session.on("error", () => undefined);
  return new Promise<RawResponse>((resolve) => {
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc+proto", te: "trailers", ...headers });
    const out: RawResponse = { headers: {}, body: "", trailers: undefined, rstCode: 0 };
    let received = Buffer.alloc(0);
    stream.on("response", (h) => {
      // date and x-request-id (a new UUID per call, tested in test/logs.test.ts) vary from call to call.
      const { date: _date, "x-request-id": _requestId, ...rest } = Object.fromEntries(Object.entries(h));
      out.headers = rest;
    });
    stream.on("data", (chunk: Buffer) => {
      const first = received.length === 0;
      received = Buffer.concat([received, chunk]);
      if (first) whileOpen?.(stream);
    });
    stream.on("trailers", (t: http2.IncomingHttpHeaders) => (out.trailers = Object.fromEntries(Object.entries(t).filter(([k]) => k !== "x-request-id"))));
    stream.on("error", () => undefined);
    stream.on("close", () => {
      out.body = received.toString("hex");
      out.rstCode = stream.rstCode ?? 0;
      session.close();
      resolve(out);
    });
    stream.end(body);
  });
}

const subscribeBody = (m: { chatId?: string; secureKey?: string; fromPosition?: bigint }) => envelope(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, m)));
const CHAT_SUBSCRIBE = "/gms.v1.ChatService/Subscribe";
const REFRESH = "/gms.v1.ChatService/Refresh";
const REQUEST_INTERACTION = "/gms.v1.AccessService/RequestInteraction";
const MATCH_INTERACTION = "/gms.v1.AccessService/MatchInteraction";

describe.each(DIALECTS)("the lean path on %s", (dialect) => {
  let t: TestServer;
  let grpcCustomer: Client<typeof ChatService>;
  let connectCustomer: Client<typeof ChatService>;
  let grpcAgent: Client<typeof AgentService>;
  let connectAgent: Client<typeof AgentService>;
  const listeners = () => t.server.app.bus.listenerCount();

  /** accepted starts a support chat and lets the agent accept it. */
  async function accepted(): Promise<RequestChatResponse> {
    const chat = await grpcCustomer.requestChat({ service: "support", nickname: "Ann" });
    expect((await connectAgent.acceptChat({ endpoint: "support", nickname: "Bob", waitSeconds: 0 })).chatId).toBe(chat.chatId);
    return chat;
  }

  beforeAll(async () => {
    t = await startTestServer(dialect, { config, clock: new ManualClock(Date.now()) });
    grpcCustomer = createClient(ChatService, t.grpc);
    connectCustomer = createClient(ChatService, t.connect);
    grpcAgent = createClient(AgentService, t.transport("grpc", AGENT.key));
    connectAgent = createClient(AgentService, t.transport("connect", AGENT.key));
  });
  afterAll(() => t?.close());

  it("a customer's Subscribe over gRPC (connect-node and @grpc/grpc-js) gets what Connect gets, and ends OK after CHAT_ENDED", async () => {
    const chat = await accepted();
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const viaGrpc = read(grpcCustomer.subscribe({ ...key, fromPosition: 1n }));
    const viaConnect = read(connectCustomer.subscribe({ ...key, fromPosition: 1n }));
    const grpcJs = grpcJsClient(ChatService, t.server.port);
    try {
      const viaGrpcJs = grpcJs.stream("Subscribe", create(SubscribeRequestSchema, { ...key, fromPosition: 1n }));
      await waitFor("every stream's replay", () => [viaGrpc.items, viaConnect.items, viaGrpcJs.items].every((s) => s.length >= 2));
      await connectAgent.sendMessage({ chatId: chat.chatId, text: "hello Ann" });
      await grpcCustomer.sendTyping({ ...key, typing: true });
      await grpcCustomer.sendMessage({ ...key, text: "hi", clientMessageId: "m-1" });
      await connectCustomer.disconnect(key);

      expect(await viaGrpc.ended).toBeUndefined();
      expect(await viaConnect.ended).toBeUndefined();
      const status = await viaGrpcJs.status;
      expect(status.code).toBe(grpc.status.OK);
      const transcript = durable((await connectCustomer.refresh({ ...key, fromPosition: 0n })).events);
      expect(transcript.map((e) => e.split(":")[1])).toEqual(["PARTICIPANT_JOINED", "PARTICIPANT_JOINED", "MESSAGE", "MESSAGE", "PARTICIPANT_LEFT", "CHAT_ENDED"]);
      expect(durable(viaGrpc.items)).toEqual(transcript);
      expect(durable(viaGrpcJs.items)).toEqual(transcript);
      expect(durable(viaConnect.items)).toEqual(transcript);
      // Whole events, not just their positions: the same messages every way.
      expect(viaGrpc.items).toEqual(viaConnect.items);
      expect(viaGrpcJs.items.map((e) => toBinary(ChatEventSchema, e))).toEqual(viaConnect.items.map((e) => toBinary(ChatEventSchema, e)));
    } finally {
      grpcJs.close();
    }
  });

  it("a long-poll over gRPC (Refresh with wait_seconds) wakes on an event, and lets go of its wait when its client goes", async () => {
    const chat = await accepted();
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const first = await grpcCustomer.refresh({ ...key, fromPosition: 1n });
    const before = listeners();
    const woken = grpcCustomer.refresh({ ...key, fromPosition: first.nextPosition, waitSeconds: 30 });
    await waitFor("the long-poll waiting", () => listeners() > before);
    await connectAgent.sendMessage({ chatId: chat.chatId, text: "wake up" });
    const reply = await woken;
    expect(reply.events.map((e) => e.text)).toContain("wake up");
    await waitFor("its wait let go", () => listeners() === before);
    // The clock never moves here: only the client going away can end this one.
    const going = new AbortController();
    const cancelled = grpcCustomer.refresh({ ...key, fromPosition: reply.nextPosition, waitSeconds: 30 }, { signal: going.signal });
    await waitFor("the second long-poll waiting", () => listeners() > before);
    going.abort();
    expect((await errorOf(cancelled)).code).toBe(Code.Canceled);
    await waitFor("the cancelled wait let go", () => listeners() === before);
  });

  it("AgentService Subscribe and WatchQueue over gRPC get what Connect gets", async () => {
    const waiting = await grpcCustomer.requestChat({ service: "lobby", nickname: "Queued" });
    const controller = new AbortController();
    const queueViaGrpc = read(grpcAgent.watchQueue({ endpoint: "lobby" }, { signal: controller.signal }));
    const queueViaConnect = read(connectAgent.watchQueue({ endpoint: "lobby" }, { signal: controller.signal }));
    await waitFor("both queues' first state", () => queueViaGrpc.items.length > 0 && queueViaConnect.items.length > 0);
    expect(queueViaGrpc.items[0]?.waiting.map((w) => w.chatId)).toContain(waiting.chatId);
    expect(queueViaGrpc.items[0]).toEqual(queueViaConnect.items[0]);
    controller.abort();

    const chat = await accepted();
    const viaGrpc = read(grpcAgent.subscribe({ chatId: chat.chatId, fromPosition: 1n }));
    const viaConnect = read(connectAgent.subscribe({ chatId: chat.chatId, fromPosition: 1n }));
    await waitFor("both replays", () => viaGrpc.items.length >= 2 && viaConnect.items.length >= 2);
    await grpcCustomer.sendMessage({ chatId: chat.chatId, secureKey: chat.secureKey, text: "question" });
    await connectAgent.endChat({ chatId: chat.chatId });
    expect(await viaGrpc.ended).toBeUndefined();
    expect(await viaConnect.ended).toBeUndefined();
    expect(durable(viaGrpc.items).at(-1)).toMatch(/:CHAT_ENDED:/);
    expect(viaGrpc.items).toEqual(viaConnect.items);
  });

  it("refuses as the connect path does: missing or unknown key, a role short, a wrong secure key, an unknown chat", async () => {
    const chat = await accepted();
    const streamError = async (stream: AsyncIterable<unknown>) => errorOf((async () => { for await (const _ of stream) throw new Error("the stream should have failed before any event"); })());
    const agentCases: [string, string | undefined, Code][] = [
      ["no key", undefined, Code.Unauthenticated],
      ["unknown key", "not-a-key", Code.Unauthenticated],
      ["a backend key", BACKEND.key, Code.PermissionDenied],
      ["an agent not in the chat", OTHER_AGENT.key, Code.PermissionDenied],
    ];
    for (const [what, key, code] of agentCases) {
      const viaGrpc = await streamError(createClient(AgentService, t.transport("grpc", key)).subscribe({ chatId: chat.chatId, fromPosition: 1n }));
      const viaConnect = await streamError(createClient(AgentService, t.transport("connect", key)).subscribe({ chatId: chat.chatId, fromPosition: 1n }));
      expect(viaGrpc.code, what).toBe(code);
      expect(viaGrpc.rawMessage, what).toBe(viaConnect.rawMessage);
      expect(viaGrpc.code, what).toBe(viaConnect.code);
    }
    const customerCases: [string, { chatId: string; secureKey: string }][] = [
      ["a wrong secure key", { chatId: chat.chatId, secureKey: "not-the-key" }],
      ["an unknown chat", { chatId: UNKNOWN_CHAT, secureKey: chat.secureKey }],
    ];
    for (const [what, key] of customerCases) {
      const viaGrpc = await streamError(grpcCustomer.subscribe({ ...key, fromPosition: 1n }));
      const viaConnect = await streamError(connectCustomer.subscribe({ ...key, fromPosition: 1n }));
      expect(viaGrpc.code, what).toBe(Code.PermissionDenied);
      expect([viaGrpc.code, viaGrpc.rawMessage], what).toEqual([viaConnect.code, viaConnect.rawMessage]);
    }
    // A plain gRPC client sees the same.
    const grpcJs = grpcJsClient(AgentService, t.server.port, "not-a-key");
    try {
      const status = await grpcJs.stream("Subscribe", create(AgentServiceSubscribeRequestSchema, { chatId: chat.chatId })).status;
      expect(status.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(status.details).toBe("invalid API key");
    } finally {
      grpcJs.close();
    }
  });

  it("an invalid request is INVALID_ARGUMENT with the buf.validate.Violations detail the validate interceptor gives", async () => {
    const bad = { chatId: "not-a-uuid", secureKey: "k", fromPosition: -1n };
    const viaGrpc = await errorOf((async () => { for await (const _ of grpcCustomer.subscribe(bad)) break; })());
    const viaConnect = await errorOf((async () => { for await (const _ of connectCustomer.subscribe(bad)) break; })());
    expect(viaGrpc.code).toBe(Code.InvalidArgument);
    const fields = (e: ConnectError) => e.findDetails(ViolationsSchema).flatMap((v) => v.violations.map((x) => `${x.field?.elements.map((f) => f.fieldName).join(".")}:${x.ruleId}`));
    expect(fields(viaGrpc).sort()).toEqual(["chat_id:string.uuid", "from_position:int64.gte_lte"]);
    expect(fields(viaGrpc)).toEqual(fields(viaConnect));
    expect(viaGrpc.rawMessage).toBe(viaConnect.rawMessage);

    // A plain gRPC client gets the detail in grpc-status-details-bin.
    const grpcJs = grpcJsClient(AgentService, t.server.port, AGENT.key);
    try {
      const status = await grpcJs.stream("WatchQueue", create(WatchQueueRequestSchema, { endpoint: "" })).status;
      expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
      const bin = status.metadata.get("grpc-status-details-bin")[0] as Buffer;
      const error = findTrailerError(new Headers({ "grpc-status-details-bin": bin.toString("base64") }));
      expect(error?.details.map((d) => ("type" in d ? d.type : d.desc.typeName))).toEqual(["buf.validate.Violations"]);
      expect(error?.findDetails(ViolationsSchema).flatMap((v) => v.violations.map((x) => x.ruleId))).toEqual(["string.min_len"]);
    } finally {
      grpcJs.close();
    }
  });

  it("a client cancelling (RST_STREAM, or dropping the connection) ends the subscription and frees it on the server", async () => {
    const before = listeners();
    const chats = await Promise.all([1, 2, 3].map((i) => grpcCustomer.requestChat({ service: "lobby", nickname: `c${i}` })));
    // connect-node cancels with RST_STREAM.
    const controller = new AbortController();
    const viaConnectNode = chats.map((c) => read(grpcCustomer.subscribe({ chatId: c.chatId, secureKey: c.secureKey, fromPosition: 1n }, { signal: controller.signal })));
    await waitFor("three open streams", () => viaConnectNode.every((s) => s.items.length > 0));
    expect(listeners()).toBe(before + 3);
    controller.abort();
    await waitFor("the server to let go of the cancelled streams", () => listeners() === before);

    // A connection dropped under an open stream.
    const session = http2.connect(t.server.url);
    const stream = session.request({ ":method": "POST", ":path": CHAT_SUBSCRIBE, "content-type": "application/grpc" });
    const first = new Promise((resolve) => stream.once("data", resolve));
    stream.on("error", () => undefined);
    stream.end(subscribeBody({ chatId: chats[0]!.chatId, secureKey: chats[0]!.secureKey, fromPosition: 1n }));
    await first;
    expect(listeners()).toBe(before + 1);
    session.destroy();
    await waitFor("the server to let go of the dropped stream", () => listeners() === before);

    // @grpc/grpc-js cancels too.
    const grpcJs = grpcJsClient(ChatService, t.server.port);
    try {
      const r = grpcJs.stream("Subscribe", create(SubscribeRequestSchema, { chatId: chats[1]!.chatId, secureKey: chats[1]!.secureKey, fromPosition: 1n }));
      await waitFor("the grpc-js stream's replay", () => r.items.length > 0);
      expect(listeners()).toBe(before + 1);
      r.cancel();
      expect((await r.status).code).toBe(grpc.status.CANCELLED);
      await waitFor("the server to let go of the grpc-js stream", () => listeners() === before);
    } finally {
      grpcJs.close();
    }
  });

  it("a compressed request: gzip is read, an unknown encoding is UNIMPLEMENTED, a compressed message without an encoding INVALID_ARGUMENT", async () => {
    const before = listeners();
    const chat = await grpcCustomer.requestChat({ service: "lobby", nickname: "Gzip" });
    const request = toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n }));
    const gz = await rawCall(t.server.url, CHAT_SUBSCRIBE, envelope(gzipSync(request), 1), { "grpc-encoding": "gzip", "grpc-accept-encoding": "gzip" }, (s) => s.close(http2.constants.NGHTTP2_CANCEL));
    // A stream's response tells proxies not to buffer it (STREAM_HEADERS).
    expect(gz.headers).toEqual({ ":status": 200, "content-type": "application/grpc+proto", "grpc-encoding": "gzip", "cache-control": "no-cache, no-transform", "x-accel-buffering": "no" });
    const [joined] = messagesIn(Buffer.from(gz.body, "hex"));
    expect(fromBinary(ChatEventSchema, joined!).type).toBe(ChatEventType.PARTICIPANT_JOINED);

    const snappy = await rawCall(t.server.url, CHAT_SUBSCRIBE, envelope(request), { "grpc-encoding": "snappy" });
    expect(snappy.trailers).toEqual({
      "grpc-status": String(Code.Unimplemented),
      "grpc-message": grpcMessage('unknown compression "snappy": supported encodings are gzip,br'),
      "grpc-accept-encoding": "gzip,br",
    });
    const flagged = await rawCall(t.server.url, CHAT_SUBSCRIBE, envelope(request, 1));
    expect(flagged.trailers?.["grpc-status"]).toBe(String(Code.InvalidArgument));
    expect(flagged.body).toBe("");
    await waitFor("no stream left open", () => listeners() === before);
  });

  it("grpc-timeout: the stream ends with DEADLINE_EXCEEDED", async () => {
    const before = listeners();
    const chat = await grpcCustomer.requestChat({ service: "lobby", nickname: "Deadline" });
    const res = await rawCall(t.server.url, CHAT_SUBSCRIBE, subscribeBody({ chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n }), { "grpc-timeout": "300m" });
    expect(messagesIn(Buffer.from(res.body, "hex")).map((m) => ChatEventType[fromBinary(ChatEventSchema, m).type])).toEqual(["PARTICIPANT_JOINED"]);
    expect(res.trailers).toEqual({ "grpc-status": String(Code.DeadlineExceeded), "grpc-message": grpcMessage("the operation timed out") });
    const bad = await rawCall(t.server.url, CHAT_SUBSCRIBE, subscribeBody({ chatId: chat.chatId, secureKey: chat.secureKey }), { "grpc-timeout": "soon" });
    expect(bad.trailers?.["grpc-status"]).toBe(String(Code.InvalidArgument));
    await waitFor("no stream left open", () => listeners() === before);
  });
});

describe.each(DIALECTS)("a server shutting down on %s", (dialect) => {
  let t: TestServer | undefined;
  afterAll(() => t?.close());

  it("ends open gRPC streams with UNAVAILABLE", async () => {
    t = await startTestServer(dialect, { config });
    const customer = createClient(ChatService, t.grpc);
    const chat = await customer.requestChat({ service: "lobby", nickname: "Late" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n };
    const viaConnectNode = read(customer.subscribe(key));
    const grpcJs = grpcJsClient(ChatService, t.server.port);
    try {
      const viaGrpcJs = grpcJs.stream("Subscribe", create(SubscribeRequestSchema, key));
      await waitFor("both streams' replay", () => viaConnectNode.items.length > 0 && viaGrpcJs.items.length > 0);
      await t.close();
      expect((await viaConnectNode.ended)?.code).toBe(Code.Unavailable);
      const status = await viaGrpcJs.status;
      expect(status.code).toBe(grpc.status.UNAVAILABLE);
      // grpc-js leaves connect's %3B encoded: the same over either path.
      expect(status.details).toMatch(/^the server is shutting down/);
      expect(t.server.app.bus.listenerCount()).toBe(0);
    } finally {
      grpcJs.close();
    }
  });
});

/** Pair is one app served twice: with the lean path, and by connect alone. */
interface Pair {
  lean: { url: string; tracker: CallTracker };
  connect: { url: string; tracker: CallTracker };
  customer: Client<typeof ChatService>;
  close(): Promise<void>;
}

/**
 * usePair starts a Pair on a database of its own before a describe block's tests and stops both
 * after; the returned object reads through to the running pair.
 */
function usePair(dialect: "sqlite" | "mysql"): Pair {
  let db: TestDatabase | undefined;
  let pair: Pair | undefined;
  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    pair = await startPair(dialect, db);
  });
  afterAll(async () => {
    await pair?.close();
    await db?.close();
  });
  const running = (): Pair => {
    if (pair === undefined) throw new Error("the pair is not started");
    return pair;
  };
  return {
    get lean() {
      return running().lean;
    },
    get connect() {
      return running().connect;
    },
    get customer() {
      return running().customer;
    },
    close: () => running().close(),
  };
}

/** startPair serves one app (one database, one bus) on two ports, as createHandler does with and without the lean path. */
async function startPair(dialect: "sqlite" | "mysql", db: TestDatabase): Promise<Pair> {
  // Responses compressed from 1 byte, so compression is compared too.
  const parsed = parseConfig({ ...config, server: { host: "127.0.0.1", port: 0, compress_min_bytes: 1 } }, `${dialect} pair`);
  const log = pino({ level: "silent" });
  const app = createApp({ config: parsed, db, log, clock: new ManualClock(Date.now()) });
  await app.access.syncNumbers();
  const health = createHealthMonitor(db, log);
  const shutdown = new AbortController();
  const serve = async (leanPath: boolean) => {
    const tracker = createCallTracker();
    const listener: Listener = await listen(createHandler(app, { health, tracker, shutdown: shutdown.signal, leanPath }), { host: "127.0.0.1", port: 0 });
    return { url: `http://127.0.0.1:${listener.port}`, tracker, listener };
  };
  const lean = await serve(true);
  const connect = await serve(false);
  return {
    lean,
    connect,
    customer: createClient(ChatService, createConnectTransport({ baseUrl: connect.url, httpVersion: "1.1" })),
    async close() {
      shutdown.abort();
      for (const l of [lean.listener, connect.listener]) {
        await l.stopAccepting();
        await l.closeConnections(500);
      }
      health.stop();
      await app.bus.close();
    },
  };
}

describe.each(DIALECTS)("the lean path against connect, byte for byte, on %s", (dialect) => {
  const pair = usePair(dialect);

  /** both makes the same call on both servers, at once. */
  const both = (path: string, body: Uint8Array, headers?: Record<string, string>, whileOpen?: (s: http2.ClientHttp2Stream) => void) =>
    Promise.all([rawCall(pair.lean.url, path, body, headers, whileOpen), rawCall(pair.connect.url, path, body, headers, whileOpen)]);

  it("a stream to its end, with and without response compression, and the refusals: the same headers, bytes and trailers", async () => {
    const chat = await pair.customer.requestChat({ service: "lobby", nickname: "Twin" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    // Both streams open at once; once both have their first event, the customer leaves.
    let opened = 0;
    let leaving: Promise<unknown> | undefined;
    const onOpen = () => {
      if (++opened === 4) {
        expect([pair.lean.tracker.streams, pair.connect.tracker.streams]).toEqual([2, 0]);
        leaving = pair.customer.disconnect(key);
      }
    };
    const [plain, gzipped] = await Promise.all([
      both(CHAT_SUBSCRIBE, subscribeBody({ ...key, fromPosition: 1n }), {}, onOpen),
      both(CHAT_SUBSCRIBE, subscribeBody({ ...key, fromPosition: 1n }), { "grpc-accept-encoding": "gzip, br", "user-agent": "raw" }, onOpen),
    ]);
    await leaving;
    expect(opened).toBe(4);
    expect(plain[0]).toEqual(plain[1]);
    expect(gzipped[0]).toEqual(gzipped[1]);
    expect(plain[0].trailers).toEqual({ "grpc-status": "0" });
    expect(messagesIn(Buffer.from(plain[0].body, "hex")).map((m) => ChatEventType[fromBinary(ChatEventSchema, m).type])).toEqual(["PARTICIPANT_JOINED", "PARTICIPANT_LEFT", "CHAT_ENDED"]);
    expect(gzipped[0].headers["grpc-encoding"]).toBe("gzip");
    expect(Buffer.from(gzipped[0].body, "hex")[0]).toBe(1);
    expect([pair.lean.tracker.streams, pair.connect.tracker.streams]).toEqual([0, 0]);

    const request = toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { ...key, fromPosition: 1n }));
    const agentRequest = envelope(toBinary(AgentServiceSubscribeRequestSchema, create(AgentServiceSubscribeRequestSchema, { chatId: chat.chatId })));
    const cases: [string, string, Uint8Array, Record<string, string>][] = [
      ["a wrong secure key", CHAT_SUBSCRIBE, subscribeBody({ chatId: chat.chatId, secureKey: "wrong" }), {}],
      ["an unknown chat, plain application/grpc", CHAT_SUBSCRIBE, subscribeBody({ chatId: UNKNOWN_CHAT, secureKey: "k" }), { "content-type": "application/grpc" }],
      ["an invalid request", CHAT_SUBSCRIBE, subscribeBody({ chatId: "x", fromPosition: -2n }), {}],
      ["an unknown encoding", CHAT_SUBSCRIBE, envelope(request), { "grpc-encoding": "snappy" }],
      ["a compressed message without an encoding", CHAT_SUBSCRIBE, envelope(request, 1), {}],
      ["gzip that is not", CHAT_SUBSCRIBE, envelope(request, 1), { "grpc-encoding": "gzip" }],
      ["no message", CHAT_SUBSCRIBE, new Uint8Array(), {}],
      ["two messages", CHAT_SUBSCRIBE, Buffer.concat([envelope(request), envelope(request)]), {}],
      ["half a message", CHAT_SUBSCRIBE, envelope(request).subarray(0, 9), {}],
      ["not protobuf", CHAT_SUBSCRIBE, envelope(Buffer.from([0xff, 0xff, 0xff])), {}],
      ["a bad grpc-timeout", CHAT_SUBSCRIBE, envelope(request), { "grpc-timeout": "soon" }],
      ["a bad timeout and no key", "/gms.v1.AgentService/Subscribe", agentRequest, { "grpc-timeout": "soon" }],
      ["an unknown key", "/gms.v1.AgentService/Subscribe", agentRequest, { authorization: "Bearer nope" }],
      ["a key without the role", "/gms.v1.AgentService/Subscribe", agentRequest, { authorization: `Bearer ${BACKEND.key}` }],
      ["an agent not in the chat", "/gms.v1.AgentService/Subscribe", agentRequest, { authorization: `Bearer ${AGENT.key}` }],
      ["an invalid WatchQueue", "/gms.v1.AgentService/WatchQueue", envelope(toBinary(WatchQueueRequestSchema, create(WatchQueueRequestSchema, {}))), { authorization: `Bearer ${AGENT.key}` }],
    ];
    for (const [what, path, body, headers] of cases) {
      const [lean, connect] = await both(path, body, headers);
      expect(lean, what).toEqual(connect);
      expect(lean.trailers?.["grpc-status"], what).not.toBe("0");
    }
  });

  it("unary calls (Refresh, RequestInteraction, MatchInteraction) and their refusals: the same headers, bytes and trailers", async () => {
    const chat = await pair.customer.requestChat({ service: "lobby", nickname: "Poller" });
    const taken = pair.lean.tracker.leanCalls;
    const refresh = (m: { chatId?: string; secureKey?: string; fromPosition?: bigint }) => envelope(toBinary(RefreshRequestSchema, create(RefreshRequestSchema, m)));
    const request = (m: { phoneNumber?: string; resourceGroup?: string }) => envelope(toBinary(RequestInteractionRequestSchema, create(RequestInteractionRequestSchema, m)));
    const match = (m: { accessNumber?: string; accessCode?: string }) => envelope(toBinary(MatchInteractionRequestSchema, create(MatchInteractionRequestSchema, m)));
    const cases: [string, string, Uint8Array, Record<string, string>][] = [
      ["a poll", REFRESH, refresh({ chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n }), {}],
      ["a poll with nothing new, compressed", REFRESH, refresh({ chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 99n }), { "grpc-accept-encoding": "gzip" }],
      ["a poll with a wrong key", REFRESH, refresh({ chatId: chat.chatId, secureKey: "wrong", fromPosition: 1n }), {}],
      ["an invalid poll", REFRESH, refresh({ chatId: "", fromPosition: 1n }), {}],
      ["no message", REFRESH, new Uint8Array(), {}],
      ["two messages", REFRESH, Buffer.concat([refresh({ chatId: chat.chatId }), refresh({ chatId: chat.chatId })]), {}],
      ["not protobuf", REFRESH, envelope(Buffer.from([0xff, 0xff, 0xff])), {}],
      ["a bad grpc-timeout", REFRESH, refresh({ chatId: chat.chatId, secureKey: chat.secureKey }), { "grpc-timeout": "soon" }],
      ["an unknown encoding", REFRESH, refresh({ chatId: chat.chatId, secureKey: chat.secureKey }), { "grpc-encoding": "snappy" }],
      ["an allocation from an unknown group", REQUEST_INTERACTION, request({ phoneNumber: "+16505550100", resourceGroup: "nowhere" }), {}],
      ["an allocation with a garbage phone", REQUEST_INTERACTION, request({ phoneNumber: "call me", resourceGroup: "ivr" }), {}],
      ["a match by a caller without the role", MATCH_INTERACTION, match({ accessNumber: "+18005550100" }), { authorization: `Bearer ${AGENT.key}` }],
      // Connect parses a unary request before its interceptors: garbage beats a missing key.
      ["garbage from a caller without a key", MATCH_INTERACTION, envelope(Buffer.from([0xff, 0xff, 0xff])), {}],
      ["an invalid match from a caller without a key", MATCH_INTERACTION, match({ accessNumber: "" }), {}],
      ["a match on a number nobody holds", MATCH_INTERACTION, match({ accessNumber: "+18005550109" }), { authorization: `Bearer ${IVR.key}` }],
    ];
    for (const [what, path, body, headers] of cases) {
      const [lean, connect] = await both(path, body, headers);
      expect(lean, what).toEqual(connect);
    }
    expect(pair.lean.tracker.leanCalls - taken).toBe(cases.length);
    // Allocation and matching succeed alike (the replies differ only in ids and numbers).
    const [leanGrant, connectGrant] = await both(REQUEST_INTERACTION, request({ phoneNumber: "+16505550100", resourceGroup: "ivr" }));
    expect(leanGrant.headers).toEqual(connectGrant.headers);
    expect([leanGrant.trailers, connectGrant.trailers]).toEqual([{ "grpc-status": "0" }, { "grpc-status": "0" }]);
    const numbers = [leanGrant, connectGrant].map((r) => fromBinary(RequestInteractionResponseSchema, messagesIn(Buffer.from(r.body, "hex"))[0] ?? new Uint8Array()).access?.accessNumber ?? "");
    expect(new Set(numbers).size).toBe(2);
    const [leanMatch, connectMatch] = await Promise.all(numbers.map((n, i) => rawCall(i === 0 ? pair.lean.url : pair.connect.url, MATCH_INTERACTION, match({ accessNumber: n }), { authorization: `Bearer ${IVR.key}` })));
    for (const r of [leanMatch, connectMatch]) expect(fromBinary(MatchInteractionResponseSchema, messagesIn(Buffer.from(r?.body ?? "", "hex"))[0] ?? new Uint8Array()).matches).toHaveLength(1);
  });

  it("a deadline ends both with DEADLINE_EXCEEDED", async () => {
    const chat = await pair.customer.requestChat({ service: "lobby", nickname: "Timed" });
    const [lean, connect] = await both(CHAT_SUBSCRIBE, subscribeBody({ chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n }), { "grpc-timeout": "200m" });
    expect(lean).toEqual(connect);
    expect(lean.trailers?.["grpc-status"]).toBe(String(Code.DeadlineExceeded));
    expect([pair.lean.tracker.streams, pair.connect.tracker.streams]).toEqual([0, 0]);
  });
});

/** RawHttpResponse is a Connect response as it went over the wire: status, headers (without date), body bytes. */
interface RawHttpResponse {
  status: number;
  headers: Record<string, unknown>;
  body: string;
}

/**
 * rawConnect makes one Connect-protocol call (POST) with node:http (HTTP/1.1) or node:http2 on a
 * connection of its own and returns what came back.
 */
function rawConnect(version: "1.1" | "2", url: string, path: string, body: Uint8Array | string, headers: Record<string, string> = {}): Promise<RawHttpResponse> {
  // date and x-request-id (a new UUID per call, tested in test/logs.test.ts) vary from call to call.
  const withoutDate = (h: Record<string, unknown>) => Object.fromEntries(Object.entries(h).filter(([k]) => k !== "date" && k !== "x-request-id"));
  return new Promise<RawHttpResponse>((resolve, reject) => {
    const chunks: Buffer[] = [];
    if (version === "1.1") {
      const req = http.request(`${url}${path}`, { method: "POST", agent: false, headers: { "content-type": "application/json", ...headers } }, (res) => {
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: withoutDate(res.headers), body: Buffer.concat(chunks).toString("hex") }));
      });
      req.on("error", reject);
      req.end(body);
      return;
    }
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/json", ...headers });
    let status = 0;
    let received: Record<string, unknown> = {};
    stream.on("response", (h) => {
      const { ":status": s, ...rest } = Object.fromEntries(Object.entries(h));
      status = Number(s);
      received = withoutDate(rest);
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      resolve({ status, headers: received, body: Buffer.concat(chunks).toString("hex") });
    });
    stream.end(body);
  });
}

describe.each(DIALECTS)("the Connect unary path against connect, byte for byte, on %s", (dialect) => {
  const pair = usePair(dialect);

  const both = (version: "1.1" | "2", path: string, body: Uint8Array | string, headers?: Record<string, string>) =>
    Promise.all([rawConnect(version, pair.lean.url, path, body, headers), rawConnect(version, pair.connect.url, path, body, headers)]);

  it.each(["1.1", "2"] as const)("Refresh, RequestInteraction, MatchInteraction in JSON and binary, and their refusals, over HTTP/%s: the same status, headers and bytes", async (version) => {
    const chat = await pair.customer.requestChat({ service: "lobby", nickname: "Widget" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const json = <D extends DescMessage>(schema: D, m: MessageInitShape<D>) => toJsonString(schema, create(schema, m));
    const poll = json(RefreshRequestSchema, { ...key, fromPosition: 1n });
    const pollBinary = toBinary(RefreshRequestSchema, create(RefreshRequestSchema, { ...key, fromPosition: 1n }));
    const proto = { "content-type": "application/proto" };
    const cases: [string, string, Uint8Array | string, Record<string, string>][] = [
      ["a JSON poll", REFRESH, poll, {}],
      ["a JSON poll, charset given", REFRESH, poll, { "content-type": "application/json; charset=utf-8" }],
      ["a binary poll", REFRESH, pollBinary, proto],
      ["a poll asking for gzip (compressed from 1 byte here)", REFRESH, poll, { "accept-encoding": "gzip, deflate, br" }],
      ["a gzipped poll", REFRESH, gzipSync(poll), { "content-encoding": "gzip" }],
      ["a poll with nothing new", REFRESH, json(RefreshRequestSchema, { ...key, fromPosition: 99n }), {}],
      ["a long-poll cut by Connect-Timeout-Ms", REFRESH, json(RefreshRequestSchema, { ...key, fromPosition: 99n, waitSeconds: 30 }), { "connect-timeout-ms": "300" }],
      ["a poll with a wrong key", REFRESH, json(RefreshRequestSchema, { chatId: chat.chatId, secureKey: "wrong" }), {}],
      ["an invalid poll (violations in the details)", REFRESH, json(RefreshRequestSchema, { chatId: "x", fromPosition: 1n }), {}],
      ["an unknown chat", REFRESH, json(RefreshRequestSchema, { chatId: UNKNOWN_CHAT, secureKey: "k" }), {}],
      ["not JSON", REFRESH, "{chat", {}],
      ["an unknown field", REFRESH, '{"chatId":"x","colour":"red"}', {}],
      ["an empty body", REFRESH, "", {}],
      ["not protobuf", REFRESH, Buffer.from([0xff, 0xff, 0xff]), proto],
      ["an unknown encoding", REFRESH, poll, { "content-encoding": "snappy" }],
      ["gzip that is not", REFRESH, poll, { "content-encoding": "gzip" }],
      ["a bad Connect-Timeout-Ms", REFRESH, poll, { "connect-timeout-ms": "soon" }],
      ["an allocation from an unknown group", REQUEST_INTERACTION, json(RequestInteractionRequestSchema, { phoneNumber: "+16505550100", resourceGroup: "nowhere" }), {}],
      ["an allocation with a garbage phone", REQUEST_INTERACTION, json(RequestInteractionRequestSchema, { phoneNumber: "call me", resourceGroup: "ivr" }), {}],
      ["a match by a caller without the role", MATCH_INTERACTION, json(MatchInteractionRequestSchema, { accessNumber: "+18005550100" }), { authorization: `Bearer ${AGENT.key}` }],
      // Connect parses a unary request before its interceptors: garbage beats a missing key.
      ["garbage from a caller without a key", MATCH_INTERACTION, "[]", {}],
      ["an invalid match from a caller without a key", MATCH_INTERACTION, json(MatchInteractionRequestSchema, { accessNumber: "" }), {}],
      ["a match on a number nobody holds (NOT_FOUND with its reason)", MATCH_INTERACTION, json(MatchInteractionRequestSchema, { accessNumber: "+18005550109" }), { authorization: `Bearer ${IVR.key}` }],
    ];
    // Refused on its Content-Length alone, before the body (HTTP/2's own framing checks the length: nghttp2 refuses to send such a body).
    if (version === "1.1") cases.push(["a Content-Length above readMaxBytes", REFRESH, poll, { "content-length": String(64 * 1024 * 1024) }]);
    const taken = pair.lean.tracker.leanCalls;
    for (const [what, path, body, headers] of cases) {
      const [lean, connect] = await both(version, path, body, headers);
      expect(lean, what).toEqual(connect);
    }
    expect(pair.lean.tracker.leanCalls - taken).toBe(cases.length);
    const [ok] = await both(version, REFRESH, poll);
    expect(ok.status).toBe(200);
    const text = (r: RawHttpResponse) => Buffer.from(r.body, "hex").toString();
    expect(fromJsonString(RefreshResponseSchema, text(ok)).events.map((e) => ChatEventType[e.type])).toEqual(["PARTICIPANT_JOINED"]);
    const [refused] = await both(version, REFRESH, json(RefreshRequestSchema, { chatId: chat.chatId, secureKey: "wrong" }));
    expect(refused.status).toBe(403);
    expect((JSON.parse(text(refused)) as { code: string }).code).toBe("permission_denied");

    // Allocation and matching succeed alike (the replies differ only in ids and numbers).
    const grant = json(RequestInteractionRequestSchema, { phoneNumber: "+16505550100", resourceGroup: "ivr" });
    const grants = await both(version, REQUEST_INTERACTION, grant);
    expect(grants[0].headers["content-type"]).toBe("application/json");
    expect(grants.map((g) => g.status)).toEqual([200, 200]);
    const numbers = grants.map((g) => fromJsonString(RequestInteractionResponseSchema, text(g)).access?.accessNumber ?? "");
    expect(new Set(numbers).size).toBe(2);
    const matches = await Promise.all(numbers.map((n, i) => rawConnect(version, i === 0 ? pair.lean.url : pair.connect.url, MATCH_INTERACTION, json(MatchInteractionRequestSchema, { accessNumber: n }), { authorization: `Bearer ${IVR.key}` })));
    for (const m of matches) expect(fromJsonString(MatchInteractionResponseSchema, text(m)).matches).toHaveLength(1);
  });

  it("one HTTP/1.1 keep-alive connection carries on after refusals, read or unread bodies alike", async () => {
    const chat = await pair.customer.requestChat({ service: "lobby", nickname: "Kept" });
    const poll = toJsonString(RefreshRequestSchema, create(RefreshRequestSchema, { chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n }));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    const call = (headers: Record<string, string>, body: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(`${pair.lean.url}${REFRESH}`, { method: "POST", agent, headers: { "content-type": "application/json", ...headers } }, (res) => {
          sockets.add(res.socket);
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        });
        req.on("error", reject);
        req.end(body);
      });
    try {
      // Refused before the body is read (an unknown encoding), after it (not JSON, a wrong key), then served.
      expect(await call({ "content-encoding": "snappy" }, poll)).toBe(501);
      expect(await call({}, "{chat")).toBe(400);
      expect(await call({}, poll.replace(chat.secureKey, "wrong"))).toBe(403);
      expect(await call({}, poll)).toBe(200);
      expect(await call({}, poll)).toBe(200);
      expect(sockets.size).toBe(1);
    } finally {
      agent.destroy();
    }
  });

  it("a Connect long-poll wakes on an event, and lets go of its wait when its client goes; GET and streams stay connect's", async () => {
    const customer = createClient(ChatService, createConnectTransport({ baseUrl: pair.lean.url, httpVersion: "1.1" }));
    const chat = await customer.requestChat({ service: "lobby", nickname: "Waiter" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const taken = pair.lean.tracker.leanCalls;
    const waiting = customer.refresh({ ...key, fromPosition: 2n, waitSeconds: 30 });
    await waitFor("the long-poll in flight", () => pair.lean.tracker.inFlight > 0);
    await customer.sendMessage({ ...key, text: "hello?" });
    const woken = await waiting;
    expect(woken.events.map((e) => [ChatEventType[e.type], e.text])).toEqual([["MESSAGE", "hello?"]]);
    expect(pair.lean.tracker.leanCalls - taken).toBe(1);

    // A client giving up: the server's wait ends with it (nothing left in flight).
    const gone = new AbortController();
    const abandoned = customer.refresh({ ...key, fromPosition: 3n, waitSeconds: 30 }, { signal: gone.signal });
    await waitFor("the second long-poll in flight", () => pair.lean.tracker.inFlight > 0);
    gone.abort();
    expect((await errorOf(abandoned)).code).toBe(Code.Canceled);
    await waitFor("the server letting go", () => pair.lean.tracker.inFlight === 0);

    // GET (Refresh has no side effects) and streams are left to connect, which answers them.
    const viaGet = createClient(ChatService, createConnectTransport({ baseUrl: pair.lean.url, httpVersion: "1.1", useHttpGet: true }));
    const before = pair.lean.tracker.leanCalls;
    expect((await viaGet.refresh({ ...key, fromPosition: 1n })).events.length).toBeGreaterThan(1);
    expect(pair.lean.tracker.leanCalls).toBe(before);
  });
});
