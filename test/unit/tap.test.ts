// Taps (src/rpc/tap.ts): policies that tap a stream see what they would see wrapping it, in the
// order of the policy list. Plain unit tests: no server, no database.
import { Code, ConnectError, type StreamResponse } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { tapStream, TappedMessages, type StreamTap } from "../../src/rpc/tap.js";

/** Source is a stream's messages under the test's control: each read waits for push, end or fail. */
class Source implements AsyncIterator<number> {
  private waiting: { resolve: (r: IteratorResult<number>) => void; reject: (e: unknown) => void } | undefined;
  returned = false;

  next(): Promise<IteratorResult<number>> {
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  return(): Promise<IteratorResult<number>> {
    this.returned = true;
    return Promise.resolve({ done: true, value: undefined });
  }

  push(n: number): void {
    this.waiting?.resolve({ done: false, value: n });
  }

  end(): void {
    this.waiting?.resolve({ done: true, value: undefined });
  }

  fail(e: unknown): void {
    this.waiting?.reject(e);
  }
}

/** response is a stream response over a source. */
function response(source: Source): StreamResponse {
  return {
    stream: true,
    message: { [Symbol.asyncIterator]: () => source },
    method: Health.method.watch,
    service: Health,
    header: new Headers(),
    trailer: new Headers(),
  } as unknown as StreamResponse;
}

/** recording is a tap that writes what it sees to `log` under its name, and marks the errors it passes on. */
function recording(name: string, log: string[], extra: Partial<StreamTap> = {}): StreamTap {
  return {
    done: () => log.push(`${name}: done`),
    failed: (e) => {
      log.push(`${name}: ${ConnectError.from(e).rawMessage}`);
      return new ConnectError(`${ConnectError.from(e).rawMessage} < ${name}`, ConnectError.from(e).code);
    },
    ...extra,
  };
}

/** messagesOf reads a response's messages as a TappedMessages iterator. */
const messagesOf = (res: StreamResponse) => res.message[Symbol.asyncIterator]();

describe("taps", () => {
  it("join one list: the first tap wraps the messages once, the others add to it", () => {
    const res = tapStream(response(new Source()), {});
    expect(res.message).toBeInstanceOf(TappedMessages);
    expect(tapStream(res, {})).toBe(res);
  });

  it("pass messages through, and see the end once, innermost first", async () => {
    const log: string[] = [];
    const source = new Source();
    const res = tapStream(tapStream(response(source), recording("inner", log)), recording("outer", log));
    const it = messagesOf(res);
    const first = it.next();
    source.push(7);
    expect(await first).toEqual({ done: false, value: 7 });
    const end = it.next();
    source.end();
    expect(await end).toEqual({ done: true, value: undefined });
    expect(await it.next()).toEqual({ done: true, value: undefined });
    expect(log).toEqual(["inner: done", "outer: done"]);
  });

  it("pass a failure through every tap, innermost first, each seeing what the one inside made of it", async () => {
    const log: string[] = [];
    const source = new Source();
    const it = messagesOf(tapStream(tapStream(response(source), recording("inner", log)), recording("outer", log)));
    const read = it.next();
    source.fail(new ConnectError("boom", Code.Internal));
    const error = await read.then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(error?.rawMessage).toBe("boom < inner < outer");
    expect(log).toEqual(["inner: boom", "outer: boom < inner"]);
  });

  it("end a pending read once a tap's signal aborts, its reason passed through the taps outside it only", async () => {
    const log: string[] = [];
    const source = new Source();
    const signal = new AbortController();
    const res = tapStream(tapStream(tapStream(response(source), recording("inner", log)), { until: signal.signal, reason: () => new ConnectError("stop", Code.Unavailable) }), recording("outer", log));
    const it = messagesOf(res);
    const read = it.next();
    signal.abort();
    const error = await read.then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect([error?.code, error?.rawMessage]).toEqual([Code.Unavailable, "stop < outer"]);
    expect(log).toEqual(["outer: stop"]);
    // The messages left behind are returned; what they answer later is no one's.
    expect(source.returned).toBe(true);
    source.push(1);
    expect(await it.next()).toEqual({ done: true, value: undefined });
    expect(log).toEqual(["outer: stop"]);
  });

  it("tell a consumer that ends the call itself, instead of failing the read it has pending", async () => {
    const log: string[] = [];
    const source = new Source();
    const signal = new AbortController();
    const res = tapStream(tapStream(response(source), { until: signal.signal, reason: () => new ConnectError("stop", Code.Unavailable) }), recording("outer", log));
    const messages = res.message as TappedMessages<unknown>;
    const ended: string[] = [];
    messages.consumer = { ended: (e) => ended.push(ConnectError.from(e).rawMessage) };
    const read = messages.next();
    signal.abort();
    expect(ended).toEqual(["stop < outer"]);
    // The read ends with the source, which its call's end stops.
    source.end();
    expect(await read).toEqual({ done: true, value: undefined });
    expect(log).toEqual(["outer: stop"]);
  });

  it("fail at once when the signal had aborted before the tap", async () => {
    const signal = new AbortController();
    signal.abort();
    const it = messagesOf(tapStream(response(new Source()), { until: signal.signal, reason: () => new ConnectError("too late", Code.Unavailable) }));
    await expect(it.next()).rejects.toThrow("too late");
  });

  it("stop watching a signal once the messages end: an abort after it changes nothing", async () => {
    const log: string[] = [];
    const source = new Source();
    const signal = new AbortController();
    const it = messagesOf(tapStream(tapStream(response(source), { until: signal.signal, reason: () => new ConnectError("late", Code.Unavailable) }), recording("outer", log)));
    const end = it.next();
    source.end();
    expect(await end).toEqual({ done: true, value: undefined });
    signal.abort();
    expect(await it.next()).toEqual({ done: true, value: undefined });
    expect(log).toEqual(["outer: done"]);
  });

  it("see a stream its reader abandons end once, cancelled (a client gone, a failed write), and not again after", async () => {
    const log: string[] = [];
    const source = new Source();
    const it = messagesOf(tapStream(tapStream(response(source), recording("inner", log)), recording("outer", log)));
    const first = it.next();
    source.push(1);
    expect(await first).toEqual({ done: false, value: 1 });
    expect(await it.return!()).toEqual({ done: true, value: undefined });
    expect(source.returned).toBe(true);
    expect(log).toEqual(["inner: the stream was abandoned by its reader", "outer: the stream was abandoned by its reader < inner"]);
    await it.return!();
    expect(await it.next()).toEqual({ done: true, value: undefined });
    expect(log).toHaveLength(2);
  });

  it("see nothing more when a stream that ended is returned", async () => {
    const log: string[] = [];
    const source = new Source();
    const it = messagesOf(tapStream(response(source), recording("only", log)));
    const end = it.next();
    source.end();
    await end;
    await it.return!();
    expect(log).toEqual(["only: done"]);
  });
});
