// connect-es's private exports, in one place: every import of `@connectrpc/connect/protocol*` in
// src/ is here, and nowhere else (`grep -rn "@connectrpc/connect/protocol" src` shows this file
// only). These subpaths are connect-es's internals ("@private Internal code, does not follow
// semantic versioning"): a minor release may rename, move or change any of them. Two modules use
// them, to answer exactly as connect does where connect's own handler is not the one answering:
//
// - src/rpc/lean-path.ts (the lean path serving gRPC and Connect unary calls itself): gRPC and
//   Connect content types, timeouts, compression negotiation, method serialization (JSON and
//   binary, readMaxBytes), envelopes, trailer status, Connect error JSON and HTTP status codes.
// - src/rpc/decode.ts (connect's answers to undecodable requests rewritten): the universal
//   handler types, connect-node's universal request/response adapters, error JSON, trailer status,
//   gRPC-Web trailers, envelopes.
//
// On a connect-es upgrade (@connectrpc/connect, @connectrpc/connect-node: keep both on the same
// version), re-check it so:
// 1. `npx tsc -p tsconfig.json`: a renamed or removed export, or a changed signature, fails here.
// 2. Compare each function below with the new release's source (packages/connect/src/protocol*/):
//    the lean path copies connect's behaviour around them step by step (the order of its checks,
//    its error messages), so a changed step in connect's gRPC or Connect handler
//    (protocol-grpc/handler-factory.ts, protocol-connect/handler-factory.ts) is a change to copy.
// 3. Run the byte-for-byte tests, which compare the lean path with connect's own handler on the
//    wire (status, headers, body bytes, trailers) and must pass unchanged:
//    `npx vitest run test/api-lean-path.test.ts test/hostile-input.test.ts test/serving-policy.test.ts
//    test/protocols.test.ts`.
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
  trailerMux,
} from "@connectrpc/connect/protocol-connect";
export {
  contentTypeProto as contentTypeGrpcProto,
  findTrailerError,
  grpcStatusOk,
  headerAcceptEncoding as headerGrpcAcceptEncoding,
  parseContentType as parseGrpcContentType,
  parseTimeout as parseGrpcTimeout,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
export { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
// Public, but documented as subject to change ("we may have to make changes to it in the future").
export { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
