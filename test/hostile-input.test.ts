// The hostile-input test: every RPC of every service, over every protocol (gRPC over HTTP/2,
// gRPC-Web and Connect JSON and binary over HTTP/1.1 and HTTP/2, Connect GET where the method
// allows it), sent garbage of every kind with raw node:http / node:http2 clients over real sockets
// to the real server: random and bit-flipped protobuf, lying envelope lengths, compressed flags
// without an encoding, bad gzip, malformed and deeply nested JSON, invalid UTF-8, huge strings and
// numbers, wrong content types, bad timeouts. Afterwards the server is alive and SERVING, no answer
// was INTERNAL (grpc-status 13, HTTP 500, Connect code "internal"), and the data stored before the
// barrage is byte-identical. The garbage comes from a seeded generator: a failure prints the seed,
// and GMS_HOSTILE_SEED=<seed> replays it.
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Writable } from "node:stream";
import { brotliDecompressSync, gunzipSync, gzipSync } from "node:zlib";
import { create, toBinary, toJsonString, type MessageShape, type DescField, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { ScalarType } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { AdminService } from "../gen/gms/v1/admin_pb.js";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatService, RefreshResponseSchema } from "../gen/gms/v1/chat_pb.js";
import { SessionService } from "../gen/gms/v1/session_pb.js";
import { GetDataResponseSchema, StorageService } from "../gen/gms/v1/storage_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection as ReflectionV1 } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { createTestDatabase, DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const SERVICES: DescService[] = [StorageService, AccessService, SessionService, ChatService, AgentService, AdminService, Health, ReflectionV1, ReflectionV1alpha];
const METHODS: DescMethod[] = SERVICES.flatMap((s) => s.methods);
/** SEED is fixed, so CI runs the same garbage each time; GMS_HOSTILE_SEED=<n> (or "random") explores others. */
const SEED = process.env["GMS_HOSTILE_SEED"] === "random" ? Date.now() % 2 ** 31 : Number(process.env["GMS_HOSTILE_SEED"] ?? 20261207);

/** rng is a small seeded generator (mulberry32): the same seed, the same garbage. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    int,
    bytes(n: number): Uint8Array {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = int(256);
      return b;
    },
    pick<T>(items: readonly T[]): T {
      return items[int(items.length)] as T;
    },
    uuid(): string {
      const h = Array.from(this.bytes(16), (x) => x.toString(16).padStart(2, "0")).join("");
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
    },
  };
}
type Rng = ReturnType<typeof rng>;

/**
 * TARGETS are ids and keys of a chat and a record made for the barrage (not the ones it must leave
 * alone), so requests built from samples reach the domain's rules rather than stop at NOT_FOUND.
 */
const TARGETS: Record<string, string> = {};

/**
 * sample fills every field of a message with a plausible value (ids as UUIDs that name nothing
 * stored), so bit flips start from a request that decodes and mostly passes validation.
 */
function sample(desc: DescMessage, r: Rng, depth = 0): Record<string, unknown> {
  const init: Record<string, unknown> = {};
  const scalar = (f: DescField & { scalar?: ScalarType }, t: ScalarType): unknown => {
    switch (t) {
      case ScalarType.STRING:
        return TARGETS[f.name] ?? (f.name.endsWith("_id") ? r.uuid() : f.name.includes("key") ? "k" : "hostile");
      case ScalarType.BYTES:
        return r.bytes(8);
      case ScalarType.BOOL:
        return true;
      case ScalarType.DOUBLE:
      case ScalarType.FLOAT:
        return 1.5;
      case ScalarType.INT64:
      case ScalarType.UINT64:
      case ScalarType.SINT64:
      case ScalarType.FIXED64:
      case ScalarType.SFIXED64:
        return 1n;
      default:
        return f.name.startsWith("wait") ? 0 : 1;
    }
  };
  const value = (f: DescField): unknown => {
    switch (f.fieldKind) {
      case "scalar":
        return scalar(f, f.scalar);
      case "enum":
        return f.enum.values[1]?.number ?? 0;
      case "message":
        return depth < 2 ? create(f.message, sample(f.message, r, depth + 1)) : undefined;
      case "list":
        if (f.listKind === "scalar") return [scalar(f, f.scalar)];
        if (f.listKind === "enum") return [f.enum.values[0]?.number ?? 0];
        return depth < 2 ? [create(f.message, sample(f.message, r, depth + 1))] : [];
      case "map": {
        const v = f.mapKind === "scalar" ? scalar(f, f.scalar) : f.mapKind === "enum" ? 0 : depth < 2 ? create(f.message, sample(f.message, r, depth + 1)) : undefined;
        return v === undefined ? {} : { [f.mapKey === ScalarType.STRING ? "key" : "1"]: v };
      }
    }
  };
  for (const f of desc.fields) {
    const v = value(f);
    if (v === undefined) continue;
    if (f.oneof !== undefined) {
      if (init[f.oneof.localName] === undefined) init[f.oneof.localName] = { case: f.localName, value: v };
    } else init[f.localName] = v;
  }
  return init;
}

const envelope = (data: Uint8Array, flags = 0, length = data.byteLength): Buffer => {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(length >>> 0, 1);
  return Buffer.concat([head, data]);
};

const flip = (r: Rng, data: Uint8Array, flips: number): Uint8Array => {
  const out = Uint8Array.from(data);
  if (out.byteLength === 0) return r.bytes(1 + r.int(8));
  for (let i = 0; i < flips; i++) {
    const at = r.int(out.byteLength);
    out[at] = (out[at] as number) ^ (1 << r.int(8));
  }
  return out;
};

/** nestedGroups is protobuf of `depth` nested start-group tags: recursion bait for a decoder. */
const nestedGroups = (depth: number) => Buffer.concat([Buffer.alloc(depth, 0x0b), Buffer.alloc(depth, 0x0c)]);
/** nestedMessages nests length-delimited field 1 `depth` times. */
function nestedMessages(depth: number): Uint8Array {
  let inner: Uint8Array = new Uint8Array(0);
  for (let i = 0; i < depth; i++) {
    const len: number[] = [];
    let n = inner.byteLength;
    do {
      len.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
      n >>>= 7;
    } while (n > 0);
    inner = Buffer.concat([Buffer.from([0x0a, ...len]), inner]);
  }
  return inner;
}

const NESTED_GROUPS = nestedGroups(20_000);
const NESTED_MESSAGES = nestedMessages(2_000);
const NESTED_ARRAYS = Buffer.from("[".repeat(100_000) + "]".repeat(100_000));
const NESTED_OBJECTS = Buffer.from('{"a":'.repeat(50_000) + "1" + "}".repeat(50_000));
/** GZIP_BOMB inflates to 64 MiB, far above the read limit. */
const GZIP_BOMB = gzipSync(Buffer.alloc(64 * 1024 * 1024));

/** Protocol is one way a client talks to the server. */
interface Protocol {
  name: string;
  http2: boolean;
  kind: "grpc" | "grpc-web" | "connect-json" | "connect-proto";
}
const PROTOCOLS: Protocol[] = [
  { name: "gRPC h2", http2: true, kind: "grpc" },
  // Not what gRPC clients do, but connect serves it: garbage may come that way too.
  { name: "gRPC h1", http2: false, kind: "grpc" },
  { name: "gRPC-Web h1", http2: false, kind: "grpc-web" },
  { name: "gRPC-Web h2", http2: true, kind: "grpc-web" },
  { name: "Connect JSON h1", http2: false, kind: "connect-json" },
  { name: "Connect JSON h2", http2: true, kind: "connect-json" },
  { name: "Connect proto h1", http2: false, kind: "connect-proto" },
  { name: "Connect proto h2", http2: true, kind: "connect-proto" },
];

/** protocol finds a protocol by its name. */
const protocol = (name: string): Protocol => PROTOCOLS.find((p) => p.name === name) as Protocol;

/** Hostile is one request: what it is (for the report), and how it goes on the wire. */
interface Hostile {
  kind: string;
  method: "POST" | "GET";
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array;
}

const streaming = (m: DescMethod) => m.methodKind !== "unary";

/** contentTypeOf is the right content type of a protocol for a method. */
function contentTypeOf(p: Protocol, m: DescMethod): string {
  switch (p.kind) {
    case "grpc":
      return "application/grpc+proto";
    case "grpc-web":
      return "application/grpc-web+proto";
    case "connect-json":
      return streaming(m) ? "application/connect+json" : "application/json";
    case "connect-proto":
      return streaming(m) ? "application/connect+proto" : "application/proto";
  }
}

/**
 * hostiles are the garbage requests for one method over one protocol. Each kind is a function of
 * the generator, so the list is the same for a seed.
 */
function hostiles(p: Protocol, m: DescMethod, r: Rng): Hostile[] {
  const path = `/${m.parent.typeName}/${m.name}`;
  const ct = contentTypeOf(p, m);
  // A stream that decodes (an empty Health Watch) would stay open, and a long-poll (AcceptChat,
  // Refresh with wait_seconds) waits on the test's manual clock: a deadline ends them.
  const deadline: Record<string, string> = p.kind.startsWith("connect") ? { "connect-timeout-ms": "1500" } : { "grpc-timeout": "1500m" };
  // Half the calls accept a compressed answer: the server compresses from 1 byte, errors too.
  const acceptHeader = p.kind.startsWith("connect") ? (streaming(m) ? "connect-accept-encoding" : "accept-encoding") : "grpc-accept-encoding";
  const accept: Record<string, string> = r.int(2) === 0 ? { [acceptHeader]: r.pick(["gzip", "br", "gzip, br"]) } : {};
  const base: Record<string, string> = { "content-type": ct, ...deadline, ...accept, ...(p.kind === "grpc" ? { te: "trailers" } : {}) };
  const valid = toBinary(m.input, create(m.input, sample(m.input, r) as never));
  const validJson = toJsonString(m.input, create(m.input, sample(m.input, r) as never));
  const out: Hostile[] = [];
  const add = (kind: string, body: Uint8Array, headers: Record<string, string> = {}) => out.push({ kind, method: "POST", path, headers: { ...base, ...headers }, body });
  const enveloped = p.kind === "grpc" || p.kind === "grpc-web" || streaming(m);
  const binary = p.kind !== "connect-json";
  /** wrap puts a payload in the protocol's framing (an envelope, or the bare body of a Connect unary call). */
  const wrap = (data: Uint8Array, flags = 0) => (enveloped ? envelope(data, flags) : data);

  if (binary) {
    add("random protobuf", wrap(r.bytes(1 + r.int(64))));
    add("random protobuf (long)", wrap(r.bytes(200 + r.int(2000))));
    add("bit-flipped protobuf", wrap(flip(r, valid, 1)));
    add("bit-flipped protobuf (many)", wrap(flip(r, valid, 1 + r.int(12))));
    add("truncated protobuf", wrap(valid.subarray(0, Math.max(0, valid.byteLength - 1 - r.int(Math.max(1, valid.byteLength))))));
    add("invalid UTF-8 in a string field", wrap(Buffer.from([0x0a, 0x04, 0xff, 0xfe, 0xc3, 0x28])));
    add("nested start groups", wrap(NESTED_GROUPS));
    add("nested messages", wrap(NESTED_MESSAGES));
    for (const end of ["max", "min"] as const) add(`numbers at their type's ${end === "max" ? "" : "negative "}limit`, wrap(toBinary(m.input, atLimits(m.input, r, end))));
    // One field at a time (the others plausible), so each reaches the domain past the others' bounds.
    if (p.kind === "grpc") for (const name of numericFields(m.input)) for (const end of ["max", "min"] as const) add(`${name} at its type's ${end} limit`, wrap(toBinary(m.input, atLimits(m.input, r, end, name))));
    add("varint of 11 bytes", wrap(Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])));
    add("length-delimited field longer than the message", wrap(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x41])));
  } else {
    add("malformed JSON", wrap(Buffer.from(validJson.slice(0, Math.max(1, r.int(validJson.length))))));
    add("random text", wrap(Buffer.from(r.bytes(1 + r.int(64)).map((b) => 0x20 + (b % 0x5f)))));
    add("deeply nested arrays", wrap(NESTED_ARRAYS));
    // Under an unknown name a nest is skipped (unknown fields are ignored); under a known one it is read.
    add("deeply nested objects", wrap(NESTED_OBJECTS));
    add("deeply nested arrays in a field", wrap(Buffer.concat([Buffer.from(`{"${m.input.fields[0]?.jsonName ?? "x"}":`), NESTED_ARRAYS, Buffer.from("}")])));
    add("deeply nested objects in a field", wrap(Buffer.concat([Buffer.from(`{"${m.input.fields[0]?.jsonName ?? "x"}":`), NESTED_OBJECTS, Buffer.from("}")])));
    add("invalid UTF-8 in a string", wrap(Buffer.concat([Buffer.from(`{"${firstStringField(m.input) ?? "x"}":"a`), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from('"}')])));
    add("int64 out of range", wrap(Buffer.from(jsonWithNumbers(m.input, '"9223372036854775808"'))));
    add("number 1e400", wrap(Buffer.from(jsonWithNumbers(m.input, "1e400"))));
    for (const end of ["max", "min"] as const) add(`numbers at their type's ${end === "max" ? "" : "negative "}limit`, wrap(Buffer.from(toJsonString(m.input, atLimits(m.input, r, end)))));
    if (!p.http2) for (const name of numericFields(m.input)) for (const end of ["max", "min"] as const) add(`${name} at its type's ${end} limit`, wrap(Buffer.from(toJsonString(m.input, atLimits(m.input, r, end, name)))));
    add("number -1e400", wrap(Buffer.from(jsonWithNumbers(m.input, "-1e400"))));
    add("number NaN", wrap(Buffer.from(jsonWithNumbers(m.input, '"NaN"'))));
    add("huge string", wrap(Buffer.from(JSON.stringify({ [firstStringField(m.input) ?? "x"]: "x".repeat(300_000) }))));
    add("JSON null, array and scalar", wrap(Buffer.from(r.pick(["null", "[]", "1", '"s"', "true", "{}{}", '{"__proto__":{"x":1}}']))));
  }
  if (enveloped) {
    add("envelope longer than the body", envelope(valid, 0, valid.byteLength + 1 + r.int(100)));
    add("envelope shorter than the body", envelope(valid, 0, Math.max(0, valid.byteLength - 1 - r.int(Math.max(1, valid.byteLength)))));
    add("envelope of 4 GiB", envelope(valid, 0, 0xffffffff));
    add("half an envelope header", Buffer.from([0, 0, 0]));
    add("two envelopes", Buffer.concat([envelope(valid), envelope(valid)]));
    add("no envelope", new Uint8Array(0));
    add("compressed flag without an encoding", envelope(valid, 1));
    add("unknown envelope flags", envelope(valid, 0x7e));
    add("trailer flag from a client", envelope(valid, 0x80));
    add("bad gzip", envelope(r.bytes(1 + r.int(64)), 1), { [p.kind.startsWith("connect") ? "connect-content-encoding" : "grpc-encoding"]: "gzip" });
    const gz = gzipSync(valid);
    add("truncated gzip", envelope(gz.subarray(0, Math.max(1, gz.byteLength - 6)), 1), { [p.kind.startsWith("connect") ? "connect-content-encoding" : "grpc-encoding"]: "gzip" });
    add("unknown encoding", envelope(valid, 1), { [p.kind.startsWith("connect") ? "connect-content-encoding" : "grpc-encoding"]: "lzma" });
  } else {
    add("bad gzip", r.bytes(1 + r.int(64)), { "content-encoding": "gzip" });
    const gz = gzipSync(binary ? valid : Buffer.from(validJson));
    add("truncated gzip", gz.subarray(0, Math.max(1, gz.byteLength - 6)), { "content-encoding": "gzip" });
    add("gzip bomb above the read limit", GZIP_BOMB, { "content-encoding": "gzip" });
    add("unknown encoding", binary ? valid : Buffer.from(validJson), { "content-encoding": "lzma" });
  }
  const good = enveloped ? envelope(binary ? valid : Buffer.from(validJson)) : binary ? valid : Buffer.from(validJson);
  for (const ct2 of ["text/plain", "application/xml", "application/grpc-web-text", "application/connect+bogus", "multipart/form-data; boundary=x", ""]) {
    add(`content type ${JSON.stringify(ct2)}`, good, { "content-type": ct2 });
  }
  if (p.kind === "grpc" || p.kind === "grpc-web") add("gRPC JSON codec with garbage", envelope(r.bytes(1 + r.int(32))), { "content-type": `${ct.split("+")[0]}+json` });
  const timeoutHeader = p.kind.startsWith("connect") ? "connect-timeout-ms" : "grpc-timeout";
  const timeouts = p.kind.startsWith("connect") ? ["abc", "-1", "99999999999999999999", "1e3", "0", "12345678901"] : ["abc", "-1S", "99999999999H", "1n", "0m", "1x", "123456789S"];
  for (const v of timeouts) add(`${timeoutHeader}: ${v}`, good, { [timeoutHeader]: v });
  add("huge header", good, { "x-hostile": "h".repeat(8_000) });
  add("many headers", good, Object.fromEntries(Array.from({ length: 90 }, (_, i) => [`x-h${i}`, String(i)])));
  add("a bearer key of garbage", good, { authorization: `Bearer ${Buffer.from(r.bytes(40)).toString("latin1").replace(/[^\x21-\x7e]/g, "~")}` });
  if (!p.http2) {
    // A Content-Length shorter than the body: the server reads a truncated request (the rest
    // arrives as garbage where the next request would start).
    out.push({ kind: "Content-Length shorter than the body", method: "POST", path, headers: { ...base, "content-length": String(Math.max(0, good.byteLength - 3)) }, body: good });
  }
  if (p.kind.startsWith("connect") && !streaming(m) && m.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) {
    out.push({ kind: "GET on a method that takes POST only", method: "GET", path: `${path}?connect=v1&encoding=json&message=%7B%7D`, headers: {} });
  }
  // Connect GET, for the methods that allow it.
  if (p.kind.startsWith("connect") && !streaming(m) && m.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) {
    const get = (kind: string, query: string) => out.push({ kind: `GET ${kind}`, method: "GET", path: `${path}?${query}`, headers: {} });
    const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64url");
    get("malformed JSON message", `connect=v1&encoding=json&message=${encodeURIComponent(validJson.slice(0, 3))}`);
    get("bad base64", "connect=v1&encoding=proto&base64=1&message=%21%21%21");
    get("base64 of odd length", "connect=v1&encoding=proto&base64=1&message=abcde");
    get("random protobuf", `connect=v1&encoding=proto&base64=1&message=${b64(r.bytes(1 + r.int(64)))}`);
    get("bit-flipped protobuf", `connect=v1&encoding=proto&base64=1&message=${b64(flip(r, valid, 2))}`);
    get("bad gzip", `connect=v1&encoding=proto&base64=1&compression=gzip&message=${b64(r.bytes(16))}`);
    get("unknown compression", `connect=v1&encoding=proto&base64=1&compression=lzma&message=${b64(valid)}`);
    get("unknown encoding", `connect=v1&encoding=xml&message=x`);
    get("no message", "connect=v1&encoding=json");
    get("invalid UTF-8", `connect=v1&encoding=json&message=%7B%22a%22%3A%22%FF%FE%22%7D`);
    get("bad percent-encoding", "connect=v1&encoding=json&message=%E0%A4%A");
  }
  return out;
}

/** firstStringField is the JSON name of a message's first string field. */
function firstStringField(desc: DescMessage): string | undefined {
  return desc.fields.find((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING)?.jsonName;
}

/** jsonWithNumbers is a JSON object with `value` in every numeric field. */
function jsonWithNumbers(desc: DescMessage, value: string): string {
  const parts = desc.fields.filter((f) => f.fieldKind === "scalar" && f.scalar !== ScalarType.STRING && f.scalar !== ScalarType.BYTES && f.scalar !== ScalarType.BOOL).map((f) => `"${f.jsonName}":${value}`);
  return `{${parts.join(",")}}`;
}

/** LIMITS are the largest and smallest value of each numeric type. */
const LIMITS: Partial<Record<ScalarType, [bigint | number, bigint | number]>> = {
  [ScalarType.INT64]: [2n ** 63n - 1n, -(2n ** 63n)],
  [ScalarType.SINT64]: [2n ** 63n - 1n, -(2n ** 63n)],
  [ScalarType.SFIXED64]: [2n ** 63n - 1n, -(2n ** 63n)],
  [ScalarType.UINT64]: [2n ** 64n - 1n, 0n],
  [ScalarType.FIXED64]: [2n ** 64n - 1n, 0n],
  [ScalarType.INT32]: [2147483647, -2147483648],
  [ScalarType.SINT32]: [2147483647, -2147483648],
  [ScalarType.SFIXED32]: [2147483647, -2147483648],
  [ScalarType.UINT32]: [4294967295, 0],
  [ScalarType.FIXED32]: [4294967295, 0],
  [ScalarType.DOUBLE]: [Number.MAX_VALUE, -Number.MAX_VALUE],
  [ScalarType.FLOAT]: [3.4028234663852886e38, -3.4028234663852886e38],
};

/**
 * atLimits is a plausible request (sample) with every numeric field at the largest (or smallest)
 * value its type holds: it decodes and mostly validates, so the domain has to cope with it.
 */
function atLimits(desc: DescMessage, r: Rng, end: "max" | "min", only?: string): MessageShape<DescMessage> {
  const message = create(desc, sample(desc, r) as never) as unknown as Record<string, unknown>;
  const visit = (d: DescMessage, m: Record<string, unknown>) => {
    for (const f of d.fields) {
      if (f.fieldKind === "scalar" && (only === undefined || only === f.name)) {
        const limit = LIMITS[f.scalar]?.[end === "max" ? 0 : 1];
        if (limit !== undefined && f.oneof === undefined) m[f.localName] = limit;
      } else if (f.fieldKind === "message" && f.oneof === undefined && typeof m[f.localName] === "object" && m[f.localName] !== null) visit(f.message, m[f.localName] as Record<string, unknown>);
    }
  };
  visit(desc, message);
  return message as unknown as MessageShape<DescMessage>;
}

/** numericFields are the names of a message's own numeric fields. */
function numericFields(desc: DescMessage): string[] {
  return desc.fields.filter((f) => f.fieldKind === "scalar" && LIMITS[f.scalar] !== undefined && f.oneof === undefined).map((f) => f.name);
}

/** Answer is what came back: the HTTP status, headers and trailers, and the body. */
interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  trailers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** timedOut: no complete answer within the client's own limit (not INTERNAL, but noted). */
  timedOut?: boolean;
}

const CLIENT_LIMIT_MS = 8_000;

/** send1 sends one request over HTTP/1.1 on a connection of its own. */
function send1(url: string, h: Hostile): Promise<Answer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const req = http.request(`${url}${h.path}`, { method: h.method, headers: h.headers, agent: false }, (res) => {
      res.on("data", (c: Buffer) => chunks.push(c));
      res.once("end", () => done({ status: res.statusCode ?? 0, headers: res.headers, trailers: res.trailers, body: Buffer.concat(chunks) }));
      res.once("error", () => done({ status: res.statusCode ?? 0, headers: res.headers, trailers: {}, body: Buffer.concat(chunks) }));
    });
    const timer = setTimeout(() => {
      req.destroy();
      done({ status: 0, headers: {}, trailers: {}, body: Buffer.alloc(0), timedOut: true });
    }, CLIENT_LIMIT_MS);
    let settled = false;
    function done(a: Answer) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(a);
    }
    // The server may answer and close before it reads the body: that is an answer, not an error.
    req.once("error", () => done({ status: -1, headers: {}, trailers: {}, body: Buffer.alloc(0) }));
    req.end(h.body === undefined ? undefined : Buffer.from(h.body));
  });
}

/** send2 sends one request as a stream of an HTTP/2 session. */
function send2(session: http2.ClientHttp2Session, h: Hostile): Promise<Answer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    let settled = false;
    const done = (extra: Partial<Answer> = {}) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ status: Number(headers[":status"] ?? 0), headers, trailers, body: Buffer.concat(chunks), ...extra });
    };
    const stream = session.request({ ":method": h.method, ":path": h.path, ...h.headers }, { endStream: h.body === undefined });
    const timer = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      done({ timedOut: true });
    }, CLIENT_LIMIT_MS);
    stream.on("response", (hs) => (headers = hs));
    stream.on("trailers", (ts: http2.IncomingHttpHeaders) => {
      trailers = ts;
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.once("end", () => done());
    stream.once("close", () => done());
    stream.once("error", () => done());
    if (h.body !== undefined) stream.end(Buffer.from(h.body));
  });
}

/**
 * readable is an answer's body with its compression undone: a Connect unary body as a whole, the
 * envelopes of a stream or gRPC-Web answer one by one (flag 1 compressed).
 */
function readable(a: Answer): string {
  const header = (name: string) => String(a.headers[name] ?? "");
  const inflate = (data: Buffer, name: string) => {
    try {
      return name === "br" ? brotliDecompressSync(data) : name === "gzip" ? gunzipSync(data) : data;
    } catch {
      return data;
    }
  };
  const type = header("content-type");
  if (!/^application\/(grpc|connect)/.test(type)) return inflate(a.body, header("content-encoding")).toString("latin1");
  const encoding = header("grpc-encoding") || header("connect-content-encoding");
  const parts: string[] = [];
  for (let at = 0; at + 5 <= a.body.length; ) {
    const flags = a.body[at] ?? 0;
    const length = a.body.readUInt32BE(at + 1);
    const data = a.body.subarray(at + 5, at + 5 + length);
    parts.push(((flags & 1) === 1 ? inflate(data, encoding) : data).toString("latin1"));
    at += 5 + length;
  }
  return parts.join("\n");
}

/** internal tells whether an answer is INTERNAL, in any protocol's words. */
function internal(a: Answer): string | undefined {
  if (a.status === 500) return "HTTP 500";
  if (String(a.headers["grpc-status"]) === "13" || String(a.trailers["grpc-status"]) === "13") return `grpc-status 13 (${String(a.headers["grpc-message"] ?? a.trailers["grpc-message"] ?? "")})`;
  const text = readable(a);
  if (/grpc-status:\s*13\b/.test(text)) return "gRPC-Web trailer grpc-status 13";
  if (/"code"\s*:\s*"internal"/.test(text)) return `Connect code internal: ${text.slice(0, 200)}`;
  return undefined;
}

/** codeOf is the code an answer carries: "3" (a gRPC code, in any protocol's words) or "http 415". */
function codeOf(a: Answer): string {
  const status = a.headers["grpc-status"] ?? a.trailers["grpc-status"];
  if (status !== undefined) return String(status);
  const text = readable(a);
  const web = /grpc-status:\s*(\d+)/.exec(text);
  if (web !== null) return web[1] as string;
  const connect = /"code"\s*:\s*"([a-z_]+)"/.exec(text);
  if (connect !== null) return String(codeFromString(connect[1] as string) ?? connect[1]);
  return `http ${a.status}`;
}

/** pool runs the tasks with at most `width` in flight. */
async function pool<T>(tasks: (() => Promise<T>)[], width: number): Promise<T[]> {
  const results: T[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < tasks.length) {
        const i = next++;
        results[i] = await (tasks[i] as () => Promise<T>)();
      }
    }),
  );
  return results;
}

/** KINDS_PER_CALL bounds the run: each method and protocol gets this many kinds, rotating through them all. */
const KINDS_PER_CALL = 5;

/** barrage sends the garbage to every method over every protocol and returns the INTERNAL answers. */
async function barrage(url: string, seed: number): Promise<{ internals: string[]; sent: number; timedOut: string[] }> {
  const r = rng(seed);
  const sessions = [http2.connect(url), http2.connect(url)];
  for (const s of sessions) s.on("error", () => {});
  let session = 0;
  const h2 = () => {
    let s = sessions[session++ % sessions.length] as http2.ClientHttp2Session;
    if (s.destroyed || s.closed) {
      s = http2.connect(url);
      s.on("error", () => {});
      sessions[(session - 1) % sessions.length] = s;
    }
    return s;
  };
  const tasks: (() => Promise<string | undefined>)[] = [];
  const timedOut: string[] = [];
  let rotation = 0;
  for (const m of METHODS) {
    for (const p of PROTOCOLS) {
      const all = hostiles(p, m, r);
      // Every kind for the calls of both paths' hot methods, a rotating share for the others.
      const full = m.name === "CreateData" || m.name === "RequestAccess" || (m.parent.typeName === "gms.v1.ChatService" && m.name === "Refresh") || (m.parent.typeName === "gms.v1.ChatService" && m.name === "Subscribe");
      // The numbers at their limits reach each method's domain rules: every method gets them.
      const window = Array.from({ length: Math.min(KINDS_PER_CALL, all.length) }, (_, i) => all[(rotation + i) % all.length] as Hostile);
      const chosen = full ? all : [...new Set([...window, ...all.filter((h) => h.kind.includes("limit"))])];
      rotation += KINDS_PER_CALL;
      for (const h of chosen) {
        const label = `${m.parent.typeName}/${m.name} over ${p.name}: ${h.kind}`;
        tasks.push(async () => {
          const a = p.http2 ? await send2(h2(), h) : await send1(url, h);
          if (a.timedOut) timedOut.push(label);
          const bad = internal(a);
          return bad === undefined ? undefined : `${label} -> ${bad}`;
        });
      }
    }
  }
  const results = await pool(tasks, 12);
  for (const s of sessions) s.close();
  return { internals: results.filter((x): x is string => x !== undefined), sent: tasks.length, timedOut };
}

describe.each(DIALECTS)("hostile input on %s", (dialect) => {
  let t: TestServer;
  let dataId: string;
  let before: Uint8Array;
  let chat: { chatId: string; secureKey: string };
  let transcript: Uint8Array;

  const readBack = async () => {
    const data = toBinary(GetDataResponseSchema, await createClient(StorageService, t.grpc).getData({ dataId }));
    const refresh = await createClient(ChatService, t.grpc).refresh({ chatId: chat.chatId, secureKey: chat.secureKey });
    return { data, transcript: toBinary(RefreshResponseSchema, refresh) };
  };

  beforeAll(async () => {
    // Answers compressed from 1 byte (for callers that accept it): refusals are compressed too.
    t = await startTestServer(dialect, { config: { server: { compress_min_bytes: 1 } } });
    const storage = createClient(StorageService, t.grpc);
    const content = new Uint8Array(256).map((_, i) => i);
    ({ dataId } = await storage.createData({
      ttlSeconds: 3600n,
      entries: {
        note: { kind: { case: "text", value: "héllo \u{1F600} wörld" } },
        blob: { kind: { case: "file", value: { filename: "all-bytes.bin", contentType: "application/octet-stream", content } } },
      },
    }));
    const chats = createClient(ChatService, t.grpc);
    const started = await chats.requestChat({ nickname: "hostile-test" });
    chat = { chatId: started.chatId, secureKey: started.secureKey };
    // Accepted, so no AcceptChat of the barrage takes it from the queue.
    await createClient(AgentService, t.grpc).acceptChat({ endpoint: "default", nickname: "agent" });
    for (const text of ["first", "second \u{1F4AC}", "third"]) await chats.sendMessage({ ...chat, text });
    ({ data: before, transcript } = await readBack());
    // What the barrage aims at instead: a waiting chat and a record of its own.
    const target = await chats.requestChat({ nickname: "target" });
    const targetData = await storage.createData({ ttlSeconds: 60n, entries: { a: { kind: { case: "text", value: "b" } } } });
    Object.assign(TARGETS, { endpoint: "default", chat_id: target.chatId, secure_key: target.secureKey, data_id: targetData.dataId });
  });
  afterAll(() => t?.close());

  it("answers no garbage with INTERNAL, stays SERVING, and keeps what was stored byte for byte", { timeout: 180_000 }, async () => {
    const { internals, sent, timedOut } = await barrage(t.server.url, SEED);
    expect(sent).toBeGreaterThan(2000);
    console.info(`hostile-input on ${dialect}: ${sent} requests, seed ${SEED}, ${internals.length} INTERNAL`);
    if (internals.length > 0) console.error(`hostile-input: seed ${SEED} (replay with GMS_HOSTILE_SEED=${SEED}); INTERNAL answers:\n${internals.join("\n")}`);
    if (timedOut.length > 0) console.error(`hostile-input: seed ${SEED}: no answer within ${CLIENT_LIMIT_MS} ms:\n${timedOut.join("\n")}`);
    expect(internals, `seed ${SEED}`).toEqual([]);
    expect(timedOut, `seed ${SEED}`).toEqual([]);
    const health = await createClient(Health, t.grpc).check({});
    expect(health.status).toBe(Status.SERVING);
    const after = await readBack();
    expect(Buffer.from(after.data).equals(Buffer.from(before)), "stored record unchanged").toBe(true);
    expect(Buffer.from(after.transcript).equals(Buffer.from(transcript)), "chat transcript unchanged").toBe(true);
  });
});

/** rawHttp sends bytes on a socket of its own and returns the status line of the answer. */
function rawHttp(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    let out = "";
    const socket = net.connect(port, "127.0.0.1", () => socket.end(text));
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(`no answer: ${out.slice(0, 80)}`);
    }, CLIENT_LIMIT_MS);
    socket.on("data", (d: Buffer) => (out += d.toString("latin1")));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(out.split("\r\n", 1)[0] ?? "");
    });
  });
}

/** EXPECTED are the codes of the kinds whose answer is certain (random garbage may decode). */
const EXPECTED: Record<string, string> = {
  "invalid UTF-8 in a string field": "3",
  "varint of 11 bytes": "3",
  "length-delimited field longer than the message": "3",
  "malformed JSON": "3",
  "deeply nested arrays": "3",
  "deeply nested arrays in a field": "3",
  "invalid UTF-8 in a string": "3",
  "number 1e400": "3",
  "int64 out of range": "3",
  "envelope longer than the body": "3",
  "envelope of 4 GiB": "8",
  "half an envelope header": "3",
  "compressed flag without an encoding": "3",
  "bad gzip": "3",
  "truncated gzip": "3",
  "gzip bomb above the read limit": "8",
  "unknown encoding": "12",
  'content type "text/plain"': "http 415",
  'content type "application/xml"': "http 415",
  "grpc-timeout: abc": "3",
  "grpc-timeout: -1S": "3",
  "grpc-timeout: 99999999999H": "3",
  "connect-timeout-ms: abc": "3",
  "connect-timeout-ms: -1": "3",
  "connect-timeout-ms: 99999999999999999999": "3",
  "GET bad base64": "3",
  "GET base64 of odd length": "3",
  "GET malformed JSON message": "3",
  "GET invalid UTF-8": "3",
  "GET bad gzip": "3",
  "GET unknown compression": "12",
};

describe("undecodable requests, code by code", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer("sqlite");
  });
  afterAll(() => t?.close());

  // Both paths: CreateData and GetData (connect), RequestAccess and Refresh (the lean path's unary
  // calls over gRPC and Connect), Subscribe (its stream over gRPC; connect's over Connect and gRPC-Web).
  const methods = [StorageService.method.createData, StorageService.method.getData, AccessService.method.requestAccess, ChatService.method.refresh, ChatService.method.subscribe];
  it.each(PROTOCOLS.map((p) => [p.name, p] as const))("%s: the caller's code for each kind", async (_name, p) => {
    const session = http2.connect(t.server.url);
    session.on("error", () => {});
    const wrong: string[] = [];
    for (const m of methods) {
      for (const h of hostiles(p, m, rng(SEED))) {
        const want = EXPECTED[h.kind];
        if (want === undefined) continue;
        const a = p.http2 ? await send2(session, h) : await send1(t.server.url, h);
        const got = codeOf(a);
        if (got !== want) wrong.push(`${m.name} ${h.kind}: ${got}, not ${want}`);
      }
    }
    session.close();
    expect(wrong).toEqual([]);
  });
});

describe("JSON with invalid UTF-8", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer("sqlite");
  });
  afterAll(() => t?.close());

  // A lenient decoder would store U+FFFD where the wire carried 0xFF: an acknowledged write of
  // something the caller never sent.
  it.each([
    ["connect path (CreateData)", "/gms.v1.StorageService/CreateData", '{"ttlSeconds":"60","entries":{"k":{"text":"a', '"}}}'],
    ["lean path (Refresh)", "/gms.v1.ChatService/Refresh", '{"chatId":"0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b","secureKey":"k', '"}'],
  ])("%s: INVALID_ARGUMENT, nothing stored", async (_label, path, head, tail) => {
    const body = Buffer.concat([Buffer.from(head), Buffer.from([0xff, 0x62]), Buffer.from(tail)]);
    for (const version of ["1.1", "2"]) {
      const h: Hostile = { kind: "", method: "POST", path, headers: { "content-type": "application/json" }, body };
      let a: Answer;
      if (version === "2") {
        const session = http2.connect(t.server.url);
        a = await send2(session, h);
        session.close();
      } else a = await send1(t.server.url, h);
      expect(a.status, version).toBe(400);
      expect(codeOf(a), version).toBe("3");
    }
  });
});

describe.each(DIALECTS)("requests connect-node cannot describe, on %s", (dialect) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(dialect);
  });
  afterAll(() => t?.close());

  // connect-node builds a URL from the Host header and throws (synchronously, in the request
  // listener) when there is none: an HTTP/1.0 request without a Host took the whole server down.
  it("HTTP/1.0 without a Host, and odd Hosts and targets: answered, never 500, and the server lives on", async () => {
    const body = "{}";
    const post = (line: string, host: string | undefined, type = "application/json") =>
      `${line}\r\n${host === undefined ? "" : `Host: ${host}\r\n`}Content-Type: ${type}\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    const requests = [
      post("POST /gms.v1.StorageService/GetData HTTP/1.0", undefined),
      post("POST /gms.v1.ChatService/Refresh HTTP/1.0", undefined),
      post("POST /grpc.health.v1.Health/Check HTTP/1.0", undefined, "application/grpc-web+proto"),
      "GET /gms.v1.StorageService/GetData?connect=v1&encoding=json&message=%7B%7D HTTP/1.0\r\n\r\n",
      post("POST /gms.v1.StorageService/GetData HTTP/1.1", "a b"),
      post("POST /gms.v1.StorageService/GetData HTTP/1.1", "[::1"),
      post("POST /gms.v1.StorageService/GetData HTTP/1.1", "x:99999"),
      post("POST http://x/gms.v1.StorageService/GetData HTTP/1.1", "x"),
      post("POST * HTTP/1.1", "x"),
    ];
    for (const request of requests) {
      const line = await rawHttp(t.server.port, request);
      expect(line, request.split("\r\n", 1)[0]).toMatch(/^HTTP\/1\.[01] [1-4]\d\d /);
    }
    expect((await createClient(Health, t.grpc).check({})).status).toBe(Status.SERVING);
  });

  it("an unknown method is UNIMPLEMENTED over gRPC and gRPC-Web, 404 over Connect", async () => {
    const session = http2.connect(t.server.url);
    session.on("error", () => {});
    for (const path of ["/gms.v1.StorageService/Nope", "/nope.v1.Nothing/Call", "/"]) {
      const grpc = await send2(session, { kind: "", method: "POST", path, headers: { "content-type": "application/grpc", te: "trailers" }, body: envelope(new Uint8Array(0)) });
      expect(String(grpc.headers["grpc-status"] ?? grpc.trailers["grpc-status"]), path).toBe("12");
      const web = await send2(session, { kind: "", method: "POST", path, headers: { "content-type": "application/grpc-web+proto" }, body: envelope(new Uint8Array(0)) });
      expect(String(web.headers["grpc-status"] ?? web.trailers["grpc-status"]), path).toBe("12");
      const connect = await send1(t.server.url, { kind: "", method: "POST", path, headers: { "content-type": "application/json" }, body: Buffer.from("{}") });
      expect(connect.status, path).toBe(404);
    }
    session.close();
  });
});

/** A server with a log of its own, to read what undecodable requests leave there. */
describe("undecodable requests in the log", () => {
  let server: RunningServer;
  const lines: Record<string, unknown>[] = [];
  let raw = "";
  const MARKER = "PAYLOAD-MARKER-7c1e";

  beforeAll(async () => {
    const db = await createTestDatabase("sqlite");
    const config = parseConfig({ server: { host: "127.0.0.1", port: 0 } }, "test configuration");
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        raw += chunk.toString();
        for (const l of chunk.toString().split("\n")) if (l.trim() !== "") lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    server = await startServer({ config, db, log: pino({ level: "info" }, sink), clock: new ManualClock(Date.now()), sweep: false });
  });
  afterAll(() => server?.shutdown());

  /** Each path and protocol: a protobuf that cannot be parsed, carrying the marker. */
  const garbage = Buffer.concat([Buffer.from([0x0a, 0x40]), Buffer.from(MARKER)]);
  const cases: [string, string, Protocol, Hostile][] = [
    ["connect path, gRPC", "gms.v1.StorageService/CreateData", protocol("gRPC h2"), { kind: "", method: "POST", path: "/gms.v1.StorageService/CreateData", headers: { "content-type": "application/grpc", te: "trailers" }, body: envelope(garbage) }],
    ["connect path, gRPC-Web", "gms.v1.StorageService/GetData", protocol("gRPC-Web h1"), { kind: "", method: "POST", path: "/gms.v1.StorageService/GetData", headers: { "content-type": "application/grpc-web+proto" }, body: envelope(garbage) }],
    ["connect path, Connect", "gms.v1.SessionService/GetSession", protocol("Connect proto h1"), { kind: "", method: "POST", path: "/gms.v1.SessionService/GetSession", headers: { "content-type": "application/proto" }, body: garbage }],
    ["connect path, gRPC stream", "grpc.health.v1.Health/Watch", protocol("gRPC h2"), { kind: "", method: "POST", path: "/grpc.health.v1.Health/Watch", headers: { "content-type": "application/grpc", te: "trailers" }, body: envelope(garbage) }],
    ["lean path, gRPC unary", "gms.v1.AccessService/RequestAccess", protocol("gRPC h2"), { kind: "", method: "POST", path: "/gms.v1.AccessService/RequestAccess", headers: { "content-type": "application/grpc", te: "trailers" }, body: envelope(garbage) }],
    ["lean path, gRPC stream", "gms.v1.ChatService/Subscribe", protocol("gRPC h2"), { kind: "", method: "POST", path: "/gms.v1.ChatService/Subscribe", headers: { "content-type": "application/grpc", te: "trailers" }, body: envelope(garbage) }],
    ["lean path, Connect unary", "gms.v1.ChatService/Refresh", protocol("Connect proto h2"), { kind: "", method: "POST", path: "/gms.v1.ChatService/Refresh", headers: { "content-type": "application/proto" }, body: garbage }],
  ];

  it.each(cases)("%s: INVALID_ARGUMENT, logged at warn with the method, without the payload", async (_label, method, p, h) => {
    const url = server.url;
    let a: Answer;
    if (p.http2) {
      const session = http2.connect(url);
      a = await send2(session, h);
      session.close();
    } else a = await send1(url, h);
    expect(internal(a)).toBeUndefined();
    const code = a.headers["grpc-status"] ?? a.trailers["grpc-status"] ?? (/grpc-status:\s*(\d+)/.exec(a.body.toString("latin1"))?.[1] as string | undefined);
    if (p.kind.startsWith("connect")) {
      expect(a.status).toBe(400);
      expect((JSON.parse(a.body.toString()) as { code: string }).code).toBe("invalid_argument");
    } else expect(String(code)).toBe("3");
    const warned = () => lines.some((l) => l["level"] === 40 && l["method"] === method && l["code"] === "invalid_argument");
    for (let i = 0; i < 50 && !warned(); i++) await new Promise((r) => setTimeout(r, 20));
    expect(warned(), `a warn line for ${method}`).toBe(true);
    expect(raw).not.toContain(MARKER);
  });
});
