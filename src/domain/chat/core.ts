/**
 * What every chat concern shares: the unit of work around a locked chat (transact), appending an
 * event at the chat's next position and announcing it once committed, reading the transcript a
 * page at a time, and waiting for an announcement. lifecycle.ts, queue.ts, delivery.ts and
 * files.ts are written on top of it.
 */
import type { Bus, BusMessage, Topic } from "../../bus.js";
import type { Clock } from "../../clock.js";
import type { Config } from "../../config.js";
import { GmsError } from "../errors.js";
import type { Transactions, UnitOfWork } from "../unit-of-work.js";
import type { Activity } from "./activity.js";
import { eventDraft } from "./rules.js";
import type { ChatStore } from "./store.js";
import { chatTopic } from "./topics.js";
import type { Chat, ChatEventRecord, EventDraft, EventKind, ParticipantRef } from "./vocabulary.js";

/** PAGE is the most events one read returns; a longer transcript is read in pages. */
export const PAGE = 500;

/** CATCH_UP_MS is how often open streams and queue watches look at the store for what they may have missed. */
export const CATCH_UP_MS = 5_000;

/** Emit hands an appended event to transact, which announces it once the unit of work has committed. */
export type Emit = (e: ChatEventRecord) => void;

/** ChatCore is the shared machinery (see the module comment), with the dependencies it was made of. */
export interface ChatCore {
  readonly store: ChatStore;
  readonly transactions: Transactions;
  readonly clock: Clock;
  readonly bus: Bus;
  /** limits are the chat settings in effect (config `chat`), read at every call. */
  readonly limits: () => Config["chat"];
  readonly activity: Activity;
  /**
   * transact runs `fn` in a unit of work with the chat locked (NOT_FOUND when it is not live), so
   * events it appends get gapless positions, then announces what it emitted once committed.
   */
  transact<T>(chatId: string, fn: (uow: UnitOfWork, chat: Chat, emit: Emit) => Promise<T>): Promise<T>;
  /**
   * append stores an event at the locked chat's next position; an event by the customer also
   * records the customer's activity, in the statement that moves the position.
   */
  append(uow: UnitOfWork, chat: Chat, e: EventDraft): Promise<ChatEventRecord>;
  /** announce tells the chat's listeners of a committed event. */
  announce(e: ChatEventRecord): void;
  /** draft is an event by `from` now. */
  draft(from: ParticipantRef, kind: EventKind, more?: Partial<ChatEventRecord>): EventDraft;
  /** readFrom reads one page of a chat's transcript from position `from` (at least 1). */
  readFrom(chatId: string, from: number): Promise<ChatEventRecord[]>;
  /**
   * waitFor resolves when a message `accept`s on the topic, the time is up, or the signal aborts,
   * and leaves no listener or timer behind (cancel ends it early).
   */
  waitFor<M extends BusMessage>(on: Topic<M>, ms: number, signal: AbortSignal, accept?: (m: M) => boolean): { ready: Promise<void>; cancel: () => void };
}

/** CoreDeps are what the shared machinery is made of. */
export interface CoreDeps {
  store: ChatStore;
  transactions: Transactions;
  clock: Clock;
  bus: Bus;
  limits: () => Config["chat"];
  activity: Activity;
}

/** createCore builds the shared machinery. */
export function createCore({ store, transactions, clock, bus, limits, activity }: CoreDeps): ChatCore {
  function announce(e: ChatEventRecord): void {
    bus.publish(chatTopic(e.chatId), { kind: "event", event: e });
  }

  return {
    store,
    transactions,
    clock,
    bus,
    limits,
    activity,

    async transact(chatId, fn) {
      const emitted: ChatEventRecord[] = [];
      const result = await transactions.run(async (uow) => {
        const chat = await store.lockChat(uow, chatId, clock.now());
        if (chat === undefined) throw new GmsError("not_found", `chat ${chatId} not found`);
        return fn(uow, chat, (e) => emitted.push(e));
      });
      for (const e of emitted) announce(e);
      return result;
    },

    append(uow, chat, e) {
      if (e.from.kind !== "client") return store.append(uow, chat, e);
      activity.noted(chat.id, e.time);
      return store.append(uow, chat, e, e.time);
    },

    announce,

    draft: (from, kind, more = {}) => eventDraft(from, kind, clock.now(), more),

    readFrom: (chatId, from) => store.events(chatId, Math.max(1, from), PAGE),

    waitFor<M extends BusMessage>(on: Topic<M>, ms: number, signal: AbortSignal, accept: (m: M) => boolean = () => true) {
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
    },
  };
}
