/**
 * Who is typing in a chat: TYPING_STARTED and TYPING_STOPPED notices, coalesced, and stopped by a
 * quiet timer. The state lives in the store (every node reports the same and coalesces alike);
 * notices are live only (position 0, never in the transcript). The rules of coalescing are
 * typingStart in rules.ts.
 */
import type { Bus } from "../../bus.js";
import type { Clock } from "../../clock.js";
import { eventDraft, typingStart, type TypingTimes } from "./rules.js";
import type { ChatStore } from "./store.js";
import { chatTopic } from "./topics.js";
import type { ChatEventRecord, ParticipantRef } from "./vocabulary.js";

/** Typing keeps who is typing (see the module comment). */
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

/** createTyping builds the typing state over the store, announcing on the bus. */
export function createTyping(store: ChatStore, clock: Clock, bus: Bus, times: () => TypingTimes): Typing {
  // This node's quiet timers; each re-checks the store before announcing a stop, because the
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
      // Only a row that lapsed goes (however late the timer), never one a newer start extended
      // meanwhile, here or on another node.
      store
        .lapseTyping(chatId, participantId, clock.now())
        .then((lapsed) => {
          if (lapsed) announce(chatId, participant, false, "");
        })
        .catch(() => undefined);
    }, times().timeoutMs);
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
      const current = (await store.typing(chatId, now)).find((t) => t.participant.participantId === from.participantId);
      const next = typingStart(current, now, times());
      await store.setTyping(chatId, from, next.startedAt, next.until);
      arm(chatId, from);
      if (next.announce) announce(chatId, from, true, text);
    },
    async stop(chatId, participant) {
      disarm(chatId, participant.participantId);
      // One statement: it says whether the participant was typing.
      if (await store.stopTyping(chatId, participant.participantId, clock.now())) announce(chatId, participant, false, "");
    },
    async stopAll(chatId) {
      disarm(chatId);
      for (const t of await store.clearTyping(chatId, clock.now())) announce(chatId, t.participant, false, "");
    },
    async who(chatId) {
      return (await store.typing(chatId, clock.now())).map((t) => t.participant);
    },
  };
}
