// Requests that cannot be decoded: bad protobuf, a compressed flag without an encoding, bad gzip, a
// bad Connect GET `message`, malformed JSON or invalid UTF-8, lying lengths, unknown encodings or
// bad timeouts. They are the caller's mistake: INVALID_ARGUMENT (or the protocol's own code:
// RESOURCE_EXHAUSTED above the read limit, UNIMPLEMENTED for an unknown method or encoding, HTTP
// 415 for a content type no protocol takes), never INTERNAL, and each is logged at warn with its
// method, never its payload. connect-es reports a few of them as INTERNAL (a protobuf parse error,
// a compressed envelope without an encoding, some zlib errors, a GET `message` that is not
// base64) and raises the unary ones before any interceptor runs; this module owns those cases for
// both serving paths: the connect path (connectAdapter, a node adapter like connect-node's) and the
// lean path (lean-path.ts, which calls refuseUndecodable).
import type * as http from "node:http";
import type * as http2 from "node:http2";
import type { DescMethod, JsonReadOptions } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createConnectRouter,
  createContextKey,
  createContextValues,
  type ConnectRouter,
  type Interceptor,
} from "@connectrpc/connect";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import type { RequestHandler } from "../listen.js";
import {
  codeFromHttpStatus,
  codeToHttpStatus,
  contentTypeUnaryJson,
  createAsyncIterable,
  encodeEnvelope,
  errorFromJsonBytes,
  errorToJsonBytes,
  findTrailerError,
  respecGrpcMessage,
  setTrailerStatus,
  trailerFlag,
  trailerParse,
  trailerSerialize,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
  type Compression,
  type UniversalHandler,
  type UniversalServerResponse,
} from "./connect-internals.js";
import { codeName, methodName } from "./observe.js";
import { peerKey, remoteAddressOf } from "./peer.js";

/**
 * undecodable turns an error raised while reading and decoding a request into the caller's error:
 * INTERNAL and UNKNOWN (connect's parse and decompression failures) and anything that is not a
 * ConnectError become INVALID_ARGUMENT; the protocol's own codes (INVALID_ARGUMENT,
 * RESOURCE_EXHAUSTED, UNIMPLEMENTED, CANCELED, DEADLINE_EXCEEDED, ...) stay.
 */
export function undecodable(e: unknown): ConnectError {
  if (e instanceof ConnectError && e.code !== Code.Internal && e.code !== Code.Unknown) return e;
  const raw = e instanceof ConnectError ? e.rawMessage : "";
  const message = raw === "" || raw === "internal error" ? "the request could not be decoded" : `the request could not be decoded: ${raw}`;
  return new ConnectError(message, Code.InvalidArgument, undefined, undefined, e);
}

/** logUndecodable writes the warning an undecodable request gets: its method and code, never its payload. */
export function logUndecodable(log: Logger, method: DescMethod, code: Code): void {
  // A client going away is not a bad request.
  if (code === Code.Canceled) return;
  log.warn({ method: methodName(method), code: codeName(code) }, "rpc request could not be decoded");
}

/** refuseUndecodable is undecodable with its warning logged: what every decoding step on either path throws. */
export function refuseUndecodable(log: Logger, method: DescMethod, e: unknown): ConnectError {
  const error = undecodable(e);
  logUndecodable(log, method, error.code);
  return error;
}

/**
 * decompressing makes a Compression's decompression failures the caller's: a body its encoding
 * cannot decode is INVALID_ARGUMENT (connect-node's zlib wrapper leaves some, e.g. a truncated
 * gzip stream, INTERNAL); above readMaxBytes stays RESOURCE_EXHAUSTED.
 */
function decompressing(compression: Compression): Compression {
  return {
    name: compression.name,
    compress: (bytes) => compression.compress(bytes),
    decompress: (bytes, readMaxBytes) => compression.decompress(bytes, readMaxBytes).catch((e: unknown) => Promise.reject(undecodable(e))),
  };
}

/** COMPRESSIONS are the encodings both paths accept, in connect-node's default order (gzip, br). */
export const COMPRESSIONS: Compression[] = [decompressing(compressionGzip), decompressing(compressionBrotli)];

/**
 * jsonOptions are how both paths read JSON requests. Invalid UTF-8 is undecodable (connect's
 * default decoder would store U+FFFD in place of what the wire carried; binary strings are checked
 * by protobuf-es): connect's JSON serialization reads `textDecoder` from these options
 * (createJsonSerialization), though the handler options' type does not name it;
 * test/hostile-input.test.ts checks it works. A field the message does not have (`{"ttl":60}` for
 * `ttlSeconds`) or an unknown enum name is undecodable too, naming the key, unless
 * `ignoreUnknownFields` (server.ignore_unknown_json_fields) lets clients of a newer contract through:
 * connect ignores them by default, so a misspelling silently meant a default.
 */
export function jsonOptions(ignoreUnknownFields: boolean): Partial<JsonReadOptions> {
  return { textDecoder: new TextDecoder("utf-8", { fatal: true }), ignoreUnknownFields } as Partial<JsonReadOptions>;
}

/** enteredKey marks a call that reached the interceptors: its request was decoded, or is a stream's. */
const enteredKey = createContextKey(false, { description: "the call reached the interceptors" });

/**
 * decodeInterceptor, outermost, marks the call as having reached the interceptors and makes the
 * errors of a streaming request's messages (read inside the interceptors) undecodable, logged.
 */
function decodeInterceptor(log: Logger): Interceptor {
  return (next) => (req) => {
    req.contextValues.set(enteredKey, true);
    if (!req.stream) return next(req);
    const input = req.message;
    const method = req.method;
    return next({
      ...req,
      message: (async function* () {
        try {
          yield* input;
        } catch (e) {
          throw refuseUndecodable(log, method, e);
        }
      })(),
    });
  };
}

/** ConnectAdapterOptions are connect-node's adapter options this server uses, and the log. */
export interface ConnectAdapterOptions {
  routes: (router: ConnectRouter) => void;
  interceptors: Interceptor[];
  readMaxBytes: number;
  compressMinBytes: number;
  /** ignoreUnknownJsonFields reads JSON fields the message does not have as absent instead of refusing them (see jsonOptions). */
  ignoreUnknownJsonFields: boolean;
  log: Logger;
}

/**
 * connectAdapter is connect-node's connectNodeAdapter with the request decoding owned here: a call
 * connect refused before the interceptors (a unary request it could not read, decode or parse, a
 * content type or HTTP method no protocol takes) answers the caller's code instead of INTERNAL and
 * is logged at warn; a request connect-node cannot even describe (an HTTP/1.0 request without a
 * Host) is INVALID_ARGUMENT too; an unknown method is UNIMPLEMENTED over gRPC and gRPC-Web, 404
 * otherwise.
 */
export function connectAdapter(options: ConnectAdapterOptions): RequestHandler {
  const { log } = options;
  const router = createConnectRouter({
    interceptors: [decodeInterceptor(log), ...options.interceptors],
    readMaxBytes: options.readMaxBytes,
    compressMinBytes: options.compressMinBytes,
    acceptCompression: COMPRESSIONS,
    jsonOptions: jsonOptions(options.ignoreUnknownJsonFields),
  });
  options.routes(router);
  const paths = new Map<string, UniversalHandler>();
  for (const handler of router.handlers) paths.set(handler.requestPath, handler);
  return (req, res) => {
    const handler = paths.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (handler === undefined) return notFound(req, res);
    const values = createContextValues();
    values.set(peerKey, remoteAddressOf(req));
    if (isGrpcOverHttp2(req)) respecTrailers(res as http2.Http2ServerResponse);
    let uReq;
    try {
      uReq = universalRequestFromNodeRequest(req as http.IncomingMessage, res as http.ServerResponse, undefined, values);
    } catch (e) {
      logUndecodable(log, handler.method, Code.InvalidArgument);
      return refuse(req, res, undecodable(e));
    }
    handler(uReq)
      .then((uRes) => (values.get(enteredKey) ? uRes : refused(uRes, handler.method, log)))
      .then((uRes) => universalResponseToNodeResponse(uRes, res as http.ServerResponse))
      .catch((e: unknown) => {
        // A response that could not be written: the client went away, or reset its stream. Anything
        // else before the answer began is this server's fault: answered INTERNAL, not left hanging.
        const code = ConnectError.from(e).code;
        if (code !== Code.Canceled && code !== Code.Aborted && !res.headersSent && !res.writableEnded) {
          log.error({ err: e, method: methodName(handler.method) }, "rpc failed before its response");
          refuse(req, res, new ConnectError("internal error", Code.Internal));
          return;
        }
        log.debug({ method: methodName(handler.method), code: codeName(code) }, "rpc response not written");
      });
  };
}

/**
 * refused reads the answer connect gave a call it ended before the interceptors, makes an INTERNAL
 * there INVALID_ARGUMENT (nothing but the request's decoding runs there), and logs it. Such an
 * answer carries no message: its body is at most an error (Connect), the trailers (gRPC-Web) or
 * nothing (gRPC, whose trailers are fixed once its empty body ends).
 */
async function refused(uRes: UniversalServerResponse, method: DescMethod, log: Logger): Promise<UniversalServerResponse> {
  const body = await readAll(uRes.body);
  try {
    return await rewrite({ ...uRes, body: createAsyncIterable(body.byteLength === 0 ? [] : [body]) }, body, method, log);
  } catch (e) {
    // An answer this code cannot read is passed on as connect made it.
    log.error({ err: e, method: methodName(method) }, "rpc refusal not rewritten");
    return { ...uRes, body: createAsyncIterable(body.byteLength === 0 ? [] : [body]) };
  }
}

/** rewrite is refused's work on the answer's body, read whole. */
async function rewrite(uRes: UniversalServerResponse, body: Uint8Array, method: DescMethod, log: Logger): Promise<UniversalServerResponse> {
  const contentType = uRes.header?.get("content-type") ?? "";
  let code: Code | undefined;
  // Connect and gRPC-Web compress an error as any answer (compressMinBytes): read it through.
  const encoding = COMPRESSIONS.find((c) => c.name === (uRes.header?.get("content-encoding") ?? uRes.header?.get("grpc-encoding")));
  if (contentType.startsWith("application/grpc-web")) {
    code = Code.Unknown;
    const chunks: Uint8Array[] = [];
    for (let at = 0; at + 5 <= body.byteLength; ) {
      const flags = body[at] ?? 0;
      const length = new DataView(body.buffer, body.byteOffset + at + 1, 4).getUint32(0);
      let data = body.subarray(at + 5, at + 5 + length);
      at += 5 + length;
      if (flags === (trailerFlag | 1) && encoding !== undefined) data = await encoding.decompress(data, 1024 * 1024);
      else if (flags !== trailerFlag) {
        // A message (there is none) or a compressed trailer: passed on as it is.
        chunks.push(encodeEnvelope(flags, data));
        continue;
      }
      const trailer = trailerParse(data);
      const error = findTrailerError(trailer);
      if (error !== undefined) {
        const fixed = undecodable(error);
        code = fixed.code;
        if (fixed !== error) setTrailerStatus(trailer, fixed);
      } else code = undefined;
      chunks.push(encodeEnvelope(trailerFlag, trailerSerialize(trailer)));
    }
    uRes = { ...uRes, body: createAsyncIterable(chunks) };
  } else if (contentType.startsWith("application/grpc")) {
    const error = uRes.trailer === undefined ? undefined : findTrailerError(uRes.trailer);
    const fixed = error === undefined ? undefined : undecodable(error);
    if (fixed !== undefined && fixed !== error && uRes.trailer !== undefined) setTrailerStatus(uRes.trailer, fixed);
    code = fixed?.code ?? (uRes.status === 200 ? undefined : codeFromHttpStatus(uRes.status));
  } else if (contentType.startsWith(contentTypeUnaryJson) && uRes.status !== 200) {
    const json = encoding === undefined ? body : await encoding.decompress(body, 1024 * 1024);
    const error = errorFromJsonBytes(json, undefined, new ConnectError(`HTTP ${uRes.status}`, codeFromHttpStatus(uRes.status)));
    const fixed = undecodable(error);
    code = fixed.code;
    if (fixed !== error) {
      let fixedBody = errorToJsonBytes(fixed, {});
      if (encoding !== undefined) fixedBody = await encoding.compress(fixedBody);
      const header = new Headers(uRes.header);
      header.set("content-length", String(fixedBody.byteLength));
      uRes = { ...uRes, status: codeToHttpStatus(fixed.code), header, body: createAsyncIterable([fixedBody]) };
    }
  } else {
    // 415, 405, 505: no protocol takes the request as it came.
    code = codeFromHttpStatus(uRes.status);
  }
  if (code !== undefined) logUndecodable(log, method, code);
  return uRes;
}

/** readAll collects a response body that holds no message (see refused): a few hundred bytes at most. */
async function readAll(body: AsyncIterable<Uint8Array> | undefined): Promise<Uint8Array> {
  if (body === undefined) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return chunks.length === 1 ? (chunks[0] as Uint8Array) : Buffer.concat(chunks);
}

/** isGrpcOverHttp2 tells whether a request speaks gRPC proper (not gRPC-Web): its status goes in HTTP/2 trailers. */
function isGrpcOverHttp2(req: { readonly headers: http.IncomingHttpHeaders }): boolean {
  const type = req.headers["content-type"];
  return typeof type === "string" && /^application\/grpc(?![-\w])/i.test(type);
}

/**
 * respecTrailers makes the `grpc-message` trailer connect-node writes encoded as the gRPC spec asks
 * (respecGrpcMessage): connect encodes more than the spec, and grpc-js clients show the excess.
 */
function respecTrailers(res: http2.Http2ServerResponse): void {
  const add = res.addTrailers.bind(res);
  res.addTrailers = (headers: http.OutgoingHttpHeaders) => {
    const message = headers["grpc-message"];
    add(typeof message === "string" ? { ...headers, "grpc-message": respecGrpcMessage(message) } : headers);
  };
}

/** isGrpc tells whether a request speaks gRPC or gRPC-Web (their answers carry a grpc-status). */
function isGrpc(req: { readonly headers: http.IncomingHttpHeaders }): boolean {
  const type = req.headers["content-type"];
  return typeof type === "string" && type.toLowerCase().startsWith("application/grpc");
}

/** notFound answers a path that is no method: UNIMPLEMENTED for gRPC and gRPC-Web, as their servers do; else 404. */
function notFound(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void {
  if (!isGrpc(req)) {
    res.writeHead(404);
    res.end();
    return;
  }
  refuse(req, res, new ConnectError(`unknown method ${(req.url ?? "").split("?", 1)[0] ?? ""}`, Code.Unimplemented));
}

/**
 * refuse answers a request with an error before connect has read it: gRPC and gRPC-Web as a
 * trailers-only response (the status in the headers), anything else as Connect's JSON error. The
 * body is left unread; over HTTP/1.1 the connection then closes (listen.ts).
 */
function refuse(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse, error: ConnectError): void {
  if (isGrpc(req)) {
    const headers = new Headers({ "content-type": (req.headers["content-type"] as string).split(";", 1)[0] ?? "application/grpc" });
    setTrailerStatus(headers, error);
    res.writeHead(200, Object.fromEntries(headers));
    res.end();
  } else {
    const body = errorToJsonBytes(error, {});
    res.writeHead(codeToHttpStatus(error.code), { "content-type": contentTypeUnaryJson, "content-length": String(body.byteLength) });
    res.end(body);
  }
  // The body is not wanted: drain it, so the stream or connection is not held up by it.
  req.resume();
}
