/**
 * The customer's activity, which the idle timeout (chat.idle_timeout_seconds) measures: every call
 * of the customer counts, but it is written at most every idle/4 per chat, so most calls write
 * nothing. An event by the customer carries it in the statement that stores the event; an open
 * customer stream counts through the node-wide watch (watch.ts). Ending idle chats is lifecycle's.
 */
import type { Clock } from "../../clock.js";
import { touchDue } from "./rules.js";
import type { ChatStore } from "./store.js";
import type { Actor } from "./vocabulary.js";

/** Activity throttles the writes of the customer's activity (see the module comment). */
export interface Activity {
  /** noted records that the customer of the chat was active at `at` and that it is being written now (an event of theirs). */
  noted(chatId: string, at: number): void;
  /** touch records that the actor, if it is the customer of a chat not ended, did something other than add an event. */
  touch(actor: Actor): Promise<void>;
  /** forget drops what this node knows of a chat that ended. */
  forget(chatId: string): void;
}

/** createActivity builds the throttle over the store. */
export function createActivity(store: ChatStore, clock: Clock, idleMs: () => number): Activity {
  /**
   * When this node last recorded each chat's customer as active. Kept oldest first (by `noted`), so
   * the entries older than idleMs/4, which throttle nothing, are dropped as new ones come: the map
   * holds only the chats active lately.
   */
  const touched = new Map<string, number>();
  const noted = (chatId: string, at: number) => {
    touched.delete(chatId);
    touched.set(chatId, at);
    for (const [id, when] of touched) {
      if (at - when < idleMs() / 4) break;
      touched.delete(id);
    }
  };
  return {
    noted,
    async touch(actor) {
      if (actor.participant.kind !== "client" || actor.ended) return;
      const now = clock.now();
      if (!touchDue(touched.get(actor.chatId), now, idleMs())) return;
      noted(actor.chatId, now);
      await store.touchCustomer(actor.chatId, now);
    },
    forget: (chatId) => touched.delete(chatId),
  };
}
