// RPCs written once and served by both paths: through connect (every protocol) and through the
// lean path (src/rpc/lean-path.ts: gRPC, and Connect unary POST, straight on Node's request and
// response). A service module writes its hot unary calls as a UnaryRpc and its server streams as
// a ServerStream, and gives connect the handler connectUnary or connectStream makes of it; the
// lean path finds them in the service's implementation (leanRpcsOf), so nothing lists them twice.
import { create, type DescMessage, type DescMethodServerStreaming, type DescMethodUnary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { callerOf, type Identity } from "./auth.js";
import { BEAT, type Beat, type Beats, type KeptStream, type StreamKeepalive } from "./keepalive.js";
import { localCallKey } from "./peer.js";
import { TappedMessages } from "./tap.js";

/** leanRpcKey is where a handler made by connectUnary or connectStream carries its RPC. */
const leanRpcKey = Symbol("lean rpc");

/**
 * ServerStream is a server-streaming RPC written once and served by both paths: through connect
 * (connectStream: Connect, gRPC-Web, HTTP/1.1) and through the lean path, both reading it as
 * StreamMessages. `open` is the domain call, `message` maps one of its items onto the response, so
 * no path adds a generator of its own to map them.
 */
export interface ServerStream<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage, T = unknown> {
  readonly method: DescMethodServerStreaming<I, O>;
  /**
   * open checks the request against the domain (a chat's secure key, an agent's place in it) and
   * returns the items to send; they must end once `signal` aborts. Items that may open with nothing
   * to send for a long while (a chat's, with nothing stored past the position) call `opened` as
   * they find so, before their first item: a stream with heartbeats then sends one at once
   * (keepalive.ts), so that its client sees it open. Items that have something at once (a queue's
   * or a health status) need not.
   */
  open(req: MessageShape<I>, caller: Identity, signal: AbortSignal, opened: () => void): Promise<AsyncIterable<T>>;
  /** message maps one item onto the response message. */
  message(item: T): MessageInitShape<O>;
  /**
   * keepalive sends the stream's heartbeats and ends it at its maximum age (`server.streams`,
   * keepalive.ts) when it is served over the network; none: neither.
   */
  readonly keepalive?: StreamKeepalive | undefined;
  /** heartbeat is what the stream sends when it has been quiet; none: no heartbeat (the maximum age still holds). */
  readonly heartbeat?: Heartbeat<O, T> | undefined;
}

/**
 * Heartbeat is what a quiet stream sends: always the same message (a chat's HEARTBEAT event), or
 * the last item sent again, marked (a queue's last state): none is sent before a first item then.
 */
export type Heartbeat<O extends DescMessage, T> = { readonly message: MessageInitShape<O> } | { readonly repeat: (last: T) => MessageInitShape<O> };

/** serverStream types a ServerStream from its method (a helper: the interface alone cannot infer I and O). */
export function serverStream<I extends DescMessage, O extends DescMessage, T>(
  method: DescMethodServerStreaming<I, O>,
  open: (req: MessageShape<I>, caller: Identity, signal: AbortSignal, opened: () => void) => Promise<AsyncIterable<T>>,
  message: (item: T) => MessageInitShape<O>,
  keep: { keepalive?: StreamKeepalive | undefined; heartbeat?: Heartbeat<O, T> } = {},
): ServerStream<I, O, T> {
  return { method, open, message, ...keep };
}

/**
 * STREAM_HEADERS go on every server stream served over the network: the response must reach the
 * client as it is written, so proxies must neither buffer it (nginx's `proxy_buffering`, which
 * `X-Accel-Buffering: no` turns off for the response) nor transform or cache it.
 */
export const STREAM_HEADERS: readonly (readonly [string, string])[] = [
  ["cache-control", "no-cache, no-transform"],
  ["x-accel-buffering", "no"],
];

/**
 * StreamMessages are a ServerStream's response messages for one call: its items mapped onto
 * messages as they are read, with heartbeats between them and the end at its maximum age when it
 * is kept alive (keepalive.ts), the policies' taps on them (src/rpc/tap.ts). The domain ends a
 * stream quietly when its signal aborts; a stream cut by the call's deadline ends with DEADLINE_EXCEEDED.
 */
export class StreamMessages<I extends DescMessage, O extends DescMessage, T> extends TappedMessages<MessageShape<O>, T | Beat> implements Beats {
  /** last is the last item sent, kept only for a heartbeat that repeats it. */
  private last: T | undefined;

  /** The items are the domain's, or what the keepalive makes of them (`kept`, whose heartbeats this stream's messages make). */
  constructor(
    private readonly stream: ServerStream<I, O, T>,
    items: AsyncIterator<T>,
    private readonly signal: AbortSignal,
    kept: KeptStream<T> | undefined,
  ) {
    super(kept ?? items);
    if (kept !== undefined && stream.heartbeat !== undefined) kept.beats = this;
  }

  canBeat(): boolean {
    const heartbeat = this.stream.heartbeat;
    return heartbeat !== undefined && ("message" in heartbeat || this.last !== undefined);
  }

  protected override message(item: T | Beat): MessageShape<O> {
    const { method, heartbeat } = this.stream;
    if (item === BEAT) {
      if (heartbeat === undefined) throw new ConnectError("a heartbeat on a stream without one", Code.Internal);
      return create(method.output, "message" in heartbeat ? heartbeat.message : heartbeat.repeat(this.last as T));
    }
    if (heartbeat !== undefined && "repeat" in heartbeat) this.last = item;
    return create(method.output, this.stream.message(item));
  }

  protected override end(): void {
    if (this.signal.aborted && ConnectError.from(this.signal.reason).code === Code.DeadlineExceeded) throw this.signal.reason;
  }
}

/**
 * StreamCall is how a call opens a stream: the caller, the call's signal, the response headers to
 * add to, and whether it comes in process (the plain HTTP routes, through createLocalTransport):
 * no proxy stands between those and the server, so they get neither heartbeats, nor a maximum
 * age, nor the proxy headers.
 */
export interface StreamCall {
  caller: Identity;
  signal: AbortSignal;
  header: Headers;
  local: boolean;
}

const unheard = () => undefined;

/** openStream opens a ServerStream for one call (the domain checks the request): its messages. */
export async function openStream<I extends DescMessage, O extends DescMessage, T>(stream: ServerStream<I, O, T>, req: MessageShape<I>, call: StreamCall): Promise<StreamMessages<I, O, T>> {
  if (call.local) {
    const items = await stream.open(req, call.caller, call.signal, unheard);
    return new StreamMessages(stream, items[Symbol.asyncIterator](), call.signal, undefined);
  }
  // `opened` comes while the items are read, after `kept` is made; the items let go of it once said.
  let kept: KeptStream<T> | undefined = undefined;
  const items = (await stream.open(req, call.caller, call.signal, () => kept?.opened()))[Symbol.asyncIterator]();
  for (const [name, value] of STREAM_HEADERS) call.header.set(name, value);
  kept = stream.keepalive?.keep(items);
  return new StreamMessages(stream, items, call.signal, kept);
}

/** connectStream is a ServerStream as a connect handler, which carries it for leanRpcsOf. */
export function connectStream<I extends DescMessage, O extends DescMessage, T>(stream: ServerStream<I, O, T>) {
  const handler = async function* (req: MessageShape<I>, ctx: HandlerContext): AsyncGenerator<MessageShape<O>> {
    yield* await openStream(stream, req, { caller: callerOf(ctx), signal: ctx.signal, header: ctx.responseHeader, local: ctx.values.get(localCallKey) });
  };
  return Object.assign(handler, { [leanRpcKey]: stream as ServerStream });
}

/**
 * UnaryRpc is a unary RPC written once and served by both paths, like ServerStream: the hot ones
 * (a customer's poll, allocation, matching), where connect-node's per-call machinery costs more CPU
 * than the call's own work.
 */
export interface UnaryRpc<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> {
  readonly method: DescMethodUnary<I, O>;
  /**
   * call does the RPC. On the lean path its signal aborts at the call's deadline, and when the
   * client goes away only for a request `waits` says may wait (a long-poll): quick ones end on their
   * own, and without a deadline their signal never aborts.
   */
  call(req: MessageShape<I>, caller: Identity, signal: AbortSignal): Promise<MessageInitShape<O>>;
  /** waits tells whether a request may wait for something to happen (a long-poll): its signal then matters. */
  readonly waits?: (req: MessageShape<I>) => boolean;
}

/** unaryRpc types a UnaryRpc from its method. */
export function unaryRpc<I extends DescMessage, O extends DescMessage>(
  method: DescMethodUnary<I, O>,
  call: (req: MessageShape<I>, caller: Identity, signal: AbortSignal) => Promise<MessageInitShape<O>>,
  options: { waits?: (req: MessageShape<I>) => boolean } = {},
): UnaryRpc<I, O> {
  return { method, call, ...options };
}

/** connectUnary is a UnaryRpc as a connect handler, which carries it for leanRpcsOf. */
export function connectUnary<I extends DescMessage, O extends DescMessage>(rpc: UnaryRpc<I, O>) {
  const handler = (req: MessageShape<I>, ctx: HandlerContext): Promise<MessageInitShape<O>> => rpc.call(req, callerOf(ctx), ctx.signal);
  return Object.assign(handler, { [leanRpcKey]: rpc as unknown as UnaryRpc });
}

/** LeanRpc is an RPC the lean path serves: a UnaryRpc or a ServerStream. */
export type LeanRpc = UnaryRpc | ServerStream;

/**
 * leanRpcsOf lists the RPCs of a connect service implementation that connectUnary and
 * connectStream made: the ones the lean path serves too.
 */
export function leanRpcsOf(impl: object): LeanRpc[] {
  const rpcs: LeanRpc[] = [];
  for (const handler of Object.values(impl)) {
    const rpc = typeof handler === "function" ? (handler as { [leanRpcKey]?: LeanRpc })[leanRpcKey] : undefined;
    if (rpc !== undefined) rpcs.push(rpc);
  }
  return rpcs;
}
