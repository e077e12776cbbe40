import { create } from "@bufbuild/protobuf";
import { timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { ValueSchema, type Value } from "../../gen/gms/v1/value_pb.js";
// Installed before any request is decoded: a "__proto__" map key stays a key (see map-keys.ts).
import "./map-keys.js";
import { invalid } from "../domain/errors.js";
import type { DataEntries, DataValue } from "../domain/value.js";

/** fromValue turns a protobuf Value into a domain value (protovalidate has made sure one kind is set). */
export function fromValue(v: Value): DataValue {
  switch (v.kind.case) {
    case "text":
      return { kind: "text", text: v.kind.value };
    case "file":
      return {
        kind: "file",
        filename: v.kind.value.filename,
        contentType: v.kind.value.contentType || "application/octet-stream",
        content: v.kind.value.content,
      };
    default:
      return { kind: "text", text: "" };
  }
}

/** toValue turns a domain value into a protobuf Value. */
export function toValue(v: DataValue): Value {
  return create(ValueSchema, {
    kind: v.kind === "text" ? { case: "text", value: v.text } : { case: "file", value: { filename: v.filename, contentType: v.contentType, content: v.content } },
  });
}

/** fromEntries turns a protobuf map of values into domain entries. */
export function fromEntries(map: { [key: string]: Value }): DataEntries {
  return new Map(Object.entries(map).map(([k, v]) => [k, fromValue(v)]));
}

/** toEntries turns domain entries into a protobuf map of values. */
export function toEntries(entries: DataEntries): { [key: string]: Value } {
  const out: { [key: string]: Value } = {};
  for (const [k, v] of entries) out[k] = toValue(v);
  return out;
}

/** timestamp turns epoch milliseconds into a protobuf Timestamp. */
export function timestamp(ms: number): Timestamp {
  return timestampFromMs(ms);
}

/** optionalNumber turns an optional int64 field (bigint) into a number (see exactNumber; `field` names it in the refusal). */
export function optionalNumber(v: bigint | number | undefined, field: string): number | undefined {
  return v === undefined ? undefined : exactNumber(v, field);
}

/**
 * exactNumber turns an int64 field (bigint) into a number, refusing one a number cannot hold
 * exactly (above 2^53-1): the contract's rules refuse those first; this keeps any path that missed
 * them from rounding.
 */
export function exactNumber(v: bigint | number, field: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw invalid(`${field}: must be at most ${Number.MAX_SAFE_INTEGER}`);
  return n;
}
