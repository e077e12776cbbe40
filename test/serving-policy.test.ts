// The serving policy (src/rpc/policy.ts) runs for every call, whichever path serves it: a probe
// policy, added as a future metrics or rate-limit policy would be (createHandler's `policies`), is
// called once for every RPC of every served service (enumerated from the descriptors, so a new RPC
// is in the matrix the day it is added) over gRPC, Connect JSON and binary over HTTP/1.1 and HTTP/2,
// Connect GET and gRPC-Web: unary calls, server streams and the bidirectional stream, those the lean
// path serves (src/rpc/lean-path.ts) and those connect does. It sees the method and the protocol,
// what it puts in the response headers reaches the client, and what it refuses the client sees
// refused, with its code, message and metadata. A real server on port 0, real sockets.
import { create, type DescMessage, type DescMethod, type DescMethodUnary, type MessageInitShape } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import { createHealthMonitor, type HealthMonitor } from "../src/health.js";
import { listen, type Listener } from "../src/listen.js";
import { createCallTracker, type CallTracker } from "../src/rpc/observe.js";
import { protocolOf, type Protocol } from "../src/rpc/policy.js";
import { createApp, createHandler, SERVED_SERVICES } from "../src/server.js";
import { createTestDatabase, type TestDatabase } from "./helpers/databases.js";

/** The policy touches no store: one dialect is enough. */
const DIALECT = "sqlite";

/**
 * LEAN are the RPCs the lean path serves: over gRPC all of them, over Connect (POST) the unary
 * ones. Listed here so that the test says which calls of the matrix took it.
 */
const LEAN = new Set([
  "gms.v1.AccessService/RequestInteraction",
  "gms.v1.AccessService/RequestAccess",
  "gms.v1.AccessService/MatchInteraction",
  "gms.v1.ChatService/Refresh",
  "gms.v1.ChatService/Subscribe",
  "gms.v1.AgentService/Subscribe",
  "gms.v1.AgentService/WatchQueue",
  "grpc.health.v1.Health/Watch",
]);

/** Way is one way a client calls: a transport, the protocol the server sees, and what it can carry. */
interface Way {
  name: string;
  protocol: Protocol;
  /** http2 tells whether it runs over HTTP/2, which a bidirectional stream needs (HTTP/1.1 cannot carry one). */
  http2: boolean;
  /** lean tells which of the LEAN RPCs the lean path serves this way. */
  lean: (method: DescMethod) => boolean;
  transport: (baseUrl: string) => Transport;
}

const grpcLean = (m: DescMethod) => LEAN.has(path(m));
const connectLean = (m: DescMethod) => LEAN.has(path(m)) && m.methodKind === "unary";
const never = () => false;

const WAYS: Way[] = [
  { name: "gRPC over HTTP/2", protocol: "grpc", http2: true, lean: grpcLean, transport: (baseUrl) => createGrpcTransport({ baseUrl }) },
  { name: "Connect JSON over HTTP/1.1", protocol: "connect", http2: false, lean: connectLean, transport: (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1" }) },
  { name: "Connect binary over HTTP/1.1", protocol: "connect", http2: false, lean: connectLean, transport: (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }) },
  { name: "Connect JSON over HTTP/2", protocol: "connect", http2: true, lean: connectLean, transport: (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "2" }) },
  { name: "Connect binary over HTTP/2", protocol: "connect", http2: true, lean: connectLean, transport: (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true }) },
  {
    name: "Connect GET (read-only RPCs) over HTTP/1.1",
    protocol: "connect",
    http2: false,
    // A GET is connect's; the others go as POST.
    lean: (m) => connectLean(m) && m.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS,
    transport: (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1", useHttpGet: true }),
  },
  { name: "gRPC-Web over HTTP/1.1", protocol: "grpc-web", http2: false, lean: never, transport: (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }) },
  { name: "gRPC-Web over HTTP/2", protocol: "grpc-web", http2: true, lean: never, transport: (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "2" }) },
];

/** path names an RPC as the probe records it. */
const path = (m: DescMethod) => `${m.parent.typeName}/${m.name}`;

/** METHODS are every RPC of every service the server serves. */
const METHODS: DescMethod[] = SERVED_SERVICES.flatMap((s) => s.methods);

/**
 * REQUESTS are the requests that let a call get past validation and succeed (the others are sent
 * empty: refused by validation or the domain, which is fine: the probe runs before either).
 */
const REQUESTS: Record<string, MessageInitShape<DescMessage>> = {
  "gms.v1.AccessService/RequestInteraction": { phoneNumber: "+16505550100", resourceGroup: "ivr" },
  "gms.v1.AgentService/WatchQueue": { endpoint: "support" },
  "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": { messageRequest: { case: "listServices", value: "" } },
  "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": { messageRequest: { case: "listServices", value: "" } },
};

/** Seen is one call as the probe saw it. */
interface Seen {
  method: string;
  protocol: Protocol;
}

/** Probe is the probe policy and what it saw. */
interface Probe {
  seen: Seen[];
  /** refusing makes the probe refuse every call. */
  refusing: boolean;
  interceptor: Interceptor;
}

/** PROBE_HEADER is what the probe adds to every response it lets through. */
const PROBE_HEADER = "probe-saw";

function createProbe(): Probe {
  const probe: Probe = {
    seen: [],
    refusing: false,
    interceptor: (next) => (req) => {
      probe.seen.push({ method: path(req.method), protocol: protocolOf(req) });
      if (probe.refusing) return Promise.reject(new ConnectError(`the probe refuses ${req.method.name}`, Code.ResourceExhausted, { "probe-refused": req.method.name }));
      return next(req).then((res) => {
        res.header.set(PROBE_HEADER, req.method.name);
        return res;
      });
    },
  };
  return probe;
}

/** Outcome is how a call ended for its client: the response headers, if any, and its error, if any. */
interface Outcome {
  header: Headers | undefined;
  error: ConnectError | undefined;
}

/**
 * call makes one call of any kind with its REQUESTS entry (or an empty request): a unary call to its
 * end, a stream to its first message (then the client cancels) or its end.
 */
async function call(transport: Transport, method: DescMethod): Promise<Outcome> {
  const input = create(method.input, REQUESTS[path(method)] ?? {});
  try {
    if (method.methodKind === "unary") {
      const res = await transport.unary(method as DescMethodUnary, undefined, undefined, undefined, input);
      return { header: res.header, error: undefined };
    }
    const leave = new AbortController();
    const res = await transport.stream(method as never, leave.signal, undefined, undefined, (async function* () {
      yield input;
    })());
    try {
      for await (const _ of res.message) break;
    } finally {
      leave.abort();
    }
    return { header: res.header, error: undefined };
  } catch (e) {
    return { header: undefined, error: ConnectError.from(e) };
  }
}

describe("the serving policy, with a probe added", () => {
  let db: TestDatabase;
  let listener: Listener;
  let health: HealthMonitor;
  let tracker: CallTracker;
  let url: string;
  const shutdown = new AbortController();
  const probe = createProbe();

  beforeAll(async () => {
    db = await createTestDatabase(DIALECT);
    // No API keys: every caller holds every role, so auth lets every call through to the probe.
    const config = parseConfig(
      {
        server: { host: "127.0.0.1", port: 0 },
        services: { support: { service: "request-chat", endpoint: "support", ttl: 600 } },
        resources: { ivr: { numbers: ["+18005550100..+18005550199"], locking: true } },
      },
      "serving policy test",
    );
    const log = pino({ level: "silent" });
    const app = createApp({ config, db, log, clock: new ManualClock(Date.now()) });
    await app.access.syncNumbers();
    health = createHealthMonitor(db, log);
    tracker = createCallTracker();
    listener = await listen(createHandler(app, { health, tracker, shutdown: shutdown.signal, policies: [probe.interceptor] }), { host: "127.0.0.1", port: 0 });
    url = `http://127.0.0.1:${listener.port}`;
  });
  afterAll(async () => {
    shutdown.abort();
    await listener?.stopAccepting();
    await listener?.closeConnections(500);
    health?.stop();
    await db?.close();
  });

  it("covers every kind of RPC the services have", () => {
    const kinds = new Set(METHODS.map((m) => m.methodKind));
    expect([...kinds].sort()).toEqual(["bidi_streaming", "server_streaming", "unary"]);
    expect(METHODS.length).toBeGreaterThanOrEqual(45);
    for (const lean of LEAN) expect(METHODS.map(path)).toContain(lean);
  });

  describe.each(WAYS)("$name", (way) => {
    /** carried are the RPCs this way can carry: all but the bidirectional stream over HTTP/1.1. */
    const carried = METHODS.filter((m) => way.http2 || m.methodKind !== "bidi_streaming");

    it("leaves out only the bidirectional stream, which it cannot carry", () => {
      const left = METHODS.filter((m) => !carried.includes(m));
      expect(left.every((m) => m.methodKind === "bidi_streaming")).toBe(true);
      if (way.http2) expect(left).toEqual([]);
    });

    it("runs the probe once for every RPC, seeing its method and protocol; its response header reaches the client", async () => {
      probe.refusing = false;
      const transport = way.transport(url);
      const tookLean: string[] = [];
      let succeeded = 0;
      for (const method of carried) {
        const seen = probe.seen.length;
        const lean = tracker.leanCalls;
        const outcome = await call(transport, method);
        expect(probe.seen.slice(seen), path(method)).toEqual([{ method: path(method), protocol: way.protocol }]);
        if (tracker.leanCalls > lean) tookLean.push(path(method));
        if (outcome.error === undefined) {
          succeeded++;
          expect(outcome.header?.get(PROBE_HEADER), path(method)).toBe(method.name);
        }
      }
      // The calls that succeeded (health, reflection, storage, allocation, a queue...) carried the probe's header.
      expect(succeeded).toBeGreaterThan(5);
      expect(tookLean.sort()).toEqual(carried.filter(way.lean).map(path).sort());
    });

    it("answers every RPC the probe refuses with the probe's code, message and metadata", async () => {
      probe.refusing = true;
      try {
        const transport = way.transport(url);
        for (const method of carried) {
          const seen = probe.seen.length;
          const { error } = await call(transport, method);
          expect(probe.seen.slice(seen), path(method)).toEqual([{ method: path(method), protocol: way.protocol }]);
          expect([error?.code, error?.rawMessage, error?.metadata.get("probe-refused")], path(method)).toEqual([Code.ResourceExhausted, `the probe refuses ${method.name}`, method.name]);
        }
      } finally {
        probe.refusing = false;
      }
    });
  });
});
