import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { promisify } from "node:util";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import type { Value } from "../gen/gms/v1/value_pb.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const ALLOWED_ORIGIN = "http://localhost:3000";
const text = (t: string): Value => ({ $typeName: "gms.v1.Value", kind: { case: "text", value: t } });
const textOf = (v: Value | undefined) => (v?.kind.case === "text" ? v.kind.value : undefined);

/** PROTOCOLS are every protocol and HTTP version a client may use on the one port. */
const PROTOCOLS: [string, (baseUrl: string) => Transport][] = [
  ["gRPC over HTTP/2 (h2c, prior knowledge)", (baseUrl) => createGrpcTransport({ baseUrl })],
  ["Connect JSON over HTTP/1.1", (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1" })],
  ["Connect binary over HTTP/1.1", (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true })],
  ["Connect JSON over HTTP/2", (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "2" })],
  ["gRPC-Web over HTTP/1.1", (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" })],
  ["gRPC-Web over HTTP/2", (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "2" })],
];

/** roundTrip stores a record over `writer`, reads it back over `reader`, and checks a server stream. */
async function roundTrip(writer: Transport, reader: Transport, label: string): Promise<void> {
  const { dataId } = await createClient(StorageService, writer).createData({ ttlSeconds: 60n, entries: { via: text(label) } });
  const got = await createClient(StorageService, reader).getData({ dataId });
  expect(textOf(got.entries["via"])).toBe(label);
  // A server stream: the first status of Health Watch, then the client cancels. (Cancel, not break:
  // with the Connect and gRPC-Web protocols over HTTP/2, connect-node's client leaves the stream open on a break.)
  const abort = new AbortController();
  const statuses: Status[] = [];
  const ended = await (async () => {
    for await (const res of createClient(Health, writer).watch({}, { signal: abort.signal })) {
      statuses.push(res.status);
      abort.abort();
    }
  })().catch((e: unknown) => ConnectError.from(e));
  expect(statuses).toEqual([Status.SERVING]);
  expect(ended?.code).toBe(Code.Canceled);
}

/** rawRequest sends one HTTP/1.1 request and returns its status and headers. */
function rawRequest(url: string, init: { method: string; headers: Record<string, string>; body?: string }): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: init.method, headers: init.headers, agent: false }, (res) => {
      res.resume();
      res.once("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.once("error", reject);
    req.end(init.body);
  });
}

describe.each(DIALECTS)("one port, every protocol, on %s", (dialect) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(dialect, { config: { server: { cors_origins: [ALLOWED_ORIGIN] } } });
  });
  afterAll(() => t.close());

  it.each(PROTOCOLS)("%s", async (label, make) => {
    await roundTrip(make(t.server.url), t.grpc, label);
    await roundTrip(t.grpc, make(t.server.url), label);
  });

  it("answers a CORS preflight from an allowed origin with the Access-Control headers", async () => {
    const res = await rawRequest(`${t.server.url}/gms.v1.StorageService/CreateData`, {
      method: "OPTIONS",
      headers: {
        origin: ALLOWED_ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,connect-protocol-version,authorization",
      },
    });
    expect(res.status).toBe(204);
    expect(res.headers["access-control-allow-origin"]).toBe(ALLOWED_ORIGIN);
    expect(String(res.headers["access-control-allow-methods"]).split(/,\s*/)).toEqual(expect.arrayContaining(["POST", "GET"]));
    const allowed = String(res.headers["access-control-allow-headers"]).toLowerCase().split(/,\s*/);
    expect(allowed).toEqual(expect.arrayContaining(["content-type", "connect-protocol-version", "authorization", "x-grpc-web"]));
    expect(res.headers["access-control-max-age"]).toBeDefined();
  });

  it("decorates the actual request from an allowed origin, exposing the gRPC-Web trailers", async () => {
    const res = await rawRequest(`${t.server.url}/gms.v1.StorageService/CreateData`, {
      method: "POST",
      headers: { origin: ALLOWED_ORIGIN, "content-type": "application/json" },
      body: JSON.stringify({ ttlSeconds: "60" }),
    });
    expect(res.status).toBe(200);
    expect(res.headers["access-control-allow-origin"]).toBe(ALLOWED_ORIGIN);
    expect(String(res.headers["access-control-expose-headers"]).toLowerCase()).toContain("grpc-status");
  });

  it("gives no Access-Control headers to an origin that is not listed", async () => {
    const preflight = await rawRequest(`${t.server.url}/gms.v1.StorageService/CreateData`, {
      method: "OPTIONS",
      headers: { origin: "http://evil.example", "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    });
    expect(preflight.headers["access-control-allow-origin"]).toBeUndefined();
    expect(preflight.headers["access-control-allow-methods"]).toBeUndefined();
    const post = await rawRequest(`${t.server.url}/gms.v1.StorageService/CreateData`, {
      method: "POST",
      headers: { origin: "http://evil.example", "content-type": "application/json" },
      body: JSON.stringify({ ttlSeconds: "60" }),
    });
    expect(post.headers["access-control-allow-origin"]).toBeUndefined();
  });
});

describe.each(DIALECTS)("TLS with ALPN on one port, on %s", (dialect) => {
  let dir: string;
  let ca: Buffer;
  let t: TestServer;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "opengms-tls-"));
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    await promisify(execFile)("openssl", [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert,
    ]);
    ca = readFileSync(cert);
    t = await startTestServer(dialect, { config: { server: { tls: { cert, key } } } });
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves https", () => {
    expect(t.server.url.startsWith("https://")).toBe(true);
  });

  it("negotiates h2 and http/1.1 by ALPN", async () => {
    const negotiate = (protocols: string[]) =>
      new Promise<string | false>((resolve, reject) => {
        const socket = tls.connect({ host: "127.0.0.1", port: t.server.port, ca, ALPNProtocols: protocols }, () => {
          const chosen = socket.alpnProtocol;
          socket.destroy();
          resolve(chosen ?? false);
        });
        socket.once("error", reject);
      });
    expect(await negotiate(["h2", "http/1.1"])).toBe("h2");
    expect(await negotiate(["http/1.1"])).toBe("http/1.1");
  });

  it("serves gRPC over h2", async () => {
    const grpc = createGrpcTransport({ baseUrl: t.server.url, nodeOptions: { ca } });
    await roundTrip(grpc, grpc, "gRPC over TLS");
  });

  it("serves Connect and gRPC-Web over HTTP/1.1, as browsers on https use them", async () => {
    const grpc = createGrpcTransport({ baseUrl: t.server.url, nodeOptions: { ca } });
    await roundTrip(createConnectTransport({ baseUrl: t.server.url, httpVersion: "1.1", nodeOptions: { ca } }), grpc, "Connect over TLS");
    await roundTrip(createGrpcWebTransport({ baseUrl: t.server.url, httpVersion: "1.1", nodeOptions: { ca } }), grpc, "gRPC-Web over TLS");
  });

  it("refuses a client that does not trust the certificate", async () => {
    const untrusting = createClient(StorageService, createConnectTransport({ baseUrl: t.server.url, httpVersion: "1.1" }));
    await expect(untrusting.createData({ ttlSeconds: 60n })).rejects.toThrow(/certificate/i);
  });
});
