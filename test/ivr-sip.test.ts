// opengms' IVR endpoint proven against real SIP software (test/sip/harness.ts): an app reserves a
// number over the API; SIPp calls it from the app's phone number through Kamailio, whose route
// (test/sip/kamailio.cfg, the README's recipe) asks opengms over http_client and forwards the call
// to a SIPp IVR with the session and data ids in headers, or refuses it: 404 when nothing
// matches, 403 once the number is locked against code guessing. On SQLite and MariaDB.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import type { ManualClock } from "../src/clock.js";
import { IVR_MATCH_PATH } from "../src/http/ivr.js";
import { freePort } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { forwarded, matchTimes, placeCalls, sipToolsMissing, startKamailio, startUas, type Call, type Proc } from "./sip/harness.js";

const IVR_KEY = "ivr-key-0123456789abcdef";
const APP_KEY = "app-key-0123456789abcdef";
const SOLO = "+18005550300";
const SHARED = "+18005550200";
const CALLER = "+16505550001";

const missing = sipToolsMissing();
// Without Kamailio or SIPp a developer's run skips, saying what to install; CI installs them
// (.ci/run), so there a missing program fails the test instead.
const skip = missing !== undefined && process.env["CI"] === undefined;
if (skip) process.stderr.write(`test/ivr-sip.test.ts skipped: Kamailio or SIPp is not installed (${missing})\n`);

describe.skipIf(skip).each(DIALECTS)("calls through Kamailio matched by opengms on %s", (dialect) => {
  let ts: TestServer;
  let app: Client<typeof AccessService>;
  let dir: string;
  let uas: Proc;
  let kamailio: Proc;
  let kamailioPort: number;
  let uasLog: string;

  /** call places one call (or more) through Kamailio and expects SIPp to have seen the scenario through. */
  async function call(c: Call, times = 1) {
    const r = await placeCalls({ calls: Array.from({ length: times }, () => c), kamailioPort, dir });
    expect(r.exitCode, r.output.slice(-2000)).toBe(0);
    return r.outcomes;
  }

  /** reserve has the app reserve a number of the group for the caller, optionally with a code. */
  async function reserve(group: string, provideCode = false) {
    const r = await app.requestInteraction({ phoneNumber: CALLER, resourceGroup: group, provideCode, ttlSeconds: 3600n });
    return { sessionId: r.session!.id, dataId: r.session!.dataId, number: r.access!.accessNumber, code: r.access!.accessCode };
  }

  beforeAll(async () => {
    if (missing !== undefined) throw new Error(`Kamailio or SIPp is not installed: ${missing}`);
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
      },
    });
    app = createClient(AccessService, ts.transport("connect", APP_KEY));
    dir = mkdtempSync(join(tmpdir(), "opengms-sip-"));
    uasLog = join(dir, "uas.log");
    const uasPort = await freePort();
    kamailioPort = await freePort();
    uas = await startUas(uasPort, dir, uasLog);
    kamailio = await startKamailio({
      port: kamailioPort,
      gmsMatchUrl: `${ts.server.url}${IVR_MATCH_PATH}`,
      authHeader: `Authorization: Bearer ${IVR_KEY}`,
      ivrUri: `sip:127.0.0.1:${uasPort}`,
      dir,
    });
  }, 60_000);
  afterAll(async () => {
    await kamailio?.stop();
    await uas?.stop();
    await ts?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("forwards the app's caller to the IVR with the session and data ids; the next call gets 404", async () => {
    const r = await reserve("solo");
    // Another phone calling the number is not the app's caller.
    expect(await call({ accessNumber: SOLO, caller: "+16505559999" })).toMatchObject([{ status: 404, reason: "phone_mismatch" }]);
    const [answered] = await call({ accessNumber: SOLO, caller: CALLER });
    expect(answered).toMatchObject({ status: 200 });
    expect(forwarded(uasLog).filter((f) => f.callId === answered!.callId)).toEqual([{ callId: answered!.callId, sessionId: r.sessionId, dataId: r.dataId }]);
    // The match released the number: the same call again matches nothing, and the app gets the number again.
    expect(await call({ accessNumber: SOLO, caller: CALLER })).toMatchObject([{ status: 404, reason: "no_reservation" }]);
    const again = await reserve("solo");
    expect(again.number).toBe(SOLO);
    const [second] = await call({ accessNumber: SOLO, caller: CALLER });
    expect(forwarded(uasLog).find((f) => f.callId === second!.callId)).toMatchObject({ sessionId: again.sessionId, dataId: again.dataId });
    // Kamailio logged each match it asked for, with the answer's first line.
    const asked = matchTimes(kamailio.output());
    expect(asked.find((m) => m.callId === answered!.callId)).toMatchObject({ status: 200, answer: `matched ${r.sessionId} ${r.dataId}` });
  });

  it("refuses a number locked against code guessing with 403 and Retry-After, and matches after the window", async () => {
    const clock = ts.clock as ManualClock;
    const r = await reserve("shared", true);
    const wrong = r.code === "0000" ? "1111" : "0000";
    const guesses = await call({ accessNumber: SHARED, caller: CALLER, code: wrong }, 3);
    expect(guesses.map((g) => [g.status, g.reason])).toEqual([
      [404, "code_mismatch"],
      [404, "code_mismatch"],
      [404, "code_mismatch"],
    ]);
    const [locked] = await call({ accessNumber: SHARED, caller: CALLER, code: r.code });
    expect(locked).toMatchObject({ status: 403 });
    expect(locked!.retry).toBeGreaterThan(0);
    // A code that is no code at all is opengms refusing the request: Kamailio answers 503.
    expect(await call({ accessNumber: SHARED, caller: CALLER, code: "12" })).toMatchObject([{ status: 503 }]);
    clock.advance(61_000);
    const [matched] = await call({ accessNumber: SHARED, caller: CALLER, code: r.code });
    expect(matched).toMatchObject({ status: 200 });
    expect(forwarded(uasLog).find((f) => f.callId === matched!.callId)).toMatchObject({ sessionId: r.sessionId, dataId: r.dataId });
    // Free again: a second call with the code finds nothing, and the app can book the number again.
    expect(await call({ accessNumber: SHARED, caller: CALLER, code: r.code })).toMatchObject([{ status: 404, reason: "no_reservation" }]);
    expect((await reserve("shared", true)).number).toBe(SHARED);
  });
});
