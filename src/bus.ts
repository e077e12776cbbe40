/**
 * Bus announces what was committed to the database (new chat events, typing, queue changes) to
 * whoever is waiting on this node. Announcements are hints: a listener that misses one catches up
 * from the database, so a lost announcement costs latency, never an event. In-process here; a
 * Redis implementation carries the same messages between nodes.
 */
export interface Bus {
  /** publish announces a JSON-serialisable message on a topic. */
  publish<M extends BusMessage>(topic: Topic<M>, message: M): void;
  /** subscribe calls listener for every message on the topic until the returned function is called. */
  subscribe<M extends BusMessage>(topic: Topic<M>, listener: (message: M) => void): () => void;
  /** listenerCount is the number of live subscriptions (leak checks and metrics). */
  listenerCount(): number;
  /** connected tells whether announcements reach the other nodes now (in process: always). */
  connected(): boolean;
  close(): Promise<void>;
}

/** BusMessage is what travels on the bus: plain JSON, told apart by its kind. */
export interface BusMessage {
  readonly kind: string;
}

/**
 * Topic is a bus topic: its name, and (as a type only) the messages it carries, so a publisher and
 * its subscribers agree on them. Topics are made by the module that owns their messages.
 */
export interface Topic<M extends BusMessage> {
  readonly name: string;
  /** message is never set: it carries the topic's message type. */
  readonly message?: M;
}

/** topic makes the topic `name` carrying messages of type M. */
export function topic<M extends BusMessage>(name: string): Topic<M> {
  return { name };
}

/** createLocalBus is the in-process bus: one node, no network. */
export function createLocalBus(): Bus {
  const topics = new Map<string, Set<(m: BusMessage) => void>>();
  let count = 0;
  return {
    publish(topic, message) {
      const listeners = topics.get(topic.name);
      if (listeners === undefined) return;
      for (const l of [...listeners]) l(message);
    },
    subscribe<M extends BusMessage>(topic: Topic<M>, listener: (message: M) => void) {
      let set = topics.get(topic.name);
      if (set === undefined) topics.set(topic.name, (set = new Set()));
      // Wrapped, so the same function subscribed twice is two subscriptions. Messages on a topic are
      // the topic's own: every publisher of it is typed by the same Topic.
      const entry = (m: BusMessage) => listener(m as M);
      set.add(entry);
      count++;
      let done = false;
      return () => {
        if (done) return;
        done = true;
        count--;
        set.delete(entry);
        if (set.size === 0) topics.delete(topic.name);
      };
    },
    listenerCount: () => count,
    connected: () => true,
    close: () => Promise.resolve(),
  };
}
