import { randomUUID } from "node:crypto";
import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { errorOf } from "./helpers/calls.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * request_id is a retry key, never a way into another caller's reply: a stored reply goes back only
 * to the same caller (its own API key; without one, the very same request) sending the very same
 * request under the same id.
 */
const KEYS = { app1: "app-one-key-0123456789", app2: "app-two-key-0123456789", backend: "backend-key-01234567" };
const text = (s: string) => ({ kind: { case: "text" as const, value: s } });

const config = (keyed: boolean) => ({
  ...(keyed
    ? {
        auth: {
          api_keys: [
            { name: "app-1", key: KEYS.app1, roles: ["app"] },
            { name: "app-2", key: KEYS.app2, roles: ["app"] },
            { name: "backend", key: KEYS.backend, roles: ["backend"] },
          ],
          public_roles: ["app"],
        },
      }
    : {}),
  resources: { desk: { numbers: ["+18005550600..+18005550619"], locking: true } },
  services: { lobby: { service: "request-chat", endpoint: "lobby", ttl: 600 } },
});

describe.each(DIALECTS)("request_id scope on %s", (dialect) => {
  // keyed: a server with API keys, where callers without one are anonymous (public role app);
  // open: a server with no keys, where every caller is alike.
  describe.each(["keyed", "open"] as const)("a %s server", (mode) => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer(dialect, { config: config(mode === "keyed") });
    });
    afterAll(() => t.close());

    const clients = (kind: "grpc" | "connect", key?: string) => ({
      chat: createClient(ChatService, t.transport(kind, key)),
      access: createClient(AccessService, t.transport(kind, key)),
      storage: createClient(StorageService, t.transport(kind, key)),
    });

    describe.each(["grpc", "connect"] as const)("over %s", (kind) => {
      it("two callers without a key sending one request_id get a chat each; each one's retry gets its own back", async () => {
        const c = clients(kind);
        const requestId = randomUUID();
        const ann = await c.chat.requestChat({ service: "lobby", nickname: "Ann", requestId });
        const bob = await c.chat.requestChat({ service: "lobby", nickname: "Bob", requestId });
        expect(bob.chatId).not.toBe(ann.chatId);
        expect(bob.secureKey).not.toBe(ann.secureKey);
        const annAgain = await c.chat.requestChat({ service: "lobby", nickname: "Ann", requestId });
        expect(annAgain.chatId).toBe(ann.chatId);
        expect(annAgain.secureKey).toBe(ann.secureKey);
        const bobAgain = await c.chat.requestChat({ service: "lobby", nickname: "Bob", requestId });
        expect(bobAgain.chatId).toBe(bob.chatId);
      });

      it("a short request_id from a caller without a key is INVALID_ARGUMENT and creates nothing", async () => {
        const c = clients(kind);
        const e = await errorOf(c.chat.requestChat({ service: "lobby", nickname: "Ann", requestId: "42" }));
        expect(e.code).toBe(Code.InvalidArgument);
        expect(e.rawMessage).toMatch(/request_id/);
        expect((await errorOf(c.storage.createData({ ttlSeconds: 60n, requestId: "42" }))).code).toBe(Code.InvalidArgument);
        expect((await errorOf(c.access.requestInteraction({ resourceGroup: "desk", phoneNumber: "6504660001", requestId: "42" }))).code).toBe(Code.InvalidArgument);
      });

      it("RequestInteraction and CreateData without a key: another app's request under the same id is its own", async () => {
        const c = clients(kind);
        const requestId = randomUUID();
        const a = await c.access.requestInteraction({ resourceGroup: "desk", phoneNumber: "6504660001", ttlSeconds: 60n, requestId });
        const b = await c.access.requestInteraction({ resourceGroup: "desk", phoneNumber: "6504660002", ttlSeconds: 60n, requestId });
        expect(b.session?.id).not.toBe(a.session?.id);
        expect(b.session?.dataId).not.toBe(a.session?.dataId);
        expect(b.access?.accessNumber).not.toBe(a.access?.accessNumber);
        const aAgain = await c.access.requestInteraction({ resourceGroup: "desk", phoneNumber: "6504660001", ttlSeconds: 60n, requestId });
        expect(aAgain.session?.id).toBe(a.session?.id);

        const d1 = await c.storage.createData({ ttlSeconds: 60n, entries: { name: text("Ann") }, requestId });
        const d2 = await c.storage.createData({ ttlSeconds: 60n, entries: { name: text("Bob") }, requestId });
        expect(d2.dataId).not.toBe(d1.dataId);
        expect((await c.storage.getData({ dataId: d2.dataId })).entries["name"]?.kind.value).toBe("Bob");
        // The same request with its map in another order is the same request.
        const m1 = await c.storage.createData({ ttlSeconds: 60n, entries: { a: text("1"), b: text("2") }, requestId: `${requestId}-m` });
        const m2 = await c.storage.createData({ ttlSeconds: 60n, entries: { b: text("2"), a: text("1") }, requestId: `${requestId}-m` });
        expect(m2.dataId).toBe(m1.dataId);
      });
    });

    it.runIf(mode === "keyed")("a keyed caller's different request under a used id is ALREADY_EXISTS; another key's same id is its own", async () => {
      for (const kind of ["grpc", "connect"] as const) {
        const app1 = clients(kind, KEYS.app1);
        const app2 = clients(kind, KEYS.app2);
        const requestId = `checkout-${kind}`;
        const first = await app1.chat.requestChat({ service: "lobby", nickname: "Ann", requestId });
        const e = await errorOf(app1.chat.requestChat({ service: "lobby", nickname: "Eve", requestId }));
        expect(e.code).toBe(Code.AlreadyExists);
        expect(e.rawMessage).not.toContain(first.chatId);
        expect((await app1.chat.requestChat({ service: "lobby", nickname: "Ann", requestId })).secureKey).toBe(first.secureKey);
        const other = await app2.chat.requestChat({ service: "lobby", nickname: "Ann", requestId });
        expect(other.chatId).not.toBe(first.chatId);

        const a = await app1.access.requestInteraction({ resourceGroup: "desk", phoneNumber: "6504660003", ttlSeconds: 60n, requestId });
        expect((await errorOf(app1.access.requestInteraction({ resourceGroup: "desk", phoneNumber: "6504660004", ttlSeconds: 60n, requestId }))).code).toBe(Code.AlreadyExists);
        expect((await app1.access.requestInteraction({ resourceGroup: "desk", phoneNumber: "6504660003", ttlSeconds: 60n, requestId })).session?.id).toBe(a.session?.id);

        const d = await app1.storage.createData({ ttlSeconds: 60n, entries: { k: text("v") }, requestId });
        expect((await errorOf(app1.storage.createData({ ttlSeconds: 60n, entries: { k: text("other") }, requestId }))).code).toBe(Code.AlreadyExists);
        expect((await app1.storage.getData({ dataId: d.dataId })).entries["k"]?.kind.value).toBe("v");

        const backend = createClient(AccessService, t.transport(kind, KEYS.backend));
        const g = await backend.requestAccess({ sessionId: a.session!.id, resourceGroup: "desk", requestId });
        expect((await errorOf(backend.requestAccess({ sessionId: a.session!.id, resourceGroup: "desk", provideCode: true, requestId }))).code).toBe(Code.AlreadyExists);
        expect((await backend.requestAccess({ sessionId: a.session!.id, resourceGroup: "desk", requestId })).access?.accessNumber).toBe(g.access?.accessNumber);
      }
    });
  });
});
