// The metrics listener (server.metrics.listen, src/metrics-listener.ts): a real server with a second,
// plain-HTTP port that serves /metrics without a key and nothing else, scraped over real sockets
// while calls on the main port move the counters; the main port's /metrics still needs the admin
// role; the listener's caps and timeouts hold on loopback; a shutdown closes it, silent sockets and
// all. The listener touches no store: the server runs on SQLite only.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import type { Value } from "../gen/gms/v1/value_pb.js";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import { perPeer } from "../src/metrics-listener.js";
import { startServer, type RunningServer } from "../src/server.js";
import { connectOutcome, freePort, waitFor } from "./helpers/calls.js";
import { createTestDatabase } from "./helpers/databases.js";
import { captureLog } from "./helpers/log-capture.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const ADMIN = "metrics-admin-key-0123456789";
const BACKEND = "metrics-backend-key-0123456789";
const keys = {
  api_keys: [
    { name: "ops", key: ADMIN, roles: ["admin"] },
    { name: "crm", key: BACKEND, roles: ["backend"] },
  ],
  public_roles: ["app"],
};
const text = (t: string): Value => ({ $typeName: "gms.v1.Value", kind: { case: "text", value: t } });
const CREATE = { method: "gms.v1.StorageService/CreateData", protocol: "grpc", code: "ok" };

/** Reply is an HTTP answer read whole. */
interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** request makes one HTTP/1.1 request on a connection of its own (no pool: the caps count connections). */
function request(url: string, path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, url), { method: init.method ?? "GET", headers: init.headers, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(init.body);
  });
}

/** counter reads one series of a scrape (0 when the scrape has none yet). */
function counter(scrape: string, name: string, labels: Record<string, string>): number {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort();
  for (const line of scrape.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = (m[2] ?? "").split(",").sort();
    if (have.length === want.length && have.every((l, i) => l === want[i])) return Number(m[3]);
  }
  return 0;
}

/** silentSocket opens a TCP connection that sends nothing, and tells when the server closes it. */
async function silentSocket(url: string): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  socket.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return { socket, closed: new Promise((resolve) => socket.once("close", () => resolve())) };
}

describe("the metrics listener (server.metrics.listen)", () => {
  let t: TestServer | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it("serves /metrics without a key while the main port's /metrics still needs the admin role; its counters move with the main port's calls", async () => {
    t = await startTestServer("sqlite", { config: { auth: keys, server: { metrics: { listen: { port: 0 } } } } });
    const metricsUrl = t.server.metricsUrl;
    expect(metricsUrl).toBeDefined();
    if (metricsUrl === undefined) return;
    expect(new URL(metricsUrl).hostname).toBe("127.0.0.1");
    expect(new URL(metricsUrl).port).not.toBe(String(t.server.port));

    const before = await request(metricsUrl, "/metrics");
    expect(before.status).toBe(200);
    expect(before.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(before.body).toContain("opengms_rpc_calls_total");

    // A call on the main port, over gRPC, moves the counter the metrics port shows.
    const storage = createClient(StorageService, t.transport("grpc", BACKEND));
    await storage.createData({ ttlSeconds: 60n, entries: { a: text("1") } });
    await storage.createData({ ttlSeconds: 60n, entries: { a: text("2") } });
    const after = await request(metricsUrl, "/metrics");
    expect(after.status).toBe(200);
    expect(counter(after.body, "opengms_rpc_calls_total", CREATE) - counter(before.body, "opengms_rpc_calls_total", CREATE)).toBe(2);

    // A key, even a wrong one, changes nothing there: the port is the credential.
    expect((await request(metricsUrl, "/metrics", { headers: { authorization: "Bearer not-a-key-at-all-xyz" } })).status).toBe(200);
    expect((await request(metricsUrl, "/metrics", { method: "HEAD" })).status).toBe(200);

    // The main port's /metrics stays as it was: the admin role, else 401.
    const main = t.server.url;
    expect((await request(main, "/metrics")).status).toBe(401);
    expect((await request(main, "/metrics", { headers: { authorization: `Bearer ${BACKEND}` } })).status).toBe(401);
    const scraped = await request(main, "/metrics", { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(scraped.status).toBe(200);
    expect(counter(scraped.body, "opengms_rpc_calls_total", CREATE)).toBe(counter(after.body, "opengms_rpc_calls_total", CREATE));
  });

  it("serves nothing but GET and HEAD /metrics: no RPC, no GMS HTTP route, no other method", async () => {
    t = await startTestServer("sqlite", { config: { auth: keys, server: { metrics: { listen: { port: 0 } } } } });
    const metricsUrl = t.server.metricsUrl ?? "";
    const before = counter((await request(metricsUrl, "/metrics")).body, "opengms_rpc_calls_total", { ...CREATE, protocol: "connect" });
    const rpc = await request(metricsUrl, "/gms.v1.StorageService/CreateData", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${BACKEND}` },
      body: JSON.stringify({ ttlSeconds: "60", entries: { a: { text: "x" } } }),
    });
    expect(rpc.status).toBe(404);
    expect(rpc.body).toBe("not found: this listener serves GET /metrics only\n");
    expect((await request(metricsUrl, "/genesys/1/service/request-interaction", { method: "POST" })).status).toBe(404);
    expect((await request(metricsUrl, "/")).status).toBe(404);
    const post = await request(metricsUrl, "/metrics", { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers["allow"]).toBe("GET, HEAD");
    // The RPC was not called: nothing counted it.
    expect(counter((await request(metricsUrl, "/metrics")).body, "opengms_rpc_calls_total", { ...CREATE, protocol: "connect" })).toBe(before);
  });

  it("caps its connections on loopback too (a quarter of max_connections per peer), and cuts a connection that says nothing", async () => {
    const logs = captureLog("warn");
    const db = await createTestDatabase("sqlite");
    const config = parseConfig({ auth: keys, server: { host: "127.0.0.1", port: 0, first_bytes_timeout_seconds: 0.5, metrics: { listen: { port: 0, max_connections: 4 } } } }, "test");
    expect(perPeer(4)).toBe(1);
    const server = await startServer({ config, db, log: logs.log, clock: new ManualClock(Date.now()), sweep: false });
    try {
      const metricsUrl = server.metricsUrl ?? "";
      const held = await silentSocket(metricsUrl);
      // The peer's one connection is taken: the next is reset, unread.
      const refused = await request(metricsUrl, "/metrics").then(
        () => "answered",
        (e: NodeJS.ErrnoException) => e.code,
      );
      expect(refused).toBe("ECONNRESET");
      const warned = await waitFor("the cap's warning", () => logs.records().find((r) => r["cap"] === "server.metrics.listen.max_connections (a quarter per peer)"));
      expect(warned).toMatchObject({ limit: 1, peer: "127.0.0.1" });
      // Silent past first_bytes_timeout_seconds, the held connection is cut by the server; then a scrape gets in.
      await held.closed;
      expect((await request(metricsUrl, "/metrics")).status).toBe(200);
    } finally {
      await server.shutdown();
    }
  });

  it("closes with the server: a silent connection and an idle keep-alive one do not hold the shutdown, and the port is closed after", async () => {
    // Timeouts far longer than the test's: only the shutdown can end these connections.
    t = await startTestServer("sqlite", {
      config: { auth: keys, server: { first_bytes_timeout_seconds: 300, keep_alive_timeout_seconds: 300, shutdown_grace_seconds: 1, metrics: { listen: { port: 0 } } } },
    });
    const server: RunningServer = t.server;
    const metricsUrl = server.metricsUrl ?? "";
    const port = Number(new URL(metricsUrl).port);
    const silent = await silentSocket(metricsUrl);
    // A connection that has been answered and is kept alive, idle.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const idle = await new Promise<net.Socket>((resolve, reject) => {
      const req = http.get(new URL("/metrics", metricsUrl), { agent }, (res) => {
        const socket = res.socket;
        res.resume();
        res.on("end", () => resolve(socket));
      });
      req.on("error", reject);
    });
    const idleClosed = new Promise<void>((resolve) => idle.once("close", () => resolve()));
    await t.close();
    t = undefined;
    await Promise.all([silent.closed, idleClosed]);
    agent.destroy();
    expect(await connectOutcome(port)).toBe("ECONNREFUSED");
    expect(await connectOutcome(server.port)).toBe("ECONNREFUSED");
  });

  it("is not started without the setting", async () => {
    t = await startTestServer("sqlite", { config: { auth: keys } });
    expect(t.server.metricsUrl).toBeUndefined();
  });

  it("refuses to start on a port already taken, and leaves the main port closed", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as net.AddressInfo).port;
    const mainPort = await freePort();
    const db = await createTestDatabase("sqlite");
    try {
      const config = parseConfig({ auth: keys, server: { host: "127.0.0.1", port: mainPort, metrics: { listen: { port } } } }, "test");
      await expect(startServer({ config, db, log: pino({ level: "silent" }), clock: new ManualClock(Date.now()), sweep: false })).rejects.toMatchObject({ code: "EADDRINUSE" });
      expect(await connectOutcome(mainPort)).toBe("ECONNREFUSED");
    } finally {
      await db.close();
      await new Promise<void>((resolve) => taken.close(() => resolve()));
    }
  });
});

describe("the README's metrics port", () => {
  const readme = readFileSync(join(import.meta.dirname, "..", "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("**A metrics port of its own.**"));
  const yaml = /```yaml\n([\s\S]*?)```/.exec(section)?.[1] ?? "";
  const curl = /```sh\n([\s\S]*?)```/.exec(section)?.[1]?.trim() ?? "";

  it("configures a valid listener on loopback, and its curl line shows the calls counted", async () => {
    const listen = parseConfig(parseYaml(yaml), "README").server.metrics.listen;
    expect(listen).toEqual({ host: "127.0.0.1", port: 9464, max_connections: 64 });
    // Port 0 in place of 9464, which another process of this machine may hold; the rest as written.
    const t = await startTestServer("sqlite", { config: { server: { metrics: { listen: { ...listen, port: 0 } } } } });
    try {
      await createClient(StorageService, t.grpc).createData({ ttlSeconds: 60n, entries: { a: text("1") } });
      expect(curl).toContain("http://127.0.0.1:9464/metrics");
      const { stdout } = await promisify(execFile)("bash", ["-c", curl.replace("http://127.0.0.1:9464", t.server.metricsUrl ?? "")]);
      expect(stdout).toContain('opengms_rpc_calls_total{method="gms.v1.StorageService/CreateData",protocol="grpc",code="ok"} 1');
    } finally {
      await t.close();
    }
  });
});
