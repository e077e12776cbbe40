// Map keys that are names of Object.prototype members, over real sockets, binary and JSON.
//
// protobuf-es holds a map in a plain object; a "__proto__" key used to vanish in its decoders while
// the write was acknowledged. Every request map of the contract now refuses that key with
// INVALID_ARGUMENT naming the field (protobuf-es could not write it back in JSON), and keys such as
// "constructor", "toString" and "hasOwnProperty" are stored and read back like any other.
import { create, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService, RequestInteractionRequestSchema } from "../gen/gms/v1/access_pb.js";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatService, RequestChatRequestSchema, UpdateUserDataRequestSchema } from "../gen/gms/v1/chat_pb.js";
import { SessionService, UpdateSessionDataRequestSchema } from "../gen/gms/v1/session_pb.js";
import { CreateDataRequestSchema, StorageService, UpdateDataRequestSchema } from "../gen/gms/v1/storage_pb.js";
import { ValueSchema, type Value } from "../gen/gms/v1/value_pb.js";
import { errorOf } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const text = (t: string): Value => create(ValueSchema, { kind: { case: "text", value: t } });
const textOf = (v: Value | undefined) => (v?.kind.case === "text" ? v.kind.value : undefined);
const texts = (m: { [k: string]: Value }) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, textOf(v)]));
/** Keys that name members of Object.prototype: each must be an ordinary key. */
const TRICKY = ["constructor", "toString", "hasOwnProperty", "valueOf", "isPrototypeOf", "__defineGetter__"];

/** withProtoKey gives a map object an own "__proto__" entry (an assignment would set its prototype). */
function withProtoKey<V>(map: { [k: string]: V }, value: V): { [k: string]: V } {
  Object.defineProperty(map, "__proto__", { value, enumerable: true, writable: true, configurable: true });
  return map;
}

/** withProtoKeyIn gives a message's map field an own "__proto__" entry (create() would drop it). */
function withProtoKeyIn<M extends object>(message: M, field: string, value: unknown): M {
  withProtoKey((message as Record<string, { [k: string]: unknown }>)[field]!, value);
  return message;
}

/** The requests with a map, each with a "__proto__" key, by RPC path and the field's name. */
function hostileRequests(dataId: string, sessionId: string, chatId: string, secureKey: string) {
  const cases: { path: string; field: string; schema: DescMessage; message: MessageShape<DescMessage>; json: string }[] = [];
  const add = <D extends DescMessage>(path: string, field: string, schema: D, message: MessageShape<D>, json: string) => cases.push({ path, field, schema, message, json });
  add(
    "gms.v1.StorageService/CreateData",
    "entries",
    CreateDataRequestSchema,
    withProtoKeyIn(create(CreateDataRequestSchema, { entries: { a: text("1") } }), "entries", text("lost")),
    `{"entries":{"a":{"text":"1"},"__proto__":{"text":"lost"}}}`,
  );
  add(
    "gms.v1.StorageService/UpdateData",
    "entries",
    UpdateDataRequestSchema,
    withProtoKeyIn(create(UpdateDataRequestSchema, { dataId, entries: { b: text("2") } }), "entries", text("lost")),
    `{"dataId":"${dataId}","entries":{"b":{"text":"2"},"__proto__":{"text":"lost"}}}`,
  );
  add(
    "gms.v1.SessionService/UpdateSessionData",
    "entries",
    UpdateSessionDataRequestSchema,
    withProtoKeyIn(create(UpdateSessionDataRequestSchema, { sessionId, entries: { b: text("2") } }), "entries", text("lost")),
    `{"sessionId":"${sessionId}","entries":{"b":{"text":"2"},"__proto__":{"text":"lost"}}}`,
  );
  add(
    "gms.v1.AccessService/RequestInteraction",
    "app_data",
    RequestInteractionRequestSchema,
    withProtoKeyIn(create(RequestInteractionRequestSchema, { resourceGroup: "pool", phoneNumber: "6504669999", appData: { a: text("1") } }), "appData", text("lost")),
    `{"resourceGroup":"pool","phoneNumber":"6504669999","appData":{"a":{"text":"1"},"__proto__":{"text":"lost"}}}`,
  );
  add(
    "gms.v1.ChatService/RequestChat",
    "user_data",
    RequestChatRequestSchema,
    withProtoKeyIn(create(RequestChatRequestSchema, { nickname: "Ann", userData: { a: "1" } }), "userData", "lost"),
    `{"nickname":"Ann","userData":{"a":"1","__proto__":"lost"}}`,
  );
  add(
    "gms.v1.ChatService/RequestChat",
    "app_data",
    RequestChatRequestSchema,
    withProtoKeyIn(create(RequestChatRequestSchema, { nickname: "Ann", appData: { a: text("1") } }), "appData", text("lost")),
    `{"nickname":"Ann","appData":{"a":{"text":"1"},"__proto__":{"text":"lost"}}}`,
  );
  add(
    "gms.v1.ChatService/UpdateUserData",
    "user_data",
    UpdateUserDataRequestSchema,
    withProtoKeyIn(create(UpdateUserDataRequestSchema, { chatId, secureKey, userData: { b: "2" } }), "userData", "lost"),
    `{"chatId":"${chatId}","secureKey":"${secureKey}","userData":{"b":"2","__proto__":"lost"}}`,
  );
  return cases;
}

describe.each(DIALECTS)("map keys on %s", (dialect) => {
  let t: TestServer;
  let connectBinary: Transport;

  beforeAll(async () => {
    t = await startTestServer(dialect, { config: { resources: { pool: { numbers: ["+18005550100..+18005550119"], locking: true } } } });
    connectBinary = createConnectTransport({ baseUrl: t.server.url, httpVersion: "1.1", useBinaryFormat: true });
  });
  afterAll(() => t.close());

  /** fixture makes a record, a session with data, and a chat, to aim the updates at. */
  async function fixture() {
    const storage = createClient(StorageService, t.grpc);
    const record = await storage.createData({ entries: { a: text("1") } });
    const interaction = await createClient(AccessService, t.grpc).requestInteraction({ resourceGroup: "pool", phoneNumber: "6504669999", appData: { a: text("1") } });
    const chat = await createClient(ChatService, t.grpc).requestChat({ nickname: "Ann", userData: { a: "1" } });
    return { record, interaction, chat };
  }

  it('refuses a "__proto__" key in every request map, over gRPC, Connect binary and Connect JSON, and changes nothing', async () => {
    const { record, interaction, chat } = await fixture();
    const storage = createClient(StorageService, t.grpc);
    const chats = async () => Number(((await t.server.app.db.knex("chats").count({ n: "*" })) as { n: number | string }[])[0]?.n);
    const records = async () => Number(((await t.server.app.db.knex("storage_data").count({ n: "*" })) as { n: number | string }[])[0]?.n);
    const before = { chats: await chats(), records: await records() };
    for (const c of hostileRequests(record.dataId, interaction.session!.id, chat.chatId, chat.secureKey)) {
      const what = `${c.path} ${c.field}`;
      // gRPC and Connect binary: the message is written by protobuf-es's binary writer, which keeps the key.
      const bytes = toBinary(c.schema, c.message);
      expect(new TextDecoder().decode(bytes), what).toContain("__proto__");
      for (const transport of [t.grpc, connectBinary]) {
        const [service, method] = c.path.split("/") as [string, string];
        const desc = [StorageService, SessionService, AccessService, ChatService].find((s) => s.typeName === service)!;
        const m = desc.method[(method[0]!.toLowerCase() + method.slice(1)) as keyof typeof desc.method] as never;
        const e = await errorOf(transport.unary(m, undefined, undefined, undefined, c.message as never, undefined));
        expect(e.code, what).toBe(Code.InvalidArgument);
        expect(e.rawMessage, what).toContain(`${c.field}["__proto__"]`);
      }
      // Connect JSON, as a browser sends it.
      const res = await fetch(`${t.server.url}/${c.path}`, { method: "POST", headers: { "content-type": "application/json" }, body: c.json });
      const body = (await res.json()) as { code?: string; message?: string };
      expect(res.status, what).toBe(400);
      expect(body.code, what).toBe("invalid_argument");
      expect(body.message, what).toContain(`${c.field}["__proto__"]`);
    }
    // Nothing was created or changed.
    expect(await chats()).toBe(before.chats);
    expect(await records()).toBe(before.records);
    const got = await storage.getData({ dataId: record.dataId });
    expect(texts(got.entries)).toEqual({ a: "1" });
    expect(got.version).toBe(1n);
    const sessionData = await storage.getData({ dataId: interaction.session!.dataId });
    expect(texts(sessionData.entries)).toEqual({ a: "1" });
    const agent = await createClient(AgentService, t.grpc).acceptChat({ endpoint: "default", nickname: "Bob" });
    expect(agent.chatId).toBe(chat.chatId);
    expect({ ...agent.userData }).toEqual({ a: "1" });
  });

  describe.each(["grpc", "connect"] as const)("over %s", (kind) => {
    const transport = () => (kind === "grpc" ? t.grpc : t.connect);
    const tricky = () => Object.fromEntries(TRICKY.map((k) => [k, text(`v-${k}`)]));
    const expected = Object.fromEntries(TRICKY.map((k) => [k, `v-${k}`]));

    it("stores and reads back keys named like Object.prototype members in storage entries", async () => {
      const storage = createClient(StorageService, transport());
      const created = await storage.createData({ entries: tricky() });
      expect(texts((await storage.getData({ dataId: created.dataId })).entries)).toEqual(expected);
      expect(textOf((await storage.getDataEntry({ dataId: created.dataId, key: "constructor" })).value)).toBe("v-constructor");
      await storage.updateData({ dataId: created.dataId, entries: { toString: text("new") }, removeKeys: ["valueOf"] });
      const after = texts((await storage.getData({ dataId: created.dataId })).entries);
      expect(after).toEqual({ ...expected, toString: "new", valueOf: undefined });
      expect(Object.keys(after).sort()).toEqual(TRICKY.filter((k) => k !== "valueOf").sort());
      // A record without such a key does not find one on Object.prototype.
      const plain = await storage.createData({ entries: { a: text("1") } });
      expect((await errorOf(storage.getDataEntry({ dataId: plain.dataId, key: "hasOwnProperty" }))).code).toBe(Code.NotFound);
    });

    it("keeps such keys in app data, session data and chat user data", async () => {
      const access = createClient(AccessService, transport());
      const interaction = await access.requestInteraction({ resourceGroup: "pool", phoneNumber: "6504669999", appData: tricky() });
      const storage = createClient(StorageService, transport());
      expect(texts((await storage.getData({ dataId: interaction.session!.dataId })).entries)).toEqual(expected);
      await createClient(SessionService, transport()).updateSessionData({ sessionId: interaction.session!.id, entries: { hasOwnProperty: text("h2") } });
      expect(texts((await storage.getData({ dataId: interaction.session!.dataId })).entries)).toEqual({ ...expected, hasOwnProperty: "h2" });

      const chats = createClient(ChatService, transport());
      const userData = Object.fromEntries(TRICKY.map((k) => [k, `u-${k}`]));
      const chat = await chats.requestChat({ nickname: "Ann", userData, appData: tricky() });
      expect(texts((await storage.getData({ dataId: chat.dataId })).entries)).toEqual(expected);
      const agents = createClient(AgentService, transport());
      const accepted = await agents.acceptChat({ endpoint: "default", nickname: "Bob" });
      expect(accepted.chatId).toBe(chat.chatId);
      expect({ ...accepted.userData }).toEqual(userData);
      expect(texts(accepted.appData)).toEqual(expected);
      await chats.updateUserData({ chatId: chat.chatId, secureKey: chat.secureKey, userData: { toString: "t2" }, removeKeys: ["valueOf"] });
      const events = (await agents.refresh({ chatId: chat.chatId, fromPosition: 1n })).events;
      const updated = events.filter((e) => Object.keys(e.userData).length > 0).at(-1);
      const rest = Object.fromEntries(Object.entries(userData).filter(([k]) => k !== "valueOf"));
      expect({ ...updated?.userData }).toEqual({ ...rest, toString: "t2" });
    });
  });

  it("reads a JSON body with such keys exactly as sent", async () => {
    const res = await fetch(`${t.server.url}/gms.v1.StorageService/CreateData`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ entries: Object.fromEntries(TRICKY.map((k) => [k, { text: k }])) }),
    });
    expect(res.status).toBe(200);
    const { dataId } = (await res.json()) as { dataId: string };
    const got = await fetch(`${t.server.url}/gms.v1.StorageService/GetData`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ dataId }) });
    const body = (await got.json()) as { entries: Record<string, { text: string }> };
    expect(Object.keys(body.entries).sort()).toEqual([...TRICKY].sort());
    for (const k of TRICKY) expect(body.entries[k]?.text).toBe(k);
  });
});
