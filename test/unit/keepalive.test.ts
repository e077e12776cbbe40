// The stream keepalive (src/rpc/keepalive.ts) on a manual clock: heartbeats answer a read pending
// without losing the item the source is still producing, a stream that opens with nothing to send
// gets one at once, the maximum age ends streams within its last tenth, and the one shared ticker
// runs only while streams are kept.
import { describe, expect, it, vi } from "vitest";
import { ManualClock } from "../../src/clock.js";
import { BEAT, createStreamKeepalive, type KeptStream } from "../../src/rpc/keepalive.js";

/** Source is an async iterator whose items the test pushes, one read at a time. */
class Source implements AsyncIterator<string> {
  private waiting: ((r: IteratorResult<string>) => void) | undefined;
  private failing: ((e: unknown) => void) | undefined;
  returned = false;
  reads = 0;

  next(): Promise<IteratorResult<string>> {
    this.reads++;
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      this.failing = reject;
    });
  }

  push(item: string): void {
    this.waiting?.({ done: false, value: item });
    this.waiting = undefined;
  }

  finish(): void {
    this.waiting?.({ done: true, value: undefined });
    this.waiting = undefined;
  }

  fail(e: Error): void {
    this.failing?.(e);
    this.waiting = undefined;
  }

  async return(): Promise<IteratorResult<string>> {
    this.returned = true;
    this.finish();
    return { done: true, value: undefined };
  }
}

const always = { canBeat: () => true };

/** settled tells whether a promise has settled, after the microtasks queued now have run. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setImmediate(r));
  return done;
}

describe("stream keepalive", () => {
  it("is off when server.streams disables both", () => {
    const keepalive = createStreamKeepalive(new ManualClock(), { heartbeatMs: 0, maxAgeMs: 0 });
    expect(keepalive.keep(new Source())).toBeUndefined();
  });

  it("answers a quiet read with a heartbeat, and the next read with the item the source was producing meanwhile", async () => {
    const clock = new ManualClock();
    const source = new Source();
    const kept = createStreamKeepalive(clock, { heartbeatMs: 1_000, maxAgeMs: 0 }).keep(source) as KeptStream<string>;
    kept.beats = always;
    const first = kept.next();
    clock.advance(999);
    expect(await settled(first)).toBe(false);
    clock.advance(250);
    expect(await first).toEqual({ done: false, value: BEAT });
    // The source's read is still the one pending; its item arrives while nobody waits.
    source.push("a");
    expect(await kept.next()).toEqual({ done: false, value: "a" });
    expect(source.reads).toBe(1);
    // An item makes the stream busy: a heartbeat comes a whole interval after it.
    const third = kept.next();
    clock.advance(750);
    expect(await settled(third)).toBe(false);
    source.push("b");
    expect(await third).toEqual({ done: false, value: "b" });
  });

  it("answers the read pending with a heartbeat at once when the source says it opened with nothing to send, and the next one a whole interval later", async () => {
    const clock = new ManualClock();
    const keepalive = createStreamKeepalive(clock, { heartbeatMs: 1_000, maxAgeMs: 0 });
    const source = new Source();
    const kept = keepalive.keep(source) as KeptStream<string>;
    kept.beats = always;
    const timers = clock.pendingTimers;
    const first = kept.next();
    expect(await settled(first)).toBe(false);
    kept.opened();
    expect(await settled(first)).toBe(true);
    expect(await first).toEqual({ done: false, value: BEAT });
    // No timer of its own: the shared ticker is all there is.
    expect(clock.pendingTimers).toBe(timers);
    // The source's read goes on; the stream counts as busy from its opening heartbeat.
    const second = kept.next();
    clock.advance(750);
    expect(await settled(second)).toBe(false);
    clock.advance(500);
    expect(await second).toEqual({ done: false, value: BEAT });
    source.push("a");
    expect(await kept.next()).toEqual({ done: false, value: "a" });
    expect(source.reads).toBe(1);
  });

  it("sends no opening heartbeat without heartbeats, while its beats say there is nothing to repeat, or with no read pending", async () => {
    const clock = new ManualClock();
    // Only a maximum age: opened() is no heartbeat.
    const ageing = createStreamKeepalive(clock, { heartbeatMs: 0, maxAgeMs: 60_000 }).keep(new Source()) as KeptStream<string>;
    ageing.beats = always;
    const aged = ageing.next();
    ageing.opened();
    expect(await settled(aged)).toBe(false);
    const keepalive = createStreamKeepalive(clock, { heartbeatMs: 1_000, maxAgeMs: 0 });
    // A stream whose heartbeat repeats its last item has none before its first.
    const repeating = keepalive.keep(new Source()) as KeptStream<string>;
    repeating.beats = { canBeat: () => false };
    const read = repeating.next();
    repeating.opened();
    expect(await settled(read)).toBe(false);
    // Said when no read is pending (the item was taken already): nothing is held for later.
    const source = new Source();
    const busy = keepalive.keep(source) as KeptStream<string>;
    busy.beats = always;
    const item = busy.next();
    source.push("a");
    expect(await item).toEqual({ done: false, value: "a" });
    busy.opened();
    const next = busy.next();
    expect(await settled(next)).toBe(false);
    source.push("b");
    expect(await next).toEqual({ done: false, value: "b" });
  });

  it("answers a source that says it opened as its read starts", async () => {
    const clock = new ManualClock();
    const keepalive = createStreamKeepalive(clock, { heartbeatMs: 1_000, maxAgeMs: 0 });
    let kept: KeptStream<string> | undefined = undefined;
    const source = new Source();
    const eager: AsyncIterator<string> = {
      next: () => {
        kept?.opened();
        return source.next();
      },
    };
    kept = keepalive.keep(eager) as KeptStream<string>;
    kept.beats = always;
    const first = kept.next();
    expect(await settled(first)).toBe(true);
    expect(await first).toEqual({ done: false, value: BEAT });
    source.push("a");
    expect(await kept.next()).toEqual({ done: false, value: "a" });
  });

  it("sends no heartbeat while its beats say there is nothing to repeat", async () => {
    const clock = new ManualClock();
    const kept = createStreamKeepalive(clock, { heartbeatMs: 1_000, maxAgeMs: 0 }).keep(new Source()) as KeptStream<string>;
    let can = false;
    kept.beats = { canBeat: () => can };
    const read = kept.next();
    clock.advance(5_000);
    expect(await settled(read)).toBe(false);
    can = true;
    clock.advance(250);
    expect(await read).toEqual({ done: false, value: BEAT });
  });

  it("ends streams at their maximum age less up to a tenth, between items or while waiting, and tells the source", async () => {
    const clock = new ManualClock();
    const keepalive = createStreamKeepalive(clock, { heartbeatMs: 0, maxAgeMs: 10_000 });
    const streams = Array.from({ length: 50 }, () => {
      const source = new Source();
      const kept = keepalive.keep(source) as KeptStream<string>;
      return { source, kept, read: kept.next() };
    });
    clock.advance(8_999);
    for (const s of streams) expect(await settled(s.read)).toBe(false);
    clock.advance(1_001);
    for (const s of streams) {
      expect(await s.read).toEqual({ done: true, value: undefined });
      expect(s.source.returned).toBe(true);
    }
    expect(keepalive.size).toBe(0);
    expect(clock.pendingTimers).toBe(0);

    // A stream busy at its age ends at its next read, after the item it was sending. Its age is
    // drawn without the jitter (Math.random() = 0: exactly max_age), so that it is still young
    // when its item comes at 9,999 ms; the jitter itself is what the 50 streams above show.
    const random = vi.spyOn(Math, "random").mockReturnValue(0);
    const source = new Source();
    const busy = keepalive.keep(source) as KeptStream<string>;
    random.mockRestore();
    const read = busy.next();
    clock.advance(9_999);
    source.push("last");
    expect(await read).toEqual({ done: false, value: "last" });
    clock.advance(1);
    expect(await busy.next()).toEqual({ done: true, value: undefined });
    expect(source.returned).toBe(true);
  });

  it("keeps its one ticker only while streams are kept: a stream's end, failure or return lets go", async () => {
    const clock = new ManualClock();
    const keepalive = createStreamKeepalive(clock, { heartbeatMs: 1_000, maxAgeMs: 60_000 });
    const ending = new Source();
    const failing = new Source();
    const returned = new Source();
    const streams = [ending, failing, returned].map((s) => keepalive.keep(s) as KeptStream<string>);
    expect(clock.pendingTimers).toBe(1);
    const [a, b, c] = streams as [KeptStream<string>, KeptStream<string>, KeptStream<string>];
    const readA = a.next();
    ending.finish();
    expect(await readA).toEqual({ done: true, value: undefined });
    const readB = b.next();
    failing.fail(new Error("the store is gone"));
    await expect(readB).rejects.toThrow("the store is gone");
    expect(keepalive.size).toBe(1);
    const readC = c.next();
    await c.return?.();
    expect(await readC).toEqual({ done: true, value: undefined });
    expect(returned.returned).toBe(true);
    expect(keepalive.size).toBe(0);
    expect(clock.pendingTimers).toBe(0);
  });
});
