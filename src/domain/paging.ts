// Page tokens of the operator's session listing (AdminService.ListSessions): opaque to callers, a
// keyset cursor inside. No secret signs them: a token is the caller's own position in a list an
// admin may read whole anyway, so a forged one can only start a listing elsewhere. What a token
// must not do is be read wrongly: a damaged one, or one used with other filters than the listing
// that made it, is refused INVALID_ARGUMENT rather than silently paging something else.
import { createHash } from "node:crypto";
import { invalid } from "./errors.js";
import type { SessionCursor, SessionFilter } from "./session-store.js";

/** TOKEN_VERSION starts every token's payload, so a later format can tell old tokens apart. */
const TOKEN_VERSION = 1;
/** UUID is what a session id looks like (every id the rules make is one). */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** checksum is the first 9 bytes of the payload's SHA-256: damage to a token shows, nothing is kept secret. */
function checksum(payload: string): string {
  return createHash("sha256").update(payload).digest().subarray(0, 9).toString("base64url");
}

/** encodePageToken makes the token that resumes a listing with `filter` just after `cursor`. */
export function encodePageToken(cursor: SessionCursor, filter: SessionFilter): string {
  const payload = JSON.stringify([TOKEN_VERSION, cursor.createdAt, cursor.id, filter.service ?? "", filter.state ?? ""]);
  return `${Buffer.from(payload).toString("base64url")}.${checksum(payload)}`;
}

/**
 * decodePageToken reads a token encodePageToken made for the same filter: its cursor. Anything
 * else — damaged, truncated, made up, or made for another service or state — is INVALID_ARGUMENT
 * naming page_token.
 */
export function decodePageToken(token: string, filter: SessionFilter): SessionCursor {
  const bad = (why: string) => invalid(`page_token: ${why}; start again without one`);
  const [body = "", sum = "", ...rest] = token.split(".");
  if (rest.length > 0 || !/^[A-Za-z0-9_-]+$/.test(body)) throw bad("not a token this server made");
  const payload = Buffer.from(body, "base64url").toString("utf8");
  if (sum !== checksum(payload)) throw bad("not a token this server made");
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload);
  } catch {
    throw bad("not a token this server made");
  }
  if (!Array.isArray(parsed) || parsed.length !== 5 || parsed[0] !== TOKEN_VERSION) throw bad("not a token this server made");
  const [, createdAt, id, service, state] = parsed as unknown[];
  if (typeof createdAt !== "number" || !Number.isSafeInteger(createdAt) || createdAt < 0 || typeof id !== "string" || !UUID.test(id)) {
    throw bad("not a token this server made");
  }
  if (service !== (filter.service ?? "") || state !== (filter.state ?? "")) throw bad("made for another service or state");
  return { createdAt, id };
}
