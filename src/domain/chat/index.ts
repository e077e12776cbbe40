import { randomBytes } from "node:crypto";
import type { Knex } from "knex";
import { topic, type Bus, type BusMessage, type Topic } from "../../bus.js";
import type { Clock } from "../../clock.js";
import type { Config } from "../../config.js";
import { deleteData } from "../../store/storage-store.js";
import { appendEvent, claimWaitingChat, customerSeenAt, idleChats, insertFile, liveFiles, markFileDeleted, readFile, touchCustomer, waitingChats, type ChatFileRow, findEventByClientId, insertChat, insertParticipant, lastPosition, leavePosition, readChat, readEvents, readParticipants, updateChat, updateParticipant, uploadPosition, type ChatRow, type ParticipantRow } from "../../store/chat-store.js";
import type { ChatEventRecord, ParticipantRef } from "./vocabulary.js";
import type { Database } from "../../store/database.js";
import { insertSession, readSession } from "../../store/session-store.js";
import { checkUpload, type FileRules } from "./file-rules.js";
import { createPollViews, hashKey, POLL_VIEW_DEFAULTS, type PollViewOptions } from "./poll.js";
import { chatTopic, createTyping, eventDraft } from "./typing.js";
import { createStreamWatch } from "./watch.js";
import { GmsError, invalid } from "../errors.js";
import { runOnce, type RequestKey } from "../idempotency.js";
import { resolveService } from "../services.js";
import type { Storage } from "../storage.js";
import { byteLength, type DataEntries, type DataValue } from "../value.js";
import { newId } from "../ids.js";

/** The most events one read returns; a longer transcript is read in pages. */
const PAGE = 500;
/** How often an open stream checks the database for events whose announcement it may have missed. */
const CATCH_UP_MS = 5_000;

/** RequestChatInput starts a chat. */
export interface RequestChatInput {
  service: string;
  nickname: string;
  firstName: string;
  lastName: string;
  subject: string;
  emailAddress: string;
  userData: Record<string, string>;
  appData: DataEntries;
  request: RequestKey;
}

/** ChatStart is what RequestChat returns. */
export interface ChatStart {
  chatId: string;
  sessionId: string;
  dataId: string;
  secureKey: string;
  participantId: string;
  events: ChatEventRecord[];
  nextPosition: number;
}

/** Accepted is what AcceptChat returns to the agent. */
export interface Accepted {
  chat: ChatRow;
  participantId: string;
  customer: ParticipantRef;
  events: ChatEventRecord[];
  nextPosition: number;
  appData: DataEntries;
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

/** isOwnLeave says whether the event is the actor's leaving, past which an agent reads nothing. */
function isOwnLeave(actor: Actor, e: ChatEventRecord): boolean {
  return actor.boundByLeave === true && e.kind === "participant_left" && e.from.participantId === actor.participant.participantId;
}

/** readable cuts events to what the actor may read: up to readUpTo, and up to their own leaving. */
function readable(actor: Actor, events: ChatEventRecord[]): { events: ChatEventRecord[]; departed: boolean } {
  let out = actor.readUpTo === undefined ? events : events.filter((e) => e.position <= (actor.readUpTo ?? 0));
  const leave = out.findIndex((e) => isOwnLeave(actor, e));
  if (leave >= 0) out = out.slice(0, leave + 1);
  return { events: out, departed: actor.readUpTo !== undefined || leave >= 0 };
}

/** RefreshResult is a poll's answer. */
export interface RefreshResult {
  events: ChatEventRecord[];
  nextPosition: number;
  chatEnded: boolean;
  typing: ParticipantRef[];
}

/** SendInput is a message to send. */
export interface SendInput {
  text: string;
  messageType: string;
  clientMessageId: string;
}

/** ChatDeps are what the chat rules need. */
export interface ChatDeps {
  db: Database;
  clock: Clock;
  config: Config;
  storage: Storage;
  bus: Bus;
  /** pollViews bounds the chats whose polls this node answers from memory (default POLL_VIEW_DEFAULTS). */
  pollViews?: PollViewOptions | undefined;
}

/** Chats is request-chat: the customer's side, the agent's side and the delivery between them. */
export interface Chats {
  requestChat(input: RequestChatInput): Promise<ChatStart>;
  /** customer authenticates the customer by the chat's secure key (PERMISSION_DENIED otherwise). */
  customer(chatId: string, secureKey: string): Promise<Actor>;
  /** agent finds the caller's participant in the chat: a joined agent, or an admin as supervisor. */
  agent(chatId: string, identity: string, isAdmin: boolean): Promise<Actor>;
  accept(endpoint: string, nickname: string, identity: string, waitSeconds: number, signal: AbortSignal): Promise<Accepted>;
  send(actor: Actor, input: SendInput): Promise<number>;
  typing(actor: Actor, typing: boolean, text: string): Promise<void>;
  refresh(actor: Actor, from: number, waitSeconds: number, signal: AbortSignal): Promise<RefreshResult>;
  /**
   * customerRefresh is the customer's Refresh, authentication included. A poll that does not wait is
   * answered from this node's view of the chat (poll.ts) when the view says nothing new is
   * stored: no database work, bar the customer's activity, written at most every idle/4.
   */
  customerRefresh(chatId: string, secureKey: string, from: number, waitSeconds: number, signal: AbortSignal): Promise<RefreshResult>;
  /** pollViews is the number of chats this node keeps a poll view of. */
  readonly pollViews: number;
  subscribe(actor: Actor, from: number, signal: AbortSignal): AsyncGenerator<ChatEventRecord>;
  /** disconnect is the customer leaving: PARTICIPANT_LEFT then CHAT_ENDED. */
  disconnect(actor: Actor): Promise<void>;
  /** leave is an agent leaving: the chat goes back to its queue while the customer is there. */
  leave(actor: Actor): Promise<void>;
  /** end ends the chat for everyone. */
  end(actor: Actor): Promise<void>;
  /** updateNickname renames the customer (NICKNAME_UPDATED). */
  updateNickname(actor: Actor, nickname: string): Promise<number>;
  /** customNotice adds an application notice (CUSTOM_NOTICE). */
  customNotice(actor: Actor, text: string): Promise<number>;
  /** updateUserData changes the customer's user data (USER_DATA_UPDATED carries the result). */
  updateUserData(actor: Actor, set: Record<string, string>, remove: readonly string[]): Promise<number>;
  /** pushUrl shows the customer a page (PUSH_URL). */
  pushUrl(actor: Actor, url: string): Promise<number>;
  /** transfer moves the chat to another endpoint's queue; the agent leaves. */
  transfer(actor: Actor, endpoint: string): Promise<void>;
  uploadFile(actor: Actor, file: NewFile): Promise<{ fileId: string; position: number }>;
  downloadFile(actor: Actor, fileId: string): Promise<DownloadedFile>;
  deleteFile(actor: Actor, fileId: string): Promise<number>;
  fileLimits(actor: Actor): Promise<FileLimitsView>;
  /** watchQueue yields an endpoint's waiting chats now and whenever they change. */
  watchQueue(endpoint: string, signal: AbortSignal): AsyncGenerator<QueueState>;
  /** sweepIdle ends the chats whose customer has been idle for chat.idle_timeout_seconds; returns how many. */
  sweepIdle(): Promise<number>;
  /** startIdleWatch runs sweepIdle periodically until the returned function is called. */
  startIdleWatch(): () => void;
}

/** NewFile is a file to upload. */
export interface NewFile {
  filename: string;
  contentType: string;
  content: Uint8Array;
}

/** DownloadedFile is a chat file with its content. */
export interface DownloadedFile {
  file: ChatFileRow;
  content: Uint8Array;
  uploadedBy: ParticipantRef;
}

/** FileLimitsView is the file rules with what the chat already uses. */
export interface FileLimitsView extends FileRules {
  usedFiles: number;
  usedBytes: number;
}

/** QueueState is an endpoint's waiting chats at one moment. */
export interface QueueState {
  endpoint: string;
  time: number;
  waiting: { chatId: string; subject: string; nickname: string; queuedAt: number }[];
}

/** QueueAnnouncement is what an endpoint's queue topic carries: a chat queued on it, claimed from it, or removed. */
export interface QueueAnnouncement {
  kind: "queued" | "claimed" | "removed";
  chatId: string;
}

/** queueTopic is the bus topic of one endpoint's queue. */
const queueTopic = (endpoint: string): Topic<QueueAnnouncement> => topic(`queue:${endpoint}`);
const refOf = (p: ParticipantRow): ParticipantRef => ({ participantId: p.id, nickname: p.nickname, kind: p.kind });

/** createChats builds the chat rules. */
export function createChats({ db, clock, config, storage, bus, pollViews = POLL_VIEW_DEFAULTS }: ChatDeps): Chats {
  const limits = config.chat;
  const typing = createTyping(db, clock, bus, { coalesceMs: limits.typing_coalesce_seconds * 1000, timeoutMs: limits.typing_timeout_seconds * 1000 });
  const idleMs = limits.idle_timeout_seconds * 1000;
  /**
   * When this node last recorded each chat's customer as active: activity is written at most every
   * idleMs/4. Kept oldest first (by `note`), so the entries older than idleMs/4, which throttle
   * nothing, are dropped as new ones come: the map holds only the chats active lately.
   */
  const touched = new Map<string, number>();
  const note = (chatId: string, at: number) => {
    touched.delete(chatId);
    touched.set(chatId, at);
    for (const [id, when] of touched) {
      if (at - when < idleMs / 4) break;
      touched.delete(id);
    }
  };
  const system: ParticipantRef = { participantId: "system", nickname: "system", kind: "system" };
  const watch = createStreamWatch(db, clock, { intervalMs: CATCH_UP_MS, heartbeatMs: idleMs / 3 });
  const polls = createPollViews(db, clock, bus, watch, pollViews);

  /**
   * transact runs `fn` with the chat row locked, so events it appends get gapless positions, then
   * announces the appended events once the transaction has committed.
   */
  async function transact<T>(chatId: string, fn: (trx: Knex.Transaction, chat: ChatRow, emit: (e: ChatEventRecord) => void) => Promise<T>): Promise<T> {
    const emitted: ChatEventRecord[] = [];
    const result = await db.knex.transaction(async (trx) => {
      const chat = await readChat(trx, chatId, clock.now(), db.dialect);
      if (chat === undefined) throw new GmsError("not_found", `chat ${chatId} not found`);
      return fn(trx, chat, (e) => emitted.push(e));
    });
    for (const e of emitted) announce(e);
    return result;
  }

  function announce(e: ChatEventRecord): void {
    bus.publish(chatTopic(e.chatId), { kind: "event", event: e });
  }

  const draft = (from: ParticipantRef, kind: ChatEventRecord["kind"], more: Partial<ChatEventRecord> = {}) => eventDraft(from, kind, clock.now(), more);

  const hasEnded = (chatId: string) => new GmsError("failed_precondition", `chat ${chatId} has ended`);
  const ensureOpen = (chat: ChatRow) => {
    if (chat.state === "ended") throw hasEnded(chat.id);
  };
  const ensurePresent = (actor: Actor) => {
    if (!actor.present) throw new GmsError("failed_precondition", `participant ${actor.participant.participantId} has left chat ${actor.chatId}`);
  };

  // ---- waiting for announcements ----

  /**
   * waitFor resolves when a message arrives on the topic, the time is up, or the signal aborts,
   * and leaves no listener or timer behind.
   */
  function waitFor<M extends BusMessage>(on: Topic<M>, ms: number, signal: AbortSignal, accept: (m: M) => boolean = () => true): { ready: Promise<void>; cancel: () => void } {
    let done: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => (done = resolve));
    const off = bus.subscribe(on, (m) => {
      if (accept(m)) finish();
    });
    const cancelTimer = clock.setTimer(() => finish(), ms);
    const onAbort = () => finish();
    signal.addEventListener("abort", onAbort);
    function finish() {
      off();
      cancelTimer();
      signal.removeEventListener("abort", onAbort);
      done();
    }
    if (signal.aborted) finish();
    return { ready, cancel: finish };
  }

  async function readFrom(chatId: string, from: number): Promise<ChatEventRecord[]> {
    return readEvents(db.knex, chatId, Math.max(1, from), PAGE);
  }

  const checkText = (text: string) => {
    const size = byteLength(text);
    if (size > limits.max_message_length) {
      throw new GmsError("invalid_argument", `text is ${size} bytes; chat.max_message_length is ${limits.max_message_length}`, {
        type: "limit",
        limit: "chat.max_message_length",
        max: limits.max_message_length,
        actual: size,
      });
    }
    if (text.trim() === "") throw invalid("text: must not be blank");
  };

  async function tryClaim(endpoint: string, nickname: string, identity: string): Promise<Accepted | undefined> {
    const now = clock.now();
    const emitted: ChatEventRecord[] = [];
    const claimed = await db.knex.transaction(async (trx) => {
      const chat = await claimWaitingChat(trx, db.dialect, endpoint, now);
      if (chat === undefined) return undefined;
      const agent: ParticipantRow = { id: newId(), chatId: chat.id, kind: "agent", nickname, identity, joinedAt: now, leftAt: undefined };
      await insertParticipant(trx, agent);
      await updateChat(trx, chat.id, { state: "active" });
      emitted.push(await append(trx, chat, draft(refOf(agent), "participant_joined")));
      const customer = (await readParticipants(trx, chat.id)).find((p) => p.id === chat.customerParticipantId);
      return { chat: { ...chat, state: "active" as const }, agent, customer };
    });
    if (claimed === undefined) return undefined;
    for (const e of emitted) announce(e);
    bus.publish(queueTopic(endpoint), { kind: "claimed", chatId: claimed.chat.id });
    const events: ChatEventRecord[] = [];
    for (let from = 1; ; ) {
      const page = await readEvents(db.knex, claimed.chat.id, from, PAGE);
      events.push(...page);
      if (page.length < PAGE) break;
      from = page[page.length - 1].position + 1;
    }
    const session = await readSession(db.knex, claimed.chat.sessionId, clock.now());
    const appData: DataEntries =
      session === undefined
        ? new Map<string, DataValue>()
        : await storage.get(session.dataId).then(
            (d) => d.entries,
            () => new Map<string, DataValue>(),
          );
    return {
      chat: claimed.chat,
      participantId: claimed.agent.id,
      customer: claimed.customer === undefined ? { participantId: claimed.chat.customerParticipantId, nickname: "", kind: "client" } : refOf(claimed.customer),
      events,
      nextPosition: (events[events.length - 1]?.position ?? 0) + 1,
      appData,
    };
  }

  /**
   * append stores an event at the chat's next position; an event by the customer also records the
   * customer's activity, in the statement that moves the position.
   */
  function append(trx: Knex.Transaction, chat: ChatRow, e: Omit<ChatEventRecord, "position" | "chatId">): Promise<ChatEventRecord> {
    if (e.from.kind !== "client") return appendEvent(trx, chat, e);
    note(chat.id, e.time);
    return appendEvent(trx, chat, e, e.time);
  }

  /**
   * noteActivity records that the customer did something other than add an event (sending folds it
   * into the send). It writes at most every idleMs/4 per chat, so most calls skip it.
   */
  async function noteActivity(actor: Actor): Promise<void> {
    if (actor.participant.kind === "client" && !actor.ended) await touch(actor.chatId, false);
  }

  /** touch records the customer's activity, writing at most every idleMs/4 unless forced. */
  async function touch(chatId: string, force: boolean): Promise<void> {
    const now = clock.now();
    if (!force && now - (touched.get(chatId) ?? 0) < idleMs / 4) return;
    note(chatId, now);
    await touchCustomer(db.knex, chatId, now);
  }

  /** appendOne adds one event by a present participant to an open chat and returns its position. */
  async function appendOne(actor: Actor, kind: ChatEventRecord["kind"], more: Partial<ChatEventRecord> = {}, change?: (trx: Knex.Transaction, chat: ChatRow) => Promise<void>): Promise<number> {
    ensurePresent(actor);
    return transact(actor.chatId, async (trx, chat, emit) => {
      ensureOpen(chat);
      await change?.(trx, chat);
      const e = await append(trx, chat, draft(actor.participant, kind, more));
      emit(e);
      return e.position;
    });
  }

  async function usage(q: Knex | Knex.Transaction, chatId: string) {
    const files = await liveFiles(q, chatId);
    return { files, count: files.length, bytes: files.reduce((n, f) => n + f.size, 0) };
  }

  const fileLimitsOnly = (max: number) => ({ defaultTtlSeconds: 1, maxEntries: 1, maxKeyBytes: 16, maxValueBytes: max, maxDataBytes: max });

  /** refresh is a poll of the transcript from `from`, by any participant (Chats.refresh). */
  async function refresh(actor: Actor, from: number, waitSeconds: number, signal: AbortSignal): Promise<RefreshResult> {
    await noteActivity(actor);
    const start = Math.max(1, from);
    const answer = async (fresh: boolean): Promise<RefreshResult> => {
      // Where the transcript ends is known to the lookup that authenticated the caller, in this same
      // call, and, kept current since, to the chat's poll view if this node keeps one (poll.ts
      // says how fresh it is): a poll with nothing new to read skips the transcript query. A
      // long-poll (fresh) reads the store, so an announcement it missed before it listened is found.
      const known = polls.known(actor.chatId);
      const last = Math.max(actor.lastPosition, known?.lastPosition ?? 0);
      const beyond = actor.readUpTo !== undefined && start > actor.readUpTo;
      const read = beyond || (!fresh && last < start) ? [] : await readFrom(actor.chatId, start);
      polls.saw(actor.chatId, read);
      // An agent who has left or transferred reads up to their leaving, and the chat is over for them.
      const { events, departed } = readable(actor, read);
      // Ended before this call, or since: then CHAT_ENDED is among the events read after it.
      const chatEnded = departed || actor.ended || known?.ended === true || events.some((e) => e.kind === "chat_ended");
      const typingNow = chatEnded ? [] : (await polls.typing(actor.chatId)).filter((p) => p.participantId !== actor.participant.participantId);
      return { events, nextPosition: (events[events.length - 1]?.position ?? start - 1) + 1, chatEnded, typing: typingNow };
    };
    if (waitSeconds <= 0) return answer(false);
    const wait = waitFor(chatTopic(actor.chatId), Math.min(waitSeconds, limits.max_wait_seconds) * 1000, signal);
    try {
      const first = await answer(true);
      if (first.events.length > 0 || first.chatEnded) return first;
      await wait.ready;
    } finally {
      wait.cancel();
    }
    return answer(true);
  }

  const api: Chats = {
    async requestChat(input) {
      const svc = resolveService(config, input.service, "request-chat");
      if (input.nickname.trim() === "" && (input.firstName.trim() === "" || input.lastName.trim() === "")) {
        throw invalid("nickname, or first_name and last_name, is required");
      }
      const nickname = input.nickname.trim() !== "" ? input.nickname.trim() : `${input.firstName.trim()} ${input.lastName.trim()}`;
      const endpoint = svc.options.endpoint ?? limits.default_endpoint;
      const ttlSeconds = svc.options.ttl ?? limits.default_ttl_seconds;
      const now = clock.now();
      const expiresAt = now + ttlSeconds * 1000;
      const emitted: ChatEventRecord[] = [];
      const start = await runOnce(
        db,
        input.request,
        now,
        async (trx): Promise<ChatStart> => {
          const data = await storage.createIn(trx, input.appData, expiresAt);
          const sessionId = newId();
          await insertSession(trx, { id: sessionId, service: svc.name, builtin: svc.builtin, state: "active", phoneNumber: "", dataId: data.dataId, createdAt: now, expiresAt });
          const secureKey = randomBytes(32).toString("base64url");
          const chat: ChatRow = {
            id: newId(),
            sessionId,
            service: svc.name,
            endpoint,
            state: "waiting",
            subject: input.subject,
            emailAddress: input.emailAddress,
            userData: input.userData,
            secureKeyHash: hashKey(secureKey),
            customerParticipantId: newId(),
            lastPosition: 0,
            createdAt: now,
            queuedAt: now,
            expiresAt,
          };
          await insertChat(trx, chat);
          const customer: ParticipantRow = { id: chat.customerParticipantId, chatId: chat.id, kind: "client", nickname, identity: "", joinedAt: now, leftAt: undefined };
          await insertParticipant(trx, customer);
          const joined = await append(trx, chat, draft(refOf(customer), "participant_joined"));
          emitted.push(joined);
          return { chatId: chat.id, sessionId, dataId: data.dataId, secureKey, participantId: customer.id, events: [joined], nextPosition: 2 };
        },
        () => expiresAt,
      );
      for (const e of emitted) announce(e);
      if (emitted.length > 0) bus.publish(queueTopic(endpoint), { kind: "queued", chatId: start.chatId });
      return start;
    },

    async customer(chatId, secureKey) {
      return { chatId, ...(await polls.lookup(chatId, secureKey)) };
    },

    async agent(chatId, identity, isAdmin) {
      // An unknown chat and a chat the agent is not in are the same answer: an agent's key does not
      // learn which chat ids exist. A supervisor (admin) may know.
      const notJoined = () => new GmsError("permission_denied", `${identity} has not joined chat ${chatId}`);
      const chat = await readChat(db.knex, chatId, clock.now());
      if (chat === undefined) throw isAdmin ? new GmsError("not_found", `chat ${chatId} not found`) : notJoined();
      const mine = (await readParticipants(db.knex, chatId)).filter((p) => p.kind === "agent" && p.identity === identity);
      const current = mine.find((p) => p.leftAt === undefined) ?? mine[mine.length - 1];
      const known = { ended: chat.state === "ended", lastPosition: chat.lastPosition };
      if (current !== undefined) {
        const present = current.leftAt === undefined;
        const actor: Actor = { chatId, participant: refOf(current), present, ...known, boundByLeave: !isAdmin };
        // Left or transferred (every time they were in it): nothing newer than their last leaving.
        if (!present && !isAdmin) actor.readUpTo = (await leavePosition(db.knex, chatId, mine.map((p) => p.id))) ?? 0;
        return actor;
      }
      if (isAdmin) return { chatId, participant: { participantId: `supervisor:${identity}`, nickname: identity, kind: "supervisor" }, present: true, ...known };
      throw notJoined();
    },

    async accept(endpoint, nickname, identity, waitSeconds, signal) {
      const deadline = clock.now() + Math.min(waitSeconds, limits.max_wait_seconds) * 1000;
      for (;;) {
        // Listen before looking, so a chat queued between the look and the wait is not missed.
        // Look again at least every 2 s: a chat queued through a node whose announcement was lost still gets taken.
        const wait = waitFor(queueTopic(endpoint), Math.min(deadline - clock.now(), 2_000), signal, (m) => m.kind === "queued");
        try {
          const accepted = await tryClaim(endpoint, nickname, identity);
          if (accepted !== undefined) return accepted;
          if (clock.now() >= deadline || signal.aborted) throw new GmsError("not_found", `no chat is waiting on endpoint "${endpoint}"`);
          await wait.ready;
        } finally {
          wait.cancel();
        }
        if (signal.aborted) throw new GmsError("not_found", `no chat is waiting on endpoint "${endpoint}"`);
      }
    },

    async send(actor, input) {
      checkText(input.text);
      ensurePresent(actor);
      const position = await transact(actor.chatId, async (trx, chat, emit) => {
        ensureOpen(chat);
        if (input.clientMessageId !== "") {
          const prior = await findEventByClientId(trx, chat.id, actor.participant.participantId, input.clientMessageId);
          if (prior !== undefined) return prior.position;
        }
        const e = await append(trx, chat, draft(actor.participant, "message", { text: input.text, messageType: input.messageType, clientMessageId: input.clientMessageId }));
        emit(e);
        return e.position;
      });
      await typing.stop(actor.chatId, actor.participant);
      return position;
    },

    async typing(actor, isTyping, text) {
      ensurePresent(actor);
      await noteActivity(actor);
      // The lookup that found the actor, in this same call, read whether the chat has ended.
      if (actor.ended) throw hasEnded(actor.chatId);
      if (isTyping) await typing.start(actor.chatId, actor.participant, text);
      else await typing.stop(actor.chatId, actor.participant);
    },

    refresh,

    async customerRefresh(chatId, secureKey, from, waitSeconds, signal) {
      // Only a poll that does not wait is answered from memory: a long-poll waits anyway, and the
      // store tells it at once whether the chat has ended.
      const customer = waitSeconds <= 0 ? await polls.customer(chatId, secureKey) : await polls.lookup(chatId, secureKey);
      return refresh({ chatId, ...customer }, from, waitSeconds, signal);
    },

    get pollViews() {
      return polls.size;
    },

    async *subscribe(actor, from, signal) {
      await noteActivity(actor);
      // The stream ends after CHAT_ENDED, and for an agent after their own leaving (readable()).
      const isLast = (e: ChatEventRecord) => e.kind === "chat_ended" || isOwnLeave(actor, e) || (actor.readUpTo !== undefined && e.position >= actor.readUpTo);
      if (actor.readUpTo !== undefined && Math.max(1, from) > actor.readUpTo) return;
      const queue: ChatEventRecord[] = [];
      let wake: (() => void) | undefined;
      let lookInStore = false;
      const off = bus.subscribe(chatTopic(actor.chatId), (m) => {
        queue.push(m.event);
        wake?.();
      });
      const onAbort = () => wake?.();
      signal.addEventListener("abort", onAbort);
      let next = Math.max(1, from);
      // The node-wide watch looks at the store for every open stream at once: missed announcements
      // are fetched, and an open customer stream counts as the customer's activity.
      const unwatch = watch.add({
        chatId: actor.chatId,
        customer: actor.participant.kind === "client",
        next: () => next,
        poke: () => {
          lookInStore = true;
          wake?.();
        },
      });
      try {
        // Replay what is stored, then go live; announcements queued meanwhile are deduplicated by position.
        for (;;) {
          const page = await readFrom(actor.chatId, next);
          for (const e of page) {
            yield e;
            next = e.position + 1;
            if (isLast(e)) return;
          }
          if (page.length < PAGE) break;
        }
        while (!signal.aborted) {
          let fetch = false;
          if (lookInStore) {
            lookInStore = false;
            const last = await lastPosition(db.knex, actor.chatId);
            fetch = last !== undefined && last >= next;
          }
          if (!fetch) {
            const m = queue.shift();
            if (m === undefined) {
              await new Promise<void>((resolve) => (wake = resolve));
              wake = undefined;
              continue;
            }
            if (m.position === 0) {
              if (m.from.participantId !== actor.participant.participantId) yield m;
              continue;
            }
            if (m.position < next) continue;
            if (m.position === next) {
              yield m;
              next = m.position + 1;
              if (isLast(m)) return;
              continue;
            }
            // A jump: an announcement was missed (or arrived out of order). Fetch the gap from the store.
          }
          const page = await readFrom(actor.chatId, next);
          for (const e of page) {
            yield e;
            next = e.position + 1;
            if (isLast(e)) return;
          }
          if (page.length === PAGE) lookInStore = true;
        }
      } finally {
        off();
        unwatch();
        signal.removeEventListener("abort", onAbort);
      }
    },

    async disconnect(actor) {
      await transact(actor.chatId, async (trx, chat, emit) => {
        ensureOpen(chat);
        const now = clock.now();
        await updateParticipant(trx, actor.participant.participantId, { leftAt: now });
        emit(await append(trx, chat, draft(actor.participant, "participant_left")));
        emit(await append(trx, chat, draft(actor.participant, "chat_ended")));
        await updateChat(trx, chat.id, { state: "ended" });
        if (chat.state === "waiting") bus.publish(queueTopic(chat.endpoint), { kind: "removed", chatId: chat.id });
      });
      touched.delete(actor.chatId);
      await typing.stopAll(actor.chatId);
    },

    async leave(actor) {
      ensurePresent(actor);
      let requeued: string | undefined;
      await transact(actor.chatId, async (trx, chat, emit) => {
        ensureOpen(chat);
        await updateParticipant(trx, actor.participant.participantId, { leftAt: clock.now() });
        emit(await append(trx, chat, draft(actor.participant, "participant_left")));
        const agentsLeft = (await readParticipants(trx, chat.id)).filter((p) => p.kind === "agent" && p.leftAt === undefined && p.id !== actor.participant.participantId);
        if (agentsLeft.length === 0) {
          // Back to the queue, keeping its place: it has waited longest.
          await updateChat(trx, chat.id, { state: "waiting" });
          requeued = chat.endpoint;
        }
      });
      await typing.stop(actor.chatId, actor.participant);
      if (requeued !== undefined) bus.publish(queueTopic(requeued), { kind: "queued", chatId: actor.chatId });
    },

    async end(actor) {
      ensurePresent(actor);
      await transact(actor.chatId, async (trx, chat, emit) => {
        ensureOpen(chat);
        emit(await append(trx, chat, draft(actor.participant, "chat_ended")));
        await updateChat(trx, chat.id, { state: "ended" });
        if (chat.state === "waiting") bus.publish(queueTopic(chat.endpoint), { kind: "removed", chatId: chat.id });
      });
      touched.delete(actor.chatId);
      await typing.stopAll(actor.chatId);
    },

    updateNickname(actor, nickname) {
      const renamed = { ...actor.participant, nickname };
      return appendOne({ ...actor, participant: renamed }, "nickname_updated", { text: nickname }, (trx) => updateParticipant(trx, actor.participant.participantId, { nickname }));
    },

    customNotice(actor, text) {
      checkText(text);
      return appendOne(actor, "custom_notice", { text });
    },

    async updateUserData(actor, set, remove) {
      let merged: Record<string, string> = {};
      ensurePresent(actor);
      return transact(actor.chatId, async (trx, chat, emit) => {
        ensureOpen(chat);
        merged = { ...chat.userData, ...set };
        for (const k of remove) delete merged[k];
        await updateChat(trx, chat.id, { userData: merged });
        const e = await append(trx, chat, draft(actor.participant, "user_data_updated", { userData: merged }));
        emit(e);
        return e.position;
      });
    },

    pushUrl(actor, url) {
      return appendOne(actor, "push_url", { text: url });
    },

    async transfer(actor, endpoint) {
      ensurePresent(actor);
      let from = "";
      await transact(actor.chatId, async (trx, chat, emit) => {
        ensureOpen(chat);
        from = chat.endpoint;
        if (actor.participant.kind === "agent") {
          await updateParticipant(trx, actor.participant.participantId, { leftAt: clock.now() });
          emit(await append(trx, chat, draft(actor.participant, "participant_left", { text: `transferred to ${endpoint}` })));
        }
        await updateChat(trx, chat.id, { endpoint, state: "waiting", queuedAt: clock.now() });
      });
      await typing.stop(actor.chatId, actor.participant);
      if (from !== endpoint) bus.publish(queueTopic(from), { kind: "removed", chatId: actor.chatId });
      bus.publish(queueTopic(endpoint), { kind: "queued", chatId: actor.chatId });
    },

    async uploadFile(actor, file) {
      ensurePresent(actor);
      return transact(actor.chatId, async (trx, chat, emit) => {
        ensureOpen(chat);
        const used = await usage(trx, chat.id);
        const agentPresent = (await readParticipants(trx, chat.id)).some((p) => p.kind === "agent" && p.leftAt === undefined);
        const size = file.content.byteLength;
        checkUpload(limits.files, { filename: file.filename, contentType: file.contentType, size }, { files: used.count, bytes: used.bytes }, {
          isCustomer: actor.participant.kind === "client",
          agentPresent,
        });
        const stored = await storage.createIn(trx, new Map([["file", { kind: "file" as const, ...file }]]), chat.expiresAt, fileLimitsOnly(limits.files.max_file_bytes));
        const fileId = newId();
        await insertFile(trx, {
          id: fileId,
          chatId: chat.id,
          participantId: actor.participant.participantId,
          dataId: stored.dataId,
          filename: file.filename,
          contentType: file.contentType,
          size,
          createdAt: clock.now(),
        });
        const e = await append(trx, chat, draft(actor.participant, "file_uploaded", { fileId, fileName: file.filename, fileSize: size, fileContentType: file.contentType }));
        emit(e);
        return { fileId, position: e.position };
      });
    },

    async downloadFile(actor, fileId) {
      await noteActivity(actor);
      const file = await readFile(db.knex, actor.chatId, fileId);
      const notFound = () => new GmsError("not_found", `file ${fileId} not found in chat ${actor.chatId}`);
      if (file === undefined) throw notFound();
      // An agent who has left downloads only what was uploaded before they left: a later file is as
      // unknown to them as one that never was.
      if (actor.readUpTo !== undefined && ((await uploadPosition(db.knex, actor.chatId, fileId)) ?? Infinity) > actor.readUpTo) throw notFound();
      const value = (await storage.get(file.dataId)).entries.get("file");
      if (value?.kind !== "file") throw new GmsError("not_found", `file ${fileId} has expired`);
      const uploader = (await readParticipants(db.knex, actor.chatId)).find((p) => p.id === file.participantId);
      return {
        file,
        content: value.content,
        uploadedBy: uploader === undefined ? { participantId: file.participantId, nickname: "", kind: "supervisor" } : refOf(uploader),
      };
    },

    async deleteFile(actor, fileId) {
      ensurePresent(actor);
      return transact(actor.chatId, async (trx, chat, emit) => {
        ensureOpen(chat);
        const file = await readFile(trx, chat.id, fileId);
        if (file === undefined) throw new GmsError("not_found", `file ${fileId} not found in chat ${chat.id}`);
        if (file.participantId !== actor.participant.participantId && actor.participant.kind !== "supervisor") {
          throw new GmsError("permission_denied", "only the participant who uploaded a file may delete it");
        }
        const now = clock.now();
        await markFileDeleted(trx, fileId, now);
        await deleteData(trx, file.dataId, now);
        const e = await append(trx, chat, draft(actor.participant, "file_deleted", { fileId, fileName: file.filename, fileSize: file.size, fileContentType: file.contentType }));
        emit(e);
        return e.position;
      });
    },

    async fileLimits(actor) {
      // What the chat holds now is newer than an agent's leaving.
      if (actor.readUpTo !== undefined) ensurePresent(actor);
      await noteActivity(actor);
      const used = await usage(db.knex, actor.chatId);
      return { ...limits.files, usedFiles: used.count, usedBytes: used.bytes };
    },

    async *watchQueue(endpoint, signal) {
      let dirty = true;
      let wake: (() => void) | undefined;
      const poke = () => {
        dirty = true;
        wake?.();
      };
      const off = bus.subscribe(queueTopic(endpoint), poke);
      signal.addEventListener("abort", poke);
      // Expiring chats and missed announcements show up at the next periodic look.
      let cancelTimer = () => {};
      const schedule = () => {
        cancelTimer = clock.setTimer(() => {
          poke();
          schedule();
        }, CATCH_UP_MS);
      };
      schedule();
      let last = "";
      try {
        while (!signal.aborted) {
          if (!dirty) {
            await new Promise<void>((resolve) => (wake = resolve));
            wake = undefined;
            continue;
          }
          dirty = false;
          const now = clock.now();
          const waiting = (await waitingChats(db.knex, endpoint, now, 1000)).map((c) => ({ chatId: c.id, subject: c.subject, nickname: c.nickname, queuedAt: c.queuedAt }));
          const key = JSON.stringify(waiting);
          if (key === last) continue;
          last = key;
          yield { endpoint, time: now, waiting };
        }
      } finally {
        off();
        cancelTimer();
        signal.removeEventListener("abort", poke);
      }
    },

    async sweepIdle() {
      const now = clock.now();
      let ended = 0;
      for (const id of await idleChats(db.knex, now - idleMs, now, 100)) {
        let endpoint: string | undefined;
        const done = await transact(id, async (trx, chat, emit) => {
          // Looked at again under the lock: another node may have ended it, or the customer came back.
          const seen = await customerSeenAt(trx, id);
          if (chat.state === "ended" || seen === undefined || seen > now - idleMs) return false;
          const customer = (await readParticipants(trx, id)).find((p) => p.id === chat.customerParticipantId);
          if (customer !== undefined) {
            await updateParticipant(trx, customer.id, { leftAt: now });
            emit(await append(trx, chat, draft(refOf(customer), "participant_left", { text: "idle timeout" })));
          }
          emit(await append(trx, chat, draft(system, "chat_ended", { text: "idle timeout" })));
          await updateChat(trx, chat.id, { state: "ended" });
          if (chat.state === "waiting") endpoint = chat.endpoint;
          return true;
        }).catch(() => false);
        if (!done) continue;
        ended++;
        touched.delete(id);
        await typing.stopAll(id);
        if (endpoint !== undefined) bus.publish(queueTopic(endpoint), { kind: "removed", chatId: id });
      }
      return ended;
    },

    startIdleWatch() {
      let cancel = () => {};
      let stopped = false;
      const every = Math.min(5_000, Math.max(250, idleMs / 3));
      const schedule = () => {
        cancel = clock.setTimer(() => {
          void api.sweepIdle()
            .catch(() => 0)
            .finally(() => {
              if (!stopped) schedule();
            });
        }, every);
      };
      schedule();
      return () => {
        stopped = true;
        cancel();
      };
    },
  };
  return api;
}
