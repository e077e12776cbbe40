import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { AgentService, type QueueUpdateSchema } from "../../gen/gms/v1/agent_pb.js";
import type { Actor, Chats, QueueState } from "../domain/chat/index.js";
import { callerOf, hasRole, type Identity } from "./auth.js";
import { CHAT_HEARTBEAT, chatEvent, chatFileMessage, fileLimitsMessage, newFile, participantMessage, refreshResponse } from "./chat-service.js";
import { exactNumber, timestamp, toEntries } from "./convert.js";
import type { StreamKeepalive } from "./keepalive.js";
import { connectStream, serverStream } from "./lean-rpc.js";

/** agentAccess says who may call each AgentService RPC: agents (admin may call all). */
export const agentAccess = {
  acceptChat: ["agent"],
  sendMessage: ["agent"],
  sendTyping: ["agent"],
  refresh: ["agent"],
  subscribe: ["agent"],
  leaveChat: ["agent"],
  endChat: ["agent"],
  pushUrl: ["agent"],
  sendCustomNotice: ["agent"],
  transferChat: ["agent"],
  uploadFile: ["agent"],
  downloadFile: ["agent"],
  deleteFile: ["agent"],
  getFileLimits: ["agent"],
  watchQueue: ["agent"],
} as const;

/**
 * agentActor finds the caller's participant in the chat: a joined agent, or a supervisor (an admin,
 * or an agent its delegating key vouches is one).
 */
function agentActor(chats: Chats, chatId: string, caller: Identity): Promise<Actor> {
  return chats.agent(chatId, caller.name, hasRole(caller, "admin") || caller.supervisor === true);
}

/**
 * agentStreams are AgentService's server streams, served through connect and by the lean path
 * (lean-path.ts) alike: Subscribe (a chat's events, as its agent) and WatchQueue (an
 * endpoint's waiting chats), with heartbeats while they are quiet, until their maximum age (keepalive.ts).
 */
export function agentStreams(chats: Chats, keepalive?: StreamKeepalive) {
  return {
    subscribe: serverStream(
      AgentService.method.subscribe,
      async (req, caller, signal, opened) => chats.subscribe(await agentActor(chats, req.chatId, caller), exactNumber(req.fromPosition, "from_position"), signal, opened),
      chatEvent,
      { keepalive, heartbeat: CHAT_HEARTBEAT },
    ),
    // A quiet queue's heartbeat repeats its last state, marked `heartbeat`.
    watchQueue: serverStream(AgentService.method.watchQueue, async (req, _caller, signal) => chats.watchQueue(req.endpoint, signal), queueUpdate, {
      keepalive,
      heartbeat: { repeat: (q) => ({ ...queueUpdate(q), heartbeat: true }) },
    }),
  };
}

/** queueUpdate maps a queue's state onto the QueueUpdate message. */
function queueUpdate(q: QueueState): MessageInitShape<typeof QueueUpdateSchema> {
  return {
    endpoint: q.endpoint,
    time: timestamp(q.time),
    waiting: q.waiting.map((w) => ({
      chatId: w.chatId,
      subject: w.subject,
      nickname: w.nickname,
      queuedAt: timestamp(w.queuedAt),
      waitSeconds: BigInt(Math.max(0, Math.floor((q.time - w.queuedAt) / 1000))),
    })),
  };
}

/** agentService maps AgentService RPCs onto the chat rules, acting as the caller's participant; `keepalive` keeps its streams alive through proxies. */
export function agentService(chats: Chats, shutdown: AbortSignal, keepalive?: StreamKeepalive): ServiceImpl<typeof AgentService> {
  const actor = (chatId: string, ctx: HandlerContext): Promise<Actor> => agentActor(chats, chatId, callerOf(ctx));
  const streams = agentStreams(chats, keepalive);
  return {
    async acceptChat(req, ctx) {
      const a = await chats.accept(req.endpoint, req.nickname, callerOf(ctx).name, req.waitSeconds, AbortSignal.any([ctx.signal, shutdown]));
      return {
        chatId: a.chat.id,
        participantId: a.participantId,
        events: a.events.map(chatEvent),
        nextPosition: BigInt(a.nextPosition),
        appData: toEntries(a.appData),
        subject: a.chat.subject,
        userData: a.chat.userData,
        sessionId: a.chat.sessionId,
        customer: participantMessage(a.customer),
        emailAddress: a.chat.emailAddress,
      };
    },
    async sendMessage(req, ctx) {
      return { position: BigInt(await chats.send(await actor(req.chatId, ctx), { text: req.text, messageType: req.messageType, clientMessageId: req.clientMessageId })) };
    },
    async sendTyping(req, ctx) {
      await chats.typing(await actor(req.chatId, ctx), req.typing, req.text);
      return {};
    },
    async refresh(req, ctx) {
      return refreshResponse(await chats.refresh(await actor(req.chatId, ctx), exactNumber(req.fromPosition, "from_position"), req.waitSeconds, AbortSignal.any([ctx.signal, shutdown])));
    },
    subscribe: connectStream(streams.subscribe),
    async leaveChat(req, ctx) {
      await chats.leave(await actor(req.chatId, ctx));
      return {};
    },
    async endChat(req, ctx) {
      await chats.end(await actor(req.chatId, ctx));
      return {};
    },
    async pushUrl(req, ctx) {
      return { position: BigInt(await chats.pushUrl(await actor(req.chatId, ctx), req.url)) };
    },
    async sendCustomNotice(req, ctx) {
      return { position: BigInt(await chats.customNotice(await actor(req.chatId, ctx), req.text)) };
    },
    async transferChat(req, ctx) {
      await chats.transfer(await actor(req.chatId, ctx), req.endpoint);
      return {};
    },
    async uploadFile(req, ctx) {
      const r = await chats.uploadFile(await actor(req.chatId, ctx), newFile(req.file));
      return { fileId: r.fileId, position: BigInt(r.position) };
    },
    async downloadFile(req, ctx) {
      return { file: chatFileMessage(await chats.downloadFile(await actor(req.chatId, ctx), req.fileId)) };
    },
    async deleteFile(req, ctx) {
      return { position: BigInt(await chats.deleteFile(await actor(req.chatId, ctx), req.fileId)) };
    },
    async getFileLimits(req, ctx) {
      return { limits: fileLimitsMessage(await chats.fileLimits(await actor(req.chatId, ctx))) };
    },
    watchQueue: connectStream(streams.watchQueue),
  };
}
