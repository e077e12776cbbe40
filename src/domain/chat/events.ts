// What the chat rules tell whoever listens (the metrics), as they do it: counts, never a chat's content.

/** ChatEvents hears what the chat rules do, as they do it (the metrics count it); never a chat's content. */
export interface ChatEvents {
  /** messageSent: a participant's message was added to a transcript (a retry of one already added is not). */
  messageSent(): void;
  /**
   * caughtUp: the node's periodic look at the store found an open stream behind its chat and had
   * it fetch the rest: the announcement was lost (the bus down) or late.
   */
  caughtUp(): void;
  /** streamRefused: a stream was refused, its chat holding as many open streams as the cap allows on this node. */
  streamRefused(): void;
}

/** NO_CHAT_EVENTS hears nothing (the rules without metrics). */
export const NO_CHAT_EVENTS: ChatEvents = { messageSent() {}, caughtUp() {}, streamRefused() {} };
