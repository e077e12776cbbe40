// The IVR's matching endpoint: MatchInteraction for scripting languages whose HTTP clients are
// primitive. Asterisk's CURL() returns the body only and sends form-encoded data; Kamailio's
// http_client keeps the first line of the body and gives up after 4 s; FreeSWITCH's mod_curl and
// Lua see the status but are happiest with text. So parameters come as a query string or a
// form-encoded body, and the answer is one line of text whose first token is the outcome:
//
//   matched <session_id> <data_id>      200: the call is the session's; its reservation is released
//   no_match <reason>                   200: reason no_reservation | code_mismatch | phone_mismatch
//   locked <retry_after_seconds>        200: too many wrong codes on the number (Retry-After too)
//   error <code> <message>              4xx/5xx: code as Connect spells it (invalid_argument, ...)
//
// The route holds no rule: it calls MatchInteraction through the serving policy (auth, validation,
// logs, error mapping) as the HTTP caller, with the call id as the request id, so a retry of a call
// gets the first answer and releases or counts nothing again (the domain keeps the reply).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { AccessService } from "../../gen/gms/v1/access_pb.js";
import { PEER_HEADER, remoteAddressOf } from "../rpc/peer.js";
import { NoMatchReason, NoMatchSchema, RateLimitedSchema } from "../../gen/gms/v1/error_details_pb.js";
import { codeToHttpStatus } from "../rpc/connect-internals.js";
import { codeName } from "../rpc/observe.js";
import { GmsHttpError, mediaTypeOf, readBody, type RefusalKind } from "./form.js";
import { pathOf, type HttpRequest, type HttpResponse, type HttpRouteFactory } from "./routes.js";

/** IVR_MATCH_PATH is where the endpoint is served. */
export const IVR_MATCH_PATH = "/ivr/match";

/**
 * IVR_DEADLINE_MS bounds a whole request, its body read and its match: an IVR gets an answer
 * (`error deadline_exceeded` at worst) before Kamailio's http_client gives up at its default 4 s,
 * with room for the network. A match normally takes a few milliseconds.
 */
export const IVR_DEADLINE_MS = 3_000;

/** MAX_BODY_BYTES is the largest form body: five short parameters fit many times over. */
const MAX_BODY_BYTES = 4_096;

/** PARAMS maps the endpoint's parameters onto MatchInteractionRequest's fields. */
const PARAMS = {
  access_number: "accessNumber",
  phone_number: "phoneNumber",
  access_code: "accessCode",
  call_id: "requestId",
  service: "service",
} as const;

type Field = (typeof PARAMS)[keyof typeof PARAMS];

/** REASONS are NoMatch's reasons as the answer spells them. */
const REASONS: Record<NoMatchReason, string> = {
  [NoMatchReason.UNSPECIFIED]: "unspecified",
  [NoMatchReason.NO_RESERVATION]: "no_reservation",
  [NoMatchReason.CODE_MISMATCH]: "code_mismatch",
  [NoMatchReason.PHONE_MISMATCH]: "phone_mismatch",
};

/** Refusal is a request refused before any call: its code and message, and the HTTP status when it is not the code's. */
class Refusal extends Error {
  constructor(
    readonly code: Code,
    message: string,
    readonly status = codeToHttpStatus(code),
  ) {
    super(message);
  }
}

/** shown quotes a caller's text for a message: at most 40 characters, as JSON escapes them (no line breaks reach the answer). */
const shown = (s: string) => JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);

/** oneLine makes a message safe for a one-line answer: control characters become spaces, at most 300 characters. */
const oneLine = (s: string) => s.replace(/[^\x20-\x7e\u00a0-\uffff]+/g, " ").slice(0, 300);

/** REFUSED_AS is the code an IVR's answer names for each kind of body refusal (form.ts). */
const REFUSED_AS: Record<RefusalKind, Code> = {
  invalid: Code.InvalidArgument,
  notFound: Code.NotFound,
  method: Code.InvalidArgument,
  timeout: Code.DeadlineExceeded,
  tooLarge: Code.InvalidArgument,
  unsupported: Code.InvalidArgument,
};

/**
 * readText reads a form body of `type` as every GMS route does (form.ts readBody: up to
 * MAX_BODY_BYTES, refused once `gone` aborts or `ms` pass), as UTF-8; its refusals become the
 * endpoint's, with their status.
 */
async function readText(req: HttpRequest, type: string, gone: AbortSignal, ms: number): Promise<string> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), ms);
  const onGone = () => deadline.abort();
  if (gone.aborted) deadline.abort();
  else gone.addEventListener("abort", onGone, { once: true });
  try {
    return (await readBody(req, { maxBytes: MAX_BODY_BYTES, limit: `${MAX_BODY_BYTES} bytes`, mediaTypes: [type] }, deadline)).toString("utf8");
  } catch (e) {
    if (e instanceof GmsHttpError) throw new Refusal(REFUSED_AS[e.kind], e.message, e.status);
    throw e;
  } finally {
    clearTimeout(timer);
    gone.removeEventListener("abort", onGone);
  }
}

/**
 * paramsOf reads the request's parameters: the query string, and for POST a form-encoded body (read
 * within `ms`; without a Content-Type too).
 * An unknown parameter, or one given twice (in the query and the body alike), is refused.
 */
async function paramsOf(req: HttpRequest, gone: AbortSignal, ms: number): Promise<Partial<Record<Field, string>>> {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const sources = [new URLSearchParams(q < 0 ? "" : url.slice(q + 1))];
  if (req.method === "POST") {
    const type = mediaTypeOf(req);
    const body = await readText(req, type, gone, ms);
    // A body without a Content-Type is read as a form: Asterisk's CURL() drops its default
    // Content-Type once any header (the API key's) is set.
    if (body !== "" && type !== "application/x-www-form-urlencoded" && type !== "") {
      throw new Refusal(Code.InvalidArgument, `send the parameters form-encoded (application/x-www-form-urlencoded) or in the query, not ${shown(type)}`, 415);
    }
    sources.push(new URLSearchParams(body));
  }
  const out: Partial<Record<Field, string>> = {};
  for (const params of sources) {
    for (const [name, value] of params) {
      const field = Object.hasOwn(PARAMS, name) ? PARAMS[name as keyof typeof PARAMS] : undefined;
      if (field === undefined) throw new Refusal(Code.InvalidArgument, `unknown parameter ${shown(name)}; expected ${Object.keys(PARAMS).join(", ")}`);
      if (out[field] !== undefined) throw new Refusal(Code.InvalidArgument, `parameter ${name} is given twice`);
      out[field] = value;
    }
  }
  return out;
}

/** answer writes one line of text with its status (and more headers); nothing once the response is gone. */
function answer(res: HttpResponse, status: number, line: string, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const body = `${line}\n`;
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", "content-length": String(Buffer.byteLength(body)), ...headers });
  res.end(body);
}

/** errorAnswer is the answer to a failed call: a refusal of the domain's (no_match, locked) or an error line. */
function errorAnswer(e: unknown): { status: number; line: string; headers?: Record<string, string> } {
  if (e instanceof Refusal) return { status: e.status, line: `error ${codeName(e.code)} ${oneLine(e.message)}` };
  const err = ConnectError.from(e);
  const [noMatch] = err.code === Code.NotFound ? err.findDetails(NoMatchSchema) : [];
  if (noMatch !== undefined) return { status: 200, line: `no_match ${REASONS[noMatch.reason]}` };
  const [limited] = err.code === Code.ResourceExhausted ? err.findDetails(RateLimitedSchema) : [];
  if (limited !== undefined) {
    const seconds = String(limited.retryAfterSeconds);
    return { status: 200, line: `locked ${seconds}`, headers: { "retry-after": seconds } };
  }
  return { status: codeToHttpStatus(err.code), line: `error ${codeName(err.code)} ${oneLine(err.rawMessage)}` };
}

/**
 * ivrMatchRoute serves GET and POST IVR_MATCH_PATH: parameters access_number (required),
 * phone_number, access_code, call_id (the request id: a retry with it gets the first answer) and
 * service, as a query string or a form body; the caller's `authorization` and `x-request-id` go on
 * to MatchInteraction, under IVR_DEADLINE_MS.
 */
export const ivrMatchRoute: HttpRouteFactory = ({ local, log }) => {
  const access = createClient(AccessService, local);
  /** refused logs a request refused before any call (which the serving policy would log): what and why, no values. */
  const refused = (req: HttpRequest, status: number, code: Code, started: number) =>
    log.info({ route: `${req.method ?? ""} ${IVR_MATCH_PATH}`.slice(0, 64), status, code: codeName(code), ms: Math.round((performance.now() - started) * 10) / 10 }, "http refused");
  return (req, res) => {
    if (pathOf(req) !== IVR_MATCH_PATH) return false;
    if (req.method !== "GET" && req.method !== "POST") {
      refused(req, 405, Code.InvalidArgument, performance.now());
      answer(res, 405, `error invalid_argument method ${shown(req.method ?? "")} is not served; use GET or POST`, { allow: "GET, POST" });
      // The body, if any, is not read: the connection is closed with the answer.
      res.once("finish", () => req.destroy());
      return true;
    }
    const gone = new AbortController();
    const onClose = () => gone.abort(new ConnectError("the IVR went away", Code.Canceled));
    res.once("close", onClose);
    const started = performance.now();
    const headers: Record<string, string> = {};
    for (const name of ["authorization", "x-request-id"]) {
      const v = req.headers[name];
      if (typeof v === "string") headers[name] = v;
    }
    // The RPC's policies (the rate limit's per-peer buckets) see the IVR's address.
    const peer = remoteAddressOf(req);
    if (peer !== undefined) headers[PEER_HEADER] = peer;
    let requestId: string | undefined;
    const withId = (h: Record<string, string> = {}) => (requestId === undefined ? h : { ...h, "x-request-id": requestId });
    paramsOf(req, gone.signal, IVR_DEADLINE_MS)
      .then((p) => {
        const timeoutMs = Math.max(1, Math.floor(IVR_DEADLINE_MS - (performance.now() - started)));
        return access.matchInteraction(
          { accessNumber: p.accessNumber ?? "", phoneNumber: p.phoneNumber ?? "", accessCode: p.accessCode ?? "", requestId: p.requestId ?? "", service: p.service ?? "" },
          { headers, signal: gone.signal, timeoutMs, onHeader: (h) => (requestId = h.get("x-request-id") ?? undefined) },
        );
      })
      .then(
        (r) => {
          const [m] = r.matches;
          if (m === undefined) answer(res, 500, "error internal a match without a session", withId());
          else answer(res, 200, `matched ${m.sessionId} ${m.dataId}`, withId());
        },
        (e: unknown) => {
          if (e instanceof ConnectError) requestId ??= e.metadata.get("x-request-id") ?? undefined;
          const a = errorAnswer(e);
          answer(res, a.status, a.line, withId(a.headers));
          if (e instanceof Refusal) {
            refused(req, e.status, e.code, started);
            // A body left unread (refused before or while reading) would be taken for the next request.
            res.once("finish", () => req.destroy());
          }
        },
      )
      .finally(() => res.off("close", onClose));
    return true;
  };
};
