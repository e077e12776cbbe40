// Taps: what a policy does over a server stream's life (see it end, change the error it fails
// with, end it once a signal aborts) without wrapping its messages in an async generator of its
// own. An opengms node holds thousands of idle open streams, and a generator per policy per stream
// (its frame, its copy of the response, its pending promises) costs more memory than the stream
// itself. The taps a stream gets go on one list, read by one small iterator, and run in the order
// the wrappers would have: a policy that taps and one that wraps at the same place in the interceptor
// list see the same thing, so an interceptor that wraps a stream its own way between two that tap
// it still sees what it would have seen.
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type StreamResponse } from "@connectrpc/connect";

/**
 * StreamTap is what a policy does to a server stream's messages. The hooks run once, in the order
 * of the policy list from the innermost out.
 */
export interface StreamTap {
  /** done runs when the messages end. */
  done?(): void;
  /** failed runs when reading them fails (or a tap's signal ended them), and returns the error to go on with. */
  failed?(error: unknown): unknown;
  /** until ends the messages with `reason()` once it aborts: a read pending fails at once. */
  readonly until?: AbortSignal;
  reason?(): unknown;
}

/**
 * tapStream is a stream response whose messages go through `tap`, after the taps they have: taps
 * join the list of messages tapped before (no new wrapper), else the messages are wrapped once.
 */
export function tapStream(res: StreamResponse, tap: StreamTap): StreamResponse {
  if (res.message instanceof TappedMessages) {
    res.message.add(tap);
    return res;
  }
  return { ...res, message: new TappedMessages<MessageShape<DescMessage>>(res.message[Symbol.asyncIterator]()).add(tap) };
}

/**
 * Consumer is who reads a stream's messages and can end the call itself (the lean path): told when a
 * tap's signal ends the messages, it answers the call with the error at once, and the read pending
 * (left to end with the call's signal) needs no race of its own.
 */
export interface Consumer {
  ended(error: unknown): void;
}

const noop = () => undefined;

/** ABANDONED is what the taps see when the consumer stops reading a stream before its end. */
const ABANDONED = new ConnectError("the stream was abandoned by its reader", Code.Canceled);

/**
 * TappedMessages is a stream's messages and the taps they go through. When a tap's signal aborts,
 * its reason passes through the taps after it (the policies outside it) and ends the messages: the
 * consumer is told, or else the read pending fails with it (or the next one); the messages left
 * behind are returned, so their cleanup runs once their own read settles. A subclass maps the
 * source's items onto messages (message) and may fail the messages at their end (end).
 */
export class TappedMessages<T, S = T> implements AsyncIterableIterator<T> {
  private readonly taps: StreamTap[] = [];
  /** racing tells whether a tap can end a read pending (it has a signal). */
  private racing = false;
  /** over is set once the messages have ended, failed or been returned: no hook runs after. */
  private over = false;
  /** failure is the error a tap's signal ended the messages with, for the next read. */
  private failure: unknown;
  /** reject fails the read pending, when a tap's signal must answer it before the source does. */
  private reject: ((e: unknown) => void) | undefined;
  /** consumer is told when a tap's signal ends the messages (see Consumer). */
  consumer: Consumer | undefined;

  private readonly stepped: (step: IteratorResult<S>) => IteratorResult<T>;
  private readonly failed: (e: unknown) => never;

  constructor(private readonly source: AsyncIterator<S>) {
    this.stepped = (step) => this.step(step);
    this.failed = (e) => {
      this.reject = undefined;
      throw this.fail(e);
    };
  }

  /** add puts a tap after the others (one policy further out). */
  add(tap: StreamTap): this {
    this.taps.push(tap);
    if (tap.until !== undefined && !this.over) {
      this.racing = true;
      if (tap.until.aborted) this.abortedBy(tap);
      else watch(tap.until, this);
    }
    return this;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.failure !== undefined) {
      const failure = this.failure;
      this.failure = undefined;
      return Promise.reject(failure as Error);
    }
    if (this.over) return Promise.resolve({ done: true, value: undefined });
    let read: Promise<IteratorResult<S>>;
    try {
      read = this.source.next();
    } catch (e) {
      read = Promise.reject(e as Error);
    }
    // Two callbacks per stream, not per read: an idle stream holds a pending read, and little else.
    return (this.racing && this.consumer === undefined ? this.raced(read) : read).then(this.stepped, this.failed);
  }

  async return(): Promise<IteratorResult<T>> {
    // A consumer that stops reading before the end (a client gone, a failed write) ends the stream
    // as cancelled: the taps see it fail once (the call's log line, its metrics), as a wrapping
    // generator's finally would have run.
    if (!this.over) {
      this.over = true;
      this.unwatch();
      this.through(ABANDONED, 0);
    }
    await this.source.return?.(undefined);
    return { done: true, value: undefined };
  }

  /** message maps one of the source's items onto a message (the item itself, unless a subclass says). */
  protected message(item: S): T {
    return item as unknown as T;
  }

  /** end runs when the source ends; a subclass throws to fail the messages instead. */
  protected end(): void {}

  /** step maps an item onto a message, or runs the taps' done hooks once the source ends. */
  private step(step: IteratorResult<S>): IteratorResult<T> {
    this.reject = undefined;
    if (step.done !== true) return { done: false, value: this.message(step.value) };
    if (!this.over) {
      try {
        this.end();
      } catch (e) {
        throw this.fail(e);
      }
      this.over = true;
      this.unwatch();
      for (const tap of this.taps) tap.done?.();
    }
    return { done: true, value: undefined };
  }

  /** raced settles as `read` does, unless a tap's signal fails it first. */
  private raced(read: Promise<IteratorResult<S>>): Promise<IteratorResult<S>> {
    return new Promise((resolve, reject) => {
      this.reject = reject;
      read.then(resolve, reject);
    });
  }

  /** fail passes a failure of the source through every tap, once, and returns what it became. */
  private fail(e: unknown): unknown {
    if (this.over) return e;
    this.over = true;
    this.unwatch();
    return this.through(e, 0);
  }

  /** through passes an error through the taps from `from` on (the policies outside the one it came from). */
  private through(e: unknown, from: number): unknown {
    let error = e;
    for (let i = from; i < this.taps.length; i++) {
      const tap = this.taps[i] as StreamTap;
      if (tap.failed !== undefined) error = tap.failed(error);
    }
    return error;
  }

  /** aborted is a watched signal aborting: the first tap on it ends the messages. */
  aborted(signal: AbortSignal): void {
    const tap = this.taps.find((t) => t.until === signal);
    if (tap !== undefined) this.abortedBy(tap);
  }

  /** abortedBy ends the messages with the reason of the tap whose signal aborted. */
  private abortedBy(tap: StreamTap): void {
    if (this.over) return;
    this.over = true;
    this.unwatch();
    const error = this.through(tap.reason?.(), this.taps.indexOf(tap) + 1);
    const { reject, consumer } = this;
    this.reject = undefined;
    if (consumer !== undefined) consumer.ended(error);
    else if (reject !== undefined) reject(error);
    else this.failure = error;
    void this.source.return?.(undefined)?.catch(noop);
  }

  /** unwatch stops waiting on the taps' signals: nothing outlives the stream. */
  private unwatch(): void {
    if (this.racing) for (const tap of this.taps) if (tap.until !== undefined) watching.get(tap.until)?.delete(this);
  }
}

/** Watcher is a stream waiting on a signal. */
interface Watcher {
  aborted(signal: AbortSignal): void;
}

/**
 * watching holds, for each signal some stream's tap waits on, the streams waiting: one listener per
 * signal, however many streams (a listener costs a few hundred bytes; every open stream waits on
 * the shutdown signal).
 */
const watching = new WeakMap<AbortSignal, Set<Watcher>>();

function watch(signal: AbortSignal, stream: Watcher): void {
  let streams = watching.get(signal);
  if (streams === undefined) {
    const set = new Set<Watcher>();
    streams = set;
    watching.set(signal, set);
    signal.addEventListener(
      "abort",
      () => {
        watching.delete(signal);
        for (const s of set) s.aborted(signal);
      },
      { once: true },
    );
  }
  streams.add(stream);
}
