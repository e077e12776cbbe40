// Polls answered from the node's memory (src/domain/chat/poll.ts): no database work when nothing is
// new, and never an event hidden longer than one watch interval, nor a wrong key accepted. "Another
// node" is a second set of chat rules on its own connection pool and its own in-process bus: what it
// announces never reaches node A, as when the bus link between two nodes is cut.
import type { Knex } from "knex";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLocalBus } from "../src/bus.js";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import type { ChatStart, Chats } from "../src/domain/chat/index.js";
import { eventDraft } from "../src/domain/chat/rules.js";
import { createApp, createChatsOn, type App } from "../src/server.js";
import { createChatStore } from "../src/store/chat-store.js";
import { transactionsOf } from "../src/store/unit-of-work.js";
import { openDatabase, type Database } from "../src/store/database.js";
import { createStores } from "../src/store/stores.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { failure } from "./helpers/failure.js";

const config = parseConfig({
  // Typing coalesced longer than a watch interval, so a notice can be coalesced across a look.
  chat: { idle_timeout_seconds: 45, typing_timeout_seconds: 10, typing_coalesce_seconds: 8 },
  services: { support: { type: "builtin", service: "request-chat", endpoint: "support", ttl: 3600 } },
});
/** WATCH_MS is the node-wide watch's interval (CATCH_UP_MS in src/domain/chat/core.ts). */
const WATCH_MS = 5_000;
/** ACTIVITY_MS is how often a polling customer's activity is written: a quarter of the idle timeout. */
const ACTIVITY_MS = 45_000 / 4;

interface QueryData {
  sql: string;
  __knexQueryUid: string;
}

describe.each(DIALECTS)("polls answered from memory on %s", (dialect) => {
  let db: TestDatabase;
  let dbB: Database;
  let clock: ManualClock;
  let a: App;
  let b: App;
  const never = new AbortController().signal;
  /** statements counts the statements node A sends to its database. */
  let statements = 0;

  const start = () =>
    a.chats.requestChat({
      service: "support",
      nickname: "Ann",
      firstName: "",
      lastName: "",
      subject: "billing",
      emailAddress: "",
      userData: {},
      appData: new Map(),
      request: { scope: "t", requestId: "", digest: "" },
    });
  /** acceptOnB has an agent on node B take the chat (every test leaves none waiting). */
  const acceptOnB = async (s: ChatStart) => {
    const accepted = await b.chats.accept("support", "Bob", "agent-b", 0, never);
    expect(accepted.chat.id).toBe(s.chatId);
    return b.chats.agent(s.chatId, "agent-b", false);
  };
  const poll = (s: ChatStart, from: number, chats: Chats = a.chats) => chats.customerRefresh(s.chatId, s.secureKey, from, 0, never);
  /** counted runs fn and returns its result with the number of statements node A sent meanwhile. */
  const counted = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
    const before = statements;
    const result = await fn();
    return [result, statements - before];
  };
  const kinds = (r: { events: { kind: string; from: { kind: string } }[] }) => r.events.map((e) => `${e.kind}:${e.from.kind}`);

  /**
   * look moves the clock one watch interval and resolves once the watch on `knex` has looked at the
   * store: its last statement (the poll views' typing rows, read for many chats at once) has been
   * answered. No wall-clock wait: the look is recognised by its statement.
   */
  async function look(knex: Knex = db.knex, on: ManualClock = clock): Promise<void> {
    const done = new Promise<void>((resolve) => {
      const mine = new Set<string>();
      const onQuery = (q: QueryData) => {
        if (q.sql.includes("chat_typing") && / in \(/i.test(q.sql) && /^select/i.test(q.sql)) mine.add(q.__knexQueryUid);
      };
      const onResponse = (_r: unknown, q: QueryData) => {
        if (!mine.has(q.__knexQueryUid)) return;
        knex.off("query", onQuery);
        knex.off("query-response", onResponse);
        resolve();
      };
      knex.on("query", onQuery);
      knex.on("query-response", onResponse);
    });
    on.advance(WATCH_MS);
    await done;
    // What the look hands the views runs right after its statement's answer.
    await new Promise((r) => setTimeout(r, 0));
  }

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    dbB = await openDatabase(db.url, { migrate: false });
    clock = new ManualClock(Date.now());
    const log = pino({ level: "silent" });
    a = createApp({ config, db, clock, log });
    b = createApp({ config, db: dbB, clock, log });
    db.knex.on("query", () => statements++);
  });
  afterAll(async () => {
    await dbB?.close();
    await db?.close();
  });

  it("a poll with nothing new costs no statement; the customer's activity is still written every idle/4", async () => {
    const s = await start();
    const first = await poll(s, 1);
    expect(kinds(first)).toEqual(["participant_joined:client"]);
    expect(a.chats.pollViews).toBeGreaterThanOrEqual(1);
    for (let i = 0; i < 5; i++) {
      const [r, n] = await counted(() => poll(s, 2));
      expect(n).toBe(0);
      expect(r).toEqual({ events: [], nextPosition: 2, chatEnded: false, typing: [] });
    }
    // A quarter of the idle timeout later the poll writes the activity, one statement, then none again.
    while (clock.now() - s.events[0]!.time < ACTIVITY_MS) await look();
    const [, writes] = await counted(() => poll(s, 2));
    expect(writes).toBe(1);
    const seen = (await db.knex("chats").where("id", s.chatId).first("customer_seen_at")) as { customer_seen_at: number | string };
    expect(Number(seen.customer_seen_at)).toBe(clock.now());
    expect((await counted(() => poll(s, 2)))[1]).toBe(0);
    await a.chats.disconnect(await a.chats.customer(s.chatId, s.secureKey));
  });

  it("an event announced on this node is polled at once, read from the store by position", async () => {
    const s = await start();
    await poll(s, 1);
    const accepted = await a.chats.accept("support", "Carl", "agent-a", 0, never);
    expect(accepted.chat.id).toBe(s.chatId);
    const agent = await a.chats.agent(s.chatId, "agent-a", false);
    await a.chats.send(agent, { text: "hello from A", messageType: "", clientMessageId: "" });
    const r = await poll(s, 2);
    expect(r.events.map((e) => `${e.position}:${e.kind}:${e.text}`)).toEqual(["2:participant_joined:", "3:message:hello from A"]);
    expect(r.nextPosition).toBe(4);
    expect((await counted(() => poll(s, 4)))[1]).toBe(0);
    await a.chats.end(agent);
  });

  it("an event committed on another node, its announcement lost, is polled within one watch interval", async () => {
    const s = await start();
    await poll(s, 1);
    const agent = await acceptOnB(s);
    await b.chats.send(agent, { text: "hello from B", messageType: "", clientMessageId: "" });
    // Node A heard nothing: its view still says nothing new, and says it from memory.
    const [before, n] = await counted(() => poll(s, 2));
    expect(n).toBe(0);
    expect(before.events).toEqual([]);
    await look();
    const after = await poll(s, 2);
    expect(after.events.map((e) => `${e.position}:${e.kind}:${e.text}`)).toEqual(["2:participant_joined:", "3:message:hello from B"]);

    // Written to the store with no announcement at all: the same.
    const store = createChatStore(db);
    await transactionsOf(db).run(async (uow) => {
      const chat = (await store.lockChat(uow, s.chatId, clock.now()))!;
      await store.append(uow, chat, eventDraft(agent.participant, "message", clock.now(), { text: "never announced" }));
    });
    expect((await poll(s, 4)).events).toEqual([]);
    await look();
    expect((await poll(s, 4)).events.map((e) => `${e.position}:${e.text}`)).toEqual(["4:never announced"]);
    await b.chats.end(agent);
  });

  it("a wrong secure key is refused from memory when the chat is viewed, and no view is made for one", async () => {
    const s = await start();
    const other = await start();
    await poll(s, 1);
    for (const key of ["not-the-key", "", other.secureKey, s.secureKey.slice(0, -1)]) {
      const [e, n] = await counted(() => failure(a.chats.customerRefresh(s.chatId, key, 2, 0, never)));
      expect(e.kind).toBe("permission_denied");
      expect(n).toBe(0);
    }
    // A chat with no view: refused by the store, and still no view of it.
    const views = a.chats.pollViews;
    expect((await failure(a.chats.customerRefresh(other.chatId, s.secureKey, 1, 0, never))).kind).toBe("permission_denied");
    expect(a.chats.pollViews).toBe(views);
    expect((await poll(s, 2)).events).toEqual([]);
    for (const c of [s, other]) await a.chats.disconnect(await a.chats.customer(c.chatId, c.secureKey));
  });

  it("a chat ended on another node reports ended within one watch interval, even to a poll past its end", async () => {
    const s = await start();
    await poll(s, 1);
    const agent = await acceptOnB(s);
    const skipping = await start();
    await poll(skipping, 1);
    const agent2 = await acceptOnB(skipping);
    await b.chats.end(agent);
    await b.chats.end(agent2);
    expect((await poll(s, 2)).chatEnded).toBe(false);
    await look();
    const ended = await poll(s, 2);
    expect(kinds(ended)).toEqual(["participant_joined:agent", "chat_ended:agent"]);
    expect(ended.chatEnded).toBe(true);
    const [after, n] = await counted(() => poll(s, ended.nextPosition));
    expect(n).toBe(0);
    expect(after).toEqual({ events: [], nextPosition: ended.nextPosition, chatEnded: true, typing: [] });
    // A client that learned of the end elsewhere asks past it: the view itself knows the chat ended.
    const [past, m] = await counted(() => poll(skipping, 4));
    expect(m).toBe(0);
    expect(past.chatEnded).toBe(true);
  });

  it("a chat ended on this node reports ended at once", async () => {
    const s = await start();
    await poll(s, 1);
    await a.chats.disconnect(await a.chats.customer(s.chatId, s.secureKey));
    const r = await poll(s, 2);
    expect(kinds(r)).toEqual(["participant_left:client", "chat_ended:client"]);
    expect(r.chatEnded).toBe(true);
    expect((await poll(s, 4)).chatEnded).toBe(true);
  });

  it("typing on another node shows up within one watch interval, and its end too", async () => {
    const s = await start();
    await poll(s, 1);
    const agent = await acceptOnB(s);
    await look();
    const from = (await poll(s, 2)).nextPosition;
    expect((await counted(() => poll(s, from)))[1]).toBe(0);
    await b.chats.typing(agent, true, "");
    await look();
    expect((await poll(s, from)).typing.map((p) => p.participantId)).toEqual([agent.participant.participantId]);
    // Known from memory until the row's own deadline.
    const [still, n] = await counted(() => poll(s, from));
    expect(n).toBe(0);
    expect(still.typing.map((p) => p.participantId)).toEqual([agent.participant.participantId]);
    await b.chats.typing(agent, false, "");
    await look();
    expect((await poll(s, from)).typing).toEqual([]);
    await b.chats.end(agent);
  });

  it("typing on this node shows up at once; kept alive through another node without a notice, it lasts, then lapses", async () => {
    const s = await start();
    await poll(s, 1);
    const accepted = await a.chats.accept("support", "Carl", "agent-a", 0, never);
    expect(accepted.chat.id).toBe(s.chatId);
    const agent = await a.chats.agent(s.chatId, "agent-a", false);
    expect((await poll(s, 2)).typing).toEqual([]);
    await a.chats.typing(agent, true, "");
    expect((await poll(s, 3)).typing.map((p) => p.participantId)).toEqual([agent.participant.participantId]);
    // Typing again through node B within the coalescing window: no notice at all, but the row now
    // lasts 5 s longer than A read it. At A's old deadline A asks the store again.
    await look();
    const onB = await b.chats.agent(s.chatId, "agent-a", false);
    await b.chats.typing(onB, true, "");
    await look();
    expect((await poll(s, 3)).typing.map((p) => p.participantId)).toEqual([agent.participant.participantId]);
    await look();
    expect((await poll(s, 3)).typing).toEqual([]);
    await a.chats.end(agent);
  });

  it("the views are bounded: past the most kept the least recently polled goes, and none outlives its idle time", async () => {
    const dbC = await openDatabase(db.url, { migrate: false });
    const busC = createLocalBus();
    // A clock of its own: its watch's looks do not move node A's.
    const clockC = new ManualClock(clock.now());
    const c = createChatsOn(createStores(dbC), { clock: clockC, config: () => config, storage: a.storage, bus: busC, pollViews: { max: 3, idleMs: 3 * WATCH_MS } });
    try {
      const chats = [await start(), await start(), await start(), await start(), await start()];
      for (const s of chats) expect(kinds(await poll(s, 1, c))).toEqual(["participant_joined:client"]);
      expect(c.pollViews).toBe(3);
      expect(busC.listenerCount()).toBe(3);
      // The first chat's view went: its poll is answered from the store, correctly, and kept again.
      let queries = 0;
      const count = () => queries++;
      dbC.knex.on("query", count);
      expect(kinds(await poll(chats[0]!, 1, c))).toEqual(["participant_joined:client"]);
      expect(queries).toBeGreaterThan(0);
      dbC.knex.off("query", count);
      expect(c.pollViews).toBe(3);
      // Unpolled, every view goes at the watch's first look at its idle time, listeners with them.
      await look(dbC.knex, clockC);
      await look(dbC.knex, clockC);
      expect(c.pollViews).toBe(3);
      await look(dbC.knex, clockC);
      expect(c.pollViews).toBe(0);
      expect(busC.listenerCount()).toBe(0);
      for (const s of chats) await a.chats.disconnect(await a.chats.customer(s.chatId, s.secureKey));
    } finally {
      await dbC.close();
    }
  });

  it("a customer polling from memory is never disconnected as idle; one who stops is", async () => {
    const s = await start();
    await poll(s, 1);
    for (let i = 0; i < 24; i++) {
      await look();
      await poll(s, 2);
      await a.chats.sweepIdle();
    }
    expect((await poll(s, 2)).chatEnded).toBe(false);
    for (let i = 0; i < 10; i++) await look();
    await a.chats.sweepIdle();
    const r = await poll(s, 2);
    expect(r.chatEnded).toBe(true);
    expect(kinds(r)).toEqual(["participant_left:client", "chat_ended:system"]);
  });
});
