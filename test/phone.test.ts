// Phone numbers as people and IVRs write them: the formats the docs promise are accepted, and a
// caller is matched whichever of them the app and the IVR used.
import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { parseConfig } from "../src/config.js";
import { normalizePhone, phoneReader } from "../src/domain/phone.js";
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

describe("phoneReader with a country code (access.default_country_code)", () => {
  const us = phoneReader({ defaultCountryCode: "1" });
  const uk = phoneReader({ defaultCountryCode: "44" });
  it.each(["6504669999", "(650) 466-9999", "1 650 466 9999", "1-650-466-9999", "011 1 650 466 9999", "+1 (650) 466-9999", "+16504669999"])("reads %j as +16504669999 in North America", (raw) => {
    expect(us("phone_number", raw)).toBe("+16504669999");
  });
  it.each(["020 7946 0958", "00 44 20 7946 0958", "+44 20 7946 0958", "2079460958"])("reads %j as +442079460958 in the UK", (raw) => {
    expect(uk("phone_number", raw)).toBe("+442079460958");
  });
  it("keeps another country's international number, and honours configured prefixes", () => {
    expect(us("phone_number", "011 44 20 7946 0958")).toBe("+442079460958");
    // Italy keeps the leading 0 of national numbers: no trunk prefix to drop.
    expect(phoneReader({ defaultCountryCode: "39", trunkPrefix: "" })("phone_number", "06 1234 5678")).toBe("+390612345678");
    expect(phoneReader({ defaultCountryCode: "49" })("phone_number", "030 1234567")).toBe("+49301234567");
  });
  it("refuses what is no phone number whatever the plan", () => {
    expect(() => us("access_number", "call me")).toThrow(/access_number/);
  });
  it("reads configured numbers the same way, and refuses two that are one number in E.164", () => {
    const config = parseConfig({ access: { default_country_code: "1" }, resources: { pool: { numbers: ["8005550100..8005550101", "+18005550102"] } } });
    expect(config.resources["pool"]?.numbers).toEqual(["+18005550100", "+18005550101", "+18005550102"]);
    expect(() => parseConfig({ access: { default_country_code: "1" }, resources: { pool: { numbers: ["8005550100", "+18005550100"] } } })).toThrow(/listed twice/);
    expect(() => parseConfig({ access: { default_country_code: "01" } })).toThrow(/default_country_code/);
  });
});

describe.each(DIALECTS)("national and E.164 forms of one number match with access.default_country_code on %s", (dialect) => {
  let app: TestServer;
  beforeAll(async () => {
    app = await startTestServer(dialect, { config: { access: { default_country_code: "1" }, resources: { pool: { numbers: ["8005550100..8005550104"], locking: true } } } });
  });
  afterAll(() => app.close());

  it("an app registering 6504669999 is matched by an IVR sending +16504669999 and the dialled number in national form", async () => {
    const client = createClient(AccessService, app.grpc);
    const r = await client.requestInteraction({ phoneNumber: "6504669999", resourceGroup: "pool" });
    expect(r.session?.phoneNumber).toBe("+16504669999");
    expect(r.access?.accessNumber).toMatch(/^\+1800555010[0-4]$/);
    const national = r.access!.accessNumber.slice(2);
    const m = await client.matchInteraction({ accessNumber: national, phoneNumber: "+16504669999" });
    expect(m.matches.map((x) => x.sessionId)).toEqual([r.session?.id]);
  });

  it("and the other way round: registered in E.164, called in national form with the trunk prefix", async () => {
    const client = createClient(AccessService, app.connect);
    const r = await client.requestInteraction({ phoneNumber: "+1 (650) 466-0001", resourceGroup: "pool" });
    const m = await client.matchInteraction({ accessNumber: r.access!.accessNumber, phoneNumber: "1 650 466 0001" });
    expect(m.matches.map((x) => x.sessionId)).toEqual([r.session?.id]);
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
