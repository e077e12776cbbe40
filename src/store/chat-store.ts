import type { ChatEventRecord, ChatState, EventKind, ParticipantKind, ParticipantRef } from "../domain/chat/vocabulary.js";
import { lockForUpdate, type Dialect, type Queryable } from "./database.js";

/** ChatRow is a chats row. */
export interface ChatRow {
  id: string;
  sessionId: string;
  service: string;
  endpoint: string;
  state: ChatState;
  subject: string;
  emailAddress: string;
  userData: Record<string, string>;
  secureKeyHash: string;
  customerParticipantId: string;
  lastPosition: number;
  createdAt: number;
  queuedAt: number;
  expiresAt: number;
}

/** ParticipantRow is a chat_participants row. */
export interface ParticipantRow {
  id: string;
  chatId: string;
  kind: ParticipantKind;
  nickname: string;
  /** identity is the API key name of an agent; empty for the customer. */
  identity: string;
  joinedAt: number;
  leftAt: number | undefined;
}

/** ChatFileRow is a chat_files row: a file of a chat, its bytes kept in storage under dataId. */
export interface ChatFileRow {
  id: string;
  chatId: string;
  participantId: string;
  dataId: string;
  filename: string;
  contentType: string;
  size: number;
  createdAt: number;
}

/** TypingRow is a chat_typing row: a participant typing until `until`. */
export interface TypingRow {
  participant: ParticipantRef;
  startedAt: number;
  until: number;
}

interface ChatSql {
  id: string;
  session_id: string;
  service: string;
  endpoint: string;
  state: string;
  subject: string;
  email_address: string;
  user_data: string;
  secure_key_hash: string;
  customer_participant_id: string;
  last_position: number | string;
  created_at: number | string;
  queued_at: number | string;
  expires_at: number | string;
}

interface EventSql {
  chat_id: string;
  position: number | string;
  kind: string;
  participant_id: string;
  nickname: string;
  participant_kind: string;
  text: string | null;
  message_type: string | null;
  user_data: string | null;
  client_message_id: string | null;
  file_id: string | null;
  file_name: string | null;
  file_size: number | string | null;
  file_content_type: string | null;
  created_at: number | string;
}

interface ParticipantSql {
  id: string;
  chat_id: string;
  kind: string;
  nickname: string;
  identity: string;
  joined_at: number | string;
  left_at: number | string | null;
}

function chatFromSql(r: ChatSql): ChatRow {
  return {
    id: r.id,
    sessionId: r.session_id,
    service: r.service,
    endpoint: r.endpoint,
    state: r.state as ChatState,
    subject: r.subject,
    emailAddress: r.email_address,
    userData: JSON.parse(r.user_data) as Record<string, string>,
    secureKeyHash: r.secure_key_hash,
    customerParticipantId: r.customer_participant_id,
    lastPosition: Number(r.last_position),
    createdAt: Number(r.created_at),
    queuedAt: Number(r.queued_at),
    expiresAt: Number(r.expires_at),
  };
}

function eventFromSql(r: EventSql): ChatEventRecord {
  return {
    chatId: r.chat_id,
    position: Number(r.position),
    kind: r.kind as EventKind,
    from: { participantId: r.participant_id, nickname: r.nickname, kind: r.participant_kind as ParticipantKind },
    text: r.text ?? "",
    messageType: r.message_type ?? "",
    time: Number(r.created_at),
    userData: r.user_data === null ? {} : (JSON.parse(r.user_data) as Record<string, string>),
    clientMessageId: r.client_message_id ?? "",
    fileId: r.file_id ?? "",
    fileName: r.file_name ?? "",
    fileSize: r.file_size === null ? 0 : Number(r.file_size),
    fileContentType: r.file_content_type ?? "",
  };
}

function participantFromSql(r: ParticipantSql): ParticipantRow {
  return {
    id: r.id,
    chatId: r.chat_id,
    kind: r.kind as ParticipantKind,
    nickname: r.nickname,
    identity: r.identity,
    joinedAt: Number(r.joined_at),
    leftAt: r.left_at === null ? undefined : Number(r.left_at),
  };
}

/** insertChat stores a new chat. */
export async function insertChat(q: Queryable, c: ChatRow): Promise<void> {
  await q("chats").insert({
    id: c.id,
    session_id: c.sessionId,
    service: c.service,
    endpoint: c.endpoint,
    state: c.state,
    subject: c.subject,
    email_address: c.emailAddress,
    user_data: JSON.stringify(c.userData),
    secure_key_hash: c.secureKeyHash,
    customer_participant_id: c.customerParticipantId,
    last_position: c.lastPosition,
    created_at: c.createdAt,
    queued_at: c.queuedAt,
    expires_at: c.expiresAt,
    customer_seen_at: c.createdAt,
  });
}

/** readChat returns a chat live at `now` (its session not expired), locked for update when asked. */
export async function readChat(q: Queryable, id: string, now: number, lock?: Dialect): Promise<ChatRow | undefined> {
  const qb = q("chats").where("id", id).andWhere("expires_at", ">", now);
  const row = (await (lock === undefined ? qb : lockForUpdate(qb, lock)).first()) as ChatSql | undefined;
  return row === undefined ? undefined : chatFromSql(row);
}

/** readChatWithCustomer reads a live chat and its customer participant in one statement (the customer's every call). */
export async function readChatWithCustomer(q: Queryable, id: string, now: number): Promise<{ chat: ChatRow; customer: ParticipantRow } | undefined> {
  const row = (await q("chats as c")
    .join("chat_participants as p", "p.id", "c.customer_participant_id")
    .where("c.id", id)
    .andWhere("c.expires_at", ">", now)
    .first("c.*", "p.nickname as p_nickname", "p.joined_at as p_joined_at", "p.left_at as p_left_at")) as
    | (ChatSql & { p_nickname: string; p_joined_at: number | string; p_left_at: number | string | null })
    | undefined;
  if (row === undefined) return undefined;
  const chat = chatFromSql(row);
  return {
    chat,
    customer: participantFromSql({
      id: chat.customerParticipantId,
      chat_id: chat.id,
      kind: "client",
      nickname: row.p_nickname,
      identity: "",
      joined_at: row.p_joined_at,
      left_at: row.p_left_at,
    }),
  };
}

/** stopTypingRow deletes a participant's live typing row; true when there was one. */
export async function stopTypingRow(q: Queryable, chatId: string, participantId: string, now: number): Promise<boolean> {
  return (await q("chat_typing").where({ chat_id: chatId, participant_id: participantId }).andWhere("until", ">", now).delete()) > 0;
}

/**
 * lapseTypingRow deletes a participant's typing row once it has lapsed (until ≤ now) and tells
 * whether there was one: a quiet timer's stop, which leaves alone a row a newer start extended.
 */
export async function lapseTypingRow(q: Queryable, chatId: string, participantId: string, now: number): Promise<boolean> {
  return (await q("chat_typing").where({ chat_id: chatId, participant_id: participantId }).andWhere("until", "<=", now).delete()) > 0;
}

/** updateChat changes a chat's state, queue time or expiry. */
export async function updateChat(
  q: Queryable,
  id: string,
  change: { state?: ChatState; queuedAt?: number; expiresAt?: number; endpoint?: string; userData?: Record<string, string> },
): Promise<void> {
  const row: Record<string, unknown> = {};
  if (change.userData !== undefined) row["user_data"] = JSON.stringify(change.userData);
  if (change.state !== undefined) row["state"] = change.state;
  if (change.queuedAt !== undefined) row["queued_at"] = change.queuedAt;
  if (change.expiresAt !== undefined) row["expires_at"] = change.expiresAt;
  if (change.endpoint !== undefined) row["endpoint"] = change.endpoint;
  await q("chats").where("id", id).update(row);
}

/**
 * claimWaitingChat locks the oldest live chat waiting on an endpoint, skipping rows another agent
 * is claiming (SKIP LOCKED on MySQL), so two agents never get the same chat.
 */
export async function claimWaitingChat(q: Queryable, dialect: Dialect, endpoint: string, now: number): Promise<ChatRow | undefined> {
  const qb = q("chats")
    .where({ endpoint, state: "waiting" })
    .andWhere("expires_at", ">", now)
    .orderBy("queued_at")
    .orderBy("id")
    .limit(1);
  const row = (await lockForUpdate(qb, dialect, true).first()) as ChatSql | undefined;
  return row === undefined ? undefined : chatFromSql(row);
}

/** waitingChats lists the live chats waiting on an endpoint, oldest first, with the customer's nickname. */
export async function waitingChats(q: Queryable, endpoint: string, now: number, limit: number): Promise<(ChatRow & { nickname: string })[]> {
  const rows = (await q("chats as c")
    .leftJoin("chat_participants as p", "p.id", "c.customer_participant_id")
    .where({ "c.endpoint": endpoint, "c.state": "waiting" })
    .andWhere("c.expires_at", ">", now)
    .orderBy("c.queued_at")
    .orderBy("c.id")
    .limit(limit)
    .select("c.*", "p.nickname as customer_nickname")) as (ChatSql & { customer_nickname: string | null })[];
  return rows.map((r) => ({ ...chatFromSql(r), nickname: r.customer_nickname ?? "" }));
}

/** insertParticipant stores a participant. */
export async function insertParticipant(q: Queryable, p: ParticipantRow): Promise<void> {
  await q("chat_participants").insert({
    id: p.id,
    chat_id: p.chatId,
    kind: p.kind,
    nickname: p.nickname,
    identity: p.identity,
    joined_at: p.joinedAt,
    left_at: p.leftAt ?? null,
  });
}

/** readParticipants lists a chat's participants in the order they joined. */
export async function readParticipants(q: Queryable, chatId: string): Promise<ParticipantRow[]> {
  return ((await q("chat_participants").where("chat_id", chatId).orderBy("joined_at").orderBy("id")) as ParticipantSql[]).map(participantFromSql);
}

/** updateParticipant records a participant leaving or renaming. */
export async function updateParticipant(q: Queryable, id: string, change: { leftAt?: number; nickname?: string }): Promise<void> {
  const row: Record<string, unknown> = {};
  if (change.leftAt !== undefined) row["left_at"] = change.leftAt;
  if (change.nickname !== undefined) row["nickname"] = change.nickname;
  await q("chat_participants").where("id", id).update(row);
}

/**
 * appendEvent stores an event at the chat's next position. The caller's transaction must hold the
 * chat row's lock (readChat with lock), which is what makes positions gapless and unique under
 * concurrent senders; the position counter moves in the same transaction (and, when given, the
 * customer's last activity, in the same statement).
 */
export async function appendEvent(
  q: Queryable,
  chat: { id: string; lastPosition: number },
  e: Omit<ChatEventRecord, "position" | "chatId">,
  customerSeenAt?: number,
): Promise<ChatEventRecord> {
  const position = chat.lastPosition + 1;
  await q("chat_events").insert({
    chat_id: chat.id,
    position,
    kind: e.kind,
    participant_id: e.from.participantId,
    nickname: e.from.nickname,
    participant_kind: e.from.kind,
    text: e.text === "" ? null : e.text,
    message_type: e.messageType === "" ? null : e.messageType,
    user_data: Object.keys(e.userData).length === 0 ? null : JSON.stringify(e.userData),
    client_message_id: e.clientMessageId === "" ? null : e.clientMessageId,
    file_id: e.fileId === "" ? null : e.fileId,
    file_name: e.fileName === "" ? null : e.fileName,
    file_size: e.fileId === "" ? null : e.fileSize,
    file_content_type: e.fileContentType === "" ? null : e.fileContentType,
    created_at: e.time,
  });
  await q("chats")
    .where("id", chat.id)
    .update({ last_position: position, ...(customerSeenAt === undefined ? {} : { customer_seen_at: customerSeenAt }) });
  chat.lastPosition = position;
  return { ...e, chatId: chat.id, position };
}

/** findEventByClientId finds a participant's event by its client_message_id (idempotent sends). */
export async function findEventByClientId(q: Queryable, chatId: string, participantId: string, clientMessageId: string): Promise<ChatEventRecord | undefined> {
  const row = (await q("chat_events").where({ chat_id: chatId, participant_id: participantId, client_message_id: clientMessageId }).first()) as EventSql | undefined;
  return row === undefined ? undefined : eventFromSql(row);
}

/** readEvents reads up to `limit` events of a chat from position `from` on, in order. */
export async function readEvents(q: Queryable, chatId: string, from: number, limit: number): Promise<ChatEventRecord[]> {
  const rows = (await q("chat_events").where("chat_id", chatId).andWhere("position", ">=", from).orderBy("position").limit(limit)) as EventSql[];
  return rows.map(eventFromSql);
}

/**
 * leavePosition is the position of the last PARTICIPANT_LEFT event of any of the participants (an
 * agent's rows in one chat): where an agent who left or transferred stops reading. Read through the
 * (chat_id, participant_id, …) index.
 */
export async function leavePosition(q: Queryable, chatId: string, participantIds: readonly string[]): Promise<number | undefined> {
  if (participantIds.length === 0) return undefined;
  const row = (await q("chat_events").where("chat_id", chatId).whereIn("participant_id", participantIds).andWhere("kind", "participant_left").max({ p: "position" }).first()) as
    | { p: number | string | null }
    | undefined;
  return row?.p === null || row?.p === undefined ? undefined : Number(row.p);
}

/** uploadPosition is the position of the FILE_UPLOADED event of a chat's file. */
export async function uploadPosition(q: Queryable, chatId: string, fileId: string): Promise<number | undefined> {
  const row = (await q("chat_events").where({ chat_id: chatId, kind: "file_uploaded", file_id: fileId }).min({ p: "position" }).first()) as { p: number | string | null } | undefined;
  return row?.p === null || row?.p === undefined ? undefined : Number(row.p);
}

/** lastPosition reads a chat's last assigned position (catching up after a missed announcement). */
export async function lastPosition(q: Queryable, chatId: string): Promise<number | undefined> {
  const row = (await q("chats").where("id", chatId).first("last_position")) as { last_position: number | string } | undefined;
  return row === undefined ? undefined : Number(row.last_position);
}

/** sweepExpiredChats deletes up to `batch` chats (with participants, events, files, typing) expired before `now`. */
export async function sweepExpiredChats(q: Queryable, now: number, batch: number): Promise<number> {
  const rows = (await q("chats").where("expires_at", "<=", now).select("id").limit(batch)) as { id: string }[];
  if (rows.length === 0) return 0;
  const ids = rows.map((r) => r.id).sort();
  await q("chat_events").whereIn("chat_id", ids).delete();
  await q("chat_files").whereIn("chat_id", ids).delete();
  await q("chat_typing").whereIn("chat_id", ids).delete();
  await q("chat_participants").whereIn("chat_id", ids).delete();
  return q("chats").whereIn("id", ids).andWhere("expires_at", "<=", now).delete();
}

/** lastPositions reads the last assigned position of each of the chats. */
export async function lastPositions(q: Queryable, chatIds: readonly string[]): Promise<Map<string, number>> {
  if (chatIds.length === 0) return new Map();
  const rows = (await q("chats").whereIn("id", chatIds).select("id", "last_position")) as { id: string; last_position: number | string }[];
  return new Map(rows.map((r) => [r.id, Number(r.last_position)]));
}

/** ChatMark is what the node-wide watch reads of a chat: where its transcript is, whether it ended, when it expires. */
export interface ChatMark {
  lastPosition: number;
  ended: boolean;
  expiresAt: number;
}

/** chatMarks reads the mark of each of the chats, in one statement; a chat that no longer exists is absent. */
export async function chatMarks(q: Queryable, chatIds: readonly string[]): Promise<Map<string, ChatMark>> {
  if (chatIds.length === 0) return new Map();
  const rows = (await q("chats").whereIn("id", chatIds).select("id", "last_position", "state", "expires_at")) as {
    id: string;
    last_position: number | string;
    state: string;
    expires_at: number | string;
  }[];
  return new Map(rows.map((r) => [r.id, { lastPosition: Number(r.last_position), ended: r.state === "ended", expiresAt: Number(r.expires_at) }]));
}

/** touchCustomers records the customers of the chats as active at `now`, in one statement. */
export async function touchCustomers(q: Queryable, chatIds: readonly string[], now: number): Promise<void> {
  if (chatIds.length === 0) return;
  await q("chats").whereIn("id", chatIds).andWhere("customer_seen_at", "<", now).update({ customer_seen_at: now });
}

/** touchCustomer records that the customer was active at `now` (idle timeout). */
export async function touchCustomer(q: Queryable, chatId: string, now: number): Promise<void> {
  await q("chats").where("id", chatId).andWhere("customer_seen_at", "<", now).update({ customer_seen_at: now });
}

/** idleChats lists up to `limit` live, unended chats whose customer was last seen at or before `cutoff`. */
export async function idleChats(q: Queryable, cutoff: number, now: number, limit: number): Promise<string[]> {
  const rows = (await q("chats").whereIn("state", ["waiting", "active"]).andWhere("customer_seen_at", "<=", cutoff).andWhere("expires_at", ">", now).select("id").limit(limit)) as {
    id: string;
  }[];
  return rows.map((r) => r.id);
}

/** customerSeenAt reads when a chat's customer was last active. */
export async function customerSeenAt(q: Queryable, chatId: string): Promise<number | undefined> {
  const row = (await q("chats").where("id", chatId).first("customer_seen_at")) as { customer_seen_at: number | string } | undefined;
  return row === undefined ? undefined : Number(row.customer_seen_at);
}

interface FileSql {
  id: string;
  chat_id: string;
  participant_id: string;
  data_id: string;
  filename: string;
  content_type: string;
  size: number | string;
  created_at: number | string;
}

const fileFromSql = (r: FileSql): ChatFileRow => ({
  id: r.id,
  chatId: r.chat_id,
  participantId: r.participant_id,
  dataId: r.data_id,
  filename: r.filename,
  contentType: r.content_type,
  size: Number(r.size),
  createdAt: Number(r.created_at),
});

/** insertFile records a chat file. */
export async function insertFile(q: Queryable, f: ChatFileRow): Promise<void> {
  await q("chat_files").insert({
    id: f.id,
    chat_id: f.chatId,
    participant_id: f.participantId,
    data_id: f.dataId,
    filename: f.filename,
    content_type: f.contentType,
    size: f.size,
    created_at: f.createdAt,
    deleted_at: null,
  });
}

/** liveFiles lists a chat's files that are not deleted. */
export async function liveFiles(q: Queryable, chatId: string): Promise<ChatFileRow[]> {
  return ((await q("chat_files").where("chat_id", chatId).whereNull("deleted_at").orderBy("created_at")) as FileSql[]).map(fileFromSql);
}

/** readFile reads one live file of a chat. */
export async function readFile(q: Queryable, chatId: string, fileId: string): Promise<ChatFileRow | undefined> {
  const row = (await q("chat_files").where({ chat_id: chatId, id: fileId }).whereNull("deleted_at").first()) as FileSql | undefined;
  return row === undefined ? undefined : fileFromSql(row);
}

/** markFileDeleted records a file's deletion. */
export async function markFileDeleted(q: Queryable, fileId: string, now: number): Promise<void> {
  await q("chat_files").where("id", fileId).update({ deleted_at: now });
}

/**
 * extendChatsOfSession gives a session's chat, and the stored files of that chat, a new expiry
 * (ExtendSession works for chats too).
 */
export async function extendChatsOfSession(q: Queryable, sessionId: string, expiresAt: number): Promise<void> {
  const chats = (await q("chats").where("session_id", sessionId).select("id")) as { id: string }[];
  if (chats.length === 0) return;
  const ids = chats.map((c) => c.id);
  await q("chats").whereIn("id", ids).update({ expires_at: expiresAt });
  const files = (await q("chat_files").whereIn("chat_id", ids).whereNull("deleted_at").select("data_id")) as { data_id: string }[];
  if (files.length > 0) await q("storage_data").whereIn("id", files.map((f) => f.data_id)).update({ expires_at: expiresAt });
}

/** setTyping records a participant typing until `until`, keeping `startedAt` as given. */
export async function setTyping(q: Queryable, chatId: string, p: ParticipantRef, startedAt: number, until: number): Promise<void> {
  await q("chat_typing")
    .insert({ chat_id: chatId, participant_id: p.participantId, nickname: p.nickname, kind: p.kind, started_at: startedAt, until })
    .onConflict(["chat_id", "participant_id"])
    .merge(["nickname", "kind", "started_at", "until"]);
}

/** readTyping lists who types in a chat at `now`. */
export async function readTyping(q: Queryable, chatId: string, now: number): Promise<TypingRow[]> {
  const rows = (await q("chat_typing").where("chat_id", chatId).andWhere("until", ">", now).orderBy("started_at")) as TypingSql[];
  return rows.map(typingFromSql);
}

interface TypingSql {
  participant_id: string;
  nickname: string;
  kind: string;
  started_at: number | string;
  until: number | string;
}

const typingFromSql = (r: TypingSql): TypingRow => ({
  participant: { participantId: r.participant_id, nickname: r.nickname, kind: r.kind as ParticipantKind },
  startedAt: Number(r.started_at),
  until: Number(r.until),
});

/** readTypingOf lists who types at `now` in each of the chats, in one statement (chats where nobody types are absent). */
export async function readTypingOf(q: Queryable, chatIds: readonly string[], now: number): Promise<Map<string, TypingRow[]>> {
  const out = new Map<string, TypingRow[]>();
  if (chatIds.length === 0) return out;
  const rows = (await q("chat_typing").whereIn("chat_id", chatIds).andWhere("until", ">", now).orderBy("started_at")) as (TypingSql & { chat_id: string })[];
  for (const r of rows) out.set(r.chat_id, [...(out.get(r.chat_id) ?? []), typingFromSql(r)]);
  return out;
}

/** clearTyping deletes a chat's typing rows; returns those that were live at `now`. */
export async function clearTyping(q: Queryable, chatId: string, now: number): Promise<TypingRow[]> {
  const live = await readTyping(q, chatId, now);
  await q("chat_typing").where("chat_id", chatId).delete();
  return live;
}
