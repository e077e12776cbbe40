import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ChatService } from "../../gen/gms/v1/chat_pb.js";
import {
  ChatEventType,
  ParticipantType,
  type ChatEventSchema,
  type ChatFileSchema,
  type FileLimitsSchema,
  type ParticipantSchema,
} from "../../gen/gms/v1/chat_event_pb.js";
import type { Chats, DownloadedFile, FileLimitsView, NewFile, RefreshResult } from "../domain/chat/index.js";
import type { ChatEventRecord, EventKind, ParticipantKind, ParticipantRef } from "../domain/chat/vocabulary.js";
import { callerOf } from "./auth.js";
import { exactNumber, fromEntries, timestamp } from "./convert.js";
import { requestKey } from "./request-key.js";
import type { StreamKeepalive } from "./keepalive.js";
import { connectStream, connectUnary, serverStream, unaryRpc } from "./lean-rpc.js";

const eventTypes: Record<EventKind, ChatEventType> = {
  participant_joined: ChatEventType.PARTICIPANT_JOINED,
  participant_left: ChatEventType.PARTICIPANT_LEFT,
  message: ChatEventType.MESSAGE,
  typing_started: ChatEventType.TYPING_STARTED,
  typing_stopped: ChatEventType.TYPING_STOPPED,
  nickname_updated: ChatEventType.NICKNAME_UPDATED,
  custom_notice: ChatEventType.CUSTOM_NOTICE,
  push_url: ChatEventType.PUSH_URL,
  file_uploaded: ChatEventType.FILE_UPLOADED,
  file_deleted: ChatEventType.FILE_DELETED,
  user_data_updated: ChatEventType.USER_DATA_UPDATED,
  chat_ended: ChatEventType.CHAT_ENDED,
  message_read: ChatEventType.MESSAGE_READ,
};

/** participantTypes map a participant's kind onto the contract's ParticipantType. */
export const participantTypes: Record<ParticipantKind, ParticipantType> = {
  client: ParticipantType.CLIENT,
  agent: ParticipantType.AGENT,
  supervisor: ParticipantType.SUPERVISOR,
  system: ParticipantType.SYSTEM,
};

/** participantMessage maps a participant onto the Participant message. */
export function participantMessage(p: ParticipantRef): MessageInitShape<typeof ParticipantSchema> {
  return { participantId: p.participantId, nickname: p.nickname, type: participantTypes[p.kind] };
}

/** chatEvent maps a transcript event onto the ChatEvent message. */
export function chatEvent(e: ChatEventRecord): MessageInitShape<typeof ChatEventSchema> {
  return {
    position: BigInt(e.position),
    type: eventTypes[e.kind],
    from: participantMessage(e.from),
    text: e.text,
    messageType: e.messageType,
    time: timestamp(e.time),
    userData: e.userData,
    clientMessageId: e.clientMessageId,
    fileId: e.fileId,
    fileName: e.fileName,
    fileSize: BigInt(e.fileSize),
    fileContentType: e.fileContentType,
  };
}

/** fileLimitsMessage maps file rules and usage onto the FileLimits message. */
export function fileLimitsMessage(l: FileLimitsView): MessageInitShape<typeof FileLimitsSchema> {
  return {
    maxFiles: l.max_files,
    maxFileBytes: BigInt(l.max_file_bytes),
    maxTotalBytes: BigInt(l.max_total_bytes),
    allowedExtensions: l.allowed_extensions,
    allowedContentTypes: l.allowed_content_types,
    requireAgent: l.require_agent,
    usedFiles: l.usedFiles,
    usedBytes: BigInt(l.usedBytes),
  };
}

/** chatFileMessage maps a downloaded file onto the ChatFile message. */
export function chatFileMessage(d: DownloadedFile): MessageInitShape<typeof ChatFileSchema> {
  return {
    fileId: d.file.id,
    file: { filename: d.file.filename, contentType: d.file.contentType, content: d.content },
    uploadedBy: participantMessage(d.uploadedBy),
    size: BigInt(d.file.size),
  };
}

/** newFile takes an uploaded File message (protovalidate has made sure it is there). */
export function newFile(f: { filename: string; contentType: string; content: Uint8Array } | undefined): NewFile {
  return { filename: f?.filename ?? "", contentType: f?.contentType || "application/octet-stream", content: f?.content ?? new Uint8Array() };
}

/** refreshResponse maps a poll's answer onto the Refresh response shape both services share. */
export function refreshResponse(r: RefreshResult) {
  return { events: r.events.map(chatEvent), nextPosition: BigInt(r.nextPosition), chatEnded: r.chatEnded, typing: r.typing.map(participantMessage) };
}

/** chatAccess says who may call each ChatService RPC: apps (public by default); the secure key does the rest. */
export const chatAccess = {
  requestChat: ["app"],
  sendMessage: ["app"],
  sendTyping: ["app"],
  refresh: ["app"],
  subscribe: ["app"],
  disconnect: ["app"],
  updateNickname: ["app"],
  sendCustomNotice: ["app"],
  updateUserData: ["app"],
  uploadFile: ["app"],
  downloadFile: ["app"],
  deleteFile: ["app"],
  getFileLimits: ["app"],
  pushUrl: ["app"],
  sendReadReceipt: ["app"],
} as const;

/**
 * chatStreams are ChatService's server streams, served through connect and by the lean path
 * (lean-path.ts) alike. Subscribe: the customer, known by the chat's secure key, gets the
 * chat's events from `from_position` on, with heartbeats while it is quiet, until its maximum age
 * (keepalive.ts).
 */
export function chatStreams(chats: Chats, keepalive?: StreamKeepalive) {
  return {
    subscribe: serverStream(
      ChatService.method.subscribe,
      async (req, _caller, signal, opened) => chats.subscribe(await chats.customer(req.chatId, req.secureKey), exactNumber(req.fromPosition, "from_position"), signal, opened),
      chatEvent,
      { keepalive, heartbeat: CHAT_HEARTBEAT },
    ),
  };
}

/**
 * CHAT_HEARTBEAT is what a quiet chat stream sends, and what one sends at once when it opens with
 * nothing to replay: a HEARTBEAT event (position 0, live only), which clients ignore.
 */
export const CHAT_HEARTBEAT = { message: { type: ChatEventType.HEARTBEAT } } as const;

/**
 * chatPolls are the customer's polls, served through connect and by the lean path
 * (lean-path.ts) alike: a thousand customers polling every second is the chat's hottest call.
 */
export function chatPolls(chats: Chats, shutdown: AbortSignal) {
  return {
    refresh: unaryRpc(ChatService.method.refresh, async (req, _caller, callSignal) => {
      // Authenticated by the chat rules themselves: a poll may be answered from this node's memory.
      // Only a long-poll waits, so only it needs the shutdown signal joined to the call's.
      const signal = req.waitSeconds > 0 ? AbortSignal.any([callSignal, shutdown]) : callSignal;
      return refreshResponse(await chats.customerRefresh(req.chatId, req.secureKey, exactNumber(req.fromPosition, "from_position"), req.waitSeconds, signal));
    }, { waits: (req) => req.waitSeconds > 0 }),
  };
}

/**
 * chatService maps ChatService RPCs onto the chat rules. Waits (long-polls, streams) also end when
 * `shutdown` aborts; `keepalive` keeps its stream alive through proxies.
 */
export function chatService(chats: Chats, shutdown: AbortSignal, keepalive?: StreamKeepalive): ServiceImpl<typeof ChatService> {
  const streams = chatStreams(chats, keepalive);
  return {
    async requestChat(req, ctx) {
      const r = await chats.requestChat({
        service: req.service,
        nickname: req.nickname,
        firstName: req.firstName,
        lastName: req.lastName,
        subject: req.subject,
        emailAddress: req.emailAddress,
        userData: req.userData,
        appData: fromEntries(req.appData),
        request: requestKey(ctx.method, callerOf(ctx), req),
      });
      return { ...r, events: r.events.map(chatEvent), nextPosition: BigInt(r.nextPosition) };
    },
    async sendMessage(req) {
      const actor = await chats.customer(req.chatId, req.secureKey);
      return { position: BigInt(await chats.send(actor, { text: req.text, messageType: req.messageType, clientMessageId: req.clientMessageId })) };
    },
    async sendTyping(req) {
      await chats.typing(await chats.customer(req.chatId, req.secureKey), req.typing, req.text);
      return {};
    },
    refresh: connectUnary(chatPolls(chats, shutdown).refresh),
    subscribe: connectStream(streams.subscribe),
    async disconnect(req) {
      await chats.disconnect(await chats.customer(req.chatId, req.secureKey));
      return {};
    },
    async updateNickname(req) {
      return { position: BigInt(await chats.updateNickname(await chats.customer(req.chatId, req.secureKey), req.nickname)) };
    },
    async sendCustomNotice(req) {
      return { position: BigInt(await chats.customNotice(await chats.customer(req.chatId, req.secureKey), req.text)) };
    },
    async updateUserData(req) {
      return { position: BigInt(await chats.updateUserData(await chats.customer(req.chatId, req.secureKey), req.userData, req.removeKeys)) };
    },
    async uploadFile(req) {
      const r = await chats.uploadFile(await chats.customer(req.chatId, req.secureKey), newFile(req.file));
      return { fileId: r.fileId, position: BigInt(r.position) };
    },
    async downloadFile(req) {
      return { file: chatFileMessage(await chats.downloadFile(await chats.customer(req.chatId, req.secureKey), req.fileId)) };
    },
    async deleteFile(req) {
      return { position: BigInt(await chats.deleteFile(await chats.customer(req.chatId, req.secureKey), req.fileId)) };
    },
    async pushUrl(req) {
      return { position: BigInt(await chats.pushUrl(await chats.customer(req.chatId, req.secureKey), req.url)) };
    },
    async sendReadReceipt(req) {
      const actor = await chats.customer(req.chatId, req.secureKey);
      return { position: BigInt(await chats.readReceipt(actor, exactNumber(req.readPosition, "read_position"))) };
    },
    async getFileLimits(req) {
      return { limits: fileLimitsMessage(await chats.fileLimits(await chats.customer(req.chatId, req.secureKey))) };
    },
  };
}
