import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentService, type AcceptChatResponse } from "../gen/gms/v1/agent_pb.js";
import { ChatEventType, ParticipantType, type ChatEvent } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService, type RequestChatRequest, type RequestChatResponse } from "../gen/gms/v1/chat_pb.js";
import { LimitExceededSchema } from "../gen/gms/v1/error_details_pb.js";
import { ManualClock } from "../src/clock.js";
import { errorOf, waitFor } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const AGENT_A = { name: "agent-a", key: "agent-a-key-0123456789" };
const AGENT_B = { name: "agent-b", key: "agent-b-key-0123456789" };
const ADMIN = { name: "ops", key: "admin-key-0123456789ab" };
const MAX_MESSAGE = 64;
const UNKNOWN_CHAT = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";

/**
 * The server's configuration: two agent keys and an admin key, customers without a key (public
 * role app). Each endpoint serves one kind of test, so a chat one test leaves waiting is never
 * accepted by another: "support" chats are accepted as soon as they are made, "lobby" chats never,
 * "race" chats only by the AcceptChat race.
 */
const chatConfig = {
  auth: {
    api_keys: [
      { name: AGENT_A.name, key: AGENT_A.key, roles: ["agent"] },
      { name: AGENT_B.name, key: AGENT_B.key, roles: ["agent"] },
      { name: ADMIN.name, key: ADMIN.key, roles: ["admin"] },
    ],
    public_roles: ["app"],
  },
  chat: { max_message_length: MAX_MESSAGE },
  services: {
    support: { service: "request-chat", endpoint: "support", ttl: 600 },
    lobby: { service: "request-chat", endpoint: "lobby", ttl: 600 },
    race: { service: "request-chat", endpoint: "race", ttl: 600 },
  },
};

/** durable renders a stream's or poll's stored events (position > 0) for comparison. */
const durable = (events: readonly ChatEvent[]) =>
  events.filter((e) => e.position > 0n).map((e) => `${e.position}:${ChatEventType[e.type]}:${ParticipantType[e.from?.type ?? 0]}:${e.from?.participantId}:${e.text}`);
const live = (events: readonly ChatEvent[]) => events.filter((e) => e.position === 0n);
const positions = (events: readonly ChatEvent[]) => events.map((e) => Number(e.position));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * Reader collects a server stream's events in the background until it ends or fails, all but its
 * heartbeats (the server's sign of life, e.g. a stream from past the last event opens with one).
 */
interface Reader {
  readonly events: ChatEvent[];
  /** ended resolves when the stream ends, with its error if it failed. */
  readonly ended: Promise<ConnectError | undefined>;
  /** until waits (bounded) for an event matching `pred`. */
  until(what: string, pred: (e: ChatEvent) => boolean): Promise<void>;
}

function read(stream: AsyncIterable<ChatEvent>): Reader {
  const events: ChatEvent[] = [];
  const ended = (async () => {
    try {
      for await (const e of stream) if (e.type !== ChatEventType.HEARTBEAT) events.push(e);
      return undefined;
    } catch (e) {
      return ConnectError.from(e);
    }
  })();
  return {
    events,
    ended,
    async until(what, pred) {
      await waitFor(what, () => events.some(pred));
    },
  };
}

/** streamError runs a stream that must fail before its first event, and rejects with its error. */
async function streamError(stream: AsyncIterable<ChatEvent>): Promise<never> {
  for await (const e of stream) throw new Error(`the stream should have failed, but sent ${ChatEventType[e.type]}`);
  throw new Error("the stream should have failed, but ended");
}

const isType = (type: ChatEventType) => (e: ChatEvent) => e.type === type;
const atPosition = (p: number) => (e: ChatEvent) => e.position === BigInt(p);

describe.each(DIALECTS)("ChatService and AgentService over the wire on %s", (dialect) => {
  let t: TestServer;
  let clock: ManualClock;
  /** The customer needs no key: over gRPC (a mobile backend) and Connect HTTP/1.1 (a browser). */
  let customerGrpc: Client<typeof ChatService>;
  let customerConnect: Client<typeof ChatService>;
  let agentA: Client<typeof AgentService>;
  let agentAGrpc: Client<typeof AgentService>;
  let agentB: Client<typeof AgentService>;
  let admin: Client<typeof AgentService>;

  const request = (o: Partial<Omit<RequestChatRequest, "$typeName" | "$unknown">> = {}) =>
    customerGrpc.requestChat({ service: "support", nickname: "Ann", subject: "billing", userData: { tier: "gold" }, ...o });

  /** open starts a support chat and lets agent A accept it. */
  async function open(): Promise<{ chat: RequestChatResponse; accepted: AcceptChatResponse }> {
    const chat = await request();
    const accepted = await agentA.acceptChat({ endpoint: "support", nickname: "Bob", waitSeconds: 0 });
    expect(accepted.chatId).toBe(chat.chatId);
    return { chat, accepted };
  }

  beforeAll(async () => {
    clock = new ManualClock(Date.now());
    t = await startTestServer(dialect, { config: chatConfig, clock });
    customerGrpc = createClient(ChatService, t.grpc);
    customerConnect = createClient(ChatService, t.connect);
    agentA = createClient(AgentService, t.transport("connect", AGENT_A.key));
    agentAGrpc = createClient(AgentService, t.transport("grpc", AGENT_A.key));
    agentB = createClient(AgentService, t.transport("grpc", AGENT_B.key));
    admin = createClient(AgentService, t.transport("grpc", ADMIN.key));
  });
  afterAll(() => t?.close());

  it("a conversation streamed to both sides (gRPC and Connect HTTP/1.1) reads the same as Refresh; typing is live only", async () => {
    const chat = await request();
    expect(durable(chat.events)).toEqual([`1:PARTICIPANT_JOINED:CLIENT:${chat.participantId}:`]);
    expect(chat.nextPosition).toBe(2n);
    const customerStream = read(customerGrpc.subscribe({ chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n }));
    await customerStream.until("the customer's replay", atPosition(1));

    const accepted = await agentA.acceptChat({ endpoint: "support", nickname: "Bob", waitSeconds: 0 });
    expect(accepted.chatId).toBe(chat.chatId);
    expect(accepted.subject).toBe("billing");
    expect(accepted.userData).toEqual({ tier: "gold" });
    expect(accepted.customer?.participantId).toBe(chat.participantId);
    expect(positions(accepted.events)).toEqual([1, 2]);
    // The agent's stream over Connect (HTTP/1.1), from the start of the transcript.
    const agentStream = read(agentA.subscribe({ chatId: chat.chatId, fromPosition: 1n }));
    // Each stream has replayed position 2, so both are live: typing (never replayed) reaches them.
    await agentStream.until("the agent's replay", atPosition(2));
    await customerStream.until("the agent joining, live", atPosition(2));

    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    await customerGrpc.sendTyping({ ...key, typing: true, text: "hel" });
    await agentStream.until("the customer typing", isType(ChatEventType.TYPING_STARTED));
    expect((await agentAGrpc.refresh({ chatId: chat.chatId, fromPosition: 3n })).typing.map((p) => p.participantId)).toEqual([chat.participantId]);
    expect(await customerGrpc.sendMessage({ ...key, text: "hello", clientMessageId: "m-1" })).toMatchObject({ position: 3n });
    await agentA.sendTyping({ chatId: chat.chatId, typing: true });
    await customerStream.until("the agent typing", isType(ChatEventType.TYPING_STARTED));
    expect(await agentA.sendMessage({ chatId: chat.chatId, text: "hi Ann", messageType: "greeting" })).toMatchObject({ position: 4n });
    await customerConnect.sendMessage({ ...key, text: "bye" });
    await customerGrpc.disconnect(key);

    // Both streams end by themselves after CHAT_ENDED.
    expect(await customerStream.ended).toBeUndefined();
    expect(await agentStream.ended).toBeUndefined();

    const polledByCustomer = await customerConnect.refresh({ ...key, fromPosition: 0n });
    const polledByAgent = await agentAGrpc.refresh({ chatId: chat.chatId, fromPosition: 0n });
    expect(polledByCustomer.chatEnded).toBe(true);
    expect(polledByCustomer.nextPosition).toBe(8n);
    const transcript = durable(polledByCustomer.events);
    expect(transcript).toEqual([
      `1:PARTICIPANT_JOINED:CLIENT:${chat.participantId}:`,
      `2:PARTICIPANT_JOINED:AGENT:${accepted.participantId}:`,
      `3:MESSAGE:CLIENT:${chat.participantId}:hello`,
      `4:MESSAGE:AGENT:${accepted.participantId}:hi Ann`,
      `5:MESSAGE:CLIENT:${chat.participantId}:bye`,
      `6:PARTICIPANT_LEFT:CLIENT:${chat.participantId}:`,
      `7:CHAT_ENDED:CLIENT:${chat.participantId}:`,
    ]);
    expect(durable(polledByAgent.events)).toEqual(transcript);
    expect(durable(customerStream.events)).toEqual(transcript);
    expect(durable(agentStream.events)).toEqual(transcript);
    expect(polledByCustomer.events[2]?.clientMessageId).toBe("m-1");
    expect(polledByCustomer.events[3]?.messageType).toBe("greeting");

    // Typing reached the other side live, with position 0, and never the transcript.
    expect(polledByCustomer.events.some((e) => e.type === ChatEventType.TYPING_STARTED || e.type === ChatEventType.TYPING_STOPPED)).toBe(false);
    expect(live(agentStream.events).map((e) => `${ChatEventType[e.type]}:${e.from?.participantId}`)).toEqual([
      `TYPING_STARTED:${chat.participantId}`,
      `TYPING_STOPPED:${chat.participantId}`,
    ]);
    expect(live(agentStream.events)[0]?.text).toBe("hel");
    expect(live(customerStream.events).map((e) => `${ChatEventType[e.type]}:${e.from?.participantId}`)).toEqual([
      `TYPING_STARTED:${accepted.participantId}`,
      `TYPING_STOPPED:${accepted.participantId}`,
    ]);
    // Each typing notice sits where it happened: the sender's message stops its typing.
    const agentSeen = agentStream.events.map((e) => ChatEventType[e.type]);
    expect(agentSeen.slice(agentSeen.indexOf("TYPING_STARTED"), agentSeen.indexOf("TYPING_STARTED") + 3)).toEqual(["TYPING_STARTED", "MESSAGE", "TYPING_STOPPED"]);
  });

  it("20 concurrent senders on both sides and both protocols produce one gapless, ordered transcript", async () => {
    const { chat } = await open();
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const watcher = read(customerConnect.subscribe({ ...key, fromPosition: 1n }));
    await watcher.until("the replay", atPosition(2));
    const sends = Array.from({ length: 20 }, (_, i) => {
      const text = `m${i}`;
      const call =
        i % 4 === 0
          ? customerGrpc.sendMessage({ ...key, text, clientMessageId: `c${i}` })
          : i % 4 === 1
            ? customerConnect.sendMessage({ ...key, text, clientMessageId: `c${i}` })
            : i % 4 === 2
              ? agentA.sendMessage({ chatId: chat.chatId, text, clientMessageId: `c${i}` })
              : agentAGrpc.sendMessage({ chatId: chat.chatId, text, clientMessageId: `c${i}` });
      return call.then((r) => ({ text, position: Number(r.position) }));
    });
    const sent = await Promise.all(sends);
    const polled = await customerGrpc.refresh({ ...key, fromPosition: 1n });
    expect(positions(polled.events)).toEqual(range(1, 22));
    expect(polled.nextPosition).toBe(23n);
    // Every message is stored once, at the position its sender was told.
    const stored = new Map(polled.events.filter((e) => e.type === ChatEventType.MESSAGE).map((e) => [e.text, Number(e.position)]));
    expect(stored.size).toBe(20);
    for (const s of sent) expect(stored.get(s.text), s.text).toBe(s.position);
    // A stream open during the burst saw the same transcript, in order.
    await watcher.until("the last message", atPosition(22));
    expect(durable(watcher.events)).toEqual(durable(polled.events));
    await agentA.endChat({ chatId: chat.chatId });
    expect(await watcher.ended).toBeUndefined();
  });

  it("resume: a stream cut after k events, re-subscribed from k+1, yields exactly the rest", async () => {
    const { chat } = await open();
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    for (let i = 0; i < 3; i++) await agentAGrpc.sendMessage({ chatId: chat.chatId, text: `before ${i}` });
    const k = 4;
    const cut = new AbortController();
    const first: ChatEvent[] = [];
    // The agent keeps talking while the customer's stream is cut and reopened.
    let talking = true;
    let spoken = 0;
    const agentTalks = (async () => {
      while (talking || spoken < 10) await agentAGrpc.sendMessage({ chatId: chat.chatId, text: `during ${spoken++}` });
    })();
    let again: Reader;
    try {
      for await (const e of customerGrpc.subscribe({ ...key, fromPosition: 1n }, { signal: cut.signal })) {
        first.push(e);
        if (first.length === k) {
          // The client drops the connection's stream, as a phone losing its network would.
          cut.abort();
          break;
        }
      }
      expect(positions(first)).toEqual(range(1, k));
      again = read(customerGrpc.subscribe({ ...key, fromPosition: BigInt(k + 1) }));
    } finally {
      talking = false;
      await agentTalks;
    }
    await agentAGrpc.endChat({ chatId: chat.chatId });
    expect(await again.ended).toBeUndefined();
    const polled = await customerGrpc.refresh({ ...key, fromPosition: 1n });
    const last = Number(polled.nextPosition) - 1;
    expect(last).toBeGreaterThanOrEqual(k + 10);
    // Nothing missed at the seam, nothing twice: the two streams together are the transcript.
    expect(positions(again.events)).toEqual(range(k + 1, last));
    expect(durable([...first, ...again.events])).toEqual(durable(polled.events));
    expect(again.events.at(-1)?.type).toBe(ChatEventType.CHAT_ENDED);
  });

  it.runIf(dialect === "mysql")("12 agents racing AcceptChat on 10 waiting chats get 10 distinct chats; 2 get NOT_FOUND", async () => {
    const waiting = new Set<string>();
    for (let i = 0; i < 10; i++) waiting.add((await request({ service: "race", nickname: `racer ${i}` })).chatId);
    // Two keys and both protocols: distinct chats whatever the caller.
    const agents = [agentA, agentAGrpc, agentB];
    const outcomes = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => agents[i % agents.length].acceptChat({ endpoint: "race", nickname: `agent ${i}`, waitSeconds: 0 })));
    const won = outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value.chatId] : []));
    const lost = outcomes.flatMap((o) => (o.status === "rejected" ? [ConnectError.from(o.reason).code] : []));
    expect(won).toHaveLength(10);
    expect(new Set(won)).toEqual(waiting);
    expect(lost).toEqual([Code.NotFound, Code.NotFound]);
    // Stored: each chat has exactly one agent, and nothing is left waiting.
    const knex = t.server.app.db.knex;
    const agentRows = await knex("chat_participants").whereIn("chat_id", [...waiting]).andWhere("kind", "agent").select<{ chat_id: string }[]>("chat_id");
    expect(agentRows.map((r) => r.chat_id).sort()).toEqual([...waiting].sort());
    expect(await knex("chats").where({ endpoint: "race", state: "waiting" }).select("id")).toEqual([]);
  });

  it("a long-poll Refresh returns with the agent's message as soon as it is sent", async () => {
    const { chat } = await open();
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const listeners = t.server.app.bus.listenerCount();
    const started = Date.now();
    // The server's clock is manual: the 10 s wait cannot lapse, so only the event can end the poll.
    const poll = customerConnect.refresh({ ...key, fromPosition: 3n, waitSeconds: 10 });
    await waitFor("the long-poll to wait", () => t.server.app.bus.listenerCount() > listeners);
    await agentAGrpc.sendMessage({ chatId: chat.chatId, text: "are you there?" });
    const r = await poll;
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(durable(r.events)).toEqual([`3:MESSAGE:AGENT:${r.events[0]?.from?.participantId}:are you there?`]);
    expect(r.nextPosition).toBe(4n);
    expect(r.chatEnded).toBe(false);
    await waitFor("the long-poll's listener to go", () => t.server.app.bus.listenerCount() === listeners);
    await agentA.endChat({ chatId: chat.chatId });
  });

  it("a wrong secure key and an unknown chat are refused alike; an agent who never joined is refused", async () => {
    const { chat } = await open();
    const wrong = await errorOf(customerGrpc.sendMessage({ chatId: chat.chatId, secureKey: "not-the-key", text: "hi" }));
    const unknown = await errorOf(customerGrpc.sendMessage({ chatId: UNKNOWN_CHAT, secureKey: chat.secureKey, text: "hi" }));
    expect(wrong.code).toBe(Code.PermissionDenied);
    expect(unknown.code).toBe(Code.PermissionDenied);
    expect(unknown.rawMessage).toBe(wrong.rawMessage);
    const bad = { chatId: chat.chatId, secureKey: "not-the-key" };
    for (const call of [
      () => customerConnect.refresh({ ...bad, fromPosition: 0n }),
      () => customerConnect.sendTyping({ ...bad, typing: true }),
      () => customerConnect.disconnect(bad),
      () => streamError(customerConnect.subscribe({ ...bad, fromPosition: 0n })),
    ]) {
      const e = await errorOf(call());
      expect(e.code).toBe(Code.PermissionDenied);
      expect(e.rawMessage).toBe(wrong.rawMessage);
    }

    // Agent B never joined this chat: refused in every call; the admin may look in as supervisor.
    const id = { chatId: chat.chatId };
    for (const call of [
      () => agentB.sendMessage({ ...id, text: "hi" }),
      () => agentB.sendTyping({ ...id, typing: true }),
      () => agentB.refresh({ ...id, fromPosition: 0n }),
      () => agentB.leaveChat(id),
      () => agentB.endChat(id),
      () => streamError(agentB.subscribe({ ...id, fromPosition: 0n })),
    ]) {
      expect((await errorOf(call())).code).toBe(Code.PermissionDenied);
    }
    expect(positions((await admin.refresh({ ...id, fromPosition: 0n })).events)).toEqual([1, 2]);
    // A customer without a key cannot reach the agent's side at all.
    expect((await errorOf(createClient(AgentService, t.grpc).refresh({ ...id, fromPosition: 0n }))).code).toBe(Code.Unauthenticated);
    // Nothing the refused calls tried was stored.
    expect(positions((await customerGrpc.refresh({ chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 0n })).events)).toEqual([1, 2]);
    await agentA.endChat(id);
  });

  it("after the end every call is FAILED_PRECONDITION, except Refresh and Subscribe, which still read", async () => {
    const { chat } = await open();
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const id = { chatId: chat.chatId };
    await customerGrpc.sendMessage({ ...key, text: "thanks" });
    await agentA.endChat(id);
    for (const [name, call] of [
      ["customer SendMessage", () => customerGrpc.sendMessage({ ...key, text: "late" })],
      ["customer SendTyping", () => customerGrpc.sendTyping({ ...key, typing: true })],
      ["customer Disconnect", () => customerGrpc.disconnect(key)],
      ["agent SendMessage", () => agentA.sendMessage({ ...id, text: "late" })],
      ["agent SendTyping", () => agentA.sendTyping({ ...id, typing: true })],
      ["agent LeaveChat", () => agentA.leaveChat(id)],
      ["agent EndChat", () => agentA.endChat(id)],
    ] as const) {
      expect((await errorOf(call())).code, name).toBe(Code.FailedPrecondition);
    }
    const expected = [1, 2, 3, 4];
    const polled = await customerConnect.refresh({ ...key, fromPosition: 0n, waitSeconds: 10 });
    expect(positions(polled.events)).toEqual(expected);
    expect(polled.chatEnded).toBe(true);
    expect(polled.events.at(-1)?.type).toBe(ChatEventType.CHAT_ENDED);
    const replay = read(customerGrpc.subscribe({ ...key, fromPosition: 2n }));
    expect(await replay.ended).toBeUndefined();
    expect(positions(replay.events)).toEqual([2, 3, 4]);
    const agentReplay = read(agentA.subscribe({ ...id, fromPosition: 0n }));
    expect(await agentReplay.ended).toBeUndefined();
    expect(durable(agentReplay.events)).toEqual(durable(polled.events));
    // A long-poll past the end answers at once rather than waiting for an event that cannot come.
    const past = await agentAGrpc.refresh({ ...id, fromPosition: 5n, waitSeconds: 10 });
    expect(past.events).toEqual([]);
    expect(past.chatEnded).toBe(true);
  });

  it("empty and oversized messages and nameless requests are INVALID_ARGUMENT; the limit is in LimitExceeded", async () => {
    const { chat } = await open();
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    expect((await errorOf(customerGrpc.sendMessage({ ...key, text: "" }))).code).toBe(Code.InvalidArgument);
    expect((await errorOf(agentA.sendMessage({ chatId: chat.chatId, text: "" }))).code).toBe(Code.InvalidArgument);
    // 22 × "€" is 22 characters but 66 bytes: the limit counts bytes.
    for (const call of [() => customerConnect.sendMessage({ ...key, text: "€".repeat(22) }), () => agentAGrpc.sendMessage({ chatId: chat.chatId, text: "x".repeat(MAX_MESSAGE + 1) })]) {
      const e = await errorOf(call());
      expect(e.code).toBe(Code.InvalidArgument);
      const [detail] = e.findDetails(LimitExceededSchema);
      expect(detail?.limit).toBe("chat.max_message_length");
      expect(detail?.max).toBe(BigInt(MAX_MESSAGE));
      expect(detail?.actual).toBeGreaterThan(BigInt(MAX_MESSAGE));
    }
    expect(await customerGrpc.sendMessage({ ...key, text: "x".repeat(MAX_MESSAGE) })).toMatchObject({ position: 3n });
    expect(positions((await customerGrpc.refresh({ ...key, fromPosition: 0n })).events)).toEqual([1, 2, 3]);
    await agentA.endChat({ chatId: chat.chatId });

    for (const names of [{ nickname: "" }, { nickname: "", firstName: "Ann" }, { nickname: "", lastName: "Lee" }]) {
      expect((await errorOf(request({ service: "lobby", ...names }))).code).toBe(Code.InvalidArgument);
    }
    const named = await request({ service: "lobby", nickname: "", firstName: "Ann", lastName: "Lee" });
    expect(named.events[0]?.from?.nickname).toBe("Ann Lee");
  });

  it("a retried RequestChat with the same request_id returns the same chat and secure key", async () => {
    const requestId = `retry-${dialect}-${Date.now()}`;
    const first = await request({ service: "lobby", requestId });
    // The same request over another protocol: a retry (a request that differs is another caller's).
    const retry = await customerConnect.requestChat({ service: "lobby", nickname: "Ann", subject: "billing", userData: { tier: "gold" }, requestId });
    expect(retry.chatId).toBe(first.chatId);
    expect(retry.secureKey).toBe(first.secureKey);
    expect(retry.participantId).toBe(first.participantId);
    const other = await request({ service: "lobby", requestId: `${requestId}-2` });
    expect(other.chatId).not.toBe(first.chatId);
    // One chat and one session stored for the retried id.
    expect(Number((await t.server.app.db.knex("sessions").where("id", first.sessionId).count<{ n: number | string }[]>({ n: "*" }))[0]?.n)).toBe(1);
    expect(Number((await t.server.app.db.knex("chats").where("session_id", first.sessionId).count<{ n: number | string }[]>({ n: "*" }))[0]?.n)).toBe(1);
  });

  it.each(["grpc", "connect"] as const)("a stream or long-poll cancelled by the client (%s) leaves no listener or timer behind", async (kind) => {
    const customer = kind === "grpc" ? customerGrpc : customerConnect;
    const agent = kind === "grpc" ? agentAGrpc : agentA;
    const { chat } = await open();
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const bus = t.server.app.bus;
    const listeners = bus.listenerCount();
    const timers = clock.pendingTimers;

    const customerCut = new AbortController();
    const agentCut = new AbortController();
    const customerStream = read(customer.subscribe({ ...key, fromPosition: 1n }, { signal: customerCut.signal }));
    const agentStream = read(agent.subscribe({ chatId: chat.chatId, fromPosition: 1n }, { signal: agentCut.signal }));
    await customerStream.until("the customer's replay", atPosition(2));
    await agentStream.until("the agent's replay", atPosition(2));
    // The two live streams hold a bus listener each: the measurement can see them.
    expect(bus.listenerCount()).toBeGreaterThanOrEqual(listeners + 2);
    // One stream is cut while idle, the other right after a message it has been sent.
    customerCut.abort();
    expect((await customerStream.ended)?.code).toBe(Code.Canceled);
    await agent.sendMessage({ chatId: chat.chatId, text: "one more" });
    await agentStream.until("the message", atPosition(3));
    agentCut.abort();
    expect((await agentStream.ended)?.code).toBe(Code.Canceled);

    const pollCut = new AbortController();
    const poll = errorOf(customer.refresh({ ...key, fromPosition: 4n, waitSeconds: 30 }, { signal: pollCut.signal }));
    await waitFor("the long-poll to wait", () => bus.listenerCount() > listeners);
    pollCut.abort();
    expect((await poll).code).toBe(Code.Canceled);

    await waitFor("the listeners to go", () => bus.listenerCount() === listeners, 5_000);
    await waitFor("the timers to go", () => clock.pendingTimers === timers, 5_000);
    await agent.endChat({ chatId: chat.chatId });
  });
});
