// What keeps a long-lived server stream alive on the real internet: proxies, load balancers, NATs
// and CDNs cut a connection that has carried nothing for a while (nginx's proxy_read_timeout is 60 s,
// HAProxy's `timeout server` and cloud load balancers' idle timeouts often less), and browsers
// cannot send HTTP/2 PINGs to prevent it. So the server sends a heartbeat on a stream that has been
// quiet for `server.streams.heartbeat_seconds` (and one at once on a stream that opens with nothing
// to send: opened() below), and ends a stream cleanly (OK) once it is
// `server.streams.max_age_seconds` old, less up to a tenth at random so streams opened together
// do not all end together: a client resumes from its last position + 1 and misses nothing, and no
// stream outlives a proxy's or a token's own limit on the length of a request.
//
// One ticker for all the streams of a server (not a timer per stream: an idle stream must stay
// cheap, bench/README.md), which runs only while streams are open. Both serving paths read a
// stream's messages through the same StreamMessages (lean-rpc.ts), which takes its items through
// keep() below: the heartbeat and the maximum age hold on every path and protocol.
import type { Clock } from "../clock.js";

/** BEAT is the item keep() hands out in place of one of the source's when the stream has been quiet long enough. */
export const BEAT: unique symbol = Symbol("heartbeat");
/** Beat is the type of BEAT. */
export type Beat = typeof BEAT;

/** Beats says whether a quiet stream has a heartbeat to send (one that repeats the last item needs one sent first). */
export interface Beats {
  canBeat(): boolean;
}

/** KeptStream is a stream's items as keep() hands them out; `beats` turns its heartbeats on. */
export interface KeptStream<T> extends AsyncIterator<T | Beat> {
  beats: Beats | undefined;
  /**
   * opened is the source saying, while it is being read, that the stream is open and has nothing to
   * send yet (a chat stream with nothing stored past its position): with heartbeats on, the read
   * pending is answered with one at once, so that the client sees the stream open (connect-node
   * sends the response headers with the first message) on every protocol and through proxies.
   * Nothing is kept for it: no timer, no field.
   */
  opened(): void;
}

/** KeepaliveOptions are `server.streams`, in milliseconds: 0 disables either. */
export interface KeepaliveOptions {
  heartbeatMs: number;
  maxAgeMs: number;
}

/** StreamKeepalive keeps the server's open streams alive (heartbeats) and young (maximum age). */
export interface StreamKeepalive {
  /**
   * keep returns the source's items with BEAT in between whenever the stream has been quiet for the
   * heartbeat interval and its `beats` (set on what keep returns; none: no heartbeat) say there is
   * something to send, ending (done) once the stream is older than its maximum age: between two
   * items, or while it waits for one (the read pending is left to end with the call's signal; what
   * it would have yielded was never sent). Undefined when `server.streams` disables both.
   */
  keep<T>(source: AsyncIterator<T>): KeptStream<T> | undefined;
  /** size is the number of streams kept now. */
  readonly size: number;
}

/** createStreamKeepalive builds the keepalive of a server's streams on its clock. */
export function createStreamKeepalive(clock: Clock, options: KeepaliveOptions): StreamKeepalive {
  const { heartbeatMs, maxAgeMs } = options;
  const kept = new Set<Kept<unknown>>();
  // The ticker looks at every stream four times per heartbeat interval (a quiet stream gets its
  // heartbeat after 1 to 1.25 intervals), and twenty times per maximum age without heartbeats.
  const periods = [heartbeatMs > 0 ? heartbeatMs / 4 : Infinity, maxAgeMs > 0 ? maxAgeMs / 20 : Infinity];
  const periodMs = Math.max(10, Math.min(...periods));
  let cancel: (() => void) | undefined;

  function schedule(): void {
    cancel = clock.setTimer(() => {
      cancel = undefined;
      const now = clock.now();
      for (const k of kept) k.tick(now);
      if (kept.size > 0) schedule();
    }, periodMs);
  }

  const registry: Registry = {
    heartbeatMs,
    clock,
    remove(k) {
      kept.delete(k);
      if (kept.size === 0 && cancel !== undefined) {
        cancel();
        cancel = undefined;
      }
    },
  };

  return {
    keep<T>(source: AsyncIterator<T>): KeptStream<T> | undefined {
      if (heartbeatMs <= 0 && maxAgeMs <= 0) return undefined;
      const now = clock.now();
      // Up to a tenth earlier, at random: streams opened together (a node's clients reconnecting
      // after a restart) spread their ends instead of all coming back at once.
      const endsAt = maxAgeMs > 0 ? now + maxAgeMs - Math.floor(Math.random() * maxAgeMs * 0.1) : Infinity;
      const k = new Kept<T>(source, registry, now, endsAt);
      kept.add(k as Kept<unknown>);
      if (cancel === undefined) schedule();
      return k;
    },
    get size() {
      return kept.size;
    },
  };
}

/** Registry is what a kept stream needs of its keepalive. */
interface Registry {
  readonly heartbeatMs: number;
  readonly clock: Clock;
  remove(k: Kept<unknown>): void;
}

const DONE: IteratorResult<never> = { done: true, value: undefined };
const BEAT_RESULT: IteratorResult<Beat> = { done: false, value: BEAT };

/**
 * Kept is one stream's items as keep() hands them out. The source is read one item at a time; a
 * heartbeat answers the read pending without cancelling the source's read, whose item answers the
 * next one. An idle stream holds its pending read's promise and little else.
 */
class Kept<T> implements KeptStream<T> {
  beats: Beats | undefined;
  /** quietSince is when the stream last handed something out (or opened). */
  private quietSince: number;
  /** reading is true while a read of the source is pending. */
  private reading = false;
  /** early is a read of the source that settled while nobody waited (a heartbeat had answered). */
  private early: { ok: IteratorResult<T> } | { error: unknown } | undefined;
  /** resolve and reject answer the read pending, if one is. */
  private resolve: ((r: IteratorResult<T | Beat>) => void) | undefined;
  private reject: ((e: unknown) => void) | undefined;
  private over = false;
  private readonly settled: (r: IteratorResult<T>) => void;
  private readonly failed: (e: unknown) => void;

  constructor(
    private readonly source: AsyncIterator<T>,
    private readonly registry: Registry,
    now: number,
    private readonly endsAt: number,
  ) {
    this.quietSince = now;
    // Two callbacks per stream, not per read.
    this.settled = (r) => this.arrived({ ok: r });
    this.failed = (e) => this.arrived({ error: e });
  }

  next(): Promise<IteratorResult<T | Beat>> {
    const early = this.early;
    if (early !== undefined) {
      this.early = undefined;
      return this.deliver(early);
    }
    if (this.over) return Promise.resolve(DONE);
    if (this.registry.clock.now() >= this.endsAt) {
      this.end();
      return Promise.resolve(DONE);
    }
    // Pending before the source is read: a source that says opened() as it starts is answered.
    const pending = new Promise<IteratorResult<T | Beat>>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    if (!this.reading) {
      this.reading = true;
      let read: Promise<IteratorResult<T>>;
      try {
        read = this.source.next();
      } catch (e) {
        read = Promise.reject(e as Error);
      }
      read.then(this.settled, this.failed);
    }
    return pending;
  }

  async return(): Promise<IteratorResult<T | Beat>> {
    if (!this.over) {
      this.over = true;
      this.registry.remove(this as Kept<unknown>);
    }
    this.answer(DONE);
    await this.source.return?.(undefined);
    return DONE;
  }

  opened(): void {
    if (this.resolve === undefined || this.over || this.registry.heartbeatMs <= 0 || this.beats?.canBeat() !== true) return;
    this.quietSince = this.registry.clock.now();
    this.answer(BEAT_RESULT);
  }

  /** tick is the ticker's look: a heartbeat for a read pending on a quiet stream, the end for an old one. */
  tick(now: number): void {
    if (this.resolve === undefined || this.over) return;
    if (now >= this.endsAt) {
      this.end();
      this.answer(DONE);
      return;
    }
    if (this.registry.heartbeatMs > 0 && now - this.quietSince >= this.registry.heartbeatMs && this.beats?.canBeat() === true) {
      this.quietSince = now;
      this.answer(BEAT_RESULT);
    }
  }

  /** arrived is the source's read settling: it answers the read pending, or the next one. */
  private arrived(result: { ok: IteratorResult<T> } | { error: unknown }): void {
    this.reading = false;
    if (this.over) return;
    const { resolve, reject } = this;
    if (resolve === undefined || reject === undefined) {
      this.early = result;
      return;
    }
    this.resolve = undefined;
    this.reject = undefined;
    this.deliver(result).then(resolve, reject);
  }

  /** deliver hands out a read of the source: its item (the stream is not quiet), or its end or failure. */
  private deliver(result: { ok: IteratorResult<T> } | { error: unknown }): Promise<IteratorResult<T | Beat>> {
    if ("error" in result) {
      this.finish();
      return Promise.reject(result.error as Error);
    }
    if (result.ok.done === true) this.finish();
    else this.quietSince = this.registry.clock.now();
    return Promise.resolve(result.ok);
  }

  /** answer settles the read pending with `r`. */
  private answer(r: IteratorResult<T | Beat>): void {
    const resolve = this.resolve;
    this.resolve = undefined;
    this.reject = undefined;
    resolve?.(r);
  }

  /** finish is the source ending on its own: the stream leaves the ticker. */
  private finish(): void {
    if (this.over) return;
    this.over = true;
    this.registry.remove(this as Kept<unknown>);
  }

  /**
   * end is the maximum age: the stream leaves the ticker and the source is told to stop. A source
   * waiting for its next item stops once the call's signal aborts, which ending the stream does.
   */
  private end(): void {
    this.finish();
    void this.source.return?.(undefined)?.catch(() => undefined);
  }
}
