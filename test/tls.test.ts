// TLS as deployments run it: gRPC, Connect (HTTP/1.1 and HTTP/2) and gRPC-Web over TLS, and mutual
// TLS (server.tls.client_ca), where a client without a certificate the CA signed is refused at the
// handshake, before any call.
import { readFileSync, rmSync } from "node:fs";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { makePki, type Pki } from "./helpers/pki.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

type Protocol = "gRPC" | "Connect, HTTP/1.1" | "Connect, HTTP/2" | "gRPC-Web";
const PROTOCOLS: Protocol[] = ["gRPC", "Connect, HTTP/1.1", "Connect, HTTP/2", "gRPC-Web"];

/** transportFor makes a client transport of the protocol, trusting the test CA, with the client certificate given (if any). */
function transportFor(protocol: Protocol, baseUrl: string, pki: Pki, client?: { cert: string; key: string }): Transport {
  const nodeOptions = { ca: readFileSync(pki.caCert), ...(client === undefined ? {} : { cert: readFileSync(client.cert), key: readFileSync(client.key) }) };
  switch (protocol) {
    case "gRPC":
      return createGrpcTransport({ baseUrl, nodeOptions });
    case "Connect, HTTP/1.1":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions });
    case "Connect, HTTP/2":
      return createConnectTransport({ baseUrl, httpVersion: "2", nodeOptions });
    case "gRPC-Web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions });
  }
}

/** roundTrip checks health and stores and reads a record over the transport. */
async function roundTrip(transport: Transport): Promise<void> {
  expect((await createClient(Health, transport).check({})).status).toBe(Status.SERVING);
  const storage = createClient(StorageService, transport);
  const created = await storage.createData({ entries: { greeting: { kind: { case: "text", value: "over tls" } } } });
  const got = await storage.getData({ dataId: created.dataId });
  expect(got.entries["greeting"]?.kind).toEqual({ case: "text", value: "over tls" });
}

let pki: Pki;
beforeAll(async () => {
  pki = await makePki();
}, 60_000);
afterAll(() => rmSync(pki.dir, { recursive: true, force: true }));

describe("TLS (server.tls)", () => {
  let app: TestServer;
  beforeAll(async () => {
    app = await startTestServer("sqlite", { config: { server: { tls: { cert: pki.serverCert, key: pki.serverKey } } } });
  });
  afterAll(() => app.close());

  it("serves at an https URL", () => {
    expect(app.server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it.each(PROTOCOLS)("answers %s", async (protocol) => {
    await roundTrip(transportFor(protocol, app.server.url.replace("127.0.0.1", "localhost"), pki));
  });
});

describe("mutual TLS (server.tls.client_ca)", () => {
  let app: TestServer;
  let url: string;
  beforeAll(async () => {
    app = await startTestServer("sqlite", { config: { server: { tls: { cert: pki.serverCert, key: pki.serverKey, client_ca: pki.caCert } } } });
    url = app.server.url.replace("127.0.0.1", "localhost");
  });
  afterAll(() => app.close());

  it.each(PROTOCOLS)("answers %s from a client with a certificate the CA signed", async (protocol) => {
    await roundTrip(transportFor(protocol, url, pki, { cert: pki.clientCert, key: pki.clientKey }));
  });

  it.each(PROTOCOLS)("refuses %s from a client without a certificate, and from one another CA signed", async (protocol) => {
    for (const client of [undefined, { cert: pki.strangerCert, key: pki.strangerKey }]) {
      const health = createClient(Health, transportFor(protocol, url, pki, client));
      // The handshake fails: no call reaches the server (the client sees the connection fail).
      await expect(health.check({}, { timeoutMs: 5_000 })).rejects.toThrow();
    }
    // …and the server keeps serving the clients it should.
    await roundTrip(transportFor(protocol, url, pki, { cert: pki.clientCert, key: pki.clientKey }));
  });
});
