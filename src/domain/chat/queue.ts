/**
 * The queues: each endpoint's waiting chats, an agent accepting the next one (AcceptChat), agents
 * watching a queue (WatchQueue), and the announcements that wake them when a chat is queued,
 * claimed or removed. A chat enters a queue through lifecycle.ts (started, left by its last agent,
 * transferred).
 */
import { GmsError } from "../errors.js";
import { newId } from "../ids.js";
import type { DataEntries, DataValue } from "../value.js";
import { CATCH_UP_MS, PAGE, type ChatCore } from "./core.js";
import { refOf } from "./rules.js";
import type { ChatData, ChatSessions } from "./store.js";
import { queueTopic, type QueueAnnouncement } from "./topics.js";
import type { Chat, ChatEventRecord, Participant, ParticipantRef, WaitingChat } from "./vocabulary.js";

/** Accepted is what AcceptChat returns to the agent. */
export interface Accepted {
  chat: Chat;
  participantId: string;
  customer: ParticipantRef;
  events: ChatEventRecord[];
  nextPosition: number;
  appData: DataEntries;
}

/** QueueState is an endpoint's waiting chats at one moment. */
export interface QueueState {
  endpoint: string;
  time: number;
  waiting: WaitingChat[];
}

/** ChatQueue is the agents' side of the queues. */
export interface ChatQueue {
  /**
   * accept gives the agent the chat that has waited longest on the endpoint, waiting up to
   * waitSeconds (at most chat.max_wait_seconds) for one; NOT_FOUND when none came.
   */
  accept(endpoint: string, nickname: string, identity: string, waitSeconds: number, signal: AbortSignal): Promise<Accepted>;
  /** watchQueue yields an endpoint's waiting chats now and whenever they change. */
  watchQueue(endpoint: string, signal: AbortSignal): AsyncGenerator<QueueState>;
}

/** QueueAnnouncer announces a queue's changes. */
export type QueueAnnouncer = (endpoint: string, kind: QueueAnnouncement["kind"], chatId: string) => void;

/** queueAnnouncer announces on the bus of the core. */
export const queueAnnouncer =
  (core: ChatCore): QueueAnnouncer =>
  (endpoint, kind, chatId) =>
    core.bus.publish(queueTopic(endpoint), { kind, chatId });

/** createQueue builds the agents' side of the queues. */
export function createQueue(core: ChatCore, sessions: ChatSessions, data: ChatData, announce: QueueAnnouncer): ChatQueue {
  const { store, transactions, clock, bus, limits } = core;

  /** tryClaim takes the oldest waiting chat for the agent, or nothing when none waits. */
  async function tryClaim(endpoint: string, nickname: string, identity: string): Promise<Accepted | undefined> {
    const now = clock.now();
    const emitted: ChatEventRecord[] = [];
    const claimed = await transactions.run(async (uow) => {
      const chat = await store.claimWaiting(uow, endpoint, now);
      if (chat === undefined) return undefined;
      const agent: Participant = { id: newId(), chatId: chat.id, kind: "agent", nickname, identity, joinedAt: now, leftAt: undefined };
      await store.addParticipant(uow, agent);
      await store.updateChat(uow, chat.id, { state: "active" });
      emitted.push(await core.append(uow, chat, core.draft(refOf(agent), "participant_joined")));
      const customer = (await store.participants(chat.id, uow)).find((p) => p.id === chat.customerParticipantId);
      return { chat: { ...chat, state: "active" as const }, agent, customer };
    });
    if (claimed === undefined) return undefined;
    for (const e of emitted) core.announce(e);
    announce(endpoint, "claimed", claimed.chat.id);
    const events: ChatEventRecord[] = [];
    for (let from = 1; ; ) {
      const page = await store.events(claimed.chat.id, from, PAGE);
      events.push(...page);
      if (page.length < PAGE) break;
      from = page[page.length - 1].position + 1;
    }
    const dataId = await sessions.dataIdOf(claimed.chat.sessionId, clock.now());
    const appData: DataEntries =
      dataId === undefined
        ? new Map<string, DataValue>()
        : await data.get(dataId).then(
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

  return {
    async accept(endpoint, nickname, identity, waitSeconds, signal) {
      const deadline = clock.now() + Math.min(waitSeconds, limits().max_wait_seconds) * 1000;
      for (;;) {
        // Listen before looking, so a chat queued between the look and the wait is not missed.
        // Look again at least every 2 s: a chat queued through a node whose announcement was lost still gets taken.
        const wait = core.waitFor(queueTopic(endpoint), Math.min(deadline - clock.now(), 2_000), signal, (m) => m.kind === "queued");
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
          const waiting = await store.waiting(endpoint, now, 1000);
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
  };
}
