// How the operator's commands end: an exit status a script can branch on, and one line on stderr
// that says what went wrong — the server's code and message, or why it could not be reached —
// never a stack trace, never the API key.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { NoMatchReason, NoMatchSchema, RateLimitedSchema } from "../../gen/gms/v1/error_details_pb.js";
import { cell } from "./output.js";

/** EXIT are the exit statuses of the commands that call a server (README: "Exit statuses"). */
export const EXIT = {
  /** ok: done; `health`: the server is serving. */
  ok: 0,
  /** usage: a bad command line (an unknown option, a missing argument), or a request the server refused as malformed (INVALID_ARGUMENT). */
  usage: 1,
  /** notFound: what was named does not exist (NOT_FOUND: an unknown id, no reservation, no match). */
  notFound: 2,
  /** refused: the key is missing, unknown, or lacks the role (UNAUTHENTICATED, PERMISSION_DENIED). */
  refused: 3,
  /** unreachable: no answer (connection refused, TLS failure, timeout), UNAVAILABLE, DEADLINE_EXCEEDED; `health`: not serving. */
  unreachable: 4,
  /** server: any other refusal or fault (FAILED_PRECONDITION, RESOURCE_EXHAUSTED, INTERNAL...). */
  server: 5,
} as const;

/** CliFailure is a failure the command itself noticed (a bad option value, an unreadable key file), with its status. */
export class CliFailure extends Error {
  override name = "CliFailure";
  constructor(
    message: string,
    readonly status: number = EXIT.usage,
  ) {
    super(message);
  }
}

/** statusOf is the exit status for an RPC's error code. */
export function statusOf(code: Code): number {
  switch (code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return EXIT.usage;
    case Code.NotFound:
      return EXIT.notFound;
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return EXIT.refused;
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return EXIT.unreachable;
    default:
      return EXIT.server;
  }
}

/** NETWORK_CODES are Node's errors of a connection that could not be made or was lost. */
const NETWORK_CODES: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTFOUND: "no such host",
  EAI_AGAIN: "host name lookup failed",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "connection timed out",
  EPIPE: "connection closed",
  ERR_SSL_WRONG_VERSION_NUMBER: "TLS handshake failed (is the URL http rather than https?)",
  DEPTH_ZERO_SELF_SIGNED_CERT: "the server's certificate is self-signed (trust it with --ca)",
  SELF_SIGNED_CERT_IN_CHAIN: "the server's certificate chain is self-signed (trust it with --ca)",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "the server's certificate cannot be verified (trust its CA with --ca)",
  ERR_TLS_CERT_ALTNAME_INVALID: "the server's certificate does not name this host",
  CERT_HAS_EXPIRED: "the server's certificate has expired",
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: "the server asks for a client certificate (--cert and --cert-key)",
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: "the server refused the client certificate",
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: "the server does not know the client certificate's CA",
};

/** networkCause is what Node said of a connection that failed, found in an error's causes; undefined when none is. */
function networkCause(e: unknown): string | undefined {
  for (let c: unknown = e, depth = 0; c !== undefined && c !== null && depth < 8; depth++) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === "string" && code in NETWORK_CODES) return NETWORK_CODES[code];
    c = (c as { cause?: unknown }).cause;
  }
  return undefined;
}

/** detailOf says more of a refusal when it carries a detail worth a line: why nothing matched, until when a number is locked. */
function detailOf(e: ConnectError): string | undefined {
  const noMatch = e.findDetails(NoMatchSchema)[0];
  if (noMatch !== undefined) return `no match: ${NoMatchReason[noMatch.reason]?.toLowerCase() ?? "unknown"}`;
  const limited = e.findDetails(RateLimitedSchema)[0];
  if (limited !== undefined) {
    const at = limited.until === undefined ? "" : ` (until ${new Date(timestampMs(limited.until)).toISOString()})`;
    return `retry after ${limited.retryAfterSeconds} s${at}`;
  }
  return undefined;
}

/**
 * failureOf is how a command that failed ends: its status and the line for stderr. `url` is the
 * server's, to name it when it could not be reached; nothing else of the command line is repeated
 * (the key never is).
 */
export function failureOf(e: unknown, url: string): { status: number; line: string } {
  if (e instanceof CliFailure) return { status: e.status, line: `opengms: ${e.message}` };
  const network = networkCause(e);
  if (network !== undefined) return { status: EXIT.unreachable, line: `opengms: cannot reach ${url}: ${network}` };
  const ce = ConnectError.from(e);
  // The server's message is one line of its own words; anything else (a client-side fault) is named by its code alone.
  const message = cell(ce.rawMessage.replace(/\s*\n\s*/g, " "), 500);
  const detail = detailOf(ce);
  return { status: statusOf(ce.code), line: `opengms: ${codeToString(ce.code)}: ${message}${detail === undefined ? "" : ` (${detail})`}` };
}
