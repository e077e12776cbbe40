// GMS's asynchronous chat: CometD (Bayeux) at /genesys/cometd, served by the CometD project's
// server library (cometd-nodejs-server), long-polling. A customer's client publishes operations on
// the service channel /service/chatV2/{service} (requestChat, sendMessage, startTyping, stopTyping,
// disconnect, customNotice, pushUrl, updateNickname, updateData, readReceipt, and
// requestNotifications to resume from a transcript position) and receives, on the same channel, the
// replies and then the chat's events as GMS chat v2 replies (src/http/gms-chat.ts). Every operation
// is a call of the served RPCs through `local`, and the events come from ChatService.Subscribe, the
// stream gRPC clients read: what another node stores reaches this node's Bayeux sessions the way it
// reaches its gRPC streams. A Bayeux session lives in one node's memory, so a load balancer must
// keep a client on the node that gave it its session (see docs/gms-migration.md (Chat)).
import { createClient, type CallOptions } from "@connectrpc/connect";
// The library is CommonJS: its functions are its default export's properties under Node's ESM.
import cometdServer, { type ServerMessage, type ServerSession } from "cometd-nodejs-server";
import { ChatEventType } from "../../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../../gen/gms/v1/chat_pb.js";
import { derived } from "../config.js";
import { GmsHttpError, MethodRefusal, readBody, type BodyLimits } from "./form.js";
import { ALIAS, chatV2Failure, createChatV2, gmsMessage, type ChatV2Reply, type Operation, type Params } from "./gms-chat.js";
import { gmsCall, noteRefusal, sendJson } from "./gms-http.js";
import { pathOf, type HttpRequest, type HttpResponse, type HttpRouteFactory } from "./routes.js";

/** COMETD_PATH is where GMS serves CometD; the client may append the message type (/handshake, /connect...). */
export const COMETD_PATH = "/genesys/cometd";

/** CHANNEL_PREFIX starts every chat service channel. */
const CHANNEL_PREFIX = "/service/chatV2/";

/** SERVICE_CHANNEL is a chat service channel: the service's name as configuration spells names. */
const SERVICE_CHANNEL = /^\/service\/chatV2\/[A-Za-z0-9_.-]{1,128}$/;

/** MAX_MESSAGES bounds the Bayeux messages of one request (a client batches a few at most). */
const MAX_MESSAGES = 100;

/** The GMS operations published on a service channel, onto GMS chat v2's by their URL names. */
const OPERATIONS: Record<string, Operation> = {
  sendMessage: "send",
  startTyping: "startTyping",
  stopTyping: "stopTyping",
  disconnect: "disconnect",
  customNotice: "customNotice",
  pushUrl: "pushUrl",
  updateNickname: "updateNickname",
  updateData: "updateData",
  readReceipt: "readReceipt",
};

/** Binding is the chat a Bayeux session follows, and the stream that feeds it. */
interface Binding {
  chatId: string;
  secureKey: string;
  userId: string;
  stream: AbortController;
}

/** SessionState is what this node keeps of one Bayeux session. */
interface SessionState {
  /** ended aborts when the session is removed (disconnected or expired) or the server shuts down. */
  ended: AbortController;
  binding: Binding | undefined;
}

/**
 * paramsOf turns a published message's data into GMS parameters: text, numbers and booleans as
 * text, `userData` (an object of texts) as `userData[key]`. Anything else is the client's mistake.
 */
function paramsOf(data: Record<string, unknown>): Params {
  const p: Params = new Map();
  for (const [k, v] of Object.entries(data)) {
    if (k === "userData" && typeof v === "object" && v !== null && !Array.isArray(v)) {
      for (const [uk, uv] of Object.entries(v as Record<string, unknown>)) {
        if (typeof uv !== "string") throw new GmsHttpError("invalid", `userData.${uk} must be text`);
        p.set(`userData[${uk}]`, uv);
      }
    } else if (typeof v === "string") p.set(k, v);
    else if (typeof v === "number" || typeof v === "boolean") p.set(k, String(v));
    else if (v !== null && v !== undefined) throw new GmsHttpError("invalid", `${k} must be text`);
  }
  return p;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * bayeuxMessages checks that a body is Bayeux: a message object or an array of them, each with a
 * channel name. The library trusts its input; what it is given here is known to be well formed.
 */
function bayeuxMessages(body: Buffer): ServerMessage[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    throw new GmsHttpError("invalid", "the body is not JSON");
  }
  const list = Array.isArray(parsed) ? parsed : [parsed];
  if (list.length === 0 || list.length > MAX_MESSAGES) throw new GmsHttpError("invalid", `send 1 to ${MAX_MESSAGES} Bayeux messages`);
  for (const m of list) {
    if (!isObject(m) || typeof m["channel"] !== "string") throw new GmsHttpError("invalid", "every Bayeux message needs a channel");
    if (m["data"] !== undefined && m["channel"].startsWith("/service/") && !isObject(m["data"])) throw new GmsHttpError("invalid", "a service message's data must be an object");
  }
  return list as ServerMessage[];
}

/**
 * cometdRoute serves CometD at /genesys/cometd for GMS's asynchronous chat. Its sessions, and the
 * chat streams that feed them, end when the server shuts down.
 */
export const cometdRoute: HttpRouteFactory = (deps) => {
  const { local, config, log, shutdown } = deps;
  const chat = createClient(ChatService, local);
  const v2 = createChatV2(chat);
  // A held /meta/connect is answered within 20 s, well under the server's and the usual proxies'
  // idle timeouts; a session whose client has not come back for 15 s is gone.
  const server = cometdServer.createCometDServer({ timeout: 20_000, maxInterval: 15_000 });
  const states = new Map<string, SessionState>();
  /** callers are the HTTP call headers each incoming message came with (the caller's credentials). */
  const callers = new WeakMap<object, Readonly<Record<string, string>>>();
  // A Bayeux body carries a message (JSON may double it) and some user data.
  const limits = derived(config, (c): BodyLimits => ({ maxBytes: c.chat.max_message_length * 2 + 64 * 1024, limit: "chat.max_message_length", mediaTypes: ["application/json", "text/json"] }));

  server.policy = {
    canHandshake: (_s, _m, callback) => callback(undefined, !shutdown.aborted),
    canCreate: (_s, _m, name, callback) => callback(undefined, name.startsWith("/meta/") || SERVICE_CHANNEL.test(name)),
    canSubscribe: (_s, _m, channel, callback) => callback(undefined, SERVICE_CHANNEL.test(channel.name)),
    canPublish: (_s, _m, channel, callback) => callback(undefined, SERVICE_CHANNEL.test(channel.name)),
  };

  server.addListener("sessionAdded", (session: ServerSession) => {
    states.set(session.id, { ended: new AbortController(), binding: undefined });
  });
  server.addListener("sessionRemoved", (session: ServerSession) => {
    states.get(session.id)?.ended.abort();
    states.delete(session.id);
  });
  shutdown.addEventListener(
    "abort",
    () => {
      for (const s of states.values()) s.ended.abort();
      server.close();
    },
    { once: true },
  );

  const deliver = (session: ServerSession, channel: string, reply: ChatV2Reply) => session.deliver(null, channel, reply);

  /** follow streams the bound chat's events from `from` to the session, until it ends or is replaced. */
  async function follow(session: ServerSession, state: SessionState, channel: string, binding: Binding, from: number, headers: Record<string, string>) {
    state.binding?.stream.abort();
    state.binding = binding;
    const signal = AbortSignal.any([binding.stream.signal, state.ended.signal]);
    const { chatId, secureKey, userId } = binding;
    try {
      for await (const e of chat.subscribe({ chatId, secureKey, fromPosition: BigInt(from) }, { headers, signal })) {
        const reply: ChatV2Reply = { statusCode: 0, chatId, userId, secureKey, alias: ALIAS, chatEnded: e.type === ChatEventType.CHAT_ENDED, messages: [gmsMessage(e)] };
        if (e.position > 0n) reply.nextPosition = Number(e.position) + 1;
        deliver(session, channel, reply);
      }
    } catch (e) {
      if (!signal.aborted) deliver(session, channel, { ...chatV2Failure(e).reply, chatId, userId, alias: ALIAS });
    }
  }

  /** operate runs one published operation and delivers its answer to the session. */
  async function operate(session: ServerSession, message: ServerMessage, headers: Record<string, string>) {
    const channel = message.channel;
    const state = states.get(session.id);
    if (state === undefined) return;
    const call: CallOptions = { headers, signal: state.ended.signal };
    let p: Params | undefined;
    try {
      const data = isObject(message.data) ? message.data : {};
      p = paramsOf(data);
      const operation = p.get("operation") ?? "";
      const bound = state.binding;
      // An operation names its chat, or acts on the chat the session follows.
      if (bound !== undefined && !p.has("chatId")) {
        p.set("chatId", bound.chatId);
        if (!p.has("secureKey")) p.set("secureKey", bound.secureKey);
        if (!p.has("userId")) p.set("userId", bound.userId);
      }
      const chatId = p.get("chatId") ?? "";
      if (operation === "requestChat") {
        const reply = await v2.requestChat(channel.slice(CHANNEL_PREFIX.length), p, call);
        deliver(session, channel, reply);
        const binding = { chatId: reply.chatId ?? "", secureKey: reply.secureKey ?? "", userId: reply.userId ?? "", stream: new AbortController() };
        void follow(session, state, channel, binding, reply.nextPosition ?? 1, headers);
        return;
      }
      if (chatId === "") throw new GmsHttpError("invalid", "chatId is required");
      if (operation === "requestNotifications") {
        const from = Number(p.get("transcriptPosition") ?? "1");
        if (!Number.isSafeInteger(from) || from < 0) throw new GmsHttpError("invalid", "transcriptPosition must be a whole number from 0");
        const binding = { chatId, secureKey: p.get("secureKey") ?? "", userId: p.get("userId") ?? "", stream: new AbortController() };
        void follow(session, state, channel, binding, from, headers);
        return;
      }
      const op = OPERATIONS[operation];
      if (op === undefined || !Object.hasOwn(OPERATIONS, operation)) throw new GmsHttpError("notFound", `unknown operation ${JSON.stringify(operation.slice(0, 64))}`);
      deliver(session, channel, await v2.operate(op, chatId, p, call));
    } catch (e) {
      if (state.ended.signal.aborted) return;
      const chatId = p?.get("chatId");
      deliver(session, channel, (p === undefined || chatId === undefined || chatId === "" ? chatV2Failure(e) : await v2.failure(e, chatId, p, call)).reply);
    }
  }

  server.createServerChannel(`${CHANNEL_PREFIX}*`).addListener("message", (session: ServerSession, _channel: unknown, message: ServerMessage, callback: () => void) => {
    // The publish itself succeeds at once; the operation's answer follows on the channel.
    callback();
    void operate(session, message, callers.get(message) ?? {}).catch((e: unknown) => log.error({ err: e }, "cometd operation failed"));
  });

  async function serve(req: HttpRequest, res: HttpResponse) {
    // The body must have arrived by the server's request timeout, as every request's must.
    const call = gmsCall(req, res, deps);
    try {
      if (req.method !== "POST") throw new MethodRefusal("POST");
      const messages = bayeuxMessages(await readBody(req, limits(), call));
      for (const m of messages) callers.set(m, call.headers);
      // The library reads a body it is given, instead of reading one without a limit itself.
      (req as HttpRequest & { body?: unknown }).body = messages;
      server.handle(req, res);
    } catch (e) {
      const { status, reply } = chatV2Failure(e);
      noteRefusal(e, call);
      sendJson(res, status, reply, call, e instanceof MethodRefusal ? { allow: e.allow } : {});
    }
  }

  return (req, res) => {
    const path = pathOf(req);
    if (path !== COMETD_PATH && !path.startsWith(`${COMETD_PATH}/`)) return false;
    void serve(req, res);
    return true;
  };
};
