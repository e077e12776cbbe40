// GMS's chat API version 2 and its CometD mode, served beside the RPCs on the same port: a whole
// chat by polling and one over CometD (the CometD project's JavaScript client), each against an
// agent on the gRPC API, on the transcript cursor the gRPC API reads; GMS's documented example
// replayed; hostile requests refused with GMS's error shape, changing nothing.
import * as http2 from "node:http2";
import * as net from "node:net";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { CometD, type Message } from "cometd";
import { adapt } from "cometd-nodejs-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatEventType, type ChatEvent } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { errorOf, waitFor } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

adapt();

/** cometd is a CometD client of /genesys/cometd: long-polling, as the server library offers no WebSocket. */
function cometd(base: string): CometD {
  const client = new CometD();
  client.unregisterTransport("websocket");
  client.configure({ url: `${base}/genesys/cometd` });
  return client;
}

const AGENT = { name: "agent-bob", key: "gms-chat-agent-key-0123" };
const MAX_FILE = 1024;
const UNKNOWN_CHAT = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";

const config = {
  auth: { api_keys: [{ name: AGENT.name, key: AGENT.key, roles: ["agent"] }], public_roles: ["app"] },
  chat: { files: { max_files: 3, max_file_bytes: MAX_FILE, max_total_bytes: 4 * MAX_FILE, allowed_extensions: ["txt", "png"] } },
  services: {
    "customer-support": { service: "request-chat", endpoint: "poll", ttl: 600 },
    async: { service: "request-chat", endpoint: "async", ttl: 600 },
    lobby: { service: "request-chat", endpoint: "lobby", ttl: 600 },
  },
};

/** Reply is GMS's chat v2 reply, as JSON. */
interface Reply {
  statusCode: number;
  chatId?: string;
  userId?: string;
  secureKey?: string;
  alias?: string;
  chatEnded?: boolean;
  nextPosition?: number;
  messages?: { from: { nickname: string; participantId: string; type: string }; index?: number; type: string; utcTime: number; text?: string; userData?: Record<string, string> }[];
  userData?: Record<string, string>;
  errors?: { code: number; message: string }[];
}

const types = (r: Reply) => (r.messages ?? []).map((m) => `${m.index ?? "-"}:${m.type}:${m.from.type}${m.text === undefined ? "" : `:${m.text}`}`);
const grpcTypes = (events: readonly ChatEvent[]) => events.filter((e) => e.position > 0n).map((e) => `${e.position}:${ChatEventType[e.type]}`);

describe.each(DIALECTS)("GMS chat API v2 and CometD on %s", (dialect) => {
  let t: TestServer;
  let agent: Client<typeof AgentService>;
  let base: string;

  /** post sends a form (urlencoded) and returns the HTTP status and the JSON reply. */
  async function post(path: string, fields: Record<string, string>, init: RequestInit = {}): Promise<{ status: number; body: Reply }> {
    const res = await fetch(`${base}${path}`, { method: "POST", body: new URLSearchParams(fields), ...init });
    return { status: res.status, body: (await res.json()) as Reply };
  }

  /** upload sends one file as multipart/form-data. */
  async function upload(path: string, fields: Record<string, string>, name: string, content: Uint8Array, type = "text/plain") {
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) form.set(k, v);
    form.set("file", new Blob([content], { type }), name);
    const res = await fetch(`${base}${path}`, { method: "POST", body: form });
    return { status: res.status, body: (await res.json()) as Reply };
  }

  beforeAll(async () => {
    t = await startTestServer(dialect, { config });
    agent = createClient(AgentService, t.transport("grpc", AGENT.key));
    base = t.server.url;
  });
  afterAll(() => t?.close());

  it("replays GMS's documented request-chat example", async () => {
    const { status, body } = await post("/genesys/2/chat/customer-support", { firstName: "First", lastName: "Last", subject: "Subject to" });
    expect(status).toBe(200);
    expect(Object.keys(body).sort()).toEqual(["alias", "chatEnded", "chatId", "messages", "nextPosition", "secureKey", "statusCode", "userId"]);
    expect(body).toMatchObject({ statusCode: 0, chatEnded: false, nextPosition: 2 });
    for (const k of ["alias", "userId", "secureKey", "chatId"] as const) expect(typeof body[k]).toBe("string");
    expect(body.messages).toEqual([{ from: { nickname: "First Last", participantId: body.userId, type: "Client" }, index: 1, type: "ParticipantJoined", utcTime: body.messages?.[0]?.utcTime }]);
    expect(body.messages?.[0]?.utcTime).toBeGreaterThan(0);
    const accepted = await agent.acceptChat({ endpoint: "poll", nickname: "Bob" });
    expect(accepted.chatId).toBe(body.chatId);
    await agent.endChat({ chatId: accepted.chatId });
  });

  it("carries a whole chat by polling against an agent on gRPC, on the gRPC API's cursor", async () => {
    const start = await post("/genesys/2/chat/customer-support", { nickname: "Ann", subject: "billing", emailAddress: "ann@example.com", "userData[tier]": "gold" });
    expect(start.status).toBe(200);
    const { chatId, secureKey, userId, alias } = start.body as Required<Reply>;
    const me = { userId, secureKey, alias };
    const path = `/genesys/2/chat/customer-support/${chatId}`;

    const accepted = await agent.acceptChat({ endpoint: "poll", nickname: "Bob" });
    expect(accepted.chatId).toBe(chatId);
    expect(accepted.userData).toEqual({ tier: "gold" });
    expect(accepted.emailAddress).toBe("ann@example.com");
    await agent.sendMessage({ chatId, text: "Hello, Ann" });
    await agent.sendTyping({ chatId, typing: true });

    const r1 = await post(`${path}/refresh`, { ...me, transcriptPosition: "2" });
    expect(r1.status).toBe(200);
    expect(types(r1.body)).toEqual(["2:ParticipantJoined:Agent", "3:Message:Agent:Hello, Ann", "-:TypingStarted:Agent"]);
    expect(r1.body).toMatchObject({ statusCode: 0, chatId, userId, secureKey, chatEnded: false, nextPosition: 4 });

    const sent = await post(`${path}/send`, { ...me, message: "My bill", transcriptPosition: "4" });
    // The agent is still typing: a poll lists who types now.
    expect(types(sent.body)).toEqual(["4:Message:Client:My bill", "-:TypingStarted:Agent"]);
    expect(sent.body.nextPosition).toBe(5);
    await agent.sendTyping({ chatId, typing: false });

    expect((await post(`${path}/startTyping`, { ...me, message: "I wo" })).body).toMatchObject({ statusCode: 0, chatEnded: false });
    expect((await agent.refresh({ chatId, fromPosition: 5n })).typing.map((p) => p.participantId)).toEqual([userId]);
    await post(`${path}/stopTyping`, me);
    expect((await agent.refresh({ chatId, fromPosition: 5n })).typing).toEqual([]);

    // Files both ways, within the limits file/limits reports.
    const limits = await post(`${path}/file/limits`, me);
    expect(limits.body.userData).toMatchObject({ "upload-max-files": "3", "upload-max-file-size": String(MAX_FILE), "upload-file-types": "txt:png", "used-upload-max-files": "0" });
    const mine = new TextEncoder().encode("the customer's receipt");
    const up = await upload(`${path}/file`, me, "receipt.txt", mine);
    expect(up.status).toBe(200);
    const myFileId = up.body.userData?.["file-id"] ?? "";
    const atAgent = await agent.downloadFile({ chatId, fileId: myFileId });
    expect(Buffer.from(atAgent.file?.file?.content ?? new Uint8Array()).toString()).toBe("the customer's receipt");
    const theirs = await agent.uploadFile({ chatId, file: { filename: "form.png", contentType: "image/png", content: new Uint8Array([137, 80, 78, 71]) } });
    const q = new URLSearchParams({ secureKey, userId, alias });
    const down = await fetch(`${base}${path}/file/${theirs.fileId}/download?${q.toString()}`);
    expect(down.status).toBe(200);
    expect(down.headers.get("content-type")).toBe("image/png");
    expect(down.headers.get("content-disposition")).toContain('filename="form.png"');
    expect([...new Uint8Array(await down.arrayBuffer())]).toEqual([137, 80, 78, 71]);
    expect((await post(`${path}/file/${myFileId}/delete`, me)).body.statusCode).toBe(0);

    // The rest of GMS's operations, each an event on the cursor.
    await post(`${path}/customNotice`, { ...me, message: "cobrowse-ready" });
    await post(`${path}/pushUrl`, { ...me, pushUrl: "https://example.com/bill" });
    await post(`${path}/updateNickname`, { ...me, nickname: "Ann B." });
    await post(`${path}/updateData`, { ...me, "userData[account]": "42" });
    const read = await post(`${path}/readReceipt`, { ...me, transcriptPosition: "3" });
    expect(read.body).toMatchObject({ statusCode: 0, chatEnded: false });

    const all = await post(`${path}/refresh`, { ...me, transcriptPosition: "1" });
    expect(types(all.body)).toEqual([
      "1:ParticipantJoined:Client",
      "2:ParticipantJoined:Agent",
      "3:Message:Agent:Hello, Ann",
      "4:Message:Client:My bill",
      "5:FileUploaded:Client",
      "6:FileUploaded:Agent",
      "7:FileDeleted:Client",
      "8:CustomNotice:Client:cobrowse-ready",
      "9:PushUrl:Client:https://example.com/bill",
      "10:NicknameUpdated:Client:Ann B.",
      "11:UserDataUpdated:Client",
      "12:MessageRead:Client:3",
    ]);
    // The keys of GMS's documented transcript entries, and no others.
    expect(Object.keys(all.body.messages?.[0] ?? {}).sort()).toEqual(["from", "index", "type", "utcTime"]);
    expect(Object.keys(all.body.messages?.[2] ?? {}).sort()).toEqual(["from", "index", "text", "type", "utcTime"]);
    expect(all.body.messages?.[4]?.userData).toMatchObject({ "file-id": myFileId, "file-name": "receipt.txt", "file-size": String(mine.length) });
    expect(all.body.messages?.[10]?.userData).toEqual({ tier: "gold", account: "42" });
    // The agent's gRPC transcript is the same cursor.
    const grpc = await agent.refresh({ chatId, fromPosition: 1n });
    expect(grpcTypes(grpc.events).map((s) => s.split(":")[0])).toEqual((all.body.messages ?? []).map((m) => String(m.index)));

    await agent.sendMessage({ chatId, text: "Anything else?" });
    const bye = await post(`${path}/disconnect`, me);
    expect(bye.body).toMatchObject({ statusCode: 0, chatEnded: true });
    const after = await post(`${path}/refresh`, { ...me, transcriptPosition: "13" });
    expect(after.body.chatEnded).toBe(true);
    expect(types(after.body)).toEqual(["13:Message:Agent:Anything else?", "14:ParticipantLeft:Client", "15:ChatEnded:Client"]);
    const late = await post(`${path}/send`, { ...me, message: "hello?" });
    expect(late.status).toBe(409);
    // GMS's advice for statusCode 2: read chatEnded.
    expect(late.body).toMatchObject({ statusCode: 2, chatId, chatEnded: true, errors: [{ code: 104 }] });
  });

  it("serves the customer's PushUrl and SendReadReceipt, which GMS's API needs, over gRPC too", async () => {
    const customer = createClient(ChatService, t.grpc);
    const chat = await customer.requestChat({ service: "customer-support", nickname: "Gus" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    await agent.acceptChat({ endpoint: "poll", nickname: "Bob" });
    expect((await errorOf(customer.sendReadReceipt({ ...key, readPosition: 3n }))).code).toBe(Code.FailedPrecondition);
    expect((await errorOf(customer.sendReadReceipt({ ...key, readPosition: 0n }))).code).toBe(Code.InvalidArgument);
    expect((await errorOf(customer.sendReadReceipt({ chatId: chat.chatId, secureKey: "wrong", readPosition: 1n }))).code).toBe(Code.PermissionDenied);
    expect((await errorOf(customer.pushUrl({ ...key, url: "javascript:alert(1)" }))).code).toBe(Code.InvalidArgument);
    expect((await customer.sendReadReceipt({ ...key, readPosition: 2n })).position).toBe(3n);
    expect((await customer.pushUrl({ ...key, url: "https://example.com/a" })).position).toBe(4n);
    const seen = await agent.refresh({ chatId: chat.chatId, fromPosition: 3n });
    expect(seen.events.map((e) => `${e.position}:${ChatEventType[e.type]}:${e.text}`)).toEqual(["3:MESSAGE_READ:2", "4:PUSH_URL:https://example.com/a"]);
    await agent.endChat({ chatId: chat.chatId });
    expect((await errorOf(customer.sendReadReceipt({ ...key, readPosition: 1n }))).code).toBe(Code.FailedPrecondition);
  });

  it("refuses hostile requests with GMS's error shape and changes nothing", async () => {
    const start = await post("/genesys/2/chat/lobby", { nickname: "Eve" });
    const { chatId, secureKey, userId, alias } = start.body as Required<Reply>;
    const me = { userId, secureKey, alias };
    const path = `/genesys/2/chat/lobby/${chatId}`;
    const transcript = async () => types((await post(`${path}/refresh`, { ...me, transcriptPosition: "1" })).body);
    const before = await transcript();
    const limitsUsed = async () => (await post(`${path}/file/limits`, me)).body.userData?.["used-upload-max-files"];

    const wrongKey = await post(`${path}/send`, { ...me, secureKey: "not-the-key", message: "hi" });
    expect(wrongKey.status).toBe(403);
    expect(wrongKey.body).toEqual({ statusCode: 2, chatId, userId, alias, errors: [{ code: 102, advice: "check chatId and secureKey", message: wrongKey.body.errors?.[0]?.message }] });
    expect(wrongKey.body.errors?.[0]?.message).not.toContain("not-the-key");
    const unknown = await post(`/genesys/2/chat/lobby/${UNKNOWN_CHAT}/send`, { ...me, message: "hi" });
    expect(unknown.status).toBe(403);
    expect(unknown.body.errors?.[0]?.code).toBe(102);
    expect((await post(`/genesys/2/chat/lobby/not-a-uuid/send`, { ...me, message: "hi" })).status).toBe(400);
    expect((await post(`${path}/send`, { ...me })).body).toMatchObject({ statusCode: 2, errors: [{ code: 100, message: "message is required" }] });
    expect((await post(`${path}/refresh`, { ...me, transcriptPosition: "-1" })).status).toBe(400);
    expect((await post(`${path}/readReceipt`, { ...me, transcriptPosition: "99" })).status).toBe(409);
    expect((await post("/genesys/2/chat/no-such-service", { nickname: "Eve" })).status).toBe(404);
    expect((await post("/genesys/2/chat/lobby", { subject: "no name" })).status).toBe(400);
    expect((await post(`${path}/explode`, me)).status).toBe(404);
    const get = await fetch(`${base}${path}/send?secureKey=${secureKey}&message=hi`);
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    const json = await post(`${path}/send`, {}, { body: JSON.stringify({ ...me, message: "hi" }), headers: { "content-type": "application/json" } });
    expect(json.status).toBe(415);
    expect(json.body.errors?.[0]?.code).toBe(106);

    // Multipart: a body cut short, no boundary, a file over the limit, a file where none is taken.
    const cut = await fetch(`${base}${path}/file`, {
      method: "POST",
      headers: { "content-type": "multipart/form-data; boundary=XyZ" },
      body: `--XyZ\r\ncontent-disposition: form-data; name="secureKey"\r\n\r\n${secureKey}\r\n--XyZ\r\ncontent-disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhalf a fi`,
    });
    expect(cut.status).toBe(400);
    expect(((await cut.json()) as Reply).errors?.[0]?.code).toBe(100);
    const noBoundary = await fetch(`${base}${path}/file`, { method: "POST", headers: { "content-type": "multipart/form-data" }, body: "x" });
    expect(noBoundary.status).toBe(400);
    const big = await upload(`${path}/file`, me, "big.txt", new Uint8Array(MAX_FILE + 1));
    expect(big.status).toBe(413);
    expect(big.body.errors?.[0]?.code).toBe(105);
    const wrongType = await upload(`${path}/file`, me, "virus.exe", new Uint8Array(10));
    expect(wrongType.status).toBe(400);
    const fileOnSend = await upload(`${path}/send`, { ...me, message: "with a file" }, "a.txt", new Uint8Array(3));
    expect(fileOnSend.status).toBe(400);
    const huge = await post(`${path}/send`, { ...me, message: "x".repeat(4 * 16_384 + 70 * 1024) });
    expect(huge.status).toBe(413);

    // A body announced too large is refused at once and its connection closed, not drained.
    const announced = await stalled(base, `${path}/file`, "multipart/form-data; boundary=XyZ", "--XyZ\r\n", 50_000_000);
    expect(announced).toMatch(/^HTTP\/1\.1 413 /);
    expect(announced.toLowerCase()).toContain("connection: close");
    const bayeux = await stalled(base, "/genesys/cometd/connect", "application/json", "[", 50_000_000);
    expect(bayeux).toMatch(/^HTTP\/1\.1 413 /);

    expect(await limitsUsed()).toBe("0");
    expect(await transcript()).toEqual(before);
  });

  it("carries a whole chat over CometD against an agent on gRPC, and resumes from a transcript position", async () => {
    const channel = "/service/chatV2/async";
    const got: Reply[] = [];
    const client = cometd(base);
    const hs = await new Promise<Message>((resolve) => client.handshake(resolve));
    expect(hs.successful).toBe(true);
    client.addListener(channel, (m) => got.push(m.data as Reply));
    const seen = (what: string, pred: (r: Reply) => boolean) => waitFor(what, () => got.find(pred));
    const withType = (type: string, text?: string) => (r: Reply) => (r.messages ?? []).some((m) => m.type === type && (text === undefined || m.text === text));
    try {
      client.publish(channel, { operation: "requestChat", nickname: "Cora", subject: "async", userData: { lang: "en" } });
      const started = await seen("requestChat's reply", (r) => r.secureKey !== undefined);
      expect(types(started)).toEqual(["1:ParticipantJoined:Client"]);
      const { chatId, secureKey, userId } = started as Required<Reply>;

      const accepted = await agent.acceptChat({ endpoint: "async", nickname: "Bob", waitSeconds: 5 });
      expect(accepted.chatId).toBe(chatId);
      expect(accepted.userData).toEqual({ lang: "en" });
      await seen("the agent joining", withType("ParticipantJoined"));
      await agent.sendTyping({ chatId, typing: true });
      await seen("the agent typing", withType("TypingStarted"));
      await agent.sendMessage({ chatId, text: "Hi Cora" });
      const hi = await seen("the agent's message", withType("Message", "Hi Cora"));
      expect(hi).toMatchObject({ statusCode: 0, chatId, userId, chatEnded: false, nextPosition: 4 });

      client.publish(channel, { operation: "startTyping", chatId, secureKey, userId });
      await waitFor("the customer typing, at the agent", async () => (await agent.refresh({ chatId, fromPosition: 4n })).typing.length === 1);
      client.publish(channel, { operation: "sendMessage", chatId, secureKey, userId, message: "Hello over CometD" });
      await seen("the customer's own message", withType("Message", "Hello over CometD"));
      const fromAgent = await agent.refresh({ chatId, fromPosition: 4n });
      expect(fromAgent.events.map((e) => e.text)).toContain("Hello over CometD");
      // An operation without chatId acts on the chat the session follows.
      client.publish(channel, { operation: "customNotice", message: "bound" });
      await seen("the notice", withType("CustomNotice", "bound"));

      // Another Bayeux session resumes from position 3: the replay, then live events.
      const resumed: Reply[] = [];
      const second = cometd(base);
      expect((await new Promise<Message>((resolve) => second.handshake(resolve))).successful).toBe(true);
      second.addListener(channel, (m) => resumed.push(m.data as Reply));
      second.publish(channel, { operation: "requestNotifications", chatId, secureKey, userId, transcriptPosition: 3 });
      await waitFor("the replay", () => resumed.some(withType("CustomNotice", "bound")));
      expect(resumed.flatMap(types).filter((s) => !s.startsWith("-"))).toEqual(["3:Message:Agent:Hi Cora", "4:Message:Client:Hello over CometD", "5:CustomNotice:Client:bound"]);
      // A wrong key gets GMS's error, on the channel.
      second.publish(channel, { operation: "requestNotifications", chatId, secureKey: "wrong", transcriptPosition: 1 });
      await waitFor("the refusal", () => resumed.find((r) => r.statusCode === 2 && r.errors?.[0]?.code === 102));
      await new Promise<void>((resolve) => second.disconnect(() => resolve()));

      await agent.sendMessage({ chatId, text: "Bye" });
      await seen("the agent's goodbye", withType("Message", "Bye"));
      client.publish(channel, { operation: "disconnect", chatId, secureKey, userId });
      const ended = await seen("the end", (r) => r.chatEnded === true && withType("ChatEnded")(r));
      expect(ended.statusCode).toBe(0);
      const grpc = await agent.refresh({ chatId, fromPosition: 1n });
      const streamed = got.flatMap(types).filter((s) => !s.startsWith("-")).map((s) => s.split(":")[0]);
      expect([...new Set(streamed)]).toEqual(grpcTypes(grpc.events).map((s) => s.split(":")[0]));
    } finally {
      await new Promise<void>((resolve) => client.disconnect(() => resolve()));
    }
  });

  it("serves the chat API and CometD over HTTP/2 too", async () => {
    const form = await h2post(base, "/genesys/2/chat/lobby", "application/x-www-form-urlencoded", "nickname=Hal");
    expect(form.status).toBe(200);
    expect(JSON.parse(form.text)).toMatchObject({ statusCode: 0, messages: [{ type: "ParticipantJoined" }] });
    const multipart = await h2post(base, "/genesys/2/chat/lobby", "multipart/form-data; boundary=X", '--X\r\ncontent-disposition: form-data; name="nickname"\r\n\r\nIda\r\n--X--\r\n');
    expect(JSON.parse(multipart.text)).toMatchObject({ statusCode: 0, messages: [{ from: { nickname: "Ida" } }] });
    const refused = await h2post(base, "/genesys/2/chat/lobby", "text/plain", "nickname=Hal");
    expect(refused.status).toBe(415);
    const handshake = await h2post(base, "/genesys/cometd/handshake", "application/json", JSON.stringify([{ channel: "/meta/handshake", version: "1.0", supportedConnectionTypes: ["long-polling"] }]));
    expect(JSON.parse(handshake.text)).toMatchObject([{ channel: "/meta/handshake", successful: true }]);
  });

  it("refuses what is not Bayeux, and channels other than chat services", async () => {
    const url = `${base}/genesys/cometd`;
    const notJson = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" });
    expect(notJson.status).toBe(400);
    const noChannel = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify([{ data: 1 }]) });
    expect(noChannel.status).toBe(400);
    expect((await fetch(url, { method: "POST", headers: { "content-type": "text/plain" }, body: "[]" })).status).toBe(415);
    expect((await fetch(url)).status).toBe(405);
    const huge = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify([{ channel: "/meta/handshake", ext: "x".repeat(200 * 1024) }]) });
    expect(huge.status).toBe(413);
    expect(((await huge.json()) as Reply).errors?.[0]?.code).toBe(105);
    const client = cometd(base);
    expect((await new Promise<Message>((resolve) => client.handshake(resolve))).successful).toBe(true);
    try {
      const denied = await new Promise<Message>((resolve) => client.publish("/chat/broadcast", { hello: 1 }, resolve));
      expect(denied.successful).toBe(false);
      const sub = await new Promise<Message>((resolve) => client.subscribe("/chat/broadcast", () => undefined, resolve));
      expect(sub.successful).toBe(false);
      const got: Reply[] = [];
      client.addListener("/service/chatV2/async", (m) => got.push(m.data as Reply));
      client.publish("/service/chatV2/async", { operation: "sendMessage", chatId: UNKNOWN_CHAT, secureKey: "x", message: "hi" });
      client.publish("/service/chatV2/async", { operation: "explode" });
      await waitFor("two refusals", () => got.length >= 2);
      expect(got.map((r) => r.errors?.[0]?.code).sort()).toEqual([100, 102]);
    } finally {
      await new Promise<void>((resolve) => client.disconnect(() => resolve()));
    }
  });
});

/** h2post POSTs a body over HTTP/2 without TLS (h2c, as gRPC backends connect) and returns the status and the text. */
function h2post(url: string, path: string, type: string, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const client = http2.connect(url);
    client.on("error", reject);
    const req = client.request({ ":method": "POST", ":path": path, "content-type": type });
    let text = "";
    let status = 0;
    req.on("response", (h) => (status = Number(h[":status"])));
    req.on("data", (c: Buffer) => (text += c.toString("utf8")));
    req.on("end", () => {
      client.close();
      resolve({ status, text });
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** stalled sends a request whose body stops short of its content-length, and returns what comes back. */
function stalled(url: string, path: string, contentType: string, part: string, declared = part.length + 100): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => {
      socket.write(`POST ${path} HTTP/1.1\r\nhost: ${hostname}\r\ncontent-type: ${contentType}\r\ncontent-length: ${declared}\r\n\r\n${part}`);
    });
    let got = "";
    socket.on("data", (chunk: Buffer) => (got += chunk.toString("utf8")));
    socket.on("close", () => resolve(got));
    socket.on("error", reject);
    // A bound on the test itself: the server must have answered long before.
    socket.setTimeout(15_000, () => socket.destroy(new Error("no answer from the server")));
  });
}

describe("GMS chat API v2 and CometD with a peer too slow to send its body", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer("sqlite", { config: { ...config, server: { request_timeout_seconds: 1 } } });
  });
  afterAll(() => t?.close());

  it("answer 408 once the request timeout has passed, and store nothing", async () => {
    const start = await fetch(`${t.server.url}/genesys/2/chat/lobby`, { method: "POST", body: new URLSearchParams({ nickname: "Sid" }) });
    const { chatId, secureKey } = (await start.json()) as Required<Reply>;
    const path = `/genesys/2/chat/lobby/${chatId}`;
    const form = await stalled(t.server.url, `${path}/send`, "application/x-www-form-urlencoded", `secureKey=${secureKey}&message=half`);
    expect(form).toMatch(/^HTTP\/1\.1 408 /);
    const multipart = await stalled(t.server.url, `${path}/file`, "multipart/form-data; boundary=XyZ", `--XyZ\r\ncontent-disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhal`);
    expect(multipart).toMatch(/^HTTP\/1\.1 408 /);
    const bayeux = await stalled(t.server.url, "/genesys/cometd/handshake", "application/json", '[{"channel":"/meta/handshake"');
    expect(bayeux).toMatch(/^HTTP\/1\.1 408 /);
    const after = await fetch(`${t.server.url}${path}/refresh`, { method: "POST", body: new URLSearchParams({ secureKey, transcriptPosition: "1" }) });
    expect(types((await after.json()) as Reply)).toEqual(["1:ParticipantJoined:Client"]);
  });
});
