import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import { createLocalBus, topic as topicNamed, type Bus, type BusMessage } from "./bus.js";

/** The Redis channel prefix of opengms announcements. */
const PREFIX = "opengms:";

/**
 * createRedisBus carries announcements between nodes through Redis pub/sub. Listeners on this node
 * hear a message at once (locally); other nodes hear it through Redis, and drop their own echoes.
 * Redis is a hint, not a store: while it is unreachable, nodes keep serving from the database and
 * catch up there (a lost announcement costs latency, never an event).
 */
export function createRedisBus(url: string, log: Logger): Bus {
  const node = randomUUID();
  const local = createLocalBus();
  const options = { lazyConnect: false, maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: (n: number) => Math.min(n * 200, 2_000) };
  const pub = new Redis(url, options);
  const sub = new Redis(url, { ...options, enableOfflineQueue: true, maxRetriesPerRequest: null });
  const counts = new Map<string, number>();
  let warned = false;
  const warn = (e: unknown) => {
    if (warned) return;
    warned = true;
    // The message only: ioredis errors carry the failed command's arguments, a password among them (AUTH, HELLO).
    log.warn({ error: e instanceof Error ? e.message : String(e) }, "bus: Redis unreachable; serving from the database until it is back");
  };
  pub.on("error", warn);
  sub.on("error", warn);
  pub.on("ready", () => {
    if (warned) log.info("bus: Redis reachable again");
    warned = false;
  });

  sub.on("message", (channel: string, raw: string) => {
    let parsed: { node: string; message: BusMessage };
    try {
      parsed = JSON.parse(raw) as { node: string; message: BusMessage };
    } catch {
      return;
    }
    if (parsed.node === node) return;
    // Only what opengms nodes publish: an object with a kind (a topic's own type says the rest).
    if (typeof parsed.message !== "object" || parsed.message === null || typeof parsed.message.kind !== "string") return;
    // A message from another node is published as it came, on the topic its channel names.
    local.publish(topicNamed(channel.slice(PREFIX.length)), parsed.message);
  });

  return {
    publish(topic, message) {
      local.publish(topic, message);
      if (pub.status !== "ready") return;
      pub.publish(PREFIX + topic.name, JSON.stringify({ node, message })).catch(warn);
    },
    subscribe(t, listener) {
      const off = local.subscribe(t, listener);
      const topic = t.name;
      const n = (counts.get(topic) ?? 0) + 1;
      counts.set(topic, n);
      if (n === 1) sub.subscribe(PREFIX + topic).catch(warn);
      let done = false;
      return () => {
        if (done) return;
        done = true;
        off();
        const left = (counts.get(topic) ?? 1) - 1;
        if (left > 0) {
          counts.set(topic, left);
          return;
        }
        counts.delete(topic);
        sub.unsubscribe(PREFIX + topic).catch(warn);
      };
    },
    listenerCount: () => local.listenerCount(),
    // Both ways must work: publishing this node's announcements and hearing the others'.
    connected: () => pub.status === "ready" && sub.status === "ready",
    async close() {
      // QUIT waits for Redis's answer, behind the commands queued while it was away: with Redis
      // unreachable it would never come, and a node's shutdown would hang. A link not ready is dropped.
      await Promise.allSettled([pub, sub].filter((c) => c.status === "ready").map((c) => c.quit()));
      pub.disconnect();
      sub.disconnect();
    },
  };
}
