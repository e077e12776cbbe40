/** Clock tells the time in epoch milliseconds; it is passed in so TTL behaviour is testable. */
export interface Clock {
  /** now is the current time in epoch milliseconds. */
  now(): number;
}

/** systemClock reads the machine's clock. */
export const systemClock: Clock = { now: () => Date.now() };

/** ManualClock is a clock that only moves when told to (tests). */
export class ManualClock implements Clock {
  constructor(private time = Date.UTC(2026, 0, 1)) {}
  now(): number {
    return this.time;
  }
  /** advance moves the clock forward by ms milliseconds. */
  advance(ms: number): void {
    this.time += ms;
  }
}
