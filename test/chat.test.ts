import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import type { Actor, ChatStart } from "../src/domain/chat/index.js";
import { createApp, type App } from "../src/server.js";
import { createLocalBus } from "../src/bus.js";
import { createTyping } from "../src/domain/chat/typing.js";
import { chatTopic } from "../src/domain/chat/topics.js";
import { createChatStore } from "../src/store/chat-store.js";
import type { ChatEventRecord, ParticipantRef } from "../src/domain/chat/vocabulary.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { waitFor } from "./helpers/calls.js";
import { failure } from "./helpers/failure.js";

const config = parseConfig({
  chat: { max_message_length: 64 },
  services: { support: { type: "builtin", service: "request-chat", endpoint: "support", ttl: 600 } },
});


/** take reads n events from a stream, or fewer if it ends. */
async function take(stream: AsyncGenerator<ChatEventRecord>, n: number): Promise<ChatEventRecord[]> {
  const out: ChatEventRecord[] = [];
  while (out.length < n) {
    const r = await stream.next();
    if (r.done === true) break;
    out.push(r.value);
  }
  return out;
}

const durable = (events: ChatEventRecord[]) => events.filter((e) => e.position > 0).map((e) => `${e.position}:${e.kind}:${e.from.kind}:${e.text}`);

describe.each(DIALECTS)("chat on %s", (dialect) => {
  let db: TestDatabase;
  let clock: ManualClock;
  let app: App;
  const never = new AbortController().signal;

  const start = (o: Partial<Parameters<App["chats"]["requestChat"]>[0]> = {}) =>
    app.chats.requestChat({
      service: "support",
      nickname: "Ann",
      firstName: "",
      lastName: "",
      subject: "billing",
      emailAddress: "",
      userData: { tier: "gold" },
      appData: new Map([["order", { kind: "text", text: "A-17" }]]),
      request: { scope: "t", requestId: "", digest: "" },
      ...o,
    });
  const accept = (identity = "agent-1", wait = 0, signal = never) => app.chats.accept("support", "Bob", identity, wait, signal);
  const customer = (s: ChatStart): Promise<Actor> => app.chats.customer(s.chatId, s.secureKey);
  /** drain accepts every chat still waiting, so the next accept takes the chat a test made. */
  const drain = async () => {
    for (;;) {
      const e = await accept("drainer").then(
        () => undefined,
        (err: unknown) => err,
      );
      if (e !== undefined) return;
    }
  };

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    clock = new ManualClock(Date.now());
    app = createApp({ config, db, clock, log: pino({ level: "silent" }) });
  });
  afterAll(() => db.close());

  it("a whole conversation: request, accept, messages both ways, disconnect; streams and polls agree", async () => {
    await drain();
    const s = await start();
    expect(s.events.map((e) => e.kind)).toEqual(["participant_joined"]);
    expect(s.nextPosition).toBe(2);
    const me = await customer(s);
    const customerStream = app.chats.subscribe(me, 0, never);
    const accepted = await accept();
    expect(accepted.chat.id).toBe(s.chatId);
    expect(accepted.appData.get("order")).toEqual({ kind: "text", text: "A-17" });
    expect(accepted.chat.userData).toEqual({ tier: "gold" });
    expect(accepted.events.map((e) => e.kind)).toEqual(["participant_joined", "participant_joined"]);
    const agent = await app.chats.agent(s.chatId, "agent-1", false);
    const agentStream = app.chats.subscribe(agent, accepted.nextPosition, never);
    await app.chats.send(me, { text: "hello", messageType: "", clientMessageId: "m1" });
    await app.chats.send(agent, { text: "hi Ann", messageType: "greeting", clientMessageId: "" });
    await app.chats.disconnect(me);
    const seenByCustomer = await take(customerStream, 100);
    const seenByAgent = await take(agentStream, 100);
    const polled = await app.chats.refresh(me, 0, 0, never);
    expect(durable(seenByCustomer)).toEqual(durable(polled.events));
    expect(durable(seenByAgent)).toEqual(durable(polled.events.slice(2)));
    expect(durable(polled.events)).toEqual([
      "1:participant_joined:client:",
      "2:participant_joined:agent:",
      "3:message:client:hello",
      "4:message:agent:hi Ann",
      "5:participant_left:client:",
      "6:chat_ended:client:",
    ]);
    expect(polled.chatEnded).toBe(true);
    expect(polled.nextPosition).toBe(7);
    expect(polled.events[2]?.clientMessageId).toBe("m1");
    expect(app.bus.listenerCount()).toBe(0);
  });

  it("20 concurrent senders produce a gapless, ordered transcript", async () => {
    await drain();
    const s = await start();
    await accept();
    const me = await customer(s);
    const agent = await app.chats.agent(s.chatId, "agent-1", false);
    await Promise.all(Array.from({ length: 20 }, (_, i) => app.chats.send(i % 2 === 0 ? me : agent, { text: `m${i}`, messageType: "", clientMessageId: `c${i}` })));
    const { events } = await app.chats.refresh(me, 1, 0, never);
    expect(events.map((e) => e.position)).toEqual(Array.from({ length: 22 }, (_, i) => i + 1));
    expect(new Set(events.filter((e) => e.kind === "message").map((e) => e.text)).size).toBe(20);
  });

  it("a resent client_message_id is stored once and answers the first position", async () => {
    const s = await start();
    const me = await customer(s);
    const a = await app.chats.send(me, { text: "once", messageType: "", clientMessageId: "same" });
    const b = await app.chats.send(me, { text: "once", messageType: "", clientMessageId: "same" });
    expect(b).toBe(a);
    expect((await app.chats.refresh(me, 0, 0, never)).events.filter((e) => e.kind === "message")).toHaveLength(1);
  });

  it("resume: re-subscribing from k+1 yields exactly what was missed", async () => {
    await drain();
    const s = await start();
    await accept();
    const me = await customer(s);
    const agent = await app.chats.agent(s.chatId, "agent-1", false);
    const controller = new AbortController();
    const first = app.chats.subscribe(me, 1, controller.signal);
    const before = await take(first, 2);
    await first.return(undefined);
    controller.abort();
    for (let i = 0; i < 5; i++) await app.chats.send(agent, { text: `missed ${i}`, messageType: "", clientMessageId: "" });
    const k = before[before.length - 1]!.position;
    const again = app.chats.subscribe(me, k + 1, never);
    const rest = await take(again, 5);
    expect(rest.map((e) => e.position)).toEqual([k + 1, k + 2, k + 3, k + 4, k + 5]);
    await app.chats.end(agent);
    expect((await take(again, 10)).map((e) => e.kind)).toEqual(["chat_ended"]);
    expect(app.bus.listenerCount()).toBe(0);
  });

  it("a stream from past the end of an ended chat ends at once, for the customer and for an agent", async () => {
    await drain();
    const s = await start();
    await accept();
    const me = await customer(s);
    await app.chats.disconnect(me);
    const { nextPosition } = await app.chats.refresh(me, 1, 0, never);
    // Looked up again after the end, as a reloaded page's call is.
    expect(await take(app.chats.subscribe(await customer(s), nextPosition, never), 10)).toEqual([]);
    expect(await take(app.chats.subscribe(await app.chats.agent(s.chatId, "agent-1", false), nextPosition + 5, never), 10)).toEqual([]);
    // From before the end: what is left, CHAT_ENDED last.
    expect((await take(app.chats.subscribe(await customer(s), nextPosition - 1, never), 10)).map((e) => e.kind)).toEqual(["chat_ended"]);
    expect(app.bus.listenerCount()).toBe(0);
  });

  it("AcceptChat takes the oldest waiting chat, waits for one, or says none came", async () => {
    await drain();
    const older = await start();
    clock.advance(1);
    await start();
    expect((await accept("agent-2")).chat.id).toBe(older.chatId);
    await accept("agent-3");
    const waiting = accept("agent-4", 30);
    const s = await start();
    expect((await waiting).chat.id).toBe(s.chatId);
    const none = accept("agent-5", 5);
    await new Promise((r) => setTimeout(r, 20));
    clock.advance(5_000);
    expect((await failure(none)).kind).toBe("not_found");
    expect(app.bus.listenerCount()).toBe(0);
  });

  it("an agent leaving puts the chat back in its queue; another agent continues the transcript", async () => {
    await drain();
    const s = await start();
    const first = await accept("agent-6");
    expect(first.chat.id).toBe(s.chatId);
    await app.chats.leave(await app.chats.agent(s.chatId, "agent-6", false));
    const second = await accept("agent-7");
    expect(second.chat.id).toBe(s.chatId);
    expect(second.events.map((e) => e.kind)).toEqual(["participant_joined", "participant_joined", "participant_left", "participant_joined"]);
    const left = await app.chats.agent(s.chatId, "agent-6", false);
    expect((await failure(app.chats.send(left, { text: "still here?", messageType: "", clientMessageId: "" }))).kind).toBe("failed_precondition");
    expect((await failure(app.chats.agent(s.chatId, "stranger", false))).kind).toBe("permission_denied");
    const admin = await app.chats.agent(s.chatId, "ops", true);
    expect(admin.participant.kind).toBe("supervisor");
  });

  it("a long-poll returns as soon as an event arrives, and after its wait when none does", async () => {
    await drain();
    const s = await start();
    const me = await customer(s);
    const poll = app.chats.refresh(me, 2, 30, never);
    await new Promise((r) => setTimeout(r, 20));
    const agent = await accept();
    const r = await poll;
    expect(r.events.map((e) => e.kind)).toEqual(["participant_joined"]);
    expect(r.events[0]?.from.participantId).toBe(agent.participantId);
    const quiet = app.chats.refresh(me, r.nextPosition, 10, never);
    await new Promise((res) => setTimeout(res, 20));
    clock.advance(10_000);
    const empty = await quiet;
    expect(empty.events).toEqual([]);
    expect(empty.nextPosition).toBe(r.nextPosition);
    expect(app.bus.listenerCount()).toBe(0);
  });

  it("typing is live only, coalesced within 2 s and stopped by the server after 10 s of quiet", async () => {
    await drain();
    const s = await start();
    const accepted = await accept();
    const me = await customer(s);
    const agent = await app.chats.agent(s.chatId, "agent-1", false);
    const timersBefore = clock.pendingTimers;
    const agentStream = app.chats.subscribe(agent, accepted.nextPosition, never);
    const seen: ChatEventRecord[] = [];
    const reading = (async () => {
      for await (const e of agentStream) {
        seen.push(e);
        if (e.kind === "chat_ended") return;
      }
    })();
    await new Promise((r) => setTimeout(r, 20));
    await app.chats.typing(me, true, "");
    clock.advance(1_000);
    await app.chats.typing(me, true, "");
    expect((await app.chats.refresh(agent, 100, 0, never)).typing.map((p) => p.kind)).toEqual(["client"]);
    expect((await app.chats.refresh(me, 100, 0, never)).typing).toEqual([]);
    clock.advance(1_500);
    await app.chats.typing(me, true, "");
    clock.advance(10_000);
    expect((await app.chats.refresh(agent, 100, 0, never)).typing).toEqual([]);
    await app.chats.typing(me, true, "");
    await app.chats.send(me, { text: "done typing", messageType: "", clientMessageId: "" });
    await app.chats.end(agent);
    await reading;
    expect(seen.map((e) => e.kind)).toEqual(["typing_started", "typing_started", "typing_stopped", "typing_started", "message", "typing_stopped", "chat_ended"]);
    expect(seen.filter((e) => e.kind.startsWith("typing")).every((e) => e.position === 0)).toBe(true);
    expect(clock.pendingTimers).toBe(timersBefore);
    expect(app.bus.listenerCount()).toBe(0);
  });

  it("a quiet timer that fires late still stops the typing it armed, and never a newer start's", async () => {
    const s = await start();
    // Timers fire at their time, but once `lag` is set the clock reads that much later when they
    // run, as a busy event loop makes them.
    let lag = 0;
    const late = { now: () => clock.now() + lag, setTimer: (fn: () => void, ms: number) => clock.setTimer(fn, ms) };
    const bus = createLocalBus();
    const store = createChatStore(db);
    const typing = createTyping(store, late, bus, () => ({ coalesceMs: 2_000, timeoutMs: 10_000 }));
    const heard: string[] = [];
    const off = bus.subscribe(chatTopic(s.chatId), (m) => heard.push(m.event.kind));
    const ann: ParticipantRef = { participantId: "p-ann", nickname: "Ann", kind: "client" };
    const bob: ParticipantRef = { participantId: "p-bob", nickname: "Bob", kind: "agent" };
    try {
      await typing.start(s.chatId, ann, "");
      lag = 5;
      clock.advance(10_000);
      await waitFor("the lapsed typing stopped", async () => (await typing.who(s.chatId)).length === 0 && heard.includes("typing_stopped"));
      expect(heard).toEqual(["typing_started", "typing_stopped"]);
      // Bob keeps typing through another node, which extends his row: this node's timer leaves it.
      await typing.start(s.chatId, bob, "");
      await store.setTyping(s.chatId, bob, late.now(), late.now() + 20_000);
      clock.advance(10_000);
      await new Promise((r) => setTimeout(r, 50));
      expect((await typing.who(s.chatId)).map((p) => p.participantId)).toEqual(["p-bob"]);
      expect(heard).toEqual(["typing_started", "typing_stopped", "typing_started"]);
    } finally {
      off();
      await typing.stopAll(s.chatId);
    }
  });

  it("a wrong secure key, an unknown chat and calls after the end are refused", async () => {
    const s = await start();
    expect((await failure(app.chats.customer(s.chatId, "not-the-key"))).kind).toBe("permission_denied");
    expect((await failure(app.chats.customer(s.chatId, ""))).kind).toBe("permission_denied");
    expect((await failure(app.chats.customer("00000000-0000-4000-8000-000000000000", s.secureKey))).kind).toBe("permission_denied");
    const me = await customer(s);
    await app.chats.disconnect(me);
    const after = await customer(s);
    expect((await failure(app.chats.send(after, { text: "late", messageType: "", clientMessageId: "" }))).kind).toBe("failed_precondition");
    expect((await failure(app.chats.disconnect(after))).kind).toBe("failed_precondition");
    const r = await app.chats.refresh(after, 0, 0, never);
    expect(r.chatEnded).toBe(true);
    clock.advance(600_000);
    expect((await failure(app.chats.customer(s.chatId, s.secureKey))).kind).toBe("permission_denied");
  });

  it("empty, blank and oversized messages are refused and nothing is stored", async () => {
    const s = await start();
    const me = await customer(s);
    expect((await failure(app.chats.send(me, { text: "   ", messageType: "", clientMessageId: "" }))).kind).toBe("invalid_argument");
    const big = await failure(app.chats.send(me, { text: "x".repeat(65), messageType: "", clientMessageId: "" }));
    expect(big.detail).toMatchObject({ limit: "chat.max_message_length", max: 64, actual: 65 });
    expect((await app.chats.refresh(me, 0, 0, never)).events).toHaveLength(1);
  });

  it("first and last name stand for a nickname; a retried request_id returns the same chat", async () => {
    const request = { scope: "RequestChat:t", requestId: `chat-${dialect}`, digest: "d" };
    const a = await start({ nickname: "", firstName: "Ann", lastName: "Lee", request });
    const b = await start({ nickname: "", firstName: "Ann", lastName: "Lee", request });
    expect(b.chatId).toBe(a.chatId);
    expect(b.secureKey).toBe(a.secureKey);
    expect(a.events[0]?.from.nickname).toBe("Ann Lee");
    expect((await failure(start({ nickname: "", firstName: "Ann", lastName: "" }))).kind).toBe("invalid_argument");
  });
});
