import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/clock.js";
import { parseConfig } from "../src/config.js";
import type { Actor, ChatStart, QueueState } from "../src/domain/chat/index.js";
import { createApp, type App } from "../src/server.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { failure } from "./helpers/failure.js";

const config = parseConfig({
  chat: {
    idle_timeout_seconds: 45,
    files: { max_files: 2, max_file_bytes: 2_000_000, max_total_bytes: 2_500_000, allowed_extensions: ["png", "txt", "pdf"], allowed_content_types: ["image/*", "text/plain"], require_agent: true },
  },
  services: {
    sales: { type: "builtin", service: "request-chat", endpoint: "sales", ttl: 600 },
    vip: { type: "builtin", service: "request-chat", endpoint: "vip", ttl: 600 },
  },
});


const bytes = (n: number, fill = 7) => new Uint8Array(n).fill(fill);

describe.each(DIALECTS)("chat extras on %s", (dialect) => {
  let db: TestDatabase;
  let clock: ManualClock;
  let app: App;
  const never = new AbortController().signal;
  let agents = 0;

  const start = (service = "sales") =>
    app.chats.requestChat({
      service,
      nickname: "Ann",
      firstName: "",
      lastName: "",
      subject: `subject ${service}`,
      emailAddress: "",
      userData: { tier: "gold" },
      appData: new Map(),
      request: { scope: "t", requestId: "", digest: "" },
    });
  const customer = (s: ChatStart): Promise<Actor> => app.chats.customer(s.chatId, s.secureKey);
  /** acceptThis accepts chats on an endpoint until it gets the one asked for; returns that agent. */
  const acceptThis = async (s: ChatStart, endpoint = "sales"): Promise<{ actor: Actor; identity: string }> => {
    for (;;) {
      const identity = `agent-${++agents}`;
      const a = await app.chats.accept(endpoint, "Bob", identity, 0, never);
      if (a.chat.id === s.chatId) return { actor: await app.chats.agent(s.chatId, identity, false), identity };
    }
  };

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    clock = new ManualClock(Date.now());
    app = createApp({ config, db, clock, log: pino({ level: "silent" }) });
  });
  afterAll(() => db.close());

  it("files: the agent-required rule, type, extension, size, count and total, all checked before storing", async () => {
    const s = await start();
    const me = await customer(s);
    const png = { filename: "shot.png", contentType: "image/png" };
    expect((await failure(app.chats.uploadFile(me, { ...png, content: bytes(10) }))).kind).toBe("failed_precondition");
    const { actor: agent } = await acceptThis(s);
    expect((await failure(app.chats.uploadFile(me, { filename: "x.exe", contentType: "image/png", content: bytes(10) }))).kind).toBe("invalid_argument");
    expect((await failure(app.chats.uploadFile(me, { filename: "x.png", contentType: "application/zip", content: bytes(10) }))).kind).toBe("invalid_argument");
    const big = await failure(app.chats.uploadFile(me, { ...png, content: bytes(2_000_001) }));
    expect(big.detail).toMatchObject({ limit: "chat.files.max_file_bytes" });
    const first = await app.chats.uploadFile(me, { ...png, content: bytes(1_500_000, 1) });
    const total = await failure(app.chats.uploadFile(agent, { filename: "notes.txt", contentType: "text/plain", content: bytes(1_500_000) }));
    expect(total).toMatchObject({ kind: "resource_exhausted", detail: { limit: "chat.files.max_total_bytes" } });
    await app.chats.uploadFile(agent, { filename: "notes.txt", contentType: "text/plain; charset=utf-8", content: bytes(100, 2) });
    const count = await failure(app.chats.uploadFile(me, { ...png, content: bytes(1) }));
    expect(count).toMatchObject({ kind: "resource_exhausted", detail: { limit: "chat.files.max_files" } });
    const limits = await app.chats.fileLimits(me);
    expect(limits).toMatchObject({ max_files: 2, usedFiles: 2, usedBytes: 1_500_100, require_agent: true });
    const events = (await app.chats.refresh(me, 0, 0, never)).events.filter((e) => e.kind === "file_uploaded");
    expect(events.map((e) => [e.fileId !== "", e.fileName, e.fileSize, e.fileContentType])).toEqual([
      [true, "shot.png", 1_500_000, "image/png"],
      [true, "notes.txt", 100, "text/plain; charset=utf-8"],
    ]);
    const downloaded = await app.chats.downloadFile(agent, first.fileId);
    expect(downloaded.content.byteLength).toBe(1_500_000);
    expect(downloaded.content[0]).toBe(1);
    expect(downloaded.uploadedBy.kind).toBe("client");
  });

  it("files: only participants download; only the uploader deletes; a deleted file frees its room", async () => {
    const s = await start();
    const me = await customer(s);
    const { actor: agent } = await acceptThis(s);
    const up = await app.chats.uploadFile(me, { filename: "a.txt", contentType: "text/plain", content: bytes(5) });
    expect((await failure(app.chats.agent(s.chatId, "stranger", false))).kind).toBe("permission_denied");
    const other = await start();
    const otherCustomer = await customer(other);
    expect((await failure(app.chats.downloadFile(otherCustomer, up.fileId))).kind).toBe("not_found");
    expect((await failure(app.chats.deleteFile(agent, up.fileId))).kind).toBe("permission_denied");
    await app.chats.deleteFile(me, up.fileId);
    expect((await failure(app.chats.downloadFile(agent, up.fileId))).kind).toBe("not_found");
    expect((await app.chats.fileLimits(me)).usedFiles).toBe(0);
    const last = (await app.chats.refresh(me, 0, 0, never)).events.at(-1);
    expect(last).toMatchObject({ kind: "file_deleted", fileId: up.fileId, fileName: "a.txt", fileSize: 5 });
  });

  it("nickname, notices, user data and pushed URLs go into the transcript", async () => {
    const s = await start();
    const me = await customer(s);
    const { actor: agent } = await acceptThis(s);
    await app.chats.updateNickname(me, "Annie");
    await app.chats.customNotice(me, "app went to background");
    await app.chats.updateUserData(me, { page: "checkout" }, ["tier"]);
    await app.chats.pushUrl(agent, "https://example.com/help");
    await app.chats.customNotice(agent, "survey offered");
    const events = (await app.chats.refresh(me, 0, 0, never)).events.slice(2);
    expect(events.map((e) => [e.kind, e.from.kind, e.text])).toEqual([
      ["nickname_updated", "client", "Annie"],
      ["custom_notice", "client", "app went to background"],
      ["user_data_updated", "client", ""],
      ["push_url", "agent", "https://example.com/help"],
      ["custom_notice", "agent", "survey offered"],
    ]);
    expect(events[0]?.from.nickname).toBe("Annie");
    expect(events[2]?.userData).toEqual({ page: "checkout" });
    expect((await customer(s)).participant.nickname).toBe("Annie");
  });

  it("transfer: the agent leaves, the chat waits on the other queue and the transcript continues; WatchQueue follows", async () => {
    const watch = new AbortController();
    const updates: QueueState[] = [];
    const watching = (async () => {
      for await (const q of app.chats.watchQueue("vip", watch.signal)) updates.push(q);
    })();
    const waitFor = async (pred: () => boolean) => {
      for (let i = 0; i < 200 && !pred(); i++) await new Promise((r) => setTimeout(r, 10));
      expect(pred()).toBe(true);
    };
    await waitFor(() => updates.length >= 1);
    const s = await start();
    const { actor: agent } = await acceptThis(s);
    await app.chats.send(agent, { text: "let me get a specialist", messageType: "", clientMessageId: "" });
    await app.chats.transfer(agent, "vip");
    await waitFor(() => updates.some((u) => u.waiting.some((w) => w.chatId === s.chatId)));
    const seen = updates.find((u) => u.waiting.some((w) => w.chatId === s.chatId));
    expect(seen?.waiting.find((w) => w.chatId === s.chatId)).toMatchObject({ nickname: "Ann", subject: "subject sales" });
    const { actor: specialist } = await acceptThis(s, "vip");
    await waitFor(() => updates.at(-1)?.waiting.every((w) => w.chatId !== s.chatId) === true);
    await app.chats.send(specialist, { text: "specialist here", messageType: "", clientMessageId: "" });
    const kinds = (await app.chats.refresh(await customer(s), 0, 0, never)).events.map((e) => `${e.kind}:${e.from.kind}`);
    expect(kinds).toEqual(["participant_joined:client", "participant_joined:agent", "message:agent", "participant_left:agent", "participant_joined:agent", "message:agent"]);
    watch.abort();
    await watching;
    expect(app.bus.listenerCount()).toBe(0);
  });

  it("idle timeout: a customer who neither calls nor streams is disconnected; calls and open streams count as activity", async () => {
    const quiet = await start();
    const busy = await start();
    const streaming = await start();
    const streamer = await customer(streaming);
    const stream = app.chats.subscribe(streamer, 0, never);
    await stream.next();
    clock.advance(30_000);
    await app.chats.refresh(await customer(busy), 0, 0, never);
    clock.advance(20_000);
    // The open stream's activity is written by the node-wide watch in the background: let it land.
    const seenAt = async () => Number(((await db.knex("chats").where("id", streaming.chatId).first("customer_seen_at")) as { customer_seen_at: number | string }).customer_seen_at);
    for (let i = 0; i < 200 && (await seenAt()) <= clock.now() - 45_000; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await app.chats.sweepIdle()).toBeGreaterThanOrEqual(1);
    const q = await app.chats.refresh(await app.chats.customer(quiet.chatId, quiet.secureKey), 0, 0, never);
    expect(q.chatEnded).toBe(true);
    expect(q.events.slice(-2).map((e) => `${e.kind}:${e.from.kind}`)).toEqual(["participant_left:client", "chat_ended:system"]);
    expect((await app.chats.refresh(await customer(busy), 0, 0, never)).chatEnded).toBe(false);
    expect((await app.chats.refresh(streamer, 0, 0, never)).chatEnded).toBe(false);
    await stream.return(undefined);
    clock.advance(46_000);
    await app.chats.sweepIdle();
    expect((await app.chats.refresh(streamer, 0, 0, never)).chatEnded).toBe(true);
  });

  it("the idle watch runs on the injected clock", async () => {
    const s = await start();
    const stop = app.chats.startIdleWatch();
    // Time passes in 5 s steps, letting each sweep (database work) finish before the next tick.
    for (let i = 0; i < 20; i++) {
      clock.advance(5_000);
      await new Promise((r) => setTimeout(r, 30));
      // Looked at in the table: asking through the API would itself count as the customer's activity.
      if (((await db.knex("chats").where("id", s.chatId).first("state")) as { state: string }).state === "ended") break;
    }
    stop();
    expect((await app.chats.refresh(await customer(s), 0, 0, never)).chatEnded).toBe(true);
  });

  it("ExtendSession extends a chat, its data and its files", async () => {
    const s = await start();
    const me = await customer(s);
    await acceptThis(s);
    const up = await app.chats.uploadFile(me, { filename: "a.txt", contentType: "text/plain", content: bytes(5) });
    await app.sessions.extend(s.sessionId, 7200);
    clock.advance(3_600_000);
    const again = await app.chats.customer(s.chatId, s.secureKey);
    expect((await app.chats.downloadFile(again, up.fileId)).content.byteLength).toBe(5);
  });
});
