// Phone numbers over the wire: an app and an IVR writing one number differently are matched, as
// written and, with access.default_country_code, in national and E.164 forms.
import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { errorOf } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

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
