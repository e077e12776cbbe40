// What every route of GMS's HTTP API (/genesys/...) shares: the options that make a served RPC run
// as the HTTP caller within the request's deadline, and the answers: JSON replies and bytes, and
// (for the services and storage APIs) errors as GMS-style statuses and bodies. Bodies are read by
// form.ts, for every route alike.
//
// A route uses it in four steps:
//   const call = gmsCall(req, res, deps);                         // caller's headers, signal, deadline
//   const form = await readForm(req, storageFormLimits(config), call); // 4xx GmsHttpError if bad
//   const r = await client.someRpc({...}, call.options);          // through the serving policy
//   sendJson(res, 200, {...}, call)   or, on any error,   sendError(res, e, call)
import { randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type CallOptions } from "@connectrpc/connect";
import type { Logger } from "pino";
import { PEER_HEADER, remoteAddressOf } from "../rpc/peer.js";
import { LimitExceededSchema, PoolExhaustedSchema, RateLimitedSchema } from "../../gen/gms/v1/error_details_pb.js";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { Value, ValueSchema } from "../../gen/gms/v1/value_pb.js";
import { closeUnread, GmsHttpError, header, type FormValue, type RefusalKind } from "./form.js";
import { pathOf, type HttpRequest, type HttpResponse, type HttpRoute, type HttpRouteDeps } from "./routes.js";

/** REALM is the realm of the Basic challenge a refused caller gets (WWW-Authenticate). */
export const REALM = "opengms";

/** GmsCall is one HTTP request's context for the RPCs it calls. */
export interface GmsCall {
  /**
   * options make an RPC run as the HTTP caller: its `authorization`, `gms_user` and request id as
   * call headers, the request's abort (the caller gone, the server shutting down) as its signal, and
   * what is left of the request's deadline as its timeout.
   */
  readonly options: CallOptions & { headers: Record<string, string>; signal: AbortSignal };
  /** headers are the call headers options carry: the caller's `authorization`, `gms_user` and request id. */
  readonly headers: Readonly<Record<string, string>>;
  /** requestId is the request's id: the caller's plausible `x-request-id`, else a new UUID; replies echo it. */
  readonly requestId: string;
  /** gmsUser is the `gms_user` header, when the caller sent one. */
  readonly gmsUser: string | undefined;
  /** signal aborts when the caller goes away, the deadline passes or the server shuts down. */
  readonly signal: AbortSignal;
  /** deadline is the moment (Date.now()) by which the request must be answered. */
  readonly deadline: number;
  /** log is the server's log; sendError notes there the requests refused before any RPC ran. */
  readonly log: Logger;
  /** method is the request's HTTP method. */
  readonly method: string;
}

/** REQUEST_ID is an x-request-id kept as given: 1 to 128 printable ASCII characters (as the RPC paths keep it). */
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

/**
 * gmsCall starts the handling of a request: its request id, its deadline (server.
 * request_timeout_seconds from now: a slow body or a slow store cannot hold it longer) and the
 * signal that ends its RPCs when the caller goes away (the response closed before it finished),
 * the deadline passes or the server shuts down.
 */
export function gmsCall(req: HttpRequest, res: HttpResponse, deps: Pick<HttpRouteDeps, "requestTimeoutMs" | "shutdown" | "log">): GmsCall {
  const given = header(req, "x-request-id");
  const requestId = given !== undefined && REQUEST_ID.test(given) ? given : randomUUID();
  const timeoutMs = deps.requestTimeoutMs;
  // One controller and one timer per request, both let go when the answer is done (no signal
  // combinator: each would stay listening on the server's long-lived shutdown signal).
  const ended = new AbortController();
  const end = (reason: DOMException) => {
    if (!ended.signal.aborted) ended.abort(reason);
  };
  const timer = setTimeout(() => end(new DOMException("the request's deadline passed", "TimeoutError")), timeoutMs);
  timer.unref();
  const onShutdown = () => end(new DOMException("the server is shutting down", "AbortError"));
  deps.shutdown.addEventListener("abort", onShutdown, { once: true });
  if (deps.shutdown.aborted) onShutdown();
  res.once("close", () => {
    clearTimeout(timer);
    deps.shutdown.removeEventListener("abort", onShutdown);
    if (!res.writableFinished) end(new DOMException("the caller went away", "AbortError"));
  });
  const headers: Record<string, string> = { "x-request-id": requestId };
  // The RPCs' policies (the rate limit's per-peer buckets) see the HTTP caller's address.
  const peer = remoteAddressOf(req);
  if (peer !== undefined) headers[PEER_HEADER] = peer;
  const authorization = header(req, "authorization");
  if (authorization !== undefined) headers["authorization"] = authorization;
  const gmsUser = header(req, "gms_user");
  if (gmsUser !== undefined) headers["gms_user"] = gmsUser;
  const signal = ended.signal;
  const deadline = Date.now() + timeoutMs;
  return {
    // A getter: each RPC gets what is left of the deadline when it starts (after the body, say).
    get options() {
      return { headers, signal, timeoutMs: Math.max(1, deadline - Date.now()) };
    },
    headers,
    requestId,
    gmsUser,
    signal,
    deadline,
    log: deps.log,
    method: req.method ?? "GET",
  };
}

/** baseHeaders are on every answer: the request id, and no caching of data or errors by proxies. */
function baseHeaders(res: HttpResponse, call: Pick<GmsCall, "requestId"> | undefined): void {
  if (call !== undefined) res.setHeader("x-request-id", call.requestId);
  res.setHeader("cache-control", "no-store");
  closeUnread(res);
}

/**
 * sendJson answers with a JSON body (and any extra headers). An answer given before the request's
 * body was read to its end closes an HTTP/1.1 connection (closeUnread). When an answer has begun
 * already, it is ended as it is.
 */
export function sendJson(res: HttpResponse, status: number, body: unknown, call?: Pick<GmsCall, "requestId">, extra: Record<string, string> = {}): void {
  if (res.headersSent || res.writableEnded) {
    if (!res.writableEnded) res.end();
    return;
  }
  const json = JSON.stringify(body);
  baseHeaders(res, call);
  for (const [k, v] of Object.entries(extra)) res.setHeader(k, v);
  res.statusCode = status;
  res.setHeader("content-type", "application/json; charset=utf-8");
  res.setHeader("content-length", Buffer.byteLength(json));
  res.end(json);
}

/**
 * MEDIA_TYPE is a media type that may go out as a Content-Type as stored: printable ASCII with a
 * slash. A stored file's type is what its uploader said (over gRPC, any 255 bytes): one that is not
 * a header value is sent as application/octet-stream.
 */
const MEDIA_TYPE = /^[!-~]+\/[ -~]{1,254}$/;

/**
 * attachment is the Content-Disposition of a downloaded file: its name in RFC 5987's UTF-8 form,
 * and with `ascii` also as a plain quoted name first, for clients that read only that (GMS's chat
 * clients).
 */
export function attachment(filename: string, ascii = false): string {
  const utf8 = `filename*=UTF-8''${encodeURIComponent(filename)}`;
  return ascii ? `attachment; filename="${filename.replace(/[^\x20-\x7e]|["\\]/g, "_")}"; ${utf8}` : `attachment; ${utf8}`;
}

/** sendBytes answers with a body of bytes and its media type (a stored file, a text value), with a Content-Disposition when one is given (attachment). */
export function sendBytes(res: HttpResponse, content: Uint8Array, contentType: string, call?: Pick<GmsCall, "requestId">, disposition?: string): void {
  if (res.headersSent || res.writableEnded) return;
  baseHeaders(res, call);
  res.statusCode = 200;
  res.setHeader("content-type", MEDIA_TYPE.test(contentType) ? contentType : "application/octet-stream");
  res.setHeader("content-length", content.byteLength);
  // A stored file is the caller's data, never a page of this origin's: no sniffing, no rendering.
  res.setHeader("x-content-type-options", "nosniff");
  if (disposition !== undefined) res.setHeader("content-disposition", disposition);
  res.end(content);
}

/**
 * GmsErrorBody is the body of every error answer:
 * `{"message": ..., "exception": ..., "code": ...}`: the message says what was wrong (the field,
 * the limit), `exception` names the kind of error (NotFound, InvalidArgument, Unauthenticated,
 * PayloadTooLarge...; GMS answered errors with a message and an exception name), `code` is the
 * same error's gRPC code as the RPC paths spell it (not_found, invalid_argument...). Refusals that
 * may be retried also carry `retryAfterSeconds` (and a Retry-After header); limits name the `limit`.
 */
export interface GmsErrorBody {
  message: string;
  exception: string;
  code: string;
  retryAfterSeconds?: number;
  limit?: string;
}

/** STATUS maps an RPC's code to the HTTP status GMS's clients expect. */
const STATUS: Partial<Record<Code, number>> = {
  [Code.Canceled]: 499,
  [Code.InvalidArgument]: 400,
  [Code.OutOfRange]: 400,
  [Code.FailedPrecondition]: 400,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.Aborted]: 409,
  [Code.PermissionDenied]: 403,
  [Code.Unauthenticated]: 401,
  [Code.ResourceExhausted]: 429,
  [Code.Unimplemented]: 501,
  [Code.Unavailable]: 503,
  [Code.DeadlineExceeded]: 504,
};

/** codeName spells a code as the RPC paths' logs and Connect do: not_found. */
function codeName(code: Code): string {
  return Code[code].replace(/[A-Z]/g, (c, i: number) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`));
}

/** REFUSALS name each kind of refusal of the HTTP layer (GmsHttpError) as the error body does. */
const REFUSALS: Record<RefusalKind, { exception: string; code: string }> = {
  invalid: { exception: "BadRequest", code: "invalid_argument" },
  notFound: { exception: "NotFound", code: "not_found" },
  method: { exception: "MethodNotAllowed", code: "unimplemented" },
  timeout: { exception: "RequestTimeout", code: "deadline_exceeded" },
  tooLarge: { exception: "PayloadTooLarge", code: "resource_exhausted" },
  // A media type the path does not take is an argument of the caller's, as GMS's clients read it.
  unsupported: { exception: "UnsupportedMediaType", code: "invalid_argument" },
};

/**
 * httpErrorOf is the status and body of an error: a GmsHttpError's own, or an RPC's ConnectError
 * mapped (STATUS; RESOURCE_EXHAUSTED is 413 for a size or count limit, 503 for an exhausted pool of
 * numbers, 429 otherwise). Anything else is a 500 that says nothing of its cause.
 */
export function httpErrorOf(e: unknown): { status: number; body: GmsErrorBody } {
  if (e instanceof GmsHttpError) return { status: e.status, body: { message: e.message, ...REFUSALS[e.kind] } };
  const err = ConnectError.from(e);
  const body: GmsErrorBody = { message: err.rawMessage, exception: Code[err.code], code: codeName(err.code) };
  let status = STATUS[err.code] ?? 500;
  if (err.code === Code.ResourceExhausted) {
    const limit = err.findDetails(LimitExceededSchema)[0];
    const pool = err.findDetails(PoolExhaustedSchema)[0];
    const rate = err.findDetails(RateLimitedSchema)[0];
    if (limit !== undefined) {
      status = 413;
      body.limit = limit.limit;
    } else if (pool !== undefined) {
      status = 503;
      if (pool.retryAfterSeconds > 0n) body.retryAfterSeconds = Number(pool.retryAfterSeconds);
    } else if (rate !== undefined && rate.retryAfterSeconds > 0n) {
      body.retryAfterSeconds = Number(rate.retryAfterSeconds);
    }
  } else if (err.code === Code.InvalidArgument) {
    const limit = err.findDetails(LimitExceededSchema)[0];
    if (limit !== undefined) {
      status = 413;
      body.limit = limit.limit;
    }
  }
  if (status === 500) body.message = "internal error";
  return { status, body };
}

/**
 * retryAfterOf is how many seconds an error says to wait before retrying (its google.rpc.RetryInfo,
 * rounded up to a whole second, at least 1), for a Retry-After header; undefined when it says nothing.
 */
export function retryAfterOf(e: unknown): number | undefined {
  if (e instanceof GmsHttpError) return undefined;
  const delay = ConnectError.from(e).findDetails(RetryInfoSchema)[0]?.retryDelay;
  if (delay === undefined) return undefined;
  return Math.max(1, Math.ceil(Number(delay.seconds) + delay.nanos / 1e9));
}

/**
 * noteRefusal logs a refusal of the HTTP layer (GmsHttpError): an RPC's refusal has its log line
 * already (the serving policy's); one of the HTTP layer is noted here, by kind only: neither the
 * path (ids), the keys nor the values of the form.
 */
export function noteRefusal(e: unknown, call: Pick<GmsCall, "requestId" | "log" | "method"> | undefined): void {
  if (e instanceof GmsHttpError && call !== undefined) call.log.warn({ event: "gms-http", method: call.method, status: e.status, exception: REFUSALS[e.kind].exception, requestId: call.requestId }, "GMS HTTP request refused");
}

/**
 * sendError answers an error in GMS's shape (httpErrorOf): 401s carry the Basic challenge
 * (`WWW-Authenticate: Basic realm="opengms"`), retryable refusals a Retry-After, and a refusal
 * made before the body was read in full closes the connection (sendJson).
 */
export function sendError(res: HttpResponse, e: unknown, call?: Pick<GmsCall, "requestId" | "log" | "method">): void {
  const { status, body } = httpErrorOf(e);
  noteRefusal(e, call);
  const extra: Record<string, string> = {};
  if (status === 401) extra["www-authenticate"] = `Basic realm="${REALM}", charset="UTF-8"`;
  if (body.retryAfterSeconds !== undefined) extra["retry-after"] = String(body.retryAfterSeconds);
  sendJson(res, status, body, call, extra);
}

/** pathSegments splits a path below a prefix into its URL-decoded segments; undefined when one does not decode. */
/**
 * GMS_8_0_BASE is the base path of GMS 8.0's and 8.1's API (`/gms-web/gms/1/service/...`, as the
 * services page the project was seeded from shows it), served as `/genesys/`, later versions' base:
 * apps written against either keep their URLs.
 */
const GMS_8_0_BASE = "/gms-web/gms/";

/** gmsPath is a request's path with GMS 8.0's base read as `/genesys/`. */
export function gmsPath(path: string): string {
  return path.startsWith(GMS_8_0_BASE) ? `/genesys/${path.slice(GMS_8_0_BASE.length)}` : path;
}

export function pathSegments(path: string, prefix: string): string[] | undefined {
  const rest = path.slice(prefix.length);
  if (rest === "") return [];
  try {
    return rest.split("/").map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
}

/**
 * GmsServe serves one request of an API under a prefix, given its method and its path's segments
 * below the prefix (URL-decoded, none empty), with what the answer needs.
 */
export type GmsServe<T> = (method: string, segs: string[], req: HttpRequest, call: GmsCall) => Promise<T>;

/**
 * gmsRoute is a route of GMS's services or storage API: it claims the requests under prefix,
 * refuses a path with an empty or undecodable segment (400), serves the others (serve) and answers
 * what they give (answer), or any error in GMS's shape (sendError).
 */
export function gmsRoute<T>(prefix: string, deps: Pick<HttpRouteDeps, "requestTimeoutMs" | "shutdown" | "log">, serve: GmsServe<T>, answer: (res: HttpResponse, reply: T, call: GmsCall) => void): HttpRoute {
  return (req, res) => {
    const path = gmsPath(pathOf(req));
    if (!path.startsWith(prefix)) return false;
    const call = gmsCall(req, res, deps);
    const segs = pathSegments(path, prefix);
    (segs === undefined || segs.some((s) => s === "") ? Promise.reject(new ConnectError("the path has an empty or undecodable segment", Code.InvalidArgument)) : serve(call.method, segs, req, call))
      // Errors of the answer itself (a header Node refuses) are answered too, never left unhandled.
      .then((reply) => answer(res, reply, call))
      .catch((e: unknown) => sendError(res, e, call));
    return true;
  };
}

/** ValueInit is a Value message as a client builds it (the RPCs' `entries` and `app_data` maps take them). */
export type ValueInit = MessageInitShape<typeof ValueSchema>;

/** formValues turns a form's values into the Value messages the RPCs store: texts stay texts, files stay files. */
export function formValues(values: Iterable<[string, FormValue]>): Record<string, ValueInit> {
  const out: Record<string, ValueInit> = {};
  for (const [key, v] of values) {
    out[key] = v.kind === "text" ? { kind: { case: "text", value: v.text } } : { kind: { case: "file", value: { filename: v.filename, contentType: v.contentType, content: v.content } } };
  }
  return out;
}

/**
 * FileJson is how a file value is shown in a JSON reply: its name, media type and size; its bytes
 * are read on their own (`GET /genesys/1/storage/{id}/{key}`).
 */
export interface FileJson {
  filename: string;
  contentType: string;
  size: number;
}

/** valuesJson shows stored values in a JSON reply: a text as its string, a file as a FileJson. */
export function valuesJson(entries: Record<string, Value>): Record<string, string | FileJson> {
  const out: Record<string, string | FileJson> = {};
  for (const [key, v] of Object.entries(entries)) {
    if (v.kind.case === "text") out[key] = v.kind.value;
    else if (v.kind.case === "file") out[key] = { filename: v.kind.value.filename, contentType: v.kind.value.contentType || "application/octet-stream", size: v.kind.value.content.byteLength };
  }
  return out;
}
