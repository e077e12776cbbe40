/**
 * A chat's life: the customer starting it (RequestChat, with its session), who acts in it (the
 * customer by secure key, an agent by API key), leaving, transferring and ending it, and ending it
 * when its customer has gone idle. What each step does to the chat is decided by rules.ts; the
 * queues it enters and leaves are queue.ts's.
 */
import { randomBytes } from "node:crypto";
import type { ConfigSource } from "../../config.js";
import type { RequestKey } from "../idempotency.js";
import { newId } from "../ids.js";
import { resolveService } from "../services.js";
import type { DataEntries } from "../value.js";
import type { ChatCore } from "./core.js";
import type { PollViews } from "./poll.js";
import type { QueueAnnouncer } from "./queue.js";
import { agentActor, customerNickname, endsIdle, ensureOpen, ensurePresent, hashKey, leavesQueue, refOf, requeuesOnLeave, SYSTEM, transferOf, type Transfer } from "./rules.js";
import type { ChatData, ChatSessions, RunOnce } from "./store.js";
import type { Typing } from "./typing.js";
import type { Actor, Chat, ChatEventRecord, Participant } from "./vocabulary.js";

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

/** ChatLifecycle starts chats, finds who acts in them, and ends them. */
export interface ChatLifecycle {
  requestChat(input: RequestChatInput): Promise<ChatStart>;
  /** customer authenticates the customer by the chat's secure key (PERMISSION_DENIED otherwise). */
  customer(chatId: string, secureKey: string): Promise<Actor>;
  /** agent finds the caller's participant in the chat: a joined agent, or an admin as supervisor. */
  agent(chatId: string, identity: string, isAdmin: boolean): Promise<Actor>;
  /** disconnect is the customer leaving: PARTICIPANT_LEFT then CHAT_ENDED. */
  disconnect(actor: Actor): Promise<void>;
  /** leave is an agent leaving: the chat goes back to its queue while the customer is there. */
  leave(actor: Actor): Promise<void>;
  /** end ends the chat for everyone. */
  end(actor: Actor): Promise<void>;
  /** transfer moves the chat to another endpoint's queue; the agent leaves. */
  transfer(actor: Actor, endpoint: string): Promise<void>;
  /** sweepIdle ends the chats whose customer has been idle for chat.idle_timeout_seconds; returns how many. */
  sweepIdle(): Promise<number>;
  /** startIdleWatch runs sweepIdle periodically until the returned function is called. */
  startIdleWatch(): () => void;
}

/** LifecycleDeps are what a chat's life needs beyond the core. */
export interface LifecycleDeps {
  /** config is the configuration in effect (services), read at every call. */
  config: ConfigSource;
  once: RunOnce;
  sessions: ChatSessions;
  data: ChatData;
  typing: Typing;
  polls: PollViews;
  announceQueue: QueueAnnouncer;
}

/** createLifecycle builds the chat's life over the core. */
export function createLifecycle(core: ChatCore, { config, once, sessions, data, typing, polls, announceQueue }: LifecycleDeps): ChatLifecycle {
  const { store, clock, limits, activity } = core;
  const idleMs = () => limits().idle_timeout_seconds * 1000;

  /** ended is what follows a chat's end: nothing to throttle, nobody typing. */
  async function ended(chatId: string): Promise<void> {
    activity.forget(chatId);
    await typing.stopAll(chatId);
  }

  async function sweepIdle(): Promise<number> {
    const now = clock.now();
    const idle = idleMs();
    let count = 0;
    for (const id of await store.idleChats(now - idle, now, 100)) {
      let endpoint: string | undefined;
      const done = await core
        .transact(id, async (uow, chat, emit) => {
          // Looked at again under the lock: another node may have ended it, or the customer came back.
          if (!endsIdle(chat, await store.customerSeenAt(uow, id), now, idle)) return false;
          const customer = (await store.participants(id, uow)).find((p) => p.id === chat.customerParticipantId);
          if (customer !== undefined) {
            await store.updateParticipant(uow, customer.id, { leftAt: now });
            emit(await core.append(uow, chat, core.draft(refOf(customer), "participant_left", { text: "idle timeout" })));
          }
          emit(await core.append(uow, chat, core.draft(SYSTEM, "chat_ended", { text: "idle timeout" })));
          await store.updateChat(uow, chat.id, { state: "ended" });
          endpoint = leavesQueue(chat);
          return true;
        })
        .catch(() => false);
      if (!done) continue;
      count++;
      await ended(id);
      if (endpoint !== undefined) announceQueue(endpoint, "removed", id);
    }
    return count;
  }

  return {
    async requestChat(input) {
      const svc = resolveService(config(), input.service, "request-chat");
      const nickname = customerNickname(input);
      const endpoint = svc.options.endpoint ?? limits().default_endpoint;
      const ttlSeconds = svc.options.ttl ?? limits().default_ttl_seconds;
      const now = clock.now();
      const expiresAt = now + ttlSeconds * 1000;
      const emitted: ChatEventRecord[] = [];
      const start = await once(
        input.request,
        now,
        async (uow): Promise<ChatStart> => {
          const record = await data.createIn(uow, input.appData, expiresAt);
          const sessionId = newId();
          await sessions.insert(uow, { id: sessionId, service: svc.name, builtin: svc.builtin, dataId: record.dataId, createdAt: now, expiresAt });
          const secureKey = randomBytes(32).toString("base64url");
          const chat: Chat = {
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
          const customer: Participant = { id: chat.customerParticipantId, chatId: chat.id, kind: "client", nickname, identity: "", joinedAt: now, leftAt: undefined };
          await store.createChat(uow, chat, customer);
          const joined = await core.append(uow, chat, core.draft(refOf(customer), "participant_joined"));
          emitted.push(joined);
          return { chatId: chat.id, sessionId, dataId: record.dataId, secureKey, participantId: customer.id, events: [joined], nextPosition: 2 };
        },
        () => expiresAt,
      );
      // Nothing emitted: a retry answered from the first call, whose chat is queued already.
      for (const e of emitted) core.announce(e);
      if (emitted.length > 0) announceQueue(endpoint, "queued", start.chatId);
      return start;
    },

    async customer(chatId, secureKey) {
      return { chatId, ...(await polls.lookup(chatId, secureKey)) };
    },

    async agent(chatId, identity, isAdmin) {
      const chat = await store.readChat(chatId, clock.now());
      const { actor, leftAs } = agentActor(chatId, chat, chat === undefined ? [] : await store.participants(chatId), identity, isAdmin);
      if (leftAs !== undefined) actor.readUpTo = (await store.leavePosition(chatId, leftAs)) ?? 0;
      return actor;
    },

    async disconnect(actor) {
      await core.transact(actor.chatId, async (uow, chat, emit) => {
        ensureOpen(chat);
        const now = clock.now();
        await store.updateParticipant(uow, actor.participant.participantId, { leftAt: now });
        emit(await core.append(uow, chat, core.draft(actor.participant, "participant_left")));
        emit(await core.append(uow, chat, core.draft(actor.participant, "chat_ended")));
        await store.updateChat(uow, chat.id, { state: "ended" });
        const queue = leavesQueue(chat);
        if (queue !== undefined) announceQueue(queue, "removed", chat.id);
      });
      await ended(actor.chatId);
    },

    async leave(actor) {
      ensurePresent(actor);
      let requeued: string | undefined;
      await core.transact(actor.chatId, async (uow, chat, emit) => {
        ensureOpen(chat);
        await store.updateParticipant(uow, actor.participant.participantId, { leftAt: clock.now() });
        emit(await core.append(uow, chat, core.draft(actor.participant, "participant_left")));
        if (requeuesOnLeave(await store.participants(chat.id, uow), actor.participant.participantId)) {
          await store.updateChat(uow, chat.id, { state: "waiting" });
          requeued = chat.endpoint;
        }
      });
      await typing.stop(actor.chatId, actor.participant);
      if (requeued !== undefined) announceQueue(requeued, "queued", actor.chatId);
    },

    async end(actor) {
      ensurePresent(actor);
      await core.transact(actor.chatId, async (uow, chat, emit) => {
        ensureOpen(chat);
        emit(await core.append(uow, chat, core.draft(actor.participant, "chat_ended")));
        await store.updateChat(uow, chat.id, { state: "ended" });
        const queue = leavesQueue(chat);
        if (queue !== undefined) announceQueue(queue, "removed", chat.id);
      });
      await ended(actor.chatId);
    },

    async transfer(actor, endpoint) {
      ensurePresent(actor);
      let done: Transfer | undefined;
      await core.transact(actor.chatId, async (uow, chat, emit) => {
        ensureOpen(chat);
        const now = clock.now();
        const t = transferOf(actor, chat.endpoint, endpoint, now);
        if (t.agentLeaves) {
          await store.updateParticipant(uow, actor.participant.participantId, { leftAt: now });
          emit(await core.append(uow, chat, core.draft(actor.participant, "participant_left", { text: t.leftText })));
        }
        await store.updateChat(uow, chat.id, t.change);
        done = t;
      });
      await typing.stop(actor.chatId, actor.participant);
      if (done?.removedFrom !== undefined) announceQueue(done.removedFrom, "removed", actor.chatId);
      announceQueue(endpoint, "queued", actor.chatId);
    },

    sweepIdle,

    startIdleWatch() {
      let cancel = () => {};
      let stopped = false;
      const schedule = () => {
        // Every third of the idle timeout in effect, between 250 ms and 5 s.
        const every = Math.min(5_000, Math.max(250, idleMs() / 3));
        cancel = clock.setTimer(() => {
          void sweepIdle()
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
}
