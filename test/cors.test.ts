// Browsers and CORS: an allowed origin gets its preflight and headers; any other cross-origin
// request is logged with its origin and its preflight refused 403 (not an empty 405); a page on the
// server's own origin and clients without an Origin pass untouched. CometD's path, which the CometD
// JavaScript client calls with credentials, alone allows them, to an echoed origin, never to `*`.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { createTestDatabase } from "./helpers/databases.js";
import { captureLog } from "./helpers/log-capture.js";

/** startLogged starts the real server on SQLite with its log lines kept for the test (lines()). */
async function startLogged(corsOrigins: string[]): Promise<{ server: RunningServer; lines: () => Record<string, unknown>[] }> {
  const capture = captureLog("info");
  const config = parseConfig({ server: { host: "127.0.0.1", port: 0, cors_origins: corsOrigins } });
  const server = await startServer({ config, db: await createTestDatabase("sqlite"), log: capture.log, sweep: false });
  return { server, lines: () => capture.records() };
}

const preflight = (url: string, origin: string) =>
  fetch(`${url}/gms.v1.StorageService/CreateData`, { method: "OPTIONS", headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" } });

/** cometdPreflight is the preflight a browser sends before the CometD client's JSON POST. */
const cometdPreflight = (url: string, origin: string) =>
  fetch(`${url}/genesys/cometd/handshake`, { method: "OPTIONS", headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" } });

/** handshake is the CometD client's first request, as a browser sends it cross-origin. */
const handshake = (url: string, origin: string) =>
  fetch(`${url}/genesys/cometd/handshake`, {
    method: "POST",
    headers: { origin, "content-type": "application/json;charset=UTF-8" },
    body: JSON.stringify([{ channel: "/meta/handshake", version: "1.0", supportedConnectionTypes: ["long-polling"] }]),
  });

describe("CORS with server.cors_origins", () => {
  let s: Awaited<ReturnType<typeof startLogged>>;
  beforeAll(async () => {
    s = await startLogged(["http://allowed.example"]);
  });
  afterAll(() => s.server.shutdown());

  it("answers an allowed origin's preflight and decorates its responses", async () => {
    const r = await preflight(s.server.url, "http://allowed.example");
    expect(r.status).toBe(204);
    expect(r.headers.get("access-control-allow-origin")).toBe("http://allowed.example");
    const post = await fetch(`${s.server.url}/gms.v1.StorageService/CreateData`, { method: "POST", headers: { origin: "http://allowed.example", "content-type": "application/json" }, body: "{}" });
    expect(post.status).toBe(200);
    expect(post.headers.get("access-control-allow-origin")).toBe("http://allowed.example");
  });

  it("allows credentials on CometD's path only, preflight and response, for an allowed origin", async () => {
    const origin = "http://allowed.example";
    const r = await cometdPreflight(s.server.url, origin);
    expect(r.status).toBe(204);
    expect(r.headers.get("access-control-allow-origin")).toBe(origin);
    expect(r.headers.get("access-control-allow-credentials")).toBe("true");
    expect(r.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("content-type");
    const hs = await handshake(s.server.url, origin);
    expect(hs.status).toBe(200);
    expect(((await hs.json()) as { successful: boolean }[])[0]?.successful).toBe(true);
    expect(hs.headers.get("access-control-allow-origin")).toBe(origin);
    expect(hs.headers.get("access-control-allow-credentials")).toBe("true");
    // The RPC paths take credentials in a header: no allowance there.
    const rpc = await preflight(s.server.url, origin);
    expect(rpc.headers.get("access-control-allow-credentials")).toBeNull();
    const post = await fetch(`${s.server.url}/gms.v1.StorageService/CreateData`, { method: "POST", headers: { origin, "content-type": "application/json" }, body: "{}" });
    expect(post.headers.get("access-control-allow-credentials")).toBeNull();
    // A path that only starts like CometD's is not CometD's.
    const lookalike = await fetch(`${s.server.url}/genesys/cometdx`, { method: "OPTIONS", headers: { origin, "access-control-request-method": "POST" } });
    expect(lookalike.headers.get("access-control-allow-credentials")).toBeNull();
  });

  it("refuses another origin's preflight with 403 and logs the origin once a minute", async () => {
    for (let i = 0; i < 3; i++) {
      const r = await preflight(s.server.url, "http://evil.example");
      expect(r.status).toBe(403);
      expect(r.headers.get("access-control-allow-origin")).toBeNull();
    }
    const logged = s.lines().filter((l) => l["event"] === "cors");
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 40, origin: "http://evil.example", method: "OPTIONS", path: "/gms.v1.StorageService/CreateData" });
    expect(String(logged[0]?.["msg"])).toMatch(/server\.cors_origins/);
  });

  it("lets a page on the server's own origin, and a client without an Origin, through untouched", async () => {
    const own = await fetch(`${s.server.url}/gms.v1.StorageService/CreateData`, { method: "POST", headers: { origin: s.server.url, "content-type": "application/json" }, body: "{}" });
    expect(own.status).toBe(200);
    const plain = await fetch(`${s.server.url}/gms.v1.StorageService/CreateData`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(plain.status).toBe(200);
    expect(s.lines().filter((l) => l["event"] === "cors" && l["origin"] === s.server.url)).toEqual([]);
  });
});

describe("CORS with server.cors_origins [*]", () => {
  let s: Awaited<ReturnType<typeof startLogged>>;
  beforeAll(async () => {
    s = await startLogged(["*"]);
  });
  afterAll(() => s.server.shutdown());

  it("echoes the request's origin, never `*`, where CometD allows credentials", async () => {
    const origin = "http://anywhere.example";
    const r = await cometdPreflight(s.server.url, origin);
    expect(r.status).toBe(204);
    expect(r.headers.get("access-control-allow-origin")).toBe(origin);
    expect(r.headers.get("access-control-allow-credentials")).toBe("true");
    const hs = await handshake(s.server.url, origin);
    expect(hs.status).toBe(200);
    expect(hs.headers.get("access-control-allow-origin")).toBe(origin);
    expect(hs.headers.get("access-control-allow-credentials")).toBe("true");
  });
});

describe("CORS without server.cors_origins", () => {
  let s: Awaited<ReturnType<typeof startLogged>>;
  beforeAll(async () => {
    s = await startLogged([]);
  });
  afterAll(() => s.server.shutdown());

  it("refuses a cross-origin preflight with 403 and says in the log that no origin is allowed", async () => {
    const r = await preflight(s.server.url, "http://localhost:3000");
    expect(r.status).toBe(403);
    expect(s.lines().find((l) => l["event"] === "cors")).toMatchObject({ origin: "http://localhost:3000", msg: expect.stringMatching(/empty/) as unknown });
  });

  it("refuses CometD's preflight too, without allowing credentials", async () => {
    const r = await cometdPreflight(s.server.url, "http://localhost:3000");
    expect(r.status).toBe(403);
    expect(r.headers.get("access-control-allow-origin")).toBeNull();
    expect(r.headers.get("access-control-allow-credentials")).toBeNull();
  });
});
