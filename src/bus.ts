/**
 * Bus announces what was committed to the database (new chat events, typing, queue changes) to
 * whoever is waiting on this node. Announcements are hints: a listener that misses one catches up
 * from the database, so a lost announcement costs latency, never an event. In-process here; a
 * Redis implementation carries the same messages between nodes.
 */
export interface Bus {
  /** publish announces a JSON-serialisable message on a topic. */
  publish(topic: string, message: BusMessage): void;
  /** subscribe calls listener for every message on the topic until the returned function is called. */
  subscribe(topic: string, listener: (message: BusMessage) => void): () => void;
  /** listenerCount is the number of live subscriptions (leak checks and metrics). */
  listenerCount(): number;
  close(): Promise<void>;
}

/** BusMessage is what travels on the bus: plain JSON. */
export type BusMessage = { kind: string } & Record<string, unknown>;

/** createLocalBus is the in-process bus: one node, no network. */
export function createLocalBus(): Bus {
  const topics = new Map<string, Set<(m: BusMessage) => void>>();
  let count = 0;
  return {
    publish(topic, message) {
      const listeners = topics.get(topic);
      if (listeners === undefined) return;
      for (const l of [...listeners]) l(message);
    },
    subscribe(topic, listener) {
      let set = topics.get(topic);
      if (set === undefined) topics.set(topic, (set = new Set()));
      // Wrapped, so the same function subscribed twice is two subscriptions.
      const entry = (m: BusMessage) => listener(m);
      set.add(entry);
      count++;
      let done = false;
      return () => {
        if (done) return;
        done = true;
        count--;
        set.delete(entry);
        if (set.size === 0) topics.delete(topic);
      };
    },
    listenerCount: () => count,
    close: () => Promise.resolve(),
  };
}
