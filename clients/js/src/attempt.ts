// One attempt at a long-lived stream, as the chat subscription and the queue watch both make it:
// its own abort controller tied to the subscription's signal, and a watchdog that gives up on a
// stream silent for longer than the server's heartbeats allow (a half-open connection, a proxy
// holding the response).

/** StreamAttempt is one stream's abort controller and idle watchdog. */
export class StreamAttempt {
  /** controller aborts this stream alone: the subscription stopping, the watchdog, or close(). */
  readonly controller = new AbortController();
  /** idle tells whether the watchdog ended the stream (it heard nothing for idleTimeoutMs). */
  idle = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly onStop = () => this.controller.abort();

  constructor(
    private readonly stopped: AbortSignal,
    private readonly idleTimeoutMs: number,
  ) {
    stopped.addEventListener("abort", this.onStop);
  }

  /** heard restarts the watchdog: call it as the stream opens and on every message (0 or less: no watchdog). */
  heard(): void {
    if (this.idleTimeoutMs <= 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.idle = true;
      this.controller.abort();
    }, this.idleTimeoutMs);
  }

  /** close stops the watchdog, lets go of the subscription's signal and ends the stream if it is still open. */
  close(): void {
    clearTimeout(this.timer);
    this.stopped.removeEventListener("abort", this.onStop);
    this.controller.abort();
  }
}
