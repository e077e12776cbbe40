// Agents through a trusted backend's key (acts_for_agents): each call names its agent
// (gms-agent-id), agents need no configuration of their own, one agent never acts in another's chat
// unless its key vouches it is a supervisor, and the log names key and agent on every call.
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { parseConfig } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { errorOf } from "./helpers/calls.js";
import { DIALECTS, createTestDatabase } from "./helpers/databases.js";
import { captureLog } from "./helpers/log-capture.js";

const DESK = "desk-backend-key-0123456789abcdef";
const DESK_NO_SUPERVISORS = "desk-two-backend-key-0123456789ab";
const BOB = "bob-own-agent-key-0123456789abcd";

describe.each(DIALECTS)("agents acting through a backend's key on %s", (dialect) => {
  let server: RunningServer;
  const capture = captureLog("info");
  beforeAll(async () => {
    const config = parseConfig({
      server: { host: "127.0.0.1", port: 0 },
      auth: {
        api_keys: [
          { name: "desk", key: DESK, roles: ["agent"], acts_for_agents: true, agent_supervisors: true },
          { name: "desk2", key: DESK_NO_SUPERVISORS, roles: ["agent"], acts_for_agents: true },
          { name: "bob", key: BOB, roles: ["agent"] },
        ],
        public_roles: ["app"],
      },
    });
    server = await startServer({ config, db: await createTestDatabase(dialect), log: capture.log, sweep: false });
  });
  afterAll(() => server.shutdown());

  /** as makes a transport sending `key` and the agent headers given. */
  const as = (key: string, headers: Record<string, string> = {}, kind: "grpc" | "connect" = "grpc"): Transport => {
    const interceptors = [
      (next: (r: never) => unknown) => (req: { header: Headers }) => {
        req.header.set("authorization", `Bearer ${key}`);
        for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
        return next(req as never);
      },
    ];
    return kind === "grpc" ? createGrpcTransport({ baseUrl: server.url, interceptors: interceptors as never }) : createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors: interceptors as never });
  };

  it("lets each agent act in its own chat only; a vouched supervisor reads every chat", async () => {
    const customer = createClient(ChatService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
    await customer.requestChat({ nickname: "Ann" });
    const alice = createClient(AgentService, as(DESK, { "gms-agent-id": "alice@example.com" }));
    const accepted = await alice.acceptChat({ endpoint: "default", nickname: "Alice" });
    await alice.sendMessage({ chatId: accepted.chatId, text: "hello" });

    // Another agent of the same key, over either protocol: not in the chat.
    for (const kind of ["grpc", "connect"] as const) {
      const carol = createClient(AgentService, as(DESK, { "gms-agent-id": "carol" }, kind));
      expect((await errorOf(carol.sendMessage({ chatId: accepted.chatId, text: "intruding" }))).code).toBe(Code.PermissionDenied);
      expect((await errorOf(carol.refresh({ chatId: accepted.chatId }))).code).toBe(Code.PermissionDenied);
    }
    // The same agent id through another delegating key is another agent.
    const otherAlice = createClient(AgentService, as(DESK_NO_SUPERVISORS, { "gms-agent-id": "alice@example.com" }));
    expect((await errorOf(otherAlice.refresh({ chatId: accepted.chatId }))).code).toBe(Code.PermissionDenied);
    // A supervisor its key vouches for reads the chat.
    const dave = createClient(AgentService, as(DESK, { "gms-agent-id": "dave", "gms-agent-supervisor": "true" }));
    const read = await dave.refresh({ chatId: accepted.chatId });
    expect(read.events.some((e) => e.text === "hello")).toBe(true);
  });

  it("refuses what a key may not say: no agent named, an agent named by a key that does not delegate, a supervisor from a key that may not vouch, a bad agent id", async () => {
    const noAgent = createClient(AgentService, as(DESK));
    expect((await errorOf(noAgent.acceptChat({ endpoint: "default", nickname: "x", waitSeconds: 0 }))).code).toBe(Code.Unauthenticated);
    const bob = createClient(AgentService, as(BOB, { "gms-agent-id": "alice@example.com" }));
    expect((await errorOf(bob.acceptChat({ endpoint: "default", nickname: "x" }))).code).toBe(Code.PermissionDenied);
    const fakeSupervisor = createClient(AgentService, as(DESK_NO_SUPERVISORS, { "gms-agent-id": "eve", "gms-agent-supervisor": "true" }));
    expect((await errorOf(fakeSupervisor.acceptChat({ endpoint: "default", nickname: "x" }))).code).toBe(Code.PermissionDenied);
    const badId = createClient(AgentService, as(DESK, { "gms-agent-id": "alice smith" }));
    expect((await errorOf(badId.acceptChat({ endpoint: "default", nickname: "x" }))).code).toBe(Code.InvalidArgument);
  });

  it("logs every agent's call with its key and agent (the audit trail)", () => {
    const rpc = capture.records().filter((l) => l["msg"] === "rpc" && String(l["method"]).startsWith("gms.v1.AgentService/"));
    expect(rpc.some((l) => l["caller"] === "desk/alice@example.com" && l["method"] === "gms.v1.AgentService/SendMessage" && l["code"] === "ok")).toBe(true);
    expect(rpc.some((l) => l["caller"] === "desk/carol" && l["code"] === "permission_denied")).toBe(true);
    expect(rpc.some((l) => l["caller"] === "desk/dave" && l["method"] === "gms.v1.AgentService/Refresh" && l["code"] === "ok")).toBe(true);
  });
});
