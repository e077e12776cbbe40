// Connections that never speak, requests whose body never arrives, idle HTTP/2 sessions and the
// per-peer caps (src/listen.ts). The server runs in a SEPARATE PROCESS (`src/main.ts serve` under
// `prlimit --nofile`), so its descriptor limit is its own; the clients here use loopback addresses
// 127.0.0.x as distinct peers (Linux routes all of 127/8 to lo).
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { promisify } from "node:util";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import type { ChatEvent } from "../gen/gms/v1/chat_event_pb.js";
import { AgentService, type QueueUpdate } from "../gen/gms/v1/agent_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { parseConfig } from "../src/config.js";
import { blockListOf, defaultMaxConnections, listen, peerOf, type Listener, type RequestHandler } from "../src/listen.js";
import { bearer, errorOf, waitFor } from "./helpers/calls.js";

const ROOT = join(import.meta.dirname, "..");
const AGENT_KEY = "agent-key-0123456789abcdef";

/** ServerChild is `opengms serve` in a child process with a lowered descriptor limit. */
interface ServerChild {
  port: number;
  url: string;
  /** lines are the child's log lines (pino JSON) so far. */
  lines: string[];
  stop(): Promise<void>;
}

async function startChild(nofile: number, server: Record<string, unknown>): Promise<ServerChild> {
  const dir = mkdtempSync(join(tmpdir(), "opengms-conn-"));
  const path = join(dir, "gms.yaml");
  writeFileSync(
    path,
    toYaml({
      server: { host: "127.0.0.1", port: 0, shutdown_grace_seconds: 1, ...server },
      log: { level: "info" },
      database: { url: `sqlite:${join(dir, "gms.db")}` },
      auth: { api_keys: [{ name: "agent", key: AGENT_KEY, roles: ["agent"] }], public_roles: ["app"] },
      services: { lobby: { service: "request-chat", endpoint: "lobby", ttl: 600 } },
    }),
  );
  const child: ChildProcess = spawn("prlimit", [`--nofile=${nofile}:${nofile}`, process.execPath, "--import", "tsx", "src/main.ts", "serve", "-c", path], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let stderr = "";
  let buffered = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start: ${stderr}`)), 30_000);
    child.once("exit", (code) => reject(new Error(`the server exited (${code}): ${stderr}`)));
    child.stdout?.on("data", (d: Buffer) => {
      buffered += d.toString();
      const parts = buffered.split("\n");
      buffered = parts.pop() ?? "";
      for (const line of parts) {
        lines.push(line);
        const entry = JSON.parse(line) as { msg?: string; port?: number };
        if (entry.msg === "opengms listening" && entry.port !== undefined) {
          clearTimeout(timer);
          resolve(entry.port);
        }
      }
    });
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    lines,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
        if (child.exitCode === null) child.kill("SIGKILL");
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Silent is a TCP connection that never sends a byte; closed tells whether the server cut it. */
interface Silent {
  socket: net.Socket;
  closed: boolean;
}

/** openSilent opens `n` connections from `localAddress` that send nothing, once each is connected or failed. */
async function openSilent(port: number, localAddress: string, n: number, send?: string): Promise<Silent[]> {
  return Promise.all(
    Array.from({ length: n }, () => {
      const socket = net.connect({ port, host: "127.0.0.1", localAddress });
      const s: Silent = { socket, closed: false };
      socket.on("error", () => {});
      socket.once("close", () => (s.closed = true));
      return new Promise<Silent>((resolve) => {
        socket.once("connect", () => {
          if (send !== undefined) socket.write(send);
          resolve(s);
        });
        socket.once("close", () => resolve(s));
      });
    }),
  );
}

/** h2From connects an HTTP/2 client from a loopback address of its own. */
function h2From(url: string, localAddress: string): http2.ClientHttp2Session {
  const { port } = new URL(url);
  const session = http2.connect(url, { createConnection: () => net.connect({ port: Number(port), host: "127.0.0.1", localAddress }) });
  session.on("error", () => {});
  return session;
}

/** Clients from one loopback address: gRPC, Connect over HTTP/2 and Connect over HTTP/1.1. */
function transports(url: string, localAddress: string, key?: string): Record<"grpc" | "connectH2" | "connectH1", Transport> {
  const port = Number(new URL(url).port);
  const createConnection = () => net.connect({ port, host: "127.0.0.1", localAddress });
  const interceptors = key === undefined ? [] : [bearer(key)];
  return {
    grpc: createGrpcTransport({ baseUrl: url, interceptors, nodeOptions: { createConnection } }),
    connectH2: createConnectTransport({ baseUrl: url, httpVersion: "2", interceptors, nodeOptions: { createConnection } }),
    connectH1: createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors, nodeOptions: { localAddress, agent: new http.Agent({ keepAlive: true }) } }),
  };
}

const text = (t: string) => ({ $typeName: "gms.v1.Value" as const, kind: { case: "text" as const, value: t } });

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});

describe("a flood of silent connections from one peer (descriptor limit 256)", () => {
  let child: ServerChild;
  beforeAll(async () => {
    // A first-bytes timeout far beyond the test: only the per-peer cap keeps the server reachable.
    child = await startChild(256, { first_bytes_timeout_seconds: 60, max_connections_per_peer: 50, unlimited_peers: [] });
  });
  afterAll(() => child.stop());

  it("does not lock out another client: over-cap connections are closed at once, real calls succeed", async () => {
    const silent = await openSilent(child.port, "127.0.0.2", 400);
    cleanup.push(() => silent.forEach((s) => s.socket.destroy()));
    // Everything above the cap is closed by the server without a byte read.
    await waitFor("the connections above the cap closed", () => silent.filter((s) => s.closed).length >= 350, 10_000);
    expect(silent.filter((s) => !s.closed).length).toBeLessThanOrEqual(50);

    const t = transports(child.url, "127.0.0.1");
    const health = createClient(Health, t.grpc);
    expect((await health.check({}, { timeoutMs: 5_000 })).status).toBe(Status.SERVING);
    for (const transport of [t.grpc, t.connectH1]) {
      const created = await createClient(StorageService, transport).createData({ entries: { k: text("v") } }, { timeoutMs: 5_000 });
      expect(created.dataId).not.toBe("");
    }
    // The peer still holds its 50: they were not cut (their first-bytes timeout is far off).
    expect(silent.filter((s) => !s.closed).length).toBe(50);

    // One warning for the flood, not one per refused connection; it names the cap, never a payload.
    const warnings = child.lines.filter((l) => l.includes('"level":40') && l.includes("max_connections_per_peer"));
    expect(warnings.length).toBeGreaterThanOrEqual(1);
    expect(warnings.length).toBeLessThanOrEqual(2);
  });
});

describe("timeouts and per-peer stream caps (separate process, descriptor limit 512)", () => {
  let child: ServerChild;
  beforeAll(async () => {
    child = await startChild(512, {
      first_bytes_timeout_seconds: 0.5,
      headers_timeout_seconds: 0.5,
      request_timeout_seconds: 0.5,
      keep_alive_timeout_seconds: 0.5,
      http2_idle_timeout_seconds: 0.5,
      max_streams_per_connection: 2,
      max_streams_per_peer: 3,
      unlimited_peers: [],
    });
  });
  afterAll(() => child.stop());

  it("closes connections that send nothing, or too little to be routed, after the first-bytes timeout", async () => {
    const silent = await openSilent(child.port, "127.0.0.3", 20);
    const partial = await openSilent(child.port, "127.0.0.3", 5, "PRI * HTTP/2.0\r\n");
    cleanup.push(() => [...silent, ...partial].forEach((s) => s.socket.destroy()));
    await waitFor("the silent connections closed", () => [...silent, ...partial].every((s) => s.closed), 10_000);
  });

  it("cuts an HTTP/1.1 request whose body never arrives with 408", async () => {
    const socket = net.connect({ port: child.port, host: "127.0.0.1", localAddress: "127.0.0.4" });
    cleanup.push(() => socket.destroy());
    socket.on("error", () => {});
    let answer = "";
    let closed = false;
    socket.on("data", (d: Buffer) => (answer += d.toString()));
    socket.once("close", () => (closed = true));
    await new Promise((r) => socket.once("connect", r));
    socket.write("POST /gms.v1.StorageService/CreateData HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"entr");
    await waitFor("the slow request cut", () => closed, 10_000);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
  });

  it("resets an HTTP/2 stream whose request body never completes (RST_STREAM CANCEL)", async () => {
    const session = h2From(child.url, "127.0.0.5");
    cleanup.push(() => session.destroy());
    const stream = session.request({ ":method": "POST", ":path": "/gms.v1.StorageService/CreateData", "content-type": "application/grpc", te: "trailers" }, { endStream: false });
    stream.on("error", () => {});
    stream.resume();
    stream.write(Buffer.from([0, 0, 0, 0, 50, 10]));
    let closed = false;
    stream.once("close", () => (closed = true));
    await waitFor("the stream reset", () => closed, 10_000);
    expect(stream.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
  });

  it("closes an idle HTTP/2 session with GOAWAY", async () => {
    const session = h2From(child.url, "127.0.0.6");
    cleanup.push(() => session.destroy());
    let goaway = false;
    let closed = false;
    session.once("goaway", () => (goaway = true));
    session.once("close", () => (closed = true));
    await new Promise((r) => session.once("remoteSettings", r));
    expect(session.remoteSettings.maxConcurrentStreams).toBe(2);
    // One call first: a session that has served is idle again once its streams are done.
    const res = await createClient(Health, transports(child.url, "127.0.0.6").grpc).check({}, { timeoutMs: 5_000 });
    expect(res.status).toBe(Status.SERVING);
    await waitFor("the idle session closed", () => closed, 10_000);
    expect(goaway).toBe(true);
  });

  it("keeps open Subscribe and WatchQueue streams (lean path, connect over HTTP/2 and HTTP/1.1) past every idle timeout", async () => {
    const grpc = createClient(ChatService, transports(child.url, "127.0.0.7").grpc);
    const h2 = createClient(ChatService, transports(child.url, "127.0.0.8").connectH2);
    const h1 = createClient(ChatService, transports(child.url, "127.0.0.9").connectH1);
    const chat = await grpc.requestChat({ service: "lobby", nickname: "Ann" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n };
    const abort = new AbortController();
    cleanup.push(() => abort.abort());
    const readers = [grpc, h2, h1].map((client) => {
      const items: ChatEvent[] = [];
      const ended = (async () => {
        try {
          for await (const e of client.subscribe(key, { signal: abort.signal })) items.push(e);
          return "ended";
        } catch (e) {
          return String(e);
        }
      })();
      let result: string | undefined;
      void ended.then((r) => (result = r));
      return { items, result: () => result };
    });
    const queues = ["127.0.0.15", "127.0.0.16"].map((address, i) => {
      const t = transports(child.url, address, AGENT_KEY);
      const items: QueueUpdate[] = [];
      let result: string | undefined;
      void (async () => {
        for await (const q of createClient(AgentService, i === 0 ? t.grpc : t.connectH2).watchQueue({ endpoint: "lobby" }, { signal: abort.signal })) items.push(q);
        return "ended";
      })().then(
        (r) => (result = r),
        (e: unknown) => (result = String(e)),
      );
      return { items, result: () => result };
    });
    await waitFor("every stream's first event", () => readers.every((r) => r.items.length > 0) && queues.every((q) => q.items.length > 0), 10_000);
    // Well past the first-bytes, request, keep-alive and idle-session timeouts.
    await new Promise((r) => setTimeout(r, 2_500));
    expect([...readers, ...queues].map((r) => r.result())).toEqual([undefined, undefined, undefined, undefined, undefined]);
    await grpc.sendMessage({ chatId: chat.chatId, secureKey: chat.secureKey, text: "still there?" });
    await waitFor("the message on every stream", () => readers.every((r) => r.items.some((e) => e.text === "still there?")), 10_000);
    const before = queues.map((q) => q.items.length);
    await grpc.requestChat({ service: "lobby", nickname: "Cy" });
    await waitFor("the queue's change on every WatchQueue", () => queues.every((q, i) => q.items.length > (before[i] ?? 0)), 10_000);
  });

  it("refuses streams above the per-peer cap across sessions with REFUSED_STREAM", async () => {
    const setup = createClient(ChatService, transports(child.url, "127.0.0.1").grpc);
    const chat = await setup.requestChat({ service: "lobby", nickname: "Bo" });
    const key = { chatId: chat.chatId, secureKey: chat.secureKey, fromPosition: 1n };
    const abort = new AbortController();
    cleanup.push(() => abort.abort());
    const open = (client: ReturnType<typeof createClient<typeof ChatService>>, signal = abort.signal) => {
      const it = client.subscribe(key, { signal })[Symbol.asyncIterator]();
      return it.next().then(() => it);
    };
    const a = createClient(ChatService, transports(child.url, "127.0.0.10").grpc);
    const b = createClient(ChatService, transports(child.url, "127.0.0.10").grpc);
    const first = new AbortController();
    await open(a, first.signal);
    await open(a);
    await open(b);
    // The peer holds 3 open streams over two connections: a fourth is refused.
    // (connect-node's client reports the reset as INTERNAL; gRPC's mapping of REFUSED_STREAM is UNAVAILABLE.)
    expect((await errorOf(open(b))).message).toMatch(/REFUSED_STREAM/);
    const raw = h2From(child.url, "127.0.0.10");
    cleanup.push(() => raw.destroy());
    const stream = raw.request({ ":method": "POST", ":path": "/gms.v1.ChatService/Subscribe", "content-type": "application/grpc", te: "trailers" });
    stream.on("error", () => {});
    await new Promise((r) => stream.once("close", r));
    expect(stream.rstCode).toBe(http2.constants.NGHTTP2_REFUSED_STREAM);
    // Another peer is not affected.
    await open(createClient(ChatService, transports(child.url, "127.0.0.11").grpc));
    // Once one stream ends, the peer may open another.
    first.abort();
    await waitFor("a stream slot free again", () => open(b).then(() => true, () => false), 10_000);
  });
});

describe("TLS: handshake timeout and per-peer connection cap", () => {
  let dir: string;
  let listener: Listener;
  let ca: Buffer;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "opengms-conn-tls-"));
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    // prettier-ignore
    await promisify(execFile)("openssl", [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert,
    ]);
    ca = readFileSync(cert);
    const handler: RequestHandler = (_req, res) => {
      res.statusCode = 204;
      res.end();
    };
    listener = await listen(handler, {
      host: "127.0.0.1",
      port: 0,
      tls: { cert, key },
      headersTimeoutMs: 300,
      limits: { firstBytesTimeoutMs: 300, http2IdleTimeoutMs: 300, maxConnectionsPerPeer: 5, unlimitedPeers: [] },
    });
  });
  afterAll(async () => {
    await listener.stopAccepting();
    await listener.closeConnections(100);
    rmSync(dir, { recursive: true, force: true });
  });

  it("closes a connection that never completes its handshake", async () => {
    const silent = await openSilent(listener.port, "127.0.0.12", 3);
    cleanup.push(() => silent.forEach((s) => s.socket.destroy()));
    await waitFor("the silent TLS connections closed", () => silent.every((s) => s.closed), 10_000);
  });

  it("closes a connection silent after its handshake, whichever protocol it chose", async () => {
    for (const protocol of ["h2", "http/1.1"]) {
      const socket = tls.connect({ socket: net.connect({ host: "127.0.0.1", port: listener.port, localAddress: "127.0.0.15" }), servername: "localhost", ca, ALPNProtocols: [protocol] });
      cleanup.push(() => socket.destroy());
      socket.on("error", () => {});
      let closed = false;
      socket.once("close", () => (closed = true));
      // Read what the server says (HTTP/2 SETTINGS and GOAWAY, HTTP/1.1's 408), to see its end.
      socket.resume();
      await new Promise((r) => socket.once("secureConnect", r));
      expect(socket.alpnProtocol).toBe(protocol);
      await waitFor(`the silent ${protocol} connection closed`, () => closed, 10_000);
    }
  });

  it("closes connections above the per-peer cap at once, and serves other peers", async () => {
    const held = await openSilent(listener.port, "127.0.0.13", 12);
    cleanup.push(() => held.forEach((s) => s.socket.destroy()));
    await waitFor("the connections above the cap closed", () => held.filter((s) => s.closed).length >= 7, 5_000);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ socket: net.connect({ host: "127.0.0.1", port: listener.port, localAddress: "127.0.0.14" }), servername: "localhost", ca, ALPNProtocols: ["http/1.1"] }, () => {
        socket.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      });
      let got = "";
      socket.on("data", (d: Buffer) => (got += d.toString()));
      socket.once("close", () => resolve(got));
      socket.once("error", reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 204/);
  });
});

describe("the global connection cap (in process)", () => {
  let listener: Listener;
  beforeAll(async () => {
    const handler: RequestHandler = (_req, res) => {
      res.statusCode = 204;
      res.end();
    };
    // Loopback is unlimited per peer by default, but the global cap holds for everyone.
    listener = await listen(handler, { host: "127.0.0.1", port: 0, limits: { maxConnections: 5, firstBytesTimeoutMs: 60_000 } });
  });
  afterAll(async () => {
    await listener.stopAccepting();
    await listener.closeConnections(100);
  });

  it("closes connections above it at once, and takes new ones once others have gone", async () => {
    const held = await openSilent(listener.port, "127.0.0.1", 8);
    await waitFor("three connections closed", () => held.filter((s) => s.closed).length === 3, 5_000);
    held.forEach((s) => s.socket.destroy());
    await waitFor("a connection served again", async () => {
      const res = await fetch(`http://127.0.0.1:${listener.port}/`).catch(() => undefined);
      return res?.status === 204;
    }, 5_000);
  });
});

describe("peers and limits", () => {
  it("counts IPv4 by address and IPv6 by its /64", () => {
    expect(peerOf("203.0.113.7")).toBe("203.0.113.7");
    expect(peerOf("::ffff:203.0.113.7")).toBe("203.0.113.7");
    expect(peerOf("2001:db8:1:2:3:4:5:6")).toBe("2001:db8:1:2::/64");
    expect(peerOf("2001:db8:1:2::9")).toBe("2001:db8:1:2::/64");
    expect(peerOf("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(peerOf("::1")).toBe("0:0:0:0::/64");
    expect(peerOf("fe80::1%eth0")).toBe("fe80:0:0:0::/64");
    expect(peerOf(undefined)).toBe("unknown");
  });

  it("matches unlimited peers by address and range, and refuses anything else in the configuration", () => {
    const list = blockListOf(["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]);
    expect(list.check("10.1.2.3", "ipv4")).toBe(true);
    expect(list.check("192.0.2.1", "ipv4")).toBe(true);
    expect(list.check("192.0.2.2", "ipv4")).toBe(false);
    expect(list.check("2001:db8:5::1", "ipv6")).toBe(true);
    for (const bad of ["localhost", "10.0.0.0/33", "::1/129", "1.2.3.4/8/8", ""]) {
      expect(() => parseConfig({ server: { unlimited_peers: [bad] } })).toThrow(/unlimited_peers/);
    }
    expect(parseConfig({}).server.unlimited_peers).toEqual(["127.0.0.1", "::1"]);
  });

  it("leaves a reserve of the descriptor limit by default", () => {
    const limit = Number(/^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1]);
    expect(defaultMaxConnections()).toBe(limit - Math.max(64, Math.floor(limit / 10)));
  });
});
