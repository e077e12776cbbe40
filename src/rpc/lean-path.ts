// The lean path: the RPCs written as a UnaryRpc or a ServerStream (src/rpc/lean-rpc.ts) served
// straight on Node's HTTP request and response, without connect-node's per-call machinery
// (universal request/response adapters, a chain of async generators per transform, linked
// AbortSignals, a deadline timer each), which is most of what an idle open stream costs in memory
// and most of what a short call costs in CPU. It serves them over gRPC (HTTP/2, POST,
// application/grpc or application/grpc+proto): the long-lived server streams (a customer's or an
// agent's Subscribe, an agent's WatchQueue) and the hot unary calls (a customer's Refresh poll,
// RequestInteraction, RequestAccess, MatchInteraction); and the hot unary calls over the Connect
// protocol too (POST application/json or application/proto, HTTP/1.1 or HTTP/2: browsers and web
// widgets polling through Connect-Web). GET, gRPC-Web, Connect streams and every other call stay
// connect's.
//
// Every call runs the serving policy (src/rpc/policy.ts), the very interceptors connect runs,
// composed once per method: the path builds the request an interceptor sees as connect does
// (method, URL, headers, signal, context values, message), calls the chain, and answers with what
// it returns, with the headers and trailers the policy set. What it does itself is what connect's
// protocol handlers do, step for step and in connect's words: read and decode the request
// (decode.ts), negotiate compression, arm the deadline, frame, serialize and compress the answer.
import type * as http from "node:http";
import * as http2 from "node:http2";
import { create, type DescMessage, type DescMethod, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type Interceptor, type StreamRequest, type StreamResponse, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { RequestHandler } from "../listen.js";
import { identityKey } from "./auth.js";
import {
  codeToHttpStatus,
  compressionNegotiate,
  contentTypeGrpcProto,
  contentTypeUnaryJson,
  contentTypeUnaryProto,
  createMethodSerializationLookup,
  encodeEnvelope,
  envelopeCompress,
  envelopeDecompress,
  errorToJsonBytes,
  grpcStatusOk,
  headerGrpcAcceptEncoding,
  headerUnaryAcceptEncoding,
  parseConnectContentType,
  parseConnectTimeout,
  parseGrpcContentType,
  parseGrpcTimeout,
  setTrailerStatus,
  type Compression,
  type MethodSerializationLookup,
} from "./connect-internals.js";
import { COMPRESSIONS, jsonOptions, refuseUndecodable } from "./decode.js";
import { NodeHeaders, ResponseHeaders, responseHeaders } from "./lean-headers.js";
import { toConnectError } from "./errors.js";
import { TappedMessages, type Consumer } from "./tap.js";
import { openStream, type LeanRpc, type ServerStream, type UnaryRpc } from "./lean-rpc.js";
import type { CallTracker } from "./observe.js";
import { applyPolicy, type CallFn } from "./policy.js";
import { peerKey, remoteAddressOf } from "./peer.js";

/** LeanPathOptions are the RPCs the lean path serves, the serving policy, and connect's limits. */
export interface LeanPathOptions {
  /** rpcs are the RPCs the path serves: the served services' UnaryRpcs and ServerStreams (leanRpcsOf). */
  rpcs: readonly LeanRpc[];
  /** policy is the serving policy (servingPolicy): the interceptors connect runs, run here alike. */
  policy: readonly Interceptor[];
  /** log takes the warnings of undecodable requests and the errors toConnectError describes. */
  log: Logger;
  clock: Clock;
  /** tracker counts the calls the path takes and the streams open on it. */
  tracker: CallTracker;
  /** readMaxBytes and compressMinBytes are connect's options of the same name. */
  readMaxBytes: number;
  compressMinBytes: number;
  /** ignoreUnknownJsonFields is connectAdapter's option of the same name (see jsonOptions). */
  ignoreUnknownJsonFields: boolean;
}

/**
 * LeanPath serves a request when it is a gRPC call (HTTP/2, POST, application/grpc or
 * application/grpc+proto) of one of its RPCs, or a Connect unary call (POST, application/json or
 * application/proto) of one of its unary RPCs, and returns true; any other request is left to
 * connect (false).
 */
export type LeanPath = (req: Parameters<RequestHandler>[0], res: Parameters<RequestHandler>[1]) => boolean;

/** Route is one RPC with what serving it needs, built once: its serialization, and the policy around it. */
type Route = {
  method: DescMethod;
  serialization: MethodSerializationLookup<DescMessage, DescMessage>;
  /** call runs the serving policy around the RPC, composed once (applyPolicy). */
  call: CallFn;
} & ({ stream: ServerStream; unary?: undefined } | { unary: UnaryRpc; stream?: undefined });

/** timedOut is a call cut by its deadline (grpc-timeout, Connect-Timeout-Ms), in connect's words. */
const timedOut = () => new ConnectError("the operation timed out", Code.DeadlineExceeded);
/** tooLarge refuses a request above readMaxBytes, in connect's words (with its size when known). */
const tooLarge = (readMaxBytes: number, size?: number) =>
  new ConnectError(`message size ${size === undefined ? "" : `${size} `}is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted);
/** OK_TRAILERS end a call that succeeded. */
const OK_TRAILERS = { "grpc-status": grpcStatusOk };
/** NEVER is the signal of a unary call that neither may wait (UnaryRpc.waits) nor has a deadline: it never aborts. */
const NEVER = new AbortController().signal;
/** CALL_ENDED is why a call's signal aborts once the call is over or its client gone: CANCELED. */
const CALL_ENDED = new ConnectError("the call ended", Code.Canceled);

/**
 * createLeanPath builds the lean path. Each RPC's policy chain is composed here, once; a call holds
 * no timer unless its client set a deadline, and no AbortController unless it may wait or has a
 * deadline (or is a stream).
 */
export function createLeanPath(options: LeanPathOptions): LeanPath {
  const routes = new Map<string, Route>();
  const json = jsonOptions(options.ignoreUnknownJsonFields);
  for (const rpc of options.rpcs) {
    const method = rpc.method;
    const serialization = createMethodSerializationLookup(method, undefined, json, { readMaxBytes: options.readMaxBytes, writeMaxBytes: 0xffffffff });
    const path = `/${method.parent.typeName}/${method.name}`;
    if (rpc.method.methodKind === "unary") {
      const unary = rpc as UnaryRpc;
      routes.set(path, { method, serialization, unary, call: applyPolicy(invokeUnary(unary), options.policy) });
    } else {
      const stream = rpc as ServerStream;
      routes.set(path, { method, serialization, stream, call: applyPolicy(invokeStream(stream), options.policy) });
    }
  }
  return (req, res) => {
    if (req.method !== "POST") return false;
    const route = routes.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (route === undefined) return false;
    const contentType = req.headers["content-type"] ?? null;
    if (req instanceof http2.Http2ServerRequest && parseGrpcContentType(contentType)?.binary === true) {
      options.tracker.tookLeanPath();
      void new Call(options, route, req, res as http2.Http2ServerResponse).run();
      return true;
    }
    if (route.unary === undefined) return false;
    const connect = parseConnectContentType(contentType);
    if (connect === undefined || connect.stream) return false;
    options.tracker.tookLeanPath();
    void serveConnectUnary(options, route, route.unary, connect.binary, req, res);
    return true;
  };
}

/**
 * invokeUnary is the innermost function of a unary RPC's policy chain, as connect's own
 * (invokeUnaryImplementation): the RPC called with the caller the auth policy put in the call's
 * context, its reply as the response message.
 */
function invokeUnary(rpc: UnaryRpc): CallFn {
  const { method } = rpc;
  return async (req) => {
    const output = await rpc.call(req.message as MessageShape<DescMessage>, req.contextValues.get(identityKey), req.signal);
    const response: UnaryResponse = { stream: false, message: create(method.output, output), method, service: method.parent, header: responseHeaders(), trailer: responseHeaders() };
    return response;
  };
}

/**
 * invokeStream is the innermost function of a server stream's policy chain, as connect's own: the
 * one request message read (single), the stream opened (the domain checks the request) and its
 * messages as the response (openStream).
 */
function invokeStream(stream: ServerStream): CallFn {
  const { method } = stream;
  return async (req) => {
    const input = await single(req.message as AsyncIterable<MessageShape<DescMessage>>, "server-streaming");
    const header = responseHeaders();
    const messages = await openStream(stream, input, { caller: req.contextValues.get(identityKey), signal: req.signal, header, local: false });
    const response: StreamResponse = { stream: true, message: messages, method, service: method.parent, header, trailer: responseHeaders() };
    return response;
  };
}

/**
 * single reads the one request message of a call, as connect does (its ensureSingle): none is
 * UNIMPLEMENTED, and so is a second one, once it has been read (and validated).
 */
async function single(messages: AsyncIterable<MessageShape<DescMessage>>, kind: "unary" | "server-streaming"): Promise<MessageShape<DescMessage>> {
  const it = messages[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done === true) throw new ConnectError(`protocol error: missing input message for ${kind} method`, Code.Unimplemented);
  const second = await it.next();
  if (second.done !== true) throw new ConnectError(`protocol error: received extra input message for ${kind} method`, Code.Unimplemented);
  return first.value;
}

/**
 * request is a call as the policy sees it, as connect builds it: the method, the request's URL and
 * headers (NodeHeaders: read straight from Node's until a policy changes them), the call's signal,
 * fresh context values, and the request message (a stream's to be read).
 */
function request<M extends UnaryRequest["message"] | StreamRequest["message"]>(
  route: Route,
  req: http.IncomingMessage | http2.Http2ServerRequest,
  signal: AbortSignal,
  message: M,
): M extends AsyncIterable<unknown> ? StreamRequest : UnaryRequest {
  // An HTTP/2 request's socket is a Proxy made on first use and kept with the stream: its scheme is
  // read from the request's :scheme instead.
  const h2 = req instanceof http2.Http2ServerRequest;
  const authority = h2 ? req.authority : req.headers.host;
  const scheme = h2 ? req.scheme : "encrypted" in req.socket && req.socket.encrypted === true ? "https" : "http";
  return {
    stream: route.stream !== undefined,
    message,
    method: route.method,
    service: route.method.parent,
    requestMethod: "POST",
    url: `${scheme}://${authority ?? ""}${req.url ?? ""}`,
    signal,
    header: new NodeHeaders(req.headers) as unknown as Headers,
    contextValues: createContextValues().set(peerKey, remoteAddressOf(req)),
  } as never;
}

/**
 * serveConnectUnary serves a unary call of the Connect protocol (POST, application/json or
 * application/proto, over HTTP/1.1 or HTTP/2: browsers through Connect-Web, web widgets polling)
 * as connect's Connect handler does, step for step: compression and timeout errors first, the
 * body read whole (within readMaxBytes, checking Content-Length) and parsed, then the serving
 * policy around the call, and one response: the message with the headers and trailers (as
 * `trailer-` headers) the policy set, or the error as Connect's JSON with the code's HTTP status.
 * A call that may wait (a long-poll) ends when its client goes; any call at its Connect-Timeout-Ms.
 */
async function serveConnectUnary(shared: LeanPathOptions, route: Route, rpc: UnaryRpc, binary: boolean, req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): Promise<void> {
  let abort: AbortController | undefined;
  let deadline: NodeJS.Timeout | undefined;
  const gone = () => abort?.abort(CALL_ENDED);
  const response = new ResponseHeaders();
  response.set("content-type", binary ? contentTypeUnaryProto : contentTypeUnaryJson);
  const timeout = parseConnectTimeout(header(req, "connect-timeout-ms"), Number.MAX_SAFE_INTEGER);
  const compression = compressionNegotiate(COMPRESSIONS, header(req, "content-encoding"), header(req, "accept-encoding"), headerUnaryAcceptEncoding);
  let status = 200;
  let body: Uint8Array;
  try {
    const input = await decoding(shared, rpc.method, async () => {
      if (compression.error !== undefined) throw compression.error;
      if (timeout.error !== undefined) throw timeout.error;
      let bytes = await readBody(req, shared.readMaxBytes, header(req, "content-length"));
      if (compression.request !== null) bytes = await compression.request.decompress(bytes, shared.readMaxBytes);
      return route.serialization.getI(binary).parse(bytes);
    });
    const waits = rpc.waits?.(input) === true;
    const timeoutMs = timeout.timeoutMs;
    if (waits || timeoutMs !== undefined) abort = new AbortController();
    if (waits) res.once("close", gone);
    // Every call ends at its deadline (the deadline policy), a quick one too (a database that
    // stopped answering), its reply dropped.
    if (timeoutMs !== undefined) deadline = setTimeout(() => abort?.abort(timedOut()), timeoutMs);
    const output = await route.call(request(route, req, abort?.signal ?? NEVER, input));
    body = route.serialization.getO(binary).serialize(output.message as MessageShape<DescMessage>);
    output.header.forEach((value, key) => response.set(key, value));
    output.trailer.forEach((value, key) => response.append(`trailer-${key}`, value));
  } catch (e) {
    const failure = toConnectError(e, shared.log, shared.clock.now());
    status = codeToHttpStatus(failure.code);
    response.set("content-type", contentTypeUnaryJson);
    failure.metadata.forEach((value, key) => response.set(key, value));
    body = errorToJsonBytes(failure, {});
  } finally {
    clearTimeout(deadline);
    res.off("close", gone);
    abort?.abort(CALL_ENDED);
  }
  if (compression.response !== null && body.byteLength >= shared.compressMinBytes) {
    body = await compression.response.compress(body);
    response.set("content-encoding", compression.response.name);
  }
  response.set("content-length", String(body.byteLength));
  if (!destroyed(res)) {
    res.writeHead(status, Object.fromEntries(response));
    res.end(body);
  }
}

/**
 * decoding runs the steps that read and decode a request: what fails there is the caller's mistake
 * (undecodable: never INTERNAL), logged at warn with the method.
 */
async function decoding<T>(shared: LeanPathOptions, method: DescMethod, decode: () => Promise<T>): Promise<T> {
  try {
    return await decode();
  } catch (e) {
    throw refuseUndecodable(shared.log, method, e);
  }
}

/**
 * Call is one gRPC call, from its request to its trailers. Once started, a stream holds: this
 * object, an AbortController for the domain's stream, one listener on the response's close, the
 * policy's and the domain's stream and the one pending read of it.
 */
class Call implements Consumer {
  /** abort is the call's signal: the client went away, the deadline passed, or the call is over. */
  private abort: AbortController | undefined;
  private compression: Compression | null = null;
  private deadline: NodeJS.Timeout | undefined;
  private finished = false;
  /** header and trailer are the response's, as the policy set them, until they are sent. */
  private header: Headers | undefined;
  private trailer: Headers | undefined;

  constructor(
    private readonly shared: LeanPathOptions,
    private readonly route: Route,
    private readonly req: http2.Http2ServerRequest,
    private readonly res: http2.Http2ServerResponse,
  ) {}

  /** run goes through the same steps, in the same order, as connect's gRPC handler. */
  run(): Promise<void> {
    return this.route.unary === undefined ? this.runStream() : this.runUnary(this.route.unary);
  }

  /**
   * runStream serves a server stream: the policy runs first, then (inside it) the request is read
   * and the domain's stream opened, and its messages sent as they come, until it ends, fails, or the
   * policy ends it (deadline, shutdown).
   */
  private async runStream(): Promise<void> {
    const { shared } = this;
    shared.tracker.streamOpened();
    this.res.once("close", this.gone);
    let messages: AsyncIterator<MessageShape<DescMessage>> | undefined;
    try {
      messages = await this.openStream();
      // Read on once finished too: the read ends soon (the call's signal aborted), and the policy
      // sees how the call ended. A message sent is not held while the stream waits for the next.
      let step: IteratorResult<MessageShape<DescMessage>> | undefined;
      while ((step = await messages.next()).done !== true) {
        await this.send(step.value);
        step = undefined;
      }
      messages = undefined;
      this.finish(undefined);
    } catch (e) {
      messages = undefined;
      this.finish(toConnectError(e, shared.log, shared.clock.now()));
    } finally {
      // A stream left at a read (a failed write) runs its cleanup now.
      if (messages !== undefined) await messages.return?.(undefined).catch(() => undefined);
    }
  }

  /**
   * openStream runs the policy around a stream's opening: inside it the request is read and the
   * domain's stream opened. It keeps what the call needs of the response: its messages, and the
   * headers and trailers the policy set.
   */
  private async openStream(): Promise<AsyncIterator<MessageShape<DescMessage>>> {
    const { route } = this;
    const abort = (this.abort ??= new AbortController());
    const { timeout, negotiated } = this.negotiate();
    const response = await route.call(request(route, this.req, abort.signal, this.input(negotiated, timeout.error)));
    if (!response.stream) throw new ConnectError("a stream answered as a unary call", Code.Internal);
    this.header = response.header;
    this.trailer = response.trailer;
    // Messages the policy tapped tell this call when a tap ends them (shutdown, deadline): it answers then.
    if (response.message instanceof TappedMessages) response.message.consumer = this;
    return response.message[Symbol.asyncIterator]();
  }

  /**
   * runUnary serves a unary call in connect's order: the request is read and parsed before the
   * policy runs, as connect's unary invocation does.
   */
  private async runUnary(rpc: UnaryRpc): Promise<void> {
    const { shared, route } = this;
    try {
      const { timeout, negotiated } = this.negotiate();
      const input = await this.unaryInput(negotiated, timeout.error);
      if (this.finished) return;
      // A call that may wait ends when its client goes; a quick one finishes, its reply dropped.
      if (rpc.waits?.(input) === true) {
        this.abort ??= new AbortController();
        this.res.once("close", this.gone);
      }
      const response = await route.call(request(route, this.req, this.abort?.signal ?? NEVER, input));
      this.header = response.header;
      this.trailer = response.trailer;
      await this.send(response.message as MessageShape<DescMessage>);
      this.finish(undefined);
    } catch (e) {
      this.finish(toConnectError(e, shared.log, shared.clock.now()));
    }
  }

  /**
   * negotiate reads the call's deadline (and arms it) and its compression, as connect's gRPC
   * handler does first; their errors are for the caller to raise at connect's moment. At the
   * deadline the call's signal aborts (the deadline policy ends the call on it) and the call ends.
   */
  private negotiate() {
    const { req } = this;
    const timeout = parseGrpcTimeout(header(req, "grpc-timeout"), Number.MAX_SAFE_INTEGER);
    const timeoutMs = timeout.timeoutMs;
    if (timeoutMs !== undefined) {
      const abort = (this.abort ??= new AbortController());
      this.deadline = setTimeout(() => {
        abort.abort(timedOut());
        this.finish(timedOut());
      }, timeoutMs);
    }
    const negotiated = compressionNegotiate(COMPRESSIONS, header(req, "grpc-encoding"), header(req, "grpc-accept-encoding"), headerGrpcAcceptEncoding);
    this.compression = negotiated.response;
    return { timeout, negotiated };
  }

  /**
   * input reads the request messages as connect does: the negotiation's errors first, then each
   * envelope decompressed and parsed in turn; a partial one or one above readMaxBytes is an error
   * once the whole ones before it are read. What cannot be decoded is the caller's mistake
   * (decoding). The validation policy validates each message as it is read.
   */
  private async *input(negotiated: { request: Compression | null; error?: ConnectError | undefined }, timeoutError: ConnectError | undefined): AsyncGenerator<MessageShape<DescMessage>> {
    const { shared, route } = this;
    const { method, serialization } = route;
    if (negotiated.error !== undefined) throw refuseUndecodable(shared.log, method, negotiated.error);
    if (timeoutError !== undefined) throw refuseUndecodable(shared.log, method, timeoutError);
    const { envelopes, error } = await decoding(shared, method, () => readEnvelopes(this.req, shared.readMaxBytes));
    for (const envelope of envelopes) {
      yield await decoding(shared, method, async () => serialization.getI(true).parse((await envelopeDecompress(envelope, negotiated.request, shared.readMaxBytes)).data));
    }
    if (error !== undefined) throw refuseUndecodable(shared.log, method, error);
  }

  /**
   * unaryInput reads a unary call's one request message as `single(this.input(...))` would, step
   * for step and error for error (a second message is decoded before it is refused), without a
   * generator and its promises per call.
   */
  private async unaryInput(negotiated: { request: Compression | null; error?: ConnectError | undefined }, timeoutError: ConnectError | undefined): Promise<MessageShape<DescMessage>> {
    const { shared, route } = this;
    const { method, serialization } = route;
    if (negotiated.error !== undefined) throw refuseUndecodable(shared.log, method, negotiated.error);
    if (timeoutError !== undefined) throw refuseUndecodable(shared.log, method, timeoutError);
    const { envelopes, error } = await decoding(shared, method, () => readEnvelopes(this.req, shared.readMaxBytes));
    const parse = (envelope: Envelope) => decoding(shared, method, async () => serialization.getI(true).parse((await envelopeDecompress(envelope, negotiated.request, shared.readMaxBytes)).data));
    const [first, second] = envelopes;
    if (first === undefined) {
      if (error !== undefined) throw refuseUndecodable(shared.log, method, error);
      throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
    }
    const message = await parse(first);
    if (second !== undefined) {
      await parse(second);
      throw new ConnectError("protocol error: received extra input message for unary method", Code.Unimplemented);
    }
    if (error !== undefined) throw refuseUndecodable(shared.log, method, error);
    return message;
  }

  /** send writes one response message, the response headers first, and waits while the client is slow to read. */
  private async send(message: MessageShape<DescMessage>): Promise<void> {
    if (this.finished) return;
    const data = this.route.serialization.getO(true).serialize(message);
    const envelope = this.compression !== null && data.byteLength >= this.shared.compressMinBytes ? await envelopeCompress({ flags: 0, data }, this.compression, this.shared.compressMinBytes) : { flags: 0, data };
    if (this.finished) return;
    this.head();
    if (!this.res.write(encodeEnvelope(envelope.flags, envelope.data))) await drained(this.res);
  }

  /**
   * head sends the response headers, as connect does: once, with the first message or the
   * trailers, with the headers the policy set.
   */
  private head(): void {
    if (this.res.headersSent) return;
    const headers: http2.OutgoingHttpHeaders = this.compression === null ? { ":status": 200, "content-type": contentTypeGrpcProto } : { ":status": 200, "content-type": contentTypeGrpcProto, "grpc-encoding": this.compression.name };
    this.header?.forEach((value, key) => (headers[key] = value));
    this.header = undefined;
    // The stream's own respond, as the compatibility response's writeHead ends up calling (with
    // trailers to follow, which it sends from addTrailers): writeHead would first copy the headers
    // into the response, one more object that an open stream keeps for its whole life.
    this.res.stream.respond(headers, { waitForTrailers: true });
  }

  /** ended is the policy ending a stream (a tap's signal: shutdown, deadline): the call ends with its error. */
  ended(error: unknown): void {
    this.finish(toConnectError(error, this.shared.log, this.shared.clock.now()));
  }

  /** gone is the response closing: after the trailers, or the client cancelled (RST_STREAM, connection lost). */
  private readonly gone = () => this.finish(undefined, false);

  /**
   * finish ends the call once: with the status of `error` (OK without one) in the trailers, with the
   * trailers the policy set, unless the client is gone; and the call's signal aborted, which ends
   * the domain's stream.
   */
  finish(error: ConnectError | undefined, reply = true): void {
    if (this.finished) return;
    this.finished = true;
    if (this.route.stream !== undefined) this.shared.tracker.streamClosed();
    clearTimeout(this.deadline);
    // A shared reason: abort() without one builds a DOMException (and its stack) per call.
    this.abort?.abort(CALL_ENDED);
    if (reply && !this.res.stream.destroyed) {
      this.head();
      const set = this.trailer;
      let trailers: http2.OutgoingHttpHeaders = OK_TRAILERS;
      if (error !== undefined || !isEmpty(set)) {
        const trailer = new Headers(set);
        trailer.set("grpc-status", grpcStatusOk);
        if (error !== undefined) setTrailerStatus(trailer, error);
        trailers = Object.fromEntries(trailer);
      }
      this.res.addTrailers(trailers);
      this.res.end();
    }
  }
}

/** isEmpty tells whether there are no headers to add. */
function isEmpty(headers: Headers | undefined): boolean {
  if (headers instanceof ResponseHeaders) return headers.empty;
  return headers === undefined || headers.keys().next().done === true;
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
