/**
 * What the chat puts on the bus, and under which topic: each chat's committed events and live
 * typing notices, and each queue's changes. Announcements are hints (src/bus.ts): a listener that
 * misses one catches up from the store.
 */
import { topic, type Topic } from "../../bus.js";
import type { ChatEventRecord } from "./vocabulary.js";

/**
 * ChatAnnouncement is what a chat's bus topic carries: an event just committed (position > 0), or
 * a live typing notice (position 0).
 */
export type ChatAnnouncement = { kind: "event"; event: ChatEventRecord } | { kind: "typing"; event: ChatEventRecord };

/** chatTopic is the bus topic of one chat's announcements. */
export const chatTopic = (chatId: string): Topic<ChatAnnouncement> => topic(`chat:${chatId}`);

/** QueueAnnouncement is what an endpoint's queue topic carries: a chat queued on it, claimed from it, or removed. */
export interface QueueAnnouncement {
  kind: "queued" | "claimed" | "removed";
  chatId: string;
}

/** queueTopic is the bus topic of one endpoint's queue. */
export const queueTopic = (endpoint: string): Topic<QueueAnnouncement> => topic(`queue:${endpoint}`);
