// The ChatStore contract (src/domain/chat/store.ts), operation by operation, on every dialect: each
// describe is one method, and asserts what was stored by reading it back. A new store (another
// dialect) is right when this suite passes on it unchanged.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChatStore } from "../../src/domain/chat/store.js";
import type { Chat, ChatEventRecord, ChatFile, EventDraft, Participant, ParticipantRef } from "../../src/domain/chat/vocabulary.js";
import { eventDraft } from "../../src/domain/chat/rules.js";
import { newId } from "../../src/domain/ids.js";
import type { Transactions, UnitOfWork } from "../../src/domain/unit-of-work.js";
import { createChatStore } from "../../src/store/chat-store.js";
import { transactionsOf } from "../../src/store/unit-of-work.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";

/** T is the time the tests run at; chats live an hour from it. */
const T = 1_700_000_000_000;
const HOUR = 3_600_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(DIALECTS)("ChatStore on %s", (dialect) => {
  let db: TestDatabase;
  let store: ChatStore;
  let tx: Transactions;

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    store = createChatStore(db);
    tx = transactionsOf(db);
  });
  afterAll(() => db.close());

  /** chatOf is a new waiting chat (on an endpoint of its own unless told) and its customer, not stored. */
  function chatOf(over: Partial<Chat> = {}): { chat: Chat; customer: Participant } {
    const id = newId();
    const chat: Chat = {
      id,
      sessionId: newId(),
      service: "support",
      endpoint: `e-${newId()}`,
      state: "waiting",
      subject: "billing",
      emailAddress: "ann@example.com",
      userData: { tier: "gold", "ключ": "значение" },
      secureKeyHash: "a".repeat(64),
      customerParticipantId: newId(),
      lastPosition: 0,
      createdAt: T,
      queuedAt: T,
      expiresAt: T + HOUR,
      ...over,
    };
    return { chat, customer: { id: chat.customerParticipantId, chatId: id, kind: "client", nickname: "Ann", identity: "", joinedAt: chat.createdAt, leftAt: undefined } };
  }

  /** made stores a chat (see chatOf). */
  async function made(over: Partial<Chat> = {}): Promise<{ chat: Chat; customer: Participant }> {
    const c = chatOf(over);
    await tx.run((uow) => store.createChat(uow, c.chat, c.customer));
    return c;
  }

  const agentOf = (chatId: string, over: Partial<Participant> = {}): Participant => ({
    id: newId(),
    chatId,
    kind: "agent",
    nickname: "Bob",
    identity: "agent-1",
    joinedAt: T + 1,
    leftAt: undefined,
    ...over,
  });

  const ref = (p: Participant): ParticipantRef => ({ participantId: p.id, nickname: p.nickname, kind: p.kind });

  /** appended appends drafts to a chat, in one unit of work with the chat locked. */
  async function appended(chatId: string, ...drafts: EventDraft[]): Promise<ChatEventRecord[]> {
    return appendedAt(T, chatId, ...drafts);
  }

  /** appendedAt appends as `appended` does, to a chat live at `now`. */
  async function appendedAt(now: number, chatId: string, ...drafts: EventDraft[]): Promise<ChatEventRecord[]> {
    return tx.run(async (uow) => {
      const chat = (await store.lockChat(uow, chatId, now))!;
      const out: ChatEventRecord[] = [];
      for (const d of drafts) out.push(await store.append(uow, chat, d));
      return out;
    });
  }

  const fileOf = (chatId: string, over: Partial<ChatFile> = {}): ChatFile => ({
    id: newId(),
    chatId,
    participantId: "p-1",
    dataId: newId(),
    filename: "a.png",
    contentType: "image/png",
    size: 100,
    createdAt: T,
    ...over,
  });

  describe("createChat", () => {
    it("stores the chat and its customer", async () => {
      const { chat, customer } = await made();
      expect(await store.readChat(chat.id, T)).toEqual(chat);
      expect(await store.participants(chat.id)).toEqual([customer]);
      // The customer counts as active from the start.
      expect(await tx.run((uow) => store.customerSeenAt(uow, chat.id))).toBe(T);
    });

    it("stores nothing when the unit of work rolls back", async () => {
      const { chat, customer } = chatOf();
      await expect(
        tx.run(async (uow) => {
          await store.createChat(uow, chat, customer);
          throw new Error("rolled back");
        }),
      ).rejects.toThrow("rolled back");
      expect(await store.readChat(chat.id, T)).toBeUndefined();
      expect(await store.participants(chat.id)).toEqual([]);
    });
  });

  describe("readChat", () => {
    it("reads a chat until it expires", async () => {
      const { chat } = await made({ expiresAt: T + 10 });
      expect(await store.readChat(chat.id, T + 9)).toEqual(chat);
      expect(await store.readChat(chat.id, T + 10)).toBeUndefined();
      expect(await store.readChat(newId(), T)).toBeUndefined();
    });
  });

  describe("lockChat", () => {
    it("reads a live chat in the unit of work, and nothing once it has expired", async () => {
      const { chat } = await made({ expiresAt: T + 10 });
      expect(await tx.run((uow) => store.lockChat(uow, chat.id, T))).toEqual(chat);
      expect(await tx.run((uow) => store.lockChat(uow, chat.id, T + 10))).toBeUndefined();
    });

    it("holds the chat: another unit of work locking it waits until the first has committed", async () => {
      const { chat } = await made();
      const order: string[] = [];
      let second: Promise<void> | undefined;
      await tx.run(async (uow) => {
        await store.lockChat(uow, chat.id, T);
        second = tx.run(async (uow2) => {
          await store.lockChat(uow2, chat.id, T);
          order.push("second locked");
        });
        // Time for the second to lock, were it not held.
        await sleep(150);
        order.push("first committing");
      });
      await second;
      expect(order).toEqual(["first committing", "second locked"]);
    });
  });

  describe("readChatWithCustomer", () => {
    it("reads a live chat with its customer, as they are now", async () => {
      const { chat, customer } = await made({ expiresAt: T + 10 });
      expect(await store.readChatWithCustomer(chat.id, T)).toEqual({ chat, customer });
      await tx.run((uow) => store.updateParticipant(uow, customer.id, { leftAt: T + 5, nickname: "Anna" }));
      expect((await store.readChatWithCustomer(chat.id, T))?.customer).toEqual({ ...customer, nickname: "Anna", leftAt: T + 5 });
      expect(await store.readChatWithCustomer(chat.id, T + 10)).toBeUndefined();
      expect(await store.readChatWithCustomer(newId(), T)).toBeUndefined();
    });
  });

  describe("updateChat", () => {
    it("changes what it is given and leaves the rest", async () => {
      const { chat } = await made();
      await tx.run((uow) => store.updateChat(uow, chat.id, { state: "active" }));
      expect(await store.readChat(chat.id, T)).toEqual({ ...chat, state: "active" });
      const change = { state: "waiting" as const, endpoint: "elsewhere", queuedAt: T + 7, expiresAt: T + 2 * HOUR, userData: { b: "2" } };
      await tx.run((uow) => store.updateChat(uow, chat.id, change));
      expect(await store.readChat(chat.id, T)).toEqual({ ...chat, ...change });
    });
  });

  describe("claimWaiting", () => {
    it("takes the oldest live chat waiting on the endpoint (by queue time, then id)", async () => {
      const endpoint = `e-${newId()}`;
      await made({ endpoint, state: "active", queuedAt: T - 100 });
      await made({ endpoint, queuedAt: T - 90, expiresAt: T });
      await made({ endpoint: `e-${newId()}`, queuedAt: T - 80 });
      const a = await made({ endpoint, queuedAt: T - 50 });
      const b = await made({ endpoint, queuedAt: T - 50 });
      await made({ endpoint, queuedAt: T - 10 });
      const first = [a, b].sort((x, y) => (x.chat.id < y.chat.id ? -1 : 1))[0]!;
      expect(await tx.run((uow) => store.claimWaiting(uow, endpoint, T))).toEqual(first.chat);
      expect(await tx.run((uow) => store.claimWaiting(uow, `e-${newId()}`, T))).toBeUndefined();
    });

    it("two agents claiming at once get different chats", async () => {
      const endpoint = `e-${newId()}`;
      const a = await made({ endpoint, queuedAt: T - 2 });
      const b = await made({ endpoint, queuedAt: T - 1 });
      const claim = () =>
        tx.run(async (uow) => {
          const chat = await store.claimWaiting(uow, endpoint, T);
          if (chat !== undefined) await store.updateChat(uow, chat.id, { state: "active" });
          // Held a while, so the other claim runs meanwhile.
          await sleep(100);
          return chat?.id;
        });
      const got = await Promise.all([claim(), claim()]);
      expect(got.sort()).toEqual([a.chat.id, b.chat.id].sort());
      expect((await store.readChat(a.chat.id, T))?.state).toBe("active");
      expect((await store.readChat(b.chat.id, T))?.state).toBe("active");
    });
  });

  describe("waiting", () => {
    it("lists the live chats waiting on the endpoint, oldest first, with the customer's nickname, up to the limit", async () => {
      const endpoint = `e-${newId()}`;
      const second = await made({ endpoint, queuedAt: T - 5, subject: "two" });
      const first = await made({ endpoint, queuedAt: T - 9, subject: "one" });
      await made({ endpoint, queuedAt: T - 20, state: "active" });
      await made({ endpoint, queuedAt: T - 30, expiresAt: T });
      const third = await made({ endpoint, queuedAt: T - 1, subject: "three" });
      await tx.run((uow) => store.updateParticipant(uow, second.customer.id, { nickname: "Zoe" }));
      expect(await store.waiting(endpoint, T, 10)).toEqual([
        { chatId: first.chat.id, subject: "one", nickname: "Ann", queuedAt: T - 9 },
        { chatId: second.chat.id, subject: "two", nickname: "Zoe", queuedAt: T - 5 },
        { chatId: third.chat.id, subject: "three", nickname: "Ann", queuedAt: T - 1 },
      ]);
      expect((await store.waiting(endpoint, T, 2)).map((w) => w.chatId)).toEqual([first.chat.id, second.chat.id]);
    });
  });

  describe("queueLengths", () => {
    it("counts the live chats waiting on each endpoint and gives the oldest one's queue time", async () => {
      const endpoint = `e-${newId()}`;
      const other = `e-${newId()}`;
      await made({ endpoint, queuedAt: T - 9 });
      await made({ endpoint, queuedAt: T - 3 });
      // Neither an accepted chat nor an expired one waits.
      await made({ endpoint, queuedAt: T - 50, state: "active" });
      await made({ endpoint, queuedAt: T - 60, expiresAt: T });
      await made({ endpoint: other, queuedAt: T - 1 });
      const mine = (await store.queueLengths(T)).filter((q) => q.endpoint === endpoint || q.endpoint === other);
      expect(mine.sort((a, b) => (a.endpoint < b.endpoint ? -1 : 1))).toEqual(
        [
          { endpoint, waiting: 2, oldestQueuedAt: T - 9 },
          { endpoint: other, waiting: 1, oldestQueuedAt: T - 1 },
        ].sort((a, b) => (a.endpoint < b.endpoint ? -1 : 1)),
      );
      // An endpoint without a waiting chat is absent.
      expect((await store.queueLengths(T)).some((q) => q.endpoint === `e-${newId()}`)).toBe(false);
    });
  });

  describe("addParticipant", () => {
    it("stores a participant joining", async () => {
      const { chat, customer } = await made();
      const bob = agentOf(chat.id);
      await tx.run((uow) => store.addParticipant(uow, bob));
      expect(await store.participants(chat.id)).toEqual([customer, bob]);
    });
  });

  describe("participants", () => {
    it("lists a chat's participants in the order they joined, in or out of a unit of work", async () => {
      const { chat, customer } = await made();
      const late = agentOf(chat.id, { joinedAt: T + 50, identity: "agent-2" });
      const early = agentOf(chat.id, { joinedAt: T + 10, leftAt: T + 20 });
      const inside = await tx.run(async (uow) => {
        await store.addParticipant(uow, late);
        await store.addParticipant(uow, early);
        return store.participants(chat.id, uow);
      });
      expect(inside).toEqual([customer, early, late]);
      expect(await store.participants(chat.id)).toEqual([customer, early, late]);
      expect(await store.participants(newId())).toEqual([]);
    });
  });

  describe("updateParticipant", () => {
    it("records leaving and renaming", async () => {
      const { chat, customer } = await made();
      const bob = agentOf(chat.id);
      await tx.run((uow) => store.addParticipant(uow, bob));
      await tx.run((uow) => store.updateParticipant(uow, bob.id, { leftAt: T + 9 }));
      await tx.run((uow) => store.updateParticipant(uow, customer.id, { nickname: "Anna" }));
      expect(await store.participants(chat.id)).toEqual([{ ...customer, nickname: "Anna" }, { ...bob, leftAt: T + 9 }]);
    });
  });

  describe("append", () => {
    it("stores every field of an event at the next position and moves the chat's position", async () => {
      const { chat, customer } = await made();
      const message = eventDraft(ref(customer), "message", T + 1, { text: "hello", messageType: "greeting", clientMessageId: "m1" });
      const data = eventDraft(ref(customer), "user_data_updated", T + 2, { userData: { a: "1" } });
      const file = eventDraft(ref(customer), "file_uploaded", T + 3, { fileId: "f1", fileName: "a.png", fileSize: 7, fileContentType: "image/png" });
      const bare = eventDraft(ref(customer), "participant_left", T + 4);
      const held = await tx.run(async (uow) => {
        const locked = (await store.lockChat(uow, chat.id, T))!;
        const out = [];
        for (const d of [message, data, file, bare]) out.push(await store.append(uow, locked, d));
        return { locked, out };
      });
      const expected = [message, data, file, bare].map((d, i) => ({ ...d, chatId: chat.id, position: i + 1 }));
      expect(held.out).toEqual(expected);
      expect(held.locked.lastPosition).toBe(4);
      expect(await store.events(chat.id, 1, 10)).toEqual(expected);
      expect((await store.readChat(chat.id, T))?.lastPosition).toBe(4);
    });

    it("records the customer's activity with the event only when given", async () => {
      const { chat, customer } = await made();
      await tx.run(async (uow) => {
        const locked = (await store.lockChat(uow, chat.id, T))!;
        await store.append(uow, locked, eventDraft(ref(customer), "message", T + 5, { text: "a" }));
      });
      expect(await tx.run((uow) => store.customerSeenAt(uow, chat.id))).toBe(T);
      await tx.run(async (uow) => {
        const locked = (await store.lockChat(uow, chat.id, T))!;
        await store.append(uow, locked, eventDraft(ref(customer), "message", T + 6, { text: "b" }), T + 6);
      });
      expect(await tx.run((uow) => store.customerSeenAt(uow, chat.id))).toBe(T + 6);
    });

    it("gives concurrent senders, each with the chat locked, gapless positions", async () => {
      const { chat, customer } = await made();
      await Promise.all(Array.from({ length: 12 }, (_, i) => appended(chat.id, eventDraft(ref(customer), "message", T, { text: `m${i}` }))));
      const events = await store.events(chat.id, 1, 100);
      expect(events.map((e) => e.position)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
      expect(new Set(events.map((e) => e.text)).size).toBe(12);
      expect(await store.lastPosition(chat.id)).toBe(12);
    });
  });

  describe("eventByClientId", () => {
    it("finds a participant's event by the client's message id, and only theirs", async () => {
      const { chat, customer } = await made();
      const bob = agentOf(chat.id);
      const [, mine] = await appended(
        chat.id,
        eventDraft(ref(bob), "message", T, { text: "bob's", clientMessageId: "m1" }),
        eventDraft(ref(customer), "message", T, { text: "ann's", clientMessageId: "m1" }),
      );
      expect(await tx.run((uow) => store.eventByClientId(uow, chat.id, customer.id, "m1"))).toEqual(mine);
      expect(await tx.run((uow) => store.eventByClientId(uow, chat.id, customer.id, "m2"))).toBeUndefined();
    });
  });

  describe("events", () => {
    it("reads up to `limit` events from a position on, in order", async () => {
      const { chat, customer } = await made();
      const all = await appended(chat.id, ...Array.from({ length: 5 }, (_, i) => eventDraft(ref(customer), "message", T + i, { text: `m${i}` })));
      expect(await store.events(chat.id, 2, 2)).toEqual(all.slice(1, 3));
      expect(await store.events(chat.id, 4, 10)).toEqual(all.slice(3));
      expect(await store.events(chat.id, 6, 10)).toEqual([]);
    });
  });

  describe("lastPosition", () => {
    it("reads where a chat's transcript ends, expired or not", async () => {
      const { chat, customer } = await made({ expiresAt: T + 1 });
      expect(await store.lastPosition(chat.id)).toBe(0);
      await appended(chat.id, eventDraft(ref(customer), "message", T, { text: "a" }));
      expect(await store.lastPosition(chat.id)).toBe(1);
      expect(await store.lastPosition(newId())).toBeUndefined();
    });
  });

  describe("marks", () => {
    it("reads each chat's position, end and expiry at once; a chat not stored is absent", async () => {
      const a = await made();
      const b = await made({ expiresAt: T + 5 });
      await appended(a.chat.id, eventDraft(ref(a.customer), "message", T, { text: "a" }));
      await tx.run((uow) => store.updateChat(uow, b.chat.id, { state: "ended" }));
      const gone = newId();
      expect(await store.marks([a.chat.id, b.chat.id, gone])).toEqual(
        new Map([
          [a.chat.id, { lastPosition: 1, ended: false, expiresAt: T + HOUR }],
          [b.chat.id, { lastPosition: 0, ended: true, expiresAt: T + 5 }],
        ]),
      );
      expect(await store.marks([])).toEqual(new Map());
    });
  });

  describe("leavePosition", () => {
    it("is the position of the last PARTICIPANT_LEFT of any of the participants", async () => {
      const { chat, customer } = await made();
      const first = agentOf(chat.id);
      const again = agentOf(chat.id);
      await appended(
        chat.id,
        eventDraft(ref(first), "participant_joined", T),
        eventDraft(ref(first), "participant_left", T),
        eventDraft(ref(again), "participant_joined", T),
        eventDraft(ref(again), "participant_left", T),
        eventDraft(ref(customer), "participant_left", T),
      );
      expect(await store.leavePosition(chat.id, [first.id])).toBe(2);
      expect(await store.leavePosition(chat.id, [first.id, again.id])).toBe(4);
      expect(await store.leavePosition(chat.id, [newId()])).toBeUndefined();
      expect(await store.leavePosition(chat.id, [])).toBeUndefined();
    });
  });

  describe("uploadPosition", () => {
    it("is the position of a file's FILE_UPLOADED", async () => {
      const { chat, customer } = await made();
      await appended(
        chat.id,
        eventDraft(ref(customer), "message", T, { text: "a" }),
        eventDraft(ref(customer), "file_uploaded", T, { fileId: "f1", fileName: "a", fileSize: 1, fileContentType: "text/plain" }),
        eventDraft(ref(customer), "file_deleted", T, { fileId: "f1", fileName: "a", fileSize: 1, fileContentType: "text/plain" }),
      );
      expect(await store.uploadPosition(chat.id, "f1")).toBe(2);
      expect(await store.uploadPosition(chat.id, "f2")).toBeUndefined();
    });
  });

  describe("touchCustomer", () => {
    it("records the customer active, never moving it back", async () => {
      const { chat } = await made();
      await store.touchCustomer(chat.id, T + 10);
      expect(await tx.run((uow) => store.customerSeenAt(uow, chat.id))).toBe(T + 10);
      await store.touchCustomer(chat.id, T + 5);
      expect(await tx.run((uow) => store.customerSeenAt(uow, chat.id))).toBe(T + 10);
    });
  });

  describe("touchCustomers", () => {
    it("records the customers of the chats active at once, never moving one back", async () => {
      const a = await made();
      const b = await made();
      await store.touchCustomer(b.chat.id, T + 50);
      await store.touchCustomers([a.chat.id, b.chat.id], T + 20);
      expect(await tx.run((uow) => store.customerSeenAt(uow, a.chat.id))).toBe(T + 20);
      expect(await tx.run((uow) => store.customerSeenAt(uow, b.chat.id))).toBe(T + 50);
      await store.touchCustomers([], T + 99);
    });
  });

  describe("customerSeenAt", () => {
    it("reads when the customer was last active; nothing for an unknown chat", async () => {
      const { chat } = await made({ createdAt: T - 3 });
      expect(await tx.run((uow: UnitOfWork) => store.customerSeenAt(uow, chat.id))).toBe(T - 3);
      expect(await tx.run((uow: UnitOfWork) => store.customerSeenAt(uow, newId()))).toBeUndefined();
    });
  });

  describe("idleChats", () => {
    it("lists live chats not ended whose customer was last seen at or before the cutoff, up to the limit", async () => {
      // Far in the past, so the chats of other tests (seen at T) are not idle.
      const old = T - 10 * HOUR;
      const waiting = await made({ createdAt: old });
      const active = await made({ createdAt: old + 1, state: "active" });
      const ended = await made({ createdAt: old });
      await tx.run((uow) => store.updateChat(uow, ended.chat.id, { state: "ended" }));
      await made({ createdAt: old, expiresAt: T });
      await made({ createdAt: old + 2 });
      const idle = await store.idleChats(old + 1, T, 10);
      expect(idle.sort()).toEqual([waiting.chat.id, active.chat.id].sort());
      expect(await store.idleChats(old + 1, T, 1)).toHaveLength(1);
    });
  });

  describe("addFile", () => {
    it("records a file sent in a chat", async () => {
      const { chat } = await made();
      const f = fileOf(chat.id);
      await tx.run((uow) => store.addFile(uow, f));
      expect(await store.readFile(chat.id, f.id)).toEqual(f);
    });
  });

  describe("liveFiles", () => {
    it("lists the files not deleted, oldest first, in or out of a unit of work", async () => {
      const { chat } = await made();
      const later = fileOf(chat.id, { createdAt: T + 2 });
      const earlier = fileOf(chat.id, { createdAt: T + 1, size: 5 });
      const deleted = fileOf(chat.id, { createdAt: T });
      const inside = await tx.run(async (uow) => {
        for (const f of [later, earlier, deleted]) await store.addFile(uow, f);
        await store.markFileDeleted(uow, deleted.id, T + 3);
        return store.liveFiles(chat.id, uow);
      });
      expect(inside).toEqual([earlier, later]);
      expect(await store.liveFiles(chat.id)).toEqual([earlier, later]);
    });
  });

  describe("readFile", () => {
    it("reads a chat's file unless deleted, and only in its chat", async () => {
      const { chat } = await made();
      const other = await made();
      const f = fileOf(chat.id);
      await tx.run((uow) => store.addFile(uow, f));
      expect(await tx.run((uow) => store.readFile(chat.id, f.id, uow))).toEqual(f);
      expect(await store.readFile(other.chat.id, f.id)).toBeUndefined();
      await tx.run((uow) => store.markFileDeleted(uow, f.id, T));
      expect(await store.readFile(chat.id, f.id)).toBeUndefined();
    });
  });

  describe("markFileDeleted", () => {
    it("takes the file out of the chat's live files", async () => {
      const { chat } = await made();
      const [a, b] = [fileOf(chat.id), fileOf(chat.id, { createdAt: T + 1 })];
      await tx.run(async (uow) => {
        await store.addFile(uow, a);
        await store.addFile(uow, b);
      });
      await tx.run((uow) => store.markFileDeleted(uow, a.id, T + 5));
      expect(await store.liveFiles(chat.id)).toEqual([b]);
    });
  });

  describe("setTyping", () => {
    it("records a participant typing, replacing what it had", async () => {
      const { chat, customer } = await made();
      await store.setTyping(chat.id, ref(customer), T, T + 10);
      expect(await store.typing(chat.id, T)).toEqual([{ participant: ref(customer), startedAt: T, until: T + 10 }]);
      const renamed = { ...ref(customer), nickname: "Anna" };
      await store.setTyping(chat.id, renamed, T + 1, T + 20);
      expect(await store.typing(chat.id, T)).toEqual([{ participant: renamed, startedAt: T + 1, until: T + 20 }]);
    });
  });

  describe("typing", () => {
    it("lists who types at `now`, in the order they started", async () => {
      const { chat, customer } = await made();
      const bob = agentOf(chat.id);
      const cy = agentOf(chat.id, { nickname: "Cy" });
      await store.setTyping(chat.id, ref(bob), T + 2, T + 30);
      await store.setTyping(chat.id, ref(customer), T + 1, T + 30);
      await store.setTyping(chat.id, ref(cy), T, T + 10);
      expect((await store.typing(chat.id, T + 5)).map((t) => t.participant.nickname)).toEqual(["Cy", "Ann", "Bob"]);
      expect((await store.typing(chat.id, T + 10)).map((t) => t.participant.nickname)).toEqual(["Ann", "Bob"]);
    });
  });

  describe("typingOf", () => {
    it("lists who types in each of the chats at once; chats where nobody types are absent", async () => {
      const a = await made();
      const b = await made();
      const c = await made();
      await store.setTyping(a.chat.id, ref(a.customer), T, T + 10);
      await store.setTyping(b.chat.id, ref(b.customer), T, T + 3);
      await store.setTyping(c.chat.id, ref(c.customer), T, T + 10);
      expect(await store.typingOf([a.chat.id, b.chat.id], T + 5)).toEqual(new Map([[a.chat.id, [{ participant: ref(a.customer), startedAt: T, until: T + 10 }]]]));
      expect(await store.typingOf([], T)).toEqual(new Map());
    });
  });

  describe("stopTyping", () => {
    it("forgets a participant typing and tells whether they were", async () => {
      const { chat, customer } = await made();
      const bob = agentOf(chat.id);
      await store.setTyping(chat.id, ref(customer), T, T + 10);
      await store.setTyping(chat.id, ref(bob), T, T + 10);
      expect(await store.stopTyping(chat.id, customer.id, T)).toBe(true);
      expect(await store.stopTyping(chat.id, customer.id, T)).toBe(false);
      expect((await store.typing(chat.id, T)).map((t) => t.participant.participantId)).toEqual([bob.id]);
      // A row that has lapsed was not typing any more.
      expect(await store.stopTyping(chat.id, bob.id, T + 10)).toBe(false);
    });
  });

  describe("lapseTyping", () => {
    it("forgets a participant's typing only once it has lapsed", async () => {
      const { chat, customer } = await made();
      await store.setTyping(chat.id, ref(customer), T, T + 10);
      expect(await store.lapseTyping(chat.id, customer.id, T + 9)).toBe(false);
      expect(await store.typing(chat.id, T + 9)).toHaveLength(1);
      expect(await store.lapseTyping(chat.id, customer.id, T + 10)).toBe(true);
      expect(await store.lapseTyping(chat.id, customer.id, T + 10)).toBe(false);
      // Gone, not merely lapsed: a start extending it now begins afresh.
      await store.setTyping(chat.id, ref(customer), T + 20, T + 30);
      expect(await store.typing(chat.id, T + 20)).toEqual([{ participant: ref(customer), startedAt: T + 20, until: T + 30 }]);
    });
  });

  describe("clearTyping", () => {
    it("forgets everybody's typing in the chat and returns who was typing at `now`", async () => {
      const { chat, customer } = await made();
      const other = await made();
      const bob = agentOf(chat.id);
      await store.setTyping(chat.id, ref(customer), T, T + 10);
      await store.setTyping(chat.id, ref(bob), T, T + 3);
      await store.setTyping(other.chat.id, ref(other.customer), T, T + 10);
      expect(await store.clearTyping(chat.id, T + 5)).toEqual([{ participant: ref(customer), startedAt: T, until: T + 10 }]);
      expect(await store.typingOf([chat.id], T)).toEqual(new Map());
      expect(await store.typing(other.chat.id, T)).toHaveLength(1);
    });
  });

  describe("extendChatsOfSession", () => {
    it("gives the session's chats, and their live files' stored bytes, the new expiry", async () => {
      const sessionId = newId();
      const { chat } = await made({ sessionId });
      const other = await made();
      const kept = fileOf(chat.id);
      const deleted = fileOf(chat.id);
      await db.knex("storage_data").insert([kept, deleted].map((f) => ({ id: f.dataId, version: 1, created_at: T, expires_at: T + HOUR })));
      await tx.run(async (uow) => {
        await store.addFile(uow, kept);
        await store.addFile(uow, deleted);
        await store.markFileDeleted(uow, deleted.id, T);
      });
      await tx.run((uow) => store.extendChatsOfSession(uow, sessionId, T + 5 * HOUR));
      expect((await store.readChat(chat.id, T))?.expiresAt).toBe(T + 5 * HOUR);
      expect((await store.readChat(other.chat.id, T))?.expiresAt).toBe(T + HOUR);
      const expiry = async (id: string) => Number(((await db.knex("storage_data").where("id", id).first("expires_at")) as { expires_at: number | string }).expires_at);
      expect(await expiry(kept.dataId)).toBe(T + 5 * HOUR);
      expect(await expiry(deleted.dataId)).toBe(T + HOUR);
      // A session without chats: nothing to do.
      await tx.run((uow) => store.extendChatsOfSession(uow, newId(), T));
    });
  });

  describe("sweep", () => {
    it("deletes up to `batch` expired chats with all they hold, and nothing live", async () => {
      // Expired before every other test's chats, so a sweep at this time takes only these.
      const expired = await Promise.all([0, 1, 2].map(() => made({ createdAt: 10, queuedAt: 10, expiresAt: 20 })));
      const live = await made();
      for (const c of [...expired, live]) {
        await appendedAt(10, c.chat.id, eventDraft(ref(c.customer), "message", T, { text: "a" }));
        await tx.run((uow) => store.addFile(uow, fileOf(c.chat.id)));
        await store.setTyping(c.chat.id, ref(c.customer), 0, T + HOUR);
      }
      expect(await store.sweep(21, 2)).toBe(2);
      expect(await store.sweep(21, 2)).toBe(1);
      expect(await store.sweep(21, 2)).toBe(0);
      for (const c of expired) {
        expect(await store.lastPosition(c.chat.id)).toBeUndefined();
        expect(await store.participants(c.chat.id)).toEqual([]);
        expect(await store.events(c.chat.id, 1, 10)).toEqual([]);
        expect(await store.liveFiles(c.chat.id)).toEqual([]);
        expect(await store.typing(c.chat.id, 0)).toEqual([]);
      }
      expect(await store.lastPosition(live.chat.id)).toBe(1);
      expect(await store.participants(live.chat.id)).toHaveLength(1);
      expect(await store.liveFiles(live.chat.id)).toHaveLength(1);
      expect(await store.typing(live.chat.id, 0)).toHaveLength(1);
    });
  });
});
