// The lean path: the RPCs written as a UnaryRpc or a ServerStream (src/rpc/lean-rpc.ts) served
// straight on Node's HTTP request and response, without connect-node's per-call machinery
// (universal request/response adapters, a chain of down-levelled async generators per interceptor
// and per transform, linked AbortSignals, a deadline timer each), which is most of what an idle
// open stream costs in memory and most of what a short call costs in CPU. It serves them over gRPC
// (HTTP/2, POST, application/grpc or application/grpc+proto): the long-lived server streams (a
// customer's or an agent's Subscribe, an agent's WatchQueue) and the hot unary calls (a customer's
// Refresh poll, RequestInteraction, RequestAccess, MatchInteraction); and the hot unary calls over
// the Connect protocol too (POST application/json or application/proto, HTTP/1.1 or HTTP/2:
// browsers and web widgets polling through Connect-Web). GET, gRPC-Web, Connect streams and every
// other call stay connect's. Everything else a call sees is the same code as on the connect path:
// the Authorizer, protovalidate, toConnectError, logCall, connect's own framing, serialization,
// compression, error-JSON, status-mapping and trailer helpers.
import type * as http from "node:http";
import * as http2 from "node:http2";
import { create, type DescMessage, type DescMethod, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { violationsToProto, type Validator } from "@bufbuild/protovalidate";
import { Code, ConnectError } from "@connectrpc/connect";
import { compressionNegotiate, createMethodSerializationLookup, encodeEnvelope, envelopeCompress, envelopeDecompress, type Compression } from "@connectrpc/connect/protocol";
import * as connectProtocol from "@connectrpc/connect/protocol-connect";
import { contentTypeProto, grpcStatusOk, headerAcceptEncoding, parseContentType, parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { RequestHandler } from "../listen.js";
import { identityKey, type Authorizer, type Identity } from "./auth.js";
import { COMPRESSIONS, JSON_OPTIONS, refuseUndecodable } from "./decode.js";
import { toConnectError } from "./errors.js";
import type { ServerStream, UnaryRpc } from "./lean-rpc.js";
import { logCall, refuseWhileStoreDown, type Availability, type CallTracker } from "./observe.js";

/** LeanPathOptions are what the lean path shares with the connect path's interceptors. */
export interface LeanPathOptions {
  /** streams are the server-streaming RPCs the path serves over gRPC. */
  streams: readonly ServerStream[];
  /** unary are the unary RPCs the path serves over gRPC. */
  unary?: readonly UnaryRpc[];
  authorize: Authorizer;
  /** validator is the protovalidate validator the validate interceptor uses too. */
  validator: Validator;
  log: Logger;
  clock: Clock;
  tracker: CallTracker;
  /** shutdown ends every open stream with UNAVAILABLE and refuses new calls, as the shutdown interceptor does. */
  shutdown: AbortSignal;
  /** health fails calls at once while it says NOT_SERVING, as the availability interceptor does (refuseWhileStoreDown). */
  health: Availability;
  /** readMaxBytes and compressMinBytes are connect's options of the same name. */
  readMaxBytes: number;
  compressMinBytes: number;
}

/**
 * LeanPath serves a request when it is a gRPC call (HTTP/2, POST, application/grpc or
 * application/grpc+proto) of one of its RPCs, or a Connect unary call (POST, application/json or
 * application/proto) of one of its unary RPCs, and returns true; any other request is left to
 * connect (false).
 */
export type LeanPath = (req: Parameters<RequestHandler>[0], res: Parameters<RequestHandler>[1]) => boolean;

/** Route is one RPC with what serving it needs, built once. */
type Route = { method: DescMethod; serialization: ReturnType<typeof createMethodSerializationLookup> } & (
  | { stream: ServerStream; unary?: undefined }
  | { unary: UnaryRpc; stream?: undefined }
);

/** Shared is what every call of a path reads: its options and the registry of open calls. */
interface Shared extends LeanPathOptions {
  open: Set<Call>;
}

const unavailable = () => new ConnectError("the server is shutting down; reconnect", Code.Unavailable);
/** timedOut is a call cut by its deadline (grpc-timeout, Connect-Timeout-Ms), in connect's words. */
const timedOut = () => new ConnectError("the operation timed out", Code.DeadlineExceeded);
/** tooLarge refuses a request above readMaxBytes, in connect's words (with its size when known). */
const tooLarge = (readMaxBytes: number, size?: number) =>
  new ConnectError(`message size ${size === undefined ? "" : `${size} `}is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted);
/** OK_TRAILERS end a call that succeeded. */
const OK_TRAILERS = { "grpc-status": grpcStatusOk };
/** NEVER is the signal of a unary call that does not wait (UnaryRpc.waits): it never aborts. */
const NEVER = new AbortController().signal;
/** CALL_ENDED is why a call's signal aborts once the call is over (the domain reads only that it aborted). */
const CALL_ENDED = new ConnectError("the call ended", Code.Canceled);

/**
 * createLeanPath builds the lean path. Open calls are kept in one registry, which the one
 * listener on the shutdown signal ends; a call holds no timer unless its client set a deadline.
 */
export function createLeanPath(options: LeanPathOptions): LeanPath {
  const routes = new Map<string, Route>();
  const serialization = (method: DescMethod) => createMethodSerializationLookup(method, undefined, JSON_OPTIONS, { readMaxBytes: options.readMaxBytes, writeMaxBytes: 0xffffffff });
  const path = (method: DescMethod) => `/${method.parent.typeName}/${method.name}`;
  for (const stream of options.streams) routes.set(path(stream.method), { method: stream.method, stream, serialization: serialization(stream.method) });
  for (const unary of options.unary ?? []) routes.set(path(unary.method), { method: unary.method, unary, serialization: serialization(unary.method) });
  const shared: Shared = { ...options, open: new Set() };
  options.shutdown.addEventListener("abort", () => {
    for (const call of shared.open) call.finish(unavailable());
  });
  return (req, res) => {
    if (req.method !== "POST") return false;
    const route = routes.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (route === undefined) return false;
    const contentType = req.headers["content-type"] ?? null;
    if (req instanceof http2.Http2ServerRequest && parseContentType(contentType)?.binary === true) {
      shared.tracker.tookLeanPath();
      void new Call(shared, route, req, res as http2.Http2ServerResponse).run();
      return true;
    }
    if (route.unary === undefined) return false;
    const connect = connectProtocol.parseContentType(contentType);
    if (connect === undefined || connect.stream) return false;
    shared.tracker.tookLeanPath();
    void serveConnectUnary(shared, route, route.unary, connect.binary, req, res);
    return true;
  };
}

/**
 * serveConnectUnary serves a unary call of the Connect protocol (POST, application/json or
 * application/proto, over HTTP/1.1 or HTTP/2: browsers through Connect-Web, web widgets polling)
 * as connect's Connect handler does, step for step: compression and timeout errors first, the
 * body read whole (within readMaxBytes, checking Content-Length) and parsed, then the
 * interceptors' rules (auth, shutdown, validation), the call, and one response: the message, or
 * the error as Connect's JSON with the code's HTTP status. A call that may wait (a long-poll)
 * ends when its client goes or its Connect-Timeout-Ms passes.
 */
async function serveConnectUnary(shared: Shared, route: Route, rpc: UnaryRpc, binary: boolean, req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): Promise<void> {
  const started = performance.now();
  shared.tracker.enter();
  let identity: Identity | undefined;
  let abort: AbortController | undefined;
  let deadline: NodeJS.Timeout | undefined;
  const gone = () => abort?.abort(CALL_ENDED);
  const response = new Headers({ "content-type": binary ? connectProtocol.contentTypeUnaryProto : connectProtocol.contentTypeUnaryJson });
  const timeout = connectProtocol.parseTimeout(header(req, "connect-timeout-ms"), Number.MAX_SAFE_INTEGER);
  const compression = compressionNegotiate(COMPRESSIONS, header(req, "content-encoding"), header(req, "accept-encoding"), connectProtocol.headerUnaryAcceptEncoding);
  let status = 200;
  let body: Uint8Array;
  let failure: ConnectError | undefined;
  try {
    const input = await decoding(shared, rpc.method, async () => {
      if (compression.error !== undefined) throw compression.error;
      if (timeout.error !== undefined) throw timeout.error;
      let bytes = await readBody(req, shared.readMaxBytes, header(req, "content-length"));
      if (compression.request !== null) bytes = await compression.request.decompress(bytes, shared.readMaxBytes);
      return route.serialization.getI(binary).parse(bytes);
    });
    identity = admit(shared, rpc, input, header(req, "authorization"));
    if (rpc.waits?.(input) === true) {
      abort = new AbortController();
      res.once("close", gone);
    }
    const call = rpc.call(input, identity ?? identityKey.defaultValue, abort?.signal ?? NEVER);
    // Every call ends at its deadline, a quick one too (a database that stopped answering), its reply dropped.
    const timeoutMs = timeout.timeoutMs;
    const expired =
      timeoutMs === undefined
        ? undefined
        : new Promise<never>((_, reject) => {
            deadline = setTimeout(() => {
              abort?.abort(timedOut());
              reject(timedOut());
            }, timeoutMs);
          });
    const output = await (expired === undefined ? call : Promise.race([call, expired]));
    body = route.serialization.getO(binary).serialize(create(rpc.method.output, output));
  } catch (e) {
    failure = toConnectError(e, shared.log, shared.clock.now());
    status = connectProtocol.codeToHttpStatus(failure.code);
    response.set("content-type", connectProtocol.contentTypeUnaryJson);
    failure.metadata.forEach((value, key) => response.set(key, value));
    body = connectProtocol.errorToJsonBytes(failure, {});
  } finally {
    clearTimeout(deadline);
    res.off("close", gone);
    abort?.abort(CALL_ENDED);
  }
  try {
    if (compression.response !== null && body.byteLength >= shared.compressMinBytes) {
      body = await compression.response.compress(body);
      response.set("content-encoding", compression.response.name);
    }
    response.set("content-length", String(body.byteLength));
    if (!destroyed(res)) {
      res.writeHead(status, Object.fromEntries(response));
      res.end(body);
    }
  } finally {
    shared.tracker.leave();
    logCall(shared.log, rpc.method, started, (identity ?? identityKey.defaultValue).name, failure);
  }
}

/**
 * decoding runs the steps that read and decode a request: what fails there is the caller's mistake
 * (undecodable: never INTERNAL), logged at warn with the method.
 */
async function decoding<T>(shared: Shared, method: DescMethod, decode: () => Promise<T>): Promise<T> {
  try {
    return await decode();
  } catch (e) {
    throw refusal(shared, method, e);
  }
}

/** refusal is the error a request that could not be decoded gets, logged (refuseUndecodable). */
function refusal(shared: Shared, method: DescMethod, e: unknown): ConnectError {
  return refuseUndecodable(shared.log, method, e);
}

/**
 * admit applies the interceptors' rules to a parsed unary request, in their order: the caller's
 * key and role (its identity returned), a server shutting down, protovalidate.
 */
function admit(shared: Shared, rpc: UnaryRpc, input: MessageShape<DescMessage>, authorization: string | null): Identity | undefined {
  const identity = shared.authorize(rpc.method, authorization);
  if (shared.shutdown.aborted) throw unavailable();
  refuseWhileStoreDown(shared.health, rpc.method);
  validate(shared.validator, rpc.method.input, input);
  return identity;
}

/** destroyed tells whether a response can no longer be sent (the client went away). */
function destroyed(res: http.ServerResponse | http2.Http2ServerResponse): boolean {
  return res instanceof http2.Http2ServerResponse ? res.stream.destroyed : res.destroyed;
}

/**
 * readBody reads a unary request's body whole, as connect's readAllBytes: a Content-Length above
 * readMaxBytes is refused before anything is read, a body unlike its Content-Length is a protocol
 * error, one without it is refused once it passes readMaxBytes; a client gone first rejects.
 */
function readBody(req: http.IncomingMessage | http2.Http2ServerRequest, readMaxBytes: number, lengthHint: string | null): Promise<Uint8Array> {
  const hint = lengthHint === null ? Number.NaN : parseInt(lengthHint, 10);
  const promised = Number.isSafeInteger(hint) && hint >= 0 ? hint : undefined;
  const broken = (count: number) => new ConnectError(`protocol error: promised ${promised} bytes, received ${count}`, Code.InvalidArgument);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let count = 0;
    const stop = (error: ConnectError) => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("close", onClose);
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      count += chunk.byteLength;
      if (promised !== undefined && count > promised) return stop(broken(count));
      if (count > readMaxBytes) return stop(tooLarge(readMaxBytes));
      chunks.push(chunk);
    };
    const onEnd = () => {
      req.off("data", onData);
      req.off("close", onClose);
      if (promised !== undefined && count < promised) reject(broken(count));
      else resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
    };
    const onClose = () => stop(new ConnectError("the client went away", Code.Canceled));
    if (promised !== undefined && promised > readMaxBytes) {
      reject(tooLarge(readMaxBytes, promised));
      return;
    }
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("close", onClose);
  });
}

/**
 * Call is one gRPC stream, from its request to its trailers. Once started it holds: this object,
 * an AbortController for the domain's stream, one listener on the response's close, the domain's
 * stream and the one pending read of it.
 */
class Call {
  private readonly started = performance.now();
  private identity: Identity | undefined;
  /** abort ends the domain's stream: the client went away, the call failed, or the server shuts down. */
  private abort: AbortController | undefined;
  private compression: Compression | null = null;
  private deadline: NodeJS.Timeout | undefined;
  private finished = false;

  constructor(
    private readonly shared: Shared,
    private readonly route: Route,
    private readonly req: http2.Http2ServerRequest,
    private readonly res: http2.Http2ServerResponse,
  ) {}

  /** run goes through the same steps, in the same order, as connect's gRPC handler and our interceptors. */
  async run(): Promise<void> {
    if (this.route.unary !== undefined) return this.runUnary(this.route.unary);
    const { shared, route, req } = this;
    const abort = (this.abort = new AbortController());
    shared.open.add(this);
    shared.tracker.streamOpened();
    this.res.once("close", this.gone);
    let items: AsyncIterator<unknown> | undefined;
    try {
      const { timeout, negotiated } = this.negotiate();
      this.identity = shared.authorize(route.stream.method, header(req, "authorization"));
      if (shared.shutdown.aborted) throw unavailable();
      refuseWhileStoreDown(shared.health, route.stream.method);
      // Connect reports these once it reads the request, after the interceptors: so here.
      const input = await this.request(negotiated, timeout.error);
      if (this.finished) return;
      const stream = route.stream as ServerStream;
      items = (await stream.open(input, this.identity ?? identityKey.defaultValue, abort.signal))[Symbol.asyncIterator]();
      for (;;) {
        const step = await items.next();
        if (step.done === true) {
          items = undefined;
          break;
        }
        if (this.finished) break;
        await this.send(stream.message(step.value));
      }
      this.finish(undefined);
    } catch (e) {
      this.finish(toConnectError(e, shared.log, shared.clock.now()));
    } finally {
      // A domain stream left at a yield (the call ended meanwhile) runs its cleanup now.
      if (items !== undefined) await items.return?.(undefined).catch(() => undefined);
    }
  }

  /**
   * negotiate reads the call's deadline (and arms it) and its compression, as connect's gRPC
   * handler does first; their errors are for the caller to raise at connect's moment.
   */
  private negotiate() {
    const { req } = this;
    const timeout = parseTimeout(header(req, "grpc-timeout"), Number.MAX_SAFE_INTEGER);
    if (timeout.timeoutMs !== undefined) {
      this.deadline = setTimeout(() => this.finish(timedOut()), timeout.timeoutMs);
    }
    const negotiated = compressionNegotiate(COMPRESSIONS, header(req, "grpc-encoding"), header(req, "grpc-accept-encoding"), headerAcceptEncoding);
    this.compression = negotiated.response;
    return { timeout, negotiated };
  }

  /**
   * runUnary serves a unary call in connect's order: the request is read and parsed before the
   * interceptors run (auth, shutdown, validation), as connect's unary invocation does. A unary call
   * in flight is counted for the graceful shutdown, which lets it finish.
   */
  private async runUnary(rpc: UnaryRpc): Promise<void> {
    const { shared, req } = this;
    shared.tracker.enter();
    try {
      const { timeout, negotiated } = this.negotiate();
      const input = await this.request(negotiated, timeout.error, false);
      if (this.finished) return;
      this.identity = admit(shared, rpc, input, header(req, "authorization"));
      // A call that may wait ends when its client goes; a quick one finishes, its reply dropped.
      if (rpc.waits?.(input) === true) {
        this.abort = new AbortController();
        this.res.once("close", this.gone);
      }
      const output = await rpc.call(input, this.identity ?? identityKey.defaultValue, this.abort?.signal ?? NEVER);
      await this.send(output);
      this.finish(undefined);
    } catch (e) {
      this.finish(toConnectError(e, shared.log, shared.clock.now()));
    }
  }

  /**
   * request reads the one request message as connect does: the negotiation's errors first, then
   * each envelope decompressed, parsed and (for a stream) validated in turn; none, a second one, a
   * partial one or one above readMaxBytes is an error. A request that cannot be decoded is the
   * caller's mistake (decoding).
   */
  private async request(negotiated: { request: Compression | null; error?: ConnectError | undefined }, timeoutError: ConnectError | undefined, validated = true): Promise<MessageShape<DescMessage>> {
    const { serialization, method } = this.route;
    const kind = method.methodKind === "unary" ? "unary" : "server-streaming";
    let first: MessageShape<DescMessage> | undefined;
    if (negotiated.error !== undefined) throw refusal(this.shared, method, negotiated.error);
    if (timeoutError !== undefined) throw refusal(this.shared, method, timeoutError);
    const { envelopes, error } = await decoding(this.shared, method, () => readEnvelopes(this.req, this.shared.readMaxBytes));
    for (const envelope of envelopes) {
      const message = await decoding(this.shared, method, async () => serialization.getI(true).parse((await envelopeDecompress(envelope, negotiated.request, this.shared.readMaxBytes)).data));
      if (validated) validate(this.shared.validator, method.input, message);
      if (first !== undefined) throw new ConnectError(`protocol error: received extra input message for ${kind} method`, Code.Unimplemented);
      first = message;
    }
    if (error !== undefined) throw refusal(this.shared, method, error);
    if (first === undefined) throw new ConnectError(`protocol error: missing input message for ${kind} method`, Code.Unimplemented);
    return first;
  }

  /** send writes one response message, the response headers first, and waits while the client is slow to read. */
  private async send(init: MessageInitShape<DescMessage>): Promise<void> {
    const data = this.route.serialization.getO(true).serialize(create(this.route.method.output, init));
    const envelope = this.compression !== null && data.byteLength >= this.shared.compressMinBytes ? await envelopeCompress({ flags: 0, data }, this.compression, this.shared.compressMinBytes) : { flags: 0, data };
    if (this.finished) return;
    this.head();
    if (!this.res.write(encodeEnvelope(envelope.flags, envelope.data))) await drained(this.res);
  }

  /** head sends the response headers, as connect does: once, with the first message or the trailers. */
  private head(): void {
    if (this.res.headersSent) return;
    this.res.writeHead(200, this.compression === null ? { "content-type": contentTypeProto } : { "content-type": contentTypeProto, "grpc-encoding": this.compression.name });
  }

  /** gone is the response closing: after the trailers, or the client cancelled (RST_STREAM, connection lost). */
  private readonly gone = () => this.finish(undefined, false);

  /**
   * finish ends the call once: with the status of `error` (OK without one) in the trailers unless
   * the client is gone, the domain's stream aborted, the call out of the registry, and logged.
   */
  finish(error: ConnectError | undefined, reply = true): void {
    if (this.finished) return;
    this.finished = true;
    if (this.route.unary !== undefined) this.shared.tracker.leave();
    else {
      this.shared.open.delete(this);
      this.shared.tracker.streamClosed();
    }
    clearTimeout(this.deadline);
    // A shared reason: abort() without one builds a DOMException (and its stack) per call.
    this.abort?.abort(CALL_ENDED);
    if (reply && !this.res.stream.destroyed) {
      this.head();
      if (error === undefined) this.res.addTrailers(OK_TRAILERS);
      else {
        const trailer = new Headers({ "grpc-status": grpcStatusOk });
        setTrailerStatus(trailer, error);
        this.res.addTrailers(Object.fromEntries(trailer));
      }
      this.res.end();
    }
    logCall(this.shared.log, this.route.method, this.started, (this.identity ?? identityKey.defaultValue).name, error);
  }
}

/** header reads a request header as one string, or null (as connect's Headers.get). */
function header(req: { readonly headers: http.IncomingHttpHeaders }, name: string): string | null {
  const v = req.headers[name];
  return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
}

/** Envelope is one length-prefixed message of the request body. */
interface Envelope {
  flags: number;
  data: Uint8Array;
}

/**
 * readEnvelopes collects the request body's envelopes until it ends, or up to one announcing more
 * than readMaxBytes (then the error, at once: nothing more is buffered). A body ending mid-envelope
 * is the incomplete-envelope error; a client gone before the end rejects.
 */
function readEnvelopes(req: http2.Http2ServerRequest, readMaxBytes: number): Promise<{ envelopes: Envelope[]; error?: ConnectError }> {
  return new Promise((resolve, reject) => {
    const envelopes: Envelope[] = [];
    let buffered: Buffer = Buffer.alloc(0);
    const done = (error?: ConnectError) => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("close", onClose);
      resolve(error === undefined ? { envelopes } : { envelopes, error });
    };
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 5) {
        const length = buffered.readUInt32BE(1);
        if (length > readMaxBytes) return done(tooLarge(readMaxBytes, length));
        if (buffered.length < 5 + length) break;
        envelopes.push({ flags: buffered[0] ?? 0, data: buffered.subarray(5, 5 + length) });
        buffered = buffered.subarray(5 + length);
      }
    };
    const onEnd = () => done(buffered.length > 0 ? new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument) : undefined);
    const onClose = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      reject(new ConnectError("the client went away", Code.Canceled));
    };
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("close", onClose);
  });
}

/** drained resolves once the response can take more, or has closed. */
function drained(res: http2.Http2ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.once("drain", done);
    res.once("close", done);
  });
}

/**
 * validate refuses a request protovalidate finds invalid, with the error the validate interceptor
 * (@connectrpc/validate) gives: INVALID_ARGUMENT with a buf.validate.Violations detail.
 */
function validate(validator: Validator, desc: DescMessage, message: MessageShape<DescMessage>): void {
  const result = validator.validate(desc, message);
  if (result.kind === "valid") return;
  const details = [];
  if (result.violations) {
    const [value, violations] = violationsToProto(result.violations);
    details.push({ desc: violations, value });
  }
  throw new ConnectError(result.error.message, Code.InvalidArgument, undefined, details, result.error);
}
