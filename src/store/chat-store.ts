// The chat store over SQL: the ChatStore contract (src/domain/chat/store.ts) on MySQL/MariaDB and
// SQLite. Each operation is one knex path; where the dialects differ (the row locks of lockChat and
// claimWaiting) both paths stand side by side in `locks`. A unit of work is a knex transaction
// (src/store/unit-of-work.ts); a read given none runs on the pool.
import type { Knex } from "knex";
import type { Chat, ChatEventRecord, ChatFile, ChatMark, ChatState, EventKind, Participant, ParticipantKind, QueueLength, TypingRecord, WaitingChat } from "../domain/chat/vocabulary.js";
import type { ChatStore } from "../domain/chat/store.js";
import type { UnitOfWork } from "../domain/unit-of-work.js";
import type { Database, Dialect, Queryable } from "./database.js";
import { trxOf } from "./unit-of-work.js";

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

interface TypingSql {
  participant_id: string;
  nickname: string;
  kind: string;
  started_at: number | string;
  until: number | string;
}

function chatFromSql(r: ChatSql): Chat {
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

function participantFromSql(r: ParticipantSql): Participant {
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

const participantSql = (p: Participant): ParticipantSql => ({
  id: p.id,
  chat_id: p.chatId,
  kind: p.kind,
  nickname: p.nickname,
  identity: p.identity,
  joined_at: p.joinedAt,
  left_at: p.leftAt ?? null,
});

const fileFromSql = (r: FileSql): ChatFile => ({
  id: r.id,
  chatId: r.chat_id,
  participantId: r.participant_id,
  dataId: r.data_id,
  filename: r.filename,
  contentType: r.content_type,
  size: Number(r.size),
  createdAt: Number(r.created_at),
});

const typingFromSql = (r: TypingSql): TypingRecord => ({
  participant: { participantId: r.participant_id, nickname: r.nickname, kind: r.kind as ParticipantKind },
  startedAt: Number(r.started_at),
  until: Number(r.until),
});

/** positionOf reads the `p` of a MIN/MAX row: undefined when no row matched. */
const positionOf = (row: { p: number | string | null } | undefined): number | undefined => (row?.p === null || row?.p === undefined ? undefined : Number(row.p));

/**
 * locks are the row locks of each dialect. `hold` keeps a chat for the transaction (appends under
 * it get gapless positions); `claim` does too but passes over rows another transaction holds, so
 * agents accepting at once take different chats without waiting for each other. MySQL/MariaDB lock
 * the row (FOR UPDATE, SKIP LOCKED); SQLite runs one write transaction at a time on its one
 * connection, which already serialises both.
 */
const locks: Record<Dialect, { hold: (qb: Knex.QueryBuilder) => Knex.QueryBuilder; claim: (qb: Knex.QueryBuilder) => Knex.QueryBuilder }> = {
  mysql: { hold: (qb) => qb.forUpdate(), claim: (qb) => qb.forUpdate().skipLocked() },
  sqlite: { hold: (qb) => qb, claim: (qb) => qb },
};

/** createChatStore is the ChatStore over a database (see the module comment). */
export function createChatStore(db: Database): ChatStore {
  const lock = locks[db.dialect];
  /** on is where a statement runs: the unit of work's transaction, or the pool. */
  const on = (uow: UnitOfWork | undefined): Queryable => (uow === undefined ? db.knex : trxOf(uow));
  const chatOrNone = (row: ChatSql | undefined) => (row === undefined ? undefined : chatFromSql(row));

  async function typing(q: Queryable, chatId: string, now: number): Promise<TypingRecord[]> {
    const rows = (await q("chat_typing").where("chat_id", chatId).andWhere("until", ">", now).orderBy("started_at")) as TypingSql[];
    return rows.map(typingFromSql);
  }

  return {
    async createChat(uow, chat, customer) {
      const q = trxOf(uow);
      await q("chats").insert({
        id: chat.id,
        session_id: chat.sessionId,
        service: chat.service,
        endpoint: chat.endpoint,
        state: chat.state,
        subject: chat.subject,
        email_address: chat.emailAddress,
        user_data: JSON.stringify(chat.userData),
        secure_key_hash: chat.secureKeyHash,
        customer_participant_id: chat.customerParticipantId,
        last_position: chat.lastPosition,
        created_at: chat.createdAt,
        queued_at: chat.queuedAt,
        expires_at: chat.expiresAt,
        customer_seen_at: chat.createdAt,
      });
      await q("chat_participants").insert(participantSql(customer));
    },

    async readChat(chatId, now) {
      return chatOrNone((await db.knex("chats").where("id", chatId).andWhere("expires_at", ">", now).first()) as ChatSql | undefined);
    },

    async lockChat(uow, chatId, now) {
      return chatOrNone((await lock.hold(trxOf(uow)("chats").where("id", chatId).andWhere("expires_at", ">", now)).first()) as ChatSql | undefined);
    },

    async readChatWithCustomer(chatId, now) {
      const row = (await db
        .knex("chats as c")
        .join("chat_participants as p", "p.id", "c.customer_participant_id")
        .where("c.id", chatId)
        .andWhere("c.expires_at", ">", now)
        .first("c.*", "p.nickname as p_nickname", "p.joined_at as p_joined_at", "p.left_at as p_left_at")) as
        | (ChatSql & { p_nickname: string; p_joined_at: number | string; p_left_at: number | string | null })
        | undefined;
      if (row === undefined) return undefined;
      const chat = chatFromSql(row);
      return {
        chat,
        customer: {
          id: chat.customerParticipantId,
          chatId: chat.id,
          kind: "client",
          nickname: row.p_nickname,
          identity: "",
          joinedAt: Number(row.p_joined_at),
          leftAt: row.p_left_at === null ? undefined : Number(row.p_left_at),
        },
      };
    },

    async updateChat(uow, chatId, change) {
      const row: Record<string, unknown> = {};
      if (change.userData !== undefined) row["user_data"] = JSON.stringify(change.userData);
      if (change.state !== undefined) row["state"] = change.state;
      if (change.queuedAt !== undefined) row["queued_at"] = change.queuedAt;
      if (change.expiresAt !== undefined) row["expires_at"] = change.expiresAt;
      if (change.endpoint !== undefined) row["endpoint"] = change.endpoint;
      await trxOf(uow)("chats").where("id", chatId).update(row);
    },

    async claimWaiting(uow, endpoint, now) {
      const qb = trxOf(uow)("chats").where({ endpoint, state: "waiting" }).andWhere("expires_at", ">", now).orderBy("queued_at").orderBy("id").limit(1);
      return chatOrNone((await lock.claim(qb).first()) as ChatSql | undefined);
    },

    async queueLengths(now) {
      const rows = (await db
        .knex("chats")
        .where("state", "waiting")
        .andWhere("expires_at", ">", now)
        .groupBy("endpoint")
        .orderBy("endpoint")
        .select("endpoint")
        .count({ n: "*" })
        .min({ oldest: "queued_at" })) as { endpoint: string; n: number | string; oldest: number | string }[];
      return rows.map((r): QueueLength => ({ endpoint: r.endpoint, waiting: Number(r.n), oldestQueuedAt: Number(r.oldest) }));
    },

    async waiting(endpoint, now, limit) {
      const rows = (await db
        .knex("chats as c")
        .leftJoin("chat_participants as p", "p.id", "c.customer_participant_id")
        .where({ "c.endpoint": endpoint, "c.state": "waiting" })
        .andWhere("c.expires_at", ">", now)
        .orderBy("c.queued_at")
        .orderBy("c.id")
        .limit(limit)
        .select("c.id", "c.subject", "c.queued_at", "p.nickname as customer_nickname")) as { id: string; subject: string; queued_at: number | string; customer_nickname: string | null }[];
      return rows.map((r): WaitingChat => ({ chatId: r.id, subject: r.subject, nickname: r.customer_nickname ?? "", queuedAt: Number(r.queued_at) }));
    },

    async addParticipant(uow, participant) {
      await trxOf(uow)("chat_participants").insert(participantSql(participant));
    },

    async participants(chatId, uow) {
      return ((await on(uow)("chat_participants").where("chat_id", chatId).orderBy("joined_at").orderBy("id")) as ParticipantSql[]).map(participantFromSql);
    },

    async updateParticipant(uow, participantId, change) {
      const row: Record<string, unknown> = {};
      if (change.leftAt !== undefined) row["left_at"] = change.leftAt;
      if (change.nickname !== undefined) row["nickname"] = change.nickname;
      await trxOf(uow)("chat_participants").where("id", participantId).update(row);
    },

    async append(uow, chat, e, customerSeenAt) {
      const q = trxOf(uow);
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
      // The position counter moves in the same transaction, and the customer's activity in the same statement.
      await q("chats")
        .where("id", chat.id)
        .update({ last_position: position, ...(customerSeenAt === undefined ? {} : { customer_seen_at: customerSeenAt }) });
      chat.lastPosition = position;
      return { ...e, chatId: chat.id, position };
    },

    async eventByClientId(uow, chatId, participantId, clientMessageId) {
      const row = (await trxOf(uow)("chat_events").where({ chat_id: chatId, participant_id: participantId, client_message_id: clientMessageId }).first()) as EventSql | undefined;
      return row === undefined ? undefined : eventFromSql(row);
    },

    async events(chatId, from, limit) {
      const rows = (await db.knex("chat_events").where("chat_id", chatId).andWhere("position", ">=", from).orderBy("position").limit(limit)) as EventSql[];
      return rows.map(eventFromSql);
    },

    async lastPosition(chatId) {
      const row = (await db.knex("chats").where("id", chatId).first("last_position")) as { last_position: number | string } | undefined;
      return row === undefined ? undefined : Number(row.last_position);
    },

    async marks(chatIds) {
      if (chatIds.length === 0) return new Map();
      const rows = (await db.knex("chats").whereIn("id", chatIds).select("id", "last_position", "state", "expires_at")) as {
        id: string;
        last_position: number | string;
        state: string;
        expires_at: number | string;
      }[];
      return new Map(rows.map((r): [string, ChatMark] => [r.id, { lastPosition: Number(r.last_position), ended: r.state === "ended", expiresAt: Number(r.expires_at) }]));
    },

    async leavePosition(chatId, participantIds) {
      if (participantIds.length === 0) return undefined;
      // Read through the (chat_id, participant_id, …) index.
      return positionOf(
        (await db.knex("chat_events").where("chat_id", chatId).whereIn("participant_id", participantIds).andWhere("kind", "participant_left").max({ p: "position" }).first()) as
          | { p: number | string | null }
          | undefined,
      );
    },

    async uploadPosition(chatId, fileId) {
      return positionOf(
        (await db.knex("chat_events").where({ chat_id: chatId, kind: "file_uploaded", file_id: fileId }).min({ p: "position" }).first()) as { p: number | string | null } | undefined,
      );
    },

    async touchCustomer(chatId, now) {
      await db.knex("chats").where("id", chatId).andWhere("customer_seen_at", "<", now).update({ customer_seen_at: now });
    },

    async touchCustomers(chatIds, now) {
      if (chatIds.length === 0) return;
      await db.knex("chats").whereIn("id", chatIds).andWhere("customer_seen_at", "<", now).update({ customer_seen_at: now });
    },

    async customerSeenAt(uow, chatId) {
      const row = (await trxOf(uow)("chats").where("id", chatId).first("customer_seen_at")) as { customer_seen_at: number | string } | undefined;
      return row === undefined ? undefined : Number(row.customer_seen_at);
    },

    async idleChats(cutoff, now, limit) {
      const rows = (await db
        .knex("chats")
        .whereIn("state", ["waiting", "active"])
        .andWhere("customer_seen_at", "<=", cutoff)
        .andWhere("expires_at", ">", now)
        .select("id")
        .limit(limit)) as { id: string }[];
      return rows.map((r) => r.id);
    },

    async addFile(uow, f) {
      await trxOf(uow)("chat_files").insert({
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
    },

    async liveFiles(chatId, uow) {
      return ((await on(uow)("chat_files").where("chat_id", chatId).whereNull("deleted_at").orderBy("created_at")) as FileSql[]).map(fileFromSql);
    },

    async readFile(chatId, fileId, uow) {
      const row = (await on(uow)("chat_files").where({ chat_id: chatId, id: fileId }).whereNull("deleted_at").first()) as FileSql | undefined;
      return row === undefined ? undefined : fileFromSql(row);
    },

    async markFileDeleted(uow, fileId, now) {
      await trxOf(uow)("chat_files").where("id", fileId).update({ deleted_at: now });
    },

    async setTyping(chatId, p, startedAt, until) {
      await db
        .knex("chat_typing")
        .insert({ chat_id: chatId, participant_id: p.participantId, nickname: p.nickname, kind: p.kind, started_at: startedAt, until })
        .onConflict(["chat_id", "participant_id"])
        .merge(["nickname", "kind", "started_at", "until"]);
    },

    typing: (chatId, now) => typing(db.knex, chatId, now),

    async typingOf(chatIds, now) {
      const out = new Map<string, TypingRecord[]>();
      if (chatIds.length === 0) return out;
      const rows = (await db.knex("chat_typing").whereIn("chat_id", chatIds).andWhere("until", ">", now).orderBy("started_at")) as (TypingSql & { chat_id: string })[];
      for (const r of rows) {
        const list = out.get(r.chat_id);
        if (list === undefined) out.set(r.chat_id, [typingFromSql(r)]);
        else list.push(typingFromSql(r));
      }
      return out;
    },

    async stopTyping(chatId, participantId, now) {
      // One statement: its row count says whether the participant was typing.
      return (await db.knex("chat_typing").where({ chat_id: chatId, participant_id: participantId }).andWhere("until", ">", now).delete()) > 0;
    },

    async lapseTyping(chatId, participantId, now) {
      // One statement: only a row that lapsed goes, never one a newer start extended meanwhile.
      return (await db.knex("chat_typing").where({ chat_id: chatId, participant_id: participantId }).andWhere("until", "<=", now).delete()) > 0;
    },

    async clearTyping(chatId, now) {
      const live = await typing(db.knex, chatId, now);
      await db.knex("chat_typing").where("chat_id", chatId).delete();
      return live;
    },

    extendChatsOfSession: (uow, sessionId, expiresAt) => extendChatsOfSession(trxOf(uow), sessionId, expiresAt),

    sweep: (now, batch) => sweepExpiredChats(db.knex, now, batch),
  };
}

/**
 * extendChatsOfSession gives a session's chat, and the stored files of that chat, a new expiry
 * (ExtendSession works for chats too). ChatStore.extendChatsOfSession is this in a unit of work.
 */
export async function extendChatsOfSession(q: Queryable, sessionId: string, expiresAt: number): Promise<void> {
  const chats = (await q("chats").where("session_id", sessionId).select("id")) as { id: string }[];
  if (chats.length === 0) return;
  const ids = chats.map((c) => c.id);
  await q("chats").whereIn("id", ids).update({ expires_at: expiresAt });
  const files = (await q("chat_files").whereIn("chat_id", ids).whereNull("deleted_at").select("data_id")) as { data_id: string }[];
  if (files.length > 0) await q("storage_data").whereIn("id", files.map((f) => f.data_id)).update({ expires_at: expiresAt });
}

/**
 * sweepExpiredChats deletes up to `batch` chats (with participants, events, files, typing) expired
 * before `now`; ChatStore.sweep is this on the pool. Each statement locks rows in key order, so
 * sweepers on several nodes at once never deadlock.
 */
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
