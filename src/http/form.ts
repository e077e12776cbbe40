// Request bodies of every route of GMS's HTTP API (/genesys/...: services, storage, chat v2,
// CometD): read within size limits and the request's deadline, so that a peer sending too much,
// too slowly or nothing at all is refused with a clear 4xx (GmsHttpError) instead of holding memory
// or a socket, and before anything is stored. Forms (multipart/form-data through busboy, and
// application/x-www-form-urlencoded) come out as keys and values; other bodies (CometD's JSON) as
// bytes. Each API renders a GmsHttpError in its own reply shape (gms-http.ts httpErrorOf for
// services and storage, gms-chat.ts chatV2Failure for chat and CometD).
import busboy from "busboy";
import type { Config } from "../config.js";
import type { DataValue } from "../domain/value.js";
import type { HttpRequest, HttpResponse } from "./routes.js";

/** REFUSAL_STATUS is the HTTP status of each kind of refusal of the HTTP layer. */
export const REFUSAL_STATUS = {
  /** invalid: a body, path or parameter that is malformed or missing. */
  invalid: 400,
  /** notFound: a path that names no request of the API. */
  notFound: 404,
  /** method: an HTTP method the path does not take. */
  method: 405,
  /** timeout: a body not in full by the request's deadline. */
  timeout: 408,
  /** tooLarge: a body, key, value or file over its limit. */
  tooLarge: 413,
  /** unsupported: a body of a media type the path does not take. */
  unsupported: 415,
} as const;

/** RefusalKind is what kind of mistake a GmsHttpError is; each API names it in its own words. */
export type RefusalKind = keyof typeof REFUSAL_STATUS;

/**
 * GmsHttpError is a refusal of the HTTP layer itself (a body that is not what the path takes, too
 * large, too slow, a path or method the API does not have), answered with its status before any
 * RPC is called, so nothing is stored.
 */
export class GmsHttpError extends Error {
  override name = "GmsHttpError";
  /** status is the HTTP status the refusal is answered with (REFUSAL_STATUS). */
  readonly status: number;
  constructor(
    readonly kind: RefusalKind,
    message: string,
  ) {
    super(message);
    this.status = REFUSAL_STATUS[kind];
  }
}

/** MethodRefusal is a method the path does not take, with the methods it does (for the Allow header). */
export class MethodRefusal extends GmsHttpError {
  constructor(readonly allow: string) {
    super("method", `use ${allow}`);
  }
}

/** header is a request header's value, when it came once. */
export function header(req: HttpRequest, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === "string" ? v : undefined;
}

/** mediaTypeOf is a request's media type, lowercase, without parameters ("" when absent). */
export function mediaTypeOf(req: HttpRequest): string {
  return (header(req, "content-type")?.split(";", 1)[0] ?? "").trim().toLowerCase();
}

/**
 * closeUnread marks an answer to a request whose body was not read to its end (refused as too
 * large, too slow or of the wrong type, or answered before it was read) as its HTTP/1.1
 * connection's last: the rest of the body is then not read at all, instead of being drained for
 * as long as the peer cares to send. HTTP/2 needs nothing: Node ends a stream whose body was never
 * read with the answer, and one whose reading was given up is drained (readBody's fail).
 */
export function closeUnread(res: HttpResponse): void {
  const req = res.req as HttpRequest | undefined;
  if (req !== undefined && req.httpVersionMajor === 1 && !req.complete && !res.headersSent) res.setHeader("connection", "close");
}

/** Deadline is what bounds a body's reading in time: the request's signal (gmsCall). */
export interface Deadline {
  /** signal aborts when the caller goes away, the request's deadline passes or the server shuts down. */
  readonly signal: AbortSignal;
}

const tooLarge = (what: string, limit: string) => new GmsHttpError("tooLarge", `${what} is larger than the limit (${limit})`);

const timedOut = () => new GmsHttpError("timeout", "the body did not arrive in time");

/**
 * receive follows a request's body: it counts its bytes against maxBytes (a Content-Length over it
 * is refused at once, unread), and refuses it when the deadline's signal aborts (408) or the stream
 * fails (400). fail stops all that, lets the reader let go of the body (giveUp) and rejects, once;
 * a body given up after its reading began is drained (an HTTP/1.1 connection is closed by the
 * answer anyway: closeUnread).
 */
function receive(req: HttpRequest, maxBytes: number, limit: string, deadline: Deadline, reject: (e: GmsHttpError) => void, giveUp: () => void = () => {}) {
  let settled = false;
  let bytes = 0;
  const onData = (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > maxBytes) fail(tooLarge("the body", limit));
  };
  const onAbort = () => fail(timedOut());
  const onError = () => fail(new GmsHttpError("invalid", "the body could not be read"));
  /** stop ends the following; false when it had ended already. */
  const stop = (): boolean => {
    if (settled) return false;
    settled = true;
    deadline.signal.removeEventListener("abort", onAbort);
    req.off("data", onData);
    req.off("error", onError);
    return true;
  };
  function fail(e: GmsHttpError): void {
    if (!stop()) return;
    giveUp();
    // After giveUp: unpiping pauses the request again.
    req.resume();
    reject(e);
  }
  /** start follows the body; false, and the request refused, when it is refused before any of it is read. */
  const start = (): boolean => {
    const length = header(req, "content-length");
    const refusal = length !== undefined && /^[0-9]+$/.test(length) && Number(length) > maxBytes ? tooLarge("the body", limit) : deadline.signal.aborted ? timedOut() : undefined;
    if (refusal !== undefined) {
      settled = true;
      reject(refusal);
      return false;
    }
    req.on("data", onData);
    req.on("error", onError);
    deadline.signal.addEventListener("abort", onAbort, { once: true });
    return true;
  };
  return { start, stop, fail, settled: () => settled };
}

/**
 * BodyLimits bound a body read as bytes (readBody): its size, with the configuration it comes
 * from for the refusal's message, and the media types it may have.
 */
export interface BodyLimits {
  maxBytes: number;
  limit: string;
  /** mediaTypes are the media types taken (lowercase, without parameters); any other is 415. */
  mediaTypes: readonly string[];
}

/**
 * readBody reads a whole body as bytes within its limits by the deadline. It refuses, as a
 * GmsHttpError: another media type (415, unread), a body announced or found larger than the limit
 * (413), one not in full by the deadline (408), one whose stream fails (400).
 */
export function readBody(req: HttpRequest, limits: BodyLimits, deadline: Deadline): Promise<Buffer> {
  const type = mediaTypeOf(req);
  if (!limits.mediaTypes.includes(type)) return Promise.reject(new GmsHttpError("unsupported", `Content-Type ${type.slice(0, 64) || "(none)"} is not taken here: send ${limits.mediaTypes.join(" or ")}`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const r = receive(req, limits.maxBytes, limits.limit, deadline, reject);
    if (!r.start()) return;
    req.on("data", (chunk: Buffer) => {
      if (!r.settled()) chunks.push(chunk);
    });
    req.once("end", () => {
      if (r.stop()) resolve(Buffer.concat(chunks));
    });
  });
}

/** FormValue is one value of a form: a text, or a file with its name and type (as storage keeps them). */
export type FormValue = DataValue;

/** Form is a form's values by key, in the order they came. */
export type Form = Map<string, FormValue>;

/** FormLimits bound what readForm accepts; a body over any of them is refused whole. */
export interface FormLimits {
  /** maxParts is the largest number of keys (fields and files together); more is 413. */
  maxParts: number;
  /** maxFiles is the largest number of files; more is 400 (0: the request takes none). */
  maxFiles: number;
  /** maxKeyBytes is the longest key, in bytes; longer is 400. */
  maxKeyBytes: number;
  /** maxFieldBytes is the largest text value, in bytes; larger is 413. */
  maxFieldBytes: number;
  /** maxFileBytes is the largest file, in bytes; larger is 413. */
  maxFileBytes: number;
  /** maxBodyBytes is the largest body, in bytes, framing included; larger is 413. */
  maxBodyBytes: number;
  /** names name the configuration each limit comes from, for the refusal's message. */
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
    maxFiles: parts,
    maxKeyBytes: s.max_key_bytes,
    maxFieldBytes: s.max_value_bytes,
    maxFileBytes: s.max_value_bytes,
    maxBodyBytes: s.max_data_bytes + parts * (s.max_key_bytes + FRAMING_BYTES),
    names: { parts: "storage.max_entries", field: "storage.max_value_bytes", file: "storage.max_value_bytes", body: "storage.max_data_bytes" },
  };
}

/** CHAT_FORM_PARTS bounds the fields of a chat request (its parameters and userData keys). */
const CHAT_FORM_PARTS = 200;

/** CHAT_KEY_BYTES bounds a chat form's key (a parameter's name or `userData[...]`). */
const CHAT_KEY_BYTES = 1024;

/**
 * chatFormLimits are the limits of a chat v2 request's form: a message (percent-encoding may triple
 * it) and some user data; with `file`, one file of at most `chat.files.max_file_bytes` beside them.
 */
export function chatFormLimits(config: Config, file: boolean): FormLimits {
  const fieldBytes = config.chat.max_message_length * 3 + 64 * 1024;
  const fileBytes = file ? config.chat.files.max_file_bytes : 0;
  return {
    maxParts: CHAT_FORM_PARTS + (file ? 1 : 0),
    maxFiles: file ? 1 : 0,
    maxKeyBytes: CHAT_KEY_BYTES,
    maxFieldBytes: fieldBytes,
    maxFileBytes: fileBytes,
    maxBodyBytes: fieldBytes + fileBytes + 64 * 1024,
    names: { parts: `${CHAT_FORM_PARTS} fields`, field: "chat.max_message_length", file: "chat.files.max_file_bytes", body: "chat.max_message_length and chat.files.max_file_bytes" },
  };
}

/** FORM_TYPES are the media types of a form. */
const FORM_TYPES = ["multipart/form-data", "application/x-www-form-urlencoded"];

/**
 * readForm reads a request's body as a form: multipart/form-data (texts and files: a part with a
 * filename is a file; an empty one without a name, what a browser sends for a file input left
 * empty, is skipped) or application/x-www-form-urlencoded (texts); no body at all is an empty form.
 * It refuses, as a GmsHttpError and before anything is stored: another media type, or a body
 * without one (415), a body that does not parse, names a key twice or carries a file too many
 * (400), one over a limit (413), one not in full by the deadline (408).
 */
export function readForm(req: HttpRequest, limits: FormLimits, deadline: Deadline): Promise<Form> {
  const media = mediaTypeOf(req);
  if (media === "") {
    // No media type: only an empty body is an (empty) form.
    const untyped = () => new GmsHttpError("unsupported", `a body needs a Content-Type: ${FORM_TYPES.join(" or ")}`);
    const length = header(req, "content-length");
    if (length !== undefined && length !== "0") return Promise.reject(untyped());
    return new Promise((resolve, reject) => {
      const r = receive(req, Number.MAX_SAFE_INTEGER, limits.names.body, deadline, reject);
      if (!r.start()) return;
      req.on("data", () => r.fail(untyped()));
      req.once("end", () => {
        if (r.stop()) resolve(new Map());
      });
    });
  }
  if (!FORM_TYPES.includes(media)) return Promise.reject(new GmsHttpError("unsupported", `Content-Type ${media.slice(0, 64)} is not a form: send ${FORM_TYPES.join(" or ")}`));
  return new Promise<Form>((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: req.headers as busboy.BusboyConfig["headers"],
        // Names of files in UTF-8, as browsers send them (busboy's default is latin1).
        defParamCharset: "utf8",
        limits: { parts: limits.maxParts, fields: limits.maxParts, files: limits.maxFiles, fieldNameSize: limits.maxKeyBytes, fieldSize: limits.maxFieldBytes, fileSize: limits.maxFileBytes },
      });
    } catch {
      reject(new GmsHttpError("invalid", "the multipart body has no boundary"));
      return;
    }
    const form: Form = new Map();
    const r = receive(req, limits.maxBodyBytes, limits.names.body, deadline, reject, () => {
      req.unpipe(parser);
      parser.removeAllListeners();
      // busboy may still emit an error on what it was given: nothing listens any more but this.
      parser.on("error", () => {});
    });
    const fail = r.fail;
    const add = (key: string, value: FormValue) => {
      if (key === "" || Buffer.byteLength(key) > limits.maxKeyBytes) return fail(new GmsHttpError("invalid", "a form key is empty or longer than the limit"));
      if (form.has(key)) return fail(new GmsHttpError("invalid", `the form names "${key.slice(0, 64)}" twice`));
      form.set(key, value);
    };
    parser.on("field", (name, value, info) => {
      if (info.nameTruncated) return fail(new GmsHttpError("invalid", "a form key is longer than the limit"));
      if (info.valueTruncated) return fail(tooLarge(`the value of "${name.slice(0, 64)}"`, limits.names.field));
      add(name, { kind: "text", text: value });
    });
    parser.on("file", (name, stream, info) => {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("limit", () => fail(tooLarge(`the file "${name.slice(0, 64)}"`, limits.names.file)));
      stream.on("error", () => fail(new GmsHttpError("invalid", "the multipart body is malformed")));
      // "end" comes before busboy's own "close", so the file is in the form when the form is done.
      stream.on("end", () => {
        if (r.settled()) return;
        const content = Buffer.concat(chunks);
        const filename = info.filename ?? "";
        if (filename === "" && content.length === 0) return; // a file input left empty
        add(name, { kind: "file", filename, contentType: info.mimeType, content: new Uint8Array(content.buffer, content.byteOffset, content.byteLength) });
      });
    });
    const partsLimit = () => fail(tooLarge("the number of form keys", limits.names.parts));
    parser.on("partsLimit", partsLimit);
    parser.on("fieldsLimit", partsLimit);
    parser.on("filesLimit", () => fail(new GmsHttpError("invalid", limits.maxFiles === 0 ? "this request takes no file" : `this request takes at most ${limits.maxFiles} file${limits.maxFiles === 1 ? "" : "s"}`)));
    parser.on("error", () => fail(new GmsHttpError("invalid", "the form body is malformed")));
    parser.on("close", () => {
      if (r.stop()) resolve(form);
    });
    if (!r.start()) return;
    req.pipe(parser);
  });
}
