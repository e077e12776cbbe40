// The pages' route (src/http/web.ts) on the real server over real sockets, serving a folder laid out
// as Vite builds it (server.web.dir): content types, caching of hashed assets and revalidation of
// the rest, gzip, HEAD, the methods refused, paths outside the site (dots, escapes, links) never
// served, a rebuild seen without a restart, an unbuilt page said to be so, the CSP of each page,
// and the switch that turns the pages off, at start and by a reload of the configuration.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { ManualClock } from "../src/clock.js";
import { loadConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { createTestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/** Raw is an answer as it came over the socket. */
interface Raw {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** raw sends a request with its path exactly as given (fetch would resolve the dots first). */
function raw(url: string, path: string, options: { method?: string; headers?: Record<string, string> } = {}): Promise<Raw> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, path, method: options.method ?? "GET", headers: options.headers ?? {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

const CHAT_HTML = `<!doctype html><html><head><script type="module" src="./assets/chat-abc123.js"></script></head><body>chat</body></html>`;
const SCRIPT = `console.log(${JSON.stringify("x".repeat(4_000))});`;

describe("the pages' route", () => {
  let dir: string;
  let outside: string;
  let s: TestServer;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "opengms-web-"));
    outside = mkdtempSync(join(tmpdir(), "opengms-outside-"));
    writeFileSync(join(outside, "secret.txt"), "not for the web\n");
    mkdirSync(join(dir, "chat", "assets"), { recursive: true });
    writeFileSync(join(dir, "chat", "index.html"), CHAT_HTML);
    writeFileSync(join(dir, "chat", "assets", "chat-abc123.js"), SCRIPT);
    writeFileSync(join(dir, "chat", "assets", "chat-abc123.css"), "body{color:red}");
    writeFileSync(join(dir, "chat", "embed.js"), "/* the loader */");
    writeFileSync(join(dir, "chat", "notes.bak"), "a file of no served type");
    symlinkSync(join(outside, "secret.txt"), join(dir, "chat", "linked.txt"));
    writeFileSync(join(dir, "secret.txt"), "beside the pages, not in one\n");
    // No agent/ yet: the console is "not built".
    s = await startTestServer("sqlite", { config: { server: { web: { dir, frame_ancestors: ["https://shop.example.com", "'self'"] } } } });
  });

  afterAll(async () => {
    await s?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  it("serves a page's index at /chat/, revalidated (no-cache, ETag), with its CSP", async () => {
    const r = await raw(s.server.url, "/chat/");
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(r.body.toString()).toBe(CHAT_HTML);
    expect(r.headers["cache-control"]).toBe("no-cache");
    expect(r.headers["x-content-type-options"]).toBe("nosniff");
    expect(r.headers["content-security-policy"]).toContain("default-src 'self'");
    expect(r.headers["content-security-policy"]).toContain("frame-ancestors https://shop.example.com 'self'");
    const again = await raw(s.server.url, "/chat/", { headers: { "if-none-match": r.headers.etag! } });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    expect((await raw(s.server.url, "/chat/index.html")).body.toString()).toBe(CHAT_HTML);
  });

  it("redirects /chat to /chat/ (relative, keeping the query)", async () => {
    const r = await raw(s.server.url, "/chat?service=support");
    expect(r.status).toBe(301);
    expect(r.headers.location).toBe("chat/?service=support");
  });

  it("caches hashed assets for a year and gzips them for clients that take gzip", async () => {
    const plain = await raw(s.server.url, "/chat/assets/chat-abc123.js");
    expect(plain.status).toBe(200);
    expect(plain.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(plain.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(plain.headers["content-encoding"]).toBeUndefined();
    expect(plain.body.toString()).toBe(SCRIPT);
    expect(plain.headers["content-security-policy"]).toBeUndefined();
    const packed = await raw(s.server.url, "/chat/assets/chat-abc123.js", { headers: { "accept-encoding": "br, gzip" } });
    expect(packed.headers["content-encoding"]).toBe("gzip");
    expect(packed.headers["vary"]).toBe("Accept-Encoding");
    expect(packed.headers.etag).not.toBe(plain.headers.etag);
    expect(Number(packed.headers["content-length"])).toBe(packed.body.length);
    expect(packed.body.length).toBeLessThan(plain.body.length);
    expect(gunzipSync(packed.body).toString()).toBe(SCRIPT);
    const refused = await raw(s.server.url, "/chat/assets/chat-abc123.js", { headers: { "accept-encoding": "gzip;q=0" } });
    expect(refused.headers["content-encoding"]).toBeUndefined();
    expect((await raw(s.server.url, "/chat/assets/chat-abc123.css")).headers["content-type"]).toBe("text/css; charset=utf-8");
    expect((await raw(s.server.url, "/chat/embed.js")).headers["cache-control"]).toBe("no-cache");
  });

  it("answers HEAD with the headers and no body; refuses other methods with 405", async () => {
    const head = await raw(s.server.url, "/chat/assets/chat-abc123.js", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-length"]).toBe(String(SCRIPT.length));
    expect(head.body.length).toBe(0);
    for (const method of ["POST", "PUT", "DELETE", "PATCH"]) {
      const r = await raw(s.server.url, "/chat/", { method });
      expect(r.status).toBe(405);
      expect(r.headers["allow"]).toBe("GET, HEAD");
    }
  });

  it("serves nothing outside the built pages: dots, escapes, backslashes, links, other types, unknown files", async () => {
    const attempts = [
      "/chat/../secret.txt",
      "/chat/%2e%2e/secret.txt",
      "/chat/..%2fsecret.txt",
      "/chat/%2e%2e%2f%2e%2e%2fpackage.json",
      "/chat/..\\secret.txt",
      "/chat/%5c..%5csecret.txt",
      "/chat//etc/passwd",
      "/chat/%00",
      "/chat/linked.txt",
      "/chat/notes.bak",
      "/chat/missing.js",
      "/chat/assets/",
      "/agent/../chat/index.html",
    ];
    for (const path of attempts) {
      const r = await raw(s.server.url, path);
      expect({ path, status: r.status }).toEqual({ path, status: 404 });
      expect(r.body.toString()).not.toContain("not for the web");
      expect(r.body.toString()).not.toContain("beside the pages");
    }
    expect((await raw(s.server.url, "/chat/%E0%A4%A")).status).toBe(400);
  });

  it("says a page is not built (503) until it is, then serves it without a restart, with the console's CSP (no framing)", async () => {
    const before = await raw(s.server.url, "/agent/");
    expect(before.status).toBe(503);
    expect(before.body.toString()).toContain("npm run build");
    mkdirSync(join(dir, "agent"), { recursive: true });
    writeFileSync(join(dir, "agent", "index.html"), "<!doctype html><title>console</title>");
    const after = await raw(s.server.url, "/agent/");
    expect(after.status).toBe(200);
    expect(after.body.toString()).toContain("console");
    expect(after.headers["content-security-policy"]).toContain("frame-ancestors 'none'");
    // A rebuild: the index changes (and its time); the next load of the page sees it.
    writeFileSync(join(dir, "agent", "index.html"), "<!doctype html><title>console 2</title>");
    utimesSync(join(dir, "agent", "index.html"), new Date(), new Date(Date.now() + 5_000));
    expect((await raw(s.server.url, "/agent/")).body.toString()).toContain("console 2");
  });

  it("leaves other paths to the other routes and the RPCs", async () => {
    expect((await raw(s.server.url, "/chatter")).status).toBe(404);
    const health = await fetch(`${s.server.url}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(health.status).toBe(200);
  });
});

describe("server.web.enabled false", () => {
  it("does not serve the pages", async () => {
    const dir = mkdtempSync(join(tmpdir(), "opengms-web-"));
    mkdirSync(join(dir, "chat"));
    writeFileSync(join(dir, "chat", "index.html"), CHAT_HTML);
    const s = await startTestServer("sqlite", { config: { server: { web: { enabled: false, dir } } } });
    try {
      const r = await raw(s.server.url, "/chat/");
      expect(r.status).toBe(404);
      expect(r.body.toString()).not.toContain("chat");
    } finally {
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses a frame ancestor that is not a CSP source", async () => {
    const { parseConfig } = await import("../src/config.js");
    expect(() => parseConfig({ server: { web: { frame_ancestors: ["https://a.example; script-src *"] } } }, "test")).toThrow(/frame_ancestors/);
    expect(() => parseConfig({ server: { web: { frame_ancestors: ["https://*.example.com:443", "'self'", "*"] } } }, "test")).not.toThrow();
  });
});

describe("server.web on a reload of the configuration", () => {
  it("turns the pages off and on, and changes who may frame the widget, without a restart", async () => {
    const dir = mkdtempSync(join(tmpdir(), "opengms-web-"));
    mkdirSync(join(dir, "site", "chat"), { recursive: true });
    writeFileSync(join(dir, "site", "chat", "index.html"), CHAT_HTML);
    const file = join(dir, "gms.yaml");
    const write = (web: Record<string, unknown>) => writeFileSync(file, toYaml({ server: { host: "127.0.0.1", port: 0, web: { dir: join(dir, "site"), ...web } }, log: { level: "silent" } }));
    write({});
    const load = () => loadConfig({ path: file, env: {} });
    const server = await startServer({ config: load(), db: await createTestDatabase("sqlite"), log: pino({ level: "silent" }), clock: new ManualClock(Date.now()), sweep: false, load });
    try {
      expect((await raw(server.url, "/chat/")).headers["content-security-policy"]).toContain("frame-ancestors *");
      write({ enabled: false });
      expect((await server.reload()).restartRequired).toEqual([]);
      expect((await raw(server.url, "/chat/")).status).toBe(404);
      write({ frame_ancestors: ["https://shop.example.com"] });
      await server.reload();
      const r = await raw(server.url, "/chat/");
      expect(r.status).toBe(200);
      expect(r.headers["content-security-policy"]).toMatch(/frame-ancestors https:\/\/shop\.example\.com$/);
    } finally {
      await server.shutdown();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
