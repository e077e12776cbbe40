import { topic, type Bus, type Topic } from "../../bus.js";
import type { Clock } from "../../clock.js";
import { clearTyping, lapseTypingRow, readTyping, setTyping, stopTypingRow } from "../../store/chat-store.js";
import type { ChatEventRecord, EventKind, ParticipantRef } from "./vocabulary.js";
import type { Database } from "../../store/database.js";

/** eventDraft is an event with every optional field blank, before the store gives it a position. */
export function eventDraft(from: ParticipantRef, kind: EventKind, time: number, more: Partial<ChatEventRecord> = {}): Omit<ChatEventRecord, "chatId" | "position"> {
  return { kind, from, text: "", messageType: "", time, userData: {}, clientMessageId: "", fileId: "", fileName: "", fileSize: 0, fileContentType: "", ...more };
}

/**
 * ChatAnnouncement is what a chat's bus topic carries: an event just committed (position > 0), or
 * a live typing notice (position 0).
 */
export type ChatAnnouncement = { kind: "event"; event: ChatEventRecord } | { kind: "typing"; event: ChatEventRecord };

/** chatTopic is the bus topic of one chat's announcements. */
export const chatTopic = (chatId: string): Topic<ChatAnnouncement> => topic(`chat:${chatId}`);

/** TypingOptions are the coalescing and quiet times, in milliseconds. */
export interface TypingOptions {
  coalesceMs: number;
  timeoutMs: number;
}

/**
 * Typing keeps who is typing. The state lives in the database (chat_typing), so every node reports
 * the same and coalesces alike; notices are live only (position 0, never in the transcript).
 */
export interface Typing {
  /** start notes the participant typing: TYPING_STARTED at most once per coalescing window. */
  start(chatId: string, from: ParticipantRef, text: string): Promise<void>;
  /** stop ends the participant's typing with TYPING_STOPPED, if it was typing. */
  stop(chatId: string, participant: ParticipantRef): Promise<void>;
  /** stopAll ends everybody's typing in a chat (the chat ended). */
  stopAll(chatId: string): Promise<void>;
  /** who lists the participants typing now. */
  who(chatId: string): Promise<ParticipantRef[]>;
}

/** createTyping builds the typing state over the database, announcing on the bus. */
export function createTyping(db: Database, clock: Clock, bus: Bus, options: TypingOptions): Typing {
  // This node's quiet timers; each re-checks the database before announcing a stop, because the
  // participant may have kept typing through another node.
  const timers = new Map<string, () => void>();

  function announce(chatId: string, from: ParticipantRef, typing: boolean, text: string): void {
    const event: ChatEventRecord = { ...eventDraft(from, typing ? "typing_started" : "typing_stopped", clock.now(), { text }), chatId, position: 0 };
    bus.publish(chatTopic(chatId), { kind: "typing", event: event });
  }

  function arm(chatId: string, participant: ParticipantRef): void {
    const { participantId } = participant;
    const key = `${chatId}/${participantId}`;
    timers.get(key)?.();
    const cancel = clock.setTimer(() => {
      timers.delete(key);
      // One statement: only a row that lapsed goes (however late the timer), never one a newer
      // start extended meanwhile, here or on another node.
      lapseTypingRow(db.knex, chatId, participantId, clock.now())
        .then((lapsed) => {
          if (lapsed) announce(chatId, participant, false, "");
        })
        .catch(() => undefined);
    }, options.timeoutMs);
    timers.set(key, cancel);
  }

  function disarm(chatId: string, participantId?: string): void {
    for (const [key, cancel] of timers) {
      if (key === `${chatId}/${participantId}` || (participantId === undefined && key.startsWith(`${chatId}/`))) {
        cancel();
        timers.delete(key);
      }
    }
  }

  return {
    async start(chatId, from, text) {
      const now = clock.now();
      const current = (await readTyping(db.knex, chatId, now)).find((t) => t.participant.participantId === from.participantId);
      const coalesced = current !== undefined && now - current.startedAt < options.coalesceMs;
      await setTyping(db.knex, chatId, from, coalesced ? current.startedAt : now, now + options.timeoutMs);
      arm(chatId, from);
      if (!coalesced) announce(chatId, from, true, text);
    },
    async stop(chatId, participant) {
      disarm(chatId, participant.participantId);
      // One statement: its row count says whether the participant was typing.
      if (await stopTypingRow(db.knex, chatId, participant.participantId, clock.now())) announce(chatId, participant, false, "");
    },
    async stopAll(chatId) {
      disarm(chatId);
      for (const t of await clearTyping(db.knex, chatId, clock.now())) announce(chatId, t.participant, false, "");
    },
    async who(chatId) {
      return (await readTyping(db.knex, chatId, clock.now())).map((t) => t.participant);
    },
  };
}
