// Request bodies of GMS's chat API (src/http/gms-chat.ts) and of CometD (src/http/cometd.ts): read
// within a size limit and a deadline, so that a peer sending too much, or too slowly, or nothing at
// all, is answered with a clear error instead of holding memory or a socket. Form fields come from
// application/x-www-form-urlencoded or multipart/form-data (busboy), with at most one file.
import busboy from "busboy";
import type { HttpRequest } from "./routes.js";

/**
 * ChatHttpError is a request refused before (or instead of) any call: its HTTP status, the GMS
 * chat error code (CHAT_ERRORS in gms-chat.ts) and a message for the caller.
 */
export class ChatHttpError extends Error {
  override name = "ChatHttpError";
  constructor(
    readonly status: number,
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** UploadedFile is the one file part of a multipart request. */
export interface UploadedFile {
  /** field is the form field the file came in. */
  field: string;
  filename: string;
  contentType: string;
  content: Uint8Array;
}

/** FormBody is a request's form: its fields (the last value of a repeated key wins) and its file. */
export interface FormBody {
  fields: Map<string, string>;
  file: UploadedFile | undefined;
}

/** BodyLimits bound what one request may send. */
export interface BodyLimits {
  /** maxBytes is the most bytes a urlencoded or JSON body may have. */
  maxBytes: number;
  /** maxFileBytes is the most bytes of a multipart file part (0: no file is accepted). */
  maxFileBytes: number;
  /** deadlineMs is how long the whole body may take to arrive. */
  deadlineMs: number;
}

/** Error codes the body readers use; gms-chat.ts lists them all with their meaning. */
export const BODY_ERRORS = { invalid: 100, tooLarge: 105, unsupported: 106, timeout: 108 } as const;

/** MAX_FIELDS bounds the number of form fields (userData keys included) one request may carry. */
const MAX_FIELDS = 200;

/** mediaTypeOf is a request's media type, lowercase, without parameters ("" when absent). */
export function mediaTypeOf(req: HttpRequest): string {
  const raw = req.headers["content-type"];
  return typeof raw === "string" ? (raw.split(";")[0] ?? "").trim().toLowerCase() : "";
}

/**
 * readBytes reads a whole body of at most maxBytes within deadlineMs. A body announced or found to
 * be larger is refused (413) without reading the rest; one that does not arrive in time is 408.
 * The request is drained or destroyed either way, so nothing is left half-read.
 */
export function readBytes(req: HttpRequest, maxBytes: number, deadlineMs: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (Number.isFinite(declared) && declared > maxBytes) {
    req.resume();
    return Promise.reject(new ChatHttpError(413, BODY_ERRORS.tooLarge, `the body is ${declared} bytes; at most ${maxBytes} are accepted`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (e: Error | undefined) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      if (e === undefined) resolve(Buffer.concat(chunks, size));
      else {
        req.resume();
        reject(e);
      }
    };
    const timer = setTimeout(() => finish(new ChatHttpError(408, BODY_ERRORS.timeout, `the body did not arrive within ${deadlineMs / 1000} s`)), deadlineMs);
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) finish(new ChatHttpError(413, BODY_ERRORS.tooLarge, `the body is larger than ${maxBytes} bytes`));
      else chunks.push(chunk);
    };
    const onEnd = () => finish(undefined);
    const onError = () => finish(new ChatHttpError(400, BODY_ERRORS.invalid, "the body could not be read"));
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
  });
}

/**
 * closeUnread marks a response to a request whose body was not read to its end (refused as too
 * large, too slow or of the wrong type) as the connection's last: the rest of the body is then
 * not read at all, instead of being drained for as long as the peer cares to send. HTTP/2 needs
 * nothing: its stream ends alone.
 */
export function closeUnread(req: HttpRequest, res: { setHeader(name: string, value: string): unknown }): void {
  if (req.httpVersionMajor === 1 && !req.complete) res.setHeader("connection", "close");
}

/** fieldsOf turns a urlencoded text into fields, refusing more than MAX_FIELDS of them. */
function fieldsOf(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const [k, v] of new URLSearchParams(text)) {
    fields.set(k, v);
    if (fields.size > MAX_FIELDS) throw new ChatHttpError(400, BODY_ERRORS.invalid, `at most ${MAX_FIELDS} form fields are accepted`);
  }
  return fields;
}

/**
 * readForm reads a request's form: urlencoded, multipart (with at most one file, of at most
 * limits.maxFileBytes), or no body at all. The query string's fields come first; the body's win.
 * Any other media type is 415; a malformed multipart body is 400; a file too large is 413.
 */
export async function readForm(req: HttpRequest, limits: BodyLimits): Promise<FormBody> {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const fields = q < 0 ? new Map<string, string>() : fieldsOf(url.slice(q + 1));
  const type = mediaTypeOf(req);
  if (type === "application/x-www-form-urlencoded" || (type === "" && req.headers["content-length"] === undefined && req.headers["transfer-encoding"] === undefined)) {
    const body = await readBytes(req, limits.maxBytes, limits.deadlineMs);
    for (const [k, v] of fieldsOf(body.toString("utf8"))) fields.set(k, v);
    return { fields, file: undefined };
  }
  if (type === "multipart/form-data") return readMultipart(req, limits, fields);
  req.resume();
  throw new ChatHttpError(415, BODY_ERRORS.unsupported, "send application/x-www-form-urlencoded or multipart/form-data");
}

/** MULTIPART_OVERHEAD is what a multipart body may take beside its fields and its file: boundaries and part headers. */
const MULTIPART_OVERHEAD = 64 * 1024;

/** readMultipart parses a multipart body with busboy, within the limits. */
function readMultipart(req: HttpRequest, limits: BodyLimits, fields: Map<string, string>): Promise<FormBody> {
  const most = limits.maxBytes + limits.maxFileBytes + MULTIPART_OVERHEAD;
  const declared = Number(req.headers["content-length"] ?? "0");
  if (Number.isFinite(declared) && declared > most) {
    req.resume();
    return Promise.reject(new ChatHttpError(413, BODY_ERRORS.tooLarge, `the body is ${declared} bytes; at most ${most} are accepted`));
  }
  let parser: busboy.Busboy;
  try {
    parser = busboy({
      headers: req.headers,
      limits: { fieldSize: limits.maxBytes, fields: MAX_FIELDS, files: limits.maxFileBytes > 0 ? 1 : 0, fileSize: limits.maxFileBytes, parts: MAX_FIELDS + 1 },
    });
  } catch {
    req.resume();
    return Promise.reject(new ChatHttpError(400, BODY_ERRORS.invalid, "multipart/form-data without a usable boundary"));
  }
  return new Promise((resolve, reject) => {
    let file: UploadedFile | undefined;
    let failed = false;
    let total = 0;
    const fail = (e: ChatHttpError) => {
      if (failed) return;
      failed = true;
      clearTimeout(timer);
      req.unpipe(parser);
      req.resume();
      reject(e);
    };
    const timer = setTimeout(() => fail(new ChatHttpError(408, BODY_ERRORS.timeout, `the body did not arrive within ${limits.deadlineMs / 1000} s`)), limits.deadlineMs);
    parser.on("field", (name, value, info) => {
      total += value.length;
      if (info.valueTruncated || total > limits.maxBytes) fail(new ChatHttpError(413, BODY_ERRORS.tooLarge, `form fields larger than ${limits.maxBytes} bytes`));
      else fields.set(name, value);
    });
    parser.on("file", (name, stream, info) => {
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on("data", (chunk: Buffer) => {
        size += chunk.length;
        chunks.push(chunk);
      });
      stream.on("error", () => fail(new ChatHttpError(400, BODY_ERRORS.invalid, "the multipart/form-data body is malformed")));
      stream.on("limit", () => fail(new ChatHttpError(413, BODY_ERRORS.tooLarge, `the file is larger than ${limits.maxFileBytes} bytes`)));
      // "end" comes before busboy's own "close", so the file is in place when the form is done.
      stream.on("end", () => {
        if (failed || stream.truncated) return;
        file = { field: name, filename: info.filename ?? "", contentType: info.mimeType, content: Buffer.concat(chunks, size) };
      });
    });
    parser.on("filesLimit", () => fail(new ChatHttpError(400, BODY_ERRORS.invalid, limits.maxFileBytes > 0 ? "at most one file is accepted" : "this request takes no file")));
    parser.on("fieldsLimit", () => fail(new ChatHttpError(400, BODY_ERRORS.invalid, `at most ${MAX_FIELDS} form fields are accepted`)));
    parser.on("partsLimit", () => fail(new ChatHttpError(400, BODY_ERRORS.invalid, `at most ${MAX_FIELDS + 1} parts are accepted`)));
    parser.on("error", () => fail(new ChatHttpError(400, BODY_ERRORS.invalid, "the multipart/form-data body is malformed")));
    parser.on("close", () => {
      if (failed) return;
      clearTimeout(timer);
      resolve({ fields, file });
    });
    req.on("error", () => fail(new ChatHttpError(400, BODY_ERRORS.invalid, "the body could not be read")));
    req.pipe(parser);
  });
}
