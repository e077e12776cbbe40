/**
 * Request-chat: the customer's side, the agent's side and the delivery between them. This module
 * composes the concerns, each in its own file of this folder:
 * - vocabulary.ts: what a chat, a participant, an event, an actor are;
 * - store.ts: the ChatStore the rules receive, and what they need of sessions and storage;
 * - rules.ts: the decisions, as plain functions (tested without a database);
 * - lifecycle.ts: starting a chat, who acts in it, leaving, transferring, ending, idle timeout;
 * - queue.ts: waiting chats, accepting the next one, watching a queue;
 * - delivery.ts: adding to the transcript and reading it by position (poll, long-poll, stream);
 * - files.ts: a chat's files;
 * - typing.ts, activity.ts: who types; the customer's activity;
 * - core.ts: the unit of work around a locked chat and the announcements, shared by all;
 * - poll.ts, watch.ts: this node's poll views and its one periodic look at the store;
 * - topics.ts: what goes on the bus.
 */
import type { Bus } from "../../bus.js";
import type { Clock } from "../../clock.js";
import type { ConfigSource } from "../../config.js";
import type { Transactions } from "../unit-of-work.js";
import { createActivity } from "./activity.js";
import { CATCH_UP_MS, createCore } from "./core.js";
import { createDelivery, type ChatDelivery } from "./delivery.js";
import { NO_CHAT_EVENTS, type ChatEvents } from "./events.js";
import { createFiles, type ChatFiles } from "./files.js";
import { createLifecycle, type ChatLifecycle } from "./lifecycle.js";
import { createPollViews, POLL_VIEW_DEFAULTS, type PollViewOptions } from "./poll.js";
import { createQueue, queueAnnouncer, type ChatQueue } from "./queue.js";
import type { ChatData, ChatSessions, ChatStore, RunOnce } from "./store.js";
import { createTyping } from "./typing.js";
import { createStreamWatch } from "./watch.js";

export type { Actor } from "./vocabulary.js";
export { NO_CHAT_EVENTS, type ChatEvents } from "./events.js";
export type { ChatStart, RequestChatInput } from "./lifecycle.js";
export type { Accepted, QueueState } from "./queue.js";
export type { RefreshResult, SendInput } from "./delivery.js";
export type { DownloadedFile, FileLimitsView, NewFile } from "./files.js";

/** ChatDeps are what the chat rules need. */
export interface ChatDeps {
  /** store keeps the chats. */
  store: ChatStore;
  /** transactions opens the units of work in which several writes commit together. */
  transactions: Transactions;
  /** once makes RequestChat idempotent under a request id. */
  once: RunOnce;
  /** sessions are the sessions chats live in. */
  sessions: ChatSessions;
  /** data keeps the sessions' application data and the files' bytes. */
  data: ChatData;
  clock: Clock;
  /** config is the configuration in effect (chat.*, services), read when a setting is needed. */
  config: ConfigSource;
  bus: Bus;
  /** pollViews bounds the chats whose polls this node answers from memory (default POLL_VIEW_DEFAULTS). */
  pollViews?: PollViewOptions | undefined;
  /** events hears the messages added to transcripts and the streams caught up (default NO_CHAT_EVENTS). */
  events?: ChatEvents | undefined;
  /** streamsPerChat is the cap in effect on a chat's open streams on this node (default: none). */
  streamsPerChat?: (() => number) | undefined;
}

/** Chats is request-chat: the customer's side, the agent's side and the delivery between them. */
export interface Chats extends ChatLifecycle, ChatQueue, ChatDelivery, ChatFiles {
  /** pollViews is the number of chats this node keeps a poll view of. */
  readonly pollViews: number;
}

/** createChats builds the chat rules from their dependencies. */
export function createChats(deps: ChatDeps): Chats {
  const { store, transactions, once, sessions, data, clock, config, bus, pollViews = POLL_VIEW_DEFAULTS, events = NO_CHAT_EVENTS, streamsPerChat = () => Infinity } = deps;
  // Every setting is read when it is needed, so a reload of the configuration reaches open chats too.
  const limits = () => config().chat;
  const idleMs = () => limits().idle_timeout_seconds * 1000;
  const activity = createActivity(store, clock, idleMs);
  const core = createCore({ store, transactions, clock, bus, limits, activity });
  const typing = createTyping(store, clock, bus, () => ({ coalesceMs: limits().typing_coalesce_seconds * 1000, timeoutMs: limits().typing_timeout_seconds * 1000 }));
  const watch = createStreamWatch(store, clock, { intervalMs: CATCH_UP_MS, heartbeatMs: () => idleMs() / 3 }, events);
  const polls = createPollViews(store, clock, bus, watch, pollViews);
  const announceQueue = queueAnnouncer(core);
  const lifecycle = createLifecycle(core, { config, once, sessions, data, typing, polls, announceQueue });
  const queue = createQueue(core, sessions, data, announceQueue);
  const delivery = createDelivery(core, typing, polls, watch, events, streamsPerChat);
  const files = createFiles(core, data);
  return {
    ...lifecycle,
    ...queue,
    ...delivery,
    ...files,
    get pollViews() {
      return polls.size;
    },
  };
}
