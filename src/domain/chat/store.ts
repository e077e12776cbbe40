/**
 * ChatStore is what the chat rules keep and read, in their own words: chats, participants, the
 * transcript, files, who types. The rules receive one (createChatStore makes it over SQL)
 * and never see a statement, a row or a dialect.
 *
 * Writes that must commit together take the caller's UnitOfWork (Transactions.run opens it): an
 * event appended with the state change it records, a chat created with its session. Reads that the
 * rules make both inside and outside a unit of work take it as an optional last argument. Every
 * other call is one statement on its own (a typing row, the customer's activity, a listing).
 *
 * The contract suite (test/contract/chat-store.test.ts) holds every implementation to it, operation
 * by operation, on every dialect.
 */
import type { RequestKey } from "../idempotency.js";
import type { StorageLimits } from "../storage.js";
import type { UnitOfWork } from "../unit-of-work.js";
import type { DataEntries } from "../value.js";
import type { Chat, ChatChange, QueueLength, ChatEventRecord, ChatFile, ChatMark, EventDraft, Participant, ParticipantRef, TypingRecord, WaitingChat } from "./vocabulary.js";

/** ChatStore keeps request-chat's chats (see the module comment). */
export interface ChatStore {
  // ---- chats ----

  /** createChat stores a new chat and its customer, its first participant. */
  createChat(uow: UnitOfWork, chat: Chat, customer: Participant): Promise<void>;
  /** readChat reads a chat live at `now` (its session not expired). */
  readChat(chatId: string, now: number): Promise<Chat | undefined>;
  /**
   * lockChat reads a chat live at `now` and holds it until the unit of work ends: another unit of
   * work locking or claiming it waits, which is what makes the positions of appended events gapless
   * and unique under concurrent senders.
   */
  lockChat(uow: UnitOfWork, chatId: string, now: number): Promise<Chat | undefined>;
  /** readChatWithCustomer reads a live chat and its customer at once (the customer's every call). */
  readChatWithCustomer(chatId: string, now: number): Promise<{ chat: Chat; customer: Participant } | undefined>;
  /** updateChat changes a chat's state, queue, queue time, expiry or user data. */
  updateChat(uow: UnitOfWork, chatId: string, change: ChatChange): Promise<void>;
  /**
   * claimWaiting locks, as lockChat does, the oldest live chat waiting on an endpoint, passing over
   * those another unit of work is claiming: two agents never get the same chat, and neither waits.
   */
  claimWaiting(uow: UnitOfWork, endpoint: string, now: number): Promise<Chat | undefined>;
  /** waiting lists up to `limit` live chats waiting on an endpoint, oldest first. */
  waiting(endpoint: string, now: number, limit: number): Promise<WaitingChat[]>;
  /** queueLengths are, for every endpoint with live chats waiting at `now`, how many and since when the oldest waits. */
  queueLengths(now: number): Promise<QueueLength[]>;

  // ---- participants ----

  /** addParticipant stores a participant joining a chat. */
  addParticipant(uow: UnitOfWork, participant: Participant): Promise<void>;
  /** participants lists a chat's participants in the order they joined. */
  participants(chatId: string, uow?: UnitOfWork): Promise<Participant[]>;
  /** updateParticipant records a participant leaving or renaming. */
  updateParticipant(uow: UnitOfWork, participantId: string, change: { leftAt?: number; nickname?: string }): Promise<void>;

  // ---- the transcript ----

  /**
   * append stores an event at the chat's next position and moves the chat's lastPosition on (the
   * object given too). The chat must be locked in the unit of work (lockChat, claimWaiting). When
   * given, customerSeenAt records the customer's activity with it, at no extra cost.
   */
  append(uow: UnitOfWork, chat: { id: string; lastPosition: number }, draft: EventDraft, customerSeenAt?: number): Promise<ChatEventRecord>;
  /** eventByClientId finds a participant's event by the client's message id (sends are idempotent). */
  eventByClientId(uow: UnitOfWork, chatId: string, participantId: string, clientMessageId: string): Promise<ChatEventRecord | undefined>;
  /** events reads up to `limit` events of a chat from position `from` on, in order. */
  events(chatId: string, from: number, limit: number): Promise<ChatEventRecord[]>;
  /** lastPosition reads a chat's last position, expired or not (undefined: no such chat). */
  lastPosition(chatId: string): Promise<number | undefined>;
  /** marks reads the mark of each of the chats at once; a chat no longer stored is absent. */
  marks(chatIds: readonly string[]): Promise<Map<string, ChatMark>>;
  /**
   * leavePosition is the position of the last PARTICIPANT_LEFT of any of the participants (the
   * rows of one agent in a chat): where an agent who left or transferred stops reading.
   */
  leavePosition(chatId: string, participantIds: readonly string[]): Promise<number | undefined>;
  /** uploadPosition is the position of the FILE_UPLOADED event of a chat's file. */
  uploadPosition(chatId: string, fileId: string): Promise<number | undefined>;

  // ---- the customer's activity (idle timeout) ----

  /** touchCustomer records the customer active at `now` (never moving it back). */
  touchCustomer(chatId: string, now: number): Promise<void>;
  /** touchCustomers records the customers of the chats active at `now`, at once. */
  touchCustomers(chatIds: readonly string[], now: number): Promise<void>;
  /** customerSeenAt reads when a chat's customer was last active. */
  customerSeenAt(uow: UnitOfWork, chatId: string): Promise<number | undefined>;
  /** idleChats lists up to `limit` live chats not ended whose customer was last active at or before `cutoff`. */
  idleChats(cutoff: number, now: number, limit: number): Promise<string[]>;

  // ---- files ----

  /** addFile records a file sent in a chat (its bytes already stored under file.dataId). */
  addFile(uow: UnitOfWork, file: ChatFile): Promise<void>;
  /** liveFiles lists a chat's files not deleted, oldest first. */
  liveFiles(chatId: string, uow?: UnitOfWork): Promise<ChatFile[]>;
  /** readFile reads a chat's file, unless it was deleted. */
  readFile(chatId: string, fileId: string, uow?: UnitOfWork): Promise<ChatFile | undefined>;
  /** markFileDeleted records a file's deletion at `now`. */
  markFileDeleted(uow: UnitOfWork, fileId: string, now: number): Promise<void>;

  // ---- who types ----

  /** setTyping records a participant typing from `startedAt` until `until`, replacing what it had. */
  setTyping(chatId: string, participant: ParticipantRef, startedAt: number, until: number): Promise<void>;
  /** typing lists who types in a chat at `now`, in the order they started. */
  typing(chatId: string, now: number): Promise<TypingRecord[]>;
  /** typingOf lists who types at `now` in each of the chats, at once (chats where nobody types are absent). */
  typingOf(chatIds: readonly string[], now: number): Promise<Map<string, TypingRecord[]>>;
  /** stopTyping forgets a participant typing at `now`; true when they were. */
  stopTyping(chatId: string, participantId: string, now: number): Promise<boolean>;
  /**
   * lapseTyping forgets a participant's typing only if it has lapsed at `now` (a newer start may
   * have extended it, on any node); true when it had.
   */
  lapseTyping(chatId: string, participantId: string, now: number): Promise<boolean>;
  /** clearTyping forgets everybody's typing in a chat and returns who was typing at `now`. */
  clearTyping(chatId: string, now: number): Promise<TypingRecord[]>;

  // ---- sessions and expiry ----

  /** extendChatsOfSession gives a session's chats, and their files' stored bytes, a new expiry (ExtendSession). */
  extendChatsOfSession(uow: UnitOfWork, sessionId: string, expiresAt: number): Promise<void>;
  /** sweep deletes up to `batch` chats expired at `now`, with everything they hold; returns how many. */
  sweep(now: number, batch: number): Promise<number>;
}

// ---- what a chat needs of the other aggregates ----
// A chat lives in a session, which keeps the customer's application data; a file's bytes are a
// storage record; RequestChat is idempotent. The composition root (src/server.ts) adapts the
// session, storage and idempotency modules to these, so the chat rules use them inside their own
// units of work without knowing how they are kept.

/** ChatSessions is what the chat rules need of sessions: the one a chat opens, and its data. */
export interface ChatSessions {
  /** insert stores a new active session, in the unit of work that creates its chat. */
  insert(uow: UnitOfWork, session: { id: string; service: string; builtin: string; dataId: string; createdAt: number; expiresAt: number }): Promise<void>;
  /** dataIdOf is the data record of a session live at `now` (undefined: the session is gone). */
  dataIdOf(sessionId: string, now: number): Promise<string | undefined>;
}

/** ChatData is what the chat rules need of storage: the session's application data and the files' bytes. */
export interface ChatData {
  /** createIn stores a record in the unit of work; `own` replaces the storage limits (a file's). */
  createIn(uow: UnitOfWork, entries: DataEntries, expiresAt: number, own?: StorageLimits): Promise<{ dataId: string }>;
  /** get reads a live record (NOT_FOUND once it has expired). */
  get(dataId: string): Promise<{ entries: DataEntries }>;
  /** deleteIn deletes a record in the unit of work (a deleted file's bytes). */
  deleteIn(uow: UnitOfWork, dataId: string, now: number): Promise<void>;
}

/**
 * RunOnce runs `create` in a unit of work once per request key: a retry with the same key and
 * request gets the first result back and creates nothing (src/domain/idempotency.ts).
 */
export type RunOnce = <T>(key: RequestKey, now: number, create: (uow: UnitOfWork) => Promise<T>, keepUntil: (result: T) => number) => Promise<T>;
