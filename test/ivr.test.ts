// The IVR's matching endpoint (src/http/ivr.ts) on a real server over real sockets, SQLite and
// MariaDB: the one-line answers, retries by call id that answer the same and release or count
// nothing again, the code-guessing lockout as `locked`, and hostile requests answered with an
// `error` line and a 4xx that change nothing. test/ivr-sip.test.ts drives it from Kamailio and SIPp.
import * as http2 from "node:http2";
import { connect } from "node:net";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import type { ManualClock } from "../src/clock.js";
import { IVR_MATCH_PATH } from "../src/http/ivr.js";
import { databaseOptions, parseConfig } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { openDatabase } from "../src/store/database.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { bearer, waitFor } from "./helpers/calls.js";
import { DIALECTS, MYSQL_URL, createTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { captureLog } from "./helpers/log-capture.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";

const IVR_KEY = "ivr-key-0123456789abcdef";
const APP_KEY = "app-key-0123456789abcdef";
const SOLO = "+18005550300";
const SHARED = "+18005550200";
const CALLER = "+16505550001";

/** Answer is what the endpoint said: status, body, headers. */
interface Answer {
  status: number;
  body: string;
  headers: Headers;
}

describe.each(DIALECTS)("IVR matching over plain HTTP on %s", (dialect) => {
  let ts: TestServer;
  let app: Client<typeof AccessService>;

  /** ivr asks the endpoint with the query (GET) or the form (POST), as the IVR key unless told otherwise. */
  async function ivr(params: Record<string, string>, init: { method?: string; key?: string | null; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
    const method = init.method ?? "GET";
    const form = new URLSearchParams(params).toString();
    const headers: Record<string, string> = { ...init.headers };
    if (init.key !== null) headers["authorization"] = `Bearer ${init.key ?? IVR_KEY}`;
    let url = `${ts.server.url}${IVR_MATCH_PATH}`;
    let body: string | undefined = init.body;
    if (method === "POST" && body === undefined) {
      body = form;
      headers["content-type"] ??= "application/x-www-form-urlencoded";
    } else if (form !== "") {
      url += `?${form}`;
    }
    const r = await fetch(url, { method, headers, body });
    return { status: r.status, body: await r.text(), headers: r.headers };
  }

  /** reserve has the app reserve a number of the group for the caller, optionally with a code. */
  async function reserve(group: string, provideCode = false) {
    const r = await app.requestInteraction({ phoneNumber: CALLER, resourceGroup: group, provideCode, ttlSeconds: 3600n, appData: { order: { kind: { case: "text", value: "42" } } } });
    return { sessionId: r.session!.id, dataId: r.session!.dataId, number: r.access!.accessNumber, code: r.access!.accessCode };
  }

  beforeAll(async () => {
    ts = await startTestServer(dialect, {
      config: {
        auth: {
          public_roles: [],
          api_keys: [
            { name: "ivr-1", key: IVR_KEY, roles: ["ivr"] },
            { name: "app-1", key: APP_KEY, roles: ["app"] },
          ],
        },
        resources: {
          solo: { numbers: [SOLO], locking: true },
          shared: { numbers: [SHARED], locking: false, access_code_length: 4 },
        },
        access: { booking_expiration_timeout: 3600, code_attempts: { max_failures: 3, window_seconds: 60 } },
        services: { "ivr-match": { service: "match-interaction" } },
      },
    });
    app = createClient(AccessService, ts.transport("connect", APP_KEY));
  });
  afterAll(async () => {
    await ts.close();
  });

  it("answers matched with the session and data ids, then no_match: the number was released", async () => {
    const r = await reserve("solo");
    const got = await ivr({ access_number: r.number, phone_number: CALLER });
    expect(got).toMatchObject({ status: 200, body: `matched ${r.sessionId} ${r.dataId}\n` });
    expect(got.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    expect(got.headers.get("x-request-id")).toMatch(/\S/);
    expect(await ivr({ access_number: r.number, phone_number: CALLER })).toMatchObject({ status: 200, body: "no_match no_reservation\n" });
    // Free again: the app reserves the same number of the one-number locking group.
    expect((await reserve("solo")).number).toBe(SOLO);
    expect((await ivr({ access_number: SOLO }, { method: "POST" })).body).toMatch(/^matched /);
  });

  it("reads a form body with a code, and a configured service; says why nothing matched", async () => {
    const r = await reserve("shared", true);
    expect(r.code).toMatch(/^\d{4}$/);
    expect((await ivr({ access_number: r.number, phone_number: "+16505559999", access_code: r.code }, { method: "POST" })).body).toBe("no_match phone_mismatch\n");
    const got = await ivr({ access_number: r.number, phone_number: CALLER, access_code: r.code, service: "ivr-match" }, { method: "POST" });
    expect(got.body).toBe(`matched ${r.sessionId} ${r.dataId}\n`);
  });

  it("answers a retry with the same call id as the first time, releasing nothing again", async () => {
    const first = await reserve("solo");
    const a = await ivr({ access_number: SOLO, phone_number: CALLER, call_id: "call-1@ivr" });
    expect(a.body).toBe(`matched ${first.sessionId} ${first.dataId}\n`);
    // The number, free again, goes to a second session; the retry still gets the first answer and
    // leaves the second reservation alone.
    const second = await reserve("solo");
    expect(second.number).toBe(SOLO);
    for (let i = 0; i < 3; i++) expect((await ivr({ access_number: SOLO, phone_number: CALLER, call_id: "call-1@ivr" }, { method: i % 2 === 0 ? "POST" : "GET" })).body).toBe(a.body);
    expect((await ivr({ access_number: SOLO, phone_number: CALLER, call_id: "call-2@ivr" })).body).toBe(`matched ${second.sessionId} ${second.dataId}\n`);
    // The same call id for a different call is a mistake the IVR is told of.
    const reused = await ivr({ access_number: SOLO, phone_number: "+16505550002", call_id: "call-1@ivr" });
    expect(reused.status).toBe(409);
    expect(reused.body).toMatch(/^error already_exists .*call|^error already_exists /);
  });

  it("answers concurrent retries of one call alike, matching once", async () => {
    // Two sessions of the caller on the shared number: a call matches the most recent.
    const older = await reserve("shared");
    const newer = await reserve("shared");
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => ivr({ access_number: SHARED, phone_number: CALLER, call_id: "racing-call-0001" }, { method: i % 2 === 0 ? "GET" : "POST" })));
    expect(new Set(answers.map((a) => a.body))).toEqual(new Set([`matched ${newer.sessionId} ${newer.dataId}\n`]));
    // The retries consumed nothing more: the next call gets the older session.
    expect((await ivr({ access_number: SHARED, phone_number: CALLER, call_id: "racing-call-0002" })).body).toBe(`matched ${older.sessionId} ${older.dataId}\n`);
  });

  it("counts a wrong code once per call id, and shows the lockout as locked", async () => {
    const clock = ts.clock as ManualClock;
    // Past the window of the failure an earlier test counted on the number (a phone mismatch with a code).
    clock.advance(61_000);
    const r = await reserve("shared", true);
    const wrong = r.code === "0000" ? "1111" : "0000";
    const guess = (callId: string, code = wrong) => ivr({ access_number: r.number, access_code: code, call_id: callId });
    // A call's retries are one failure, not five.
    for (let i = 0; i < 5; i++) expect((await guess("guess-1")).body).toBe("no_match code_mismatch\n");
    expect((await guess("guess-2")).body).toBe("no_match code_mismatch\n");
    expect((await guess("guess-3")).body).toBe("no_match code_mismatch\n");
    const locked = await guess("guess-4");
    expect(locked.status).toBe(200);
    expect(locked.body).toMatch(/^locked [1-9]\d*\n$/);
    expect(locked.headers.get("retry-after")).toBe(locked.body.trim().split(" ")[1]);
    // Locked even for the right code; once the window has passed the right code matches.
    expect((await guess("right-1", r.code)).body).toMatch(/^locked /);
    clock.advance(61_000);
    expect((await guess("guess-4")).body).toMatch(/^locked /); // a retry keeps its first answer
    expect((await guess("right-2", r.code)).body).toBe(`matched ${r.sessionId} ${r.dataId}\n`);
  });

  it("answers over HTTP/2 as over HTTP/1.1", async () => {
    const r = await reserve("solo");
    const session = http2.connect(ts.server.url);
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const req = session.request({ ":method": "GET", ":path": `${IVR_MATCH_PATH}?${new URLSearchParams({ access_number: SOLO }).toString()}`, authorization: `Bearer ${IVR_KEY}` });
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
        req.on("error", reject);
        req.end();
      });
      expect(body).toBe(`matched ${r.sessionId} ${r.dataId}\n`);
    } finally {
      session.close();
    }
  });

  it("reads a form body sent without a Content-Type, as Asterisk's CURL() sends one with a header set", async () => {
    const r = await reserve("solo");
    const got = await fetch(`${ts.server.url}${IVR_MATCH_PATH}`, { method: "POST", headers: { authorization: `Bearer ${IVR_KEY}` }, body: new Blob([`access_number=${encodeURIComponent(SOLO)}`]) });
    expect(await got.text()).toBe(`matched ${r.sessionId} ${r.dataId}\n`);
  });

  it("answers a body that does not come with an error line within its deadline", async () => {
    const url = new URL(ts.server.url);
    const socket = connect(Number(url.port), url.hostname);
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    const closed = new Promise((resolve) => socket.once("close", resolve));
    socket.write(`POST ${IVR_MATCH_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${IVR_KEY}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\naccess_number=`);
    await closed;
    const text = Buffer.concat(chunks).toString("utf8");
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(text).toMatch(/\r\n\r\nerror deadline_exceeded the body did not arrive in time\n$/);
  });

  it("answers hostile requests with one error line and a 4xx, and changes nothing", async () => {
    const r = await reserve("solo");
    const cases: [Promise<Answer>, number, string][] = [
      [ivr({}), 400, "invalid_argument"],
      [ivr({ access_number: "abc" }), 400, "invalid_argument"],
      [ivr({ access_number: SOLO, phone_number: "1\r\nX-Injected: 1" }), 400, "invalid_argument"],
      [ivr({ access_number: SOLO, access_code: "12ab" }), 400, "invalid_argument"],
      [ivr({ access_number: SOLO, call_id: "x".repeat(129) }), 400, "invalid_argument"],
      [ivr({ access_number: SOLO, call_id: "with space" }), 400, "invalid_argument"],
      [ivr({ access_number: SOLO, _access_number: SOLO }), 400, "invalid_argument"],
      [ivr({ access_number: SOLO, ["__proto__"]: "x" }), 400, "invalid_argument"],
      [ivr({}, { body: `access_number=${SOLO}&access_number=${SOLO}`, method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" } }), 400, "invalid_argument"],
      [ivr({ access_number: SOLO }, { method: "POST", body: JSON.stringify({ access_number: SOLO }), headers: { "content-type": "application/json" } }), 415, "invalid_argument"],
      [ivr({}, { method: "POST", body: `access_number=${SOLO}&x=${"9".repeat(5000)}`, headers: { "content-type": "application/x-www-form-urlencoded" } }), 413, "invalid_argument"],
      [ivr({ access_number: SOLO }, { method: "PUT", body: "" }), 405, "invalid_argument"],
      [ivr({ access_number: SOLO }, { method: "DELETE" }), 405, "invalid_argument"],
      [ivr({ access_number: SOLO, service: "nope" }), 404, "not_found"],
      [ivr({ access_number: SOLO }, { key: null }), 401, "unauthenticated"],
      [ivr({ access_number: SOLO }, { key: "not-a-key" }), 401, "unauthenticated"],
      [ivr({ access_number: SOLO }, { key: APP_KEY }), 403, "permission_denied"],
      [ivr({}, { method: "POST", body: "access_number=%ZZ%E0%80", headers: { "content-type": "application/x-www-form-urlencoded" } }), 400, "invalid_argument"],
    ];
    for (const [call, status, code] of cases) {
      const got = await call;
      expect({ status: got.status, first: got.body.split(" ")[0], code: got.body.split(" ")[1] }).toEqual({ status, first: "error", code });
      // One line, no stack, no echo of a line break.
      expect(got.body.indexOf("\n")).toBe(got.body.length - 1);
      expect(got.body).not.toMatch(/\.ts:\d|\bat [\w.]+ \(/);
    }
    // None of them matched or counted anything: the reservation is still there.
    expect((await ivr({ access_number: SOLO, phone_number: CALLER })).body).toBe(`matched ${r.sessionId} ${r.dataId}\n`);
  });
});

describe.runIf(DIALECTS.includes("mysql"))("IVR matching while MariaDB stops answering (black-holed, TCP up)", () => {
  let testDb: TestDatabase;
  let proxy: TcpProxy;
  let server: RunningServer;
  const logs = captureLog("info");

  beforeAll(async () => {
    testDb = await createTestDatabase("mysql");
    const target = new URL(MYSQL_URL);
    proxy = new TcpProxy(target.hostname, Number(target.port || 3306));
    await proxy.start();
    const proxied = new URL(testDb.url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    // The database's own timeouts are far beyond the endpoint's deadline: what answers is the deadline.
    const config = parseConfig({
      server: { host: "127.0.0.1", port: 0 },
      database: { url: proxied.toString(), query_timeout_seconds: 30, acquire_timeout_seconds: 30 },
      auth: { public_roles: [], api_keys: [{ name: "ivr-1", key: IVR_KEY, roles: ["ivr"] }, { name: "app-1", key: APP_KEY, roles: ["app"] }] },
      resources: { solo: { numbers: [SOLO], locking: true } },
    });
    const log = logs.log;
    const db = await openDatabase(config.database.url, { ...databaseOptions(config), log });
    server = await startServer({ config, db, log, sweep: false });
  });
  afterAll(async () => {
    proxy?.restore();
    await server?.shutdown();
    await proxy?.close();
    await testDb?.close();
  });

  it("logs every request, refused or called, without keys or values", async () => {
    const ask = (params: Record<string, string>) =>
      fetch(`${server.url}${IVR_MATCH_PATH}?${new URLSearchParams(params).toString()}`, { headers: { authorization: `Bearer ${IVR_KEY}` } }).then((r) => r.text());
    expect(await ask({ access_number: SOLO, secret: "secret-value-0123" })).toMatch(/^error invalid_argument unknown parameter "secret"/);
    expect(await ask({ access_number: SOLO, phone_number: "+16505550999", call_id: "log-call-0001" })).toBe("no_match no_reservation\n");
    const records = logs.records();
    expect(records).toContainEqual(expect.objectContaining({ msg: "http refused", route: `GET ${IVR_MATCH_PATH}`, status: 400, code: "invalid_argument" }));
    expect(records).toContainEqual(expect.objectContaining({ msg: "rpc", method: "gms.v1.AccessService/MatchInteraction", code: "not_found", caller: "ivr-1" }));
    expect(logs.text()).not.toMatch(new RegExp(`${IVR_KEY}|secret-value-0123|6505550999|log-call-0001`));
  });

  it("answers error deadline_exceeded within its deadline, and the retry with the call id gets the match", async () => {
    const app = createClient(AccessService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors: [bearer(APP_KEY)] }));
    const r = await app.requestInteraction({ phoneNumber: CALLER, resourceGroup: "solo" });
    const ask = () =>
      fetch(`${server.url}${IVR_MATCH_PATH}?${new URLSearchParams({ access_number: SOLO, phone_number: CALLER, call_id: "stalled-call-0001" }).toString()}`, {
        headers: { authorization: `Bearer ${IVR_KEY}` },
        signal: AbortSignal.timeout(20_000),
      });
    proxy.blackHole();
    const stalled = await ask();
    expect(await stalled.text()).toMatch(/^error deadline_exceeded /);
    expect(stalled.status).toBe(504);
    proxy.restore();
    // The server may have seen the database down meanwhile (it then refuses calls at once): back to serving first.
    const health = createClient(Health, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
    await waitFor("SERVING again", async () => (await health.check({})).status === ServingStatus.SERVING, 30_000);
    // Whether the stalled match committed once the bytes flowed again or not, the retry answers the match, once.
    const retried = await ask();
    expect(await retried.text()).toBe(`matched ${r.session!.id} ${r.session!.dataId}\n`);
  });
});
