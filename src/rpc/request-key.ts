import { createHash } from "node:crypto";
import { toJson, type DescMessage, type DescMethod, type JsonValue, type Message, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { NO_REQUEST, type RequestKey } from "../domain/idempotency.js";
import type { Identity } from "./auth.js";

/**
 * MIN_UNKEYED_REQUEST_ID is the shortest request_id a caller without an API key of its own may
 * send: such callers share one name, so the id itself is what only the first caller knows (a random
 * UUID has 36 characters).
 */
export const MIN_UNKEYED_REQUEST_ID = 16;

/** canonical writes a JSON value with every object's keys sorted: one text per request, whatever the wire order of its maps. */
function canonical(v: JsonValue): string {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  const keys = Object.keys(v).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(v[k] as JsonValue)}`).join(",")}}`;
}

/** requestDigest is the SHA-256 of the request's canonical JSON: the same request over any protocol or encoding gives the same digest. */
export function requestDigest<I extends DescMessage>(schema: I, req: MessageShape<I>): string {
  return createHash("sha256").update(canonical(toJson(schema, req)), "utf8").digest("hex");
}

/**
 * requestKey is the retry key of a create-like call carrying `request_id`. A caller with an API key
 * of its own is scoped by the RPC and the key's name; a caller without one (anonymous, or any
 * caller of a server with no keys) by the RPC and the request's digest, and must send an id of at
 * least MIN_UNKEYED_REQUEST_ID characters. Either way the digest is kept beside the reply: a retry
 * gets the reply only for the very same request, a different request under a used id is
 * ALREADY_EXISTS, and no caller reaches a reply made for another.
 */
export function requestKey(method: DescMethod, caller: Identity, req: Message & { requestId: string }): RequestKey {
  if (req.requestId === "") return NO_REQUEST;
  if (!caller.keyed && req.requestId.length < MIN_UNKEYED_REQUEST_ID) {
    throw new ConnectError(
      `request_id: callers without an API key must send at least ${MIN_UNKEYED_REQUEST_ID} characters (a random UUID, say), got ${req.requestId.length}`,
      Code.InvalidArgument,
    );
  }
  const digest = requestDigest(method.input, req as MessageShape<DescMessage>);
  // Method names hold neither ":" nor "#", so a key's name can never spell a digest scope.
  return { scope: caller.keyed ? `${method.name}:${caller.name}` : `${method.name}#${digest}`, requestId: req.requestId, digest };
}
