import type { Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import type { Bus } from "../../src/bus.js";
import { ManualClock, type Clock } from "../../src/clock.js";
import { parseConfig, type Config } from "../../src/config.js";
import type { Dialect } from "../../src/store/database.js";
import { startServer, type RunningServer } from "../../src/server.js";
import { createTestDatabase } from "./databases.js";

/** TestServer is a real opengms server on port 0 with a database of its own, and clients for it. */
export interface TestServer {
  server: RunningServer;
  config: Config;
  clock: Clock;
  /** grpc is a gRPC (HTTP/2) transport, as backends use. */
  grpc: Transport;
  /** connect is a Connect JSON transport over HTTP/1.1, as browsers use. */
  connect: Transport;
  /** transport makes a transport sending an API key. */
  transport(kind: "grpc" | "connect", apiKey?: string): Transport;
  close(): Promise<void>;
}

/** TestServerOptions set the configuration (merged over a test default) and the clock. */
export interface TestServerOptions {
  config?: Record<string, unknown>;
  clock?: Clock;
  /** bus replaces the one the configuration would make (e.g. in-process, for a `bus.redis_url` that is only to be shown). */
  bus?: Bus;
}

/** startTestServer starts the real server on 127.0.0.1:0 over a fresh database of the dialect. */
export async function startTestServer(dialect: Dialect, options: TestServerOptions = {}): Promise<TestServer> {
  const db = await createTestDatabase(dialect);
  const raw = { ...options.config, server: { host: "127.0.0.1", port: 0, ...(options.config?.["server"] as object | undefined) } };
  const config = parseConfig(raw, "test configuration");
  const clock = options.clock ?? new ManualClock(Date.now());
  const log = pino({ level: process.env["GMS_TEST_LOG"] ?? "silent" });
  const server = await startServer({ config, db, log, clock, sweep: false, bus: options.bus });
  const transport = (kind: "grpc" | "connect", apiKey?: string) => {
    const interceptors = apiKey === undefined ? [] : [(next: (r: never) => unknown) => (req: { header: Headers }) => (req.header.set("authorization", `Bearer ${apiKey}`), next(req as never))];
    return kind === "grpc"
      ? createGrpcTransport({ baseUrl: server.url, interceptors: interceptors as never })
      : createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors: interceptors as never });
  };
  return {
    server,
    config,
    clock,
    grpc: transport("grpc"),
    connect: transport("connect"),
    transport,
    close: () => server.shutdown(),
  };
}
