/**
 * Poll views: what this node knows of each chat whose customer recently polled it, so that a poll
 * with nothing new is answered from memory (PollViews says how it stays fresh).
 */
import { timingSafeEqual } from "node:crypto";
import type { Bus } from "../../bus.js";
import type { Clock } from "../../clock.js";
import { GmsError } from "../errors.js";
import { hashKey, typingLive } from "./rules.js";
import type { ChatStore } from "./store.js";
import { chatTopic, type ChatAnnouncement } from "./topics.js";
import type { ChatMark, ChatEventRecord, ParticipantRef, TypingRecord } from "./vocabulary.js";
import type { StreamWatch } from "./watch.js";

/** Customer is the customer of a chat, as a lookup found it (the chat rules make an Actor of it). */
export interface Customer {
  participant: ParticipantRef;
  present: boolean;
  ended: boolean;
  lastPosition: number;
}

/** Known is what a fresh poll view says of its chat now. */
export interface Known {
  lastPosition: number;
  ended: boolean;
}

/** PollViewOptions bound the views a node keeps. */
export interface PollViewOptions {
  /** max is the most chats kept; past it the least recently polled is dropped. */
  max: number;
  /** idleMs is how long a view is kept without a poll. */
  idleMs: number;
}

/** The default bounds: 10,000 chats (about 1 kB each, with their bus listener), a minute unpolled. */
export const POLL_VIEW_DEFAULTS: PollViewOptions = { max: 10_000, idleMs: 60_000 };

/**
 * PollViews is what this node knows of each chat whose customer recently polled it (Refresh with
 * no wait), so that a poll with nothing new is answered from memory, without the database.
 *
 * A view holds the chat's secure key hash (as stored; never the key), its customer, its last
 * committed position, whether it ended, its expiry, and who types in it.
 *
 * Freshness rule. A view is created only after the store has accepted the customer's key, and is
 * kept current by two sources, the same that keep open streams current:
 * - the bus: every committed event is announced after its commit; the view listens on the chat's
 *   topic from its creation (then reads the position once more, so nothing committed between the
 *   lookup and the subscription slips by). An announcement raises the view's position (never lowers
 *   it) and CHAT_ENDED marks it ended; a typing announcement makes it forget who types (read again
 *   at the next poll). On this node an announcement is heard before the committing call returns.
 * - the node-wide watch (watch.ts): every interval it reads, in one statement per batch, the
 *   position, state and expiry of every viewed chat, and who types in them. The view takes the
 *   position and end it lacked, the expiry as stored, and forgets its typing when it differs.
 *   A chat no longer stored drops its view.
 * So the only staleness is an announcement lost (Redis cut, a subscription not yet in place, a
 * typing notice coalesced without one): until the next look, at most one watch interval later, a
 * poll may be told "nothing new" about an event already committed, or an outdated typing list, or
 * be answered from memory up to one interval past an expiry another node shortened. That costs
 * latency, never an event: a view never says more than the store (its position only rises to
 * positions the store assigned), events are always read from the store, by position, as soon as
 * the view says there is one at or after from_position, and "nothing new" leaves the client's
 * cursor where it was, so its next poll asks again. Who types is kept only until the earliest
 * `until` among the rows, when the store may have extended it without an announcement. A wrong key
 * is refused from memory: the stored hash of a chat's key never changes. Past its expiry a view
 * answers nothing: the store is asked (an extended chat is viewed again, a gone one refused).
 * Long-polls and every other call authenticate through the store, as before.
 *
 * Bounds: at most `max` views, the least recently polled dropped first, and none kept `idleMs`
 * after its last poll (dropped at the watch's next look).
 */
export interface PollViews {
  /**
   * customer authenticates a polling customer by the secure key: from the chat's view when there is
   * one and it has not expired, else from the store, then keeping a view of the chat.
   * PERMISSION_DENIED for a wrong key or an unknown chat alike.
   */
  customer(chatId: string, secureKey: string): Promise<Customer>;
  /**
   * lookup authenticates a customer through the store (every call but a poll that does not wait),
   * bringing the chat's view, if any, up to what it read. PERMISSION_DENIED as `customer`.
   */
  lookup(chatId: string, secureKey: string): Promise<Customer>;
  /** known is what the chat's view says now, if the node keeps one. */
  known(chatId: string): Known | undefined;
  /** saw tells the chat's view about events just read from the store. */
  saw(chatId: string, events: readonly ChatEventRecord[]): void;
  /** typing lists who types in the chat now: from its view while that is valid, else from the store (kept in the view). */
  typing(chatId: string): Promise<ParticipantRef[]>;
  /** size is the number of chats viewed. */
  readonly size: number;
}

interface View extends Known {
  chatId: string;
  keyHash: Buffer;
  participant: ParticipantRef;
  present: boolean;
  expiresAt: number;
  /** typing is who types, as last read (rows live then), or undefined when it must be read again. */
  typing: TypingRecord[] | undefined;
  /** typingGen counts what made `typing` unknown: a read begun before it is not kept. */
  typingGen: number;
  usedAt: number;
  drop: () => void;
}

const denied = () => new GmsError("permission_denied", "wrong chat_id or secure_key");
const typingKey = (rows: readonly TypingRecord[]) =>
  rows
    .map((t) => `${t.participant.participantId}:${t.startedAt}:${t.until}`)
    .sort()
    .join(",");

/** createPollViews keeps poll views over the store, the bus and the node-wide watch. */
export function createPollViews(store: ChatStore, clock: Clock, bus: Bus, watch: StreamWatch, options: PollViewOptions = POLL_VIEW_DEFAULTS): PollViews {
  /** The views, least recently polled first (a poll moves its view to the end). */
  const views = new Map<string, View>();

  function drop(v: View): void {
    if (views.get(v.chatId) === v) views.delete(v.chatId);
    v.drop();
  }

  function hear(v: View, m: ChatAnnouncement): void {
    if (m.kind === "typing") {
      v.typing = undefined;
      v.typingGen++;
      return;
    }
    const e = m.event;
    if (!(e.position > 0)) return;
    v.lastPosition = Math.max(v.lastPosition, e.position);
    if (e.kind === "chat_ended") v.ended = true;
  }

  function check(v: View, mark: ChatMark | undefined, typing: readonly TypingRecord[]): void {
    if (mark === undefined || clock.now() - v.usedAt >= options.idleMs) return drop(v);
    v.lastPosition = Math.max(v.lastPosition, mark.lastPosition);
    v.ended ||= mark.ended;
    v.expiresAt = mark.expiresAt;
    if (v.typing !== undefined && typingKey(v.typing) !== typingKey(typing)) {
      v.typing = undefined;
      v.typingGen++;
    }
  }

  /** create makes a view of a chat whose customer the store has just accepted. */
  async function create(chatId: string, found: Customer & { keyHash: string; expiresAt: number }): Promise<View> {
    const v: View = {
      chatId,
      keyHash: Buffer.from(found.keyHash),
      participant: found.participant,
      present: found.present,
      ended: found.ended,
      lastPosition: found.lastPosition,
      expiresAt: found.expiresAt,
      typing: undefined,
      typingGen: 0,
      usedAt: clock.now(),
      drop: () => undefined,
    };
    const off = bus.subscribe(chatTopic(chatId), (m) => hear(v, m));
    const unwatch = watch.addView({ chatId, check: (mark, typing) => check(v, mark, typing) });
    v.drop = () => {
      off();
      unwatch();
    };
    views.set(chatId, v);
    while (views.size > options.max) {
      const oldest = views.values().next().value;
      if (oldest === undefined) break;
      drop(oldest);
    }
    // Listening now: what was committed between the lookup and the subscription is in the store.
    const last = await store.lastPosition(chatId).catch(() => undefined);
    if (last === undefined) drop(v);
    else v.lastPosition = Math.max(v.lastPosition, last);
    return v;
  }

  /** lookup authenticates through the store and brings the chat's view, if any, up to what it read. */
  async function lookup(chatId: string, secureKey: string, keep: boolean): Promise<Customer> {
    const found = await store.readChatWithCustomer(chatId, clock.now());
    // Compared even for an unknown chat, so it costs the same as a wrong key.
    const matches = timingSafeEqual(Buffer.from(hashKey(secureKey)), Buffer.from(found?.chat.secureKeyHash ?? hashKey("")));
    const v = views.get(chatId);
    if (found === undefined || !matches || secureKey === "") {
      if (found === undefined && v !== undefined) drop(v);
      throw denied();
    }
    const { chat, customer } = found;
    const result: Customer = {
      participant: { participantId: customer.id, nickname: customer.nickname, kind: customer.kind },
      present: customer.leftAt === undefined,
      ended: chat.state === "ended",
      lastPosition: chat.lastPosition,
    };
    if (v !== undefined) {
      v.lastPosition = Math.max(v.lastPosition, chat.lastPosition);
      v.ended ||= result.ended;
      v.expiresAt = chat.expiresAt;
      v.participant = result.participant;
      v.present = result.present;
      if (keep) v.usedAt = clock.now();
    } else if (keep) {
      await create(chatId, { ...result, keyHash: chat.secureKeyHash, expiresAt: chat.expiresAt });
    }
    return result;
  }

  return {
    async customer(chatId, secureKey) {
      const v = views.get(chatId);
      const now = clock.now();
      if (v === undefined || now >= v.expiresAt) return lookup(chatId, secureKey, true);
      if (secureKey === "" || !timingSafeEqual(Buffer.from(hashKey(secureKey)), v.keyHash)) throw denied();
      v.usedAt = now;
      views.delete(chatId);
      views.set(chatId, v);
      return { participant: v.participant, present: v.present, ended: v.ended, lastPosition: v.lastPosition };
    },

    lookup: (chatId, secureKey) => lookup(chatId, secureKey, false),

    known(chatId) {
      const v = views.get(chatId);
      return v === undefined || clock.now() >= v.expiresAt ? undefined : { lastPosition: v.lastPosition, ended: v.ended };
    },

    saw(chatId, events) {
      const v = views.get(chatId);
      if (v === undefined) return;
      for (const e of events) {
        v.lastPosition = Math.max(v.lastPosition, e.position);
        if (e.kind === "chat_ended") v.ended = true;
      }
    },

    async typing(chatId) {
      const now = clock.now();
      const v = views.get(chatId);
      if (v?.typing !== undefined && typingLive(v.typing, now)) return v.typing.map((t) => t.participant);
      const gen = v?.typingGen;
      const rows = await store.typing(chatId, now);
      // Kept unless a typing change was heard while reading (then the next poll reads again).
      if (v !== undefined && views.get(chatId) === v && v.typingGen === gen) v.typing = rows;
      return rows.map((t) => t.participant);
    },

    get size() {
      return views.size;
    },
  };
}
