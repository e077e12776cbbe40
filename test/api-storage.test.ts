import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport as createWebConnectTransport } from "@connectrpc/connect-web";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LimitExceededSchema } from "../gen/gms/v1/error_details_pb.js";
import {
  CreateDataRequestSchema,
  CreateDataResponseSchema,
  GetDataRequestSchema,
  GetDataResponseSchema,
  StorageService,
} from "../gen/gms/v1/storage_pb.js";
import type { Value } from "../gen/gms/v1/value_pb.js";
import { ManualClock } from "../src/clock.js";
import { errorOf } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/** Small limits, so each one can be broken with a small request. */
const storageConfig = { default_ttl_seconds: 30, max_entries: 5, max_key_bytes: 16, max_value_bytes: 1024, max_data_bytes: 2048 };

const text = (t: string): Value => ({ $typeName: "gms.v1.Value", kind: { case: "text", value: t } });
const file = (filename: string, contentType: string, content: Uint8Array): Value => ({
  $typeName: "gms.v1.Value",
  kind: { case: "file", value: { $typeName: "gms.v1.File", filename, contentType, content } },
});
const texts = (o: Record<string, string>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, text(v)]));
const textOf = (v: Value | undefined) => (v?.kind.case === "text" ? v.kind.value : undefined);
const UNKNOWN_ID = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";

describe.each(DIALECTS)("Storage API end to end on %s", (dialect) => {
  let t: TestServer;
  let clock: ManualClock;
  const knex = () => t.server.app.db.knex;
  const rowCount = async () => Number(((await knex()("storage_data").count({ n: "*" })) as { n: number | string }[])[0]?.n);
  const storedKeys = async (dataId: string) =>
    ((await knex()("storage_entries").where("data_id", dataId).orderBy("entry_key").select("entry_key")) as { entry_key: string }[]).map((r) => r.entry_key);

  beforeAll(async () => {
    clock = new ManualClock(Date.now());
    // The server's read limit follows the largest legal request of any service: chat files are kept small too.
    t = await startTestServer(dialect, { clock, config: { storage: storageConfig, chat: { files: { max_file_bytes: 1024 } } } });
  });
  afterAll(() => t.close());

  describe.each(["grpc", "connect"] as const)("over %s", (kind) => {
    let client: Client<typeof StorageService>;
    beforeAll(() => {
      client = createClient(StorageService, kind === "grpc" ? t.grpc : t.connect);
    });

    it("names a record by a user's custom id: found by that user only, replaced by a new create, refused without a user", async () => {
      const customId = `cart-${kind}`;
      const first = await client.createData({ ttlSeconds: 60n, entries: texts({ a: "1" }), customId, user: "alice" });
      expect((await client.findCustomData({ customId, user: "alice" })).dataId).toBe(first.dataId);
      expect((await errorOf(client.findCustomData({ customId, user: "bob" }))).code).toBe(Code.NotFound);
      const second = await client.createData({ ttlSeconds: 60n, entries: texts({ a: "2" }), customId, user: "alice" });
      expect((await client.findCustomData({ customId, user: "alice" })).dataId).toBe(second.dataId);
      expect((await errorOf(client.getData({ dataId: first.dataId }))).code).toBe(Code.NotFound);
      clock.advance(60_000);
      expect((await errorOf(client.findCustomData({ customId, user: "alice" }))).code).toBe(Code.NotFound);
      const before = await rowCount();
      for (const bad of [{ customId: "x" }, { user: "alice" }, { customId: "a/b", user: "alice" }, { customId: "x".repeat(129), user: "alice" }, { customId: "x", user: "a\nb" }]) {
        expect((await errorOf(client.createData({ ttlSeconds: 60n, entries: texts({ a: "1" }), ...bad }))).code, JSON.stringify(bad)).toBe(Code.InvalidArgument);
      }
      expect((await errorOf(client.findCustomData({ customId: "", user: "alice" }))).code).toBe(Code.InvalidArgument);
      expect(await rowCount()).toBe(before);
    });

    it("creates, reads, updates and deletes texts and files", async () => {
      const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0, 255]);
      const created = await client.createData({ ttlSeconds: 60n, entries: { name: text("Zoë ✓"), photo: file("me.png", "image/png", png) } });
      expect(created.version).toBe(1n);
      expect(timestampMs(created.expiresAt!)).toBe(clock.now() + 60_000);
      expect(await storedKeys(created.dataId)).toEqual(["name", "photo"]);

      const got = await client.getData({ dataId: created.dataId });
      expect(got.dataId).toBe(created.dataId);
      expect(textOf(got.entries["name"])).toBe("Zoë ✓");
      const photo = got.entries["photo"]?.kind;
      expect(photo?.case).toBe("file");
      if (photo?.case === "file") {
        expect(photo.value.filename).toBe("me.png");
        expect(photo.value.contentType).toBe("image/png");
        expect([...photo.value.content]).toEqual([...png]);
      }
      const entry = await client.getDataEntry({ dataId: created.dataId, key: "name" });
      expect(textOf(entry.value)).toBe("Zoë ✓");
      expect((await errorOf(client.getDataEntry({ dataId: created.dataId, key: "missing" }))).code).toBe(Code.NotFound);

      const updated = await client.updateData({ dataId: created.dataId, entries: texts({ name: "Zoe", city: "Paris" }), removeKeys: ["photo"], ttlSeconds: 600n });
      expect(updated.version).toBe(2n);
      expect(timestampMs(updated.expiresAt!)).toBe(clock.now() + 600_000);
      expect(await storedKeys(created.dataId)).toEqual(["city", "name"]);
      const after = await client.getData({ dataId: created.dataId });
      expect(Object.fromEntries(Object.entries(after.entries).map(([k, v]) => [k, textOf(v)]))).toEqual({ name: "Zoe", city: "Paris" });
      expect(after.version).toBe(2n);

      await client.deleteData({ dataId: created.dataId });
      expect(await storedKeys(created.dataId)).toEqual([]);
      expect(await knex()("storage_data").where("id", created.dataId).first()).toBeUndefined();
      expect((await errorOf(client.getData({ dataId: created.dataId }))).code).toBe(Code.NotFound);
      expect((await errorOf(client.deleteData({ dataId: created.dataId }))).code).toBe(Code.NotFound);
    });

    it("uses storage.default_ttl_seconds when ttl_seconds is unset", async () => {
      const created = await client.createData({ entries: texts({ k: "v" }) });
      expect(timestampMs(created.expiresAt!)).toBe(clock.now() + 30_000);
    });

    it("refuses ttl_seconds ≤ 0 with a field violation naming ttl_seconds, and stores nothing", async () => {
      const before = await rowCount();
      for (const ttlSeconds of [0n, -5n]) {
        const err = await errorOf(client.createData({ ttlSeconds, entries: texts({ k: "v" }) }));
        expect(err.code).toBe(Code.InvalidArgument);
        const violations = err.findDetails(ViolationsSchema).flatMap((v) => v.violations);
        expect(violations.map((v) => v.field?.elements.map((e) => e.fieldName).join("."))).toContain("ttl_seconds");
      }
      const { dataId } = await client.createData({ ttlSeconds: 60n, entries: texts({ k: "v" }) });
      const err = await errorOf(client.updateData({ dataId, ttlSeconds: 0n }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(await rowCount()).toBe(before + 1);
      expect((await client.getData({ dataId })).version).toBe(1n);
    });

    it("refuses an id that is not a UUID with INVALID_ARGUMENT", async () => {
      for (const call of [
        () => client.getData({ dataId: "not-a-uuid" }),
        () => client.getDataEntry({ dataId: "'; DROP TABLE storage_data; --", key: "k" }),
        () => client.updateData({ dataId: "", entries: texts({ k: "v" }) }),
        () => client.deleteData({ dataId: "1234" }),
      ]) {
        expect((await errorOf(call())).code).toBe(Code.InvalidArgument);
      }
    });

    it("answers an unknown id with NOT_FOUND", async () => {
      expect((await errorOf(client.getData({ dataId: UNKNOWN_ID }))).code).toBe(Code.NotFound);
      expect((await errorOf(client.getDataEntry({ dataId: UNKNOWN_ID, key: "k" }))).code).toBe(Code.NotFound);
      expect((await errorOf(client.updateData({ dataId: UNKNOWN_ID, entries: texts({ k: "v" }) }))).code).toBe(Code.NotFound);
      expect((await errorOf(client.deleteData({ dataId: UNKNOWN_ID }))).code).toBe(Code.NotFound);
    });

    it("enforces every limit with a LimitExceeded detail naming it, and stores nothing", async () => {
      const before = await rowCount();
      const cases: [Record<string, Value>, Code, string, bigint][] = [
        [texts({ "a-key-longer-than-16": "v" }), Code.InvalidArgument, "storage.max_key_bytes", 20n],
        [{ big: file("big.bin", "", new Uint8Array(1025)) }, Code.InvalidArgument, "storage.max_value_bytes", 1025n],
        [texts({ a: "1", b: "2", c: "3", d: "4", e: "5", f: "6" }), Code.ResourceExhausted, "storage.max_entries", 6n],
        [texts({ a: "x".repeat(1000), b: "x".repeat(1000), c: "x".repeat(100) }), Code.ResourceExhausted, "storage.max_data_bytes", 2100n],
      ];
      for (const [entries, code, limit, actual] of cases) {
        const err = await errorOf(client.createData({ ttlSeconds: 60n, entries }));
        expect(err.code, limit).toBe(code);
        expect(err.rawMessage).toContain(limit);
        const [detail] = err.findDetails(LimitExceededSchema);
        expect(detail).toMatchObject({ limit, actual });
        expect(detail?.max).toBe(BigInt(storageConfig[limit.slice("storage.".length) as keyof typeof storageConfig]));
      }
      expect(await rowCount()).toBe(before);
    });

    it("refuses an update that breaks a limit and leaves the record as it was", async () => {
      const { dataId } = await client.createData({ ttlSeconds: 60n, entries: texts({ a: "1", b: "2", c: "3", d: "4" }) });
      const err = await errorOf(client.updateData({ dataId, entries: texts({ e: "5", f: "6" }) }));
      expect(err.code).toBe(Code.ResourceExhausted);
      expect(err.findDetails(LimitExceededSchema)[0]?.limit).toBe("storage.max_entries");
      expect(await storedKeys(dataId)).toEqual(["a", "b", "c", "d"]);
      expect((await client.getData({ dataId })).version).toBe(1n);
    });

    it("refuses a request above the server's read limit with RESOURCE_EXHAUSTED, storing nothing", async () => {
      const before = await rowCount();
      // The read limit is a little above the largest legal request (about 70 KiB with these limits).
      const err = await errorOf(client.createData({ ttlSeconds: 60n, entries: { huge: file("huge.bin", "", new Uint8Array(256 * 1024)) } }));
      expect(err.code).toBe(Code.ResourceExhausted);
      expect(await rowCount()).toBe(before);
    });

    it("compare-and-set: a stale expected_version is FAILED_PRECONDITION and changes nothing", async () => {
      const { dataId } = await client.createData({ ttlSeconds: 60n, entries: texts({ n: "1" }) });
      expect((await client.updateData({ dataId, entries: texts({ n: "2" }), expectedVersion: 1n })).version).toBe(2n);
      const err = await errorOf(client.updateData({ dataId, entries: texts({ n: "3" }), expectedVersion: 1n }));
      expect(err.code).toBe(Code.FailedPrecondition);
      const now = await client.getData({ dataId });
      expect(textOf(now.entries["n"])).toBe("2");
      expect(now.version).toBe(2n);
    });

    it("a retried CreateData with the same request_id stores once", async () => {
      const before = await rowCount();
      const requestId = `retry-${kind}-${dialect}`;
      const first = await client.createData({ ttlSeconds: 60n, entries: texts({ a: "1" }), requestId });
      const again = await client.createData({ ttlSeconds: 60n, entries: texts({ a: "1" }), requestId });
      expect(again.dataId).toBe(first.dataId);
      expect(await rowCount()).toBe(before + 1);
    });

    it("is NOT_FOUND from the moment the data expires (the clock is advanced, nothing sleeps)", async () => {
      const { dataId } = await client.createData({ ttlSeconds: 60n, entries: texts({ k: "v" }) });
      clock.advance(59_999);
      expect(textOf((await client.getDataEntry({ dataId, key: "k" })).value)).toBe("v");
      clock.advance(1);
      // Called one at a time: a call made before its turn would reject with no handler yet.
      for (const call of [() => client.getData({ dataId }), () => client.getDataEntry({ dataId, key: "k" }), () => client.updateData({ dataId, entries: texts({ x: "y" }) })]) {
        expect((await errorOf(call())).code).toBe(Code.NotFound);
      }
      // No sweeper runs in these tests: the row is still there, yet invisible.
      expect(await knex()("storage_data").where("id", dataId).first()).toBeDefined();
    });
  });

  it("serves GetData and GetDataEntry over Connect GET (NO_SIDE_EFFECTS), as a browser sends it", async () => {
    const methods: string[] = [];
    // connect-web over the platform's fetch, like a browser app; the fetch records each HTTP method.
    const recordingFetch: typeof fetch = (input, init) => {
      methods.push(init?.method ?? "GET");
      return fetch(input, init);
    };
    const client = createClient(StorageService, createWebConnectTransport({ baseUrl: t.server.url, useHttpGet: true, fetch: recordingFetch }));
    const { dataId } = await client.createData({ ttlSeconds: 60n, entries: texts({ greeting: "hello" }) });
    const got = await client.getData({ dataId });
    expect(textOf(got.entries["greeting"])).toBe("hello");
    expect(textOf((await client.getDataEntry({ dataId, key: "greeting" })).value)).toBe("hello");
    expect((await errorOf(client.getData({ dataId: UNKNOWN_ID }))).code).toBe(Code.NotFound);
    expect(methods).toEqual(["POST", "GET", "GET", "GET"]);

    // The same GET a browser or curl would send.
    const query = new URLSearchParams({ connect: "v1", encoding: "json", message: JSON.stringify({ dataId }) });
    const res = await fetch(`${t.server.url}/gms.v1.StorageService/GetData?${query.toString()}`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { dataId: string; entries: Record<string, { text?: string }>; version: string };
    expect(body).toMatchObject({ dataId, entries: { greeting: { text: "hello" } }, version: "1" });
  });

  it("takes a raw Connect JSON POST, as curl sends it", async () => {
    const url = `${t.server.url}/gms.v1.StorageService/CreateData`;
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ttlSeconds: "120", entries: { greeting: { text: "hello from curl" }, doc: { file: { filename: "a.txt", contentType: "text/plain", content: Buffer.from("abc").toString("base64") } } } }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { dataId: string; expiresAt: string; version: string };
    expect(body.version).toBe("1");
    expect(Date.parse(body.expiresAt)).toBe(clock.now() + 120_000);
    expect(await storedKeys(body.dataId)).toEqual(["doc", "greeting"]);
    const doc = (await knex()("storage_entries").where({ data_id: body.dataId, entry_key: "doc" }).first()) as { kind: string; filename: string; value: Uint8Array };
    expect(doc).toMatchObject({ kind: "file", filename: "a.txt" });
    expect(Buffer.from(doc.value).toString()).toBe("abc");

    const bad = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ttlSeconds: "0" }) });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { code: string }).code).toBe("invalid_argument");
  });

  it("works with a plain @grpc/grpc-js client built from the generated descriptors", async () => {
    type Unary = (req: unknown, callback: (err: grpc.ServiceError | null, res: unknown) => void) => void;
    const definition: grpc.ServiceDefinition = Object.fromEntries(
      StorageService.methods.map((m) => [
        m.name,
        {
          path: `/${StorageService.typeName}/${m.name}`,
          requestStream: false,
          responseStream: false,
          requestSerialize: (msg: MessageShape<DescMessage>) => Buffer.from(toBinary(m.input, msg)),
          requestDeserialize: (bytes: Buffer) => fromBinary(m.input, bytes),
          responseSerialize: (msg: MessageShape<DescMessage>) => Buffer.from(toBinary(m.output, msg)),
          responseDeserialize: (bytes: Buffer) => fromBinary(m.output, bytes),
        },
      ]),
    );
    const StorageClient = grpc.makeGenericClientConstructor(definition, "StorageService");
    const client = new StorageClient(`127.0.0.1:${t.server.port}`, grpc.credentials.createInsecure());
    const call = <T>(method: string, req: unknown) =>
      new Promise<T>((resolve, reject) => {
        (client as unknown as Record<string, Unary>)[method]!.call(client, req, (err, res) => (err === null ? resolve(res as T) : reject(err)));
      });
    try {
      const created = await call<MessageShape<typeof CreateDataResponseSchema>>(
        "CreateData",
        create(CreateDataRequestSchema, { ttlSeconds: 60n, entries: texts({ from: "grpc-js" }) }),
      );
      expect(created.version).toBe(1n);
      const got = await call<MessageShape<typeof GetDataResponseSchema>>("GetData", create(GetDataRequestSchema, { dataId: created.dataId }));
      expect(textOf(got.entries["from"])).toBe("grpc-js");
      const missing = await call("GetData", create(GetDataRequestSchema, { dataId: UNKNOWN_ID })).catch((e: grpc.ServiceError) => e);
      expect((missing as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
    } finally {
      client.close();
    }
  });
});
