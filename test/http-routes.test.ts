// Plain HTTP routes (src/http/routes.ts) call the served RPCs in process through the serving
// policy: the caller's credentials are checked by the same authorizer, an added policy sees the
// call, validation refuses bad requests, and errors come back as ConnectErrors the route maps. A
// real server on port 0, real sockets, a route defined by the test.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import { createHealthMonitor, type HealthMonitor } from "../src/health.js";
import { pathOf, type HttpRouteFactory } from "../src/http/routes.js";
import { listen, type Listener } from "../src/listen.js";
import { createCallTracker } from "../src/rpc/observe.js";
import { createApp, createHandler } from "../src/server.js";
import { createTestDatabase, type TestDatabase } from "./helpers/databases.js";

const KEY = "backend-key-0123456789";

/** echoRoute stores the query's `v` under key `v` through StorageService, as the caller. */
const echoRoute: HttpRouteFactory = ({ local }) => {
  const storage = createClient(StorageService, local);
  return (req, res) => {
    if (pathOf(req) !== "/test/store") return false;
    const v = new URL(req.url ?? "/", "http://x").searchParams.get("v") ?? "";
    const headers: Record<string, string> = {};
    if (typeof req.headers.authorization === "string") headers["authorization"] = req.headers.authorization;
    storage
      .createData({ entries: { v: { kind: { case: "text", value: v } } }, ttlSeconds: 60n }, { headers })
      .then(
        (r) => {
          res.statusCode = 200;
          res.end(r.dataId);
        },
        (e: unknown) => {
          const err = ConnectError.from(e);
          res.statusCode = err.code === Code.Unauthenticated ? 401 : err.code === Code.InvalidArgument ? 400 : 500;
          res.end(Code[err.code]);
        },
      );
    return true;
  };
};

describe("plain HTTP routes", () => {
  let db: TestDatabase;
  let listener: Listener;
  let health: HealthMonitor;
  let url: string;
  const seen: string[] = [];
  const probe: Interceptor = (next) => (req) => {
    seen.push(req.method.name);
    return next(req);
  };
  const shutdown = new AbortController();

  beforeAll(async () => {
    db = await createTestDatabase("sqlite");
    const config = parseConfig({ server: { host: "127.0.0.1", port: 0 }, auth: { public_roles: [], api_keys: [{ name: "backend", key: KEY, roles: ["backend"] }] } }, "test");
    const log = pino({ level: "silent" });
    const app = createApp({ config, db, log, clock: new ManualClock(Date.now()) });
    health = createHealthMonitor(db, log);
    listener = await listen(createHandler(app, { health, tracker: createCallTracker(), shutdown: shutdown.signal, policies: [probe], httpRoutes: [echoRoute] }), { host: "127.0.0.1", port: 0 });
    url = `http://127.0.0.1:${listener.port}`;
  });
  afterAll(async () => {
    shutdown.abort();
    health.stop();
    await listener.stopAccepting();
    await listener.closeConnections(100);
    await db.close();
  });

  it("runs the call through the serving policy as the HTTP caller", async () => {
    const refused = await fetch(`${url}/test/store?v=hi`);
    expect(refused.status).toBe(401);
    expect(await refused.text()).toBe("Unauthenticated");
    const ok = await fetch(`${url}/test/store?v=hi`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(ok.status).toBe(200);
    const dataId = await ok.text();
    expect(seen).toEqual(["CreateData"]); // auth refused the first before the added policies
    const got = await createClient(StorageService, (await import("@connectrpc/connect-node")).createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors: [(next) => (r) => (r.header.set("authorization", `Bearer ${KEY}`), next(r))] })).getData({ dataId });
    expect(got.entries["v"]?.kind.value).toBe("hi");
  });

  it("leaves requests it does not claim to the RPC paths", async () => {
    const r = await fetch(`${url}/gms.v1.StorageService/GetData`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"dataId":"x"}' });
    expect(r.status).toBe(401);
    expect(await r.json()).toMatchObject({ code: "unauthenticated" });
  });
});
