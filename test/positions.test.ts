// Positions and versions beyond 2^53, over gRPC and Connect JSON.
//
// The server holds positions and versions as JS numbers: a value above 2^53-1 used to be rounded
// (or to fail as INTERNAL, with an out-of-range int64 in a JSON reply). Every such request field is
// now limited to 0..2^53-1 by the contract: INVALID_ARGUMENT naming the field, and a value inside
// the range is answered exactly.
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { errorOf } from "./helpers/calls.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const MAX = 2n ** 53n - 1n;
const TOO_BIG = [2n ** 53n, 2n ** 53n + 1n, 2n ** 63n - 1n];

describe("positions beyond 2^53", () => {
  let t: TestServer;
  let chatId: string;
  let secureKey: string;

  beforeAll(async () => {
    t = await startTestServer("sqlite");
    const chat = await createClient(ChatService, t.grpc).requestChat({ nickname: "Ann" });
    chatId = chat.chatId;
    secureKey = chat.secureKey;
    await createClient(AgentService, t.grpc).acceptChat({ endpoint: "default", nickname: "Bob" });
  });
  afterAll(() => t.close());

  describe.each(["grpc", "connect"] as const)("over %s", (kind) => {
    const transport = (): Transport => (kind === "grpc" ? t.grpc : t.connect);

    it.each(TOO_BIG)("refuses from_position %s in Refresh and Subscribe, customer and agent", async (from) => {
      const chats = createClient(ChatService, transport());
      const agents = createClient(AgentService, transport());
      const calls: [string, Promise<unknown>][] = [
        ["customer Refresh", chats.refresh({ chatId, secureKey, fromPosition: from })],
        ["agent Refresh", agents.refresh({ chatId, fromPosition: from })],
        ["customer Subscribe", (async () => { for await (const _ of chats.subscribe({ chatId, secureKey, fromPosition: from })) break; })()],
        ["agent Subscribe", (async () => { for await (const _ of agents.subscribe({ chatId, fromPosition: from })) break; })()],
      ];
      for (const [what, call] of calls) {
        const e = await errorOf(call);
        expect(e.code, what).toBe(Code.InvalidArgument);
        expect(e.rawMessage, what).toContain("from_position");
      }
    });

    it("answers the largest position exactly", async () => {
      const chats = createClient(ChatService, transport());
      const agents = createClient(AgentService, transport());
      const customer = await chats.refresh({ chatId, secureKey, fromPosition: MAX });
      expect(customer.events).toEqual([]);
      expect(customer.nextPosition).toBe(MAX);
      const agent = await agents.refresh({ chatId, fromPosition: MAX });
      expect(agent.events).toEqual([]);
      expect(agent.nextPosition).toBe(MAX);
    });

    it.each(TOO_BIG)("refuses expected_version %s and leaves the record alone", async (version) => {
      const storage = createClient(StorageService, transport());
      const created = await storage.createData({ entries: { a: { kind: { case: "text", value: "1" } } } });
      const e = await errorOf(storage.updateData({ dataId: created.dataId, entries: { a: { kind: { case: "text", value: "2" } } }, expectedVersion: version }));
      expect(e.code).toBe(Code.InvalidArgument);
      expect(e.rawMessage).toContain("expected_version");
      const got = await storage.getData({ dataId: created.dataId });
      expect(got.version).toBe(1n);
      expect(got.entries["a"]?.kind.value).toBe("1");
    });
  });

  it("answers a raw Connect JSON poll exactly, and refuses 2^63-1 as JSON", async () => {
    const post = (body: object) =>
      fetch(`${t.server.url}/gms.v1.ChatService/Refresh`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const ok = await post({ chatId, secureKey, fromPosition: MAX.toString() });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain(`"nextPosition":"${MAX}"`);
    const bad = await post({ chatId, secureKey, fromPosition: "9223372036854775807" });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { code: string; message: string };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toContain("from_position");
    // And through connect-node (GET), with the same rule.
    const message = encodeURIComponent(JSON.stringify({ chatId, secureKey, fromPosition: "9223372036854775807" }));
    const get = await fetch(`${t.server.url}/gms.v1.ChatService/Refresh?connect=v1&encoding=json&message=${message}`);
    expect(get.status).toBe(400);
    expect(((await get.json()) as { message: string }).message).toContain("from_position");
  });
});
