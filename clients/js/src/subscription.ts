/**
 * The subscription engine behind CustomerChat.subscribe and AgentChat.subscribe: one chat's events
 * on the server's gapless cursor, each exactly once and in order, through any break.
 *
 * - It streams (Subscribe from position + 1). Any break — a network error, a server restart, a
 *   proxy cutting an idle stream, the server ending a stream at its maximum age (OK, no
 *   CHAT_ENDED) — resumes from the last delivered position + 1, after an exponential backoff with
 *   full jitter when the stream failed. Events at or below the position are dropped (dedupe), an
 *   event beyond position + 1 is never delivered (the stream is resumed instead), so nothing is
 *   doubled and nothing is skipped.
 * - Heartbeats (CHAT_EVENT_TYPE_HEARTBEAT, position 0) are not events: they only prove the stream
 *   alive to the watchdog, which resumes a stream silent for longer than `idleTimeoutMs`. A stream
 *   with nothing to replay opens with one (the server's), which makes the state "live" at once.
 * - Where streams do not get through while the server does — `fallbackAfter` stream attempts in a
 *   row that failed, ended or went silent before delivering anything but that opening heartbeat,
 *   each followed by a Refresh that does not wait and is answered; or UNIMPLEMENTED — it long-polls
 *   Refresh(wait_seconds) on the same cursor, paced, and tries one stream again after
 *   `retryStreamAfterMs`. A stream that fails as the Refresh after it does (the server down, the
 *   network gone) is an outage, not a sign against streams: it is retried after the backoff, and
 *   the subscription streams again once the server is back. `mode: "poll"` polls from the start;
 *   `mode: "stream"` never polls but to learn whether a stream that ended at once ended the chat.
 * - The state says what the page can show: "live" (a stream is open), "polling" (the last poll
 *   was answered), "reconnecting" (the last attempt failed: waiting to try again), "connecting"
 *   (the first attempt), "ended".
 */
import { Code } from "@connectrpc/connect";
import { StreamAttempt } from "./attempt.js";
import { isRetryable, toGmsError, type GmsError } from "./errors.js";
import { ChatEventType, type ChatEvent, type Participant } from "./gen/gms/v1/chat_event_pb.js";

/**
 * SubscriptionState is where a subscription is: "connecting" (the first attempt), "live" (a stream
 * is open), "polling" (long-polling, and the last poll was answered), "reconnecting" (the last
 * stream or poll failed: the server or the network is out of reach, and it tries again), "ended".
 */
export type SubscriptionState = "connecting" | "live" | "reconnecting" | "polling" | "ended";

/** ChatHandlers receive a chat's events; every one is optional. */
export interface ChatHandlers {
  /** event receives every stored event exactly once, in position order (messages, joins, files, notices, pushed URLs, the end). */
  event?: (e: ChatEvent) => void;
  /** message receives the MESSAGE events (after `event`). */
  message?: (e: ChatEvent) => void;
  /** file receives FILE_UPLOADED and FILE_DELETED events (after `event`). */
  file?: (e: ChatEvent) => void;
  /** typing says another participant started (true) or stopped (false) typing; never stored, never repeated on resume. */
  typing?: (who: Participant, on: boolean) => void;
  /** ended is called once the chat is over for this side (CHAT_ENDED, or this agent's own leaving); the subscription is over. */
  ended?: () => void;
  /** state follows the subscription's state. */
  state?: (s: SubscriptionState) => void;
  /** error receives a failure that is not retried (e.g. PERMISSION_DENIED); the subscription is over. */
  error?: (e: GmsError) => void;
}

/** SubscribeOptions tune how a subscription keeps up. */
export interface SubscribeOptions {
  /** mode: "auto" (default) streams and falls back to long-polling; "stream" only streams; "poll" only polls. */
  mode?: "auto" | "stream" | "poll";
  /** waitSeconds is a long-poll's wait (default 25; the server caps it at chat.max_wait_seconds). */
  waitSeconds?: number;
  /** fallbackAfter is how many stream attempts in a row that deliver nothing while the server answers polls make "auto" poll (default 3). */
  fallbackAfter?: number;
  /** retryStreamAfterMs is how long "auto" polls before trying a stream again (default 300000); one that delivers nothing goes back to polling. */
  retryStreamAfterMs?: number;
  /**
   * idleTimeoutMs resumes a stream that delivered nothing, heartbeats included, for this long, and
   * abandons a poll that has not answered this long after its wait (default 75000; 0: streams are
   * never resumed for silence, polls get 75000).
   */
  idleTimeoutMs?: number;
  /** minPollIntervalMs is the least time between the starts of two polls that brought nothing (default 1000). */
  minPollIntervalMs?: number;
  /** backoffMs is the first retry's upper bound (default 500); it doubles per failure up to maxBackoffMs (default 30000). */
  backoffMs?: number;
  maxBackoffMs?: number;
}

/** Poll is a Refresh's answer, for either side. */
export interface Poll {
  events: ChatEvent[];
  chatEnded: boolean;
  typing: Participant[];
}

/** ChatSource reads one chat for one side. */
export interface ChatSource {
  /** stream opens Subscribe from `from`; it resolves once the server has answered (its headers). */
  stream(from: number, signal: AbortSignal): Promise<AsyncIterable<ChatEvent>>;
  /** refresh polls Refresh from `from`, waiting up to waitSeconds; the call's deadline is timeoutMs. */
  refresh(from: number, waitSeconds: number, signal: AbortSignal, timeoutMs: number): Promise<Poll>;
}

/** Cursor is the position the subscription reads from and moves: the last delivered. */
export interface Cursor {
  position: number;
}

/** backoffDelay is a full-jitter exponential backoff: uniform in [0, min(max, base·2^attempt)]. */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number): number {
  return Math.random() * Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
}

/** sleep waits `ms`, or less when the signal aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted || ms <= 0) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/** report calls a handler; what it throws is rethrown outside the subscription, as an event listener's would be. */
export function report<A extends unknown[]>(fn: ((...args: A) => void) | undefined, ...args: A): void {
  if (fn === undefined) return;
  try {
    fn(...args);
  } catch (e) {
    queueMicrotask(() => {
      throw e;
    });
  }
}

/** Outcome of one stream: how it ended. */
type StreamEnd = "ended" | "clean" | "gap" | "idle";

/**
 * subscribe runs a subscription until the chat ends, a failure is not retryable, or the returned
 * function is called.
 */
export function subscribe(source: ChatSource, cursor: Cursor, handlers: ChatHandlers, options: SubscribeOptions = {}, done?: () => void): () => void {
  const mode = options.mode ?? "auto";
  const waitSeconds = options.waitSeconds ?? 25;
  const fallbackAfter = options.fallbackAfter ?? 3;
  const retryStreamAfterMs = options.retryStreamAfterMs ?? 300_000;
  const idleTimeoutMs = options.idleTimeoutMs ?? 75_000;
  const minPollIntervalMs = options.minPollIntervalMs ?? 1000;
  const baseMs = options.backoffMs ?? 500;
  const maxMs = options.maxBackoffMs ?? 30_000;
  const stop = new AbortController();
  const signal = stop.signal;
  if (done !== undefined) signal.addEventListener("abort", done, { once: true });
  let state: SubscriptionState | undefined;
  const typingNow = new Map<string, Participant>();

  const setState = (s: SubscriptionState) => {
    if (s === state || signal.aborted) return;
    state = s;
    report(handlers.state, s);
  };

  /** deliver hands one stored event over if it is the next; false for a gap. */
  const deliver = (e: ChatEvent): boolean | "ended" => {
    const position = Number(e.position);
    if (position <= cursor.position) return true; // seen already
    if (position !== cursor.position + 1) return false; // a gap: never deliver past it
    cursor.position = position;
    report(handlers.event, e);
    if (e.type === ChatEventType.MESSAGE) report(handlers.message, e);
    if (e.type === ChatEventType.FILE_UPLOADED || e.type === ChatEventType.FILE_DELETED) report(handlers.file, e);
    if (e.type === ChatEventType.CHAT_ENDED) return "ended";
    return true;
  };

  const setTyping = (who: Participant, on: boolean) => {
    const had = typingNow.has(who.participantId);
    if (on) typingNow.set(who.participantId, who);
    else typingNow.delete(who.participantId);
    if (had !== on) report(handlers.typing, who, on);
  };

  /** clearTyping stops every typing notice shown (the stream that would have said "stopped" is gone). */
  const clearTyping = () => {
    for (const who of [...typingNow.values()]) setTyping(who, false);
  };

  const finish = () => {
    clearTyping();
    setState("ended");
    if (!signal.aborted) report(handlers.ended);
    stop.abort();
  };

  const fail = (e: GmsError) => {
    clearTyping();
    if (!signal.aborted) report(handlers.error, e);
    stop.abort();
  };

  /** runStream reads one stream to its end; whether it delivered anything (`heard`) tells the caller whether streams get through. */
  async function runStream(heard: { any: boolean }): Promise<StreamEnd> {
    const attempt = new StreamAttempt(signal, idleTimeoutMs);
    try {
      attempt.heard();
      const events = await source.stream(cursor.position + 1, attempt.controller.signal);
      setState("live");
      // The heartbeat a stream opens with says it is open, not that streams get through.
      let opening = true;
      for await (const e of events) {
        attempt.heard();
        const first = opening;
        opening = false;
        if (e.type === ChatEventType.HEARTBEAT) {
          if (!first) heard.any = true;
          continue;
        }
        heard.any = true;
        if (e.type === ChatEventType.TYPING_STARTED || e.type === ChatEventType.TYPING_STOPPED) {
          if (e.from !== undefined) setTyping(e.from, e.type === ChatEventType.TYPING_STARTED);
          continue;
        }
        if (Number(e.position) === 0) continue; // another live-only notice this client does not know
        const done = deliver(e);
        if (done === "ended") return "ended";
        if (!done) return "gap";
      }
      return "clean";
    } catch (e) {
      if (attempt.idle && !signal.aborted) return "idle";
      throw e;
    } finally {
      attempt.close();
    }
  }

  /** poll runs one Refresh and delivers what it brought; "ended" when the chat is over. */
  async function poll(wait: number): Promise<"ended" | "more" | "quiet"> {
    // A poll silent for idleTimeoutMs beyond its wait is abandoned (DEADLINE_EXCEEDED, retried): a
    // half-open connection must not hold the subscription forever.
    const r = await source.refresh(cursor.position + 1, wait, signal, wait * 1000 + (idleTimeoutMs > 0 ? idleTimeoutMs : 75_000));
    let delivered = false;
    for (const e of r.events) {
      const done = deliver(e);
      if (done === "ended") return "ended";
      if (!done) break; // a gap cannot come from one answer; the next poll starts at the cursor anyway
      delivered = true;
    }
    if (r.chatEnded) return "ended";
    const now = new Map(r.typing.map((p) => [p.participantId, p]));
    for (const [id, who] of typingNow) if (!now.has(id)) setTyping(who, false);
    for (const who of now.values()) setTyping(who, true);
    return delivered ? "more" : "quiet";
  }

  async function run(): Promise<void> {
    setState("connecting");
    let failures = 0; // in a row, for the backoff
    let fruitless = 0; // stream attempts in a row that delivered nothing while the server answered
    let polling = mode === "poll";
    let pollingSince = 0;
    // Whether a poll has been answered since polling began: polls failing from the start (after an
    // UNIMPLEMENTED) say the server is out of reach, not that streams do not get through.
    let pollAnswered = false;
    // Whether the last poll was answered: after a failure, the next poll does not wait, so that it
    // tells at once whether the server is back.
    let answering = false;
    const fallBack = (answered: boolean) => {
      polling = true;
      pollingSince = Date.now();
      pollAnswered = answered;
      answering = answered;
      if (answered) setState("polling");
    };
    if (!polling && cursor.position > 0) {
      // Resumed (a reload): one poll that does not wait delivers what was missed and tells whether
      // the chat is already over, which a stream from past its end would never say.
      try {
        if ((await poll(0)) === "ended") return finish();
      } catch (err) {
        if (signal.aborted) return;
        const e = toGmsError(err);
        if (!isRetryable(e)) return fail(e);
      }
    }
    while (!signal.aborted) {
      if (polling) {
        const started = Date.now();
        const waited = answering;
        try {
          const got = await poll(waited ? waitSeconds : 0);
          // Only a long-poll answered ends the backoff: one that fails where quick polls pass
          // (a proxy's timeout shorter than the wait) must not retry at a quick poll's pace.
          if (waited) failures = 0;
          pollAnswered = true;
          answering = true;
          if (got === "ended") return finish();
          setState("polling");
          if (got === "quiet" && waited) await sleep(started + minPollIntervalMs - Date.now(), signal);
        } catch (err) {
          if (signal.aborted) return;
          const e = toGmsError(err);
          if (!isRetryable(e)) return fail(e);
          // Out of reach: say so, and try again after the backoff, with a poll that does not wait.
          answering = false;
          setState("reconnecting");
          if (mode === "auto" && !pollAnswered) {
            // Nothing gets through, polls neither: back to streaming once the server answers again.
            polling = false;
            fruitless = 0;
          }
          await sleep(Math.max(e.retryAfterMs ?? 0, backoffDelay(failures++, baseMs, maxMs)), signal);
          continue;
        }
        if (mode === "auto" && Date.now() - pollingSince >= retryStreamAfterMs) {
          // Long enough: the network may pass streams again (a new Wi-Fi, a proxy fixed). One try:
          // a stream that delivers nothing while polls are answered goes back to polling at once.
          polling = false;
          fruitless = fallbackAfter - 1;
        }
        continue;
      }
      const heard = { any: false };
      let end: StreamEnd | undefined;
      let failure: GmsError | undefined;
      try {
        end = await runStream(heard);
      } catch (err) {
        if (signal.aborted) return;
        const e = toGmsError(err);
        if (e.code === Code.Unimplemented && mode === "auto") {
          // Something between here and the server does not pass streams: poll at once.
          clearTyping();
          fallBack(false);
          continue;
        }
        if (!isRetryable(e)) return fail(e);
        failure = e;
      }
      if (end === "ended") return finish();
      clearTyping();
      if (heard.any) {
        // The stream worked: resume at once after its end (its maximum age, a gap, idle after
        // traffic), after a short backoff after a failure.
        failures = 0;
        fruitless = 0;
        if (failure === undefined) continue;
        setState("reconnecting");
        await sleep(Math.max(failure.retryAfterMs ?? 0, backoffDelay(failures++, baseMs, maxMs)), signal);
        continue;
      }
      // Nothing before the end or the failure: the server may be out of reach (down, restarting, the
      // network gone), something between may not pass streams, or (an end) the chat may be over for
      // this side (a stream from beyond its end ends at once, e.g. after a reload). A poll that does
      // not wait tells which, and delivers what it finds.
      let answered = false;
      if (failure === undefined || mode === "auto") {
        try {
          if ((await poll(0)) === "ended") return finish();
          answered = true;
        } catch (err) {
          if (signal.aborted) return;
          const e = toGmsError(err);
          if (!isRetryable(e)) return fail(e);
        }
      }
      if (answered) {
        // The server answers, streams deliver nothing: a count towards polling.
        fruitless++;
        if (mode === "auto" && fruitless >= fallbackAfter) {
          fallBack(true);
          continue;
        }
      }
      setState("reconnecting");
      await sleep(Math.max(failure?.retryAfterMs ?? 0, backoffDelay(failures++, baseMs, maxMs)), signal);
    }
  }

  void run().catch((e: unknown) => fail(toGmsError(e)));
  return () => stop.abort();
}
