/**
 * The node-wide watch: one periodic look at the store for every open stream and poll view of this
 * node, so a lost announcement delays an event by one interval at most, never loses it.
 */
import type { Clock } from "../../clock.js";
import type { ChatEvents } from "./events.js";
import type { ChatStore } from "./store.js";
import type { ChatMark, TypingRecord } from "./vocabulary.js";

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

/** ViewWatcher is a chat's poll view (poll.ts), as the node-wide checks see it. */
export interface ViewWatcher {
  chatId: string;
  /**
   * check hands the view what the store says at this look: the chat's mark (undefined: the chat is
   * gone) and who types in it. The view takes what it lacks and forgets what no longer matches.
   */
  check(mark: ChatMark | undefined, typing: readonly TypingRecord[]): void;
}

/** StreamWatch keeps the node's open streams and poll views honest without a timer or a query per chat. */
export interface StreamWatch {
  /** add registers an open stream until the returned function is called. */
  add(w: Watcher): () => void;
  /** addView registers a poll view until the returned function is called. */
  addView(v: ViewWatcher): () => void;
  /** size is the number of open streams registered. */
  readonly size: number;
  /** streamsOf is the number of open streams registered on a chat. */
  streamsOf(chatId: string): number;
}

/** The most chat ids one query asks about. */
const BATCH = 500;

/**
 * createStreamWatch runs, while streams are open or poll views kept on this node, one periodic look
 * at the store for all of them: a stream whose chat has moved past what it delivered (its
 * announcement was lost, or came from a node whose bus link is down) is poked to fetch the rest; a
 * poll view is handed its chat's position, state, expiry and typing rows, so a lost announcement
 * misleads it for one interval at most; and chats with an open customer stream are marked active.
 * One statement per batch of chats for the positions, one for the views' typing.
 */
export function createStreamWatch(store: ChatStore, clock: Clock, options: { intervalMs: number; heartbeatMs: () => number }, events: Pick<ChatEvents, "caughtUp">): StreamWatch {
  const watchers = new Set<Watcher>();
  /** perChat counts the open streams of each chat that has one. */
  const perChat = new Map<string, number>();
  const views = new Set<ViewWatcher>();
  let cancel: (() => void) | undefined;
  let lastBeat = clock.now();

  let running = false;

  async function tick(): Promise<void> {
    const byChat = new Map<string, Watcher[]>();
    for (const w of watchers) byChat.set(w.chatId, [...(byChat.get(w.chatId) ?? []), w]);
    const looked = [...views];
    const viewIds = [...new Set(looked.map((v) => v.chatId))];
    const ids = [...new Set([...byChat.keys(), ...viewIds])];
    const marks = new Map<string, ChatMark>();
    for (let i = 0; i < ids.length; i += BATCH) {
      const batch = await store.marks(ids.slice(i, i + BATCH));
      for (const [chatId, mark] of batch) {
        marks.set(chatId, mark);
        for (const w of byChat.get(chatId) ?? []) {
          if (mark.lastPosition < w.next()) continue;
          events.caughtUp();
          w.poke();
        }
      }
    }
    for (let i = 0; i < viewIds.length; i += BATCH) {
      const batch = viewIds.slice(i, i + BATCH);
      const typing = await store.typingOf(batch, clock.now());
      const inBatch = new Set(batch);
      for (const v of looked) if (inBatch.has(v.chatId) && views.has(v)) v.check(marks.get(v.chatId), typing.get(v.chatId) ?? []);
    }
    // The time is read now, not when the tick began: activity is recorded as of when it is written.
    const now = clock.now();
    if (now - lastBeat >= options.heartbeatMs()) {
      lastBeat = now;
      const customers = [...new Set([...watchers].filter((w) => w.customer).map((w) => w.chatId))];
      for (let i = 0; i < customers.length; i += BATCH) await store.touchCustomers(customers.slice(i, i + BATCH), now);
    }
  }

  /** schedule keeps a steady period whatever a tick takes; a tick still running makes the next one skip. */
  function schedule(): void {
    cancel = clock.setTimer(() => {
      if (watchers.size === 0 && views.size === 0) {
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

  function stopIfIdle(): void {
    if (watchers.size === 0 && views.size === 0 && cancel !== undefined) {
      cancel();
      cancel = undefined;
    }
  }

  return {
    add(w) {
      watchers.add(w);
      perChat.set(w.chatId, (perChat.get(w.chatId) ?? 0) + 1);
      if (cancel === undefined) schedule();
      return () => {
        if (!watchers.delete(w)) return;
        const left = (perChat.get(w.chatId) ?? 1) - 1;
        if (left === 0) perChat.delete(w.chatId);
        else perChat.set(w.chatId, left);
        stopIfIdle();
      };
    },
    addView(v) {
      views.add(v);
      if (cancel === undefined) schedule();
      return () => {
        views.delete(v);
        stopIfIdle();
      };
    },
    get size() {
      return watchers.size;
    },
    streamsOf: (chatId) => perChat.get(chatId) ?? 0,
  };
}
