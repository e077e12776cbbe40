/**
 * Delivery on the cursor: what participants add to the transcript (messages, notices, a new
 * nickname, user data, a page to push; typing notices, which are live only), and how they read it
 * by position: a poll (Refresh, answered from this node's poll view when it can, poll.ts), a
 * long-poll, and a stream that replays from a position and goes live. How far an agent who has
 * left reads is rules.ts's; the node-wide look for missed announcements is watch.ts's.
 */
import { GmsError } from "../errors.js";
import type { UnitOfWork } from "../unit-of-work.js";
import { PAGE, type ChatCore } from "./core.js";
import type { ChatEvents } from "./events.js";
import type { PollViews } from "./poll.js";
import { beyondReach, checkReadPosition, checkText, endsStream, ensureOpen, ensurePresent, hasEnded, mergeUserData, mustRead, nextPosition, othersTyping, pastTheEnd, pollEnded, readable } from "./rules.js";
import { chatTopic } from "./topics.js";
import type { Typing } from "./typing.js";
import type { Actor, Chat, ChatEventRecord, EventKind, ParticipantRef } from "./vocabulary.js";
import type { StreamWatch } from "./watch.js";

/** SendInput is a message to send. */
export interface SendInput {
  text: string;
  messageType: string;
  clientMessageId: string;
}

/** RefreshResult is a poll's answer. */
export interface RefreshResult {
  events: ChatEventRecord[];
  nextPosition: number;
  chatEnded: boolean;
  typing: ParticipantRef[];
}

/** ChatDelivery adds to a chat's transcript and reads it. */
export interface ChatDelivery {
  /** send adds a message (once per clientMessageId) and returns its position. */
  send(actor: Actor, input: SendInput): Promise<number>;
  /** typing says the actor started or stopped typing (live notices, never in the transcript). */
  typing(actor: Actor, typing: boolean, text: string): Promise<void>;
  /** refresh reads the transcript from `from`, waiting up to waitSeconds for something new. */
  refresh(actor: Actor, from: number, waitSeconds: number, signal: AbortSignal): Promise<RefreshResult>;
  /**
   * customerRefresh is the customer's Refresh, authentication included. A poll that does not wait is
   * answered from this node's view of the chat (poll.ts) when the view says nothing new is
   * stored: no database work, bar the customer's activity, written at most every idle/4.
   */
  customerRefresh(chatId: string, secureKey: string, from: number, waitSeconds: number, signal: AbortSignal): Promise<RefreshResult>;
  /**
   * subscribe streams the transcript from `from`: what is stored, then live, until the chat ends for
   * the actor. `opened`, when given, is called once, when the stream has been let open and nothing is
   * stored from `from` on (it waits for what comes next): the server then tells the client at once.
   */
  subscribe(actor: Actor, from: number, signal: AbortSignal, opened?: () => void): AsyncGenerator<ChatEventRecord>;
  /** updateNickname renames the customer (NICKNAME_UPDATED). */
  updateNickname(actor: Actor, nickname: string): Promise<number>;
  /** customNotice adds an application notice (CUSTOM_NOTICE). */
  customNotice(actor: Actor, text: string): Promise<number>;
  /** updateUserData changes the customer's user data (USER_DATA_UPDATED carries the result). */
  updateUserData(actor: Actor, set: Record<string, string>, remove: readonly string[]): Promise<number>;
  /** pushUrl shows the customer a page (PUSH_URL). */
  pushUrl(actor: Actor, url: string): Promise<number>;
  /** readReceipt says the actor has read the transcript up to `position` (MESSAGE_READ, the position in its text). */
  readReceipt(actor: Actor, position: number): Promise<number>;
}

/**
 * createDelivery builds the transcript's writing and reading over the core; `streamsPerChat` is the
 * cap in effect on a chat's open streams on this node (read when a stream opens).
 */
export function createDelivery(core: ChatCore, typing: Typing, polls: PollViews, watch: StreamWatch, events: ChatEvents, streamsPerChat: () => number): ChatDelivery {
  const { store, bus, limits, activity } = core;

  /** appendOne adds one event by a present participant to an open chat and returns its position. */
  async function appendOne(actor: Actor, kind: EventKind, more: Partial<ChatEventRecord> = {}, change?: (uow: UnitOfWork, chat: Chat) => Promise<void>): Promise<number> {
    ensurePresent(actor);
    return core.transact(actor.chatId, async (uow, chat, emit) => {
      ensureOpen(chat);
      await change?.(uow, chat);
      const e = await core.append(uow, chat, core.draft(actor.participant, kind, more));
      emit(e);
      return e.position;
    });
  }

  async function refresh(actor: Actor, from: number, waitSeconds: number, signal: AbortSignal): Promise<RefreshResult> {
    await activity.touch(actor);
    const start = Math.max(1, from);
    const answer = async (fresh: boolean): Promise<RefreshResult> => {
      // Where the transcript ends is known to the lookup that authenticated the caller, in this same
      // call, and, kept current since, to the chat's poll view if this node keeps one (poll.ts
      // says how fresh it is): a poll with nothing new to read skips the transcript query. A
      // long-poll (fresh) reads the store, so an announcement it missed before it listened is found.
      const known = polls.known(actor.chatId);
      const last = Math.max(actor.lastPosition, known?.lastPosition ?? 0);
      const read = mustRead(actor, start, last, fresh) ? await core.readFrom(actor.chatId, start) : [];
      polls.saw(actor.chatId, read);
      // An agent who has left or transferred reads up to their leaving, and the chat is over for them.
      const { events, departed } = readable(actor, read);
      // Ended before this call, or since: then CHAT_ENDED is among the events read after it.
      const chatEnded = pollEnded(departed, actor.ended || known?.ended === true, events);
      const typingNow = chatEnded ? [] : othersTyping(await polls.typing(actor.chatId), actor);
      return { events, nextPosition: nextPosition(events, start), chatEnded, typing: typingNow };
    };
    if (waitSeconds <= 0) return answer(false);
    const wait = core.waitFor(chatTopic(actor.chatId), Math.min(waitSeconds, limits().max_wait_seconds) * 1000, signal);
    try {
      const first = await answer(true);
      if (first.events.length > 0 || first.chatEnded) return first;
      await wait.ready;
    } finally {
      wait.cancel();
    }
    return answer(true);
  }

  return {
    async send(actor, input) {
      checkText(input.text, limits().max_message_length);
      ensurePresent(actor);
      const { position, added } = await core.transact(actor.chatId, async (uow, chat, emit) => {
        ensureOpen(chat);
        if (input.clientMessageId !== "") {
          const prior = await store.eventByClientId(uow, chat.id, actor.participant.participantId, input.clientMessageId);
          if (prior !== undefined) return { position: prior.position, added: false };
        }
        const e = await core.append(uow, chat, core.draft(actor.participant, "message", { text: input.text, messageType: input.messageType, clientMessageId: input.clientMessageId }));
        emit(e);
        return { position: e.position, added: true };
      });
      // Once committed; a retry answered with the message it added before is not a new one.
      if (added) events.messageSent();
      await typing.stop(actor.chatId, actor.participant);
      return position;
    },

    async typing(actor, isTyping, text) {
      ensurePresent(actor);
      await activity.touch(actor);
      // The lookup that found the actor, in this same call, read whether the chat has ended.
      if (actor.ended) throw hasEnded(actor.chatId);
      if (isTyping) await typing.start(actor.chatId, actor.participant, text);
      else await typing.stop(actor.chatId, actor.participant);
    },

    refresh,

    async customerRefresh(chatId, secureKey, from, waitSeconds, signal) {
      // Only a poll that does not wait is answered from memory: a long-poll waits anyway, and the
      // store tells it at once whether the chat has ended.
      const customer = waitSeconds <= 0 ? await polls.customer(chatId, secureKey) : await polls.lookup(chatId, secureKey);
      return refresh({ chatId, ...customer }, from, waitSeconds, signal);
    },

    async *subscribe(actor, from, signal, opened) {
      await activity.touch(actor);
      // The stream ends after CHAT_ENDED, and for an agent after their own leaving (endsStream); a
      // stream from past either ends at once, since nothing will ever come.
      if (beyondReach(actor, from) || pastTheEnd(actor, from)) return;
      // Counted and registered with no wait in between: two streams opening at once cannot both take the last place.
      const cap = streamsPerChat();
      if (watch.streamsOf(actor.chatId) >= cap) {
        events.streamRefused();
        throw new GmsError("resource_exhausted", `the chat has ${cap} streams open on this server, as many as rate_limits.streams_per_chat allows; close one first`, {
          type: "limit",
          limit: "rate_limits.streams_per_chat",
          max: cap,
          actual: cap + 1,
        });
      }
      const queue: ChatEventRecord[] = [];
      let wake: (() => void) | undefined;
      let lookInStore = false;
      const off = bus.subscribe(chatTopic(actor.chatId), (m) => {
        queue.push(m.event);
        wake?.();
      });
      const onAbort = () => wake?.();
      signal.addEventListener("abort", onAbort);
      let next = Math.max(1, from);
      // The node-wide watch looks at the store for every open stream at once: missed announcements
      // are fetched, and an open customer stream counts as the customer's activity.
      const unwatch = watch.add({
        chatId: actor.chatId,
        customer: actor.participant.kind === "client",
        next: () => next,
        poke: () => {
          lookInStore = true;
          wake?.();
        },
      });
      try {
        // Replay what is stored, then go live; announcements queued meanwhile are deduplicated by position.
        for (;;) {
          const page = await core.readFrom(actor.chatId, next);
          for (const e of page) {
            yield e;
            next = e.position + 1;
            if (endsStream(actor, e)) return;
          }
          if (page.length < PAGE) break;
        }
        // Nothing to replay: the stream is open and waits. Said once, then let go of.
        if (next === Math.max(1, from)) opened?.();
        opened = undefined;
        while (!signal.aborted) {
          let fetch = false;
          if (lookInStore) {
            lookInStore = false;
            const last = await store.lastPosition(actor.chatId);
            fetch = last !== undefined && last >= next;
          }
          if (!fetch) {
            const m = queue.shift();
            if (m === undefined) {
              await new Promise<void>((resolve) => (wake = resolve));
              wake = undefined;
              continue;
            }
            if (m.position === 0) {
              if (m.from.participantId !== actor.participant.participantId) yield m;
              continue;
            }
            if (m.position < next) continue;
            if (m.position === next) {
              yield m;
              next = m.position + 1;
              if (endsStream(actor, m)) return;
              continue;
            }
            // A jump: an announcement was missed (or arrived out of order). Fetch the gap from the store.
          }
          const page = await core.readFrom(actor.chatId, next);
          for (const e of page) {
            yield e;
            next = e.position + 1;
            if (endsStream(actor, e)) return;
          }
          if (page.length === PAGE) lookInStore = true;
        }
      } finally {
        off();
        unwatch();
        signal.removeEventListener("abort", onAbort);
      }
    },

    updateNickname(actor, nickname) {
      const renamed = { ...actor.participant, nickname };
      return appendOne({ ...actor, participant: renamed }, "nickname_updated", { text: nickname }, (uow) => store.updateParticipant(uow, actor.participant.participantId, { nickname }));
    },

    customNotice(actor, text) {
      checkText(text, limits().max_message_length);
      return appendOne(actor, "custom_notice", { text });
    },

    async updateUserData(actor, set, remove) {
      ensurePresent(actor);
      return core.transact(actor.chatId, async (uow, chat, emit) => {
        ensureOpen(chat);
        const merged = mergeUserData(chat.userData, set, remove);
        await store.updateChat(uow, chat.id, { userData: merged });
        const e = await core.append(uow, chat, core.draft(actor.participant, "user_data_updated", { userData: merged }));
        emit(e);
        return e.position;
      });
    },

    pushUrl(actor, url) {
      return appendOne(actor, "push_url", { text: url });
    },

    readReceipt(actor, position) {
      // Checked against the transcript as it stands inside the unit of work, under the chat's lock.
      return appendOne(actor, "message_read", { text: String(position) }, async (_uow, chat) => checkReadPosition(position, chat.lastPosition));
    },
  };
}
