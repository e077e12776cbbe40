// What an operator reads: stdout of a server run is JSON lines only; a refused call names the caller
// that was refused; a client that cancels is not an internal error; codes are spelled one way (as
// the Connect protocol spells them); every call's lines and its response carry its x-request-id.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { freePort, waitFor } from "./helpers/calls.js";

const BACKEND_KEY = "logs-test-backend-key-0123456789";
const APP_KEY = "logs-test-app-key-abcdefghijklmn";

interface Line {
  level: number;
  msg: string;
  [k: string]: unknown;
}

let dir: string;
let child: ChildProcess;
let stdout = "";
let url: string;
let exited: Promise<number | null>;

/** lines are the server's stdout lines so far, each parsed as JSON (a line that is not JSON fails the test). */
const lines = (): Line[] =>
  stdout
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Line);
const rpcLines = (method: string) => lines().filter((l) => l.msg === "rpc" && l["method"] === method);

/** transport makes a client transport that sends `key` (if any) and `extra` headers. */
function transport(kind: "grpc" | "connect", key?: string, extra: Record<string, string> = {}): Transport {
  const interceptors = [
    (next: (r: never) => unknown) => (req: { header: Headers }) => {
      if (key !== undefined) req.header.set("authorization", `Bearer ${key}`);
      for (const [k, v] of Object.entries(extra)) req.header.set(k, v);
      return next(req as never);
    },
  ];
  return kind === "grpc" ? createGrpcTransport({ baseUrl: url, interceptors: interceptors as never }) : createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors: interceptors as never });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "opengms-logs-"));
  const config = join(dir, "gms.yaml");
  writeFileSync(
    config,
    toYaml({
      server: { host: "127.0.0.1", port: 1, shutdown_grace_seconds: 2 },
      database: { url: `sqlite:${join(dir, "gms.db")}` },
      log: { level: "info" },
      auth: {
        api_keys: [
          { name: "crm", key: BACKEND_KEY, roles: ["backend"] },
          { name: "widget", key: APP_KEY, roles: ["app"] },
        ],
        public_roles: ["app"],
      },
    }),
  );
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  const env: NodeJS.ProcessEnv = { ...process.env, GMS_PORT: String(port) };
  delete env["GMS_CONFIG"];
  delete env["GMS_DATABASE_URL"];
  child = spawn(process.execPath, ["--import", "tsx", "src/main.ts", "--config", config], { env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.on("data", (b: Buffer) => (stdout += b.toString()));
  exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  await waitFor("the server to listen", () => lines().some((l) => l.msg === "opengms listening"), 60_000);
}, 90_000);

afterAll(async () => {
  child.kill("SIGTERM");
  await exited;
  rmSync(dir, { recursive: true, force: true });
});

describe("the server's logs", () => {
  it("name the caller a call refused: the key's name without the role, unknown-key for a key that matches none", async () => {
    const agent = createClient(AgentService, transport("connect", APP_KEY));
    await expect(agent.acceptChat({ endpoint: "default", nickname: "x" })).rejects.toMatchObject({ code: Code.PermissionDenied });
    const storage = createClient(StorageService, transport("grpc", "not-a-configured-key-at-all-0000"));
    await expect(storage.createData({ entries: {} })).rejects.toMatchObject({ code: Code.Unauthenticated });
    await waitFor("the refusals' lines", () => rpcLines("gms.v1.AgentService/AcceptChat").length > 0 && rpcLines("gms.v1.StorageService/CreateData").length > 0);
    expect(rpcLines("gms.v1.AgentService/AcceptChat").at(-1)).toMatchObject({ caller: "widget", code: "permission_denied" });
    expect(rpcLines("gms.v1.StorageService/CreateData").at(-1)).toMatchObject({ caller: "unknown-key", code: "unauthenticated" });
  });

  it("spell codes one way, as the Connect protocol does", async () => {
    const storage = createClient(StorageService, transport("connect", BACKEND_KEY));
    await expect(storage.getData({ dataId: "01a2a2a2-0000-7000-8000-000000000000" })).rejects.toMatchObject({ code: Code.NotFound });
    await waitFor("the line", () => rpcLines("gms.v1.StorageService/GetData").length > 0);
    const codes = lines().flatMap((l) => (typeof l["code"] === "string" ? [l["code"]] : []));
    expect(codes).toContain("not_found");
    for (const c of codes) expect(c).toMatch(/^[a-z_]+$/);
  });

  it("carry the caller's x-request-id (or a new one) on the call's line and in the response", async () => {
    let seen: string | null = null;
    const withId = createConnectTransport({
      baseUrl: url,
      httpVersion: "1.1",
      interceptors: [
        (next) => async (req) => {
          req.header.set("authorization", `Bearer ${BACKEND_KEY}`);
          req.header.set("x-request-id", "req-abc-123");
          const res = await next(req);
          seen = res.header.get("x-request-id");
          return res;
        },
      ],
    });
    const created = await createClient(StorageService, withId).createData({ entries: {} });
    expect(created.dataId).not.toBe("");
    expect(seen).toBe("req-abc-123");
    await waitFor("the line", () => rpcLines("gms.v1.StorageService/CreateData").some((l) => l["requestId"] === "req-abc-123"));
    // Without one, a new id, in the error's headers too.
    const e = await createClient(StorageService, transport("connect", BACKEND_KEY))
      .getData({ dataId: "01a2a2a2-0000-7000-8000-000000000001" })
      .catch((x: unknown) => ConnectError.from(x));
    const id = (e as ConnectError).metadata.get("x-request-id");
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    await waitFor("the line", () => rpcLines("gms.v1.StorageService/GetData").some((l) => l["requestId"] === id));
  });

  it.each(["grpc", "connect"] as const)("do not call a client that cancels (%s) an internal error", async (kind) => {
    const chat = createClient(ChatService, transport(kind));
    const started = await chat.requestChat({ nickname: "Ann" });
    const before = lines().length;
    const abort = new AbortController();
    const poll = chat.refresh({ chatId: started.chatId, secureKey: started.secureKey, fromPosition: 1000n, waitSeconds: 20 }, { signal: abort.signal });
    await new Promise((r) => setTimeout(r, 300));
    abort.abort();
    await expect(poll).rejects.toMatchObject({ code: Code.Canceled });
    await waitFor("the cancelled call's line", () => rpcLines("gms.v1.ChatService/Refresh").length > 0 && lines().length > before, 10_000);
    await new Promise((r) => setTimeout(r, 200));
    const after = lines().slice(before);
    expect(after.filter((l) => l.level >= 50 || l.msg === "internal error")).toEqual([]);
    expect(JSON.stringify(after)).not.toMatch(/"stack"/);
  });

  it("are JSON lines only on stdout", () => {
    expect(() => lines()).not.toThrow();
    expect(lines().length).toBeGreaterThan(3);
  });
});
