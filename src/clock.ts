/**
 * Clock tells the time in epoch milliseconds and runs timers; it is passed in so TTL, typing and
 * idle behaviour is testable without sleeping.
 */
export interface Clock {
  /** now is the current time in epoch milliseconds. */
  now(): number;
  /** setTimer calls fn after ms milliseconds of this clock's time; the returned function cancels it. */
  setTimer(fn: () => void, ms: number): () => void;
}

/** systemClock reads the machine's clock and uses Node's timers (unref'd: they never hold the process). */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, Math.max(0, ms));
    t.unref();
    return () => clearTimeout(t);
  },
};

/** ManualClock is a clock that only moves when told to (tests); advancing it fires due timers. */
export class ManualClock implements Clock {
  private timers: { at: number; seq: number; fn: () => void }[] = [];
  private seq = 0;

  constructor(private time = Date.UTC(2026, 0, 1)) {}

  now(): number {
    return this.time;
  }

  setTimer(fn: () => void, ms: number): () => void {
    const timer = { at: this.time + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  /** pendingTimers is the number of timers not yet fired or cancelled (leak checks). */
  get pendingTimers(): number {
    return this.timers.length;
  }

  /** advance moves the clock forward by ms milliseconds, firing due timers in time order. */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (due === undefined) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.time = Math.max(this.time, due.at);
      due.fn();
    }
    this.time = end;
  }
}
