// connect-internals: the connect-es internals this server uses, in one place. Every import of
// `@connectrpc/connect/protocol*` in src/ is here and nowhere else (`grep -rn
// "@connectrpc/connect/protocol" src` shows this file only). These subpaths are connect-es's own
// plumbing, marked "@private Internal code, does not follow semantic versioning": any release may
// rename, move or change them. Two modules use them, to answer exactly as connect does where
// connect's own handler is not the one answering:
//
// - src/rpc/lean-path.ts, which serves gRPC calls and Connect unary calls itself: content types,
//   timeouts, compression negotiation, method serialization (JSON and binary, readMaxBytes),
//   envelopes, the gRPC trailer status, Connect's error JSON and HTTP status codes;
// - src/rpc/decode.ts, which rewrites connect's answers to undecodable requests: the universal
//   handler's types and connect-node's universal request and response adapters, Connect's error
//   JSON and status codes, the gRPC trailer status, gRPC-Web trailers, envelopes.
//
// On a connect-es upgrade (@connectrpc/connect and @connectrpc/connect-node move together, pinned
// to the same exact version), re-check them so:
// 1. `npx tsc -p tsconfig.json`: an export renamed, moved or removed, or a signature changed,
//    fails here first.
// 2. Read the release's changes to packages/connect/src/protocol*/ (above all the gRPC and Connect
//    handler factories, protocol-grpc/handler-factory.ts and protocol-connect/handler-factory.ts,
//    and protocol/invoke-implementation.ts): the lean path follows their steps in their order and
//    their words (which check comes first, which error says what), so a step changed there is a
//    step to change in lean-path.ts.
// 3. Run the tests that compare the two paths on the wire, byte for byte (status, headers, body,
//    trailers), and the serving policy's: they must pass unchanged.
//    `npx vitest run test/api-lean-path.test.ts test/hostile-input.test.ts test/serving-policy.test.ts test/protocols.test.ts test/db-faults.test.ts`
import type { ConnectError } from "@connectrpc/connect";
import { setTrailerStatus as connectSetTrailerStatus } from "@connectrpc/connect/protocol-grpc";

export {
  compressionNegotiate,
  createAsyncIterable,
  createMethodSerializationLookup,
  encodeEnvelope,
  envelopeCompress,
  envelopeDecompress,
  type Compression,
  type MethodSerializationLookup,
  type UniversalHandler,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
export {
  codeFromHttpStatus,
  codeToHttpStatus,
  contentTypeUnaryJson,
  contentTypeUnaryProto,
  errorFromJsonBytes,
  errorToJsonBytes,
  headerUnaryAcceptEncoding,
  parseContentType as parseConnectContentType,
  parseTimeout as parseConnectTimeout,
} from "@connectrpc/connect/protocol-connect";
export {
  contentTypeProto as contentTypeGrpcProto,
  findTrailerError,
  grpcStatusOk,
  headerAcceptEncoding as headerGrpcAcceptEncoding,
  parseContentType as parseGrpcContentType,
  parseTimeout as parseGrpcTimeout,
} from "@connectrpc/connect/protocol-grpc";
export { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
// Public, but documented as "we may have to make changes to it in the future": checked alike.
export { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";

/**
 * grpcMessage percent-encodes an error message for the `grpc-message` header or trailer exactly as
 * the gRPC spec (PROTOCOL-HTTP2.md, "Percent-Encoded") asks: each byte of its UTF-8 outside
 * 0x20–0x7E, and "%", becomes %XX; everything else stays as it is. connect-es encodes with
 * encodeURIComponent, which also encodes "+", ":", "/", spaces…: clients that decode only what the
 * spec encodes (grpc-js uses decodeURI) then show "%2B1800…" and "phone_number%3A …".
 */
export function grpcMessage(raw: string): string {
  let out = "";
  for (const byte of Buffer.from(raw, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** respecGrpcMessage re-encodes a `grpc-message` connect encoded (encodeURIComponent) as the spec does (grpcMessage). */
export function respecGrpcMessage(encoded: string): string {
  let raw: string;
  try {
    raw = decodeURIComponent(encoded);
  } catch {
    return encoded;
  }
  return grpcMessage(raw);
}

/** setTrailerStatus is connect's (the gRPC status, message and details into `target`), with `grpc-message` encoded as the spec asks (grpcMessage). */
export function setTrailerStatus(target: Headers, error: ConnectError | undefined): Headers {
  connectSetTrailerStatus(target, error);
  if (error !== undefined && error.rawMessage !== "") target.set("grpc-message", grpcMessage(error.rawMessage));
  return target;
}
