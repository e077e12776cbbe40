// outbox.ts: the viewer's messages on their way, sent one after another in the order typed, each
// under one client message id however often it is tried: a send the connection swallowed is tried
// again when the connection is back (the server applies it once), and messages written while the
// connection was down go out in order when it returns. What is unsent is kept (sessionStorage) so
// that a reload does not lose it either.
import { isRetryable, toGmsError } from "@opengms/client";
import type { Pending, Transcript } from "./transcript.js";

/** Outgoing is a message not yet confirmed by the server. */
export interface Outgoing {
  id: string;
  text: string;
}

/** OutboxOptions say how to send and where to keep what is unsent. */
export interface OutboxOptions {
  /** send sends a message under its client message id; its position. */
  send(text: string, clientMessageId: string): Promise<number>;
  transcript: Transcript;
  /** storageKey keeps the unsent messages in sessionStorage under this key. */
  storageKey: string;
  /** waiting hears whether a message is held up for want of a connection (the page says it is reconnecting). */
  waiting?(on: boolean): void;
}

/** randomId is a fresh client message id (128 random bits; works on plain-HTTP pages too). */
export function randomId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Outbox sends the viewer's messages. */
export class Outbox {
  private readonly queue: { message: Outgoing; pending: Pending }[] = [];
  private running = false;
  private wake: (() => void) | undefined;
  private closed = false;
  private held = false;

  constructor(private readonly o: OutboxOptions) {}

  /** push sends a new message. */
  push(text: string): void {
    this.enqueue({ id: randomId(), text });
  }

  /** restore sends again what was unsent when the page was left (call once the transcript is shown). */
  restore(): void {
    let saved: Outgoing[] = [];
    try {
      saved = JSON.parse(sessionStorage.getItem(this.o.storageKey) ?? "[]") as Outgoing[];
    } catch {
      // nothing usable kept
    }
    for (const m of saved) if (typeof m.id === "string" && typeof m.text === "string") this.enqueue(m);
  }

  /** retryNow tries a waiting message at once (the connection is back). */
  retryNow(): void {
    this.wake?.();
  }

  private hold(on: boolean): void {
    if (on === this.held) return;
    this.held = on;
    this.o.waiting?.(on);
  }

  /** close gives up what is unsent (the chat is over) and forgets it. */
  close(reason: string): void {
    this.closed = true;
    this.hold(false);
    for (const { pending } of this.queue.splice(0)) pending.status(`Not sent: ${reason}`, true);
    sessionStorage.removeItem(this.o.storageKey);
    this.wake?.();
  }

  private enqueue(message: Outgoing): void {
    if (this.closed) return;
    this.queue.push({ message, pending: this.o.transcript.pending(message.id, message.text) });
    this.keep();
    if (!this.running) void this.run();
  }

  private keep(): void {
    if (this.queue.length === 0) sessionStorage.removeItem(this.o.storageKey);
    else sessionStorage.setItem(this.o.storageKey, JSON.stringify(this.queue.map((q) => q.message)));
  }

  private async run(): Promise<void> {
    this.running = true;
    let failures = 0;
    while (this.queue.length > 0 && !this.closed) {
      const { message, pending } = this.queue[0]!;
      try {
        const position = await this.o.send(message.text, message.id);
        failures = 0;
        this.hold(false);
        // Its event may have been shown already (a fast stream, a replay after a reload).
        if (this.o.transcript.position >= position) pending.remove();
        else pending.status("Sent");
        this.queue.shift();
        this.keep();
      } catch (err) {
        if (this.closed) break;
        const e = toGmsError(err);
        if (!isRetryable(e)) {
          this.hold(false);
          pending.status(`Not sent: ${e.rawMessage}`, true);
          this.queue.shift();
          this.keep();
          continue;
        }
        pending.status("Waiting for the connection…");
        this.hold(true);
        const wait = Math.min(30_000, 1000 * 2 ** failures++);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, wait);
          function done() {
            clearTimeout(timer);
            resolve();
          }
          this.wake = done;
        });
        this.wake = undefined;
        if (!this.closed) pending.status("Sending…");
      }
    }
    this.running = false;
  }
}
