// What every route of GMS's HTTP API (/genesys/...) shares: reading a form body (multipart or
// urlencoded) within limits and a deadline, the options that make a served RPC run as the HTTP
// caller, and the answers: JSON replies, and RPC errors as GMS-style statuses and bodies.
//
// A route uses it in four steps:
//   const call = gmsCall(req, res, deps);                         // caller's headers, signal, deadline
//   const form = await readForm(req, storageFormLimits(config), call); // 4xx GmsHttpError if bad
//   const r = await client.someRpc({...}, call.options);          // through the serving policy
//   sendJson(res, 200, {...}, call)   or, on any error,   sendError(res, e, call)
import { randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type CallOptions } from "@connectrpc/connect";
import busboy from "busboy";
import type { Logger } from "pino";
import { LimitExceededSchema, PoolExhaustedSchema, RateLimitedSchema } from "../../gen/gms/v1/error_details_pb.js";
import type { Value, ValueSchema } from "../../gen/gms/v1/value_pb.js";
import type { Config } from "../config.js";
import type { DataValue } from "../domain/value.js";
import type { HttpRequest, HttpResponse, HttpRouteDeps } from "./routes.js";

/** REALM is the realm of the Basic challenge a refused caller gets (WWW-Authenticate). */
export const REALM = "opengms";

/**
 * GmsHttpError is a refusal of the HTTP layer itself (a body that is not a form, too large, too
 * slow), answered with its status before any RPC is called, so nothing is stored.
 */
export class GmsHttpError extends Error {
  override name = "GmsHttpError";
  constructor(
    readonly status: number,
    message: string,
    /** exception names the kind of refusal in the error body (GMS-style). */
    readonly exception = "BadRequest",
  ) {
    super(message);
  }
}

/** GmsCall is one HTTP request's context for the RPCs it calls. */
export interface GmsCall {
  /**
   * options make an RPC run as the HTTP caller: its `authorization`, `gms_user` and request id as
   * call headers, the request's abort (the caller gone, the server shutting down) as its signal, and
   * what is left of the request's deadline as its timeout.
   */
  readonly options: CallOptions & { headers: Record<string, string>; signal: AbortSignal };
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

/** header is a request header's value, when it came once. */
function header(req: HttpRequest, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === "string" ? v : undefined;
}

/**
 * gmsCall starts the handling of a request: its request id, its deadline (server.
 * request_timeout_seconds from now: a slow body or a slow store cannot hold it longer) and the
 * signal that ends its RPCs when the caller goes away (the response closed before it finished),
 * the deadline passes or the server shuts down.
 */
export function gmsCall(req: HttpRequest, res: HttpResponse, deps: Pick<HttpRouteDeps, "config" | "shutdown" | "log">): GmsCall {
  const given = header(req, "x-request-id");
  const requestId = given !== undefined && REQUEST_ID.test(given) ? given : randomUUID();
  const timeoutMs = deps.config.server.request_timeout_seconds * 1000;
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
    requestId,
    gmsUser,
    signal,
    deadline,
    log: deps.log,
    method: req.method ?? "GET",
  };
}

/** FormValue is one value of a form: a text, or a file with its name and type (as storage keeps them). */
export type FormValue = DataValue;

/** Form is a form's values by key, in the order they came. */
export type Form = Map<string, FormValue>;

/** FormLimits bound what readForm accepts; a body over any of them is refused whole (413). */
export interface FormLimits {
  /** maxParts is the largest number of keys (fields and files together). */
  maxParts: number;
  /** maxKeyBytes is the longest key, in bytes. */
  maxKeyBytes: number;
  /** maxFieldBytes is the largest text value, in bytes. */
  maxFieldBytes: number;
  /** maxFileBytes is the largest file, in bytes. */
  maxFileBytes: number;
  /** maxBodyBytes is the largest body, in bytes, framing included. */
  maxBodyBytes: number;
  /** limitNames name the configuration each limit comes from, for the refusal's message. */
  names: { parts: string; field: string; file: string; body: string };
}

/** FORM_PARAMETER_ROOM is room for GMS's `_` parameters beside the data's own keys. */
const FORM_PARAMETER_ROOM = 16;

/** FRAMING_BYTES is room per part for multipart framing (boundary, headers) in the body limit. */
const FRAMING_BYTES = 512;

/**
 * storageFormLimits are the limits of a form whose values become stored data (storage, service
 * data): the `storage` section's, with room for GMS's `_` parameters and the multipart framing.
 */
export function storageFormLimits(config: Config): FormLimits {
  const s = config.storage;
  const parts = s.max_entries + FORM_PARAMETER_ROOM;
  return {
    maxParts: parts,
    maxKeyBytes: s.max_key_bytes,
    maxFieldBytes: s.max_value_bytes,
    maxFileBytes: s.max_value_bytes,
    maxBodyBytes: s.max_data_bytes + parts * (s.max_key_bytes + FRAMING_BYTES),
    names: { parts: "storage.max_entries", field: "storage.max_value_bytes", file: "storage.max_value_bytes", body: "storage.max_data_bytes" },
  };
}

/**
 * chatFileFormLimits are the limits of a chat file upload's form: one file of at most
 * `chat.files.max_file_bytes` and a few small fields beside it.
 */
export function chatFileFormLimits(config: Config): FormLimits {
  const f = config.chat.files;
  return {
    maxParts: FORM_PARAMETER_ROOM,
    maxKeyBytes: 256,
    maxFieldBytes: 64 * 1024,
    maxFileBytes: f.max_file_bytes,
    maxBodyBytes: f.max_file_bytes + FORM_PARAMETER_ROOM * (64 * 1024 + FRAMING_BYTES),
    names: { parts: "form parts", field: "64 KiB per field", file: "chat.files.max_file_bytes", body: "chat.files.max_file_bytes" },
  };
}

const tooLarge = (what: string, limit: string) => new GmsHttpError(413, `${what} is larger than the limit (${limit})`, "PayloadTooLarge");

/**
 * readForm reads a request's body as a form: multipart/form-data (texts and files: a part with a
 * filename is a file; an empty one without a name, what a browser sends for a file input left
 * empty, is skipped) or application/x-www-form-urlencoded (texts); no body at all is an empty form.
 * It refuses, as a GmsHttpError and before anything is stored: another media type (415), a body
 * that does not parse or names a key twice (400), one over a limit (413), one not in full by the
 * call's deadline (408). A refused body is not read further; the answer closes the connection.
 */
export function readForm(req: HttpRequest, limits: FormLimits, call: Pick<GmsCall, "signal">): Promise<Form> {
  const type = header(req, "content-type");
  const length = header(req, "content-length");
  if (length !== undefined && /^[0-9]+$/.test(length) && Number(length) > limits.maxBodyBytes) return Promise.reject(tooLarge("the body", limits.names.body));
  if (type === undefined) {
    // No media type: only an empty body is a (empty) form.
    return new Promise((resolve, reject) => {
      const refuse = (e: GmsHttpError) => {
        req.off("data", onData);
        call.signal.removeEventListener("abort", onAbort);
        reject(e);
      };
      const onData = () => refuse(new GmsHttpError(415, "a body needs a Content-Type: multipart/form-data or application/x-www-form-urlencoded", "UnsupportedMediaType"));
      const onAbort = () => refuse(new GmsHttpError(408, "the body did not arrive in time", "RequestTimeout"));
      req.on("data", onData);
      req.once("end", () => {
        call.signal.removeEventListener("abort", onAbort);
        resolve(new Map());
      });
      req.once("error", () => refuse(new GmsHttpError(400, "the body could not be read")));
      if (call.signal.aborted) return onAbort();
      call.signal.addEventListener("abort", onAbort, { once: true });
    });
  }
  const media = type.split(";", 1)[0]?.trim().toLowerCase();
  if (media !== "multipart/form-data" && media !== "application/x-www-form-urlencoded") {
    return Promise.reject(new GmsHttpError(415, `Content-Type ${media ?? ""} is not a form: send multipart/form-data or application/x-www-form-urlencoded`, "UnsupportedMediaType"));
  }
  return new Promise<Form>((resolve, reject) => {
    const form: Form = new Map();
    let settled = false;
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: req.headers as busboy.BusboyConfig["headers"],
        // Names of files in UTF-8, as browsers send them (busboy's default is latin1).
        defParamCharset: "utf8",
        limits: { parts: limits.maxParts, fields: limits.maxParts, files: limits.maxParts, fieldNameSize: limits.maxKeyBytes, fieldSize: limits.maxFieldBytes, fileSize: limits.maxFileBytes },
      });
    } catch {
      reject(new GmsHttpError(400, "the multipart body has no boundary"));
      return;
    }
    let bytes = 0;
    const onData = (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > limits.maxBodyBytes) fail(tooLarge("the body", limits.names.body));
    };
    const onAbort = () => fail(new GmsHttpError(408, "the body did not arrive in time", "RequestTimeout"));
    const cleanup = () => {
      call.signal.removeEventListener("abort", onAbort);
      req.off("data", onData);
    };
    function fail(e: GmsHttpError): void {
      if (settled) return;
      settled = true;
      cleanup();
      req.unpipe(parser);
      parser.removeAllListeners();
      // busboy may still emit an error on what it was given: nothing listens any more but this.
      parser.on("error", () => {});
      reject(e);
    }
    const add = (key: string, value: FormValue) => {
      if (key === "" || Buffer.byteLength(key) > limits.maxKeyBytes) return fail(new GmsHttpError(400, "a form key is empty or longer than the limit"));
      if (form.has(key)) return fail(new GmsHttpError(400, `the form names "${key.slice(0, 64)}" twice`));
      form.set(key, value);
    };
    parser.on("field", (name, value, info) => {
      if (info.nameTruncated) return fail(new GmsHttpError(400, "a form key is longer than the limit"));
      if (info.valueTruncated) return fail(tooLarge(`the value of "${name.slice(0, 64)}"`, limits.names.field));
      add(name, { kind: "text", text: value });
    });
    parser.on("file", (name, stream, info) => {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("limit", () => fail(tooLarge(`the file "${name.slice(0, 64)}"`, limits.names.file)));
      stream.on("error", () => fail(new GmsHttpError(400, "the multipart body is malformed")));
      stream.on("end", () => {
        if (settled) return;
        const content = Buffer.concat(chunks);
        const filename = info.filename ?? "";
        if (filename === "" && content.length === 0) return; // a file input left empty
        add(name, { kind: "file", filename, contentType: info.mimeType, content: new Uint8Array(content.buffer, content.byteOffset, content.byteLength) });
      });
    });
    const partsLimit = () => fail(tooLarge("the number of form keys", limits.names.parts));
    parser.on("partsLimit", partsLimit);
    parser.on("filesLimit", partsLimit);
    parser.on("fieldsLimit", partsLimit);
    parser.on("error", () => fail(new GmsHttpError(400, "the form body is malformed")));
    parser.on("close", () => {
      if (settled) return;
      settled = true;
      cleanup();
      resolve(form);
    });
    req.on("data", onData);
    req.once("error", () => fail(new GmsHttpError(400, "the body could not be read")));
    if (call.signal.aborted) return onAbort();
    call.signal.addEventListener("abort", onAbort, { once: true });
    req.pipe(parser);
  });
}

/** baseHeaders are on every answer: the request id, and no caching of data or errors by proxies. */
function baseHeaders(res: HttpResponse, call: Pick<GmsCall, "requestId"> | undefined): void {
  if (call !== undefined) res.setHeader("x-request-id", call.requestId);
  res.setHeader("cache-control", "no-store");
}

/** sendJson answers with a JSON body. */
export function sendJson(res: HttpResponse, status: number, body: unknown, call?: Pick<GmsCall, "requestId">): void {
  if (res.headersSent || res.writableEnded) return;
  const json = JSON.stringify(body);
  baseHeaders(res, call);
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

/** sendBytes answers with a body of bytes and its media type (a stored file, a text value). */
export function sendBytes(res: HttpResponse, content: Uint8Array, contentType: string, call?: Pick<GmsCall, "requestId">, filename?: string): void {
  if (res.headersSent || res.writableEnded) return;
  baseHeaders(res, call);
  res.statusCode = 200;
  res.setHeader("content-type", MEDIA_TYPE.test(contentType) ? contentType : "application/octet-stream");
  res.setHeader("content-length", content.byteLength);
  // A stored file is the caller's data, never a page of this origin's: no sniffing, no rendering.
  res.setHeader("x-content-type-options", "nosniff");
  if (filename !== undefined) res.setHeader("content-disposition", `attachment; filename*=UTF-8''${encodeURIComponent(filename)}`);
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

/**
 * httpErrorOf is the status and body of an error: a GmsHttpError's own, or an RPC's ConnectError
 * mapped (STATUS; RESOURCE_EXHAUSTED is 413 for a size or count limit, 503 for an exhausted pool of
 * numbers, 429 otherwise). Anything else is a 500 that says nothing of its cause.
 */
export function httpErrorOf(e: unknown): { status: number; body: GmsErrorBody } {
  if (e instanceof GmsHttpError) return { status: e.status, body: { message: e.message, exception: e.exception, code: e.status === 413 ? "resource_exhausted" : e.status === 408 ? "deadline_exceeded" : "invalid_argument" } };
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
 * sendError answers an error in GMS's shape (httpErrorOf): 401s carry the Basic challenge
 * (`WWW-Authenticate: Basic realm="opengms"`), retryable refusals a Retry-After, and a refusal
 * made before the body was read in full closes the connection (what is left of it is not read).
 */
export function sendError(res: HttpResponse, e: unknown, call?: Pick<GmsCall, "requestId" | "log" | "method">): void {
  if (res.headersSent || res.writableEnded) {
    if (!res.writableEnded) res.end();
    return;
  }
  const { status, body } = httpErrorOf(e);
  // An RPC's refusal has its log line already (the serving policy's); one of the HTTP layer is
  // noted here, by kind only: neither the path (ids), the keys nor the values of the form.
  if (e instanceof GmsHttpError && call !== undefined) call.log.warn({ event: "gms-http", method: call.method, status, exception: e.exception, requestId: call.requestId }, "GMS HTTP request refused");
  if (status === 401) res.setHeader("www-authenticate", `Basic realm="${REALM}", charset="UTF-8"`);
  if (body.retryAfterSeconds !== undefined) res.setHeader("retry-after", String(body.retryAfterSeconds));
  const req = (res as { req?: HttpRequest }).req;
  if (e instanceof GmsHttpError && req !== undefined && !req.readableEnded && "httpVersionMajor" in req && req.httpVersionMajor === 1) res.setHeader("connection", "close");
  sendJson(res, status, body, call);
}

/** pathSegments splits a path below a prefix into its URL-decoded segments; undefined when one does not decode. */
export function pathSegments(path: string, prefix: string): string[] | undefined {
  const rest = path.slice(prefix.length);
  if (rest === "") return [];
  try {
    return rest.split("/").map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
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
