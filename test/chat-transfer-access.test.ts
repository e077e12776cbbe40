// What an agent reads after leaving or transferring a chat, over real sockets, on every store.
//
// An agent who has left or transferred reads nothing newer than their leaving: Refresh, a
// Subscribe opened before (it ends with their PARTICIPANT_LEFT) or after, a waiting long-poll, and
// DownloadFile of a file uploaded later. A supervisor (admin) reads everything. And an agent key
// does not learn whether a chat id exists: an unknown chat and a chat it is not in answer alike.
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatEventType, type ChatEvent } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { openDatabase } from "../src/store/database.js";
import { bearer, errorOf, waitFor } from "./helpers/calls.js";
import { DIALECTS, type TestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const ALICE = { name: "alice", key: "alice-key-0123456789ab" };
const BOB = { name: "bob", key: "bob-key-0123456789abcd" };
const CAROL = { name: "carol", key: "carol-key-0123456789ab" };
const BOSS = { name: "boss", key: "boss-key-0123456789abc" };
const UNKNOWN_CHAT = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";
const UNKNOWN_FILE = "0b7f8a4e-9c1d-7f5e-8a2b-3c4d5e6f7a8b";

const config = {
  auth: {
    api_keys: [
      { name: ALICE.name, key: ALICE.key, roles: ["agent"] },
      { name: BOB.name, key: BOB.key, roles: ["agent"] },
      { name: CAROL.name, key: CAROL.key, roles: ["agent"] },
      { name: BOSS.name, key: BOSS.key, roles: ["admin"] },
    ],
    public_roles: ["app"],
  },
  services: { first: { service: "request-chat", endpoint: "first", ttl: 600 } },
};

/** Reader collects a server stream's events in the background until it ends or fails. */
function read(stream: AsyncIterable<ChatEvent>) {
  const events: ChatEvent[] = [];
  let done = false;
  const ended = (async () => {
    try {
      for await (const e of stream) events.push(e);
      return undefined;
    } catch (e) {
      return ConnectError.from(e);
    } finally {
      done = true;
    }
  })();
  return { events, ended, isDone: () => done, until: (what: string, pred: (e: ChatEvent) => boolean) => waitFor(what, () => events.some(pred)) };
}

const stored = (events: readonly ChatEvent[]) => events.filter((e) => e.position > 0n);
const texts = (events: readonly ChatEvent[]) => events.map((e) => e.text);
const file = (name: string) => ({ filename: name, contentType: "text/plain", content: new TextEncoder().encode(name) });

describe.each(DIALECTS)("an agent who transferred a chat, on %s", (dialect) => {
  let t: TestServer;
  let clock: ManualClock;
  let customer: Client<typeof ChatService>;
  const agent = (key: string, kind: "grpc" | "connect" = "grpc") => createClient(AgentService, t.transport(kind, key));

  beforeAll(async () => {
    clock = new ManualClock(Date.now());
    t = await startTestServer(dialect, { config, clock });
    customer = createClient(ChatService, t.grpc);
  });
  afterAll(() => t?.close());

  it("reads nothing newer than the transfer: Refresh, Subscribe, long-poll and DownloadFile; the next agent and a supervisor read all", async () => {
    const chat = await customer.requestChat({ service: "first", nickname: "Ann" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const alice = agent(ALICE.key);
    const aliceConnect = agent(ALICE.key, "connect");
    const accepted = await alice.acceptChat({ endpoint: "first", nickname: "Alice" });
    expect(accepted.chatId).toBe(chat.chatId);

    // Alice's streams, open before the transfer: gRPC (the lean path) and Connect (connect-node).
    const grpcStream = read(alice.subscribe({ chatId: chat.chatId, fromPosition: 1n }));
    const connectStream = read(aliceConnect.subscribe({ chatId: chat.chatId, fromPosition: 1n }));
    await grpcStream.until("alice's replay", (e) => e.position === 2n);
    await connectStream.until("alice's replay", (e) => e.position === 2n);
    // And a long-poll waiting for what comes next.
    const waiting = alice.refresh({ chatId: chat.chatId, fromPosition: 3n, waitSeconds: 30 });

    await customer.sendMessage({ ...key, text: "before" });
    const early = await customer.uploadFile({ ...key, file: file("early.txt") });
    await alice.transferChat({ chatId: chat.chatId, endpoint: "second" });
    const bob = agent(BOB.key);
    expect((await bob.acceptChat({ endpoint: "second", nickname: "Bob" })).chatId).toBe(chat.chatId);
    await customer.sendMessage({ ...key, text: "secret for bob" });
    const late = await customer.uploadFile({ ...key, file: file("late.txt") });

    // Where alice left: her PARTICIPANT_LEFT.
    const all = (await agent(BOSS.key).refresh({ chatId: chat.chatId, fromPosition: 1n })).events;
    const leave = all.find((e) => e.type === ChatEventType.PARTICIPANT_LEFT && e.from?.participantId === accepted.participantId);
    expect(leave).toBeDefined();
    const left = leave!.position;
    expect(all.at(-1)!.position).toBeGreaterThan(left);
    expect(texts(all)).toContain("secret for bob");

    // The streams open before the transfer end with her leaving, and deliver nothing after it.
    for (const [what, s] of [["gRPC", grpcStream], ["Connect", connectStream]] as const) {
      expect(await Promise.race([s.ended, new Promise((r) => setTimeout(() => r("still open"), 15_000))]), what).toBeUndefined();
      expect(stored(s.events).at(-1)?.position, what).toBe(left);
      expect(texts(s.events), what).not.toContain("secret for bob");
      expect(s.events.every((e) => e.position <= left), what).toBe(true);
    }
    // The long-poll answered with what came before she left, and nothing newer.
    const polled = await waiting;
    expect(polled.events.every((e) => e.position <= left)).toBe(true);
    expect(texts(polled.events)).not.toContain("secret for bob");

    for (const client of [alice, aliceConnect]) {
      // Refresh: up to and including her leaving, and the chat is over for her.
      const r = await client.refresh({ chatId: chat.chatId, fromPosition: 1n });
      expect(r.events.at(-1)?.position).toBe(left);
      expect(texts(r.events)).toContain("before");
      expect(texts(r.events)).not.toContain("secret for bob");
      expect(r.nextPosition).toBe(left + 1n);
      expect(r.chatEnded).toBe(true);
      expect(r.typing).toEqual([]);
      const after = await client.refresh({ chatId: chat.chatId, fromPosition: left + 1n, waitSeconds: 30 });
      expect(after.events).toEqual([]);
      expect(after.nextPosition).toBe(left + 1n);
      // A Subscribe opened now replays up to her leaving and ends; from after it, ends at once.
      const replay = read(client.subscribe({ chatId: chat.chatId, fromPosition: 1n }));
      expect(await replay.ended).toBeUndefined();
      expect(stored(replay.events).at(-1)?.position).toBe(left);
      const none = read(client.subscribe({ chatId: chat.chatId, fromPosition: left + 1n }));
      expect(await none.ended).toBeUndefined();
      expect(none.events).toEqual([]);
      // Files: what was uploaded before she left, not after (as unknown as a file that never was).
      expect(new TextDecoder().decode((await client.downloadFile({ chatId: chat.chatId, fileId: early.fileId })).file?.file?.content)).toBe("early.txt");
      const refused = await errorOf(client.downloadFile({ chatId: chat.chatId, fileId: late.fileId }));
      const unknown = await errorOf(client.downloadFile({ chatId: chat.chatId, fileId: UNKNOWN_FILE }));
      expect(refused.code).toBe(Code.NotFound);
      expect(refused.rawMessage.replace(late.fileId, "<id>")).toBe(unknown.rawMessage.replace(UNKNOWN_FILE, "<id>"));
      // What the chat holds now is not hers to see either; writing was refused before.
      expect((await errorOf(client.getFileLimits({ chatId: chat.chatId }))).code).toBe(Code.FailedPrecondition);
      expect((await errorOf(client.sendMessage({ chatId: chat.chatId, text: "hi" }))).code).toBe(Code.FailedPrecondition);
    }

    // Bob and the supervisor read everything.
    for (const reader of [bob, agent(BOSS.key)]) {
      const r = await reader.refresh({ chatId: chat.chatId, fromPosition: 1n });
      expect(texts(r.events)).toContain("secret for bob");
      expect(r.chatEnded).toBe(false);
      expect(new TextDecoder().decode((await reader.downloadFile({ chatId: chat.chatId, fileId: late.fileId })).file?.file?.content)).toBe("late.txt");
    }
  });

  it("an agent who left (LeaveChat) and an agent whose stream was open alike read nothing newer", async () => {
    const chat = await customer.requestChat({ service: "first", nickname: "Ann" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey };
    const alice = agent(ALICE.key);
    await alice.acceptChat({ endpoint: "first", nickname: "Alice" });
    const stream = read(alice.subscribe({ chatId: chat.chatId, fromPosition: 1n }));
    await stream.until("alice's replay", (e) => e.position === 2n);
    await alice.leaveChat({ chatId: chat.chatId });
    expect(await stream.ended).toBeUndefined();
    const left = stored(stream.events).at(-1)!;
    expect(left.type).toBe(ChatEventType.PARTICIPANT_LEFT);
    // The chat is back on its queue; bob takes it and the customer writes.
    await agent(BOB.key).acceptChat({ endpoint: "first", nickname: "Bob" });
    await customer.sendMessage({ ...key, text: "secret for bob" });
    const r = await alice.refresh({ chatId: chat.chatId, fromPosition: 1n });
    expect(r.events.at(-1)?.position).toBe(left.position);
    expect(texts(r.events)).not.toContain("secret for bob");
    // Alice takes it again: she is in it once more and reads it all.
    await agent(BOB.key).leaveChat({ chatId: chat.chatId });
    await alice.acceptChat({ endpoint: "first", nickname: "Alice" });
    expect(texts((await alice.refresh({ chatId: chat.chatId, fromPosition: 1n })).events)).toContain("secret for bob");
  });

  it("an unknown chat and a chat the agent is not in answer alike", async () => {
    const chat = await customer.requestChat({ service: "first", nickname: "Ann" });
    await agent(ALICE.key).acceptChat({ endpoint: "first", nickname: "Alice" });
    for (const kind of ["grpc", "connect"] as const) {
      const carol = agent(CAROL.key, kind);
      const calls = [
        (id: string) => carol.refresh({ chatId: id, fromPosition: 1n }),
        (id: string) => carol.sendMessage({ chatId: id, text: "hi" }),
        (id: string) => carol.downloadFile({ chatId: id, fileId: UNKNOWN_FILE }),
        (id: string) => carol.transferChat({ chatId: id, endpoint: "x" }),
        async (id: string) => {
          for await (const _ of carol.subscribe({ chatId: id, fromPosition: 1n })) break;
        },
      ];
      for (const call of calls) {
        const existing = await errorOf(call(chat.chatId));
        const unknown = await errorOf(call(UNKNOWN_CHAT));
        expect(existing.code, kind).toBe(Code.PermissionDenied);
        expect(unknown.code, kind).toBe(Code.PermissionDenied);
        expect(unknown.rawMessage.replace(UNKNOWN_CHAT, "<id>"), kind).toBe(existing.rawMessage.replace(chat.chatId, "<id>"));
      }
    }
    // A supervisor may know a chat does not exist.
    expect((await errorOf(agent(BOSS.key).refresh({ chatId: UNKNOWN_CHAT, fromPosition: 1n }))).code).toBe(Code.NotFound);
  });

  it("a read under way on another node, which never hears of the transfer, stops at the agent's leaving", async () => {
    // Node X: the same database, its own in-process bus: it learns of events only from the store.
    const db = await openDatabase((t.server.app.db as TestDatabase).url);
    const x = await startServer({ config: parseConfig({ ...config, server: { host: "127.0.0.1", port: 0 } }, "node x"), db, log: pino({ level: "silent" }), clock, sweep: false });
    try {
      const aliceOnX = createClient(AgentService, createGrpcTransport({ baseUrl: x.url, interceptors: [bearer(ALICE.key)] }));
      const chat = await customer.requestChat({ service: "first", nickname: "Ann" });
      const key = { chatId: chat.chatId, secureKey: chat.secureKey };
      const accepted = await agent(ALICE.key).acceptChat({ endpoint: "first", nickname: "Alice" });
      const next = accepted.nextPosition;
      const stream = read(aliceOnX.subscribe({ chatId: chat.chatId, fromPosition: 1n }));
      await stream.until("alice's replay on node X", (e) => e.position === next - 1n);
      let settled = false;
      const poll = aliceOnX.refresh({ chatId: chat.chatId, fromPosition: next, waitSeconds: 30 }).finally(() => (settled = true));
      // On the first node: alice transfers, bob accepts, the customer writes.
      await agent(ALICE.key).transferChat({ chatId: chat.chatId, endpoint: "second" });
      await agent(BOB.key).acceptChat({ endpoint: "second", nickname: "Bob" });
      await customer.sendMessage({ ...key, text: "secret for bob" });
      // Node X finds it all in the store: the long-poll when its wait is up, the stream at its catch-up look.
      // (The clock moves until the poll has answered: it may have started waiting only now.)
      await waitFor("node X's long-poll", () => {
        clock.advance(31_000);
        return settled;
      });
      const polled = await poll;
      expect(polled.events.map((e) => e.type)).toEqual([ChatEventType.PARTICIPANT_LEFT]);
      expect(polled.events[0]?.from?.participantId).toBe(accepted.participantId);
      expect(polled.chatEnded).toBe(true);
      expect(await Promise.race([stream.ended, new Promise((r) => setTimeout(() => r("still open"), 15_000))])).toBeUndefined();
      expect(stored(stream.events).at(-1)?.position).toBe(next);
      expect(texts(stream.events)).not.toContain("secret for bob");
    } finally {
      await x.shutdown();
    }
  });
});
