/**
 * Chat sessions for the two sides: CustomerChat (ChatService, authorised by the chat's secure
 * key) and AgentChat (AgentService, authorised by the agent's credentials), each with subscribe()
 * (subscription.ts), the calls a chat window makes, and WatchQueue for agents, resumed after any
 * break.
 */
import type { Transport } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import type { DescMessage, DescMethodServerStreaming, DescMethodUnary, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { StreamAttempt } from "./attempt.js";
import { isRetryable, toGmsError, type GmsError } from "./errors.js";
import { AgentService, type AcceptChatResponse, type QueueUpdate } from "./gen/gms/v1/agent_pb.js";
import { ChatService } from "./gen/gms/v1/chat_pb.js";
import type { ChatEvent, ChatFile, FileLimits, Participant } from "./gen/gms/v1/chat_event_pb.js";
import type { Value, ValueSchema } from "./gen/gms/v1/value_pb.js";
import { backoffDelay, report, sleep, subscribe, type ChatHandlers, type ChatSource, type SubscribeOptions } from "./subscription.js";

/** Connection is what the chat helpers need of a client: its transport (a GmsClient is one). */
export interface Connection {
  readonly transport: Transport;
}

/** once is a request stream of one message. */
async function* once<T>(message: T): AsyncIterable<T> {
  yield message;
}

/** CALL_TIMEOUT_MS is the deadline of a helper's unary call (plus its wait, for those that wait): a half-open connection fails it instead of holding it. */
const CALL_TIMEOUT_MS = 30_000;

/** call calls a unary RPC on the transport and gives its response message. */
async function call<I extends DescMessage, O extends DescMessage>(
  transport: Transport,
  method: DescMethodUnary<I, O>,
  input: MessageInitShape<I>,
  signal?: AbortSignal,
  timeoutMs = CALL_TIMEOUT_MS,
): Promise<MessageShape<O>> {
  return (await transport.unary(method, signal, timeoutMs, undefined, input)).message;
}

/** streamOf opens a server stream; it resolves once the server has answered. */
async function streamOf<I extends DescMessage, O extends DescMessage>(
  transport: Transport,
  method: DescMethodServerStreaming<I, O>,
  input: MessageInitShape<I>,
  signal: AbortSignal,
): Promise<AsyncIterable<MessageShape<O>>> {
  return (await transport.stream(method, signal, undefined, undefined, once(input))).message;
}

/** randomId is 128 random bits in hex: a client message id (crypto.getRandomValues works on plain-HTTP pages too, randomUUID does not). */
function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * retried runs an idempotent call (a message with its client message id) again after a failure
 * that may go away by itself, up to three times, backing off: a send whose answer was lost is
 * applied once.
 */
async function retried<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const e = toGmsError(err);
      if (attempt >= 3 || !isRetryable(e) || e.code === Code.ResourceExhausted || e.code === Code.Canceled) throw e;
      await new Promise((r) => setTimeout(r, Math.max(e.retryAfterMs ?? 0, backoffDelay(attempt, 250, 4000))));
    }
  }
}

/** TYPING_REPEAT_MS: a "still typing" sent again sooner than this is not sent (the server coalesces anyway; a keystroke is not a call). */
const TYPING_REPEAT_MS = 3000;

/**
 * Session is what both sides share: one subscription at a time (two would share one position and
 * each miss what the other delivered) and typing notices without a call per keystroke.
 */
class Session {
  private subscribed = false;
  private typingOn = false;
  private typingSent = 0;

  /** guard runs a new subscription, refusing a second one while the first runs. */
  protected guard(start: (done: () => void) => () => void): () => void {
    if (this.subscribed) throw new Error("this chat already has a subscription: stop() it before subscribing again");
    this.subscribed = true;
    return start(() => (this.subscribed = false));
  }

  /** typingGate says whether a typing notice is worth a call: a change, or "still typing" after TYPING_REPEAT_MS. */
  protected typingGate(on: boolean): boolean {
    const now = Date.now();
    if (on === this.typingOn && (!on || now - this.typingSent < TYPING_REPEAT_MS)) return false;
    this.typingOn = on;
    this.typingSent = now;
    return true;
  }

  /** sent notes that a message went out: the server stops the sender's typing with it. */
  protected sent(): void {
    this.typingOn = false;
  }
}

/** SendOptions go with a message. */
export interface SendOptions {
  /** clientMessageId makes the send idempotent (default: a random id, so retries are safe); echoed on the event. */
  clientMessageId?: string;
  /** messageType is an application-defined type, echoed on the event. */
  messageType?: string;
}

/** StartChatOptions start a customer's chat. */
export interface StartChatOptions {
  nickname?: string;
  firstName?: string;
  lastName?: string;
  subject?: string;
  emailAddress?: string;
  /** service names a configured chat service (default: the builtin request-chat). */
  service?: string;
  /** userData is shown to the agent with the chat. */
  userData?: Record<string, string>;
  /** appData is stored with the chat's session data. */
  appData?: Record<string, MessageInitShape<typeof ValueSchema>>;
  /** requestId makes the start idempotent (default: a random id). */
  requestId?: string;
}

/** ResumeChat is what a customer's page keeps to pick its chat up again after a reload. */
export interface ResumeChat {
  chatId: string;
  secureKey: string;
  /** position is the last event position the page had shown (0: none). */
  position?: number;
}

/** CustomerChat is the customer's side of one chat. */
export class CustomerChat extends Session {
  /** position is the position of the last event delivered (0 before any). */
  position: number;

  private constructor(
    private readonly transport: Transport,
    /** chatId is the chat's id. */
    readonly chatId: string,
    /** secureKey authorises the customer's calls; keep it with chatId to resume after a reload. */
    readonly secureKey: string,
    position: number,
    /** participantId is the customer's participant id ("" when resumed). */
    readonly participantId: string,
    /** sessionId is the chat's session ("" when resumed). */
    readonly sessionId: string,
  ) {
    super();
    this.position = position;
  }

  /**
   * start asks for a chat (RequestChat): it waits on its endpoint's queue until an agent accepts.
   * subscribe() then delivers the transcript from its first event.
   */
  static async start(gms: Connection, options: StartChatOptions): Promise<CustomerChat> {
    const r = await retried(() =>
      call(gms.transport, ChatService.method.requestChat, {
        nickname: options.nickname ?? "",
        firstName: options.firstName ?? "",
        lastName: options.lastName ?? "",
        subject: options.subject ?? "",
        emailAddress: options.emailAddress ?? "",
        service: options.service ?? "",
        userData: options.userData ?? {},
        appData: options.appData ?? {},
        requestId: options.requestId ?? randomId(),
      }),
    );
    return new CustomerChat(gms.transport, r.chatId, r.secureKey, 0, r.participantId, r.sessionId);
  }

  /** resume picks up a chat after a page reload: subscribe() delivers from `position` + 1. */
  static resume(gms: Connection, saved: ResumeChat): CustomerChat {
    return new CustomerChat(gms.transport, saved.chatId, saved.secureKey, saved.position ?? 0, "", "");
  }

  private get key() {
    return { chatId: this.chatId, secureKey: this.secureKey };
  }

  /** saved is what to keep (e.g. in sessionStorage) to resume this chat after a reload. */
  saved(): Required<ResumeChat> {
    return { chatId: this.chatId, secureKey: this.secureKey, position: this.position };
  }

  /** subscribe delivers the chat's events from position + 1 (see ChatHandlers); it returns the function that stops it. */
  subscribe(handlers: ChatHandlers, options?: SubscribeOptions): () => void {
    const t = this.transport;
    const source: ChatSource = {
      stream: (from, signal) => streamOf(t, ChatService.method.subscribe, { ...this.key, fromPosition: BigInt(from) }, signal),
      refresh: (from, wait, signal, timeoutMs) => call(t, ChatService.method.refresh, { ...this.key, fromPosition: BigInt(from), waitSeconds: wait }, signal, timeoutMs),
    };
    return this.guard((done) => subscribe(source, this, handlers, options, done));
  }

  /** send sends a message and gives its position; retried safely (one client message id). */
  async send(text: string, options: SendOptions = {}): Promise<number> {
    const clientMessageId = options.clientMessageId ?? randomId();
    const r = await retried(() => call(this.transport, ChatService.method.sendMessage, { ...this.key, text, clientMessageId, messageType: options.messageType ?? "" }));
    this.sent();
    return Number(r.position);
  }

  /**
   * typing tells the agent the customer started or stopped typing (the server coalesces and expires
   * it); call it on every keystroke: repeats within 3 s are not sent.
   */
  async typing(on: boolean, text = ""): Promise<void> {
    if (this.typingGate(on)) await call(this.transport, ChatService.method.sendTyping, { ...this.key, typing: on, text });
  }

  /** fileLimits are the chat's file limits and what is used of them, to show before an upload. */
  async fileLimits(): Promise<FileLimits | undefined> {
    return (await call(this.transport, ChatService.method.getFileLimits, this.key)).limits;
  }

  /** upload adds a file to the chat (FILE_UPLOADED) and gives its id and position. */
  async upload(filename: string, contentType: string, content: Uint8Array): Promise<{ fileId: string; position: number }> {
    const r = await call(this.transport, ChatService.method.uploadFile, { ...this.key, file: { filename, contentType, content } });
    return { fileId: r.fileId, position: Number(r.position) };
  }

  /** download fetches a file of the chat. */
  async download(fileId: string): Promise<ChatFile | undefined> {
    return (await call(this.transport, ChatService.method.downloadFile, { ...this.key, fileId })).file;
  }

  /** deleteFile removes a file the customer uploaded (FILE_DELETED). */
  async deleteFile(fileId: string): Promise<number> {
    return Number((await call(this.transport, ChatService.method.deleteFile, { ...this.key, fileId })).position);
  }

  /** nickname changes the customer's nickname (NICKNAME_UPDATED). */
  async nickname(nickname: string): Promise<number> {
    return Number((await call(this.transport, ChatService.method.updateNickname, { ...this.key, nickname })).position);
  }

  /** read says the customer has read the transcript up to `position` (MESSAGE_READ). */
  async read(position: number): Promise<number> {
    return Number((await call(this.transport, ChatService.method.sendReadReceipt, { ...this.key, readPosition: BigInt(position) })).position);
  }

  /** leave ends the chat from the customer's side (PARTICIPANT_LEFT, CHAT_ENDED). */
  async leave(): Promise<void> {
    await call(this.transport, ChatService.method.disconnect, this.key);
  }
}

/** AcceptOptions accept a chat from an endpoint's queue. */
export interface AcceptOptions {
  /** endpoint is the queue (default "default"). */
  endpoint?: string;
  /** nickname is the name the customer sees. */
  nickname: string;
  /** waitSeconds waits for a chat when none is waiting (default 0: NOT_FOUND at once). */
  waitSeconds?: number;
}

/** ResumeAgentChat picks up a chat the agent accepted before (a console reload). */
export interface ResumeAgentChat {
  chatId: string;
  /** position is the last event position the console had shown (0: none). */
  position?: number;
}

/** AgentChat is an agent's side of one chat (the client's key or agent identity is the agent). */
export class AgentChat extends Session {
  /** position is the position of the last event delivered (0 before any). */
  position: number;
  /** accepted is AcceptChat's answer (subject, customer, user and app data), when this came from accept(). */
  readonly accepted: AcceptChatResponse | undefined;

  private constructor(
    private readonly transport: Transport,
    /** chatId is the chat's id. */
    readonly chatId: string,
    position: number,
    accepted?: AcceptChatResponse,
  ) {
    super();
    this.position = position;
    this.accepted = accepted;
  }

  /** accept claims the oldest chat waiting on the endpoint; subscribe() then delivers the transcript from its first event. */
  static async accept(gms: Connection, options: AcceptOptions): Promise<AgentChat> {
    const waitSeconds = options.waitSeconds ?? 0;
    const r = await call(gms.transport, AgentService.method.acceptChat, { endpoint: options.endpoint ?? "default", nickname: options.nickname, waitSeconds }, undefined, waitSeconds * 1000 + CALL_TIMEOUT_MS);
    return new AgentChat(gms.transport, r.chatId, 0, r);
  }

  /** resume picks up a chat this agent accepted before: subscribe() delivers from `position` + 1. */
  static resume(gms: Connection, saved: ResumeAgentChat): AgentChat {
    return new AgentChat(gms.transport, saved.chatId, saved.position ?? 0);
  }

  /**
   * watchQueue follows an endpoint's waiting chats: `update` gets the whole queue now and after every
   * change (heartbeats are not passed on), resumed after any break with backoff; it returns stop().
   */
  static watchQueue(gms: Connection, endpoint: string, handlers: QueueHandlers, options: WatchOptions = {}): () => void {
    return watchQueue(gms.transport, endpoint, handlers, options);
  }

  /** subject is the chat's subject, customer the customer, when accepted here. */
  get subject(): string | undefined {
    return this.accepted?.subject;
  }
  get customer(): Participant | undefined {
    return this.accepted?.customer;
  }
  get participantId(): string | undefined {
    return this.accepted?.participantId;
  }
  get appData(): Record<string, Value> | undefined {
    return this.accepted?.appData;
  }
  get userData(): Record<string, string> | undefined {
    return this.accepted?.userData;
  }

  /** subscribe delivers the chat's events from position + 1 (see ChatHandlers); it returns the function that stops it. */
  subscribe(handlers: ChatHandlers, options?: SubscribeOptions): () => void {
    const t = this.transport;
    const source: ChatSource = {
      stream: (from, signal) => streamOf(t, AgentService.method.subscribe, { chatId: this.chatId, fromPosition: BigInt(from) }, signal),
      refresh: (from, wait, signal, timeoutMs) => call(t, AgentService.method.refresh, { chatId: this.chatId, fromPosition: BigInt(from), waitSeconds: wait }, signal, timeoutMs),
    };
    return this.guard((done) => subscribe(source, this, handlers, options, done));
  }

  /** send sends a message and gives its position; retried safely (one client message id). */
  async send(text: string, options: SendOptions = {}): Promise<number> {
    const clientMessageId = options.clientMessageId ?? randomId();
    const r = await retried(() => call(this.transport, AgentService.method.sendMessage, { chatId: this.chatId, text, clientMessageId, messageType: options.messageType ?? "" }));
    this.sent();
    return Number(r.position);
  }

  /** typing tells the customer the agent started or stopped typing; repeats within 3 s are not sent. */
  async typing(on: boolean, text = ""): Promise<void> {
    if (this.typingGate(on)) await call(this.transport, AgentService.method.sendTyping, { chatId: this.chatId, typing: on, text });
  }

  /** pushUrl shows the customer a page (PUSH_URL). */
  async pushUrl(url: string): Promise<number> {
    return Number((await call(this.transport, AgentService.method.pushUrl, { chatId: this.chatId, url })).position);
  }

  /** notice adds a custom notice (CUSTOM_NOTICE). */
  async notice(text: string): Promise<number> {
    return Number((await call(this.transport, AgentService.method.sendCustomNotice, { chatId: this.chatId, text })).position);
  }

  /** transfer puts the chat on another endpoint's queue; this agent leaves it. */
  async transfer(endpoint: string): Promise<void> {
    await call(this.transport, AgentService.method.transferChat, { chatId: this.chatId, endpoint });
  }

  /** leave leaves the chat, which goes back on its queue. */
  async leave(): Promise<void> {
    await call(this.transport, AgentService.method.leaveChat, { chatId: this.chatId });
  }

  /** end ends the chat for everyone. */
  async end(): Promise<void> {
    await call(this.transport, AgentService.method.endChat, { chatId: this.chatId });
  }

  /** fileLimits are the chat's file limits and what is used of them. */
  async fileLimits(): Promise<FileLimits | undefined> {
    return (await call(this.transport, AgentService.method.getFileLimits, { chatId: this.chatId })).limits;
  }

  /** upload adds a file to the chat (FILE_UPLOADED) and gives its id and position. */
  async upload(filename: string, contentType: string, content: Uint8Array): Promise<{ fileId: string; position: number }> {
    const r = await call(this.transport, AgentService.method.uploadFile, { chatId: this.chatId, file: { filename, contentType, content } });
    return { fileId: r.fileId, position: Number(r.position) };
  }

  /** download fetches a file of the chat. */
  async download(fileId: string): Promise<ChatFile | undefined> {
    return (await call(this.transport, AgentService.method.downloadFile, { chatId: this.chatId, fileId })).file;
  }

  /** deleteFile removes a file this agent uploaded (FILE_DELETED). */
  async deleteFile(fileId: string): Promise<number> {
    return Number((await call(this.transport, AgentService.method.deleteFile, { chatId: this.chatId, fileId })).position);
  }
}

/** QueueHandlers receive an endpoint's queue. */
export interface QueueHandlers {
  /** update receives the whole queue, now and after every change. */
  update?: (q: QueueUpdate) => void;
  /** state: "connecting", "live", "reconnecting"; "ended" after a failure that is not retried. */
  state?: (s: "connecting" | "live" | "reconnecting" | "ended") => void;
  /** error receives a failure that is not retried (e.g. PERMISSION_DENIED); watching is over. */
  error?: (e: GmsError) => void;
}

/** WatchOptions tune the queue watch's resume. */
export interface WatchOptions {
  /** idleTimeoutMs resumes a watch silent (heartbeats included) for this long (default 75000; 0 never). */
  idleTimeoutMs?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
}

function watchQueue(transport: Transport, endpoint: string, handlers: QueueHandlers, options: WatchOptions): () => void {
  const stop = new AbortController();
  const signal = stop.signal;
  const idleTimeoutMs = options.idleTimeoutMs ?? 75_000;
  let state: string | undefined;
  const setState = (s: "connecting" | "live" | "reconnecting" | "ended") => {
    if (s === state || signal.aborted) return;
    state = s;
    report(handlers.state, s);
  };
  const emit = (q: QueueUpdate) => report(handlers.update, q);
  async function run(): Promise<void> {
    setState("connecting");
    let failures = 0;
    while (!signal.aborted) {
      const attempt = new StreamAttempt(signal, idleTimeoutMs);
      let heard = false;
      try {
        attempt.heard();
        const updates = await streamOf(transport, AgentService.method.watchQueue, { endpoint }, attempt.controller.signal);
        setState("live");
        for await (const q of updates) {
          heard = true;
          attempt.heard();
          if (!q.heartbeat) emit(q);
        }
        if (heard) failures = 0;
      } catch (err) {
        if (signal.aborted) return;
        const e = toGmsError(err);
        if (!attempt.idle && !isRetryable(e)) {
          setState("ended");
          report(handlers.error, e);
          stop.abort();
          return;
        }
        if (heard) failures = 0;
      } finally {
        attempt.close();
      }
      if (signal.aborted) return;
      setState("reconnecting");
      await sleep(backoffDelay(failures++, options.backoffMs ?? 500, options.maxBackoffMs ?? 30_000), signal);
    }
  }
  void run();
  return () => stop.abort();
}

export type { ChatEvent, Participant, QueueUpdate };
