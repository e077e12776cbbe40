import type { Clock } from "../clock.js";
import { lastPositions, touchCustomers } from "../store/chat-store.js";
import type { Database } from "../store/database.js";

/** Watcher is one open event stream, as the node-wide checks see it. */
export interface Watcher {
  chatId: string;
  /** customer is true for the customer's own stream: it keeps the customer active (idle timeout). */
  customer: boolean;
  /** next is the position the stream expects next. */
  next(): number;
  /** poke tells the stream the store has events it has not delivered: it fetches them. */
  poke(): void;
}

/** StreamWatch keeps the node's open streams honest without a timer or a query per stream. */
export interface StreamWatch {
  /** add registers an open stream until the returned function is called. */
  add(w: Watcher): () => void;
  /** size is the number of open streams registered. */
  readonly size: number;
}

/** The most chat ids one query asks about. */
const BATCH = 500;

/**
 * createStreamWatch runs, while streams are open on this node, one periodic look at the store for
 * all of them: a stream whose chat has moved past what it delivered (its announcement was lost, or
 * came from a node whose bus link is down) is poked to fetch the rest, and chats with an open
 * customer stream are marked active, in one statement per batch.
 */
export function createStreamWatch(db: Database, clock: Clock, options: { intervalMs: number; heartbeatMs: number }): StreamWatch {
  const watchers = new Set<Watcher>();
  let cancel: (() => void) | undefined;
  let lastBeat = clock.now();

  let running = false;

  async function tick(): Promise<void> {
    const byChat = new Map<string, Watcher[]>();
    for (const w of watchers) byChat.set(w.chatId, [...(byChat.get(w.chatId) ?? []), w]);
    const ids = [...byChat.keys()];
    for (let i = 0; i < ids.length; i += BATCH) {
      const last = await lastPositions(db.knex, ids.slice(i, i + BATCH));
      for (const [chatId, position] of last) for (const w of byChat.get(chatId) ?? []) if (position >= w.next()) w.poke();
    }
    // The time is read now, not when the tick began: activity is recorded as of when it is written.
    const now = clock.now();
    if (now - lastBeat >= options.heartbeatMs) {
      lastBeat = now;
      const customers = [...new Set([...watchers].filter((w) => w.customer).map((w) => w.chatId))];
      for (let i = 0; i < customers.length; i += BATCH) await touchCustomers(db.knex, customers.slice(i, i + BATCH), now);
    }
  }

  /** schedule keeps a steady period whatever a tick takes; a tick still running makes the next one skip. */
  function schedule(): void {
    cancel = clock.setTimer(() => {
      if (watchers.size === 0) {
        cancel = undefined;
        return;
      }
      schedule();
      if (running) return;
      running = true;
      void tick()
        .catch(() => undefined)
        .finally(() => {
          running = false;
        });
    }, options.intervalMs);
  }

  return {
    add(w) {
      watchers.add(w);
      if (cancel === undefined) schedule();
      return () => {
        watchers.delete(w);
        if (watchers.size === 0 && cancel !== undefined) {
          cancel();
          cancel = undefined;
        }
      };
    },
    get size() {
      return watchers.size;
    },
  };
}
