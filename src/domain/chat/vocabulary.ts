/**
 * The chat vocabulary: what a chat, its participants and its transcript events are. The domain owns
 * it; the store keeps it and the RPC layer maps it onto the contract.
 */

/** ChatState is where a chat is: waiting in its queue, with an agent, or over. */
export type ChatState = "waiting" | "active" | "ended";

/** ParticipantKind is who a participant is. */
export type ParticipantKind = "client" | "agent" | "supervisor" | "system";

/** EventKind is a transcript event's type (GMS chat v2 names, snake_case). */
export type EventKind =
  | "participant_joined"
  | "participant_left"
  | "message"
  | "typing_started"
  | "typing_stopped"
  | "nickname_updated"
  | "custom_notice"
  | "push_url"
  | "file_uploaded"
  | "file_deleted"
  | "user_data_updated"
  | "chat_ended"
  | "message_read";

/** ParticipantRef is a participant as events show it. */
export interface ParticipantRef {
  participantId: string;
  nickname: string;
  kind: ParticipantKind;
}

/** ChatEventRecord is one stored transcript event (or, with position 0, a live typing notice). */
export interface ChatEventRecord {
  chatId: string;
  position: number;
  kind: EventKind;
  from: ParticipantRef;
  text: string;
  messageType: string;
  time: number;
  userData: Record<string, string>;
  clientMessageId: string;
  fileId: string;
  fileName: string;
  fileSize: number;
  fileContentType: string;
}

/** EventDraft is an event before the store gives it its chat and position. */
export type EventDraft = Omit<ChatEventRecord, "position" | "chatId">;

/**
 * Chat is one request-chat conversation: where it is queued, its state, its customer and where its
 * transcript has got to. It lives inside a session (sessionId) and expires with it.
 */
export interface Chat {
  id: string;
  sessionId: string;
  /** service is the request-chat service the customer asked for. */
  service: string;
  /** endpoint is the queue the chat waits in (and moves to on a transfer). */
  endpoint: string;
  state: ChatState;
  subject: string;
  emailAddress: string;
  userData: Record<string, string>;
  /** secureKeyHash is the SHA-256 of the customer's secure key, never the key. */
  secureKeyHash: string;
  customerParticipantId: string;
  /** lastPosition is the position of the transcript's last event (0: none yet). */
  lastPosition: number;
  createdAt: number;
  /** queuedAt orders the waiting chats of an endpoint: the oldest is accepted first. */
  queuedAt: number;
  expiresAt: number;
}

/** ChatChange is what may change of a chat once it exists. */
export interface ChatChange {
  state?: ChatState;
  queuedAt?: number;
  expiresAt?: number;
  endpoint?: string;
  userData?: Record<string, string>;
}

/** Participant is someone in a chat: its customer, an agent (each time they join), or the system. */
export interface Participant {
  id: string;
  chatId: string;
  kind: ParticipantKind;
  nickname: string;
  /** identity is the API key name of an agent; empty for the customer. */
  identity: string;
  joinedAt: number;
  /** leftAt is when the participant left; undefined while they are in the chat. */
  leftAt: number | undefined;
}

/** ChatFile is a file sent in a chat; its bytes are kept in storage, under dataId. */
export interface ChatFile {
  id: string;
  chatId: string;
  /** participantId is who uploaded it. */
  participantId: string;
  dataId: string;
  filename: string;
  contentType: string;
  size: number;
  createdAt: number;
}

/** TypingRecord is a participant typing: since startedAt (its coalescing window's start) until `until`. */
export interface TypingRecord {
  participant: ParticipantRef;
  startedAt: number;
  until: number;
}

/** ChatMark is where a chat stands, as the node-wide watch reads it: its transcript's end, whether it ended, its expiry. */
export interface ChatMark {
  lastPosition: number;
  ended: boolean;
  expiresAt: number;
}

/** WaitingChat is a chat waiting in a queue, as agents watching the queue see it. */
export interface WaitingChat {
  chatId: string;
  subject: string;
  /** nickname is the customer's. */
  nickname: string;
  queuedAt: number;
}

/** QueueLength is an endpoint's queue as an operator watches it: how many chats wait, and since when the oldest does. */
export interface QueueLength {
  endpoint: string;
  waiting: number;
  oldestQueuedAt: number;
}

/** Actor is a participant acting in a chat: the customer (by secure key) or an agent (by API key). */
export interface Actor {
  chatId: string;
  participant: ParticipantRef;
  /** present is false for an agent who has left: it may still read the transcript. */
  present: boolean;
  /** ended is whether the chat had ended when the actor was looked up. */
  ended: boolean;
  /** lastPosition is the chat's last position when the actor was looked up. */
  lastPosition: number;
  /**
   * readUpTo is, for an agent who has left or transferred the chat, the position of their leaving
   * (PARTICIPANT_LEFT): they read nothing after it. Undefined: no bound (a supervisor reads all).
   */
  readUpTo?: number | undefined;
  /**
   * boundByLeave is true for an agent who is not a supervisor: a read that was under way when they
   * left (an open Subscribe, a waiting Refresh) stops at their own PARTICIPANT_LEFT.
   */
  boundByLeave?: boolean | undefined;
}
