// opengms from plain Node over gRPC with @grpc/grpc-js and @grpc/proto-loader, reading the .proto
// files of contract/ at run time (no code generation), and protobufjs (which proto-loader is built
// on) to decode error details. The same steps as examples/python/gms_example.py:
//   - RequestInteraction (the shipped iPhoneService), MatchInteraction, the same match again:
//     NOT_FOUND with a gms.v1.NoMatch detail, decoded from grpc-status-details-bin (google.rpc.Status);
//   - with --exhaust GROUP: a locking group reserved until RESOURCE_EXHAUSTED (gms.v1.PoolExhausted),
//     then the sessions cancelled;
//   - a customer's chat: RequestChat, then Subscribe, printing every event until CHAT_ENDED and
//     resuming from the last position + 1 if the stream ends before; unless --no-agent this script
//     is the agent too (AcceptChat, a message, EndChat).
// Usage: node examples/node-grpc/gms-example.mjs [ADDRESS] [--key KEY] [--exhaust GROUP] [--no-agent]
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const CONTRACT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "contract");
const FILES = ["gms/v1/access.proto", "gms/v1/session.proto", "gms/v1/chat.proto", "gms/v1/agent.proto", "gms/v1/error_details.proto", "google/rpc/status.proto"];
const DEADLINE_MS = 10_000;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { key: { type: "string" }, exhaust: { type: "string" }, "no-agent": { type: "boolean" }, endpoint: { type: "string", default: "default" } },
});
const target = (positionals[0] ?? "localhost:8080").replace(/^[a-z]+:\/\//, "").replace(/\/$/, "");

// Enums as their names and 64-bit integers as strings, as the proto3 JSON mapping has them.
const definition = protoLoader.loadSync(FILES, { includeDirs: [CONTRACT], keepCase: false, longs: String, enums: String, defaults: true });
const gms = grpc.loadPackageDefinition(definition).gms.v1;
const credentials = grpc.credentials.createInsecure();
const access = new gms.AccessService(target, credentials);
const sessions = new gms.SessionService(target, credentials);
const chat = new gms.ChatService(target, credentials);
const agent = new gms.AgentService(target, credentials);

const metadata = new grpc.Metadata();
if (values.key !== undefined) metadata.set("authorization", `Bearer ${values.key}`);

/** call makes a unary call and resolves with its reply. */
function call(client, method, request, deadlineMs = DEADLINE_MS) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + deadlineMs }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

// The error details: google.rpc.Status in the grpc-status-details-bin trailer, its details (Any)
// decoded by their type URL's message name (a type this program does not know is skipped: a newer
// server may add details).
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => join(CONTRACT, target);
root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto", "gms/v1/error_details.proto"]);
const Status = root.lookupType("google.rpc.Status");

/** details decodes a failed call's error details into [typeName, plain object] pairs. */
function details(err) {
  const [bin] = err.metadata?.get("grpc-status-details-bin") ?? [];
  if (bin === undefined) return [];
  return Status.decode(bin).details.flatMap((any) => {
    const name = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    const type = root.lookup(name);
    if (!(type instanceof protobuf.Type)) return [];
    return [[name, type.toObject(type.decode(any.value), { enums: String, longs: String })]];
  });
}

async function accessAndMatch() {
  const reply = await call(access, "RequestInteraction", { service: "iPhoneService", phoneNumber: "6504669999" });
  const number = reply.access.accessNumber;
  console.log(`RequestInteraction: session ${reply.session.id}, call ${number} (group ${reply.access.resourceGroup})`);
  const match = { accessNumber: number, phoneNumber: "6504669999", returnData: true };
  const matched = await call(access, "MatchInteraction", match);
  console.log(`MatchInteraction: matched session ${matched.matches[0].sessionId}`);
  try {
    await call(access, "MatchInteraction", match);
    throw new Error("MatchInteraction again should have found nothing");
  } catch (err) {
    if (err.code !== grpc.status.NOT_FOUND) throw err;
    const reasons = details(err).filter(([name]) => name === "gms.v1.NoMatch").map(([, d]) => d.reason);
    console.log(`MatchInteraction again: NOT_FOUND, NoMatch ${reasons.join(", ")}`);
  }
}

async function exhaust(group) {
  const made = [];
  try {
    while (made.length < 10_000) {
      const caller = `+1650555${String(made.length).padStart(4, "0")}`;
      made.push((await call(access, "RequestInteraction", { resourceGroup: group, phoneNumber: caller })).session.id);
    }
  } catch (err) {
    if (err.code !== grpc.status.RESOURCE_EXHAUSTED) throw err;
    for (const [name, d] of details(err)) {
      if (name !== "gms.v1.PoolExhausted") continue;
      const at = new Date(Number(d.nextFreeAt.seconds) * 1000 + Math.floor(d.nextFreeAt.nanos / 1e6)).toISOString();
      console.log(`RequestInteraction on ${group}: ${made.length} reserved, then RESOURCE_EXHAUSTED, PoolExhausted group ${d.resourceGroup}, next number free at ${at} (retry after ${d.retryAfterSeconds} s)`);
    }
  } finally {
    for (const sessionId of made) await call(sessions, "CancelSession", { sessionId });
    console.log(`cancelled ${made.length} sessions`);
  }
}

/**
 * follow prints the customer's chat from its first event until CHAT_ENDED, resuming a stream that
 * ends before it from the last position + 1; `onAgentMessage` runs at the agent's first message.
 */
async function follow(chatId, secureKey, onAgentMessage) {
  let last = 0;
  let greeted = false;
  for (;;) {
    const stream = chat.Subscribe({ chatId, secureKey, fromPosition: String(last + 1) }, metadata);
    try {
      for await (const e of stream) {
        if (e.type === "CHAT_EVENT_TYPE_HEARTBEAT") continue; // the server's sign of life on a quiet stream
        console.log(`event ${e.position} ${e.type} ${e.from.nickname}${e.text ? `: ${e.text}` : ""}`);
        if (Number(e.position) > 0) last = Number(e.position);
        if (e.type === "CHAT_EVENT_TYPE_MESSAGE" && e.from.type === "PARTICIPANT_TYPE_AGENT" && !greeted) {
          greeted = true;
          await call(chat, "SendMessage", { chatId, secureKey, text: "Thank you!", clientMessageId: "thanks-1" });
          onAgentMessage();
        }
        if (e.type === "CHAT_EVENT_TYPE_CHAT_ENDED") return;
      }
      console.log(`the stream ended at position ${last}: resuming`);
    } catch (err) {
      if (err.code !== grpc.status.UNAVAILABLE) throw err;
      console.log(`the stream broke (UNAVAILABLE) at position ${last}: resuming`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

async function chatWithAgent(playAgent, endpoint) {
  const started = await call(chat, "RequestChat", { nickname: "Ann", subject: "Order 42" });
  console.log(`RequestChat: chat ${started.chatId}`);
  let greeted;
  const seen = new Promise((resolve) => (greeted = resolve));
  const reading = follow(started.chatId, started.secureKey, greeted);
  if (playAgent) {
    const accepted = await call(agent, "AcceptChat", { endpoint, nickname: "Bob", waitSeconds: 10 }, DEADLINE_MS + 10_000);
    if (accepted.chatId !== started.chatId) throw new Error(`another chat (${accepted.chatId}) was waiting on endpoint ${endpoint}: run this against a quiet development server, or with --no-agent`);
    await call(agent, "SendMessage", { chatId: started.chatId, text: "Hello from the agent" });
    await seen;
    await call(agent, "EndChat", { chatId: started.chatId });
  } else {
    console.log(`waiting for an agent to accept the chat on endpoint ${endpoint}`);
  }
  await reading;
}

try {
  await accessAndMatch();
  if (values.exhaust !== undefined) await exhaust(values.exhaust);
  await chatWithAgent(!values["no-agent"], values.endpoint);
  console.log("done");
} finally {
  for (const client of [access, sessions, chat, agent]) client.close();
}
