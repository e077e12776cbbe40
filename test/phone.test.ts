// Phone numbers as people and IVRs write them: the formats the docs promise are accepted, and a
// caller is matched whichever of them the app and the IVR used.
import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { normalizePhone } from "../src/domain/phone.js";
import { errorOf } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

describe("normalizePhone", () => {
  it.each([
    ["6504669999", "6504669999"],
    ["(650) 466-9999", "6504669999"],
    ["650.466.9999", "6504669999"],
    ["650 466 9999", "6504669999"],
    ["+1 (650) 466-9999", "+16504669999"],
    [" +1-650-466-9999 ", "+16504669999"],
    ["+44 20 7946 0958", "+442079460958"],
  ])("reads %j as %j", (raw, want) => {
    expect(normalizePhone("phone_number", raw)).toBe(want);
  });

  it.each(["", "12", "+", "abc", "650 466 999a", "650+4669999", "++16504669999", "+123456789012345678901", "650/466/9999"])("refuses %j, naming the field", (raw) => {
    expect(() => normalizePhone("phone_number", raw)).toThrow(/phone_number/);
  });
});

describe.each(DIALECTS)("phone formats over the wire on %s", (dialect) => {
  let app: TestServer;
  beforeAll(async () => {
    app = await startTestServer(dialect, { config: { resources: { pool: { numbers: ["+18005550100..+18005550104"], locking: true } } } });
  });
  afterAll(() => app.close());

  it.each(["grpc", "connect"] as const)("over %s, an app registering (650) 466-9999 is matched by an IVR sending 650.466.9999", async (kind) => {
    const client = createClient(AccessService, app.transport(kind));
    const r = await client.requestInteraction({ phoneNumber: "(650) 466-9999", resourceGroup: "pool" });
    expect(r.session?.phoneNumber).toBe("6504669999");
    const m = await client.matchInteraction({ accessNumber: r.access!.accessNumber.replace(/^\+1(\d{3})(\d{3})(\d{4})$/, "+1 ($1) $2-$3"), phoneNumber: "650.466.9999" });
    expect(m.matches.map((x) => x.sessionId)).toEqual([r.session?.id]);
  });

  it("refuses a phone number with letters as INVALID_ARGUMENT naming the field", async () => {
    const client = createClient(AccessService, app.connect);
    const e = await errorOf(client.requestInteraction({ phoneNumber: "(650) CALL-NOW", resourceGroup: "pool" }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/phone_number/);
  });
});
