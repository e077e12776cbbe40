// grpc-js clients read an error's message as sent: `grpc-message` is percent-encoded exactly as the
// gRPC spec asks (only bytes outside printable ASCII, and "%"), on the lean path and connect's.
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MatchInteractionRequestSchema, MatchInteractionResponseSchema, RequestInteractionRequestSchema, RequestInteractionResponseSchema } from "../gen/gms/v1/access_pb.js";
import { GetSessionRequestSchema, GetSessionResponseSchema } from "../gen/gms/v1/session_pb.js";
import { grpcMessage } from "../src/rpc/connect-internals.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/** callGrpcJs makes one unary call with grpc-js and gives the error it ended with. */
function errorOf<I extends DescMessage, O extends DescMessage>(client: grpc.Client, path: string, input: I, output: O, request: MessageShape<I>): Promise<grpc.ServiceError> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      path,
      (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
      (b: Buffer) => fromBinary(output, b),
      request,
      (err) => (err === null ? reject(new Error(`${path} succeeded`)) : resolve(err)),
    );
  });
}

describe("grpc-message as the gRPC spec encodes it", () => {
  let app: TestServer;
  let client: grpc.Client;
  beforeAll(async () => {
    app = await startTestServer("sqlite", { config: { resources: { pool: { numbers: ["+18005550100"], locking: true } } } });
    client = new grpc.Client(new URL(app.server.url).host, grpc.credentials.createInsecure());
  });
  afterAll(async () => {
    client.close();
    await app.close();
  });

  it("encodes only bytes outside printable ASCII, and %", () => {
    expect(grpcMessage("no live reservation on +18005550100: 50% (é)")).toBe("no live reservation on +18005550100: 50%25 (%C3%A9)");
    expect(grpcMessage("line\nbreak")).toBe("line%0Abreak");
  });

  it("a grpc-js client reads the plain message of the lean path (MatchInteraction, RequestInteraction)", async () => {
    const noMatch = await errorOf(client, "/gms.v1.AccessService/MatchInteraction", MatchInteractionRequestSchema, MatchInteractionResponseSchema, create(MatchInteractionRequestSchema, { accessNumber: "+18005550100" }));
    expect(noMatch.code).toBe(grpc.status.NOT_FOUND);
    expect(noMatch.details).toBe("no live reservation on +18005550100");
    const bad = await errorOf(client, "/gms.v1.AccessService/RequestInteraction", RequestInteractionRequestSchema, RequestInteractionResponseSchema, create(RequestInteractionRequestSchema, { phoneNumber: "+1 650 466 999é", resourceGroup: "pool" }));
    expect(bad.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(bad.details).toMatch(/^phone_number: /);
    expect(bad.details).not.toMatch(/%[0-9A-F]{2}/);
  });

  it("a grpc-js client reads the plain message of connect's path (GetSession's validation)", async () => {
    const e = await errorOf(client, "/gms.v1.SessionService/GetSession", GetSessionRequestSchema, GetSessionResponseSchema, create(GetSessionRequestSchema, { sessionId: "0000-unknown+session" }));
    expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(e.details).toMatch(/^session_id: .*uuid/);
    expect(e.details).not.toMatch(/%[0-9A-F]{2}/);
  });
});
