// A misspelled JSON field is the caller's mistake, told by name: `{"ttl":60}` is INVALID_ARGUMENT
// (the field is `ttlSeconds`), not a record with the default TTL. server.ignore_unknown_json_fields
// lets clients of a newer contract through. Both serving paths, POST and GET.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./helpers/server.js";

/** post sends a Connect JSON unary request as raw text and gives the status and parsed body. */
async function post(app: TestServer, path: string, body: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`${app.server.url}/${path}`, { method: "POST", headers: { "content-type": "application/json" }, body });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

const RESOURCES = { resources: { pool: { numbers: ["+18005550100..+18005550104"], locking: true } } };

describe("unknown JSON fields, by default", () => {
  let app: TestServer;
  beforeAll(async () => {
    app = await startTestServer("sqlite", { config: RESOURCES });
  });
  afterAll(() => app.close());

  it("CreateData with `ttl` instead of `ttlSeconds` is INVALID_ARGUMENT naming the key, and stores nothing", async () => {
    const r = await post(app, "gms.v1.StorageService/CreateData", '{"ttl":60,"entries":{"a":{"text":"x"}}}');
    expect(r.status).toBe(400);
    expect(r.json["code"]).toBe("invalid_argument");
    expect(r.json["message"]).toMatch(/"ttl"/);
    const rows = (await app.server.app.db.knex("storage_data").count({ n: "*" })) as { n: number | string }[];
    expect(Number(rows[0]?.n)).toBe(0);
  });

  it("RequestInteraction (the lean path) with `resorceGroup` is INVALID_ARGUMENT naming the key", async () => {
    const r = await post(app, "gms.v1.AccessService/RequestInteraction", '{"phoneNumber":"6504669999","resorceGroup":"pool"}');
    expect(r.status).toBe(400);
    expect(r.json["message"]).toMatch(/"resorceGroup"/);
  });

  it("a Connect GET with an unknown key is refused alike", async () => {
    const message = encodeURIComponent(JSON.stringify({ dataId: "00000000-0000-0000-0000-000000000000", keys: ["a"] }));
    const r = await fetch(`${app.server.url}/gms.v1.StorageService/GetData?connect=v1&encoding=json&message=${message}`);
    expect(r.status).toBe(400);
    expect(((await r.json()) as { message: string }).message).toMatch(/"keys"/);
  });
});

describe("unknown JSON fields with server.ignore_unknown_json_fields", () => {
  let app: TestServer;
  beforeAll(async () => {
    app = await startTestServer("sqlite", { config: { ...RESOURCES, server: { ignore_unknown_json_fields: true } } });
  });
  afterAll(() => app.close());

  it("are read as absent on both paths", async () => {
    const created = await post(app, "gms.v1.StorageService/CreateData", '{"ttl":60,"entries":{"a":{"text":"x"}},"fromTheFuture":true}');
    expect(created.status).toBe(200);
    const r = await post(app, "gms.v1.AccessService/RequestInteraction", '{"phoneNumber":"6504669999","resourceGroup":"pool","fromTheFuture":1}');
    expect(r.status).toBe(200);
  });
});
