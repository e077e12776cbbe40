// GMS's HTTP API for services and storage (src/http/gms-services.ts, gms-storage.ts, gms-http.ts)
// against a real server over real sockets, on every dialect: the request/response examples of
// GMS's documentation replayed, the seed's iPhoneService example as the seed shows it, HTTP Basic
// authentication, and hostile requests that must be refused with a clear 4xx and store nothing.
import * as http2 from "node:http2";
import * as net from "node:net";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { SessionService } from "../gen/gms/v1/session_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { DIALECTS, createTestDatabase } from "./helpers/databases.js";
import { captureLog } from "./helpers/log-capture.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const BACKEND_KEY = "backend-key-0123456789abcdef";
const IVR_KEY = "ivr-key-0123456789abcdef0123";
const basic = (user: string, key: string) => `Basic ${Buffer.from(`${user}:${key}`).toString("base64")}`;
const BACKEND = basic("crm", BACKEND_KEY);
const IVR = basic("ivr-box", IVR_KEY);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const UNKNOWN_ID = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";

const config = {
  server: { cors_origins: ["http://app.example"] },
  auth: {
    api_keys: [
      { name: "crm", key: BACKEND_KEY, roles: ["backend"] },
      { name: "ivr-box", key: IVR_KEY, roles: ["ivr"] },
    ],
  },
  storage: { max_entries: 8, max_value_bytes: 16 * 1024, max_data_bytes: 64 * 1024 },
  resources: {
    DNIS: { numbers: ["+18005550100..+18005550119"], locking: true },
    iPhoneService: { numbers: ["+18005550200..+18005550209"], locking: true },
    other: { numbers: ["+18005550300"], locking: true },
  },
  services: {
    // The seed's customised request-interaction, option for option.
    iPhoneService: { type: "builtin", name: "request-interaction", ttl: 7200, provide_code: false, resource_group: "iPhoneService" },
    "request-interaction": { service: "request-interaction", resource_group: "DNIS" },
    "my-match": { service: "match-interaction" },
    "my-chat": { service: "request-chat" },
  },
};

/** CRLF joins lines as multipart framing wants them. */
const CRLF = (lines: string[]) => lines.join("\r\n");

/** DOC_BOUNDARY is the boundary of GMS's documentation examples. */
const DOC_BOUNDARY = "----WebKitFormBoundaryy16qocbN6tmPORZL";

/** multipart builds a multipart/form-data body as GMS's documentation shows one (CRLF framing). */
function multipart(parts: { name: string; value: string | Buffer; filename?: string; type?: string }[], boundary = DOC_BOUNDARY): { body: Buffer; type: string } {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disposition = `Content-Disposition: form-data; name="${p.name}"${p.filename === undefined ? "" : `; filename="${p.filename}"`}`;
    const head = [`--${boundary}`, disposition, ...(p.type === undefined ? [] : [`Content-Type: ${p.type}`]), "", ""];
    chunks.push(Buffer.from(CRLF(head)), Buffer.isBuffer(p.value) ? p.value : Buffer.from(p.value), Buffer.from("\r\n"));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), type: `multipart/form-data; boundary=${boundary}` };
}

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0xff, 0xfe]);

interface Reply {
  status: number;
  headers: Headers;
  json: Record<string, unknown>;
  bytes: Buffer;
}

describe.each(DIALECTS)("GMS's HTTP API on %s", (dialect) => {
  let t: TestServer;
  let url: string;

  /** send makes one HTTP request and reads the whole answer. */
  async function send(method: string, path: string, o: { body?: Buffer | string; type?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
    const headers: Record<string, string> = { ...o.headers };
    if (o.type !== undefined) headers["content-type"] = o.type;
    const res = await fetch(`${url}${path}`, { method, headers, ...(o.body === undefined ? {} : { body: o.body }) });
    const bytes = Buffer.from(await res.arrayBuffer());
    const json = (res.headers.get("content-type") ?? "").startsWith("application/json") ? (JSON.parse(bytes.toString("utf8")) as Record<string, unknown>) : {};
    return { status: res.status, headers: res.headers, json, bytes };
  }
  const form = (o: Record<string, string>) => ({ body: new URLSearchParams(o).toString(), type: "application/x-www-form-urlencoded" });
  const knex = () => t.server.app.db.knex;
  const count = async (table: string) => Number((await knex()(table).count<{ n: number | string }[]>({ n: "*" }))[0]?.n);
  const counts = async () => ({ sessions: await count("sessions"), data: await count("storage_data"), entries: await count("storage_entries"), custom: await count("storage_custom_ids"), reservations: await count("reservations") });
  const backendStorage = () => createClient(StorageService, t.transport("grpc", BACKEND_KEY));
  const expiresIn = async (dataId: string) => timestampMs((await backendStorage().getData({ dataId })).expiresAt!) - t.clock.now();

  beforeAll(async () => {
    t = await startTestServer(dialect, { config });
    url = t.server.url;
  });
  afterAll(() => t.close());

  describe("Storage API", () => {
    it("replays the documentation's create: Key1, Key2, Key3 and FileKey for an hour; reads them back", async () => {
      const { body, type } = multipart([
        { name: "Key1", value: "Value1" },
        { name: "Key2", value: "Value2" },
        { name: "Key3", value: "Value3" },
        { name: "FileKey", value: PNG, filename: "image.png", type: "image/png" },
      ]);
      const created = await send("POST", "/genesys/1/storage/3600", { body, type });
      expect(created.status).toBe(200);
      expect(Object.keys(created.json)).toEqual(["id"]);
      const id = created.json["id"] as string;
      expect(id).toMatch(UUID);
      expect(await expiresIn(id)).toBe(3600_000);

      const all = await send("GET", `/genesys/1/storage/${id}`);
      expect(all.status).toBe(200);
      expect(all.json).toEqual({ Key1: "Value1", Key2: "Value2", Key3: "Value3", FileKey: { filename: "image.png", contentType: "image/png", size: PNG.length } });

      const file = await send("GET", `/genesys/1/storage/${id}/FileKey`);
      expect(file.status).toBe(200);
      expect(file.headers.get("content-type")).toBe("image/png");
      expect(file.headers.get("content-disposition")).toBe("attachment; filename*=UTF-8''image.png");
      expect(file.bytes.equals(PNG)).toBe(true);
      const one = await send("GET", `/genesys/1/storage/${id}/Key2`);
      expect([one.status, one.headers.get("content-type"), one.bytes.toString()]).toEqual([200, "text/plain; charset=utf-8", "Value2"]);
      const missing = await send("GET", `/genesys/1/storage/${id}/Key9`);
      expect([missing.status, missing.json["exception"], missing.json["code"]]).toEqual([404, "NotFound", "not_found"]);
    });

    it("takes an invalid ttl as 30 s, as GMS does; urlencoded bodies store texts", async () => {
      for (const ttl of ["abc", "0", "-5", "1.5", "%20"]) {
        const r = await send("POST", `/genesys/1/storage/${ttl}`, form({ k: "v" }));
        expect(r.status, ttl).toBe(200);
        expect(await expiresIn(r.json["id"] as string), ttl).toBe(30_000);
      }
      // A ttl beyond a year is not "incorrect" but too large: refused, nothing stored.
      const before = await counts();
      expect((await send("POST", "/genesys/1/storage/31536001", form({ k: "v" }))).status).toBe(400);
      expect(await counts()).toEqual(before);
    });

    it("updates (adds, replaces, new ttl) and deletes; a deleted id is 404", async () => {
      const { json } = await send("POST", "/genesys/1/storage/60", form({ a: "1", b: "2" }));
      const id = json["id"] as string;
      const updated = await send("POST", `/genesys/1/storage/${id}/600`, form({ b: "two", c: "3" }));
      expect([updated.status, updated.json]).toEqual([200, { id }]);
      expect((await send("GET", `/genesys/1/storage/${id}`)).json).toEqual({ a: "1", b: "two", c: "3" });
      expect(await expiresIn(id)).toBe(600_000);
      expect((await send("POST", `/genesys/1/storage/${id}/nope`, form({ d: "4" }))).status).toBe(200);
      expect(await expiresIn(id)).toBe(30_000);
      const deleted = await send("DELETE", `/genesys/1/storage/${id}`);
      expect([deleted.status, deleted.json]).toEqual([200, {}]);
      for (const [method, path] of [
        ["GET", `/genesys/1/storage/${id}`],
        ["GET", `/genesys/1/storage/${id}/a`],
        ["DELETE", `/genesys/1/storage/${id}`],
      ] as const) {
        const r = await send(method, path);
        expect([r.status, r.json["code"]], `${method} ${path}`).toEqual([404, "not_found"]);
      }
      expect((await send("POST", `/genesys/1/storage/${id}/60`, form({ a: "1" }))).status).toBe(404);
    });

    it("sends a stored file's type only when it is a header value; the file is an attachment that is not sniffed", async () => {
      const file = (contentType: string) => ({ kind: { case: "file" as const, value: { filename: "évil.html", contentType, content: Buffer.from("<script>1</script>") } } });
      const { dataId } = await backendStorage().createData({ entries: { bad: file("text/html\r\nX-Evil: 1"), wide: file("text/plain; charset=ü"), html: file("text/html") } });
      for (const [key, type] of [["bad", "application/octet-stream"], ["wide", "application/octet-stream"], ["html", "text/html"]] as const) {
        const r = await send("GET", `/genesys/1/storage/${dataId}/${key}`);
        expect([r.status, r.headers.get("content-type"), r.headers.get("x-evil")], key).toEqual([200, type, null]);
        expect(r.headers.get("x-content-type-options")).toBe("nosniff");
        expect(r.headers.get("content-disposition")).toBe("attachment; filename*=UTF-8''%C3%A9vil.html");
      }
    });

    it("custom ids belong to the gms_user that created them; creating again replaces the data", async () => {
      const alice = { "gms_user": "alice@example.com" };
      const created = await send("POST", "/genesys/1/storage/custom/my-cart/120", { ...form({ item: "shoes" }), headers: alice });
      expect([created.status, created.json]).toEqual([200, { id: "my-cart" }]);
      expect((await send("GET", "/genesys/1/storage/my-cart", { headers: alice })).json).toEqual({ item: "shoes" });
      expect((await send("GET", "/genesys/1/storage/my-cart/item", { headers: alice })).bytes.toString()).toBe("shoes");
      // Another user, or none, does not see it.
      expect((await send("GET", "/genesys/1/storage/my-cart", { headers: { gms_user: "bob" } })).status).toBe(404);
      expect((await send("GET", "/genesys/1/storage/my-cart")).status).toBe(400);
      const firstDataId = (await createClient(StorageService, t.transport("grpc")).findCustomData({ customId: "my-cart", user: "alice@example.com" })).dataId;
      const again = await send("POST", "/genesys/1/storage/custom/my-cart/120", { ...form({ item: "hat" }), headers: alice });
      expect(again.status).toBe(200);
      expect((await send("GET", "/genesys/1/storage/my-cart", { headers: alice })).json).toEqual({ item: "hat" });
      expect((await send("GET", `/genesys/1/storage/${firstDataId}`)).status).toBe(404);
      // Updated and deleted through the custom id, too.
      expect((await send("POST", "/genesys/1/storage/my-cart/300", { ...form({ size: "42" }), headers: alice })).status).toBe(200);
      expect((await send("GET", "/genesys/1/storage/my-cart", { headers: alice })).json).toEqual({ item: "hat", size: "42" });
      expect((await send("DELETE", "/genesys/1/storage/my-cart", { headers: alice })).status).toBe(200);
      expect((await send("GET", "/genesys/1/storage/my-cart", { headers: alice })).status).toBe(404);
      // Without the gms_user header a custom id is refused, and nothing is stored.
      const before = await counts();
      const anonymous = await send("POST", "/genesys/1/storage/custom/other/120", form({ a: "b" }));
      expect([anonymous.status, anonymous.json["code"]]).toEqual([400, "invalid_argument"]);
      expect(anonymous.json["message"]).toContain("custom_id needs a user");
      expect(await counts()).toEqual(before);
    });
  });

  describe("Service API", () => {
    it("replays the documentation's request-interaction: phone number and app data (a file stays a file)", async () => {
      const { body, type } = multipart([
        { name: "_phone_number", value: "5555555555" },
        { name: "first_name", value: "John" },
        { name: "last_name", value: "Doe" },
        { name: "current_location", value: "37.4219,-122.0840" },
        { name: "preferred_language", value: "English" },
        { name: "picture", value: PNG, filename: "me.png", type: "image/png" },
      ]);
      const r = await send("POST", "/genesys/1/service/request-interaction", { body, type });
      expect(r.status).toBe(200);
      expect(Object.keys(r.json).sort()).toEqual(["_access_number", "_data_id", "_expiration_time", "_id"]);
      expect(r.json["_id"]).toMatch(UUID);
      expect(r.json["_access_number"]).toMatch(/^\+1800555010[0-9]$|^\+1800555011[0-9]$/);
      expect(r.json["_expiration_time"]).toBe(30);
      const data = await send("GET", `/genesys/1/storage/${r.json["_data_id"] as string}`);
      expect(data.json).toEqual({ first_name: "John", last_name: "Doe", current_location: "37.4219,-122.0840", preferred_language: "English", picture: { filename: "me.png", contentType: "image/png", size: PNG.length } });
      expect((await send("GET", `/genesys/1/storage/${r.json["_data_id"] as string}/picture`)).bytes.equals(PNG)).toBe(true);
    });

    it("gives an access code only when asked, of the asked length", async () => {
      const r = await send("POST", "/genesys/1/service/request-interaction", form({ _phone_number: "+16505550001", _provide_code: "true", _access_code_length: "8", _booking_expiration_timeout: "120", _ttl: "600" }));
      expect(r.status).toBe(200);
      expect(r.json["_access_code"]).toMatch(/^[0-9]{8}$/);
      expect(r.json["_expiration_time"]).toBe(120);
    });

    it("the seed's iPhoneService example as the seed shows it is refused (it is not well-formed) and stores nothing", async () => {
      // Byte for byte as the seed prints it: its boundary never appears as a delimiter, the
      // parameter's underscores are lost to spaces and no blank line ends a part's headers.
      const body = CRLF([
        "----Boundary",
        'Content-Disposition: form-data; name=" phone number"',
        "6504669999",
        "-----WebKitFormBoundaryy16gocbN6tmP0RZL",
        'Content-Disposition: form-data; name="current location latitude"',
        "48.8583",
        "----WebKitFormBoundaryy16gocbN6tmP0RZL",
        'Content-Disposition: form-data; name="current_location_longitude"',
        "2.2944",
        "-----WebKitFormBoundaryy16gocbN6tmP0RZL",
      ]);
      const before = await counts();
      const r = await send("POST", "/genesys/1/service/iPhoneService", { body, type: "multipart/form-data; boundary=----Boundary", headers: { accept: "*/*", "accept-charset": "ISO-8859-1, utf-8; g=0.7, *; g=0.3" } });
      expect(r.status).toBe(400);
      expect(r.json["exception"]).toBe("BadRequest");
      expect(await counts()).toEqual(before);
    });

    it("the seed's iPhoneService example as meant: configuration wins over the request (ttl 7200, its group, no code)", async () => {
      const { body, type } = multipart(
        [
          { name: "_phone_number", value: "6504669999" },
          { name: "current_location_latitude", value: "48.8583" },
          { name: "current_location_longitude", value: "2.2944" },
          // Ignored: the service configures each of them.
          { name: "_resource_group", value: "other" },
          { name: "_ttl", value: "60" },
          { name: "_provide_code", value: "true" },
        ],
        "----WebKitFormBoundaryy16gocbN6tmP0RZL",
      );
      const r = await send("POST", "/genesys/1/service/iPhoneService", { body, type });
      expect(r.status).toBe(200);
      expect(r.json["_access_number"]).toMatch(/^\+1800555020[0-9]$/);
      expect(r.json).not.toHaveProperty("_access_code");
      const session = await send("GET", `/genesys/1/service/${r.json["_id"] as string}`, { headers: { authorization: BACKEND } });
      expect(session.status).toBe(200);
      expect(session.json).toMatchObject({ _id: r.json["_id"], _service: "iPhoneService", _builtin: "request-interaction", _state: "active", _phone_number: "6504669999", _data_id: r.json["_data_id"] });
      expect(Date.parse(session.json["_expires_at"] as string) - t.clock.now()).toBeGreaterThan(7199_000);
      expect(await expiresIn(r.json["_data_id"] as string)).toBe(7200_000);
      expect((await send("GET", `/genesys/1/storage/${r.json["_data_id"] as string}`)).json).toEqual({ current_location_latitude: "48.8583", current_location_longitude: "2.2944" });
      // At the seed's own URL: GMS 8.0's base path is served alike.
      const old = await send("POST", "/gms-web/gms/1/service/iPhoneService", { body, type });
      expect(old.status).toBe(200);
      expect(old.json["_access_number"]).toMatch(/^\+1800555020[0-9]$/);
      expect((await send("GET", `/gms-web/gms/1/storage/${old.json["_data_id"] as string}`)).json).toEqual({ current_location_latitude: "48.8583", current_location_longitude: "2.2944" });
    });

    it("request-access, match-interaction (one, several, with data; no match is 404), update, get and delete", async () => {
      const created = await send("POST", "/genesys/1/service/request-interaction", form({ _phone_number: "+16505550002", note: "first" }));
      const id = created.json["_id"] as string;
      const more = await send("POST", "/genesys/1/service/request-access", { ...form({ _id: id, _resource_group: "other", _provide_code: "true", _access_code_length: "4" }), headers: { authorization: BACKEND } });
      expect(more.status).toBe(200);
      expect(more.json).toMatchObject({ _id: id, _access_number: "+18005550300" });
      expect(more.json["_access_code"]).toMatch(/^[0-9]{4}$/);

      const updated = await send("POST", `/genesys/1/service/${id}/update`, { ...form({ note: "second", extra: "x" }), headers: { authorization: BACKEND } });
      expect([updated.status, updated.json]).toEqual([200, { _id: id }]);
      expect((await send("GET", `/genesys/1/storage/${created.json["_data_id"] as string}`)).json).toEqual({ note: "second", extra: "x" });

      const wrongCode = await send("POST", "/genesys/1/service/match-interaction", { ...form({ _access_number: "+18005550300", _access_code: more.json["_access_code"] === "0000" ? "1111" : "0000" }), headers: { authorization: IVR } });
      expect([wrongCode.status, wrongCode.json["code"]]).toEqual([404, "not_found"]);
      const matched = await send("POST", "/genesys/1/service/my-match", { ...form({ _access_number: "+18005550300", _access_code: more.json["_access_code"] as string, _phone_number: "+16505550002", _return_data: "true" }), headers: { authorization: IVR } });
      expect(matched.status).toBe(200);
      expect(matched.json).toEqual({ _id: id, _data_id: created.json["_data_id"], _data: { note: "second", extra: "x" } });
      // The match released the number: matching it again finds nothing.
      expect((await send("POST", "/genesys/1/service/match-interaction", { ...form({ _access_number: "+18005550300" }), headers: { authorization: IVR } })).status).toBe(404);

      const several = await Promise.all(["+16505550003", "+16505550004"].map((p) => send("POST", "/genesys/1/service/request-interaction", form({ _phone_number: p }))));
      const all = await send("POST", "/genesys/1/service/match-interaction", { ...form({ _access_number: several[0]!.json["_access_number"] as string, _return_multiple_matches: "true" }), headers: { authorization: IVR } });
      expect(all.status).toBe(200);
      expect(all.json).toEqual({ matches: [{ _id: several[0]!.json["_id"], _data_id: several[0]!.json["_data_id"] }] });

      const gone = await send("DELETE", `/genesys/1/service/${id}`, { headers: { authorization: BACKEND } });
      expect([gone.status, gone.json]).toEqual([200, {}]);
      expect((await send("GET", `/genesys/1/storage/${created.json["_data_id"] as string}`)).status).toBe(404);
      expect((await send("GET", `/genesys/1/service/${UNKNOWN_ID}`, { headers: { authorization: BACKEND } })).status).toBe(404);
    });
  });

  describe("an exhausted pool", () => {
    it("is 503 with the wait until a number frees up (Retry-After), and creates nothing more", async () => {
      const sessions = await Promise.all(["+16505550020", "+16505550021"].map((p) => send("POST", "/genesys/1/service/request-interaction", form({ _phone_number: p, _ttl: "600" }))));
      const first = await send("POST", "/genesys/1/service/request-access", { ...form({ _id: sessions[0]!.json["_id"] as string, _resource_group: "other", _booking_expiration_timeout: "90" }), headers: { authorization: BACKEND } });
      expect([first.status, first.json["_access_number"]]).toEqual([200, "+18005550300"]);
      const before = await counts();
      const second = await send("POST", "/genesys/1/service/request-access", { ...form({ _id: sessions[1]!.json["_id"] as string, _resource_group: "other" }), headers: { authorization: BACKEND } });
      expect([second.status, second.json["exception"], second.json["code"]]).toEqual([503, "ResourceExhausted", "resource_exhausted"]);
      expect(second.json["retryAfterSeconds"]).toBe(90);
      expect(second.headers.get("retry-after")).toBe("90");
      expect(await counts()).toEqual(before);
      // The number is free again once released: the IVR's match releases it.
      expect((await send("POST", "/genesys/1/service/match-interaction", { ...form({ _access_number: "+18005550300" }), headers: { authorization: IVR } })).status).toBe(200);
    });
  });

  describe("Basic authentication", () => {
    it("accepts the key as the password and its name as the user; refuses with a Basic challenge", async () => {
      const created = await send("POST", "/genesys/1/service/request-interaction", form({ _phone_number: "+16505550005" }));
      const path = `/genesys/1/service/${created.json["_id"] as string}`;
      expect((await send("GET", path, { headers: { authorization: BACKEND } })).status).toBe(200);
      expect((await send("GET", path, { headers: { authorization: `Bearer ${BACKEND_KEY}` } })).status).toBe(200);
      for (const authorization of [undefined, basic("crm", "wrong-key-0123456789"), basic("ivr-box", BACKEND_KEY), "Basic ???", "Digest x"]) {
        const r = await send("GET", path, authorization === undefined ? {} : { headers: { authorization } });
        expect(r.status, authorization).toBe(401);
        expect(r.headers.get("www-authenticate"), authorization).toBe('Basic realm="opengms", charset="UTF-8"');
        expect(r.json, authorization).toMatchObject({ exception: "Unauthenticated", code: "unauthenticated" });
      }
      // A known key without the RPC's role is 403, without a challenge.
      const denied = await send("GET", path, { headers: { authorization: IVR } });
      expect([denied.status, denied.headers.get("www-authenticate"), denied.json["code"]]).toEqual([403, null, "permission_denied"]);
      // Through gRPC the same session is the same one: both paths share the serving policy.
      const viaGrpc = await createClient(SessionService, t.transport("grpc", BACKEND_KEY)).getSession({ sessionId: created.json["_id"] as string });
      expect(viaGrpc.session?.phoneNumber).toBe("+16505550005");
    });
  });

  describe("transport", () => {
    it("serves the same requests over HTTP/2 (h2c) as over HTTP/1.1", async () => {
      const session = http2.connect(url);
      const request = (headers: http2.OutgoingHttpHeaders, body?: Buffer) =>
        new Promise<{ status: number; type: string | undefined; bytes: Buffer }>((resolve, reject) => {
          const stream = session.request(headers);
          const chunks: Buffer[] = [];
          let status = 0;
          let type: string | undefined;
          stream.on("response", (h) => {
            status = Number(h[":status"]);
            type = h["content-type"];
          });
          stream.on("data", (c: Buffer) => chunks.push(c));
          stream.on("end", () => resolve({ status, type, bytes: Buffer.concat(chunks) }));
          stream.on("error", reject);
          stream.end(body);
        });
      try {
        const { body, type } = multipart([{ name: "photo", value: PNG, filename: "p.png", type: "image/png" }]);
        const created = await request({ ":method": "POST", ":path": "/genesys/1/storage/60", "content-type": type }, body);
        expect(created.status).toBe(200);
        const id = (JSON.parse(created.bytes.toString()) as { id: string }).id;
        const photo = await request({ ":method": "GET", ":path": `/genesys/1/storage/${id}/photo` });
        expect([photo.status, photo.type, photo.bytes.equals(PNG)]).toEqual([200, "image/png", true]);
        const refused = await request({ ":method": "POST", ":path": "/genesys/1/storage/60", "content-type": "text/plain" }, Buffer.from("x"));
        expect(refused.status).toBe(415);
      } finally {
        session.close();
      }
    });

    it("lets a configured browser origin send gms_user and DELETE", async () => {
      const r = await fetch(`${url}/genesys/1/storage/${UNKNOWN_ID}`, { method: "OPTIONS", headers: { origin: "http://app.example", "access-control-request-method": "DELETE", "access-control-request-headers": "gms_user" } });
      expect(r.status).toBe(204);
      expect(r.headers.get("access-control-allow-methods")).toContain("DELETE");
      expect(r.headers.get("access-control-allow-headers")).toContain("gms_user");
    });
  });

  describe("hostile input is refused with a clear 4xx and stores nothing", () => {
    let before: Awaited<ReturnType<typeof counts>>;
    beforeEach(async () => {
      before = await counts();
    });
    const big = Buffer.alloc(16 * 1024 + 1, 0x61);
    const cases: [string, string, string, () => { body?: Buffer | string; type?: string; headers?: Record<string, string> }, number, string][] = [
      ["an unknown service", "POST", "/genesys/1/service/no-such-service", () => form({ _phone_number: "+16505550010" }), 404, "not_found"],
      ["a request-chat service on the service API", "POST", "/genesys/1/service/my-chat", () => form({ nickname: "x" }), 400, "invalid_argument"],
      ["a missing _phone_number", "POST", "/genesys/1/service/request-interaction", () => form({ data: "x" }), 400, "invalid_argument"],
      ["a bad _phone_number", "POST", "/genesys/1/service/request-interaction", () => form({ _phone_number: "call me" }), 400, "invalid_argument"],
      ["a _provide_code that is not a boolean", "POST", "/genesys/1/service/request-interaction", () => form({ _phone_number: "+16505550010", _provide_code: "yes" }), 400, "invalid_argument"],
      ["a _ttl that is not a number", "POST", "/genesys/1/service/request-interaction", () => form({ _phone_number: "+16505550010", _ttl: "1e9" }), 400, "invalid_argument"],
      ["a file as a parameter", "POST", "/genesys/1/service/request-interaction", () => multipart([{ name: "_phone_number", value: "+16505550010", filename: "p.txt" }]), 400, "invalid_argument"],
      ["a key given twice", "POST", "/genesys/1/service/request-interaction", () => ({ body: "_phone_number=%2B16505550010&a=1&a=2", type: "application/x-www-form-urlencoded" }), 400, "invalid_argument"],
      ["a multipart body without a boundary", "POST", "/genesys/1/storage/60", () => ({ body: "a=b", type: "multipart/form-data" }), 400, "invalid_argument"],
      ["a multipart body that is not one", "POST", "/genesys/1/storage/60", () => ({ body: "--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated", type: "multipart/form-data; boundary=xyz" }), 400, "invalid_argument"],
      ["a JSON body", "POST", "/genesys/1/storage/60", () => ({ body: '{"a":"b"}', type: "application/json" }), 415, "invalid_argument"],
      ["a body without a media type", "POST", "/genesys/1/storage/60", () => ({ body: "a=b" }), 415, "invalid_argument"],
      ["an oversized field", "POST", "/genesys/1/storage/60", () => multipart([{ name: "a", value: big }]), 413, "resource_exhausted"],
      ["an oversized file", "POST", "/genesys/1/service/request-interaction", () => multipart([{ name: "_phone_number", value: "+16505550010" }, { name: "f", value: big, filename: "f.bin" }]), 413, "resource_exhausted"],
      ["an oversized urlencoded value", "POST", "/genesys/1/storage/60", () => form({ a: big.toString() }), 413, "resource_exhausted"],
      ["too many keys", "POST", "/genesys/1/storage/60", () => form(Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`k${i}`, "v"]))), 413, "resource_exhausted"],
      ["more data than a record may hold", "POST", "/genesys/1/storage/60", () => multipart(Array.from({ length: 5 }, (_, i) => ({ name: `f${i}`, value: Buffer.alloc(15 * 1024), filename: `f${i}` }))), 413, "resource_exhausted"],
      ["a body over the size limit, announced", "POST", "/genesys/1/storage/60", () => ({ body: Buffer.alloc(200 * 1024, 0x61), type: "application/x-www-form-urlencoded" }), 413, "resource_exhausted"],
      ["a storage id that is not one", "GET", "/genesys/1/storage/not-an-id", () => ({}), 400, "invalid_argument"],
      ["a path that does not decode", "GET", "/genesys/1/storage/%E0%A4%A", () => ({}), 400, "invalid_argument"],
      ["a service id that is not one", "GET", "/genesys/1/service/not-an-id", () => ({ headers: { authorization: BACKEND } }), 400, "invalid_argument"],
      ["an update of a service id that is not one", "POST", "/genesys/1/service/not-an-id/update", () => ({ ...form({ a: "b" }), headers: { authorization: BACKEND } }), 400, "invalid_argument"],
      ["request-access without _id", "POST", "/genesys/1/service/request-access", () => ({ ...form({ _resource_group: "DNIS" }), headers: { authorization: BACKEND } }), 400, "invalid_argument"],
      ["match-interaction without _access_number", "POST", "/genesys/1/service/match-interaction", () => ({ ...form({ _phone_number: "+16505550010" }), headers: { authorization: IVR } }), 400, "invalid_argument"],
      ["a request the API does not have", "PUT", "/genesys/1/storage/60", () => form({ a: "b" }), 404, "not_found"],
      ["a custom id with a bad user", "POST", "/genesys/1/storage/custom/x/60", () => ({ ...form({ a: "b" }), headers: { gms_user: "a\tb" } }), 400, "invalid_argument"],
    ];
    it.each(cases)("%s", async (_name, method, path, make, status, code) => {
      const r = await send(method, path, make());
      expect(r.status).toBe(status);
      expect(r.json["code"]).toBe(code);
      expect(typeof r.json["message"]).toBe("string");
      expect(typeof r.json["exception"]).toBe("string");
      expect(await counts()).toEqual(before);
    });

    it("a body that does not arrive in full by the deadline is refused (408) and stores nothing", async () => {
      const slow = await startTestServer(dialect, { config: { ...config, server: { request_timeout_seconds: 1 } } });
      try {
        const port = slow.server.port;
        const answer = await new Promise<string>((resolve, reject) => {
          const socket = net.connect(port, "127.0.0.1", () => {
            socket.write("POST /genesys/1/storage/60 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\na=b");
          });
          let got = "";
          socket.on("data", (c: Buffer) => (got += c.toString()));
          socket.on("close", () => resolve(got));
          socket.on("error", reject);
        });
        expect(answer).toMatch(/^HTTP\/1\.1 408 /);
        expect(Number((await slow.server.app.db.knex("storage_data").count<{ n: number }[]>({ n: "*" }))[0]?.n)).toBe(0);
      } finally {
        await slow.close();
      }
    });
  });
});

describe("GMS's HTTP API's log", () => {
  it("notes a refused body by kind, with neither keys, credentials, ids nor values", async () => {
    const capture = captureLog("info");
    const db = await createTestDatabase("sqlite");
    const server = await startServer({ config: parseConfig({ ...config, server: { host: "127.0.0.1", port: 0 } }), db, log: capture.log, clock: new ManualClock(Date.now()), sweep: false });
    try {
      const secret = "s3cret-value-0123";
      const twice = await fetch(`${server.url}/genesys/1/storage/custom/cust-id-77/60`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", authorization: BACKEND, gms_user: "user-xyz", "x-request-id": "req-gms-1" },
        body: `k=${secret}&k=${secret}`,
      });
      expect(twice.status).toBe(400);
      expect(twice.headers.get("x-request-id")).toBe("req-gms-1");
      const unauthenticated = await fetch(`${server.url}/genesys/1/storage/60`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", authorization: basic("crm", "wrong-0123456789abcdef") }, body: `k=${secret}` });
      expect(unauthenticated.status).toBe(401);
      const lines = capture.records();
      expect(lines).toContainEqual(expect.objectContaining({ event: "gms-http", method: "POST", status: 400, exception: "BadRequest", requestId: "req-gms-1" }));
      const text = capture.text();
      for (const leak of [secret, BACKEND_KEY, BACKEND.slice(6), "cust-id-77", "user-xyz", "wrong-0123456789abcdef"]) expect(text).not.toContain(leak);
    } finally {
      await server.shutdown();
    }
  });
});
